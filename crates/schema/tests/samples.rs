//! Every stored version stays readable.
//!
//! Each schema version under `schemas/` keeps a sample event beside it. These tests encode
//! and decode every sample with its own schema, and decode it again as today's Rust type
//! (Avro resolution with the stored version as writer and the type's schema as reader),
//! so a change that leaves old events unreadable fails CI.
//!
//! To publish a v2 of an event for real: add `schemas/<ns>/<Type>/v2.avsc` and
//! `v2.sample.json`, change the Rust type to match v2 (and its `SCHEMA` to `v2.avsc`),
//! and run `cargo test -p herald-schema`: `herald schemas check` enforces the subject's
//! mode and these tests prove the new type still reads v1. The fixture
//! `tests/fixtures/evolved` shows such a v2 of `OrderPlaced`.

use std::path::{Path, PathBuf};

use apache_avro::AvroSchema;
use herald_bus::Event;
use herald_schema::catalog::{Catalog, Version};
use herald_schema::sample::{self, Sample};
use herald_schema::{Avsc, compat};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderPlaced};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_schemas() -> PathBuf {
    crate_dir().join("../../schemas")
}

fn fixture(name: &str) -> PathBuf {
    crate_dir().join("tests/fixtures").join(name)
}

fn catalog(dir: &Path) -> Catalog {
    Catalog::load(dir).unwrap_or_else(|e| panic!("{e}"))
}

fn sample_of(version: &Version) -> Sample {
    Sample::load(&version.avsc, &version.sample_path()).unwrap_or_else(|e| panic!("{e}"))
}

/// The schema `E` decodes with at run time (`herald_bus` resolves to `E::SCHEMA`).
fn reader_of<E: Event + AvroSchema>() -> Avsc {
    let reader = Avsc::parse(E::SCHEMA).unwrap_or_else(|e| panic!("{}: {e}", E::TYPE));
    // And the Rust type itself matches that file.
    herald_bus::event::check_schema::<E>().unwrap_or_else(|e| panic!("{e}"));
    reader
}

/// `E` reads every stored version of its type in `catalog`; returns the decoded samples.
fn reads_every_version<E: Event + AvroSchema>(catalog: &Catalog) -> Vec<E> {
    let reader = reader_of::<E>();
    let versions = catalog.versions(E::TYPE);
    assert!(!versions.is_empty(), "no stored version of {}", E::TYPE);
    versions
        .iter()
        .map(|v| {
            compat::can_read(&reader, &v.avsc).unwrap_or_else(|e| panic!("{} cannot read {}: {e}", E::TYPE, v.path.display()));
            sample::read_as::<E>(&reader, &v.avsc, &sample_of(v))
                .unwrap_or_else(|e| panic!("{} cannot decode the sample of {}: {e}", E::TYPE, v.path.display()))
        })
        .collect()
}

#[test]
fn every_stored_version_has_a_sample_that_round_trips() {
    let catalog = catalog(&repo_schemas());
    let mut count = 0;
    for name in catalog.type_names() {
        for version in catalog.versions(name) {
            let path = version.sample_path();
            assert!(path.exists(), "{} has no sample: add {}", version.path.display(), path.display());
            sample_of(version);
            count += 1;
        }
    }
    assert!(count >= 3, "only {count} versions found");
}

#[test]
fn the_shop_types_read_every_stored_version() {
    let catalog = catalog(&repo_schemas());
    let placed = reads_every_version::<OrderPlaced>(&catalog);
    assert_eq!(placed[0].note.as_deref(), Some("ring twice"));
    // v1 has no time; v2's timestamp-millis reads as the instant its sample stores.
    let millis = |events: Vec<Option<herald_bus::timestamp::TimestampMillis>>| events.into_iter().map(|t| t.map(|t| t.as_millis())).collect::<Vec<_>>();
    assert_eq!(millis(placed.iter().map(|p| p.placed_at).collect()), [None, Some(1_764_583_200_123)]);
    let confirmed = reads_every_version::<OrderConfirmed>(&catalog);
    assert_eq!(millis(confirmed.iter().map(|c| c.confirmed_at).collect()), [None, Some(1_764_583_260_456)]);
    let cancelled = reads_every_version::<OrderCancelled>(&catalog);
    assert_eq!(millis(cancelled.iter().map(|c| c.cancelled_at).collect()), [None, Some(1_764_586_800_789)]);
    use herald_shop::{inventory as inv, payments as pay};
    reads_every_version::<inv::StockReserved>(&catalog);
    reads_every_version::<inv::StockRejected>(&catalog);
    reads_every_version::<inv::StockReleased>(&catalog);
    reads_every_version::<inv::ReserveSku>(&catalog);
    reads_every_version::<inv::ReleaseSku>(&catalog);
    reads_every_version::<inv::SkuReserved>(&catalog);
    reads_every_version::<inv::SkuShort>(&catalog);
    reads_every_version::<pay::PaymentCharged>(&catalog);
    reads_every_version::<pay::PaymentDeclined>(&catalog);
    reads_every_version::<pay::PaymentRefunded>(&catalog);
    reads_every_version::<pay::ChargeCredit>(&catalog);
    reads_every_version::<pay::RefundCredit>(&catalog);
    use herald_shop::accounts as acc;
    reads_every_version::<acc::OpenAccount>(&catalog);
    reads_every_version::<acc::Deposit>(&catalog);
    reads_every_version::<acc::Withdraw>(&catalog);
    reads_every_version::<acc::AccountOpened>(&catalog);
    reads_every_version::<acc::MoneyDeposited>(&catalog);
    let withdrawn = reads_every_version::<acc::MoneyWithdrawn>(&catalog);
    assert_eq!(withdrawn[0].amount_cents, 700);
    let replies = reads_every_version::<herald_aggregate::CommandReply>(&catalog);
    assert_eq!(replies[0].reason.as_deref(), Some("insufficient-funds"));
    // Every stored type is one the shop knows; a new one needs a Rust type and a line here.
    let known = [
        OrderPlaced::TYPE,
        OrderConfirmed::TYPE,
        OrderCancelled::TYPE,
        inv::StockReserved::TYPE,
        inv::StockRejected::TYPE,
        inv::StockReleased::TYPE,
        inv::ReserveSku::TYPE,
        inv::ReleaseSku::TYPE,
        inv::SkuReserved::TYPE,
        inv::SkuShort::TYPE,
        pay::PaymentCharged::TYPE,
        pay::PaymentDeclined::TYPE,
        pay::PaymentRefunded::TYPE,
        pay::ChargeCredit::TYPE,
        pay::RefundCredit::TYPE,
        acc::OpenAccount::TYPE,
        acc::Deposit::TYPE,
        acc::Withdraw::TYPE,
        acc::AccountOpened::TYPE,
        acc::MoneyDeposited::TYPE,
        acc::MoneyWithdrawn::TYPE,
        herald_aggregate::CommandReply::TYPE,
    ];
    for name in catalog.type_names() {
        assert!(known.contains(&name), "{name} is stored but no test reads it as a Rust type");
    }
}

#[test]
fn an_added_field_with_a_default_keeps_every_version_readable() {
    let evolved = fixture("evolved");
    // The fixture's v1 is the real one.
    for file in ["v1.avsc", "v1.sample.json"] {
        let real = std::fs::read_to_string(repo_schemas().join("shop/orders/OrderPlaced").join(file)).expect("real file");
        let copy = std::fs::read_to_string(evolved.join("shop/orders/OrderPlaced").join(file)).expect("fixture file");
        assert_eq!(real, copy, "tests/fixtures/evolved/.../{file} drifted from schemas/");
    }
    let report = herald_schema::check_all(&evolved).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{report}");

    let catalog = catalog(&evolved);
    // Today's type (v1) reads the v2 event, skipping the new field.
    let read = reads_every_version::<OrderPlaced>(&catalog);
    assert_eq!(read[1].order_id, "o-2001");

    // A v2 reader reads the v1 event and fills the default.
    let [v1, v2] = catalog.versions(OrderPlaced::TYPE) else { panic!("two versions") };
    let old = sample_of(v1);
    let value = apache_avro::from_avro_datum(v1.avsc.schema(), &mut old.datum.as_slice(), Some(v2.avsc.schema()))
        .expect("v2 reads v1");
    let apache_avro::types::Value::Record(fields) = value else { panic!("a record") };
    assert!(fields.contains(&("channel".to_owned(), apache_avro::types::Value::String("web".into()))), "{fields:?}");
}

#[test]
fn a_version_the_shop_type_cannot_read_fails() {
    let breaking = catalog(&fixture("breaking"));
    let [v2] = breaking.versions(OrderPlaced::TYPE) else { panic!("one version") };
    let reader = reader_of::<OrderPlaced>();
    let err = compat::can_read(&reader, &v2.avsc).expect_err("long cannot read string");
    assert_eq!(
        err.to_string(),
        "field `shop.orders.OrderPlaced.total_cents`: reader type long cannot read writer type string"
    );
    let decoded = sample::read_as::<OrderPlaced>(&reader, &v2.avsc, &sample_of(v2));
    assert!(decoded.is_err(), "decoding must fail too: {decoded:?}");
}

//! An event whose schema uses one named type four times, for the interoperability tests
//! (fastavro in `tests/integration/interop.rs`, Java's Avro in herald-schema's tests):
//! `Address` is defined once and referred to by its short name, by its full name inside a
//! union, and as an array's items. Herald's publisher refused every such event once.
//!
//! ```
//! use herald_bus::EventFamily;
//! use herald_testkit::parcels::{examples, Parcels};
//! let schema = Parcels::schemas().latest("herald.tests.ParcelShipped").expect("member");
//! let mut datum = Vec::new();
//! herald_bus::publisher::encode_datum(schema, &examples("p")[1], &mut datum).expect("encodes");
//! let back = Parcels::decode(&schema.name, schema, &datum).expect("decodes");
//! assert_eq!(back, Some(Parcels::Shipped(examples("p")[1].clone())));
//! ```

use serde::{Deserialize, Serialize};

/// A place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// Street and number.
    pub street: String,
    /// City.
    pub city: String,
}

/// `herald.tests.ParcelShipped`: a parcel left `from` for `to`, maybe with an address
/// to return it to, through `stops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParcelShipped {
    /// The parcel (the key).
    pub parcel_id: String,
    /// Where it left from (defines `Address`).
    pub from: Address,
    /// Where it goes (`Address` by short name).
    pub to: Address,
    /// Where to return it (`herald.tests.Address` by full name, in a union).
    pub return_to: Option<Address>,
    /// Where it passes (an array of `Address`).
    pub stops: Vec<Address>,
}

impl herald_bus::Event for ParcelShipped {
    const TYPE: &'static str = "herald.tests.ParcelShipped";
    const SCHEMA: &'static str = r#"{"type": "record", "name": "ParcelShipped", "namespace": "herald.tests", "fields": [
        {"name": "parcel_id", "type": "string"},
        {"name": "from", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "street", "type": "string"}, {"name": "city", "type": "string"}]}},
        {"name": "to", "type": "Address"},
        {"name": "return_to", "type": ["null", "herald.tests.Address"], "default": null},
        {"name": "stops", "type": {"type": "array", "items": "Address"}}]}"#;
    fn aggregate_id(&self) -> &str {
        &self.parcel_id
    }
}

herald_bus::family! {
    /// Every event of the parcels topic: [`ParcelShipped`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum Parcels {
        /// See [`ParcelShipped`].
        Shipped(ParcelShipped),
    }
}

fn address(street: &str, city: &str) -> Address {
    Address { street: street.into(), city: city.into() }
}

/// Two parcels, ids `{prefix}-1` and `{prefix}-2`: the first with no return address and
/// no stop, the second with both (non-ASCII text included).
pub fn examples(prefix: &str) -> Vec<ParcelShipped> {
    vec![
        ParcelShipped { parcel_id: format!("{prefix}-1"), from: address("Veldstraat 1", "Ghent"), to: address("Rue de la République 2", "Lyon"), return_to: None, stops: vec![] },
        ParcelShipped {
            parcel_id: format!("{prefix}-2"),
            from: address("Königstraße 3", "Stuttgart"),
            to: address("Via Roma 4", "Torino"),
            return_to: Some(address("Königstraße 3", "Stuttgart")),
            stops: vec![address("Hub 1", "Basel"), address("Hub 2", "Milano")],
        },
    ]
}

/// A fresh folder holding `ParcelShipped`'s schema alone (as
/// `herald/tests/ParcelShipped/v1.avsc`), for tools that load a schemas folder; the
/// caller removes it.
pub fn schemas_folder() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(crate::unique("herald-parcel-schemas"));
    let file = dir.join("herald/tests/ParcelShipped/v1.avsc");
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, <ParcelShipped as herald_bus::Event>::SCHEMA)?;
    Ok(dir)
}

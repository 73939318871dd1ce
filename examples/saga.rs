//! The reference saga without a broker: check it, draw it, and run orders through it.
//!
//! ```sh
//! cargo run -p herald-examples --example saga            # check, diagram, three orders
//! cargo run -p herald-examples --example saga -- diagram # only the Mermaid diagram
//! ```
//!
//! Checks the shop's order-fulfilment choreography from its participants' declarations
//! (every event has a schema and a consumer or is terminal, every step a failure can
//! strand is compensated, no reaction cycles), prints it as a Mermaid flowchart, then runs
//! three orders through the five participants on the test kit's in-memory bus with a
//! manual clock: one confirmed, one out of stock, and one whose payment service is down
//! past the timeout (cancelled, then its late charge refunded), and prints each order's
//! terminal event with the time it carries (the reaction's clock). Guarantee shown: the
//! decisions alone give exactly one terminal event per order and net zero for cancelled
//! orders, with deterministic event ids; on Kafka, the engine (`herald_choreography::engine`,
//! run by the `shop` binary) adds exactly-once delivery.

use std::time::Duration;

use herald_choreography::testkit::World;
use herald_shop::saga::{Billing, Credit, Orders, Reservations, Stock};
use herald_shop::{OrderCancelled, OrderConfirmed, OrderPlaced, ORDERS};

fn main() -> anyhow::Result<()> {
    let report = herald_shop::saga::check();
    let diagram = herald_shop::saga::diagram();
    if std::env::args().nth(1).as_deref() == Some("diagram") {
        print!("{diagram}");
        return Ok(());
    }
    print!("{report}");
    anyhow::ensure!(report.is_ok(), "the saga does not pass its check");
    println!("\n```mermaid\n{diagram}```\n");

    let stock = Stock::new([("SKU-1".to_owned(), 10)].into());
    let mut world = World::new().with(Orders { payment_timeout: Duration::from_secs(30) }).with(Reservations).with(stock).with(Billing).with(Credit::default());

    world.publish(&ORDERS, OrderPlaced::example("o-confirmed", "c-1", 2_500));
    let mut greedy = OrderPlaced::example("o-out-of-stock", "c-2", 1_000);
    greedy.lines[0].quantity = 50;
    world.publish(&ORDERS, greedy);
    world.pause("payments-credit");
    world.publish(&ORDERS, OrderPlaced::example("o-timeout", "c-3", 4_000));
    world.advance(Duration::from_secs(30));
    world.resume("payments-credit");

    for raw in world.log() {
        let meta = &raw.meta;
        println!("{:<40} {:<16} {:<24} id {} caused by {}", raw.type_name, meta.subject, raw.topic, meta.id, meta.causation_id.as_deref().unwrap_or("-"));
    }
    // Terminal events carry when the reaction ran (the test kit's clock starts at 2030-01-01).
    println!();
    for confirmed in world.events::<OrderConfirmed>() {
        println!("{:<16} confirmed at {}", confirmed.order_id, confirmed.confirmed_at.map_or("-".to_owned(), |at| at.to_string()));
    }
    for cancelled in world.events::<OrderCancelled>() {
        println!("{:<16} cancelled at {} ({})", cancelled.order_id, cancelled.cancelled_at.map_or("-".to_owned(), |at| at.to_string()), cancelled.reason);
    }
    Ok(())
}

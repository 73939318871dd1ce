//! The saga as declared: its static check, repartitions, diagram and states.

use super::*;

#[test]
fn the_saga_passes_its_static_check() {
    let report = crate::saga::check();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn stock_and_credit_are_repartitioned_and_the_rest_is_not() {
    let declarations = crate::saga::declarations();
    let repartitions: Vec<(String, Option<String>)> = declarations.iter().flat_map(|d| d.consumes.iter().map(move |c| (d.name.clone(), d.repartition_topic(&c.topic)))).filter(|(_, r)| r.is_some()).collect();
    assert_eq!(
        repartitions,
        [
            ("inventory-stock".to_owned(), Some("inventory-stock.shop.inventory.commands.by-sku".to_owned())),
            ("payments-credit".to_owned(), Some("payments-credit.shop.payments.commands.by-customer-id".to_owned())),
        ]
    );
    for d in &declarations {
        herald_bus::topic::validate_name(&d.changelog_topic()).unwrap_or_else(|e| panic!("{e}"));
        for c in &d.consumes {
            if let Some(topic) = d.repartition_topic(&c.topic) {
                herald_bus::topic::validate_name(&topic).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    let orders = declarations.iter().find(|d| d.name == "orders").expect("declared");
    assert_eq!(orders.co_partitioned(), ["shop.orders", "shop.inventory", "shop.payments"]);
    let stock = declarations.iter().find(|d| d.name == "inventory-stock").expect("declared");
    assert_eq!(stock.co_partitioned(), ["inventory-stock.shop.inventory.commands.by-sku"]);
    let mermaid = crate::saga::diagram();
    for expected in ["repartition by sku", "repartition by customer_id", "StockReleased (undoes StockReserved)", "p_orders == \"OrderCancelled\" ==> t_shop_orders", "deadline: OrderCancelled"] {
        assert!(mermaid.contains(expected), "{expected:?} missing from\n{mermaid}");
    }
}

#[test]
fn participant_states_survive_the_changelog() {
    use herald_choreography::changelog::check_state;
    let mut r = Scenario::new(Reservations);
    r.when(&ORDERS, order("o-1", "c-1", &[("A", 1), ("B", 2)])).when(&STOCK_REPLIES, sku_reserved("o-1", "A", 1));
    check_state(r.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Scenario::new(Stock::new(HashMap::from([("A".to_owned(), 3)])));
    s.when(&STOCK_COMMANDS, reserve_sku("o-1", "A", 1)).when(&STOCK_COMMANDS, reserve_sku("o-2", "A", 9));
    check_state(s.state("A").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Scenario::new(Credit::default());
    c.when(&CREDIT_COMMANDS, charge("o-1", "c-1", 5)).when(&CREDIT_COMMANDS, refund("o-2", "c-1"));
    check_state(c.state("c-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut o = Scenario::new(Orders::default());
    o.when(&ORDERS, order("o-1", "c-1", &[("A", 1)]));
    check_state(o.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut b = Scenario::new(Billing);
    b.when(&INVENTORY, reserved("o-1", "c-1", 5, &[]));
    check_state(b.state("o-1").clone()).unwrap_or_else(|e| panic!("{e}"));
}


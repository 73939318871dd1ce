//! Order events: placed, confirmed, cancelled. Key: `order_id`.
//!
//! Each type is the newest version of its schema (`v2`, which added when the event
//! happened as a `timestamp-millis`); the earlier version is in [`Event::HISTORY`], so
//! consumers still read events written with it (the new field is then `None`).
//!
//! Amounts stay integers in minor units (`total_cents`, `unit_price_cents`) rather than
//! Avro `decimal`: Herald decodes with two libraries (serde_avro_fast on the fast path,
//! apache-avro's `Value` path for resolution), and they hand a `decimal` to serde in
//! different shapes (a scaled number versus the unscaled two's-complement bytes), so a
//! decimal field would need a hand-written visitor for both; minor units in a `long` are
//! exact, fast and what payment APIs use.

use apache_avro::AvroSchema;
use herald_bus::timestamp::TimestampMillis;
use herald_bus::{Event, Topic};
use serde::{Deserialize, Serialize};

/// The instant the `example` constructors put in their events: fixed, so two examples
/// built alike compare equal (2025-12-01T10:00:00Z).
pub const EXAMPLE_TIME_MILLIS: i64 = 1_764_583_200_000;

fn example_time() -> Option<TimestampMillis> {
    TimestampMillis::from_millis(EXAMPLE_TIME_MILLIS)
}

/// The topic of order events.
pub const ORDERS: Topic<OrderEvent> = Topic::new("shop.orders");

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i32,
    /// Price of one unit in minor units.
    pub unit_price_cents: i64,
}

/// A customer placed an order.
///
/// ```
/// use herald_shop::OrderPlaced;
/// let placed = OrderPlaced::example("o-1", "c-1", 2500);
/// assert_eq!(placed.lines.iter().map(|l| l.unit_price_cents * l.quantity as i64).sum::<i64>(), 2500);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderPlaced {
    /// Aggregate id of the order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Order total in minor units of `currency`.
    pub total_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Free text from the customer.
    pub note: Option<String>,
    /// When the customer placed the order; `None` in events written with v1.
    pub placed_at: Option<TimestampMillis>,
}

impl OrderPlaced {
    /// An order of one line that totals `total_cents` EUR, placed at
    /// [`EXAMPLE_TIME_MILLIS`].
    pub fn example(order_id: &str, customer_id: &str, total_cents: i64) -> Self {
        OrderPlaced {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            total_cents,
            currency: "EUR".to_owned(),
            lines: vec![OrderLine { sku: "SKU-1".to_owned(), quantity: 1, unit_price_cents: total_cents }],
            note: None,
            placed_at: example_time(),
        }
    }
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "shop.orders.OrderPlaced";
    const SCHEMA: &'static str = include_str!("../../../schemas/shop/orders/OrderPlaced/v2.avsc");
    const HISTORY: &'static [&'static str] = &[include_str!("../../../schemas/shop/orders/OrderPlaced/v1.avsc")];
    fn aggregate_id(&self) -> &str {
        &self.order_id
    }
}

/// Payment cleared; the order is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderConfirmed {
    /// Aggregate id of the order.
    pub order_id: String,
    /// The payment that cleared.
    pub payment_id: String,
    /// When the payment cleared; `None` in events written with v1.
    pub confirmed_at: Option<TimestampMillis>,
}

impl OrderConfirmed {
    /// The order confirmed by `payment_id`, at [`EXAMPLE_TIME_MILLIS`].
    ///
    /// ```
    /// let confirmed = herald_shop::OrderConfirmed::example("o-1", "pay-1");
    /// assert_eq!(confirmed.confirmed_at.map(|t| t.as_millis()), Some(herald_shop::orders::EXAMPLE_TIME_MILLIS));
    /// ```
    pub fn example(order_id: &str, payment_id: &str) -> Self {
        OrderConfirmed { order_id: order_id.to_owned(), payment_id: payment_id.to_owned(), confirmed_at: example_time() }
    }
}

impl Event for OrderConfirmed {
    const TYPE: &'static str = "shop.orders.OrderConfirmed";
    const SCHEMA: &'static str = include_str!("../../../schemas/shop/orders/OrderConfirmed/v2.avsc");
    const HISTORY: &'static [&'static str] = &[include_str!("../../../schemas/shop/orders/OrderConfirmed/v1.avsc")];
    fn aggregate_id(&self) -> &str {
        &self.order_id
    }
}

/// The order was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.orders")]
pub struct OrderCancelled {
    /// Aggregate id of the order.
    pub order_id: String,
    /// Why, for people.
    pub reason: String,
    /// Who cancelled, if known.
    pub cancelled_by: Option<String>,
    /// When the order was cancelled; `None` in events written with v1.
    pub cancelled_at: Option<TimestampMillis>,
}

impl OrderCancelled {
    /// The order cancelled for `reason` by `cancelled_by`, at [`EXAMPLE_TIME_MILLIS`].
    ///
    /// ```
    /// let cancelled = herald_shop::OrderCancelled::example("o-1", "changed mind", Some("customer"));
    /// assert_eq!(cancelled.cancelled_by.as_deref(), Some("customer"));
    /// ```
    pub fn example(order_id: &str, reason: &str, cancelled_by: Option<&str>) -> Self {
        OrderCancelled {
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
            cancelled_by: cancelled_by.map(str::to_owned),
            cancelled_at: example_time(),
        }
    }
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "shop.orders.OrderCancelled";
    const SCHEMA: &'static str = include_str!("../../../schemas/shop/orders/OrderCancelled/v2.avsc");
    const HISTORY: &'static [&'static str] = &[include_str!("../../../schemas/shop/orders/OrderCancelled/v1.avsc")];
    fn aggregate_id(&self) -> &str {
        &self.order_id
    }
}

herald_bus::family! {
    /// Every event on the [`ORDERS`] topic.
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent {
        /// See [`OrderPlaced`].
        Placed(OrderPlaced),
        /// See [`OrderConfirmed`].
        Confirmed(OrderConfirmed),
        /// See [`OrderCancelled`].
        Cancelled(OrderCancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bus::event::check_schema;

    #[test]
    fn rust_types_match_their_avsc_files() {
        check_schema::<OrderPlaced>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<OrderConfirmed>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<OrderCancelled>().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_drifted_struct_is_caught() {
        #[derive(Debug, Serialize, Deserialize, AvroSchema)]
        #[avro(namespace = "shop.orders")]
        struct OrderPlaced {
            order_id: String,
            customer_id: String,
            total_cents: i32, // the file says long
        }
        impl Event for OrderPlaced {
            const TYPE: &'static str = "shop.orders.OrderPlaced";
            const SCHEMA: &'static str = include_str!("../../../schemas/shop/orders/OrderPlaced/v1.avsc");
            fn aggregate_id(&self) -> &str {
                &self.order_id
            }
        }
        let err = check_schema::<OrderPlaced>().expect_err("must not match");
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn events_round_trip_through_avro() {
        use herald_bus::EventFamily;
        let placed = OrderPlaced { note: Some("ring twice".into()), ..OrderPlaced::example("o-1", "c-9", 1999) };
        let known = OrderEvent::schemas().latest(OrderPlaced::TYPE).expect("member");
        let mut datum = Vec::new();
        herald_bus::publisher::encode_datum(known, &placed, &mut datum).expect("encodes");
        let back = OrderEvent::decode(OrderPlaced::TYPE, known, &datum).expect("decodes");
        assert_eq!(back, Some(OrderEvent::Placed(placed)));
        // apache-avro decodes a string or union cut short as null; Herald must refuse it.
        for cut in 1..datum.len() {
            let truncated = OrderEvent::decode(OrderPlaced::TYPE, known, &datum[..cut]);
            assert!(truncated.is_err(), "datum cut at {cut} of {} must fail: {truncated:?}", datum.len());
        }
    }

    #[test]
    fn events_written_with_v1_still_read_with_no_time() {
        use herald_bus::EventFamily;
        #[derive(Serialize)]
        struct ConfirmedV1 {
            order_id: String,
            payment_id: String,
        }
        let v1 = OrderConfirmed::HISTORY[0];
        let fingerprint = herald_bus::schema::SchemaSet::default().add_str(v1).expect("v1").fingerprint;
        let writer = OrderEvent::schemas().by_fingerprint(&fingerprint).expect("the family knows v1 writers");
        let mut datum = Vec::new();
        herald_bus::publisher::encode_datum(writer, &ConfirmedV1 { order_id: "o-1".into(), payment_id: "p-1".into() }, &mut datum).expect("encodes");
        let read = OrderEvent::decode(OrderConfirmed::TYPE, writer, &datum).expect("resolves v1 to v2");
        assert_eq!(read, Some(OrderEvent::Confirmed(OrderConfirmed { confirmed_at: None, ..OrderConfirmed::example("o-1", "p-1") })));
    }

    #[test]
    fn the_fast_path_decodes_exactly_like_the_resolving_path() {
        use herald_bus::EventFamily;
        let known = OrderEvent::schemas().latest(OrderPlaced::TYPE).expect("member");
        let shapes = [
            OrderPlaced::example("o-1", "c-1", 0),
            OrderPlaced { note: Some("ünïcödé \"quoted\"".into()), total_cents: i64::MAX, ..OrderPlaced::example("o-2", "c-2", 1) },
            OrderPlaced { lines: vec![], note: Some(String::new()), placed_at: None, ..OrderPlaced::example("o-3", "", -5) },
            OrderPlaced { placed_at: TimestampMillis::from_millis(-1), ..OrderPlaced::example("o-5", "c-5", 7) },
            OrderPlaced { placed_at: TimestampMillis::from_millis(8_210_266_876_799_999), ..OrderPlaced::example("o-6", "c-6", 7) },
            OrderPlaced {
                lines: (0..50).map(|i| OrderLine { sku: format!("sku-{i}"), quantity: i, unit_price_cents: i64::from(i) * 100 }).collect(),
                ..OrderPlaced::example("o-4", "c-4", 122_500)
            },
        ];
        for placed in shapes {
            let mut datum = Vec::new();
            herald_bus::publisher::encode_datum(known, &placed, &mut datum).expect("encodes");
            let fast = OrderEvent::decode(OrderPlaced::TYPE, known, &datum).expect("fast path");
            let value = herald_bus::codec::decode_value(known, None, &datum).expect("value path");
            let slow: OrderPlaced = apache_avro::from_value(&value).expect("from_value");
            assert_eq!(fast, Some(OrderEvent::Placed(slow.clone())));
            assert_eq!(slow, placed);
            let mut trailing = datum.clone();
            trailing.push(0);
            assert!(OrderEvent::decode(OrderPlaced::TYPE, known, &trailing).is_err(), "a trailing byte is refused");
        }
    }
}

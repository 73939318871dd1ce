//! The orders role: turns outcomes into exactly one terminal event per order, and cancels
//! orders with no outcome within the payment timeout.

use std::time::Duration;

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use herald_bus::timestamp::TimestampMillis;
use herald_bus::Event;
use herald_choreography::declaration::{Output, DEADLINE};
use herald_choreography::{Deadline, Fired, Inputs, Participant, Reaction};
use serde::{Deserialize, Serialize};

use crate::inventory::{InventoryEvent, StockRejected, INVENTORY};
use crate::orders::{OrderCancelled, OrderConfirmed, OrderEvent, ORDERS};
use crate::payments::{PaymentCharged, PaymentDeclined, PaymentEvent, PAYMENTS};

/// The deadline set when an order is placed.
pub const PAYMENT_TIMEOUT: &str = "payment-timeout";
/// The default payment timeout.
pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `reason` of an order cancelled because a SKU is short.
pub const OUT_OF_STOCK: &str = "out-of-stock";
/// `reason` of an order cancelled because payment was declined.
pub const PAYMENT_DECLINED: &str = "payment-declined";
/// `reason` of an order cancelled because no outcome came in time.
pub const TIMEOUT: &str = "timeout";

/// The orders participant (state per order: the records' key, no repartition).
#[derive(Debug, Clone)]
pub struct Orders {
    /// How long after `OrderPlaced` an outcome may take.
    pub payment_timeout: Duration,
}

impl Default for Orders {
    fn default() -> Self {
        Orders { payment_timeout: DEFAULT_PAYMENT_TIMEOUT }
    }
}

/// What the orders participant reacts to.
#[derive(Debug)]
pub enum OrdersInput {
    /// `shop.orders`.
    Order(OrderEvent),
    /// `shop.inventory`.
    Inventory(InventoryEvent),
    /// `shop.payments`.
    Payment(PaymentEvent),
    /// The payment timeout fired (payload: the order id).
    Timeout(Fired),
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.orders")]
pub enum OrderPhase {
    /// Not seen yet.
    #[default]
    New,
    /// Placed, waiting for an outcome.
    Open,
    /// Confirmed (terminal).
    Confirmed,
    /// Cancelled (terminal).
    Cancelled,
}

/// The state of one order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.orders")]
pub struct OrderSaga {
    /// Where it stands.
    pub phase: OrderPhase,
}

impl OrderSaga {
    fn is_over(&self) -> bool {
        matches!(self.phase, OrderPhase::Confirmed | OrderPhase::Cancelled)
    }
}

/// `OrderCancelled` by the system at `at`: the `now` of the reaction that cancels (for a
/// timeout, when it fired), so a replay of the same input emits the same event.
pub fn cancelled(order_id: &str, reason: &str, at: DateTime<Utc>) -> OrderCancelled {
    OrderCancelled { order_id: order_id.to_owned(), reason: reason.to_owned(), cancelled_by: Some("system".to_owned()), cancelled_at: Some(TimestampMillis::from(at)) }
}

/// `OrderConfirmed` for a charge, at `at`: the `now` of the reaction that confirms.
pub fn confirmed(charged: &PaymentCharged, at: DateTime<Utc>) -> OrderConfirmed {
    OrderConfirmed { order_id: charged.order_id.clone(), payment_id: charged.payment_id.clone(), confirmed_at: Some(TimestampMillis::from(at)) }
}

impl Orders {
    /// The one terminal reaction: emit, stop the timeout, finish.
    fn end<E>(phase: OrderPhase, event: E) -> Reaction<OrderSaga>
    where
        E: Event + std::fmt::Debug,
        OrderEvent: herald_bus::event::Member<E>,
    {
        Reaction::with_state(OrderSaga { phase }).emit(&ORDERS, event).cancel_deadline(PAYMENT_TIMEOUT).finish()
    }
}

impl Participant for Orders {
    const NAME: &'static str = "orders";
    type Input = OrdersInput;
    type State = OrderSaga;

    fn inputs(&self) -> Inputs<OrdersInput> {
        Inputs::by_subject().on(&ORDERS, OrdersInput::Order).on(&INVENTORY, OrdersInput::Inventory).on(&PAYMENTS, OrdersInput::Payment).on_deadline(OrdersInput::Timeout)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::of::<OrderConfirmed, _>(&ORDERS).after(&[PaymentCharged::TYPE]).terminal(),
            Output::of::<OrderCancelled, _>(&ORDERS).after(&[StockRejected::TYPE, PaymentDeclined::TYPE, DEADLINE]).failure().terminal(),
        ]
    }

    fn decide(&self, saga: &OrderSaga, input: OrdersInput, now: DateTime<Utc>) -> Reaction<OrderSaga> {
        if saga.is_over() {
            // Exactly one terminal event per order: whatever comes after changes nothing.
            return Reaction::keep();
        }
        match input {
            OrdersInput::Order(OrderEvent::Placed(placed)) if saga.phase == OrderPhase::New => {
                Reaction::with_state(OrderSaga { phase: OrderPhase::Open }).set_deadline(Deadline::after(PAYMENT_TIMEOUT, now, self.payment_timeout).with_payload(&placed.order_id))
            }
            OrdersInput::Order(OrderEvent::Placed(_)) => Reaction::keep(),
            // Ended by someone else (a customer cancelled): nothing to emit, but it is over.
            OrdersInput::Order(OrderEvent::Confirmed(_)) => Reaction::with_state(OrderSaga { phase: OrderPhase::Confirmed }).cancel_deadline(PAYMENT_TIMEOUT).finish(),
            OrdersInput::Order(OrderEvent::Cancelled(_)) => Reaction::with_state(OrderSaga { phase: OrderPhase::Cancelled }).cancel_deadline(PAYMENT_TIMEOUT).finish(),
            OrdersInput::Inventory(InventoryEvent::Rejected(r)) => Orders::end(OrderPhase::Cancelled, cancelled(&r.order_id, OUT_OF_STOCK, now)),
            OrdersInput::Inventory(InventoryEvent::Reserved(_) | InventoryEvent::Released(_)) => Reaction::keep(),
            OrdersInput::Payment(PaymentEvent::Charged(c)) => Orders::end(OrderPhase::Confirmed, confirmed(&c, now)),
            OrdersInput::Payment(PaymentEvent::Declined(d)) => Orders::end(OrderPhase::Cancelled, cancelled(&d.order_id, PAYMENT_DECLINED, now)),
            OrdersInput::Payment(PaymentEvent::Refunded(_)) => Reaction::keep(),
            OrdersInput::Timeout(fired) if fired.name == PAYMENT_TIMEOUT => Orders::end(OrderPhase::Cancelled, cancelled(&fired.payload, TIMEOUT, now)),
            OrdersInput::Timeout(_) => Reaction::keep(),
        }
    }
}

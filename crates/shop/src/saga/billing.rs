//! The payments role, per order: asks the customer's credit for a charge once the stock is
//! reserved, and for a refund (or a promise never to charge) when the order is cancelled.

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use herald_bus::Event;
use herald_choreography::declaration::Output;
use herald_choreography::{Inputs, Participant, Reaction};
use serde::{Deserialize, Serialize};

use crate::inventory::{InventoryEvent, StockReserved, INVENTORY};
use crate::orders::{OrderCancelled, OrderEvent, ORDERS};
use crate::payments::{ChargeCredit, RefundCredit, CREDIT_COMMANDS};

/// The billing participant (state per order: the records' key, no repartition).
#[derive(Debug, Clone, Default)]
pub struct Billing;

/// What it reacts to.
#[derive(Debug)]
pub enum BillingInput {
    /// `shop.orders`.
    Order(OrderEvent),
    /// `shop.inventory`.
    Inventory(InventoryEvent),
}

/// Where one order's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.billing")]
pub enum BillingPhase {
    /// Nothing asked yet.
    #[default]
    New,
    /// A charge was asked.
    Requested,
    /// Cancelled before a charge was asked: none ever will be.
    Cancelled,
    /// Cancelled after a charge was asked: a refund was asked.
    Refunding,
    /// Confirmed.
    Done,
}

/// One order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.billing")]
pub struct Bill {
    /// Where it stands.
    pub phase: BillingPhase,
    /// Who pays (known once the stock is reserved).
    pub customer_id: String,
}

impl Participant for Billing {
    const NAME: &'static str = "payments-billing";
    type Input = BillingInput;
    type State = Bill;

    fn inputs(&self) -> Inputs<BillingInput> {
        Inputs::by_subject().on(&ORDERS, BillingInput::Order).on(&INVENTORY, BillingInput::Inventory)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::of::<ChargeCredit, _>(&CREDIT_COMMANDS).after(&[StockReserved::TYPE]), Output::of::<RefundCredit, _>(&CREDIT_COMMANDS).after(&[OrderCancelled::TYPE])]
    }

    fn decide(&self, bill: &Bill, input: BillingInput, _now: DateTime<Utc>) -> Reaction<Bill> {
        match (bill.phase, input) {
            (BillingPhase::New, BillingInput::Inventory(InventoryEvent::Reserved(r))) => {
                let charge = ChargeCredit { order_id: r.order_id, customer_id: r.customer_id.clone(), amount_cents: r.total_cents };
                Reaction::with_state(Bill { phase: BillingPhase::Requested, customer_id: r.customer_id }).emit(&CREDIT_COMMANDS, charge)
            }
            (BillingPhase::New, BillingInput::Order(OrderEvent::Cancelled(_))) => Reaction::with_state(Bill { phase: BillingPhase::Cancelled, ..bill.clone() }).finish(),
            (BillingPhase::Requested, BillingInput::Order(OrderEvent::Cancelled(c))) => {
                let refund = RefundCredit { order_id: c.order_id, customer_id: bill.customer_id.clone() };
                Reaction::with_state(Bill { phase: BillingPhase::Refunding, ..bill.clone() }).emit(&CREDIT_COMMANDS, refund).finish()
            }
            (BillingPhase::Requested, BillingInput::Order(OrderEvent::Confirmed(_))) => Reaction::with_state(Bill { phase: BillingPhase::Done, ..bill.clone() }).finish(),
            _ => Reaction::keep(),
        }
    }
}

//! The payments role, per customer: the one writer of a customer's credit. Commands arrive
//! keyed by order and are repartitioned by customer, so however many instances run, one
//! reacts for a given customer at a time, in order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use herald_bus::Event;
use herald_choreography::declaration::Output;
use herald_choreography::{Inputs, Participant, Reaction, StateKey};
use serde::{Deserialize, Serialize};

use super::{forget_before, Closed, REMEMBER_ORDERS_FOR};
use crate::payments::{ChargeCredit, CreditCommand, PaymentCharged, PaymentDeclined, PaymentRefunded, RefundCredit, CREDIT_COMMANDS, PAYMENTS};

/// Credit of a customer not in the credit file, in cents.
pub const DEFAULT_CREDIT: i64 = 100_000;
/// `reason` of a charge the credit does not cover.
pub const INSUFFICIENT_CREDIT: &str = "insufficient-credit";
/// `reason` of a negative charge.
pub const INVALID_AMOUNT: &str = "invalid-amount";

/// The credit participant: `credit` per customer the first time a customer is seen,
/// `default_credit` for the others; after that the changelog is the truth.
#[derive(Debug, Clone)]
pub struct Credit {
    /// Initial credit per customer, in cents.
    pub credit: HashMap<String, i64>,
    /// Initial credit of the others.
    pub default_credit: i64,
    /// How long a customer's credit remembers an order after it last changed it (default
    /// [`REMEMBER_ORDERS_FOR`]).
    pub remember: Duration,
}

impl Credit {
    /// `credit` per customer, `default_credit` for the others, remembering orders for
    /// [`REMEMBER_ORDERS_FOR`].
    pub fn new(credit: HashMap<String, i64>, default_credit: i64) -> Self {
        Credit { credit, default_credit, remember: REMEMBER_ORDERS_FOR }
    }
}

impl Default for Credit {
    fn default() -> Self {
        Credit::new(HashMap::new(), DEFAULT_CREDIT)
    }
}

/// A charge taken from a customer's credit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.credit")]
pub struct Charge {
    /// The order.
    pub order_id: String,
    /// The payment's id.
    pub payment_id: String,
    /// Amount taken.
    pub amount_cents: i64,
    /// Whether it was given back.
    pub refunded: bool,
    /// When it was taken or given back, epoch milliseconds.
    pub at_ms: i64,
}

/// The credit of one customer. `charges` and `closed` forget an order
/// [`Credit::remember`] after it last changed them (its money stays taken or given back),
/// so the state holds the orders of that window, not the customer's whole history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.credit")]
pub struct CustomerCredit {
    /// Credit left, in cents.
    pub remaining: i64,
    /// Charges taken.
    pub charges: Vec<Charge>,
    /// Orders never to charge: declined, or cancelled before their charge was asked.
    pub closed: Vec<Closed>,
}

/// The payment id of an order's charge (deterministic: a replay charges the same id).
pub fn payment_id(order_id: &str) -> String {
    format!("pay-{order_id}")
}

impl CustomerCredit {
    /// This credit without the orders it last changed for before `before` (epoch ms).
    fn forgetting(&self, before: i64) -> Cow<'_, CustomerCredit> {
        if self.charges.iter().all(|c| c.at_ms >= before) && self.closed.iter().all(|c| c.at_ms >= before) {
            return Cow::Borrowed(self);
        }
        let mut next = self.clone();
        next.charges.retain(|c| c.at_ms >= before);
        next.closed.retain(|c| c.at_ms >= before);
        Cow::Owned(next)
    }

    fn is_closed(&self, order_id: &str) -> bool {
        self.closed.iter().any(|o| o.order_id == order_id)
    }

    fn charge(&self, c: ChargeCredit, now_ms: i64) -> Reaction<CustomerCredit> {
        if self.charges.iter().any(|ch| ch.order_id == c.order_id) || self.is_closed(&c.order_id) {
            return Reaction::keep(); // a duplicate, or an order seen cancelled: never charged
        }
        let mut next = self.clone();
        let reason = if c.amount_cents < 0 {
            INVALID_AMOUNT
        } else if c.amount_cents > self.remaining {
            INSUFFICIENT_CREDIT
        } else {
            next.remaining -= c.amount_cents;
            next.charges.push(Charge { order_id: c.order_id.clone(), payment_id: payment_id(&c.order_id), amount_cents: c.amount_cents, refunded: false, at_ms: now_ms });
            let charged = PaymentCharged { payment_id: payment_id(&c.order_id), order_id: c.order_id, customer_id: c.customer_id, amount_cents: c.amount_cents };
            return Reaction::with_state(next).emit(&PAYMENTS, charged);
        };
        next.closed.push(Closed { order_id: c.order_id.clone(), at_ms: now_ms });
        Reaction::with_state(next).emit(&PAYMENTS, PaymentDeclined { order_id: c.order_id, customer_id: c.customer_id, reason: reason.to_owned() })
    }

    fn refund(&self, c: RefundCredit, now_ms: i64) -> Reaction<CustomerCredit> {
        let mut next = self.clone();
        match next.charges.iter_mut().find(|ch| ch.order_id == c.order_id) {
            Some(charge) if !charge.refunded => {
                charge.refunded = true;
                charge.at_ms = now_ms;
                let refunded = PaymentRefunded { order_id: c.order_id, customer_id: c.customer_id, payment_id: charge.payment_id.clone(), amount_cents: charge.amount_cents };
                next.remaining = next.remaining.saturating_add(charge.amount_cents);
                Reaction::with_state(next).emit(&PAYMENTS, refunded)
            }
            Some(_) => Reaction::keep(),
            None if self.is_closed(&c.order_id) => Reaction::keep(),
            None => {
                next.closed.push(Closed { order_id: c.order_id, at_ms: now_ms });
                Reaction::with_state(next)
            }
        }
    }
}

impl Participant for Credit {
    const NAME: &'static str = "payments-credit";
    type Input = CreditCommand;
    type State = CustomerCredit;

    fn inputs(&self) -> Inputs<CreditCommand> {
        Inputs::new().on_keyed(&CREDIT_COMMANDS, StateKey::by("customer_id", |c: &CreditCommand| c.customer_id().to_owned()), |c| c)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::of::<PaymentCharged, _>(&PAYMENTS).after(&[ChargeCredit::TYPE]).step(),
            Output::of::<PaymentDeclined, _>(&PAYMENTS).after(&[ChargeCredit::TYPE]).failure(),
            Output::of::<PaymentRefunded, _>(&PAYMENTS).after(&[RefundCredit::TYPE]).compensates(PaymentCharged::TYPE).terminal(),
        ]
    }

    fn initial(&self, customer_id: &str) -> CustomerCredit {
        CustomerCredit { remaining: self.credit.get(customer_id).copied().unwrap_or(self.default_credit), ..CustomerCredit::default() }
    }

    fn decide(&self, credit: &CustomerCredit, command: CreditCommand, now: DateTime<Utc>) -> Reaction<CustomerCredit> {
        let credit = credit.forgetting(forget_before(now, self.remember));
        match command {
            CreditCommand::Charge(c) => credit.charge(c, now.timestamp_millis()),
            CreditCommand::Refund(c) => credit.refund(c, now.timestamp_millis()),
        }
    }
}

//! Payment events: the public outcome of a charge (`shop.payments`), and the payments
//! role's internal per-customer credit commands. Every one is keyed by `order_id`.

use apache_avro::AvroSchema;
use herald_bus::Topic;
use serde::{Deserialize, Serialize};

/// The public topic of payment outcomes.
pub const PAYMENTS: Topic<PaymentEvent> = Topic::new("shop.payments");
/// Internal: commands to one customer's credit (keyed by order; the credit participant
/// repartitions them by customer).
pub const CREDIT_COMMANDS: Topic<CreditCommand> = Topic::new("shop.payments.commands");

/// The customer's credit was charged for the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.payments")]
pub struct PaymentCharged {
    /// The order.
    pub order_id: String,
    /// Who paid.
    pub customer_id: String,
    /// The payment's id.
    pub payment_id: String,
    /// Amount charged in minor units.
    pub amount_cents: i64,
}
crate::order_event!(PaymentCharged, "shop.payments.PaymentCharged", "payments/PaymentCharged/v1.avsc");

/// The customer's credit does not cover the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.payments")]
pub struct PaymentDeclined {
    /// The order.
    pub order_id: String,
    /// Who would have paid.
    pub customer_id: String,
    /// `insufficient-credit` or `invalid-amount`.
    pub reason: String,
}
crate::order_event!(PaymentDeclined, "shop.payments.PaymentDeclined", "payments/PaymentDeclined/v1.avsc");

/// A charge was given back (the order was cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.payments")]
pub struct PaymentRefunded {
    /// The order.
    pub order_id: String,
    /// Who was refunded.
    pub customer_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// Amount given back in minor units.
    pub amount_cents: i64,
}
crate::order_event!(PaymentRefunded, "shop.payments.PaymentRefunded", "payments/PaymentRefunded/v1.avsc");

herald_bus::family! {
    /// Every event on [`PAYMENTS`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum PaymentEvent {
        /// See [`PaymentCharged`].
        Charged(PaymentCharged),
        /// See [`PaymentDeclined`].
        Declined(PaymentDeclined),
        /// See [`PaymentRefunded`].
        Refunded(PaymentRefunded),
    }
}

/// Internal: charge `customer_id`'s credit `amount_cents` for `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.payments")]
pub struct ChargeCredit {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Amount in minor units.
    pub amount_cents: i64,
}
crate::order_event!(ChargeCredit, "shop.payments.ChargeCredit", "payments/ChargeCredit/v1.avsc");

/// Internal: `order_id` was cancelled: give back its charge if there is one, and never
/// charge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.payments")]
pub struct RefundCredit {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
}
crate::order_event!(RefundCredit, "shop.payments.RefundCredit", "payments/RefundCredit/v1.avsc");

herald_bus::family! {
    /// Every event on [`CREDIT_COMMANDS`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum CreditCommand {
        /// See [`ChargeCredit`].
        Charge(ChargeCredit),
        /// See [`RefundCredit`].
        Refund(RefundCredit),
    }
}

impl CreditCommand {
    /// The customer the command is for: the credit participant's state key.
    pub fn customer_id(&self) -> &str {
        match self {
            CreditCommand::Charge(c) => &c.customer_id,
            CreditCommand::Refund(c) => &c.customer_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bus::event::check_schema;

    #[test]
    fn rust_types_match_their_avsc_files() {
        check_schema::<PaymentCharged>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<PaymentDeclined>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<PaymentRefunded>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<ChargeCredit>().unwrap_or_else(|e| panic!("{e}"));
        check_schema::<RefundCredit>().unwrap_or_else(|e| panic!("{e}"));
    }
}

//! The inventory role, per order: splits an order into per-SKU reservations, joins their
//! replies all-or-nothing, and releases what it holds when the order fails.

use std::collections::BTreeMap;

use apache_avro::AvroSchema;
use chrono::{DateTime, Utc};
use herald_bus::Event;
use herald_choreography::compensation::{Compensation, Completed};
use herald_choreography::declaration::Output;
use herald_choreography::join::{Join, Verdict};
use herald_choreography::{Inputs, Participant, Reaction};
use serde::{Deserialize, Serialize};

use crate::inventory::{ReleaseSku, ReserveSku, SkuReserved, SkuShort, StockLine, StockRejected, StockReleased, StockReply, StockReserved, INVENTORY, STOCK_COMMANDS, STOCK_REPLIES};
use crate::orders::{OrderCancelled, OrderEvent, OrderPlaced, ORDERS};

/// The reservations participant (state per order: the records' key, no repartition).
#[derive(Debug, Clone, Default)]
pub struct Reservations;

/// What it reacts to.
#[derive(Debug)]
pub enum ReservationsInput {
    /// `shop.orders`.
    Order(OrderEvent),
    /// `shop.inventory.replies`.
    Reply(StockReply),
}

/// Where one order's reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.inventory")]
pub enum ReservationPhase {
    /// Not placed yet.
    #[default]
    New,
    /// Asked every SKU, waiting for their replies.
    Pending,
    /// Every SKU reserved; `StockReserved` emitted.
    Reserved,
    /// A SKU was short; `StockRejected` emitted, partial reservations released.
    Rejected,
    /// Cancelled after `StockReserved`: released, `StockReleased` emitted.
    Released,
    /// Cancelled before every SKU replied (or before it was placed): what was held is
    /// released; nothing public was reserved, so nothing public is released.
    Cancelled,
    /// Confirmed: the stock is sold.
    Sold,
}

/// One order's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga.inventory")]
pub struct Reservation {
    /// Where it stands.
    pub phase: ReservationPhase,
    /// Who ordered.
    pub customer_id: String,
    /// Order total, passed on to payments.
    pub total_cents: i64,
    /// What the order asks, one line per SKU (lines of one SKU summed), by SKU.
    pub asked: Vec<StockLine>,
    /// What the SKUs hold for it now.
    pub held: Vec<StockLine>,
    /// One branch per SKU, all of them needed.
    pub join: Join,
    /// Whether its reservations are being undone.
    pub undo: Compensation,
}

/// The order's lines summed per SKU, sorted by SKU (a quantity beyond `i64` saturates,
/// which no stock covers).
pub fn lines_by_sku(placed: &OrderPlaced) -> Vec<StockLine> {
    let mut by_sku: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &placed.lines {
        let sum = by_sku.entry(line.sku.as_str()).or_default();
        *sum = sum.saturating_add(i64::from(line.quantity));
    }
    by_sku.into_iter().map(|(sku, quantity)| StockLine { sku: sku.to_owned(), quantity }).collect()
}

fn release(order_id: &str, lines: &[StockLine]) -> Vec<ReleaseSku> {
    lines.iter().map(|l| ReleaseSku { order_id: order_id.to_owned(), sku: l.sku.clone() }).collect()
}

impl Reservations {
    fn placed(r: &Reservation, placed: OrderPlaced) -> Reaction<Reservation> {
        if r.phase != ReservationPhase::New {
            return Reaction::keep(); // a duplicate, or placed after it was cancelled
        }
        let asked = lines_by_sku(&placed);
        let mut next = Reservation { customer_id: placed.customer_id.clone(), total_cents: placed.total_cents, join: Join::all_of(asked.iter().map(|l| l.sku.clone()), None), asked, ..r.clone() };
        if next.asked.is_empty() {
            next.phase = ReservationPhase::Reserved;
            let reserved = StockReserved { order_id: placed.order_id, customer_id: next.customer_id.clone(), total_cents: next.total_cents, lines: Vec::new() };
            return Reaction::with_state(next).emit(&INVENTORY, reserved);
        }
        next.phase = ReservationPhase::Pending;
        let commands: Vec<ReserveSku> = next.asked.iter().map(|l| ReserveSku { order_id: placed.order_id.clone(), sku: l.sku.clone(), quantity: l.quantity }).collect();
        Reaction::with_state(next).emit_all(&STOCK_COMMANDS, commands)
    }

    fn cancelled(r: &Reservation, c: OrderCancelled) -> Reaction<Reservation> {
        let mut next = r.clone();
        let undo = next.undo.begin(&r.held).to_vec();
        next.held.clear();
        let releases = release(&c.order_id, &undo);
        match r.phase {
            ReservationPhase::New | ReservationPhase::Pending => {
                next.phase = ReservationPhase::Cancelled;
                Reaction::with_state(next).emit_all(&STOCK_COMMANDS, releases).finish()
            }
            ReservationPhase::Reserved => {
                next.phase = ReservationPhase::Released;
                Reaction::with_state(next).emit_all(&STOCK_COMMANDS, releases).emit(&INVENTORY, StockReleased { order_id: c.order_id, lines: undo }).finish()
            }
            _ => Reaction::keep(),
        }
    }

    fn sku_reserved(r: &Reservation, reply: SkuReserved) -> Reaction<Reservation> {
        if !r.join.pending().any(|sku| sku == reply.sku) {
            return Reaction::keep(); // not asked, or already answered
        }
        let mut next = r.clone();
        let verdict = next.join.succeed(&reply.sku);
        let line = StockLine { sku: reply.sku.clone(), quantity: reply.quantity };
        match next.undo.completed(line) {
            Completed::UndoNow(line) => Reaction::with_state(next).emit_all(&STOCK_COMMANDS, release(&reply.order_id, &[line])),
            Completed::Keep(line) => {
                next.held.push(line);
                next.held.sort();
                if verdict != Some(Verdict::Succeeded) {
                    return Reaction::with_state(next);
                }
                next.phase = ReservationPhase::Reserved;
                let reserved = StockReserved { order_id: reply.order_id, customer_id: next.customer_id.clone(), total_cents: next.total_cents, lines: next.held.clone() };
                Reaction::with_state(next).emit(&INVENTORY, reserved)
            }
        }
    }

    fn sku_short(r: &Reservation, reply: SkuShort) -> Reaction<Reservation> {
        if !r.join.pending().any(|sku| sku == reply.sku) {
            return Reaction::keep();
        }
        let mut next = r.clone();
        if next.join.fail(&reply.sku) != Some(Verdict::Failed) || next.undo.is_compensating() {
            return Reaction::with_state(next); // cancelled meanwhile: nothing more to say
        }
        let undo = next.undo.begin(&r.held).to_vec();
        next.held.clear();
        next.phase = ReservationPhase::Rejected;
        let rejected = StockRejected { order_id: reply.order_id.clone(), sku: reply.sku, requested: reply.requested, available: reply.available };
        Reaction::with_state(next).emit(&INVENTORY, rejected).emit_all(&STOCK_COMMANDS, release(&reply.order_id, &undo))
    }
}

impl Participant for Reservations {
    const NAME: &'static str = "inventory-reservations";
    type Input = ReservationsInput;
    type State = Reservation;

    fn inputs(&self) -> Inputs<ReservationsInput> {
        Inputs::by_subject().on(&ORDERS, ReservationsInput::Order).on(&STOCK_REPLIES, ReservationsInput::Reply)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::of::<ReserveSku, _>(&STOCK_COMMANDS).after(&[OrderPlaced::TYPE]),
            Output::of::<StockReserved, _>(&INVENTORY).after(&[SkuReserved::TYPE, OrderPlaced::TYPE]).step(),
            Output::of::<StockRejected, _>(&INVENTORY).after(&[SkuShort::TYPE]).failure(),
            Output::of::<ReleaseSku, _>(&STOCK_COMMANDS).after(&[SkuShort::TYPE, SkuReserved::TYPE, OrderCancelled::TYPE]).compensates(SkuReserved::TYPE),
            Output::of::<StockReleased, _>(&INVENTORY).after(&[OrderCancelled::TYPE]).compensates(StockReserved::TYPE).terminal(),
        ]
    }

    fn decide(&self, r: &Reservation, input: ReservationsInput, _now: DateTime<Utc>) -> Reaction<Reservation> {
        match input {
            ReservationsInput::Order(OrderEvent::Placed(p)) => Reservations::placed(r, p),
            ReservationsInput::Order(OrderEvent::Cancelled(c)) => Reservations::cancelled(r, c),
            ReservationsInput::Order(OrderEvent::Confirmed(_)) if r.phase == ReservationPhase::Reserved => Reaction::with_state(Reservation { phase: ReservationPhase::Sold, ..r.clone() }).finish(),
            ReservationsInput::Order(OrderEvent::Confirmed(_)) => Reaction::keep(),
            ReservationsInput::Reply(StockReply::Reserved(reply)) => Reservations::sku_reserved(r, reply),
            ReservationsInput::Reply(StockReply::Short(reply)) => Reservations::sku_short(r, reply),
        }
    }
}

//! The independent checker: reads the saga's public topics as a read_committed client
//! would and checks what the issue says must hold, from the events alone. It shares no
//! code with the participants' decisions: it decodes with the event types and keeps its
//! own books (lines summed per SKU, stock and credit folds).
//!
//! What it checks, per order placed:
//! - exactly one terminal event (`OrderConfirmed` or `OrderCancelled`, by `system`);
//! - confirmed ⇒ exactly one `StockReserved` and one `PaymentCharged` (the one the
//!   confirmation names), no `StockRejected`, `StockReleased`, `PaymentDeclined`,
//!   `PaymentRefunded`;
//! - cancelled ⇒ as many `StockReleased` as `StockReserved` (at most one each, same
//!   lines) and as many `PaymentRefunded` as `PaymentCharged` (at most one each, same
//!   payment and amount): net zero; the reason matches an outcome (`out-of-stock` ⇒ a
//!   `StockRejected`, `payment-declined` ⇒ a `PaymentDeclined`);
//! - `StockReserved` carries the order's customer, total and lines summed per SKU; a
//!   charge is the order's total;
//! - no event the saga emitted has an id (`ce_id`) seen before;
//! - no SKU held beyond its stock, no customer charged beyond their credit, folding the
//!   events in the order they were written (see [`check`] for why that order is sound).
//!
//! A violation that more events cannot mend (two terminals, a duplicate id, an oversell)
//! is *permanent*; one that the next events may mend (a terminal or a compensation not
//! written yet) is *pending*: [`settled`] waits for pending ones to clear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use herald_bus::codec::SingleObject;
use herald_bus::EventFamily;
use herald_bus::KafkaConfig;
use herald_shop::inventory::{InventoryEvent, StockLine};
use herald_shop::payments::PaymentEvent;
use herald_shop::{OrderEvent, OrderPlaced};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The saga's starting books, as the stock and credit files give them.
#[derive(Debug, Clone)]
pub struct Rules {
    pub stock: HashMap<String, i64>,
    pub credit: HashMap<String, i64>,
    pub default_credit: i64,
}

/// A decoded event of a public topic.
#[derive(Debug, Clone)]
pub enum Ev {
    Order(OrderEvent),
    Inventory(InventoryEvent),
    Payment(PaymentEvent),
}

/// One record read.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub id: String,
    pub event: Ev,
}

impl Seen {
    pub fn order_id(&self) -> &str {
        match &self.event {
            Ev::Order(OrderEvent::Placed(e)) => &e.order_id,
            Ev::Order(OrderEvent::Confirmed(e)) => &e.order_id,
            Ev::Order(OrderEvent::Cancelled(e)) => &e.order_id,
            Ev::Inventory(InventoryEvent::Reserved(e)) => &e.order_id,
            Ev::Inventory(InventoryEvent::Rejected(e)) => &e.order_id,
            Ev::Inventory(InventoryEvent::Released(e)) => &e.order_id,
            Ev::Payment(PaymentEvent::Charged(e)) => &e.order_id,
            Ev::Payment(PaymentEvent::Declined(e)) => &e.order_id,
            Ev::Payment(PaymentEvent::Refunded(e)) => &e.order_id,
        }
    }
}

/// Everything read from the public topics.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub events: Vec<Seen>,
}

impl Log {
    /// The events of `order_id`.
    pub fn of<'a>(&'a self, order_id: &'a str) -> impl Iterator<Item = &'a Seen> + 'a {
        self.events.iter().filter(move |s| s.order_id() == order_id)
    }

    /// The terminal events of `order_id`.
    pub fn terminals(&self, order_id: &str) -> Vec<OrderEvent> {
        self.of(order_id)
            .filter_map(|s| match &s.event {
                Ev::Order(e @ (OrderEvent::Confirmed(_) | OrderEvent::Cancelled(_))) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// `confirmed`, or the cancellation reason, of `order_id` when it has exactly one terminal.
    pub fn outcome(&self, order_id: &str) -> Option<String> {
        match self.terminals(order_id).as_slice() {
            [OrderEvent::Confirmed(_)] => Some("confirmed".into()),
            [OrderEvent::Cancelled(c)] => Some(c.reason.clone()),
            _ => None,
        }
    }

    /// How many events of `order_id` have type `type_name` (for example `StockReleased`).
    pub fn count(&self, order_id: &str, type_name: &str) -> usize {
        self.of(order_id).filter(|s| type_of(&s.event) == type_name).count()
    }
}

/// The short type name of an event (`StockReserved`).
pub fn type_of(event: &Ev) -> &'static str {
    match event {
        Ev::Order(OrderEvent::Placed(_)) => "OrderPlaced",
        Ev::Order(OrderEvent::Confirmed(_)) => "OrderConfirmed",
        Ev::Order(OrderEvent::Cancelled(_)) => "OrderCancelled",
        Ev::Inventory(InventoryEvent::Reserved(_)) => "StockReserved",
        Ev::Inventory(InventoryEvent::Rejected(_)) => "StockRejected",
        Ev::Inventory(InventoryEvent::Released(_)) => "StockReleased",
        Ev::Payment(PaymentEvent::Charged(_)) => "PaymentCharged",
        Ev::Payment(PaymentEvent::Declined(_)) => "PaymentDeclined",
        Ev::Payment(PaymentEvent::Refunded(_)) => "PaymentRefunded",
    }
}

fn decode<F: EventFamily>(payload: &[u8]) -> Result<F, String> {
    let codec = SingleObject::new(F::schemas().clone());
    let (writer, datum) = codec.split(payload).map_err(|e| e.to_string())?;
    F::decode(&writer.name, &writer, datum).map_err(|e| e.to_string())?.ok_or_else(|| format!("type {} not in the family", writer.name))
}

/// Reads the public topics of the copy under `prefix` with `isolation.level=read_committed`
/// to their end (the last stable offset). With `complete`, also waits until no partition
/// has an open transaction (the last stable offset is the high watermark), so nothing
/// committed later can still appear before what was read.
pub async fn read(config: &KafkaConfig, prefix: &str, complete: bool) -> Log {
    let (bootstrap, prefix) = (config.bootstrap().to_owned(), prefix.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&bootstrap, &prefix, complete)).await.expect("reader task")
}

fn client(bootstrap: &str, committed: bool) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", herald_testkit::unique("checker"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .expect("checker consumer")
}

/// The partitions of the public topics under `prefix` with a transaction open now
/// (`topic/partition`).
pub async fn open_transactions(config: &KafkaConfig, prefix: &str) -> Vec<String> {
    let (bootstrap, prefix) = (config.bootstrap().to_owned(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        let topics: Vec<String> = crate::shop::PUBLIC.iter().map(|t| format!("{prefix}{t}")).collect();
        open_on(&client(&bootstrap, true), &client(&bootstrap, false), &topics)
    })
    .await
    .expect("watermarks task")
}

/// Which partitions of `topics` have a transaction open: a read_committed client's
/// "high" watermark is the last stable offset, equal to the high watermark when none is.
fn open_on(committed: &BaseConsumer, uncommitted: &BaseConsumer, topics: &[String]) -> Vec<String> {
    topics
        .iter()
        .flat_map(|t| (0..6).map(move |p| (t, p)))
        .filter(|(t, p)| {
            let lso = committed.fetch_watermarks(t, *p, Duration::from_secs(10)).expect("watermarks").1;
            let high = uncommitted.fetch_watermarks(t, *p, Duration::from_secs(10)).expect("watermarks").1;
            lso != high
        })
        .map(|(t, p)| format!("{t}/{p}"))
        .collect()
}

fn read_blocking(bootstrap: &str, prefix: &str, complete: bool) -> Log {
    let deadline = Instant::now() + Duration::from_secs(90);
    let topics: Vec<String> = crate::shop::PUBLIC.iter().map(|t| format!("{prefix}{t}")).collect();
    if complete {
        let (committed, uncommitted) = (client(bootstrap, true), client(bootstrap, false));
        loop {
            let open = open_on(&committed, &uncommitted, &topics);
            if open.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "transactions still open on {open:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut log = Log::default();
    for topic in &topics {
        let consumer = client(bootstrap, true);
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut open: HashSet<i32> = (0..6).collect();
        while !open.is_empty() {
            assert!(Instant::now() < deadline, "the checker could not read {topic} to its end");
            match consumer.poll(Duration::from_millis(500)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => panic!("checker read: {e}"),
                Some(Ok(m)) => {
                    let short = m.topic().strip_prefix(prefix).unwrap_or(m.topic()).to_owned();
                    let payload = m.payload().unwrap_or_default();
                    let event = match short.as_str() {
                        "shop.orders" => decode::<OrderEvent>(payload).map(Ev::Order),
                        "shop.inventory" => decode::<InventoryEvent>(payload).map(Ev::Inventory),
                        _ => decode::<PaymentEvent>(payload).map(Ev::Payment),
                    }
                    .unwrap_or_else(|e| panic!("undecodable record {}/{}@{}: {e}", m.topic(), m.partition(), m.offset()));
                    let id = m.headers().and_then(|hs| hs.iter().find(|h| h.key == "ce_id").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())).unwrap_or_default();
                    log.events.push(Seen { topic: short, partition: m.partition(), offset: m.offset(), timestamp: m.timestamp().to_millis().unwrap_or_default(), id, event });
                }
            }
        }
    }
    log
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Violations no later event can mend.
    pub permanent: Vec<String>,
    /// Violations later events may mend (missing terminals or compensations).
    pub pending: Vec<String>,
    /// Outcomes: `confirmed`, or the cancellation reason, with their counts.
    pub outcomes: BTreeMap<String, usize>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.permanent.is_empty() && self.pending.is_empty()
    }
}

fn sum_by_sku(placed: &OrderPlaced) -> Vec<StockLine> {
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for l in &placed.lines {
        *by.entry(l.sku.clone()).or_default() += i64::from(l.quantity);
    }
    by.into_iter().map(|(sku, quantity)| StockLine { sku, quantity }).collect()
}

fn sorted(lines: &[StockLine]) -> Vec<StockLine> {
    let mut lines = lines.to_vec();
    lines.sort();
    lines
}

/// Checks `log` for the orders `placed` (the last `OrderPlaced` of each id is what the
/// client meant; the test publishes duplicates as identical events). `injected`: ids of
/// events a test wrote into the public topics itself (late outcomes), which the books skip.
/// `strict`: `placed` is every order there is, so an event of another order is a violation
/// (otherwise orders placed meanwhile are only left out of the per-order checks).
///
/// The books fold the events in the order they were written (record timestamps, set by
/// the writer's clock; all processes run on this machine). That order is sound for stock:
/// `StockReserved` is written after its SKUs were actually reserved and `StockReleased`
/// before the stock actually came back, so the folded holding of a SKU is never above what
/// was truly held at that instant, and a fold above the stock is a real oversell. For
/// credit it is exact: the credit's one writer emits `PaymentCharged` / `PaymentRefunded`
/// in the reaction that takes / gives back the credit. At equal timestamps releases and
/// refunds count first (the lenient side), so only a real excess is reported.
pub fn check(log: &Log, placed: &[OrderPlaced], rules: &Rules, injected: &HashSet<String>, strict: bool) -> Verdict {
    let mut v = Verdict::default();
    let known: HashMap<&str, &OrderPlaced> = placed.iter().map(|p| (p.order_id.as_str(), p)).collect();
    // Duplicate ids among the events the saga emitted (clients' OrderPlaced aside).
    let mut ids: HashMap<&str, &Seen> = HashMap::new();
    for s in &log.events {
        if matches!(s.event, Ev::Order(OrderEvent::Placed(_))) || injected.contains(&s.id) {
            continue;
        }
        if s.id.is_empty() {
            v.permanent.push(format!("{} of {} has no ce_id", type_of(&s.event), s.order_id()));
        } else if let Some(first) = ids.insert(&s.id, s) {
            v.permanent.push(format!("event id {} twice: {}/{}@{} and {}/{}@{} ({} of {})", s.id, first.topic, first.partition, first.offset, s.topic, s.partition, s.offset, type_of(&s.event), s.order_id()));
        }
        if strict && !known.contains_key(s.order_id()) {
            v.permanent.push(format!("{} of an order never placed: {}", type_of(&s.event), s.order_id()));
        }
    }
    let mut by_order: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in log.events.iter().filter(|s| !injected.contains(&s.id)) {
        by_order.entry(s.order_id()).or_default().push(s);
    }
    for p in placed {
        let id = p.order_id.as_str();
        let events = by_order.get(id).cloned().unwrap_or_default();
        let mut e = Events::default();
        for s in &events {
            match &s.event {
                Ev::Order(OrderEvent::Placed(_)) => {}
                Ev::Order(OrderEvent::Confirmed(c)) => e.confirmed.push(c.payment_id.clone()),
                Ev::Order(OrderEvent::Cancelled(c)) => e.cancelled.push((c.reason.clone(), c.cancelled_by.clone())),
                Ev::Inventory(InventoryEvent::Reserved(r)) => e.reserved.push(r.clone()),
                Ev::Inventory(InventoryEvent::Rejected(_)) => e.rejected += 1,
                Ev::Inventory(InventoryEvent::Released(r)) => e.released.push(sorted(&r.lines)),
                Ev::Payment(PaymentEvent::Charged(c)) => e.charged.push((c.payment_id.clone(), c.amount_cents, c.customer_id.clone())),
                Ev::Payment(PaymentEvent::Declined(_)) => e.declined += 1,
                Ev::Payment(PaymentEvent::Refunded(r)) => e.refunded.push((r.payment_id.clone(), r.amount_cents)),
            }
        }
        let (bad, wait) = (&mut v.permanent, &mut v.pending);
        if e.reserved.len() > 1 {
            bad.push(format!("{id}: {} StockReserved", e.reserved.len()));
        }
        if e.charged.len() > 1 {
            bad.push(format!("{id}: {} PaymentCharged", e.charged.len()));
        }
        if e.released.len() > 1 || e.released.len() > e.reserved.len() {
            bad.push(format!("{id}: {} StockReleased for {} StockReserved", e.released.len(), e.reserved.len()));
        }
        if e.refunded.len() > 1 || e.refunded.len() > e.charged.len() {
            bad.push(format!("{id}: {} PaymentRefunded for {} PaymentCharged", e.refunded.len(), e.charged.len()));
        }
        if !e.reserved.is_empty() && e.rejected > 0 {
            bad.push(format!("{id}: both StockReserved and StockRejected"));
        }
        if !e.charged.is_empty() && e.declined > 0 {
            bad.push(format!("{id}: both PaymentCharged and PaymentDeclined"));
        }
        for r in &e.reserved {
            if r.customer_id != p.customer_id || r.total_cents != p.total_cents || sorted(&r.lines) != sum_by_sku(p) {
                bad.push(format!("{id}: StockReserved {r:?} does not match the order {p:?}"));
            }
        }
        for (_, amount, customer) in &e.charged {
            if *amount != p.total_cents || *customer != p.customer_id {
                bad.push(format!("{id}: charged {amount} to {customer}, the order is {} for {}", p.total_cents, p.customer_id));
            }
        }
        for lines in &e.released {
            if let Some(r) = e.reserved.first()
                && *lines != sorted(&r.lines)
            {
                bad.push(format!("{id}: released {lines:?}, reserved {:?}", r.lines));
            }
        }
        for (payment, amount) in &e.refunded {
            if let Some((charged, charged_amount, _)) = e.charged.first()
                && (payment != charged || amount != charged_amount)
            {
                bad.push(format!("{id}: refunded {payment} {amount}, charged {charged} {charged_amount}"));
            }
        }
        match (e.confirmed.len(), e.cancelled.len()) {
            (0, 0) => wait.push(format!("{id}: no terminal event yet")),
            (1, 0) => {
                *v.outcomes.entry("confirmed".into()).or_default() += 1;
                if !e.released.is_empty() || !e.refunded.is_empty() || e.rejected > 0 || e.declined > 0 {
                    bad.push(format!("{id}: confirmed, and also released {} / refunded {} / rejected {} / declined {}", e.released.len(), e.refunded.len(), e.rejected, e.declined));
                }
                if e.reserved.is_empty() || e.charged.is_empty() {
                    wait.push(format!("{id}: confirmed with {} StockReserved, {} PaymentCharged", e.reserved.len(), e.charged.len()));
                }
                if let Some((payment, _, _)) = e.charged.first()
                    && *payment != e.confirmed[0]
                {
                    bad.push(format!("{id}: confirmed by {}, charged {payment}", e.confirmed[0]));
                }
            }
            (0, 1) => {
                let (reason, by) = &e.cancelled[0];
                *v.outcomes.entry(reason.clone()).or_default() += 1;
                if by.as_deref() != Some("system") {
                    bad.push(format!("{id}: cancelled by {by:?}"));
                }
                match reason.as_str() {
                    "out-of-stock" if e.rejected == 0 => wait.push(format!("{id}: out-of-stock without StockRejected")),
                    "payment-declined" if e.declined == 0 => wait.push(format!("{id}: payment-declined without PaymentDeclined")),
                    "out-of-stock" | "payment-declined" | "timeout" => {}
                    other => bad.push(format!("{id}: cancelled for {other:?}")),
                }
                if e.released.len() < e.reserved.len() {
                    wait.push(format!("{id}: cancelled, reservation not released"));
                }
                if e.refunded.len() < e.charged.len() {
                    wait.push(format!("{id}: cancelled, charge not refunded"));
                }
            }
            (confirmed, cancelled) => bad.push(format!("{id}: {confirmed} OrderConfirmed and {cancelled} OrderCancelled")),
        }
    }
    books(log, rules, injected, strict, &mut v);
    v
}

#[derive(Default)]
struct Events {
    confirmed: Vec<String>,
    cancelled: Vec<(String, Option<String>)>,
    reserved: Vec<herald_shop::inventory::StockReserved>,
    rejected: usize,
    released: Vec<Vec<StockLine>>,
    charged: Vec<(String, i64, String)>,
    declined: usize,
    refunded: Vec<(String, i64)>,
}

/// The stock and credit folds (see [`check`]). An overrun is permanent only when `strict`
/// (the final read, no transaction open). A read while the processes run is not a
/// consistent cut: it reads a topic's partitions to their ends one after another, so a
/// transaction that commits meanwhile, releasing stock for one order on a partition read
/// already and reserving it for another on a partition read later, shows the reservation
/// without the release (seen once in CI: "SKU A held 31 > stock 30" during the
/// frozen-instance test). Such an overrun is pending, read again, and reported at the
/// deadline or by the final check if it stays.
fn books(log: &Log, rules: &Rules, injected: &HashSet<String>, strict: bool, v: &mut Verdict) {
    let overrun = |v: &mut Verdict, what: String| if strict { v.permanent.push(what) } else { v.pending.push(what) };
    // (timestamp, 0 = gives back / 1 = takes, key, delta)
    let mut moves: Vec<(i64, u8, String, i64, bool)> = Vec::new();
    let mut customer_of: HashMap<&str, &str> = HashMap::new();
    for s in log.events.iter().filter(|s| !injected.contains(&s.id)) {
        match &s.event {
            Ev::Inventory(InventoryEvent::Reserved(r)) => {
                moves.extend(r.lines.iter().map(|l| (s.timestamp, 1, l.sku.clone(), l.quantity, true)));
            }
            Ev::Inventory(InventoryEvent::Released(r)) => {
                moves.extend(r.lines.iter().map(|l| (s.timestamp, 0, l.sku.clone(), -l.quantity, true)));
            }
            Ev::Payment(PaymentEvent::Charged(c)) => {
                customer_of.insert(&c.order_id, &c.customer_id);
                moves.push((s.timestamp, 1, c.customer_id.clone(), c.amount_cents, false));
            }
            Ev::Payment(PaymentEvent::Refunded(r)) => moves.push((s.timestamp, 0, r.customer_id.clone(), -r.amount_cents, false)),
            _ => {}
        }
    }
    moves.sort_by_key(|m| (m.0, m.1));
    let (mut held, mut charged): (HashMap<String, i64>, HashMap<String, i64>) = Default::default();
    let mut reported = HashSet::new();
    for (at, _, key, delta, is_stock) in moves {
        if is_stock {
            let h = held.entry(key.clone()).or_default();
            *h += delta;
            let stock = rules.stock.get(&key).copied().unwrap_or(0);
            if *h > stock && reported.insert(key.clone()) {
                overrun(v, format!("SKU {key} held {h} > stock {stock} at {at}"));
            }
        } else {
            let c = charged.entry(key.clone()).or_default();
            *c += delta;
            let credit = rules.credit.get(&key).copied().unwrap_or(rules.default_credit);
            if *c > credit && reported.insert(key.clone()) {
                overrun(v, format!("customer {key} charged {c} > credit {credit} at {at}"));
            }
        }
    }
}

/// Reads and checks until nothing is pending or `within` passes; panics on a permanent
/// violation at once, on pending ones at the deadline. With `complete`, the last read waits
/// until no transaction is open (call it once the processes stopped).
pub async fn settled(config: &KafkaConfig, prefix: &str, placed: &[OrderPlaced], rules: &Rules, injected: &HashSet<String>, within: Duration) -> (Log, Verdict) {
    let deadline = Instant::now() + within;
    loop {
        let (log, verdict) = read_and_check(config, prefix, placed, rules, injected).await;
        if verdict.pending.is_empty() {
            return (log, verdict);
        }
        assert!(Instant::now() < deadline, "after {within:?} still pending ({}):\n{}", verdict.pending.len(), verdict.pending.iter().take(30).cloned().collect::<Vec<_>>().join("\n"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One read of the public topics and its check; panics on a permanent violation.
pub async fn read_and_check(config: &KafkaConfig, prefix: &str, placed: &[OrderPlaced], rules: &Rules, injected: &HashSet<String>) -> (Log, Verdict) {
    let log = read(config, prefix, false).await;
    let verdict = check(&log, placed, rules, injected, false);
    assert!(verdict.permanent.is_empty(), "the saga broke its guarantees:\n{}", verdict.permanent.join("\n"));
    (log, verdict)
}

/// The final check, once every process stopped: reads everything (no transaction open)
/// and asserts every invariant.
pub async fn final_check(config: &KafkaConfig, prefix: &str, placed: &[OrderPlaced], rules: &Rules, injected: &HashSet<String>) -> (Log, Verdict) {
    let log = read(config, prefix, true).await;
    let verdict = check(&log, placed, rules, injected, true);
    assert!(verdict.is_ok(), "the saga broke its guarantees:\n{}\npending:\n{}", verdict.permanent.join("\n"), verdict.pending.join("\n"));
    (log, verdict)
}

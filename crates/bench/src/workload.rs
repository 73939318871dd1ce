//! The events every variant sends: `OrderPlaced` events whose encoded payload has one
//! fixed size, and the same events pre-encoded for the raw baseline.

use herald_bus::publisher::Record;
use herald_bus::timestamp::TimestampMillis;
use herald_bus::{EventFamily, Publisher, Topic};
use herald_shop::{OrderEvent, OrderLine, OrderPlaced};

/// Size of the single-object frame in front of every datum (`C3 01` + 8-byte
/// fingerprint); the raw consumer skips it.
pub const FRAME_LEN: usize = 10;

/// Order `i` with a note of `note_len` characters. Ids and amounts have a fixed width, so
/// every order of one `note_len` encodes to the same number of bytes.
pub fn order(i: u64, note_len: usize) -> OrderPlaced {
    let lines: Vec<OrderLine> = (0..3u64)
        .map(|l| OrderLine {
            sku: format!("SKU-{:08}", (i * 3 + l) % 100_000_000),
            quantity: 1 + ((i + l) % 3) as i32,
            // Prices and totals (300 000 ..= 1 044 000) all take 3-byte zigzag varints.
            unit_price_cents: 100_000 + ((i * 7 + l) % 16_000) as i64,
        })
        .collect();
    let total_cents = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
    OrderPlaced {
        order_id: format!("order-{:012}", i % 1_000_000_000_000),
        customer_id: format!("customer-{:06}", i % 1_000_000),
        total_cents,
        currency: "EUR".to_owned(),
        lines,
        note: Some("leave the parcel at the back door; ring twice, the bell is quiet ".repeat(4)[..note_len].to_owned()),
        // Within one day of the example instant: always a 7-byte zigzag varint.
        placed_at: TimestampMillis::from_millis(herald_shop::orders::EXAMPLE_TIME_MILLIS + (i % 86_400_000) as i64),
    }
}

/// Encoded payload size of an order: frame plus Avro datum.
pub fn payload_size(event: &OrderPlaced) -> usize {
    let known = OrderEvent::schemas().latest(<OrderPlaced as herald_bus::Event>::TYPE).expect("OrderPlaced is a member of OrderEvent");
    let mut datum = Vec::new();
    herald_bus::publisher::encode_datum(known, event, &mut datum).expect("OrderPlaced encodes");
    FRAME_LEN + datum.len()
}

/// N orders whose encoded payload is as close to `target` bytes as the fixed fields allow.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The events, with distinct order ids (so keys spread over the partitions).
    pub events: Vec<OrderPlaced>,
    /// Encoded payload size of every event (frame + datum).
    pub payload_size: usize,
}

impl Workload {
    /// Builds `n` orders of about `target` payload bytes.
    pub fn new(n: usize, target: usize) -> Workload {
        let note_len = (0..=256).min_by_key(|len| payload_size(&order(0, *len)).abs_diff(target)).unwrap_or(0);
        let events: Vec<OrderPlaced> = (0..n as u64).map(|i| order(i, note_len)).collect();
        let payload_size = payload_size(&order(0, note_len));
        Workload { events, payload_size }
    }

    /// Value bytes of the whole workload.
    pub fn payload_bytes(&self) -> u64 {
        (self.events.len() * self.payload_size) as u64
    }

    /// The events encoded by Herald, exactly as `publish` would send them (fresh metadata,
    /// CloudEvents headers): what the raw producer sends, so both put the same bytes on the
    /// wire.
    pub async fn encode_all(&self, publisher: &Publisher, topic: &Topic<OrderEvent>) -> Result<Vec<Record>, crate::Error> {
        let mut records = Vec::with_capacity(self.events.len());
        for event in &self.events {
            let meta = publisher.metadata_for(event);
            records.push(publisher.encode(topic, event, &meta).await?);
        }
        Ok(records)
    }
}

/// Bytes a record takes, counted as Herald counts them against `message.max.bytes`: key,
/// value, and each header's name and value plus 8 bytes.
pub fn record_size(record: &Record) -> usize {
    use rdkafka::message::Headers;
    let headers: usize = record.headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 8).sum();
    record.key.as_ref().map_or(0, Vec::len) + record.payload.as_ref().map_or(0, Vec::len) + headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_of_a_workload_has_the_target_size() {
        let w = Workload::new(2_000, 200);
        assert_eq!(w.payload_size, 200);
        for (i, e) in w.events.iter().enumerate() {
            assert_eq!(payload_size(e), 200, "order {i}");
        }
        assert_eq!(w.payload_bytes(), 400_000);
    }

    #[test]
    fn order_ids_are_distinct() {
        let w = Workload::new(1_000, 200);
        let ids: std::collections::HashSet<&str> = w.events.iter().map(|e| e.order_id.as_str()).collect();
        assert_eq!(ids.len(), 1_000);
    }
}

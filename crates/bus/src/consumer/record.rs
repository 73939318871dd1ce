//! A consumed record, copied out of librdkafka once, compactly.
//!
//! `BorrowedMessage::detach` copies value and key into two vectors and the headers into a
//! new librdkafka header list (one allocation per header), and reading that list back costs
//! a C call and a UTF-8 check per header. A [`Record`] holds value, key, and every header's
//! name and value back to back in one buffer, with their spans in a second one, and shares
//! the topic name with the route. It keeps everything the original had: what a handler
//! sees is parsed from it, and what is dead-lettered is rebuilt from it unchanged.
//!
//! Records are copied by the main loop and dropped by the workers, on other threads.
//! Allocating on one thread and freeing on another defeats the allocator's per-thread
//! caches (glibc's malloc then takes an arena lock for every such pair, which halved the
//! consumer's throughput), so workers hand the emptied buffers back through a
//! [`Recycler`] and the main loop copies the next records into them.

use std::sync::{Arc, Mutex};

use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders, OwnedMessage, Timestamp};

/// A byte range in [`Record::bytes`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

/// A consumed record copied out of the client: value, key and headers in one buffer (see
/// the module docs). Cheaper to make than [`BorrowedMessage::detach`], and it keeps
/// everything the original had: [`OwnedRecord::to_message`] rebuilds it unchanged (for a
/// dead-letter topic, say), and [`decode_record`](super::decode_record) reads its event.
///
/// ```no_run
/// # async fn run(consumer: rdkafka::consumer::StreamConsumer, codec: &dyn herald_bus::codec::Codec) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use herald_bus::consumer::{decode_record, OwnedRecord};
/// # herald_bus::family! { #[derive(Debug)] pub enum Demo { A(A) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
/// # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
///
/// let topic: Arc<str> = Arc::from("demo.events");
/// let msg = consumer.recv().await?;
/// let record = OwnedRecord::copy(&msg, &topic);
/// drop(msg);
/// let envelope = decode_record::<Demo>(codec, &record).await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    /// The value, the key, then each header's name and value.
    bytes: Vec<u8>,
    payload: Option<Span>,
    key: Option<Span>,
    /// Name and value of each header, in their order on the wire.
    headers: Vec<(Span, Option<Span>)>,
}

/// The reusable allocations of an [`OwnedRecord`]: its bytes and header spans, empty.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    bytes: Vec<u8>,
    headers: Vec<(Span, Option<Span>)>,
}

/// Buffers that workers are done with, waiting to be reused by the main loop (see the
/// module docs). Both sides take the lock once per batch.
#[derive(Debug, Default)]
pub(crate) struct Recycler {
    spare: Mutex<Vec<Buffers>>,
    batches: Mutex<Vec<Vec<OwnedRecord>>>,
}

impl Recycler {
    /// Most buffers kept waiting; the rest are freed.
    const KEEP: usize = 4096;
    /// Larger buffers are freed rather than kept (one huge record must not pin its
    /// memory for good).
    const LARGEST: usize = 64 << 10;
    /// Most batch vectors kept waiting.
    const KEEP_BATCHES: usize = 256;

    /// Takes back the buffers in `spent`, leaving it empty.
    pub(crate) fn give_back(&self, spent: &mut Vec<Buffers>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let room = Self::KEEP.saturating_sub(spare.len());
        spare.extend(spent.drain(..).filter(|b| b.bytes.capacity() <= Self::LARGEST).take(room));
    }

    /// Takes back an emptied batch vector.
    pub(crate) fn give_back_batch(&self, batch: Vec<OwnedRecord>) {
        debug_assert!(batch.is_empty());
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        if batches.len() < Self::KEEP_BATCHES {
            batches.push(batch);
        }
    }

    /// An empty batch vector, reused when one is waiting.
    pub(crate) fn batch(&self) -> Vec<OwnedRecord> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    /// Moves up to `n` waiting buffers into `into`.
    pub(crate) fn take(&self, into: &mut Vec<Buffers>, n: usize) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let keep = spare.len().saturating_sub(n);
        into.extend(spare.drain(keep..));
    }
}

impl OwnedRecord {
    /// Copies `msg`, whose topic is `topic` (shared, so it is not copied per record).
    pub fn copy(msg: &BorrowedMessage<'_>, topic: &Arc<str>) -> OwnedRecord {
        Self::copy_into(msg, topic, Buffers::default())
    }

    /// [`OwnedRecord::copy`] into `buffers` (empty ones, new or from a [`Recycler`]).
    pub(crate) fn copy_into(msg: &BorrowedMessage<'_>, topic: &Arc<str>, buffers: Buffers) -> OwnedRecord {
        let (payload, key) = (msg.payload(), msg.key());
        let headers = msg.headers().map(crate::headers::pairs);
        let count = headers.as_ref().map_or(0, |h| h.size_hint().0);
        let estimate = payload.map_or(0, <[u8]>::len) + key.map_or(0, <[u8]>::len) + 64 * count;
        let Buffers { mut bytes, headers: mut spans } = buffers;
        bytes.reserve(estimate);
        spans.reserve(count);
        let mut push = |part: &[u8]| {
            let start = bytes.len() as u32;
            bytes.extend_from_slice(part);
            Span { start, end: bytes.len() as u32 }
        };
        let payload = payload.map(&mut push);
        let key = key.map(&mut push);
        // Names as bytes (`crate::headers`): rdkafka's accessor panics on one that is not UTF-8.
        for (name, value) in headers.into_iter().flatten() {
            spans.push((push(name), value.map(&mut push)));
        }
        OwnedRecord {
            topic: topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp(),
            bytes,
            payload,
            key,
            headers: spans,
        }
    }

    /// A record with a value and nothing else (the runtime's tests).
    #[cfg(test)]
    pub(crate) fn for_test(topic: &Arc<str>, partition: i32, offset: i64, payload: &[u8]) -> OwnedRecord {
        OwnedRecord {
            topic: topic.clone(),
            partition,
            offset,
            timestamp: Timestamp::NotAvailable,
            bytes: payload.to_vec(),
            payload: Some(Span { start: 0, end: payload.len() as u32 }),
            key: None,
            headers: Vec::new(),
        }
    }

    /// The record's allocations, emptied for the next copy.
    pub(crate) fn into_buffers(self) -> Buffers {
        let OwnedRecord { mut bytes, headers: mut spans, .. } = self;
        bytes.clear();
        spans.clear();
        Buffers { bytes, headers: spans }
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.start as usize..span.end as usize]
    }

    /// The topic it was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Its value (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.map(|s| self.slice(s))
    }

    /// Its key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|s| self.slice(s))
    }

    /// Name and value of each header, in order. Names are bytes, as on the wire (one that
    /// is not UTF-8 is kept as it was: see [`headers`](crate::headers)).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.headers.iter().map(|&(name, value)| (self.slice(name), value.map(|v| self.slice(v))))
    }

    /// Bytes a queued record accounts for: key, value, and a fixed overhead for the rest.
    pub(crate) fn footprint(&self) -> usize {
        self.payload.map_or(0, |s| (s.end - s.start) as usize) + self.key.map_or(0, |s| (s.end - s.start) as usize) + 128
    }

    /// Its timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Its headers as a librdkafka header list, in order (to produce them again).
    pub fn owned_headers(&self) -> OwnedHeaders {
        crate::headers::build(self.headers())
    }

    /// The record as an rdkafka message, headers included (for dead-lettering; rare).
    pub fn to_message(&self) -> OwnedMessage {
        let headers = (!self.headers.is_empty()).then(|| self.owned_headers());
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic.to_string(),
            self.timestamp,
            self.partition,
            self.offset,
            headers,
        )
    }
}

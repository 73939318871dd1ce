//! What a registered instance's consumer groups are doing: state, members, assigned
//! partitions and lag, in records (high watermark − committed offset, or 0 when only
//! transaction markers lie between, as after a transactional producer's last record) and
//! seconds (the age of the record at the committed offset, the oldest not yet consumed).
//!
//! One Kafka client does all of it ([`Inspector`], a consumer that never joins a group):
//! reading the registry topic, the group descriptions (DescribeGroups), the watermarks, and the committed offsets, read
//! from `__consumer_offsets` itself (the partition that holds a group's commits is
//! `abs(javaHashCode(group)) % partitions`, as the broker places them; only that
//! partition is read, `read_committed`, so transactional commits count once committed).
//! librdkafka fetches committed offsets only for the client's own group, and rust-rdkafka
//! has no ListConsumerGroupOffsets; reading the offsets topic is what lag exporters such as
//! Burrow do. The inspector keeps what it read of each offsets partition (every group's
//! latest commits there, and where it stopped), so a later inspection reads only what was
//! committed since: the first one reads the partitions from their start, a busy broker's
//! in tens of seconds; the ones after, in milliseconds.
//!
//! Blocking calls: run [`Inspector::inspect`] on a blocking thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use herald_bus::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::RegistryError;

/// The offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One partition a group consumes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the next to read), if it committed one.
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// `high_watermark − committed` (the whole partition when nothing is committed), 0 when
    /// no record a `read_committed` consumer returns lies between (transaction markers).
    pub lag_records: i64,
    /// Seconds since the record at the committed offset was written (0 without lag).
    pub lag_seconds: f64,
}

/// A consumer group as the broker describes it, with its lag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    /// The group id.
    pub group: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`.
    pub state: String,
    /// Members now in the group.
    pub members: usize,
    /// Partitions assigned to its members (`topic-partition`).
    pub assigned: Vec<String>,
    /// Every partition it has committed offsets for or is assigned.
    pub partitions: Vec<PartitionLag>,
    /// Sum of the partitions' lag in records.
    pub lag_records: i64,
    /// The largest partition lag in seconds.
    pub lag_seconds: f64,
}

/// Committed offsets per group, per topic partition.
type Committed = HashMap<String, BTreeMap<(String, i32), i64>>;

/// What was read of one partition of the offsets topic: every group's latest committed
/// offsets in it, and the offset to go on from.
#[derive(Debug, Default)]
struct OffsetsRead {
    next: i64,
    committed: Committed,
}

/// Inspects consumer groups with one client.
pub struct Inspector {
    consumer: BaseConsumer<crate::directory::QuietEof>,
    timeout: Duration,
    /// By partition of the offsets topic.
    offsets: std::sync::Mutex<HashMap<i32, OffsetsRead>>,
    /// Records of the offsets topic read so far.
    offsets_read: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Inspector {
    /// A client for `config`; each broker request waits at most `timeout`.
    pub fn new(config: &KafkaConfig, timeout: Duration) -> Result<Self, RegistryError> {
        let consumer: BaseConsumer<crate::directory::QuietEof> = config
            .client_config(&[
                ("group.id", "herald.services.inspector"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
            ])
            .create_with_context(crate::directory::QuietEof)?;
        Ok(Inspector { consumer, timeout, offsets: std::sync::Mutex::new(HashMap::new()), offsets_read: std::sync::atomic::AtomicU64::new(0) })
    }

    /// Skips what the offsets topic holds now: later inspections read only commits made
    /// after this call. For groups that do not exist yet (a run's own, under a fresh
    /// prefix), whose commits can only come later; the first inspection then reads
    /// seconds of commits, not the topic's history (tens of seconds on a busy broker).
    /// Blocking.
    pub fn skip_history(&self) -> Result<(), RegistryError> {
        let metadata = self.consumer.fetch_metadata(Some(OFFSETS_TOPIC), self.timeout)?;
        let partitions: Vec<i32> = metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
        let mut cache = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            let (_, high) = self.consumer.fetch_watermarks(OFFSETS_TOPIC, p, self.timeout)?;
            cache.insert(p, OffsetsRead { next: high, committed: HashMap::new() });
        }
        Ok(())
    }

    /// How many records of the offsets topic the inspections read so far: a later
    /// inspection reads only what was committed since the one before.
    pub fn offsets_read(&self) -> u64 {
        self.offsets_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every instance on the registry topic of `settings`, read from its beginning to its
    /// end (as a [`crate::Directory`] sees them once caught up: deregistered ones are not
    /// there, nor instances whose last heartbeat is older than the TTL plus
    /// [`crate::directory::FORGET_AFTER`], such as every crashed pod of the last weeks,
    /// which never wrote a tombstone). A registry topic that does not exist has no
    /// instances. Blocking.
    pub fn registry(&self, settings: &crate::Settings) -> Result<Vec<crate::Entry>, RegistryError> {
        let mut table = crate::table::Table::new(settings.ttl);
        let metadata = self.consumer.fetch_metadata(Some(&settings.topic), self.timeout)?;
        let partitions = metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len()) as i32;
        self.read_to_end(&settings.topic, (0..partitions).map(|p| (p, 0)), self.timeout, |message| {
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            let record = message.payload().map(crate::Instance::decode);
            match (key, record) {
                (Some(key), None) => table.apply(key, None, tokio::time::Instant::now(), crate::instance::now_ms()),
                (Some(key), Some(Ok(instance))) if instance.key() == key => {
                    table.apply(key, Some(instance), tokio::time::Instant::now(), crate::instance::now_ms());
                }
                _ => tracing::debug!(offset = message.offset(), "registry record skipped"),
            }
        })?;
        // Read in one burst, every record's age is capped at the TTL (see `Table::apply`):
        // the forgotten are told by their heartbeat's own time.
        let forget_ms = settings.ttl.saturating_add(crate::directory::FORGET_AFTER).as_millis() as i64;
        let now_ms = crate::instance::now_ms();
        let mut entries = table.entries(tokio::time::Instant::now());
        entries.retain(|e| now_ms.saturating_sub(e.instance.heartbeat_at_ms) <= forget_ms);
        Ok(entries)
    }

    /// The state, members, assignment and lag of each of `groups`. Blocking.
    pub fn inspect(&self, groups: &BTreeSet<String>) -> Result<Vec<GroupLag>, RegistryError> {
        let committed = self.committed(groups)?;
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let list = self.consumer.fetch_group_list(Some(group), self.timeout)?;
            let info = list.groups().iter().find(|g| g.name() == group);
            let state = info.map_or_else(|| "Dead".to_owned(), |g| g.state().to_owned());
            let members = info.map_or(0, |g| g.members().len());
            let mut assigned: BTreeSet<(String, i32)> = BTreeSet::new();
            if let Some(info) = info.filter(|g| g.protocol_type() == "consumer") {
                for member in info.members() {
                    assigned.extend(member.assignment().map(parse_assignment).unwrap_or_default());
                }
            }
            let offsets = committed.get(group).cloned().unwrap_or_default();
            let mut keys: BTreeSet<(String, i32)> = offsets.keys().cloned().collect();
            keys.extend(assigned.iter().cloned());
            let mut partitions = Vec::with_capacity(keys.len());
            for (topic, partition) in keys {
                let (low, high) = self.consumer.fetch_watermarks(&topic, partition, self.timeout)?;
                let committed = offsets.get(&(topic.clone(), partition)).copied();
                let from = committed.unwrap_or(low).max(low);
                let lag_records = (high - from).max(0);
                partitions.push(PartitionLag { topic, partition, committed, high_watermark: high, lag_records, lag_seconds: 0.0 });
            }
            self.ages(&mut partitions)?;
            let lag_records = partitions.iter().map(|p| p.lag_records).sum();
            let lag_seconds = partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max);
            let assigned = assigned.into_iter().map(|(t, p)| format!("{t}-{p}")).collect();
            out.push(GroupLag { group: group.clone(), state, members, assigned, partitions, lag_records, lag_seconds });
        }
        Ok(out)
    }

    /// The committed offsets of `groups`, read from the partitions of the offsets topic
    /// that hold them: from where the last inspection stopped, or from their start (the
    /// first time, or when the log's start moved past that point).
    fn committed(&self, groups: &BTreeSet<String>) -> Result<Committed, RegistryError> {
        let mut found: Committed = HashMap::new();
        if groups.is_empty() {
            return Ok(found);
        }
        let metadata = self.consumer.fetch_metadata(Some(OFFSETS_TOPIC), self.timeout)?;
        let count = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        if count == 0 {
            return Ok(found);
        }
        let wanted: BTreeSet<i32> = groups.iter().map(|g| offsets_partition(g, count)).collect();
        let mut cache = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        let mut from = Vec::new();
        for &p in &wanted {
            let (low, _) = self.consumer.fetch_watermarks(OFFSETS_TOPIC, p, self.timeout)?;
            let read = cache.entry(p).or_default();
            if read.next < low {
                *read = OffsetsRead { next: low, committed: HashMap::new() };
            }
            from.push((p, read.next));
        }
        // Every group's commits are kept, not only `groups`': a later inspection may ask
        // for another group of the same partition.
        let mut seen: HashMap<i32, i64> = HashMap::new();
        let read = self.read_to_end(OFFSETS_TOPIC, from, self.timeout * 3, |message| {
            seen.insert(message.partition(), message.offset() + 1);
            self.offsets_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((group, topic, partition)) = message.key().and_then(parse_offset_key) else { return };
            let Some(read) = cache.get_mut(&message.partition()) else { return };
            let entry = read.committed.entry(group).or_default();
            match message.payload().and_then(parse_offset_value) {
                Some(offset) => {
                    entry.insert((topic, partition), offset);
                }
                None => {
                    entry.remove(&(topic, partition));
                }
            }
        });
        // Where each partition's read stopped (a failed read keeps what it applied: each
        // record is applied once, in order, so going on from there is right).
        for (p, next) in seen {
            if let Some(read) = cache.get_mut(&p) {
                read.next = read.next.max(next);
            }
        }
        read?;
        for group in groups {
            if let Some(offsets) = cache.get(&offsets_partition(group, count)).and_then(|read| read.committed.get(group)) {
                found.insert(group.clone(), offsets.clone());
            }
        }
        Ok(found)
    }

    /// Reads `partitions` of `topic`, each from the offset given with it, to the end they
    /// have now (`read_committed`: a transaction marker or an aborted record may end a
    /// partition, so its end-of-partition event counts too), handing each record to
    /// `on_record`. Unassigns when done, also on an error or when `timeout` passes first.
    fn read_to_end(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = (i32, i64)>,
        timeout: Duration,
        mut on_record: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), RegistryError> {
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for (p, from) in partitions {
            let (low, high) = self.consumer.fetch_watermarks(topic, p, self.timeout)?;
            if high > from.max(low) {
                ends.insert(p, high);
                assignment.add_partition_offset(topic, p, Offset::Offset(from.max(low)))?;
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&assignment)?;
        let deadline = Instant::now() + timeout;
        let mut done: BTreeSet<i32> = BTreeSet::new();
        let read = loop {
            if done.len() >= ends.len() {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(RegistryError::Timeout(timeout));
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    done.insert(p);
                }
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(message)) => {
                    on_record(&message);
                    if ends.get(&message.partition()).is_some_and(|&end| message.offset() + 1 >= end) {
                        done.insert(message.partition());
                    }
                }
            }
        };
        self.consumer.unassign()?;
        read
    }

    /// Fills `lag_seconds` of the partitions with lag: the age of the record at the
    /// committed offset (the next one written after it, when it is a transaction marker);
    /// and sets `lag_records` to 0 where no record is left to read ([`Inspector::ages_in`]).
    fn ages(&self, partitions: &mut [PartitionLag]) -> Result<(), RegistryError> {
        // One topic at a time: the end of a partition (EOF) names its number, not its topic.
        let topics: BTreeSet<String> = partitions.iter().filter(|p| p.lag_records > 0).map(|p| p.topic.clone()).collect();
        for topic in topics {
            self.ages_in(&topic, partitions)?;
        }
        Ok(())
    }

    /// [`Inspector::ages`] of `topic`'s partitions. A partition with nothing readable
    /// between the committed offset and its end has no lag: what lies there is transaction
    /// markers (or aborted records), which a `read_committed` consumer never returns, so its
    /// committed offset stays one short of the end after a transactional producer's last
    /// record, for good.
    fn ages_in(&self, topic: &str, partitions: &mut [PartitionLag]) -> Result<(), RegistryError> {
        let mut assignment = TopicPartitionList::new();
        for p in partitions.iter().filter(|p| p.topic == topic && p.lag_records > 0) {
            let from = p.committed.map_or(Offset::Beginning, Offset::Offset);
            assignment.add_partition_offset(&p.topic, p.partition, from)?;
        }
        if assignment.count() == 0 {
            return Ok(());
        }
        self.consumer.assign(&assignment)?;
        // A partition paused by an earlier inspection (below) stays paused in the client
        // across assignments: another group's inspection of the same partition read nothing.
        self.consumer.resume(&assignment)?;
        let now = chrono::Utc::now().timestamp_millis();
        let deadline = Instant::now() + self.timeout;
        let mut pending = assignment.count();
        let mut read: BTreeSet<i32> = BTreeSet::new();
        while pending > 0 && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let at = message.timestamp().to_millis();
                    if message.topic() == topic && read.insert(message.partition())
                        && let Some(p) = partitions.iter_mut().find(|p| p.topic == topic && p.partition == message.partition())
                    {
                        p.lag_seconds = at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
                        pending -= 1;
                        let mut done = TopicPartitionList::new();
                        done.add_partition(message.topic(), message.partition());
                        // Nothing more is wanted from this partition.
                        let _ = self.consumer.pause(&done);
                    }
                }
                // The end of a partition of this topic, if the client's position there says
                // so: the event names no topic, and one of an earlier assignment (the offsets
                // topic's) may still come.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    let Some(p) = partitions.iter_mut().find(|p| p.topic == topic && p.partition == partition && p.lag_records > 0) else { continue };
                    let at_end = self.consumer.position().ok().and_then(|tpl| tpl.find_partition(topic, partition).map(|e| e.offset())).is_some_and(|o| matches!(o, Offset::Offset(o) if o >= p.high_watermark));
                    if at_end && read.insert(partition) {
                        pending = pending.saturating_sub(1);
                        p.lag_records = 0;
                        p.lag_seconds = 0.0;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reading a record's age"),
                None => {}
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }
}

/// The partition of the offsets topic holding `group`'s commits: Java's
/// `Utils.abs(group.hashCode()) % partitions`.
///
/// ```
/// use herald_services::groups::offsets_partition;
/// // Java: "my-group".hashCode() == -1906497762 (jshell); its abs % 50 == 12.
/// assert_eq!(offsets_partition("my-group", 50), 12);
/// ```
pub fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Reads an offsets-topic key: `Some((group, topic, partition))` for an offset commit
/// (key versions 0 and 1), `None` for anything else (group metadata and newer records).
fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let mut r = Reader(key);
    let version = r.i16()?;
    if !(0..=1).contains(&version) {
        return None;
    }
    let group = r.string()?;
    let topic = r.string()?;
    let partition = r.i32()?;
    Some((group, topic, partition))
}

/// Reads an offset commit's value: the committed offset (every version starts with it).
fn parse_offset_value(value: &[u8]) -> Option<i64> {
    let mut r = Reader(value);
    let _version = r.i16()?;
    r.i64()
}

/// Reads a member's assignment (the consumer protocol's `Assignment`, every version):
/// its topic partitions.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut r = Reader(bytes);
    let mut out = Vec::new();
    let parsed = (|| {
        r.i16()?;
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let topic = r.string()?;
            let n = r.i32()?;
            for _ in 0..n.max(0) {
                out.push((topic.clone(), r.i32()?));
            }
        }
        Some(())
    })();
    if parsed.is_none() {
        tracing::debug!("a member assignment could not be read entirely");
    }
    out
}

/// Big-endian reads of Kafka's classic encodings.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = self.i16()?;
        let bytes = self.take(usize::try_from(len).ok()?)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_values_and_assignments_are_read() {
        let mut key = vec![0, 1];
        for s in ["g", "shop.orders"] {
            key.extend((s.len() as i16).to_be_bytes());
            key.extend(s.as_bytes());
        }
        key.extend(3i32.to_be_bytes());
        assert_eq!(parse_offset_key(&key), Some(("g".to_owned(), "shop.orders".to_owned(), 3)));
        assert_eq!(parse_offset_key(&[0, 2, 0, 1, b'g']), None, "group metadata is not an offset");
        let mut value = vec![0, 3];
        value.extend(42i64.to_be_bytes());
        value.extend([0; 12]);
        assert_eq!(parse_offset_value(&value), Some(42));
        let mut assignment = vec![0, 1];
        assignment.extend(1i32.to_be_bytes());
        assignment.extend(1i16.to_be_bytes());
        assignment.push(b't');
        assignment.extend(2i32.to_be_bytes());
        assignment.extend(0i32.to_be_bytes());
        assignment.extend(5i32.to_be_bytes());
        assignment.extend((-1i32).to_be_bytes());
        assert_eq!(parse_assignment(&assignment), vec![("t".to_owned(), 0), ("t".to_owned(), 5)]);
    }
}

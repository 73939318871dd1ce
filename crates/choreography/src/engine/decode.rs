//! Decoding an input record into the participant's input: in the sink, which
//! dead-letters what cannot be decoded and hands the rest to the coordinator decoded, and
//! in the coordinator when it reacts to a record again after a rewind.

use herald_bus::codec::SingleObject;
use herald_bus::partitioner::Partitioner;
use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{Failure, Stage};
use herald_bus::{Metadata, UnknownTypes};

use crate::input::{Route, Routed};

/// Why a record is not decoded: the failure its dead letter says, and whether it is a
/// record on another partition than its aggregate's.
pub(crate) struct Refused {
    pub failure: Failure,
    pub misplaced: bool,
}

/// A subscribed topic's route and the codec that reads its payloads.
pub(crate) struct Reader<I> {
    pub route: Route<I>,
    pub codec: SingleObject,
    /// For a topic keyed by aggregate id: how its producers place records, and its
    /// partition count, to refuse records on another partition than their aggregate's.
    placement: Option<(Partitioner, u32)>,
    /// What becomes of a record whose type is not the route's family's, and the count of
    /// those skipped.
    unknown_types: (UnknownTypes, metrics::Counter),
}

impl<I> Reader<I> {
    /// A reader for `route` (single-object payloads written with its family's schemas).
    pub(crate) fn new(route: Route<I>) -> Self {
        let codec = SingleObject::new(route.schemas().clone());
        Reader { route, codec, placement: None, unknown_types: (UnknownTypes::DeadLetter, metrics::Counter::noop()) }
    }

    /// What becomes of records of `topic` (as read) whose type is outside the route's
    /// family (see [`EngineSettings::unknown_types`](super::EngineSettings::unknown_types)).
    pub(crate) fn unknown_types(mut self, policy: UnknownTypes, participant: &'static str, topic: &str) -> Self {
        let skipped = metrics::counter!("herald_choreography_inputs_skipped_total", "participant" => participant, "topic" => topic.to_owned());
        self.unknown_types = (policy, skipped);
        self
    }

    /// True (and counted) when a record refused with `failure` is to be moved past
    /// without a reaction or a dead letter: its type is unknown and the policy skips those.
    pub(crate) fn skip(&self, failure: &Failure) -> bool {
        let (policy, skipped) = &self.unknown_types;
        let skip = failure.stage == Stage::UnknownType && *policy == UnknownTypes::Skip;
        if skip {
            skipped.increment(1);
        }
        skip
    }

    /// Refuses records of an aggregate on another partition than `partitioner` puts its
    /// id among `partitions` (see [`EngineSettings::input_partitioner`](super::EngineSettings::input_partitioner)).
    pub(crate) fn placed(mut self, partitioner: Partitioner, partitions: u32) -> Self {
        self.placement = Some((partitioner, partitions));
        self
    }

    /// `None` when a record of `key` keyed `record_key` belongs on `partition`, else why
    /// not. A record without a key (or with an empty one) never does: producers put those
    /// on any partition, so some would be decided and others not.
    fn misplaced(&self, key: &str, record_key: Option<&[u8]>, topic: &str, partition: i32) -> Option<String> {
        let (partitioner, partitions) = self.placement?;
        if record_key.is_none_or(<[u8]>::is_empty) {
            return Some(format!("a record of {key:?} without a key, on partition {partition} of {topic}: an aggregate's records are keyed by its id, so its one partition (its one writer) has them all (produce it keyed by {key:?})"));
        }
        let owner = partitioner.partition(key.as_bytes(), partitions);
        (i64::from(owner) != i64::from(partition)).then(|| {
            format!(
                "a record of {key:?} on partition {partition} of {topic}, where {partitioner} puts {key:?} on partition {owner}: decided here it would make a second writer of {key:?} (produce it keyed by {key:?} with librdkafka's partitioner={0}, or set the engine's input partitioner to the one the producers use; `herald -X partitioner={0} dlq replay {topic} --by-key` puts it back where it belongs)",
                partitioner.librdkafka_name()
            )
        })
    }

    /// Decodes `record`: its input, state key and metadata; a failure says why it never will.
    pub(crate) fn decode(&self, record: &OwnedRecord) -> Result<(Routed<I>, Metadata), Failure> {
        self.read(record).map_err(|refused| refused.failure)
    }

    /// [`Reader::decode`], saying whether a failure is a record on another partition than
    /// its aggregate's (which an input that gained partitions makes too, see `growth`).
    pub(crate) fn read(&self, record: &OwnedRecord) -> Result<(Routed<I>, Metadata), Refused> {
        let failure = |stage, reason: String| Refused { failure: Failure { stage, reason, attempts: 0 }, misplaced: false };
        let payload = record.payload().ok_or_else(|| failure(Stage::Decode, herald_bus::codec::DecodeError::Empty.to_string()))?;
        // An unknown schema whose `ce_type` is outside the family is an unknown type.
        let (writer, datum) = self.codec.split(payload).map_err(|e| Refused { failure: herald_bus::consumer::header_failure(e, record.headers(), self.route.types()), misplaced: false })?;
        let mut meta = Metadata::from_record_header_pairs(record.headers(), record.key(), &writer.name, record.timestamp().to_millis()).map_err(|e| failure(Stage::Decode, e.to_string()))?;
        meta.check_type(&writer.name).map_err(|e| failure(Stage::Decode, e.to_string()))?;
        // A record without `ce_id` is known by its place in the log: the same id at every
        // read, so the reaction's output ids are too.
        meta.identify_by_position(record.topic(), record.partition(), record.offset());
        let decoded = if self.route.reads_headers() {
            self.route.decode_with(&writer.name, &writer, datum, &meta, &crate::input::Extensions::from_header_pairs(record.headers()))
        } else {
            self.route.decode(&writer.name, &writer, datum, &meta)
        };
        match decoded {
            // Keyed by the Kafka key: a record keyed otherwise would be a second writer.
            Ok(Some(routed)) => match self.route.check_record_key(record.key(), &routed.key) {
                Ok(()) => match self.misplaced(&routed.key, record.key(), record.topic(), record.partition()) {
                    None => Ok((routed, meta)),
                    Some(reason) => Err(Refused { misplaced: true, ..failure(Stage::Decode, reason) }),
                },
                Err(e) => Err(failure(Stage::Decode, e.to_string())),
            },
            Ok(None) => Err(failure(Stage::UnknownType, format!("event type {} is not consumed on {}", writer.name, self.route.topic()))),
            Err(e) => Err(failure(Stage::Decode, e.to_string())),
        }
    }
}

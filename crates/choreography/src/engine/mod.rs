//! The exactly-once engine: runs one [`Participant`] against Kafka, as a sink on
//! herald-bus's consumer runtime ([`herald_bus::runtime`]).
//!
//! ```text
//!  inputs (read_committed) ─▶ runtime ─▶ EngineSink ─▶ coordinator ─▶ one transaction:
//!                                          (per partition,     │  emitted events,
//!                                           waits for commit)  │  changed slots → changelog,
//!  changelog (restore on assignment) ─────────────────────────▶│  input offsets (KIP-447)
//!  timer (due deadlines of owned partitions) ─────────────────▶│
//! ```
//!
//! - **One transaction per batch.** Reactions accumulate in the open transaction for
//!   [`EngineSettings::commit_interval`] or [`EngineSettings::max_batch`] reactions, or
//!   until no input came for [`EngineSettings::commit_when_idle`] (5 ms); the
//!   events are produced with their deterministic ids and metadata, each changed slot once
//!   to the compacted changelog (key = state key, partition = the input's partition), the
//!   next input offsets with `send_offsets_to_transaction` and fresh group metadata, then
//!   `commit_transaction`. A partition's next records are delivered once its previous ones
//!   committed, so per-key order holds. One transactional producer per process, with the
//!   stable `transactional.id` `<group>.<instance>`.
//! - **Errors** are classified by [`classify`]: retriable calls are retried (a commit by
//!   calling `commit_transaction` again, which resumes it); abortable ones abort, put back
//!   the slots as they were before the transaction and react to its inputs again (see
//!   `coordinator`); fatal ones (fenced included) rebuild the producer and do the same.
//!   Transaction calls run on tokio's blocking pool with finite timeouts. A commit that
//!   failed otherwise than by an abortable error (timed out, retried in vain, fatal:
//!   [`outcome_unknown`]) may still commit: the new producer's
//!   `init_transactions` waits until the broker finished it either way, then a changelog
//!   record it wrote, read back `read_committed`, says which way (`witness`), and only an
//!   aborted transaction's inputs and deadlines are reacted to again (nothing is reacted to
//!   meanwhile).
//! - **State** lives in memory per owned partition, rebuilt from the changelog partition
//!   of the same number before any of the partition's inputs is reacted to (co-partitioned:
//!   the inputs and the changelog have the same partition count, and the `range` assignor
//!   gives one member the same partition of every input). Dropped on revoke or loss.
//! - **Deadlines** are in the slots (so in the changelog); a timer fires the due ones of
//!   the restored partitions into the same transactional flow: after a restart they fire
//!   once the partition is restored, also those that came due while the process was down.
//!   A partition restored with a backlog (inputs that arrived while no one reacted) is
//!   *catching up* until its transactions committed past that backlog: meanwhile a
//!   deadline fires only once every input that arrived before it, on each input topic of
//!   the partition, was reacted to, and before the first input of its topic that came
//!   after it, so inputs and deadlines take turns as they happened, not all deadlines
//!   first (see `catch_up` for how, and its limits). A timer tick takes the due deadlines
//!   from an index by due time (see `due`), not from a pass over every slot.
//! - **Repartition** (see `repartition`): inputs whose state key is not their Kafka key
//!   are first copied, exactly once, to the participant's repartition topic keyed by the
//!   state key, and the participant reads that topic.
//! - **Topics**: the engine makes its changelog, repartition and dead-letter topics. It
//!   refuses to start when an input or a declared output topic is missing
//!   ([`EngineError::Partitions`], [`EngineError::MissingOutput`]): a missing output would
//!   fail every transaction, and every partition of the process would wait.
//! - **Topics an input names** (an aggregate's reply topic, [`Emitted::exact_topic`](crate::emit::Emitted::exact_topic))
//!   are checked before their output is written (see `named_topics`): one that does not
//!   exist would fail the transaction on every retry and stall the partition, so that
//!   output is dropped with an error and `herald_choreography_outputs_dropped_total`.
//!   So is one to a topic that is the participant's own
//!   ([`Declaration::own_topics`](crate::declaration::Declaration::own_topics), prefixed:
//!   its changelog, inputs, repartition and output topics) or Kafka's internal ones
//!   (`reason="own-topic"`): a stranger's record in the compacted changelog would stop every
//!   later restore of its partition.
//! - **Records it cannot read** (undecodable bytes) are dead-lettered at stage `decode`.
//!   Records of **event types outside the input's family** (a schema the participant
//!   knows that is no member, or an unknown schema whose `ce_type` names another type)
//!   are dead-lettered at stage `unknown-type`, or, with
//!   [`EngineSettings::unknown_types`] = [`UnknownTypes::Skip`](herald_bus::UnknownTypes),
//!   moved past in the transaction without a reaction, as the bus
//!   [`Consumer`](herald_bus::Consumer)'s policy of the same name. A
//!   participant has no error to return: `decide` refuses an input by emitting the
//!   refusal's event, and a panic is the way to fail one.
//! - **A reaction that panics** (a bug in `decide`, an aggregate's `evolve`) fails only
//!   its input: the panic is caught, the input dead-lettered (`<topic>.dlq`, stage
//!   `handler`, the panic's message as reason) in the transaction that moves past it, its
//!   state unchanged; the partition goes on. So is **a reaction that cannot be written**: an event or a new state that its schema
//!   refuses (a value from the input that an output's enum does not allow, a bug), or one
//!   whose record would be within 2 KiB of the producer's `message.max.bytes` or of its
//!   topic's own `max.message.bytes` when lower (so large the producer or the broker would
//!   refuse it and its transaction abort on every try; see `limits`, which also keeps the
//!   producer's batches under the smallest topic limit), is found
//!   before the reaction is applied, and none of it commits (no event, no state change);
//!   the reason names what cannot be written (a reaction that sets deadlines and keeps
//!   its state is checked with that state). A deadline whose reaction panics or cannot be
//!   written has no record to dead-letter: it stays pending in its key's state (and the
//!   changelog), the state unchanged, and fires again when its partition is restored (a
//!   restart, with the bug fixed, say), not at every tick meanwhile; the health check
//!   lists it (`deadlines_failing`, [`EngineHealth::deadlines_failing`]) without turning
//!   unhealthy, since a restart does not fix a bug. [`dead_letter::create_topics`] makes a
//!   dead-letter topic [`dead_letter::HEADROOM`] larger than its input, so an input at its
//!   topic's limit can still be dead-lettered. A letter over the limit of a dead-letter
//!   topic made otherwise (read at start) is not written in the transaction, which would
//!   fail on every try and hold every partition: the input is handed back to its
//!   partition's worker, which writes the letter itself if it can, else parks that
//!   partition (nothing after it is skipped) and reports it in the health check, as the
//!   bus runtime does; the other partitions go on. The dead-letter topic is not checked as a named topic is: an input
//!   is never skipped for want of it. If the broker refuses a letter for its topic
//!   (missing, not authorized), that transaction fails; the engine learns the topic from
//!   the delivery reports and, for a while, hands its letters back the same way (the
//!   worker retries a missing topic's letter until the topic is made, the health check
//!   listing the partition meanwhile, and parks the partition on a refusal).
//!   Should the coordinator end all the same (a panic elsewhere), the engine stops with
//!   [`EngineError::Coordinator`] and `/health` turns unhealthy.
//! - **Inputs keyed by the Kafka key** ([`KeyKind::Subject`](crate::KeyKind::Subject)): a
//!   record whose key is not its event's aggregate id is dead-lettered (it would be a
//!   second writer of that id,
//!   [`Route::check_record_key`](crate::input::Route::check_record_key)), and so are one
//!   on another partition than its aggregate id's (murmur2 as Java's and Herald's clients
//!   place keys, or the producers' own: [`EngineSettings::input_partitioner`];
//!   librdkafka's default is CRC-32) and one without a key.
//! - **An input that gains partitions** while the engine runs stops it with
//!   [`EngineError::Partitions`] (and `/health` says why): its keys moved away from their
//!   state, which is partitioned as the inputs were. Nothing is dead-lettered for it; the
//!   records wait in their topics. It is found when a partition beyond the count is
//!   assigned, when a record is on another partition than its aggregate's (with the
//!   placement check on: the count is asked again before such a record is
//!   dead-lettered), and by a check every 30 s; with the placement check off
//!   (`input_partitioner: None`), records placed by the new count may be decided on the
//!   wrong partition until then. A restart refuses the changelog's old count too: move to
//!   topics made with the new one.
//! - **Deadlines** fire at most as many per key and tick as were due when the tick began:
//!   a reaction that sets one at or before `now` sees it fire at the next tick.
//! - Payloads are read and written in single-object encoding (no registry codec yet).
//!
//! # Hanging transactions
//!
//! Kafka's transaction coordinator can finish a transaction without writing its marker to
//! some of its partitions (see `restore`): they keep it open for good (the engine reports
//! one on its changelog when it restores, and one on an input partition it owns after
//! [`EngineSettings::hanging_input_after`], see `hanging`), and only an operator ends it, with `kafka-transactions.sh find-hanging`, then `abort` for each
//! partition listed. `abort` ends it on one partition, and an engine that keeps running
//! meanwhile can undo the others: when its producer writes again to a partition where its
//! own transaction still hangs, the broker adds the new records to that open transaction,
//! and their commit commits the hanging ones too. So abort the partitions that hold the
//! engine back last: its changelog (a restore waits for it) and `__consumer_offsets` (a
//! `read_committed` member's offset fetch waits for a pending transactional commit). In the
//! other order the engine reacts again to inputs whose outputs still hang, and commits
//! both the old and the new output: one event twice. Stopping the participant's instances
//! while aborting is the other safe way.
//!
//! An abort cannot repair a transaction the coordinator had *committed* when it skipped
//! only some of its markers: its other partitions are committed already, and aborting the
//! rest drops its changelog state (or its offsets), so its inputs are reacted to again and
//! an output may appear twice, with the same `ce_id` (ids derive from the input). Kafka
//! offers no way to complete such a transaction.

mod catch_up;
mod classify;
mod clock;
mod coordinator;
mod decode;
mod due;
mod error;
mod growth;
mod hanging;
mod health;
mod limits;
mod named_topics;
mod producer;
mod repartition;
mod restore;
mod settings;
mod sink;
mod witness;
mod written;

pub use classify::{classify, outcome_unknown, TxnCall, TxnClass};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::EngineError;
pub use health::EngineHealth;
pub use settings::{EngineSettings, CHANGELOG_CONFIGS};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use herald_bus::admin::{self, TopicSpec};
use herald_bus::dead_letter;
use herald_bus::runtime::dead_letter::DeadLetters;
use herald_bus::runtime::{Runtime, Settings};
use herald_bus::KafkaConfig;
use tokio_util::sync::CancellationToken;

use crate::changelog::StateCodec;
use crate::declaration::Declaration;
use crate::participant::Participant;
use coordinator::{Command, Coordinator};
use decode::Reader;
use growth::Growth;
use repartition::RepartitionSink;
use sink::{EngineSink, HandedBack, Overdue};

/// Runs one participant exactly once against Kafka: see the [module docs](self).
///
/// ```no_run
/// # async fn run<P: herald_choreography::Participant>(participant: P) -> Result<(), herald_choreography::engine::EngineError> {
/// use herald_choreography::engine::{Engine, EngineSettings};
/// let config = herald_bus::KafkaConfig::new("127.0.0.1:9092");
/// let engine = Engine::new(&config, participant, EngineSettings::new("host-1"))?;
/// engine.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct Engine<P: Participant> {
    config: KafkaConfig,
    participant: Arc<P>,
    settings: EngineSettings,
    clock: Arc<dyn Clock>,
    health: Arc<EngineHealth>,
}

impl<P: Participant> Engine<P> {
    /// An engine for `participant`; checks what can be checked without a broker.
    pub fn new(config: &KafkaConfig, participant: P, settings: EngineSettings) -> Result<Self, EngineError> {
        let declaration = Declaration::of(&participant);
        if declaration.consumes.is_empty() {
            return Err(EngineError::NoInputs(P::NAME.to_owned()));
        }
        StateCodec::<P::State>::new()?;
        Ok(Engine { config: config.clone(), participant: Arc::new(participant), settings, clock: Arc::new(SystemClock), health: Arc::default() })
    }

    /// Uses `clock` for `now` and deadlines (tests: a [`ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Live state, for `/health` (it implements `herald_ops::HealthCheck`).
    pub fn health(&self) -> Arc<EngineHealth> {
        self.health.clone()
    }

    /// The changelog topic.
    pub fn changelog_topic(&self) -> String {
        self.settings.changelog.clone().unwrap_or_else(|| self.settings.prefixed(&Declaration::of(&*self.participant).changelog_topic()))
    }

    /// The consumer group.
    pub fn group(&self) -> String {
        self.settings.group.clone().unwrap_or_else(|| self.settings.prefixed(P::NAME))
    }

    /// Checks the inputs are co-partitioned; creates the changelog, the repartition topics
    /// and the dead-letter topics if missing (as many partitions as the inputs; the
    /// changelog compacted).
    /// Returns the topics the participant reads (inputs keyed by the state key, and
    /// repartition topics) and the inputs to repartition with their target, every name
    /// with the [`EngineSettings::topic_prefix`].
    async fn prepare_topics(&self) -> Result<(Vec<String>, Vec<(String, String)>, u32), EngineError> {
        let declaration = Declaration::of(&*self.participant);
        let admin_error = |e: admin::AdminError| EngineError::Admin(e.to_string());
        let mut count = None;
        for consumed in &declaration.consumes {
            let topic = &self.settings.prefixed(&consumed.topic);
            let n = admin::partition_count(&self.config, topic).await.map_err(admin_error)?.ok_or_else(|| EngineError::Partitions(format!("input topic {topic} does not exist")))?;
            if !consumed.key.needs_repartition() {
                if count.is_some_and(|c| c != n) {
                    return Err(EngineError::Partitions(format!("input {topic} has {n} partitions, another input {}", count.unwrap_or_default())));
                }
                count = Some(n);
            } else if count.is_none() {
                count = Some(n);
            }
        }
        let count = count.unwrap_or_default();
        let mut needed = vec![(self.changelog_topic(), true)];
        let prefixed = |t: &str| self.settings.prefixed(t);
        let repartitioned: Vec<(String, String)> = declaration.consumes.iter().filter_map(|c| Some((prefixed(&c.topic), prefixed(&declaration.repartition_topic(&c.topic)?)))).collect();
        needed.extend(repartitioned.iter().map(|(_, target)| (target.clone(), false)));
        let source_of = |target: &str| repartitioned.iter().find(|(_, t)| t == target).map(|(source, _)| source.clone());
        for (topic, compacted) in needed {
            match admin::partition_count(&self.config, &topic).await.map_err(admin_error)? {
                Some(n) if n != count => return Err(EngineError::Partitions(format!("{topic} has {n} partitions, the inputs {count}"))),
                Some(_) => {}
                None if self.settings.create_changelog => {
                    let mut spec = TopicSpec::new(&topic).partitions(count as i32);
                    if compacted {
                        spec = spec.config("cleanup.policy", "compact");
                        for (name, value) in &self.settings.changelog_configs {
                            spec = spec.config(name, value);
                        }
                    }
                    match source_of(&topic) {
                        // Every record of its source fits, with the headers the copy adds.
                        Some(source) => admin::create_topic_roomier_than(&self.config, spec, &source, dead_letter::HEADROOM).await.map_err(admin_error)?,
                        None => drop(admin::create_topics(&self.config, &[spec]).await.map_err(admin_error)?),
                    }
                }
                None => return Err(EngineError::Partitions(format!("{topic} does not exist"))),
            }
        }
        let read: Vec<String> = declaration.co_partitioned().iter().map(|t| prefixed(t)).collect();
        if self.settings.create_dead_letter_topics {
            // Where the sinks dead-letter what they cannot take (and the coordinator the
            // inputs whose reaction panicked): missing, a bad record holds its partition.
            let letters: Vec<&String> = read.iter().chain(repartitioned.iter().map(|(source, _)| source)).collect();
            // Not fatal (a cluster whose topics are made by its operators may refuse the
            // request, existing topics or not): a letter whose topic is missing waits, and
            // the health check says so.
            if let Err(e) = dead_letter::create_topics(&self.config, &letters).await {
                tracing::warn!(error = %e, "the dead-letter topics could not be created: make them, or records the engine cannot take hold their partitions");
            }
        }
        Ok((read, repartitioned, count as u32))
    }

    /// How the inputs' producers place keys ([`EngineSettings::input_partitioner`]). Left at
    /// murmur2, it follows the configuration's `partitioner`: the one Herald's own
    /// producers use with it (a setting no check knows turns the check off, with a warning).
    fn expected_partitioner(&self) -> Option<herald_bus::partitioner::Partitioner> {
        use herald_bus::partitioner::Partitioner;
        match (self.settings.input_partitioner, self.config.get("partitioner")) {
            (Some(Partitioner::Murmur2), Some(configured)) => match configured.parse() {
                Ok(partitioner) => Some(partitioner),
                Err(e) => {
                    tracing::warn!(error = %e, "the inputs' partitions are not checked against their aggregates (see EngineSettings::input_partitioner)");
                    None
                }
            },
            (set, _) => set,
        }
    }

    /// The runtime that copies inputs to their repartition topics, if any, with its
    /// committer task (aborted when dropped, like the coordinator: a crash).
    fn repartitioner(&self, repartitioned: &[(String, String)], limits: &limits::RecordLimits, group: &str, letters: Arc<DeadLetters>) -> Result<Option<Repartitioner<P::Input>>, EngineError> {
        if repartitioned.is_empty() {
            return Ok(None);
        }
        let inputs = self.participant.inputs();
        let route = |source: &str| inputs.route(source.strip_prefix(&self.settings.topic_prefix)?);
        let readers = repartitioned
            .iter()
            .filter_map(|(source, target)| {
                let reader = Reader::new(route(source)?.clone()).unknown_types(self.settings.unknown_types, P::NAME, source);
                let max = limits.output(target, false);
                Some((source.clone(), repartition::Copying { reader, target: target.clone(), max, named: limits.named(max) }))
            })
            .collect();
        let group = format!("{group}.repartition");
        let mut settings = self.settings.clone();
        settings.group = Some(group.clone());
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        let membership = Arc::new(OnceLock::new());
        let shared = repartition::Shared { readers, jobs, membership: membership.clone() };
        let runtime = Runtime::new(&self.config, self.consumer_settings(&group, repartitioned.iter().map(|(s, _)| s.clone()).collect()), RepartitionSink(Arc::new(shared)), letters)?;
        // Ends once the runtime and its partitions are gone (the queue's senders with them).
        let committer = repartition::Committer { jobs: queue, membership, config: self.config.clone(), transactional_id: settings.transactional_id(P::NAME), settings: settings.clone(), in_doubt: None, landed: HashMap::new() };
        let committing = AbortOnDrop(tokio::spawn(committer.run()).into());
        Ok(Some((runtime, committing)))
    }

    fn consumer_settings(&self, group: &str, topics: Vec<String>) -> Settings {
        let mut settings = Settings::new(group.to_owned(), topics);
        settings.properties.push(("partition.assignment.strategy".into(), "range".into()));
        settings.properties.push(("isolation.level".into(), "read_committed".into()));
        if self.settings.static_membership {
            settings.properties.push(("group.instance.id".into(), format!("{group}.{}", self.settings.instance)));
        }
        settings.properties.extend(self.settings.consumer_properties.iter().cloned());
        settings
    }

    /// Runs until `shutdown` completes, then stops in order: the open transaction is
    /// committed (what the runtime drained included), or aborted when it cannot commit.
    ///
    /// Dropping the future instead is a crash: nothing open commits, and the next
    /// instance with the same `instance` fences and aborts it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), EngineError> {
        let (topics, repartitioned, partitions) = self.prepare_topics().await?;
        let group = self.group();
        let declaration = Declaration::of(&*self.participant);
        let mut outputs: Vec<(String, String)> = declaration.emits.iter().filter(|o| o.topic() != crate::declaration::NAMED_BY_INPUT).map(|o| (o.topic().to_owned(), self.settings.prefixed(o.topic()))).collect();
        outputs.sort();
        outputs.dedup();
        for (_, topic) in &outputs {
            if admin::partition_count(&self.config, topic).await.map_err(|e| EngineError::Admin(e.to_string()))?.is_none() {
                return Err(EngineError::MissingOutput(topic.clone()));
            }
        }
        let dead_letters: Vec<String> = topics.iter().map(|t| dead_letter::topic_for(t)).collect();
        // The repartition topics' limits are read with the outputs' (named as on the broker).
        let written: Vec<(String, String)> = outputs.iter().cloned().chain(repartitioned.iter().map(|(_, target)| (target.clone(), target.clone()))).collect();
        let limits = limits::RecordLimits::read(&self.config, &written, &self.changelog_topic(), &dead_letters).await;
        let expected = self.expected_partitioner();
        let readers = || -> HashMap<String, Reader<P::Input>> {
            let read = |r: &crate::input::Route<P::Input>| self.settings.prefixed(&declaration.repartition_topic(r.topic()).unwrap_or_else(|| r.topic().to_owned()));
            let reader = |r: &crate::input::Route<P::Input>| match expected {
                // Read where it was produced: its partition must be its aggregate's.
                Some(partitioner) if !r.key().needs_repartition() => Reader::new(r.clone()).placed(partitioner, partitions),
                _ => Reader::new(r.clone()),
            };
            self.participant.inputs().routes().iter().map(|r| (read(r), reader(r).unknown_types(self.settings.unknown_types, P::NAME, &read(r)))).collect()
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Command<P::Input, P::State>>();
        let owned = hanging::Owned::default();
        let membership = Arc::new(OnceLock::new());
        let overdue = Arc::new(Overdue::default());
        let stop = CancellationToken::new();
        let stopping = CancellationToken::new();
        let growth = Arc::new(Growth::new(self.config.clone(), topics.clone(), partitions, stopping.clone(), self.health.clone()));
        let handed_back = Arc::new(HandedBack::default());
        let sink = EngineSink {
            tx: tx.clone(),
            readers: Arc::new(readers()),
            membership: membership.clone(),
            revoke_wait: self.settings.call_timeout,
            overdue: overdue.clone(),
            offsets: if self.settings.exactly_once { herald_bus::runtime::Offsets::Owned } else { herald_bus::runtime::Offsets::Stored },
            growth: growth.clone(),
            handed_back: handed_back.clone(),
        };
        let settings = self.consumer_settings(&group, topics);
        let publisher = dead_letter::publisher(&self.config, format!("/herald/{}", P::NAME)).map_err(|e| EngineError::DeadLetters(e.to_string()))?;
        let letters = Arc::new(DeadLetters { publisher, group: group.clone() });
        let repartitioner = self.repartitioner(&repartitioned, &limits, &group, letters.clone())?;
        let runtime = Runtime::new(&self.config, settings, sink, letters)?;
        *self.health.consumer.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime.health());
        *self.health.repartitioner.lock().unwrap_or_else(|p| p.into_inner()) = repartitioner.as_ref().map(|(runtime, _)| runtime.health());
        let coordinator = Coordinator::new(
            self.participant.clone(),
            readers(),
            Arc::new(StateCodec::new()?),
            self.changelog_topic(),
            self.config.clone(),
            self.settings.clone(),
            self.clock.clone(),
            membership,
            overdue,
            self.health.clone(),
            tx.clone(),
            limits,
            owned.clone(),
            handed_back,
        );
        let coordinator = tokio::spawn(coordinator.run(rx, stop.clone()));
        let age = metrics::gauge!("herald_choreography_open_transaction_age_seconds", "participant" => P::NAME);
        let _ageing = AbortOnDrop(tokio::spawn(health::keep_open_transaction_age(self.health.clone(), age, health::AGE_EVERY)).into());
        let _hanging = AbortOnDrop(tokio::spawn(hanging::watch(self.config.clone(), owned, self.settings.hanging_input_after, self.health.clone(), stop.clone())).into());
        let watching = {
            let (growth, done) = (growth.clone(), stop.clone());
            AbortOnDrop(tokio::spawn(async move { growth.watch(done).await }).into())
        };
        let _coordinator = AbortTask(coordinator.abort_handle());
        // The coordinator ends only once `stop` is cancelled. Ending before (a panic) would
        // leave every partition waiting for commits that never come: the engine stops with
        // an error instead, and /health says so.
        let ended = Arc::new(OnceLock::new());
        let watch = {
            let (stop, stopping, health, ended) = (stop.clone(), stopping.clone(), self.health.clone(), ended.clone());
            async move {
                let result = coordinator.await;
                if stop.is_cancelled() {
                    return;
                }
                let reason = match result {
                    Err(e) if e.is_panic() => format!("the coordinator panicked: {}", herald_bus::panics::describe(&*e.into_panic())),
                    Err(e) => format!("the coordinator ended: {e}"),
                    Ok(()) => "the coordinator ended".to_owned(),
                };
                tracing::error!(reason, "the engine stops");
                health.ending(reason.clone());
                let _ = ended.set(reason);
                stopping.cancel();
            }
        };
        let task = AbortOnDrop(tokio::spawn(watch).into());
        let flush = tx.clone();
        let signal = stopping.clone();
        let _signal = AbortOnDrop(
            tokio::spawn(async move {
                shutdown.await;
                signal.cancel();
            })
            .into(),
        );
        let main_stop = stopping.clone();
        let main = runtime.run(async move {
            main_stop.cancelled().await;
            // Commit what is open before the runtime drains (the drain waits on commits).
            let _ = flush.send(Command::Flush);
        });
        // Either runtime ending (a fatal error) stops the other.
        let main = async {
            let result = main.await;
            stopping.cancel();
            result
        };
        let result = match repartitioner {
            Some((repartitioner, committing)) => {
                let copied = async {
                    let result = repartitioner.run(stopping.cancelled()).await;
                    stopping.cancel();
                    result
                };
                let (main, copied) = tokio::join!(main, copied);
                // The runtime stopped: the committer ends with its queue, once its last
                // transaction returned (bounded: a client that does not close could keep
                // the queue open; then it is stopped as in a crash).
                let mut committing = committing;
                if let Some(handle) = committing.0.take_handle() {
                    let abort = handle.abort_handle();
                    if tokio::time::timeout(self.settings.call_timeout, handle).await.is_err() {
                        abort.abort();
                    }
                }
                main.and(copied)
            }
            None => main.await,
        };
        stop.cancel();
        let mut task = task;
        if let Some(handle) = task.0.take_handle() {
            let _ = handle.await;
        }
        drop(watching);
        if let Some(reason) = ended.get() {
            return Err(EngineError::Coordinator(reason.clone()));
        }
        if let Some(reason) = growth.found() {
            return Err(EngineError::Partitions(reason.to_owned()));
        }
        result.map_err(EngineError::from)
    }
}

/// The repartition runtime and its committer task.
type Repartitioner<I> = (Runtime<RepartitionSink<I>>, AbortOnDrop);

/// Aborts the coordinator when the engine's future is dropped (a crash, as far as Kafka
/// can tell: nothing open commits).
struct AbortOnDrop(HandleSlot);

struct HandleSlot(Option<tokio::task::JoinHandle<()>>);

impl HandleSlot {
    fn take_handle(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.0.take()
    }
}

impl From<tokio::task::JoinHandle<()>> for HandleSlot {
    fn from(h: tokio::task::JoinHandle<()>) -> Self {
        HandleSlot(Some(h))
    }
}

/// Aborts a task when dropped (the coordinator, when the engine's future is dropped).
struct AbortTask(tokio::task::AbortHandle);

impl Drop for AbortTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.0.take() {
            h.abort();
        }
    }
}

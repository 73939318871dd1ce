//! The coordinator: the one task that owns the transactional producer and the state of
//! the owned partitions, and turns reactions into transactions.
//!
//! Partition sinks submit their records and wait; the coordinator reacts (decide, apply,
//! produce the emitted events in the open transaction), and commits every
//! `commit_interval` or `max_batch` reactions, or once no input came for
//! `commit_when_idle`: the changed slots to the changelog, the
//! input offsets (next = last + 1) with fresh group metadata, `commit_transaction`. Only
//! then are the sinks told their records are done. A timer fires due deadlines into the
//! same flow.
//!
//! **When a transaction fails** ([`classify`]): retriable calls are retried; otherwise the
//! transaction is aborted (abortable) or the producer rebuilt (fatal: a new
//! `init_transactions` fences the old one), the slots it changed are put back as they were
//! before it (a copy is kept from the first change), and the inputs it held are reacted to
//! again, in order, in a new transaction: the inputs are rewound in memory to the last
//! commit, which is what a seek would do, without touching the consumer. Decisions are
//! deterministic and event ids derive from input ids, so the events written again are the
//! same events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use herald_bus::consumer::OwnedRecord;
use herald_bus::dead_letter::{self, Failure, Stage};
use herald_bus::publisher::Record;
use herald_bus::runtime::Membership;
use herald_bus::{KafkaConfig, Metadata};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::catch_up::{self, CatchUp, Marks};
use super::classify::{classify, outcome_unknown, TxnCall, TxnClass};
use super::clock::Clock;
use super::decode::Reader;
use super::due::{due_times, DueIndex, Entry};
use super::health::EngineHealth;
use super::hanging;
use super::limits::RecordLimits;
use super::named_topics::NamedTopics;
use super::producer::{TxnProducer, Witness};
use super::sink::HandedBack;
use super::restore::{self, restore};
use super::sink::Overdue;
use super::witness;
use super::written;
use super::{EngineError, EngineSettings};
use crate::changelog::StateCodec;
use crate::deadline::Pending;
use crate::declaration::Declaration;
use crate::participant::Participant;
use crate::reactor::{self, Emission, NotApplied};
use herald_bus::trace::{SpanKind, SpanRecord};
use crate::slot::Slot;
use crate::input::Routed;
use crate::Inputs;

/// Counts a reaction that was not applied, by why (`kind`: to an input or a deadline).
fn count_refused<P: Participant>(refused: &NotApplied, kind: &'static str) {
    let name = match refused {
        NotApplied::Panicked(_) => "herald_choreography_reactions_panicked_total",
        NotApplied::Unwritable { .. } => "herald_choreography_reactions_unwritable_total",
    };
    metrics::counter!(name, "participant" => P::NAME, "kind" => kind).increment(1);
}

/// One input the coordinator holds until its transaction commits.
// Nearly every input is a `Record`; boxing it to shrink the rare `Skip` would cost an
// allocation per input.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Held<I> {
    /// A record to react to, and what the sink decoded it into (the sink decodes every
    /// record to dead-letter what cannot be decoded; the first reaction takes its result
    /// instead of decoding again, a reaction after a rewind decodes the record anew).
    Record { record: OwnedRecord, decoded: Option<Decoded<I>> },
    /// A record that was dead-lettered: only its offset moves.
    Skip { topic: String, partition: i32, offset: i64 },
}

/// A decoded input: the participant's input and its state key, and the record's metadata.
pub(crate) type Decoded<I> = (Routed<I>, Metadata);

impl<I> Held<I> {
    fn position(&self) -> (&str, i32, i64) {
        match self {
            Held::Record { record, .. } => (record.topic(), record.partition(), record.offset()),
            Held::Skip { topic, partition, offset } => (topic, *partition, *offset),
        }
    }
}

/// What the sink and the rebalance hooks tell the coordinator.
pub(crate) enum Command<I, S> {
    /// Records of one partition, in order; `reply` fires once they committed.
    Submit { partition: i32, held: Vec<Held<I>>, reply: oneshot::Sender<()> },
    /// Partitions assigned: read their state back.
    Assigned(Vec<(String, i32)>),
    /// Partitions revoked (commit what is open first) or lost (abort it); `ack` once done.
    Revoked { partitions: Vec<(String, i32)>, lost: bool, ack: std::sync::mpsc::Sender<()> },
    /// A restore finished: the partition's state and its inputs' backlog (see `catch_up`).
    Restored { partition: i32, generation: u64, result: Result<Restored<S>, EngineError> },
    /// Commit what is open now (shutdown begins).
    Flush,
}

/// A restored partition: the slot of each key, and the last backlogged offset of each
/// input topic that has a backlog ([`catch_up::backlog`]).
pub(crate) type Restored<S> = (HashMap<String, Slot<S>>, HashMap<String, i64>);

/// How long to wait before the next attempt after `failures` failures in a row: 100 ms,
/// doubling, at most 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64 << failures.min(7)).min(Duration::from_secs(5))
}

/// A submission waiting for its partition's restore: its inputs and who waits for them.
type Parked<I> = (Vec<Held<I>>, oneshot::Sender<()>);

/// A failed transaction call.
type Failed = (TxnCall, KafkaError);

/// Bytes a dead letter takes beyond its key, value and headers (the record's and its
/// batch's framing), counted against its topic's limit.
const LETTER_FRAMING: usize = 512;

/// How long a dead-letter topic whose letters the broker refused in a transaction (missing,
/// not authorized) has its letters handed back instead of written in the transaction (see
/// [`Coordinator::hand_back`]). Then a letter goes into a transaction again, which tells
/// whether the topic is fixed: at worst one more failed transaction.
const REFUSED_FOR: Duration = Duration::from_secs(60);

/// The topics an input may not name for an output ([`Emitted::exact_topic`](crate::emit::Emitted::exact_topic)):
/// the participant's own ([`Declaration::own_topics`], prefixed), its changelog as set, and
/// Kafka's internal topics.
fn own_topics(declaration: &Declaration, settings: &EngineSettings, changelog: &str) -> HashSet<String> {
    let mut own: HashSet<String> = declaration.own_topics().iter().map(|t| settings.prefixed(t)).collect();
    own.insert(changelog.to_owned());
    own.extend(["__consumer_offsets".to_owned(), "__transaction_state".to_owned()]);
    own
}

/// Whether a deadline of `key` on `partition` may fire: not one whose reaction failed
/// (`failing`, by fired id; see [`Coordinator::fire`]).
fn may_fire<'a>(failing: &'a HashSet<(i32, String, uuid::Uuid)>, partition: i32, key: &'a str) -> impl Fn(&Pending) -> bool + 'a {
    move |p| failing.is_empty() || !failing.contains(&(partition, key.to_owned(), p.fired_id(key)))
}

/// Who waits for a submission, and which inputs it holds: its topic-partition and its
/// last offset.
struct Waiter {
    at: (String, i32),
    last: i64,
    reply: oneshot::Sender<()>,
}

impl Waiter {
    /// A waiter for `held`, the inputs of one topic-partition; `Err` gives `reply` back
    /// when there are none.
    fn of<I>(partition: i32, held: &[Held<I>], reply: oneshot::Sender<()>) -> Result<Self, oneshot::Sender<()>> {
        match held.last() {
            Some(last) => {
                let (topic, _, last) = last.position();
                Ok(Waiter { at: (topic.to_owned(), partition), last, reply })
            }
            None => Err(reply),
        }
    }

    /// Whether one of its inputs still waits in `backlog`.
    fn waits_in<I>(&self, backlog: &VecDeque<(i32, Held<I>)>) -> bool {
        backlog.iter().any(|(p, held)| {
            let (topic, _, offset) = held.position();
            *p == self.at.1 && topic == self.at.0 && offset <= self.last
        })
    }
}

/// The open transaction.
struct Open<I, S> {
    began: Option<Instant>,
    held: Vec<(i32, Held<I>)>,
    offsets: HashMap<(String, i32), i64>,
    /// Slots as they were before the transaction changed them (`None`: absent).
    before: HashMap<(i32, String), Option<Slot<S>>>,
    waiters: Vec<Waiter>,
    reactions: usize,
    /// Spans of the emitted events, reported once the transaction commits (when an
    /// exporter listens).
    spans: Vec<EmittedSpan>,
    /// The catch-up marks of the partitions catching up when it began, to put back if it
    /// aborts (see `catch_up`).
    marks: HashMap<i32, Marks>,
}

impl<I, S> Open<I, S> {
    /// Drops what the transaction holds of partitions not in `owned`: inputs, offsets,
    /// slots to put back, waiters, catch-up marks.
    fn keep_owned(&mut self, owned: &HashSet<(String, i32)>) {
        let gone = |p: &i32| !owned.iter().any(|(_, q)| q == p);
        self.held.retain(|(p, held)| owned.contains(&(held.position().0.to_owned(), *p)));
        self.offsets.retain(|key, _| owned.contains(key));
        self.before.retain(|(p, _), _| !gone(p));
        self.waiters.retain(|w| owned.contains(&w.at));
        self.marks.retain(|p, _| !gone(p));
    }
}

impl<I, S> Default for Open<I, S> {
    fn default() -> Self {
        Open { began: None, held: Vec::new(), offsets: HashMap::new(), before: HashMap::new(), waiters: Vec::new(), reactions: 0, spans: Vec::new(), marks: HashMap::new() }
    }
}

/// The span of one emitted event: from its reaction to the commit that made it visible.
/// Its id is the one the event's `traceparent` carries; its parent, the input's.
struct EmittedSpan {
    trace: herald_bus::trace::TraceContext,
    parent: Option<u64>,
    began: std::time::SystemTime,
    topic: String,
    event_type: &'static str,
    event_id: String,
}

/// See the [module docs](self).
pub(crate) struct Coordinator<P: Participant> {
    pub participant: Arc<P>,
    pub inputs: Inputs<P::Input>,
    pub readers: HashMap<String, Reader<P::Input>>,
    pub state_codec: Arc<StateCodec<P::State>>,
    pub source: String,
    pub changelog: String,
    pub config: KafkaConfig,
    pub settings: EngineSettings,
    pub transactional_id: String,
    pub clock: Arc<dyn Clock>,
    pub membership: Arc<OnceLock<Membership>>,
    /// Revocations the consumer stopped waiting for: forgotten as lost before any commit.
    pub overdue: Arc<Overdue>,
    pub health: Arc<EngineHealth>,
    pub tx: mpsc::UnboundedSender<Command<P::Input, P::State>>,
    producer: Option<TxnProducer>,
    /// Which topics named by inputs exist (see `named_topics`).
    named_topics: NamedTopics,
    /// Topics an input may not name ([`own_topics`]).
    own_topics: HashSet<String>,
    /// A producer whose `init_transactions` failed retriably, to call it on again.
    initialising: Option<TxnProducer>,
    /// State of the partitions restored, by partition number.
    partitions: HashMap<i32, HashMap<String, Slot<P::State>>>,
    /// Restored partitions whose inputs' backlog is not committed past yet: their
    /// deadlines fire before the inputs that came after them, not by the timer (see
    /// `catch_up`).
    catching_up: HashMap<i32, CatchUp>,
    /// The deadlines of the restored partitions by due time (see `due`).
    due: DueIndex,
    /// When the deadline gauges were last counted (a full pass over the slots).
    counted: Option<Instant>,
    owned: HashSet<(String, i32)>,
    /// Restores under way: their generation and what stops them (a revocation, the stop).
    restoring: HashMap<i32, (u64, CancellationToken)>,
    /// Parent of every restore's token: cancelled when the coordinator stops, so no
    /// restore outlives it (a blocking thread still waiting would hold up the process's
    /// exit: tokio waits for its blocking threads when the runtime is dropped).
    restores: CancellationToken,
    generation: u64,
    /// Submissions of partitions still restoring.
    parked: HashMap<i32, Vec<Parked<P::Input>>>,
    /// Inputs of an aborted transaction, to react to again.
    backlog: VecDeque<(i32, Held<P::Input>)>,
    open: Open<P::Input, P::State>,
    /// The open transaction's commit failed with an unknown outcome ([`outcome_unknown`]): it may have
    /// committed. Nothing is reacted to until [`Coordinator::resolve`] learned which.
    in_doubt: bool,
    /// When to ask again about the transaction in doubt.
    resolve_at: tokio::time::Instant,
    /// When to try the backlog again after a failure.
    drain_at: tokio::time::Instant,
    /// Where the transaction in doubt wrote its first changelog record (see `witness`).
    witness: Option<Witness>,
    /// Since when the open transaction is in doubt.
    doubt_since: Instant,
    failures: u32,
    /// Pipelined ([`EngineSettings::pipeline`]): submissions to answer once their inputs
    /// were reacted to in the open transaction.
    acks: Vec<Waiter>,
    /// The last offset of each topic-partition's latest answered submission: its sink has
    /// moved past it (see [`Coordinator::hand_back`]).
    answered: HashMap<(String, i32), i64>,
    /// `herald_choreography_reactions_total{kind="input"}`, looked up once, not per input.
    input_reactions: metrics::Counter,
    /// The largest record for each topic the engine writes (see `limits`): no reaction
    /// writes a larger one (see `written::payloads`), and the producer's batches fit the
    /// smallest.
    limits: RecordLimits,
    /// Inputs handed back to their partition's worker (see [`Coordinator::hand_back`]).
    handed_back: Arc<HandedBack>,
    /// Dead-letter topics whose letters the broker refused in a transaction, why and when
    /// (see [`Coordinator::learn_refused`]).
    refused_letters: HashMap<String, (String, Instant)>,
    /// Deadlines whose reaction was not applied, by partition, key and fired id: kept
    /// pending, set aside from every firing until their partition is restored (see
    /// [`Coordinator::fire`]).
    failing: HashSet<(i32, String, uuid::Uuid)>,
    /// `owned`, published for the watch on hanging transactions (see `hanging`).
    owned_view: hanging::Owned,
    /// When the last input was submitted ([`EngineSettings::commit_when_idle`]).
    last_input: tokio::time::Instant,
}

impl<P: Participant> Coordinator<P> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        participant: Arc<P>,
        readers: HashMap<String, Reader<P::Input>>,
        state_codec: Arc<StateCodec<P::State>>,
        changelog: String,
        config: KafkaConfig,
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
        membership: Arc<OnceLock<Membership>>,
        overdue: Arc<Overdue>,
        health: Arc<EngineHealth>,
        tx: mpsc::UnboundedSender<Command<P::Input, P::State>>,
        limits: RecordLimits,
        owned_view: hanging::Owned,
        handed_back: Arc<HandedBack>,
    ) -> Self {
        let inputs = participant.inputs();
        let transactional_id = settings.transactional_id(P::NAME);
        let own_topics = own_topics(&Declaration::of(&*participant), &settings, &changelog);
        Coordinator {
            participant,
            inputs,
            readers,
            state_codec,
            source: format!("/herald/{}", P::NAME),
            changelog,
            config: config.clone(),
            settings,
            transactional_id,
            clock,
            membership,
            overdue,
            health,
            tx,
            producer: None,
            named_topics: NamedTopics::default(),
            own_topics,
            initialising: None,
            partitions: HashMap::new(),
            catching_up: HashMap::new(),
            due: DueIndex::default(),
            counted: None,
            owned: HashSet::new(),
            restoring: HashMap::new(),
            restores: CancellationToken::new(),
            generation: 0,
            parked: HashMap::new(),
            backlog: VecDeque::new(),
            open: Open::default(),
            in_doubt: false,
            resolve_at: tokio::time::Instant::now(),
            drain_at: tokio::time::Instant::now(),
            witness: None,
            doubt_since: Instant::now(),
            failures: 0,
            acks: Vec::new(),
            answered: HashMap::new(),
            input_reactions: metrics::counter!("herald_choreography_reactions_total", "participant" => P::NAME, "kind" => "input"),
            limits,
            handed_back,
            refused_letters: HashMap::new(),
            failing: HashSet::new(),
            owned_view,
            last_input: tokio::time::Instant::now(),
        }
    }

    /// Runs until `stop`, then commits what is open (or aborts it when it cannot commit).
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command<P::Input, P::State>>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Looked at first: a drain that keeps failing (every transaction does, say its
            // output topic is missing) goes from one attempt to the next without reaching
            // the select below, so a stop waited for it forever.
            if stop.is_cancelled() {
                break;
            }
            // After a failure, the next attempt waits for its backoff in the select below,
            // which serves the commands (revocations, assignments, restores) meanwhile.
            if !self.in_doubt
                && !self.backlog.is_empty()
                && tokio::time::Instant::now() >= self.drain_at
                && let Err(failed) = self.drain_backlog().await
            {
                self.fail(failed).await;
                continue;
            }
            // Pipelined: the inputs are reacted to in the open transaction (a rewind reacts
            // to them again from memory), so their partitions may hand over the next ones.
            // In doubt, nothing was reacted to, and with inputs waiting for the next attempt
            // neither: the partitions wait (else the backlog grows).
            if !self.in_doubt && self.backlog.is_empty() && !self.acks.is_empty() {
                for ack in std::mem::take(&mut self.acks) {
                    self.answer(ack);
                }
                // The partitions just released may hand over their next records: the
                // idle wait (`commit_when_idle`) starts now, not at the last submission,
                // which a long drain may have left behind already.
                self.last_input = tokio::time::Instant::now();
            }
            let commit_at = self.open.began.filter(|_| !self.in_doubt).map(|b| tokio::time::Instant::from_std(b + self.settings.commit_interval));
            // Idle: nothing came for a while and nothing waits to be reacted to.
            let idle_at = self.settings.commit_when_idle.filter(|_| commit_at.is_some() && self.backlog.is_empty()).map(|idle| self.last_input + idle);
            let step = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = async { tokio::time::sleep_until(commit_at.unwrap_or_else(tokio::time::Instant::now)).await }, if commit_at.is_some() => self.commit().await,
                command = rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = async { tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)).await }, if idle_at.is_some() => self.commit().await,
                // Commands first: revocations and assignments are served between attempts.
                _ = tokio::time::sleep_until(self.resolve_at), if self.in_doubt => {
                    if let Err((call, e)) = self.resolve().await {
                        self.failures += 1;
                        let wait = backoff(self.failures);
                        tracing::warn!(?call, error = %e, ?wait, "the outcome of the commit that failed is not known yet: asking again");
                        self.resolve_at = tokio::time::Instant::now() + wait;
                        if self.doubt_since.elapsed() > restore::stable_wait(self.settings.transaction_timeout) {
                            self.health.report(format!(
                                "the outcome of a commit that failed is still unknown after {:?} (last answer: {e}); nothing is reacted to meanwhile. Its changelog partition may hold a hanging transaction, which only an operator can end: kafka-transactions.sh find-hanging, then abort each partition it lists, the changelog and __consumer_offsets last",
                                self.doubt_since.elapsed()
                            ));
                        }
                    }
                    Ok(())
                }
                _ = tick.tick(), if !self.in_doubt => self.fire_due().await,
                // The next attempt at the backlog, after a failure's backoff.
                _ = tokio::time::sleep_until(self.drain_at), if !self.in_doubt && !self.backlog.is_empty() => Ok(()),
            };
            let step = match step {
                Ok(()) if !self.in_doubt && self.open.reactions >= self.settings.max_batch => self.commit().await,
                other => other,
            };
            if let Err(failed) = step {
                self.fail(failed).await;
            }
        }
        // In doubt, the producer is gone already: the broker finishes its transaction.
        if self.open.began.is_some()
            && !self.in_doubt
            && let Err((call, e)) = self.commit().await
        {
            tracing::warn!(?call, error = %e, "the open transaction did not commit at shutdown: aborting it");
            if let Some(producer) = &self.producer {
                let _ = producer.abort().await;
            }
        }
        self.restores.cancel();
        if let Some(producer) = self.producer.take() {
            producer.dispose();
        }
        if let Some(producer) = self.initialising.take() {
            producer.dispose();
        }
        self.health.closed();
    }

    async fn handle(&mut self, command: Command<P::Input, P::State>) -> Result<(), Failed> {
        match command {
            Command::Submit { partition, held, reply } => {
                self.last_input = tokio::time::Instant::now();
                if !self.owned.iter().any(|(_, p)| *p == partition) {
                    return Ok(()); // revoked meanwhile: the reply is dropped, the sink stops.
                }
                if !self.partitions.contains_key(&partition) {
                    self.parked.entry(partition).or_default().push((held, reply));
                    return Ok(());
                }
                self.wait_for(partition, &held, reply);
                self.backlog.extend(held.into_iter().map(|h| (partition, h)));
                Ok(())
            }
            Command::Assigned(assigned) => {
                // A revocation of these given up on earlier is over: they are this
                // member's again, under the new generation.
                self.overdue.remove(&assigned);
                for (topic, partition) in assigned {
                    self.owned.insert((topic, partition));
                    if !self.partitions.contains_key(&partition) && !self.restoring.contains_key(&partition) {
                        self.start_restore(partition, Duration::ZERO);
                    }
                }
                self.publish_owned();
                // Before the restores need it, as Kafka Streams does: the producer's
                // init_transactions has the broker abort the transaction this id's last
                // producer left open (a crash, a fatal error), whose records hold the
                // changelog's last stable offset, so a restore waits for nothing. Without
                // it the restore would wait for the broker's transaction timeout. A failed
                // init is tried again when the first transaction begins.
                if let Err((call, e)) = self.ensure_producer().await {
                    tracing::warn!(?call, error = %e, "init_transactions at assignment failed: trying again at the first transaction");
                }
                Ok(())
            }
            Command::Restored { partition, generation, result } => {
                if self.restoring.get(&partition).map(|(g, _)| *g) != Some(generation) {
                    return Ok(()); // revoked (and maybe assigned again) meanwhile
                }
                self.restoring.remove(&partition);
                self.health.set_restoring(self.restoring.len() as u64);
                match result {
                    Ok((slots, backlog)) => {
                        self.due.forget(partition);
                        self.due.add_all(partition, &slots);
                        // Without deadlines there is nothing to order: one set from now on
                        // is due after every backlogged input.
                        match CatchUp::new(backlog).filter(|_| self.due.has_any(partition)) {
                            Some(catch_up) => {
                                tracing::info!(partition, "restored with a backlog: its deadlines fire in the order of its inputs until it is caught up");
                                self.catching_up.insert(partition, catch_up);
                            }
                            None => {
                                self.catching_up.remove(&partition);
                            }
                        }
                        self.partitions.insert(partition, slots);
                        if self.restoring.is_empty() {
                            // Every restore succeeded: a restore that failed before (a
                            // changelog just created, not in the metadata yet) no longer
                            // makes an idle engine unhealthy until its first commit.
                            self.health.restored();
                        }
                        for (held, reply) in self.parked.remove(&partition).unwrap_or_default() {
                            self.wait_for(partition, &held, reply);
                            self.backlog.extend(held.into_iter().map(|h| (partition, h)));
                        }
                    }
                    Err(EngineError::Restore { reason, .. }) if reason == restore::CANCELLED => {}
                    Err(e) => {
                        tracing::error!(error = %e, "restore failed: trying again in 1 s");
                        self.health.count_abort(false, e.to_string());
                        // Not a sleep here: the coordinator keeps serving its commands.
                        self.start_restore(partition, Duration::from_secs(1));
                    }
                }
                Ok(())
            }
            Command::Revoked { partitions, lost, ack } => {
                let result = if self.in_doubt {
                    // Nothing can commit before the outcome is known; whichever it is, the
                    // partitions' next owner starts from what the broker has.
                    self.forget(&partitions);
                    Ok(())
                } else if lost {
                    self.forget(&partitions);
                    if self.open.began.is_some() || !self.open.held.is_empty() {
                        self.rewind(false).await;
                    }
                    Ok(())
                } else {
                    let committed = if self.open.began.is_some() { self.commit().await } else { Ok(()) };
                    self.forget(&partitions);
                    committed
                };
                // Forgotten now, whether or not the consumer gave up waiting for it.
                self.overdue.remove(&partitions);
                let _ = ack.send(());
                result
            }
            Command::Flush => {
                if self.open.began.is_some() && !self.in_doubt {
                    self.commit().await?;
                }
                Ok(())
            }
        }
    }

    /// Has the submission holding the input at `offset` of `at` answered at commit, not
    /// once reacted to (pipelined): its input is dead-lettered in the open transaction, and
    /// should that fail for the letter (its topic missing, not authorized), the input can
    /// still be handed back to its partition's worker (see [`Coordinator::hand_back`]),
    /// which a submission answered already has moved past. Only a submission with a letter
    /// waits for the commit.
    fn answer_at_commit(&mut self, at: &(String, i32), offset: i64) {
        let (holding, others): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.acks).into_iter().partition(|w| w.at == *at && w.last >= offset);
        self.acks = others;
        self.open.waiters.extend(holding);
    }

    /// Answers `reply` once the submission's inputs, `held`, committed, or, pipelined, once
    /// they were reacted to in the open transaction. Never before each of them left the
    /// backlog: its sink then takes them as done (and, at least once, stores their offsets).
    fn wait_for(&mut self, partition: i32, held: &[Held<P::Input>], reply: oneshot::Sender<()>) {
        let waiter = match Waiter::of(partition, held, reply) {
            Ok(waiter) => waiter,
            Err(reply) => {
                let _ = reply.send(()); // nothing to wait for
                return;
            }
        };
        if self.settings.pipeline && self.settings.exactly_once {
            self.acks.push(waiter);
        } else {
            self.open.waiters.push(waiter);
        }
    }

    /// Answers `waiter`'s submission.
    fn answer(&mut self, waiter: Waiter) {
        // A submission with an input handed back is answered, but its sink goes on from
        // that input: the inputs from it on are not done.
        let done = match self.handed_back.offset(&waiter.at.0, waiter.at.1) {
            Some(offset) if offset <= waiter.last => offset - 1,
            _ => waiter.last,
        };
        let last = self.answered.entry(waiter.at).or_insert(done);
        *last = (*last).max(done);
        let _ = waiter.reply.send(());
    }

    /// Reads `partition`'s state back on a blocking thread, after `delay`; the result
    /// comes back as [`Command::Restored`]. A revocation of the partition, or the
    /// coordinator's stop, cancels it.
    fn start_restore(&mut self, partition: i32, delay: Duration) {
        self.generation += 1;
        let generation = self.generation;
        let cancel = self.restores.child_token();
        if let Some((_, replaced)) = self.restoring.insert(partition, (generation, cancel.clone())) {
            replaced.cancel();
        }
        self.health.set_restoring(self.restoring.len() as u64);
        let (config, topic, codec, tx) = (self.config.clone(), self.changelog.clone(), self.state_codec.clone(), self.tx.clone());
        let wait = restore::stable_wait(self.settings.transaction_timeout);
        let (membership, inputs) = (self.membership.get().cloned(), self.readers.keys().cloned().collect::<Vec<_>>());
        let measure = self.settings.call_timeout.min(Duration::from_secs(10));
        // Where the consumer starts without a committed offset: Herald's default (the
        // earliest), the config's, then the engine's consumer properties, the last one set.
        let reset = self.settings.consumer_properties.iter().rev().find(|(name, _)| name == "auto.offset.reset").map(|(_, value)| value.as_str()).or(self.config.get("auto.offset.reset"));
        let from_end = matches!(reset, Some("latest" | "largest" | "end"));
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let _ = tokio::task::spawn_blocking(move || {
                let result = restore(&config, &topic, partition, &codec, Instant::now() + wait, &cancel).map(|slots| {
                    let Some(membership) = membership else { return (slots, HashMap::new()) };
                    match catch_up::backlog(&config, &membership, &inputs, partition, from_end, measure, &cancel) {
                        Ok(backlog) => (slots, backlog),
                        Err(reason) => {
                            if reason != restore::CANCELLED {
                                tracing::warn!(partition, reason, "the inputs' backlog could not be measured: the partition's deadlines fire without waiting for it");
                            }
                            (slots, HashMap::new())
                        }
                    }
                });
                let _ = tx.send(Command::Restored { partition, generation, result });
            })
            .await;
        });
    }

    /// Publishes the owned partitions for the watch on hanging transactions.
    fn publish_owned(&self) {
        *self.owned_view.lock().unwrap_or_else(|p| p.into_inner()) = self.owned.clone();
    }

    /// Drops what this process knew of `partitions`: ownership, state, parked inputs,
    /// inputs waiting in the backlog (if the partition comes back, its sink delivers them
    /// again from the committed offset), and their part of the open transaction.
    fn forget(&mut self, partitions: &[(String, i32)]) {
        for key in partitions {
            self.owned.remove(key);
        }
        self.publish_owned();
        let owned = &self.owned;
        self.backlog.retain(|(p, held)| owned.contains(&(held.position().0.to_owned(), *p)));
        // Whether the open transaction is in doubt, about to be rewound (a lost partition,
        // a failed commit) or committed already (then it is empty): if the partitions
        // come back before its outcome is known, they are restored from the changelog,
        // and the sink delivers their inputs again from the committed offset. A rewind
        // must put back neither their slots over the restored ones nor their inputs.
        self.open.keep_owned(owned);
        self.answered.retain(|at, _| owned.contains(at));
        // A hand-back made after the partition's next worker opened (it clears its own)
        // and before this: taken by a later submission of that worker, it would skip
        // inputs committed since.
        self.handed_back.forget(partitions);
        for (_, p) in partitions {
            if !self.owned.iter().any(|(_, q)| q == p) {
                self.partitions.remove(p);
                self.catching_up.remove(p);
                self.due.forget(*p);
                self.failing.retain(|(q, _, _)| q != p);
                self.parked.remove(p);
                if let Some((_, cancel)) = self.restoring.remove(p) {
                    cancel.cancel();
                }
            }
        }
        self.health.set_restoring(self.restoring.len() as u64);
    }

    async fn drain_backlog(&mut self) -> Result<(), Failed> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        while let Some((partition, held)) = self.backlog.pop_front() {
            let (topic, _, _) = held.position();
            if !self.owned.contains(&(topic.to_owned(), partition)) || !self.partitions.contains_key(&partition) {
                continue;
            }
            self.process(partition, held).await?;
            if self.open.reactions >= self.settings.max_batch {
                self.commit().await?;
            }
        }
        Ok(())
    }

    async fn ensure_begun(&mut self) -> Result<(), Failed> {
        if self.open.began.is_some() {
            return Ok(());
        }
        self.ensure_producer().await?;
        if let Some(producer) = self.producer.as_mut() {
            producer.begin().await?;
        }
        self.open.began = Some(Instant::now());
        self.open.marks = self.catching_up.iter().map(|(partition, catch_up)| (*partition, catch_up.marks())).collect();
        self.health.opened();
        Ok(())
    }

    /// Makes the producer when there is none (at the start, after a fatal error) and calls
    /// `init_transactions` on it, which fences this transactional id's older producer and
    /// has the broker abort what it left open.
    async fn ensure_producer(&mut self) -> Result<(), Failed> {
        if self.producer.is_none() {
            // One attempt per call: the coordinator goes back to its commands (revocations,
            // assignments, restores) between attempts instead of retrying here while the
            // broker is away; the backlog's backoff paces the next attempt. A producer whose
            // init failed retriably is kept, and init_transactions called on it again (as
            // librdkafka asks after a timeout).
            let producer = match self.initialising.take() {
                Some(producer) => producer,
                None => TxnProducer::new(&self.limits.producer_config(&self.config), &self.transactional_id, self.settings.exactly_once, self.settings.transaction_timeout, (self.settings.call_timeout, self.settings.commit_timeout)).map_err(|e| (TxnCall::Init, e))?.witnessed_by(&self.changelog),
            };
            match producer.init().await {
                Ok(()) => self.producer = Some(producer),
                Err((call, e)) if classify(call, &e) == TxnClass::Retriable => {
                    tracing::warn!(error = %e, "init_transactions failed: trying again later");
                    self.initialising = Some(producer);
                    return Err((call, e));
                }
                Err(failed) => {
                    producer.dispose();
                    return Err(failed);
                }
            }
        }
        Ok(())
    }

    /// Reacts to one held input inside the open transaction. Whatever fails, the input is
    /// either back in the backlog or held by the open transaction (which a rewind puts
    /// back in the backlog).
    async fn process(&mut self, partition: i32, mut held: Held<P::Input>) -> Result<(), Failed> {
        if let Err(failed) = self.ensure_begun().await {
            self.backlog.push_front((partition, held));
            return Err(failed);
        }
        let bound = self.bound_before(partition, &held);
        if let Err(failed) = self.fire_before(partition, bound).await {
            self.backlog.push_front((partition, held));
            return Err(failed);
        }
        let reacted = self.react_to(partition, &mut held);
        // `decide` panicked, its reaction cannot be written, or the input no longer
        // decodes: it is dead-lettered in this transaction, with its offset.
        let letter = reacted.as_ref().err().and_then(|failure| self.dead_letter(&held, failure));
        if let (Err(failure), Some(letter)) = (&reacted, &letter)
            && let Some(why) = self.unwritable_letter(letter)
            && self.may_hand_back(partition, &held, &why)
        {
            self.hand_back(partition, &held, failure.clone(), why);
            return Ok(());
        }
        let (topic, _, offset) = held.position();
        let at = (topic.to_owned(), partition);
        self.open.offsets.insert(at.clone(), offset + 1);
        self.open.held.push((partition, held));
        match (reacted, letter) {
            (Ok((emissions, payloads)), _) => self.emit(emissions, payloads).await,
            (Err(_), Some(letter)) => {
                self.answer_at_commit(&at, offset);
                self.send_dead_letter(letter).await
            }
            (Err(_), None) => Ok(()),
        }
    }

    /// Why `letter` cannot be written in a transaction, if it cannot: it is over its
    /// topic's limit (read at start), or the broker refused its topic's letters in a
    /// transaction lately (missing, not authorized: see [`Coordinator::learn_refused`]).
    fn unwritable_letter(&mut self, letter: &Record) -> Option<String> {
        let limit = self.limits.dead_letter(&letter.topic);
        if letter.size() + LETTER_FRAMING > limit {
            return Some(format!("its dead letter, about {} bytes, is over {}'s max.message.bytes = {limit}", letter.size() + LETTER_FRAMING, letter.topic));
        }
        match self.refused_letters.get(&letter.topic) {
            Some((why, since)) if since.elapsed() < REFUSED_FOR => Some(format!("{} refused a dead letter in a transaction: {why}", letter.topic)),
            Some(_) => {
                self.refused_letters.remove(&letter.topic);
                None
            }
            None => None,
        }
    }

    /// Learns, from a failed transaction's delivery reports, which dead-letter topics the
    /// broker refused for what they are (missing, not authorized, over their limit):
    /// their letters are handed back for a while ([`REFUSED_FOR`]) instead of failing the
    /// transaction, and with it every partition, on every try.
    fn learn_refused(&mut self) {
        let Some(producer) = &self.producer else { return };
        for (topic, error) in producer.refused_topics() {
            if self.readers.keys().any(|input| dead_letter::topic_for(input) == topic) {
                tracing::error!(dead_letter_topic = topic, %error, "the broker refused a dead letter in a transaction: the letters of this topic go to their partitions' workers for a while, which write them once they can and meanwhile hold only their own partition");
                self.refused_letters.insert(topic, (error.to_string(), Instant::now()));
            }
        }
    }

    /// Hands `held`, whose dead letter cannot be written in a transaction (`why`: over its
    /// topic's limit, or refused by the broker), back to its partition's worker
    /// ([`HandedBack`]) instead of failing the transaction, and with it every partition, on
    /// every try: its offset and those of the partition's later inputs are not committed,
    /// they leave the backlog, and the worker gets the input back as failed once its
    /// submission is answered. The worker writes the letter if it can (a limit read at
    /// start raised since, a topic made since), retrying while its topic is missing, else
    /// parks the partition; the health check reports either. The other partitions go on.
    fn hand_back(&mut self, partition: i32, held: &Held<P::Input>, failure: Failure, why: String) {
        let (topic, _, offset) = held.position();
        tracing::error!(topic, partition, offset, reason = %failure.reason, why, "the input's dead letter cannot be written in the transaction: handed back to the partition's worker, which writes it once it can or parks the partition");
        let reason = format!("{} ({why})", failure.reason);
        self.handed_back.put(topic, partition, offset, Failure { reason, ..failure });
        let topic = topic.to_owned();
        self.backlog.retain(|(p, later)| {
            let (t, _, o) = later.position();
            *p != partition || t != topic || o < offset
        });
    }

    /// Whether `held` may be handed back: its submission is not answered yet, so its sink
    /// gets it back with that answer. (One answered already was reacted to before, and
    /// refused only now, after a rewind: a reaction that is not deterministic. Its letter
    /// then goes into the transaction, which fails until an operator acts, and the health
    /// check says why.)
    fn may_hand_back(&self, partition: i32, held: &Held<P::Input>, why: &str) -> bool {
        let (topic, _, offset) = held.position();
        let answered = self.answered.get(&(topic.to_owned(), partition)).is_some_and(|last| *last >= offset);
        if answered {
            tracing::error!(topic, partition, offset, why, "the input's dead letter cannot be written in a transaction, and its submission was answered already (it was reacted to before a rewind): the letter goes into the transaction");
        }
        !answered
    }

    /// The dead letter of a held record that `failure` refused.
    fn dead_letter(&self, held: &Held<P::Input>, failure: &Failure) -> Option<Record> {
        let Held::Record { record, .. } = held else { return None };
        let group = self.settings.group.clone().unwrap_or_else(|| self.settings.prefixed(P::NAME));
        Some(dead_letter::record(&record.to_message(), failure, &group, &dead_letter::topic_for(record.topic())))
    }

    /// Writes `letter` in the open transaction. Its topic is not checked as a reply topic
    /// is: the engine made it at start, and an input is never skipped for want of it (a
    /// broker just restarted may answer for a while that a topic it has does not exist).
    /// If it is really missing the transaction fails and is retried, the partition waits
    /// and the health check says why, until the topic is made.
    async fn send_dead_letter(&mut self, letter: Record) -> Result<(), Failed> {
        let Some(producer) = &self.producer else { return Ok(()) };
        let topic = letter.topic.clone();
        producer.send_owned(letter, None).await?;
        metrics::counter!("herald_consumer_dead_lettered_total", "topic" => topic, "stage" => Stage::Handler.as_str()).increment(1);
        Ok(())
    }

    /// Reacts to a held record. A record whose reaction panicked or cannot be written
    /// (stage `handler`), or that does not decode (stage `decode`: the partition's sink
    /// dead-letters those before they come here, but a record decoded anew after a rewind
    /// is checked again) is refused with the failure its dead letter carries.
    fn react_to(&mut self, partition: i32, held: &mut Held<P::Input>) -> Result<(Vec<Emission>, Vec<Vec<u8>>), Failure> {
        let Held::Record { record, decoded } = held else { return Ok(Default::default()) };
        let (topic, offset) = (record.topic(), record.offset());
        let decoded = match decoded.take() {
            Some(decoded) => Some(Ok(decoded)),
            None => self.readers.get(topic).map(|r| r.decode(record)),
        };
        match decoded {
            Some(Ok((routed, meta))) => {
                let now = self.clock.now();
                let slots = self.partitions.entry(partition).or_default();
                let changed = (partition, routed.key.clone());
                let first_change = !self.open.before.contains_key(&changed);
                self.open.before.entry(changed.clone()).or_insert_with(|| slots.get(&routed.key).cloned());
                let slot = slots.entry(routed.key.clone()).or_insert_with(|| Slot::new(self.participant.initial(&routed.key)));
                let due_before = due_times(slot);
                self.open.reactions += 1;
                self.input_reactions.increment(1);
                let state_codec = &self.state_codec;
                let limit = written::Limit::of(&self.limits, &routed.key, &meta, slot);
                let reacted = reactor::try_react(&*self.participant, &self.source, slot, routed.input, &meta, now, |current, reaction| written::payloads(current, reaction, state_codec, limit));
                self.due.update(partition, &routed.key, &due_before, Some(slot));
                if reacted.is_err() && first_change {
                    // The slot is as it was: not written, and not made for a key seen first.
                    if let Some(None) = self.open.before.remove(&changed) {
                        slots.remove(&routed.key);
                    }
                }
                reacted.map_err(|refused| {
                    tracing::error!(topic, partition, offset, error = %refused, "the reaction was not applied: the input is dead-lettered, its state unchanged");
                    count_refused::<P>(&refused, "input");
                    Failure { stage: Stage::Handler, reason: refused.to_string(), attempts: 1 }
                })
            }
            Some(Err(failure)) => {
                tracing::error!(topic, partition, offset, reason = %failure.reason, "undecodable input in a transaction: dead-lettered");
                Err(Failure { attempts: 1, ..failure })
            }
            None => {
                tracing::error!(topic, "input from a topic without a route: skipped");
                Ok(Default::default())
            }
        }
    }

    /// Sends each emission with its payload (see [`written::payloads`]) in the open
    /// transaction.
    async fn emit(&mut self, emissions: Vec<Emission>, payloads: Vec<Vec<u8>>) -> Result<(), Failed> {
        for (emission, payload) in emissions.into_iter().zip(payloads) {
            let topic = if emission.event.is_exact_topic() { emission.event.topic().to_owned() } else { self.settings.prefixed(emission.event.topic()) };
            // A topic the input named that is one of the participant's own (its changelog,
            // an input, an output): a stranger's record there would corrupt that stream
            // (a changelog record that does not decode stops the partition's restores).
            if emission.event.is_exact_topic() && self.own_topics.contains(&topic) {
                tracing::error!(topic, event_type = emission.event.type_name(), "the topic the input named is one of the participant's own: this output is dropped, the input's other effects commit");
                metrics::counter!("herald_choreography_outputs_dropped_total", "participant" => P::NAME, "reason" => "own-topic").increment(1);
                continue;
            }
            // A topic the input named (a reply topic) that does not exist would fail the
            // transaction on every retry and stall the partition: drop this output.
            if emission.event.is_exact_topic()
                && let Some(producer) = &self.producer
                && !self.named_topics.exists(producer, &topic, &self.changelog).await
            {
                tracing::error!(topic, event_type = emission.event.type_name(), "the topic the input named does not exist: this output is dropped, the input's other effects commit");
                metrics::counter!("herald_choreography_outputs_dropped_total", "participant" => P::NAME, "reason" => "unknown-topic").increment(1);
                continue;
            }
            let mut headers = emission.meta.to_headers();
            for (name, value) in emission.event.headers() {
                headers = headers.insert(rdkafka::message::Header { key: name.as_str(), value: Some(value.as_str()) });
            }
            if let Some(trace) = emission.meta.trace
                && herald_bus::trace::spans_wanted()
            {
                let event_type = emission.event.type_name();
                self.open.spans.push(EmittedSpan { trace, parent: emission.cause_span, began: std::time::SystemTime::now(), topic: topic.clone(), event_type, event_id: emission.meta.id.to_string() });
            }
            let record = Record::new(topic, emission.event.key().as_bytes(), payload, headers);
            if let Some(producer) = &self.producer {
                producer.send_owned(record, None).await?;
            }
        }
        Ok(())
    }

    /// Fires the due deadlines of the restored partitions, taken from the index (see
    /// `due`), but for partitions catching up (their deadlines fire before their inputs,
    /// see [`Coordinator::fire_before`]). Counts the deadlines for the gauges once a
    /// second (a pass over every slot).
    async fn fire_due(&mut self) -> Result<(), Failed> {
        let now = self.clock.now();
        self.catching_up.retain(|partition, catch_up| {
            let stalled = catch_up.stalled();
            if stalled {
                tracing::warn!(partition, "catching up: no backlogged input for a while; the timer fires the partition's deadlines again");
            }
            !stalled
        });
        if self.counted.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            self.count_deadlines(now);
        }
        // One firing per deadline due when the tick began: one that a reaction sets at or
        // before `now` fires at the next tick (firing until none is due would never end
        // for a participant that keeps setting them, and would stall every partition).
        let catching_up = &self.catching_up;
        let due = self.due.take_due(now, |partition| catching_up.contains_key(&partition));
        self.fire_each(due, Some(now)).await
    }

    /// Fires the deadlines of each entry taken from the index, at `at` (`None`: at the
    /// entry's own due time): each of its key's deadlines at the entry's time (one entry
    /// stands for all), as many as are pending when the entry comes up. On a failure the
    /// entries not fired are indexed again (the rewind puts back the slots the transaction
    /// changed).
    async fn fire_each(&mut self, due: Vec<Entry>, at: Option<chrono::DateTime<chrono::Utc>>) -> Result<(), Failed> {
        let mut due = due.into_iter();
        while let Some(entry) = due.next() {
            // The deadlines sharing the entry's time, counted before any fires: one that a
            // reaction sets at that time again waits, as the callers' docs say.
            for _ in 0..self.pending_at(entry.1, &entry.2, entry.0).max(1) {
                match self.fire(entry.1, &entry.2, at.unwrap_or(entry.0)).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(failed) => {
                        self.due.put_back(std::iter::once(entry).chain(due));
                        return Err(failed);
                    }
                }
            }
        }
        Ok(())
    }

    /// The deadline gauges and health: pending and overdue deadlines of the restored
    /// partitions, counted over every slot.
    fn count_deadlines(&mut self, now: chrono::DateTime<chrono::Utc>) {
        let (mut pending, mut overdue) = (0u64, 0u64);
        for slot in self.partitions.values().flat_map(HashMap::values) {
            pending += slot.deadlines().len() as u64;
            overdue += slot.deadlines().iter().filter(|d| d.is_due(now)).count() as u64;
        }
        self.health.set_deadlines(pending, overdue);
        // A failing deadline is forgotten once it is gone from its slot (cancelled, set
        // again, its key finished), but not while the open transaction changed the slot: an
        // abort would put it back.
        let (partitions, changed) = (&self.partitions, &self.open.before);
        let has = |partition: i32, key: &str, which: &dyn Fn(&Pending) -> bool| {
            changed.contains_key(&(partition, key.to_owned())) || partitions.get(&partition).and_then(|slots| slots.get(key)).is_some_and(|slot| slot.deadlines().iter().any(which))
        };
        self.failing.retain(|(partition, key, id)| has(*partition, key, &|d| d.fired_id(key) == *id));
        self.health.keep_failing_deadlines(|partition, key, at| has(partition, key, &|d| d.deadline.at == at));
        metrics::gauge!("herald_choreography_deadlines_pending", "participant" => P::NAME).set(pending as f64);
        metrics::gauge!("herald_choreography_deadlines_overdue", "participant" => P::NAME).set(overdue as f64);
        metrics::gauge!("herald_choreography_partitions_catching_up", "participant" => P::NAME).set(self.catching_up.len() as f64);
        self.counted = Some(Instant::now());
    }

    /// Fires the earliest deadline of `key` due at `at`, in the open transaction, with
    /// `at` as the reaction's time; false when none is due.
    async fn fire(&mut self, partition: i32, key: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool, Failed> {
        // A deadline whose reaction failed is set aside: it neither fires again nor keeps
        // the key's other deadlines from firing (the earliest due fires first).
        // A stale index entry (the deadline cancelled or fired already) begins nothing.
        let due = {
            let eligible = may_fire(&self.failing, partition, key);
            self.partitions.get(&partition).and_then(|slots| slots.get(key)).is_some_and(|slot| slot.deadlines().iter().any(|d| d.is_due(at) && eligible(d)))
        };
        if !due {
            return Ok(false);
        }
        self.ensure_begun().await?;
        let Some(slot) = self.partitions.get_mut(&partition).and_then(|slots| slots.get_mut(key)) else { return Ok(false) };
        self.open.before.entry((partition, key.to_owned())).or_insert_with(|| Some(slot.clone()));
        let due_before = due_times(slot);
        let state_codec = &self.state_codec;
        let limit = written::Limit::of_deadline(&self.limits, key, slot);
        let Some((fired, reacted)) = reactor::try_fire_due(&*self.participant, &self.inputs, &self.source, key, slot, at, may_fire(&self.failing, partition, key), |current, reaction| written::payloads(current, reaction, state_codec, limit)) else { return Ok(false) };
        // One deadline taken, and the reaction may have set others.
        self.due.update(partition, key, &due_before, Some(slot));
        self.open.reactions += 1;
        metrics::counter!("herald_choreography_reactions_total", "participant" => P::NAME, "kind" => "deadline").increment(1);
        match reacted {
            Ok((emissions, payloads)) => self.emit(emissions, payloads).await?,
            Err(refused) => {
                // There is no record to dead-letter: the deadline stays in its slot, so in
                // the changelog, set aside until the partition is restored (a restart,
                // say with the bug fixed), when it fires again. The health check lists it.
                tracing::error!(key, deadline = fired.time.to_rfc3339(), error = %refused, "the reaction to a deadline was not applied: the deadline stays pending, the state unchanged; it fires again when its partition is restored");
                count_refused::<P>(&refused, "deadline");
                self.failing.insert((partition, key.to_owned(), fired.id));
                self.health.deadline_failed(partition, key, fired.time, refused.to_string());
            }
        }
        Ok(true)
    }

    /// For a partition catching up (see `catch_up`): the bound up to which its deadlines
    /// fire before `held` is reacted to (`None`: not catching up, or none may).
    fn bound_before(&mut self, partition: i32, held: &Held<P::Input>) -> Option<chrono::DateTime<chrono::Utc>> {
        let catch_up = self.catching_up.get_mut(&partition)?;
        let record = match held {
            Held::Record { record, .. } => record,
            // Dead-lettered: no time to go by, but it may be its topic's last backlogged one.
            Held::Skip { topic, offset, .. } => {
                catch_up.skipped(topic, *offset);
                return None;
            }
        };
        let time = record.timestamp().to_millis().and_then(chrono::DateTime::from_timestamp_millis)?;
        catch_up.before_input(record.topic(), record.offset(), time.min(self.clock.now()))
    }

    /// A partition catching up: fires its deadlines due by `bound` (see
    /// [`Coordinator::bound_before`]), in due order, each with its due time as the
    /// reaction's time, before the input is reacted to.
    ///
    /// Deadlines that come due by the bound while these fire (set by their reactions) fire
    /// too, in further passes; each pass takes only times later than the last one fired,
    /// so a reaction that sets a deadline at its own time again does not loop: that one
    /// waits for the next input or the timer. Deadlines of a key that share a time (one
    /// index entry) all fire for that entry, as many as were pending when it was taken.
    async fn fire_before(&mut self, partition: i32, bound: Option<chrono::DateTime<chrono::Utc>>) -> Result<(), Failed> {
        let Some(bound) = bound else { return Ok(()) };
        let mut floor = None;
        loop {
            let due = self.due.take_due_in(partition, floor, bound);
            let Some(last) = due.last().map(|(at, _, _)| *at) else { return Ok(()) };
            self.fire_each(due, None).await?;
            floor = Some(last);
        }
    }

    /// How many deadlines of `key` that may fire are pending at exactly `at`.
    fn pending_at(&self, partition: i32, key: &str, at: chrono::DateTime<chrono::Utc>) -> usize {
        let eligible = may_fire(&self.failing, partition, key);
        self.partitions.get(&partition).and_then(|slots| slots.get(key)).map_or(0, |slot| slot.deadlines().iter().filter(|d| d.deadline.at == at && eligible(d)).count())
    }

    /// Commits the open transaction: changed slots, offsets, commit; retries what is
    /// retriable (three times).
    async fn commit(&mut self) -> Result<(), Failed> {
        if self.open.began.is_none() {
            return Ok(());
        }
        self.refuse_overdue()?;
        let started = Instant::now();
        let changed: Vec<(i32, String)> = self.open.before.keys().cloned().collect();
        for (partition, key) in changed {
            let Some(slots) = self.partitions.get_mut(&partition) else { continue };
            let payload = match slots.get(&key) {
                Some(slot) if self.settings.forget_finished && slot.is_finished() && slot.deadlines().is_empty() => {
                    slots.remove(&key);
                    None
                }
                Some(slot) => match self.state_codec.encode(slot) {
                    Ok(bytes) => Some(bytes),
                    // Only a new key's `initial()` state can get here (a reaction's new
                    // state, and the state beside any deadline it sets, are checked before it
                    // is applied): with no record the key restores as `initial()` again.
                    Err(e) => {
                        tracing::error!(key, error = %e, "the participant's initial state does not encode: not written (the key restores as initial() again)");
                        continue;
                    }
                },
                None => None,
            };
            let record = Record { topic: self.changelog.clone(), key: Some(key.into_bytes()), payload, headers: Default::default(), partition: None };
            if let Some(producer) = &self.producer {
                producer.send_owned(record, Some(partition)).await?;
            }
        }
        let mut attempt = 0u32;
        loop {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &self.open.offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)).map_err(|e| (TxnCall::SendOffsets, e))?;
            }
            // A retry after `commit_transaction` failed retriably resumes that call (the
            // offsets went under the generation they were sent with): nothing else may be
            // done with the transaction now, an abort included. Before it, checked again
            // right before the group metadata is taken: a retry may come after a
            // revocation was given up on.
            let resuming = self.producer.as_ref().is_some_and(TxnProducer::committing);
            let group = if resuming {
                None
            } else {
                self.refuse_overdue()?;
                self.membership.get().and_then(Membership::group_metadata)
            };
            let Some(producer) = &self.producer else { return Err((TxnCall::Commit, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::State))) };
            match producer.commit(tpl, group).await {
                Ok(()) => break,
                Err((call, e)) if attempt < 3 && classify(call, &e) == TxnClass::Retriable => {
                    attempt += 1;
                    tracing::warn!(?call, error = %e, attempt, "transaction call failed: retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(failed) => return Err(failed),
            }
        }
        metrics::histogram!("herald_choreography_commit_seconds", "participant" => P::NAME).record(started.elapsed().as_secs_f64());
        self.committed();
        Ok(())
    }

    /// Fails (abortable) when a revocation was given up on since the last check, after
    /// forgetting its partitions as lost: the rebalance went on without this commit, the
    /// partitions may be another member's now, and their offsets must not commit under the
    /// next generation. The open transaction is then aborted and its inputs of partitions
    /// still owned reacted to again.
    fn refuse_overdue(&mut self) -> Result<(), Failed> {
        if !self.forget_overdue() {
            return Ok(());
        }
        tracing::warn!("a revocation was given up on while this transaction was open: aborting it");
        Err((TxnCall::SendOffsets, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::IllegalGeneration)))
    }

    /// Forgets, as lost, the owned partitions whose revocation was given up on since the
    /// last call; true when there were any. Entries of partitions already forgotten (their
    /// revocation was handled after all, its acknowledgement late) are moot.
    fn forget_overdue(&mut self) -> bool {
        let overdue: Vec<(String, i32)> = self.overdue.take().into_iter().filter(|p| self.owned.contains(p)).collect();
        if overdue.is_empty() {
            return false;
        }
        tracing::warn!(?overdue, "forgetting partitions whose revocation was given up on");
        self.health.count_given_up();
        self.forget(&overdue);
        true
    }

    /// The open transaction committed: its inputs are done.
    fn committed(&mut self) {
        let open = std::mem::take(&mut self.open);
        metrics::histogram!("herald_choreography_transaction_reactions", "participant" => P::NAME).record(open.reactions as f64);
        metrics::counter!("herald_choreography_transactions_total", "participant" => P::NAME, "outcome" => "committed").increment(1);
        self.health.count_commit(open.reactions);
        self.health.closed();
        self.failures = 0;
        for ((topic, partition), next) in &open.offsets {
            if let Some(catch_up) = self.catching_up.get_mut(partition)
                && catch_up.committed(topic, *next)
            {
                tracing::info!(partition, "caught up: the timer fires its deadlines again");
                self.catching_up.remove(partition);
            }
        }
        // A submission answered at commit whose inputs are not all reacted to yet (a
        // commit at `max_batch` inside a drain, or of a deadline while the backlog waits
        // for its backoff) waits for a later commit.
        for waiter in open.waiters {
            if waiter.waits_in(&self.backlog) {
                self.open.waiters.push(waiter);
            } else {
                self.answer(waiter);
            }
        }
        for span in &open.spans {
            let name = format!("send {}", span.topic);
            SpanRecord::new(&name, SpanKind::Producer, span.trace, span.parent, span.began).topic(&span.topic).event(span.event_type, &span.event_id).actor(P::NAME).record();
        }
    }

    /// A transaction call failed: see the [module docs](self).
    async fn fail(&mut self, (call, error): Failed) {
        let class = classify(call, &error);
        let fatal = class == TxnClass::Fatal;
        let unknown = self.open.began.is_some() && outcome_unknown(call, &error);
        self.learn_refused();
        // An unknown outcome rebuilds the producer too.
        self.health.count_abort(fatal || unknown, format!("{call:?}: {error}"));
        if unknown {
            tracing::warn!(%error, "the commit failed and may still commit: its outcome is learned before anything else is reacted to");
            metrics::counter!("herald_choreography_transactions_total", "participant" => P::NAME, "outcome" => "unknown").increment(1);
            // The next producer's init_transactions fences this one.
            if let Some(producer) = self.producer.take() {
                self.witness = producer.witness();
                producer.dispose();
            }
            self.in_doubt = true;
            self.resolve_at = tokio::time::Instant::now();
            self.doubt_since = Instant::now();
            return;
        }
        tracing::warn!(?call, ?class, %error, "transaction failed: rewinding");
        metrics::counter!("herald_choreography_transactions_total", "participant" => P::NAME, "outcome" => if fatal { "fatal" } else { "aborted" }).increment(1);
        self.rewind(fatal).await;
    }

    /// Learns whether the open transaction, whose commit failed with an unknown outcome
    /// ([`outcome_unknown`]: timed out, retried in vain, fatal), committed: a new
    /// producer's `init_transactions` returns once the broker finished the old one's
    /// transaction (completing a commit whose `EndTxn` reached it, aborting it otherwise);
    /// then its witness, the first changelog record it wrote, says which (`witness`). A
    /// transaction that wrote no changelog record (it reacted to nothing: only offsets of
    /// inputs no reaction took) is told by the group's committed offsets instead
    /// (read_committed: stable ones): none below the transaction's own if and only if it
    /// committed (see the comment inside); with none of a partition still owned either, it
    /// changed nothing and is taken as aborted.
    /// Committed: its inputs are done, the state stays. Aborted: rewound as after any
    /// failure. Runs between commands ([`Coordinator::run`] retries it with a backoff).
    async fn resolve(&mut self) -> Result<(), Failed> {
        self.ensure_producer().await?;
        // Partitions whose revocation was given up on may be another member's already,
        // which may have committed past this transaction's offsets: not asked about.
        self.forget_overdue();
        let landed = if let Some(witness) = self.witness {
            let (config, topic, timeout) = (self.config.clone(), self.changelog.clone(), self.settings.call_timeout);
            tokio::task::spawn_blocking(move || witness::committed(&config, &topic, witness, timeout))
                .await
                .map_err(|_| (TxnCall::Commit, KafkaError::Canceled))?
                .map_err(|e| (TxnCall::Commit, e))?
                .ok_or((TxnCall::Commit, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::OperationTimedOut)))?
        } else {
            self.offsets_landed().await?
        };
        self.witness = None;
        self.in_doubt = false;
        if landed {
            tracing::info!("the commit that failed did commit: its inputs are done");
            self.health.count_in_doubt_committed();
            self.committed();
        } else {
            tracing::warn!("the commit that failed was aborted: reacting to its inputs again");
            metrics::counter!("herald_choreography_transactions_total", "participant" => P::NAME, "outcome" => "aborted").increment(1);
            self.open.began = None; // nothing is open in the new producer
            self.rewind(false).await;
        }
        Ok(())
    }

    /// Whether the open transaction's offsets committed, by the group's committed offsets
    /// of the partitions still owned; false when none is (see [`Coordinator::resolve`]).
    /// `&mut`: held across an await, and the coordinator is `Send`, not `Sync`.
    async fn offsets_landed(&mut self) -> Result<bool, Failed> {
        let partitions: Vec<(String, i32)> = self.open.offsets.keys().filter(|key| self.owned.contains(*key)).cloned().collect();
        if partitions.is_empty() {
            return Ok(false);
        }
        let membership = self.membership.get().cloned().ok_or((TxnCall::Commit, KafkaError::Global(rdkafka::error::RDKafkaErrorCode::State)))?;
        let (asked, timeout) = (partitions.clone(), self.settings.call_timeout);
        let committed = tokio::task::spawn_blocking(move || membership.committed(&asked, timeout))
            .await
            .map_err(|_| (TxnCall::Commit, KafkaError::Canceled))?
            .map_err(|e| (TxnCall::Commit, e))?;
        // Committed: a partition still this member's is at the transaction's offset, one
        // that moved on (another owner) is past it. Aborted: a partition still this
        // member's is below it. So committed if and only if none is below.
        let mut reached = partitions.iter().zip(&committed).map(|(key, at)| at.zip(self.open.offsets.get(key).copied()).is_some_and(|(at, ours)| at >= ours));
        Ok(reached.all(|r| r))
    }

    /// Puts back the slots as they were before the open transaction and queues its inputs
    /// to react to again; drops the producer when `rebuild`.
    async fn rewind(&mut self, rebuild: bool) {
        if rebuild {
            // The next init_transactions fences it.
            if let Some(producer) = self.producer.take() {
                producer.dispose();
            }
        } else if self.open.began.is_some()
            && let Some(producer) = &self.producer
            && let Err((_, e)) = producer.abort().await
        {
            tracing::warn!(error = %e, "abort failed: rebuilding the producer");
            if let Some(producer) = self.producer.take() {
                producer.dispose();
            }
        }
        let open = std::mem::take(&mut self.open);
        self.health.closed();
        self.failures += 1;
        self.named_topics.doubt();
        // Its inputs are tried again after a backoff (see `run`).
        self.drain_at = tokio::time::Instant::now() + backoff(self.failures);
        for ((partition, key), before) in open.before {
            let Some(slots) = self.partitions.get_mut(&partition) else { continue };
            let now_due = slots.get(&key).map(due_times).unwrap_or_default();
            self.due.update(partition, &key, &now_due, before.as_ref());
            match before {
                Some(slot) => slots.insert(key, slot),
                None => slots.remove(&key),
            };
        }
        // Its inputs go again: the catch-up marks as they were when it began (a partition
        // that began catching up since saw nothing before it).
        let mut marks = open.marks;
        for (partition, catch_up) in &mut self.catching_up {
            catch_up.rewind(marks.remove(partition).unwrap_or_default());
        }
        for held in open.held.into_iter().rev() {
            self.backlog.push_front(held);
        }
        self.open.waiters = open.waiters.into_iter().filter(|w| self.partitions.contains_key(&w.at.1)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::{Consumed, Output, NAMED_BY_INPUT};
    use crate::KeyKind;

    /// A revoked partition's part of the open transaction goes with it: were it kept, a
    /// rewind after the partition came back and was restored (a revocation whose commit's
    /// outcome was learned only later, as aborted) would put its old slots over the
    /// restored ones and react to its inputs again beside the sink's new delivery.
    #[test]
    fn the_open_transaction_keeps_only_what_belongs_to_owned_partitions() {
        let mut open: Open<(), String> = Open::default();
        for (topic, partition, offset) in [("in", 0, 5), ("in", 1, 7), ("other", 0, 9)] {
            open.held.push((partition, Held::Skip { topic: topic.into(), partition, offset }));
            open.offsets.insert((topic.into(), partition), offset + 1);
        }
        for partition in [0, 1] {
            open.before.insert((partition, format!("k{partition}")), None);
            open.waiters.push(Waiter { at: ("in".into(), partition), last: 5, reply: oneshot::channel().0 });
            open.marks.insert(partition, Marks::default());
        }
        let owned: HashSet<(String, i32)> = [("in".to_owned(), 0)].into();
        open.keep_owned(&owned);
        let held: Vec<(&str, i32, i64)> = open.held.iter().map(|(_, h)| h.position()).collect();
        assert_eq!(held, [("in", 0, 5)], "held inputs of owned topic-partitions only");
        assert_eq!(open.offsets.keys().collect::<Vec<_>>(), [&("in".to_owned(), 0)]);
        assert_eq!(open.before.keys().collect::<Vec<_>>(), [&(0, "k0".to_owned())]);
        assert_eq!(open.waiters.iter().map(|w| w.at.clone()).collect::<Vec<_>>(), [("in".to_owned(), 0)]);
        assert_eq!(open.marks.keys().collect::<Vec<_>>(), [&0]);
    }

    /// A submission is answered only once none of its inputs waits in the backlog: its
    /// sink takes every input of it as done.
    #[test]
    fn a_waiter_waits_while_an_input_of_its_submission_is_in_the_backlog() {
        let skip = |topic: &str, partition, offset| (partition, Held::<()>::Skip { topic: topic.into(), partition, offset });
        let waiter = Waiter { at: ("in".into(), 0), last: 7, reply: oneshot::channel().0 };
        assert!(waiter.waits_in(&VecDeque::from([skip("in", 0, 7)])));
        assert!(waiter.waits_in(&VecDeque::from([skip("in", 1, 3), skip("in", 0, 5)])));
        assert!(!waiter.waits_in(&VecDeque::from([skip("in", 1, 3), skip("other", 0, 5), skip("in", 0, 8)])), "other partitions, topics and later inputs do not count");
        assert!(!waiter.waits_in(&VecDeque::<(i32, Held<()>)>::new()));
    }

    #[test]
    fn an_input_may_name_none_of_the_participants_own_topics_as_prefixed() {
        let declaration = Declaration {
            name: "acct".into(),
            consumes: vec![Consumed { topic: "acct.commands".into(), types: vec![], key: KeyKind::Subject }, Consumed { topic: "stock".into(), types: vec![], key: KeyKind::By("sku") }],
            deadlines: false,
            emits: vec![Output::untyped("acct.events", "x.Done", true), Output::untyped(NAMED_BY_INPUT, "x.Reply", true)],
        };
        let settings = EngineSettings { topic_prefix: "t1.".into(), ..EngineSettings::new("a") };
        let own = own_topics(&declaration, &settings, "custom.changelog");
        for topic in ["custom.changelog", "t1.acct.changelog", "t1.acct.commands", "t1.stock", "t1.acct.stock.by-sku", "t1.acct.events", "__consumer_offsets"] {
            assert!(own.contains(topic), "{topic} in {own:?}");
        }
        assert!(!own.contains("acct.events") && !own.contains("t1.replies") && !own.iter().any(|t| t.contains(NAMED_BY_INPUT)), "{own:?}");
    }
}

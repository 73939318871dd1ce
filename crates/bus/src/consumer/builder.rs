//! [`ConsumerBuilder`]: subscribe typed handlers to typed topics, tune, build.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::route::{Route, RouteSettings, TypedRoute};
use super::sink::Routes;
use super::{Consumer, ConsumerError, Handler, RetryPolicy, UnknownTypes};
use crate::codec::{Codec, SingleObject};
use crate::runtime::dead_letter::DeadLetters;
use crate::runtime::flow::Budget;
use crate::runtime::{Runtime, Settings};
use crate::schema::SchemaSet;
use crate::{EventFamily, KafkaConfig, Topic};

type RouteFactory = Box<dyn FnOnce(&RouteSettings) -> Arc<dyn Route> + Send>;

/// Builds a topic's codec from the schemas its consumer knows (see
/// [`ConsumerBuilder::codec`]).
pub type CodecFactory = Box<dyn Fn(SchemaSet) -> Arc<dyn Codec> + Send + Sync>;

/// Builds a [`Consumer`]: subscribe typed handlers to typed topics, tune, then build.
///
/// ```no_run
/// # herald_bus::family! { #[derive(Debug)] pub enum Demo { A(A) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
/// # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
/// # async fn run() -> Result<(), herald_bus::ConsumerError> {
/// use herald_bus::{Consumer, Envelope, HandlerError, KafkaConfig, Topic};
/// const DEMO: Topic<Demo> = Topic::new("demo.events");
///
/// let consumer = Consumer::builder(KafkaConfig::new("127.0.0.1:9092"), "demo-group")
///     .subscribe(&DEMO, |event: Envelope<Demo>| async move {
///         println!("{:?}", event.event);
///         Ok::<_, HandlerError>(())
///     })
///     .build()
///     .await?;
/// consumer.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct ConsumerBuilder {
    config: KafkaConfig,
    group: String,
    routes: Vec<(String, SchemaSet, RouteFactory)>,
    schemas: SchemaSet,
    retry: RetryPolicy,
    handler_timeout: Duration,
    unknown_types: UnknownTypes,
    max_buffered_bytes: usize,
    drain_timeout: Duration,
    revoke_timeout: Duration,
    create_dead_letter_topics: bool,
    codec: CodecFactory,
}

impl ConsumerBuilder {
    pub(super) fn new(config: KafkaConfig, group: String) -> Self {
        ConsumerBuilder {
            config,
            group,
            routes: Vec::new(),
            schemas: SchemaSet::default(),
            retry: RetryPolicy::default(),
            handler_timeout: Duration::from_secs(60),
            unknown_types: UnknownTypes::default(),
            max_buffered_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            create_dead_letter_topics: true,
            codec: Box::new(|schemas| Arc::new(SingleObject::new(schemas))),
        }
    }

    /// Subscribes `handler` to `topic`. The handler's family must be the topic's: a
    /// mismatch does not compile.
    pub fn subscribe<F: EventFamily, H: Handler<F>>(mut self, topic: &Topic<F>, handler: H) -> Self {
        let factory: RouteFactory = Box::new(move |settings| Arc::new(TypedRoute::<F, H>::new(handler, settings.clone())));
        self.routes.push((topic.name().to_owned(), F::schemas().clone(), factory));
        self
    }

    /// Extra writer schemas to accept (older or newer versions of the members' types).
    pub fn schemas(mut self, schemas: SchemaSet) -> Self {
        self.schemas.extend(&schemas);
        self
    }

    /// Retry policy for failing handlers (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Deadline of one handler call (default 60 s; keep it well below
    /// `max.poll.interval.ms`).
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Policy for records of types the topic's family lacks (default: dead-letter).
    pub fn unknown_types(mut self, policy: UnknownTypes) -> Self {
        self.unknown_types = policy;
        self
    }

    /// Bytes of records buffered ahead of the handlers, across all partitions (default
    /// 64 MiB); one partition may hold a quarter of it. With librdkafka's
    /// `queued.max.messages.kbytes` (16 MiB by default here) this bounds the consumer's
    /// memory.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes.max(Budget::MIN);
        self
    }

    /// How long shutdown waits for queued records to be handled (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a revocation waits for the revoked partitions' current records (default
    /// 10 s). It runs inside the rebalance, so keep it short.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// How payloads are framed. The function gets the schemas known for a topic (its
    /// family's plus [`ConsumerBuilder::schemas`]) and returns the codec that reads it. The
    /// default is [`SingleObject`]; a registry codec, or one that tells formats apart by
    /// their magic byte, plugs in here.
    pub fn codec(mut self, factory: impl Fn(SchemaSet) -> Arc<dyn Codec> + Send + Sync + 'static) -> Self {
        self.codec = Box::new(factory);
        self
    }

    /// Whether [`ConsumerBuilder::build`] creates missing dead-letter topics (default true).
    pub fn create_dead_letter_topics(mut self, create: bool) -> Self {
        self.create_dead_letter_topics = create;
        self
    }

    /// Creates the consumer, its dead-letter producer and topics, and subscribes.
    ///
    /// The consumer needs tokio's multi-threaded runtime: rebalance hooks wait for workers
    /// running on other threads. On a current-thread runtime this returns
    /// [`ConsumerError::CurrentThreadRuntime`].
    pub async fn build(self) -> Result<Consumer, ConsumerError> {
        if self.routes.is_empty() {
            return Err(ConsumerError::NothingSubscribed);
        }
        crate::runtime::require_multi_thread()?;
        if self.create_dead_letter_topics {
            let topics: Vec<&str> = self.routes.iter().map(|(topic, _, _)| topic.as_str()).collect();
            crate::dead_letter::create_topics(&self.config, &topics).await?;
        }
        let mut routes = HashMap::new();
        let mut topics = Vec::new();
        for (topic, family_schemas, factory) in self.routes {
            let mut schemas = family_schemas;
            schemas.extend(&self.schemas);
            let codec = (self.codec)(schemas);
            let settings = RouteSettings { topic: topic.clone(), handler_timeout: self.handler_timeout, unknown_types: self.unknown_types, codec };
            routes.insert(topic.clone(), factory(&settings));
            topics.push(topic);
        }
        let publisher = crate::dead_letter::publisher(&self.config, format!("herald:{}", self.group))?;
        let letters = Arc::new(DeadLetters { publisher, group: self.group.clone() });
        let settings = Settings {
            max_buffered_bytes: self.max_buffered_bytes,
            drain_timeout: self.drain_timeout,
            revoke_timeout: self.revoke_timeout,
            retry: self.retry,
            ..Settings::new(self.group, topics)
        };
        let runtime = Runtime::new(&self.config, settings, Routes { routes }, letters)?;
        Ok(Consumer { runtime })
    }
}


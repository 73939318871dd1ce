//! Events a reaction emits: typed when written, erased inside the runtime.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use herald_bus::event::Member;
use herald_bus::schema::KnownSchema;
use herald_bus::{Event, EventFamily, PublishError, Topic};

/// One event a reaction emits, bound for one topic.
///
/// Built by [`Reaction::emit`](crate::Reaction::emit), which only accepts an event of the
/// topic's family (like the publisher, a mismatch does not compile). The runtime sees it
/// erased: topic, type, key, and a way to encode it.
pub struct Emitted {
    topic: String,
    type_name: &'static str,
    key: String,
    event: Box<dyn Outgoing>,
    headers: Vec<(String, String)>,
    exact_topic: bool,
    id: Option<uuid::Uuid>,
}

/// The erased event: encoding and a JSON view (for tests and diagnostics).
trait Outgoing: Send + Sync {
    fn schema(&self) -> Option<&'static Arc<KnownSchema>>;
    fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError>;
    fn to_json(&self) -> serde_json::Value;
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

/// The event (one member, or a whole family value holding one) and its type name; its
/// schema is the latest of that name in the family `F`.
struct Body<F, T> {
    event: T,
    type_name: &'static str,
    _family: PhantomData<fn() -> F>,
}

impl<F: EventFamily, T: serde::Serialize + fmt::Debug + Send + Sync> Outgoing for Body<F, T> {
    fn schema(&self) -> Option<&'static Arc<KnownSchema>> {
        F::schemas().latest(self.type_name)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError> {
        let known = self.schema().ok_or_else(|| PublishError::UnknownSchema(self.type_name.to_owned()))?;
        herald_bus::publisher::encode_datum(known, &self.event, out)?;
        Ok(known)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.event).unwrap_or(serde_json::Value::Null)
    }

    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.event, f)
    }
}

impl Emitted {
    /// `event`, bound for `topic`; the key is the event's aggregate id.
    pub fn new<F, E>(topic: &Topic<F>, event: E) -> Self
    where
        F: EventFamily + Member<E>,
        E: Event + fmt::Debug,
    {
        let key = event.aggregate_id().to_owned();
        Emitted { topic: topic.name().to_owned(), type_name: E::TYPE, key, event: Box::new(Body::<F, E> { event, type_name: E::TYPE, _family: PhantomData }), headers: Vec::new(), exact_topic: false, id: None }
    }

    /// `event`, a value of `topic`'s family (whichever member it holds), bound for
    /// `topic`; the key is the event's aggregate id.
    ///
    /// The family's `Serialize` must write the member's own record: derive it with
    /// `#[serde(untagged)]` on the family enum (each variant is a newtype, so untagged
    /// serializes exactly the member). A family serialized otherwise does not fit the
    /// member's schema: the engine refuses the reaction and dead-letters its input (the
    /// test kit panics).
    ///
    /// ```
    /// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] pub struct Done { id: String }
    /// # impl herald_bus::Event for Done { const TYPE: &'static str = "x.Done"; const SCHEMA: &'static str = r#"{"type":"record","name":"Done","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
    /// herald_bus::family! {
    ///     #[derive(Debug, Clone, serde::Serialize)]
    ///     #[serde(untagged)]
    ///     pub enum Ev { Done(Done) }
    /// }
    /// const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");
    /// let emitted = herald_choreography::emit::Emitted::of_family(&OUT, Ev::Done(Done { id: "a".into() }));
    /// assert_eq!((emitted.type_name(), emitted.key()), ("x.Done", "a"));
    /// let mut datum = Vec::new();
    /// emitted.encode(&mut datum).expect("fits its schema");
    /// assert_eq!(datum, [2, b'a']);
    /// ```
    pub fn of_family<F>(topic: &Topic<F>, event: F) -> Self
    where
        F: EventFamily + serde::Serialize + fmt::Debug,
    {
        let (type_name, key) = (event.type_name(), event.aggregate_id().to_owned());
        Emitted { topic: topic.name().to_owned(), type_name, key, event: Box::new(Body::<F, F> { event, type_name, _family: PhantomData }), headers: Vec::new(), exact_topic: false, id: None }
    }

    /// Adds the Kafka header `name: value` to the record, after the CloudEvents headers
    /// the runtime writes (for example a CloudEvents extension, `ce_sequence`).
    ///
    /// ```
    /// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Done(Done) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Done { id: String }
    /// # impl herald_bus::Event for Done { const TYPE: &'static str = "x.Done"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
    /// const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");
    /// let emitted = herald_choreography::emit::Emitted::new(&OUT, Done { id: "a".into() }).with_header("ce_sequence", "7");
    /// assert_eq!(emitted.headers(), &[("ce_sequence".to_owned(), "7".to_owned())]);
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The topic is a name given at run time by an input (a reply topic named by a
    /// command): the engine writes to it as it is, without its
    /// [`topic_prefix`](crate::engine::EngineSettings::topic_prefix). Declare such an
    /// output with [`Output::to_named_topic`](crate::declaration::Output::to_named_topic).
    ///
    /// The engine checks that the topic exists before writing (a transaction cannot write
    /// to a missing topic when the broker creates none, and would fail on every retry): an
    /// output to a missing topic is dropped with an error log and
    /// `herald_choreography_outputs_dropped_total`, and the input's other effects commit.
    /// So is an output to one of the participant's own topics
    /// ([`Declaration::own_topics`](crate::declaration::Declaration::own_topics): its
    /// changelog, inputs, outputs), which the test kit drops too.
    pub fn exact_topic(mut self) -> Self {
        self.exact_topic = true;
        self
    }

    /// Gives the event the id `id` (its `ce_id`) instead of the one derived from its input's
    /// id and its index in the reaction ([`ids::event_id`](crate::ids::event_id)). The id
    /// must be as deterministic as that one (a reaction run again after an abort must give
    /// it again) and unique to the event: an aggregate derives it from its id and the
    /// event's version, so a command decided twice (sent again once its answer was
    /// forgotten) makes events with ids of their own, not copies of the first ones' ids.
    ///
    /// ```
    /// # herald_bus::family! { #[derive(Debug)] pub enum Ev { Done(Done) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Done { id: String }
    /// # impl herald_bus::Event for Done { const TYPE: &'static str = "x.Done"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
    /// const OUT: herald_bus::Topic<Ev> = herald_bus::Topic::new("x.out");
    /// let id = uuid::Uuid::from_u128(7);
    /// let emitted = herald_choreography::emit::Emitted::new(&OUT, Done { id: "a".into() }).with_id(id);
    /// assert_eq!(emitted.id(), Some(id));
    /// ```
    pub fn with_id(mut self, id: uuid::Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// The id given with [`Emitted::with_id`], if any.
    pub fn id(&self) -> Option<uuid::Uuid> {
        self.id
    }

    /// The extra headers ([`Emitted::with_header`]), in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Whether the topic is used as it is ([`Emitted::exact_topic`]).
    pub fn is_exact_topic(&self) -> bool {
        self.exact_topic
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event's Avro full name (its CloudEvents `type`).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The Kafka key: the event's aggregate id.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event's schema in its topic's family (`None` if the family lacks it, which
    /// the family macro makes impossible for members).
    pub fn schema(&self) -> Option<&'static Arc<KnownSchema>> {
        self.event.schema()
    }

    /// Appends the event's Avro datum (no framing) to `out` and returns its schema; frame
    /// it with the publisher's codec (`Publisher::frame`).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<&'static Arc<KnownSchema>, PublishError> {
        self.event.encode(out)
    }

    /// The event as JSON (serde's view of the Rust value).
    pub fn to_json(&self) -> serde_json::Value {
        self.event.to_json()
    }
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: ", self.type_name, self.topic)?;
        self.event.debug(f)
    }
}

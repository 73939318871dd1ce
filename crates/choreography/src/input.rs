//! Typed registration of a participant's inputs, and the state key of each.
//!
//! Several topics (each a family enum) map into one input enum of the participant:
//! `Inputs::new().on(&ORDERS, Input::Order).on(&PAYMENTS, Input::Payment)`. The mapping is
//! typed where it is written; inside, each route decodes its topic's records into the
//! participant's input and says which state key the input belongs to.

use std::sync::Arc;

use herald_bus::codec::DecodeError;
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_bus::{EventFamily, Metadata, Topic};

use crate::deadline::Fired;

/// Which state an input belongs to, as declared (see [`StateKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The record's Kafka key, the event's aggregate id: no repartition, the input
    /// partition's owner is the key's one writer. The engine dead-letters a record whose
    /// Kafka key is not its event's aggregate id ([`Route::check_record_key`]), one on
    /// another partition than its aggregate id's, and one without a key (see the engine's
    /// `EngineSettings::input_partitioner`).
    Subject,
    /// The saga's correlation id (`ce_correlationid`).
    Correlation,
    /// A value computed from the event, named (for example `sku`).
    By(&'static str),
}

impl KeyKind {
    /// Whether inputs keyed this way must go through a repartition topic keyed by the
    /// state key before the participant reacts: true unless the state key is the Kafka key.
    /// Only then does each state key have exactly one writer however many instances run.
    pub fn needs_repartition(&self) -> bool {
        !matches!(self, KeyKind::Subject)
    }
}

/// The state key of the inputs of one topic of family `F`.
///
/// ```
/// use herald_choreography::{KeyKind, StateKey};
/// # herald_bus::family! { #[derive(Debug)] pub enum Cmd { Reserve(Reserve) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Reserve { order_id: String, sku: String }
/// # impl herald_bus::Event for Reserve { const TYPE: &'static str = "x.Reserve"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.order_id } }
/// let by_sku = StateKey::by("sku", |c: &Cmd| match c { Cmd::Reserve(r) => r.sku.clone() });
/// assert_eq!(by_sku.kind(), &KeyKind::By("sku"));
/// assert!(by_sku.kind().needs_repartition());
/// assert!(!StateKey::<Cmd>::subject().kind().needs_repartition());
/// ```
pub struct StateKey<F> {
    kind: KeyKind,
    of: Option<fn(&F) -> String>,
}

impl<F: EventFamily> StateKey<F> {
    /// The Kafka key (the aggregate id).
    pub fn subject() -> Self {
        StateKey { kind: KeyKind::Subject, of: None }
    }

    /// The saga's correlation id.
    pub fn correlation() -> Self {
        StateKey { kind: KeyKind::Correlation, of: None }
    }

    /// A key computed from the event; `name` says what it is (diagrams, repartition topic).
    pub fn by(name: &'static str, of: fn(&F) -> String) -> Self {
        StateKey { kind: KeyKind::By(name), of: Some(of) }
    }

    /// What kind of key this is.
    pub fn kind(&self) -> &KeyKind {
        &self.kind
    }

    fn key(&self, event: &F, meta: &Metadata) -> String {
        match (&self.kind, self.of) {
            (KeyKind::By(_), Some(of)) => of(event),
            (KeyKind::Correlation, _) => meta.correlation(),
            _ => event.aggregate_id().to_owned(),
        }
    }
}

/// An input decoded, mapped into the participant's input type, with its state key.
#[derive(Debug)]
pub struct Routed<I> {
    /// The participant's input.
    pub input: I,
    /// The state key it belongs to.
    pub key: String,
}

/// The headers of an input record beyond the CloudEvents attributes Herald reads into
/// [`Metadata`] (extension attributes such as `ce_replyto`), as UTF-8 (name, value) pairs
/// in record order. Only registrations made with [`Inputs::on_with_headers`] receive them.
///
/// ```
/// use herald_choreography::input::Extensions;
/// let mut ext = Extensions::default();
/// ext.push("ce_replyto", "shop.accounts.replies");
/// assert_eq!(ext.get("ce_replyto"), Some("shop.accounts.replies"));
/// assert_eq!(ext.get("ce_expectedversion"), None);
/// ```
///
/// Kept compact: the names and values in one buffer, so reading a record's extensions
/// allocates twice however many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// Every name and value, one after the other.
    text: String,
    /// Per header, where its name ends and where its value ends in `text` (it begins where
    /// the previous value ended). `u32` is enough: Kafka's records, headers included, are
    /// below 2 GiB (`message.max.bytes` is an `int32`).
    ends: Vec<(u32, u32)>,
}

impl Extensions {
    /// Adds a header (a later one of the same name wins in [`Extensions::get`]).
    pub fn push(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.text.push_str(name.as_ref());
        let name_end = self.text.len() as u32;
        self.text.push_str(value.as_ref());
        self.ends.push((name_end, self.text.len() as u32));
    }

    /// The value of header `name` (the last one, when it repeats).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> {
        self.ends.iter().enumerate().map(|(i, &(name_end, end))| {
            let start = if i == 0 { 0 } else { self.ends[i - 1].1 as usize };
            (&self.text[start..name_end as usize], &self.text[name_end as usize..end as usize])
        })
    }

    /// The headers of a Kafka record beyond those [`Metadata`] reads
    /// ([`header::ATTRIBUTES`](herald_bus::envelope::header::ATTRIBUTES)), whose values are
    /// UTF-8 (the others are skipped).
    ///
    /// ```
    /// use herald_choreography::input::Extensions;
    /// use rdkafka::message::{Header, OwnedHeaders};
    /// let headers = OwnedHeaders::new()
    ///     .insert(Header { key: "ce_id", value: Some("0190b2a0-0000-7000-8000-000000000001") })
    ///     .insert(Header { key: "ce_replyto", value: Some("replies") })
    ///     .insert(Header { key: "ce_expectedversion", value: Some(&[0xff_u8][..]) });
    /// let ext = Extensions::from_headers(Some(&headers));
    /// assert_eq!(ext.iter().collect::<Vec<_>>(), [("ce_replyto", "replies")]);
    /// ```
    pub fn from_headers<H: herald_bus::headers::HeaderList>(headers: Option<&H>) -> Self {
        Self::from_header_pairs(headers.into_iter().flat_map(herald_bus::headers::pairs))
    }

    /// [`Extensions::from_headers`] over (name, value) pairs, such as
    /// [`OwnedRecord::headers`](herald_bus::consumer::OwnedRecord::headers); a header
    /// whose name is not UTF-8 is skipped too.
    ///
    /// ```
    /// use herald_choreography::input::Extensions;
    /// let pairs = [(&b"ce_source"[..], Some(&b"/shop"[..])), (b"ce_replyto", Some(b"replies")), (b"ce_empty", None)];
    /// let ext = Extensions::from_header_pairs(pairs.into_iter());
    /// assert_eq!(ext.iter().collect::<Vec<_>>(), [("ce_replyto", "replies")]);
    /// ```
    pub fn from_header_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Self {
        let mut ext = Extensions::default();
        for (name, value) in pairs {
            let (Ok(name), Some(Ok(value))) = (std::str::from_utf8(name), value.map(std::str::from_utf8)) else { continue };
            if !herald_bus::envelope::header::ATTRIBUTES.contains(&name) {
                ext.push(name, value);
            }
        }
        ext
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

type Decode<I> = dyn Fn(&str, &KnownSchema, &[u8], &Metadata, &Extensions) -> Result<Option<Routed<I>>, DecodeError> + Send + Sync;

/// One subscribed topic, its family erased.
pub struct Route<I> {
    topic: String,
    types: &'static [&'static str],
    schemas: fn() -> &'static SchemaSet,
    key: KeyKind,
    decode: Arc<Decode<I>>,
    headers: bool,
}

impl<I> Route<I> {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event types the topic's family carries.
    pub fn types(&self) -> &'static [&'static str] {
        self.types
    }

    /// The family's schemas (the runtime decodes with them).
    pub fn schemas(&self) -> &'static SchemaSet {
        (self.schemas)()
    }

    /// The state key of these inputs.
    pub fn key(&self) -> &KeyKind {
        &self.key
    }

    /// Decodes a datum of `type_name` written with `writer` into the participant's input
    /// and its state key. `Ok(None)`: the type is not in the topic's family.
    pub fn decode(&self, type_name: &str, writer: &KnownSchema, datum: &[u8], meta: &Metadata) -> Result<Option<Routed<I>>, DecodeError> {
        (self.decode)(type_name, writer, datum, meta, &Extensions::default())
    }

    /// [`Route::decode`] with the record's other headers, for a registration made with
    /// [`Inputs::on_with_headers`] (the others ignore them).
    pub fn decode_with(&self, type_name: &str, writer: &KnownSchema, datum: &[u8], meta: &Metadata, headers: &Extensions) -> Result<Option<Routed<I>>, DecodeError> {
        (self.decode)(type_name, writer, datum, meta, headers)
    }

    /// Checks that a record keyed `record_key` belongs where it was read, its input mapped
    /// to `state_key`. For inputs keyed by the Kafka key ([`KeyKind::Subject`]) the Kafka
    /// key decides the partition, so which instance is the state key's one writer: a
    /// record keyed `a` whose event says `b` would be decided for `b` on `a`'s partition,
    /// a second writer of `b` beside `b`'s own (two states, two `ce_sequence` 1). The
    /// engine dead-letters such a record with this error.
    ///
    /// A record without a key (legal in Kafka, spread over the partitions) passes this
    /// check; the engine's placement check (`EngineSettings::input_partitioner`) refuses
    /// it, unless told not to check. Inputs
    /// keyed otherwise pass too: their Kafka key is not their state key on purpose, and
    /// the engine repartitions them by the state key.
    ///
    /// ```
    /// use herald_choreography::Inputs;
    /// # herald_bus::family! { #[derive(Debug)] pub enum Cmd { Ping(Ping) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Ping { id: String }
    /// # impl herald_bus::Event for Ping { const TYPE: &'static str = "x.Ping"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
    /// const CMDS: herald_bus::Topic<Cmd> = herald_bus::Topic::new("x.cmds");
    /// let inputs = Inputs::by_subject().on(&CMDS, |c: Cmd| c);
    /// let route = &inputs.routes()[0];
    /// assert!(route.check_record_key(Some(b"a"), "a").is_ok());
    /// assert!(route.check_record_key(None, "a").is_ok());
    /// assert!(route.check_record_key(Some(b"a"), "b").is_err());
    /// ```
    pub fn check_record_key(&self, record_key: Option<&[u8]>, state_key: &str) -> Result<(), ForeignKey> {
        match record_key {
            Some(key) if self.key == KeyKind::Subject && key != state_key.as_bytes() => {
                Err(ForeignKey { record_key: String::from_utf8_lossy(key).into_owned(), state_key: state_key.to_owned() })
            }
            _ => Ok(()),
        }
    }

    /// Whether the registration reads the record's other headers ([`Inputs::on_with_headers`]):
    /// the runtime collects them only then.
    pub fn reads_headers(&self) -> bool {
        self.headers
    }
}

/// A record keyed by the Kafka key whose key is not its event's aggregate id (see
/// [`Route::check_record_key`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the record's key {record_key:?} is not its event's aggregate id {state_key:?}: decided here it would make a second writer of {state_key:?} (send it keyed by {state_key:?})")]
pub struct ForeignKey {
    /// The record's Kafka key (not UTF-8: lossily).
    pub record_key: String,
    /// The state key its input maps to.
    pub state_key: String,
}

impl<I> Clone for Route<I> {
    fn clone(&self) -> Self {
        Route { topic: self.topic.clone(), types: self.types, schemas: self.schemas, key: self.key.clone(), decode: Arc::clone(&self.decode), headers: self.headers }
    }
}

/// The inputs of a participant: typed registrations of topics, plus deadlines.
///
/// ```
/// use herald_choreography::{Fired, Inputs};
/// # herald_bus::family! { #[derive(Debug)] pub enum OrderEvent { Placed(Placed) } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Placed { order_id: String }
/// # impl herald_bus::Event for Placed { const TYPE: &'static str = "x.Placed"; const SCHEMA: &'static str = r#"{"type":"record","name":"Placed","namespace":"x","fields":[{"name":"order_id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.order_id } }
/// const ORDERS: herald_bus::Topic<OrderEvent> = herald_bus::Topic::new("x.orders");
/// enum Input { Order(OrderEvent), Timeout(Fired) }
/// let inputs = Inputs::by_subject().on(&ORDERS, Input::Order).on_deadline(Input::Timeout);
/// assert_eq!(inputs.routes()[0].topic(), "x.orders");
/// assert!(inputs.has_deadlines());
/// ```
pub struct Inputs<I> {
    default_key: KeyKind,
    routes: Vec<Route<I>>,
    deadline: Option<Arc<dyn Fn(Fired) -> I + Send + Sync>>,
}

impl<I: 'static> Inputs<I> {
    /// Inputs whose state is keyed by the saga's correlation id unless a registration
    /// says otherwise (the default: one state per saga).
    pub fn new() -> Self {
        Inputs { default_key: KeyKind::Correlation, routes: Vec::new(), deadline: None }
    }

    /// Inputs whose state is keyed by the record's Kafka key (the aggregate id) unless a
    /// registration says otherwise. When every topic is keyed by the saga's own id (an
    /// order id), this is the saga key without a repartition step. The event's aggregate id
    /// is the state key: a record keyed otherwise is dead-lettered
    /// ([`Route::check_record_key`]), and so is one without a key, by the engine's
    /// placement check (unless `EngineSettings::input_partitioner` turns it off).
    pub fn by_subject() -> Self {
        Inputs { default_key: KeyKind::Subject, ..Inputs::new() }
    }

    /// Subscribes to `topic`: each of its events becomes `map(event)`, keyed by this
    /// `Inputs`' default key.
    pub fn on<F: EventFamily>(self, topic: &Topic<F>, map: impl Fn(F) -> I + Send + Sync + 'static) -> Self {
        let key = match self.default_key {
            KeyKind::Subject => StateKey::subject(),
            _ => StateKey::correlation(),
        };
        self.on_keyed(topic, key, map)
    }

    /// Subscribes to `topic` with its own state key (for example stock keyed by SKU from
    /// commands keyed by order: the runtime repartitions them, see [`KeyKind::needs_repartition`]).
    pub fn on_keyed<F: EventFamily>(mut self, topic: &Topic<F>, key: StateKey<F>, map: impl Fn(F) -> I + Send + Sync + 'static) -> Self {
        let kind = key.kind.clone();
        let decode = move |type_name: &str, writer: &KnownSchema, datum: &[u8], meta: &Metadata, _: &Extensions| -> Result<Option<Routed<I>>, DecodeError> {
            let Some(event) = F::decode(type_name, writer, datum)? else { return Ok(None) };
            let key = key.key(&event, meta);
            Ok(Some(Routed { input: map(event), key }))
        };
        self.routes.push(Route { topic: topic.name().to_owned(), types: F::TYPES, schemas: F::schemas, key: kind, decode: Arc::new(decode), headers: false });
        self
    }

    /// Subscribes to `topic`, keyed by the record's key (the event's aggregate id, no
    /// repartition); each event becomes `map(event, metadata, other headers)`: for inputs
    /// whose meaning needs their id or extension headers (a command's id, its reply topic,
    /// the version it expects).
    ///
    /// ```
    /// use herald_choreography::{input::Extensions, Inputs};
    /// # herald_bus::family! { #[derive(Debug)] pub enum Cmd { Ping(Ping) } }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct Ping { id: String }
    /// # impl herald_bus::Event for Ping { const TYPE: &'static str = "x.Ping"; const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"x","fields":[{"name":"id","type":"string"}]}"#; fn aggregate_id(&self) -> &str { &self.id } }
    /// const CMDS: herald_bus::Topic<Cmd> = herald_bus::Topic::new("x.cmds");
    /// let inputs = Inputs::by_subject().on_with_headers(&CMDS, |c: Cmd, meta: &herald_bus::Metadata, ext: &Extensions| (c, meta.id, ext.get("ce_replyto").map(str::to_owned)));
    /// assert!(inputs.routes()[0].reads_headers());
    /// ```
    pub fn on_with_headers<F: EventFamily>(mut self, topic: &Topic<F>, map: impl Fn(F, &Metadata, &Extensions) -> I + Send + Sync + 'static) -> Self {
        let decode = move |type_name: &str, writer: &KnownSchema, datum: &[u8], meta: &Metadata, headers: &Extensions| -> Result<Option<Routed<I>>, DecodeError> {
            let Some(event) = F::decode(type_name, writer, datum)? else { return Ok(None) };
            let key = event.aggregate_id().to_owned();
            Ok(Some(Routed { input: map(event, meta, headers), key }))
        };
        self.routes.push(Route { topic: topic.name().to_owned(), types: F::TYPES, schemas: F::schemas, key: KeyKind::Subject, decode: Arc::new(decode), headers: true });
        self
    }

    /// Deadlines that fire become `map(fired)`.
    pub fn on_deadline(mut self, map: impl Fn(Fired) -> I + Send + Sync + 'static) -> Self {
        self.deadline = Some(Arc::new(map));
        self
    }

    /// The subscribed topics.
    pub fn routes(&self) -> &[Route<I>] {
        &self.routes
    }

    /// The route of `topic`, if subscribed.
    pub fn route(&self, topic: &str) -> Option<&Route<I>> {
        self.routes.iter().find(|r| r.topic == topic)
    }

    /// Whether deadlines are an input.
    pub fn has_deadlines(&self) -> bool {
        self.deadline.is_some()
    }

    /// The input a fired deadline becomes; `None` when deadlines are not registered.
    pub fn fired(&self, fired: Fired) -> Option<I> {
        self.deadline.as_ref().map(|map| map(fired))
    }
}

impl<I: 'static> Default for Inputs<I> {
    fn default() -> Self {
        Inputs::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    herald_bus::family! { #[derive(Debug)] enum Cmd { Ping(Ping) } }
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Ping {
        id: String,
        sku: String,
    }
    impl herald_bus::Event for Ping {
        const TYPE: &'static str = "x.Ping";
        const SCHEMA: &'static str = r#"{"type":"record","name":"Ping","namespace":"x","fields":[{"name":"id","type":"string"},{"name":"sku","type":"string"}]}"#;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }
    const CMDS: Topic<Cmd> = Topic::new("x.cmds");
    const STOCK: Topic<Cmd> = Topic::new("x.stock");

    /// The state key of `ping` on the only route of `inputs`, then the key check of a
    /// record keyed `record_key`.
    fn check(inputs: &Inputs<Cmd>, topic: &str, ping: Ping, record_key: Option<&[u8]>) -> Result<(), ForeignKey> {
        let route = inputs.route(topic).expect("route");
        let schema = Cmd::schemas().latest("x.Ping").expect("schema");
        let mut datum = Vec::new();
        herald_bus::publisher::encode_datum(schema, &ping, &mut datum).expect("encodes");
        let meta = Metadata::new("x.Ping", "/test", "ignored");
        let routed = route.decode_with("x.Ping", schema, &datum, &meta, &Extensions::default()).expect("decodes").expect("in the family");
        route.check_record_key(record_key, &routed.key)
    }

    #[test]
    fn a_record_keyed_otherwise_than_its_aggregate_id_is_refused_where_the_kafka_key_is_the_state_key() {
        let ping = || Ping { id: "b".into(), sku: "s".into() };
        for inputs in [Inputs::by_subject().on(&CMDS, |c| c), Inputs::new().on_with_headers(&CMDS, |c, _: &Metadata, _: &Extensions| c)] {
            assert_eq!(check(&inputs, "x.cmds", ping(), Some(b"b")), Ok(()));
            assert_eq!(check(&inputs, "x.cmds", ping(), None), Ok(()), "a keyless record is taken by its aggregate id");
            let refused = check(&inputs, "x.cmds", ping(), Some(b"a")).expect_err("keyed a, for b");
            assert_eq!((refused.record_key.as_str(), refused.state_key.as_str()), ("a", "b"));
            assert!(refused.to_string().contains("second writer"), "{refused}");
            assert!(check(&inputs, "x.cmds", ping(), Some(&[0xff])).is_err(), "a key that is not UTF-8 is no aggregate id");
        }
        // Repartitioned inputs are keyed otherwise on purpose: by order, kept by SKU.
        let by_sku = Inputs::by_subject().on_keyed(&STOCK, StateKey::by("sku", |c: &Cmd| match c { Cmd::Ping(p) => p.sku.clone() }), |c| c);
        assert_eq!(check(&by_sku, "x.stock", ping(), Some(b"order-1")), Ok(()));
        let by_correlation = Inputs::new().on(&STOCK, |c| c);
        assert_eq!(check(&by_correlation, "x.stock", ping(), Some(b"order-1")), Ok(()));
    }
}

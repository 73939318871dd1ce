//! [`TrackedSaga`]: what the tracker needs to know about a saga, and [`Observed`], the
//! event "family" through which the projector hands it every event of the saga's topics
//! without decoding their payloads.

use std::marker::PhantomData;

use herald_bus::codec::DecodeError;
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_bus::EventFamily;
use herald_choreography::declaration::Declaration;

use crate::model::SagaModel;

/// A saga the tracker can follow: its name, its public topics, its participants'
/// declarations and the schemas of the events on those topics.
///
/// The tracker reads only headers (CloudEvents attributes, correlation and causation ids)
/// and positions; the schemas are needed because the projector's codec recognises a
/// record by its writer schema's fingerprint.
///
/// ```
/// use herald_tracker::TrackedSaga;
/// assert_eq!(herald_tracker::shop::Shop::topics(), ["shop.orders", "shop.inventory", "shop.payments"]);
/// assert!(herald_tracker::shop::Shop::schemas().latest("shop.payments.PaymentRefunded").is_some());
/// ```
pub trait TrackedSaga: Send + Sync + 'static {
    /// The saga's name; also the tracker projection's name (its positions are stored under
    /// it). One tracked saga per store.
    const NAME: &'static str;

    /// The public topics the tracker reads (as the declarations name them).
    fn topics() -> Vec<String>;

    /// The participants' declarations (the ones `herald saga check` checks).
    fn declarations() -> Vec<Declaration>;

    /// The schemas of every event on [`TrackedSaga::topics`], parsed once.
    fn schemas() -> &'static SchemaSet;

    /// The saga's model from its declarations.
    fn model() -> SagaModel {
        let topics = Self::topics();
        SagaModel::new(Self::NAME, &Self::declarations(), &topics.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// One event of saga `S`, payload not decoded: the tracker needs its type and headers only.
pub struct Observed<S> {
    type_name: &'static str,
    _saga: PhantomData<fn() -> S>,
}

impl<S> Observed<S> {
    /// The event's type (its writer schema's full name).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

impl<S> std::fmt::Debug for Observed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").field("type_name", &self.type_name).finish()
    }
}

impl<S: TrackedSaga> EventFamily for Observed<S> {
    /// Empty: every type whose schema [`TrackedSaga::schemas`] knows is accepted.
    const TYPES: &'static [&'static str] = &[];

    fn schemas() -> &'static SchemaSet {
        S::schemas()
    }

    fn decode(type_name: &str, writer: &KnownSchema, _datum: &[u8]) -> Result<Option<Self>, DecodeError> {
        // The codec found the writer schema in `S::schemas()`; its name lives as long as the
        // set, which is static.
        let known = S::schemas().by_fingerprint(&writer.fingerprint).filter(|k| k.name == type_name);
        Ok(known.map(|k| Observed { type_name: k.name.as_str(), _saga: PhantomData }))
    }

    fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Empty: the payload is not decoded; the envelope's `meta.subject` is the aggregate id.
    fn aggregate_id(&self) -> &str {
        ""
    }
}

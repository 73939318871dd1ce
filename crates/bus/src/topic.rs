//! Typed topic names.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A topic that carries the events of family `F`.
///
/// Declare each topic once as a constant; publishing an event that is not in `F`, or
/// subscribing a handler for another family, does not compile.
///
/// ```
/// # herald_bus::family! { pub enum Nothing { A(A) } }
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct A { id: String }
/// # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
/// use herald_bus::Topic;
/// pub const THINGS: Topic<Nothing> = Topic::new("demo.things");
/// assert_eq!(THINGS.name(), "demo.things");
/// ```
pub struct Topic<F> {
    name: Cow<'static, str>,
    _family: PhantomData<fn() -> F>,
}

impl<F> Topic<F> {
    /// A topic with a static name.
    pub const fn new(name: &'static str) -> Self {
        Topic { name: Cow::Borrowed(name), _family: PhantomData }
    }

    /// A topic with a name chosen at run time (tests, per-tenant topics).
    pub fn named(name: impl Into<String>) -> Self {
        Topic { name: Cow::Owned(name.into()), _family: PhantomData }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<F> Clone for Topic<F> {
    fn clone(&self) -> Self {
        Topic { name: self.name.clone(), _family: PhantomData }
    }
}

impl<F> fmt::Debug for Topic<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.name)
    }
}

/// Checks a topic name against Kafka's rules: `[a-zA-Z0-9._-]`, 1 to 249 characters, not
/// `.` or `..`. Mixing `.` and `_` is legal but collides in metric names; it is refused.
///
/// ```
/// assert!(herald_bus::topic::validate_name("shop.orders").is_ok());
/// assert!(herald_bus::topic::validate_name("shop orders").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic name must be 1 to 249 characters, got {}", name.len()));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} has invalid character {c:?} (allowed: a-z A-Z 0-9 . _ -)"));
    }
    if name.contains('.') && name.contains('_') {
        return Err(format!("topic name {name:?} mixes '.' and '_', which collide in Kafka's metric names"));
    }
    Ok(())
}

//! One registered instance of a service: the record on the registry topic.
//!
//! **Why JSON, not Avro.** Herald's events are Avro with schemas checked against Rust types,
//! because they are the business log, replayed forever and read by many teams. The registry
//! record is different: it is operational metadata that only lives as long as the process,
//! it is read by tools and gateways that may not speak Avro or reach a schema registry (which
//! may itself be one of the registered services), and on-call engineers read it with `kcat`.
//! So it is a small self-describing JSON object: the `schema` field names the record and its
//! version ([`SCHEMA`]), fields are only ever added (optional, with defaults), and readers
//! ignore fields they do not know. A record with another `schema` is refused, not guessed at.
//!
//! ```json
//! {"schema":"herald.services.Instance/1","service":"orders","instance":"orders-7f3a",
//!  "address":"http://10.0.0.7:8080","version":"0.1.0",
//!  "started_at_ms":1764742380000,"heartbeat_at_ms":1764742395000,
//!  "consumer_groups":["orders"]}
//! ```
//!
//! An instance without HTTP (a consumer run without `--http`) registers with an empty
//! `address`; it is listed, but never handed to a client that wants to send it requests.
//!
//! The key of the record is [`Instance::key`] (`service/instance`); a null value (tombstone)
//! under that key deregisters the instance, and compaction keeps only the latest record.

use serde::{Deserialize, Serialize};

use crate::RegistryError;

/// The `schema` field of every record this version writes and reads.
pub const SCHEMA: &str = "herald.services.Instance/1";

/// A running instance of a service, as registered.
///
/// ```
/// use herald_services::Instance;
/// let i = Instance::new("orders", "orders-1", "http://127.0.0.1:8080", "0.1.0")?;
/// assert_eq!(i.key(), "orders/orders-1");
/// let back = Instance::decode(&i.encode())?;
/// assert_eq!(back, i);
/// # Ok::<(), herald_services::RegistryError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The service's name (the same for every instance; no `/`).
    pub service: String,
    /// This instance's id, unique within the service.
    pub instance: String,
    /// Where the instance serves HTTP (`http://host:port`).
    pub address: String,
    /// The software version the instance runs.
    pub version: String,
    /// When the process started, epoch milliseconds.
    pub started_at_ms: i64,
    /// When the instance last said it was alive, epoch milliseconds.
    pub heartbeat_at_ms: i64,
    /// The Kafka consumer groups the instance consumes in (none for an instance that does
    /// not consume). Optional on the wire: records written before this field read as
    /// empty, and an empty list is not written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<String>,
}

impl Instance {
    /// An instance started now. Fails when a name is empty or the service contains `/`
    /// (the separator of the record key).
    pub fn new(service: impl Into<String>, instance: impl Into<String>, address: impl Into<String>, version: impl Into<String>) -> Result<Self, RegistryError> {
        let now = now_ms();
        let i = Instance {
            schema: SCHEMA.to_owned(),
            service: service.into(),
            instance: instance.into(),
            address: address.into(),
            version: version.into(),
            started_at_ms: now,
            heartbeat_at_ms: now,
            consumer_groups: Vec::new(),
        };
        i.validate()?;
        Ok(i)
    }

    fn validate(&self) -> Result<(), RegistryError> {
        if self.service.is_empty() || self.service.contains('/') {
            return Err(RegistryError::InvalidName(format!("service {:?} (must be non-empty, without '/')", self.service)));
        }
        if self.instance.is_empty() {
            return Err(RegistryError::InvalidName(format!("instance id of service {:?} is empty", self.service)));
        }
        Ok(())
    }

    /// The same instance, consuming in `groups` (see [`Instance::consumer_groups`]).
    ///
    /// ```
    /// use herald_services::Instance;
    /// let i = Instance::new("orders", "o-1", "", "0.1.0")?.with_consumer_groups(["orders"]);
    /// assert_eq!(i.consumer_groups, ["orders"]);
    /// # Ok::<(), herald_services::RegistryError>(())
    /// ```
    pub fn with_consumer_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.consumer_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The record key: `service/instance`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.instance)
    }

    /// The record value (JSON).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record value; fails on bytes that are not a [`SCHEMA`] record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RegistryError> {
        let i: Instance = serde_json::from_slice(bytes).map_err(|e| RegistryError::Decode(e.to_string()))?;
        if i.schema != SCHEMA {
            return Err(RegistryError::Decode(format!("record schema {:?}, this reader knows {SCHEMA:?}", i.schema)));
        }
        i.validate()?;
        Ok(i)
    }
}

/// Wall-clock now, epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Instance::new("a/b", "1", "http://x", "1").is_err());
        assert!(Instance::new("", "1", "http://x", "1").is_err());
        assert!(Instance::new("a", "", "http://x", "1").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_and_other_schemas_refused() {
        let json = br#"{"schema":"herald.services.Instance/1","service":"s","instance":"i","address":"a","version":"v","started_at_ms":1,"heartbeat_at_ms":2,"zone":"eu"}"#;
        assert_eq!(Instance::decode(json).map(|i| i.heartbeat_at_ms).ok(), Some(2));
        let other = br#"{"schema":"herald.services.Instance/9","service":"s","instance":"i","address":"a","version":"v","started_at_ms":1,"heartbeat_at_ms":2}"#;
        assert!(matches!(Instance::decode(other), Err(RegistryError::Decode(_))));
        assert!(Instance::decode(b"not json").is_err());
    }

    #[test]
    fn consumer_groups_are_optional_on_the_wire() {
        // A record written before the field existed reads as consuming in no group...
        let old = br#"{"schema":"herald.services.Instance/1","service":"s","instance":"i","address":"a","version":"v","started_at_ms":1,"heartbeat_at_ms":2}"#;
        assert_eq!(Instance::decode(old).map(|i| i.consumer_groups).ok(), Some(Vec::new()));
        // ...an instance without groups writes no field, and one with groups round-trips.
        let none = Instance::new("s", "i", "a", "v").map(|i| String::from_utf8_lossy(&i.encode()).into_owned()).unwrap_or_default();
        assert!(!none.contains("consumer_groups"), "{none}");
        let with = Instance::new("s", "i", "a", "v").map(|i| i.with_consumer_groups(["g.1", "g.2"])).ok();
        let back = with.as_ref().and_then(|i| Instance::decode(&i.encode()).ok());
        assert_eq!(back.map(|i| i.consumer_groups), Some(vec!["g.1".to_owned(), "g.2".to_owned()]));
    }
}

//! Domain events and event families.
//!
//! An [`Event`] is one Rust type tied to one `.avsc` schema. An [`EventFamily`] is the closed
//! set of events one topic carries, as an enum: handlers match it exhaustively, so a new
//! event type makes the compiler list every place that must handle it. The
//! [`family!`](crate::family) macro writes the enum's plumbing.

use std::sync::Arc;

use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::DecodeError;
use crate::schema::{KnownSchema, SchemaSet};

/// One domain event type, tied to its Avro schema.
///
/// The schema text is the `.avsc` file (use `include_str!`), so the file stays the single
/// source of truth. [`check_schema`] proves at test time that the Rust type and the file
/// agree: derive [`apache_avro::AvroSchema`] on the type and call it from a unit test.
///
/// ```
/// use herald_bus::Event;
///
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
/// #[avro(namespace = "demo")]
/// struct Pinged { id: String }
///
/// impl Event for Pinged {
///     const TYPE: &'static str = "demo.Pinged";
///     const SCHEMA: &'static str =
///         r#"{"type":"record","name":"Pinged","namespace":"demo","fields":[{"name":"id","type":"string"}]}"#;
///     fn aggregate_id(&self) -> &str { &self.id }
/// }
///
/// herald_bus::event::check_schema::<Pinged>().unwrap();
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The Avro full name; also the CloudEvents `type`.
    const TYPE: &'static str;
    /// The Avro schema text (the content of the `.avsc` file).
    const SCHEMA: &'static str;
    /// The id of the aggregate this event belongs to. It becomes the Kafka key (so the
    /// aggregate's events stay in order on one partition) and the CloudEvents `subject`.
    fn aggregate_id(&self) -> &str;

    /// Schema texts of earlier versions that [`Event::upcast`] reads, oldest first. The
    /// family registers them, so consumers recognise those writers' fingerprints.
    const HISTORY: &'static [&'static str] = &[];

    /// Decodes a datum written with an earlier version that Avro resolution cannot turn
    /// into this type (a field split in two, a unit change). Return `None` for writers
    /// this type does not upcast from; Avro resolution is tried then. Implement it with
    /// [`crate::upcast::from`], which chains: v1 reaches v3 through v2's own upcaster.
    fn upcast(writer: &KnownSchema, datum: &[u8]) -> Option<Result<Self, DecodeError>> {
        let _ = (writer, datum);
        None
    }
}

/// Marker: event `E` may be published on a topic of family `Self`.
///
/// Written by [`family!`](crate::family); publishing an event on a topic whose family does
/// not include it is a compile error.
pub trait Member<E: Event>: EventFamily {}

/// The closed set of event types carried by one topic.
///
/// Implement it with [`family!`](crate::family) rather than by hand.
pub trait EventFamily: Sized + Send + Sync + 'static {
    /// The Avro full names of the members, in declaration order.
    const TYPES: &'static [&'static str];

    /// The members' schemas, parsed once (the family macro caches them).
    fn schemas() -> &'static SchemaSet;

    /// Decodes the datum of member `type_name` written with `writer`, resolving to the
    /// member's own (reader) schema. Returns `Ok(None)` when `type_name` is not a member.
    fn decode(type_name: &str, writer: &KnownSchema, datum: &[u8]) -> Result<Option<Self>, DecodeError>;

    /// The Avro full name of this value's event type.
    fn type_name(&self) -> &'static str;

    /// The aggregate id of this value.
    fn aggregate_id(&self) -> &str;
}

/// Checks that `E`'s derived Avro schema equals the `.avsc` it names: field order, names
/// and types, logical types included (docs and defaults are not compared).
///
/// It compares apache-avro's canonical forms, which unlike the specification's (see
/// [`crate::schema::canonical`], used for fingerprints) keep `logicalType`: a
/// `timestamp-millis` field must be a [`crate::timestamp::TimestampMillis`] in Rust, not
/// a bare `i64`.
///
/// Call it from a unit test for each event type, so a struct that drifted from its file
/// fails CI instead of production.
pub fn check_schema<E: Event + apache_avro::AvroSchema>() -> Result<(), String> {
    let file = Schema::parse_str(E::SCHEMA).map_err(|e| format!("{}: invalid schema: {e}", E::TYPE))?;
    let derived = E::get_schema();
    let (file_form, derived_form) = (file.canonical_form(), derived.canonical_form());
    if file_form != derived_form {
        return Err(format!(
            "{}: the Rust type does not match its .avsc\n  file:    {file_form}\n  derived: {derived_form}",
            E::TYPE
        ));
    }
    let name = file.name().map(|n| n.fullname(None)).unwrap_or_default();
    if name != E::TYPE {
        return Err(format!("{}: TYPE does not match the schema's full name {name}", E::TYPE));
    }
    Ok(())
}

/// Parses the schema of `E`; used by the family macro.
#[doc(hidden)]
pub fn add_member<E: Event>(set: &mut SchemaSet) -> Arc<KnownSchema> {
    // Earlier versions first, so the member's own schema is the latest of its name.
    for old in E::HISTORY {
        if let Err(e) = set.add_str(old) {
            panic!("event {} has an invalid historical schema: {e}", E::TYPE);
        }
    }
    match set.add_str(E::SCHEMA) {
        Ok(known) => known,
        // A member's schema is a compile-time constant checked by `check_schema` in tests.
        Err(e) => panic!("event {} has an invalid schema: {e}", E::TYPE),
    }
}

/// Decodes one member; used by the family macro.
#[doc(hidden)]
pub fn decode_member<E: Event>(
    set: &SchemaSet,
    writer: &KnownSchema,
    datum: &[u8],
) -> Result<E, DecodeError> {
    let own = set.latest(E::TYPE);
    match own {
        None => return decode_exact::<E>(writer, datum),
        Some(ours) if std::ptr::eq(&**ours, writer) => return decode_exact::<E>(writer, datum),
        // The same fingerprint, fetched elsewhere (a registry): the same binary layout,
        // but the fingerprint does not cover logical types, and a writer's
        // `timestamp-micros` or `decimal` of another scale decoded as ours would be read
        // 1000 or 100 times off. Refused where a meaning changes; read straight otherwise
        // (a `uuid` string, a `timestamp-millis` long read as a plain long).
        Some(ours) if ours.fingerprint == writer.fingerprint => {
            return match writer.reads_as(ours) {
                Ok(()) => decode_exact::<E>(writer, datum),
                Err(reason) => Err(DecodeError::Datum { type_name: writer.name.clone(), reason }),
            };
        }
        Some(_) => {}
    }
    // The writer used another version than ours: an upcaster for that version takes
    // precedence over Avro resolution.
    if let Some(upcast) = E::upcast(writer, datum) {
        return upcast;
    }
    let value = match own {
        // Ours checked once per writer ([`KnownSchema::resolves_to`]), not per record.
        Some(ours) => {
            writer.resolves_to(ours).map_err(|reason| DecodeError::Datum { type_name: writer.name.clone(), reason })?;
            crate::codec::resolve_value(writer, &ours.schema, crate::codec::read_value(writer, datum)?)?
        }
        None => crate::codec::read_value(writer, datum)?,
    };
    apache_avro::from_value::<E>(&value).map_err(|e| DecodeError::Datum { type_name: writer.name.clone(), reason: e.to_string() })
}

/// Decodes a datum written with exactly `writer`'s schema into `T` (no resolution):
/// straight into the type with serde_avro_fast when it reads the schema, and when that
/// fails or is unavailable, on the strict `Value` path, which says precisely why.
pub(crate) fn decode_exact<T: DeserializeOwned>(writer: &KnownSchema, datum: &[u8]) -> Result<T, DecodeError> {
    if let Some(Ok(decoded)) = writer.fast().map(|fast| crate::codec::decode_fast::<T>(&writer.name, fast, datum)) {
        return Ok(decoded);
    }
    let value = crate::codec::decode_value(writer, None, datum)?;
    apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Datum { type_name: writer.name.clone(), reason: e.to_string() })
}

/// Declares an event family: an enum with one variant per event type, and its plumbing.
///
/// ```
/// # use herald_bus::Event;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # struct Pinged { id: String }
/// # impl Event for Pinged {
/// #     const TYPE: &'static str = "demo.Pinged";
/// #     const SCHEMA: &'static str = r#"{"type":"record","name":"Pinged","namespace":"demo","fields":[{"name":"id","type":"string"}]}"#;
/// #     fn aggregate_id(&self) -> &str { &self.id }
/// # }
/// herald_bus::family! {
///     /// Events on the `demo` topic.
///     #[derive(Debug, Clone)]
///     pub enum DemoEvent {
///         Pinged(Pinged),
///     }
/// }
/// use herald_bus::EventFamily;
/// assert_eq!(DemoEvent::TYPES, &["demo.Pinged"]);
/// ```
#[macro_export]
macro_rules! family {
    (
        $(#[$meta:meta])*
        $vis:vis enum $family:ident {
            $( $(#[$vmeta:meta])* $variant:ident($event:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $family {
            $( $(#[$vmeta])* $variant($event), )+
        }

        impl $crate::EventFamily for $family {
            const TYPES: &'static [&'static str] = &[ $( <$event as $crate::Event>::TYPE ),+ ];

            fn schemas() -> &'static $crate::schema::SchemaSet {
                static SET: ::std::sync::OnceLock<$crate::schema::SchemaSet> = ::std::sync::OnceLock::new();
                SET.get_or_init(|| {
                    let mut set = $crate::schema::SchemaSet::default();
                    $( $crate::event::add_member::<$event>(&mut set); )+
                    set
                })
            }

            fn decode(
                type_name: &str,
                writer: &$crate::schema::KnownSchema,
                datum: &[u8],
            ) -> ::std::result::Result<::std::option::Option<Self>, $crate::codec::DecodeError> {
                let set = <Self as $crate::EventFamily>::schemas();
                $(
                    if type_name == <$event as $crate::Event>::TYPE {
                        return $crate::event::decode_member::<$event>(set, writer, datum)
                            .map(|e| ::std::option::Option::Some($family::$variant(e)));
                    }
                )+
                ::std::result::Result::Ok(::std::option::Option::None)
            }

            fn type_name(&self) -> &'static str {
                match self {
                    $( $family::$variant(_) => <$event as $crate::Event>::TYPE, )+
                }
            }

            fn aggregate_id(&self) -> &str {
                match self {
                    $( $family::$variant(e) => <$event as $crate::Event>::aggregate_id(e), )+
                }
            }
        }

        $(
            impl $crate::event::Member<$event> for $family {}

            impl ::std::convert::From<$event> for $family {
                fn from(e: $event) -> Self {
                    $family::$variant(e)
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::TimestampMillis;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Stamped {
        id: String,
        at: TimestampMillis,
    }

    const STAMPED: &str = r#"{"type":"record","name":"Stamped","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

    impl Event for Stamped {
        const TYPE: &'static str = "t.Stamped";
        const SCHEMA: &'static str = STAMPED;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }

    /// A datum written by another producer's schema that differs from ours only in a
    /// logical type (same fingerprint) is not decoded as if it were ours: its microseconds
    /// were read as milliseconds, a thousand times in the future.
    #[test]
    fn the_same_fingerprint_with_another_logical_type_is_not_read_as_ours() {
        let mut set = SchemaSet::default();
        let ours = add_member::<Stamped>(&mut set);
        let micros = SchemaSet::default().add_str(&STAMPED.replace("timestamp-millis", "timestamp-micros")).expect("schema");
        assert_eq!(ours.fingerprint, micros.fingerprint);
        let at_micros = 1_764_547_200_123_456_i64;
        let mut record = apache_avro::types::Record::new(&micros.schema).expect("record");
        record.put("id", "s-1");
        record.put("at", apache_avro::types::Value::TimestampMicros(at_micros));
        let datum = apache_avro::to_avro_datum(&micros.schema, record).expect("datum");

        let read = decode_member::<Stamped>(&set, &micros, &datum);
        assert!(read.is_err(), "read as ours: {read:?}");
        // Ours, fetched from elsewhere (a separate parse of the same schema), is ours.
        let again = SchemaSet::default().add_str(STAMPED).expect("schema");
        let mut record = apache_avro::types::Record::new(&again.schema).expect("record");
        record.put("id", "s-1");
        record.put("at", apache_avro::types::Value::TimestampMillis(at_micros / 1000));
        let datum = apache_avro::to_avro_datum(&again.schema, record).expect("datum");
        let read = decode_member::<Stamped>(&set, &again, &datum).expect("ours");
        assert_eq!(read.at.as_millis(), at_micros / 1000);
    }

    /// An annotation that changes no meaning does not stop a datum: a Java producer's
    /// `uuid` string is read into our plain string (resolution would refuse it: apache-avro
    /// does not resolve a uuid value to a string).
    #[test]
    fn the_same_fingerprint_with_a_harmless_annotation_is_read_straight() {
        let mut set = SchemaSet::default();
        add_member::<Stamped>(&mut set);
        let annotated = SchemaSet::default().add_str(&STAMPED.replace(r#""type":"string""#, r#""type":{"type":"string","logicalType":"uuid"}"#)).expect("schema");
        let mut record = apache_avro::types::Record::new(&annotated.schema).expect("record");
        record.put("id", apache_avro::types::Value::Uuid(uuid::Uuid::nil()));
        record.put("at", apache_avro::types::Value::TimestampMillis(7));
        let datum = apache_avro::to_avro_datum(&annotated.schema, record).expect("datum");
        for _ in 0..2 {
            let read = decode_member::<Stamped>(&set, &annotated, &datum).expect("read straight");
            assert_eq!((read.id.as_str(), read.at.as_millis()), ("00000000-0000-0000-0000-000000000000", 7));
        }
    }
}

//! [`parse`]: JSON text to a value, refusing an object that gives a key twice.
//!
//! RFC 8259 leaves duplicate names undefined, and parsers differ: `serde_json` and
//! JavaScript keep the last, others the first or refuse. A command such as
//! `{"amount_cents": 1, "amount_cents": 100000}` then means one thing to a proxy or an
//! audit log that checked it and another to the event written. Herald refuses it.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON, as `serde_json::from_slice` does, except that an object with a
/// key given twice (at any depth) is an error naming the key.
///
/// ```
/// use herald_schema::json::parse;
/// assert_eq!(parse(br#"{"a": [1, {"b": null}]}"#).unwrap()["a"][1]["b"], serde_json::Value::Null);
/// let twice = parse(br#"{"a": 1, "b": {"c": 2, "c": 3}}"#).unwrap_err();
/// assert!(twice.to_string().contains("\"c\" given twice"), "{twice}");
/// ```
pub fn parse(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(text).map(|s| s.0)
}

/// A value whose objects have no key twice.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so every parsed float is finite.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{key:?} given twice in one object")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_serde_json_parses_to_the_same_value() {
        for text in [
            r#"{"a":1,"b":-2,"c":1.5e300,"d":18446744073709551615,"e":"x\u00e9\"","f":[true,false,null,[],{}],"g":{"h":{"i":0.1}}}"#,
            "[]",
            "0",
            r#""""#,
            "null",
        ] {
            let strict = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(strict, serde_json::from_str::<Value>(text).expect("valid"), "{text}");
        }
    }

    #[test]
    fn refuses_a_key_given_twice_at_any_depth() {
        for text in [r#"{"a":1,"a":1}"#, r#"{"a":{"b":1,"b":2}}"#, r#"[{"x":1},{"y":1,"y":null}]"#] {
            let error = parse(text.as_bytes()).expect_err(text).to_string();
            assert!(error.contains("given twice"), "{text}: {error}");
        }
        // The same key in sibling objects is fine.
        assert!(parse(br#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in ["{", r#"{"a":}"#, "[1,]", "NaN", r#"{"a":1} x"#] {
            assert!(parse(text.as_bytes()).is_err(), "{text}");
        }
    }
}

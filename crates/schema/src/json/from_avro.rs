//! Avro to JSON: the natural mapping (see the [module docs](super)).

use apache_avro::types::Value;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Serializes an Avro value as JSON, records with their fields in schema order.
///
/// Embed it in a serializable struct, or write it with `serde_json::to_writer`.
#[derive(Debug, Clone, Copy)]
pub struct AvroJson<'a>(pub &'a Value);

/// The Avro value as a JSON value (objects come out with sorted keys).
pub fn to_json(value: &Value) -> serde_json::Value {
    // Serializing plain data into a JSON value cannot fail: every map key is a string.
    serde_json::to_value(AvroJson(value)).unwrap_or(serde_json::Value::Null)
}

impl Serialize for AvroJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => s.serialize_i32(*n),
            Value::Long(n)
            | Value::TimeMicros(n)
            | Value::TimestampMillis(n)
            | Value::TimestampMicros(n)
            | Value::TimestampNanos(n)
            | Value::LocalTimestampMillis(n)
            | Value::LocalTimestampMicros(n)
            | Value::LocalTimestampNanos(n) => s.serialize_i64(*n),
            Value::Float(f) if f.is_finite() => s.serialize_f32(*f),
            Value::Float(f) => float(s, f64::from(*f)),
            Value::Double(f) => float(s, *f),
            Value::Bytes(b) | Value::Fixed(_, b) => s.serialize_str(&latin1(b)),
            Value::String(text) => s.serialize_str(text),
            Value::Enum(_, symbol) => s.serialize_str(symbol),
            Value::Union(_, inner) => AvroJson(inner).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AvroJson(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                // Sorted, so the output is the same every time.
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (key, item) in sorted {
                    map.serialize_entry(key, &AvroJson(item))?;
                }
                map.end()
            }
            Value::Record(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, item) in fields {
                    map.serialize_entry(name, &AvroJson(item))?;
                }
                map.end()
            }
            Value::Decimal(d) => match Vec::<u8>::try_from(d) {
                Ok(bytes) => s.serialize_str(&latin1(&bytes)),
                Err(e) => Err(serde::ser::Error::custom(format!("decimal: {e}"))),
            },
            Value::BigDecimal(d) => s.serialize_str(&d.to_string()),
            Value::Duration(d) => s.serialize_str(&latin1(&<[u8; 12]>::from(*d))),
            Value::Uuid(u) => s.serialize_str(&u.to_string()),
        }
    }
}

fn float<S: Serializer>(s: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_nan() {
        s.serialize_str("NaN")
    } else if f.is_infinite() {
        s.serialize_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(f)
    }
}

/// Bytes as a string of the characters U+0000..U+00FF, as Avro's JSON encoding writes them.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn records_keep_their_field_order_and_unions_lose_their_wrapper() {
        let value = Value::Record(vec![
            ("z".into(), Value::Union(1, Box::new(Value::String("x".into())))),
            ("a".into(), Value::Union(0, Box::new(Value::Null))),
            ("m".into(), Value::Map([("k".to_owned(), Value::Long(1))].into_iter().collect())),
        ]);
        let text = serde_json::to_string(&AvroJson(&value)).expect("serializes");
        assert_eq!(text, r#"{"z":"x","a":null,"m":{"k":1}}"#);
    }

    #[test]
    fn bytes_are_iso_8859_1_and_odd_floats_are_strings() {
        assert_eq!(to_json(&Value::Bytes(vec![0, 0x41, 0xff])), json!("\u{0000}A\u{00ff}"));
        assert_eq!(to_json(&Value::Fixed(2, vec![0xe9, 0x20])), json!("é "));
        assert_eq!(to_json(&Value::Double(f64::NAN)), json!("NaN"));
        assert_eq!(to_json(&Value::Float(f32::INFINITY)), json!("Infinity"));
        assert_eq!(to_json(&Value::Double(f64::NEG_INFINITY)), json!("-Infinity"));
        assert_eq!(serde_json::to_string(&AvroJson(&Value::Float(1.1))).expect("json"), "1.1");
        assert_eq!(to_json(&Value::Enum(0, "RED".into())), json!("RED"));
        assert_eq!(to_json(&Value::TimestampMillis(5)), json!(5));
        let id = apache_avro::Uuid::nil();
        assert_eq!(to_json(&Value::Uuid(id)), json!("00000000-0000-0000-0000-000000000000"));
    }
}

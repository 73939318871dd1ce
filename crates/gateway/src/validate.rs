//! From request body to Avro datum: parse, merge path parameters, fill server-side
//! fields, take the key, check against the schema.
//!
//! The schema check is `herald publish`'s ([`herald_schema::json`]): the same JSON is
//! accepted by both, and a refusal names the field path and what was expected.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::{Fill, KeySource};
use crate::problem::{FieldError, Problem};
use crate::route::Route;

/// A body that fits its event: the key and the encoded datum.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The Kafka key and `ce_subject`.
    pub key: String,
    /// The Avro binary datum (not yet framed).
    pub datum: Vec<u8>,
}

/// What the server fills in.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The principal's id, for `principal` fills.
    pub principal: &'a str,
    /// Now, in epoch milliseconds, for `now` fills.
    pub now_millis: i64,
}

/// Checks `body` for `route`; the `400` problem naming the field otherwise.
///
/// Path parameters named like a top-level field of the record are set into the body (a
/// body that gives the field a different value is refused). Then the fills (see
/// [`Fill`]), then the key, then the schema check.
pub fn prepare(route: &Route, body: &[u8], params: &[(String, String)], ctx: Context<'_>) -> Result<Prepared, Problem> {
    let value: Value = herald_schema::json::parse(body).map_err(|e| Problem::malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(Problem::malformed(format!("expected a JSON object for {}, got {}", route.event_type(), kind(&value))));
    };
    for (name, value) in params {
        if !route.fields.contains(name) {
            continue;
        }
        // The body may leave the field out or say the same; anything else (another
        // string, a number, null) says otherwise.
        match object.get(name) {
            None => {
                object.insert(name.clone(), Value::String(value.clone()));
            }
            Some(Value::String(given)) if given == value => {}
            Some(given) => {
                return Err(Problem::invalid(route.event_type(), vec![FieldError::field(name, format!("the body says {given}, the path says {value:?}"))]));
            }
        }
    }
    fill(&mut object, route, ctx);
    let key = key(&object, route, params)?;
    let value = Value::Object(object);
    // Every field that does not fit, not only the first (the problem's `errors`).
    let datum = route.encoder.encode_all(&value)
        .map_err(|errors| Problem::invalid(route.event_type(), errors.iter().map(|e| FieldError::at(&e.path, e.problem.to_string())).collect()))?;
    Ok(Prepared { key, datum })
}

fn fill(object: &mut Map<String, Value>, route: &Route, ctx: Context<'_>) {
    for (field, how) in &route.fill {
        match how {
            Fill::Uuid7 => {
                if matches!(object.get(field), None | Some(Value::Null)) {
                    object.insert(field.clone(), Value::String(Uuid::now_v7().to_string()));
                }
            }
            Fill::Now => {
                object.insert(field.clone(), Value::from(ctx.now_millis));
            }
            Fill::Principal => {
                object.insert(field.clone(), Value::String(ctx.principal.to_owned()));
            }
        }
    }
}

fn key(object: &Map<String, Value>, route: &Route, params: &[(String, String)]) -> Result<String, Problem> {
    match &route.key {
        KeySource::Path(name) => params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Problem::internal(format!("route {} has no path parameter {name}", route.name))),
        KeySource::Body(field) => match object.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(other) => Err(Problem::invalid(route.event_type(), vec![FieldError::field(field, format!("the key must be a non-empty string, got {}", kind(other)))])),
            None => Err(Problem::invalid(route.event_type(), vec![FieldError::field(field, "missing; it is the event's key")])),
        },
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use herald_bus::schema::SchemaSet;

    fn route(extra: &str) -> std::sync::Arc<Route> {
        let mut set = SchemaSet::default();
        let added = set.add_str(
            r#"{"type":"record","name":"Placed","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"who","type":"string"},{"name":"at","type":["null","long"],"default":null},{"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"n","type":"int"}]}}}]}"#,
        );
        assert!(added.is_ok());
        let text = format!("[[route]]\nmethod='POST'\npath='/x/{{who}}'\nevent='t.Placed'\ntopic='t'\n{extra}\n");
        let config = Config::parse(&text).ok().map(|c| c.routes).unwrap_or_default();
        let routes = crate::route::compile(&config, &set, "");
        routes.ok().and_then(|r| r.into_iter().next()).unwrap_or_else(|| panic!("route does not compile: {extra}"))
    }

    const CTX: Context<'static> = Context { principal: "alice", now_millis: 42 };

    fn params() -> Vec<(String, String)> {
        vec![("who".to_owned(), "bob".to_owned())]
    }

    #[test]
    fn fills_key_and_path_parameters() {
        let r = route("key={body='id'}\nfill={id='uuid7',at='now'}");
        let prepared = prepare(&r, br#"{"lines":[{"n":1}]}"#, &params(), CTX);
        let prepared = prepared.unwrap_or_else(|p| panic!("{p:?}"));
        assert!(Uuid::parse_str(&prepared.key).is_ok_and(|u| u.get_version_num() == 7), "{}", prepared.key);
        let given = prepare(&r, br#"{"id":"o-1","lines":[]}"#, &params(), CTX).map(|p| p.key);
        assert_eq!(given.ok().as_deref(), Some("o-1"));
    }

    #[test]
    fn a_wrong_body_names_the_field_and_what_was_expected() {
        let r = route("key={body='id'}");
        let wrong = prepare(&r, br#"{"id":"o","lines":[{"n":"two"}]}"#, &params(), CTX).err();
        let error = wrong.as_ref().and_then(|p| p.errors.first());
        assert_eq!(error.map(|e| (e.field.as_str(), e.pointer.as_str())), Some(("lines[0].n", "/lines/0/n")));
        assert!(error.is_some_and(|e| e.detail.contains("expected int")), "{error:?}");
        assert_eq!(prepare(&r, b"{not json", &params(), CTX).err().map(|p| p.kind), Some("urn:herald:gateway:malformed-body".to_owned()));
        assert_eq!(prepare(&r, b"[1]", &params(), CTX).err().map(|p| p.status), Some(400));
        let missing_key = prepare(&r, br#"{"lines":[]}"#, &params(), CTX).err();
        assert_eq!(missing_key.and_then(|p| p.errors.first().map(|e| e.field.clone())).as_deref(), Some("id"));
        let conflict = prepare(&r, br#"{"id":"o","who":"eve","lines":[]}"#, &params(), CTX).err();
        assert_eq!(conflict.and_then(|p| p.errors.first().map(|e| e.field.clone())).as_deref(), Some("who"));
        // Not a string is saying otherwise too, not a value the path overwrites.
        for body in [r#"{"id":"o","who":5,"lines":[]}"#, r#"{"id":"o","who":null,"lines":[]}"#, r#"{"id":"o","who":["bob"],"lines":[]}"#] {
            let conflict = prepare(&r, body.as_bytes(), &params(), CTX).err();
            assert_eq!(conflict.and_then(|p| p.errors.first().map(|e| e.field.clone())).as_deref(), Some("who"), "{body}");
        }
        let same = prepare(&r, br#"{"id":"o","who":"bob","lines":[]}"#, &params(), CTX);
        assert!(same.is_ok(), "{:?}", same.err());
    }

    #[test]
    fn principal_fill_replaces_a_client_value() {
        let r = route("key={path='who'}\nfill={id='principal'}");
        let prepared = prepare(&r, br#"{"id":"mallory","lines":[]}"#, &params(), CTX);
        let datum = prepared.map(|p| (p.key, p.datum)).unwrap_or_default();
        assert_eq!(datum.0, "bob");
        let decoded = apache_avro::from_avro_datum(&r.schema.schema, &mut datum.1.as_slice(), None);
        let text = format!("{decoded:?}");
        assert!(text.contains("alice") && !text.contains("mallory"), "{text}");
    }
}

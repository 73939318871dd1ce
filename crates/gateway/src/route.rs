//! [`Route`]: a `[[route]]` checked against its schema, ready to serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::schema::{RecordSchema, Schema};
use axum::http::Method;
use herald_bus::schema::{KnownSchema, SchemaSet};
use herald_schema::json::JsonEncoder;

use crate::config::{ConfigError, Fill, KeySource, RouteConfig};
use crate::problem::Problem;

/// One route: method and path to an event type on a topic.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name in metrics and OpenAPI.
    pub name: String,
    /// HTTP method.
    pub method: Method,
    /// Path pattern, parameters as `{name}`.
    pub path: String,
    /// Path parameters, in order.
    pub params: Vec<String>,
    /// The event's schema (the newest version of its type).
    pub schema: Arc<KnownSchema>,
    /// The same schema, ready to encode request bodies (its named types resolved once).
    pub encoder: JsonEncoder,
    /// Topic, prefix included.
    pub topic: String,
    /// Where the key comes from.
    pub key: KeySource,
    /// Scopes required.
    pub scopes: Vec<String>,
    /// Server-side fields.
    pub fill: BTreeMap<String, Fill>,
    /// The record's top-level field names.
    pub fields: Vec<String>,
    /// Its rate limit, if any.
    pub limiter: Option<Arc<crate::limits::Limiter>>,
}

impl Route {
    /// The event type (the schema's full name).
    pub fn event_type(&self) -> &str {
        &self.schema.name
    }

    /// Matches a request path against the pattern: the decoded parameters, in order
    /// (axum already routed it, so this mostly extracts; it checks again to stay correct
    /// on its own).
    pub fn match_path(&self, path: &str) -> Result<Vec<(String, String)>, Problem> {
        match_path(&self.path, path)
    }
}

/// Matches a request path against a pattern: the decoded parameters, in order. `404` when
/// it does not match; a parameter never matches an empty segment (`/orders//cancel` names
/// no order: taken, it would publish an event keyed by `""`). `400` when a parameter is
/// not UTF-8 once percent-decoded (`%FF`): the path matched, the value is bad.
pub(crate) fn match_path(pattern: &str, path: &str) -> Result<Vec<(String, String)>, Problem> {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
    if pattern.len() != actual.len() {
        return Err(Problem::not_found(path));
    }
    let mut params = Vec::new();
    for (p, a) in pattern.iter().zip(&actual) {
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(_) if a.is_empty() => return Err(Problem::not_found(path)),
            Some(name) => {
                let value = percent_decode(a).ok_or_else(|| Problem::invalid_parameter(format!("path parameter {name} is not UTF-8 once percent-decoded: {a}")))?;
                params.push((name.to_owned(), value));
            }
            None if p == a => {}
            None => return Err(Problem::not_found(path)),
        }
    }
    Ok(params)
}

/// Checks every route against `schemas` and applies the topic prefix.
///
/// Refuses (naming the route): an unknown method, a path that does not start with `/` or
/// has malformed parameters, two routes with the same method and path, an event type not
/// in `schemas` or not a record, a key or fill field that is not a field of the record, a
/// key path parameter missing from the path, and fills of the wrong type (`uuid7` and
/// `principal` need a string field, `now` a long).
pub fn compile(configs: &[RouteConfig], schemas: &SchemaSet, prefix: &str) -> Result<Vec<Arc<Route>>, ConfigError> {
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(configs.len());
    for config in configs {
        let route = compile_one(config, schemas, prefix)?;
        if routes.iter().any(|r| r.method == route.method && r.path == route.path) {
            return Err(ConfigError::Invalid(format!("route {}: {} {} is defined twice", route.name, route.method, route.path)));
        }
        routes.push(Arc::new(route));
    }
    Ok(routes)
}

fn compile_one(config: &RouteConfig, schemas: &SchemaSet, prefix: &str) -> Result<Route, ConfigError> {
    let name = config.name.clone().unwrap_or_else(|| format!("{} {}", config.method.to_uppercase(), config.path));
    let invalid = |what: String| ConfigError::Invalid(format!("route {name}: {what}"));
    let method = Method::from_bytes(config.method.to_uppercase().as_bytes()).map_err(|_| invalid(format!("unknown method {:?}", config.method)))?;
    if !config.path.starts_with('/') {
        return Err(invalid(format!("path {:?} must start with /", config.path)));
    }
    let params = parse_params(&config.path).map_err(&invalid)?;
    let schema = schemas.latest(&config.event).cloned().ok_or_else(|| invalid(format!("event type {} is not under the schemas folder", config.event)))?;
    let fields: Vec<String> = match &schema.schema {
        Schema::Record(RecordSchema { fields, .. }) => fields.iter().map(|f| f.name.clone()).collect(),
        _ => return Err(invalid(format!("event type {} is not a record", config.event))),
    };
    match &config.key {
        KeySource::Body(field) if !fields.contains(field) => return Err(invalid(format!("key field {field} is not a field of {}", config.event))),
        KeySource::Path(param) if !params.contains(param) => return Err(invalid(format!("key path parameter {param} is not in {}", config.path))),
        _ => {}
    }
    for (field, fill) in &config.fill {
        let Some(field_schema) = field_schema(&schema.schema, field) else {
            return Err(invalid(format!("fill field {field} is not a field of {}", config.event)));
        };
        let fits = match fill {
            Fill::Uuid7 | Fill::Principal => accepts(field_schema, &|s| matches!(s, Schema::String | Schema::Uuid)),
            Fill::Now => accepts(field_schema, &|s| matches!(s, Schema::Long | Schema::TimestampMillis)),
        };
        if !fits {
            return Err(invalid(format!("fill {fill:?} does not fit field {field} of {}", config.event)));
        }
    }
    topic_name(prefix, &config.topic).map_err(&invalid)?;
    let limiter = config.rate.map(crate::limits::Limiter::new).transpose().map_err(|e| invalid(e.to_string()))?.map(Arc::new);
    let encoder = JsonEncoder::new(schema.schema.clone()).map_err(|e| invalid(e.to_string()))?;
    Ok(Route {
        name,
        method,
        path: config.path.clone(),
        params,
        schema,
        encoder,
        topic: format!("{prefix}{}", config.topic),
        key: config.key.clone(),
        scopes: config.scopes.clone(),
        fill: config.fill.clone(),
        fields,
        limiter,
    })
}

/// The parameters of a path pattern (`{name}` segments), in order; an error names a
/// malformed segment.
pub(crate) fn parse_params(path: &str) -> Result<Vec<String>, String> {
    let mut params = Vec::new();
    for segment in path.split('/') {
        if segment.contains('{') || segment.contains('}') {
            let param = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')).filter(|p| is_identifier(p));
            match param {
                Some(p) => params.push(p.to_owned()),
                None => return Err(format!("path segment {segment:?}: a parameter is a whole segment {{name}}")),
            }
        }
    }
    Ok(params)
}

fn topic_name(prefix: &str, topic: &str) -> Result<(), String> {
    herald_bus::topic::validate_name(&format!("{prefix}{topic}")).map_err(|e| e.to_string())
}

fn field_schema<'a>(record: &'a Schema, field: &str) -> Option<&'a Schema> {
    match record {
        Schema::Record(r) => r.fields.iter().find(|f| f.name == field).map(|f| &f.schema),
        _ => None,
    }
}

/// True when `schema`, or a branch of it if it is a union, satisfies `ok`.
fn accepts(schema: &Schema, ok: &dyn Fn(&Schema) -> bool) -> bool {
    match schema {
        Schema::Union(u) => u.variants().iter().any(ok),
        other => ok(other),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percent-decodes one path segment; `None` if it is not valid UTF-8 afterwards.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn schemas() -> SchemaSet {
        let mut set = SchemaSet::default();
        let added = set.add_str(
            r#"{"type":"record","name":"Placed","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},{"name":"n","type":"int"}]}"#,
        );
        assert!(added.is_ok());
        set
    }

    fn compile_text(text: &str) -> Result<Vec<Arc<Route>>, String> {
        let config = Config::parse(text).map_err(|e| e.to_string())?;
        compile(&config.routes, &schemas(), "p.").map_err(|e| e.to_string())
    }

    #[test]
    fn a_good_route_compiles_with_the_prefix() {
        let routes = compile_text("[[route]]\nmethod='post'\npath='/x/{id}'\nevent='t.Placed'\ntopic='t'\nkey={path='id'}\nfill={at='now'}\n");
        let route = routes.ok().and_then(|r| r.into_iter().next());
        assert_eq!(route.as_ref().map(|r| (r.topic.as_str(), r.method.as_str(), r.params.clone())), Some(("p.t", "POST", vec!["id".to_owned()])));
        let params = route.as_ref().and_then(|r| r.match_path("/x/a%20b").ok());
        assert_eq!(params, Some(vec![("id".to_owned(), "a b".to_owned())]));
        let status = |pattern: &str, path: &str| match_path(pattern, path).err().map(|p| p.status_code().as_u16());
        assert_eq!(status("/x/{id}", "/x/"), Some(404), "an empty parameter names nothing");
        assert_eq!(status("/orders/{id}/cancel", "/orders//cancel"), Some(404));
        assert_eq!(status("/orders/{id}/cancel", "/orders/1/keep"), Some(404));
        assert_eq!(status("/orders/{id}", "/orders/a%FFb"), Some(400), "the path matched; its parameter is bad");
        assert_eq!(match_path("/orders/{id}", "/orders/%C3%A9").ok(), Some(vec![("id".to_owned(), "é".to_owned())]));
    }

    #[test]
    fn bad_routes_are_refused_naming_the_problem() {
        let cases = [
            ("event='t.Nope'\nkey={body='id'}", "not under the schemas"),
            ("event='t.Placed'\nkey={body='nope'}", "key field nope"),
            ("event='t.Placed'\nkey={path='id'}", "key path parameter id"),
            ("event='t.Placed'\nkey={body='id'}\nfill={n='uuid7'}", "does not fit field n"),
            ("event='t.Placed'\nkey={body='id'}\nfill={id='now'}", "does not fit field id"),
            ("event='t.Placed'\nkey={body='id'}\nfill={zz='now'}", "fill field zz"),
        ];
        for (body, expected) in cases {
            let err = compile_text(&format!("[[route]]\nmethod='POST'\npath='/x'\ntopic='t'\n{body}\n")).err().unwrap_or_default();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let twice = "[[route]]\nmethod='POST'\npath='/x'\ntopic='t'\nevent='t.Placed'\nkey={body='id'}\n";
        let err = compile_text(&format!("{twice}{twice}")).err().unwrap_or_default();
        assert!(err.contains("defined twice"), "{err}");
    }
}

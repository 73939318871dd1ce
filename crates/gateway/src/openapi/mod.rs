//! `/openapi.json`: an OpenAPI 3.1 document generated from the routes: each route's body
//! schema from its Avro schema (server-side fields marked), its path parameters, the
//! `Idempotency-Key` and `traceparent` headers, its security (API key, bearer JWT, with
//! the route's scopes), and every response with the problem schema.

mod avro;

use serde_json::{json, Map, Value};

use crate::auth::Authenticator;
use crate::config::KeySource;
use crate::route::Route;

/// The document for `routes`.
pub fn document(routes: &[std::sync::Arc<Route>], auth: &Authenticator) -> Value {
    let mut describer = avro::Describer::default();
    let mut paths: Map<String, Value> = Map::new();
    for route in routes {
        let key_field = match &route.key {
            KeySource::Body(field) => Some(field.as_str()),
            KeySource::Path(_) => None,
        };
        let body = describer.body(&route.schema.schema, &route.fill, key_field);
        let mut parameters: Vec<Value> = route
            .params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": crate::idempotency::MAX_KEY_LEN, "pattern": "^[!-~]([ -~]*[!-~])?$"},
            "description": "Repeat a request safely: the same key (per principal) gets the same event id and the same 202, never a second event; a different request with it gets 422."}));
        parameters.push(json!({"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}, "description": "W3C trace context, continued into the event's headers."}));
        let mut responses = Map::new();
        responses.insert("202".into(), json!({"description": "The event was acknowledged by the broker (acks=all).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}));
        let mut problems = vec![
            ("400", "The body is not JSON or does not fit the schema (errors[] names each field)."),
            ("409", "A request with the same Idempotency-Key is in progress."),
            ("413", "The body is too large."),
            ("422", "The Idempotency-Key was used with a different request."),
            ("503", "The event could not be written (broker unavailable, circuit open, deadline); see Retry-After."),
        ];
        if auth.is_enabled() {
            problems.push(("401", "No valid credentials."));
            problems.push(("403", "A scope of the route is missing."));
        }
        if route.limiter.is_some() {
            problems.push(("429", "Over the route's rate for this principal; see Retry-After."));
        }
        for (status, description) in problems {
            responses.insert(status.into(), json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}));
        }
        let mut operation = json!({
            "operationId": route.name,
            "summary": format!("Publishes {} on {}", route.event_type(), route.topic),
            "parameters": parameters,
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": responses,
        });
        if auth.is_enabled() {
            operation["security"] = json!([{"apiKey": []}, {"bearer": route.scopes}]);
        }
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        item[route.method.as_str().to_lowercase()] = operation;
    }
    let mut schemas: Map<String, Value> = describer.components.into_iter().collect();
    schemas.insert("Accepted".into(), json!({"type": "object", "required": ["id", "topic", "partition", "offset"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "topic": {"type": "string"}, "partition": {"type": "integer", "format": "int32"}, "offset": {"type": "integer", "format": "int64"}}}));
    schemas.insert("Problem".into(), json!({"type": "object", "description": "RFC 9457 problem details", "properties": {
        "type": {"type": "string", "format": "uri"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "pointer": {"type": "string"}, "detail": {"type": "string"}}}}}}));
    let mut components = json!({"schemas": schemas});
    if auth.is_enabled() {
        components["securitySchemes"] = json!({
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Herald gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": components,
    })
}

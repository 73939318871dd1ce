//! `/openapi.json`: an OpenAPI 3.1 document generated from the routes: each route's body
//! schema from its Avro schema (server-side fields marked), its path parameters, the
//! `Idempotency-Key` and `traceparent` headers, its security (API key, bearer JWT, with
//! the route's scopes), and every response with the problem schema. Query routes are `GET`
//! operations answering the service's JSON, with `404` passed through and `502`, `503`
//! and `504` problems.

mod avro;

use serde_json::{json, Map, Value};

use crate::auth::Authenticator;
use crate::config::KeySource;
use crate::query::QueryRoute;
use crate::route::Route;

/// The document for `routes`.
pub fn document(routes: &[std::sync::Arc<Route>], queries: &[std::sync::Arc<QueryRoute>], auth: &Authenticator) -> Value {
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
            ("408", "The body did not arrive within the deadline."),
            ("409", "A request with the same Idempotency-Key is in progress."),
            ("413", "The body is too large."),
            ("415", "The body's Content-Type is not JSON."),
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
    for query in queries {
        let parameters: Vec<Value> = query
            .params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
            .chain(std::iter::once(json!({"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}, "description": "W3C trace context, passed to the service."})))
            .collect();
        let problem = |description: &str| json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        let mut responses = Map::new();
        responses.insert("200".into(), json!({"description": format!("The answer of an instance of {} (GET {}).", query.service, query.upstream), "content": {"application/json": {"schema": {}}}}));
        responses.insert("404".into(), json!({"description": "Not found (the service's answer, or no such route).", "content": {"application/json": {"schema": {}}, "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}));
        responses.insert("502".into(), problem("The instance asked failed."));
        responses.insert("503".into(), problem("No instance of the service is available; see Retry-After."));
        responses.insert("504".into(), problem("The instance asked did not answer within the route's deadline."));
        if auth.is_enabled() {
            responses.insert("401".into(), problem("No valid credentials."));
            responses.insert("403".into(), problem("A scope of the route is missing."));
        }
        let mut operation = json!({
            "operationId": query.name,
            "summary": format!("Asks an instance of {} (GET {})", query.service, query.upstream),
            "parameters": parameters,
            "responses": responses,
        });
        if auth.is_enabled() {
            operation["security"] = json!([{"apiKey": []}, {"bearer": query.scopes}]);
        }
        let item = paths.entry(query.path.clone()).or_insert_with(|| json!({}));
        item["get"] = operation;
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

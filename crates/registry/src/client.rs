//! The registry client: the three calls of the Confluent REST API that framing needs,
//! retried when the registry is unavailable, cached both ways.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_bus::schema::{Fingerprint, KnownSchema, SchemaSet};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::{Backoff, RegistryConfig, RegistryError};

/// The media type of the Confluent schema-registry API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A client of a Confluent-compatible schema registry (Confluent Schema Registry,
/// Apicurio Registry's `/apis/ccompat/v7`, Redpanda, Karapace).
///
/// Cloning is cheap and shares the connection pool and both caches:
/// `(subject, fingerprint) → id` for writers, `id → schema` for readers. A schema id never
/// changes meaning, so cached entries never expire. Failures are never cached.
///
/// ```no_run
/// # async fn run() -> Result<(), herald_registry::RegistryError> {
/// use herald_registry::{Registry, RegistryConfig};
/// let registry = Registry::new(RegistryConfig::new("http://127.0.0.1:8081"))?;
/// let schema = r#"{"type":"record","name":"Ping","namespace":"demo","fields":[]}"#;
/// let id = registry.register("demo.Ping", schema).await?;
/// assert_eq!(registry.schema(id).await?.name, "demo.Ping");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: RegistryConfig,
    ids: Mutex<HashMap<(String, Fingerprint), u32>>,
    schemas: Mutex<HashMap<u32, Arc<KnownSchema>>>,
    /// When fetching a schema last found the registry unavailable (after the retries),
    /// and why: fetches within [`DOWN_FOR`] of it fail at once (see [`Registry::schema`]).
    down: Mutex<Option<(std::time::Instant, u32, String)>>,
}

/// How long a registry found unavailable is not asked again for a schema: a reader of many
/// records whose schemas are not cached would otherwise wait out the retries for every one
/// (`herald tail` spent 0.8 s and three warnings per record), learning nothing new.
const DOWN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// `{"schema": "..."}`, the body of a register or lookup request.
#[derive(serde::Serialize)]
struct SchemaBody<'a> {
    schema: &'a str,
}

/// `{"id": 1}` (register) or `{"subject": .., "version": .., "id": 1, "schema": ..}` (lookup).
#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

/// `{"schema": "...", "schemaType": "AVRO", "references": [...]}` (`GET
/// /schemas/ids/{id}`, and `GET /subjects/{subject}/versions/{version}` with more fields).
#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

impl SchemaById {
    /// The schema's type when it is not Avro (`schemaType` absent means Avro).
    fn non_avro_type(&self) -> Option<&str> {
        self.schema_type.as_deref().filter(|k| !k.eq_ignore_ascii_case("AVRO"))
    }
}

/// `{"name": "com.acme.Address", "subject": "address", "version": 1}`: a type the schema
/// names, registered under another subject.
#[derive(Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

/// The most referenced schemas one schema may pull in (its references, theirs, ...).
const MAX_REFERENCES: usize = 1000;

/// `{"error_code": 40403, "message": "Schema not found"}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error_code: i64,
    #[serde(default)]
    message: String,
}

impl Registry {
    /// A client for the registry described by `config`. Makes no request yet.
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        // A malformed URL fails here, once, not as "unavailable" after retries (its
        // errors, like reqwest's, would carry the URL, password included).
        match reqwest::Url::parse(config.url()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            Ok(_) | Err(_) => return Err(RegistryError::Client(format!("the registry URL {} is not an http:// or https:// URL", crate::config::redact_url(config.url())))),
        }
        let mut http = reqwest::Client::builder().use_rustls_tls().timeout(config.timeout);
        for pem in &config.ca_pem {
            let cas = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| RegistryError::Client(format!("invalid CA certificate: {e}")))?;
            if cas.is_empty() {
                return Err(RegistryError::Client("no CA certificate in the PEM given".into()));
            }
            for ca in cas {
                http = http.add_root_certificate(ca);
            }
        }
        let http = http.build().map_err(|e| RegistryError::Client(e.to_string()))?;
        Ok(Registry {
            inner: Arc::new(Inner { http, config, ids: Mutex::default(), schemas: Mutex::default(), down: Mutex::default() }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id; registering a
    /// schema that is already there returns the existing id (`POST
    /// /subjects/{subject}/versions`).
    ///
    /// Deliberately without `normalize=true`: Apicurio's normalization sorts a record's
    /// fields by name, which changes the schema (Avro's binary encoding follows field
    /// order), so events written with the id would no longer decode with it.
    ///
    /// Errors: [`RegistryError::Rejected`] with 409 when the schema is incompatible with
    /// the subject's earlier versions, 422 when it is invalid.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.inner.config.url, encode_segment(subject));
        let body: IdBody = self.call(|http| http.post(&url).json(&SchemaBody { schema })).await?;
        Ok(body.id)
    }

    /// The id of `schema` under `subject`, without registering it (`POST
    /// /subjects/{subject}?normalize=true`: schemas compare by meaning, not by their
    /// text's formatting, which Apicurio otherwise requires byte for byte). [`RegistryError::NotFound`] when the subject does not exist
    /// (40401) or does not hold this schema (40403).
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}?normalize=true", self.inner.config.url, encode_segment(subject));
        let body: IdBody = self.call(|http| http.post(&url).json(&SchemaBody { schema })).await?;
        Ok(body.id)
    }

    /// The id of `known` under `subject`, from the cache or else the registry: registered
    /// when `register` is true, looked up otherwise.
    pub async fn id_for(&self, subject: &str, known: &KnownSchema, register: bool) -> Result<u32, RegistryError> {
        let key = (subject.to_owned(), known.fingerprint);
        if let Some(id) = lock(&self.inner.ids).get(&key) {
            return Ok(*id);
        }
        let json = known.json().map_err(|e| RegistryError::Client(format!("cannot serialize schema {}: {e}", known.name)))?;
        let id = if register { self.register(subject, &json).await? } else { self.lookup(subject, &json).await? };
        if !register {
            // A lookup compares normalized schemas, and Apicurio's normalization sorts a
            // record's fields by name: a schema whose fields are in another order (another
            // binary layout) would get this id, and its events would be misread by every
            // reader of the id. The id is used only for this very schema.
            // Nor is the same fingerprint enough: it does not cover logical types
            // (timestamp-micros against -millis, a decimal's scale).
            let registered = self.schema(id).await?;
            if registered.fingerprint != known.fingerprint || registered.schema != known.schema {
                return Err(RegistryError::NotFound {
                    status: 404,
                    code: 40403,
                    message: format!("subject {subject} holds schema id {id}, which the registry matched to {} but which differs from it (field order, or a logical type); register this schema or publish with the registered one", known.name),
                });
            }
        }
        lock(&self.inner.ids).insert(key, id);
        Ok(id)
    }

    /// The schema with this id, parsed (`GET /schemas/ids/{id}`), from the cache when it
    /// was fetched before. [`RegistryError::NotFound`] (40403) when the id is unknown.
    /// Once a fetch found the registry unavailable (after the retries), fetches of schemas
    /// not cached fail at once with the same reason for the next 5 s, instead of each
    /// waiting out the retries again.
    ///
    /// A schema with [references](crate::references) (types registered under other
    /// subjects) is fetched with them and read as one standalone schema, each referenced
    /// type defined where it is first used (as Avro writes a schema without references).
    pub async fn schema(&self, id: u32) -> Result<Arc<KnownSchema>, RegistryError> {
        if let Some(known) = lock(&self.inner.schemas).get(&id) {
            return Ok(known.clone());
        }
        if let Some((at, attempts, reason)) = lock(&self.inner.down).as_ref().filter(|(at, ..)| at.elapsed() < DOWN_FOR) {
            let reason = format!("{reason} (found {} ms ago; asked again {} s after that)", at.elapsed().as_millis(), DOWN_FOR.as_secs());
            return Err(RegistryError::Unavailable { attempts: *attempts, reason });
        }
        let url = format!("{}/schemas/ids/{id}", self.inner.config.url);
        let fetched = self.call(|http| http.get(&url)).await;
        *lock(&self.inner.down) = match &fetched {
            Err(RegistryError::Unavailable { attempts, reason }) => Some((std::time::Instant::now(), *attempts, reason.clone())),
            _ => None,
        };
        let body: SchemaById = fetched?;
        if let Some(kind) = body.non_avro_type() {
            return Err(RegistryError::InvalidSchema { id, reason: format!("it is a {kind} schema, not Avro") });
        }
        let text = if body.references.is_empty() {
            body.schema
        } else {
            let schema: serde_json::Value = serde_json::from_str(&body.schema).map_err(|e| RegistryError::InvalidSchema { id, reason: e.to_string() })?;
            let referenced = self.referenced(id, body.references).await?;
            crate::references::inline(schema, &referenced).map_err(|e| RegistryError::InvalidSchema { id, reason: e.to_string() })?.to_string()
        };
        let mut set = SchemaSet::default();
        // Any Avro schema: a Confluent serializer registers a value's schema as it is.
        let known = set.add_writer_str(&text).map_err(|e| RegistryError::InvalidSchema { id, reason: e.to_string() })?;
        lock(&self.inner.schemas).insert(id, known.clone());
        Ok(known)
    }

    /// The schemas that schema `id`'s `references` point to, and those theirs point to
    /// (`GET /subjects/{subject}/versions/{version}`). A reference the registry does not
    /// have makes schema `id` invalid (permanent).
    async fn referenced(&self, id: u32, references: Vec<Reference>) -> Result<Vec<serde_json::Value>, RegistryError> {
        let mut schemas = Vec::new();
        let mut fetched = std::collections::HashSet::new();
        let mut todo = references;
        while let Some(Reference { name, subject, version }) = todo.pop() {
            if !fetched.insert((subject.clone(), version)) {
                continue;
            }
            if fetched.len() > MAX_REFERENCES {
                return Err(RegistryError::InvalidSchema { id, reason: format!("it references more than {MAX_REFERENCES} schemas") });
            }
            let url = format!("{}/subjects/{}/versions/{version}", self.inner.config.url, encode_segment(&subject));
            let invalid = |why: String| RegistryError::InvalidSchema { id, reason: format!("its reference {name} ({subject} version {version}) {why}") };
            let body: SchemaById = self.call(|http| http.get(&url)).await.map_err(|e| match e {
                RegistryError::NotFound { .. } => invalid(format!("is not in the registry: {e}")),
                other => other,
            })?;
            if let Some(kind) = body.non_avro_type() {
                return Err(invalid(format!("is a {kind} schema, not Avro")));
            }
            schemas.push(serde_json::from_str(&body.schema).map_err(|e| invalid(e.to_string()))?);
            todo.extend(body.references);
        }
        Ok(schemas)
    }

    /// Sends the request `build` makes, retrying transient failures with the configured
    /// backoff, and parses a 2xx body as `T`.
    async fn call<T, B>(&self, build: B) -> Result<T, RegistryError>
    where
        T: serde::de::DeserializeOwned,
        B: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let Backoff { attempts, .. } = self.inner.config.backoff;
        let attempts = attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build(&self.inner.http).header(reqwest::header::ACCEPT, CONTENT_TYPE);
            if let Some((user, password)) = &self.inner.config.auth {
                request = request.basic_auth(user, Some(password));
            }
            let reason = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let text = response.text().await.map_err(|e| RegistryError::InvalidResponse(e.to_string()))?;
                    return serde_json::from_str(&text)
                        .map_err(|e| RegistryError::InvalidResponse(format!("{e} in {}", truncate(&text))));
                }
                Ok(response) if is_transient_status(response.status()) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    format!("HTTP {status}: {}", truncate(&body))
                }
                Ok(response) => return Err(rejection(response).await),
                // Without the URL: it may hold a password (the config's Debug redacts it).
                Err(e) => {
                    let chain = source_chain(&e);
                    format!("{}{chain}", e.without_url())
                }
            };
            if attempt >= attempts {
                return Err(RegistryError::Unavailable { attempts, reason });
            }
            let delay = self.inner.config.backoff.delay(attempt);
            tracing::warn!(attempt, error = %reason, ?delay, "schema registry unavailable; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// A permanent 4xx answer, with the Confluent error body when there is one.
async fn rejection(response: reqwest::Response) -> RegistryError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody { error_code: 0, message: truncate(&text) });
    let (code, message) = (body.error_code, body.message);
    if status == 404 {
        RegistryError::NotFound { status, code, message }
    } else {
        RegistryError::Rejected { status, code, message }
    }
}

/// Percent-encodes a path segment (subjects may hold any character but `/` is common
/// enough in hand-made names to matter).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Locks a cache; a poisoned cache is still a valid map (entries are inserted whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_path_safe() {
        assert_eq!(encode_segment("shop.orders-value"), "shop.orders-value");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn only_unavailability_is_transient() {
        assert!(is_transient_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_transient_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_transient_status(StatusCode::NOT_FOUND));
        assert!(!is_transient_status(StatusCode::CONFLICT));
    }
}

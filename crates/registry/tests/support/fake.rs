//! An in-process stand-in for a Confluent schema registry, replaying the documented API:
//! `POST /subjects/{subject}/versions`, `POST /subjects/{subject}`,
//! `GET /schemas/ids/{id}`, with the documented error bodies
//! (`{"error_code":40403,"message":"Schema not found"}`), and a switch that makes every
//! request answer 503 like a registry whose backend is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Store {
    /// Schemas by id, in registration order (ids start at 1).
    schemas: Vec<String>,
    /// Subject -> ids of its versions.
    subjects: HashMap<String, Vec<u32>>,
}

#[derive(Default)]
pub struct Shared {
    store: Mutex<Store>,
    /// Answer every request with 503.
    pub down: AtomicBool,
    /// Answer this many more requests with 503, then recover.
    pub failures_left: AtomicUsize,
    /// Requests received.
    pub requests: AtomicUsize,
    /// When not 0, answer every request with this status: 401 for a refused credential,
    /// 200 for a proxy answering with an HTML page.
    pub answer: AtomicU16,
}

/// A running fake registry; stops when dropped.
pub struct FakeRegistry {
    pub url: String,
    pub state: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let state = Arc::new(Shared::default());
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake registry");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake registry serves");
        });
        FakeRegistry { url, state, task }
    }

    /// The fake behind https (rustls), with the certificate and key of `ca`'s server
    /// (`localhost`, `127.0.0.1`).
    pub async fn start_tls(ca: &herald_testkit::tls::TestCa) -> FakeRegistry {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca.server_cert).expect("server cert").map(|c| c.expect("cert")).collect();
        let key = PrivateKeyDer::from_pem_file(&ca.server_key).expect("server key");
        let config = tokio_rustls::rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("TLS config");
        let state = Arc::new(Shared::default());
        let app = router(state.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake registry");
        let url = format!("https://localhost:{}", tcp.local_addr().expect("local addr").port());
        let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake registry serves");
        });
        FakeRegistry { url, state, task }
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn fail_next(&self, n: usize) {
        self.state.failures_left.store(n, Ordering::SeqCst);
    }

    /// Answers every request with `status` (401: credential refused; 200: an HTML page,
    /// as a misconfigured proxy would), or normally again with `None`.
    pub fn answer_all(&self, status: Option<u16>) {
        self.state.answer.store(status.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Registers a schema directly, as another team's producer would.
    pub fn insert(&self, subject: &str, schema: &str) -> u32 {
        let mut store = self.state.store.lock().expect("store");
        store.schemas.push(schema.to_owned());
        let id = store.schemas.len() as u32;
        store.subjects.entry(subject.to_owned()).or_default().push(id);
        id
    }
}

fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/subjects/{subject}", post(lookup))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(state)
}

/// TCP connections that completed a TLS handshake; failed handshakes (a client that does
/// not trust the certificate) are dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(json!({ "error_code": code, "message": message }))).into_response()
}

/// 503 while down or while injected failures last; the status set with
/// [`FakeRegistry::answer_all`] while set.
fn unavailable(state: &Shared) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    match state.answer.load(Ordering::SeqCst) {
        0 => {}
        200 => return Some((StatusCode::OK, axum::response::Html("<html><body>Sign in</body></html>")).into_response()),
        status => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            return Some(error(status, status.as_u16().into(), "Unauthorized"));
        }
    }
    let injected = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    (injected || state.down.load(Ordering::SeqCst))
        .then(|| error(StatusCode::SERVICE_UNAVAILABLE, 50003, "Error while forwarding the request to the leader"))
}

/// Schemas compare by their parsing canonical form, as the real registries do.
fn canonical(schema: &str) -> Option<String> {
    apache_avro::Schema::parse_str(schema).ok().map(|s| s.canonical_form())
}

fn schema_of(body: &Value) -> Option<String> {
    body.get("schema")?.as_str().map(str::to_owned)
}

async fn register(State(state): State<Arc<Shared>>, Path(subject): Path<String>, Json(body): Json<Value>) -> Response {
    if let Some(r) = unavailable(&state) {
        return r;
    }
    let Some(schema) = schema_of(&body) else { return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema") };
    let Some(form) = canonical(&schema) else { return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema") };
    let mut store = state.store.lock().expect("store");
    let existing = store.schemas.iter().position(|s| canonical(s).as_deref() == Some(&form)).map(|i| i as u32 + 1);
    let id = match existing {
        Some(id) => id,
        None => {
            store.schemas.push(schema);
            store.schemas.len() as u32
        }
    };
    let versions = store.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    Json(json!({ "id": id })).into_response()
}

async fn lookup(State(state): State<Arc<Shared>>, Path(subject): Path<String>, Json(body): Json<Value>) -> Response {
    if let Some(r) = unavailable(&state) {
        return r;
    }
    let Some(form) = schema_of(&body).and_then(|s| canonical(&s)) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    let store = state.store.lock().expect("store");
    let Some(versions) = store.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, &format!("Subject '{subject}' not found."));
    };
    for (version, id) in versions.iter().enumerate() {
        let schema = &store.schemas[*id as usize - 1];
        if canonical(schema).as_deref() == Some(&form) {
            return Json(json!({ "subject": subject, "version": version + 1, "id": id, "schema": schema })).into_response();
        }
    }
    error(StatusCode::NOT_FOUND, 40403, "Schema not found")
}

async fn by_id(State(state): State<Arc<Shared>>, Path(id): Path<u32>) -> Response {
    if let Some(r) = unavailable(&state) {
        return r;
    }
    let store = state.store.lock().expect("store");
    match id.checked_sub(1).and_then(|i| store.schemas.get(i as usize)) {
        Some(schema) => Json(json!({ "schema": schema })).into_response(),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

//! A ready-made program for a projection: one command line for every projection, so
//! operators, scripts and `herald projector rebuild NAME` drive any of them alike.
//!
//! A projection's binary is a few lines:
//!
//! ```no_run
//! # herald_bus::family! { #[derive(Debug)] pub enum Orders { A(A) } }
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub struct A { id: String }
//! # impl herald_bus::Event for A { const TYPE: &'static str = "A"; const SCHEMA: &'static str = ""; fn aggregate_id(&self) -> &str { &self.id } }
//! # struct Totals;
//! # impl herald_projector::Projection<Orders> for Totals {
//! #     const NAME: &'static str = "totals";
//! #     fn migrate(&self, _: &mut dyn herald_projector::Tx) -> Result<(), herald_projector::ProjectionError> { Ok(()) }
//! #     fn apply(&self, _: &mut dyn herald_projector::Tx, _: &herald_bus::Envelope<Orders>) -> Result<(), herald_projector::ProjectionError> { Ok(()) }
//! # }
//! use herald_projector::app::{App, AppError};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), AppError> {
//!     App::new("shop.orders", || Totals).run().await
//! }
//! ```
//!
//! Installed as `herald-projection-<NAME>` (`NAME` = [`Projection::NAME`]) on the `PATH`,
//! it is also what `herald projector rebuild NAME` and `herald projector rollback NAME`
//! run.
//!
//! # Command line
//! - no mode flag: run the projector until SIGTERM or ctrl-c, serving `/health`,
//!   `/metrics`, `/status`, `POST /partitions/{p}/retry|skip` and the program's own
//!   routes ([`App::routes`]) on `--http` (the bound address is printed as `http: ADDR`);
//!   when a rebuild elsewhere swaps in a new version, it continues with that version.
//!   It registers in the service registry as service `projection-NAME` with its HTTP
//!   address and consumer group, and deregisters when it stops in order (see
//!   `herald_services::announce`; `--no-register` opts out).
//! - `--rebuild [--progress]`: build a new version from the beginning of the log beside
//!   the live one, swap it in once caught up, keep the previous one, exit.
//! - `--until-time RFC3339` or `--until-offsets P:O,...`: build a version as of that point
//!   (time travel), keep it beside the live one, exit.
//! - `--rollback`: make the previous version live again, exit.
//!
//! Common flags: `--topic`, `--group`, `--store sqlite:PATH|postgres://...` (or the
//! `HERALD_STORE_URL` variable, or `--store-file PATH` holding the URL, which wins: keep a
//! password off the command line; messages show it as `***`, see [`store::StoreUrl`]),
//! `--bootstrap` (env `KAFKA_BOOTSTRAP_SERVERS`), `--max-batch`, `--on-poison
//! dead-letter|pause`, `--max-attempts`, `-X key=value` (librdkafka properties; also read
//! from `HERALD_RDKAFKA_*` variables, see [`herald_bus::config::ENV_PREFIX`]).
//! With the `crash-points` feature (enabled by the tests only),
//! `HERALD_PROJECTOR_CRASH_AT=stage:n` aborts at a point of the pipeline (fault tests).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Parser;
use herald_bus::{EventFamily, KafkaConfig, RetryPolicy, Topic};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "crash-points")]
use crate::crash::CrashPoint;
use crate::rebuild::{self, Rebuilt};
use crate::runner::{Control, OnPoison, Projector, Stopped};
use crate::status::StatusHandle;
use crate::store::{self, Store};
use crate::Projection;

mod args;
mod error;

pub use args::{Args, PoisonArg};
pub use error::{exit, AppError};
use args::until;

/// Builds the routes a program serves besides the standard ones, from its store.
type Routes = Box<dyn Fn(Arc<dyn Store>) -> Router + Send + Sync>;

/// A projection program: the projection, its default topic, and optional extra routes.
pub struct App<F, P> {
    topic: String,
    make: Arc<dyn Fn() -> P + Send + Sync>,
    routes: Option<Routes>,
    _family: std::marker::PhantomData<fn() -> F>,
}

impl<F: EventFamily, P: Projection<F>> App<F, P> {
    /// A program projecting `topic` (overridable with `--topic`) with projections made by
    /// `make` (a rebuild needs fresh ones).
    pub fn new(topic: impl Into<String>, make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        App { topic: topic.into(), make: Arc::new(make), routes: None, _family: std::marker::PhantomData }
    }

    /// Extra routes served beside `/health`, `/metrics` and `/status` while running, such
    /// as `GET /views/{view}/{key}`; `routes` gets the program's store.
    pub fn routes(mut self, routes: impl Fn(Arc<dyn Store>) -> Router + Send + Sync + 'static) -> Self {
        self.routes = Some(Box::new(routes));
        self
    }

    /// Parses the process's command line and runs the program (see the
    /// [module docs](self)). While running it installs the Prometheus recorder for
    /// `/metrics`; it is the program's `main`.
    pub async fn run(self) -> Result<(), AppError> {
        self.run_with(Args::parse()).await
    }

    /// Runs the program with `args` already parsed.
    pub async fn run_with(self, args: Args) -> Result<(), AppError> {
        let url = store::StoreUrl::from_flags(args.store.clone(), args.store_file.as_deref())?;
        let url = url.map_or_else(|| format!("sqlite:{}.db", P::NAME), |u| u.expose().to_owned());
        let store = store::open(&url)?;
        // Every mode's clients take -X (over the environment's HERALD_RDKAFKA_*): a
        // rebuild on a secured cluster must not connect in plaintext.
        let config = KafkaConfig::new(&args.bootstrap).with_env(std::env::vars()).with_pairs(&args.kafka).map_err(|e| AppError::Usage(e.to_string()))?;
        let topic: Topic<F> = Topic::named(args.topic.clone().unwrap_or_else(|| self.topic.clone()));
        let group = args.group.clone().unwrap_or_else(|| P::NAME.to_owned());
        if args.rollback {
            let live = rebuild::rollback((self.make)(), store).await?;
            match live {
                Some(v) => println!("live version: {v}"),
                None => println!("live version: none (nothing to roll back to)"),
            }
            return Ok(());
        }
        let until = until(&args)?;
        if args.rebuild || until.is_some() {
            let mut options = rebuild::Options::new(&group);
            options.progress = args.progress;
            options.max_batch = args.max_batch.max(1);
            if let Some(until) = until {
                options.until = until;
            }
            let make = self.make.clone();
            let rebuilt = rebuild::rebuild(&config, &topic, move || make(), store, options, herald_ops::shutdown_signal()).await?;
            if rebuilt.interrupted {
                return Err(AppError::Interrupted { version: rebuilt.version, events: rebuilt.events });
            }
            println!("{}", summary(&rebuilt));
            return Ok(());
        }
        self.serve(args, config, topic, group, store).await
    }

    async fn serve(self, args: Args, config: KafkaConfig, topic: Topic<F>, group: String, store: Arc<dyn Store>) -> Result<(), AppError> {
        // Listening for SIGTERM before the slow start (binding, registering, joining the
        // group): a stop during it is an orderly one.
        let signal = herald_ops::shutdown_signal();
        let metrics = herald_ops::install_metrics().map_err(|e| AppError::Metrics(e.to_string()))?;
        let (status, control) = (StatusHandle::default(), Control::default());
        let mut app = herald_ops::router(metrics, status.clone()).merge(crate::http::router(status.clone(), control.clone()));
        if let Some(routes) = &self.routes {
            app = app.merge(routes(store.clone()));
        }
        let listener = tokio::net::TcpListener::bind(&args.http).await?;
        let bound = listener.local_addr()?;
        println!("http: {bound}");
        let announced = herald_services::announce::Announcement::new(format!("projection-{}", P::NAME), env!("CARGO_PKG_VERSION"))
            .http(Some(bound))
            .consumer_groups([group.clone()])
            .register(&config, &args.registry)
            .await;
        let stop = CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { herald_ops::serve_router(listener, app, async move { stop.cancelled().await }).await }
        });
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                signal.await;
                shutdown.cancel();
            }
        });
        let retry = RetryPolicy { max_attempts: args.max_attempts, initial: Duration::from_millis(50), max: Duration::from_secs(2), ..Default::default() };
        let result = loop {
            let mut builder = Projector::builder(config.clone(), &group, &topic, (self.make)(), store.clone());
            // A projector killed and restarted gets its partitions back after this, not 45 s.
            if config.get("session.timeout.ms").is_none() {
                builder = builder.kafka_property("session.timeout.ms", args.session_timeout.as_millis().to_string());
            }
            let builder = builder
                .max_batch(args.max_batch)
                .retry(retry)
                .handles(status.clone(), control.clone())
                .on_poison(match args.on_poison {
                    PoisonArg::DeadLetter => OnPoison::DeadLetter,
                    PoisonArg::Pause => OnPoison::Pause,
                });
            #[cfg(feature = "crash-points")]
            let builder = match std::env::var("HERALD_PROJECTOR_CRASH_AT") {
                Ok(at) => builder.crash_point(at.parse::<CrashPoint>().map_err(AppError::Usage)?),
                Err(_) => builder,
            };
            let projector = match builder.build().await {
                Ok(p) => p,
                Err(e) => break Err(e.into()),
            };
            let signal = shutdown.clone();
            match projector.run(async move { signal.cancelled().await }).await {
                // A rebuild swapped in another version: continue with it.
                Ok(Stopped::Superseded { live }) => tracing::info!(live, "continuing with the new live version"),
                Ok(_) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        announced.shutdown().await;
        stop.cancel();
        let _ = server.await;
        result
    }
}

/// One line about a finished rebuild (what `--rebuild` prints).
fn summary(rebuilt: &Rebuilt) -> String {
    format!(
        "rebuilt: version {} with {} events in {:.1}s ({:.0} events/s); swapped: {}; previous: {}",
        rebuilt.version,
        rebuilt.events,
        rebuilt.elapsed.as_secs_f64(),
        rebuilt.events as f64 / rebuilt.elapsed.as_secs_f64().max(1e-9),
        rebuilt.swapped,
        rebuilt.previous.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )
}


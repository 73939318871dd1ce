//! Consume events with a typed handler: at least once, in order per order id, with
//! retries, dead letters, `/health` and `/metrics`, and an orderly shutdown.
//!
//! ```sh
//! scripts/kafka start
//! cargo run -p herald-examples --example publish -- 1000
//! cargo run -p herald-examples --example consume        # ctrl-c or SIGTERM to stop
//! curl -s 127.0.0.1:9464/health; curl -s 127.0.0.1:9464/metrics | grep herald_
//! ```
//!
//! The handler keeps a running revenue total. Orders above 1 000 000 cents break a business
//! rule: the handler says so with a permanent error, and the event goes to
//! `shop.orders.dlq` (inspect it with `herald dlq list shop.orders`). Guarantee shown: the
//! process can be stopped at any moment; on restart it continues after the last handled
//! event (offsets are stored only after handling, committed on shutdown).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use herald_bus::{Consumer, Envelope, HandlerError, KafkaConfig};
use herald_shop::{OrderEvent, ORDERS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = KafkaConfig::new(bootstrap).with_env(std::env::vars());
    let metrics = herald_ops::install_metrics()?;

    let revenue = Arc::new(AtomicI64::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let handler = {
        let (revenue, handled) = (revenue.clone(), handled.clone());
        move |event: Envelope<OrderEvent>| {
            let (revenue, handled) = (revenue.clone(), handled.clone());
            async move {
                match &event.event {
                    OrderEvent::Placed(p) if p.total_cents > 1_000_000 => {
                        return Err(HandlerError::permanent_msg(format!("order {} exceeds the credit limit", p.order_id)));
                    }
                    OrderEvent::Placed(p) => revenue.fetch_add(p.total_cents, Ordering::Relaxed),
                    OrderEvent::Cancelled(_) | OrderEvent::Confirmed(_) => 0,
                };
                handled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    };
    let consumer = Consumer::builder(config, "examples-revenue").subscribe(&ORDERS, handler).build().await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
    println!("serving /health and /metrics on http://{}", listener.local_addr()?);
    let ops = tokio::spawn(herald_ops::serve(listener, metrics, consumer.health(), herald_ops::shutdown_signal()));
    consumer.run(herald_ops::shutdown_signal()).await?;
    ops.abort();
    println!("handled {} events, revenue {} cents", handled.load(Ordering::Relaxed), revenue.load(Ordering::Relaxed));
    Ok(())
}


//! Reading the pipeline from outside, over HTTP, as a user would: the order-status view
//! through the gateway (`GET /orders`, `GET /orders/{id}`: query routes the gateway
//! answers with an order-status instance from the service registry) and the saga tracker
//! (`GET /sagas`, `GET /sagas/{id}`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use herald_shop::order_status::OrderStatusRow;
use serde::Deserialize;

/// One saga as the tracker lists it (the fields the demo reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Saga {
    /// Its correlation id.
    pub id: String,
    /// Its order.
    pub subject: String,
    /// `running`, `completed`, `compensated`, `failed`, `stuck`.
    pub state: String,
    /// Why it is failed, stuck or running.
    pub reason: Option<String>,
    /// Events recorded.
    pub events: i64,
}

/// One event of a saga's timeline.
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    /// `ce_type`.
    pub event_type: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_time`, RFC 3339.
    pub time: String,
    /// Topic read from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A saga with its timeline.
#[derive(Debug, Clone, Deserialize)]
pub struct SagaDetail {
    /// The saga.
    #[serde(flatten)]
    pub saga: Saga,
    /// Its events in time order.
    pub timeline: Vec<Step>,
}

/// The gateway's and the tracker's HTTP addresses.
pub struct Watch {
    client: reqwest::Client,
    gateway: String,
    tracker: String,
}

impl Watch {
    /// Reads the view through the gateway at `gateway` and the tracker at `tracker` (base
    /// URLs).
    pub fn new(client: reqwest::Client, gateway: String, tracker: String) -> Self {
        Watch { client, gateway, tracker }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: String) -> anyhow::Result<T> {
        let response = self.client.get(&url).timeout(Duration::from_secs(10)).send().await.with_context(|| format!("GET {url}"))?;
        let response = response.error_for_status().with_context(|| format!("GET {url}"))?;
        response.json().await.with_context(|| format!("GET {url}: unexpected answer"))
    }

    /// Every order in the view, by id.
    pub async fn orders(&self) -> anyhow::Result<HashMap<String, OrderStatusRow>> {
        let rows: Vec<OrderStatusRow> = self.get(format!("{}/orders?limit=1000000", self.gateway)).await?;
        Ok(rows.into_iter().map(|r| (r.order_id.clone(), r)).collect())
    }

    /// One order, as `GET /orders/{id}` answers it.
    pub async fn order(&self, id: &str) -> anyhow::Result<OrderStatusRow> {
        self.get(format!("{}/orders/{id}", self.gateway)).await
    }

    /// Every saga the tracker recorded.
    pub async fn sagas(&self) -> anyhow::Result<Vec<Saga>> {
        self.get(format!("{}/sagas?limit=1000000", self.tracker)).await
    }

    /// One saga with its timeline.
    pub async fn saga(&self, id: &str) -> anyhow::Result<SagaDetail> {
        self.get(format!("{}/sagas/{id}", self.tracker)).await
    }
}

//! The bus consumer's sink: each topic's typed handler, at least once.
//!
//! Records of a partition go to its topic's [`Route`] one at a time; each record is
//! reported finished (and its offset later stored by the runtime) only after the handler
//! returned `Ok`, or the record was skipped by policy, or written to the dead-letter topic.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::record::OwnedRecord;
use super::route::{Attempt, Route};
use crate::dead_letter::Failure;
use crate::runtime::{Delivery, PartitionSink, Progress, Sink};

/// Routes by topic name.
pub(crate) struct Routes {
    pub routes: HashMap<String, Arc<dyn Route>>,
}

impl Sink for Routes {
    type Partition = RoutePartition;

    fn open(&self, topic: &Arc<str>, _partition: i32) -> Option<RoutePartition> {
        let route = self.routes.get(&**topic)?.clone();
        let counter = |outcome: &'static str| metrics::counter!("herald_consumer_events_total", "topic" => topic.to_string(), "outcome" => outcome);
        Some(RoutePartition { route, handled: counter("handled"), skipped: counter("skipped"), dead_lettered: counter("dead_lettered") })
    }
}

/// One partition of a route.
pub(crate) struct RoutePartition {
    route: Arc<dyn Route>,
    handled: metrics::Counter,
    skipped: metrics::Counter,
    dead_lettered: metrics::Counter,
}

#[async_trait]
impl PartitionSink for RoutePartition {
    async fn deliver(&mut self, batch: &[OwnedRecord], attempt: u32, progress: &Progress, cancel: &CancellationToken) -> Delivery {
        for (index, msg) in batch.iter().enumerate() {
            if index > 0 && cancel.is_cancelled() {
                return Delivery::Interrupted;
            }
            match self.route.attempt(msg, if index == 0 { attempt } else { 1 }).await {
                Attempt::Handled => self.handled.increment(1),
                Attempt::Skipped => self.skipped.increment(1),
                Attempt::Failed(failure, class) => return Delivery::Failed { index, failure, class },
            }
            progress.done(msg.offset());
        }
        Delivery::Done
    }

    async fn dead_lettered(&mut self, _record: &OwnedRecord, _failure: &Failure) -> Result<(), Failure> {
        self.dead_lettered.increment(1);
        Ok(())
    }
}

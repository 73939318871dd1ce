//! The publisher's metric handles, registered once per topic.
//!
//! `metrics::counter!("...", "topic" => name)` builds its key (allocating the label) and
//! looks it up in the recorder on every call; a publisher sends many events to few
//! topics, so it keeps the handles. Like every metric handle, they are bound to the
//! recorder installed when they are first used: install the recorder before publishing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Handles for one topic.
pub(crate) struct TopicMetrics {
    pub seconds: metrics::Histogram,
    pub published: metrics::Counter,
    pub failures: metrics::Counter,
}

/// Handles by topic name.
#[derive(Default)]
pub(crate) struct PublishMetrics {
    topics: RwLock<HashMap<String, Arc<TopicMetrics>>>,
}

impl PublishMetrics {
    /// The handles for `topic`, registered on first use.
    pub(crate) fn for_topic(&self, topic: &str) -> Arc<TopicMetrics> {
        if let Some(found) = self.topics.read().unwrap_or_else(|p| p.into_inner()).get(topic) {
            return found.clone();
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| {
                let label = || topic.to_owned();
                Arc::new(TopicMetrics {
                    seconds: metrics::histogram!("herald_publish_seconds", "topic" => label()),
                    published: metrics::counter!("herald_published_total", "topic" => label()),
                    failures: metrics::counter!("herald_publish_failures_total", "topic" => label()),
                })
            })
            .clone()
    }
}

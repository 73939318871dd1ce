//! Topics named by an input (an aggregate's reply topic): whether they exist.
//!
//! A participant may emit to a topic its input names ([`Emitted::exact_topic`]), as an
//! aggregate replies on the topic a command names. On a broker that creates no topic on
//! its own (most managed services), a record for a topic that does not exist cannot be
//! written: the transaction holding it fails and is retried again and again, and every
//! input of the partition waits behind it, one client's mistyped reply topic stalling
//! every aggregate of the partition. The coordinator asks here first and drops such an
//! output with an error log and a metric; the input's other effects commit.
//!
//! A topic found to exist is remembered until a transaction fails (it may have been
//! deleted since: a client that made its own reply topic and went away), then asked about
//! again; one found missing is asked about again after [`RECHECK`], so creating it heals
//! without a restart. A topic is taken as missing only when two answers [`CONFIRM`] apart
//! say so and the broker lists a topic known to exist (the engine's changelog) meanwhile:
//! a broker just restarted, or a topic just made, may list a topic with no partitions for
//! a moment, and a reply dropped on such an answer is a client left waiting. When the
//! broker cannot say, the output is sent as before (and its failure retried). Not handled: a topic that exists but that the engine may not write
//! (an ACL) fails every attempt, the health check reporting the error.
//!
//! [`Emitted::exact_topic`]: crate::emit::Emitted::exact_topic

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_bus::admin::TopicState;

use super::producer::TxnProducer;

/// How long a topic found missing is taken as missing before asking again.
pub(crate) const RECHECK: Duration = Duration::from_secs(10);

/// How long after a first answer that a topic is missing the broker is asked again.
pub(crate) const CONFIRM: Duration = Duration::from_millis(500);

/// Most topics remembered as missing (inputs may name any number of them).
const MISSING_KEPT: usize = 10_000;

/// What is known of the topics inputs named.
#[derive(Debug, Default)]
pub(crate) struct NamedTopics {
    known: HashMap<String, Known>,
}

#[derive(Debug, Clone, Copy)]
enum Known {
    Exists,
    Missing(Instant),
}

impl NamedTopics {
    /// False when `topic` does not exist (asking the broker through `producer` unless it
    /// is known); true when it does or the broker could not say, or did not list `known`
    /// (a topic that exists) either.
    pub(crate) async fn exists(&mut self, producer: &TxnProducer, topic: &str, known: &str) -> bool {
        match self.known.get(topic) {
            Some(Known::Exists) => return true,
            Some(Known::Missing(at)) if at.elapsed() < RECHECK => return false,
            _ => {}
        }
        let mut state = producer.topic_state(topic).await;
        if state == TopicState::Missing {
            tokio::time::sleep(CONFIRM).await;
            state = producer.topic_state(topic).await;
            if state == TopicState::Missing && producer.topic_state(known).await != TopicState::Exists {
                state = TopicState::Unknown;
            }
        }
        match state {
            TopicState::Exists => {
                self.known.insert(topic.to_owned(), Known::Exists);
                true
            }
            TopicState::Missing => {
                if self.known.len() >= MISSING_KEPT {
                    self.known.retain(|_, k| matches!(k, Known::Exists));
                }
                self.known.insert(topic.to_owned(), Known::Missing(Instant::now()));
                false
            }
            TopicState::Unknown => true,
        }
    }

    /// A transaction failed: the topics known to exist are asked about again (one may be
    /// gone, and its outputs failed the transaction; remembered, they would fail every
    /// attempt until a restart).
    pub(crate) fn doubt(&mut self) {
        self.known.retain(|_, k| matches!(k, Known::Missing(_)));
    }
}

//! The end of a run: the outcome table (counts per outcome against the plan, latency from
//! request to terminal event), throughput, the tracker's verdicts, one compensated saga's
//! timeline, and the same as JSON (`--summary`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use herald_shop::order_status::OrderStatusRow;
use serde::Serialize;

use crate::plan::{Expect, Planned};
use crate::watch::{Saga, SagaDetail};

/// What a run ended with, as `--summary` writes it.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The run's id.
    pub run: String,
    /// Its topic prefix.
    pub topic_prefix: String,
    /// Its folder.
    pub run_dir: String,
    /// `gateway` or `direct`.
    pub ingress: String,
    /// Orders placed.
    pub orders: usize,
    /// Orders the files imply per outcome label.
    pub expected: BTreeMap<String, usize>,
    /// Orders the view shows per outcome label (`placed` for undecided ones).
    pub got: BTreeMap<String, usize>,
    /// Orders whose outcome is not the planned one (`id: expected -> got`).
    pub mismatched: Vec<String>,
    /// Sagas per tracker state.
    pub sagas: BTreeMap<String, usize>,
    /// Sagas the tracker found failed (guarantee violated), with the reason.
    pub failed_sagas: Vec<String>,
    /// Every order decided and every saga completed or compensated within the deadline.
    pub settled: bool,
    /// Orders per second from the first request to the last terminal event of the first
    /// phase.
    pub throughput_per_s: f64,
    /// Latency from request to terminal event over all orders, p50, in ms.
    pub p50_ms: Option<i64>,
    /// The same, p99.
    pub p99_ms: Option<i64>,
}

/// Nearest-rank percentile `p` (0..=1) of `values` (sorted here).
pub fn percentile(values: &mut [i64], p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// The request-to-terminal-event latency of each decided order of `planned` (ms), by the
/// view's outcome label.
pub fn latencies(planned: &[Planned], sent_ms: &HashMap<String, i64>, view: &HashMap<String, OrderStatusRow>) -> BTreeMap<String, Vec<i64>> {
    let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in planned {
        let id = &p.order.order_id;
        if let (Some(row), Some(sent)) = (view.get(id), sent_ms.get(id))
            && let Some(decided) = row.decided_ms
        {
            by.entry(row.outcome()).or_default().push(decided - sent);
        }
    }
    by
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The outcome table.
pub fn table(summary: &Summary, latencies: &BTreeMap<String, Vec<i64>>) -> String {
    let mut out = format!("{:<30} {:>8} {:>8} {:>8} {:>8}\n", "outcome", "expected", "orders", "p50 ms", "p99 ms");
    let mut labels: Vec<String> = Expect::ALL.iter().map(|e| e.label().to_owned()).collect();
    labels.extend(summary.got.keys().filter(|k| !labels.contains(k)).cloned().collect::<Vec<_>>());
    for label in labels {
        let mut l = latencies.get(&label).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<30} {:>8} {:>8} {:>8} {:>8}",
            label,
            summary.expected.get(&label).copied().unwrap_or(0),
            summary.got.get(&label).copied().unwrap_or(0),
            ms(percentile(&mut l, 0.5)),
            ms(percentile(&mut l, 0.99))
        );
    }
    let _ = writeln!(out, "{:<30} {:>8} {:>8} {:>8} {:>8}", "all", summary.orders, summary.got.values().sum::<usize>(), ms(summary.p50_ms), ms(summary.p99_ms));
    out
}

/// Counts of `sagas` (those of this run's orders) per state, and the failed ones.
pub fn saga_states(sagas: &[Saga]) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut states: BTreeMap<String, usize> = ["running", "completed", "compensated", "failed", "stuck"].iter().map(|s| ((*s).to_owned(), 0)).collect();
    let mut failed = Vec::new();
    for s in sagas {
        *states.entry(s.state.clone()).or_default() += 1;
        if s.state == "failed" {
            failed.push(format!("{} (order {}): {}", s.id, s.subject, s.reason.as_deref().unwrap_or("")));
        }
    }
    (states, failed)
}

/// A saga's timeline, times relative to its first event.
pub fn timeline(detail: &SagaDetail, outcome: &str) -> String {
    let start = detail.timeline.first().and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.time).ok());
    let mut out = format!("saga {} (order {}, {}, tracker: {}), {} events:\n", detail.saga.id, detail.saga.subject, outcome, detail.saga.state, detail.saga.events);
    for step in &detail.timeline {
        let at = chrono::DateTime::parse_from_rfc3339(&step.time).ok();
        let offset = match (start, at) {
            (Some(s), Some(a)) => format!("+{} ms", (a - s).num_milliseconds()),
            _ => step.time.clone(),
        };
        let ty = step.event_type.rsplit('.').next().unwrap_or(&step.event_type);
        let _ = writeln!(out, "  {offset:>10}  {ty:<16} {:<31} {}/{}@{}", step.source, step.topic, step.partition, step.offset);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50));
        assert_eq!(percentile(&mut v, 0.99), Some(99));
        assert_eq!(percentile(&mut [7], 0.99), Some(7));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}

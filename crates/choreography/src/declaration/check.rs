//! The static check of a choreography, from its participants' declarations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Declaration, DEADLINE};

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An emitted type has no schema in its topic's family.
    NoSchema,
    /// An emitted type is neither consumed (on its topic) by any participant nor terminal.
    NoConsumer,
    /// An output names a cause the participant does not consume.
    UnknownCause(String),
    /// A step that a later failure can strand has no compensation.
    Uncompensated,
    /// A compensation names a step no participant emits as a step.
    UnknownStep(String),
    /// Reactions (compensations aside) form a cycle: each type causes the next, the last
    /// causes the first.
    Cycle(Vec<String>),
    /// Two participants share a name.
    DuplicateName,
    /// A topic the runtime derives from the participant's name (changelog, repartition) is
    /// not a valid Kafka topic name.
    InvalidTopic(String),
}

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The participant.
    pub participant: String,
    /// The event type concerned (empty for participant-wide problems).
    pub event_type: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, t) = (&self.participant, &self.event_type);
        match &self.problem {
            Problem::NoSchema => write!(f, "{p}: emits {t}, which has no schema in its topic's family"),
            Problem::NoConsumer => write!(f, "{p}: emits {t}, which no participant consumes and which is not terminal"),
            Problem::UnknownCause(c) => write!(f, "{p}: emits {t} after {c}, which it does not consume"),
            Problem::Uncompensated => write!(f, "{p}: step {t} can be stranded by a later failure and nothing compensates it"),
            Problem::UnknownStep(s) => write!(f, "{p}: {t} compensates {s}, which no participant emits as a step"),
            Problem::Cycle(path) => write!(f, "{p}: reaction cycle outside compensation: {} -> {}", path.join(" -> "), path.first().map_or("", String::as_str)),
            Problem::DuplicateName => write!(f, "{p}: two participants have this name"),
            Problem::InvalidTopic(why) => write!(f, "{p}: {why}"),
        }
    }
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Every problem found; empty when the choreography passed.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return writeln!(f, "saga check: ok");
        }
        writeln!(f, "saga check: {} problem(s)", self.findings.len())?;
        self.findings.iter().try_for_each(|finding| writeln!(f, "  {finding}"))
    }
}

/// Checks a choreography from its declarations:
/// - every emitted event has a schema, and a consumer on its topic or is terminal;
/// - every cause an output names is consumed by its participant;
/// - every step that a later failure can strand has a compensation. A step can be stranded
///   when a failure is reachable from it through reactions, or when a deadline can fail
///   the saga (a timeout strikes after any step);
/// - reactions form no cycle, compensations aside (they may lead back upstream);
/// - participants have distinct names that make valid changelog and repartition topics.
///
/// ```
/// use herald_choreography::declaration::{check, Declaration};
/// let report = check(&[]);
/// assert!(report.is_ok(), "{report}");
/// ```
pub fn check(declarations: &[Declaration]) -> Report {
    let mut findings = Vec::new();
    let mut names = BTreeSet::new();
    for d in declarations {
        if !names.insert(d.name.as_str()) {
            findings.push(Finding { participant: d.name.clone(), event_type: String::new(), problem: Problem::DuplicateName });
        }
        let derived = std::iter::once(d.changelog_topic()).chain(d.consumes.iter().filter_map(|c| d.repartition_topic(&c.topic)));
        for invalid in derived.filter_map(|topic| herald_bus::topic::validate_name(&topic).err()) {
            findings.push(Finding { participant: d.name.clone(), event_type: String::new(), problem: Problem::InvalidTopic(invalid) });
        }
    }
    let steps: BTreeSet<&str> = declarations.iter().flat_map(|d| &d.emits).filter(|o| o.is_step()).map(|o| o.type_name()).collect();
    let compensated: BTreeSet<&str> = declarations.iter().flat_map(|d| &d.emits).filter_map(|o| o.compensated_step()).collect();
    let failures: BTreeSet<&str> = declarations.iter().flat_map(|d| &d.emits).filter(|o| o.is_failure()).map(|o| o.type_name()).collect();
    let deadline_failure = declarations.iter().flat_map(|d| &d.emits).any(|o| o.is_failure() && o.causes().iter().any(|c| c == DEADLINE));
    let graph = forward_graph(declarations);

    for d in declarations {
        for o in &d.emits {
            let finding = |problem| Finding { participant: d.name.clone(), event_type: o.type_name().to_owned(), problem };
            if !o.has_schema() {
                findings.push(finding(Problem::NoSchema));
            }
            if !o.is_terminal() && !declarations.iter().any(|c| c.consumes_on(o.topic(), o.type_name())) {
                findings.push(finding(Problem::NoConsumer));
            }
            for cause in o.causes().iter().filter(|c| !d.consumes_type(c)) {
                findings.push(finding(Problem::UnknownCause(cause.clone())));
            }
            if let Some(step) = o.compensated_step().filter(|s| !steps.contains(s)) {
                findings.push(finding(Problem::UnknownStep(step.to_owned())));
            }
            if o.is_step() && !compensated.contains(o.type_name()) {
                let strandable = deadline_failure || reachable(&graph, o.type_name()).iter().any(|t| failures.contains(t));
                if strandable {
                    findings.push(finding(Problem::Uncompensated));
                }
            }
        }
    }
    for cycle in cycles(&graph) {
        let participant = declarations.iter().find(|d| d.emits.iter().any(|o| o.type_name() == cycle[0])).map(|d| d.name.clone()).unwrap_or_default();
        findings.push(Finding { participant, event_type: cycle[0].to_owned(), problem: Problem::Cycle(cycle.iter().map(|s| (*s).to_owned()).collect()) });
    }
    Report { findings }
}

/// Edges cause type -> emitted type, compensations and deadlines left out.
fn forward_graph(declarations: &[Declaration]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in declarations.iter().flat_map(|d| &d.emits).filter(|o| o.compensated_step().is_none()) {
        for cause in o.causes().iter().filter(|c| *c != DEADLINE) {
            graph.entry(cause.as_str()).or_default().insert(o.type_name());
        }
    }
    graph
}

fn reachable<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, from: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        for next in graph.get(node).into_iter().flatten() {
            if seen.insert(*next) {
                stack.push(next);
            }
        }
    }
    seen
}

/// One cycle per back edge found by a depth-first search, each reported once.
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    fn visit<'a>(node: &'a str, graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>, found: &mut Vec<Vec<&'a str>>) {
        if let Some(start) = path.iter().position(|n| *n == node) {
            found.push(path[start..].to_vec());
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
        done.insert(node);
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::{Consumed, Output};
    use crate::input::KeyKind;

    fn participant(name: &str, consumes: &[(&str, &[&'static str])], deadlines: bool, emits: Vec<Output>) -> Declaration {
        Declaration {
            name: name.into(),
            consumes: consumes.iter().map(|(topic, types)| Consumed { topic: (*topic).into(), types: types.to_vec(), key: KeyKind::Subject }).collect(),
            deadlines,
            emits,
        }
    }

    fn problems(report: &Report) -> Vec<(String, Problem)> {
        report.findings.iter().map(|f| (f.event_type.clone(), f.problem.clone())).collect()
    }

    /// a: Placed -> Reserved (step); b: Reserved -> Declined (failure); a: Declined -> Released (undoes Reserved).
    fn good() -> Vec<Declaration> {
        vec![
            participant("a", &[("orders", &["Placed"]), ("pay", &["Declined"])], false, vec![
                Output::untyped("stock", "Reserved", true).after(&["Placed"]).step(),
                Output::untyped("stock", "Released", true).after(&["Declined"]).compensates("Reserved").terminal(),
            ]),
            participant("b", &[("stock", &["Reserved", "Released"])], false, vec![Output::untyped("pay", "Declined", true).after(&["Reserved"]).failure()]),
        ]
    }

    #[test]
    fn a_sound_choreography_passes() {
        let report = check(&good());
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn a_step_without_compensation_is_found() {
        let mut saga = good();
        saga[0].emits.pop();
        saga[1].consumes[0].types = vec!["Reserved"];
        assert_eq!(problems(&check(&saga)), [("Reserved".to_owned(), Problem::Uncompensated)]);
    }

    #[test]
    fn a_timeout_strands_every_step() {
        let saga = vec![
            participant("a", &[("orders", &["Placed"])], false, vec![Output::untyped("stock", "Reserved", true).after(&["Placed"]).step().terminal()]),
            participant("t", &[("orders", &["Placed"])], true, vec![Output::untyped("orders", "TimedOut", true).after(&[DEADLINE]).failure().terminal()]),
        ];
        assert_eq!(problems(&check(&saga)), [("Reserved".to_owned(), Problem::Uncompensated)]);
    }

    #[test]
    fn missing_consumers_schemas_causes_and_steps_are_found() {
        let saga = vec![participant("a", &[("orders", &["Placed"])], false, vec![
            Output::untyped("x", "Nobody", false).after(&["Placed", "Elsewhere"]),
            Output::untyped("x", "Undo", true).after(&["Placed"]).compensates("Ghost").terminal(),
        ])];
        let found = problems(&check(&saga));
        assert!(found.contains(&("Nobody".into(), Problem::NoSchema)), "{found:?}");
        assert!(found.contains(&("Nobody".into(), Problem::NoConsumer)), "{found:?}");
        assert!(found.contains(&("Nobody".into(), Problem::UnknownCause("Elsewhere".into()))), "{found:?}");
        assert!(found.contains(&("Undo".into(), Problem::UnknownStep("Ghost".into()))), "{found:?}");
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn a_reaction_cycle_is_found_but_compensations_may_loop_back() {
        let saga = vec![
            participant("a", &[("t", &["Ping"])], false, vec![Output::untyped("t", "Pong", true).after(&["Ping"])]),
            participant("b", &[("t", &["Pong"])], false, vec![Output::untyped("t", "Ping", true).after(&["Pong"])]),
        ];
        let report = check(&saga);
        assert_eq!(report.findings.len(), 1, "{report}");
        assert!(matches!(&report.findings[0].problem, Problem::Cycle(path) if path.len() == 2), "{report}");
        assert!(report.to_string().contains("reaction cycle"), "{report}");
        assert!(check(&good()).is_ok(), "Released (a compensation) after Declined after Reserved is not a cycle");
    }

    #[test]
    fn duplicate_and_invalid_names_are_found() {
        let mut saga = good();
        saga[1].name = "a".into();
        assert!(problems(&check(&saga)).contains(&(String::new(), Problem::DuplicateName)));
        saga[1].name = "my_participant".into();
        let found = problems(&check(&saga));
        assert!(matches!(found.as_slice(), [(_, Problem::InvalidTopic(why))] if why.contains("mixes '.' and '_'")), "{found:?}");
    }

    #[test]
    fn the_diagram_draws_topics_steps_compensations_and_repartitions() {
        let mut saga = good();
        saga[1].consumes[0].key = KeyKind::By("sku");
        let mermaid = crate::declaration::diagram(&saga);
        assert!(mermaid.contains("p_a([\"a\"])"), "{mermaid}");
        assert!(mermaid.contains("t_stock[(\"stock\")]"), "{mermaid}");
        assert!(mermaid.contains("p_a -- \"Reserved\" --> t_stock"), "{mermaid}");
        assert!(mermaid.contains("p_a -. \"Released (undoes Reserved)\" .-> t_stock"), "{mermaid}");
        assert!(mermaid.contains("t_stock -- \"repartition by sku\" --> p_b"), "{mermaid}");
    }
}

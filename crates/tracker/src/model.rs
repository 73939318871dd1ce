//! [`SagaModel`]: what each event type means to a saga, read from its participants'
//! declarations (the same ones `herald saga check` checks), never from strings in the
//! tracker.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use herald_choreography::declaration::{Declaration, DEADLINE};

/// What an event type is to the saga, from the declared roles of its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A step that holds something a later failure must undo (declared `.step()`).
    Step,
    /// It undoes the step of this type (declared `.compensates(step)`).
    Compensation(String),
    /// It says the saga failed but does not end it (declared `.failure()`, not terminal):
    /// a failure outcome should follow.
    Failure,
    /// It ends the saga successfully (declared `.terminal()`, neither failure nor
    /// compensation).
    Success,
    /// It ends the saga as failed (declared `.failure().terminal()`): every step that ran
    /// must be compensated.
    FailureOutcome,
    /// Anything else: the event that starts the saga (published by a client), commands and
    /// replies along the way.
    Progress,
}

impl Role {
    /// Whether the event decides the saga's outcome (success or failure outcome).
    pub fn is_outcome(&self) -> bool {
        matches!(self, Role::Success | Role::FailureOutcome)
    }
}

/// The roles of a saga's event types on the topics a tracker reads.
///
/// Only outputs on `topics` (the saga's public topics) count: a step on an internal topic
/// (a per-SKU reservation on a command topic) is not something a tracker of the public
/// topics can see, so it neither requires nor expects it.
///
/// ```
/// use herald_tracker::{Role, SagaModel};
/// let model = SagaModel::new("shop", &herald_shop::saga::declarations(), &["shop.orders", "shop.inventory", "shop.payments"]);
/// assert_eq!(model.role("shop.inventory.StockReserved"), Role::Step);
/// assert_eq!(model.role("shop.inventory.StockReleased"), Role::Compensation("shop.inventory.StockReserved".into()));
/// assert_eq!(model.role("shop.orders.OrderConfirmed"), Role::Success);
/// assert_eq!(model.role("shop.orders.OrderCancelled"), Role::FailureOutcome);
/// assert_eq!(model.role("shop.orders.OrderPlaced"), Role::Progress);
/// // A confirmed order must have reserved its stock and taken the payment.
/// assert_eq!(model.required_for_success().iter().map(String::as_str).collect::<Vec<_>>(),
///            ["shop.inventory.StockReserved", "shop.payments.PaymentCharged"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaModel {
    name: String,
    topics: Vec<String>,
    roles: BTreeMap<String, Role>,
    required: BTreeSet<String>,
}

impl SagaModel {
    /// The model of saga `name` from its participants' declarations, as seen on `topics`.
    pub fn new(name: &str, declarations: &[Declaration], topics: &[&str]) -> Self {
        let tracked = |topic: &str| topics.contains(&topic);
        let mut roles = BTreeMap::new();
        // Every declared cause of each type, across participants (the reaction graph).
        let mut causes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut steps = BTreeSet::new();
        for output in declarations.iter().flat_map(|d| &d.emits) {
            causes.entry(output.type_name()).or_default().extend(output.causes().iter().map(String::as_str));
            if !tracked(output.topic()) {
                continue;
            }
            let role = if let Some(step) = output.compensated_step() {
                Role::Compensation(step.to_owned())
            } else if output.is_step() {
                steps.insert(output.type_name());
                Role::Step
            } else if output.is_failure() && output.is_terminal() {
                Role::FailureOutcome
            } else if output.is_failure() {
                Role::Failure
            } else if output.is_terminal() {
                Role::Success
            } else {
                Role::Progress
            };
            roles.insert(output.type_name().to_owned(), role);
        }
        // The steps a success needs: the tracked steps among the success outcome's causes,
        // transitively (a confirmation needs the charge, which needs the reservation).
        let mut required = BTreeSet::new();
        let mut queue: VecDeque<&str> = roles.iter().filter(|(_, r)| **r == Role::Success).map(|(t, _)| t.as_str()).collect();
        let mut seen: BTreeSet<&str> = queue.iter().copied().collect();
        while let Some(t) = queue.pop_front() {
            for &cause in causes.get(t).into_iter().flatten() {
                if cause != DEADLINE && seen.insert(cause) {
                    if steps.contains(cause) {
                        required.insert(cause.to_owned());
                    }
                    queue.push_back(cause);
                }
            }
        }
        SagaModel { name: name.to_owned(), topics: topics.iter().map(|t| (*t).to_owned()).collect(), roles, required }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The (declared) topics the tracker reads.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The role of event type `type_name` ([`Role::Progress`] for undeclared types).
    pub fn role(&self, type_name: &str) -> Role {
        self.roles.get(type_name).cloned().unwrap_or(Role::Progress)
    }

    /// The event types that end the saga (success and failure outcomes).
    pub fn outcomes(&self) -> Vec<&str> {
        self.roles.iter().filter(|(_, r)| r.is_outcome()).map(|(t, _)| t.as_str()).collect()
    }

    /// The compensation type of step `step`, if declared.
    pub fn compensation_of(&self, step: &str) -> Option<&str> {
        self.roles.iter().find(|(_, r)| matches!(r, Role::Compensation(s) if s == step)).map(|(t, _)| t.as_str())
    }

    /// The steps a successful saga must have run.
    pub fn required_for_success(&self) -> &BTreeSet<String> {
        &self.required
    }
}

//! The engine's deadlines by due time, so that a timer tick costs what is due, not what
//! is stored.
//!
//! Each tick used to look at every slot of every owned partition for due deadlines: with a
//! million keys (every order a saga ever saw, its state kept) that is a million slots
//! looked at twenty times a second. The index holds one entry per due time of each key's
//! deadlines, (due time, partition, key), and a tick takes the entries due. Every change
//! to a slot's deadlines (a reaction, a deadline fired, a rewind, a restore) updates it
//! from the due times before and after ([`DueIndex::update`]), so a deadline set again on
//! every input (an inactivity timeout) keeps one entry, not one per input. An entry whose
//! deadline is gone all the same (taken by a firing of the same key) finds nothing due
//! when its time comes, and costs one lookup.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::slot::Slot;

/// One deadline's entry: when it is due, its partition, its key.
pub(crate) type Entry = (DateTime<Utc>, i32, String);

/// The due times of `slot`'s deadlines, in the order they were set.
pub(crate) fn due_times<S>(slot: &Slot<S>) -> Vec<DateTime<Utc>> {
    slot.deadlines().iter().map(|pending| pending.deadline.at).collect()
}

/// Moves the entries of `partition` due later than `after` and at `bound` from `entries`
/// to `due`, in due order.
fn take(entries: &mut BTreeSet<(DateTime<Utc>, String)>, partition: i32, after: Option<DateTime<Utc>>, bound: DateTime<Utc>, due: &mut Vec<Entry>) {
    let taken: Vec<(DateTime<Utc>, String)> = entries.iter().skip_while(|(at, _)| after.is_some_and(|after| *at <= after)).take_while(|(at, _)| *at <= bound).cloned().collect();
    for entry in taken {
        entries.remove(&entry);
        due.push((entry.0, partition, entry.1));
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    /// Per partition, (due time, key) of each deadline set.
    partitions: HashMap<i32, BTreeSet<(DateTime<Utc>, String)>>,
}

impl DueIndex {
    /// A slot's deadlines changed: `before` are their due times before the change
    /// ([`due_times`]), `after` the slot now (`None`: gone).
    pub(crate) fn update<S>(&mut self, partition: i32, key: &str, before: &[DateTime<Utc>], after: Option<&Slot<S>>) {
        let after = after.map(due_times).unwrap_or_default();
        if before.is_empty() && after.is_empty() {
            return;
        }
        let entries = self.partitions.entry(partition).or_default();
        for at in before.iter().filter(|at| !after.contains(at)) {
            entries.remove(&(*at, key.to_owned()));
        }
        // Every time still there, not only the new ones: a tick may have taken the entry
        // of a time two deadlines share, firing one of them.
        for at in after {
            entries.insert((at, key.to_owned()));
        }
    }

    /// Indexes every deadline of a partition's `slots` (restored).
    pub(crate) fn add_all<'a, S: 'a>(&mut self, partition: i32, slots: impl IntoIterator<Item = (&'a String, &'a Slot<S>)>) {
        for (key, slot) in slots {
            self.update(partition, key, &[], Some(slot));
        }
    }

    /// Takes the entries due at `now`, in due order, but for partitions `held` says to
    /// leave alone.
    pub(crate) fn take_due(&mut self, now: DateTime<Utc>, held: impl Fn(i32) -> bool) -> Vec<Entry> {
        let mut due = Vec::new();
        for (partition, entries) in &mut self.partitions {
            if !held(*partition) {
                take(entries, *partition, None, now, &mut due);
            }
        }
        due.sort();
        due
    }

    /// Takes the entries of `partition` due later than `after` and at `bound`, in due
    /// order.
    pub(crate) fn take_due_in(&mut self, partition: i32, after: Option<DateTime<Utc>>, bound: DateTime<Utc>) -> Vec<Entry> {
        let mut due = Vec::new();
        if let Some(entries) = self.partitions.get_mut(&partition) {
            take(entries, partition, after, bound, &mut due);
        }
        due
    }

    /// Whether `partition` has an entry (stale ones included).
    pub(crate) fn has_any(&self, partition: i32) -> bool {
        self.partitions.get(&partition).is_some_and(|entries| !entries.is_empty())
    }

    /// Puts back entries taken but not fired (a failure stopped the firing).
    pub(crate) fn put_back(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for (at, partition, key) in entries {
            self.partitions.entry(partition).or_default().insert((at, key));
        }
    }

    /// Drops the entries of `partition` (no longer owned, or restored anew).
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// How many entries it holds (stale ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.partitions.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::{Deadline, Pending};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    fn slot(due: &[i64]) -> Slot<()> {
        let pending = due.iter().enumerate().map(|(i, secs)| Pending { deadline: Deadline::at(format!("d{i}"), at(*secs)), correlation_id: String::new(), set_by: uuid::Uuid::nil() }).collect();
        Slot::from_parts((), pending, false)
    }

    #[test]
    fn a_deadline_set_again_keeps_one_entry_and_a_cancelled_one_none() {
        let mut index = DueIndex::default();
        let mut before = Vec::new();
        for secs in 1..=100 {
            let now = slot(&[secs]);
            index.update(0, "a", &before, Some(&now));
            before = due_times(&now);
        }
        assert_eq!(index.len(), 1, "reset on every input: one entry");
        index.update(0, "a", &before, Some(&slot(&[])));
        assert_eq!(index.len(), 0, "cancelled");
        index.update(0, "b", &[], Some(&slot(&[5, 5, 7])));
        index.update(0, "b", &[at(5), at(5), at(7)], Some(&slot(&[5])));
        assert_eq!(index.take_due(at(10), |_| false), [(at(5), 0, "b".to_owned())], "one of the two at 5 left: its entry stays");
        // Two deadlines at 5, their entry taken by a tick, one fired: the other keeps one.
        index.update(0, "d", &[], Some(&slot(&[5, 5])));
        assert_eq!(index.take_due(at(10), |_| false).len(), 1);
        index.update(0, "d", &[at(5), at(5)], Some(&slot(&[5])));
        assert_eq!(index.take_due(at(10), |_| false), [(at(5), 0, "d".to_owned())], "the one left is indexed again");
        index.update(0, "c", &[], Some(&slot(&[3])));
        index.update(0, "c", &[at(3)], None::<&Slot<()>>);
        assert_eq!(index.len(), 0, "a slot gone takes its entries");
    }

    #[test]
    fn a_tick_takes_what_is_due_in_order_and_leaves_the_rest_and_held_partitions() {
        let mut index = DueIndex::default();
        let restored = [("a".to_owned(), slot(&[30, 10]))];
        index.add_all(0, restored.iter().map(|(key, slot)| (key, slot)));
        index.update(1, "b", &[], Some(&slot(&[20])));
        index.update(2, "c", &[], Some(&slot(&[5])));
        // Indexed again after another reaction: one entry per deadline still.
        index.update(0, "a", &[at(30), at(10)], Some(&slot(&[30, 10])));
        assert_eq!(index.len(), 4);
        let due: Vec<_> = index.take_due(at(25), |p| p == 2).into_iter().map(|(at, p, key)| (at.timestamp(), p, key)).collect();
        assert_eq!(due, [(10, 0, "a".to_owned()), (20, 1, "b".to_owned())]);
        assert_eq!(index.len(), 2, "a's later deadline and held c's stay");
        assert_eq!(index.take_due_in(2, None, at(25)), [(at(5), 2, "c".to_owned())], "a held partition's entries, taken on their own");
        assert!(!index.has_any(2));
        index.update(2, "c", &[], Some(&slot(&[5])));
        index.forget(2);
        assert!(index.take_due(at(25), |_| false).is_empty());
        index.put_back([(at(1), 0, "a".to_owned())]);
        assert_eq!(index.take_due(at(100), |_| false).len(), 2);
    }

    #[test]
    fn a_partition_gives_what_is_due_after_a_time_and_keeps_the_earlier() {
        let mut index = DueIndex::default();
        index.update(0, "a", &[], Some(&slot(&[5, 10, 20])));
        index.update(0, "b", &[], Some(&slot(&[10])));
        let due: Vec<_> = index.take_due_in(0, Some(at(5)), at(15)).into_iter().map(|(at, _, key)| (at.timestamp(), key)).collect();
        assert_eq!(due, [(10, "a".to_owned()), (10, "b".to_owned())], "later than 5, at 15 the latest");
        assert_eq!(index.take_due_in(0, None, at(100)).len(), 2, "5 and 20 stay");
    }
}

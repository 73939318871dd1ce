//! The engine's deadlines by due time, so that a timer tick costs what is due, not what
//! is stored.
//!
//! Each tick used to look at every slot of every owned partition for due deadlines: with a
//! million keys (every order a saga ever saw, its state kept) that is a million slots
//! looked at twenty times a second. The index holds one entry per deadline set, (due
//! time, partition, key), and a tick takes the entries due. Entries are added whenever a
//! slot may have gained a deadline (a reaction, a restore, a rewind) and never removed
//! when one is cancelled or fired otherwise: such an entry is *stale*, and firing it
//! finds nothing due, which costs one lookup once its time comes.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::slot::Slot;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    entries: BTreeSet<(DateTime<Utc>, i32, String)>,
}

impl DueIndex {
    /// Indexes the deadlines `slot` (of `key`, in `partition`) holds now.
    pub(crate) fn add<S>(&mut self, partition: i32, key: &str, slot: &Slot<S>) {
        for pending in slot.deadlines() {
            self.entries.insert((pending.deadline.at, partition, key.to_owned()));
        }
    }

    /// Indexes every deadline of a partition's `slots` (restored).
    pub(crate) fn add_all<'a, S: 'a>(&mut self, partition: i32, slots: impl IntoIterator<Item = (&'a String, &'a Slot<S>)>) {
        for (key, slot) in slots {
            self.add(partition, key, slot);
        }
    }

    /// Takes the entries due at `now` (in due order), but for partitions `held` says to
    /// leave alone, whose entries stay.
    pub(crate) fn take_due(&mut self, now: DateTime<Utc>, held: impl Fn(i32) -> bool) -> Vec<(DateTime<Utc>, i32, String)> {
        let mut due = Vec::new();
        let mut kept = Vec::new();
        while self.entries.first().is_some_and(|(at, _, _)| *at <= now) {
            let Some(entry) = self.entries.pop_first() else { break };
            if held(entry.1) {
                kept.push(entry);
            } else {
                due.push(entry);
            }
        }
        self.entries.extend(kept);
        due
    }

    /// Puts back entries taken but not fired (a failure stopped the tick).
    pub(crate) fn put_back(&mut self, entries: impl IntoIterator<Item = (DateTime<Utc>, i32, String)>) {
        self.entries.extend(entries);
    }

    /// Drops the entries of `partition` (no longer owned).
    pub(crate) fn forget(&mut self, partition: i32) {
        self.entries.retain(|(_, p, _)| *p != partition);
    }

    /// How many entries it holds (stale ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
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
    fn a_tick_takes_what_is_due_in_order_and_leaves_the_rest_and_held_partitions() {
        let mut index = DueIndex::default();
        index.add(0, "a", &slot(&[30, 10]));
        index.add(1, "b", &slot(&[20]));
        index.add(2, "c", &slot(&[5]));
        // Indexed again after another reaction: one entry per deadline still.
        index.add(0, "a", &slot(&[30, 10]));
        assert_eq!(index.len(), 4);
        let due: Vec<_> = index.take_due(at(25), |p| p == 2).into_iter().map(|(at, p, key)| (at.timestamp(), p, key)).collect();
        assert_eq!(due, [(10, 0, "a".to_owned()), (20, 1, "b".to_owned())]);
        assert_eq!(index.len(), 2, "a's later deadline and held c's stay");
        index.forget(2);
        assert!(index.take_due(at(25), |_| false).is_empty());
        index.put_back([(at(1), 0, "a".to_owned())]);
        assert_eq!(index.take_due(at(100), |_| false).len(), 2);
    }
}

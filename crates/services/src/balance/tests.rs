use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn instances(ids: &[&str]) -> Vec<Instance> {
    ids.iter().map(|id| Instance::new("orders", *id, format!("http://{id}"), "1").expect("valid")).collect()
}

fn counts(balancer: &Balancer, live: &[Instance], n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let lease = balancer.pick(live, None).expect("instances");
        *counts.entry(lease.instance().instance.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_is_fair() {
    let live = instances(&["a", "b", "c"]);
    let b = Balancer::new(Strategy::RoundRobin);
    let c = counts(&b, &live, 300);
    assert_eq!(c.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
    assert!(b.pick(&[], None).is_none());
}

#[test]
fn least_outstanding_avoids_busy_instances_and_leases_count_until_dropped() {
    let live = instances(&["a", "b", "c"]);
    let b = Balancer::new(Strategy::LeastOutstanding);
    // Three slow requests hold one lease on each; two more on whichever came first.
    let held: Vec<Lease> = (0..3).map(|_| b.pick(&live, None).expect("instances")).collect();
    assert!(live.iter().all(|i| b.in_flight(&i.key()) == 1));
    let first = held[0].instance().key();
    let (_kept, released): (Vec<Lease>, Vec<Lease>) = held.into_iter().partition(|l| l.instance().key() == first);
    drop(released);
    // Now `first` has 1 in flight, the others 0: the next two go to the others.
    let mut extra = Vec::new();
    for _ in 0..2 {
        let l = b.pick(&live, None).expect("instances");
        assert_ne!(l.instance().key(), first);
        extra.push(l);
    }
    // All at 1: the next three spread one each.
    extra.extend((0..3).map(|_| b.pick(&live, None).expect("instances")));
    assert!(live.iter().all(|i| b.in_flight(&i.key()) == 2));
    drop(extra);
    assert_eq!(live.iter().map(|i| b.in_flight(&i.key())).sum::<usize>(), 1);
}

#[test]
fn consistent_hash_keeps_a_key_on_its_instance_while_it_lives() {
    let live = instances(&["a", "b", "c", "d"]);
    let b = Balancer::new(Strategy::ConsistentHash);
    let owner = |live: &[Instance], key: &str| b.pick(live, Some(key.as_bytes())).expect("instances").instance().instance.clone();
    let before: Vec<String> = (0..400).map(|k| owner(&live, &format!("order-{k}"))).collect();
    for (k, was) in before.iter().enumerate() {
        assert_eq!(&owner(&live, &format!("order-{k}")), was, "same key, same instance");
    }
    let without_c: Vec<Instance> = live.iter().filter(|i| i.instance != "c").cloned().collect();
    for (k, was) in before.iter().enumerate() {
        let now = owner(&without_c, &format!("order-{k}"));
        if was == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(&now, was, "only the leaver's keys move");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_failing_n_times_in_a_row_is_ejected_then_returns() {
    let live = instances(&["a", "b"]);
    let policy = Ejection { consecutive_failures: 3, cool_down: Duration::from_secs(10) };
    let b = Balancer::new(Strategy::RoundRobin).ejection(policy);
    let a_key = live[0].key();
    // A success in between resets the streak.
    let mut failures = 0;
    let mut succeeded_once = false;
    while failures < 3 {
        let lease = b.pick(&live, None).expect("instances");
        if lease.instance().key() != a_key {
            lease.succeeded();
        } else if failures == 2 && !succeeded_once {
            succeeded_once = true;
            failures = 0;
            lease.succeeded();
        } else {
            failures += 1;
            lease.failed();
        }
    }
    assert!(b.is_ejected(&a_key));
    assert_eq!(counts(&b, &live, 10).get("a"), None, "ejected instance is skipped");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!b.is_ejected(&a_key));
    assert_eq!(counts(&b, &live, 10).get("a"), Some(&5), "back after the cool-down");
}

#[tokio::test(start_paused = true)]
async fn consistent_hash_skips_an_ejected_owner_and_returns_to_it() {
    let live = instances(&["a", "b", "c"]);
    let b = Balancer::new(Strategy::ConsistentHash).ejection(Ejection { consecutive_failures: 1, cool_down: Duration::from_secs(5) });
    let owner = b.pick(&live, Some(b"k")).expect("instances");
    let owner_id = owner.instance().instance.clone();
    owner.failed();
    let other = b.pick(&live, Some(b"k")).expect("instances").instance().instance.clone();
    assert_ne!(other, owner_id);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.pick(&live, Some(b"k")).expect("instances").instance().instance, owner_id);
}

#[tokio::test(start_paused = true)]
async fn when_every_instance_is_ejected_all_are_tried() {
    let live = instances(&["a", "b"]);
    let b = Balancer::new(Strategy::RoundRobin).ejection(Ejection { consecutive_failures: 1, cool_down: Duration::from_secs(60) });
    b.pick(&live, None).expect("instances").failed();
    b.pick(&live, None).expect("instances").failed();
    assert!(live.iter().all(|i| b.is_ejected(&i.key())));
    assert_eq!(counts(&b, &live, 4).len(), 2);
}

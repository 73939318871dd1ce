//! A consistent-hash ring: a key maps to the first instance clockwise from its hash.
//!
//! Each instance owns [`VNODES`] points on the ring, so load spreads evenly and, when an
//! instance leaves, only the keys it owned move (to its neighbours); every other key keeps
//! its instance. Hashes are FNV-1a 64 with a final mix, fixed here so every process (and
//! every Herald version) maps a key to the same instance.

use std::collections::BTreeMap;

/// Points per instance on the ring.
pub const VNODES: u32 = 128;

/// A stable 64-bit hash of `bytes` (FNV-1a, then murmur3's 64-bit finalizer).
///
/// ```
/// use herald_services::balance::ring::hash;
/// assert_eq!(hash(b"order-42"), hash(b"order-42"));
/// assert_ne!(hash(b"order-42"), hash(b"order-43"));
/// ```
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A ring over instance keys.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: Vec<String>,
    points: BTreeMap<u64, usize>,
}

impl Ring {
    /// A ring over `members` (instance keys, `service/instance`).
    pub fn new(members: &[String]) -> Self {
        let mut points = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            for v in 0..VNODES {
                points.insert(hash(format!("{m}#{v}").as_bytes()), i);
            }
        }
        Ring { members: members.to_vec(), points }
    }

    /// The members this ring was built over.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Members in ring order starting at `key`'s owner, each once: the owner first, then
    /// the instances that take over if it is skipped.
    pub fn walk(&self, key: &[u8]) -> Vec<usize> {
        let h = hash(key);
        let mut seen = vec![false; self.members.len()];
        let mut order = Vec::with_capacity(self.members.len());
        for (_, &i) in self.points.range(h..).chain(self.points.range(..h)) {
            if !seen[i] {
                seen[i] = true;
                order.push(i);
                if order.len() == self.members.len() {
                    break;
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("orders/i{i}")).collect()
    }

    #[test]
    fn when_an_instance_leaves_only_its_keys_move() {
        let before = Ring::new(&members(4));
        let mut rest = members(4);
        let gone = rest.remove(2);
        let after = Ring::new(&rest);
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("order-{k}");
            let b = &before.members()[before.walk(key.as_bytes())[0]];
            let a = &after.members()[after.walk(key.as_bytes())[0]];
            if b == &gone {
                moved += 1;
                assert_ne!(a, &gone);
            } else {
                assert_eq!(a, b, "key {key} moved though its owner stayed");
            }
        }
        assert!((300..=700).contains(&moved), "about a quarter of 2000 keys belonged to the leaver, got {moved}");
    }

    #[test]
    fn load_spreads_over_members() {
        let ring = Ring::new(&members(4));
        let mut counts = [0usize; 4];
        for k in 0..4000 {
            counts[ring.walk(format!("k{k}").as_bytes())[0]] += 1;
        }
        assert!(counts.iter().all(|&c| (700..=1300).contains(&c)), "{counts:?}");
        assert_eq!(ring.walk(b"x").len(), 4);
    }
}

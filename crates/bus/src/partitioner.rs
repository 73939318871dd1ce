//! Kafka's default partitioner for keyed records, as the Java client computes it.
//!
//! Herald's producer uses librdkafka's `murmur2_random`, which is the same function; this
//! module lets tools and tests predict a key's partition without a producer.

/// Kafka's murmur2 hash of `data` (the Java client's `Utils.murmur2`).
///
/// ```
/// // librdkafka's own test vector.
/// assert_eq!(herald_bus::partitioner::murmur2(b"kafka"), 0xd067cf64);
/// ```
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client (and Herald) picks for a non-empty `key` among
/// `partitions`: `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// ```
/// assert!(herald_bus::partitioner::partition_for(b"order-1", 6) < 6);
/// ```
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from librdkafka's `rdmurmur2.c` unit test (`unittest_murmur2`), which
    /// match the Java client's `Utils.murmur2`.
    #[test]
    fn matches_the_java_client() {
        let vectors: &[(&[u8], u32)] = &[
            (b"kafka", 0xd067cf64),
            (b"giberish123456789", 0x8f552b0c),
            (b"1234", 0x9fc97b14),
            (b"234", 0xe7c009ca),
            (b"34", 0x873930da),
            (b"4", 0x5a4b5ca1),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c),
            (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377),
            (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e),
            (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f),
            (b"", 0x106e08d9),
        ];
        for (key, expected) in vectors {
            assert_eq!(murmur2(key), *expected, "key {:?}", String::from_utf8_lossy(key));
        }
    }
}

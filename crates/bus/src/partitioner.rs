//! Where producers put keyed records: Kafka's default partitioner, as the Java client
//! computes it, and librdkafka's.
//!
//! Herald's producer uses librdkafka's `murmur2_random`, which is the Java client's
//! function ([`partition_for`]). librdkafka's own default, `consistent_random`, and so the
//! default of the clients built on it (confluent-kafka for Python, Go and .NET, kcat) is
//! CRC-32 instead ([`Partitioner::Crc32`]): the two put most keys on different partitions.
//! This module lets tools, tests and the choreography engine predict a key's partition
//! without a producer.

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

/// A function that puts a keyed record on a partition, as producers configure it.
///
/// ```
/// use herald_bus::partitioner::Partitioner;
/// assert_eq!(Partitioner::Murmur2.partition(b"order-1", 6), herald_bus::partitioner::partition_for(b"order-1", 6));
/// assert_eq!(Partitioner::Crc32.partition(b"kafka", 1000), 0x5bbc_7517 % 1000); // zlib.crc32(b"kafka")
/// assert_eq!("crc32".parse::<Partitioner>(), Ok(Partitioner::Crc32));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// murmur2: the Java client's default, Herald's, librdkafka's `murmur2` and
    /// `murmur2_random` (see [`partition_for`]).
    #[default]
    Murmur2,
    /// CRC-32 (IEEE, as zlib): librdkafka's `consistent` and `consistent_random`, the
    /// default of the clients built on librdkafka.
    Crc32,
}

impl Partitioner {
    /// The partition of a non-empty `key` among `partitions`.
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        match self {
            Partitioner::Murmur2 => partition_for(key, partitions),
            Partitioner::Crc32 => crc32fast::hash(key) % partitions.max(1),
        }
    }

    /// The `partitioner` value that makes a librdkafka producer place keys so.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2_random",
            Partitioner::Crc32 => "consistent_random",
        }
    }
}

impl std::fmt::Display for Partitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Crc32 => "crc32",
        })
    }
}

/// A partitioner name none of [`Partitioner`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown partitioner {0:?} (murmur2 as Java's and Herald's clients, or crc32 as librdkafka's default consistent_random)")]
pub struct UnknownPartitioner(pub String);

impl std::str::FromStr for Partitioner {
    type Err = UnknownPartitioner;

    /// `murmur2` or `crc32`, or the librdkafka names that mean them for keyed records.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "murmur2" | "murmur2_random" => Ok(Partitioner::Murmur2),
            "crc32" | "consistent" | "consistent_random" => Ok(Partitioner::Crc32),
            other => Err(UnknownPartitioner(other.to_owned())),
        }
    }
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

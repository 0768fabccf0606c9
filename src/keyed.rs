//! A 128-bit hash with a seed drawn per process: what state and caches are keyed by instead of
//! the key text (16 bytes, one comparison), with no collisions anybody could craft from the
//! outside (a username, a user agent) and none by chance in practice.

pub fn hash128(bytes: &[u8]) -> u128 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    });
    xxhash_rust::xxh3::xxh3_128_with_seed(bytes, seed)
}

/// A 64-bit hash that is the same in every process and version: names of files in the state
/// directory derived from a path.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

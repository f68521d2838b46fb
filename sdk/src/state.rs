//! Host-owned key-value state that survives an instance rebuild and a hot
//! swap to a new version of the policy (not a daemon restart): the way to
//! hand learned state from one version to the next. At most 64 KiB per
//! policy, keys and values together.

use crate::Denial;
use crate::bindings::wasmtune::policy::state;

/// The store's quota per policy, keys and values together.
pub const QUOTA_BYTES: usize = 64 << 10;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    state::get(key)
}

/// Stores `value` under `key`; `quota-exceeded` when the store would pass its quota.
pub fn set(key: &str, value: &[u8]) -> Result<(), Denial> {
    state::set(key, value)
}

/// Removes `key` and its value.
pub fn delete(key: &str) {
    state::delete(key)
}

/// A `u64` kept under `key` (little-endian), 0 when absent or malformed.
pub fn get_u64(key: &str) -> u64 {
    get(key).and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(0, u64::from_le_bytes)
}

/// Keeps `value` under `key` (little-endian).
pub fn set_u64(key: &str, value: u64) -> Result<(), Denial> {
    set(key, &value.to_le_bytes())
}

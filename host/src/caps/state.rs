//! `wasmtune:policy/state`: a small key-value store per policy name, owned
//! by the host, so that a rebuilt instance or a new version of a policy
//! picks up where the old one stopped (the hot-swap state handover). Bounded
//! by a quota; lost on daemon restart by design (the kernel values the state
//! describes are journaled separately).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::wit::Denial;
use crate::wit::wasmtune::policy::state::Host;

/// Bytes of keys and values one policy may keep.
pub const QUOTA_BYTES: usize = 64 * 1024;

/// One policy's entries.
#[derive(Debug, Default)]
pub struct PolicyStore {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl PolicyStore {
    pub fn used_bytes(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Every policy's store, by policy name; shared by all versions of a name.
#[derive(Debug, Default)]
pub struct PolicyStores {
    by_name: Mutex<HashMap<String, Arc<PolicyStore>>>,
}

impl PolicyStores {
    pub fn for_policy(&self, name: &str) -> Arc<PolicyStore> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name.entry(name.to_string()).or_default().clone()
    }
}

pub struct StateCap {
    pub store: Arc<PolicyStore>,
}

impl Host for StateCap {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.store.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned())
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Denial>> {
        let mut entries = self.store.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let others: usize = entries.iter().filter(|(k, _)| **k != key).map(|(k, v)| k.len() + v.len()).sum();
        if others + key.len() + value.len() > QUOTA_BYTES {
            return Ok(Err(Denial::QuotaExceeded(QUOTA_BYTES as u32)));
        }
        entries.insert(key, value);
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.store.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_a_policy_share_one_store_and_the_quota_holds() {
        let stores = PolicyStores::default();
        let mut old = StateCap { store: stores.for_policy("tcp-cong") };
        let mut new = StateCap { store: stores.for_policy("tcp-cong") };
        let mut other = StateCap { store: stores.for_policy("neigh") };
        assert_eq!(old.set("peers".into(), vec![1, 2, 3]).ok(), Some(Ok(())));
        assert_eq!(new.get("peers".into()).ok().flatten(), Some(vec![1, 2, 3]));
        assert_eq!(other.get("peers".into()).ok().flatten(), None);
        let too_big = vec![0; QUOTA_BYTES];
        assert_eq!(new.set("big".into(), too_big).ok(), Some(Err(Denial::QuotaExceeded(QUOTA_BYTES as u32))));
        // Replacing a key counts only its new size.
        assert_eq!(new.set("peers".into(), vec![0; QUOTA_BYTES - 5]).ok(), Some(Ok(())));
        new.delete("peers".into()).ok();
        assert_eq!(old.store.used_bytes(), 0);
    }
}

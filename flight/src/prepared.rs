//! Flight SQL prepared statements held between calls: per tenant, capped, and dropped when
//! idle, so no tenant can fill the server's table for the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::common::ScalarValue;
use tonic::Status;

/// Prepared statements one tenant may hold open at once.
pub const MAX_PREPARED_PER_TENANT: usize = 1_000;
/// Prepared statements the server holds at once, all tenants together.
pub const MAX_PREPARED_STATEMENTS: usize = 10_000;
/// A prepared statement unused for this long is closed.
pub const PREPARED_IDLE: Duration = Duration::from_secs(600);

struct Entry {
    tenant: String,
    params: Vec<ScalarValue>,
    used: Instant,
}

/// The open prepared statements, by handle.
#[derive(Default)]
pub struct Prepared {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

fn unknown() -> Status {
    Status::invalid_argument("unknown prepared statement handle")
}

impl Prepared {
    /// Opens `handle` for `tenant`. Idle statements are closed first; a tenant at its cap
    /// gets ResourceExhausted; a full server closes its least recently used statement.
    pub fn open(&self, tenant: &str, handle: Vec<u8>) -> Result<(), Status> {
        let mut entries = self.entries.lock().expect("prepared lock");
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.used) < PREPARED_IDLE);
        let mine = entries.values().filter(|e| e.tenant == tenant).count();
        if mine >= MAX_PREPARED_PER_TENANT {
            return Err(Status::resource_exhausted(format!(
                "{MAX_PREPARED_PER_TENANT} prepared statements are open for this tenant; close some"
            )));
        }
        if entries.len() >= MAX_PREPARED_STATEMENTS {
            let oldest = entries.iter().min_by_key(|(_, e)| e.used).map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                entries.remove(&h);
            }
        }
        entries.insert(
            handle,
            Entry {
                tenant: tenant.to_string(),
                params: Vec::new(),
                used: now,
            },
        );
        Ok(())
    }

    /// Closes `handle` if `tenant` holds it.
    pub fn close(&self, tenant: &str, handle: &[u8]) {
        let mut entries = self.entries.lock().expect("prepared lock");
        if entries.get(handle).is_some_and(|e| e.tenant == tenant) {
            entries.remove(handle);
        }
    }

    /// Binds `params` to `tenant`'s `handle`.
    pub fn bind(&self, tenant: &str, handle: &[u8], params: Vec<ScalarValue>) -> Result<(), Status> {
        let mut entries = self.entries.lock().expect("prepared lock");
        let entry = entries
            .get_mut(handle)
            .filter(|e| e.tenant == tenant)
            .ok_or_else(unknown)?;
        entry.params = params;
        entry.used = Instant::now();
        Ok(())
    }

    /// The parameters bound to `tenant`'s `handle`.
    pub fn params(&self, tenant: &str, handle: &[u8]) -> Result<Vec<ScalarValue>, Status> {
        let mut entries = self.entries.lock().expect("prepared lock");
        let entry = entries
            .get_mut(handle)
            .filter(|e| e.tenant == tenant)
            .ok_or_else(unknown)?;
        entry.used = Instant::now();
        Ok(entry.params.clone())
    }

    /// Statements open now.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("prepared lock").len()
    }

    /// `true` when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_at_its_cap_does_not_block_others() {
        let p = Prepared::default();
        for i in 0..MAX_PREPARED_PER_TENANT {
            p.open("a", format!("a{i}").into_bytes()).unwrap();
        }
        assert_eq!(
            p.open("a", b"one-more".to_vec()).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        p.open("b", b"b0".to_vec()).unwrap();
        p.bind("b", b"b0", vec![ScalarValue::Int64(Some(1))]).unwrap();
        assert_eq!(p.params("b", b"b0").unwrap(), vec![ScalarValue::Int64(Some(1))]);
        // Another tenant's handle is unknown to b.
        assert!(p.params("b", b"a0").is_err());
        p.close("b", b"a0");
        assert!(p.params("a", b"a0").is_ok());
    }
}

//! A lease in object storage: at most one holder at a time of a tenant's table upkeep, across
//! every process that shares the storage (compactor replicas, a monolith, a one-shot job).
//!
//! A lease is a directory of numbered entries, `<table>/_upkeep_lease/<n>` (20 digits, so
//! names sort as numbers), each naming its holder and when it expires. The newest entry is the
//! lease. Whoever takes it, renews it or gives it up writes the next number with a
//! put-if-absent (`PutMode::Create`, which the local store and S3 with conditional puts make
//! atomic), so of two writers racing for the same number exactly one wins: taking an expired
//! lease, renewing one's own and releasing it are all the same step. Entries before the newest
//! are deleted as it is written. A holder renews in the background every third of the lease's
//! time; a renewal that finds the next number taken means the lease was lost (the holder
//! stalled past its expiry), and [`Lease::lost`] says so before anything is committed. Delta's
//! own conflict check (a removed file must still be in the table) stays the last guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{Error, Result};

/// The directory of a table's upkeep lease, beside the Delta log (hidden from vacuum).
pub const LEASE_DIR: &str = "_upkeep_lease";

/// How long a lease lasts without renewal by default: a holder killed with the lease held
/// keeps the tenant's upkeep waiting this long.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// Entries of a lease directory listed at most (the newest two are kept).
const MAX_ENTRIES_LISTED: usize = 1024;

/// A held lease; renewed in the background until released or dropped.
pub struct Lease {
    state: Arc<Held>,
    renewer: tokio::task::JoinHandle<()>,
}

struct Held {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    owner: String,
    ttl: Duration,
    /// The number of the newest entry this holder wrote.
    seq: AtomicU64,
    lost: AtomicBool,
}

/// The outcome of [`acquire`].
pub enum Acquired {
    Held(Lease),
    /// Another holder has it, until the time given (Unix ms).
    Busy {
        owner: String,
        until_unix_ms: u64,
    },
}

/// The newest entry of a lease directory.
struct Entry {
    seq: u64,
    owner: String,
    until_unix_ms: u64,
}

/// Takes the lease in `dir` for `owner` when it is free (none yet, expired or released), for
/// `ttl`.
pub async fn acquire(store: Arc<dyn ObjectStore>, dir: Path, owner: &str, ttl: Duration) -> Result<Acquired> {
    assert!(ttl >= Duration::from_secs(1), "a lease lasts at least a second");
    let newest = newest(store.as_ref(), &dir).await?;
    let next = match &newest {
        Some(e) if e.until_unix_ms > now_ms() => {
            return Ok(Acquired::Busy {
                owner: e.owner.clone(),
                until_unix_ms: e.until_unix_ms,
            });
        }
        Some(e) => e.seq + 1,
        None => 1,
    };
    let held = Arc::new(Held {
        store,
        dir,
        owner: owner.to_string(),
        ttl,
        seq: AtomicU64::new(0),
        lost: AtomicBool::new(false),
    });
    if !held.write(next, now_ms() + ms(ttl)).await? {
        let e = newest_or_unknown(held.store.as_ref(), &held.dir).await;
        return Ok(Acquired::Busy {
            owner: e.owner,
            until_unix_ms: e.until_unix_ms,
        });
    }
    let renewer = tokio::spawn(renew_until_lost(held.clone()));
    Ok(Acquired::Held(Lease { state: held, renewer }))
}

impl Lease {
    /// Whether another holder may have the lease now (a renewal found it taken, or none
    /// succeeded before it expired): commit nothing more.
    pub fn lost(&self) -> bool {
        self.state.lost.load(Ordering::Acquire)
    }

    /// Gives the lease up: the next entry expires at once.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        if self.lost() {
            return Ok(());
        }
        let next = self.state.seq.load(Ordering::Acquire) + 1;
        self.state.write(next, 0).await.map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Held {
    /// Writes entry `seq` if no one has; whether it did. Deletes the entries before it.
    async fn write(&self, seq: u64, until_unix_ms: u64) -> Result<bool> {
        let body = serde_json::json!({"owner": self.owner, "until_unix_ms": until_unix_ms}).to_string();
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = self.dir.clone().join(format!("{seq:020}"));
        match self.store.put_opts(&path, PutPayload::from(body), options).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        self.seq.store(seq, Ordering::Release);
        for (old, path) in entries(self.store.as_ref(), &self.dir).await? {
            if old < seq {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(path = %path, error = %e, "old lease entry not deleted"),
                }
            }
        }
        Ok(true)
    }
}

/// Renews `held` every third of its time until a renewal finds the lease taken, or none has
/// succeeded before it expired.
async fn renew_until_lost(held: Arc<Held>) {
    let mut until = now_ms() + ms(held.ttl);
    loop {
        tokio::time::sleep(held.ttl / 3).await;
        let next = held.seq.load(Ordering::Acquire) + 1;
        match held.write(next, now_ms() + ms(held.ttl)).await {
            Ok(true) => until = now_ms() + ms(held.ttl),
            Ok(false) => break,
            Err(e) if now_ms() < until => tracing::warn!(error = %e, "lease not renewed; trying again"),
            Err(_) => break,
        }
    }
    tracing::warn!(owner = %held.owner, dir = %held.dir, "upkeep lease lost");
    held.lost.store(true, Ordering::Release);
}

/// The numbered entries of `dir`, with their paths.
async fn entries(store: &dyn ObjectStore, dir: &Path) -> Result<Vec<(u64, Path)>> {
    let listed: Vec<_> = store.list(Some(dir)).take(MAX_ENTRIES_LISTED).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|m| Some((m.location.filename()?.parse().ok()?, m.location)))
        .collect())
}

/// The newest entry of `dir`, read; `None` when there is none. An entry deleted as it is read
/// (a newer one was just written) is read again from a new listing.
async fn newest(store: &dyn ObjectStore, dir: &Path) -> Result<Option<Entry>> {
    for _ in 0..3 {
        let Some((seq, path)) = entries(store, dir).await?.into_iter().max_by_key(|(s, _)| *s) else {
            return Ok(None);
        };
        let bytes = match store.get(&path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Conflict(format!("unreadable lease entry {path}: {e}")))?;
        return Ok(Some(Entry {
            seq,
            owner: value["owner"].as_str().unwrap_or("?").to_string(),
            until_unix_ms: value["until_unix_ms"].as_u64().unwrap_or(0),
        }));
    }
    Err(Error::Conflict(format!("lease {dir} changes too fast to read")))
}

/// The newest entry of `dir` for a message: who won a race just lost.
async fn newest_or_unknown(store: &dyn ObjectStore, dir: &Path) -> Entry {
    let unknown = Entry {
        seq: 0,
        owner: "another holder".into(),
        until_unix_ms: now_ms(),
    };
    newest(store, dir).await.ok().flatten().unwrap_or(unknown)
}

/// A new name for a lease holder: the host's name, the process id and a random part.
pub fn new_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tracehouse".into());
    format!("{host}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, ms)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn held(a: Acquired) -> Lease {
        match a {
            Acquired::Held(l) => l,
            Acquired::Busy { owner, .. } => panic!("busy, held by {owner}"),
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_release_or_expiry() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Path::from("t/_upkeep_lease");
        let ttl = Duration::from_secs(60);
        let a = held(acquire(store.clone(), dir.clone(), "a", ttl).await.unwrap());
        match acquire(store.clone(), dir.clone(), "b", ttl).await.unwrap() {
            Acquired::Busy { owner, until_unix_ms } => {
                assert_eq!(owner, "a");
                assert!(until_unix_ms > now_ms());
            }
            Acquired::Held(_) => panic!("two holders"),
        }
        a.release().await.unwrap();
        let b = held(acquire(store.clone(), dir.clone(), "b", ttl).await.unwrap());
        assert!(!b.lost());
        // Old entries go as new ones are written.
        assert_eq!(entries(store.as_ref(), &dir).await.unwrap().len(), 1);
        drop(b);
        // Dropped without release (a holder killed): busy until it expires, then free.
        assert!(matches!(
            acquire(store.clone(), dir.clone(), "c", ttl).await.unwrap(),
            Acquired::Busy { .. }
        ));
        let short = Duration::from_secs(1);
        let other = Path::from("u/_upkeep_lease");
        drop(held(acquire(store.clone(), other.clone(), "d", short).await.unwrap()));
        assert!(matches!(
            acquire(store.clone(), other.clone(), "e", short).await.unwrap(),
            Acquired::Busy { .. }
        ));
        tokio::time::sleep(short + Duration::from_millis(100)).await;
        held(acquire(store.clone(), other, "e", short).await.unwrap());
    }

    #[tokio::test]
    async fn racing_writers_get_one_lease_and_a_stalled_holder_learns_it_lost() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Path::from("t/_upkeep_lease");
        let ttl = Duration::from_secs(3);
        let names: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
        let tries = futures::future::join_all(names.iter().map(|n| acquire(store.clone(), dir.clone(), n, ttl))).await;
        let mut holders: Vec<Lease> = tries
            .into_iter()
            .filter_map(|a| match a.unwrap() {
                Acquired::Held(l) => Some(l),
                Acquired::Busy { .. } => None,
            })
            .collect();
        assert_eq!(holders.len(), 1, "exactly one of eight racing writers holds the lease");
        let first = holders.pop().unwrap();
        // Its next renewal number taken by someone else: it learns it lost the lease.
        let next = first.state.seq.load(Ordering::Acquire) + 1;
        let other = Held {
            store: store.clone(),
            dir: dir.clone(),
            owner: "thief".into(),
            ttl,
            seq: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        };
        assert!(other.write(next, now_ms() + 60_000).await.unwrap());
        tokio::time::sleep(ttl / 3 + Duration::from_millis(500)).await;
        assert!(first.lost());
    }
}

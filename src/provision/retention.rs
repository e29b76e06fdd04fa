//! Profile retention (`runtime.profile_retention_days`, off by default): a per-principal
//! profile volume whose owner has not been seen for that long is removed by the reaper.
//!
//! "Seen" is the owner's last request, kept across restarts in `lazygate-profiles.json` in
//! the state directory (`{"last_seen": {"<owner_hash>": <unix seconds>}}`, written
//! atomically like the registry). A volume the file does not know yet — made by the seed,
//! or before retention was turned on — starts its count the first time the gateway sees
//! it, so turning retention on never removes a profile sooner than the retention after
//! that. A profile is never removed while its owner's runtime exists, is starting, or is
//! held, nor while any container (a stopped runtime) still uses the volume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Provisioner, Slot, SlotState};
use crate::owner::OwnerHash;

/// How often the reaper looks for profiles past the retention: they are counted in days.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    #[serde(default)]
    last_seen: BTreeMap<String, f64>,
}

/// When each owner with a profile was last seen.
pub struct Ledger {
    path: PathBuf,
    /// Seconds since the Unix epoch, by owner hash.
    last_seen: Mutex<BTreeMap<OwnerHash, f64>>,
    /// Changed since the last write.
    dirty: AtomicBool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Ledger {
    /// Reads the file; a missing one is empty, an unreadable one is logged and taken as
    /// empty (every profile then starts its count again: nothing is removed early).
    pub fn load(path: PathBuf) -> Ledger {
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<LedgerFile>(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "ignoring unreadable profile ledger");
                LedgerFile::default()
            }),
            Err(_) => LedgerFile::default(),
        };
        let last_seen = file
            .last_seen
            .into_iter()
            .filter(|(_, t)| t.is_finite())
            .filter_map(|(hash, t)| Some((OwnerHash::parse(&hash).ok()?, t)))
            .collect();
        Ledger {
            path,
            last_seen: Mutex::new(last_seen),
            dirty: AtomicBool::new(false),
        }
    }

    /// Records that `owner_hash` was seen at `unix` seconds (later sightings win).
    pub fn saw(&self, owner_hash: OwnerHash, unix: f64) {
        let mut last_seen = self.last_seen.lock().expect("ledger lock");
        let entry = last_seen.entry(owner_hash).or_insert(f64::MIN);
        if unix > *entry {
            *entry = unix;
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn last_seen(&self, owner_hash: &OwnerHash) -> Option<f64> {
        self.last_seen.lock().expect("ledger lock").get(owner_hash).copied()
    }

    fn forget(&self, owner_hash: &OwnerHash) {
        if self.last_seen.lock().expect("ledger lock").remove(owner_hash).is_some() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Writes the file if anything changed: a temporary file beside it, fsync, rename.
    pub async fn persist(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = LedgerFile {
            last_seen: self
                .last_seen
                .lock()
                .expect("ledger lock")
                .iter()
                .map(|(hash, t)| (hash.to_string(), *t))
                .collect(),
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || save(&file, &path)).await;
        if let Err(error) = result.map_err(std::io::Error::other).and_then(|r| r) {
            tracing::warn!(%error, "cannot write the profile ledger; will retry");
            self.dirty.store(true, Ordering::Release);
        }
    }
}

fn save(file: &LedgerFile, path: &Path) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::state_dir::write_atomically(path, &text)
}

/// Removes the profiles of owners not seen for `retention`; one pass.
pub async fn sweep(provisioner: &Provisioner, ledger: &Ledger, retention: Duration) {
    let owners = match provisioner.backend.list_profiles().await {
        Ok(owners) => owners,
        Err(error) => {
            tracing::warn!(%error, "cannot list profile volumes; will retry");
            return;
        }
    };
    let now = unix_now();
    // Profiles gone by other means (the seed, an operator) are forgotten.
    let listed: std::collections::HashSet<OwnerHash> = owners.iter().copied().collect();
    let gone: Vec<OwnerHash> = ledger
        .last_seen
        .lock()
        .expect("ledger lock")
        .keys()
        .filter(|hash| !listed.contains(hash) && !provisioner.slots.contains_key(hash))
        .copied()
        .collect();
    for owner_hash in &gone {
        ledger.forget(owner_hash);
    }
    for owner_hash in owners {
        let Some(seen) = ledger.last_seen(&owner_hash) else {
            // First sighting: the count starts now.
            ledger.saw(owner_hash, now);
            continue;
        };
        if now - seen < retention.as_secs_f64() {
            continue;
        }
        // The owner's slot, made at its last sighting when there is none, is locked for
        // the removal: a request arriving meanwhile waits and then starts with a new profile.
        let slot = provisioner
            .slots
            .entry(owner_hash)
            .or_insert_with(|| Arc::new(Slot::new(provisioner.clock.reading_of_unix(seen))))
            .clone();
        let Ok(guard) = slot.state.try_lock() else { continue };
        if !matches!(*guard, SlotState::Absent) || slot.holds.load(Ordering::Acquire) > 0 {
            continue;
        }
        let idle_days = ((now - seen) / 86_400.0).floor();
        match provisioner.backend.remove_profile(&owner_hash).await {
            Ok(true) => {
                tracing::info!(%owner_hash, idle_days, "removed a profile whose owner was not seen within the retention");
                ledger.forget(&owner_hash);
                // The slot made for the removal goes too, unless a request took it meanwhile.
                drop(guard);
                drop(slot);
                provisioner.slots.remove_if(&owner_hash, |_, slot| {
                    Arc::strong_count(slot) == 1 && slot.holds.load(Ordering::Acquire) == 0
                });
            }
            Ok(false) => tracing::debug!(%owner_hash, "profile past the retention is in use by a container; kept"),
            Err(error) => tracing::warn!(%owner_hash, %error, "cannot remove a profile past the retention; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_keeps_the_latest_sighting_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lazygate-profiles.json");
        let alice = OwnerHash::of("alice");
        let ledger = Ledger::load(path.clone());
        ledger.saw(alice, 200.0);
        ledger.saw(alice, 100.0);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ledger.persist());
        let again = Ledger::load(path.clone());
        assert_eq!(again.last_seen(&alice), Some(200.0));
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(
            Ledger::load(path).last_seen(&alice),
            None,
            "unreadable: counts start again"
        );
    }
}

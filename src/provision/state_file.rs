//! The seed's registry file, `docker_runtimes.json`: last use per runtime, across restarts,
//! shared with the seed and with other gateways on the same state directory.
//!
//! Labels are immutable, so last use cannot live on the container; it lives here, in the
//! seed's format (`{"runtimes": {"<mode>:<hash>": {...}}}`, sorted keys, two-space indent),
//! written atomically (temporary file, fsync, rename) so a crash never leaves half a file.
//!
//! The seed reads and rewrites the whole file on every call, so the gateway never writes
//! it from memory alone: every change is a read-modify-write ([`Registry::merge`]) under a
//! lock file beside it, that keeps other writers' entries (and fields this version does
//! not know), honours a newer `last_used` written by someone else, and drops only the
//! entries the gateway itself wrote and has since removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// How long a sync waits for another writer's lock before giving up until the next pass.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// One runtime's line in the registry, with the seed's field names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegistryEntry {
    pub container_name: String,
    /// Seconds since the Unix epoch, as a float (Python's `time.time()`).
    pub last_used: f64,
    pub mode: String,
    pub owner_hash: String,
    pub volume_name: String,
    /// Fields a newer or older writer put there that this version does not know: kept as
    /// found, so that the gateway never takes away what another version relies on.
    pub extra: Map<String, Value>,
}

impl RegistryEntry {
    /// Reads an entry; `Err` says which field is wrong.
    fn from_value(value: &Value) -> Result<RegistryEntry, String> {
        let Value::Object(fields) = value else {
            return Err("it is not an object".into());
        };
        let text = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name} is {other}, not a string")),
        };
        let last_used = match fields.get("last_used") {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite()).unwrap_or(0.0),
            Some(other) => return Err(format!("last_used is {other}, not a number")),
        };
        let known = ["container_name", "last_used", "mode", "owner_hash", "volume_name"];
        Ok(RegistryEntry {
            container_name: text("container_name")?,
            last_used,
            mode: text("mode")?,
            owner_hash: text("owner_hash")?,
            volume_name: text("volume_name")?,
            extra: fields
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    fn to_value(&self) -> Value {
        let mut fields: BTreeMap<&str, Value> = self.extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        fields.insert("container_name", self.container_name.clone().into());
        fields.insert(
            "last_used",
            serde_json::Number::from_f64(self.last_used).map_or(Value::from(0), Value::Number),
        );
        fields.insert("mode", self.mode.clone().into());
        fields.insert("owner_hash", self.owner_hash.clone().into());
        fields.insert("volume_name", self.volume_name.clone().into());
        sorted(fields)
    }
}

/// An object with its keys in sorted order, as the seed's `json.dump(sort_keys=True)`.
fn sorted(fields: BTreeMap<&str, Value>) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    pub runtimes: BTreeMap<String, RegistryEntry>,
    /// Entries that cannot be read (a wrong type where a string or number belongs): kept
    /// verbatim and otherwise left alone.
    pub unreadable: BTreeMap<String, Value>,
    /// Top-level fields besides `runtimes`, kept as found.
    pub extra: Map<String, Value>,
}

/// What [`Registry::merge`] found that concerns the gateway's own runtimes.
#[derive(Debug, Default, PartialEq)]
pub struct MergeOutcome {
    /// Keys the gateway wrote last time that someone else has taken out since (the seed's
    /// cleanup or expiry): their runtime may be gone, and they are not written back.
    pub vanished: Vec<String>,
    /// A `last_used` newer than the gateway's, written by someone else (the seed reusing
    /// the runtime), per key of the gateway's own entries.
    pub newer: Vec<(String, f64)>,
}

impl Registry {
    /// Reads the file; a missing file is an empty registry, and one that cannot be read or
    /// parsed is too (as in the seed), with a warning.
    pub fn load(path: &Path) -> Registry {
        match std::fs::read(path) {
            Ok(bytes) => Registry::parse(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "ignoring unreadable runtime registry");
                Registry::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read runtime registry");
                Registry::default()
            }
        }
    }

    /// Parses the file's text. The whole file fails only when it is not JSON or not an
    /// object; a malformed entry is set aside with a warning naming it.
    pub fn parse(bytes: &[u8]) -> Result<Registry, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Registry::default());
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let Value::Object(mut top) = value else {
            return Err("the file is not a JSON object".into());
        };
        let mut registry = Registry::default();
        match top.remove("runtimes") {
            Some(Value::Object(runtimes)) => {
                for (key, value) in runtimes {
                    match RegistryEntry::from_value(&value) {
                        Ok(entry) => {
                            registry.runtimes.insert(key, entry);
                        }
                        Err(reason) => {
                            tracing::warn!(entry = %key, %reason, "skipping a malformed runtime registry entry (kept as it is)");
                            registry.unreadable.insert(key, value);
                        }
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => return Err(format!("runtimes is {other}, not an object")),
        }
        registry.extra = top;
        Ok(registry)
    }

    /// The file's text: sorted keys, two-space indent, a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut runtimes: BTreeMap<&str, Value> =
            self.unreadable.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        for (key, entry) in &self.runtimes {
            runtimes.insert(key, entry.to_value());
        }
        let mut top: BTreeMap<&str, Value> = self.extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        top.insert("runtimes", sorted(runtimes));
        let mut text = serde_json::to_vec_pretty(&sorted(top)).expect("a JSON value always serialises");
        text.push(b'\n');
        text
    }

    /// The entry of an owner hash: under `mode`'s key first, else under any mode.
    fn entry_of(&self, mode: &str, owner_hash: &str) -> Option<&RegistryEntry> {
        self.runtimes
            .get(&format!("{mode}:{owner_hash}"))
            .or_else(|| self.runtimes.values().find(|e| e.owner_hash == owner_hash))
    }

    /// The mode of the entry for an owner hash when there is none under `mode`: the mode
    /// another gateway (or the seed) made its runtime in.
    pub fn mode_of(&self, mode: &str, owner_hash: &str) -> Option<String> {
        if self.runtimes.contains_key(&format!("{mode}:{owner_hash}")) {
            return None;
        }
        self.entry_of(mode, owner_hash)
            .map(|e| e.mode.clone())
            .filter(|m| !m.is_empty())
    }

    /// Last use recorded for an owner hash, preferring the given mode's key.
    pub fn last_used(&self, mode: &str, owner_hash: &str) -> Option<f64> {
        self.entry_of(mode, owner_hash)
            .map(|e| e.last_used)
            .filter(|t| t.is_finite() && *t > 0.0)
    }

    /// Folds the gateway's own entries into the file as read.
    ///
    /// - An own entry replaces the file's under the same key, keeping the file's unknown
    ///   fields and the later of the two `last_used` (a newer one is reported in
    ///   [`MergeOutcome::newer`]).
    /// - An own entry the gateway wrote before (`written`, with the `last_used` it wrote)
    ///   that is no longer in the file was taken out by someone else: it is not put back,
    ///   and is reported in [`MergeOutcome::vanished`].
    /// - An entry of the file that is not the gateway's stays, unless the gateway wrote it
    ///   (or removed its runtime) and nobody has used it since: then it goes.
    pub fn merge(&mut self, ours: &BTreeMap<String, RegistryEntry>, written: &HashMap<String, f64>) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        self.runtimes.retain(|key, entry| {
            ours.contains_key(key) || written.get(key).is_none_or(|wrote| entry.last_used > *wrote)
        });
        for (key, mine) in ours {
            match self.runtimes.get_mut(key) {
                Some(found) => {
                    let last_used = if found.last_used > mine.last_used {
                        outcome.newer.push((key.clone(), found.last_used));
                        found.last_used
                    } else {
                        mine.last_used
                    };
                    *found = RegistryEntry {
                        last_used,
                        extra: std::mem::take(&mut found.extra),
                        ..mine.clone()
                    };
                }
                None if written.contains_key(key) => outcome.vanished.push(key.clone()),
                None => {
                    self.runtimes.insert(key.clone(), mine.clone());
                }
            }
        }
        outcome
    }

    /// Entries of the file that are not the gateway's (`ours_hashes`) and have been idle
    /// for `ttl` at `now` (Unix seconds), by the seed's rule: an entry without a last use
    /// never expires.
    pub fn expired_foreign<'a>(
        &'a self,
        now: f64,
        ttl: Duration,
        is_ours: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a String, &'a RegistryEntry)> + 'a {
        self.runtimes.iter().filter(move |(_, e)| {
            e.last_used > 0.0 && now - e.last_used >= ttl.as_secs_f64() && !is_ours(&e.owner_hash)
        })
    }
}

/// Why a sync of the registry file did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("another process has held the registry lock {path} for {LOCK_WAIT:?}")]
    Locked { path: PathBuf },
    #[error("cannot lock the registry with {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("cannot write the runtime registry: {0}")]
    Write(std::io::Error),
}

/// The result of one read-modify-write of the file.
pub struct Synced {
    /// The file as it is now.
    pub registry: Registry,
    pub outcome: MergeOutcome,
}

/// Reads the file under its lock, merges the gateway's entries in and writes it back when
/// that changed anything. Blocking: run it off the async threads.
///
/// A file that cannot be parsed is set aside as `<name>.unreadable` (once, the last one
/// found) before it is replaced, so that a human can look at what was there.
pub fn sync(
    path: &Path,
    ours: &BTreeMap<String, RegistryEntry>,
    written: &HashMap<String, f64>,
) -> Result<Synced, SyncError> {
    let lock_path = path.with_extension("json.lock");
    let _lock = lock(&lock_path)?;
    let (mut registry, before) = match std::fs::read(path) {
        Ok(bytes) => match Registry::parse(&bytes) {
            Ok(registry) => (registry, Some(bytes)),
            Err(error) => {
                let aside = path.with_extension("json.unreadable");
                tracing::warn!(path = %path.display(), %error, aside = %aside.display(), "runtime registry is unreadable; setting it aside and writing a new one");
                if let Err(error) = std::fs::rename(path, &aside) {
                    tracing::warn!(%error, "cannot set the unreadable registry aside");
                }
                (Registry::default(), None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Registry::default(), None),
        Err(error) => return Err(SyncError::Write(error)),
    };
    let outcome = registry.merge(ours, written);
    let after = registry.to_bytes();
    if before.as_deref() != Some(after.as_slice()) {
        crate::state_dir::write_atomically(path, &after).map_err(SyncError::Write)?;
    }
    Ok(Synced { registry, outcome })
}

/// Takes the registry's lock file, waiting at most [`LOCK_WAIT`]; released when dropped.
fn lock(path: &Path) -> Result<std::fs::File, SyncError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| SyncError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SyncError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(SyncError::Lock {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As the seed writes it: json.dump(payload, fh, indent=2, sort_keys=True)
    const SEED: &str = r#"{
  "runtimes": {
    "docker-per-principal:2bd806c97f0e00af": {
      "container_name": "browser-use-browser-2bd806c97f0e00af",
      "last_used": 1764340000.25,
      "mode": "docker-per-principal",
      "owner_hash": "2bd806c97f0e00af",
      "volume_name": "browser-use-profile-2bd806c97f0e00af"
    }
  }
}"#;

    fn entry(hash: &str, mode: &str, last_used: f64) -> RegistryEntry {
        RegistryEntry {
            container_name: format!("browser-use-browser-{hash}"),
            last_used,
            mode: mode.into(),
            owner_hash: hash.into(),
            volume_name: format!("browser-use-profile-{hash}"),
            extra: Map::new(),
        }
    }

    #[test]
    fn reads_the_seed_format_and_writes_it_back() {
        let registry = Registry::parse(SEED.as_bytes()).unwrap();
        assert_eq!(
            registry.last_used("docker-per-principal", "2bd806c97f0e00af"),
            Some(1764340000.25)
        );
        assert_eq!(
            registry.last_used("docker-per-task", "2bd806c97f0e00af"),
            Some(1764340000.25)
        );
        assert_eq!(registry.last_used("docker-per-task", "0000000000000000"), None);
        assert_eq!(String::from_utf8(registry.to_bytes()).unwrap().trim_end(), SEED);
    }

    #[test]
    fn unknown_fields_and_malformed_entries_are_kept_as_found() {
        let text = r#"{"version": 3, "runtimes": {
            "docker-per-task:aaaaaaaaaaaaaaaa": {"container_name": "c", "last_used": 5, "mode": "docker-per-task",
                "owner_hash": "aaaaaaaaaaaaaaaa", "volume_name": "v", "node": {"id": "n1"}},
            "docker-per-task:bbbbbbbbbbbbbbbb": {"container_name": 7, "last_used": "yesterday"},
            "broken": "not an object"}}"#;
        let mut registry = Registry::parse(text.as_bytes()).unwrap();
        assert_eq!(registry.runtimes.len(), 1);
        assert_eq!(
            registry.unreadable.len(),
            2,
            "malformed entries are set aside, not the file"
        );
        let ours = BTreeMap::from([(
            "docker-per-task:aaaaaaaaaaaaaaaa".to_owned(),
            entry("aaaaaaaaaaaaaaaa", "docker-per-task", 9.0),
        )]);
        registry.merge(&ours, &HashMap::new());
        let written: Value = serde_json::from_slice(&registry.to_bytes()).unwrap();
        assert_eq!(written["version"], 3);
        let mine = &written["runtimes"]["docker-per-task:aaaaaaaaaaaaaaaa"];
        assert_eq!(
            mine["node"]["id"], "n1",
            "an unknown field of an entry survives a rewrite"
        );
        assert_eq!(mine["last_used"].as_f64(), Some(9.0));
        assert_eq!(
            written["runtimes"]["docker-per-task:bbbbbbbbbbbbbbbb"]["container_name"],
            7
        );
        assert_eq!(written["runtimes"]["broken"], "not an object");
    }

    #[test]
    fn merge_keeps_foreign_entries_honours_newer_use_and_drops_only_what_it_removed() {
        let (a, b, c, d) = (
            "aaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbb",
            "cccccccccccccccc",
            "dddddddddddddddd",
        );
        let key = |h: &str| format!("docker-per-principal:{h}");
        let mut file = Registry::default();
        // a: ours, used since by the seed; b: the seed's own; c: ours, removed by us since;
        // d: ours before, taken out of the file by the seed's cleanup.
        file.runtimes.insert(key(a), entry(a, "docker-per-principal", 50.0));
        file.runtimes.insert(key(b), entry(b, "docker-per-principal", 10.0));
        file.runtimes.insert(key(c), entry(c, "docker-per-principal", 20.0));
        let ours = BTreeMap::from([
            (key(a), entry(a, "docker-per-principal", 40.0)),
            (key(d), entry(d, "docker-per-principal", 40.0)),
        ]);
        let written = HashMap::from([(key(a), 30.0), (key(c), 20.0), (key(d), 30.0)]);
        let outcome = file.merge(&ours, &written);
        assert_eq!(outcome.newer, vec![(key(a), 50.0)]);
        assert_eq!(outcome.vanished, vec![key(d)]);
        assert_eq!(file.runtimes[&key(a)].last_used, 50.0, "the later last use wins");
        assert!(file.runtimes.contains_key(&key(b)), "the seed's entry stays");
        assert!(!file.runtimes.contains_key(&key(c)), "what we removed goes");
        assert!(!file.runtimes.contains_key(&key(d)), "what the seed removed stays out");

        // An entry we removed that the seed has used again since is the seed's now.
        let mut file = Registry::default();
        file.runtimes.insert(key(c), entry(c, "docker-per-principal", 25.0));
        file.merge(&BTreeMap::new(), &HashMap::from([(key(c), 20.0)]));
        assert!(file.runtimes.contains_key(&key(c)));
    }

    #[test]
    fn expired_foreign_entries_follow_the_seeds_rule() {
        let mut file = Registry::default();
        file.runtimes
            .insert("k1".into(), entry("aaaaaaaaaaaaaaaa", "docker-per-task", 100.0));
        file.runtimes
            .insert("k2".into(), entry("bbbbbbbbbbbbbbbb", "docker-per-task", 0.0));
        file.runtimes
            .insert("k3".into(), entry("cccccccccccccccc", "docker-per-task", 195.0));
        file.runtimes
            .insert("k4".into(), entry("dddddddddddddddd", "docker-per-task", 100.0));
        let expired: Vec<_> = file
            .expired_foreign(200.0, Duration::from_secs(10), |h| h == "dddddddddddddddd")
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(expired, vec!["k1"]);
    }

    #[test]
    fn sync_writes_under_the_lock_and_sets_an_unreadable_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker_runtimes.json");
        std::fs::write(&path, "{not json").unwrap();
        let ours = BTreeMap::from([("k".to_owned(), entry("aaaaaaaaaaaaaaaa", "docker-per-task", 1.0))]);
        let synced = sync(&path, &ours, &HashMap::new()).unwrap();
        assert_eq!(synced.registry.runtimes.len(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("docker_runtimes.json.unreadable")).unwrap(),
            "{not json"
        );
        assert_eq!(Registry::load(&path).runtimes.len(), 1);

        // Another holder of the lock makes the sync give up after LOCK_WAIT, changing nothing.
        let held = lock(&path.with_extension("json.lock")).unwrap();
        let error = sync(&path, &BTreeMap::new(), &HashMap::from([("k".to_owned(), 1.0)]))
            .err()
            .expect("the lock is held");
        assert!(matches!(error, SyncError::Locked { .. }), "{error}");
        drop(held);
        assert_eq!(Registry::load(&path).runtimes.len(), 1);
        let synced = sync(&path, &BTreeMap::new(), &HashMap::from([("k".to_owned(), 1.0)])).unwrap();
        assert!(synced.registry.runtimes.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker_runtimes.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Registry::load(&path), Registry::default());
        assert_eq!(Registry::load(&dir.path().join("missing.json")), Registry::default());
    }
}

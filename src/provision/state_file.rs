//! The seed's registry file, `docker_runtimes.json`: last use per runtime, across restarts.
//!
//! Labels are immutable, so last use cannot live on the container; it lives here, in the
//! seed's format (`{"runtimes": {"<mode>:<hash>": {...}}}`, sorted keys, two-space indent),
//! written atomically (temporary file, fsync, rename) so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One runtime's line in the registry, with the seed's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    #[serde(default)]
    pub container_name: String,
    /// Seconds since the Unix epoch, as a float (Python's `time.time()`).
    #[serde(default)]
    pub last_used: f64,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub owner_hash: String,
    #[serde(default)]
    pub volume_name: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub runtimes: BTreeMap<String, RegistryEntry>,
}

impl Registry {
    /// Reads the file; a missing or unreadable file is an empty registry (as in the seed),
    /// logged when it exists but cannot be parsed.
    pub fn load(path: &Path) -> Registry {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Registry>(&bytes) {
                Ok(registry) => registry,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring unreadable runtime registry");
                    Registry::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read runtime registry");
                Registry::default()
            }
        }
    }

    /// The mode of the entry for an owner hash when there is none under `mode`: the mode
    /// another gateway (or the seed) made its runtime in.
    pub fn mode_of(&self, mode: &str, owner_hash: &str) -> Option<String> {
        if self.runtimes.contains_key(&format!("{mode}:{owner_hash}")) {
            return None;
        }
        self.runtimes
            .values()
            .find(|e| e.owner_hash == owner_hash)
            .map(|e| e.mode.clone())
            .filter(|m| !m.is_empty())
    }

    /// Last use recorded for an owner hash, preferring the given mode's key.
    pub fn last_used(&self, mode: &str, owner_hash: &str) -> Option<f64> {
        self.runtimes
            .get(&format!("{mode}:{owner_hash}"))
            .or_else(|| self.runtimes.values().find(|e| e.owner_hash == owner_hash))
            .map(|e| e.last_used)
            .filter(|t| t.is_finite() && *t > 0.0)
    }

    /// Writes the file atomically ([`crate::state_dir::write_atomically`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        crate::state_dir::write_atomically(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_format_and_writes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker_runtimes.json");
        // As the seed writes it: json.dump(payload, fh, indent=2, sort_keys=True)
        let seed = r#"{
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
        std::fs::write(&path, seed).unwrap();
        let registry = Registry::load(&path);
        assert_eq!(
            registry.last_used("docker-per-principal", "2bd806c97f0e00af"),
            Some(1764340000.25)
        );
        assert_eq!(
            registry.last_used("docker-per-task", "2bd806c97f0e00af"),
            Some(1764340000.25)
        );
        assert_eq!(registry.last_used("docker-per-task", "0000000000000000"), None);
        registry.save(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.trim_end(), seed);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
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

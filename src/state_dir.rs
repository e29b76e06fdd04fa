//! The gateway's state directory (the registry file, generated secrets): made `0700`, and
//! refused when anyone but this user could have planted or changed what is in it.
//!
//! The seed's default directory is under `/tmp`, which everyone can write to: a file put
//! there first by another user (say, a secrets file with a token of their choosing) must never
//! be believed. So a directory or file owned by another user, writable by group or others,
//! or reached through a symbolic link stops the gateway (exit status 2) with the path and
//! the reason.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a state path cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("refusing {path}: {reason}")]
pub struct UnsafePath {
    pub path: PathBuf,
    pub reason: String,
}

fn refuse(path: &Path, reason: impl Into<String>) -> UnsafePath {
    UnsafePath {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The user this process acts as.
fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks who owns `path` and who may write to it, without following a symbolic link.
fn check_owner_and_mode(path: &Path, metadata: &std::fs::Metadata) -> Result<(), UnsafePath> {
    if metadata.file_type().is_symlink() {
        return Err(refuse(
            path,
            "it is a symbolic link; point the setting at the real path",
        ));
    }
    let me = effective_uid();
    if metadata.uid() != me {
        return Err(refuse(
            path,
            format!("it is owned by uid {}, not by this user (uid {me})", metadata.uid()),
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(
            path,
            format!("group or others may write to it (mode {mode:04o}); chmod go-w it or pick another"),
        ));
    }
    Ok(())
}

/// Makes the state directory (mode `0700`) when missing, or checks the one that exists.
pub fn prepare(dir: &Path) -> Result<(), UnsafePath> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refuse(dir, format!("cannot create it: {e}")))?;
            // The umask may have taken bits away, never added any; say it once more.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| refuse(dir, format!("cannot set its mode: {e}")))?;
            Ok(())
        }
        Err(e) => Err(refuse(dir, format!("cannot read it: {e}"))),
        Ok(metadata) if metadata.file_type().is_symlink() => check_owner_and_mode(dir, &metadata),
        Ok(metadata) if !metadata.is_dir() => Err(refuse(dir, "it is not a directory")),
        Ok(metadata) => check_owner_and_mode(dir, &metadata),
    }
}

/// Checks a secrets file that exists: ours, not a link, not writable by others. One that
/// others may read is made `0600` again (with a warning): its secrets may have leaked.
pub fn check_secrets_file(path: &Path) -> Result<(), UnsafePath> {
    let metadata = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(path, format!("cannot read it: {e}"))),
        Ok(metadata) => metadata,
    };
    if !metadata.file_type().is_symlink() && !metadata.is_file() {
        return Err(refuse(path, "it is not a regular file"));
    }
    check_owner_and_mode(path, &metadata)?;
    if metadata.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:04o}", metadata.mode() & 0o7777),
            "the secrets file was readable by others; made it 0600 (rotate its secrets if others could log in here)"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| refuse(path, format!("cannot set its mode: {e}")))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it (mode 0600),
/// fsync, rename. The rename replaces a link planted at the path rather than writing
/// through it, and a crash never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        prepare(&dir).unwrap();
    }

    #[test]
    fn writable_by_others_or_a_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = prepare(&open).unwrap_err().to_string();
        assert!(error.contains("mode 0777") && error.contains("open"), "{error}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&open).unwrap();

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(prepare(&link).unwrap_err().to_string().contains("symbolic link"));

        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(prepare(&file).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn a_secrets_file_is_checked_and_made_private() {
        let root = tempfile::tempdir().unwrap();
        let secrets = root.path().join("lazygate-secrets.json");
        check_secrets_file(&secrets).unwrap();
        std::fs::write(&secrets, "{}").unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_secrets_file(&secrets).unwrap();
        assert_eq!(mode(&secrets), 0o600, "readable by others: made private");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            check_secrets_file(&secrets)
                .unwrap_err()
                .to_string()
                .contains("mode 0666")
        );
        let link = root.path().join("planted.json");
        std::os::unix::fs::symlink(&secrets, &link).unwrap();
        assert!(
            check_secrets_file(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
    }
}

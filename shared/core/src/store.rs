//! The object store port: the keys of the storage layout (`docs/STORAGE.md`), in a local folder or a bucket.
//!
//! The core reads and writes everything through [`ObjectStore`]; [`LocalStore`] keeps objects as
//! files under a data folder (the embedded default), and the AWS adapter keeps them in S3. Keys
//! are checked ([`check_key`]) before any adapter sees them, so no key is ever built from
//! unchecked input. Conditional writes ([`Condition`]) make pointer updates safe against
//! concurrent writers.
//!
//! What [`LocalStore`] guarantees for one data folder:
//!
//! - **Conditional writes are serialised across processes.** A write with
//!   [`Condition::IfAbsent`] or [`Condition::IfMatch`] holds an exclusive operating-system lock
//!   on the file `.twin-lock` in the data folder (created if absent) from its check of the
//!   current object until the new object is renamed into place, and holds the store's
//!   in-process mutex as well. Two processes on one folder (`twin serve` and a
//!   `twin gallery import`, say) therefore never both pass the check of the same object: one
//!   of them gets [`StoreError::PreconditionFailed`]. The lock is advisory (`flock` on Unix,
//!   `LockFileEx` on Windows, through [`std::fs::File::lock`]): it holds back other
//!   `LocalStore`s only, not programs that write the folder by other means, and network file
//!   systems may not honour it. The lock file must not be deleted while the folder is in use.
//! - **Unconditional writes take no lock.** Each is a rename of a complete temporary file, so a
//!   reader sees the old object or the new one, never a mix; of two concurrent unconditional
//!   writes to one key the later rename wins.
//! - **A write that returned survives a crash.** The temporary file is flushed to disk
//!   (`fsync`) before the rename and the folder holding it after the rename (Unix; elsewhere
//!   the rename is not synced). An error from syncing the folder means the object is in place
//!   but may not survive a crash.
//! - **Only the owner can read what it writes.** On Unix the files the store creates get mode
//!   `0600` and the folders `0700`, set when each is created (the process's umask can only
//!   narrow them further). Files and folders that already exist keep their modes.
//!
//! The store keeps its own files (temporaries of writes in progress, the lock) under names that
//! start with `.twin-`; no key may have a segment with that prefix.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a valid storage key.
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    /// The object does not exist.
    #[error("no object at {0}")]
    NotFound(String),
    /// A conditional write found the object changed (or present, or absent).
    #[error("the object at {0} changed since it was read")]
    PreconditionFailed(String),
    /// The backend failed.
    #[error("storage failed at {key}: {message}")]
    Backend {
        /// The key being accessed.
        key: String,
        /// What went wrong.
        message: String,
    },
}

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    None,
    /// Only if no object exists at the key.
    IfAbsent,
    /// Only if the object's current tag is this one.
    IfMatch(String),
}

/// An object read with its version tag (for conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The bytes.
    pub data: Vec<u8>,
    /// Version tag (content hash locally, ETag in S3).
    pub tag: String,
}

/// The object store port.
pub trait ObjectStore: Send + Sync {
    /// Reads an object, or `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Tagged>, StoreError>;
    /// Writes an object atomically under `cond`; returns its new tag.
    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError>;
    /// Deletes an object (no error when absent).
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Keys under `prefix` (which ends with `/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Reads `len` bytes of an object from byte `start` (fewer at its end), or `None` when it
    /// does not exist. Stores that can read part of an object (a file, an S3 `Range` request)
    /// override this; the default reads the whole object.
    fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(key)?.map(|t| {
            let from = (start as usize).min(t.data.len());
            let to = from.saturating_add(len as usize).min(t.data.len());
            t.data[from..to].to_vec()
        }))
    }
    /// Keys under `prefix` (as [`ObjectStore::list`]) with how long ago each was written, when
    /// the store knows (`None`: it does not say; the default).
    fn list_with_age(&self, prefix: &str) -> Result<Vec<(String, Option<Duration>)>, StoreError> {
        Ok(self.list(prefix)?.into_iter().map(|k| (k, None)).collect())
    }
    /// The file that holds `key`, for a store of files (so that a reader can map it into
    /// memory instead of copying it); `None` for other stores.
    fn file_of(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
}

/// A URL a client can `PUT` one object to directly (an S3 presigned PUT), with the headers it
/// must send (signed: another content type or length is refused by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    /// The URL.
    pub url: String,
    /// Headers the `PUT` must carry, e.g. `content-type` and `content-length`.
    pub headers: Vec<(String, String)>,
    /// Seconds the URL stays valid.
    pub expires_in: u64,
}

/// Hands out presigned uploads (the S3 adapter; the local server takes uploads itself).
pub trait UploadSigner: Send + Sync {
    /// A URL to `PUT` exactly `content_length` bytes of `content_type` to `key`.
    fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
    ) -> Result<PresignedPut, StoreError>;

    /// The origin (`scheme://host[:port]`) presigned uploads go to, which the web page must be
    /// allowed to connect to; `None` when unknown.
    fn upload_origin(&self) -> Option<String> {
        None
    }
}

/// Checks that a key is relative, `/`-separated, with segments of `[A-Za-z0-9._-]` that are
/// not `.` or `..`.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.chars().take(80).collect()))
    }
}

/// A content tag: FNV-1a 64 of the bytes, in hex.
pub fn content_tag(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Objects as files under a folder. Writes go to a temporary file and are renamed into place,
/// so a reader (or a crash) never sees half an object. Conditional writes are serialised across
/// threads and processes by an exclusive lock on `.twin-lock` in the folder (see the module
/// documentation for the guarantees).
pub struct LocalStore {
    root: PathBuf,
    lock: std::sync::Mutex<()>,
}

/// The name of the lock file in the data folder.
const LOCK_FILE: &str = ".twin-lock";
/// The prefix of the names the store keeps for itself (temporaries, the lock).
const RESERVED_PREFIX: &str = ".twin-";

/// The exclusive right to a conditional write: the in-process mutex and the lock on the lock
/// file, both released on drop (the file lock first).
struct WriterLock<'a> {
    file: std::fs::File,
    _thread: std::sync::MutexGuard<'a, ()>,
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first only makes it explicit.
        let _ = self.file.unlock();
    }
}

impl LocalStore {
    /// A store rooted at `root` (created if missing, with its missing parents: mode `0700` on
    /// Unix).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        create_dirs(root).map_err(|e| backend(&root.display().to_string(), e))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
            lock: std::sync::Mutex::new(()),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding `key`. Refused: keys that fail [`check_key`], and keys with a segment
    /// starting with `.twin-` (the store's own files).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(RESERVED_PREFIX)) {
            return Err(StoreError::InvalidKey(key.chars().take(80).collect()));
        }
        Ok(self.root.join(key))
    }

    /// Takes the in-process mutex, then an exclusive lock on the folder's lock file (creating
    /// it, mode `0600` on Unix), waiting for other threads and processes that hold them.
    fn lock_writers(&self, key: &str) -> Result<WriterLock<'_>, StoreError> {
        let thread = crate::sync::lock(&self.lock);
        let path = self.root.join(LOCK_FILE);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| {
            backend(
                key,
                format!("cannot open the lock file {}: {e}", path.display()),
            )
        })?;
        file.lock().map_err(|e| {
            backend(
                key,
                format!("cannot lock the lock file {}: {e}", path.display()),
            )
        })?;
        Ok(WriterLock {
            file,
            _thread: thread,
        })
    }
}

/// Creates `dir` and its missing parents, each new one with mode `0700` on Unix.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn backend(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        key: key.to_string(),
        message: e.to_string(),
    }
}

impl ObjectStore for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Tagged>, StoreError> {
        let path = self.path_of(key)?;
        match std::fs::read(&path) {
            Ok(data) => {
                let tag = content_tag(&data);
                Ok(Some(Tagged { data, tag }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(key, e)),
        }
    }

    fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        use std::io::{Read, Seek};
        let path = self.path_of(key)?;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(backend(key, e)),
        };
        f.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| backend(key, e))?;
        let mut out = Vec::new();
        f.take(len)
            .read_to_end(&mut out)
            .map_err(|e| backend(key, e))?;
        Ok(Some(out))
    }

    fn file_of(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    fn list_with_age(&self, prefix: &str) -> Result<Vec<(String, Option<Duration>)>, StoreError> {
        let now = std::time::SystemTime::now();
        Ok(self
            .list(prefix)?
            .into_iter()
            .map(|k| {
                let age = self
                    .path_of(&k)
                    .ok()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .and_then(|m| m.modified().ok())
                    .map(|t| now.duration_since(t).unwrap_or_default());
                (k, age)
            })
            .collect())
    }

    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().expect("a key has a parent folder");
        create_dirs(dir).map_err(|e| backend(key, e))?;
        // Held from the check until after the rename, so no other writer in any process can
        // pass the same check in between.
        let _guard = if cond == Condition::None {
            None
        } else {
            Some(self.lock_writers(key)?)
        };
        match &cond {
            Condition::None => {}
            Condition::IfAbsent => {
                if path.exists() {
                    return Err(StoreError::PreconditionFailed(key.to_string()));
                }
            }
            Condition::IfMatch(tag) => match self.get(key)? {
                Some(cur) if &cur.tag == tag => {}
                _ => return Err(StoreError::PreconditionFailed(key.to_string())),
            },
        }
        crate::fsutil::write_atomic_private::<std::io::Error>(&path, |w| w.write_all(data))
            .map_err(|e| backend(key, e))?;
        Ok(content_tag(data))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                // Folders left empty go too (their names can be a person's slug).
                let mut dir = path.parent();
                while let Some(d) = dir {
                    if d == self.root || std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = prefix.trim_end_matches('/');
        check_key(trimmed)?;
        let base = self.root.join(trimmed);
        let mut out = Vec::new();
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend(prefix, e)),
            };
            for e in entries {
                let e = e.map_err(|e| backend(prefix, e))?;
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".twin-") {
                    continue; // a temporary file of an interrupted write
                }
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a//b",
            "a/./b",
            "a b",
            "ü",
            "a/b\\c",
            "crops/x/..",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "dataset/CURRENT",
            "crops/lin_manuel/u-1/100.png",
            "models/3/model.onnx",
        ] {
            check_key(good).unwrap();
        }
    }

    #[test]
    fn local_store_round_trip_and_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.get("dataset/CURRENT").unwrap(), None);
        let t1 = s.put("dataset/CURRENT", b"1", Condition::IfAbsent).unwrap();
        assert!(matches!(
            s.put("dataset/CURRENT", b"x", Condition::IfAbsent),
            Err(StoreError::PreconditionFailed(_))
        ));
        let t2 = s
            .put("dataset/CURRENT", b"2", Condition::IfMatch(t1.clone()))
            .unwrap();
        assert!(matches!(
            s.put("dataset/CURRENT", b"3", Condition::IfMatch(t1)),
            Err(StoreError::PreconditionFailed(_))
        ));
        assert_eq!(
            s.get("dataset/CURRENT").unwrap().unwrap(),
            Tagged {
                data: b"2".to_vec(),
                tag: t2
            }
        );
        s.put("crops/a/u/1.png", b"p", Condition::None).unwrap();
        s.put("crops/a/u/2.png", b"p", Condition::None).unwrap();
        s.put("crops/b/v/1.png", b"p", Condition::None).unwrap();
        assert_eq!(
            s.list("crops/a/").unwrap(),
            vec!["crops/a/u/1.png", "crops/a/u/2.png"]
        );
        assert_eq!(s.list("crops/").unwrap().len(), 3);
        assert!(s.list("nothing/").unwrap().is_empty());
        s.delete("crops/a/u/1.png").unwrap();
        s.delete("crops/a/u/1.png").unwrap();
        assert_eq!(s.list("crops/a/").unwrap(), vec!["crops/a/u/2.png"]);
        s.delete("crops/a/u/2.png").unwrap();
        assert!(
            !dir.path().join("crops/a").exists(),
            "empty folders are removed"
        );
        assert!(dir.path().join("crops/b/v").exists());
        assert!(s.get("../etc/passwd").is_err());
    }

    #[test]
    fn the_stores_own_names_are_not_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        s.put("dataset/CURRENT", b"1", Condition::IfAbsent).unwrap();
        assert!(dir.path().join(LOCK_FILE).is_file());
        for key in [".twin-lock", "dataset/.twin-x.tmp"] {
            assert!(matches!(
                s.put(key, b"x", Condition::None),
                Err(StoreError::InvalidKey(_))
            ));
            assert!(matches!(s.get(key), Err(StoreError::InvalidKey(_))));
            assert!(matches!(s.delete(key), Err(StoreError::InvalidKey(_))));
        }
    }

    #[test]
    fn conditional_writes_wait_for_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        // Another process's lock on the same file (a separate open file holds its own lock).
        let other = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join(LOCK_FILE))
            .unwrap();
        other.lock().unwrap();
        // Unconditional writes do not wait.
        s.put("crops/a/u/1.png", b"p", Condition::None).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let r = s.put("dataset/CURRENT", b"1", Condition::IfAbsent);
                done_tx.send(r.is_ok()).unwrap();
            });
            let waited = done_rx.recv_timeout(std::time::Duration::from_millis(300));
            assert!(
                waited.is_err(),
                "the write went ahead while the lock was held"
            );
            other.unlock().unwrap();
            assert!(done_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap());
        });
    }

    #[cfg(unix)]
    #[test]
    fn files_and_folders_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let s = LocalStore::open(&root).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        s.put("crops/a/u/1.png", b"p", Condition::None).unwrap();
        s.put("dataset/CURRENT", b"1", Condition::IfAbsent).unwrap();
        assert_eq!(mode(&root.join("crops/a/u/1.png")), 0o600);
        assert_eq!(mode(&root.join("dataset/CURRENT")), 0o600);
        assert_eq!(mode(&root.join(LOCK_FILE)), 0o600);
        for d in ["crops", "crops/a", "crops/a/u", "dataset"] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
    }
}

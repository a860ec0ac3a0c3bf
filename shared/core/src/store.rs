//! The object store port: the keys of the storage layout (`docs/STORAGE.md`), in a local folder or a bucket.
//!
//! The core reads and writes everything through [`ObjectStore`]; [`LocalStore`] keeps objects as
//! files under a data folder (the embedded default), and the AWS adapter keeps them in S3. Keys
//! are checked ([`check_key`]) before any adapter sees them, so no key is ever built from
//! unchecked input. Conditional writes ([`Condition`]) make pointer updates safe against
//! concurrent writers.

use std::path::{Path, PathBuf};

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
/// so a reader (or a crash) never sees half an object. Conditional writes are serialised within
/// the process.
pub struct LocalStore {
    root: PathBuf,
    lock: std::sync::Mutex<()>,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| backend(&root.display().to_string(), e))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
            lock: std::sync::Mutex::new(()),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding `key`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
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

    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().expect("a key has a parent folder");
        std::fs::create_dir_all(dir).map_err(|e| backend(key, e))?;
        let _guard = if cond == Condition::None {
            None
        } else {
            Some(crate::sync::lock(&self.lock))
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
        crate::fsutil::write_atomic::<std::io::Error>(&path, |w| w.write_all(data))
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
}

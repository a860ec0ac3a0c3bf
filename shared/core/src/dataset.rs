//! Dataset versions: immutable manifests and embedding files, and the `CURRENT` pointer.
//!
//! A version is `dataset/versions/<n>.json` (the identities, their crops, the uploads applied)
//! with `dataset/embeddings/<n>.bin` (one little-endian `f32` row per crop, in manifest order).
//! A commit claims `n` by creating the manifest (create-if-absent), writes the embeddings, and
//! only then moves `dataset/CURRENT` with a conditional write on the tag it read: readers never
//! see a half-written version, a crash leaves the last complete version current, and two
//! writers can never lose each other's version (the loser re-reads and tries again). Applying
//! the same upload twice changes nothing; erased uploads never come back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::keys::{embeddings_key, manifest_key, DATASET_CURRENT};
use crate::messages::IngestMessage;
use crate::store::{Condition, ObjectStore, StoreError};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// Attempts at moving `CURRENT` before giving up on contention.
const COMMIT_ATTEMPTS: usize = 20;

/// A failure of the dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored version is damaged.
    #[error("dataset version {version} is damaged: {message}")]
    Corrupt {
        /// The version.
        version: u64,
        /// What is wrong.
        message: String,
    },
    /// Embeddings of the wrong length.
    #[error("an embedding has {got} values, the dataset holds {want}")]
    Dimension {
        /// Found.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// Other writers kept moving `CURRENT`.
    #[error("could not commit a dataset version after {COMMIT_ATTEMPTS} attempts (too many concurrent writers)")]
    Contention,
}

/// One identity of the gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `[a-z0-9_]` key.
    pub slug: String,
    /// The name shown to people.
    pub display_name: String,
    /// Keys of its aligned chips, one embedding row each.
    pub crops: Vec<String>,
    /// Uploads its crops came from.
    pub uploads: Vec<String>,
}

/// An immutable dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub v: u32,
    /// This version's number.
    pub version: u64,
    /// The version it was made from.
    pub parent: Option<u64>,
    /// Embedding length.
    pub dim: usize,
    /// Total crops (embedding rows).
    pub rows: usize,
    /// Identities sorted by slug; their crops' rows follow this order.
    pub identities: Vec<Identity>,
    /// Uploads already applied (so a repeated message changes nothing).
    pub applied_uploads: BTreeSet<String>,
    /// Uploads of erased identities (so they never come back).
    pub erased_uploads: BTreeSet<String>,
}

impl Manifest {
    /// The empty dataset.
    pub fn empty(dim: usize) -> Self {
        Manifest {
            v: MANIFEST_VERSION,
            version: 0,
            parent: None,
            dim,
            rows: 0,
            identities: Vec::new(),
            applied_uploads: BTreeSet::new(),
            erased_uploads: BTreeSet::new(),
        }
    }

    /// The identity with this slug.
    pub fn identity(&self, slug: &str) -> Option<&Identity> {
        self.identities
            .binary_search_by(|i| i.slug.as_str().cmp(slug))
            .ok()
            .map(|i| &self.identities[i])
    }
}

/// A version with its embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The manifest.
    pub manifest: Manifest,
    /// `rows × dim` values, row-major in manifest order.
    pub embeddings: Vec<f32>,
}

/// A change to apply.
#[derive(Debug, Clone)]
pub enum Update {
    /// Add an upload's crops (one embedding per crop, in the message's order).
    Add {
        /// The ingest message.
        message: IngestMessage,
        /// One row per crop.
        embeddings: Vec<Vec<f32>>,
    },
    /// Erase an identity and everything it uploaded.
    Erase {
        /// Its slug.
        slug: String,
    },
}

/// Reads the current version, if any.
pub fn load_current(store: &dyn ObjectStore) -> Result<Option<Snapshot>, DatasetError> {
    Ok(read_current(store)?.map(|(s, _)| s))
}

/// Reads the current version's manifest only, if any: for callers that need the identities,
/// the applied uploads or the version number and not the embeddings.
pub fn load_current_manifest(store: &dyn ObjectStore) -> Result<Option<Manifest>, DatasetError> {
    current_version(store)?
        .map(|(n, _)| load_manifest(store, n))
        .transpose()
}

/// The version `dataset/CURRENT` names, with the pointer's tag.
fn current_version(store: &dyn ObjectStore) -> Result<Option<(u64, String)>, DatasetError> {
    let Some(ptr) = store.get(DATASET_CURRENT)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&ptr.data);
    let n: u64 = text.trim().parse().map_err(|_| DatasetError::Corrupt {
        version: 0,
        message: format!("CURRENT holds {:?}", text.trim()),
    })?;
    Ok(Some((n, ptr.tag)))
}

fn read_current(store: &dyn ObjectStore) -> Result<Option<(Snapshot, String)>, DatasetError> {
    current_version(store)?
        .map(|(n, tag)| Ok((load_version(store, n)?, tag)))
        .transpose()
}

/// Reads version `n`'s manifest, checked to add up.
pub fn load_manifest(store: &dyn ObjectStore, n: u64) -> Result<Manifest, DatasetError> {
    let corrupt = |m: String| DatasetError::Corrupt {
        version: n,
        message: m,
    };
    let m = store
        .get(&manifest_key(n))?
        .ok_or_else(|| corrupt("its manifest is missing".into()))?;
    let manifest: Manifest = serde_json::from_slice(&m.data).map_err(|e| corrupt(e.to_string()))?;
    let rows: usize = manifest.identities.iter().map(|i| i.crops.len()).sum();
    if manifest.version != n || rows != manifest.rows {
        return Err(corrupt("its manifest does not add up".into()));
    }
    Ok(manifest)
}

/// Reads version `n`.
pub fn load_version(store: &dyn ObjectStore, n: u64) -> Result<Snapshot, DatasetError> {
    let corrupt = |m: String| DatasetError::Corrupt {
        version: n,
        message: m,
    };
    let manifest = load_manifest(store, n)?;
    let rows = manifest.rows;
    let bin = store
        .get(&embeddings_key(n))?
        .ok_or_else(|| corrupt("its embeddings are missing".into()))?;
    if bin.data.len() != rows * manifest.dim * 4 {
        return Err(corrupt(format!(
            "{} bytes of embeddings for {rows} rows of {}",
            bin.data.len(),
            manifest.dim
        )));
    }
    let embeddings = bin
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Snapshot {
        manifest,
        embeddings,
    })
}

/// Applies `updates` to the current version and commits the result; returns the version now
/// current (unchanged when the updates change nothing).
pub fn commit(
    store: &dyn ObjectStore,
    dim: usize,
    updates: &[Update],
) -> Result<u64, DatasetError> {
    for u in updates {
        if let Update::Add { embeddings, .. } = u {
            if let Some(e) = embeddings.iter().find(|e| e.len() != dim) {
                return Err(DatasetError::Dimension {
                    got: e.len(),
                    want: dim,
                });
            }
        }
    }
    for _ in 0..COMMIT_ATTEMPTS {
        let (base, tag) = match read_current(store)? {
            Some((s, tag)) => (s, Some(tag)),
            None => (
                Snapshot {
                    manifest: Manifest::empty(dim),
                    embeddings: Vec::new(),
                },
                None,
            ),
        };
        let Some(mut next) = apply(&base, updates) else {
            return Ok(base.manifest.version);
        };
        // Claim a version number by creating its manifest; numbers taken by an interrupted or
        // competing commit are skipped.
        let mut n = base.manifest.version + 1;
        loop {
            next.manifest.version = n;
            next.manifest.parent = (base.manifest.version > 0).then_some(base.manifest.version);
            let body = serde_json::to_vec_pretty(&next.manifest).expect("a manifest serializes");
            match store.put(&manifest_key(n), &body, Condition::IfAbsent) {
                Ok(_) => break,
                Err(StoreError::PreconditionFailed(_)) => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let mut bin = Vec::with_capacity(next.embeddings.len() * 4);
        for v in &next.embeddings {
            bin.extend_from_slice(&v.to_le_bytes());
        }
        store.put(&embeddings_key(n), &bin, Condition::None)?;
        let cond = match tag {
            Some(t) => Condition::IfMatch(t),
            None => Condition::IfAbsent,
        };
        match store.put(DATASET_CURRENT, n.to_string().as_bytes(), cond) {
            Ok(_) => {
                tracing::info!(
                    version = n,
                    rows = next.manifest.rows,
                    identities = next.manifest.identities.len(),
                    "dataset version committed"
                );
                return Ok(n);
            }
            Err(StoreError::PreconditionFailed(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DatasetError::Contention)
}

/// The version `updates` make of `base`, or `None` when they change nothing.
pub fn apply(base: &Snapshot, updates: &[Update]) -> Option<Snapshot> {
    let dim = base.manifest.dim;
    // Identity → its (crop key, embedding) rows.
    let mut ids: BTreeMap<String, (Identity, Vec<f32>)> = BTreeMap::new();
    let mut row = 0;
    for ident in &base.manifest.identities {
        let n = ident.crops.len();
        let emb = base.embeddings[row * dim..(row + n) * dim].to_vec();
        row += n;
        ids.insert(ident.slug.clone(), (ident.clone(), emb));
    }
    let mut applied = base.manifest.applied_uploads.clone();
    let mut erased = base.manifest.erased_uploads.clone();
    let mut changed = false;
    for u in updates {
        match u {
            Update::Add {
                message: m,
                embeddings,
            } => {
                if applied.contains(&m.upload_id) || erased.contains(&m.upload_id) {
                    continue;
                }
                applied.insert(m.upload_id.clone());
                changed = true;
                if m.crops.is_empty() {
                    continue;
                }
                let entry = ids.entry(m.slug.clone()).or_insert_with(|| {
                    (
                        Identity {
                            slug: m.slug.clone(),
                            display_name: m.display_name.clone(),
                            crops: Vec::new(),
                            uploads: Vec::new(),
                        },
                        Vec::new(),
                    )
                });
                entry.0.display_name = m.display_name.clone();
                entry.0.uploads.push(m.upload_id.clone());
                for (k, e) in m.crops.iter().zip(embeddings) {
                    if !entry.0.crops.contains(k) {
                        entry.0.crops.push(k.clone());
                        entry.1.extend_from_slice(e);
                    }
                }
            }
            Update::Erase { slug } => {
                if let Some((ident, _)) = ids.remove(slug) {
                    erased.extend(ident.uploads);
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return None;
    }
    let mut identities = Vec::with_capacity(ids.len());
    let mut embeddings = Vec::new();
    for (_, (ident, emb)) in ids {
        embeddings.extend(emb);
        identities.push(ident);
    }
    let rows = identities.iter().map(|i| i.crops.len()).sum();
    Some(Snapshot {
        manifest: Manifest {
            v: MANIFEST_VERSION,
            version: base.manifest.version,
            parent: None,
            dim,
            rows,
            identities,
            applied_uploads: applied,
            erased_uploads: erased,
        },
        embeddings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    fn add(slug: &str, upload: &str, n: usize, value: f32) -> Update {
        Update::Add {
            message: IngestMessage {
                v: 1,
                upload_id: upload.into(),
                slug: slug.into(),
                display_name: slug.to_uppercase(),
                source_key: format!("uploads/{slug}/{upload}.mp4"),
                crops: (0..n)
                    .map(|i| format!("crops/{slug}/{upload}/{}.png", i * 100))
                    .collect(),
                rejected: Default::default(),
            },
            embeddings: (0..n).map(|i| vec![value + i as f32; 2]).collect(),
        }
    }

    #[test]
    fn commits_versions_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(load_current(&s).unwrap(), None);
        assert_eq!(commit(&s, 2, &[add("bob", "u1", 2, 1.0)]).unwrap(), 1);
        assert_eq!(commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap(), 2);
        // The same message again: nothing changes.
        assert_eq!(commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap(), 2);
        let snap = load_current(&s).unwrap().unwrap();
        assert_eq!(
            snap.manifest
                .identities
                .iter()
                .map(|i| i.slug.as_str())
                .collect::<Vec<_>>(),
            ["ada", "bob"]
        );
        assert_eq!(snap.embeddings, vec![5.0, 5.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(snap.manifest.parent, Some(1));
    }

    #[test]
    fn erased_uploads_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0), add("ada", "u2", 1, 5.0)]).unwrap();
        let v = commit(&s, 2, &[Update::Erase { slug: "bob".into() }]).unwrap();
        // A late duplicate of bob's upload message arrives after the erase.
        assert_eq!(commit(&s, 2, &[add("bob", "u1", 2, 1.0)]).unwrap(), v);
        let snap = load_current(&s).unwrap().unwrap();
        assert!(snap.manifest.identity("bob").is_none());
        assert_eq!(snap.manifest.rows, 1);
        // A new enrollment of the same person is a new upload and is added.
        commit(&s, 2, &[add("bob", "u3", 1, 9.0)]).unwrap();
        assert_eq!(
            load_current(&s)
                .unwrap()
                .unwrap()
                .manifest
                .identity("bob")
                .unwrap()
                .uploads,
            ["u3"]
        );
    }

    #[test]
    fn an_interrupted_commit_leaves_the_last_version_and_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 1, 1.0)]).unwrap();
        // A crash after claiming version 2 (manifest written, CURRENT not moved).
        s.put(&manifest_key(2), b"{ half", Condition::IfAbsent)
            .unwrap();
        assert_eq!(load_current(&s).unwrap().unwrap().manifest.version, 1);
        assert_eq!(commit(&s, 2, &[add("ada", "u2", 1, 2.0)]).unwrap(), 3);
        assert_eq!(load_current(&s).unwrap().unwrap().manifest.rows, 2);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LocalStore::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    commit(
                        &*s,
                        2,
                        &[add(&format!("p{i}"), &format!("u{i}"), 1, i as f32)],
                    )
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let snap = load_current(&*s).unwrap().unwrap();
        assert_eq!(
            snap.manifest.identities.len(),
            8,
            "every writer's identity is in the final version"
        );
    }

    #[test]
    fn damaged_versions_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 1, 1.0)]).unwrap();
        s.put(&embeddings_key(1), b"abc", Condition::None).unwrap();
        assert!(matches!(
            load_current(&s),
            Err(DatasetError::Corrupt { version: 1, .. })
        ));
        assert!(matches!(
            commit(&s, 3, &[add("x", "u9", 1, 1.0)]),
            Err(DatasetError::Dimension { got: 2, want: 3 })
        ));
    }
}

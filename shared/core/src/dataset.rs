//! Dataset versions: append-only segments, small version files, and the `CURRENT` pointer
//! (`docs/STORAGE.md`).
//!
//! A segment is immutable: `dataset/segments/<id>.json` (its identities, their crops, the
//! uploads it applied) and `dataset/segments/<id>.bin` (one little-endian `f32` row per crop, in
//! the order of the `.json`), its id a hash of its content. A version is
//! `dataset/versions/<n>.json`: the segments it is made of, oldest first, and the people erased
//! since the rows were written (their rows in earlier segments are dead). A commit writes one new
//! segment with what is new (kilobytes for one person, whatever the gallery's size), claims `n`
//! by creating the version file (create-if-absent), and only then moves `dataset/CURRENT` with a
//! conditional write on the tag it read: readers never see a half-written version, a crash leaves
//! the last complete version current, and two writers can never lose each other's version (the
//! loser re-reads and tries again). Applying the same upload twice changes nothing; erased
//! uploads never come back.
//!
//! Compaction ([`compact`]) writes the live rows as one segment, makes that the current version,
//! and deletes the older versions and the segments only they used: an erased person's rows, name
//! and crops are then physically gone. It also migrates a format-1 store (one manifest and one
//! embeddings file per version, every commit rewriting both) to this format.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::keys::{
    embeddings_key, manifest_key, manifest_version_of, segment_meta_key, segment_rows_key,
    DATASET_CURRENT, DATASET_EMBEDDINGS_V1, DATASET_VERSIONS,
};
use crate::messages::IngestMessage;
use crate::store::{content_tag, Condition, ObjectStore, StoreError};

/// The storage format this build writes (version files and segments).
pub const FORMAT_VERSION: u32 = 2;
/// The first format: a whole manifest and a whole embeddings file per version.
pub const FORMAT_V1: u32 = 1;
/// The format of the in-memory [`Manifest`] view.
pub const MANIFEST_VERSION: u32 = FORMAT_VERSION;
/// Attempts at moving `CURRENT` before giving up on contention.
const COMMIT_ATTEMPTS: usize = 20;
/// Segments a version may have before a writer compacts it.
pub const COMPACT_AFTER_SEGMENTS: usize = 16;

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

/// A dataset version as the product reads it: every live identity (the segments merged, the
/// erased left out), the uploads applied and those erased.
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
    /// Refuse these uploads for good (an erased person's enrollments that were never indexed:
    /// a late message for one of them changes nothing).
    Refuse {
        /// The upload ids.
        uploads: Vec<String>,
    },
}

/// `dataset/versions/<n>.json` (format 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFile {
    /// Format version (2).
    pub v: u32,
    /// This version's number.
    pub version: u64,
    /// The version it was made from.
    pub parent: Option<u64>,
    /// Embedding length.
    pub dim: usize,
    /// Its segments, oldest first.
    pub segments: Vec<SegmentRef>,
    /// People erased since some of their rows were written: a slug's rows in the first `n`
    /// segments are dead (rows in later segments are a new enrollment's). Emptied by compaction.
    #[serde(default)]
    pub erased: BTreeMap<String, usize>,
    /// Uploads refused for good (erased people's).
    #[serde(default)]
    pub erased_uploads: BTreeSet<String>,
}

/// One segment of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Its id (`dataset/segments/<id>.json` and `.bin`).
    pub id: String,
    /// Its rows.
    pub rows: usize,
}

/// `dataset/segments/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Format version (2).
    pub v: u32,
    /// Embedding length.
    pub dim: usize,
    /// Rows in `.bin`.
    pub rows: usize,
    /// Identities in row order (an identity's crops are its rows, in order).
    pub identities: Vec<Identity>,
    /// Uploads this segment applied (some may have brought no crop).
    pub uploads: BTreeSet<String>,
}

/// A format-1 manifest (`dataset/versions/<n>.json` with the whole gallery).
#[derive(Deserialize)]
struct ManifestV1 {
    version: u64,
    parent: Option<u64>,
    dim: usize,
    rows: usize,
    identities: Vec<Identity>,
    applied_uploads: BTreeSet<String>,
    erased_uploads: BTreeSet<String>,
}

/// A version file as stored: this format or the first.
enum Stored {
    V2(VersionFile),
    V1(Box<ManifestV1>),
}

/// Reads the current version, if any; a damaged one falls back to the newest good version
/// (the error is logged).
pub fn load_current(store: &dyn ObjectStore) -> Result<Option<Snapshot>, DatasetError> {
    Ok(read_current(store)?.map(|(s, _)| s))
}

/// Reads the current version's manifest only, if any: for callers that need the identities,
/// the applied uploads or the version number and not the embeddings.
pub fn load_current_manifest(store: &dyn ObjectStore) -> Result<Option<Manifest>, DatasetError> {
    let Some((n, _)) = current_version(store)? else {
        return Ok(None);
    };
    with_fallback(store, n, |v| load_manifest(store, v)).map(Some)
}

/// The uploads the current version refuses for good (erased people's), read from its version
/// file alone (no segment is read).
pub fn refused_uploads(store: &dyn ObjectStore) -> Result<BTreeSet<String>, DatasetError> {
    let Some((n, _)) = current_version(store)? else {
        return Ok(BTreeSet::new());
    };
    Ok(match with_fallback(store, n, |v| read_stored(store, v))? {
        Stored::V2(f) => f.erased_uploads,
        Stored::V1(m) => m.erased_uploads,
    })
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

/// `read(n)`, or when version `n` is damaged, `read` of the newest older version that is not
/// (logged). Store failures are not damage and are returned as they are.
fn with_fallback<T>(
    store: &dyn ObjectStore,
    n: u64,
    read: impl Fn(u64) -> Result<T, DatasetError>,
) -> Result<T, DatasetError> {
    let first = match read(n) {
        Ok(t) => return Ok(t),
        Err(e @ DatasetError::Corrupt { .. }) => e,
        Err(e) => return Err(e),
    };
    let mut older: Vec<u64> = store
        .list(DATASET_VERSIONS)?
        .iter()
        .filter_map(|k| manifest_version_of(k))
        .filter(|&v| v < n)
        .collect();
    older.sort_unstable_by(|a, b| b.cmp(a));
    for v in older {
        if let Ok(t) = read(v) {
            tracing::error!(error = %first, serving = v, "the current dataset version is damaged; the newest good one is used");
            return Ok(t);
        }
    }
    Err(first)
}

fn read_current(store: &dyn ObjectStore) -> Result<Option<(Snapshot, String)>, DatasetError> {
    let Some((n, tag)) = current_version(store)? else {
        return Ok(None);
    };
    Ok(Some((
        with_fallback(store, n, |v| load_version(store, v))?,
        tag,
    )))
}

fn corrupt(version: u64) -> impl Fn(String) -> DatasetError {
    move |message| DatasetError::Corrupt { version, message }
}

/// Reads version `n`'s file, in either format.
fn read_stored(store: &dyn ObjectStore, n: u64) -> Result<Stored, DatasetError> {
    let bad = corrupt(n);
    let m = store
        .get(&manifest_key(n))?
        .ok_or_else(|| bad("its manifest is missing".into()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&m.data).map_err(|e| bad(e.to_string()))?;
    let v = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
    let stored = match v as u32 {
        FORMAT_V1 => Stored::V1(Box::new(
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))?,
        )),
        FORMAT_VERSION => {
            Stored::V2(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?)
        }
        other => return Err(bad(format!("format {other} is not one this build reads"))),
    };
    let version = match &stored {
        Stored::V1(m) => m.version,
        Stored::V2(f) => f.version,
    };
    if version != n {
        return Err(bad(format!("its file says version {version}")));
    }
    Ok(stored)
}

/// Reads a segment's description.
fn read_segment_meta(
    store: &dyn ObjectStore,
    n: u64,
    seg: &SegmentRef,
) -> Result<SegmentMeta, DatasetError> {
    let bad = corrupt(n);
    let key = segment_meta_key(&seg.id).map_err(|e| bad(e.to_string()))?;
    let obj = store
        .get(&key)?
        .ok_or_else(|| bad(format!("segment {} is missing", seg.id)))?;
    let meta: SegmentMeta =
        serde_json::from_slice(&obj.data).map_err(|e| bad(format!("segment {}: {e}", seg.id)))?;
    let rows: usize = meta.identities.iter().map(|i| i.crops.len()).sum();
    if rows != meta.rows || meta.rows != seg.rows {
        return Err(bad(format!("segment {} does not add up", seg.id)));
    }
    Ok(meta)
}

/// Reads a segment's embeddings.
fn read_segment_rows(
    store: &dyn ObjectStore,
    n: u64,
    seg: &SegmentRef,
    dim: usize,
) -> Result<Vec<f32>, DatasetError> {
    let bad = corrupt(n);
    let key = segment_rows_key(&seg.id).map_err(|e| bad(e.to_string()))?;
    let obj = store
        .get(&key)?
        .ok_or_else(|| bad(format!("the rows of segment {} are missing", seg.id)))?;
    decode_rows(&obj.data, seg.rows, dim).map_err(|m| bad(format!("segment {}: {m}", seg.id)))
}

fn decode_rows(data: &[u8], rows: usize, dim: usize) -> Result<Vec<f32>, String> {
    if data.len() != rows * dim * 4 {
        return Err(format!(
            "{} bytes of embeddings for {rows} rows of {dim}",
            data.len()
        ));
    }
    Ok(data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn encode_rows(rows: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 4);
    for v in rows {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The live identities of a version, merged across its segments (later segments add crops and
/// rename), each with where its rows are: `(segment index, row)` per crop.
struct Merged {
    identities: BTreeMap<String, (Identity, Vec<(usize, usize)>)>,
    applied: BTreeSet<String>,
}

fn merge(file: &VersionFile, metas: &[SegmentMeta]) -> Merged {
    let mut identities: BTreeMap<String, (Identity, Vec<(usize, usize)>)> = BTreeMap::new();
    let mut applied = BTreeSet::new();
    for (si, meta) in metas.iter().enumerate() {
        applied.extend(meta.uploads.iter().cloned());
        let mut row = 0;
        for ident in &meta.identities {
            let dead = file.erased.get(&ident.slug).is_some_and(|&upto| si < upto);
            let first = row;
            row += ident.crops.len();
            if dead {
                continue;
            }
            let entry = identities.entry(ident.slug.clone()).or_insert_with(|| {
                (
                    Identity {
                        slug: ident.slug.clone(),
                        display_name: ident.display_name.clone(),
                        crops: Vec::new(),
                        uploads: Vec::new(),
                    },
                    Vec::new(),
                )
            });
            entry.0.display_name = ident.display_name.clone();
            for u in &ident.uploads {
                if !entry.0.uploads.contains(u) {
                    entry.0.uploads.push(u.clone());
                }
            }
            for (i, k) in ident.crops.iter().enumerate() {
                if !entry.0.crops.contains(k) {
                    entry.0.crops.push(k.clone());
                    entry.1.push((si, first + i));
                }
            }
        }
    }
    for u in &file.erased_uploads {
        applied.remove(u);
    }
    Merged {
        identities,
        applied,
    }
}

fn manifest_of(file: &VersionFile, merged: &Merged) -> Manifest {
    let identities: Vec<Identity> = merged.identities.values().map(|(i, _)| i.clone()).collect();
    Manifest {
        v: MANIFEST_VERSION,
        version: file.version,
        parent: file.parent,
        dim: file.dim,
        rows: identities.iter().map(|i| i.crops.len()).sum(),
        identities,
        applied_uploads: merged.applied.clone(),
        erased_uploads: file.erased_uploads.clone(),
    }
}

/// Version `n`'s file and its segments' descriptions (a format-1 version read as one segment).
fn read_file_and_metas(
    store: &dyn ObjectStore,
    n: u64,
) -> Result<(VersionFile, Vec<SegmentMeta>), DatasetError> {
    match read_stored(store, n)? {
        Stored::V2(file) => {
            let metas = file
                .segments
                .iter()
                .map(|s| read_segment_meta(store, n, s))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((file, metas))
        }
        Stored::V1(m) => {
            let rows: usize = m.identities.iter().map(|i| i.crops.len()).sum();
            if rows != m.rows {
                return Err(corrupt(n)("its manifest does not add up".into()));
            }
            let meta = SegmentMeta {
                v: FORMAT_VERSION,
                dim: m.dim,
                rows,
                identities: m.identities,
                uploads: m.applied_uploads,
            };
            let file = VersionFile {
                v: FORMAT_V1,
                version: m.version,
                parent: m.parent,
                dim: m.dim,
                segments: vec![SegmentRef {
                    id: String::new(),
                    rows,
                }],
                erased: BTreeMap::new(),
                erased_uploads: m.erased_uploads,
            };
            Ok((file, vec![meta]))
        }
    }
}

/// Reads version `n`'s manifest (identities and uploads; no embeddings).
pub fn load_manifest(store: &dyn ObjectStore, n: u64) -> Result<Manifest, DatasetError> {
    let (file, metas) = read_file_and_metas(store, n)?;
    Ok(manifest_of(&file, &merge(&file, &metas)))
}

/// Reads version `n` with its embeddings.
pub fn load_version(store: &dyn ObjectStore, n: u64) -> Result<Snapshot, DatasetError> {
    let (file, metas) = read_file_and_metas(store, n)?;
    let merged = merge(&file, &metas);
    let mut segment_rows: Vec<Vec<f32>> = if file.v == FORMAT_V1 {
        let bin = store
            .get(&embeddings_key(n))?
            .ok_or_else(|| corrupt(n)("its embeddings are missing".into()))?;
        vec![decode_rows(&bin.data, metas[0].rows, file.dim).map_err(corrupt(n))?]
    } else {
        file.segments
            .iter()
            .map(|s| read_segment_rows(store, n, s, file.dim))
            .collect::<Result<_, _>>()?
    };
    let dim = file.dim;
    let manifest = manifest_of(&file, &merged);
    // A compacted version is one segment already in the manifest's order: its rows are taken as
    // they are (no second copy of a large gallery).
    let in_order = segment_rows.len() == 1
        && merged
            .identities
            .values()
            .flat_map(|(_, rows)| rows)
            .enumerate()
            .all(|(i, &(si, r))| si == 0 && r == i)
        && segment_rows[0].len() == manifest.rows * dim;
    let embeddings = if in_order {
        segment_rows.pop().unwrap_or_default()
    } else {
        let mut embeddings = Vec::with_capacity(manifest.rows * dim);
        for (_, rows) in merged.identities.values() {
            for &(si, r) in rows {
                embeddings.extend_from_slice(&segment_rows[si][r * dim..(r + 1) * dim]);
            }
        }
        embeddings
    };
    Ok(Snapshot {
        manifest,
        embeddings,
    })
}

/// The base a commit starts from: the current version (with its pointer's tag) or nothing.
struct Base {
    file: VersionFile,
    metas: Vec<SegmentMeta>,
    tag: Option<String>,
    /// A format-1 version: rewritten as one segment by the next commit.
    legacy_rows: Option<Vec<f32>>,
}

/// [`read_base_once`], read again when it fails as damaged because a compaction moved
/// `CURRENT` and deleted what the first read was following.
fn read_base(store: &dyn ObjectStore, dim: usize) -> Result<Base, DatasetError> {
    let mut last = None;
    for _ in 0..3 {
        let before = current_version(store)?;
        match read_base_once(store, dim) {
            Err(e @ DatasetError::Corrupt { .. }) => {
                if current_version(store)? == before {
                    return Err(e);
                }
                last = Some(e);
            }
            other => return other,
        }
    }
    Err(last.unwrap_or(DatasetError::Contention))
}

fn read_base_once(store: &dyn ObjectStore, dim: usize) -> Result<Base, DatasetError> {
    let Some((n, tag)) = current_version(store)? else {
        return Ok(Base {
            file: VersionFile {
                v: FORMAT_VERSION,
                version: 0,
                parent: None,
                dim,
                segments: Vec::new(),
                erased: BTreeMap::new(),
                erased_uploads: BTreeSet::new(),
            },
            metas: Vec::new(),
            tag: None,
            legacy_rows: None,
        });
    };
    let (file, metas) = with_fallback(store, n, |v| read_file_and_metas(store, v))?;
    let legacy_rows = if file.v == FORMAT_V1 {
        let s = load_version(store, file.version)?;
        Some(s.embeddings)
    } else {
        None
    };
    Ok(Base {
        file,
        metas,
        tag: Some(tag),
        legacy_rows,
    })
}

/// Writes a segment (its rows, then its description); returns its reference.
fn write_segment(
    store: &dyn ObjectStore,
    meta: &SegmentMeta,
    rows: &[f32],
) -> Result<SegmentRef, DatasetError> {
    let body = serde_json::to_vec(meta).expect("a segment description serializes");
    let bin = encode_rows(rows);
    let id = format!("{}{}", content_tag(&body), content_tag(&bin));
    let key = |f: fn(&str) -> Result<String, crate::names::NameError>| {
        f(&id).map_err(|e| DatasetError::Store(StoreError::InvalidKey(e.to_string())))
    };
    store.put(&key(segment_rows_key)?, &bin, Condition::None)?;
    store.put(&key(segment_meta_key)?, &body, Condition::None)?;
    Ok(SegmentRef {
        id,
        rows: meta.rows,
    })
}

/// Claims the next free version number from `after` by creating its file, then moves
/// `CURRENT` to it under `tag`. `Ok(None)`: another writer moved `CURRENT` first.
fn claim_and_publish(
    store: &dyn ObjectStore,
    mut next: VersionFile,
    after: u64,
    tag: Option<String>,
) -> Result<Option<u64>, DatasetError> {
    let mut n = after + 1;
    loop {
        next.version = n;
        let body = serde_json::to_vec_pretty(&next).expect("a version file serializes");
        match store.put(&manifest_key(n), &body, Condition::IfAbsent) {
            Ok(_) => break,
            Err(StoreError::PreconditionFailed(_)) => n += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let cond = match tag {
        Some(t) => Condition::IfMatch(t),
        None => Condition::IfAbsent,
    };
    match store.put(DATASET_CURRENT, n.to_string().as_bytes(), cond) {
        Ok(_) => Ok(Some(n)),
        Err(StoreError::PreconditionFailed(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What `updates` add to a base: the new segment's identities and rows, the people erased and
/// the uploads refused. `None` when they change nothing.
struct Delta {
    meta: SegmentMeta,
    rows: Vec<f32>,
    erased: BTreeSet<String>,
    refused: BTreeSet<String>,
}

fn delta(
    base: &Merged,
    base_refused: &BTreeSet<String>,
    dim: usize,
    updates: &[Update],
) -> Option<Delta> {
    // Slug → (identity entry, its rows) for what this batch adds.
    let mut added: BTreeMap<String, (Identity, Vec<f32>)> = BTreeMap::new();
    let mut uploads = BTreeSet::new();
    let mut erased = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut changed = false;
    for u in updates {
        match u {
            Update::Add {
                message: m,
                embeddings,
            } => {
                if base.applied.contains(&m.upload_id)
                    || uploads.contains(&m.upload_id)
                    || base_refused.contains(&m.upload_id)
                    || refused.contains(&m.upload_id)
                {
                    continue;
                }
                uploads.insert(m.upload_id.clone());
                changed = true;
                if m.crops.is_empty() {
                    continue;
                }
                let known: Option<&Vec<String>> = base
                    .identities
                    .get(&m.slug)
                    .filter(|_| !erased.contains(&m.slug))
                    .map(|(i, _)| &i.crops);
                let entry = added.entry(m.slug.clone()).or_insert_with(|| {
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
                    if !entry.0.crops.contains(k) && !known.is_some_and(|c| c.contains(k)) {
                        entry.0.crops.push(k.clone());
                        entry.1.extend_from_slice(e);
                    }
                }
            }
            Update::Erase { slug } => {
                let in_base = base.identities.get(slug).filter(|_| !erased.contains(slug));
                let in_batch = added.remove(slug);
                if in_base.is_none() && in_batch.is_none() {
                    continue;
                }
                if let Some((ident, _)) = in_base {
                    refused.extend(ident.uploads.iter().cloned());
                }
                if let Some((ident, _)) = in_batch {
                    for u in &ident.uploads {
                        uploads.remove(u);
                        refused.insert(u.clone());
                    }
                }
                erased.insert(slug.clone());
                changed = true;
            }
            Update::Refuse { uploads: ids } => {
                // Later messages of these uploads change nothing (an add earlier in the same
                // batch stands: updates apply in order).
                for id in ids {
                    if !base_refused.contains(id) && refused.insert(id.clone()) {
                        changed = true;
                    }
                }
            }
        }
    }
    if !changed {
        return None;
    }
    let mut identities = Vec::new();
    let mut rows = Vec::new();
    for (_, (ident, r)) in added {
        if ident.uploads.is_empty() {
            continue;
        }
        rows.extend(r);
        identities.push(ident);
    }
    let n = identities.iter().map(|i| i.crops.len()).sum();
    Some(Delta {
        meta: SegmentMeta {
            v: FORMAT_VERSION,
            dim,
            rows: n,
            identities,
            uploads,
        },
        rows,
        erased,
        refused,
    })
}

/// Applies `updates` to the current version and commits the result; returns the version now
/// current (unchanged when the updates change nothing). Writes one segment with what is new.
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
    for attempt in 0..COMMIT_ATTEMPTS {
        let base = read_base(store, dim)?;
        if base.file.v == FORMAT_VERSION && base.file.version > 0 && base.file.dim != dim {
            return Err(DatasetError::Dimension {
                got: dim,
                want: base.file.dim,
            });
        }
        let merged = merge(&base.file, &base.metas);
        let Some(d) = delta(&merged, &base.file.erased_uploads, dim, updates) else {
            return Ok(base.file.version);
        };
        let mut next = if base.legacy_rows.is_some() {
            // A format-1 base: its rows become this format's first segment.
            let rows = base.legacy_rows.as_deref().unwrap_or_default();
            let seg = write_segment(store, &base.metas[0], rows)?;
            VersionFile {
                v: FORMAT_VERSION,
                version: 0,
                parent: Some(base.file.version),
                dim,
                segments: vec![seg],
                erased: BTreeMap::new(),
                erased_uploads: base.file.erased_uploads.clone(),
            }
        } else {
            VersionFile {
                v: FORMAT_VERSION,
                version: 0,
                parent: (base.file.version > 0).then_some(base.file.version),
                dim,
                segments: base.file.segments.clone(),
                erased: base.file.erased.clone(),
                erased_uploads: base.file.erased_uploads.clone(),
            }
        };
        let upto = next.segments.len();
        for slug in &d.erased {
            next.erased.insert(slug.clone(), upto);
        }
        next.erased_uploads.extend(d.refused.iter().cloned());
        if !d.meta.uploads.is_empty() {
            next.segments.push(write_segment(store, &d.meta, &d.rows)?);
        }
        if let Some(n) = claim_and_publish(store, next, base.file.version, base.tag)? {
            tracing::info!(
                version = n,
                rows = d.meta.rows,
                erased = d.erased.len(),
                "dataset version committed"
            );
            return Ok(n);
        }
        back_off(attempt);
    }
    Err(DatasetError::Contention)
}

/// Waits a little before trying again after losing `CURRENT` to another writer: longer after
/// each loss, with jitter so that the writers stop meeting.
fn back_off(attempt: usize) {
    let mut b = [0u8; 2];
    let jitter = getrandom::fill(&mut b)
        .map(|_| u16::from_le_bytes(b) % 20)
        .unwrap_or(7);
    let ms = (attempt as u64 + 1).min(10) * 5 + jitter as u64;
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// The version current afterwards.
    pub version: u64,
    /// Live rows kept (now in one segment).
    pub rows: usize,
    /// Objects deleted: older version files, segments only they used, format-1 embeddings.
    pub deleted: usize,
}

/// Whether the current version should be compacted: a format-1 store (to migrate), erased
/// people whose rows are still stored, or more than [`COMPACT_AFTER_SEGMENTS`] segments. (Older
/// version files alone are no reason: they are small, name nobody, and go with the next
/// compaction.)
pub fn needs_compaction(store: &dyn ObjectStore) -> Result<bool, DatasetError> {
    let Some((n, _)) = current_version(store)? else {
        return Ok(false);
    };
    Ok(match read_stored(store, n)? {
        Stored::V1(_) => true,
        Stored::V2(f) => !f.erased.is_empty() || f.segments.len() > COMPACT_AFTER_SEGMENTS,
    })
}

/// Rewrites the current version's live rows as one segment (dropping erased people's rows and
/// names), makes it current (the same conditional write as a commit: a concurrent commit is
/// never lost, it wins and the compaction tries again), then deletes the older version files,
/// the segments no current version uses, and format-1 embeddings. A format-1 store becomes a
/// format-2 store here. Returns what it did (nothing to do: the current version unchanged).
pub fn compact(store: &dyn ObjectStore) -> Result<Compaction, DatasetError> {
    for attempt in 0..COMMIT_ATTEMPTS {
        let Some((n, tag)) = current_version(store)? else {
            return Ok(Compaction::default());
        };
        // The version file alone says whether there is anything to rewrite.
        if let Stored::V2(file) = with_fallback(store, n, |v| read_stored(store, v))? {
            if file.segments.len() <= 1 && file.erased.is_empty() {
                // Nothing to rewrite: only what older versions left is deleted.
                let deleted = collect_garbage(store, file.version)?;
                return Ok(Compaction {
                    version: file.version,
                    rows: file.segments.iter().map(|s| s.rows).sum(),
                    deleted,
                });
            }
        }
        let snapshot = with_fallback(store, n, |v| load_version(store, v))?;
        let version = {
            let m = &snapshot.manifest;
            let meta = SegmentMeta {
                v: FORMAT_VERSION,
                dim: m.dim,
                rows: m.rows,
                identities: m.identities.clone(),
                uploads: m.applied_uploads.clone(),
            };
            let mut segments = Vec::new();
            if m.rows > 0 || !meta.uploads.is_empty() {
                segments.push(write_segment(store, &meta, &snapshot.embeddings)?);
            }
            let next = VersionFile {
                v: FORMAT_VERSION,
                version: 0,
                parent: Some(m.version),
                dim: m.dim,
                segments,
                erased: BTreeMap::new(),
                erased_uploads: m.erased_uploads.clone(),
            };
            match claim_and_publish(store, next, n, Some(tag))? {
                Some(v) => v,
                None => {
                    back_off(attempt);
                    continue;
                }
            }
        };
        let deleted = collect_garbage(store, version)?;
        tracing::info!(
            version,
            rows = snapshot.manifest.rows,
            deleted,
            "dataset compacted"
        );
        return Ok(Compaction {
            version,
            rows: snapshot.manifest.rows,
            deleted,
        });
    }
    Err(DatasetError::Contention)
}

/// Deletes every version file older than `current`, the segments they use that `current` does
/// not, and format-1 embeddings. Segments of versions newer than `current` (a commit in flight)
/// are left alone.
fn collect_garbage(store: &dyn ObjectStore, current: u64) -> Result<usize, DatasetError> {
    let keep: BTreeSet<String> = match read_stored(store, current)? {
        Stored::V2(f) => f.segments.into_iter().map(|s| s.id).collect(),
        Stored::V1(_) => return Ok(0),
    };
    let mut deleted = 0;
    let mut older: Vec<u64> = store
        .list(DATASET_VERSIONS)?
        .iter()
        .filter_map(|k| manifest_version_of(k))
        .filter(|&v| v < current)
        .collect();
    older.sort_unstable();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for v in older {
        if let Ok(Stored::V2(f)) = read_stored(store, v) {
            for s in f.segments.iter().filter(|s| !keep.contains(&s.id)) {
                if !gone.insert(s.id.clone()) {
                    continue;
                }
                for key in [segment_rows_key(&s.id), segment_meta_key(&s.id)]
                    .into_iter()
                    .flatten()
                {
                    // Deleting what is gone already is no error (two compactions at once).
                    store.delete(&key)?;
                    deleted += 1;
                }
            }
        }
        store.delete(&manifest_key(v))?;
        deleted += 1;
    }
    for key in store.list(DATASET_EMBEDDINGS_V1)? {
        store.delete(&key)?;
        deleted += 1;
    }
    Ok(deleted)
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
        let seg = match read_stored(&s, 1).unwrap() {
            Stored::V2(f) => f.segments[0].id.clone(),
            Stored::V1(_) => unreachable!("this build writes format 2"),
        };
        s.put(&segment_rows_key(&seg).unwrap(), b"abc", Condition::None)
            .unwrap();
        assert!(matches!(
            load_current(&s),
            Err(DatasetError::Corrupt { version: 1, .. })
        ));
        assert!(matches!(
            commit(&s, 3, &[add("x", "u9", 1, 1.0)]),
            Err(DatasetError::Dimension { got: 2, want: 3 })
        ));
    }

    /// Every stored object's bytes, by key.
    fn everything(s: &LocalStore) -> Vec<(String, Vec<u8>)> {
        ["dataset/", "crops/", "status/", "models/", "uploads/"]
            .iter()
            .flat_map(|p| s.list(p).unwrap())
            .map(|k| {
                let d = s.get(&k).unwrap().unwrap().data;
                (k, d)
            })
            .collect()
    }

    #[test]
    fn a_commit_writes_what_is_new_not_the_gallery() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let many: Vec<Update> = (0..200)
            .map(|i| add(&format!("p{i:03}"), &format!("u{i}"), 10, i as f32))
            .collect();
        commit(&s, 2, &many).unwrap();
        let before: usize = everything(&s).iter().map(|(_, d)| d.len()).sum();
        commit(&s, 2, &[add("new", "u-new", 10, 7.0)]).unwrap();
        let after: usize = everything(&s).iter().map(|(_, d)| d.len()).sum();
        let written = after - before;
        assert!(
            written < 3_000,
            "one new person wrote {written} bytes over a {before}-byte gallery"
        );
        let snap = load_current(&s).unwrap().unwrap();
        assert_eq!(snap.manifest.identities.len(), 201);
        assert_eq!(snap.manifest.identity("new").unwrap().crops.len(), 10);
        // Rows follow the identities' order.
        let row = |slug: &str| {
            let i = snap
                .manifest
                .identities
                .iter()
                .position(|x| x.slug == slug)
                .unwrap();
            let r: usize = snap.manifest.identities[..i]
                .iter()
                .map(|x| x.crops.len())
                .sum();
            snap.embeddings[r * 2]
        };
        assert_eq!(row("new"), 7.0);
        assert_eq!(row("p150"), 150.0);
    }

    #[test]
    fn compaction_leaves_nothing_of_the_erased() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0), add("ada", "u2", 1, 5.0)]).unwrap();
        commit(&s, 2, &[add("bob", "u3", 1, 3.0), add("cy", "u4", 1, 6.0)]).unwrap();
        commit(&s, 2, &[Update::Erase { slug: "bob".into() }]).unwrap();
        // Erased but not yet compacted: gone from every read, still in the older segments.
        let snap = load_current(&s).unwrap().unwrap();
        assert!(snap.manifest.identity("bob").is_none());
        assert_eq!(snap.manifest.rows, 2);
        assert!(needs_compaction(&s).unwrap());
        let c = compact(&s).unwrap();
        assert_eq!(c.rows, 2);
        assert!(c.deleted > 0);
        assert!(!needs_compaction(&s).unwrap());
        for (key, data) in everything(&s) {
            let text = String::from_utf8_lossy(&data);
            assert!(
                !key.contains("bob") && !text.contains("bob") && !text.contains("BOB"),
                "{key} still names bob: {text}"
            );
            for v in [1.0f32, 2.0, 3.0] {
                let b = v.to_le_bytes();
                assert!(
                    !(key.ends_with(".bin") && data.chunks_exact(4).any(|c| c == b)),
                    "{key} still holds one of bob's values"
                );
            }
        }
        let after = load_current(&s).unwrap().unwrap();
        assert_eq!(after.manifest.identities.len(), 2);
        assert_eq!(after.embeddings, vec![5.0, 5.0, 6.0, 6.0]);
        // Bob's uploads stay refused; a new enrollment of bob is a new person.
        assert_eq!(
            commit(&s, 2, &[add("bob", "u1", 2, 1.0)]).unwrap(),
            after.manifest.version
        );
        commit(&s, 2, &[add("bob", "u9", 1, 9.0)]).unwrap();
        assert_eq!(
            load_current(&s)
                .unwrap()
                .unwrap()
                .manifest
                .identity("bob")
                .unwrap()
                .uploads,
            ["u9"]
        );
    }

    #[test]
    fn refused_uploads_never_come_in() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap();
        let v = commit(
            &s,
            2,
            &[Update::Refuse {
                uploads: vec!["u7".into()],
            }],
        )
        .unwrap();
        assert_eq!(commit(&s, 2, &[add("eve", "u7", 1, 1.0)]).unwrap(), v);
        assert!(load_current(&s)
            .unwrap()
            .unwrap()
            .manifest
            .identity("eve")
            .is_none());
    }

    #[test]
    fn a_format_1_store_is_read_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        // Two versions as the first format wrote them: a whole manifest and embeddings each.
        let v1 = |n: u64, ids: &[(&str, usize)], rows: &[f32]| {
            let identities: Vec<serde_json::Value> = ids
                .iter()
                .map(|(slug, crops)| {
                    serde_json::json!({
                        "slug": slug, "display_name": slug.to_uppercase(),
                        "crops": (0..*crops).map(|i| format!("crops/{slug}/up-{slug}/{i}.png")).collect::<Vec<_>>(),
                        "uploads": [format!("up-{slug}")],
                    })
                })
                .collect();
            let m = serde_json::json!({
                "v": 1, "version": n, "parent": if n > 1 { Some(n - 1) } else { None }, "dim": 2,
                "rows": ids.iter().map(|x| x.1).sum::<usize>(), "identities": identities,
                "applied_uploads": ids.iter().map(|(slug, _)| format!("up-{slug}")).collect::<Vec<_>>(),
                "erased_uploads": ["up-gone"],
            });
            s.put(
                &manifest_key(n),
                m.to_string().as_bytes(),
                Condition::IfAbsent,
            )
            .unwrap();
            s.put(&embeddings_key(n), &encode_rows(rows), Condition::None)
                .unwrap();
        };
        v1(1, &[("bob", 1)], &[1.0, 1.0]);
        v1(
            2,
            &[("ada", 2), ("bob", 1)],
            &[5.0, 5.0, 6.0, 6.0, 1.0, 1.0],
        );
        s.put(DATASET_CURRENT, b"2", Condition::None).unwrap();
        let read = load_current(&s).unwrap().unwrap();
        assert_eq!(read.manifest.identities.len(), 2);
        assert_eq!(read.embeddings, vec![5.0, 5.0, 6.0, 6.0, 1.0, 1.0]);
        assert!(read.manifest.erased_uploads.contains("up-gone"));
        assert!(needs_compaction(&s).unwrap());
        let c = compact(&s).unwrap();
        assert_eq!((c.version, c.rows), (3, 3));
        assert!(
            s.list(DATASET_EMBEDDINGS_V1).unwrap().is_empty(),
            "format-1 files are gone"
        );
        assert_eq!(s.list(DATASET_VERSIONS).unwrap(), [manifest_key(3)]);
        let migrated = load_current(&s).unwrap().unwrap();
        assert_eq!(migrated.embeddings, read.embeddings);
        assert_eq!(migrated.manifest.identities, read.manifest.identities);
        assert_eq!(
            migrated.manifest.applied_uploads,
            read.manifest.applied_uploads
        );
        // It goes on as a format-2 store; the erased upload stays refused.
        assert_eq!(commit(&s, 2, &[add("gone", "up-gone", 1, 1.0)]).unwrap(), 3);
        assert_eq!(commit(&s, 2, &[add("cy", "u5", 1, 8.0)]).unwrap(), 4);
    }

    #[test]
    fn a_commit_on_a_format_1_store_migrates_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let m = serde_json::json!({
            "v": 1, "version": 1, "parent": null, "dim": 2, "rows": 1,
            "identities": [{"slug": "bob", "display_name": "Bob", "crops": ["crops/bob/u1/0.png"], "uploads": ["u1"]}],
            "applied_uploads": ["u1"], "erased_uploads": [],
        });
        s.put(
            &manifest_key(1),
            m.to_string().as_bytes(),
            Condition::IfAbsent,
        )
        .unwrap();
        s.put(
            &embeddings_key(1),
            &encode_rows(&[1.0, 2.0]),
            Condition::None,
        )
        .unwrap();
        s.put(DATASET_CURRENT, b"1", Condition::None).unwrap();
        assert_eq!(commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap(), 2);
        let snap = load_current(&s).unwrap().unwrap();
        assert_eq!(snap.embeddings, vec![5.0, 5.0, 1.0, 2.0]);
        assert!(matches!(read_stored(&s, 2).unwrap(), Stored::V2(_)));
    }

    #[test]
    fn a_damaged_current_version_falls_back_to_the_newest_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 1, 1.0)]).unwrap();
        commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap();
        s.put(&manifest_key(2), b"{ damaged", Condition::None)
            .unwrap();
        let snap = load_current(&s).unwrap().unwrap();
        assert_eq!(snap.manifest.version, 1);
        assert_eq!(load_current_manifest(&s).unwrap().unwrap().version, 1);
        // A writer goes on from the good version (CURRENT's tag still guards the move).
        let v = commit(&s, 2, &[add("cy", "u3", 1, 2.0)]).unwrap();
        assert_eq!(v, 3);
        let snap = load_current(&s).unwrap().unwrap();
        assert!(snap.manifest.identity("bob").is_some() && snap.manifest.identity("cy").is_some());
    }
}

//! Dataset versions: append-only segments, small version files, and the `CURRENT` pointer
//! (`docs/STORAGE.md`).
//!
//! A segment is immutable: `dataset/segments/<id>.json` (its identities, how many rows each has,
//! the uploads it applied) and `dataset/segments/<id>.bin` (one little-endian `f32` row per crop,
//! in the order of the `.json`, then the crop keys of the rows: see [`crate::rows`]), its id a
//! hash of its content. A version is
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
//! and crops are then physically gone. It also migrates a format-2 store (crop keys in the
//! segment descriptions) and a format-1 store (one manifest and one
//! embeddings file per version, every commit rewriting both) to this format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::keys::{
    embeddings_key, manifest_key, manifest_version_of, segment_meta_key, segment_rows_key,
    DATASET_CURRENT, DATASET_EMBEDDINGS_V1, DATASET_SEGMENTS, DATASET_VERSIONS,
};
use crate::messages::IngestMessage;
use crate::rows::{self, KeySource, RowData, RowEncoding};
use crate::store::{content_tag, Condition, ObjectStore, StoreError};

/// The storage format this build writes (version files and segments): format 4 stores a
/// segment's rows as binary16 (half the bytes a cold start reads), its crop keys after them.
pub const FORMAT_VERSION: u32 = 4;
/// Format 3: `f32` rows, the crop keys after them in the `.bin`.
pub const FORMAT_V3: u32 = 3;
/// The first segmented format: crop keys in the segment's `.json`.
pub const FORMAT_V2: u32 = 2;
/// The first format: a whole manifest and a whole embeddings file per version.
pub const FORMAT_V1: u32 = 1;
/// The format of the in-memory [`Manifest`] view.
pub const MANIFEST_VERSION: u32 = FORMAT_VERSION;
/// Attempts at moving `CURRENT` before giving up on contention.
const COMMIT_ATTEMPTS: usize = 20;
/// How old a segment that no version names must be before a compaction deletes it (a commit
/// claims its number seconds after writing its segment; an hour is far beyond any commit).
pub const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
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
    /// An embedding value that is not a number or too large to store.
    #[error("an embedding has a value that is not finite or beyond ±65504, which the dataset cannot store")]
    Value,
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

/// `dataset/versions/<n>.json` (formats 2 and 3: a format-2 version lists format-2 segments,
/// whose `.json` holds the crop keys).
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

/// A format-3 segment description as this build writes it: each identity's number of rows
/// instead of its crop keys (those follow the rows in the `.bin`). Read as a [`SegmentHead`].
#[derive(Serialize)]
struct SegmentFile {
    v: u32,
    dim: usize,
    rows: usize,
    identities: Vec<SegmentIdentity>,
    uploads: BTreeSet<String>,
}

/// One identity of a [`SegmentFile`].
#[derive(Serialize)]
struct SegmentIdentity {
    slug: String,
    display_name: String,
    rows: usize,
    uploads: Vec<String>,
}

/// A version file as stored: segmented (formats 2 and 3) or the first format.
enum Stored {
    Segmented(VersionFile),
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
        Stored::Segmented(f) => f.erased_uploads,
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
        FORMAT_V2 | FORMAT_V3 | FORMAT_VERSION => {
            Stored::Segmented(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?)
        }
        other => return Err(bad(format!("format {other} is not one this build reads"))),
    };
    let version = match &stored {
        Stored::V1(m) => m.version,
        Stored::Segmented(f) => f.version,
    };
    if version != n {
        return Err(bad(format!("its file says version {version}")));
    }
    Ok(stored)
}

/// A segment's description as stored, in either segmented format: each identity's number of
/// rows, and in format 2 its crop keys too (formats 3 and 4 keep them in the `.bin`).
#[derive(Deserialize)]
struct SegmentHead {
    v: u32,
    dim: usize,
    rows: usize,
    identities: Vec<HeadIdentity>,
    uploads: BTreeSet<String>,
}

#[derive(Deserialize)]
struct HeadIdentity {
    slug: String,
    display_name: String,
    #[serde(default)]
    rows: usize,
    #[serde(default)]
    crops: Vec<String>,
    uploads: Vec<String>,
}

/// Reads and checks a segment's `.json` (its format, and that its rows add up), never its
/// `.bin`: what every reader of the segments starts from.
fn read_segment_head(
    store: &dyn ObjectStore,
    n: u64,
    seg: &SegmentRef,
) -> Result<SegmentHead, DatasetError> {
    let bad = corrupt(n);
    let key = segment_meta_key(&seg.id).map_err(|e| bad(e.to_string()))?;
    let obj = store
        .get(&key)?
        .ok_or_else(|| bad(format!("segment {} is missing", seg.id)))?;
    let mut head: SegmentHead =
        serde_json::from_slice(&obj.data).map_err(|e| bad(format!("segment {}: {e}", seg.id)))?;
    match head.v {
        FORMAT_V2 => head
            .identities
            .iter_mut()
            .for_each(|i| i.rows = i.crops.len()),
        FORMAT_V3 | FORMAT_VERSION => {}
        other => return Err(bad(format!("segment {} is in format {other}", seg.id))),
    }
    let rows: usize = head.identities.iter().map(|i| i.rows).sum();
    if rows != head.rows || head.rows != seg.rows {
        return Err(bad(format!("segment {} does not add up", seg.id)));
    }
    Ok(head)
}

/// How the rows of a segment in format `v` are stored.
fn row_encoding(v: u32) -> RowEncoding {
    if v >= FORMAT_VERSION {
        RowEncoding::F16
    } else {
        RowEncoding::F32
    }
}

/// Whether a segment in format `v` keeps its crop keys in a table after its rows.
fn keys_in_bin(v: u32) -> bool {
    v >= FORMAT_V3
}

/// Reads a segment's description with its crop keys (from the `.bin` from format 3 on).
fn read_segment_meta(
    store: &dyn ObjectStore,
    n: u64,
    seg: &SegmentRef,
) -> Result<SegmentMeta, DatasetError> {
    let bad = corrupt(n);
    let head = read_segment_head(store, n, seg)?;
    let mut keys = if keys_in_bin(head.v) {
        let bin = segment_rows_key(&seg.id).map_err(|e| bad(e.to_string()))?;
        let at = head.rows * head.dim * row_encoding(head.v).bytes();
        let table = store
            .get_range(&bin, at as u64, u64::MAX)?
            .ok_or_else(|| bad(format!("the rows of segment {} are missing", seg.id)))?;
        rows::decode_keys(&table, head.rows).map_err(|m| bad(format!("segment {}: {m}", seg.id)))?
    } else {
        Vec::new()
    }
    .into_iter();
    let identities = head
        .identities
        .into_iter()
        .map(|i| Identity {
            crops: if keys_in_bin(head.v) {
                keys.by_ref().take(i.rows).collect()
            } else {
                i.crops
            },
            slug: i.slug,
            display_name: i.display_name,
            uploads: i.uploads,
        })
        .collect();
    Ok(SegmentMeta {
        v: head.v,
        dim: head.dim,
        rows: head.rows,
        identities,
        uploads: head.uploads,
    })
}

/// Reads a segment's embeddings (from format 3 on, the `.bin` has its keys table after them).
fn read_segment_rows(
    store: &dyn ObjectStore,
    n: u64,
    seg: &SegmentRef,
    meta: &SegmentMeta,
) -> Result<Vec<f32>, DatasetError> {
    let bad = corrupt(n);
    let key = segment_rows_key(&seg.id).map_err(|e| bad(e.to_string()))?;
    let values = seg.rows * meta.dim;
    let encoding = row_encoding(meta.v);
    let data = if meta.v == FORMAT_V2 {
        store.get(&key)?.map(|t| t.data)
    } else {
        store.get_range(&key, 0, (values * encoding.bytes()) as u64)?
    }
    .ok_or_else(|| bad(format!("the rows of segment {} are missing", seg.id)))?;
    decode_rows(&data, seg.rows, meta.dim, encoding)
        .map_err(|m| bad(format!("segment {}: {m}", seg.id)))
}

fn decode_rows(
    data: &[u8],
    rows: usize,
    dim: usize,
    encoding: RowEncoding,
) -> Result<Vec<f32>, String> {
    if data.len() != rows * dim * encoding.bytes() {
        return Err(format!(
            "{} bytes of embeddings for {rows} rows of {dim}",
            data.len()
        ));
    }
    encoding
        .decode(data)
        .ok_or_else(|| "the embeddings are cut".to_string())
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
        Stored::Segmented(file) => {
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
        vec![
            decode_rows(&bin.data, metas[0].rows, file.dim, RowEncoding::F32)
                .map_err(corrupt(n))?,
        ]
    } else {
        file.segments
            .iter()
            .zip(&metas)
            .map(|(s, meta)| read_segment_rows(store, n, s, meta))
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

/// A version's people without their crop keys or rows: what callers that only ask who is in
/// the gallery, under which name, and which uploads are in or refused read (ingest, enrolling,
/// the dataset step, training's trigger, erasure). It reads the version file and the segments'
/// `.json`s, never a `.bin`.
#[derive(Debug, Clone, PartialEq)]
pub struct People {
    /// The version.
    pub version: u64,
    /// Live identities, sorted by slug.
    pub identities: Vec<Person>,
    /// Uploads already applied.
    pub applied_uploads: BTreeSet<String>,
    /// Uploads refused for good.
    pub erased_uploads: BTreeSet<String>,
}

/// One identity of [`People`].
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// Its slug.
    pub slug: String,
    /// Its name (the latest given).
    pub display_name: String,
    /// Its rows (crops).
    pub rows: usize,
    /// The uploads its crops came from.
    pub uploads: Vec<String>,
}

impl People {
    /// The identity with this slug.
    pub fn identity(&self, slug: &str) -> Option<&Person> {
        self.identities
            .binary_search_by(|i| i.slug.as_str().cmp(slug))
            .ok()
            .map(|i| &self.identities[i])
    }
}

/// Reads the current version's people (see [`People`]); a damaged version falls back to the
/// newest good one.
pub fn load_current_people(store: &dyn ObjectStore) -> Result<Option<People>, DatasetError> {
    let Some((n, _)) = current_version(store)? else {
        return Ok(None);
    };
    with_fallback(store, n, |v| load_people(store, v)).map(Some)
}

/// Reads version `n`'s people (see [`People`]).
pub fn load_people(store: &dyn ObjectStore, n: u64) -> Result<People, DatasetError> {
    let file = match read_stored(store, n)? {
        Stored::Segmented(f) => f,
        Stored::V1(_) => {
            let m = load_manifest(store, n)?;
            return Ok(People {
                version: m.version,
                identities: m
                    .identities
                    .into_iter()
                    .map(|i| Person {
                        rows: i.crops.len(),
                        slug: i.slug,
                        display_name: i.display_name,
                        uploads: i.uploads,
                    })
                    .collect(),
                applied_uploads: m.applied_uploads,
                erased_uploads: m.erased_uploads,
            });
        }
    };
    let mut people: BTreeMap<String, Person> = BTreeMap::new();
    let mut applied = BTreeSet::new();
    for (si, seg) in file.segments.iter().enumerate() {
        let p = read_segment_head(store, n, seg)?;
        applied.extend(p.uploads);
        for i in p.identities {
            if file.erased.get(&i.slug).is_some_and(|&upto| si < upto) {
                continue;
            }
            let e = people.entry(i.slug.clone()).or_insert_with(|| Person {
                slug: i.slug,
                display_name: String::new(),
                rows: 0,
                uploads: Vec::new(),
            });
            e.display_name = i.display_name;
            e.rows += i.rows;
            for u in i.uploads {
                if !e.uploads.contains(&u) {
                    e.uploads.push(u);
                }
            }
        }
    }
    for u in &file.erased_uploads {
        applied.remove(u);
    }
    Ok(People {
        version: file.version,
        identities: people.into_values().collect(),
        applied_uploads: applied,
        erased_uploads: file.erased_uploads,
    })
}

/// A row that belongs to no live identity (an erased person's, before compaction drops it).
pub const DEAD_ROW: u32 = u32::MAX;
/// Bytes per ranged read when a segment's rows are read from a store that is not a folder.
const RANGE_BYTES: usize = 8 << 20;
/// Ranged reads in flight at once.
const RANGE_READERS: usize = 8;

/// A version as a search reads it: each live identity's name, the identity of every row, and
/// each segment's rows with where its crop keys are. No crop key is read until a search returns
/// its row, and no norm or mean is computed: on a local store the rows are the segment files
/// mapped into memory, elsewhere they are read in parallel ranges.
#[derive(Debug)]
pub struct SearchVersion {
    /// The version.
    pub version: u64,
    /// Embedding length.
    pub dim: usize,
    /// (slug, display name) of each live identity, sorted by slug.
    pub names: Vec<(String, String)>,
    /// Each row's identity (an index into `names`) or [`DEAD_ROW`], segment after segment.
    pub owner: Vec<u32>,
    /// Each segment's rows and crop keys, in order.
    pub segments: Vec<(Arc<RowData>, KeySource)>,
}

impl From<Snapshot> for SearchVersion {
    fn from(s: Snapshot) -> Self {
        let mut owner = Vec::with_capacity(s.manifest.rows);
        let mut keys = Vec::with_capacity(s.manifest.rows);
        let mut names = Vec::with_capacity(s.manifest.identities.len());
        for (i, ident) in s.manifest.identities.into_iter().enumerate() {
            owner.extend(std::iter::repeat_n(i as u32, ident.crops.len()));
            keys.extend(ident.crops);
            names.push((ident.slug, ident.display_name));
        }
        SearchVersion {
            version: s.manifest.version,
            dim: s.manifest.dim,
            names,
            owner,
            segments: vec![(
                Arc::new(RowData::Owned(s.embeddings)),
                KeySource::Listed(keys),
            )],
        }
    }
}

/// Reads the current version for search (see [`SearchVersion`]); a damaged one falls back to the
/// newest good version.
pub fn load_current_for_search(
    store: &Arc<dyn ObjectStore>,
) -> Result<Option<SearchVersion>, DatasetError> {
    let Some((n, _)) = current_version(&**store)? else {
        return Ok(None);
    };
    with_fallback(&**store, n, |v| load_for_search(store, v)).map(Some)
}

/// Reads version `n` for search (see [`SearchVersion`]).
pub fn load_for_search(
    store: &Arc<dyn ObjectStore>,
    n: u64,
) -> Result<SearchVersion, DatasetError> {
    let bad = corrupt(n);
    let file = match read_stored(&**store, n)? {
        Stored::Segmented(f) => f,
        Stored::V1(_) => return Ok(load_version(&**store, n)?.into()),
    };
    // When the version file says every segment is in this format, the rows' encoding is known
    // before the segments' descriptions are read: the rows (most of the bytes) are then read from
    // the store at the same time as the descriptions, not after them. A local store maps them.
    let early = file.v == FORMAT_VERSION
        && file.segments.iter().all(|seg| {
            segment_rows_key(&seg.id)
                .ok()
                .and_then(|k| store.file_of(&k))
                .is_none()
        });
    let (lean, early_rows) = std::thread::scope(|scope| {
        let rows = early.then(|| {
            scope.spawn(|| {
                file.segments
                    .iter()
                    .map(|seg| {
                        let key = segment_rows_key(&seg.id).map_err(|e| bad(e.to_string()))?;
                        read_rows_in_ranges(
                            &**store,
                            n,
                            &seg.id,
                            &key,
                            seg.rows * file.dim,
                            RowEncoding::F16,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
        });
        let lean = file
            .segments
            .iter()
            .map(|seg| {
                let l = read_segment_head(&**store, n, seg)?;
                if l.dim != file.dim || (early && l.v != FORMAT_VERSION) {
                    return Err(bad(format!("segment {} does not add up", seg.id)));
                }
                Ok(l)
            })
            .collect::<Result<Vec<_>, DatasetError>>();
        let rows = rows.map(|r| {
            r.join()
                .unwrap_or_else(|_| Err(bad("reading the rows failed".into())))
        });
        (lean, rows)
    });
    let lean = lean?;
    let mut early_rows = early_rows.transpose()?.map(Vec::into_iter);
    let dead = |si: usize, slug: &str| file.erased.get(slug).is_some_and(|&upto| si < upto);
    // Later segments rename.
    let mut display: BTreeMap<&str, &str> = BTreeMap::new();
    for (si, l) in lean.iter().enumerate() {
        for i in l.identities.iter().filter(|i| !dead(si, &i.slug)) {
            display.insert(&i.slug, &i.display_name);
        }
    }
    let names: Vec<(String, String)> = display
        .into_iter()
        .map(|(s, d)| (s.to_string(), d.to_string()))
        .collect();
    let mut owner = Vec::with_capacity(lean.iter().map(|l| l.rows).sum());
    for (si, l) in lean.iter().enumerate() {
        for i in &l.identities {
            let idx = if dead(si, &i.slug) {
                DEAD_ROW
            } else {
                names
                    .binary_search_by(|(s, _)| s.as_str().cmp(&i.slug))
                    .map_or(DEAD_ROW, |x| x as u32)
            };
            owner.extend(std::iter::repeat_n(idx, i.rows));
        }
    }
    let mut segments = Vec::with_capacity(lean.len());
    for (seg, l) in file.segments.iter().zip(lean) {
        let key = segment_rows_key(&seg.id).map_err(|e| bad(e.to_string()))?;
        let encoding = row_encoding(l.v);
        let values = seg.rows * file.dim;
        let row_bytes = values * encoding.bytes();
        let in_bin = keys_in_bin(l.v);
        let table = if in_bin { (seg.rows + 1) * 4 } else { 0 };
        // The keys table is read in the background from now on: the first matches find their
        // rows' keys in memory (until it arrives, each lookup reads its key in ranges).
        let stored_keys = |key: String| {
            let keys = Arc::new(rows::StoredKeys::new(
                store.clone(),
                key,
                row_bytes as u64,
                seg.rows,
            ));
            keys.read_all_in_background();
            KeySource::Stored(keys)
        };
        let (data, keys) = if let Some(read) = early_rows.as_mut().and_then(Iterator::next) {
            (RowData::Owned(read), stored_keys(key))
        } else if let Some(map) = store.file_of(&key).and_then(|p| rows::map_file(&p)) {
            if map.len() < row_bytes + table || (table == 0 && map.len() != row_bytes) {
                return Err(bad(format!(
                    "segment {}: {} bytes of rows for {} rows of {}",
                    seg.id,
                    map.len(),
                    seg.rows,
                    file.dim
                )));
            }
            // `f32` rows are searched in place; binary16 rows are converted once.
            let data = match encoding {
                RowEncoding::F32 => rows::mapped_f32(map.clone(), values),
                RowEncoding::F16 => None,
            }
            .unwrap_or_else(|| {
                RowData::Owned(encoding.decode(&map[..row_bytes]).expect("whole values"))
            });
            let keys = if in_bin {
                KeySource::Mapped {
                    map,
                    at: row_bytes,
                    count: seg.rows,
                }
            } else {
                KeySource::Listed(l.identities.into_iter().flat_map(|i| i.crops).collect())
            };
            (data, keys)
        } else {
            let data = read_rows_in_ranges(&**store, n, &seg.id, &key, values, encoding)?;
            let keys = if in_bin {
                stored_keys(key)
            } else {
                KeySource::Listed(l.identities.into_iter().flat_map(|i| i.crops).collect())
            };
            (RowData::Owned(data), keys)
        };
        segments.push((Arc::new(data), keys));
    }
    Ok(SearchVersion {
        version: file.version,
        dim: file.dim,
        names,
        owner,
        segments,
    })
}

/// Reads the first `values` values of `key` (stored as `encoding`), in ranges of [`RANGE_BYTES`]
/// fetched by up to [`RANGE_READERS`] threads at once (a large segment on S3 arrives at the
/// bandwidth of several connections, not one).
fn read_rows_in_ranges(
    store: &dyn ObjectStore,
    n: u64,
    id: &str,
    key: &str,
    values: usize,
    encoding: RowEncoding,
) -> Result<Vec<f32>, DatasetError> {
    let bad = corrupt(n);
    let mut out = vec![0f32; values];
    let size = encoding.bytes();
    let per = RANGE_BYTES / size;
    let slots: Vec<std::sync::Mutex<(usize, &mut [f32])>> = out
        .chunks_mut(per)
        .enumerate()
        .map(std::sync::Mutex::new)
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<DatasetError>> = std::sync::Mutex::new(None);
    let read = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(slot) = slots.get(i) else { break };
        let mut slot = crate::sync::lock(slot);
        let (index, dst) = &mut *slot;
        let index = *index;
        let start = (index * per * size) as u64;
        let want = dst.len() * size;
        let got = match store.get_range(key, start, want as u64) {
            Ok(Some(b)) if b.len() == want => b,
            Ok(Some(b)) => {
                *crate::sync::lock(&failed) = Some(bad(format!(
                    "segment {id}: {} bytes of rows where {want} were expected",
                    b.len()
                )));
                break;
            }
            Ok(None) => {
                *crate::sync::lock(&failed) =
                    Some(bad(format!("the rows of segment {id} are missing")));
                break;
            }
            Err(e) => {
                *crate::sync::lock(&failed) = Some(e.into());
                break;
            }
        };
        encoding.decode_into(&got, dst);
    };
    let readers = RANGE_READERS.min(slots.len());
    if readers <= 1 {
        read();
    } else {
        std::thread::scope(|s| {
            for _ in 0..readers {
                s.spawn(read);
            }
        });
    }
    drop(slots);
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
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
    let file = SegmentFile {
        v: FORMAT_VERSION,
        dim: meta.dim,
        rows: meta.rows,
        identities: meta
            .identities
            .iter()
            .map(|i| SegmentIdentity {
                slug: i.slug.clone(),
                display_name: i.display_name.clone(),
                rows: i.crops.len(),
                uploads: i.uploads.clone(),
            })
            .collect(),
        uploads: meta.uploads.clone(),
    };
    let body = serde_json::to_vec(&file).expect("a segment description serializes");
    let mut bin = row_encoding(FORMAT_VERSION).encode(rows);
    rows::encode_keys(
        &mut bin,
        meta.identities
            .iter()
            .flat_map(|i| i.crops.iter().map(String::as_str)),
    );
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
    let cond = match tag {
        Some(t) => Condition::IfMatch(t),
        None => Condition::IfAbsent,
    };
    loop {
        next.version = n;
        let body = serde_json::to_vec_pretty(&next).expect("a version file serializes");
        match store.put(&manifest_key(n), &body, Condition::IfAbsent) {
            Ok(_) => break,
            Err(StoreError::PreconditionFailed(_)) => {
                if n == after + 1 && lands_claimed(store, n, after, &cond)? {
                    // The next version was another commit's, left unpublished: it is current
                    // now, and the caller starts again from it.
                    return Ok(None);
                }
                n += 1
            }
            Err(e) => return Err(e.into()),
        }
    }
    match store.put(DATASET_CURRENT, n.to_string().as_bytes(), cond) {
        Ok(_) => Ok(Some(n)),
        Err(StoreError::PreconditionFailed(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Publishes version `n` (claimed by a commit on top of `after` that stopped, or has yet to
/// publish, before moving `CURRENT`) when `CURRENT` is still `after` and every segment it names
/// is stored: a commit that failed or crashed after its claim is then not lost, and is not done
/// twice (its retry finds it applied), nor does it leave a gap in the versions. A commit still
/// in flight loses nothing either: it meant to publish the same file. Returns whether it did.
fn lands_claimed(
    store: &dyn ObjectStore,
    n: u64,
    after: u64,
    cond: &Condition,
) -> Result<bool, DatasetError> {
    let file = match read_stored(store, n) {
        Ok(Stored::Segmented(f)) => f,
        Ok(Stored::V1(_)) | Err(DatasetError::Corrupt { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.parent != (after > 0).then_some(after) {
        return Ok(false);
    }
    for seg in &file.segments {
        // A segment's description is written after its rows.
        let Ok(key) = segment_meta_key(&seg.id) else {
            return Ok(false);
        };
        if store.get_range(&key, 0, 1)?.is_none() {
            return Ok(false);
        }
    }
    match store.put(DATASET_CURRENT, n.to_string().as_bytes(), cond.clone()) {
        Ok(_) => {
            tracing::warn!(version = n, "an unpublished dataset version was published");
            Ok(true)
        }
        Err(StoreError::PreconditionFailed(_)) => Ok(false),
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
            if embeddings
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || v.abs() > rows::F16_MAX)
            {
                return Err(DatasetError::Value);
            }
        }
    }
    for attempt in 0..COMMIT_ATTEMPTS {
        let base = read_base(store, dim)?;
        if base.file.v != FORMAT_V1 && base.file.version > 0 && base.file.dim != dim {
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
                // A version that still lists older segments says the oldest format among them
                // (and is compacted, which rewrites them in this one).
                v: base
                    .metas
                    .iter()
                    .map(|m| m.v)
                    .min()
                    .unwrap_or(FORMAT_VERSION)
                    .min(FORMAT_VERSION),
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

/// Whether the current version should be compacted: a format-1 or format-2 store (to migrate), erased
/// people whose rows are still stored, or more than [`COMPACT_AFTER_SEGMENTS`] segments. (Older
/// version files alone are no reason: they are small, name nobody, and go with the next
/// compaction.)
pub fn needs_compaction(store: &dyn ObjectStore) -> Result<bool, DatasetError> {
    let Some((n, _)) = current_version(store)? else {
        return Ok(false);
    };
    Ok(match read_stored(store, n)? {
        Stored::V1(_) => true,
        Stored::Segmented(f) => {
            f.v < FORMAT_VERSION
                || !f.erased.is_empty()
                || f.segments.len() > COMPACT_AFTER_SEGMENTS
        }
    })
}

/// Rewrites the current version's live rows as one segment (dropping erased people's rows and
/// names), makes it current (the same conditional write as a commit: a concurrent commit is
/// never lost, it wins and the compaction tries again), then deletes the older version files,
/// the segments no current version uses, and format-1 embeddings. A format-1 or format-2 store
/// becomes a format-4 store here (so does a format-3 one). Returns what it did (nothing to do: the current version unchanged).
pub fn compact(store: &dyn ObjectStore) -> Result<Compaction, DatasetError> {
    for attempt in 0..COMMIT_ATTEMPTS {
        let Some((n, tag)) = current_version(store)? else {
            return Ok(Compaction::default());
        };
        // The version file alone says whether there is anything to rewrite.
        if let Stored::Segmented(file) = with_fallback(store, n, |v| read_stored(store, v))? {
            if file.v == FORMAT_VERSION && file.segments.len() <= 1 && file.erased.is_empty() {
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
        Stored::Segmented(f) => f.segments.into_iter().map(|s| s.id).collect(),
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
        if let Ok(Stored::Segmented(f)) = read_stored(store, v) {
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
    deleted += collect_orphans(store)?;
    Ok(deleted)
}

/// Deletes the segments that no version file names and that were written more than
/// [`ORPHAN_AGE`] ago: what a commit that stopped before claiming its number left (it may hold
/// rows of a person erased since). A younger unnamed segment may be a commit in flight and is
/// left alone; so is every segment of a store that does not say how old its objects are.
fn collect_orphans(store: &dyn ObjectStore) -> Result<usize, DatasetError> {
    let mut named: BTreeSet<String> = BTreeSet::new();
    for key in store.list(DATASET_VERSIONS)? {
        let Some(v) = manifest_version_of(&key) else {
            continue;
        };
        match read_stored(store, v) {
            Ok(Stored::Segmented(f)) => named.extend(f.segments.into_iter().map(|s| s.id)),
            Ok(Stored::V1(_)) => {}
            // A version file that cannot be read names nothing we can know of: keep them all.
            Err(DatasetError::Corrupt { .. }) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    let mut deleted = 0;
    for (key, age) in store.list_with_age(DATASET_SEGMENTS)? {
        let Some(id) = key
            .strip_prefix(DATASET_SEGMENTS)
            .and_then(|f| f.strip_suffix(".json").or_else(|| f.strip_suffix(".bin")))
        else {
            continue;
        };
        if !named.contains(id) && age.is_some_and(|a| a >= ORPHAN_AGE) {
            store.delete(&key)?;
            deleted += 1;
        }
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
            Stored::Segmented(f) => f.segments[0].id.clone(),
            Stored::V1(_) => unreachable!("this build writes format 3"),
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
            s.put(
                &embeddings_key(n),
                &RowEncoding::F32.encode(rows),
                Condition::None,
            )
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
        // It goes on as a format-3 store; the erased upload stays refused.
        assert_eq!(commit(&s, 2, &[add("gone", "up-gone", 1, 1.0)]).unwrap(), 3);
        assert_eq!(commit(&s, 2, &[add("cy", "u5", 1, 8.0)]).unwrap(), 4);
    }

    /// A segment the way format 2 wrote it: crop keys in the `.json`, rows alone in the `.bin`.
    fn put_format_2_segment(s: &LocalStore, meta: &SegmentMeta, rows: &[f32]) -> SegmentRef {
        let body = serde_json::to_vec(meta).unwrap();
        let bin = RowEncoding::F32.encode(rows);
        let id = format!("{}{}", content_tag(&body), content_tag(&bin));
        s.put(&segment_rows_key(&id).unwrap(), &bin, Condition::None)
            .unwrap();
        s.put(&segment_meta_key(&id).unwrap(), &body, Condition::None)
            .unwrap();
        SegmentRef {
            id,
            rows: meta.rows,
        }
    }

    fn ident(slug: &str, upload: &str, crops: usize) -> Identity {
        Identity {
            slug: slug.into(),
            display_name: slug.to_uppercase(),
            crops: (0..crops)
                .map(|i| format!("crops/{slug}/{upload}/{i}.png"))
                .collect(),
            uploads: vec![upload.into()],
        }
    }

    #[test]
    fn a_format_2_store_is_read_searched_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let seg = |ids: Vec<Identity>| SegmentMeta {
            v: FORMAT_V2,
            dim: 2,
            rows: ids.iter().map(|i| i.crops.len()).sum(),
            uploads: ids.iter().flat_map(|i| i.uploads.clone()).collect(),
            identities: ids,
        };
        let a = put_format_2_segment(&s, &seg(vec![ident("bob", "u1", 2)]), &[1.0, 1.0, 2.0, 2.0]);
        let b = put_format_2_segment(&s, &seg(vec![ident("ada", "u2", 1)]), &[5.0, 5.0]);
        let file = VersionFile {
            v: FORMAT_V2,
            version: 2,
            parent: Some(1),
            dim: 2,
            segments: vec![a, b],
            erased: BTreeMap::new(),
            erased_uploads: BTreeSet::new(),
        };
        s.put(
            &manifest_key(2),
            &serde_json::to_vec(&file).unwrap(),
            Condition::IfAbsent,
        )
        .unwrap();
        s.put(DATASET_CURRENT, b"2", Condition::None).unwrap();
        let read = load_current(&s).unwrap().unwrap();
        assert_eq!(read.embeddings, vec![5.0, 5.0, 1.0, 1.0, 2.0, 2.0]);
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path()).unwrap());
        let search = load_current_for_search(&store).unwrap().unwrap();
        assert_eq!(search.owner, [1, 1, 0]);
        assert_eq!(search.segments[1].1.key(0).unwrap(), "crops/ada/u2/0.png");
        // Migrated by the next compaction: one format-3 segment, the same gallery.
        assert!(needs_compaction(&s).unwrap());
        let c = compact(&s).unwrap();
        assert_eq!((c.version, c.rows), (3, 3));
        let Stored::Segmented(f) = read_stored(&s, 3).unwrap() else {
            panic!("segmented")
        };
        assert_eq!(f.v, FORMAT_VERSION);
        let meta = s
            .get(&segment_meta_key(&f.segments[0].id).unwrap())
            .unwrap()
            .unwrap();
        let text = String::from_utf8(meta.data).unwrap();
        assert!(
            !text.contains("crops/"),
            "format 3 keeps the keys in the .bin: {text}"
        );
        let migrated = load_current(&s).unwrap().unwrap();
        assert_eq!(
            migrated,
            Snapshot {
                manifest: Manifest {
                    version: 3,
                    parent: Some(2),
                    ..read.manifest.clone()
                },
                ..read
            }
        );
        assert!(!needs_compaction(&s).unwrap());
    }

    /// A segment the way format 3 wrote it: `f32` rows, then the keys table, in the `.bin`.
    fn put_format_3_segment(s: &LocalStore, ids: &[Identity], rows: &[f32]) -> SegmentRef {
        let n: usize = ids.iter().map(|i| i.crops.len()).sum();
        let body = serde_json::to_vec(&serde_json::json!({
            "v": 3, "dim": 2, "rows": n,
            "identities": ids.iter().map(|i| serde_json::json!({
                "slug": i.slug, "display_name": i.display_name, "rows": i.crops.len(),
                "uploads": i.uploads,
            })).collect::<Vec<_>>(),
            "uploads": ids.iter().flat_map(|i| i.uploads.clone()).collect::<BTreeSet<_>>(),
        }))
        .unwrap();
        let mut bin = RowEncoding::F32.encode(rows);
        rows::encode_keys(
            &mut bin,
            ids.iter().flat_map(|i| i.crops.iter().map(String::as_str)),
        );
        let id = format!("{}{}", content_tag(&body), content_tag(&bin));
        s.put(&segment_rows_key(&id).unwrap(), &bin, Condition::None)
            .unwrap();
        s.put(&segment_meta_key(&id).unwrap(), &body, Condition::None)
            .unwrap();
        SegmentRef { id, rows: n }
    }

    /// What a search reads: each segment's rows and row keys, in segment order.
    fn searched(store: &Arc<dyn ObjectStore>) -> (Vec<f32>, Vec<String>) {
        let v = load_current_for_search(store).unwrap().unwrap();
        let mut values = Vec::new();
        let mut keys = Vec::new();
        for (data, k) in &v.segments {
            values.extend_from_slice(data.values());
            keys.extend((0..data.values().len() / 2).map(|r| k.key(r).unwrap()));
        }
        (values, keys)
    }

    #[test]
    fn a_format_3_store_is_read_exactly_grows_and_is_migrated_to_binary16() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        // Values binary16 cannot hold exactly: a format-3 store must give them back as written.
        let bob_rows = [0.123_456_79f32, -0.2, 0.333_333_34, 0.1];
        let a = put_format_3_segment(&s, &[ident("bob", "u1", 2)], &bob_rows);
        let file = VersionFile {
            v: FORMAT_V3,
            version: 1,
            parent: None,
            dim: 2,
            segments: vec![a],
            erased: BTreeMap::new(),
            erased_uploads: BTreeSet::new(),
        };
        s.put(
            &manifest_key(1),
            &serde_json::to_vec(&file).unwrap(),
            Condition::IfAbsent,
        )
        .unwrap();
        s.put(DATASET_CURRENT, b"1", Condition::None).unwrap();
        let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path()).unwrap());
        let remote: Arc<dyn ObjectStore> = Arc::new(Remote(LocalStore::open(dir.path()).unwrap()));
        let bob_keys = vec![
            "crops/bob/u1/0.png".to_string(),
            "crops/bob/u1/1.png".into(),
        ];
        assert_eq!(load_current(&s).unwrap().unwrap().embeddings, bob_rows);
        for store in [&local, &remote] {
            assert_eq!(searched(store), (bob_rows.to_vec(), bob_keys.clone()));
        }

        // A commit adds a format-4 segment; the version says its oldest segment's format.
        let ada = Update::Add {
            message: IngestMessage {
                v: 1,
                upload_id: "u2".into(),
                slug: "ada".into(),
                display_name: "ADA".into(),
                source_key: "uploads/ada/u2.mp4".into(),
                crops: vec!["crops/ada/u2/0.png".into()],
                rejected: Default::default(),
            },
            embeddings: vec![vec![0.7, -0.123_456_79]],
        };
        assert_eq!(commit(&s, 2, &[ada]).unwrap(), 2);
        let Stored::Segmented(f) = read_stored(&s, 2).unwrap() else {
            panic!("segmented")
        };
        assert_eq!(f.v, FORMAT_V3);
        let ada_rows = RowEncoding::F16
            .decode(&RowEncoding::F16.encode(&[0.7, -0.123_456_79]))
            .unwrap();
        assert_ne!(ada_rows, [0.7, -0.123_456_79], "binary16 rounds them");
        let mixed = [bob_rows.to_vec(), ada_rows.clone()].concat();
        let mixed_keys = [bob_keys.clone(), vec!["crops/ada/u2/0.png".to_string()]].concat();
        for store in [&local, &remote] {
            assert_eq!(searched(store), (mixed.clone(), mixed_keys.clone()));
        }
        assert_eq!(
            load_current(&s).unwrap().unwrap().embeddings,
            [ada_rows.clone(), bob_rows.to_vec()].concat()
        );

        // The compaction rewrites it all in format 4: the same gallery, binary16 rows.
        assert!(needs_compaction(&s).unwrap());
        assert_eq!(compact(&s).unwrap().version, 3);
        let Stored::Segmented(f) = read_stored(&s, 3).unwrap() else {
            panic!("segmented")
        };
        assert_eq!((f.v, f.segments.len()), (FORMAT_VERSION, 1));
        let bin = s
            .get(&segment_rows_key(&f.segments[0].id).unwrap())
            .unwrap()
            .unwrap()
            .data;
        let key_bytes: usize = mixed_keys.iter().map(String::len).sum();
        assert_eq!(
            bin.len(),
            3 * 2 * 2 + 4 * 4 + key_bytes,
            "binary16 rows, then keys"
        );
        let whole = load_current(&s).unwrap().unwrap();
        let rounded = RowEncoding::F16
            .decode(&RowEncoding::F16.encode(&bob_rows))
            .unwrap();
        assert_eq!(whole.embeddings, [ada_rows, rounded].concat());
        for store in [&local, &remote] {
            let (values, keys) = searched(store);
            assert_eq!(values, whole.embeddings);
            assert_eq!(keys, [&mixed_keys[2..], &mixed_keys[..2]].concat());
        }
        assert!(!needs_compaction(&s).unwrap());
    }

    #[test]
    fn values_binary16_cannot_hold_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        for bad in [f32::NAN, f32::INFINITY, 70_000.0, -1e9] {
            let mut u = add("bob", "u1", 1, 1.0);
            if let Update::Add { embeddings, .. } = &mut u {
                embeddings[0][1] = bad;
            }
            assert!(
                matches!(commit(&s, 2, &[u]), Err(DatasetError::Value)),
                "{bad}"
            );
        }
        assert_eq!(load_current(&s).unwrap(), None);
        assert!(s.list(DATASET_SEGMENTS).unwrap().is_empty());
    }

    /// The local store without its file paths: rows and keys are read in ranges, as from S3.
    struct Remote(LocalStore);

    impl ObjectStore for Remote {
        fn get(&self, key: &str) -> Result<Option<crate::store::Tagged>, StoreError> {
            self.0.get(key)
        }
        fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
            self.0.put(key, data, cond)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.0.list(prefix)
        }
        fn get_range(
            &self,
            key: &str,
            start: u64,
            len: u64,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get_range(key, start, len)
        }
    }

    #[test]
    fn a_search_reads_what_a_whole_read_reads_mapped_or_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0), add("cy", "u3", 1, 9.0)]).unwrap();
        commit(&s, 2, &[add("ada", "u2", 3, 5.0)]).unwrap();
        commit(&s, 2, &[Update::Erase { slug: "cy".into() }]).unwrap();
        // Bob again after the erasure of cy, with a new name: later segments rename.
        let mut more = add("bob", "u4", 1, 7.0);
        if let Update::Add { message, .. } = &mut more {
            message.display_name = "Robert".into();
        }
        commit(&s, 2, &[more]).unwrap();
        let whole = load_current(&s).unwrap().unwrap();
        let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path()).unwrap());
        let remote: Arc<dyn ObjectStore> = Arc::new(Remote(LocalStore::open(dir.path()).unwrap()));
        for store in [local, remote] {
            let v = load_current_for_search(&store).unwrap().unwrap();
            assert_eq!(v.version, whole.manifest.version);
            let names: Vec<(String, String)> = whole
                .manifest
                .identities
                .iter()
                .map(|i| (i.slug.clone(), i.display_name.clone()))
                .collect();
            assert_eq!(v.names, names);
            assert_eq!(names[1], ("bob".to_string(), "Robert".to_string()));
            // Live rows, identity by identity, hold the whole read's rows and keys.
            let mut live: BTreeMap<u32, Vec<(Vec<f32>, String)>> = BTreeMap::new();
            let mut row = 0;
            for (data, keys) in &v.segments {
                for (r, x) in data.values().chunks_exact(2).enumerate() {
                    if v.owner[row] != DEAD_ROW {
                        live.entry(v.owner[row])
                            .or_default()
                            .push((x.to_vec(), keys.key(r).unwrap()));
                    } else {
                        assert_eq!(keys.key(r).unwrap(), "crops/cy/u3/0.png");
                    }
                    row += 1;
                }
            }
            let mut at = 0;
            for (i, ident) in whole.manifest.identities.iter().enumerate() {
                let expected: Vec<(Vec<f32>, String)> = ident
                    .crops
                    .iter()
                    .enumerate()
                    .map(|(j, k)| {
                        let r = at + j;
                        (whole.embeddings[r * 2..r * 2 + 2].to_vec(), k.clone())
                    })
                    .collect();
                assert_eq!(live[&(i as u32)], expected, "{}", ident.slug);
                at += ident.crops.len();
            }
            assert_eq!(at, whole.manifest.rows);
            assert_eq!(live.len(), names.len());
        }
    }

    #[test]
    fn segments_no_version_names_are_deleted_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0)]).unwrap();
        // A commit that wrote its segment and stopped: Ada's rows, named by no version.
        let Some(Delta { meta, rows, .. }) = delta(
            &merge(&read_base(&s, 2).unwrap().file, &[]),
            &BTreeSet::new(),
            2,
            &[add("ada", "u2", 1, 5.0)],
        ) else {
            panic!("a delta")
        };
        let orphan = write_segment(&s, &meta, &rows).unwrap();
        let files = |s: &LocalStore| s.list(DATASET_SEGMENTS).unwrap().len();
        assert_eq!(files(&s), 4);
        // Young: it may be a commit in flight.
        compact(&s).unwrap();
        assert_eq!(files(&s), 4);
        // An hour and more later it is deleted, and only it.
        for key in [segment_meta_key(&orphan.id), segment_rows_key(&orphan.id)] {
            let f = std::fs::File::options()
                .write(true)
                .open(s.path_of(&key.unwrap()).unwrap())
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - ORPHAN_AGE * 2)
                .unwrap();
        }
        let c = compact(&s).unwrap();
        assert_eq!((c.deleted, files(&s)), (2, 2));
        assert!(!s
            .list(DATASET_SEGMENTS)
            .unwrap()
            .iter()
            .any(|k| k.contains(&orphan.id)));
        assert_eq!(load_current(&s).unwrap().unwrap().manifest.rows, 2);
    }

    #[test]
    fn people_are_the_manifest_without_crop_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0), add("cy", "u3", 1, 9.0)]).unwrap();
        commit(&s, 2, &[add("ada", "u2", 3, 5.0), add("bob", "u4", 1, 2.0)]).unwrap();
        commit(&s, 2, &[Update::Erase { slug: "cy".into() }]).unwrap();
        let m = load_current_manifest(&s).unwrap().unwrap();
        let p = load_current_people(&s).unwrap().unwrap();
        assert_eq!(p.version, m.version);
        assert_eq!(p.applied_uploads, m.applied_uploads);
        assert_eq!(p.erased_uploads, m.erased_uploads);
        let want: Vec<Person> = m
            .identities
            .iter()
            .map(|i| Person {
                slug: i.slug.clone(),
                display_name: i.display_name.clone(),
                rows: i.crops.len(),
                uploads: i.uploads.clone(),
            })
            .collect();
        assert_eq!(p.identities, want);
        assert_eq!(p.identity("bob").unwrap().rows, 3);
        assert!(p.identity("cy").is_none());
    }

    #[test]
    fn a_damaged_keys_table_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        commit(&s, 2, &[add("bob", "u1", 2, 1.0)]).unwrap();
        let Stored::Segmented(f) = read_stored(&s, 1).unwrap() else {
            panic!("segmented")
        };
        let key = segment_rows_key(&f.segments[0].id).unwrap();
        let mut bin = s.get(&key).unwrap().unwrap().data;
        bin.truncate(bin.len() - 3);
        s.put(&key, &bin, Condition::None).unwrap();
        let err = load_current(&s).unwrap_err().to_string();
        assert!(err.contains("keys table"), "{err}");
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
            &RowEncoding::F32.encode(&[1.0, 2.0]),
            Condition::None,
        )
        .unwrap();
        s.put(DATASET_CURRENT, b"1", Condition::None).unwrap();
        assert_eq!(commit(&s, 2, &[add("ada", "u2", 1, 5.0)]).unwrap(), 2);
        let snap = load_current(&s).unwrap().unwrap();
        assert_eq!(snap.embeddings, vec![5.0, 5.0, 1.0, 2.0]);
        assert!(matches!(read_stored(&s, 2).unwrap(), Stored::Segmented(_)));
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

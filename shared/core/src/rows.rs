//! A segment's rows as the gallery searches them: `f32` values converted from the store's
//! encoding (or, for an older segment, mapped from its file), and the crop key of each row,
//! looked up only for the rows a search returns.
//!
//! A format-4 segment's `.bin` is its rows (`rows × dim` little-endian IEEE-754 binary16), then
//! its keys table: `rows + 1` little-endian `u32` offsets (the first 0, the last the total
//! length) into the UTF-8 crop keys that follow, one per row, in row order. Format 3 is the same
//! with `f32` rows (`docs/STORAGE.md`).

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::store::ObjectStore;

/// How a segment's row values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowEncoding {
    /// Little-endian `f32` (formats 1 to 3).
    F32,
    /// Little-endian IEEE-754 binary16 (format 4).
    F16,
}

impl RowEncoding {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            RowEncoding::F32 => 4,
            RowEncoding::F16 => 2,
        }
    }

    /// Converts `src` (exactly `dst.len()` values in this encoding) into `dst`.
    pub fn decode_into(self, src: &[u8], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len() * self.bytes());
        match self {
            RowEncoding::F32 => {
                for (v, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            RowEncoding::F16 => {
                // In blocks, so that the conversion runs on the CPU's half-float instructions
                // where it has them (`half` looks at run time).
                let mut bits = [f16::ZERO; 4096];
                for (dst, src) in dst.chunks_mut(bits.len()).zip(src.chunks(bits.len() * 2)) {
                    let bits = &mut bits[..dst.len()];
                    for (b, c) in bits.iter_mut().zip(src.chunks_exact(2)) {
                        *b = f16::from_le_bytes([c[0], c[1]]);
                    }
                    bits.convert_to_f32_slice(dst);
                }
            }
        }
    }

    /// `src` converted to `f32`; `None` when its length is not a whole number of values.
    pub fn decode(self, src: &[u8]) -> Option<Vec<f32>> {
        if !src.len().is_multiple_of(self.bytes()) {
            return None;
        }
        let mut out = vec![0f32; src.len() / self.bytes()];
        self.decode_into(src, &mut out);
        Some(out)
    }

    /// `values` in this encoding (binary16 rounds to the nearest; the writer checks the range).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.bytes());
        match self {
            RowEncoding::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            RowEncoding::F16 => {
                let mut bits = [f16::ZERO; 4096];
                for chunk in values.chunks(bits.len()) {
                    let bits = &mut bits[..chunk.len()];
                    bits.convert_from_f32_slice(chunk);
                    bits.iter()
                        .for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
                }
            }
        }
        out
    }
}

/// The largest magnitude a format-4 row value may have (binary16's largest finite value).
pub const F16_MAX: f32 = 65504.0;

/// A segment's embedding rows.
pub enum RowData {
    /// Read into memory (converted from the stored encoding).
    Owned(Vec<f32>),
    /// A format-3 segment's file mapped into memory: its first `values` floats are the rows.
    Mapped {
        /// The mapping of the whole `.bin` (rows, then the keys table).
        map: Arc<memmap2::Mmap>,
        /// Number of `f32` values of the rows.
        values: usize,
    },
}

impl RowData {
    /// The rows, row-major.
    pub fn values(&self) -> &[f32] {
        match self {
            RowData::Owned(v) => v,
            RowData::Mapped { map, values } => {
                // A mapping starts on a page boundary (aligned for f32), holds at least
                // `values * 4` bytes (checked by `mapped_f32`), and the target is little-endian
                // (`mapped_f32` only builds one there): the bytes are the values.
                assert!(map.len() >= values * 4);
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), *values) }
            }
        }
    }
}

impl std::fmt::Debug for RowData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowData::Owned(v) => write!(f, "RowData::Owned({} values)", v.len()),
            RowData::Mapped { values, .. } => write!(f, "RowData::Mapped({values} values)"),
        }
    }
}

/// Maps `path` (a segment's `.bin`) into memory; `None` when the platform or the file does not
/// allow it (the caller then reads it).
pub fn map_file(path: &std::path::Path) -> Option<Arc<memmap2::Mmap>> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: segments are immutable: written once under a content-hash name and only ever
    // deleted (a deleted file stays mapped until the mapping is dropped), never rewritten.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    Some(Arc::new(map))
}

/// The first `values` `f32` values of a mapped format-3 `.bin`, used in place; `None` when the
/// mapping is too short or the target is not little-endian (the caller then converts them).
pub fn mapped_f32(map: Arc<memmap2::Mmap>, values: usize) -> Option<RowData> {
    if cfg!(target_endian = "little") && map.len() >= values * 4 {
        Some(RowData::Mapped { map, values })
    } else {
        None
    }
}

/// Where the crop keys of a segment's rows are.
pub enum KeySource {
    /// In memory, one per row.
    Listed(Vec<String>),
    /// In the keys table of a mapped `.bin`, starting at byte `at`.
    Mapped {
        /// The mapping of the segment's `.bin`.
        map: Arc<memmap2::Mmap>,
        /// Where the table starts.
        at: usize,
        /// Rows in the segment.
        count: usize,
    },
    /// In the keys table of the object `key`, from byte `at`, read from the store: the first
    /// lookups with two small ranged reads each, while the whole table is read once in the
    /// background for the lookups after them.
    Stored(Arc<StoredKeys>),
}

/// The keys table of a segment in a store (see [`KeySource::Stored`]).
pub struct StoredKeys {
    store: Arc<dyn ObjectStore>,
    key: String,
    at: u64,
    rows: usize,
    /// The whole table, once read.
    all: std::sync::OnceLock<Vec<String>>,
    /// Whether the whole table is being read.
    reading: std::sync::atomic::AtomicBool,
}

impl StoredKeys {
    /// The keys table of `key` (rows of `rows`), from byte `at`.
    pub fn new(store: Arc<dyn ObjectStore>, key: String, at: u64, rows: usize) -> Self {
        StoredKeys {
            store,
            key,
            at,
            rows,
            all: std::sync::OnceLock::new(),
            reading: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Row `row`'s key: from the whole table when it has been read, else with two ranged
    /// reads (and the whole table's read started, once).
    fn key(self: &Arc<Self>, row: usize) -> Option<String> {
        if let Some(all) = self.all.get() {
            return all.get(row).cloned();
        }
        if row >= self.rows {
            return None;
        }
        self.read_all_in_background();
        let offsets = self
            .store
            .get_range(&self.key, self.at + row as u64 * 4, 8)
            .ok()??;
        let (from, to) = offset_pair(&offsets)?;
        let table = (self.rows as u64 + 1) * 4;
        let bytes = self
            .store
            .get_range(&self.key, self.at + table + from as u64, (to - from) as u64)
            .ok()??;
        String::from_utf8(bytes).ok()
    }

    /// Starts reading the whole table on a thread of its own, once (a gallery loading for a
    /// server starts it at once, so that its first matches need no ranged reads).
    pub fn read_all_in_background(self: &Arc<Self>) {
        if self.reading.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        std::thread::spawn(move || match me.store.get_range(&me.key, me.at, u64::MAX) {
            Ok(Some(table)) => match decode_keys(&table, me.rows) {
                Ok(keys) => {
                    let _ = me.all.set(keys);
                }
                Err(e) => tracing::error!(key = %me.key, error = %e, "a keys table is damaged"),
            },
            Ok(None) => tracing::error!(key = %me.key, "a keys table is missing"),
            Err(e) => tracing::error!(key = %me.key, error = %e, "cannot read a keys table"),
        });
    }

    /// Whether the whole table has been read.
    pub fn all_read(&self) -> bool {
        self.all.get().is_some()
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Listed(k) => write!(f, "KeySource::Listed({} keys)", k.len()),
            KeySource::Mapped { at, .. } => write!(f, "KeySource::Mapped(at {at})"),
            KeySource::Stored(k) => write!(f, "KeySource::Stored({} at {})", k.key, k.at),
        }
    }
}

impl KeySource {
    /// The crop key of row `row`, if it can be read.
    pub fn key(&self, row: usize) -> Option<String> {
        match self {
            KeySource::Listed(k) => k.get(row).cloned(),
            KeySource::Mapped { map, at, count } => key_in_table(map.get(*at..)?, *count, row),
            KeySource::Stored(keys) => keys.key(row),
        }
    }
}

fn offset_pair(b: &[u8]) -> Option<(usize, usize)> {
    let from = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let to = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    (from <= to).then_some((from, to))
}

/// Row `row`'s key in a keys table of `count` rows (the bytes from the table's start on).
fn key_in_table(table: &[u8], count: usize, row: usize) -> Option<String> {
    if row >= count {
        return None;
    }
    let (from, to) = offset_pair(table.get(row * 4..row * 4 + 8)?)?;
    let start = (count + 1) * 4;
    std::str::from_utf8(table.get(start + from..start + to)?)
        .ok()
        .map(str::to_string)
}

/// Appends the keys table of `keys` (one per row, in row order) to `out`.
pub fn encode_keys<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a str> + Clone) {
    let mut total = 0u32;
    out.extend_from_slice(&0u32.to_le_bytes());
    for k in keys.clone() {
        total += k.len() as u32;
        out.extend_from_slice(&total.to_le_bytes());
    }
    for k in keys {
        out.extend_from_slice(k.as_bytes());
    }
}

/// Reads a whole keys table of `rows` rows.
pub fn decode_keys(table: &[u8], rows: usize) -> Result<Vec<String>, String> {
    let head = (rows + 1) * 4;
    if table.len() < head {
        return Err(format!(
            "a keys table of {} bytes for {rows} rows",
            table.len()
        ));
    }
    let off = |i: usize| u32::from_le_bytes(table[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let bytes = &table[head..];
    if off(0) != 0 || off(rows) != bytes.len() {
        return Err("the keys table does not add up".into());
    }
    (0..rows)
        .map(|r| {
            let (a, b) = (off(r), off(r + 1));
            if a > b || b > bytes.len() {
                return Err(format!("the key of row {r} is out of bounds"));
            }
            std::str::from_utf8(&bytes[a..b])
                .map(str::to_string)
                .map_err(|_| format!("the key of row {r} is not UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Condition, LocalStore};

    #[test]
    fn keys_are_found_in_memory_in_a_mapping_and_in_ranges() {
        let keys = ["crops/a/u/0.png", "crops/ä/u/100.png", ""];
        let rows = [1.5f32, -2.0, 3.0, 4.0, 5.0, 6.0];
        let mut bin: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        encode_keys(&mut bin, keys.iter().copied());
        let table = &bin[rows.len() * 4..];
        assert_eq!(decode_keys(table, 3).unwrap(), keys);
        assert!(decode_keys(table, 4).is_err());
        assert!(decode_keys(&table[..table.len() - 1], 3).is_err());

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        store
            .put("dataset/segments/ab.bin", &bin, Condition::None)
            .unwrap();
        let map = map_file(&store.file_of("dataset/segments/ab.bin").unwrap()).unwrap();
        let mapped = mapped_f32(map.clone(), rows.len()).unwrap();
        assert_eq!(mapped.values(), rows);
        assert!(mapped_f32(map.clone(), rows.len() + 100).is_none());
        let sources = [
            KeySource::Listed(keys.iter().map(|k| k.to_string()).collect()),
            KeySource::Mapped {
                map,
                at: rows.len() * 4,
                count: 3,
            },
            KeySource::Stored(Arc::new(StoredKeys::new(
                store,
                "dataset/segments/ab.bin".into(),
                rows.len() as u64 * 4,
                3,
            ))),
        ];
        for source in &sources {
            for (r, k) in keys.iter().enumerate() {
                assert_eq!(source.key(r).as_deref(), Some(*k), "{source:?}");
            }
            assert_eq!(source.key(3), None, "{source:?}");
        }
        // The store's table is read whole after the first lookup; later ones use it.
        let KeySource::Stored(stored) = &sources[2] else {
            unreachable!()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !stored.all_read() {
            assert!(
                std::time::Instant::now() < deadline,
                "the table was never read"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(sources[2].key(1).as_deref(), Some(keys[1]));
    }

    #[test]
    fn binary16_rows_round_trip_within_half_a_unit_in_the_last_place() {
        // More values than one conversion block, and a partial last block.
        let values: Vec<f32> = (0..9001)
            .map(|i| ((i as f32) * 0.7310).sin() * 0.4)
            .chain([0.0, -0.0, 1.0, -1.0, F16_MAX, -F16_MAX, 1e-6])
            .collect();
        let bytes = RowEncoding::F16.encode(&values);
        assert_eq!(bytes.len(), values.len() * 2);
        let back = RowEncoding::F16.decode(&bytes).unwrap();
        assert_eq!(back.len(), values.len());
        for (a, b) in values.iter().zip(&back) {
            // binary16 has 11 significant bits: relative error at most 2^-11 for normal
            // values, an absolute 2^-25 below them.
            let bound = (a.abs() / 2048.0).max(2f32.powi(-25));
            assert!((a - b).abs() <= bound, "{a} came back as {b}");
        }
        assert_eq!(back[9003], 1.0);
        assert_eq!(back[9005], F16_MAX);
        assert!(RowEncoding::F16.decode(&bytes[..3]).is_none());

        let exact = RowEncoding::F32.encode(&values);
        assert_eq!(RowEncoding::F32.decode(&exact).unwrap(), values);
        assert!(RowEncoding::F32.decode(&exact[..6]).is_none());
    }
}

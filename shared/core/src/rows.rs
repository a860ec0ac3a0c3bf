//! A segment's rows as the gallery searches them: `f32` values read from the store or mapped
//! from its file, and the crop key of each row, looked up only for the rows a search returns.
//!
//! A format-3 segment's `.bin` is its rows (`rows × dim` little-endian `f32`), then its keys
//! table: `rows + 1` little-endian `u32` offsets (the first 0, the last the total length) into
//! the UTF-8 crop keys that follow, one per row, in row order (`docs/STORAGE.md`).

use std::sync::Arc;

use crate::store::ObjectStore;

/// A segment's embedding rows.
pub enum RowData {
    /// Read into memory.
    Owned(Vec<f32>),
    /// The segment's file mapped into memory: its first `values` floats are the rows.
    Mapped {
        /// The mapping of the whole `.bin` (rows, then the keys table).
        map: memmap2::Mmap,
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
                // `values * 4` bytes (checked by `map_rows`), and the target is little-endian
                // (`map_rows` is only compiled for one): the bytes are the values.
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
/// allow it (the caller then reads the rows). The file must hold at least `values` floats.
pub fn map_rows(path: &std::path::Path, values: usize) -> Option<RowData> {
    #[cfg(target_endian = "little")]
    {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: segments are immutable: written once under a content-hash name and only ever
        // deleted (a deleted file stays mapped until the mapping is dropped), never rewritten.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        if map.len() < values * 4 {
            return None;
        }
        Some(RowData::Mapped { map, values })
    }
    #[cfg(not(target_endian = "little"))]
    {
        let _ = (path, values);
        None
    }
}

/// Where the crop keys of a segment's rows are.
pub enum KeySource {
    /// In memory, one per row.
    Listed(Vec<String>),
    /// In the keys table of a mapped `.bin`, starting at byte `at`.
    Mapped {
        /// The segment's rows (a [`RowData::Mapped`]).
        rows: Arc<RowData>,
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
        if !self.reading.swap(true, std::sync::atomic::Ordering::AcqRel) {
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
            KeySource::Mapped { rows, at, count } => {
                let RowData::Mapped { map, .. } = &**rows else {
                    return None;
                };
                key_in_table(map.get(*at..)?, *count, row)
            }
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
        let mapped = Arc::new(
            map_rows(
                &store.file_of("dataset/segments/ab.bin").unwrap(),
                rows.len(),
            )
            .unwrap(),
        );
        assert_eq!(mapped.values(), rows);
        let sources = [
            KeySource::Listed(keys.iter().map(|k| k.to_string()).collect()),
            KeySource::Mapped {
                rows: mapped,
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
}

//! Gallery search: exact top-k identities for a face embedding.
//!
//! The gallery holds every crop embedding of a dataset version as its segments' row-major
//! matrices (mapped from the segment files on a local store), so a query is one pass of squared
//! distances over them ([`twin_search::l2_squared_rows`], SIMD chosen at run time), plus one
//! per-identity minimum. Each identity also has a prototype (the mean of its embeddings). An
//! identity's distance is the smallest distance to any of its crops. The "same person" decision
//! is [`SAME_PERSON_DISTANCE`], calibrated for that minimum (see its documentation). When a
//! trained head ranks the identities, no pass over the rows is needed: only the rows of the `k`
//! identities it ranks first are read.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, OnceLock};

use crate::dataset::{SearchVersion, Snapshot, DEAD_ROW};
use crate::rows::{KeySource, RowData};
pub use twin_search::dot;
use twin_search::{l2_squared, l2_squared_rows};

/// Rows whose distances one step of the scan computes before taking the per-identity minimums
/// (their distances stay in the first-level cache).
const SCAN_ROWS: usize = 256;

/// The "this is you" threshold on the smallest distance to an identity's crops. dlib's 0.6 is
/// for one pair of photos; the smallest of ~28 distances is much lower for strangers too. On
/// `../shared/data/faces` (`twin eval identify`: 5 held-out photos per identity against the
/// rest), 0.6 accepted the nearest stranger for most queries, while 0.5 keeps false accepts to a
/// few percent at under 10 % false rejects; see `docs/MATCHING.md`.
pub const SAME_PERSON_DISTANCE: f32 = 0.5;

/// One identity in a search result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The identity's slug.
    pub slug: String,
    /// Its display name.
    pub display_name: String,
    /// Smallest Euclidean distance to one of its crops.
    pub distance: f32,
    /// Distance to its prototype (the mean of its embeddings).
    pub prototype_distance: f32,
    /// Similarity for people, 0–100 (see [`similarity`]).
    pub similarity: u8,
    /// True when the distance says it is the same person.
    pub same_person: bool,
    /// The key of its closest crop (a picture to show).
    pub crop: String,
    /// The trained model's score (cosine to its learned prototype) when it knows the identity.
    pub model_score: Option<f32>,
}

/// Maps a distance to a 0–100 similarity people can read: linear from 100 at distance 0.3 (two
/// photos of one person rarely come closer) to 0 at 0.9 (strangers are usually further).
pub fn similarity(distance: f32) -> u8 {
    (((0.9 - distance) / 0.6).clamp(0.0, 1.0) * 100.0).round() as u8
}

/// A trained model's score of an identity, by slug (`None`: the model does not know it).
pub type HeadScores<'a> = &'a dyn Fn(&str) -> Option<f32>;

/// A searchable view of one dataset version: its segments' rows as they were loaded (mapped
/// files or memory, see [`SearchVersion`]), each row's identity, and the names. Nothing is
/// computed from the rows when it is built: a query without a head is one pass of squared
/// distances over the rows plus one per-identity minimum; the crop key of a row is read when a search returns it;
/// the prototypes (each identity's mean embedding) are computed for the identities a result
/// shows, and for all of them only the first time a trained head ranks identities it does not
/// know. The first search also lists each identity's rows (from the owners alone, 4 bytes a
/// row), so that a result's rows are found without a pass over all of them.
#[derive(Debug, Default)]
pub struct Gallery {
    dim: usize,
    version: u64,
    /// Each segment's rows and where their crop keys are.
    segments: Vec<(Arc<RowData>, KeySource)>,
    /// The first row of each segment (rows are numbered across segments).
    starts: Vec<usize>,
    /// Identity index of each row, or [`DEAD_ROW`].
    owner: Vec<u32>,
    /// (slug, display name) per identity.
    names: Vec<(String, String)>,
    /// Every identity's prototype, when first needed.
    prototypes: OnceLock<Prototypes>,
    /// The live rows of each identity, when first needed.
    members: OnceLock<Members>,
}

/// The live rows of each identity, in row order: identity `i`'s are
/// `rows[start[i]..start[i + 1]]`.
#[derive(Debug, Default)]
struct Members {
    start: Vec<usize>,
    rows: Vec<u32>,
}

impl Members {
    fn of(owner: &[u32], identities: usize) -> Self {
        assert!(owner.len() <= u32::MAX as usize, "too many rows");
        let mut start = vec![0usize; identities + 1];
        for &o in owner.iter().filter(|&&o| o != DEAD_ROW) {
            start[o as usize + 1] += 1;
        }
        for i in 0..identities {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut rows = vec![0u32; start[identities]];
        for (r, &o) in owner.iter().enumerate().filter(|(_, &o)| o != DEAD_ROW) {
            rows[next[o as usize]] = r as u32;
            next[o as usize] += 1;
        }
        Members { start, rows }
    }

    fn rows(&self, identity: usize) -> impl Iterator<Item = usize> + '_ {
        self.rows[self.start[identity]..self.start[identity + 1]]
            .iter()
            .map(|&r| r as usize)
    }

    fn any(&self, identity: usize) -> bool {
        self.start[identity + 1] > self.start[identity]
    }
}

/// Every identity's prototype (the mean of its live rows) and its length. An identity with one
/// live row (most of a large gallery) has that row as its prototype: only the means of the
/// others are stored.
#[derive(Debug, Default)]
struct Prototypes {
    /// Per identity: where its mean is in `means` (in rows of `dim`), or [`ITS_ROW`].
    at: Vec<u32>,
    /// The means of the identities with more than one live row.
    means: Vec<f32>,
    /// Per identity: its prototype's length.
    norms: Vec<f32>,
}

/// [`Prototypes::at`] of an identity whose one live row is its prototype (or that has none).
const ITS_ROW: u32 = u32::MAX;

/// An identity ranked by a trained head: its key (smaller is better), then its index (ties go
/// to the lower one), so that a max-heap's top is the worst one kept.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    key: f32,
    identity: usize,
    /// The head's score (`None`: ranked by its prototype).
    model: Option<f32>,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then(self.identity.cmp(&other.identity))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The `k` nearest identities found so far, each with its nearest crop, during a pass over
/// the rows in order.
struct NearestK {
    k: usize,
    /// (identity, squared distance, row), at most `k`.
    kept: Vec<(usize, f32, usize)>,
    /// The largest kept distance once `k` are kept (∞ before): a row at or beyond it changes
    /// nothing.
    limit: f32,
}

impl NearestK {
    fn new(k: usize) -> Self {
        NearestK {
            k,
            kept: Vec::with_capacity(k),
            limit: if k == 0 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            },
        }
    }

    /// Row `row` of identity `i` at squared distance `d` (below the limit). An identity kept
    /// keeps its first nearest row; one not kept replaces the farthest kept.
    fn offer(&mut self, i: usize, d: f32, row: usize, excluded: &dyn Fn(usize) -> bool) {
        if let Some(e) = self.kept.iter_mut().find(|e| e.0 == i) {
            if d < e.1 {
                *e = (i, d, row);
            }
        } else if excluded(i) {
            return;
        } else if self.kept.len() < self.k {
            self.kept.push((i, d, row));
        } else {
            let far = self.farthest();
            self.kept[far] = (i, d, row);
        }
        if self.kept.len() == self.k {
            self.limit = self.kept[self.farthest()].1;
        }
    }

    fn farthest(&self) -> usize {
        (0..self.kept.len())
            .max_by(|&a, &b| self.kept[a].1.total_cmp(&self.kept[b].1))
            .unwrap_or(0)
    }

    /// Nearest first (equal distances: the lower identity first).
    fn into_sorted(mut self) -> Vec<(usize, f32, usize)> {
        self.kept
            .sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        self.kept
    }
}

/// The smallest of `v` (∞ when empty; NaN values are passed over), in a loop the compiler
/// vectorises.
fn smallest(v: &[f32]) -> f32 {
    let mut m = [f32::INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            m[l] = if x[l] < m[l] { x[l] } else { m[l] };
        }
    }
    rest.iter()
        .chain(&m)
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a })
}

/// The `k` best of `candidates` that are not `excluded`, best first. `excluded` is asked only
/// about a candidate that would be kept (a few dozen per search, not every identity).
fn best_k(
    k: usize,
    candidates: impl Iterator<Item = Ranked>,
    excluded: impl Fn(usize) -> bool,
) -> Vec<Ranked> {
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
    for c in candidates {
        if heap.len() == k && heap.peek().is_none_or(|worst| c >= *worst) {
            continue;
        }
        if excluded(c.identity) {
            continue;
        }
        heap.push(c);
        if heap.len() > k {
            heap.pop();
        }
    }
    heap.into_sorted_vec()
}

impl Gallery {
    /// Builds the gallery of a dataset version read whole (its embeddings become the rows).
    pub fn from_snapshot(s: Snapshot) -> Self {
        Self::from_search(s.into())
    }

    /// Builds the gallery of a version read for search.
    pub fn from_search(v: SearchVersion) -> Self {
        let mut starts = Vec::with_capacity(v.segments.len());
        let mut at = 0;
        for (rows, _) in &v.segments {
            starts.push(at);
            at += rows.values().len() / v.dim.max(1);
        }
        assert_eq!(at, v.owner.len(), "every row has an owner");
        Gallery {
            dim: v.dim,
            version: v.version,
            segments: v.segments,
            starts,
            owner: v.owner,
            names: v.names,
            prototypes: OnceLock::new(),
            members: OnceLock::new(),
        }
    }

    /// Builds a gallery from raw rows (benchmarks and tests): `owners[i]` is row i's identity.
    pub fn from_rows(
        dim: usize,
        matrix: Vec<f32>,
        owners: Vec<u32>,
        names: Vec<(String, String)>,
    ) -> Self {
        let keys = (0..owners.len()).map(|r| format!("row/{r}")).collect();
        Self::from_search(SearchVersion {
            version: 0,
            dim,
            names,
            owner: owners,
            segments: vec![(Arc::new(RowData::Owned(matrix)), KeySource::Listed(keys))],
        })
    }

    /// The dataset version it was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of identities.
    pub fn identities(&self) -> usize {
        self.names.len()
    }

    /// Number of live crop rows.
    pub fn rows(&self) -> usize {
        self.owner.iter().filter(|&&o| o != DEAD_ROW).count()
    }

    /// The `k` closest identities to `query`, closest first, leaving out `excluded` slugs.
    pub fn search(&self, query: &[f32], k: usize, excluded: &dyn Fn(&str) -> bool) -> Vec<Hit> {
        self.search_with_head(query, k, excluded, None)
    }

    /// The crop key of row `row` (numbered across segments).
    fn crop_of(&self, row: usize) -> String {
        let s = self.starts.partition_point(|&start| start <= row) - 1;
        self.segments[s]
            .1
            .key(row - self.starts[s])
            .unwrap_or_default()
    }

    /// Row `row` (numbered across segments).
    fn row(&self, row: usize) -> &[f32] {
        let s = self.starts.partition_point(|&start| start <= row) - 1;
        let r = row - self.starts[s];
        &self.segments[s].0.values()[r * self.dim..(r + 1) * self.dim]
    }

    /// The live rows of each identity, listed once.
    fn members(&self) -> &Members {
        self.members
            .get_or_init(|| Members::of(&self.owner, self.names.len()))
    }

    /// The mean of the rows of identity `i`.
    fn prototype_of(&self, i: usize) -> Vec<f32> {
        if let Some(p) = self.prototypes.get() {
            return self.prototype_in(p, i).to_vec();
        }
        let mut sum = vec![0f32; self.dim];
        let mut count = 0usize;
        for r in self.members().rows(i) {
            sum.iter_mut().zip(self.row(r)).for_each(|(a, b)| *a += b);
            count += 1;
        }
        sum.iter_mut().for_each(|a| *a /= count.max(1) as f32);
        sum
    }

    /// The `k` identities nearest to `query` that are not `excluded`, nearest first, with their
    /// nearest crop: (identity, squared distance, row). One pass over every row; a row is
    /// looked at beyond its distance only when it is nearer than the `k`-th identity found so
    /// far (an upper bound of the final `k`-th distance), so most steps of the scan end with
    /// one comparison of their smallest distance.
    fn nearest_identities(
        &self,
        query: &[f32],
        k: usize,
        excluded: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32, usize)> {
        let mut kept = NearestK::new(k);
        let mut d2 = [0f32; SCAN_ROWS];
        for ((rows, _), &start) in self.segments.iter().zip(&self.starts) {
            let owners = &self.owner[start..];
            for (c, x) in rows.values().chunks(SCAN_ROWS * self.dim).enumerate() {
                let first = start + c * SCAN_ROWS;
                let d2 = &mut d2[..x.len() / self.dim];
                l2_squared_rows(x, query, d2);
                if smallest(d2) >= kept.limit {
                    continue;
                }
                for (j, (&d, &o)) in d2.iter().zip(&owners[c * SCAN_ROWS..]).enumerate() {
                    if d < kept.limit && o != DEAD_ROW {
                        kept.offer(o as usize, d, first + j, excluded);
                    }
                }
            }
        }
        kept.into_sorted()
    }

    /// The nearest of identity `i`'s crops to `query`: (squared distance, row).
    fn nearest_crop_of(&self, i: usize, query: &[f32]) -> (f32, usize) {
        let mut best = (f32::INFINITY, usize::MAX);
        for r in self.members().rows(i) {
            let d = l2_squared(self.row(r), query);
            if d < best.0 {
                best = (d, r);
            }
        }
        best
    }

    /// Identity `i`'s prototype in `p` (see [`Prototypes`]).
    fn prototype_in<'a>(&'a self, p: &'a Prototypes, i: usize) -> &'a [f32] {
        match p.at[i] {
            ITS_ROW => match self.members().rows(i).next() {
                Some(r) => self.row(r),
                None => &[],
            },
            m => &p.means[m as usize * self.dim..(m as usize + 1) * self.dim],
        }
    }

    /// Every identity's prototype and its length, computed once.
    fn prototypes(&self) -> &Prototypes {
        self.prototypes.get_or_init(|| {
            let members = self.members();
            let n = self.names.len();
            let mut p = Prototypes {
                at: vec![ITS_ROW; n],
                means: Vec::new(),
                norms: vec![0f32; n],
            };
            for i in 0..n {
                let mut rows = members.rows(i);
                let (Some(first), Some(_)) = (rows.next(), rows.next()) else {
                    continue;
                };
                p.at[i] = (p.means.len() / self.dim) as u32;
                let start = p.means.len();
                p.means.extend_from_slice(self.row(first));
                let mean = &mut p.means[start..];
                let mut count = 1usize;
                for r in members.rows(i).skip(1) {
                    mean.iter_mut().zip(self.row(r)).for_each(|(a, b)| *a += b);
                    count += 1;
                }
                mean.iter_mut().for_each(|a| *a /= count as f32);
            }
            for i in 0..n {
                let x = self.prototype_in(&p, i);
                p.norms[i] = dot(x, x).sqrt();
            }
            p
        })
    }

    /// Like [`Gallery::search`], ranked with a trained model's head when one is given: an
    /// identity the head knows ranks by the head's cosine (`head(slug)`), one it does not (enrolled
    /// after training) by the cosine to its mean embedding, the prototype the head was trained
    /// from and judged against. Distances, similarity and "same person" always come from the
    /// crops.
    pub fn search_with_head(
        &self,
        query: &[f32],
        k: usize,
        excluded: &dyn Fn(&str) -> bool,
        head: Option<HeadScores<'_>>,
    ) -> Vec<Hit> {
        if self.names.is_empty() || k == 0 {
            return Vec::new();
        }
        assert_eq!(query.len(), self.dim, "query length");
        let excluded = |i: usize| excluded(&self.names[i].0);
        let members = self.members();
        // (identity, squared distance to its nearest crop, that crop's row, the head's score).
        let chosen: Vec<(usize, f32, usize, Option<f32>)> = match head {
            // Ranked by the nearest crop: one pass over every row.
            None => self
                .nearest_identities(query, k, &excluded)
                .into_iter()
                .map(|(i, d2, row)| (i, d2, row, None))
                .collect(),
            // Ranked by the head (negated cosines), an identity it does not know by its
            // prototype; then only the chosen identities' crops are read.
            Some(h) => {
                let qu = query_norm(dot(query, query));
                let candidates = (0..self.names.len()).filter(|&i| members.any(i)).map(|i| {
                    let model = h(&self.names[i].0);
                    let cosine = model.unwrap_or_else(|| {
                        let p = self.prototypes();
                        dot(query, self.prototype_in(p, i)) / (qu * p.norms[i].max(1e-12))
                    });
                    Ranked {
                        key: -cosine,
                        identity: i,
                        model,
                    }
                });
                best_k(k, candidates, excluded)
                    .into_iter()
                    .map(|r| {
                        let (d2, row) = self.nearest_crop_of(r.identity, query);
                        (r.identity, d2, row, r.model)
                    })
                    .collect()
            }
        };
        chosen
            .into_iter()
            .map(|(i, d2, row, model_score)| {
                let distance = d2.max(0.0).sqrt();
                let pd = l2_squared(query, &self.prototype_of(i)).sqrt();
                Hit {
                    slug: self.names[i].0.clone(),
                    display_name: self.names[i].1.clone(),
                    distance,
                    prototype_distance: pd,
                    similarity: similarity(distance),
                    same_person: distance < SAME_PERSON_DISTANCE,
                    crop: self.crop_of(row),
                    model_score,
                }
            })
            .collect()
    }
}

fn query_norm(qn: f32) -> f32 {
    qn.sqrt().max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery() -> Gallery {
        // Two identities in 2-D: a at (0,0) and (1,0); b at (0,3).
        Gallery::from_rows(
            2,
            vec![0.0, 0.0, 1.0, 0.0, 0.0, 3.0],
            vec![0, 0, 1],
            vec![("a".into(), "A".into()), ("b".into(), "B".into())],
        )
    }

    #[test]
    fn nearest_crop_decides_and_prototypes_are_means() {
        let hits = gallery().search(&[0.9, 0.0], 5, &|_| false);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].slug, "a");
        assert!((hits[0].distance - 0.1).abs() < 1e-5);
        assert!((hits[0].prototype_distance - 0.4).abs() < 1e-5);
        assert_eq!(hits[0].crop, "row/1");
        assert!(hits[0].same_person);
        assert!(!hits[1].same_person);
    }

    #[test]
    fn excluded_identities_are_never_returned() {
        let hits = gallery().search(&[0.0, 0.0], 5, &|s| s == "a");
        assert_eq!(
            hits.iter().map(|h| h.slug.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert!(Gallery::default().search(&[], 3, &|_| false).is_empty());
    }

    #[test]
    fn top_k_matches_a_brute_force_sort() {
        let mut state = 7u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let (dim, n, ids) = (16, 300, 40);
        let matrix: Vec<f32> = (0..n * dim).map(|_| rnd()).collect();
        let owners: Vec<u32> = (0..n as u32).map(|r| r % ids).collect();
        let names = (0..ids)
            .map(|i| (format!("i{i}"), format!("I{i}")))
            .collect();
        let g = Gallery::from_rows(dim, matrix.clone(), owners.clone(), names);
        let q: Vec<f32> = (0..dim).map(|_| rnd()).collect();
        let mut brute = vec![f32::INFINITY; ids as usize];
        for r in 0..n {
            let d = matrix[r * dim..(r + 1) * dim]
                .iter()
                .zip(&q)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            brute[owners[r] as usize] = brute[owners[r] as usize].min(d);
        }
        let mut order: Vec<usize> = (0..ids as usize).collect();
        order.sort_by(|&a, &b| brute[a].total_cmp(&brute[b]));
        let hits = g.search(&q, 10, &|_| false);
        for (h, &i) in hits.iter().zip(&order) {
            assert_eq!(h.slug, format!("i{i}"));
            assert!((h.distance - brute[i]).abs() < 1e-4);
        }
    }

    /// A search written the plain way (f64, every row, a full sort) to hold the fast one to.
    fn reference(
        segments: &[Vec<f32>],
        owners: &[u32],
        ids: usize,
        q: &[f32],
        k: usize,
        excluded: &dyn Fn(usize) -> bool,
        head: Option<&dyn Fn(usize) -> Option<f32>>,
    ) -> Vec<(usize, f64, usize, f64, Option<f32>)> {
        let dim = q.len();
        let rows: Vec<&[f32]> = segments.iter().flat_map(|s| s.chunks_exact(dim)).collect();
        let l2 = |x: &[f32], y: &[f32]| -> f64 {
            x.iter()
                .zip(y)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum()
        };
        let mut best = vec![(f64::INFINITY, usize::MAX); ids];
        let mut sums = vec![vec![0f64; dim]; ids];
        let mut counts = vec![0usize; ids];
        for (r, x) in rows.iter().enumerate() {
            let o = owners[r];
            if o == DEAD_ROW {
                continue;
            }
            let o = o as usize;
            let d = l2(x, q);
            if d < best[o].0 {
                best[o] = (d, r);
            }
            counts[o] += 1;
            sums[o]
                .iter_mut()
                .zip(*x)
                .for_each(|(a, b)| *a += f64::from(*b));
        }
        let protos: Vec<Vec<f32>> = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s.iter().map(|v| (v / c.max(1) as f64) as f32).collect())
            .collect();
        let qn = l2(q, &vec![0.0; dim]).sqrt();
        let key = |i: usize| match head {
            None => best[i].0,
            Some(h) => -h(i).map(f64::from).unwrap_or_else(|| {
                let p = &protos[i];
                let d: f64 = p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                d / (qn * l2(p, &vec![0.0; dim]).sqrt())
            }),
        };
        let mut order: Vec<usize> = (0..ids)
            .filter(|&i| counts[i] > 0 && !excluded(i))
            .collect();
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        order.truncate(k);
        order
            .into_iter()
            .map(|i| {
                (
                    i,
                    best[i].0.sqrt(),
                    best[i].1,
                    l2(q, &protos[i]).sqrt(),
                    head.and_then(|h| h(i)),
                )
            })
            .collect()
    }

    #[test]
    fn the_fast_search_finds_what_a_plain_one_finds() {
        let mut state = 11u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        // dlib's length (the SIMD kernels) and an odd one (the portable loop); segments of
        // lengths that are not multiples of the kernels' blocks; an identity's rows scattered
        // or one after the other (as commits write them); some rows dead.
        for (dim, seg_rows, ids, grouped) in [
            (128, vec![700, 33, 290], 97, false),
            (128, vec![1500, 520], 120, true),
            (13, vec![41, 300], 30, false),
            // Most identities with one row (their row is their prototype), a few with two.
            (128, vec![300, 50], 300, true),
        ] {
            let n: usize = seg_rows.iter().sum();
            let segments: Vec<Vec<f32>> = seg_rows
                .iter()
                .map(|&r| (0..r * dim).map(|_| rnd()).collect())
                .collect();
            let owners: Vec<u32> = (0..n)
                .map(|r| {
                    let o = if grouped {
                        (r * ids / n) as f32
                    } else {
                        (rnd() + 0.5) * ids as f32
                    };
                    if r % 17 == 3 {
                        DEAD_ROW
                    } else {
                        (o as u32).min(ids as u32 - 1)
                    }
                })
                .collect();
            // Identity 5 has no live row at all.
            let owners: Vec<u32> = owners
                .into_iter()
                .map(|o| if o == 5 { DEAD_ROW } else { o })
                .collect();
            let names: Vec<(String, String)> = (0..ids)
                .map(|i| (format!("i{i:03}"), format!("I{i}")))
                .collect();
            let mut keys: Vec<Vec<String>> = Vec::new();
            let mut at = 0;
            for &r in &seg_rows {
                keys.push((at..at + r).map(|r| format!("row/{r}")).collect());
                at += r;
            }
            let g = Gallery::from_search(SearchVersion {
                version: 1,
                dim,
                names,
                owner: owners.clone(),
                segments: segments
                    .iter()
                    .zip(keys)
                    .map(|(s, k)| (Arc::new(RowData::Owned(s.clone())), KeySource::Listed(k)))
                    .collect(),
            });
            // The head knows two thirds of the identities.
            let scores: Vec<f32> = (0..ids).map(|_| rnd()).collect();
            let known = |i: usize| (i % 3 != 1).then(|| scores[i]);
            let slug_index = |s: &str| s[1..].parse::<usize>().unwrap();
            for query in 0..4 {
                let q: Vec<f32> = (0..dim).map(|_| rnd()).collect();
                let ex = |i: usize| i % 7 == query;
                for (k, with_head) in [(10, false), (10, true), (200, false), (200, true)] {
                    let head_by_slug = |s: &str| known(slug_index(s));
                    let head: Option<HeadScores<'_>> = with_head.then_some(&head_by_slug);
                    let hits = g.search_with_head(&q, k, &|s| ex(slug_index(s)), head);
                    let want = reference(
                        &segments,
                        &owners,
                        ids,
                        &q,
                        k,
                        &ex,
                        with_head.then_some(&known as &dyn Fn(usize) -> Option<f32>),
                    );
                    let what = format!("dim {dim} query {query} k {k} head {with_head}");
                    assert_eq!(hits.len(), want.len(), "{what}");
                    for (h, w) in hits.iter().zip(&want) {
                        assert_eq!(h.slug, format!("i{:03}", w.0), "{what}");
                        assert!((f64::from(h.distance) - w.1).abs() < 1e-5, "{what}");
                        assert_eq!(h.crop, format!("row/{}", w.2), "{what}");
                        assert!(
                            (f64::from(h.prototype_distance) - w.3).abs() < 1e-4,
                            "{what}"
                        );
                        assert_eq!(h.model_score, w.4, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn similarity_scale() {
        assert_eq!(similarity(0.2), 100);
        assert_eq!(similarity(0.6), 50);
        assert_eq!(similarity(1.2), 0);
    }
}

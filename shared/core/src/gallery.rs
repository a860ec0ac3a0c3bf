//! Gallery search: exact top-k identities for a face embedding.
//!
//! The gallery holds every crop embedding of a dataset version as its segments' row-major
//! matrices (mapped from the segment files on a local store), so a query is one pass of squared
//! distances over memory the compiler vectorises, plus one per-identity minimum. Each identity
//! also has a prototype (the mean of its embeddings). An identity's
//! distance is the smallest distance to any of its crops. The "same person" decision is
//! [`SAME_PERSON_DISTANCE`], calibrated for that minimum (see its documentation).

use std::sync::{Arc, OnceLock};

use crate::dataset::{SearchVersion, Snapshot, DEAD_ROW};
use crate::rows::{KeySource, RowData};
pub use twin_search::dot;
use twin_search::l2_squared;

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
/// precomputed: a query is one pass of squared distances over the rows plus one per-identity
/// minimum; the crop key of a row is read when a search returns it; the prototypes (each
/// identity's mean embedding) are computed for the identities a result shows, and for all of
/// them only the first time a trained head ranks identities it does not know.
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
    /// Every prototype (identities × dim) and its length, when first needed.
    prototypes: OnceLock<(Vec<f32>, Vec<f32>)>,
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

    /// The means of the rows of identities `ids`, in one pass over the rows.
    fn prototypes_of(&self, ids: &[usize]) -> Vec<Vec<f32>> {
        if let Some((p, _)) = self.prototypes.get() {
            return ids
                .iter()
                .map(|&i| p[i * self.dim..(i + 1) * self.dim].to_vec())
                .collect();
        }
        let mut sums = vec![vec![0f32; self.dim]; ids.len()];
        let mut counts = vec![0usize; ids.len()];
        for ((rows, _), &start) in self.segments.iter().zip(&self.starts) {
            for (r, x) in rows.values().chunks_exact(self.dim).enumerate() {
                let o = self.owner[start + r];
                if let Some(slot) = ids.iter().position(|&i| i as u32 == o) {
                    sums[slot].iter_mut().zip(x).for_each(|(a, b)| *a += b);
                    counts[slot] += 1;
                }
            }
        }
        for (p, c) in sums.iter_mut().zip(&counts) {
            p.iter_mut().for_each(|a| *a /= (*c).max(1) as f32);
        }
        sums
    }

    /// Every identity's prototype and its length, computed once.
    fn prototypes(&self) -> &(Vec<f32>, Vec<f32>) {
        self.prototypes.get_or_init(|| {
            let n = self.names.len();
            let mut p = vec![0f32; n * self.dim];
            let mut counts = vec![0usize; n];
            for ((rows, _), &start) in self.segments.iter().zip(&self.starts) {
                for (r, x) in rows.values().chunks_exact(self.dim).enumerate() {
                    let o = self.owner[start + r];
                    if o == DEAD_ROW {
                        continue;
                    }
                    counts[o as usize] += 1;
                    p[o as usize * self.dim..(o as usize + 1) * self.dim]
                        .iter_mut()
                        .zip(x)
                        .for_each(|(a, b)| *a += b);
                }
            }
            for (i, c) in counts.iter().enumerate() {
                p[i * self.dim..(i + 1) * self.dim]
                    .iter_mut()
                    .for_each(|a| *a /= (*c).max(1) as f32);
            }
            let norms = row_norms(&p, self.dim);
            (p, norms)
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
        if self.names.is_empty() {
            return Vec::new();
        }
        assert_eq!(query.len(), self.dim, "query length");
        let mut best = vec![(f32::INFINITY, usize::MAX); self.names.len()];
        for ((rows, _), &start) in self.segments.iter().zip(&self.starts) {
            let owners = &self.owner[start..];
            for (r, (x, &o)) in rows.values().chunks_exact(self.dim).zip(owners).enumerate() {
                if o == DEAD_ROW {
                    continue;
                }
                let d2 = l2_squared(query, x);
                let slot = &mut best[o as usize];
                if d2 < slot.0 {
                    *slot = (d2, start + r);
                }
            }
        }
        let mut order: Vec<usize> = (0..best.len())
            .filter(|&i| best[i].1 != usize::MAX && !excluded(&self.names[i].0))
            .collect();
        let k = k.min(order.len());
        if k == 0 {
            return Vec::new();
        }
        // With a head: its score per identity it knows, and the ranking key (negated cosines).
        let ranked: Option<(Vec<Option<f32>>, Vec<f32>)> = head.map(|h| {
            let model: Vec<Option<f32>> = self.names.iter().map(|(slug, _)| h(slug)).collect();
            let qu = query_norm(dot(query, query));
            let key = (0..best.len())
                .map(|i| {
                    -model[i].unwrap_or_else(|| {
                        let (protos, norms) = self.prototypes();
                        dot(query, &protos[i * self.dim..(i + 1) * self.dim])
                            / (qu * norms[i].max(1e-12))
                    })
                })
                .collect();
            (model, key)
        });
        // Smaller is better: the head's key, else the nearest crop's squared distance.
        let key = |i: usize| match &ranked {
            Some((_, key)) => key[i],
            None => best[i].0,
        };
        order.select_nth_unstable_by(k - 1, |&a, &b| key(a).total_cmp(&key(b)));
        order.truncate(k);
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        let prototypes = self.prototypes_of(&order);
        order
            .into_iter()
            .zip(prototypes)
            .map(|(i, proto)| {
                let distance = best[i].0.max(0.0).sqrt();
                let pd = l2_squared(query, &proto).sqrt();
                Hit {
                    slug: self.names[i].0.clone(),
                    display_name: self.names[i].1.clone(),
                    distance,
                    prototype_distance: pd,
                    similarity: similarity(distance),
                    same_person: distance < SAME_PERSON_DISTANCE,
                    crop: self.crop_of(best[i].1),
                    model_score: ranked.as_ref().and_then(|(model, _)| model[i]),
                }
            })
            .collect()
    }
}

/// The length of each `dim`-long row of `m`.
fn row_norms(m: &[f32], dim: usize) -> Vec<f32> {
    m.chunks_exact(dim.max(1))
        .map(|x| dot(x, x).sqrt())
        .collect()
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

    #[test]
    fn similarity_scale() {
        assert_eq!(similarity(0.2), 100);
        assert_eq!(similarity(0.6), 50);
        assert_eq!(similarity(1.2), 0);
    }
}

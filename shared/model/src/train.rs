//! Training an identity head on a dataset version's embeddings, and judging it on held-out crops.
//!
//! The head is a cosine-softmax layer: one learned unit-length prototype per identity, scores
//! are cosines with the L2-normalised embedding, trained with class-balanced cross-entropy on
//! `scale · cosine` (an optional additive margin on the true class), starting
//! from each identity's mean embedding. Every identity's crops are split deterministically
//! (seeded) into train and held-out; identities with too few crops are held back and said so
//! (the gallery still matches them by embedding). The baseline the head must beat is the
//! untrained gallery's nearest prototype (the mean of an identity's train embeddings), scored
//! on the same held-out crops.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use twin_core::dataset::Snapshot;

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Seed of the train/held-out split and of the batch order.
    pub seed: u64,
    /// Share of each identity's crops held out (at least one).
    pub holdout: f64,
    /// Identities with fewer crops are held back from training.
    pub min_crops: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per step (all of them when there are fewer).
    pub batch: usize,
    /// Logit scale `s` of the cosine softmax.
    pub scale: f32,
    /// Additive cosine margin on the true class while training.
    pub margin: f32,
    /// Adam's step size.
    pub learning_rate: f32,
    /// Threads for the matrix products.
    pub threads: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 1,
            holdout: 0.2,
            min_crops: 4,
            steps: 150,
            batch: 4096,
            scale: 32.0,
            margin: 0.0,
            learning_rate: 0.005,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// An identity the head knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Its slug.
    pub slug: String,
    /// Its name.
    pub display_name: String,
}

/// Unit-length rows and their classes.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Row-major `n × dim`, each row L2-normalised.
    pub x: Vec<f32>,
    /// Class of each row.
    pub y: Vec<u32>,
    /// Crop key of each row.
    pub keys: Vec<String>,
}

impl Rows {
    /// The rows whose crop key `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> Rows {
        let dim = if self.y.is_empty() {
            0
        } else {
            self.x.len() / self.y.len()
        };
        let mut out = Rows::default();
        for (i, k) in self.keys.iter().enumerate() {
            if keep(k) {
                out.x.extend_from_slice(&self.x[i * dim..(i + 1) * dim]);
                out.y.push(self.y[i]);
                out.keys.push(k.clone());
            }
        }
        out
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// An identity left out of training, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    /// Its slug.
    pub slug: String,
    /// Its crops (fewer than `min_crops`).
    pub crops: usize,
}

/// A dataset version split for training.
#[derive(Debug, Clone)]
pub struct Split {
    /// Embedding length.
    pub dim: usize,
    /// The classes, in dataset (slug) order.
    pub labels: Vec<Label>,
    /// Training rows.
    pub train: Rows,
    /// Held-out rows.
    pub held: Rows,
    /// Identities with too few crops.
    pub held_back: Vec<HeldBack>,
}

/// Splits a dataset version: per identity, crops ordered by a seeded hash of their key, the
/// first `max(1, round(holdout · n))` held out, the rest for training.
pub fn split(s: &Snapshot, o: &TrainOptions) -> Split {
    let dim = s.manifest.dim;
    let mut out = Split {
        dim,
        labels: Vec::new(),
        train: Rows::default(),
        held: Rows::default(),
        held_back: Vec::new(),
    };
    let mut row = 0;
    for ident in &s.manifest.identities {
        let n = ident.crops.len();
        let first = row;
        row += n;
        if n < o.min_crops.max(2) {
            out.held_back.push(HeldBack {
                slug: ident.slug.clone(),
                crops: n,
            });
            continue;
        }
        let class = out.labels.len() as u32;
        out.labels.push(Label {
            slug: ident.slug.clone(),
            display_name: ident.display_name.clone(),
        });
        let mut order: Vec<(u64, usize, &String)> = ident
            .crops
            .iter()
            .enumerate()
            .map(|(i, key)| (mix(o.seed, &ident.slug, key), first + i, key))
            .collect();
        order.sort();
        let held = ((o.holdout * n as f64).round() as usize).clamp(1, n - 1);
        for (i, (_, r, key)) in order.into_iter().enumerate() {
            let rows = if i < held {
                &mut out.held
            } else {
                &mut out.train
            };
            rows.x
                .extend_from_slice(&unit(&s.embeddings[r * dim..(r + 1) * dim]));
            rows.y.push(class);
            rows.keys.push(key.clone());
        }
    }
    out
}

/// A trained identity head: one unit-length prototype per label.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The identities, one per row.
    pub labels: Vec<Label>,
    /// Embedding length.
    pub dim: usize,
    /// Row-major `labels × dim`, unit rows.
    pub weights: Vec<f32>,
}

impl Head {
    /// Cosines between an embedding (any length; normalised here) and every identity.
    pub fn scores(&self, embedding: &[f32]) -> Vec<f32> {
        let u = unit(embedding);
        self.weights
            .chunks_exact(self.dim)
            .map(|w| twin_core::gallery::dot(w, &u))
            .collect()
    }
}

/// The untrained baseline: each class's mean train embedding, normalised (`classes × dim`).
pub fn prototypes(split: &Split) -> Vec<f32> {
    let (c, d) = (split.labels.len(), split.dim);
    let mut p = vec![0f32; c * d];
    for (x, &y) in split.train.x.chunks_exact(d).zip(&split.train.y) {
        for (a, b) in p[y as usize * d..(y as usize + 1) * d].iter_mut().zip(x) {
            *a += b;
        }
    }
    for row in p.chunks_exact_mut(d) {
        let u = unit(row);
        row.copy_from_slice(&u);
    }
    p
}

/// Held-out accuracy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Share of held-out crops whose true identity scores highest.
    pub top1: f64,
    /// Share whose true identity is among the five highest.
    pub top5: f64,
    /// Held-out crops.
    pub n: usize,
    /// Correct top-1 answers per class.
    #[serde(skip)]
    pub correct: Vec<u32>,
}

/// Scores every held-out row with `scorer` (one score per class) and counts top-1/top-5 hits.
pub fn evaluate(
    held: &Rows,
    dim: usize,
    classes: usize,
    scorer: &dyn Fn(&[f32]) -> Vec<f32>,
) -> Accuracy {
    let mut correct = vec![0u32; classes];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (x, &y) in held.x.chunks_exact(dim.max(1)).zip(&held.y) {
        let s = scorer(x);
        let truth = s[y as usize];
        // Rank of the true class: classes scoring strictly higher (ties count in its favour).
        let above = s.iter().filter(|&&v| v > truth).count();
        if above == 0 {
            top1 += 1;
            correct[y as usize] += 1;
        }
        if above < 5 {
            top5 += 1;
        }
    }
    let n = held.len();
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Accuracy {
        top1: share(top1),
        top5: share(top5),
        n,
        correct,
    }
}

/// Trains the head on `split.train`; `progress(step, steps)` is called after every step.
pub fn train_head(split: &Split, o: &TrainOptions, progress: &dyn Fn(usize, usize)) -> Head {
    let (c, d, n) = (split.labels.len(), split.dim, split.train.len());
    let mut v = prototypes(split);
    let head = |v: &[f32]| Head {
        labels: split.labels.clone(),
        dim: d,
        weights: v.chunks_exact(d).flat_map(unit).collect(),
    };
    if c < 2 || n == 0 || o.steps == 0 {
        return head(&v);
    }
    // Class-balanced: every identity carries the same total weight.
    let mut count = vec![0f32; c];
    for &y in &split.train.y {
        count[y as usize] += 1.0;
    }
    let weight: Vec<f32> = count
        .iter()
        .map(|&k| {
            if k > 0.0 {
                n as f32 / (c as f32 * k)
            } else {
                0.0
            }
        })
        .collect();
    let batch = o.batch.clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = o.seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut cursor = n; // reshuffle on the first step
    let (mut m1, mut m2) = (vec![0f32; c * d], vec![0f32; c * d]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let threads = o.threads.max(1);
    // A full batch is the training rows themselves; a smaller one is drawn into these.
    let full = batch == n;
    let (mut xb, mut yb) = if full {
        (Vec::new(), Vec::new())
    } else {
        (vec![0f32; batch * d], vec![0u32; batch])
    };
    let mut norms = vec![0f32; c];
    let mut w = vec![0f32; c * d];
    for step in 1..=o.steps {
        if !full {
            for i in 0..batch {
                if cursor == n {
                    shuffle(&mut order, &mut rng);
                    cursor = 0;
                }
                let r = order[cursor];
                cursor += 1;
                xb[i * d..(i + 1) * d].copy_from_slice(&split.train.x[r * d..(r + 1) * d]);
                yb[i] = split.train.y[r];
            }
        }
        let (x, y): (&[f32], &[u32]) = if full {
            (&split.train.x, &split.train.y)
        } else {
            (&xb, &yb)
        };
        for ((r, k), wr) in v
            .chunks_exact(d)
            .zip(norms.iter_mut())
            .zip(w.chunks_exact_mut(d))
        {
            *k = norm(r).max(1e-12);
            for (a, b) in wr.iter_mut().zip(r) {
                *a = b / *k;
            }
        }
        let grad_w = gradient(x, y, &w, &weight, c, d, o, threads);
        // Back through the row normalisation, then Adam.
        let t = step as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for k in 0..c {
            let wk = &w[k * d..(k + 1) * d];
            let gk = &grad_w[k * d..(k + 1) * d];
            let along = twin_core::gallery::dot(gk, wk);
            for j in 0..d {
                let i = k * d + j;
                let g = (gk[j] - along * wk[j]) / norms[k];
                m1[i] = b1 * m1[i] + (1.0 - b1) * g;
                m2[i] = b2 * m2[i] + (1.0 - b2) * g * g;
                v[i] -= o.learning_rate * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
            }
        }
        progress(step, o.steps);
    }
    head(&v)
}

/// The gradient of the mean class-balanced margin cross-entropy with respect to the unit
/// weight rows `w` (`c × d`), for the rows `x` (`b × d`) of classes `y`.
#[allow(clippy::too_many_arguments)]
fn gradient(
    x: &[f32],
    y: &[u32],
    w: &[f32],
    weight: &[f32],
    c: usize,
    d: usize,
    o: &TrainOptions,
    threads: usize,
) -> Vec<f32> {
    let b = y.len();
    let chunk = b.div_ceil(threads.min(b).max(1));
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = x
            .chunks(chunk * d)
            .zip(y.chunks(chunk))
            .map(|(xs, ys)| {
                s.spawn(move || {
                    let rows = ys.len();
                    // logits = x · wᵀ
                    let mut g = vec![0f32; rows * c];
                    gemm(rows, d, c, xs, d, 1, w, 1, d, &mut g, c, 0.0);
                    for (r, &cls) in ys.iter().enumerate() {
                        let l = &mut g[r * c..(r + 1) * c];
                        let cls = cls as usize;
                        l[cls] -= o.margin;
                        let max = l.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) * o.scale;
                        let mut sum = 0f32;
                        for v in l.iter_mut() {
                            *v = (*v * o.scale - max).exp();
                            sum += *v;
                        }
                        let a = weight[cls] * o.scale / b as f32;
                        for v in l.iter_mut() {
                            *v = a * *v / sum;
                        }
                        l[cls] -= a;
                    }
                    // grad_w (partial) = gᵀ · x
                    let mut part = vec![0f32; c * d];
                    gemm(c, rows, d, &g, 1, c, xs, d, 1, &mut part, d, 0.0);
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a training thread panicked"))
            .collect()
    });
    let mut total = vec![0f32; c * d];
    for p in parts {
        for (a, b) in total.iter_mut().zip(p) {
            *a += b;
        }
    }
    total
}

/// `c (m×n, row stride ldc) = a (m×k) · b (k×n) + beta · c`, with explicit strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    ldc: usize,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k == 0 || (m - 1) * rsa + (k - 1) * csa < a.len(),
        "gemm: a too short"
    );
    assert!(
        k == 0 || (k - 1) * rsb + (n - 1) * csb < b.len(),
        "gemm: b too short"
    );
    assert!((m - 1) * ldc + n <= c.len(), "gemm: c too short");
    // SAFETY: the asserts above keep every index matrixmultiply derives from (m, k, n) and the
    // strides inside the three slices; `c` is exclusively borrowed and does not alias a or b.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// The L2-normalised copy of `x` (zeros stay zeros).
pub fn unit(x: &[f32]) -> Vec<f32> {
    let k = norm(x);
    if k > 0.0 {
        x.iter().map(|v| v / k).collect()
    } else {
        x.to_vec()
    }
}

fn norm(x: &[f32]) -> f32 {
    twin_core::gallery::dot(x, x).sqrt()
}

/// A seeded 64-bit hash of an identity's crop (FNV-1a, then a SplitMix64 finaliser).
fn mix(seed: u64, slug: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in slug.bytes().chain([0]).chain(key.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(&mut h)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn shuffle(v: &mut [usize], rng: &mut u64) {
    for i in (1..v.len()).rev() {
        let j = (splitmix(rng) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Synthetic embeddings for benchmarks and tests: `identities × per_identity` unit rows around
/// random unit centres, with noise `spread` (the returned rows are grouped by identity).
pub fn synthetic(
    identities: usize,
    per_identity: usize,
    dim: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = seed;
    let mut gauss = move || {
        // Box–Muller from two uniforms.
        let u1 = ((splitmix(&mut rng) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((splitmix(&mut rng) >> 11) as f64) / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let mut out = Vec::with_capacity(identities * per_identity * dim);
    let noise = spread / (dim as f32).sqrt();
    for _ in 0..identities {
        let centre = unit(&(0..dim).map(|_| gauss()).collect::<Vec<_>>());
        for _ in 0..per_identity {
            let x: Vec<f32> = centre.iter().map(|c| c + noise * gauss()).collect();
            out.extend(unit(&x));
        }
    }
    out
}

/// Per-class row counts of a split (`(train, held-out)` per label).
pub fn counts(split: &Split) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 0); split.labels.len()];
    for &y in &split.train.y {
        out[y as usize].0 += 1;
    }
    for &y in &split.held.y {
        out[y as usize].1 += 1;
    }
    out
}

/// Scores for the classes of `split` from a previously trained head: its cosine for the
/// identities it knows, the baseline prototype's for the others (as serving does).
pub fn previous_scorer<'a>(
    split: &'a Split,
    protos: &'a [f32],
    head: &'a Head,
) -> impl Fn(&[f32]) -> Vec<f32> + 'a {
    let index: HashMap<&str, usize> = head
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.slug.as_str(), i))
        .collect();
    let map: Vec<Option<usize>> = split
        .labels
        .iter()
        .map(|l| index.get(l.slug.as_str()).copied())
        .collect();
    move |x: &[f32]| {
        let d = split.dim;
        map.iter()
            .enumerate()
            .map(|(c, m)| match m {
                Some(i) => twin_core::gallery::dot(&head.weights[i * d..(i + 1) * d], x),
                None => twin_core::gallery::dot(&protos[c * d..(c + 1) * d], x),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twin_core::dataset::{Identity, Manifest};

    fn snapshot(identities: usize, per: usize, spread: f32) -> Snapshot {
        let dim = 16;
        let embeddings = synthetic(identities, per, dim, spread, 7);
        let mut m = Manifest::empty(dim);
        for i in 0..identities {
            m.identities.push(Identity {
                slug: format!("p{i:03}"),
                display_name: format!("P {i}"),
                crops: (0..per)
                    .map(|k| format!("crops/p{i:03}/u/{k}.png"))
                    .collect(),
                uploads: vec!["u".into()],
            });
        }
        m.rows = identities * per;
        Snapshot {
            manifest: m,
            embeddings,
        }
    }

    #[test]
    fn split_is_deterministic_and_holds_back_small_identities() {
        let mut s = snapshot(5, 10, 0.5);
        s.manifest.identities[4].crops.truncate(3);
        s.embeddings.truncate((4 * 10 + 3) * 16);
        let o = TrainOptions::default();
        let a = split(&s, &o);
        let b = split(&s, &o);
        assert_eq!(a.train.y, b.train.y);
        assert_eq!(a.held.x, b.held.x);
        assert_eq!(a.labels.len(), 4);
        assert_eq!(
            a.held_back,
            vec![HeldBack {
                slug: "p004".into(),
                crops: 3
            }]
        );
        assert_eq!(counts(&a), vec![(8, 2); 4]);
        let c = split(&s, &TrainOptions { seed: 2, ..o });
        assert_ne!(a.held.x, c.held.x, "another seed holds out other crops");
    }

    #[test]
    fn training_fits_the_train_rows_deterministically() {
        // Noisy identities whose means alone confuse them: the trained head must fit the rows
        // it saw better than the means do.
        let s = snapshot(40, 30, 1.3);
        let o = TrainOptions {
            threads: 2,
            ..Default::default()
        };
        let sp = split(&s, &o);
        let protos = prototypes(&sp);
        let base = Head {
            labels: sp.labels.clone(),
            dim: sp.dim,
            weights: protos.clone(),
        };
        let before = evaluate(&sp.held, sp.dim, sp.labels.len(), &|x| base.scores(x));
        let steps = std::cell::Cell::new(0);
        let head = train_head(&sp, &o, &|s, n| {
            assert!(s <= n);
            steps.set(s)
        });
        assert_eq!(steps.get(), o.steps);
        let after = evaluate(&sp.held, sp.dim, sp.labels.len(), &|x| head.scores(x));
        let train_before = evaluate(&sp.train, sp.dim, sp.labels.len(), &|x| base.scores(x));
        let train_after = evaluate(&sp.train, sp.dim, sp.labels.len(), &|x| head.scores(x));
        assert!(
            train_after.top1 > train_before.top1,
            "train top-1 {} → {}",
            train_before.top1,
            train_after.top1
        );
        // Isotropic noise makes the means the best possible classifier, so held-out accuracy
        // cannot rise much; it must not collapse either.
        assert!(
            after.top1 >= before.top1 - 0.1,
            "held-out top-1 {} → {}",
            before.top1,
            after.top1
        );
        let again = train_head(&sp, &o, &|_, _| {});
        assert_eq!(again, head, "the same seed trains the same head");
        for w in head.weights.chunks_exact(sp.dim) {
            assert!((norm(w) - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn evaluation_counts_ranks() {
        let held = Rows {
            x: vec![1.0, 0.0, 0.0, 1.0],
            y: vec![0, 1],
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(held.filter(|k| k == "b").y, vec![1]);
        let acc = evaluate(&held, 2, 2, &|x| vec![x[0], 0.5]);
        // Row 0: class 0 scores 1.0 > 0.5 (right); row 1: class 1 scores 0.5 > 0.0 (right).
        assert_eq!((acc.top1, acc.top5, acc.n), (1.0, 1.0, 2));
        let acc = evaluate(&held, 2, 2, &|_| vec![0.0, 1.0]);
        assert_eq!(acc.top1, 0.5);
        assert_eq!(acc.correct, vec![0, 1]);
    }
}

//! Exact top-k over raw rows of embeddings: the best `k` rows of a matrix by inner product (or,
//! on plain rows, by Euclidean distance given the rows' squared norms), one query or a batch.
//!
//! This is what the search benchmark (`tests/benches/search.rs`) measures against faiss's
//! `IndexFlatIP`: the building block for a gallery of millions of faces. The gallery the product
//! serves today (`twin_core::gallery`) scans its rows with one vectorised dot product each and
//! does not use it yet. Every loop is written as fixed-size array arithmetic that the compiler
//! turns into SIMD code, compiled three times (AVX-512, AVX2 + FMA, the baseline) with the widest
//! one the processor runs chosen at run time; one loop (one query on plain rows with AVX-512) is
//! written with intrinsics, where the compiler's own version came out several times longer. Every
//! loop ends the same way: finished scores are compared with the current k-th best in one vector
//! comparison, and only the rare row that beats it goes to a heap.
//!
//! - [`PackedRows`] (the fast path; one copy of the rows): blocks of 16 rows stored dimension by
//!   dimension. One query is then plain vertical multiply-adds, 16 rows per vector, over one
//!   contiguous stream, with a sparse software prefetch far ahead; a batch is a blocked matrix
//!   product whose micro-kernel keeps 8 queries × 32 rows of dot products in registers.
//! - Plain rows ([`top_k_ip`], [`top_k_l2`] and their batches; no copy): one query computes each
//!   row's dot product as lane partial sums, asking for memory a few rows ahead; a batch packs
//!   the queries in groups and sweeps cache-sized blocks of rows once per group.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Dot product written so the compiler vectorises it (8 independent accumulators).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Squared Euclidean distance, written like [`dot`] so the compiler vectorises it.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// Rows of one cache block in the batched search, as bytes (a fraction of a 2 MB L2).
const BLOCK_BYTES: usize = 256 * 1024;

/// One kept row, ordered so that a max-heap's top is the worst kept row: the lowest score, and
/// among equal scores the highest row index (so results equal a stable sort, best first).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    row: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The best `k` rows seen so far, by score (higher is better).
#[derive(Debug)]
struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k),
        }
    }

    /// A score below this cannot enter: −∞ until `k` rows are kept, +∞ when `k` is 0.
    fn threshold(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |c| c.score)
        }
    }

    /// Offers a row; NaN scores never enter. Rows must be offered in increasing order.
    fn push(&mut self, score: f32, row: usize) {
        if score.is_nan() || self.k == 0 {
            return;
        }
        let c = Candidate { score, row };
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if c < *worst {
                *worst = c;
            }
        }
    }

    /// (row, score) pairs, best first.
    fn into_sorted(self) -> Vec<(usize, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| (c.row, c.score))
            .collect()
    }
}

/// `a·b + c`, fused when the instruction set has FMA (a plain `mul_add` without it would call
/// the slow software `fmaf`).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Rows the single-query loop finishes together (their lane sums are added up at once).
const ONE_ROWS: usize = 16;
/// How far ahead of the row it reads the single-query loop asks for memory, in floats (2 KiB:
/// a one-pass stream over a large matrix otherwise waits on DRAM more than the hardware
/// prefetcher hides).
const PREFETCH_AHEAD: usize = 512;
/// Floats per cache line.
const LINE: usize = 16;

/// Asks the processor to start loading the cache line at `p` (any address: never faults).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it reads nothing into the program and never faults,
    // whatever the address. SSE, which it needs, is part of every x86-64 processor.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `x·q` as `W` lane partial sums and a scalar for the last `dim mod 2W` values: the dot
/// product is their total. (The lane arrays are only ever used whole, so that they stay whole
/// SIMD registers; touching one lane makes the compiler split them.)
#[inline(always)]
fn dot_lanes<const W: usize, const FMA: bool>(x: &[f32], q: &[f32]) -> ([f32; W], f32) {
    let mut a = [0f32; W];
    let mut b = [0f32; W];
    let (xc, qc) = (x.chunks_exact(2 * W), q.chunks_exact(2 * W));
    let (xr, qr) = (xc.remainder(), qc.remainder());
    for (xv, qv) in xc.zip(qc) {
        for l in 0..W {
            a[l] = madd::<FMA>(xv[l], qv[l], a[l]);
            b[l] = madd::<FMA>(xv[W + l], qv[W + l], b[l]);
        }
    }
    let mut tail = 0.0;
    for (xv, qv) in xr.iter().zip(qr) {
        tail = madd::<FMA>(*xv, *qv, tail);
    }
    for l in 0..W {
        a[l] += b[l];
    }
    (a, tail)
}

/// One query against every row: score = q·x − bias·|x|² (no bias for inner product, ½ for L2).
#[inline(always)]
fn scan_one<const W: usize, const FMA: bool>(
    matrix: &[f32],
    dim: usize,
    query: &[f32],
    norms: Option<(&[f32], f32)>,
    top: &mut TopK,
) {
    let n = matrix.len() / dim;
    let mut thr = top.threshold();
    let mut r = 0;
    while r + ONE_ROWS <= n {
        let block = &matrix[r * dim..(r + ONE_ROWS) * dim];
        let mut part = [[0f32; W]; ONE_ROWS];
        let mut s = [0f32; ONE_ROWS];
        for ((p, t), row) in part.iter_mut().zip(&mut s).zip(block.chunks_exact(dim)) {
            let ahead = row.as_ptr().wrapping_add(PREFETCH_AHEAD);
            for c in (0..dim).step_by(LINE) {
                prefetch(ahead.wrapping_add(c));
            }
            (*p, *t) = dot_lanes::<W, FMA>(row, query);
        }
        for l in 0..W {
            for (si, pi) in s.iter_mut().zip(&part) {
                *si += pi[l];
            }
        }
        if let Some((nv, b)) = norms {
            for (i, v) in s.iter_mut().enumerate() {
                *v -= b * nv[r + i];
            }
        }
        let mut hit = false;
        for v in s {
            hit |= v >= thr;
        }
        if hit {
            for (i, v) in s.into_iter().enumerate() {
                if v >= thr {
                    top.push(v, r + i);
                    thr = top.threshold();
                }
            }
        }
        r += ONE_ROWS;
    }
    while r < n {
        let (lanes, mut v) = dot_lanes::<W, FMA>(&matrix[r * dim..(r + 1) * dim], query);
        for x in lanes {
            v += x;
        }
        if let Some((nv, b)) = norms {
            v -= b * nv[r];
        }
        if v >= thr {
            top.push(v, r);
            thr = top.threshold();
        }
        r += 1;
    }
}

/// `MR` rows × `L` packed queries of dot products, kept in registers.
#[inline(always)]
fn micro<const L: usize, const MR: usize, const FMA: bool>(
    rows: &[f32],
    dim: usize,
    packed: &[f32],
) -> [[f32; L]; MR] {
    let x: [&[f32]; MR] = std::array::from_fn(|i| &rows[i * dim..(i + 1) * dim]);
    let mut acc = [[0f32; L]; MR];
    for (d, qv) in packed.chunks_exact(L).enumerate().take(dim) {
        let qv: &[f32; L] = qv.try_into().expect("L lanes");
        for (a, row) in acc.iter_mut().zip(&x) {
            let v = row[d];
            for l in 0..L {
                a[l] = madd::<FMA>(v, qv[l], a[l]);
            }
        }
    }
    acc
}

/// Offers one row's scores for a query group: one vector comparison with the groups'
/// thresholds, and the heaps only for the lanes it beats.
#[inline(always)]
fn offer_lanes<const L: usize>(
    acc: &[f32; L],
    row: usize,
    norms: Option<(&[f32], f32)>,
    tops: &mut [TopK],
    thr: &mut [f32; L],
) {
    let bias = match norms {
        Some((nv, b)) => b * nv[row],
        None => 0.0,
    };
    let mut hit = false;
    for l in 0..L {
        hit |= acc[l] - bias >= thr[l];
    }
    if hit {
        for (l, top) in tops.iter_mut().enumerate() {
            let s = acc[l] - bias;
            if s >= thr[l] {
                top.push(s, row);
                thr[l] = top.threshold();
            }
        }
    }
}

/// One query group (`L` lanes, `tops.len()` of them real) against one block of rows.
#[inline(always)]
fn sweep<const L: usize, const MR: usize, const FMA: bool>(
    block: &[f32],
    first_row: usize,
    dim: usize,
    packed: &[f32],
    norms: Option<(&[f32], f32)>,
    tops: &mut [TopK],
    thr: &mut [f32; L],
) {
    let n = block.len() / dim;
    let mut r = 0;
    while r + MR <= n {
        let acc = micro::<L, MR, FMA>(&block[r * dim..(r + MR) * dim], dim, packed);
        for (i, a) in acc.iter().enumerate() {
            offer_lanes(a, first_row + r + i, norms, tops, thr);
        }
        r += MR;
    }
    while r < n {
        let acc = micro::<L, 1, FMA>(&block[r * dim..(r + 1) * dim], dim, packed);
        offer_lanes(&acc[0], first_row + r, norms, tops, thr);
        r += 1;
    }
}

/// Packs queries `first..first + live` as `[dim][lanes]`, zero in the unused lanes.
fn pack(queries: &[f32], dim: usize, first: usize, live: usize, lanes: usize) -> Vec<f32> {
    let mut p = vec![0f32; dim * lanes];
    for j in 0..live {
        let q = &queries[(first + j) * dim..(first + j + 1) * dim];
        for (d, v) in q.iter().enumerate() {
            p[d * lanes + j] = *v;
        }
    }
    p
}

/// Every query against every row, blocked: groups of `L` queries (`MR` rows per step) and a
/// last group of at most `H = L/2` (`MH` rows per step), so few lanes are wasted on padding.
#[inline(always)]
fn scan_batch<const L: usize, const H: usize, const MR: usize, const MH: usize, const FMA: bool>(
    matrix: &[f32],
    dim: usize,
    queries: &[f32],
    norms: Option<(&[f32], f32)>,
    tops: &mut [TopK],
) {
    let n = matrix.len() / dim;
    let nq = tops.len();
    // (first query, live queries, lanes, packed queries)
    let mut groups = Vec::new();
    let mut first = 0;
    while first < nq {
        let left = nq - first;
        let (live, lanes) = if left > H {
            (left.min(L), L)
        } else {
            (left, H)
        };
        groups.push((first, live, lanes, pack(queries, dim, first, live, lanes)));
        first += live;
    }
    let mut thr_full = vec![[f32::INFINITY; L]; groups.len()];
    let mut thr_half = vec![[f32::INFINITY; H]; groups.len()];
    for (g, (first, live, lanes, _)) in groups.iter().enumerate() {
        for j in 0..*live {
            let t = tops[first + j].threshold();
            if *lanes == L {
                thr_full[g][j] = t;
            } else {
                thr_half[g][j] = t;
            }
        }
    }
    let block_rows = (BLOCK_BYTES / (dim * 4)).max(48) / 48 * 48;
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + block_rows).min(n);
        let block = &matrix[r0 * dim..r1 * dim];
        for (g, (first, live, lanes, packed)) in groups.iter().enumerate() {
            let tops = &mut tops[*first..first + live];
            if *lanes == L {
                sweep::<L, MR, FMA>(block, r0, dim, packed, norms, tops, &mut thr_full[g]);
            } else {
                sweep::<H, MH, FMA>(block, r0, dim, packed, norms, tops, &mut thr_half[g]);
            }
        }
        r0 = r1;
    }
}

/// Rows per block of a [`PackedRows`].
const PACK: usize = 16;
/// How far ahead of the block it reads the packed one-query loop asks for memory, in floats
/// (16 KiB).
const PACKED_AHEAD: usize = 4096;
/// Floats between two of those requests: one cache line in sixteen is enough to keep the
/// hardware prefetcher streaming across page boundaries (measured at 1 M rows).
const PACKED_PREFETCH_STEP: usize = 256;

/// One query against every block of a packed matrix: per block, `PACK` dot products side by side
/// in four lane arrays (dimensions d ≡ 0, 1, 2, 3 mod 4, so four independent chains), added up
/// and compared with the k-th best in one vector comparison.
#[inline(always)]
fn packed_one<const FMA: bool>(p: &PackedRows, query: &[f32], top: &mut TopK) {
    let dim = p.dim;
    let body = dim - dim % 4;
    let mut thr = top.threshold();
    for (b, blk) in p.data.chunks_exact(PACK * dim).enumerate() {
        let ahead = blk.as_ptr().wrapping_add(PACKED_AHEAD);
        for c in (0..PACK * dim).step_by(PACKED_PREFETCH_STEP) {
            prefetch(ahead.wrapping_add(c));
        }
        let mut acc = [[0f32; PACK]; 4];
        for (x4, q4) in blk[..body * PACK]
            .chunks_exact(4 * PACK)
            .zip(query.chunks_exact(4))
        {
            for (k, a) in acc.iter_mut().enumerate() {
                let x: &[f32; PACK] = x4[k * PACK..(k + 1) * PACK].try_into().expect("PACK");
                let v = q4[k];
                for l in 0..PACK {
                    a[l] = madd::<FMA>(v, x[l], a[l]);
                }
            }
        }
        for (x, v) in blk[body * PACK..].chunks_exact(PACK).zip(&query[body..]) {
            for l in 0..PACK {
                acc[0][l] = madd::<FMA>(*v, x[l], acc[0][l]);
            }
        }
        let mut s = [0f32; PACK];
        let mut hit = false;
        for l in 0..PACK {
            s[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
            hit |= s[l] >= thr;
        }
        if hit {
            for (l, v) in s.into_iter().enumerate() {
                let r = b * PACK + l;
                if r < p.rows && v >= thr {
                    top.push(v, r);
                    thr = top.threshold();
                }
            }
        }
    }
}

/// `MR` queries × `NB` blocks of dot products, kept in registers: per dimension `NB` block
/// vectors loaded and each query's value broadcast.
#[inline(always)]
fn packed_micro<const MR: usize, const NB: usize, const FMA: bool>(
    blocks: &[f32],
    queries: &[f32],
    dim: usize,
) -> [[[f32; PACK]; NB]; MR] {
    let x: [&[f32]; NB] = std::array::from_fn(|b| &blocks[b * PACK * dim..(b + 1) * PACK * dim]);
    let q: [&[f32]; MR] = std::array::from_fn(|j| &queries[j * dim..(j + 1) * dim]);
    let mut acc = [[[0f32; PACK]; NB]; MR];
    for d in 0..dim {
        let xv: [&[f32; PACK]; NB] =
            std::array::from_fn(|b| x[b][d * PACK..(d + 1) * PACK].try_into().expect("PACK"));
        for (a, qj) in acc.iter_mut().zip(&q) {
            let v = qj[d];
            for (ab, xb) in a.iter_mut().zip(&xv) {
                for l in 0..PACK {
                    ab[l] = madd::<FMA>(v, xb[l], ab[l]);
                }
            }
        }
    }
    acc
}

/// `MR` queries (from `first`) against a run of blocks starting at block `first_block`, `NB`
/// blocks per step.
#[inline(always)]
fn packed_sweep<const MR: usize, const NB: usize, const FMA: bool>(
    p: &PackedRows,
    blocks: std::ops::Range<usize>,
    queries: &[f32],
    tops: &mut [TopK],
    thr: &mut [f32],
) {
    let (dim, stride) = (p.dim, PACK * p.dim);
    let mut b = blocks.start;
    let mut offer = |acc: &[[[f32; PACK]; NB]; MR], b: usize, nb: usize, tops: &mut [TopK]| {
        for (j, a) in acc.iter().enumerate() {
            for (i, ab) in a.iter().enumerate().take(nb) {
                let mut hit = false;
                for v in ab {
                    hit |= *v >= thr[j];
                }
                if hit {
                    for (l, v) in ab.iter().enumerate() {
                        let r = (b + i) * PACK + l;
                        if r < p.rows && *v >= thr[j] {
                            tops[j].push(*v, r);
                            thr[j] = tops[j].threshold();
                        }
                    }
                }
            }
        }
    };
    while b + NB <= blocks.end {
        let acc = packed_micro::<MR, NB, FMA>(&p.data[b * stride..(b + NB) * stride], queries, dim);
        offer(&acc, b, NB, tops);
        b += NB;
    }
    while b < blocks.end {
        let one = packed_micro::<MR, 1, FMA>(&p.data[b * stride..(b + 1) * stride], queries, dim);
        let mut acc = [[[0f32; PACK]; NB]; MR];
        for (a, o) in acc.iter_mut().zip(&one) {
            a[0] = o[0];
        }
        offer(&acc, b, 1, tops);
        b += 1;
    }
}

/// Every query against every block: runs of blocks that fit in the L2 cache, each swept by
/// groups of `MR` queries (`NB` blocks per step), the last few queries four or one at a time.
#[inline(always)]
fn packed_batch<const MR: usize, const NB: usize, const FMA: bool>(
    p: &PackedRows,
    queries: &[f32],
    tops: &mut [TopK],
) {
    let dim = p.dim;
    let nq = tops.len();
    let mut thr: Vec<f32> = tops.iter().map(TopK::threshold).collect();
    let blocks = p.data.len() / (PACK * dim);
    let run = (BLOCK_BYTES / (PACK * dim * 4)).max(NB) / NB * NB;
    let mut b0 = 0;
    while b0 < blocks {
        let b1 = (b0 + run).min(blocks);
        let mut j = 0;
        while j + MR <= nq {
            packed_sweep::<MR, NB, FMA>(
                p,
                b0..b1,
                &queries[j * dim..(j + MR) * dim],
                &mut tops[j..j + MR],
                &mut thr[j..j + MR],
            );
            j += MR;
        }
        // The last few queries: four at a time, then one at a time.
        while MR > 4 && j + 4 <= nq {
            packed_sweep::<4, NB, FMA>(
                p,
                b0..b1,
                &queries[j * dim..(j + 4) * dim],
                &mut tops[j..j + 4],
                &mut thr[j..j + 4],
            );
            j += 4;
        }
        while j < nq {
            packed_sweep::<1, NB, FMA>(
                p,
                b0..b1,
                &queries[j * dim..(j + 1) * dim],
                &mut tops[j..j + 1],
                &mut thr[j..j + 1],
            );
            j += 1;
        }
        b0 = b1;
    }
}

/// A matrix re-laid for exact inner-product search: blocks of 16 rows, each stored dimension
/// by dimension (`[dim][16]`), the last block padded with zero rows. A query then runs as plain
/// vertical multiply-adds, 16 rows per vector, with no per-row horizontal sums, and reads one
/// contiguous stream; a batch of queries is a blocked matrix product over the same layout. One
/// copy of the rows, built once (as faiss's `IndexFlat` copies what it is given).
#[derive(Debug, Clone, Default)]
pub struct PackedRows {
    dim: usize,
    rows: usize,
    /// blocks × dim × 16.
    data: Vec<f32>,
}

impl PackedRows {
    /// Packs `matrix` (row-major, `dim` columns).
    pub fn from_rows(matrix: &[f32], dim: usize) -> Self {
        check_shapes(matrix, dim, &[]);
        let rows = matrix.len() / dim;
        let mut data = vec![0f32; rows.div_ceil(PACK) * PACK * dim];
        for (block, out) in matrix
            .chunks(PACK * dim)
            .zip(data.chunks_exact_mut(PACK * dim))
        {
            // Written in order, read across the block's rows (all in L1).
            let live = block.len() / dim;
            for (d, lanes) in out.chunks_exact_mut(PACK).enumerate() {
                for (l, v) in lanes.iter_mut().enumerate().take(live) {
                    *v = block[l * dim + d];
                }
            }
        }
        PackedRows { dim, rows, data }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes held (the rows, padded to whole blocks).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    fn search_with(&self, isa: Isa, queries: &[f32], k: usize) -> Vec<Vec<(usize, f32)>> {
        if self.dim == 0 {
            assert!(queries.is_empty(), "an empty PackedRows takes no queries");
            return Vec::new();
        }
        assert_eq!(
            queries.len() % self.dim,
            0,
            "query length is not a multiple of dim"
        );
        let nq = queries.len() / self.dim;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        if k > 0 && self.rows > 0 {
            if nq == 1 {
                isa.packed_one(self, queries, &mut tops[0]);
            } else {
                isa.packed_batch(self, queries, &mut tops);
            }
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// The `k` rows with the largest inner product with `query`, as (row, inner product), best
    /// first; ties go to the lower row. Same answer as [`top_k_ip`] on the unpacked rows.
    pub fn top_k_ip(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        assert_eq!(query.len(), self.dim, "query length");
        self.search_with(Isa::detect(), query, k)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// [`PackedRows::top_k_ip`] for each of a batch of queries (row-major), in one blocked pass.
    pub fn top_k_ip_batch(&self, queries: &[f32], k: usize) -> Vec<Vec<(usize, f32)>> {
        self.search_with(Isa::detect(), queries, k)
    }
}

#[cfg(target_arch = "x86_64")]
mod isa {
    //! The scan loops compiled for each x86-64 instruction set; callers check the processor.
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps,
        _mm512_reduce_add_ps, _mm512_setzero_ps,
    };

    use super::{
        packed_batch, packed_one, prefetch, scan_batch, scan_one, PackedRows, TopK, LINE,
        PREFETCH_AHEAD,
    };

    /// One query against every row with AVX-512, written with intrinsics: per row two vector
    /// accumulators and one reduction, about 20 instructions for a 128-d row. (The portable
    /// loop's lane sums compile to several times that, and a one-pass scan over a matrix larger
    /// than the caches runs faster the fewer instructions stand between its loads.)
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) fn one_avx512(
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        top: &mut TopK,
    ) {
        // The embedding length gets its own copy, with the loop over the row unrolled.
        if dim == 128 {
            one_avx512_rows::<128>(m, dim, q, norms, top)
        } else {
            one_avx512_rows::<0>(m, dim, q, norms, top)
        }
    }

    /// [`one_avx512`] for rows of `D` values (`D` 0: `dim`, known only at run time).
    #[inline(always)]
    fn one_avx512_rows<const D: usize>(
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        top: &mut TopK,
    ) {
        let dim = if D == 0 { dim } else { D };
        assert!(q.len() == dim && m.len().is_multiple_of(dim), "shapes");
        let body = dim - dim % 32;
        let tail = dim % 16;
        // Lanes of the last partial vector: the low `tail` bits.
        let mask = ((1u32 << tail) - 1) as u16;
        let qp = q.as_ptr();
        let mut thr = top.threshold();
        for (r, row) in m.chunks_exact(dim).enumerate() {
            let p = row.as_ptr();
            let ahead = p.wrapping_add(PREFETCH_AHEAD);
            for c in (0..dim).step_by(LINE) {
                prefetch(ahead.wrapping_add(c));
            }
            // SAFETY: `row` and `q` both hold `dim` values. The full loads read 16 values at
            // offsets `d` with `d + 16 <= dim` (`d + 32 <= body` in the loop, `d + 16 <= dim`
            // after it); the masked load reads only the `tail` lanes below `dim` (masked-off
            // lanes are not accessed and cannot fault).
            let mut v = unsafe {
                let mut a = _mm512_setzero_ps();
                let mut b = _mm512_setzero_ps();
                let mut d = 0;
                while d < body {
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(d)), _mm512_loadu_ps(qp.add(d)), a);
                    b = _mm512_fmadd_ps(
                        _mm512_loadu_ps(p.add(d + 16)),
                        _mm512_loadu_ps(qp.add(d + 16)),
                        b,
                    );
                    d += 32;
                }
                if dim - d >= 16 {
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(d)), _mm512_loadu_ps(qp.add(d)), a);
                    d += 16;
                }
                if d < dim {
                    b = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(mask, p.add(d)),
                        _mm512_maskz_loadu_ps(mask, qp.add(d)),
                        b,
                    );
                }
                _mm512_reduce_add_ps(_mm512_add_ps(a, b))
            };
            if let Some((nv, bias)) = norms {
                v -= bias * nv[r];
            }
            if v >= thr {
                top.push(v, r);
                thr = top.threshold();
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn one_avx2(
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        top: &mut TopK,
    ) {
        scan_one::<8, true>(m, dim, q, norms, top)
    }

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) fn packed_one_avx512(p: &PackedRows, q: &[f32], top: &mut TopK) {
        packed_one::<true>(p, q, top)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn packed_one_avx2(p: &PackedRows, q: &[f32], top: &mut TopK) {
        packed_one::<true>(p, q, top)
    }

    /// 8 queries × 2 blocks: 16 vector accumulators of 32.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) fn packed_batch_avx512(p: &PackedRows, q: &[f32], tops: &mut [TopK]) {
        packed_batch::<8, 2, true>(p, q, tops)
    }

    /// 6 queries × 1 block: 12 vector accumulators of 16.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn packed_batch_avx2(p: &PackedRows, q: &[f32], tops: &mut [TopK]) {
        packed_batch::<6, 1, true>(p, q, tops)
    }

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) fn batch_avx512(
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        tops: &mut [TopK],
    ) {
        scan_batch::<32, 16, 8, 16, true>(m, dim, q, norms, tops)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn batch_avx2(
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        tops: &mut [TopK],
    ) {
        scan_batch::<16, 8, 6, 12, true>(m, dim, q, norms, tops)
    }
}

/// The instruction sets the scan loops are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Base,
}

impl Isa {
    /// The widest one this processor runs.
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::arch::is_x86_feature_detected!("fma");
            if fma
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Isa::Avx512;
            }
            if fma && std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    }

    /// Every one this processor runs (tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Isa> {
        let best = Isa::detect();
        let mut all = vec![Isa::Base];
        #[cfg(target_arch = "x86_64")]
        {
            if best == Isa::Avx512 || best == Isa::Avx2 {
                all.push(Isa::Avx2);
            }
            if best == Isa::Avx512 {
                all.push(Isa::Avx512);
            }
        }
        all
    }

    fn one(self, m: &[f32], dim: usize, q: &[f32], norms: Option<(&[f32], f32)>, top: &mut TopK) {
        match self {
            // SAFETY: `detect` chose this variant only after checking that the processor has
            // every feature the function is compiled with.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { isa::one_avx512(m, dim, q, norms, top) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { isa::one_avx2(m, dim, q, norms, top) },
            Isa::Base => scan_one::<4, false>(m, dim, q, norms, top),
        }
    }

    fn batch(
        self,
        m: &[f32],
        dim: usize,
        q: &[f32],
        norms: Option<(&[f32], f32)>,
        tops: &mut [TopK],
    ) {
        match self {
            // SAFETY: `detect` chose this variant only after checking that the processor has
            // every feature the function is compiled with.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { isa::batch_avx512(m, dim, q, norms, tops) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { isa::batch_avx2(m, dim, q, norms, tops) },
            Isa::Base => scan_batch::<8, 4, 6, 12, false>(m, dim, q, norms, tops),
        }
    }

    fn packed_one(self, p: &PackedRows, q: &[f32], top: &mut TopK) {
        match self {
            // SAFETY: `detect` chose this variant only after checking that the processor has
            // every feature the function is compiled with.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { isa::packed_one_avx512(p, q, top) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { isa::packed_one_avx2(p, q, top) },
            Isa::Base => packed_one::<false>(p, q, top),
        }
    }

    fn packed_batch(self, p: &PackedRows, q: &[f32], tops: &mut [TopK]) {
        match self {
            // SAFETY: `detect` chose this variant only after checking that the processor has
            // every feature the function is compiled with.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { isa::packed_batch_avx512(p, q, tops) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { isa::packed_batch_avx2(p, q, tops) },
            Isa::Base => packed_batch::<3, 1, false>(p, q, tops),
        }
    }
}

fn check_shapes(matrix: &[f32], dim: usize, queries: &[f32]) {
    assert!(dim > 0, "dim must be positive");
    assert_eq!(
        matrix.len() % dim,
        0,
        "matrix length is not a multiple of dim"
    );
    assert_eq!(
        queries.len() % dim,
        0,
        "query length is not a multiple of dim"
    );
}

fn ip_with(
    isa: Isa,
    matrix: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    check_shapes(matrix, dim, queries);
    let nq = queries.len() / dim;
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    if k > 0 && !matrix.is_empty() {
        if nq == 1 {
            isa.one(matrix, dim, queries, None, &mut tops[0]);
        } else {
            isa.batch(matrix, dim, queries, None, &mut tops);
        }
    }
    tops.into_iter().map(TopK::into_sorted).collect()
}

fn l2_with(
    isa: Isa,
    matrix: &[f32],
    dim: usize,
    norms: &[f32],
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    check_shapes(matrix, dim, queries);
    assert_eq!(norms.len(), matrix.len() / dim, "one norm per row");
    let nq = queries.len() / dim;
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    if k > 0 && !matrix.is_empty() {
        // Largest q·x − |x|²/2 is smallest |q − x|² = |q|² + |x|² − 2 q·x.
        let half = Some((norms, 0.5));
        if nq == 1 {
            isa.one(matrix, dim, queries, half, &mut tops[0]);
        } else {
            isa.batch(matrix, dim, queries, half, &mut tops);
        }
    }
    tops.into_iter()
        .zip(queries.chunks_exact(dim))
        .map(|(top, q)| {
            let qn = dot(q, q);
            top.into_sorted()
                .into_iter()
                .map(|(r, s)| (r, (qn - 2.0 * s).max(0.0)))
                .collect()
        })
        .collect()
}

/// The `k` rows of `matrix` (row-major, `dim` columns) with the largest inner product with
/// `query`, as (row, inner product), best first; ties go to the lower row.
pub fn top_k_ip(matrix: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    assert_eq!(query.len(), dim, "query length");
    ip_with(Isa::detect(), matrix, dim, query, k).swap_remove(0)
}

/// [`top_k_ip`] for each of a batch of queries (row-major, `dim` columns), in one blocked pass.
pub fn top_k_ip_batch(
    matrix: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    ip_with(Isa::detect(), matrix, dim, queries, k)
}

/// The `k` rows of `matrix` closest to `query` in Euclidean distance, as (row, squared
/// distance), closest first; `norms` holds each row's squared norm ([`squared_norms`]).
pub fn top_k_l2(
    matrix: &[f32],
    dim: usize,
    norms: &[f32],
    query: &[f32],
    k: usize,
) -> Vec<(usize, f32)> {
    assert_eq!(query.len(), dim, "query length");
    l2_with(Isa::detect(), matrix, dim, norms, query, k).swap_remove(0)
}

/// [`top_k_l2`] for each of a batch of queries (row-major, `dim` columns), in one blocked pass.
pub fn top_k_l2_batch(
    matrix: &[f32],
    dim: usize,
    norms: &[f32],
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    l2_with(Isa::detect(), matrix, dim, norms, queries, k)
}

/// Each row's squared norm, for [`top_k_l2`].
pub fn squared_norms(matrix: &[f32], dim: usize) -> Vec<f32> {
    assert!(dim > 0, "dim must be positive");
    matrix.chunks_exact(dim).map(|x| dot(x, x)).collect()
}

/// The instruction set the top-k functions use on this processor (for benchmark reports).
pub fn top_k_isa() -> &'static str {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2+fma",
        Isa::Base => "baseline",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−0.5, 0.5).
    fn random(seed: u64, n: usize) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    /// Brute force: every score in f64, a stable sort best first, the first k.
    fn brute(scores: impl Iterator<Item = f64>, k: usize, higher_first: bool) -> Vec<(usize, f64)> {
        let mut all: Vec<(usize, f64)> = scores.enumerate().collect();
        all.sort_by(|a, b| {
            let o = a.1.total_cmp(&b.1);
            if higher_first {
                o.reverse()
            } else {
                o
            }
        });
        all.truncate(k);
        all
    }

    fn ip64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    fn l2_64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum()
    }

    fn assert_same(got: &[(usize, f32)], want: &[(usize, f64)], what: &str) {
        let ids = |v: &[(usize, f32)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(
            ids(got),
            want.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{what}: rows"
        );
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(g.1) - w.1).abs() < 1e-4 * (1.0 + w.1.abs()),
                "{what}: row {} score {} vs {}",
                g.0,
                g.1,
                w.1
            );
        }
    }

    #[test]
    fn top_k_rows_match_brute_force_on_every_instruction_set() {
        for (case, &(dim, n, nq, k)) in [
            (128, 1000, 100, 10),
            (128, 997, 1, 10),
            (130, 301, 37, 7),
            (13, 250, 5, 20),
            (20, 50, 3, 5),
            (3, 40, 17, 40),
            (1, 30, 2, 3),
            (16, 5, 9, 10),
        ]
        .iter()
        .enumerate()
        {
            let m = random(case as u64 + 1, n * dim);
            let q = random(case as u64 + 100, nq * dim);
            let norms = squared_norms(&m, dim);
            for isa in Isa::available() {
                let what = format!("{isa:?} dim {dim} n {n} nq {nq} k {k}");
                let ip = ip_with(isa, &m, dim, &q, k);
                let l2 = l2_with(isa, &m, dim, &norms, &q, k);
                let packed = PackedRows::from_rows(&m, dim);
                let packed_all = packed.search_with(isa, &q, k);
                assert_eq!((ip.len(), l2.len()), (nq, nq), "{what}");
                for (j, qj) in q.chunks_exact(dim).enumerate() {
                    let want_ip = brute(m.chunks_exact(dim).map(|x| ip64(x, qj)), k, true);
                    assert_same(&ip[j], &want_ip, &format!("{what} ip query {j}"));
                    let want = brute(m.chunks_exact(dim).map(|x| l2_64(x, qj)), k, false);
                    assert_same(&l2[j], &want, &format!("{what} l2 query {j}"));
                    assert_same(
                        &packed_all[j],
                        &want_ip,
                        &format!("{what} packed query {j}"),
                    );
                    let alone = packed.search_with(isa, qj, k).swap_remove(0);
                    assert_same(&alone, &want_ip, &format!("{what} packed alone {j}"));
                    // One query alone takes the other loop; it must agree.
                    let alone = ip_with(isa, &m, dim, qj, k).swap_remove(0);
                    assert_same(&alone, &want_ip, &format!("{what} ip alone {j}"));
                }
            }
        }
    }

    #[test]
    fn top_k_ties_go_to_the_lower_row_and_k_is_capped() {
        // Rows 1, 3 and 4 are the same vector: equal scores, kept in row order.
        let dim = 4;
        let m = [
            0.0, 0.0, 0.0, 1.0, //
            1.0, 2.0, 0.0, 0.0, //
            0.5, 0.0, 0.0, 0.0, //
            1.0, 2.0, 0.0, 0.0, //
            1.0, 2.0, 0.0, 0.0, //
        ];
        for isa in Isa::available() {
            let one = ip_with(isa, &m, dim, &[1.0, 1.0, 0.0, 0.0], 2).swap_remove(0);
            assert_eq!(one, vec![(1, 3.0), (3, 3.0)], "{isa:?}");
            let two = ip_with(isa, &m, dim, &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], 2);
            assert_eq!(two, vec![vec![(1, 3.0), (3, 3.0)]; 2], "{isa:?}");
            let packed = PackedRows::from_rows(&m, dim);
            let one = packed.search_with(isa, &[1.0, 1.0, 0.0, 0.0], 2);
            assert_eq!(one, vec![vec![(1, 3.0), (3, 3.0)]], "{isa:?} packed");
            let two = packed.search_with(isa, &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], 2);
            assert_eq!(two, vec![vec![(1, 3.0), (3, 3.0)]; 2], "{isa:?} packed");
            // The padding rows of the last block (score 0 here) are never returned.
            let neg = packed.search_with(isa, &[-1.0, -1.0, -1.0, -1.0], 9);
            assert_eq!(neg[0].len(), 5, "{isa:?} packed");
            // k larger than the rows: every row, best first.
            let all = ip_with(isa, &m, dim, &[0.0, 0.0, 0.0, 1.0], 9).swap_remove(0);
            assert_eq!(all.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        }
        assert!(top_k_ip(&m, dim, &[1.0; 4], 0).is_empty());
        assert!(PackedRows::default().top_k_ip(&[], 3).is_empty());
        assert!(PackedRows::from_rows(&[], dim)
            .top_k_ip(&[1.0; 4], 3)
            .is_empty());
        assert!(top_k_ip(&[], dim, &[1.0; 4], 3).is_empty());
        assert_eq!(
            top_k_ip_batch(&m, dim, &[], 3),
            Vec::<Vec<(usize, f32)>>::new()
        );
        let d = top_k_l2(&m, dim, &squared_norms(&m, dim), &[1.0, 2.0, 0.0, 0.0], 1);
        assert_eq!(d, vec![(1, 0.0)]);
    }
}

//! The arithmetic of a gallery search: squared Euclidean distances from one query to many rows
//! of embeddings, and the dot product the rest of the system uses.
//!
//! [`l2_squared_rows`] is the loop every match runs (`twin_core::gallery` calls it over each
//! segment's rows, in memory or mapped from the file, without copying them). It takes the rows
//! as they are stored, row-major, and computes each `|x − q|²` directly (no precomputed norms,
//! so nothing is built when a gallery is opened and no rounding comes from `|x|² + |q|² − 2q·x`).
//! It is compiled three times and the widest one the processor runs is chosen at run time:
//! AVX-512 (16 rows at a time, one vector accumulator per row, the 16 sums gathered into one
//! vector by a transposing tree of shuffles instead of 16 horizontal sums), AVX2 + FMA (the same
//! with 8 rows), and a portable loop the compiler vectorises for the baseline instruction set.
//! A scan over a gallery larger than the caches is a one-pass stream limited by memory, not by
//! arithmetic: what the blocked loops gain over one row at a time (about a fifth at 1 M rows) is
//! mostly more cache lines asked for at once, and the AVX-512 loop also asks for memory a few
//! rows ahead, which the hardware prefetcher alone does not keep full.

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

/// `out[r] = |rows[r] − query|²` for each row of `rows` (row-major, `query.len()` values per
/// row), with the widest instruction set this processor runs (see [`l2_isa`]).
///
/// Panics unless `rows` holds exactly `out.len()` rows of `query.len()` values.
pub fn l2_squared_rows(rows: &[f32], query: &[f32], out: &mut [f32]) {
    Isa::detect().l2_rows(rows, query, out)
}

/// The instruction set [`l2_squared_rows`] uses on this processor for rows of `dim` values
/// (for benchmark reports).
pub fn l2_isa(dim: usize) -> &'static str {
    match Isa::detect().for_dim(dim) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2+fma",
        Isa::Base => "baseline",
    }
}

/// How far ahead of the rows it reads a kernel asks for memory, in bytes: far enough for DRAM's
/// latency at the speed one core consumes rows.
const PREFETCH_BYTES: usize = 4096;
/// Bytes per cache line.
const LINE_BYTES: usize = 64;

/// The portable loop: one row at a time (the compiler vectorises [`l2_squared`]).
#[inline(always)]
fn l2_rows_base(rows: &[f32], query: &[f32], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
        *o = l2_squared(x, query);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The kernels written with x86-64 intrinsics; callers check the processor first.
    use std::arch::x86_64::*;

    use super::{LINE_BYTES, PREFETCH_BYTES};

    /// Asks the processor to start loading the cache line at `p` (any address: never faults).
    #[inline(always)]
    fn prefetch(p: *const f32) {
        // SAFETY: a prefetch is only a hint; it reads nothing into the program and never
        // faults, whatever the address. SSE, which it needs, is part of every x86-64 processor.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

    /// Asks for the `bytes` from `PREFETCH_BYTES` past `p`, one request per cache line.
    #[inline(always)]
    fn prefetch_ahead(p: *const f32, bytes: usize) {
        let ahead = p.wrapping_byte_add(PREFETCH_BYTES);
        for b in (0..bytes).step_by(LINE_BYTES) {
            prefetch(ahead.wrapping_byte_add(b));
        }
    }

    /// Rows per block of the AVX-512 kernel (one accumulator each, 16 sums per vector).
    const ROWS16: usize = 16;

    /// `|x − q|²` of rows of `dim` values, `dim` a multiple of 16, with AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn l2_rows_avx512(rows: &[f32], q: &[f32], out: &mut [f32]) {
        // The embedding length gets its own copy, with the loop over a row unrolled.
        if q.len() == 128 {
            l2_rows_avx512_d::<128>(rows, q, out)
        } else {
            l2_rows_avx512_d::<0>(rows, q, out)
        }
    }

    /// [`l2_rows_avx512`] for rows of `D` values (`D` 0: `q.len()`, known only at run time).
    #[inline(always)]
    fn l2_rows_avx512_d<const D: usize>(rows: &[f32], q: &[f32], out: &mut [f32]) {
        let dim = if D == 0 { q.len() } else { D };
        assert!(
            dim > 0 && dim.is_multiple_of(16) && q.len() == dim && rows.len() == out.len() * dim,
            "shapes"
        );
        let blocks = out.len() / ROWS16;
        let (qp, xp, op) = (q.as_ptr(), rows.as_ptr(), out.as_mut_ptr());
        for b in 0..blocks {
            // SAFETY: block `b` is rows `16b..16b + 16`, all below `out.len()`: every load reads
            // 16 values at `r * dim + c` with `r < out.len()` and `c + 16 <= dim`, inside `rows`
            // (`out.len() * dim` values); the query loads read `q[c..c + 16]`, `c + 16 <= dim`;
            // the store writes `out[16b..16b + 16]`. Unaligned loads and stores accept any
            // address.
            unsafe {
                let x = xp.add(b * ROWS16 * dim);
                prefetch_ahead(x, ROWS16 * dim * 4);
                let mut acc = [_mm512_setzero_ps(); ROWS16];
                let mut c = 0;
                while c < dim {
                    let qc = _mm512_loadu_ps(qp.add(c));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let d = _mm512_sub_ps(_mm512_loadu_ps(x.add(r * dim + c)), qc);
                        *a = _mm512_fmadd_ps(d, d, *a);
                    }
                    c += 16;
                }
                _mm512_storeu_ps(op.add(b * ROWS16), sum16(&acc));
            }
        }
        for r in blocks * ROWS16..out.len() {
            // SAFETY: row `r < out.len()` holds `dim` values of `rows`; as above.
            unsafe {
                let x = xp.add(r * dim);
                let mut a = _mm512_setzero_ps();
                let mut c = 0;
                while c < dim {
                    let d = _mm512_sub_ps(_mm512_loadu_ps(x.add(c)), _mm512_loadu_ps(qp.add(c)));
                    a = _mm512_fmadd_ps(d, d, a);
                    c += 16;
                }
                *op.add(r) = _mm512_reduce_add_ps(a);
            }
        }
    }

    /// The totals of 16 vectors, in order, in one vector: a tree that halves the number of
    /// vectors at each level while adding pairs of lanes (45 instructions instead of 16
    /// horizontal sums).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sum16(v: &[__m512; 16]) -> __m512 {
        // Each 128-bit lane of `a + b` after unpacking: [a0+a2, b0+b2, a1+a3, b1+b3].
        let pair = |a: __m512, b: __m512| {
            _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
        };
        // Of two such: [a, b, c, d] partial sums per 128-bit lane.
        let quad = |ab: __m512, cd: __m512| {
            let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
            )
        };
        // Lanes 0 and 2 of each, then 1 and 3, added: [u.0+u.1, u.2+u.3, w.0+w.1, w.2+w.3].
        let halves = |u: __m512, w: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(u, w),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(u, w),
            )
        };
        let p: [__m512; 8] = std::array::from_fn(|i| pair(v[2 * i], v[2 * i + 1]));
        let q: [__m512; 4] = std::array::from_fn(|i| quad(p[2 * i], p[2 * i + 1]));
        halves(halves(q[0], q[1]), halves(q[2], q[3]))
    }

    /// Rows per block of the AVX2 kernel.
    const ROWS8: usize = 8;

    /// `|x − q|²` of rows of `dim` values, `dim` a multiple of 8, with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn l2_rows_avx2(rows: &[f32], q: &[f32], out: &mut [f32]) {
        let dim = q.len();
        assert!(
            dim > 0 && dim.is_multiple_of(8) && rows.len() == out.len() * dim,
            "shapes"
        );
        let blocks = out.len() / ROWS8;
        let (qp, xp, op) = (q.as_ptr(), rows.as_ptr(), out.as_mut_ptr());
        for b in 0..blocks {
            // SAFETY: as in `l2_rows_avx512_d`, with blocks of 8 rows and loads of 8 values.
            unsafe {
                // No software prefetch: at 1 M rows it made this loop slower (the AVX-512 one,
                // with half the instructions per row, gains from it).
                let x = xp.add(b * ROWS8 * dim);
                let mut acc = [_mm256_setzero_ps(); ROWS8];
                let mut c = 0;
                while c < dim {
                    let qc = _mm256_loadu_ps(qp.add(c));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let d = _mm256_sub_ps(_mm256_loadu_ps(x.add(r * dim + c)), qc);
                        *a = _mm256_fmadd_ps(d, d, *a);
                    }
                    c += 8;
                }
                // [0+1 | 2+3] pairs, then quads, then the two 128-bit halves.
                let h01 = _mm256_hadd_ps(acc[0], acc[1]);
                let h23 = _mm256_hadd_ps(acc[2], acc[3]);
                let h45 = _mm256_hadd_ps(acc[4], acc[5]);
                let h67 = _mm256_hadd_ps(acc[6], acc[7]);
                let lo = _mm256_hadd_ps(h01, h23);
                let hi = _mm256_hadd_ps(h45, h67);
                let s = _mm256_add_ps(
                    _mm256_permute2f128_ps::<0x20>(lo, hi),
                    _mm256_permute2f128_ps::<0x31>(lo, hi),
                );
                _mm256_storeu_ps(op.add(b * ROWS8), s);
            }
        }
        let tail = blocks * ROWS8;
        super::l2_rows_base(&rows[tail * dim..], q, &mut out[tail..]);
    }
}

/// The instruction sets the kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Base,
}

impl Isa {
    /// The widest one this processor runs (the standard library caches what it detects).
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Base
    }

    /// Every one this processor runs (tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Base];
        #[cfg(target_arch = "x86_64")]
        {
            let best = Isa::detect();
            if best != Isa::Base {
                all.push(Isa::Avx2);
            }
            if best == Isa::Avx512 {
                all.push(Isa::Avx512);
            }
        }
        all
    }

    /// This one, or a narrower one whose vectors fit rows of `dim` values.
    fn for_dim(self, dim: usize) -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if self == Isa::Avx512 && dim.is_multiple_of(16) && dim > 0 {
                return Isa::Avx512;
            }
            if self != Isa::Base && dim.is_multiple_of(8) && dim > 0 {
                // `detect` chose AVX-512 only with AVX2 and FMA present.
                return Isa::Avx2;
            }
        }
        let _ = dim;
        Isa::Base
    }

    fn l2_rows(self, rows: &[f32], query: &[f32], out: &mut [f32]) {
        let dim = query.len();
        assert!(
            dim > 0 && rows.len() == out.len() * dim,
            "{} values are not {} rows of {dim}",
            rows.len(),
            out.len()
        );
        match self.for_dim(dim) {
            // SAFETY: `detect` chose this variant (or a wider one, `for_dim` only narrows) after
            // checking that the processor has every feature the function is compiled with.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::l2_rows_avx512(rows, query, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::l2_rows_avx2(rows, query, out) },
            Isa::Base => l2_rows_base(rows, query, out),
        }
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

    fn l2_64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum()
    }

    #[test]
    fn distances_match_f64_on_every_instruction_set() {
        for (case, &(dim, n)) in [
            (128, 1000),
            (128, 37),
            (128, 16),
            (128, 15),
            (48, 301),
            (32, 17),
            (24, 19),
            (16, 40),
            (8, 9),
            (130, 33),
            (13, 25),
            (3, 40),
            (1, 5),
            (128, 0),
        ]
        .iter()
        .enumerate()
        {
            let m = random(case as u64 + 1, n * dim);
            let q = random(case as u64 + 100, dim);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; n];
                isa.l2_rows(&m, &q, &mut out);
                for (r, (got, x)) in out.iter().zip(m.chunks_exact(dim)).enumerate() {
                    let want = l2_64(x, &q);
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-5 * (1.0 + want),
                        "{isa:?} ({:?}) dim {dim} row {r} of {n}: {got} vs {want}",
                        isa.for_dim(dim)
                    );
                }
            }
        }
    }

    #[test]
    fn the_public_kernel_checks_shapes() {
        let mut out = [0f32; 2];
        l2_squared_rows(&[0.0, 0.0, 3.0, 4.0], &[0.0, 0.0], &mut out);
        assert_eq!(out, [0.0, 25.0]);
        assert!(std::panic::catch_unwind(|| {
            let mut out = [0f32; 2];
            l2_squared_rows(&[0.0; 5], &[0.0, 0.0], &mut out);
        })
        .is_err());
        assert!(!l2_isa(128).is_empty());
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }
}

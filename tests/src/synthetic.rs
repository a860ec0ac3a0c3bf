//! Synthetic identities for benchmarks at gallery scale: random directions of a dlib
//! descriptor's length, one upload each, committed as the dataset step commits them.

use twin_core::dataset::Update;
use twin_core::messages::{IngestMessage, MESSAGE_VERSION};

/// The backbone's embedding size.
pub const DIM: usize = 128;
/// The length of a synthetic embedding (about a dlib descriptor's).
pub const LENGTH: f32 = 0.6;
/// Identities per commit.
pub const BATCH: usize = 10_000;

/// SplitMix64: a small, fixed-seed generator (good enough for benchmark data).
pub struct Rng(pub u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A random direction (Gaussian, Box–Muller) scaled to [`LENGTH`].
    pub fn embedding(&mut self) -> Vec<f32> {
        let mut v = vec![0f32; DIM];
        for pair in v.chunks_exact_mut(2) {
            let (u, w) = (self.unit(), self.unit());
            let r = (-2.0 * u.ln()).sqrt();
            let t = std::f64::consts::TAU * w;
            pair[0] = (r * t.cos()) as f32;
            pair[1] = (r * t.sin()) as f32;
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x *= LENGTH / n);
        v
    }
}

/// Identity `i`'s slug: its number (`p0000042`), so that a row number names its identity too.
pub fn slug(i: usize) -> String {
    format!("p{i:07}")
}

/// Identity `i` ("Person 42"): one upload of `crops` crops with random embeddings.
pub fn person(i: usize, crops: usize, rng: &mut Rng) -> Update {
    let slug = slug(i);
    let upload_id = format!("u{i:07}");
    Update::Add {
        message: IngestMessage {
            v: MESSAGE_VERSION,
            crops: (0..crops)
                .map(|f| format!("crops/{slug}/{upload_id}/{}.png", f * 100))
                .collect(),
            upload_id,
            slug: slug.clone(),
            display_name: format!("Person {i}"),
            source_key: format!("uploads/{slug}/clip.mp4"),
            rejected: Default::default(),
        },
        embeddings: (0..crops).map(|_| rng.embedding()).collect(),
    }
}

/// Identities `0..people` of `crops` crops each, in batches of [`BATCH`] (one commit each).
pub fn batches(
    people: usize,
    crops: usize,
    rng: &mut Rng,
) -> impl Iterator<Item = Vec<Update>> + '_ {
    (0..people).step_by(BATCH).map(move |first| {
        (first..(first + BATCH).min(people))
            .map(|i| person(i, crops, rng))
            .collect()
    })
}

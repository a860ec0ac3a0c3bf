//! Synthetic identities for benchmarks at gallery scale: deterministic embeddings of the
//! backbone's size and length, one upload each, as the dataset step would commit them.

use twin_core::dataset::Update;
use twin_core::messages::{IngestMessage, MESSAGE_VERSION};

/// The backbone's embedding size.
pub const DIM: usize = 128;

/// A deterministic stream of values in [−0.5, 0.5).
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
}

/// Identity `i` (`p000042`, "Person 42"): one upload of `crops` crops whose embeddings have the
/// length of real ones (about 0.6).
pub fn person(i: usize, crops: usize, rng: &mut Rng) -> Update {
    let slug = format!("p{i:06}");
    let upload_id = format!("u{i:06}");
    let keys = (0..crops)
        .map(|f| format!("crops/{slug}/{upload_id}/{}.png", f * 100))
        .collect();
    let embeddings = (0..crops)
        .map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| rng.next_f32()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|x| x / n * 0.6).collect()
        })
        .collect();
    Update::Add {
        message: IngestMessage {
            v: MESSAGE_VERSION,
            upload_id,
            slug: slug.clone(),
            display_name: format!("Person {i}"),
            source_key: format!("uploads/{slug}/clip.mp4"),
            crops: keys,
            rejected: Default::default(),
        },
        embeddings,
    }
}

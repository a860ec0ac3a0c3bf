//! Mutation fuzzing on the stable toolchain, bounded so that it runs in the test suite.
//!
//! A target is a function of untrusted bytes that must never panic (a parser, a decoder, a
//! handler). [`run`] first replays every file of the target's corpus
//! (`tests/fuzz/<target>/`, kept in the repository: seeds, and every input that ever crashed
//! it), then feeds it a fixed number of inputs made from the corpus by random mutations: bit
//! flips, interesting bytes, inserted, deleted, repeated and truncated runs, splices of two
//! inputs, and words from the target's dictionary. The random stream has a fixed seed, so a run
//! is repeatable. There is no coverage feedback (that needs a nightly toolchain's sanitizers):
//! this finds the crashes that mutations of well-formed inputs reach.
//!
//! A panic stops the run: the input is written to `target/fuzz-crashes/<target>/` and the test
//! fails with its path; copied into the corpus it becomes a regression test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Corpus files replayed.
    pub corpus: usize,
    /// Inputs executed in all (corpus included).
    pub executions: usize,
}

/// A small deterministic random stream (64-bit LCG, high bits).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The corpus of `target`: every file in `tests/fuzz/<target>/`, sorted by name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = crate::repo_root().join("tests/fuzz").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the fuzz corpus {} cannot be read: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the fuzz corpus {} is empty",
        dir.display()
    );
    files
        .iter()
        .map(|p| std::fs::read(p).expect("a corpus file"))
        .collect()
}

/// One mutation of `input` (the pool gives splices; `words` are the target's dictionary).
fn mutate(
    rng: &mut Rng,
    input: &[u8],
    pool: &[Vec<u8>],
    words: &[&[u8]],
    max_len: usize,
) -> Vec<u8> {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'/', b'%', b'\n'];
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let run = out[i..i + n].to_vec();
                for _ in 0..1 + rng.below(8) {
                    out.splice(i..i, run.iter().copied());
                }
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            7 if !words.is_empty() => {
                let w = words[rng.below(words.len())];
                let i = rng.below(len + 1);
                out.splice(i..i, w.iter().copied());
            }
            8 if len >= 4 => {
                // A length or count field made huge or negative.
                let i = rng.below(len - 3);
                let v: [u8; 4] = match rng.below(3) {
                    0 => u32::MAX.to_le_bytes(),
                    1 => 0x7fff_ffffu32.to_be_bytes(),
                    _ => (rng.next() as u32).to_le_bytes(),
                };
                out[i..i + 4].copy_from_slice(&v);
            }
            _ => {}
        }
    }
    out.truncate(max_len);
    out
}

/// Replays `target`'s corpus (and `extra` seeds that cannot be kept in the repository, such as
/// installed model files), then runs `executions` mutated inputs through `check`. Panics with
/// the path of the saved input at the first input `check` panics on.
pub fn run(
    target: &str,
    extra: Vec<Vec<u8>>,
    words: &[&[u8]],
    executions: usize,
    max_len: usize,
    check: impl Fn(&[u8]),
) -> Report {
    let mut pool = corpus(target);
    let kept = pool.len();
    pool.extend(extra);
    let mut report = run_on(target, pool, words, executions, max_len, check);
    report.corpus = kept;
    report
}

/// [`run`] on the seeds `pool` instead of a corpus folder.
pub fn run_on(
    target: &str,
    pool: Vec<Vec<u8>>,
    words: &[&[u8]],
    executions: usize,
    max_len: usize,
    check: impl Fn(&[u8]),
) -> Report {
    let kept = pool.len();
    let mut rng = Rng(0x7477_696e ^ target.len() as u64);
    let mut done = 0;
    let mut attempt = |input: &[u8]| {
        done += 1;
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let dir = crate::target_dir().join("fuzz-crashes").join(target);
            std::fs::create_dir_all(&dir).expect("the crash folder");
            let path = dir.join(format!(
                "crash-{}",
                twin_core::store::content_tag(input).trim_matches('"')
            ));
            std::fs::write(&path, input).expect("the crash file");
            panic!(
                "fuzz target {target} panicked on the input saved at {} ({} bytes); copy it into tests/fuzz/{target}/ once fixed",
                path.display(),
                input.len()
            );
        }
    };
    for seed in &pool {
        attempt(seed);
    }
    for _ in 0..executions {
        let base = pool[rng.below(pool.len())].clone();
        let input = mutate(&mut rng, &base, &pool, words, max_len);
        attempt(&input);
    }
    Report {
        corpus: kept,
        executions: done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_that_mutations_reach_is_found_and_saved() {
        let found = catch_unwind(|| {
            run_on(
                "selftest",
                vec![b"a boo!".to_vec()],
                &[b"m"],
                20_000,
                64,
                |b| {
                    assert!(!b.windows(4).any(|w| w == b"boom"), "boom");
                },
            )
        });
        let message = found
            .err()
            .and_then(|p| p.downcast::<String>().ok())
            .expect("the crash is found");
        assert!(message.contains("fuzz-crashes"), "{message}");
        let saved = message
            .split("saved at ")
            .nth(1)
            .and_then(|r| r.split(" (").next())
            .unwrap();
        assert!(std::fs::read(saved)
            .unwrap()
            .windows(4)
            .any(|w| w == b"boom"));
        // Without the bug, the same run passes and says how much it ran.
        let r = run_on(
            "selftest",
            vec![b"a boo!".to_vec()],
            &[b"m"],
            500,
            64,
            |_| {},
        );
        assert_eq!(
            r,
            Report {
                corpus: 1,
                executions: 501
            }
        );
    }
}

//! Face verification accuracy on LFW-style pairs (`pairs.txt`).
//!
//! The file's first line is `FOLDS N`; then, per fold, N matched pairs `name i j` followed by N
//! mismatched pairs `name1 i name2 j`. Accuracy is computed the standard way: for each fold the
//! distance threshold is the one that is most accurate on the other folds, and that threshold
//! decides the fold's pairs. A pair where either image gives no face counts as wrong.

use std::path::{Path, PathBuf};

/// One pair of images to verify.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// First image: identity and number.
    pub a: (String, u32),
    /// Second image: identity and number.
    pub b: (String, u32),
    /// True when both show the same person.
    pub same: bool,
    /// Fold index (0-based).
    pub fold: usize,
}

/// A malformed pairs file.
#[derive(Debug, thiserror::Error)]
#[error("pairs file line {line}: {message}")]
pub struct PairsError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses an LFW `pairs.txt`.
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>, PairsError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let err = |line: usize, message: &str| PairsError {
        line: line + 1,
        message: message.to_string(),
    };
    let (n0, header) = lines.next().ok_or_else(|| err(0, "empty file"))?;
    let h: Vec<&str> = header.split_whitespace().collect();
    let (folds, per): (usize, usize) = match h.as_slice() {
        [f, n] => (
            f.parse().map_err(|_| err(n0, "bad fold count"))?,
            n.parse().map_err(|_| err(n0, "bad pair count"))?,
        ),
        _ => return Err(err(n0, "expected \"FOLDS PAIRS\"")),
    };
    if folds < 2 || per == 0 {
        return Err(err(n0, "need at least 2 folds and 1 pair per fold"));
    }
    let num = |s: &str, i: usize| {
        s.parse::<u32>()
            .map_err(|_| err(i, &format!("\"{s}\" is not an image number")))
    };
    let mut pairs = Vec::with_capacity(folds * per * 2);
    for fold in 0..folds {
        for k in 0..2 * per {
            let (i, l) = lines
                .next()
                .ok_or_else(|| err(usize::MAX - 1, "file ends before the last fold"))?;
            let t: Vec<&str> = l.split_whitespace().collect();
            let same = k < per;
            let pair = match (same, t.as_slice()) {
                (true, [n, a, b]) => Pair {
                    a: (n.to_string(), num(a, i)?),
                    b: (n.to_string(), num(b, i)?),
                    same,
                    fold,
                },
                (false, [n1, a, n2, b]) => Pair {
                    a: (n1.to_string(), num(a, i)?),
                    b: (n2.to_string(), num(b, i)?),
                    same,
                    fold,
                },
                (true, _) => return Err(err(i, "expected a matched pair \"name i j\"")),
                (false, _) => return Err(err(i, "expected a mismatched pair \"name1 i name2 j\"")),
            };
            for name in [&pair.a.0, &pair.b.0] {
                if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                    return Err(err(
                        i,
                        &format!("\"{name}\" is not an identity folder name"),
                    ));
                }
            }
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// The file of image `n` of `name` under `dir`: LFW's `name/name_0001.jpg`, or `name/1.jpg`
/// (a folder-per-identity set numbered from 1), whichever exists.
pub fn image_path(dir: &Path, name: &str, n: u32) -> PathBuf {
    let lfw = dir.join(name).join(format!("{name}_{n:04}.jpg"));
    if lfw.is_file() {
        return lfw;
    }
    for ext in ["jpg", "jpeg", "png", "webp"] {
        let p = dir.join(name).join(format!("{n}.{ext}"));
        if p.is_file() {
            return p;
        }
    }
    lfw
}

/// Verification results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// Mean accuracy over the folds.
    pub accuracy: f64,
    /// Standard deviation of the fold accuracies.
    pub std: f64,
    /// Accuracy of each fold.
    pub fold_accuracy: Vec<f64>,
    /// Threshold chosen for each fold (on the other folds).
    pub fold_threshold: Vec<f32>,
    /// Pairs evaluated.
    pub pairs: usize,
    /// Pairs where an image gave no face (counted as wrong).
    pub no_face: usize,
}

/// Scores pairs given their distances (`None`: an image without a face).
pub fn verify(pairs: &[Pair], distances: &[Option<f32>]) -> Verification {
    assert_eq!(pairs.len(), distances.len());
    let folds = pairs.iter().map(|p| p.fold).max().map_or(0, |f| f + 1);
    let mut fold_accuracy = Vec::with_capacity(folds);
    let mut fold_threshold = Vec::with_capacity(folds);
    for f in 0..folds {
        let train: Vec<(f32, bool)> = pairs
            .iter()
            .zip(distances)
            .filter(|(p, _)| p.fold != f)
            .filter_map(|(p, d)| d.map(|d| (d, p.same)))
            .collect();
        let t = best_threshold(&train);
        let (mut right, mut total) = (0usize, 0usize);
        for (p, d) in pairs.iter().zip(distances).filter(|(p, _)| p.fold == f) {
            total += 1;
            if let Some(d) = d {
                if (*d < t) == p.same {
                    right += 1;
                }
            }
        }
        fold_accuracy.push(right as f64 / total.max(1) as f64);
        fold_threshold.push(t);
    }
    let accuracy = fold_accuracy.iter().sum::<f64>() / folds.max(1) as f64;
    let std = (fold_accuracy
        .iter()
        .map(|a| (a - accuracy).powi(2))
        .sum::<f64>()
        / folds.max(1) as f64)
        .sqrt();
    Verification {
        accuracy,
        std,
        fold_accuracy,
        fold_threshold,
        pairs: pairs.len(),
        no_face: distances.iter().filter(|d| d.is_none()).count(),
    }
}

/// The distance threshold (same person when `d < t`) that classifies `samples` best; ties go to
/// the midpoint between neighbouring distances.
pub fn best_threshold(samples: &[(f32, bool)]) -> f32 {
    let mut s: Vec<(f32, bool)> = samples.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Threshold below everything: all "different".
    let mut right = s.iter().filter(|x| !x.1).count();
    let (mut best, mut best_t) = (right, s.first().map_or(0.6, |x| x.0 - 1e-3));
    for i in 0..s.len() {
        // Moving the threshold just past s[i] makes it "same".
        if s[i].1 {
            right += 1;
        } else {
            right -= 1;
        }
        let next = s.get(i + 1).map_or(s[i].0 + 1e-3, |x| x.0);
        if right > best && next > s[i].0 {
            best = right;
            best_t = (s[i].0 + next) / 2.0;
        }
    }
    best_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lfw_layout() {
        let text = "2 1\nA 1 2\nA 1 B 3\nC 2 4\nC 1 D 1\n";
        let p = parse_pairs(text).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            Pair {
                a: ("A".into(), 1),
                b: ("A".into(), 2),
                same: true,
                fold: 0
            }
        );
        assert_eq!(
            p[3],
            Pair {
                a: ("C".into(), 1),
                b: ("D".into(), 1),
                same: false,
                fold: 1
            }
        );
    }

    #[test]
    fn refuses_malformed_files() {
        assert!(parse_pairs("").is_err());
        assert!(parse_pairs("2 1\nA 1 2\n")
            .unwrap_err()
            .to_string()
            .contains("ends before"));
        let e = parse_pairs("2 1\nA 1 2\nA x B 3\nC 2 4\nC 1 D 1\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(parse_pairs("2 1\n../etc 1 2\nA 1 B 3\nC 2 4\nC 1 D 1\n").is_err());
    }

    #[test]
    fn threshold_separates_clean_data() {
        let s = [(0.2, true), (0.3, true), (0.7, false), (0.9, false)];
        let t = best_threshold(&s);
        assert!((0.3..0.7).contains(&t), "{t}");
    }

    #[test]
    fn missing_faces_count_as_wrong() {
        let pairs: Vec<Pair> = (0..4)
            .map(|i| Pair {
                a: ("A".into(), 1),
                b: ("A".into(), 2),
                same: i % 2 == 0,
                fold: i / 2,
            })
            .collect();
        let v = verify(&pairs, &[Some(0.1), Some(0.9), None, Some(0.9)]);
        assert_eq!(v.no_face, 1);
        assert_eq!(v.fold_accuracy, vec![1.0, 0.5]);
        assert!((v.accuracy - 0.75).abs() < 1e-9);
    }
}

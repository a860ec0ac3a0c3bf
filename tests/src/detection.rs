//! The faces really in the media photos (`reference/media_faces.json`, made by looking at
//! them) and the rule that pairs a detector's boxes with them, for the detection benchmark
//! (`benches/detection.rs`).
//!
//! The rule: a detection finds a face when its centre lies inside the face's box (edges
//! included). Each face is found at most once and each detection finds at most one face, and
//! among the pairings allowed the one that finds the most faces is taken (a detection whose
//! centre lies in two overlapping faces goes to the one no other detection can find); among
//! detections for the same face the one nearest its centre is tried first. A detection that finds
//! no face is a false positive, a second detection of an already found face included. The centre
//! rule, not an overlap threshold, because the detectors' boxes follow different conventions (the
//! cascade's box is about 1/0.88 the side of dlib's and sits higher) and a partial face's box is
//! only the part inside the photo.

use std::path::PathBuf;

use serde::Deserialize;

use crate::repo_root;

/// A face box: left, top, right, bottom in pixels (right and bottom inclusive, as dlib's).
pub type FaceBox = [i64; 4];

/// The ground truth file, relative to the repository root.
pub const MEDIA_TRUTH: &str = "tests/reference/media_faces.json";

/// One face of the ground truth.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthFace {
    /// Where it is, approximately (dlib's convention: eyebrows to chin).
    #[serde(rename = "box")]
    pub bbox: FaceBox,
    /// `partial` (cut by the photo's edge), `turned` or `small`; empty for a clear face.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// The faces of one photo.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthPhoto {
    /// The photo, relative to `data/media`.
    pub photo: String,
    /// Every face a person would count in it.
    pub faces: Vec<TruthFace>,
}

/// `reference/media_faces.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaTruth {
    /// One entry per still photo under `data/media`.
    pub photos: Vec<TruthPhoto>,
}

impl MediaTruth {
    /// Reads [`MEDIA_TRUTH`]. Panics with the path when it is missing or malformed.
    pub fn load() -> MediaTruth {
        let path: PathBuf = repo_root().join(MEDIA_TRUTH);
        let text =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
    }
}

/// A box's centre, doubled (so that it stays an integer).
fn centre2(b: &FaceBox) -> (i64, i64) {
    (b[0] + b[2], b[1] + b[3])
}

/// Whether detection `d`'s centre lies inside face box `t` (edges included).
pub fn centre_inside(d: &FaceBox, t: &FaceBox) -> bool {
    let (cx, cy) = centre2(d);
    (2 * t[0]..=2 * t[2]).contains(&cx) && (2 * t[1]..=2 * t[3]).contains(&cy)
}

/// For each truth face, the index of the detection in `found` that finds it under the module's
/// rule, or `None` when none does.
pub fn match_faces(truth: &[FaceBox], found: &[FaceBox]) -> Vec<Option<usize>> {
    // Candidates of each face, nearest centre first.
    let candidates: Vec<Vec<usize>> = truth
        .iter()
        .map(|t| {
            let (tx, ty) = centre2(t);
            let mut c: Vec<usize> = (0..found.len())
                .filter(|&d| centre_inside(&found[d], t))
                .collect();
            c.sort_by_key(|&d| {
                let (dx, dy) = centre2(&found[d]);
                ((dx - tx).pow(2) + (dy - ty).pow(2), d)
            });
            c
        })
        .collect();
    // Maximum matching by augmenting paths (Kuhn's algorithm): a handful of boxes per photo.
    let mut owner: Vec<Option<usize>> = vec![None; found.len()];
    fn augment(
        t: usize,
        candidates: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &d in &candidates[t] {
            if seen[d] {
                continue;
            }
            seen[d] = true;
            if owner[d].is_none_or(|other| augment(other, candidates, owner, seen)) {
                owner[d] = Some(t);
                return true;
            }
        }
        false
    }
    for t in 0..truth.len() {
        let mut seen = vec![false; found.len()];
        augment(t, &candidates, &mut owner, &mut seen);
    }
    let mut matched = vec![None; truth.len()];
    for (d, t) in owner.iter().enumerate() {
        if let Some(t) = t {
            matched[*t] = Some(d);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_finds_a_face_when_its_centre_is_inside_the_box() {
        let face = [100, 100, 199, 199];
        // A larger box around the face (the cascade's) and one shifted but centred inside.
        assert_eq!(match_faces(&[face], &[[80, 70, 219, 209]]), vec![Some(0)]);
        assert_eq!(match_faces(&[face], &[[140, 140, 239, 239]]), vec![Some(0)]);
        // Overlapping the face by a third (IoU 0.33), but centred just outside it.
        assert_eq!(match_faces(&[face], &[[150, 100, 249, 199]]), vec![None]);
        assert_eq!(match_faces(&[face], &[]), vec![None]);
        assert!(centre_inside(&[0, 0, 10, 10], &[5, 5, 9, 9]), "edges count");
    }

    #[test]
    fn a_face_is_found_once_by_the_nearest_detection() {
        let face = [100, 100, 199, 199];
        let found = [[130, 130, 229, 229], [101, 99, 200, 198]];
        assert_eq!(match_faces(&[face], &found), vec![Some(1)]);
    }

    #[test]
    fn a_detection_shared_by_two_faces_goes_where_it_finds_the_most() {
        // Two overlapping faces. Detection 0 (centre 85, 50) is in both and the nearer to the
        // first face's centre; detection 1 (centre 50, 95) is in the first only. Nearest first
        // would give detection 0 to the first face and leave the second unfound.
        let faces = [[0, 0, 99, 99], [80, 0, 179, 99]];
        let found = [[35, 0, 135, 100], [0, 45, 100, 145]];
        assert_eq!(match_faces(&faces, &found), vec![Some(1), Some(0)]);
        // With one detection, one face is found and the other is not.
        let one = match_faces(&faces, &found[..1]);
        assert_eq!(one.iter().flatten().count(), 1);
    }

    #[test]
    fn the_ground_truth_reads_and_every_box_is_a_box() {
        let truth = MediaTruth::load();
        assert!(!truth.photos.is_empty());
        for p in &truth.photos {
            for f in &p.faces {
                let b = f.bbox;
                assert!(b[0] < b[2] && b[1] < b[3], "{}: {b:?}", p.photo);
                assert!(
                    f.flags
                        .iter()
                        .all(|x| matches!(x.as_str(), "partial" | "turned" | "small")),
                    "{}: {:?}",
                    p.photo,
                    f.flags
                );
            }
        }
    }
}

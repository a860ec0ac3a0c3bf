//! Enrollments: the lifecycle as a state machine ([`EnrollmentState`], every transition in
//! [`EnrollmentStatus`]'s methods), the status record stored at `status/<upload-id>.json`, and
//! the advice a person gets when one failed or kept few frames (`docs/STATES.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys;
use crate::store::{Condition, ObjectStore, StoreError};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The input can never succeed (a malformed message): do not retry it.
    #[error("{0}")]
    Malformed(String),
    /// A conditional write lost (another writer was first).
    #[error("{0}")]
    Conflict(String),
    /// Something that may pass on a retry (storage, the model).
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PreconditionFailed(_) => StepError::Conflict(e.to_string()),
            _ => StepError::Failed(e.to_string()),
        }
    }
}

/// Where an enrollment is. Stored and shown as the lower-case name (`"created"`, …), so the
/// records stay readable by every version.
///
/// ```text
/// created ──upload──▶ uploaded ──crops stored──▶ cropped ──dataset step──▶ indexed
///                          │                          │
///                          └──── unusable upload ─────┴──▶ failed
/// ```
/// A drop-folder upload starts at `uploaded`. `failed` and `indexed` are final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentState {
    /// Waiting for its upload.
    #[default]
    Created,
    /// Its upload is stored; faces are being cut.
    Uploaded,
    /// Its crops are stored; the dataset step will index them.
    Cropped,
    /// In the gallery (a dataset version includes it).
    Indexed,
    /// Stopped, with the reason.
    Failed,
}

impl EnrollmentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::Created => "created",
            EnrollmentState::Uploaded => "uploaded",
            EnrollmentState::Cropped => "cropped",
            EnrollmentState::Indexed => "indexed",
            EnrollmentState::Failed => "failed",
        }
    }

    /// Whether the machine allows going from this state to `to`.
    pub fn allows(self, to: EnrollmentState) -> bool {
        use EnrollmentState::*;
        matches!(
            (self, to),
            (Created, Uploaded)
                | (Uploaded, Cropped)
                | (Cropped, Indexed)
                | (Uploaded | Cropped, Failed)
        )
    }

    /// Between steps: work is owed to it (after a crash, it is resumed).
    pub fn is_pending(self) -> bool {
        matches!(self, EnrollmentState::Uploaded | EnrollmentState::Cropped)
    }

    /// Final: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, EnrollmentState::Indexed | EnrollmentState::Failed)
    }
}

impl std::fmt::Display for EnrollmentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("enrollment {upload_id} is {from}; it cannot become {to}")]
pub struct TransitionError {
    /// The enrollment.
    pub upload_id: String,
    /// Where it is.
    pub from: EnrollmentState,
    /// Where it was asked to go.
    pub to: EnrollmentState,
}

/// Where an enrollment is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentStatus {
    /// Its id.
    pub upload_id: String,
    /// The identity's slug.
    pub slug: String,
    /// The identity's name.
    pub display_name: String,
    /// Where it is.
    pub state: EnrollmentState,
    /// Why it failed.
    pub error: Option<String>,
    /// The stored upload.
    pub source_key: Option<String>,
    /// Video frames sampled.
    pub frames_sampled: Option<u32>,
    /// Faces kept.
    pub kept: Option<u32>,
    /// Frames rejected, by reason.
    pub rejected: BTreeMap<String, u32>,
    /// The head was seen turned to the person's left.
    pub turned_left: Option<bool>,
    /// The head was seen turned to the person's right.
    pub turned_right: Option<bool>,
    /// The dataset version that indexed it.
    pub dataset_version: Option<u64>,
    /// Keys of the crops cut.
    #[serde(default)]
    pub crops: Vec<String>,
    /// `cropped` only: the message to the dataset step was sent. Until it is, a repeated
    /// upload event sends it (the outbox: a send that failed after the crops were stored is
    /// retried by the event's redelivery, not lost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

impl EnrollmentStatus {
    /// A new enrollment, waiting for its upload.
    pub fn created(upload_id: String, slug: String, display_name: String) -> Self {
        EnrollmentStatus {
            upload_id,
            slug,
            display_name,
            ..Default::default()
        }
    }

    /// A file dropped in a person's folder: its upload is there already.
    pub fn dropped(
        upload_id: String,
        slug: String,
        display_name: String,
        source_key: String,
    ) -> Self {
        EnrollmentStatus {
            state: EnrollmentState::Uploaded,
            source_key: Some(source_key),
            ..Self::created(upload_id, slug, display_name)
        }
    }

    fn go(&mut self, to: EnrollmentState) -> Result<(), TransitionError> {
        if !self.state.allows(to) {
            return Err(TransitionError {
                upload_id: self.upload_id.clone(),
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }

    /// `created → uploaded`: the upload is stored at `key`.
    pub fn upload(&mut self, key: String) -> Result<(), TransitionError> {
        self.go(EnrollmentState::Uploaded)?;
        self.source_key = Some(key);
        Ok(())
    }

    /// `uploaded → cropped`: the crops are stored; the dataset step's message is not sent yet.
    pub fn crop(&mut self, crops: Vec<String>) -> Result<(), TransitionError> {
        self.go(EnrollmentState::Cropped)?;
        self.kept = Some(crops.len() as u32);
        self.crops = crops;
        self.queued = false;
        Ok(())
    }

    /// `cropped`, the dataset step's message sent (the outbox's record).
    pub fn mark_queued(&mut self) -> Result<(), TransitionError> {
        if self.state != EnrollmentState::Cropped {
            return Err(TransitionError {
                upload_id: self.upload_id.clone(),
                from: self.state,
                to: EnrollmentState::Cropped,
            });
        }
        self.queued = true;
        Ok(())
    }

    /// Whether its message to the dataset step is owed (cropped, not known to be sent).
    pub fn owes_message(&self) -> bool {
        self.state == EnrollmentState::Cropped && !self.queued
    }

    /// `cropped → indexed` in dataset version `version`.
    pub fn index(&mut self, version: u64) -> Result<(), TransitionError> {
        self.go(EnrollmentState::Indexed)?;
        self.dataset_version = Some(version);
        Ok(())
    }

    /// `→ failed`, with the reason a person reads.
    pub fn fail(&mut self, reason: String) -> Result<(), TransitionError> {
        self.go(EnrollmentState::Failed)?;
        self.error = Some(reason);
        Ok(())
    }
}

/// Fewer kept frames than this and the enrollment is weak: the advice says why frames were lost.
pub const FEW_KEPT: u32 = 10;

/// What a person can do about an enrollment that failed or kept few frames, in plain words,
/// from its per-frame reasons and its head turns (empty while it runs, and when it went well).
/// A reason is named when it cost at least a tenth of the frames sampled (any count when the
/// enrollment failed), most frequent first; frames dropped only as duplicates or over the limit
/// are not the person's doing and are not named.
pub fn advice(s: &EnrollmentStatus) -> Vec<String> {
    let failed = s.state == EnrollmentState::Failed;
    let weak = s.kept.is_some_and(|k| k < FEW_KEPT);
    let finished = matches!(
        s.state,
        EnrollmentState::Cropped | EnrollmentState::Indexed | EnrollmentState::Failed
    );
    if !finished || s.frames_sampled.is_none() {
        return Vec::new();
    }
    let sampled = s.frames_sampled.unwrap_or(0);
    let mut out = Vec::new();
    if failed || weak {
        let mut reasons: Vec<(&String, &u32)> = s.rejected.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, &n) in reasons {
            if n == 0 || (!failed && n * 10 < sampled) {
                continue;
            }
            let what = match reason.as_str() {
                "no_face" => "no face was found",
                "several_faces" => "more than one face was in view",
                "face_too_small" => "your face was too small",
                "blurred" => "the picture was blurred",
                "too_dark" => "it was too dark",
                "too_bright" => "it was too bright",
                "extreme_pose" => "your head was turned or tilted too far",
                "other_person" => "someone else was in view",
                _ => continue,
            };
            let todo = match reason.as_str() {
                "no_face" => "keep your whole face in the picture",
                "several_faces" | "other_person" => "film yourself alone",
                "face_too_small" => "hold the camera closer",
                "blurred" => "hold the camera still and turn your head slowly",
                "too_dark" => "face a window or a lamp",
                "too_bright" => "move out of direct light",
                _ => "turn a little less far",
            };
            out.push(format!("{what} in {n} of {sampled} frames: {todo}"));
        }
    }
    // A video (more than one frame) should show the head turned both ways.
    if sampled > 1
        && (failed || weak || s.turned_left == Some(false) || s.turned_right == Some(false))
    {
        if s.turned_left == Some(false) {
            out.push(
                "you did not turn to your left: turn your head slowly to the left, then back"
                    .into(),
            );
        }
        if s.turned_right == Some(false) {
            out.push(
                "you did not turn to your right: turn your head slowly to the right, then back"
                    .into(),
            );
        }
    }
    out
}

/// Reads an enrollment's status (`None`: no such enrollment, or not an upload id).
pub fn read_status(
    store: &dyn ObjectStore,
    upload_id: &str,
) -> Result<Option<EnrollmentStatus>, StepError> {
    let Ok(key) = keys::status_key(upload_id) else {
        return Ok(None);
    };
    match store.get(&key)? {
        Some(obj) => serde_json::from_slice(&obj.data)
            .map(Some)
            .map_err(|e| StepError::Failed(format!("{key} is damaged: {e}"))),
        None => Ok(None),
    }
}

/// Writes an enrollment's status under `cond`.
pub fn save_status(
    store: &dyn ObjectStore,
    s: &EnrollmentStatus,
    cond: Condition,
) -> Result<(), StepError> {
    let key = keys::status_key(&s.upload_id).map_err(|e| StepError::Malformed(e.to_string()))?;
    let body = serde_json::to_vec_pretty(s).expect("a status serializes");
    store.put(&key, &body, cond)?;
    Ok(())
}

/// Every readable enrollment status in the store (damaged records are skipped).
pub fn list_statuses(store: &dyn ObjectStore) -> Result<Vec<EnrollmentStatus>, StepError> {
    let mut out = Vec::new();
    for key in store.list(keys::STATUS)? {
        if let Some(obj) = store.get(&key)? {
            if let Ok(s) = serde_json::from_slice::<EnrollmentStatus>(&obj.data) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod advice_tests {
    use super::*;

    fn status(state: &str, sampled: u32, kept: u32, rejected: &[(&str, u32)]) -> EnrollmentStatus {
        EnrollmentStatus {
            state: serde_json::from_value(serde_json::json!(state)).unwrap(),
            frames_sampled: Some(sampled),
            kept: Some(kept),
            rejected: rejected.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            turned_left: Some(true),
            turned_right: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn a_dark_failed_video_says_so_with_counts_most_frequent_first() {
        let s = status(
            "failed",
            60,
            2,
            &[("blurred", 3), ("too_dark", 40), ("near_duplicate", 5)],
        );
        let a = advice(&s);
        assert_eq!(
            a,
            vec![
                "it was too dark in 40 of 60 frames: face a window or a lamp".to_string(),
                "the picture was blurred in 3 of 60 frames: hold the camera still and turn your head slowly".to_string(),
            ]
        );
    }

    #[test]
    fn a_missing_turn_is_named_and_a_good_enrollment_has_no_advice() {
        let mut s = status("indexed", 60, 30, &[("near_duplicate", 20), ("blurred", 2)]);
        assert!(advice(&s).is_empty(), "{:?}", advice(&s));
        s.turned_left = Some(false);
        assert_eq!(
            advice(&s),
            vec![
                "you did not turn to your left: turn your head slowly to the left, then back"
                    .to_string()
            ]
        );
        // Still running: nothing to say yet.
        let running = status("uploaded", 60, 0, &[("too_dark", 60)]);
        assert!(advice(&running).is_empty());
        // A weak enrollment names only reasons that cost a tenth of the frames.
        let weak = status("indexed", 50, 6, &[("blurred", 4), ("no_face", 30)]);
        assert_eq!(
            advice(&weak),
            vec![
                "no face was found in 30 of 50 frames: keep your whole face in the picture"
                    .to_string()
            ]
        );
    }

    #[test]
    fn the_state_machine_allows_only_its_transitions() {
        use EnrollmentState::*;
        let all = [Created, Uploaded, Cropped, Indexed, Failed];
        let allowed: Vec<(EnrollmentState, EnrollmentState)> = all
            .iter()
            .flat_map(|&a| all.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.allows(b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Created, Uploaded),
                (Uploaded, Cropped),
                (Uploaded, Failed),
                (Cropped, Indexed),
                (Cropped, Failed)
            ]
        );
        let mut s = EnrollmentStatus::created("u-1".into(), "ada".into(), "Ada".into());
        assert!(s.index(3).is_err(), "created cannot be indexed");
        s.upload("uploads/ada/u-1.mp4".into()).unwrap();
        assert!(
            s.upload("uploads/ada/u-1.mp4".into()).is_err(),
            "one upload per enrollment"
        );
        s.crop(vec!["crops/ada/u-1/0.png".into()]).unwrap();
        assert!(s.owes_message());
        s.mark_queued().unwrap();
        assert!(!s.owes_message());
        s.index(3).unwrap();
        assert_eq!(
            (s.state, s.dataset_version, s.kept),
            (Indexed, Some(3), Some(1))
        );
        let e = s.fail("late".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "enrollment u-1 is indexed; it cannot become failed"
        );
    }

    #[test]
    fn states_are_stored_as_their_names() {
        for (state, name) in [
            (EnrollmentState::Created, "created"),
            (EnrollmentState::Uploaded, "uploaded"),
            (EnrollmentState::Cropped, "cropped"),
            (EnrollmentState::Indexed, "indexed"),
            (EnrollmentState::Failed, "failed"),
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(state.to_string(), name);
        }
        // A record written before the state was typed reads the same.
        let old = r#"{"upload_id":"u","slug":"a","display_name":"A","state":"cropped","error":null,
            "source_key":null,"frames_sampled":null,"kept":null,"rejected":{},"turned_left":null,
            "turned_right":null,"dataset_version":null}"#;
        let s: EnrollmentStatus = serde_json::from_str(old).unwrap();
        assert_eq!(s.state, EnrollmentState::Cropped);
        assert!(s.owes_message());
    }
}

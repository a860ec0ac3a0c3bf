//! Enrollment from a video: sampled frames → the largest face in each → the quality gate →
//! one person → no near-duplicates → at most N frames spread over the head-turn.
//!
//! [`enroll_video`] runs the whole chain on a file and returns an [`EnrollReport`]: every sampled
//! frame is either kept (with its box, landmarks, pose, measures and chip) or rejected with one
//! [`RejectReason`], and the report says whether the kept frames show the head turned to both
//! sides. Frames are judged on their own as they decode, on [`EnrollOptions::threads`] threads
//! at once (only the chips of acceptable frames are held), then, back in frame order, the
//! survivors are judged together:
//!
//! 1. per frame: no face, several faces ([`quality::several_faces`]), then [`quality::gate`];
//! 2. one person: when an embedder is given, faces that are not the video's main person
//!    ([`quality::main_identity`]: someone else in shot, or a box on something that is not a
//!    face) are rejected as `other_person`;
//! 3. near-duplicates ([`quality::dedupe`], sharpest first);
//! 4. at most [`EnrollOptions::max_kept`], spread over yaw ([`quality::select_spread`]).
//!
//! A video that leaves fewer than [`EnrollOptions::min_kept`] frames is refused with the
//! rejection counts, so the caller can tell the user why.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use super::pipeline::{
    cut_chip, FacePipeline, FaceSource, FoundFace, PipelineError, PipelineOptions,
};
use super::quality::{self, Measures, RejectReason, Thresholds, Thumbnail};
use super::video::{Frame, FrameSampler, SamplerOptions, VideoError, VideoInfo};
use super::{Point, Rect};
use twin_model::embed::{EmbedError, Embedder};

/// At most this many frames are kept by default.
pub const DEFAULT_MAX_KEPT: usize = 30;

/// Fewer kept frames than this refuse the video by default. A 5–6 s enrollment video sampled
/// every 100 ms gives 50–60 frames; when under a tenth of them are usable the video mostly
/// missed the face, and asking for another beats enrolling from a handful.
pub const DEFAULT_MIN_KEPT: usize = 5;

/// Threads that judge frames by default: every core the process may use (a 6 s video takes
/// about half the time on two cores that it takes on one; see `docs/FACES.md`).
pub const DEFAULT_THREADS: usize = 0;

/// What enrollment needs from face detection: the faces in a frame and their chips.
/// [`FacePipeline`] is the real one; tests use fakes. Frames are judged on several threads at
/// once ([`EnrollOptions::threads`]), so a finder is shared between them.
pub trait FaceFinder: Sync {
    /// Every face in `img`.
    fn find_faces(&self, img: &RgbImage) -> Result<Vec<FoundFace>, PipelineError>;
    /// The aligned 150×150 chip of `face`, found in `img`.
    fn chip(&self, img: &RgbImage, face: &FoundFace) -> RgbImage;
}

/// Video frames are scenes, not tight face crops: only faces the cascade found in the frame as
/// given count (the pipeline's padded search and whole-image fallback are for cropped photos).
impl FaceFinder for FacePipeline {
    fn find_faces(&self, img: &RgbImage) -> Result<Vec<FoundFace>, PipelineError> {
        let mut faces = FacePipeline::find_faces(self, img)?;
        faces.retain(|f| f.source == FaceSource::Detected);
        Ok(faces)
    }

    fn chip(&self, img: &RgbImage, face: &FoundFace) -> RgbImage {
        cut_chip(img, face)
    }
}

/// Overlapping cascade hits a face needs in a video frame. The photo default (10) is tuned
/// for precision on one image; a video has many frames, and a false box is caught downstream
/// (gate, one-person check), while a missed frame is lost. On the clip, min_neighbors 10, 7, 5
/// and 3 kept 21, 27, 30 and 30 frames (3: 2 more over the limit), all within 0.58 of the
/// reference photo, with 2, 5, 8 and 19 frames rejected as several faces (false boxes beside
/// the singer): 5 finds the most without false boxes taking over.
pub const VIDEO_MIN_NEIGHBORS: i32 = 5;

/// The cascade's step between pyramid levels in a video frame. A frame's box is not placed by
/// the CNN (the video options turn it off, to keep a 6 s video near a second), so it stays the
/// finer step [`VIDEO_MIN_NEIGHBORS`] was tuned with.
pub const VIDEO_SCALE_FACTOR: f64 = 1.1;

/// Smallest face the cascade looks for in a video frame: below the gate's
/// [`quality::MIN_FACE_SIDE`], so that a face too far from the camera is found and refused as
/// `face_too_small` (which tells the user what to change) rather than missed as `no_face`.
pub const VIDEO_MIN_FACE: i32 = 40;

/// Pipeline options for video frames: the default cascade and box mapping with
/// [`VIDEO_SCALE_FACTOR`], [`VIDEO_MIN_NEIGHBORS`] and [`VIDEO_MIN_FACE`], without the padded
/// search, the small-face search, the rotated search and the whole-image fallback (they are for
/// photos, and only cost time on frames without a face).
pub fn video_pipeline_options() -> PipelineOptions {
    let mut options = PipelineOptions {
        small_face: 0,
        tight_crop_padding: 0.0,
        whole_image_max_side: 0,
        cnn_fallback: false,
        cnn_boxes: false,
        rotations: Vec::new(),
        large_photo_cnn_side: 0,
        subject_first: false,
        ..PipelineOptions::default()
    };
    options.detector.scale_factor = VIDEO_SCALE_FACTOR;
    options.detector.min_neighbors = VIDEO_MIN_NEIGHBORS;
    options.detector.min_face = VIDEO_MIN_FACE;
    options
}

/// What the identity check needs: an embedding per chip. Shared by the threads that judge the
/// frames, which embed their candidates' chips one at a time.
pub trait ChipEmbedder: Sync {
    /// The embeddings of `chips`, in order.
    fn embed_chips(&self, chips: &[&RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

impl ChipEmbedder for Embedder {
    fn embed_chips(&self, chips: &[&RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_all(chips)
    }
}

/// Settings of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnrollOptions {
    /// Frame sampling and video limits.
    pub sampler: SamplerOptions,
    /// The quality gate.
    pub thresholds: Thresholds,
    /// Most frames kept ([`DEFAULT_MAX_KEPT`]).
    pub max_kept: usize,
    /// Fewest frames kept for the video to be accepted ([`DEFAULT_MIN_KEPT`]).
    pub min_kept: usize,
    /// Threads that find faces in the frames ([`DEFAULT_THREADS`]; see [`enroll_frames`]):
    /// 1 judges every frame on the calling thread, 0 uses every core the process may use. The
    /// report is the same whatever the number.
    pub threads: usize,
}

impl Default for EnrollOptions {
    fn default() -> Self {
        EnrollOptions {
            sampler: SamplerOptions::default(),
            thresholds: Thresholds::default(),
            max_kept: DEFAULT_MAX_KEPT,
            min_kept: DEFAULT_MIN_KEPT,
            threads: DEFAULT_THREADS,
        }
    }
}

/// Why an enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The video was refused or could not be decoded.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// Face detection failed (not: found nothing).
    #[error("face detection failed: {0}")]
    Faces(#[from] PipelineError),
    /// The identity check could not embed the chips.
    #[error("embedding the face chips failed: {0}")]
    Embed(#[from] EmbedError),
    /// Too few frames passed.
    #[error("{}", not_enough_message(*.kept, *.min_kept, *.frames_sampled, .rejected_by_reason))]
    NotEnoughFrames {
        /// Frames that passed.
        kept: usize,
        /// Frames needed.
        min_kept: usize,
        /// Frames sampled.
        frames_sampled: u64,
        /// Why the others were rejected.
        rejected_by_reason: BTreeMap<RejectReason, usize>,
    },
}

fn not_enough_message(
    kept: usize,
    min_kept: usize,
    sampled: u64,
    by_reason: &BTreeMap<RejectReason, usize>,
) -> String {
    let reasons = by_reason
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let head = if kept == 0 {
        "no usable face in the video".to_string()
    } else {
        format!("only {kept} usable face frames in the video, at least {min_kept} are needed")
    };
    format!(
        "{head} ({sampled} frames sampled; rejected: {}); record again with one person in view, \
         face lit and in focus, turning the head slowly to both sides",
        if reasons.is_empty() { "none" } else { &reasons }
    )
}

/// A kept frame.
#[derive(Debug, Clone, Serialize)]
pub struct KeptFrame {
    /// Time of the frame in milliseconds (also the chip's file name, `<ms>.png`).
    pub ms: u64,
    /// The face box in the frame: x, y, width, height.
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    /// The box in dlib's convention the landmarks were placed from.
    pub rect: Rect,
    /// The five landmarks in the frame.
    pub landmarks: [Point; 5],
    /// Yaw in degrees ([`quality::Pose::yaw`]: positive towards the image's right).
    pub yaw: f64,
    /// Roll in degrees.
    pub roll: f64,
    /// Nose drop ([`quality::Pose::nose_drop`]).
    pub nose_drop: f64,
    /// [`quality::sharpness`] of the chip.
    pub sharpness: f32,
    /// [`quality::brightness`] of the chip.
    pub brightness: f32,
    /// The aligned 150×150 chip (never serialized).
    #[serde(skip)]
    pub chip: RgbImage,
}

/// A rejected frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedFrame {
    /// Time of the frame in milliseconds.
    pub ms: u64,
    /// Why.
    pub reason: RejectReason,
    /// The largest face's box, when there was a face.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[i64; 4]>,
}

/// Where the time went (not serialized). When frames are judged on several threads these are
/// sums over the threads, so together they exceed the time the enrollment took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding and converting frames.
    pub decode: Duration,
    /// Finding faces and landmarks.
    pub faces: Duration,
    /// Chips and quality measures.
    pub measure: Duration,
    /// Embedding for the identity check.
    pub identity: Duration,
}

impl Timings {
    /// Adds `other`'s times to these.
    pub fn add(&mut self, other: &Timings) {
        self.decode += other.decode;
        self.faces += other.faces;
        self.measure += other.measure;
        self.identity += other.identity;
    }
}

/// The result of an enrollment.
#[derive(Debug, Clone, Serialize)]
pub struct EnrollReport {
    /// What the container says about the video.
    pub video: VideoInfo,
    /// The sampling interval used.
    pub interval_ms: u32,
    /// Frames sampled (each is kept or rejected).
    pub frames_sampled: u64,
    /// Kept frames, by time.
    pub kept: Vec<KeptFrame>,
    /// Rejected frames, by time.
    pub rejected: Vec<RejectedFrame>,
    /// Rejected frames counted by reason.
    pub rejected_by_reason: BTreeMap<RejectReason, usize>,
    /// Some kept frame shows the head turned to the person's left ([`quality::turned_sides`]).
    pub turned_left: bool,
    /// Some kept frame shows the head turned to the person's right.
    pub turned_right: bool,
    /// Whether kept frames were checked to be one person (an embedder was given).
    pub identity_checked: bool,
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Where the time went.
    #[serde(skip)]
    pub timings: Timings,
}

impl EnrollReport {
    /// True when the kept frames show the head turned to both sides.
    pub fn turned_both_sides(&self) -> bool {
        self.turned_left && self.turned_right
    }
}

/// Enrolls from the video at `path`: see the module documentation. With no `embedder` the
/// one-person check is skipped (and the report says so).
pub fn enroll_video(
    path: &Path,
    finder: &dyn FaceFinder,
    embedder: Option<&dyn ChipEmbedder>,
    options: &EnrollOptions,
) -> Result<EnrollReport, EnrollError> {
    let sampler = FrameSampler::open(path, &options.sampler)?;
    let video = sampler.info().clone();
    let mut report = enroll_frames(sampler, finder, embedder, options)?;
    report.video = video;
    Ok(report)
}

/// A frame that passed the per-frame gate, waiting for the judgements made together.
struct Candidate {
    ms: u64,
    face: FoundFace,
    pose: quality::Pose,
    measures: Measures,
    chip: RgbImage,
    /// The chip's embedding, when it was computed beside the frame's judgement.
    embedding: Option<Vec<f32>>,
}

/// What the per-frame judgement made of one frame.
enum Judged {
    Candidate(Box<Candidate>),
    Rejected(RejectedFrame),
}

/// The per-frame judgements of a video, in frame order.
#[derive(Default)]
struct Judgements {
    sampled: u64,
    candidates: Vec<Candidate>,
    rejected: Vec<RejectedFrame>,
    timings: Timings,
}

impl Judgements {
    fn push(&mut self, judged: Judged) {
        self.sampled += 1;
        match judged {
            Judged::Candidate(c) => self.candidates.push(*c),
            Judged::Rejected(r) => self.rejected.push(r),
        }
    }
}

/// The number of threads [`EnrollOptions::threads`] asks for: 0 is every core the process may
/// use.
fn judging_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The chain of [`enroll_video`] over frames from any source (the report's `video` is left
/// empty; its decode time is the time spent waiting for the frames).
///
/// With [`EnrollOptions::threads`] at 1 every frame is judged on the calling thread as it
/// comes, and the one-person check embeds the survivors in one batch. With more, the frames are
/// read on a thread of their own and judged by that many threads at once, each embedding the
/// chips of the frames it passes (an embedding does not depend on the batch it is computed
/// in); the judgements are put back in frame order before anything is judged together, so the
/// report is the same, and an error is the one the first failing frame gives.
pub fn enroll_frames(
    frames: impl Iterator<Item = Result<Frame, VideoError>> + Send,
    finder: &dyn FaceFinder,
    embedder: Option<&dyn ChipEmbedder>,
    options: &EnrollOptions,
) -> Result<EnrollReport, EnrollError> {
    let t = &options.thresholds;
    let threads = judging_threads(options.threads);
    let judgements = if threads > 1 {
        judge_in_parallel(frames, threads, finder, embedder, t)?
    } else {
        judge_in_turn(frames, finder, t)?
    };
    conclude(judgements, embedder, options)
}

/// Judges the frames one after the other on this thread.
fn judge_in_turn(
    mut frames: impl Iterator<Item = Result<Frame, VideoError>>,
    finder: &dyn FaceFinder,
    t: &Thresholds,
) -> Result<Judgements, EnrollError> {
    let mut out = Judgements::default();
    loop {
        let start = Instant::now();
        let Some(frame) = frames.next() else { break };
        out.timings.decode += start.elapsed();
        let judged = judge_frame(&frame?, finder, t, &mut out.timings)?;
        out.push(judged);
    }
    Ok(out)
}

/// A frame, numbered in reading order.
type Numbered<T> = (usize, T);

/// Reads the frames on one thread and judges them on `threads` others (embedding each
/// candidate's chip when `embedder` is given), then puts the judgements back in frame order.
/// At most `threads` frames wait between reading and judging. On the first error (in frame
/// order) the reading and judging stop after the frames in hand.
fn judge_in_parallel(
    frames: impl Iterator<Item = Result<Frame, VideoError>> + Send,
    threads: usize,
    finder: &dyn FaceFinder,
    embedder: Option<&dyn ChipEmbedder>,
    t: &Thresholds,
) -> Result<Judgements, EnrollError> {
    std::thread::scope(|s| {
        let (frame_tx, frame_rx) =
            mpsc::sync_channel::<Numbered<Result<Frame, VideoError>>>(threads);
        let (judged_tx, judged_rx) =
            mpsc::channel::<Numbered<(Result<Judged, EnrollError>, Timings)>>();
        let reader = s.spawn(move || {
            let mut frames = frames;
            let mut decode = Duration::ZERO;
            for i in 0.. {
                let start = Instant::now();
                let Some(frame) = frames.next() else { break };
                decode += start.elapsed();
                let failed = frame.is_err();
                // A closed channel: the judging stopped at an error.
                if frame_tx.send((i, frame)).is_err() || failed {
                    break;
                }
            }
            decode
        });
        // The judges share the frames' receiver; the last one to stop closes it, which stops
        // the reader.
        let frame_rx = Arc::new(Mutex::new(frame_rx));
        for _ in 0..threads {
            let frame_rx = Arc::clone(&frame_rx);
            let judged_tx = judged_tx.clone();
            s.spawn(move || loop {
                let next = twin_core::sync::lock(&frame_rx).recv();
                let Ok((i, frame)) = next else { return };
                let mut timings = Timings::default();
                let judged = frame
                    .map_err(EnrollError::from)
                    .and_then(|f| judge_and_embed(&f, finder, embedder, t, &mut timings));
                // A closed channel: an earlier frame failed and the results are not wanted.
                if judged_tx.send((i, (judged, timings))).is_err() {
                    return;
                }
            });
        }
        drop(frame_rx);
        drop(judged_tx);

        let mut out = Judgements::default();
        let mut early: BTreeMap<usize, (Result<Judged, EnrollError>, Timings)> = BTreeMap::new();
        let mut next = 0;
        for (i, judged) in judged_rx.iter() {
            early.insert(i, judged);
            while let Some((judged, timings)) = early.remove(&next) {
                next += 1;
                out.timings.add(&timings);
                // Returning drops the receiver: the judges and then the reader stop.
                out.push(judged?);
            }
        }
        out.timings.decode = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok(out)
    })
}

/// [`judge_frame`], then the embedding of a candidate's chip.
fn judge_and_embed(
    frame: &Frame,
    finder: &dyn FaceFinder,
    embedder: Option<&dyn ChipEmbedder>,
    t: &Thresholds,
    timings: &mut Timings,
) -> Result<Judged, EnrollError> {
    let mut judged = judge_frame(frame, finder, t, timings)?;
    if let (Judged::Candidate(c), Some(embedder)) = (&mut judged, embedder) {
        let start = Instant::now();
        c.embedding = embedder.embed_chips(&[&c.chip])?.pop();
        timings.identity += start.elapsed();
    }
    Ok(judged)
}

/// The per-frame judgement: no face, several faces, then the quality gate on the largest one.
fn judge_frame(
    frame: &Frame,
    finder: &dyn FaceFinder,
    t: &Thresholds,
    timings: &mut Timings,
) -> Result<Judged, EnrollError> {
    let start = Instant::now();
    let mut faces = finder.find_faces(&frame.image)?;
    timings.faces += start.elapsed();
    let start = Instant::now();
    // Largest first, whatever order the finder used.
    faces.sort_by_key(|f| std::cmp::Reverse(f.bbox[2].saturating_mul(f.bbox[3])));
    let reject = |reason, bbox| {
        Judged::Rejected(RejectedFrame {
            ms: frame.ms,
            reason,
            bbox,
        })
    };
    let Some(face) = faces.first() else {
        return Ok(reject(RejectReason::NoFace, None));
    };
    let sides: Vec<i64> = faces.iter().map(|f| quality::face_side(f.bbox)).collect();
    if quality::several_faces(&sides, t.several_faces_ratio) {
        return Ok(reject(RejectReason::SeveralFaces, Some(face.bbox)));
    }
    let chip = finder.chip(&frame.image, face);
    let measures = Measures::of(face.bbox, &face.landmarks, &chip);
    timings.measure += start.elapsed();
    // The gate refuses a face without a pose, so `pose` is there whenever it passes.
    Ok(match (quality::gate(&measures, t), measures.pose) {
        (Ok(()), Some(pose)) => Judged::Candidate(Box::new(Candidate {
            ms: frame.ms,
            face: face.clone(),
            pose,
            measures,
            chip,
            embedding: None,
        })),
        (result, _) => reject(
            result.err().unwrap_or(RejectReason::ExtremePose),
            Some(face.bbox),
        ),
    })
}

/// The judgements made together (one person, near-duplicates, the spread over the turn), and
/// the report.
fn conclude(
    judgements: Judgements,
    embedder: Option<&dyn ChipEmbedder>,
    options: &EnrollOptions,
) -> Result<EnrollReport, EnrollError> {
    let t = &options.thresholds;
    let Judgements {
        sampled,
        mut candidates,
        mut rejected,
        mut timings,
    } = judgements;

    let mut reject_candidates = |keep: &[bool], reason, candidates: Vec<Candidate>| {
        let mut left = Vec::with_capacity(candidates.len());
        for (c, &k) in candidates.into_iter().zip(keep) {
            if k {
                left.push(c);
            } else {
                rejected.push(RejectedFrame {
                    ms: c.ms,
                    reason,
                    bbox: Some(c.face.bbox),
                });
            }
        }
        left
    };

    // One person.
    let identity_checked = embedder.is_some();
    if let Some(embedder) = embedder {
        if !candidates.is_empty() {
            let computed: Option<Vec<Vec<f32>>> =
                candidates.iter_mut().map(|c| c.embedding.take()).collect();
            let embeddings = match computed {
                Some(e) => e,
                None => {
                    let start = Instant::now();
                    let chips: Vec<&RgbImage> = candidates.iter().map(|c| &c.chip).collect();
                    let e = embedder.embed_chips(&chips)?;
                    timings.identity += start.elapsed();
                    e
                }
            };
            let keep =
                quality::main_identity(&embeddings, t.same_person_distance, t.main_person_radius);
            candidates = reject_candidates(&keep, RejectReason::OtherPerson, candidates);
        }
    }

    // Near-duplicates, sharpest first.
    let thumbs: Vec<Thumbnail> = candidates.iter().map(|c| Thumbnail::of(&c.chip)).collect();
    let scores: Vec<f32> = candidates.iter().map(|c| c.measures.sharpness).collect();
    let keep = quality::dedupe(&thumbs, &scores, t.near_duplicate_mad);
    candidates = reject_candidates(&keep, RejectReason::NearDuplicate, candidates);

    // At most max_kept, spread over the turn.
    let yaws: Vec<f64> = candidates.iter().map(|c| c.pose.yaw).collect();
    let scores: Vec<f32> = candidates.iter().map(|c| c.measures.sharpness).collect();
    let chosen = quality::select_spread(&yaws, &scores, options.max_kept);
    let mut keep = vec![false; candidates.len()];
    for i in chosen {
        keep[i] = true;
    }
    candidates = reject_candidates(&keep, RejectReason::OverLimit, candidates);

    rejected.sort_by_key(|r| r.ms);
    let mut rejected_by_reason = BTreeMap::new();
    for r in &rejected {
        *rejected_by_reason.entry(r.reason).or_insert(0) += 1;
    }
    if candidates.len() < options.min_kept.max(1) {
        return Err(EnrollError::NotEnoughFrames {
            kept: candidates.len(),
            min_kept: options.min_kept.max(1),
            frames_sampled: sampled,
            rejected_by_reason,
        });
    }
    let kept: Vec<KeptFrame> = candidates
        .into_iter()
        .map(|c| KeptFrame {
            ms: c.ms,
            bbox: c.face.bbox,
            rect: c.face.rect,
            landmarks: c.face.landmarks,
            yaw: c.pose.yaw,
            roll: c.pose.roll,
            nose_drop: c.pose.nose_drop,
            sharpness: c.measures.sharpness,
            brightness: c.measures.brightness,
            chip: c.chip,
        })
        .collect();
    let yaws: Vec<f64> = kept.iter().map(|k| k.yaw).collect();
    let (turned_left, turned_right) = quality::turned_sides(&yaws, t.turned_yaw);
    Ok(EnrollReport {
        video: VideoInfo {
            width: 0,
            height: 0,
            fps: None,
            frame_count: None,
            duration_ms: None,
        },
        interval_ms: options.sampler.interval_ms,
        frames_sampled: sampled,
        kept,
        rejected,
        rejected_by_reason,
        turned_left,
        turned_right,
        identity_checked,
        thresholds: *t,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectError;
    use crate::CHIP_SIZE;
    use image::Rgb;

    /// What a test frame shows; the fake finder reads it from the frame's one pixel.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Shot {
        Nothing,
        TwoPeople,
        Small,
        /// The main person: texture seed, nose shift (turns the head).
        Person(u8, i64),
        Dark,
        Flat,
        Stranger,
        Profile,
    }

    const SHOTS: [Shot; 8] = [
        Shot::Nothing,
        Shot::TwoPeople,
        Shot::Small,
        Shot::Person(0, 0),
        Shot::Dark,
        Shot::Flat,
        Shot::Stranger,
        Shot::Profile,
    ];

    fn code(s: Shot) -> [u8; 3] {
        match s {
            Shot::Person(seed, nose) => [3, seed, (nose + 128) as u8],
            other => [SHOTS.iter().position(|&x| x == other).unwrap() as u8, 0, 0],
        }
    }

    fn shot(img: &RgbImage) -> Shot {
        let [c, seed, nose] = img.get_pixel(0, 0).0;
        match c {
            3 => Shot::Person(seed, nose as i64 - 128),
            c => SHOTS[c as usize],
        }
    }

    fn frame(ms: u64, s: Shot) -> Result<Frame, VideoError> {
        Ok(Frame {
            index: ms / 100,
            ms,
            image: RgbImage::from_pixel(1, 1, Rgb(code(s))),
        })
    }

    /// dlib's template at 200 px, the nose moved sideways by `nose`.
    fn landmarks(nose: i64) -> [Point; 5] {
        [
            Point::new(272, 143),
            Point::new(229, 146),
            Point::new(124, 143),
            Point::new(167, 146),
            Point::new(198 + nose, 226),
        ]
    }

    fn face(side: i64, nose: i64) -> FoundFace {
        FoundFace {
            bbox: [100, 100, side, side],
            rect: Rect::new(110, 120, 110 + side * 7 / 8, 120 + side * 7 / 8),
            landmarks: landmarks(nose),
            source: FaceSource::Detected,
        }
    }

    /// A textured chip: a ramp that moves with `seed` (so thumbnails differ) over a fine
    /// checkerboard (so it is sharp), scaled by `gain` and lifted by `base`.
    fn textured(seed: u8, base: u8, gain: f32) -> RgbImage {
        RgbImage::from_fn(CHIP_SIZE, CHIP_SIZE, |x, y| {
            let ramp = ((x + 37 * u32::from(seed)) % 100) as f32 * 0.6;
            let fine = if (x + y) % 2 == 0 { 20.0 } else { 0.0 };
            let v = (f32::from(base) + gain * (ramp + fine)).min(255.0) as u8;
            // The red channel of the corner carries the identity for the fake embedder.
            Rgb([v, v, v])
        })
    }

    struct FakeFinder;

    impl FaceFinder for FakeFinder {
        fn find_faces(&self, img: &RgbImage) -> Result<Vec<FoundFace>, PipelineError> {
            Ok(match shot(img) {
                Shot::Nothing => vec![],
                Shot::TwoPeople => vec![face(100, 0), face(120, 0)],
                Shot::Small => vec![face(40, 0)],
                Shot::Person(_, nose) => vec![face(100, nose), face(30, 0)],
                Shot::Dark | Shot::Flat | Shot::Stranger => vec![face(100, 0)],
                Shot::Profile => vec![face(100, 90)],
            })
        }

        fn chip(&self, img: &RgbImage, _face: &FoundFace) -> RgbImage {
            let mut chip = match shot(img) {
                Shot::Person(seed, _) => textured(seed, 60, 1.0),
                Shot::Dark => textured(0, 0, 0.3),
                Shot::Flat => RgbImage::from_pixel(CHIP_SIZE, CHIP_SIZE, Rgb([120, 120, 120])),
                Shot::Stranger => textured(1, 60, 1.0),
                _ => textured(0, 60, 1.0),
            };
            // Who it is, for the fake embedder: 1 for the stranger, 0 for everyone else.
            chip.put_pixel(0, 0, Rgb([u8::from(shot(img) == Shot::Stranger), 0, 0]));
            chip
        }
    }

    struct FakeEmbedder;

    impl ChipEmbedder for FakeEmbedder {
        fn embed_chips(&self, chips: &[&RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(chips
                .iter()
                .map(|c| vec![f32::from(c.get_pixel(0, 0).0[0]), 0.0])
                .collect())
        }
    }

    fn run(shots: &[Shot], options: &EnrollOptions) -> Result<EnrollReport, EnrollError> {
        let frames = shots
            .iter()
            .enumerate()
            .map(|(i, &s)| frame(i as u64 * 100, s));
        enroll_frames(frames, &FakeFinder, Some(&FakeEmbedder), options)
    }

    fn lenient() -> EnrollOptions {
        EnrollOptions {
            min_kept: 1,
            ..EnrollOptions::default()
        }
    }

    #[test]
    fn every_frame_is_kept_or_rejected_with_its_reason() {
        let shots = [
            Shot::Nothing,
            Shot::TwoPeople,
            Shot::Small,
            Shot::Person(0, 0),
            Shot::Person(0, 0),
            Shot::Dark,
            Shot::Flat,
            Shot::Stranger,
            Shot::Profile,
            Shot::Person(1, 25),
            Shot::Person(2, -25),
        ];
        let r = run(&shots, &lenient()).unwrap();
        assert_eq!(r.frames_sampled, 11);
        let kept: Vec<u64> = r.kept.iter().map(|k| k.ms).collect();
        assert_eq!(kept, [300, 900, 1000]);
        let rejected: Vec<(u64, RejectReason)> =
            r.rejected.iter().map(|x| (x.ms, x.reason)).collect();
        use RejectReason::*;
        assert_eq!(
            rejected,
            [
                (0, NoFace),
                (100, SeveralFaces),
                (200, FaceTooSmall),
                (400, NearDuplicate),
                (500, TooDark),
                (600, Blurred),
                (700, OtherPerson),
                (800, ExtremePose),
            ]
        );
        assert_eq!(r.rejected_by_reason.values().sum::<usize>(), 8);
        assert_eq!(r.rejected_by_reason[&NearDuplicate], 1);
        assert_eq!(r.rejected[0].bbox, None);
        assert_eq!(
            r.rejected[1].bbox,
            Some([100, 100, 120, 120]),
            "the largest face"
        );
        // The nose 25 px towards the image's right is a turn to the person's left.
        assert!(
            r.kept[1].yaw > TURN && r.kept[2].yaw < -TURN,
            "{:?}",
            r.kept
        );
        assert!(r.turned_left && r.turned_right && r.turned_both_sides());
        assert!(r.identity_checked);
        assert!(r.kept.iter().all(|k| k.chip.dimensions() == (150, 150)));
    }

    const TURN: f64 = quality::TURNED_YAW;

    #[test]
    fn without_an_embedder_strangers_pass_and_the_report_says_so() {
        let frames = [Shot::Person(0, 0), Shot::Stranger]
            .into_iter()
            .enumerate()
            .map(|(i, s)| frame(i as u64 * 100, s));
        let r = enroll_frames(frames, &FakeFinder, None, &lenient()).unwrap();
        assert_eq!(r.kept.len(), 2);
        assert!(!r.identity_checked);
        assert!(!r.turned_left && !r.turned_right);
    }

    #[test]
    fn at_most_max_kept_spread_over_the_turn() {
        // Nine distinct frames turning from right to left; keep three.
        let shots: Vec<Shot> = (0..9u8)
            .map(|i| Shot::Person(i, i64::from(i) * 6 - 24))
            .collect();
        let options = EnrollOptions {
            max_kept: 3,
            ..lenient()
        };
        let r = run(&shots, &options).unwrap();
        assert_eq!(r.kept.len(), 3);
        assert_eq!(r.rejected_by_reason[&RejectReason::OverLimit], 6);
        assert_eq!(r.kept.first().unwrap().ms, 0, "the most turned one way");
        assert_eq!(
            r.kept.last().unwrap().ms,
            800,
            "the most turned the other way"
        );
    }

    #[test]
    fn too_few_frames_is_an_error_with_the_reasons() {
        let shots = [
            Shot::TwoPeople,
            Shot::TwoPeople,
            Shot::Nothing,
            Shot::Person(0, 0),
        ];
        let e = run(&shots, &EnrollOptions::default()).unwrap_err();
        match &e {
            EnrollError::NotEnoughFrames {
                kept,
                min_kept,
                frames_sampled,
                rejected_by_reason,
            } => {
                assert_eq!(
                    (*kept, *min_kept, *frames_sampled),
                    (1, DEFAULT_MIN_KEPT, 4)
                );
                assert_eq!(rejected_by_reason[&RejectReason::SeveralFaces], 2);
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.starts_with("only 1 usable face frames in the video, at least 5 are needed (4 frames sampled; rejected: no_face 1, several_faces 2)"),
            "{msg}"
        );
        let e = run(&[Shot::Nothing], &lenient()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no usable face in the video (1 frames sampled; rejected: no_face 1)"),
            "{e}"
        );
    }

    #[test]
    fn errors_stop_the_enrollment() {
        let frames = vec![
            frame(0, Shot::Person(0, 0)),
            Err(VideoError::TooLong {
                claimed_ms: None,
                max_ms: 100,
            }),
        ];
        let e = enroll_frames(frames.into_iter(), &FakeFinder, None, &lenient()).unwrap_err();
        assert!(
            matches!(e, EnrollError::Video(VideoError::TooLong { .. })),
            "{e:?}"
        );

        struct Failing;
        impl FaceFinder for Failing {
            fn find_faces(&self, _: &RgbImage) -> Result<Vec<FoundFace>, PipelineError> {
                Err(PipelineError::Detect(DetectError::OpenCv(
                    "cascade exploded".into(),
                )))
            }
            fn chip(&self, _: &RgbImage, _: &FoundFace) -> RgbImage {
                unreachable!()
            }
        }
        let e = enroll_frames(
            std::iter::once(frame(0, Shot::Nothing)),
            &Failing,
            None,
            &lenient(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "face detection failed: OpenCV: cascade exploded"
        );
    }

    /// The fake finder, slowed down by a different amount on each frame so that the threads
    /// finish frames out of order; it fails on `fail_on`.
    struct Uneven {
        fail_on: Option<Shot>,
    }

    impl FaceFinder for Uneven {
        fn find_faces(&self, img: &RgbImage) -> Result<Vec<FoundFace>, PipelineError> {
            let [c, seed, nose] = img.get_pixel(0, 0).0;
            let ms = (u64::from(c) * 7 + u64::from(seed) * 3 + u64::from(nose)) % 4;
            std::thread::sleep(Duration::from_millis(ms));
            if Some(shot(img)) == self.fail_on {
                return Err(PipelineError::Detect(DetectError::OpenCv(format!(
                    "{:?} exploded",
                    shot(img)
                ))));
            }
            FakeFinder.find_faces(img)
        }

        fn chip(&self, img: &RgbImage, face: &FoundFace) -> RgbImage {
            FakeFinder.chip(img, face)
        }
    }

    /// Every kind of frame, several times, turning the head both ways.
    fn long_take() -> Vec<Shot> {
        (0..60u8)
            .map(|i| match i % 10 {
                0 => Shot::Nothing,
                1 => Shot::TwoPeople,
                2 => Shot::Small,
                3 => Shot::Dark,
                4 => Shot::Flat,
                5 => Shot::Stranger,
                6 => Shot::Profile,
                _ => Shot::Person(i, i64::from(i % 7) * 9 - 27),
            })
            .collect()
    }

    fn run_with(
        shots: &[Shot],
        finder: &dyn FaceFinder,
        threads: usize,
        max_kept: usize,
    ) -> Result<EnrollReport, EnrollError> {
        let frames = shots
            .iter()
            .enumerate()
            .map(|(i, &s)| frame(i as u64 * 100, s));
        let options = EnrollOptions {
            threads,
            max_kept,
            ..lenient()
        };
        enroll_frames(frames, finder, Some(&FakeEmbedder), &options)
    }

    #[test]
    fn every_thread_count_gives_the_same_report() {
        let shots = long_take();
        let finder = Uneven { fail_on: None };
        let summary = |r: &EnrollReport| {
            let kept: Vec<(u64, [i64; 4], u64)> = r
                .kept
                .iter()
                .map(|k| (k.ms, k.bbox, k.yaw.to_bits()))
                .collect();
            (
                r.frames_sampled,
                kept,
                r.rejected.clone(),
                r.rejected_by_reason.clone(),
                (r.turned_left, r.turned_right),
            )
        };
        // Room for every distinct frame, and a limit that leaves some over it.
        for max_kept in [30, 5] {
            let one = run_with(&shots, &finder, 1, max_kept).unwrap();
            assert_eq!(one.frames_sampled, 60);
            assert!(one.kept.len() >= 5, "{}", one.kept.len());
            for reason in [
                RejectReason::NoFace,
                RejectReason::SeveralFaces,
                RejectReason::FaceTooSmall,
                RejectReason::TooDark,
                RejectReason::Blurred,
                RejectReason::OtherPerson,
                RejectReason::ExtremePose,
            ] {
                assert!(one.rejected_by_reason.contains_key(&reason), "{reason}");
            }
            for threads in [2, 3, 8] {
                let many = run_with(&shots, &finder, threads, max_kept).unwrap();
                assert_eq!(summary(&many), summary(&one), "{threads} threads");
                let chips =
                    |r: &EnrollReport| r.kept.iter().map(|k| k.chip.clone()).collect::<Vec<_>>();
                assert_eq!(chips(&many), chips(&one));
            }
        }
    }

    #[test]
    fn on_many_threads_the_first_failing_frame_gives_the_error() {
        // The stranger at frame 5 fails detection; the video fails at frame 8.
        let finder = Uneven {
            fail_on: Some(Shot::Stranger),
        };
        let frames = |broken_at: usize| {
            long_take().into_iter().enumerate().map(move |(i, s)| {
                if i == broken_at {
                    Err(VideoError::Decoder("broken frame".into()))
                } else {
                    frame(i as u64 * 100, s)
                }
            })
        };
        for threads in [1, 2, 4] {
            let options = EnrollOptions {
                threads,
                ..lenient()
            };
            let e = enroll_frames(frames(8), &finder, None, &options).unwrap_err();
            assert_eq!(
                e.to_string(),
                "face detection failed: OpenCV: Stranger exploded",
                "{threads} threads"
            );
            let e = enroll_frames(frames(3), &finder, None, &options).unwrap_err();
            assert!(
                matches!(e, EnrollError::Video(VideoError::Decoder(_))),
                "{threads} threads: {e:?}"
            );
        }
    }

    #[test]
    fn the_report_serializes_without_chips() {
        let r = run(&[Shot::Person(0, 0), Shot::Nothing], &lenient()).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        let kept = &json["kept"][0];
        assert_eq!(kept["ms"], 0);
        assert_eq!(kept["box"], serde_json::json!([100, 100, 100, 100]));
        assert_eq!(
            kept["landmarks"][4],
            serde_json::json!({"x": 198, "y": 226})
        );
        assert!(kept.get("chip").is_none());
        assert_eq!(
            json["rejected"][0],
            serde_json::json!({"ms": 100, "reason": "no_face"})
        );
        assert_eq!(
            json["rejected_by_reason"],
            serde_json::json!({"no_face": 1})
        );
        assert_eq!(json["turned_left"], false);
    }
}

//! Sampling frames from an enrollment video: one frame every `interval_ms` (100 ms by default),
//! decoded with OpenCV's FFmpeg backend and handed out as upright RGB images.
//!
//! A frame's time is its index × 1000 / fps (seeking by `CAP_PROP_POS_MSEC` lands on the wrong
//! frames with FFmpeg); when the file states no usable frame rate the decoder's own timestamp is
//! used, and failing that [`FALLBACK_FPS`]. The frame rate and frame count in a file are only
//! claims, so everything is bounded while decoding, not just up front: the file size is checked
//! before opening, the format is sniffed from the first bytes (only MP4/MOV and WebM/Matroska
//! containers reach FFmpeg, so a renamed playlist or image never does), the frame size is checked
//! on open and on every decoded frame, and decoding stops with an error once the video runs past
//! [`VideoLimits::max_duration_ms`] or [`VideoLimits::max_frames`]. A damaged or truncated file
//! either fails to open (an MP4 whose index sits at the end) or yields the frames that decode.

use std::path::{Path, PathBuf};

use image::RgbImage;
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

/// The default sampling interval: a frame every 100 ms.
pub const DEFAULT_INTERVAL_MS: u32 = 100;

/// Frame rate assumed when the file states none and the decoder gives no timestamps.
pub const FALLBACK_FPS: f64 = 30.0;

/// Frame rates outside (0, this] are treated as unknown.
pub const MAX_PLAUSIBLE_FPS: f64 = 1000.0;

/// How long OpenCV may take to open the file, or to read one frame, in milliseconds.
pub const DECODER_TIMEOUT_MS: i32 = 10_000;

/// Bounds on the videos [`FrameSampler`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLimits {
    /// Largest file size in bytes (default 256 MiB: a minute of 4K phone video at ~35 Mbit/s).
    pub max_bytes: u64,
    /// Longest video, in milliseconds of frame time (default 60 s; enrollment asks for 5–6 s).
    pub max_duration_ms: u64,
    /// Most frames decoded in all (default 60 s at 120 fps), whatever the file claims its rate is.
    pub max_frames: u64,
    /// Largest width or height in pixels (default 4096: 4K either way up).
    pub max_side: u32,
    /// Largest number of pixels per frame (default 4096 × 2304).
    pub max_pixels: u64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        VideoLimits {
            max_bytes: 256 * 1024 * 1024,
            max_duration_ms: 60_000,
            max_frames: 60 * 120,
            max_side: 4096,
            max_pixels: 4096 * 2304,
        }
    }
}

/// How to sample a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerOptions {
    /// Time between sampled frames in milliseconds (at least 1).
    pub interval_ms: u32,
    /// What is accepted.
    pub limits: VideoLimits,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            interval_ms: DEFAULT_INTERVAL_MS,
            limits: VideoLimits::default(),
        }
    }
}

/// Why a video was refused or could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is too big.
    #[error("the video is {size} bytes; at most {max} are accepted")]
    TooManyBytes {
        /// File size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The first bytes are not those of a supported container.
    #[error("not an MP4, MOV or WebM video{}", .looks_like.map(|k| format!(" (it looks like {k})")).unwrap_or_default())]
    NotAVideo {
        /// What the bytes look like instead, when recognisable.
        looks_like: Option<&'static str>,
    },
    /// FFmpeg could not open the file.
    #[error("the video cannot be opened: it is damaged, truncated or uses an unsupported codec")]
    Open,
    /// Frames are too large.
    #[error("the video's frames are {width}×{height} pixels; at most {max_side} on a side and {max_pixels} in all are accepted")]
    TooLarge {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Side limit.
        max_side: u32,
        /// Pixel limit.
        max_pixels: u64,
    },
    /// The video runs too long.
    #[error("the video is longer than {max_ms} ms{}", .claimed_ms.map(|c| format!(" (it says {c} ms)")).unwrap_or_default())]
    TooLong {
        /// The duration the file states, when it was refused up front.
        claimed_ms: Option<u64>,
        /// The limit.
        max_ms: u64,
    },
    /// More frames than any accepted video can have.
    #[error("the video has more than {max} frames")]
    TooManyFrames {
        /// The limit.
        max: u64,
    },
    /// The file opened but not a single frame decoded.
    #[error("no frame of the video could be decoded: it is damaged or truncated")]
    NoFrames,
    /// A decoded frame has a pixel format that cannot be converted.
    #[error("a decoded frame has an unsupported pixel layout (OpenCV type {0})")]
    PixelFormat(i32),
    /// OpenCV failed.
    #[error("the video decoder failed: {0}")]
    Decoder(String),
}

impl From<opencv::Error> for VideoError {
    fn from(e: opencv::Error) -> Self {
        VideoError::Decoder(e.message)
    }
}

/// What the container says about the video (claims, not guarantees).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VideoInfo {
    /// Frame width in pixels as opened (after rotation metadata is applied).
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second, when the file states a plausible one.
    pub fps: Option<f64>,
    /// Number of frames, when the file states one.
    pub frame_count: Option<u64>,
    /// frame_count × 1000 / fps, when both are known.
    pub duration_ms: Option<u64>,
}

/// A sampled frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Index of the frame in decoding order, from 0.
    pub index: u64,
    /// Its time in milliseconds from the first frame (index × 1000 / fps, rounded).
    pub ms: u64,
    /// The picture, upright RGB.
    pub image: RgbImage,
}

/// The kinds of file the sniffing recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media: MP4, MOV, 3GP (an `ftyp` box, or a bare QuickTime atom, first).
    IsoMedia,
    /// Matroska or WebM (the EBML magic).
    Matroska,
}

/// Recognises a supported container from a file's first bytes; otherwise says what it looks like.
pub fn sniff(head: &[u8]) -> Result<Container, VideoError> {
    const QUICKTIME_ATOMS: [&[u8; 4]; 5] = [b"ftyp", b"moov", b"mdat", b"wide", b"pnot"];
    if head.len() >= 8 && QUICKTIME_ATOMS.iter().any(|a| &head[4..8] == *a) {
        return Ok(Container::IsoMedia);
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Ok(Container::Matroska);
    }
    let looks_like = if head.is_empty() {
        Some("an empty file")
    } else if let Ok(format) = image::guess_format(head) {
        Some(match format {
            image::ImageFormat::Jpeg => "a JPEG image",
            image::ImageFormat::Png => "a PNG image",
            image::ImageFormat::WebP => "a WebP image",
            image::ImageFormat::Gif => "a GIF image",
            _ => "an image",
        })
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"AVI ") {
        Some("an AVI video, which is not accepted")
    } else if head.starts_with(b"#EXTM3U") {
        Some("a playlist")
    } else {
        None
    };
    Err(VideoError::NotAVideo { looks_like })
}

/// Reads a video and hands out one frame per interval, in order.
///
/// It is an iterator of `Result<Frame, VideoError>`: after the first error it yields nothing more.
/// When the file opened but no frame at all decoded, the last item is [`VideoError::NoFrames`].
pub struct FrameSampler {
    cap: VideoCapture,
    info: VideoInfo,
    interval_ms: f64,
    limits: VideoLimits,
    /// Index of the next frame to decode.
    next_index: u64,
    /// The next sample is the first frame whose time reaches this.
    next_due_ms: f64,
    done: bool,
    sampled: u64,
    bgr: Mat,
    rgb: Mat,
}

impl FrameSampler {
    /// Checks the file (size, container, frame size, stated duration) and opens it for decoding.
    pub fn open(path: &Path, options: &SamplerOptions) -> Result<Self, VideoError> {
        let limits = options.limits;
        let io = |source| VideoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() > limits.max_bytes {
            return Err(VideoError::TooManyBytes {
                size: meta.len(),
                max: limits.max_bytes,
            });
        }
        let mut head = Vec::with_capacity(16);
        {
            use std::io::Read;
            std::fs::File::open(path)
                .map_err(io)?
                .take(16)
                .read_to_end(&mut head)
                .map_err(io)?;
        }
        sniff(&head)?;

        let params = Vector::<i32>::from_slice(&[
            videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
            DECODER_TIMEOUT_MS,
            videoio::CAP_PROP_READ_TIMEOUT_MSEC,
            DECODER_TIMEOUT_MS,
        ]);
        // OpenCV reports a file FFmpeg cannot open as an unopened capture (or, for some
        // failures, as an error): both mean the same to the caller.
        let mut cap = match VideoCapture::from_file_with_params(path, videoio::CAP_FFMPEG, &params)
        {
            Ok(cap) if cap.is_opened().unwrap_or(false) => cap,
            _ => return Err(VideoError::Open),
        };
        // Phones store portrait video as landscape plus a rotation tag: apply it. (OpenCV does
        // by default with FFmpeg; setting it is belt and braces, and refused at open time.)
        let _ = cap.set(videoio::CAP_PROP_ORIENTATION_AUTO, 1.0);
        let info = read_info(&cap)?;
        check_size(info.width, info.height, &limits)?;
        if let Some(d) = info.duration_ms {
            if d > limits.max_duration_ms {
                return Err(VideoError::TooLong {
                    claimed_ms: Some(d),
                    max_ms: limits.max_duration_ms,
                });
            }
        }
        Ok(FrameSampler {
            cap,
            info,
            interval_ms: f64::from(options.interval_ms.max(1)),
            limits,
            next_index: 0,
            next_due_ms: 0.0,
            done: false,
            sampled: 0,
            bgr: Mat::default(),
            rgb: Mat::default(),
        })
    }

    /// What the container says about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Frames decoded so far (sampled or not).
    pub fn frames_decoded(&self) -> u64 {
        self.next_index
    }

    /// Frames handed out so far.
    pub fn frames_sampled(&self) -> u64 {
        self.sampled
    }

    /// The time of the frame just grabbed (index `i`), in milliseconds.
    fn frame_ms(&self, i: u64) -> f64 {
        let decoder_ms = match self.info.fps {
            Some(_) => None,
            None => self.cap.get(videoio::CAP_PROP_POS_MSEC).ok(),
        };
        frame_time_ms(i, self.info.fps, decoder_ms)
    }

    /// Decodes up to the next sampled frame.
    fn advance(&mut self) -> Result<Option<Frame>, VideoError> {
        loop {
            if self.next_index >= self.limits.max_frames {
                return Err(VideoError::TooManyFrames {
                    max: self.limits.max_frames,
                });
            }
            if !self.cap.grab()? {
                return if self.next_index == 0 {
                    Err(VideoError::NoFrames)
                } else {
                    Ok(None)
                };
            }
            let index = self.next_index;
            self.next_index += 1;
            let t = self.frame_ms(index);
            if t > self.limits.max_duration_ms as f64 {
                return Err(VideoError::TooLong {
                    claimed_ms: None,
                    max_ms: self.limits.max_duration_ms,
                });
            }
            // A small tolerance keeps 29.97 fps from drifting a frame late on exact multiples.
            if t + 1e-6 < self.next_due_ms {
                continue;
            }
            self.next_due_ms = ((t / self.interval_ms).floor() + 1.0) * self.interval_ms;
            if !self.cap.retrieve(&mut self.bgr, 0)? || self.bgr.empty() {
                // The packet was there but the picture is not: skip it like a dropped frame.
                continue;
            }
            let image = to_rgb(&self.bgr, &mut self.rgb)?;
            check_size(image.width(), image.height(), &self.limits)?;
            self.sampled += 1;
            return Ok(Some(Frame {
                index,
                ms: t.round() as u64,
                image,
            }));
        }
    }
}

impl Iterator for FrameSampler {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for FrameSampler {}

/// The time of frame `index` in milliseconds: index × 1000 / fps when the rate is known; else
/// the decoder's timestamp when it is a plausible one; else index × 1000 / [`FALLBACK_FPS`].
pub fn frame_time_ms(index: u64, fps: Option<f64>, decoder_ms: Option<f64>) -> f64 {
    match (plausible_fps(fps), decoder_ms) {
        (Some(fps), _) => index as f64 * 1000.0 / fps,
        (None, Some(t)) if t.is_finite() && t >= 0.0 => t,
        _ => index as f64 * 1000.0 / FALLBACK_FPS,
    }
}

/// The frame rate when it is usable: finite and in (0, [`MAX_PLAUSIBLE_FPS`]].
fn plausible_fps(fps: Option<f64>) -> Option<f64> {
    fps.filter(|f| f.is_finite() && *f > 0.0 && *f <= MAX_PLAUSIBLE_FPS)
}

fn read_info(cap: &VideoCapture) -> Result<VideoInfo, VideoError> {
    let prop = |id| cap.get(id).ok().filter(|v| v.is_finite());
    let side = |id| {
        prop(id)
            .filter(|v| *v >= 0.0 && *v <= f64::from(u32::MAX))
            .unwrap_or(0.0) as u32
    };
    let width = side(videoio::CAP_PROP_FRAME_WIDTH);
    let height = side(videoio::CAP_PROP_FRAME_HEIGHT);
    let fps = plausible_fps(prop(videoio::CAP_PROP_FPS));
    let frame_count = prop(videoio::CAP_PROP_FRAME_COUNT)
        .filter(|n| *n >= 1.0 && *n < 1e12)
        .map(|n| n as u64);
    let duration_ms = match (fps, frame_count) {
        (Some(f), Some(n)) => Some((n as f64 * 1000.0 / f).round() as u64),
        _ => None,
    };
    Ok(VideoInfo {
        width,
        height,
        fps,
        frame_count,
        duration_ms,
    })
}

fn check_size(width: u32, height: u32, limits: &VideoLimits) -> Result<(), VideoError> {
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(VideoError::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Converts an OpenCV frame (BGR, or grey, 8 bits) to an `RgbImage`.
fn to_rgb(src: &Mat, rgb: &mut Mat) -> Result<RgbImage, VideoError> {
    use opencv::core::{CV_8UC1, CV_8UC3, CV_8UC4};
    use opencv::imgproc;
    let code = match src.typ() {
        t if t == CV_8UC3 => imgproc::COLOR_BGR2RGB,
        t if t == CV_8UC1 => imgproc::COLOR_GRAY2RGB,
        t if t == CV_8UC4 => imgproc::COLOR_BGRA2RGB,
        t => return Err(VideoError::PixelFormat(t)),
    };
    imgproc::cvt_color(src, rgb, code, 0)?;
    let (w, h) = (rgb.cols(), rgb.rows());
    if w <= 0 || h <= 0 {
        return Err(VideoError::NoFrames);
    }
    let bytes = if rgb.is_continuous() {
        rgb.data_bytes()?.to_vec()
    } else {
        rgb.try_clone()?.data_bytes()?.to_vec()
    };
    RgbImage::from_raw(w as u32, h as u32, bytes).ok_or(VideoError::PixelFormat(rgb.typ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_accepts_iso_media_and_matroska() {
        let mp4 = b"\0\0\0\x20ftypisom\0\0\x02\0";
        assert_eq!(sniff(mp4).unwrap(), Container::IsoMedia);
        let mov = b"\0\0\0\x08wide\0\0\0\0mdat";
        assert_eq!(sniff(mov).unwrap(), Container::IsoMedia);
        assert_eq!(
            sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1, 0, 0, 0]).unwrap(),
            Container::Matroska
        );
    }

    #[test]
    fn sniff_names_what_it_is_instead() {
        let msg = |b: &[u8]| sniff(b).unwrap_err().to_string();
        assert_eq!(
            msg(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F']),
            "not an MP4, MOV or WebM video (it looks like a JPEG image)"
        );
        assert!(msg(b"#EXTM3U\n#EXT-X").contains("playlist"));
        assert!(msg(b"").contains("empty file"));
        assert!(msg(b"RIFF\0\0\0\0AVI LIST").contains("AVI"));
        assert_eq!(msg(b"hello world, no"), "not an MP4, MOV or WebM video");
    }

    #[test]
    fn frame_times() {
        // 29.97 fps: frame 3 is at 100.1 ms.
        assert!((frame_time_ms(3, Some(29.97), None) - 100.1).abs() < 1e-3);
        // The decoder's timestamp only when the rate is unusable.
        assert_eq!(frame_time_ms(3, Some(25.0), Some(999.0)), 120.0);
        for bad in [
            None,
            Some(0.0),
            Some(-5.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(90_000.0),
        ] {
            assert_eq!(frame_time_ms(3, bad, Some(140.0)), 140.0, "{bad:?}");
            assert_eq!(frame_time_ms(3, bad, None), 100.0, "{bad:?}");
            assert_eq!(frame_time_ms(3, bad, Some(-1.0)), 100.0, "{bad:?}");
            assert_eq!(frame_time_ms(3, bad, Some(f64::NAN)), 100.0, "{bad:?}");
        }
    }

    #[test]
    fn frame_size_limits() {
        let limits = VideoLimits::default();
        assert!(check_size(3840, 2160, &limits).is_ok());
        assert!(check_size(2160, 3840, &limits).is_ok());
        assert!(check_size(4097, 100, &limits).is_err());
        assert!(check_size(4096, 4096, &limits).is_err());
    }

    #[test]
    fn bgr_frames_become_rgb() {
        use opencv::core::{Scalar, CV_8UC3};
        let mut bgr =
            Mat::new_rows_cols_with_default(2, 3, CV_8UC3, Scalar::new(10.0, 20.0, 30.0, 0.0))
                .unwrap();
        let mut rgb = Mat::default();
        let img = to_rgb(&bgr, &mut rgb).unwrap();
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.get_pixel(2, 1).0, [30, 20, 10]);
        // A non-continuous view (a column range) converts too.
        let roi = Mat::roi_mut(&mut bgr, opencv::core::Rect::new(1, 0, 2, 2)).unwrap();
        let img = to_rgb(&roi.try_clone().unwrap(), &mut rgb).unwrap();
        assert_eq!(img.dimensions(), (2, 2));
    }
}

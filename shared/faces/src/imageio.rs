//! Decoding photos (JPEG, PNG, WebP) under explicit limits, with EXIF orientation applied.
//!
//! Every image the product reads from a user goes through [`decode`]: the format is sniffed
//! from the bytes (never trusted from a name), the size is bounded before and during decoding,
//! truncated files are refused rather than filled in, and the result is upright RGB.

use std::io::Cursor;
use std::path::Path;

use image::{ImageDecoder, ImageFormat, RgbImage};

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded size in bytes.
    pub max_bytes: u64,
    /// Largest width or height in pixels.
    pub max_side: u32,
    /// Largest number of pixels.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 * 1024 * 1024,
            max_side: 12_000,
            max_pixels: 50_000_000,
        }
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Too many bytes.
    #[error("the image is {size} bytes; at most {max} are accepted")]
    TooManyBytes {
        /// Encoded size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too many pixels.
    #[error("the image is {width}×{height} pixels; at most {max_side} on a side and {max_pixels} in all are accepted")]
    TooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Side limit.
        max_side: u32,
        /// Pixel limit.
        max_pixels: u64,
    },
    /// Not JPEG, PNG or WebP.
    #[error("not a JPEG, PNG or WebP image")]
    UnknownFormat,
    /// The file ends before the image does.
    #[error("the {0} image is truncated")]
    Truncated(&'static str),
    /// The decoder refused the data.
    #[error("not a decodable image: {0}")]
    Decode(String),
}

/// Reads and decodes the image at `path`.
pub fn decode_file(path: &Path, limits: &Limits) -> Result<RgbImage, ImageError> {
    let size = std::fs::metadata(path)?.len();
    if size > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            size,
            max: limits.max_bytes,
        });
    }
    decode(&std::fs::read(path)?, limits)
}

/// The most pixels the face search works on: a larger photo is scaled down to this first
/// ([`fit_pixels`]). With the padded copy (four times as many pixels), its grey copy and the
/// detector's pyramid, the search then holds about 100 MB at most, besides the decoded photo
/// (at most 150 MB, dropped as soon as it is scaled). A face must then be about 40 pixels across
/// in the scaled copy: 200 pixels in a 50-megapixel photo.
pub const SEARCH_PIXELS: u64 = 4_000_000;

/// `img` scaled down by area averaging to at most `max_pixels` pixels, with the factor its
/// sides were multiplied by (1 when it already fits). The original is dropped first thing after,
/// so that the work that follows holds only the smaller copy.
pub fn fit_pixels(img: RgbImage, max_pixels: u64) -> (RgbImage, f64) {
    let (w, h) = img.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels <= max_pixels || pixels == 0 {
        return (img, 1.0);
    }
    let s = (max_pixels as f64 / pixels as f64).sqrt();
    let nw = ((w as f64 * s).floor() as u32).max(1);
    let nh = ((h as f64 * s).floor() as u32).max(1);
    let small = image::imageops::thumbnail(&img, nw, nh);
    (small, nw as f64 / w as f64)
}

/// Decodes an encoded JPEG, PNG or WebP image to upright RGB.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, ImageError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            size: bytes.len() as u64,
            max: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        _ => return Err(ImageError::UnknownFormat),
    };
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        return Err(ImageError::Truncated("JPEG"));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    // The decoder only bounds memory; the pixel limits are checked on the header below, so
    // that the refusal can say how large the image is.
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_pixels.saturating_mul(4).max(1 << 20));
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_side
        || height > limits.max_side
        || width as u64 * height as u64 > limits.max_pixels
    {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, limits))?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

fn decode_error(e: image::ImageError, limits: &Limits) -> ImageError {
    match e {
        image::ImageError::Limits(_) => ImageError::Decode(format!(
            "the image exceeds the limits ({} pixels on a side, {} pixels in all)",
            limits.max_side, limits.max_pixels
        )),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated("image")
        }
        other => ImageError::Decode(other.to_string()),
    }
}

/// True when a JPEG stream reaches its end-of-image marker. Decoders fill a cut-off JPEG with
/// grey instead of failing; this catches that. The markers are followed from the start, so what
/// comes after the image (a phone's motion photo appends its video) is allowed.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let len = |i: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]) as usize)
    };
    let mut i = 0;
    loop {
        // A marker: 0xFF (fill bytes allowed), then its code.
        if bytes.get(i) != Some(&0xff) {
            return false;
        }
        while bytes.get(i) == Some(&0xff) {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xd9 => return true,
            // Start of image, restarts and TEM stand alone.
            0xd8 | 0xd0..=0xd7 | 0x01 => {}
            _ => {
                let Some(n) = len(i).filter(|&n| n >= 2) else {
                    return false;
                };
                i += n;
                if code == 0xda {
                    // Entropy-coded data up to the next marker that is neither a stuffed
                    // 0xFF00 nor a restart.
                    loop {
                        match bytes
                            .get(i..)
                            .and_then(|rest| rest.iter().position(|&b| b == 0xff))
                        {
                            None => return false,
                            Some(p) => i += p,
                        }
                        match bytes.get(i + 1) {
                            None => return false,
                            Some(0x00 | 0xd0..=0xd7 | 0xff) => i += 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twin_tests::resources::png_header_only;

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn sample() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 100])
        })
    }

    #[test]
    fn decodes_png_and_jpeg() {
        let img = sample();
        let png = decode(&encode(&img, ImageFormat::Png), &Limits::default()).unwrap();
        assert_eq!(png, img);
        let jpg = decode(&encode(&img, ImageFormat::Jpeg), &Limits::default()).unwrap();
        assert_eq!(jpg.dimensions(), (40, 30));
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(matches!(
            decode(b"hello world", &Limits::default()),
            Err(ImageError::UnknownFormat)
        ));
        let jpg = encode(&sample(), ImageFormat::Jpeg);
        // Cut anywhere: in the headers, in the entropy-coded data, or just before its end.
        for cut in [jpg.len() / 8, jpg.len() / 2, jpg.len() - 2, jpg.len() - 1] {
            let e = decode(&jpg[..cut], &Limits::default()).unwrap_err();
            assert!(
                matches!(e, ImageError::Truncated(_) | ImageError::Decode(_)),
                "cut at {cut}: {e}"
            );
        }
        // What follows a complete JPEG (a motion photo's video, padding) is not a truncation.
        let mut motion = jpg.clone();
        motion.extend_from_slice(b"\0\0\0\x18ftypmp42");
        motion.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
        let img = decode(&motion, &Limits::default()).expect("a photo with a video after it");
        assert_eq!(img.dimensions(), sample().dimensions());
        let png = encode(&sample(), ImageFormat::Png);
        let e = decode(&png[..png.len() - 20], &Limits::default()).unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated(_) | ImageError::Decode(_)),
            "{e}"
        );
    }

    /// `jpeg` with an EXIF segment saying `orientation` inserted after its start marker.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec(); // big-endian TIFF, IFD at 8
        exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // one value
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0]); // value padding
        exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&exif);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 64×32: left half black, right half white.
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let plain = decode(&jpeg, &Limits::default()).unwrap();
        assert_eq!(plain.dimensions(), (64, 32));
        // 6: the camera was turned; shown rotated 90° clockwise, the left half goes on top.
        let turned = decode(&with_exif_orientation(&jpeg, 6), &Limits::default()).unwrap();
        assert_eq!(turned.dimensions(), (32, 64));
        assert!(turned.get_pixel(16, 8).0[0] < 40, "top is the black half");
        assert!(
            turned.get_pixel(16, 56).0[0] > 215,
            "bottom is the white half"
        );
        // 3: upside down; the black half moves to the right.
        let flipped = decode(&with_exif_orientation(&jpeg, 3), &Limits::default()).unwrap();
        assert_eq!(flipped.dimensions(), (64, 32));
        assert!(flipped.get_pixel(8, 16).0[0] > 215);
        assert!(flipped.get_pixel(56, 16).0[0] < 40);
    }

    #[test]
    fn refuses_images_over_the_limits() {
        let png = encode(&sample(), ImageFormat::Png);
        let small = Limits {
            max_side: 32,
            ..Limits::default()
        };
        let e = decode(&png, &small).unwrap_err();
        assert!(e.to_string().contains("40×30"), "{e}");
        let tiny = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&png, &tiny),
            Err(ImageError::TooManyBytes { .. })
        ));
    }

    #[test]
    fn refuses_other_formats_and_empty_files() {
        let unknown = |bytes: &[u8]| {
            let e = decode(bytes, &Limits::default()).unwrap_err();
            assert!(matches!(e, ImageError::UnknownFormat), "{e}");
            assert_eq!(e.to_string(), "not a JPEG, PNG or WebP image");
        };
        unknown(b"");
        unknown(b"GIF89a\x01\x00\x01\x00\x80\x00\x00");
        unknown(b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00");
        unknown(b"II*\x00\x08\x00\x00\x00\x00\x00");
        unknown(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic");
        unknown(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    }

    #[test]
    fn refuses_headers_without_an_image() {
        // A JPEG's start marker and nothing else.
        let e = decode(&[0xFF, 0xD8, 0xFF], &Limits::default()).unwrap_err();
        assert!(matches!(e, ImageError::Truncated("JPEG")), "{e}");
        // A PNG header that claims 30 000 × 30 000 pixels: refused from the header, before a
        // byte of pixels is allocated.
        let e = decode(&png_header_only(30_000, 30_000), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    width: 30_000,
                    height: 30_000,
                    ..
                }
            ),
            "{e}"
        );
        // A PNG one pixel wider than the side limit, one pixel high.
        let e = decode(&png_header_only(12_001, 1), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("12001×1"), "{e}");
        // A PNG that claims no pixels at all, and one whose pixels are missing.
        let e = decode(&png_header_only(0, 10), &Limits::default()).unwrap_err();
        assert!(matches!(e, ImageError::Decode(_)), "{e}");
        let e = decode(&png_header_only(10, 10), &Limits::default()).unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated(_) | ImageError::Decode(_)),
            "{e}"
        );
        // The PNG signature alone, and a WebP container holding no picture.
        let e = decode(b"\x89PNG\r\n\x1a\n", &Limits::default()).unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated(_) | ImageError::Decode(_)),
            "{e}"
        );
        let e = decode(b"RIFF\x10\x00\x00\x00WEBPVP8 garbage!", &Limits::default()).unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated(_) | ImageError::Decode(_)),
            "{e}"
        );
    }

    #[test]
    fn every_pixel_layout_becomes_rgb() {
        use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, Rgba, RgbaImage};
        let dynamic = |img: DynamicImage, format: ImageFormat| {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            decode(&out.into_inner(), &Limits::default()).unwrap()
        };
        // One pixel.
        let one = RgbImage::from_pixel(1, 1, Rgb([200, 100, 50]));
        assert_eq!(
            decode(&encode(&one, ImageFormat::Png), &Limits::default()).unwrap(),
            one
        );
        // Grey, as PNG and as JPEG: three equal channels.
        let grey = GrayImage::from_fn(16, 8, |x, _| Luma([(x * 16) as u8]));
        let png = dynamic(DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png);
        assert_eq!(png.get_pixel(5, 3).0, [80, 80, 80]);
        let jpg = dynamic(DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg);
        assert_eq!(jpg.dimensions(), (16, 8));
        let [r, g, b] = jpg.get_pixel(5, 3).0;
        assert!(r == g && g == b, "{r} {g} {b}");
        // 16 bits a channel: scaled to 8.
        let deep: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(4, 4, Rgb([65_535, 32_896, 0]));
        let png = dynamic(DynamicImage::ImageRgb16(deep), ImageFormat::Png);
        assert_eq!(png.get_pixel(1, 1).0, [255, 128, 0]);
        // Transparency: the alpha channel is dropped, the colour kept.
        let clear = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 128]));
        let png = dynamic(DynamicImage::ImageRgba8(clear.clone()), ImageFormat::Png);
        assert_eq!(png.get_pixel(2, 2).0, [10, 20, 30]);
        // WebP (lossless, as the encoder writes it).
        let webp = dynamic(DynamicImage::ImageRgba8(clear), ImageFormat::WebP);
        assert_eq!(webp.get_pixel(2, 2).0, [10, 20, 30]);
    }

    #[test]
    fn an_unknown_exif_orientation_is_ignored() {
        let jpeg = encode(&sample(), ImageFormat::Jpeg);
        for orientation in [0, 9, 0xFFFF] {
            let img = decode(
                &with_exif_orientation(&jpeg, orientation),
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(img.dimensions(), (40, 30), "orientation {orientation}");
        }
    }
}

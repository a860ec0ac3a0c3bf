//! What hostile input costs a process: its peak memory, and the photo that once took a server to
//! 13.5 GB.

/// A process's peak resident memory (`VmHWM`), in MB; `None` once it has exited.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A flat grey 12000 × 4166 JPEG: about 1.3 MB, 50 Mpx, no face.
pub fn hostile_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(12_000, 4_166, image::Rgb([128, 128, 128]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("encode");
    out
}

//! Aligned face chips as the embedding network takes them.
//!
//! A chip is a 150×150 RGB image cut the way dlib cuts them. The network's input is a batch of
//! chips as one contiguous `[N, 3, 150, 150]` `f32` buffer of raw pixel values (0–255, planes
//! R, G, B); the mean subtraction and scaling dlib applies are part of the ONNX graph.

use image::RgbImage;

/// Side of a chip in pixels.
pub const CHIP_SIZE: usize = crate::dlib::resnet::INPUT_SIZE;
/// Number of `f32` values one chip occupies in a batch.
pub const CHIP_VALUES: usize = 3 * CHIP_SIZE * CHIP_SIZE;

/// A chip is not the size the network takes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a face chip must be {CHIP_SIZE}×{CHIP_SIZE} pixels, this image is {width}×{height}")]
pub struct ChipSizeError {
    /// Width of the offending image.
    pub width: u32,
    /// Height of the offending image.
    pub height: u32,
}

/// Writes one chip into `out` (length [`CHIP_VALUES`]) as planar R, G, B `f32` values 0–255.
pub fn chip_to_planar(chip: &RgbImage, out: &mut [f32]) -> Result<(), ChipSizeError> {
    if chip.width() as usize != CHIP_SIZE || chip.height() as usize != CHIP_SIZE {
        return Err(ChipSizeError {
            width: chip.width(),
            height: chip.height(),
        });
    }
    assert_eq!(out.len(), CHIP_VALUES, "output slice must hold one chip");
    let plane = CHIP_SIZE * CHIP_SIZE;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in chip.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0] as f32;
        g[i] = px[1] as f32;
        b[i] = px[2] as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_are_red_green_blue_in_row_major_order() {
        let mut chip = RgbImage::new(CHIP_SIZE as u32, CHIP_SIZE as u32);
        chip.put_pixel(0, 0, image::Rgb([1, 2, 3]));
        chip.put_pixel(149, 0, image::Rgb([4, 5, 6]));
        chip.put_pixel(0, 1, image::Rgb([7, 8, 9]));
        let mut out = vec![-1.0; CHIP_VALUES];
        chip_to_planar(&chip, &mut out).unwrap();
        let plane = CHIP_SIZE * CHIP_SIZE;
        assert_eq!([out[0], out[plane], out[2 * plane]], [1.0, 2.0, 3.0]);
        assert_eq!(
            [out[149], out[plane + 149], out[2 * plane + 149]],
            [4.0, 5.0, 6.0]
        );
        assert_eq!(
            [out[150], out[plane + 150], out[2 * plane + 150]],
            [7.0, 8.0, 9.0]
        );
        assert!(out.iter().all(|v| *v >= 0.0), "every value written");
    }

    #[test]
    fn wrong_size_is_refused() {
        let chip = RgbImage::new(112, 112);
        let mut out = vec![0.0; CHIP_VALUES];
        let e = chip_to_planar(&chip, &mut out).unwrap_err();
        assert_eq!(
            e,
            ChipSizeError {
                width: 112,
                height: 112
            }
        );
        assert!(e.to_string().contains("150×150"));
    }
}

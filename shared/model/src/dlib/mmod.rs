//! dlib's CNN face detector (`mmod_human_face_detector.dat`), read and checked against the
//! topology the product expects.
//!
//! The network is a plain chain, stored outermost first:
//! `loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid>>>>>>` with
//! `rcon5 = relu<bn<con<45,5,5,1,1>>>` and `downsampler` three `relu<bn<con<N,5,5,2,2>>>`
//! (N = 16, 32, 32). The file keeps the batch-norm layers as trained (`bn_con2`); at inference
//! each is a per-channel scale and shift, folded here into an [`Affine`]. The loss layer's
//! options hold the sliding window's size and the non-maximum suppression thresholds.

use super::resnet::{Affine, Conv, MULTIPLIERS};
use super::ser::{Reader, SerError};

/// Why a file is not the CNN face detector the product expects.
#[derive(Debug, thiserror::Error)]
pub enum MmodError {
    /// The file is empty.
    #[error("the file is empty (0 bytes); expected mmod_human_face_detector.dat")]
    Empty,
    /// A record does not match the expected network.
    #[error("not dlib's CNN face detector (mmod_human_face_detector.dat)")]
    Format(#[from] SerError),
}

/// One convolution with what follows it: a per-channel affine (from batch norm) and a ReLU.
#[derive(Debug, Clone)]
pub struct DetectorLayer {
    /// The convolution.
    pub conv: Conv,
    /// The per-channel scale and shift after it (none on the last layer).
    pub affine: Option<Affine>,
    /// Whether a ReLU follows.
    pub relu: bool,
}

/// The detector network and its sliding-window options.
#[derive(Debug, Clone)]
pub struct MmodDetector {
    /// Per-channel means dlib subtracts from the R, G, B planes before dividing by 256.
    pub input_mean: [f32; 3],
    /// The layers in forward order (the last one outputs one score map).
    pub layers: Vec<DetectorLayer>,
    /// Width of the detection window, in pixels of a pyramid level.
    pub window_width: usize,
    /// Height of the detection window.
    pub window_height: usize,
    /// Non-maximum suppression: a detection whose overlap with a kept one exceeds this
    /// (intersection over the pair's bounding rectangle) is dropped.
    pub nms_iou: f64,
    /// Non-maximum suppression: a detection covered by more than this fraction is dropped.
    pub nms_covered: f64,
}

/// The layers in forward order: (filters, kernel, stride, followed by batch norm and ReLU).
pub const LAYERS: [(usize, usize, usize, bool); 7] = [
    (16, 5, 2, true),
    (32, 5, 2, true),
    (32, 5, 2, true),
    (45, 5, 1, true),
    (45, 5, 1, true),
    (45, 5, 1, true),
    (1, 9, 1, false),
];

/// Reads and checks the whole file.
pub fn parse(bytes: &[u8]) -> Result<MmodDetector, MmodError> {
    if bytes.is_empty() {
        return Err(MmodError::Empty);
    }
    let mut r = Reader::new(bytes);
    r.expect_int(1, "loss layer version")?;
    r.expect_string("loss_mmod_", "loss layer name")?;
    let at = r.position();
    let options_version = r.int("mmod options version")?;
    if options_version != 1 {
        return Err(r
            .error_at(at, "mmod options version 1", options_version)
            .into());
    }
    let window_width = r.uint("detector window width")?;
    let window_height = r.uint("detector window height")?;
    r.double("loss per false alarm")?;
    r.double("loss per missed target")?;
    r.double("truth match IoU threshold")?;
    let nms_iou = r.double("NMS IoU threshold")?;
    let nms_covered = r.double("NMS covered threshold")?;
    r.double("ignore IoU threshold")?;
    r.double("ignore covered threshold")?;

    // Every layer's version, outermost first: conv, then (relu, bn, conv) per lower layer.
    let records = 1 + 3 * (LAYERS.len() - 1);
    for i in 0..records - 1 {
        r.expect_int(2, &format!("layer {} version", records - i))?;
    }
    r.expect_int(3, "first con layer version (the layer on the input)")?;
    r.expect_string("input_rgb_image_pyramid", "input layer name")?;
    let mut input_mean = [0f32; 3];
    for (i, name) in ["avg_red", "avg_green", "avg_blue"].iter().enumerate() {
        input_mean[i] = r.float(&format!("input layer {name}"))?;
    }

    let mut layers = Vec::with_capacity(LAYERS.len());
    let mut channels = 3;
    for (i, &(filters, kernel, stride, bn_relu)) in LAYERS.iter().enumerate() {
        let what = format!("layer {} con", i + 1);
        let conv = read_con(&mut r, &what, channels, filters, kernel, stride)?;
        if i == 0 {
            for name in ["setup flag", "gradient-stale flag", "output-disabled flag"] {
                r.bool(&format!("{what} {name}"))?;
            }
            for name in ["x_grad", "cached output", "grad_final"] {
                r.tensor(&format!("{what} {name}"))?;
            }
            r.expect_int(1, &format!("{what} sample expansion factor"))?;
        } else {
            layer_tail(&mut r, &what)?;
        }
        channels = filters;
        let affine = if bn_relu {
            let what = format!("layer {} bn", i + 1);
            let a = read_bn(&mut r, &what, filters)?;
            layer_tail(&mut r, &what)?;
            let what = format!("layer {} relu", i + 1);
            r.expect_string("relu_", &format!("{what} name"))?;
            layer_tail(&mut r, &what)?;
            Some(a)
        } else {
            None
        };
        layers.push(DetectorLayer {
            conv,
            affine,
            relu: bn_relu,
        });
    }
    r.finish("the detector file")?;
    Ok(MmodDetector {
        input_mean,
        layers,
        window_width,
        window_height,
        nms_iou,
        nms_covered,
    })
}

impl MmodDetector {
    /// Maps a position of the score map to the centre of its window in the input image (the
    /// pyramid level), going back through each convolution: `x·stride − pad + kernel/2`.
    pub fn output_to_input(&self, x: f64, y: f64) -> (f64, f64) {
        self.layers.iter().rev().fold((x, y), |(x, y), l| {
            let c = &l.conv;
            let off = (c.kernel / 2) as f64 - c.pad as f64;
            (x * c.stride as f64 + off, y * c.stride as f64 + off)
        })
    }
}

/// The 3 flags and 3 tensors every ordinary layer record ends with.
fn layer_tail(r: &mut Reader, what: &str) -> Result<(), SerError> {
    for name in ["setup flag", "gradient-stale flag", "output-disabled flag"] {
        r.bool(&format!("{what} {name}"))?;
    }
    for name in ["x_grad", "cached output", "params_grad"] {
        r.tensor(&format!("{what} {name}"))?;
    }
    Ok(())
}

/// Reads a `con_4`/`con_5` record with dlib's default padding (half the kernel at stride 1,
/// none otherwise).
fn read_con(
    r: &mut Reader,
    what: &str,
    channels: usize,
    filters: usize,
    kernel: usize,
    stride: usize,
) -> Result<Conv, SerError> {
    let at = r.position();
    let version = r.string(&format!("{what} layer name"))?;
    if !matches!(version.as_str(), "con_4" | "con_5") {
        return Err(r.error_at(at, format!("{what} layer name \"con_4\""), version));
    }
    let at = r.position();
    let params = r.tensor(&format!("{what} weights"))?;
    let n_weights = filters * channels * kernel * kernel;
    if params.data.len() != n_weights + filters {
        return Err(r.error_at(
            at,
            format!("{what} weights of {} values", n_weights + filters),
            format!("{} values", params.data.len()),
        ));
    }
    let pad = if stride == 1 { kernel / 2 } else { 0 };
    for (name, want) in [
        ("filter count", filters),
        ("kernel rows", kernel),
        ("kernel columns", kernel),
        ("stride y", stride),
        ("stride x", stride),
        ("padding y", pad),
        ("padding x", pad),
    ] {
        r.expect_int(want as i64, &format!("{what} {name}"))?;
    }
    r.alias_tensor(&format!("{what} filters alias"))?;
    r.alias_tensor(&format!("{what} biases alias"))?;
    for name in MULTIPLIERS {
        r.double(&format!("{what} {name}"))?;
    }
    let mut has_bias = true;
    if version == "con_5" {
        has_bias = r.bool(&format!("{what} use_bias"))?;
    }
    let mut weights = params.data;
    let mut bias = weights.split_off(n_weights);
    if !has_bias {
        bias.iter_mut().for_each(|b| *b = 0.0);
    }
    Ok(Conv {
        filters,
        channels,
        kernel,
        stride,
        pad,
        weights,
        bias,
    })
}

/// Reads a `bn_con2` record and turns its running statistics into the per-channel scale and
/// shift it applies at inference: `g = γ/√(var + eps)`, `b = β − g·mean`.
fn read_bn(r: &mut Reader, what: &str, channels: usize) -> Result<Affine, SerError> {
    r.expect_string("bn_con2", &format!("{what} layer name"))?;
    let at = r.position();
    let params = r.tensor(&format!("{what} gamma and beta"))?;
    if params.data.len() != 2 * channels {
        return Err(r.error_at(
            at,
            format!("{what} gamma and beta of {} values", 2 * channels),
            format!("{} values", params.data.len()),
        ));
    }
    r.alias_tensor(&format!("{what} gamma alias"))?;
    r.alias_tensor(&format!("{what} beta alias"))?;
    r.tensor(&format!("{what} batch means"))?;
    r.tensor(&format!("{what} batch inverse deviations"))?;
    let at = r.position();
    let means = r.tensor(&format!("{what} running means"))?;
    let vars = r.tensor(&format!("{what} running variances"))?;
    if means.data.len() != channels || vars.data.len() != channels {
        return Err(r.error_at(
            at,
            format!("{what} running statistics of {channels} channels"),
            format!("{} and {} values", means.data.len(), vars.data.len()),
        ));
    }
    r.int(&format!("{what} update count"))?;
    r.int(&format!("{what} running stats window"))?;
    for name in MULTIPLIERS {
        r.double(&format!("{what} {name}"))?;
    }
    let eps = r.double(&format!("{what} eps"))?;
    let (gamma, beta) = params.data.split_at(channels);
    let g: Vec<f32> = (0..channels)
        .map(|c| (gamma[c] as f64 / (vars.data[c] as f64 + eps).sqrt()) as f32)
        .collect();
    let b = (0..channels)
        .map(|c| (beta[c] as f64 - g[c] as f64 * means.data[c] as f64) as f32)
        .collect();
    Ok(Affine { gamma: g, beta: b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_refused() {
        assert!(matches!(parse(&[]), Err(MmodError::Empty)));
    }

    #[test]
    fn another_network_is_refused_with_its_offset() {
        // The face-recognition network's loss layer name is where it parts ways.
        let mut bytes = vec![0x01, 0x01, 0x01, 0x0d];
        bytes.extend_from_slice(b"loss_metric_2");
        let err = parse(&bytes).unwrap_err();
        let MmodError::Format(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.offset, 2, "{e}");
    }

    #[test]
    fn windows_map_back_through_the_strides() {
        let conv = |k: usize, s: usize| DetectorLayer {
            conv: Conv {
                filters: 1,
                channels: 1,
                kernel: k,
                stride: s,
                pad: if s == 1 { k / 2 } else { 0 },
                weights: Vec::new(),
                bias: Vec::new(),
            },
            affine: None,
            relu: false,
        };
        let net = MmodDetector {
            input_mean: [0.0; 3],
            layers: vec![conv(5, 2), conv(5, 2), conv(5, 2), conv(5, 1), conv(9, 1)],
            window_width: 80,
            window_height: 80,
            nms_iou: 0.4,
            nms_covered: 1.0,
        };
        // Three unpadded stride-2 5×5 layers: output 0 is centred on input 2 + 2·2 + 4·2 = 14.
        assert_eq!(net.output_to_input(0.0, 0.0), (14.0, 14.0));
        assert_eq!(net.output_to_input(1.0, 2.0), (22.0, 30.0));
    }
}

//! dlib's CNN face detector as an ONNX graph.
//!
//! Input `image`: `[1, 3, H, W]` float32, raw RGB values 0–255 (planar), any size the
//! network fits. The graph applies dlib's input normalisation, `(pixel − mean[c]) / 256`, then
//! the seven convolutions (batch norm folded in), and outputs `scores`: `[1, 1, H', W']`, one
//! score per window position; dlib reports a face where the score is above 0.

use super::{Attr, Dim, GraphBuilder};
use crate::dlib::mmod::MmodDetector;
use crate::onnx::face_net::{fold_affine, INPUT_SCALE_DIVISOR};
use onnx_protobuf::ModelProto;

/// Name of the graph input.
pub const IMAGE_INPUT: &str = "image";
/// Name of the score map output.
pub const SCORES_OUTPUT: &str = "scores";

/// Builds the ONNX model for the detector.
pub fn build(net: &MmodDetector) -> ModelProto {
    let mut g = GraphBuilder::new("dlib_mmod_face_detector");
    let (h, w) = (Dim::Named("height"), Dim::Named("width"));
    let x = g.input(IMAGE_INPUT, &[Dim::Fixed(1), Dim::Fixed(3), h, w]);
    let mean = g.constant_f32("input_mean", &[1, 3, 1, 1], &net.input_mean);
    let centred = g.node("Sub", &[&x, &mean], &[], None);
    let scale = g.constant_f32("input_scale", &[], &[1.0 / INPUT_SCALE_DIVISOR]);
    let mut cur = g.node("Mul", &[&centred, &scale], &[], None);
    let last = net.layers.len() - 1;
    for (i, layer) in net.layers.iter().enumerate() {
        let c = &layer.conv;
        let (wts, bias) = match &layer.affine {
            Some(a) => fold_affine(c, a),
            None => (c.weights.clone(), c.bias.clone()),
        };
        let k = c.kernel as i64;
        let wn = g.constant_f32("conv_w", &[c.filters as i64, c.channels as i64, k, k], &wts);
        let bn = g.constant_f32("conv_b", &[c.filters as i64], &bias);
        let p = c.pad as i64;
        let out = if i == last && !layer.relu {
            Some(SCORES_OUTPUT)
        } else {
            None
        };
        cur = g.node(
            "Conv",
            &[&cur, &wn, &bn],
            &[
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![c.stride as i64; 2])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
            out,
        );
        if layer.relu {
            cur = g.node("Relu", &[&cur], &[], None);
        }
    }
    g.output(
        SCORES_OUTPUT,
        &[
            Dim::Fixed(1),
            Dim::Fixed(1),
            Dim::Named("out_height"),
            Dim::Named("out_width"),
        ],
    );
    g.finish(
        "dlib mmod_human_face_detector, imported by twin-matcher",
        &[],
    )
}

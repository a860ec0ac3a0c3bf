//! dlib's face-recognition ResNet as an ONNX graph.
//!
//! Input `chips`: `[N, 3, 150, 150]` float32, raw RGB values 0–255 (planar). The graph applies
//! dlib's input normalisation, `(pixel − mean[c]) / 256`, then the network, and outputs
//! `embedding`: `[N, 128]`, the raw descriptor as dlib gives it (not normalised). Each affine
//! layer is folded into the convolution before it. Where dlib adds tensors of different shapes
//! (the downsampling blocks), the smaller one is zero-padded at the end of each dimension first.

use super::{Attr, Dim, GraphBuilder};
use crate::dlib::resnet::{Affine, Conv, FaceResnet, EMBEDDING_DIM, INPUT_SIZE};
use onnx_protobuf::ModelProto;

/// Name of the graph input.
pub const INPUT_NAME: &str = "chips";
/// Name of the embedding output.
pub const EMBEDDING_OUTPUT: &str = "embedding";
/// dlib divides mean-subtracted pixels by this (not 255).
pub const INPUT_SCALE_DIVISOR: f32 = 256.0;

/// Feature-map shape tracked while the graph is built.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
}

/// Folds an affine layer into the convolution before it: `w'[o] = w[o]·γ[o]`, `b'[o] = b[o]·γ[o] + β[o]`.
pub fn fold_affine(conv: &Conv, affine: &Affine) -> (Vec<f32>, Vec<f32>) {
    let per_filter = conv.channels * conv.kernel * conv.kernel;
    let mut w = conv.weights.clone();
    for (o, chunk) in w.chunks_exact_mut(per_filter).enumerate() {
        chunk.iter_mut().for_each(|v| *v *= affine.gamma[o]);
    }
    let b = (0..conv.filters)
        .map(|o| conv.bias[o] * affine.gamma[o] + affine.beta[o])
        .collect();
    (w, b)
}

/// Builds the ONNX model for the network; `metadata` is recorded in the model's properties.
pub fn build(net: &FaceResnet, metadata: &[(&str, String)]) -> ModelProto {
    let mut g = GraphBuilder::new("dlib_face_resnet");
    let batch = Dim::Named("batch");
    let size = INPUT_SIZE as i64;
    let x = g.input(
        INPUT_NAME,
        &[batch, Dim::Fixed(3), Dim::Fixed(size), Dim::Fixed(size)],
    );
    let mean = g.constant_f32("input_mean", &[1, 3, 1, 1], &net.input_mean);
    let centred = g.node("Sub", &[&x, &mean], &[], None);
    let scale = g.constant_f32("input_scale", &[], &[1.0 / INPUT_SCALE_DIVISOR]);
    let mut cur = g.node("Mul", &[&centred, &scale], &[], None);
    let mut shape = Shape {
        c: 3,
        h: INPUT_SIZE,
        w: INPUT_SIZE,
    };

    cur = conv(&mut g, &cur, &mut shape, &net.stem, &net.stem_affine);
    cur = g.node("Relu", &[&cur], &[], None);
    let (k, s) = net.stem_pool;
    cur = g.node(
        "MaxPool",
        &[&cur],
        &[
            ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
            ("strides", Attr::Ints(vec![s as i64; 2])),
        ],
        None,
    );
    shape = Shape {
        c: shape.c,
        h: pooled(shape.h, k, s),
        w: pooled(shape.w, k, s),
    };

    for block in &net.blocks {
        let input = cur.clone();
        let in_shape = shape;
        let mut y = conv(&mut g, &input, &mut shape, &block.conv1, &block.affine1);
        y = g.node("Relu", &[&y], &[], None);
        y = conv(&mut g, &y, &mut shape, &block.conv2, &block.affine2);
        let y_shape = shape;
        let (shortcut, sc_shape) = if block.down {
            let p = g.node(
                "AveragePool",
                &[&input],
                &[
                    ("kernel_shape", Attr::Ints(vec![2, 2])),
                    ("strides", Attr::Ints(vec![2, 2])),
                ],
                None,
            );
            (
                p,
                Shape {
                    c: in_shape.c,
                    h: pooled(in_shape.h, 2, 2),
                    w: pooled(in_shape.w, 2, 2),
                },
            )
        } else {
            (input, in_shape)
        };
        let out = Shape {
            c: y_shape.c.max(sc_shape.c),
            h: y_shape.h.max(sc_shape.h),
            w: y_shape.w.max(sc_shape.w),
        };
        let a = pad_to(&mut g, &y, y_shape, out);
        let b = pad_to(&mut g, &shortcut, sc_shape, out);
        let sum = g.node("Add", &[&a, &b], &[], None);
        cur = g.node("Relu", &[&sum], &[], None);
        shape = out;
    }

    let pooled_all = g.node("GlobalAveragePool", &[&cur], &[], None);
    let flat = g.node("Flatten", &[&pooled_all], &[("axis", Attr::Int(1))], None);
    let w = g.constant_f32(
        "fc_weights",
        &[net.fc_inputs as i64, net.fc_outputs as i64],
        &net.fc,
    );
    g.node("MatMul", &[&flat, &w], &[], Some(EMBEDDING_OUTPUT));
    g.output(EMBEDDING_OUTPUT, &[batch, Dim::Fixed(EMBEDDING_DIM as i64)]);
    g.finish(
        "dlib face-recognition ResNet v1, imported by twin model import-dlib",
        metadata,
    )
}

fn pooled(n: usize, k: usize, s: usize) -> usize {
    1 + (n - k) / s
}

fn conv(g: &mut GraphBuilder, x: &str, shape: &mut Shape, c: &Conv, a: &Affine) -> String {
    let (w, b) = fold_affine(c, a);
    let k = c.kernel as i64;
    let wn = g.constant_f32("conv_w", &[c.filters as i64, c.channels as i64, k, k], &w);
    let bn = g.constant_f32("conv_b", &[c.filters as i64], &b);
    let p = c.pad as i64;
    let out = g.node(
        "Conv",
        &[x, &wn, &bn],
        &[
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![c.stride as i64; 2])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
        ],
        None,
    );
    *shape = Shape {
        c: c.filters,
        h: pooled(shape.h + 2 * c.pad, c.kernel, c.stride),
        w: pooled(shape.w + 2 * c.pad, c.kernel, c.stride),
    };
    out
}

/// Zero-pads `x` at the end of the channel, row and column dimensions up to `to` (dlib's add).
fn pad_to(g: &mut GraphBuilder, x: &str, from: Shape, to: Shape) -> String {
    if from == to {
        return x.to_string();
    }
    let pads = [
        0,
        0,
        0,
        0,
        0,
        (to.c - from.c) as i64,
        (to.h - from.h) as i64,
        (to.w - from.w) as i64,
    ];
    let pads = g.constant_i64("pads", &[8], &pads);
    g.node("Pad", &[x, &pads], &[], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_scales_weights_and_shifts_bias() {
        let c = Conv {
            filters: 2,
            channels: 1,
            kernel: 1,
            stride: 1,
            pad: 0,
            weights: vec![1.0, 2.0],
            bias: vec![0.5, -1.0],
        };
        let a = Affine {
            gamma: vec![2.0, 3.0],
            beta: vec![1.0, 0.0],
        };
        let (w, b) = fold_affine(&c, &a);
        assert_eq!(w, vec![2.0, 6.0]);
        assert_eq!(b, vec![2.0, -3.0]);
    }
}

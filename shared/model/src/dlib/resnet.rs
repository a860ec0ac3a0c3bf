//! dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`), read and
//! checked against the topology the product expects.
//!
//! The file stores the network outermost layer first: the loss, the fc layer, the global
//! pool, then each residual block down to the first convolution on the input; each layer's
//! own fields follow its subnetwork. Tag and skip layers store no ids, so the reader walks the
//! known topology and checks every record against it, consuming the file to its last byte.

use super::ser::{Reader, SerError};

/// Side of the square RGB chip the network takes.
pub const INPUT_SIZE: usize = 150;
/// Length of the descriptor the network produces.
pub const EMBEDDING_DIM: usize = 128;

/// Why a file is not the face-recognition network the product expects.
#[derive(Debug, thiserror::Error)]
pub enum ResnetError {
    /// The file is empty.
    #[error("the file is empty (0 bytes); expected dlib_face_recognition_resnet_model_v1.dat")]
    Empty,
    /// The file is one of dlib's shape predictors (e.g. the 5-point landmark model).
    #[error("this is a dlib shape predictor (a landmark model such as shape_predictor_5_face_landmarks.dat), not the face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat)")]
    ShapePredictor,
    /// A record does not match the expected network.
    #[error("not dlib's face-recognition ResNet")]
    Format(#[from] SerError),
}

/// A convolution with its affine (scale/shift) layer folded in or kept apart.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Output channels.
    pub filters: usize,
    /// Input channels.
    pub channels: usize,
    /// Kernel side (square kernels only).
    pub kernel: usize,
    /// Stride (same in both directions).
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Weights in OIHW order.
    pub weights: Vec<f32>,
    /// One bias per filter.
    pub bias: Vec<f32>,
}

/// dlib's `affine_` layer in per-channel mode: `y = x·gamma[c] + beta[c]`.
#[derive(Debug, Clone)]
pub struct Affine {
    /// Per-channel scale.
    pub gamma: Vec<f32>,
    /// Per-channel shift.
    pub beta: Vec<f32>,
}

/// One residual block: two 3×3 convolutions each followed by an affine layer, a ReLU between them.
#[derive(Debug, Clone)]
pub struct ResBlock {
    /// Downsampling block (stride-2 first convolution, 2×2 average-pooled, zero-padded shortcut).
    pub down: bool,
    /// First convolution (stride 2 when `down`).
    pub conv1: Conv,
    /// Affine after the first convolution.
    pub affine1: Affine,
    /// Second convolution.
    pub conv2: Conv,
    /// Affine after the second convolution.
    pub affine2: Affine,
}

/// The whole network, in forward order.
#[derive(Debug, Clone)]
pub struct FaceResnet {
    /// Per-channel means dlib subtracts from the R, G, B planes before dividing by 256.
    pub input_mean: [f32; 3],
    /// 7×7 stride-2 stem convolution.
    pub stem: Conv,
    /// Affine after the stem.
    pub stem_affine: Affine,
    /// Max pool after the stem: (kernel, stride).
    pub stem_pool: (usize, usize),
    /// The residual blocks, first to last.
    pub blocks: Vec<ResBlock>,
    /// Final projection, `[inputs][outputs]` row-major (out = x·W), no bias.
    pub fc: Vec<f32>,
    /// fc input width.
    pub fc_inputs: usize,
    /// fc output width (the embedding length).
    pub fc_outputs: usize,
    /// Margin of dlib's metric loss (kept for the record).
    pub loss_margin: f32,
    /// dlib's same-person distance threshold (0.6 in the published model).
    pub distance_threshold: f32,
}

impl FaceResnet {
    /// Number of learned weights (convolutions, affines and fc), for reports.
    pub fn weight_count(&self) -> usize {
        let conv = |c: &Conv| c.weights.len() + c.bias.len();
        let aff = |a: &Affine| a.gamma.len() + a.beta.len();
        conv(&self.stem)
            + aff(&self.stem_affine)
            + self
                .blocks
                .iter()
                .map(|b| conv(&b.conv1) + conv(&b.conv2) + aff(&b.affine1) + aff(&b.affine2))
                .sum::<usize>()
            + self.fc.len()
    }
}

/// The residual blocks in forward order: (filters, downsampling).
pub const BLOCKS: [(usize, bool); 14] = [
    (32, false),
    (32, false),
    (32, false),
    (64, true),
    (64, false),
    (64, false),
    (64, false),
    (128, true),
    (128, false),
    (128, false),
    (256, true),
    (256, false),
    (256, false),
    (256, true),
];
const STEM_FILTERS: usize = 32;
const STEM_KERNEL: usize = 7;
const STEM_STRIDE: usize = 2;
const POOL_KERNEL: usize = 3;
const POOL_STRIDE: usize = 2;
const DOWN_POOL: usize = 2;

/// Reads and checks the whole file.
pub fn parse(bytes: &[u8]) -> Result<FaceResnet, ResnetError> {
    if bytes.is_empty() {
        return Err(ResnetError::Empty);
    }
    // A shape predictor starts with version 1 and then a matrix, whose row count is stored
    // negated: 01 01 81 ..; a network starts with version 1 and the loss layer's name.
    if bytes.len() > 3 && bytes[..3] == [0x01, 0x01, 0x81] {
        return Err(ResnetError::ShapePredictor);
    }
    let mut r = Reader::new(bytes);
    let mut st = State::default();
    r.expect_int(1, "loss layer version")?;
    let at = r.position();
    let name = r.string("loss layer name")?;
    if name != "loss_metric_2" && name != "loss_metric_" {
        return Err(r
            .error_at(at, "loss layer name \"loss_metric_2\"", shown(&name))
            .into());
    }
    let loss_margin = r.float("loss margin")?;
    let distance_threshold = r.float("loss distance threshold")?;
    // fc<128, avg_pool_everything<blocks...>>
    layer(
        &mut r,
        &mut st,
        "fc",
        |r, st| {
            layer(
                r,
                st,
                "global average pool",
                |r, st| read_blocks(r, st, BLOCKS.len()),
                |r, st| {
                    read_pool(r, "avg_pool", 0, 0)?;
                    st.shape = Shape {
                        c: st.shape.c,
                        h: 1,
                        w: 1,
                    };
                    Ok(())
                },
            )
        },
        read_fc,
    )?;
    r.finish("the network file")?;
    Ok(assemble(st, loss_margin, distance_threshold))
}

/// A layer of the network in forward order, as read.
#[derive(Debug)]
enum Op {
    Conv(Conv),
    Affine(Affine),
    Relu,
    Pool,
    Add,
    Fc(Vec<f32>, usize, usize),
}

/// What the reader knows while it walks the file: the shape flowing forward and the layers so far.
#[derive(Default)]
struct State {
    input_mean: [f32; 3],
    shape: Shape,
    /// Shapes at open `tag1` layers (block inputs), innermost last.
    tags: Vec<Shape>,
    /// Block output shapes at open `tag2` layers, innermost last.
    tag2: Vec<Shape>,
    ops: Vec<Op>,
}

/// A feature map shape, channels × height × width.
#[derive(Clone, Copy, Debug, Default)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
}

type Step<'a> = Box<dyn FnOnce(&mut Reader, &mut State) -> Result<(), SerError> + 'a>;

/// Reads an ordinary layer: version 2, subnetwork, the layer's fields, 3 bools, 3 tensors.
fn layer(
    r: &mut Reader,
    st: &mut State,
    what: &str,
    sub: impl FnOnce(&mut Reader, &mut State) -> Result<(), SerError>,
    details: impl FnOnce(&mut Reader, &mut State) -> Result<(), SerError>,
) -> Result<(), SerError> {
    r.expect_int(2, &format!("{what} layer version"))?;
    sub(r, st)?;
    details(r, st)?;
    for name in ["setup flag", "gradient-stale flag", "output-disabled flag"] {
        r.bool(&format!("{what} layer {name}"))?;
    }
    for name in ["x_grad", "cached output", "params_grad"] {
        r.tensor(&format!("{what} layer {name}"))?;
    }
    Ok(())
}

/// Reads a chain of ordinary layers, outermost first: each `(name, details)` wraps the next,
/// and `bottom` is the subnetwork under the last one.
fn chain<'a>(
    r: &mut Reader,
    st: &mut State,
    mut layers: Vec<(String, Step<'a>)>,
    bottom: Step<'a>,
) -> Result<(), SerError> {
    if layers.is_empty() {
        return bottom(r, st);
    }
    let (what, details) = layers.remove(0);
    layer(
        r,
        st,
        &what,
        move |r, st| chain(r, st, layers, bottom),
        details,
    )
}

/// Reads a tag or skip layer's header (version 1).
fn wrapper(r: &mut Reader, what: &str) -> Result<(), SerError> {
    r.expect_int(1, &format!("{what} layer version"))
}

/// Reads the `count` innermost residual blocks with the stem below them.
fn read_blocks(r: &mut Reader, st: &mut State, count: usize) -> Result<(), SerError> {
    if count == 0 {
        return read_stem(r, st);
    }
    let (filters, down) = BLOCKS[count - 1];
    let name = format!(
        "block {} ({}{})",
        count,
        if down { "ares_down" } else { "ares" },
        filters
    );
    let stride = if down { 2 } else { 1 };
    let first_pad = if down { 0 } else { 1 };
    let n = name.clone();
    // block<N,s,tag1<SUB>> = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, tag1<SUB>>>>>>
    let body: Step = Box::new(move |r: &mut Reader, st: &mut State| {
        let w = |s: &str| format!("{n}: {s}");
        let (w1, w2, w3, w4, w5) = (
            w("affine 2"),
            w("con 2"),
            w("relu"),
            w("affine 1"),
            w("con 1"),
        );
        let (d1, d2, d4, d5) = (w1.clone(), w2.clone(), w4.clone(), w5.clone());
        let tag = w("tag1");
        chain(
            r,
            st,
            vec![
                (
                    w1,
                    Box::new(move |r: &mut Reader, st: &mut State| read_affine(r, st, &d1)),
                ),
                (
                    w2,
                    Box::new(move |r: &mut Reader, st: &mut State| {
                        read_con(r, st, &d2, filters, 3, 1, 1)
                    }),
                ),
                (
                    w3.clone(),
                    Box::new(move |r: &mut Reader, st: &mut State| read_relu(r, st, &w3)),
                ),
                (
                    w4,
                    Box::new(move |r: &mut Reader, st: &mut State| read_affine(r, st, &d4)),
                ),
                (
                    w5,
                    Box::new(move |r: &mut Reader, st: &mut State| {
                        read_con(r, st, &d5, filters, 3, stride, first_pad)
                    }),
                ),
            ],
            Box::new(move |r: &mut Reader, st: &mut State| {
                wrapper(r, &tag)?;
                read_blocks(r, st, count - 1)?;
                st.tags.push(st.shape);
                Ok(())
            }),
        )
    });
    let w = |s: &str| format!("{name}: {s}");
    let relu_name = w("relu");
    let add_name = w("add_prev");
    let add_details: Step = {
        let add_name = add_name.clone();
        Box::new(move |r: &mut Reader, st: &mut State| {
            r.expect_string("add_prev_", &format!("{add_name} layer name"))?;
            // dlib adds tensors of different sizes by zero-padding both to the larger size.
            let other = if down { st.tag2.pop() } else { st.tags.pop() };
            let other = other.expect("tag pushed while reading the block");
            st.shape = Shape {
                c: st.shape.c.max(other.c),
                h: st.shape.h.max(other.h),
                w: st.shape.w.max(other.w),
            };
            st.ops.push(Op::Add);
            Ok(())
        })
    };
    let relu_details: Step = {
        let relu_name = relu_name.clone();
        Box::new(move |r: &mut Reader, st: &mut State| read_relu(r, st, &relu_name))
    };
    if down {
        // relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2,tag1<SUB>>>>>>>
        let pool_name = w("shortcut avg_pool");
        let (skip_name, tag2_name) = (w("skip1"), w("tag2"));
        let pool_details: Step = Box::new(move |r: &mut Reader, st: &mut State| {
            read_pool(r, "avg_pool", DOWN_POOL, DOWN_POOL)?;
            let input = st.tags.pop().expect("tag1 pushed while reading the block");
            st.shape = Shape {
                c: input.c,
                h: pool_out(input.h, DOWN_POOL, DOWN_POOL),
                w: pool_out(input.w, DOWN_POOL, DOWN_POOL),
            };
            st.ops.push(Op::Pool);
            Ok(())
        });
        chain(
            r,
            st,
            vec![
                (relu_name, relu_details),
                (add_name, add_details),
                (pool_name, pool_details),
            ],
            Box::new(move |r: &mut Reader, st: &mut State| {
                wrapper(r, &skip_name)?;
                wrapper(r, &tag2_name)?;
                body(r, st)?;
                st.tag2.push(st.shape);
                Ok(())
            }),
        )
    } else {
        // relu<add_prev1<block<N,1,tag1<SUB>>>>
        chain(
            r,
            st,
            vec![(relu_name, relu_details), (add_name, add_details)],
            body,
        )
    }
}

/// Reads the stem: `max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input>>>>`.
fn read_stem(r: &mut Reader, st: &mut State) -> Result<(), SerError> {
    chain(
        r,
        st,
        vec![
            (
                "stem max_pool".into(),
                Box::new(|r: &mut Reader, st: &mut State| {
                    read_pool(r, "max_pool", POOL_KERNEL, POOL_STRIDE)?;
                    let s = st.shape;
                    st.shape = Shape {
                        c: s.c,
                        h: pool_out(s.h, POOL_KERNEL, POOL_STRIDE),
                        w: pool_out(s.w, POOL_KERNEL, POOL_STRIDE),
                    };
                    st.ops.push(Op::Pool);
                    Ok(())
                }),
            ),
            (
                "stem relu".into(),
                Box::new(|r: &mut Reader, st: &mut State| read_relu(r, st, "stem relu")),
            ),
            (
                "stem affine".into(),
                Box::new(|r: &mut Reader, st: &mut State| read_affine(r, st, "stem affine")),
            ),
        ],
        Box::new(read_stem_conv),
    )
}

/// Reads the first convolution, the one whose record holds the input layer (record version 3).
fn read_stem_conv(r: &mut Reader, st: &mut State) -> Result<(), SerError> {
    r.expect_int(3, "stem con layer version (the layer on the input)")?;
    r.expect_string("input_rgb_image_sized", "input layer name")?;
    for (i, name) in ["avg_red", "avg_green", "avg_blue"].iter().enumerate() {
        st.input_mean[i] = r.float(&format!("input layer {name}"))?;
    }
    for name in ["rows", "columns"] {
        let at = r.position();
        let n = r.int(&format!("input layer {name}"))?;
        if n != INPUT_SIZE as i64 {
            return Err(r.error_at(at, format!("input layer {name} = {INPUT_SIZE}"), n));
        }
    }
    st.shape = Shape {
        c: 3,
        h: INPUT_SIZE,
        w: INPUT_SIZE,
    };
    read_con(r, st, "stem con", STEM_FILTERS, STEM_KERNEL, STEM_STRIDE, 0)?;
    for name in ["setup flag", "gradient-stale flag", "output-disabled flag"] {
        r.bool(&format!("stem con layer {name}"))?;
    }
    for name in ["x_grad", "cached output", "grad_final"] {
        r.tensor(&format!("stem con layer {name}"))?;
    }
    r.expect_int(1, "stem con layer sample expansion factor")?;
    Ok(())
}

/// Builds the structured network from the layers read in forward order.
fn assemble(st: State, loss_margin: f32, distance_threshold: f32) -> FaceResnet {
    let mut ops = st.ops.into_iter();
    let mut next = || ops.next().expect("the reader checked the topology");
    let (Op::Conv(stem), Op::Affine(stem_affine), Op::Relu, Op::Pool) =
        (next(), next(), next(), next())
    else {
        unreachable!("stem layers are read in this order")
    };
    let mut blocks = Vec::with_capacity(BLOCKS.len());
    for &(_, down) in BLOCKS.iter() {
        let (Op::Conv(conv1), Op::Affine(affine1), Op::Relu, Op::Conv(conv2), Op::Affine(affine2)) =
            (next(), next(), next(), next(), next())
        else {
            unreachable!("block layers are read in this order")
        };
        if down {
            assert!(matches!(next(), Op::Pool));
        }
        assert!(matches!(next(), Op::Add));
        assert!(matches!(next(), Op::Relu));
        blocks.push(ResBlock {
            down,
            conv1,
            affine1,
            conv2,
            affine2,
        });
    }
    let Op::Fc(fc, fc_inputs, fc_outputs) = next() else {
        unreachable!("fc is read last")
    };
    FaceResnet {
        input_mean: st.input_mean,
        stem,
        stem_affine,
        stem_pool: (POOL_KERNEL, POOL_STRIDE),
        blocks,
        fc,
        fc_inputs,
        fc_outputs,
        loss_margin,
        distance_threshold,
    }
}

fn shown(s: &str) -> String {
    let t: String = s.chars().take(40).collect();
    format!("\"{t}\"")
}

fn pool_out(n: usize, k: usize, s: usize) -> usize {
    if n < k {
        0
    } else {
        1 + (n - k) / s
    }
}

fn conv_out(n: usize, k: usize, s: usize, p: usize) -> usize {
    pool_out(n + 2 * p, k, s)
}

/// Reads a `con_` record and checks it against the expected filters, kernel, stride and padding.
fn read_con(
    r: &mut Reader,
    st: &mut State,
    what: &str,
    filters: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<(), SerError> {
    let input = st.shape;
    let at = r.position();
    let version = r.string(&format!("{what} layer name"))?;
    if !matches!(version.as_str(), "con_4" | "con_5" | "con_6") {
        return Err(r.error_at(at, format!("{what} layer name \"con_4\""), shown(&version)));
    }
    let at = r.position();
    let params = r.tensor(&format!("{what} weights"))?;
    let n_weights = filters * input.c * kernel * kernel;
    if params.data.len() != n_weights + filters {
        return Err(r.error_at(
            at,
            format!(
                "{what} weights of {} values ({filters}×{}×{kernel}×{kernel} + {filters} biases)",
                n_weights + filters,
                input.c
            ),
            format!("{} values", params.data.len()),
        ));
    }
    let fields = [
        ("filter count", filters),
        ("kernel rows", kernel),
        ("kernel columns", kernel),
        ("stride y", stride),
        ("stride x", stride),
        ("padding y", pad),
        ("padding x", pad),
    ];
    for (name, want) in fields {
        r.expect_int(want as i64, &format!("{what} {name}"))?;
    }
    r.alias_tensor(&format!("{what} filters alias"))?;
    r.alias_tensor(&format!("{what} biases alias"))?;
    for name in MULTIPLIERS {
        r.double(&format!("{what} {name}"))?;
    }
    let mut has_bias = true;
    if version == "con_5" || version == "con_6" {
        has_bias = r.bool(&format!("{what} use_bias"))?;
    }
    if version == "con_6" {
        let at = r.position();
        if r.bool(&format!("{what} use_relu"))? {
            return Err(r.error_at(at, format!("{what} use_relu = false"), "true"));
        }
    }
    let mut weights = params.data;
    let mut bias = weights.split_off(n_weights);
    if !has_bias {
        bias.iter_mut().for_each(|b| *b = 0.0);
    }
    st.shape = Shape {
        c: filters,
        h: conv_out(input.h, kernel, stride, pad),
        w: conv_out(input.w, kernel, stride, pad),
    };
    if st.shape.h == 0 || st.shape.w == 0 {
        return Err(r.error_at(
            at,
            format!("{what} to fit its input"),
            format!("an input of {}×{}", input.h, input.w),
        ));
    }
    st.ops.push(Op::Conv(Conv {
        filters,
        channels: input.c,
        kernel,
        stride,
        pad,
        weights,
        bias,
    }));
    Ok(())
}

/// The four multipliers every layer with parameters stores (read and ignored).
pub(crate) const MULTIPLIERS: [&str; 4] = [
    "learning rate multiplier",
    "weight decay multiplier",
    "bias learning rate multiplier",
    "bias weight decay multiplier",
];

/// Reads an `affine_` record in per-channel mode for the current channels.
fn read_affine(r: &mut Reader, st: &mut State, what: &str) -> Result<(), SerError> {
    let channels = st.shape.c;
    let at = r.position();
    let version = r.string(&format!("{what} layer name"))?;
    if version != "affine_" && version != "affine_2" {
        return Err(r.error_at(
            at,
            format!("{what} layer name \"affine_\""),
            shown(&version),
        ));
    }
    let at = r.position();
    let params = r.tensor(&format!("{what} parameters"))?;
    if params.data.len() != 2 * channels {
        return Err(r.error_at(
            at,
            format!(
                "{what} parameters of {} values (gamma and beta for {channels} channels)",
                2 * channels
            ),
            format!("{} values", params.data.len()),
        ));
    }
    r.alias_tensor(&format!("{what} gamma alias"))?;
    r.alias_tensor(&format!("{what} beta alias"))?;
    let at = r.position();
    let mode = r.int(&format!("{what} mode"))?;
    if mode != 0 {
        return Err(r.error_at(at, format!("{what} mode = 0 (per channel)"), mode));
    }
    if version == "affine_2" {
        let at = r.position();
        if r.bool(&format!("{what} disabled flag"))? {
            return Err(r.error_at(at, format!("{what} enabled"), "a disabled affine layer"));
        }
    }
    let mut gamma = params.data;
    let beta = gamma.split_off(channels);
    st.ops.push(Op::Affine(Affine { gamma, beta }));
    Ok(())
}

fn read_relu(r: &mut Reader, st: &mut State, what: &str) -> Result<(), SerError> {
    let at = r.position();
    let version = r.string(&format!("{what} layer name"))?;
    match version.as_str() {
        "relu_" => {}
        "relu_2" => {
            let at = r.position();
            if r.bool(&format!("{what} disabled flag"))? {
                return Err(r.error_at(at, format!("{what} enabled"), "a disabled relu"));
            }
        }
        _ => return Err(r.error_at(at, format!("{what} layer name \"relu_\""), shown(&version))),
    }
    st.ops.push(Op::Relu);
    Ok(())
}

/// Reads a `max_pool_2` / `avg_pool_2` record; kernel 0 means the global average.
fn read_pool(r: &mut Reader, kind: &str, kernel: usize, stride: usize) -> Result<(), SerError> {
    let name = format!("{kind}_2");
    let at = r.position();
    let s = r.string(&format!("{kind} layer name"))?;
    if s != name {
        return Err(r.error_at(at, format!("{kind} layer name \"{name}\""), shown(&s)));
    }
    let stride_want = if kernel == 0 { 1 } else { stride };
    let fields = [
        ("rows", kernel),
        ("columns", kernel),
        ("stride y", stride_want),
        ("stride x", stride_want),
        ("padding y", 0),
        ("padding x", 0),
    ];
    for (field, want) in fields {
        r.expect_int(want as i64, &format!("{kind} {field}"))?;
    }
    Ok(())
}

/// Reads the `fc_2` record: `[inputs][outputs]` weights and no bias.
fn read_fc(r: &mut Reader, st: &mut State) -> Result<(), SerError> {
    let inputs = st.shape.c;
    r.expect_string("fc_2", "fc layer name")?;
    let at = r.position();
    let outputs = r.int("fc output count")?;
    if outputs != EMBEDDING_DIM as i64 {
        return Err(r.error_at(at, format!("fc output count = {EMBEDDING_DIM}"), outputs));
    }
    let at = r.position();
    let n_in = r.int("fc input count")?;
    if n_in != inputs as i64 {
        return Err(r.error_at(at, format!("fc input count = {inputs}"), n_in));
    }
    let outputs = EMBEDDING_DIM;
    let at = r.position();
    let params = r.tensor("fc weights")?;
    if params.data.len() != inputs * outputs {
        return Err(r.error_at(
            at,
            format!(
                "fc weights of {} values ({inputs}×{outputs}, no bias)",
                inputs * outputs
            ),
            format!("{} values", params.data.len()),
        ));
    }
    r.alias_tensor("fc weights alias")?;
    r.alias_tensor("fc biases alias")?;
    let at = r.position();
    let bias_mode = r.int("fc bias mode")?;
    if bias_mode != 1 {
        return Err(r.error_at(at, "fc bias mode = 1 (no bias)", bias_mode));
    }
    for name in MULTIPLIERS {
        r.double(&format!("fc {name}"))?;
    }
    st.shape = Shape {
        c: outputs,
        h: 1,
        w: 1,
    };
    st.ops.push(Op::Fc(params.data, inputs, outputs));
    Ok(())
}

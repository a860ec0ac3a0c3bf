//! A trained model as one ONNX graph: the backbone, then an identity head on its embedding.
//!
//! [`compose`] takes the imported backbone (`chips` → `embedding`) and appends the head:
//! the embedding is L2-normalised inside the graph and multiplied by the head's unit-length
//! weight rows, giving `scores` (`[N, C]`, the cosine between the face and each identity's
//! learned prototype). The graph keeps the backbone's `embedding` output unchanged, so
//! identities enrolled after training are still matched by embedding. [`read_head`] reads the
//! head back out of a composed model (the training gate compares a new head with the serving
//! one on the same held-out crops).

use onnx_protobuf::{tensor_proto::DataType, ModelProto};
use protobuf::{Enum, Message};

use super::face_net::EMBEDDING_OUTPUT;
use super::{encode, Attr, Dim, GraphBuilder};
use crate::embed::SCORES_OUTPUT;

/// Name of the head's weight initializer (`[D, C]`, the transposed unit rows).
pub const HEAD_WEIGHT: &str = "head_weight_t";
/// Smallest norm the in-graph normalisation divides by.
pub const NORM_EPSILON: f32 = 1e-12;
/// Metadata of a composed model: [`backbone_tag`] of the backbone it was composed on, so that a
/// process serving the same backbone applies the head to that backbone's output itself instead
/// of loading the composed model as a second network.
pub const BACKBONE_TAG: &str = "backbone_tag";

/// A tag of a backbone's bytes (FNV-1a over 8-byte words, then the tail: a 22 MB network in a
/// few milliseconds). Not a defence against a forged file: it tells two backbones apart.
pub fn backbone_tag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        h ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    for b in tail {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

/// The head of a composed model, read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOf {
    /// Unit weight rows, row-major `classes × dim`.
    pub rows: Vec<f32>,
    /// Identities (score columns).
    pub classes: usize,
    /// Embedding size.
    pub dim: usize,
    /// [`BACKBONE_TAG`]: the backbone it was composed on (`None` for a model composed before
    /// the tag was written).
    pub backbone_tag: Option<String>,
}

/// Why a model could not be composed or read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// The model is not what was expected.
    #[error("{0}")]
    Shape(String),
}

/// Appends a head with `classes` rows of `dim` weights (row-major, one unit row per identity)
/// to `backbone` (an ONNX model's bytes) and returns the composed model's bytes.
pub fn compose(
    backbone: &[u8],
    weights: &[f32],
    classes: usize,
    dim: usize,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, HeadError> {
    if classes == 0 || dim == 0 || weights.len() != classes * dim {
        return Err(HeadError::Shape(format!(
            "a head of {classes} × {dim} needs {} weights, got {}",
            classes * dim,
            weights.len()
        )));
    }
    let mut model =
        ModelProto::parse_from_bytes(backbone).map_err(|e| HeadError::Decode(e.to_string()))?;
    // Taken, not cloned: the graph holds every backbone weight.
    let graph = model
        .graph
        .take()
        .ok_or_else(|| HeadError::Decode("the model has no graph".into()))?;
    if !graph.output.iter().any(|o| o.name == EMBEDDING_OUTPUT) {
        return Err(HeadError::Shape(format!(
            "the backbone has no \"{EMBEDDING_OUTPUT}\" output"
        )));
    }
    if graph.output.iter().any(|o| o.name == SCORES_OUTPUT) {
        return Err(HeadError::Shape(
            "the model already has a head (compose it from the backbone)".into(),
        ));
    }
    let mut transposed = vec![0f32; dim * classes];
    for c in 0..classes {
        for d in 0..dim {
            transposed[d * classes + c] = weights[c * dim + d];
        }
    }
    let mut g = GraphBuilder::extend(graph);
    let norm = g.node(
        "ReduceL2",
        &[EMBEDDING_OUTPUT],
        &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))],
        None,
    );
    let eps = g.constant_f32("head_eps", &[1], &[NORM_EPSILON]);
    let safe = g.node("Max", &[&norm, &eps], &[], None);
    let unit = g.node("Div", &[EMBEDDING_OUTPUT, &safe], &[], None);
    let w = g.named_constant_f32(HEAD_WEIGHT, &[dim as i64, classes as i64], &transposed);
    g.node("MatMul", &[&unit, &w], &[], Some(SCORES_OUTPUT));
    g.output(
        SCORES_OUTPUT,
        &[Dim::Named("N"), Dim::Fixed(classes as i64)],
    );
    let mut meta: Vec<(&str, String)> = model
        .metadata_props
        .iter()
        .filter(|p| !metadata.iter().any(|(k, _)| *k == p.key))
        .map(|p| (p.key.as_str(), p.value.clone()))
        .collect();
    meta.extend(metadata.iter().map(|(k, v)| (*k, v.clone())));
    meta.push(("head_classes", classes.to_string()));
    meta.retain(|(k, _)| *k != BACKBONE_TAG);
    meta.push((BACKBONE_TAG, backbone_tag(backbone)));
    let doc = format!(
        "{}\nHead: L2-normalised embedding × {classes} unit identity rows → \"{SCORES_OUTPUT}\" (cosines).",
        model.doc_string
    );
    Ok(encode(&g.finish(doc.trim(), &meta)))
}

/// A composed model with the head's weights of `columns` set to zero: those identities' learned
/// prototypes are gone from the file, their `scores` are 0, and every other output is unchanged
/// (an erased person's column stays, so the model keeps its shape and its labels' order).
pub fn forget_columns(model: &[u8], columns: &[usize]) -> Result<Vec<u8>, HeadError> {
    let mut proto =
        ModelProto::parse_from_bytes(model).map_err(|e| HeadError::Decode(e.to_string()))?;
    let t = proto
        .graph
        .mut_or_insert_default()
        .initializer
        .iter_mut()
        .find(|t| t.name == HEAD_WEIGHT)
        .ok_or_else(|| HeadError::Shape("the model has no identity head".into()))?;
    let (mut values, dim, classes) = head_weights(t)?;
    if let Some(&c) = columns.iter().find(|&&c| c >= classes) {
        return Err(HeadError::Shape(format!(
            "column {c} of a head with {classes} classes"
        )));
    }
    for d in 0..dim {
        for &c in columns {
            values[d * classes + c] = 0.0;
        }
    }
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t.float_data.clear();
    Ok(encode(&proto))
}

/// The head's weight tensor as stored: `[D, C]` values (row-major), `D` and `C`.
fn head_weights(t: &onnx_protobuf::TensorProto) -> Result<(Vec<f32>, usize, usize), HeadError> {
    if t.dims.len() != 2 || t.data_type != DataType::FLOAT.value() {
        return Err(HeadError::Shape(format!(
            "{HEAD_WEIGHT} is not a 2-d float tensor"
        )));
    }
    let (dim, classes) = (t.dims[0] as usize, t.dims[1] as usize);
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != dim * classes {
        return Err(HeadError::Shape(format!(
            "{HEAD_WEIGHT} holds {} values for {dim} × {classes}",
            values.len()
        )));
    }
    Ok((values, dim, classes))
}

/// Reads the head of a composed model: its unit weight rows (row-major `classes × dim`),
/// `classes` and `dim`.
pub fn read_head(model: &[u8]) -> Result<(Vec<f32>, usize, usize), HeadError> {
    let h = read_head_of(model)?;
    Ok((h.rows, h.classes, h.dim))
}

/// Reads the head of a composed model and the backbone it was composed on.
pub fn read_head_of(model: &[u8]) -> Result<HeadOf, HeadError> {
    let model =
        ModelProto::parse_from_bytes(model).map_err(|e| HeadError::Decode(e.to_string()))?;
    let backbone_tag = model
        .metadata_props
        .iter()
        .find(|p| p.key == BACKBONE_TAG)
        .map(|p| p.value.clone());
    let t = model
        .graph
        .initializer
        .iter()
        .find(|t| t.name == HEAD_WEIGHT)
        .ok_or_else(|| HeadError::Shape("the model has no identity head".into()))?;
    let (values, dim, classes) = head_weights(t)?;
    let mut rows = vec![0f32; classes * dim];
    for d in 0..dim {
        for c in 0..classes {
            rows[c * dim + d] = values[d * classes + c];
        }
    }
    Ok(HeadOf {
        rows,
        classes,
        dim,
        backbone_tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_backbone() -> Vec<u8> {
        // chips [N,3] → embedding = chips × 2 (a stand-in with the backbone's interface names).
        let mut g = GraphBuilder::new("tiny");
        g.input("chips", &[Dim::Named("N"), Dim::Fixed(3)]);
        let two = g.constant_f32("two", &[1], &[2.0]);
        g.node("Mul", &["chips", &two], &[], Some(EMBEDDING_OUTPUT));
        g.output(EMBEDDING_OUTPUT, &[Dim::Named("N"), Dim::Fixed(3)]);
        encode(&g.finish("tiny", &[("source", "test".into())]))
    }

    #[test]
    fn head_round_trips_and_is_refused_twice() {
        let w = [1.0, 0.0, 0.0, 0.0, 0.6, 0.8];
        let composed = compose(&tiny_backbone(), &w, 2, 3, &[("model_version", "7".into())])
            .expect("composes");
        let (rows, c, d) = read_head(&composed).unwrap();
        assert_eq!((c, d), (2, 3));
        assert_eq!(rows, w);
        let m = ModelProto::parse_from_bytes(&composed).unwrap();
        let outs: Vec<&str> = m.graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outs, [EMBEDDING_OUTPUT, SCORES_OUTPUT]);
        assert!(m
            .metadata_props
            .iter()
            .any(|p| p.key == "source" && p.value == "test"));
        assert!(compose(&composed, &w, 2, 3, &[]).is_err());
        assert!(compose(&tiny_backbone(), &w, 3, 3, &[]).is_err());
        assert!(compose(b"not a model", &w, 2, 3, &[]).is_err());
        assert!(read_head(&tiny_backbone()).is_err());
    }
}

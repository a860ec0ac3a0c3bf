//! The model registry and the training job: `models/<n>/` versions, the gate, `models/CURRENT`.
//!
//! A training run reads the current dataset version, splits and trains a head
//! ([`crate::train`]), scores it, the untrained gallery baseline and the serving model on the
//! same held-out crops, composes the backbone and the head into one ONNX graph
//! ([`crate::onnx::head`]) and writes `models/<n>/labels.json`, `model.onnx` and, last,
//! `metrics.json` (a version without it is incomplete and is never promoted). The gate then moves
//! `models/CURRENT` (a conditional write on the tag read before training) only when the new
//! head's held-out top-1 is not below the serving model's and is above the baseline's (or equal
//! to it with a better top-5); the decision and its reason are in `metrics.json` either way.
//! Rollback is [`promote`] of an older version.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::onnx::head::{self, HeadError};
use crate::train::{self, Accuracy, HeldBack, Label, TrainOptions};
use twin_core::dataset::{self, DatasetError};
use twin_core::keys::{
    labels_key, metrics_key, model_dir, model_key, model_version_of, MODELS, MODELS_CURRENT,
};
use twin_core::store::{Condition, ObjectStore, StoreError};

/// Format version of `labels.json` and `metrics.json`.
pub const MODEL_FORMAT: u32 = 1;

/// What can stop training or promotion.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// There is nothing (or too little) to train on.
    #[error("{0}")]
    NothingToTrain(String),
    /// A model could not be built or read.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// No such complete model version.
    #[error("{0}")]
    NotFound(String),
    /// A stored file is damaged.
    #[error("{0}")]
    Corrupt(String),
}

/// `labels.json`: the identities of a model's `scores` columns, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// Format version.
    pub v: u32,
    /// The model version.
    pub version: u64,
    /// The dataset version it was trained on.
    pub dataset_version: u64,
    /// One per `scores` column.
    pub labels: Vec<Label>,
}

/// Per-identity numbers in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityMetrics {
    /// The identity.
    pub slug: String,
    /// Training crops.
    pub train: usize,
    /// Held-out crops.
    pub held_out: usize,
    /// Held-out crops the model ranked first.
    pub model_correct: u32,
    /// Held-out crops the baseline ranked first.
    pub baseline_correct: u32,
}

/// The serving model against the new one, on this run's held-out crops that the serving model
/// did not train on (its own split is recomputed from its metrics, so nothing it saw counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousMetrics {
    /// Its version.
    pub version: u64,
    /// The serving model on those crops.
    pub held_out: Accuracy,
    /// The new model on the same crops.
    pub new_model: Accuracy,
}

/// `metrics.json`: what a model was trained on, how it did, and the gate's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Format version.
    pub v: u32,
    /// The model version.
    pub version: u64,
    /// The dataset version trained on.
    pub dataset_version: u64,
    /// Seconds since the Unix epoch when it finished.
    pub created_at: u64,
    /// Seconds the training run took (split, training, evaluation, composition).
    pub seconds: f64,
    /// Identities in the head.
    pub identities: usize,
    /// Training crops.
    pub train_rows: usize,
    /// Held-out crops.
    pub held_out_rows: usize,
    /// The trained head on the held-out crops.
    pub model: Accuracy,
    /// The untrained nearest-prototype gallery on the same crops.
    pub baseline: Accuracy,
    /// The serving model on the same crops, if one was serving.
    pub previous: Option<PreviousMetrics>,
    /// Identities left out for having too few crops.
    pub held_back: Vec<HeldBack>,
    /// Per-identity counts.
    pub per_identity: Vec<IdentityMetrics>,
    /// Whether the gate promoted it.
    pub promoted: bool,
    /// Why (or why not).
    pub reason: String,
    /// The settings used.
    pub options: TrainOptions,
}

/// A model version as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    /// Its number.
    pub version: u64,
    /// Whether `models/CURRENT` points at it.
    pub current: bool,
    /// Its metrics (absent for an incomplete version).
    pub metrics: Option<Metrics>,
}

/// The promoted version and the pointer's tag (for conditional writes), if any.
pub fn current(store: &dyn ObjectStore) -> Result<Option<(u64, String)>, ModelError> {
    let Some(obj) = store.get(MODELS_CURRENT)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&obj.data);
    let n = text
        .trim()
        .parse::<u64>()
        .map_err(|_| ModelError::Corrupt(format!("{MODELS_CURRENT} holds {:?}", text.trim())))?;
    Ok(Some((n, obj.tag)))
}

/// Every model version, newest first.
pub fn list(store: &dyn ObjectStore) -> Result<Vec<ModelVersion>, ModelError> {
    let cur = current(store)?.map(|c| c.0);
    versions(store)?
        .into_iter()
        .map(|version| {
            Ok(ModelVersion {
                version,
                current: cur == Some(version),
                metrics: read_metrics(store, version)?,
            })
        })
        .collect()
}

/// The version numbers under `models/`, newest first (from the keys alone).
fn versions(store: &dyn ObjectStore) -> Result<Vec<u64>, ModelError> {
    let mut versions: Vec<u64> = store
        .list(MODELS)?
        .iter()
        .filter_map(|k| model_version_of(k))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions.reverse();
    Ok(versions)
}

/// A version's metrics, if it is complete.
pub fn read_metrics(store: &dyn ObjectStore, n: u64) -> Result<Option<Metrics>, ModelError> {
    match store.get(&metrics_key(n))? {
        Some(o) => serde_json::from_slice(&o.data)
            .map(Some)
            .map_err(|e| ModelError::Corrupt(format!("{}: {e}", metrics_key(n)))),
        None => Ok(None),
    }
}

/// A version's labels.
pub fn read_labels(store: &dyn ObjectStore, n: u64) -> Result<Labels, ModelError> {
    let o = store
        .get(&labels_key(n))?
        .ok_or_else(|| ModelError::NotFound(format!("model {n} has no labels.json")))?;
    serde_json::from_slice(&o.data)
        .map_err(|e| ModelError::Corrupt(format!("{}: {e}", labels_key(n))))
}

/// The trained versions whose files still name `slug` (labels, per-identity metrics or held
/// back).
pub fn knowing(store: &dyn ObjectStore, slug: &str) -> Result<Vec<u64>, ModelError> {
    let mut out = Vec::new();
    for n in versions(store)? {
        let in_labels = match read_labels(store, n) {
            Ok(l) => l.labels.iter().any(|l| l.slug == slug),
            Err(ModelError::NotFound(_) | ModelError::Corrupt(_)) => false,
            Err(e) => return Err(e),
        };
        let in_metrics = read_metrics(store, n)?.is_some_and(|m| {
            m.per_identity.iter().any(|p| p.slug == slug)
                || m.held_back.iter().any(|h| h.slug == slug)
        });
        if in_labels || in_metrics {
            out.push(n);
        }
    }
    Ok(out)
}

/// Makes every trained version forget the person `slug` at once: in `labels.json` their label
/// becomes an empty one (the column stays, so the model keeps its shape), their per-identity
/// numbers leave `metrics.json`, and their column of the head in `model.onnx` is zeroed (their
/// learned prototype is gone from the file). Returns the versions rewritten. Idempotent.
pub fn forget(store: &dyn ObjectStore, slug: &str) -> Result<Vec<u64>, ModelError> {
    let mut rewritten = Vec::new();
    for n in versions(store)? {
        // A version without readable labels names nobody; a failed read is an error (the
        // person must not stay in a version that could not be read).
        let mut labels = match read_labels(store, n) {
            Ok(l) => l,
            Err(ModelError::NotFound(_) | ModelError::Corrupt(_)) => continue,
            Err(e) => return Err(e),
        };
        let columns: Vec<usize> = labels
            .labels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.slug == slug)
            .map(|(i, _)| i)
            .collect();
        let mut metrics = read_metrics(store, n)?;
        let in_metrics = metrics.as_ref().is_some_and(|m| {
            m.per_identity.iter().any(|p| p.slug == slug)
                || m.held_back.iter().any(|h| h.slug == slug)
        });
        if columns.is_empty() && !in_metrics {
            continue;
        }
        if !columns.is_empty() {
            if let Some(model) = store.get(&model_key(n))? {
                match head::forget_columns(&model.data, &columns) {
                    Ok(forgotten) => {
                        store.put(&model_key(n), &forgotten, Condition::None)?;
                    }
                    // A damaged model cannot be rewritten (nor loaded again): it is retired.
                    Err(e) => {
                        tracing::warn!(version = n, error = %e, "a damaged model that knew an erased person is deleted");
                        store.delete(&model_key(n))?;
                    }
                }
            }
            for &c in &columns {
                labels.labels[c] = Label {
                    slug: String::new(),
                    display_name: String::new(),
                };
            }
            let body = serde_json::to_vec_pretty(&labels).expect("labels serialize");
            store.put(&labels_key(n), &body, Condition::None)?;
        }
        if let Some(m) = metrics.as_mut().filter(|_| in_metrics) {
            m.per_identity.retain(|p| p.slug != slug);
            m.held_back.retain(|h| h.slug != slug);
            let body = serde_json::to_vec_pretty(&*m).expect("metrics serialize");
            store.put(&metrics_key(n), &body, Condition::None)?;
        }
        rewritten.push(n);
    }
    Ok(rewritten)
}

/// Points `models/CURRENT` at version `n` (promotion or rollback): `n` must be complete.
pub fn promote(store: &dyn ObjectStore, n: u64) -> Result<(), ModelError> {
    // Listed, not read: the model is backbone-sized.
    let model = model_key(n);
    if read_metrics(store, n)?.is_none() || !store.list(&model_dir(n))?.contains(&model) {
        return Err(ModelError::NotFound(format!(
            "there is no complete model {n}"
        )));
    }
    store.put(MODELS_CURRENT, n.to_string().as_bytes(), Condition::None)?;
    Ok(())
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The metrics written (with the gate's decision).
    pub metrics: Metrics,
}

/// Trains a model on the current dataset version, writes it as the next `models/<n>/`, and
/// promotes it if the gate says so. `backbone` is the imported network's ONNX bytes.
pub fn train_and_gate(
    store: &dyn ObjectStore,
    backbone: &[u8],
    options: &TrainOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<TrainOutcome, ModelError> {
    let started = Instant::now();
    let before = current(store)?;
    let snapshot = dataset::load_current(store)?.ok_or_else(|| {
        ModelError::NothingToTrain(
            "there is no dataset yet: enroll or import identities first".into(),
        )
    })?;
    let split = train::split(&snapshot, options);
    if split.labels.len() < 2 {
        return Err(ModelError::NothingToTrain(format!(
            "training needs at least 2 identities with {} or more crops; the dataset has {}",
            options.min_crops,
            split.labels.len()
        )));
    }
    let head = train::train_head(&split, options, progress);
    let (c, d) = (split.labels.len(), split.dim);
    let model = train::evaluate(&split.held, d, c, &|x| head.scores(x));
    let protos = train::prototypes(&split);
    let proto_head = train::Head {
        labels: split.labels.clone(),
        dim: d,
        weights: protos.clone(),
    };
    let baseline = train::evaluate(&split.held, d, c, &|x| proto_head.scores(x));
    let previous = match &before {
        // A serving model over embeddings of another size cannot score these crops.
        Some((n, _)) => previous_head(store, *n)
            .filter(|(h, _)| h.dim == split.dim)
            .map(|(h, seen)| {
                let unseen = split.held.filter(|k| !seen.contains(k));
                let scorer = train::previous_scorer(&split, &protos, &h);
                PreviousMetrics {
                    version: *n,
                    held_out: train::evaluate(&unseen, d, c, &scorer),
                    new_model: train::evaluate(&unseen, d, c, &|x| head.scores(x)),
                }
            }),
        None => None,
    };
    let decision = gate(&model, &baseline, previous.as_ref());

    let n = claim_version(store, &split.labels, snapshot.manifest.version)?;
    let composed = head::compose(
        backbone,
        &head.weights,
        c,
        d,
        &[
            ("model_version", n.to_string()),
            ("dataset_version", snapshot.manifest.version.to_string()),
        ],
    )?;
    store.put(&model_key(n), &composed, Condition::None)?;
    let counts = train::counts(&split);
    let mut metrics = Metrics {
        v: MODEL_FORMAT,
        version: n,
        dataset_version: snapshot.manifest.version,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        seconds: 0.0,
        identities: c,
        train_rows: split.train.len(),
        held_out_rows: split.held.len(),
        per_identity: split
            .labels
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (l, (tr, ho)))| IdentityMetrics {
                slug: l.slug.clone(),
                train: *tr,
                held_out: *ho,
                model_correct: model.correct[i],
                baseline_correct: baseline.correct[i],
            })
            .collect(),
        model,
        baseline,
        previous,
        held_back: split.held_back.clone(),
        promoted: false,
        reason: decision.reason().to_string(),
        options: options.clone(),
    };
    if decision.promotes() {
        let cond = match &before {
            Some((_, tag)) => Condition::IfMatch(tag.clone()),
            None => Condition::IfAbsent,
        };
        match store.put(MODELS_CURRENT, n.to_string().as_bytes(), cond.clone()) {
            Ok(_) => metrics.promoted = true,
            Err(StoreError::PreconditionFailed(_)) => {
                metrics.reason = format!(
                    "{}; but models/CURRENT moved while training, so it was left alone",
                    metrics.reason
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    metrics.seconds = started.elapsed().as_secs_f64();
    let body = serde_json::to_vec_pretty(&metrics).expect("metrics serialize");
    if let Err(e) = store.put(&metrics_key(n), &body, Condition::None) {
        if metrics.promoted {
            // Never leave CURRENT on a version without metrics.
            let back = match &before {
                Some((p, _)) => p.to_string(),
                None => String::new(),
            };
            if back.is_empty() {
                let _ = store.delete(MODELS_CURRENT);
            } else {
                let _ = store.put(MODELS_CURRENT, back.as_bytes(), Condition::None);
            }
        }
        return Err(e.into());
    }
    Ok(TrainOutcome { metrics })
}

/// What the gate decided, and why (the reason is written to `metrics.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// The new model serves.
    Promote(String),
    /// The serving model stays.
    Keep(String),
}

impl GateDecision {
    /// Whether the new model is promoted.
    pub fn promotes(&self) -> bool {
        matches!(self, GateDecision::Promote(_))
    }

    /// Why.
    pub fn reason(&self) -> &str {
        match self {
            GateDecision::Promote(r) | GateDecision::Keep(r) => r,
        }
    }
}

/// The gate: promote when the new head's top-1 is not below the serving model's and beats the
/// baseline (a higher top-1, or the same top-1 with a higher top-5).
pub fn gate(
    model: &Accuracy,
    baseline: &Accuracy,
    previous: Option<&PreviousMetrics>,
) -> GateDecision {
    let pct = |x: f64| format!("{:.2} %", 100.0 * x);
    if let Some(p) = previous {
        if p.new_model.top1 < p.held_out.top1 {
            return GateDecision::Keep(format!(
                "on the {} held-out crops the serving model {} did not train on, top-1 {} is below its {}",
                p.held_out.n,
                p.version,
                pct(p.new_model.top1),
                pct(p.held_out.top1)
            ));
        }
    }
    let beats =
        model.top1 > baseline.top1 || (model.top1 == baseline.top1 && model.top5 > baseline.top5);
    if !beats {
        return GateDecision::Keep(format!(
            "held-out top-1/top-5 {}/{} does not beat the untrained gallery's {}/{}",
            pct(model.top1),
            pct(model.top5),
            pct(baseline.top1),
            pct(baseline.top5)
        ));
    }
    let prev = previous
        .map(|p| {
            format!(
                "; on the {} crops serving model {} did not train on: {} vs its {}",
                p.held_out.n,
                p.version,
                pct(p.new_model.top1),
                pct(p.held_out.top1)
            )
        })
        .unwrap_or_default();
    GateDecision::Promote(format!(
        "held-out top-1 {} (baseline {}{prev})",
        pct(model.top1),
        pct(baseline.top1)
    ))
}

/// The serving model's head and the crops it trained on, if they can be read (a damaged model
/// is simply not compared).
fn previous_head(
    store: &dyn ObjectStore,
    n: u64,
) -> Option<(train::Head, std::collections::HashSet<String>)> {
    let labels = read_labels(store, n).ok()?;
    let metrics = read_metrics(store, n).ok()??;
    let bytes = store.get(&model_key(n)).ok()??;
    let (weights, c, d) = head::read_head(&bytes.data).ok()?;
    let trained_on = dataset::load_version(store, metrics.dataset_version).ok()?;
    let seen = train::split(&trained_on, &metrics.options)
        .train
        .keys
        .into_iter()
        .collect();
    (c == labels.labels.len()).then_some((
        train::Head {
            labels: labels.labels,
            dim: d,
            weights,
        },
        seen,
    ))
}

/// Claims the next free version number by creating its `labels.json`.
fn claim_version(
    store: &dyn ObjectStore,
    labels: &[Label],
    dataset_version: u64,
) -> Result<u64, ModelError> {
    let labels_of = |n: u64| Labels {
        v: MODEL_FORMAT,
        version: n,
        dataset_version,
        labels: labels.to_vec(),
    };
    let newest = versions(store)?.first().copied();
    if let Some(n) = newest {
        // The same training (same dataset version, same labels: training is deterministic)
        // claimed it and stopped before its metrics: it is finished under its own number.
        if read_metrics(store, n)?.is_none() {
            match read_labels(store, n) {
                Ok(l) if l == labels_of(n) => return Ok(n),
                Ok(_) | Err(ModelError::NotFound(_) | ModelError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut n = newest.map_or(1, |v| v + 1);
    loop {
        let body = serde_json::to_vec_pretty(&labels_of(n)).expect("labels serialize");
        match store.put(&labels_key(n), &body, Condition::IfAbsent) {
            Ok(_) => return Ok(n),
            Err(StoreError::PreconditionFailed(_)) => n += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(top1: f64, top5: f64) -> Accuracy {
        Accuracy {
            top1,
            top5,
            n: 100,
            correct: vec![],
        }
    }

    #[test]
    fn gate_decisions() {
        assert!(gate(&acc(0.97, 1.0), &acc(0.95, 1.0), None).promotes());
        assert!(gate(&acc(0.95, 0.99), &acc(0.95, 0.98), None).promotes());
        let d = gate(&acc(0.95, 1.0), &acc(0.95, 1.0), None);
        assert!(
            matches!(&d, GateDecision::Keep(why) if why.contains("does not beat")),
            "{d:?}"
        );
        let prev = |new: f64| PreviousMetrics {
            version: 3,
            held_out: acc(0.98, 1.0),
            new_model: acc(new, 1.0),
        };
        let d = gate(&acc(0.99, 1.0), &acc(0.90, 1.0), Some(&prev(0.97)));
        assert!(
            matches!(&d, GateDecision::Keep(why) if why.contains("serving model 3")),
            "{d:?}"
        );
        assert!(gate(&acc(0.95, 1.0), &acc(0.90, 1.0), Some(&prev(0.98))).promotes());
    }
}

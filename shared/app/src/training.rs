//! Training: when to ask for a new model (enough identities the promoted model does not know),
//! and the training job (at most once per dataset version, with the shipped backbone or the one
//! published to the store), whose gate decides promotion (`docs/TRAINING.md`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use twin_core::dataset;
use twin_core::keys::BASE_BACKBONE;
use twin_core::messages::{TrainRequest, MESSAGE_VERSION};
use twin_core::store::ObjectStore;
use twin_model::models::{self, ModelError};
use twin_model::train::TrainOptions;

use crate::error::{Error, Result};

/// Identities not in the promoted model before a train request is sent, unless configured.
pub const DEFAULT_TRAIN_MIN_NEW: usize = 1;

/// A train request when at least `min_new` identities of the current dataset are not in the
/// promoted model's head (all of them when none is promoted), else `None`.
pub fn train_due(store: &dyn ObjectStore, min_new: usize) -> Result<Option<TrainRequest>> {
    let Some(manifest) = dataset::load_current_people(store)? else {
        return Ok(None);
    };
    let known: HashSet<String> = match models::current(store)? {
        Some((n, _)) => models::read_labels(store, n)
            .map(|l| l.labels.into_iter().map(|l| l.slug).collect())
            .unwrap_or_default(),
        None => HashSet::new(),
    };
    let new = manifest
        .identities
        .iter()
        .filter(|i| !known.contains(&i.slug))
        .count();
    Ok((new >= min_new.max(1)).then(|| TrainRequest {
        v: MESSAGE_VERSION,
        dataset_version: manifest.version,
        reason: format!("{new} identities are not in the promoted model"),
    }))
}

/// Makes model `version` forget every person it was trained on who is no longer in the gallery
/// (erased while it trained: the run read the dataset before the erasure). Returns them.
pub fn forget_the_erased(store: &dyn ObjectStore, version: u64) -> Result<Vec<String>> {
    let current = dataset::load_current_people(store)?;
    let gone: Vec<String> = models::read_labels(store, version)?
        .labels
        .into_iter()
        .map(|l| l.slug)
        .filter(|s| !s.is_empty() && current.as_ref().is_none_or(|m| m.identity(s).is_none()))
        .collect();
    for slug in &gone {
        models::forget(store, slug)?;
    }
    Ok(gone)
}

/// What a training job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Whether a new model version was trained.
    pub trained: bool,
    /// The new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The dataset version it was trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_version: Option<u64>,
    /// Whether the gate promoted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<bool>,
    /// Why (the gate's reason, or why nothing was trained).
    pub reason: String,
}

impl TrainReport {
    fn skipped(reason: impl Into<String>) -> Self {
        TrainReport {
            trained: false,
            version: None,
            dataset_version: None,
            promoted: None,
            reason: reason.into(),
        }
    }
}

/// Where the training job's backbone comes from.
#[derive(Debug, Clone)]
pub enum BackboneSource {
    /// A file shipped with the job.
    File(PathBuf),
    /// `models/base/backbone.onnx` in the store (`twin model publish`).
    Store,
}

/// The training job.
pub struct TrainJob {
    store: Arc<dyn ObjectStore>,
    backbone: BackboneSource,
    threads: usize,
}

impl TrainJob {
    /// A job over `store`; `shipped`, the backbone file shipped with it when there is one (else
    /// the store's published backbone is used).
    pub fn new(store: Arc<dyn ObjectStore>, shipped: Option<PathBuf>, threads: usize) -> Self {
        let backbone = match shipped.filter(|p| p.is_file()) {
            Some(p) => BackboneSource::File(p),
            None => BackboneSource::Store,
        };
        TrainJob {
            store,
            backbone,
            threads,
        }
    }

    /// Whether a model was already trained on dataset version `n` or a later one.
    pub fn trained_on(&self, n: u64) -> Result<bool> {
        Ok(models::list(&*self.store)?
            .iter()
            .filter_map(|v| v.metrics.as_ref())
            .any(|m| m.dataset_version >= n))
    }

    fn backbone_bytes(&self) -> Result<Vec<u8>> {
        match &self.backbone {
            BackboneSource::File(p) => std::fs::read(p)
                .map_err(|e| Error::Internal(format!("cannot read {}: {e}", p.display()))),
            BackboneSource::Store => Ok(self
                .store
                .get(BASE_BACKBONE)?
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "no backbone: ship one in TWIN_MODELS_DIR or run twin model publish ({BASE_BACKBONE})"
                    ))
                })?
                .data),
        }
    }

    /// Trains on the current dataset unless a model already covers `at_least` (or, with `None`,
    /// the current version): a repeated request or a quiet schedule changes nothing.
    pub fn run(&self, at_least: Option<u64>) -> Result<TrainReport> {
        // The schedule also bounds how long rows of an erased person (and the older versions
        // that hold them) can outlive an erasure that could not compact.
        if dataset::needs_compaction(&*self.store)? {
            let c = dataset::compact(&*self.store)?;
            tracing::info!(
                version = c.version,
                deleted = c.deleted,
                "dataset compacted before training"
            );
        }
        let Some(current) = dataset::load_current_people(&*self.store)?.map(|m| m.version) else {
            return Ok(TrainReport::skipped("there is no dataset yet"));
        };
        let wanted = at_least.unwrap_or(current).min(current);
        if self.trained_on(wanted)? {
            return Ok(TrainReport::skipped(format!(
                "a model was already trained on dataset version {wanted} or later"
            )));
        }
        let bytes = self.backbone_bytes()?;
        let options = TrainOptions {
            threads: self.threads,
            ..Default::default()
        };
        match models::train_and_gate(&*self.store, &bytes, &options, &|_, _| {}) {
            Ok(o) => {
                let m = o.metrics;
                forget_the_erased(&*self.store, m.version)?;
                tracing::info!(
                    version = m.version,
                    dataset_version = m.dataset_version,
                    top1 = m.model.top1,
                    baseline_top1 = m.baseline.top1,
                    promoted = m.promoted,
                    reason = %m.reason,
                    "model trained"
                );
                Ok(TrainReport {
                    trained: true,
                    version: Some(m.version),
                    dataset_version: Some(m.dataset_version),
                    promoted: Some(m.promoted),
                    reason: m.reason,
                })
            }
            Err(ModelError::NothingToTrain(reason)) => {
                tracing::info!(%reason, "nothing to train");
                Ok(TrainReport::skipped(reason))
            }
            Err(e) => Err(Error::internal(e)),
        }
    }
}

//! Limits the API and the use cases share (sizes of uploads are in [`crate::media`]).

/// Lookalikes per face unless the caller asks for another number.
pub const DEFAULT_K: usize = 5;
/// Most lookalikes per face a caller may ask for.
pub const MAX_K: usize = 20;
/// Identities per gallery page unless the caller asks for another number.
pub const DEFAULT_PAGE: usize = 50;
/// Largest gallery page.
pub const MAX_PAGE: usize = 200;
/// Ingest messages the dataset step takes at once (SQS's largest batch).
pub const DATASET_BATCH: usize = 10;

//! Twin Matcher's domain and ports, free of OpenCV, ONNX Runtime and parquet: the storage layout
//! ([`keys`]), what counts as a photo or a video ([`media`]), names and slugs ([`names`]),
//! shared limits ([`limits`]), the object store and queue ports with their local adapters
//! ([`store`], [`queue`]), the messages between the parts ([`messages`]), the enrollment state
//! machine and its records ([`enrollment`]), the dataset's versions ([`dataset`]) and the
//! gallery's search ([`gallery`]). The AWS adapters and the zip functions build on this alone.
//! The contract these modules implement is in the repository's `docs/`.

pub mod dataset;
pub mod enrollment;
pub mod fsutil;
pub mod gallery;
pub mod keys;
pub mod limits;
pub mod media;
pub mod messages;
pub mod names;
pub mod paths;
pub mod queue;
pub mod rows;
pub mod store;
pub mod sync;

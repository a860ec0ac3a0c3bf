//! Twin Matcher's domain and ports, free of OpenCV, ONNX Runtime and parquet: the storage layout
//! ([`keys`]), the object store and queue ports with their local adapters ([`store`], [`queue`]),
//! the messages between the parts ([`messages`]), enrollment records ([`enrollment`]), the
//! dataset's versions ([`dataset`]) and the gallery's search ([`gallery`]). The AWS adapters and
//! the zip functions build on this alone.

pub mod dataset;
pub mod enrollment;
pub mod fsutil;
pub mod gallery;
pub mod keys;
pub mod messages;
pub mod queue;
pub mod store;

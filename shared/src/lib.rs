//! Twin Matcher's core library.
//!
//! Everything the product does with faces lives here, independent of where it runs: reading
//! dlib's model files ([`dlib`]), building ONNX graphs from them ([`onnx`]), running them with
//! ONNX Runtime behind a core-owned API ([`embed`]), decoding images under limits
//! ([`imageio`]), and finding, aligning and cutting faces ([`face`]). The `twin` binary and the
//! Lambda functions are thin hosts around it; no AWS, Lambda or ONNX Runtime type appears in
//! its public signatures.

pub mod chip;
pub mod dataset;
pub mod dlib;
pub mod embed;
pub mod eval;
#[cfg(feature = "faces")]
pub mod face;
pub mod fsutil;
pub mod gallery;
pub mod hfparquet;
#[cfg(feature = "faces")]
pub mod http;
pub mod imageio;
pub mod keys;
pub mod messages;
pub mod models;
pub mod onnx;
pub mod paths;
pub mod queue;
pub mod steps;
pub mod store;
#[cfg(feature = "faces")]
pub mod system;
pub mod train;

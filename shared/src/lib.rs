//! Twin Matcher's core library.
//!
//! Everything the product does with faces lives here, independent of where it runs: reading
//! dlib's model files ([`dlib`]), building ONNX graphs from them ([`onnx`]), running them with
//! ONNX Runtime behind a core-owned API ([`embed`]), and the image helpers they share
//! ([`chip`]). The `twin` binary and the Lambda functions are thin hosts around it; no AWS,
//! Lambda or ONNX Runtime type appears in its public signatures.

pub mod dlib;
pub mod face;

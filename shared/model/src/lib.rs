//! Twin Matcher's models: dlib's files read ([`dlib`]) and rebuilt as ONNX graphs ([`onnx`]),
//! run with ONNX Runtime behind an API of our own ([`embed`]), the identity head's training
//! ([`train`]), the model registry with its gate ([`models`]), and verification on pairs
//! ([`eval`]). No ONNX Runtime type appears in its public signatures.

pub mod chip;
pub mod dlib;
pub mod embed;
pub mod eval;
pub mod models;
pub mod onnx;
pub mod train;

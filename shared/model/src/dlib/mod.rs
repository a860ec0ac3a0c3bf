//! dlib's model files: the serialization format and the networks the product reads from it.

pub mod mmod;
pub mod resnet;
pub mod ser;

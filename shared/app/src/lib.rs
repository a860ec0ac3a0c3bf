//! Twin Matcher's use cases, wired by each host over the core's ports.

pub mod steps;
#[cfg(feature = "faces")]
pub mod hfparquet;
#[cfg(feature = "faces")]
pub mod system;

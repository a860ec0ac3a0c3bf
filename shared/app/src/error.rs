//! What a use case's caller can act on: every failure is one of these kinds, whatever part of
//! the system it came from. The HTTP API maps each kind to one status code.

use twin_core::dataset::DatasetError;
use twin_core::enrollment::{StepError, TransitionError};
use twin_core::names::NameError;
use twin_core::store::StoreError;
use twin_model::embed::EmbedError;
use twin_model::models::ModelError;

/// A use case's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a supported image or video type.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// Over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// No usable face.
    #[error("{0}")]
    NoFace(String),
    /// Damaged or undecodable input.
    #[error("{0}")]
    BadImage(String),
    /// Other bad input (a name, an id, a malformed message).
    #[error("{0}")]
    BadInput(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// Too much work at once: try again shortly.
    #[error("{0}")]
    Busy(String),
    /// Our fault; details go to the log, not to callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An internal error from anything printable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Malformed(m) => Error::BadInput(m),
            StepError::Conflict(m) => Error::Conflict(m),
            StepError::Failed(m) => Error::Internal(m),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PreconditionFailed(_) => Error::Conflict(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        Error::Conflict(e.to_string())
    }
}

impl From<DatasetError> for Error {
    fn from(e: DatasetError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<EmbedError> for Error {
    fn from(e: EmbedError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Error::BadInput(e.to_string())
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound(m) => Error::NotFound(m),
            ModelError::NothingToTrain(m) => Error::Conflict(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

#[cfg(feature = "faces")]
impl From<twin_faces::pipeline::PipelineError> for Error {
    fn from(e: twin_faces::pipeline::PipelineError) -> Self {
        Error::Internal(e.to_string())
    }
}

#[cfg(feature = "faces")]
impl From<twin_faces::imageio::ImageError> for Error {
    fn from(e: twin_faces::imageio::ImageError) -> Self {
        use twin_faces::imageio::ImageError;
        match e {
            ImageError::UnknownFormat => {
                Error::UnsupportedMedia("not a JPEG, PNG or WebP image".into())
            }
            ImageError::TooManyBytes { .. } | ImageError::TooLarge { .. } => {
                Error::TooLarge(e.to_string())
            }
            ImageError::Io(_) => Error::Internal(e.to_string()),
            ImageError::Truncated(_) | ImageError::Decode(_) => Error::BadImage(format!(
                "the image could not be read ({e}); try another photo"
            )),
        }
    }
}

/// A use case's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

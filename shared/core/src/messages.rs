//! The messages between the parts (`docs/MESSAGES.md`): JSON, each with `"v": 1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enrollment::EnrollmentStatus;
use crate::keys::{check_upload_id, crop_frame};
use crate::names::{check_slug, display_name, NameError};

/// The message format version this build reads and writes.
pub const MESSAGE_VERSION: u32 = 1;

/// A message that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another format version.
    #[error("message version {0} is not supported (this build reads version {MESSAGE_VERSION})")]
    Version(u32),
    /// A field fails its checks.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl From<NameError> for MessageError {
    fn from(e: NameError) -> Self {
        MessageError::Invalid(e.to_string())
    }
}

/// ingest → dataset: the crops cut from one upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestMessage {
    /// Format version (1).
    pub v: u32,
    /// The upload.
    pub upload_id: String,
    /// The identity's slug.
    pub slug: String,
    /// The identity's display name.
    pub display_name: String,
    /// The uploaded object.
    pub source_key: String,
    /// Keys of the aligned chips.
    pub crops: Vec<String>,
    /// Rejected frames by reason.
    pub rejected: BTreeMap<String, u32>,
}

/// dataset → train: a request to train on a dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRequest {
    /// Format version (1).
    pub v: u32,
    /// The dataset version to train on.
    pub dataset_version: u64,
    /// Why training was requested.
    pub reason: String,
}

impl IngestMessage {
    /// The message of a `cropped` enrollment: its crops, for the dataset step.
    pub fn for_status(s: &EnrollmentStatus) -> Self {
        IngestMessage {
            v: MESSAGE_VERSION,
            upload_id: s.upload_id.clone(),
            slug: s.slug.clone(),
            display_name: s.display_name.clone(),
            source_key: s.source_key.clone().unwrap_or_default(),
            crops: s.crops.clone(),
            rejected: s.rejected.clone(),
        }
    }

    /// Parses and checks a message: version, slug, upload id, and that every crop key is one of
    /// this upload's crop keys.
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        let m: IngestMessage = serde_json::from_str(body)?;
        m.check()?;
        Ok(m)
    }

    /// Checks the fields.
    pub fn check(&self) -> Result<(), MessageError> {
        if self.v != MESSAGE_VERSION {
            return Err(MessageError::Version(self.v));
        }
        check_slug(&self.slug)?;
        check_upload_id(&self.upload_id)?;
        display_name(&self.display_name)?;
        for k in &self.crops {
            if crop_frame(k, &self.slug, &self.upload_id).is_none() {
                return Err(MessageError::Invalid(format!(
                    "crop key {k:?} is not one of this upload's crops"
                )));
            }
        }
        Ok(())
    }

    /// Encodes the message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a message always serializes")
    }
}

impl TrainRequest {
    /// Parses and checks a train request.
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        let m: TrainRequest = serde_json::from_str(body)?;
        if m.v != MESSAGE_VERSION {
            return Err(MessageError::Version(m.v));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> IngestMessage {
        IngestMessage {
            v: 1,
            upload_id: "u-1".into(),
            slug: "ada".into(),
            display_name: "Ada".into(),
            source_key: "uploads/ada/u-1.mp4".into(),
            crops: vec!["crops/ada/u-1/0.png".into(), "crops/ada/u-1/100.png".into()],
            rejected: BTreeMap::from([("blurred".into(), 2)]),
        }
    }

    #[test]
    fn round_trip() {
        let m = msg();
        assert_eq!(IngestMessage::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn refuses_bad_messages() {
        assert!(matches!(
            IngestMessage::parse("not json"),
            Err(MessageError::Malformed(_))
        ));
        let mut m = msg();
        m.v = 2;
        assert!(matches!(
            IngestMessage::parse(&m.to_json()),
            Err(MessageError::Version(2))
        ));
        let mut m = msg();
        m.crops.push("crops/bob/u-1/0.png".into());
        assert!(IngestMessage::parse(&m.to_json()).is_err());
        let mut m = msg();
        m.crops.push("crops/ada/u-1/../../x.png".into());
        assert!(IngestMessage::parse(&m.to_json()).is_err());
        let mut m = msg();
        m.slug = "../ada".into();
        assert!(IngestMessage::parse(&m.to_json()).is_err());
    }
}

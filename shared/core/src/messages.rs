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

    #[test]
    fn refuses_bad_fields_and_train_requests() {
        // Fields that fail their checks.
        let bad = |f: &dyn Fn(&mut IngestMessage)| {
            let mut m = msg();
            f(&mut m);
            IngestMessage::parse(&m.to_json()).unwrap_err()
        };
        assert!(matches!(
            bad(&|m| m.upload_id = "U-1".into()),
            MessageError::Invalid(_)
        ));
        assert!(matches!(
            bad(&|m| m.display_name = "Ada\u{202E}".into()),
            MessageError::Invalid(_)
        ));
        assert!(matches!(
            bad(&|m| m.display_name = "   ".into()),
            MessageError::Invalid(_)
        ));
        // Fields of the wrong type, missing, or a number out of range.
        for body in [
            r#"{"v":1,"upload_id":"u-1","slug":"ada","display_name":"Ada","source_key":"","crops":"crops/ada/u-1/0.png","rejected":{}}"#,
            r#"{"v":1,"upload_id":"u-1","slug":"ada","display_name":"Ada","source_key":"","rejected":{}}"#,
            r#"{"v":1,"upload_id":"u-1","slug":"ada","display_name":"Ada","source_key":"","crops":[],"rejected":{"blurred":-1}}"#,
            "",
        ] {
            assert!(
                matches!(IngestMessage::parse(body), Err(MessageError::Malformed(_))),
                "{body}"
            );
        }
        // Train requests: another version, a negative or missing version number.
        assert!(matches!(
            TrainRequest::parse(r#"{"v":2,"dataset_version":3,"reason":"x"}"#),
            Err(MessageError::Version(2))
        ));
        for body in [
            r#"{"v":1,"dataset_version":-3,"reason":"x"}"#,
            r#"{"v":1,"reason":"x"}"#,
            r#"{"v":1,"dataset_version":1e400,"reason":"x"}"#,
        ] {
            assert!(
                matches!(TrainRequest::parse(body), Err(MessageError::Malformed(_))),
                "{body}"
            );
        }
        let ok = TrainRequest::parse(r#"{"v":1,"dataset_version":3,"reason":"new identity"}"#);
        assert_eq!(ok.unwrap().dataset_version, 3);
    }
}

//! S3 event notifications, read tolerantly.
//!
//! Real S3 records carry `userIdentity`, `requestParameters`, `responseElements` and a
//! `sequencer`; moto's carry none of them (so strict models such as `aws_lambda_events`'
//! `S3Event` refuse them). Only what the product needs is read: the event name, the bucket, the
//! key (always URL-decoded: `%2F` → `/`, `+` → space), the size and the ETag when present.
//! `s3:TestEvent` messages (sent when a notification is configured) are skipped. The same
//! notification wrapped in SQS (a Lambda SQS event, or one SQS message body) is unwrapped.
//! Anything else is an error, never a silent skip: a record that cannot be read must fail the
//! invocation so that it is retried and then dead-lettered.

use serde_json::Value;

/// One object an S3 notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ObjectRef {
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, `ObjectRemoved:Delete`, …
    pub event_name: String,
    /// The bucket.
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    /// Size in bytes, when given.
    pub size: Option<u64>,
    /// ETag (without quotes, as S3 sends it), when given.
    pub etag: Option<String>,
}

impl S3ObjectRef {
    /// True for `ObjectCreated:*` events.
    pub fn is_created(&self) -> bool {
        self.event_name.starts_with("ObjectCreated:")
    }
}

/// A notification that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3EventError {
    /// Not an S3 notification (nor one wrapped in SQS).
    #[error("not an S3 notification: {0}")]
    NotS3(String),
    /// A record lacks a field the product needs.
    #[error("S3 record {index} has no {field}")]
    Missing {
        /// Position of the record.
        index: usize,
        /// The field's path.
        field: &'static str,
    },
    /// A key that is not percent-encoded UTF-8.
    #[error("S3 record {index} has a key that does not decode to UTF-8")]
    BadKey {
        /// Position of the record.
        index: usize,
    },
    /// An SQS message body that is not JSON.
    #[error("SQS message {index}'s body is not JSON: {message}")]
    BadBody {
        /// Position of the SQS record.
        index: usize,
        /// The parser's complaint.
        message: String,
    },
}

/// Nesting allowed for wrapped notifications (SQS body holding a notification, as a string).
const MAX_DEPTH: usize = 4;

/// The objects a notification is about, in record order (test events yield none).
pub fn parse(json: &Value) -> Result<Vec<S3ObjectRef>, S3EventError> {
    let mut out = Vec::new();
    parse_into(json, 0, &mut out)?;
    Ok(out)
}

/// [`parse`] of a JSON text (an SQS message body, say).
pub fn parse_str(text: &str) -> Result<Vec<S3ObjectRef>, S3EventError> {
    let v: Value = serde_json::from_str(text).map_err(|e| S3EventError::BadBody {
        index: 0,
        message: e.to_string(),
    })?;
    parse(&v)
}

fn parse_into(json: &Value, depth: usize, out: &mut Vec<S3ObjectRef>) -> Result<(), S3EventError> {
    if depth > MAX_DEPTH {
        return Err(S3EventError::NotS3("notification nested too deeply".into()));
    }
    match json {
        // A body passed as a JSON string.
        Value::String(s) => {
            let v: Value = serde_json::from_str(s).map_err(|e| S3EventError::BadBody {
                index: 0,
                message: e.to_string(),
            })?;
            parse_into(&v, depth + 1, out)
        }
        Value::Object(map) => {
            if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
                return Ok(());
            }
            let Some(records) = map.get("Records").and_then(Value::as_array) else {
                return Err(S3EventError::NotS3("no Records array".into()));
            };
            for (index, record) in records.iter().enumerate() {
                if record.get("s3").is_some() {
                    out.push(parse_record(index, record)?);
                } else if let Some(body) = record.get("body").and_then(Value::as_str) {
                    // A Lambda SQS event: each body is one S3 notification.
                    let v: Value =
                        serde_json::from_str(body).map_err(|e| S3EventError::BadBody {
                            index,
                            message: e.to_string(),
                        })?;
                    parse_into(&v, depth + 1, out)?;
                } else {
                    return Err(S3EventError::NotS3(format!(
                        "record {index} is neither an S3 record nor an SQS message"
                    )));
                }
            }
            Ok(())
        }
        _ => Err(S3EventError::NotS3("not a JSON object".into())),
    }
}

fn parse_record(index: usize, r: &Value) -> Result<S3ObjectRef, S3EventError> {
    let text = |v: Option<&Value>, field: &'static str| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or(S3EventError::Missing { index, field })
    };
    let event_name = text(r.get("eventName"), "eventName")?;
    let s3 = &r["s3"];
    let bucket = text(s3.pointer("/bucket/name"), "s3.bucket.name")?;
    let raw_key = text(s3.pointer("/object/key"), "s3.object.key")?;
    let key = decode_key(&raw_key).ok_or(S3EventError::BadKey { index })?;
    let size = s3.pointer("/object/size").and_then(Value::as_u64);
    let etag = s3
        .pointer("/object/eTag")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(S3ObjectRef {
        event_name,
        bucket,
        key,
        size,
        etag,
    })
}

/// Decodes a notification's key: `+` is a space, then percent-decoding to UTF-8.
pub fn decode_key(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded notification (compiled in: the fixtures travel with the test binary).
    fn fixture_text(name: &str) -> &'static str {
        match name {
            "moto-s3-put.json" => include_str!("../fixtures/moto-s3-put.json"),
            "s3-put.json" => include_str!("../fixtures/s3-put.json"),
            "moto-test-event.json" => include_str!("../fixtures/moto-test-event.json"),
            "sqs-wrapped-s3.json" => include_str!("../fixtures/sqs-wrapped-s3.json"),
            other => panic!("no fixture {other}"),
        }
    }

    fn fixture(name: &str) -> Value {
        serde_json::from_str(fixture_text(name)).unwrap()
    }

    #[test]
    fn reads_the_documented_s3_event() {
        let got = parse(&fixture("s3-put.json")).unwrap();
        assert_eq!(
            got,
            [S3ObjectRef {
                event_name: "ObjectCreated:Put".into(),
                bucket: "mybucket".into(),
                key: "HappyFace.jpg".into(),
                size: Some(1024),
                etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            }]
        );
        assert!(got[0].is_created());
    }

    #[test]
    fn reads_motos_records_and_decodes_keys() {
        let got = parse(&fixture("moto-s3-put.json")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bucket, "twin-test-bucket");
        assert_eq!(got[0].key, "uploads/ada_lovelace/My first video+é.mp4");
        assert_eq!(got[0].size, Some(5_242_880));
        assert_eq!(
            got[0].etag.as_deref(),
            Some("9b2cf535f27731c974343645a3985328")
        );
    }

    #[test]
    fn skips_test_events_and_unwraps_sqs() {
        assert!(parse(&fixture("moto-test-event.json")).unwrap().is_empty());
        // A Lambda SQS event holding moto's test event and one object record.
        let got = parse(&fixture("sqs-wrapped-s3.json")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, "uploads/ada_lovelace/My first video+é.mp4");
        // One SQS message body, as a string.
        let body = fixture_text("moto-s3-put.json");
        assert_eq!(parse_str(body).unwrap(), got);
        assert_eq!(parse(&Value::String(body.to_string())).unwrap(), got);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            parse(&serde_json::json!({"hello": 1})),
            Err(S3EventError::NotS3(_))
        ));
        let no_key = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"size": 3}}}]});
        assert_eq!(
            parse(&no_key),
            Err(S3EventError::Missing {
                index: 0,
                field: "s3.object.key"
            })
        );
        let bad_utf8 = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "a%FFb"}}}]});
        assert_eq!(parse(&bad_utf8), Err(S3EventError::BadKey { index: 0 }));
        let bad_body = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "body": "{"}]});
        assert!(matches!(
            parse(&bad_body),
            Err(S3EventError::BadBody { index: 0, .. })
        ));
        assert_eq!(decode_key("a%2Fb+c%2Bd").as_deref(), Some("a/b c+d"));
    }

    #[test]
    fn refuses_odd_shapes_and_reads_odd_values() {
        let not_s3 = |v: Value| {
            assert!(matches!(parse(&v), Err(S3EventError::NotS3(_))), "{v}");
        };
        not_s3(serde_json::json!([{"s3": {}}]));
        not_s3(serde_json::json!(42));
        not_s3(serde_json::json!(null));
        not_s3(serde_json::json!({"Records": {"s3": {}}}));
        not_s3(serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put"}]}));
        // A body wrapped as a string in a string in a string…: refused past a few levels.
        let mut nested = Value::String(fixture_text("moto-s3-put.json").to_string());
        for _ in 0..6 {
            nested = Value::String(nested.to_string());
        }
        assert_eq!(
            parse(&nested),
            Err(S3EventError::NotS3("notification nested too deeply".into()))
        );
        // Empty names count as missing.
        let record = |event: &str, bucket: &str, key: &str| {
            serde_json::json!({"Records": [{"eventName": event,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})
        };
        assert_eq!(
            parse(&record("ObjectCreated:Put", "", "uploads/a/b.mp4")),
            Err(S3EventError::Missing {
                index: 0,
                field: "s3.bucket.name"
            })
        );
        assert_eq!(
            parse(&record("", "b", "uploads/a/b.mp4")),
            Err(S3EventError::Missing {
                index: 0,
                field: "eventName"
            })
        );
        // No records: nothing to do.
        assert_eq!(parse(&serde_json::json!({"Records": []})), Ok(vec![]));
        // A deletion is read, and is not a creation.
        let removed = parse(&record("ObjectRemoved:Delete", "b", "uploads/a/b.mp4")).unwrap();
        assert!(!removed[0].is_created());
        // A key that decodes to a path out of the bucket's layout is read as sent; the store's
        // key check refuses it.
        let climb = parse(&record(
            "ObjectCreated:Put",
            "b",
            "uploads%2F..%2F..%2Fetc%2Fpasswd",
        ))
        .unwrap();
        assert_eq!(climb[0].key, "uploads/../../etc/passwd");
        assert!(twin_core::store::check_key(&climb[0].key).is_err());
        // A size that is not a whole number, or an empty ETag, is no size and no ETag.
        let odd = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"},
                   "object": {"key": "k", "size": -5, "eTag": ""}}}]});
        let got = parse(&odd).unwrap();
        assert_eq!((got[0].size, got[0].etag.as_deref()), (None, None));
        let odd = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "12"}}}]});
        assert_eq!(parse(&odd).unwrap()[0].size, None);
    }
}

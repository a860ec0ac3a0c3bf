//! Lambda events as AWS sends them, for driving the functions in tests and benchmarks.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{json, Value};

/// An API Gateway HTTP API (payload 2.0) request event with a base64 body; `api_key` goes in
/// the `x-api-key` header.
pub fn api_gateway_v2(
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    api_key: Option<&str>,
) -> String {
    let mut headers = json!({
        "content-type": content_type,
        "host": "abc123.execute-api.us-east-1.amazonaws.com"
    });
    if let Some(k) = api_key {
        headers["x-api-key"] = json!(k);
    }
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "twin-tests"},
            "requestId": "req-1",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "29/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1764417600000u64
        },
        "body": base64_encode(body),
        "isBase64Encoded": true
    })
    .to_string()
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional, no line breaks) decoded; `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let data = text.trim_end_matches('=').as_bytes();
    if text.len() - data.len() > 2 || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The SQS event Lambda's event source mapping builds from messages received from the queue
/// `queue_arn` (received with all system attributes, for `ApproximateReceiveCount` and
/// `SentTimestamp`).
pub fn sqs_event(messages: &[Message], queue_arn: &str) -> Value {
    let region = queue_arn.split(':').nth(3).unwrap_or("us-east-1");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attribute = |name: &str, default: &str| {
                m.attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::from(name)))
                    .cloned()
                    .unwrap_or_else(|| default.to_string())
            };
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {
                    "ApproximateReceiveCount": attribute("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attribute("SentTimestamp", "0"),
                    "SenderId": attribute("SenderId", ""),
                    "ApproximateFirstReceiveTimestamp":
                        attribute("ApproximateFirstReceiveTimestamp", "0"),
                },
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region
            })
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let coded = super::base64_encode(&data);
            assert_eq!(super::base64_decode(&coded), Some(data));
        }
        assert_eq!(super::base64_decode("Zm9v!"), None);
        assert_eq!(super::base64_decode("Z"), None);
    }

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64_encode(plain.as_bytes()), coded);
        }
    }
}

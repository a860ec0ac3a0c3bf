//! The API key that writes (enroll, upload, erase) need.
//!
//! The key comes in the `x-api-key` header or as `Authorization: Bearer <key>`. A server
//! without a configured key refuses every write, unless it was told explicitly that writes
//! without a key are fine (a trusted machine: `twin serve --allow-writes-without-key`).
//! Reads and matching are public.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::error::ApiError;
use super::AppState;

/// Proof, as an extractor, that the request may change state. Put it first in a handler's
/// arguments so that it is checked before any body is read.
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess;

/// Header that may carry the key.
pub const API_KEY_HEADER: &str = "x-api-key";

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check(
            &parts.headers,
            state.config.api_key.as_deref(),
            state.config.allow_writes_without_key,
        )
    }
}

/// The decision, on its own.
pub fn check(
    headers: &HeaderMap,
    configured: Option<&str>,
    allow_without_key: bool,
) -> Result<WriteAccess, ApiError> {
    let Some(key) = configured else {
        return if allow_without_key {
            Ok(WriteAccess)
        } else {
            Err(ApiError::unauthorized(
                "this server accepts no changes: it was started without an API key \
                 (set TWIN_API_KEY, or start it with --allow-writes-without-key on a trusted machine)",
            ))
        };
    };
    match presented_key(headers) {
        None => Err(ApiError::unauthorized(
            "this needs an API key: send it in the x-api-key header or as Authorization: Bearer <key>",
        )),
        Some(given) if same(given.as_bytes(), key.as_bytes()) => Ok(WriteAccess),
        Some(_) => Err(ApiError::unauthorized("this API key is not valid")),
    }
}

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim()).filter(|v| !v.is_empty());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|v| !v.is_empty())
}

/// Compares without stopping at the first difference (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys() {
        let k = Some("s3cret");
        assert!(check(&headers(&[("x-api-key", "s3cret")]), k, false).is_ok());
        assert!(check(&headers(&[("authorization", "Bearer s3cret")]), k, false).is_ok());
        assert!(check(&headers(&[("authorization", "bearer  s3cret ")]), k, false).is_ok());
        assert!(check(&headers(&[("authorization", "Basic s3cret")]), k, false).is_err());
        assert!(check(&headers(&[("x-api-key", "s3cre")]), k, false).is_err());
        assert!(check(&headers(&[("x-api-key", "")]), k, false).is_err());
        assert!(
            check(&headers(&[]), k, true).is_err(),
            "a configured key is always needed"
        );
        assert!(check(&headers(&[]), None, true).is_ok());
        let e = check(&headers(&[("x-api-key", "s3cret")]), None, false).unwrap_err();
        assert!(e.message.contains("TWIN_API_KEY"), "{}", e.message);
    }
}

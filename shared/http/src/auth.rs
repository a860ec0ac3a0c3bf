//! The API key that writes (enroll, upload, erase) need.
//!
//! The key comes in the `x-api-key` header or as `Authorization: Bearer <key>`. A server
//! without a configured key refuses every write, unless it was told explicitly that writes
//! without a key are fine (`twin serve --allow-writes-without-key`, which listens on loopback
//! only). Such a keyless write must come from this machine as its own page or a local tool
//! sends it, never as a web page elsewhere can make a browser send it: from a loopback peer,
//! with a loopback `Host` (a DNS-rebound name is refused), with no `Origin` but the server's own,
//! not marked cross-site by the browser, and a `POST` with a JSON body (a cross-site form or a
//! "simple" request cannot send one without the browser asking first). Reads and matching are
//! public.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

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
        let access = check(
            &parts.headers,
            state.config.api_key.as_deref(),
            state.config.allow_writes_without_key,
        )?;
        if state.config.api_key.is_none() {
            local_write(parts)?;
        }
        Ok(access)
    }
}

/// Whether a name is this machine's loopback: `localhost` (and names under it), `127.0.0.0/8`,
/// `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a `Host` header or an origin's authority, without the port.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The request's `Host` (or its URI's authority), if any.
pub fn request_host(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// The checks of a write to a keyless server (see the module documentation).
fn local_write(parts: &Parts) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::forbidden(format!(
            "this server has no API key, so it accepts changes only from this machine's own page \
             and tools: {why}"
        )))
    };
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) if peer.ip().is_loopback() => {}
        Some(_) => return refuse("the request came from another machine"),
        None => return refuse("where the request came from is unknown"),
    }
    let Some(host) = request_host(parts) else {
        return refuse("the request names no host");
    };
    if !is_loopback_host(host_of(host)) {
        return refuse("the request was sent to a name that is not this machine");
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if authority != Some(host) {
            return refuse("the request came from another site's page");
        }
    }
    if parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return refuse("the browser says the request came from another site");
    }
    if parts.method == Method::POST {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return refuse(
                "a POST that changes something must send Content-Type: application/json",
            );
        }
    }
    Ok(())
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

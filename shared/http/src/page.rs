//! The web page and the OpenAPI document, compiled into the binary.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const FAVICON_SVG: &str = include_str!("../web/favicon.svg");
/// The API's OpenAPI 3.1 document.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The page may load only its own script, style and pictures (and the photo being matched or
/// the video filmed, which it shows from `blob:` URLs), and connect only to its own origin and,
/// when uploads are presigned, to where they go (`upload_origin`).
pub fn page_csp(upload_origin: Option<&str>) -> String {
    let extra = upload_origin
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:/-_[]".contains(&b))
        })
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
         media-src 'self' blob:; connect-src 'self'{extra}; form-action 'none'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`, with the page's content security policy.
pub fn index(csp: &HeaderValue) -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    r
}

/// `GET /app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    asset("application/json", OPENAPI_JSON)
}

/// `GET /favicon.svg`.
pub async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

#[cfg(test)]
mod tests {
    use super::page_csp;

    #[test]
    fn the_page_connects_to_its_origin_and_where_uploads_go_only() {
        assert!(page_csp(None).contains("connect-src 'self';"));
        let aws = page_csp(Some("https://b-1.s3.us-east-1.amazonaws.com"));
        assert!(
            aws.contains("connect-src 'self' https://b-1.s3.us-east-1.amazonaws.com;"),
            "{aws}"
        );
        // Anything that could add a directive is not an origin.
        let hostile = page_csp(Some("https://x; script-src *"));
        assert!(hostile.contains("connect-src 'self';"), "{hostile}");
        assert!(!hostile.contains("script-src *"), "{hostile}");
    }
}

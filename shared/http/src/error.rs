//! The one place where failures become HTTP responses.
//!
//! Every error a caller can see is `{"error": {"code", "message"}}` with a status that says
//! what kind of failure it was. Messages of internal errors are logged and replaced by a
//! generic sentence: file paths, library messages and the like never reach a caller.

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use twin_app::Error as AppError;

/// What a caller is told when something failed on the server's side.
pub const INTERNAL_MESSAGE: &str =
    "something went wrong on our side; it has been logged, please try again later";

/// An error response: a status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`not_found`, `no_face`, ...).
    pub code: &'static str,
    /// A sentence a person understands.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: a write without a valid API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the request may not do this, whoever sends it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: the body is larger than the route accepts.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 415: not a kind of content the route accepts.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 500: logs `detail` (never shown) and answers with [`INTERNAL_MESSAGE`].
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_MESSAGE,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(twin_app::admission::RETRY_AFTER_SECONDS),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"twin\""),
            );
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::UnsupportedMedia(m) => ApiError::unsupported_media(m),
            AppError::TooLarge(m) => ApiError::too_large(m),
            AppError::NoFace(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", m),
            AppError::BadImage(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_image", m)
            }
            AppError::BadInput(m) => ApiError::bad_request(m),
            AppError::NotFound(m) => ApiError::not_found(m),
            AppError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Busy(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            AppError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media(
                "send this as JSON, with the header Content-Type: application/json",
            ),
            JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
                "the JSON body does not have the expected fields: {}",
                without_prefix(&e.body_text())
            )),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("the body is not valid JSON")
            }
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::too_large("the JSON body is larger than this server accepts")
            }
            JsonRejection::BytesRejection(_) => ApiError::bad_request("the body could not be read"),
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!(
            "bad query parameters: {}",
            without_prefix(&r.body_text())
        ))
    }
}

/// axum's "Failed to deserialize ...: " before serde's own words.
fn without_prefix(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::not_found("there is nothing at this address")
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("the upload is larger than this server accepts")
        } else {
            ApiError::bad_request("the form upload could not be read (multipart/form-data)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_errors_map_to_statuses() {
        let cases = [
            (
                AppError::UnsupportedMedia("x".into()),
                415,
                "unsupported_media_type",
            ),
            (AppError::TooLarge("x".into()), 413, "too_large"),
            (AppError::NoFace("x".into()), 422, "no_face"),
            (AppError::BadImage("x".into()), 422, "bad_image"),
            (AppError::BadInput("x".into()), 400, "bad_request"),
            (AppError::NotFound("x".into()), 404, "not_found"),
            (AppError::Conflict("x".into()), 409, "conflict"),
            (AppError::Busy("x".into()), 503, "busy"),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!(
                (a.status.as_u16(), a.code, a.message.as_str()),
                (status, code, "x")
            );
        }
    }

    #[test]
    fn internal_text_is_not_shown() {
        let a = ApiError::from(AppError::Internal(
            "open /secret/path/dataset/CURRENT: permission denied".into(),
        ));
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(a.message, INTERNAL_MESSAGE);
        assert!(!a.message.contains("secret"));
    }
}

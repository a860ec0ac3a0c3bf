//! The API's response bodies, typed: what each use case returns, with the picture URLs the page
//! loads (`crop_url`, `picture_url`, `crop_urls`) beside the storage keys, and nothing internal
//! (an enrollment's raw upload key and outbox flag are not shown).

use std::collections::BTreeMap;

use serde::Serialize;
use twin_app::enrollment::Enrollment;
use twin_app::gallery::{IdentityInfo, IdentityPage};
use twin_app::matching::{MatchResponse, MatchedFace};
use twin_core::enrollment::{advice, EnrollmentState, EnrollmentStatus};
use twin_core::gallery::Hit;
use twin_core::keys;
use twin_core::media::{MAX_VIDEO_BYTES, UPLOAD_TYPES};

/// The picture URL of a crop key (`crops/…` → `/v1/crops/…`).
pub fn crop_url(key: &str) -> Option<String> {
    key.strip_prefix(keys::CROPS)
        .map(|rest| format!("/v1/crops/{rest}"))
}

/// One lookalike.
#[derive(Debug, Serialize)]
pub struct HitBody {
    #[serde(flatten)]
    hit: Hit,
    /// Its closest crop's picture.
    #[serde(skip_serializing_if = "Option::is_none")]
    crop_url: Option<String>,
}

/// One face of a match photo.
#[derive(Debug, Serialize)]
pub struct FaceBody {
    #[serde(rename = "box")]
    bbox: [i64; 4],
    landmarks: [[i64; 2]; 5],
    matches: Vec<HitBody>,
}

/// `POST /v1/match`'s answer.
#[derive(Debug, Serialize)]
pub struct MatchBody {
    dataset_version: u64,
    model: String,
    model_version: Option<u64>,
    width: u32,
    height: u32,
    faces: Vec<FaceBody>,
}

impl From<MatchResponse> for MatchBody {
    fn from(r: MatchResponse) -> Self {
        let face = |f: MatchedFace| FaceBody {
            bbox: f.bbox,
            landmarks: f.landmarks,
            matches: f
                .matches
                .into_iter()
                .map(|hit| HitBody {
                    crop_url: crop_url(&hit.crop),
                    hit,
                })
                .collect(),
        };
        MatchBody {
            dataset_version: r.dataset_version,
            model: r.model,
            model_version: r.model_version,
            width: r.width,
            height: r.height,
            faces: r.faces.into_iter().map(face).collect(),
        }
    }
}

/// One person of the gallery.
#[derive(Debug, Serialize)]
pub struct IdentityBody {
    #[serde(flatten)]
    info: IdentityInfo,
    /// The picture's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    picture_url: Option<String>,
}

impl From<IdentityInfo> for IdentityBody {
    fn from(info: IdentityInfo) -> Self {
        IdentityBody {
            picture_url: info.picture.as_deref().and_then(crop_url),
            info,
        }
    }
}

/// `GET /v1/identities`'s answer.
#[derive(Debug, Serialize)]
pub struct IdentityPageBody {
    total: usize,
    offset: usize,
    identities: Vec<IdentityBody>,
}

impl From<IdentityPage> for IdentityPageBody {
    fn from(p: IdentityPage) -> Self {
        IdentityPageBody {
            total: p.total,
            offset: p.offset,
            identities: p.identities.into_iter().map(IdentityBody::from).collect(),
        }
    }
}

/// An enrollment as callers see it.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    upload_id: String,
    slug: String,
    display_name: String,
    state: EnrollmentState,
    error: Option<String>,
    frames_sampled: Option<u32>,
    kept: Option<u32>,
    rejected: BTreeMap<String, u32>,
    turned_left: Option<bool>,
    turned_right: Option<bool>,
    dataset_version: Option<u64>,
    crops: Vec<String>,
    /// The crops' pictures.
    crop_urls: Vec<String>,
    /// What the person can do about a failed or weak enrollment.
    advice: Vec<String>,
}

impl From<EnrollmentStatus> for StatusBody {
    fn from(s: EnrollmentStatus) -> Self {
        let advice = advice(&s);
        StatusBody {
            crop_urls: s.crops.iter().filter_map(|k| crop_url(k)).collect(),
            advice,
            upload_id: s.upload_id,
            slug: s.slug,
            display_name: s.display_name,
            state: s.state,
            error: s.error,
            frames_sampled: s.frames_sampled,
            kept: s.kept,
            rejected: s.rejected,
            turned_left: s.turned_left,
            turned_right: s.turned_right,
            dataset_version: s.dataset_version,
            crops: s.crops,
        }
    }
}

/// What `POST /v1/enrollments` answers: where to send the video and where to follow it.
#[derive(Debug, Serialize)]
pub struct EnrollmentCreated {
    upload_id: String,
    slug: String,
    display_name: String,
    upload_url: String,
    upload_method: &'static str,
    /// Headers the upload must carry (a presigned upload signs them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    upload_headers: BTreeMap<String, String>,
    upload_content_types: &'static [&'static str],
    max_upload_bytes: usize,
    /// Where to follow it.
    pub status_url: String,
}

impl EnrollmentCreated {
    /// The answer for `e`, its upload going to `upload_url` with `upload_headers`.
    pub fn new(
        e: Enrollment,
        upload_url: String,
        upload_headers: BTreeMap<String, String>,
    ) -> Self {
        EnrollmentCreated {
            status_url: format!("/v1/enrollments/{}", e.upload_id),
            upload_url,
            upload_headers,
            upload_method: "PUT",
            upload_content_types: &UPLOAD_TYPES,
            max_upload_bytes: MAX_VIDEO_BYTES,
            upload_id: e.upload_id,
            slug: e.slug,
            display_name: e.display_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_urls_beside_the_keys() {
        assert_eq!(
            crop_url("crops/ada/abc-1/100.png").as_deref(),
            Some("/v1/crops/ada/abc-1/100.png")
        );
        assert_eq!(crop_url("uploads/ada/x.mp4"), None);
        let mut s = EnrollmentStatus::created("abc-1".into(), "ada".into(), "Ada".into());
        s.upload("uploads/ada/abc-1.mp4".into()).unwrap();
        s.crop(vec![
            "crops/ada/abc-1/1.png".into(),
            "crops/ada/abc-1/2.png".into(),
        ])
        .unwrap();
        let v = serde_json::to_value(StatusBody::from(s)).unwrap();
        assert_eq!(
            v["crop_urls"],
            serde_json::json!(["/v1/crops/ada/abc-1/1.png", "/v1/crops/ada/abc-1/2.png"])
        );
        assert_eq!(v["state"], "cropped");
        assert!(
            v.get("source_key").is_none() && v.get("queued").is_none(),
            "{v}"
        );
        let info = IdentityInfo {
            slug: "ada".into(),
            display_name: "Ada".into(),
            crops: 2,
            picture: Some("crops/ada/abc-1/1.png".into()),
        };
        let v = serde_json::to_value(IdentityBody::from(info)).unwrap();
        assert_eq!(v["picture_url"], "/v1/crops/ada/abc-1/1.png");
        assert_eq!(v["slug"], "ada");
    }
}

//! Enrolling: a person's name → an enrollment waiting for its upload (a new person, or more
//! videos of someone in the gallery), the upload (presigned to the store, or sent to this
//! process), and the enrollment's status as the person follows it (`docs/STATES.md`).

use std::sync::Arc;

use serde::Serialize;
use twin_core::dataset::{self, People};
use twin_core::enrollment::{self, EnrollmentState, EnrollmentStatus};
use twin_core::keys;
use twin_core::media::{self, Media};
use twin_core::names;
use twin_core::store::{Condition, ObjectStore, PresignedPut, UploadSigner};

use crate::error::{Error, Result};
use crate::gallery::GalleryView;

/// A new enrollment.
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    /// Its id.
    pub upload_id: String,
    /// The identity's slug.
    pub slug: String,
    /// The identity's name.
    pub display_name: String,
}

/// The enrollment use case.
pub struct Enrollments {
    store: Arc<dyn ObjectStore>,
    /// The gallery this process serves, caught up when someone waiting is indexed.
    gallery: Option<Arc<GalleryView>>,
}

impl Enrollments {
    /// Enrollments over `store`; `gallery`, when this process serves one.
    pub fn new(store: Arc<dyn ObjectStore>, gallery: Option<Arc<GalleryView>>) -> Self {
        Enrollments { store, gallery }
    }

    /// Starts an enrollment for `name`: the upload comes next.
    ///
    /// A new enrollment is a new person: when the name's slug is already someone's (in the
    /// gallery, or an enrollment with stored uploads or crops), it gets the next free one
    /// (`barack_obama_2`), so "barack-OBAMA!" never folds into Barack Obama. More videos of a
    /// person already in the gallery go to `join` (their slug), which keeps their name.
    pub fn create(&self, name: &str, join: Option<&str>) -> Result<Enrollment> {
        let mut display_name = names::display_name(name)?;
        let manifest = dataset::load_current_people(&*self.store)?;
        let slug = match join {
            Some(slug) => {
                let known = manifest
                    .as_ref()
                    .and_then(|m| m.identity(slug))
                    .ok_or_else(|| {
                        Error::NotFound(format!("there is no person {slug:?} to join"))
                    })?;
                display_name = known.display_name.clone();
                slug.to_string()
            }
            None => self.free_slug(&names::slugify(&display_name), manifest.as_ref())?,
        };
        let upload_id = keys::new_upload_id();
        let status =
            EnrollmentStatus::created(upload_id.clone(), slug.clone(), display_name.clone());
        enrollment::save_status(&*self.store, &status, Condition::IfAbsent)?;
        Ok(Enrollment {
            upload_id,
            slug,
            display_name,
        })
    }

    /// [`Enrollments::create`] with an upload presigned by `signer`: straight to the store, its
    /// type and size (checked here against the media rules) signed, so nothing else is accepted.
    /// The type is signed as the client sent it (its `PUT` carries the same header).
    pub fn create_presigned(
        &self,
        name: &str,
        join: Option<&str>,
        content_type: &str,
        size: Option<u64>,
        signer: &dyn UploadSigner,
    ) -> Result<(Enrollment, PresignedPut)> {
        let media = Media::from_mime(content_type).ok_or_else(|| {
            Error::UnsupportedMedia(format!(
                "say the upload's content_type: a video (video/mp4, video/quicktime, video/webm) or a photo (image/jpeg, image/png, image/webp); {content_type:?} is not one"
            ))
        })?;
        let size = size
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::BadInput("say the upload's size in bytes".into()))?;
        if size > media.limit() as u64 {
            return Err(Error::TooLarge(media::too_large_message(
                size,
                media.limit(),
            )));
        }
        let e = self.create(name, join)?;
        let key = keys::upload_key(&e.slug, &e.upload_id, media)?;
        let put = signer
            .presign_put(&key, content_type, size)
            .map_err(|err| Error::Internal(format!("presigning failed: {err}")))?;
        Ok((e, put))
    }

    /// `base`, or `base_2`, `base_3`, … : the first slug that is nobody's yet.
    fn free_slug(&self, base: &str, manifest: Option<&People>) -> Result<String> {
        names::check_slug(base)?;
        for n in 1..=999u32 {
            let slug = if n == 1 {
                base.to_string()
            } else {
                let suffix = format!("_{n}");
                let mut head = base.to_string();
                head.truncate(names::MAX_SLUG - suffix.len());
                format!("{}{suffix}", head.trim_end_matches('_'))
            };
            let in_gallery = manifest.is_some_and(|m| m.identity(&slug).is_some());
            if in_gallery
                || !self.store.list(&keys::uploads_of(&slug)?)?.is_empty()
                || !self.store.list(&keys::crops_of(&slug)?)?.is_empty()
            {
                continue;
            }
            return Ok(slug);
        }
        Err(Error::Conflict(format!(
            "too many people are named like {base:?}"
        )))
    }

    /// Checks that `upload_id` still waits for its upload (before reading a large body).
    pub fn expect_upload(&self, upload_id: &str) -> Result<EnrollmentStatus> {
        Ok(self.waiting_record(upload_id)?.0)
    }

    /// The record of an enrollment still waiting for its upload, with its tag (for the
    /// conditional write that records the upload).
    fn waiting_record(&self, upload_id: &str) -> Result<(EnrollmentStatus, String)> {
        let missing = || Error::NotFound(format!("no enrollment {upload_id:?}"));
        let key = keys::status_key(upload_id).map_err(|_| missing())?;
        let read = self.store.get(&key)?.ok_or_else(missing)?;
        let status: EnrollmentStatus = serde_json::from_slice(&read.data)
            .map_err(|e| Error::Internal(format!("{key} is damaged: {e}")))?;
        if status.state != EnrollmentState::Created {
            return Err(Error::Conflict(
                "this enrollment already has its video; start a new enrollment to send another"
                    .into(),
            ));
        }
        Ok((status, read.tag))
    }

    /// Stores an enrollment's video or photo sent to this process (`created → uploaded`); the
    /// host then has it ingested.
    pub fn store_upload(
        &self,
        upload_id: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<EnrollmentStatus> {
        let (mut status, tag) = self.waiting_record(upload_id)?;
        let media = Media::from_mime(content_type).ok_or_else(|| {
            Error::UnsupportedMedia(format!(
                "{content_type:?} is not accepted: send {}",
                media::ACCEPTED
            ))
        })?;
        if bytes.len() > media.limit() {
            return Err(Error::TooLarge(media::too_large_message(
                bytes.len() as u64,
                media.limit(),
            )));
        }
        if bytes.is_empty() {
            return Err(Error::BadImage("the upload is empty".into()));
        }
        let upload_key = keys::upload_key(&status.slug, upload_id, media)?;
        self.store.put(&upload_key, bytes, Condition::None)?;
        status.upload(upload_key)?;
        // Only if nobody else stored an upload for it meanwhile (two PUTs at once: one wins).
        enrollment::save_status(&*self.store, &status, Condition::IfMatch(tag)).map_err(
            |e| match e {
                twin_core::enrollment::StepError::Conflict(_) => Error::Conflict(
                    "this enrollment already has its video; start a new enrollment to send another"
                        .into(),
                ),
                other => Error::from(other),
            },
        )?;
        Ok(status)
    }

    /// The status of an enrollment.
    pub fn status(&self, upload_id: &str) -> Result<EnrollmentStatus> {
        enrollment::read_status(&*self.store, upload_id)?
            .ok_or_else(|| Error::NotFound(format!("no enrollment {upload_id:?}")))
    }

    /// [`Enrollments::status`] for someone waiting to be matched: when it says `indexed` in a
    /// dataset version newer than the gallery this process serves, the gallery catches up
    /// first, so "you can be matched now" is true here at once.
    pub fn status_fresh(&self, upload_id: &str) -> Result<EnrollmentStatus> {
        let status = self.status(upload_id)?;
        if let (Some(gallery), EnrollmentState::Indexed, Some(v)) =
            (&self.gallery, status.state, status.dataset_version)
        {
            gallery.catch_up(v)?;
        }
        Ok(status)
    }
}

/// Takes an enrollment's upload sent to this process (the local host; in AWS uploads go to the
/// bucket and its events start ingest instead).
pub trait UploadReceiver: Send + Sync {
    /// Stores the upload of `upload_id` and has it ingested; returns the status afterwards.
    fn receive(
        &self,
        upload_id: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<EnrollmentStatus>;
}

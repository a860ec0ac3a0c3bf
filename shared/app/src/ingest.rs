//! Ingest: an uploaded video or photo → aligned face crops in `crops/`, the enrollment
//! `cropped`, and the dataset step's message sent (an outbox: the message is owed until it is
//! recorded as sent). Uploads arrive as an enrollment's upload (presigned or sent to this
//! process) or as any file dropped in a person's folder (`uploads/<person>/<file>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use image::RgbImage;
use twin_core::dataset;
use twin_core::enrollment::{self, EnrollmentState, EnrollmentStatus};
use twin_core::keys;
use twin_core::media::{self, Media, MAX_VIDEO_BYTES};
use twin_core::messages::IngestMessage;
use twin_core::names;
use twin_core::queue::Queue;
use twin_core::store::{Condition, ObjectStore};
use twin_faces::enroll::{enroll_video, EnrollError, EnrollOptions};
use twin_faces::imageio;
use twin_faces::pipeline::{cut_chip, FacePipeline};
use twin_model::embed::Embedder;

use crate::error::{Error, Result};
use crate::matching::photo_limits;

/// The ingest use case.
pub struct Ingest {
    store: Arc<dyn ObjectStore>,
    /// Where the dataset step's messages go.
    queue: Arc<dyn Queue>,
    photos: Arc<FacePipeline>,
    videos: Arc<FacePipeline>,
    /// Checks that a video shows one person throughout.
    backbone: Arc<Embedder>,
}

impl Ingest {
    /// Ingest over `store`, sending to `queue`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn Queue>,
        photos: Arc<FacePipeline>,
        videos: Arc<FacePipeline>,
        backbone: Arc<Embedder>,
    ) -> Self {
        Ingest {
            store,
            queue,
            photos,
            videos,
            backbone,
        }
    }

    fn status(&self, upload_id: &str) -> Result<EnrollmentStatus> {
        enrollment::read_status(&*self.store, upload_id)?
            .ok_or_else(|| Error::NotFound(format!("no enrollment {upload_id:?}")))
    }

    /// Writes an enrollment's record, unless it was deleted meanwhile (its person was erased
    /// while this ingest ran: the record is not brought back).
    fn save(&self, s: &EnrollmentStatus, cond: Condition) -> Result<()> {
        let cond = match cond {
            Condition::None => match self.store.get(&keys::status_key(&s.upload_id)?)? {
                Some(current) => Condition::IfMatch(current.tag),
                None => {
                    tracing::info!(upload_id = %s.upload_id, "enrollment erased while it was ingested; its record stays deleted");
                    return Ok(());
                }
            },
            other => other,
        };
        Ok(enrollment::save_status(&*self.store, s, cond)?)
    }

    /// Records `→ failed` with the reason.
    pub fn fail(&self, mut s: EnrollmentStatus, reason: String) -> Result<()> {
        tracing::warn!(upload_id = %s.upload_id, reason = %reason, "enrollment failed");
        s.fail(reason)?;
        self.save(&s, Condition::None)
    }

    /// Cuts the faces of an `uploaded` enrollment, stores the crops, records `cropped` and sends
    /// the dataset step's message. A `cropped` one whose message is not known to be sent has it
    /// sent (a retry after the send failed); any other state is left alone (a repeated event).
    /// An upload that cannot be used ends `failed` with the reason; errors are for what a retry
    /// may fix.
    pub fn run(&self, upload_id: &str) -> Result<()> {
        let mut status = self.status(upload_id)?;
        if status.state == EnrollmentState::Cropped {
            return self.send_pending(upload_id);
        }
        if status.state != EnrollmentState::Uploaded {
            return Ok(());
        }
        let Some(key) = status.source_key.clone() else {
            return self.fail(status, "the upload is missing".into());
        };
        let Some(obj) = self.store.get(&key)? else {
            return self.fail(status, "the upload is missing".into());
        };
        // Not a known type: read as a photo, which then fails to decode with its reason.
        let media = Media::from_file_name(&key).unwrap_or(Media::Jpeg);
        if obj.data.len() > media.limit() {
            return self.fail(
                status,
                media::too_large_message(obj.data.len() as u64, media.limit()),
            );
        }
        let mut chips: Vec<(u64, RgbImage)> = Vec::new();
        let mut rejected: BTreeMap<String, u32> = BTreeMap::new();
        if media.is_video() {
            let tmp = tempfile::Builder::new()
                .suffix(&format!(".{}", media.extension()))
                .tempfile()
                .map_err(Error::internal)?;
            std::fs::write(tmp.path(), &obj.data).map_err(Error::internal)?;
            let report = match enroll_video(
                tmp.path(),
                &*self.videos,
                Some(&*self.backbone),
                &EnrollOptions::default(),
            ) {
                Ok(r) => r,
                Err(EnrollError::Video(e)) => {
                    return self.fail(status, format!("the video could not be used: {e}"))
                }
                Err(e @ EnrollError::NotEnoughFrames { .. }) => {
                    // The counts stay with the failure: the advice is made from them.
                    if let EnrollError::NotEnoughFrames {
                        kept,
                        frames_sampled,
                        rejected_by_reason,
                        ..
                    } = &e
                    {
                        status.frames_sampled = Some(*frames_sampled as u32);
                        status.kept = Some(*kept as u32);
                        status.rejected = rejected_by_reason
                            .iter()
                            .map(|(r, n)| (r.to_string(), *n as u32))
                            .collect();
                    }
                    return self.fail(status, e.to_string());
                }
                Err(e) => return Err(Error::internal(e)),
            };
            for (r, n) in &report.rejected_by_reason {
                rejected.insert(r.to_string(), *n as u32);
            }
            status.frames_sampled = Some(report.frames_sampled as u32);
            status.turned_left = Some(report.turned_left);
            status.turned_right = Some(report.turned_right);
            chips = report.kept.into_iter().map(|k| (k.ms, k.chip)).collect();
        } else {
            let img = match imageio::decode(&obj.data, &photo_limits()) {
                Ok(i) => imageio::fit_pixels(i, imageio::SEARCH_PIXELS).0,
                Err(e) => return self.fail(status, Error::from(e).to_string()),
            };
            let faces = self.photos.find_faces(&img)?;
            match faces.first() {
                Some(f) => chips.push((0, cut_chip(&img, f))),
                None => return self.fail(status, "no face was found in the photo".into()),
            }
            status.frames_sampled = Some(1);
        }
        let mut crops = Vec::with_capacity(chips.len());
        for (ms, chip) in &chips {
            let key = keys::crop_key(&status.slug, upload_id, *ms)?;
            self.store.put(&key, &encode_png(chip)?, Condition::None)?;
            crops.push(key);
        }
        status.rejected = rejected;
        status.crop(crops)?;
        self.save(&status, Condition::None)?;
        if enrollment::read_status(&*self.store, upload_id)?.is_none() {
            // Erased while the faces were cut: the crops just stored go too.
            return crate::erasure::forget_upload(&*self.store, upload_id, &status.crops);
        }
        self.send_pending(upload_id)
    }

    /// The outbox: sends the dataset step's message of a `cropped` enrollment whose message is
    /// not known to be sent, then records that it was. A failed send fails the call (the event
    /// is redelivered and comes back here); a send whose record fails is sent again on
    /// redelivery, which the dataset step takes as a no-op. The record is written only if
    /// unchanged since it was read, so a dataset step that marked it `indexed` meanwhile is
    /// never undone.
    pub fn send_pending(&self, upload_id: &str) -> Result<()> {
        let key = keys::status_key(upload_id)?;
        let Some(stored) = self.store.get(&key)? else {
            return Ok(());
        };
        let Ok(mut current) = serde_json::from_slice::<EnrollmentStatus>(&stored.data) else {
            return Ok(());
        };
        if !current.owes_message() {
            return Ok(());
        }
        self.resend(&current)?;
        current.mark_queued()?;
        match self.save(&current, Condition::IfMatch(stored.tag)) {
            Ok(()) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finishes an enrollment a stopped process left between steps ([`Ingest::pending`]): an
    /// `uploaded` one is ingested; a `cropped` one has its message sent, again if it was sent
    /// already (it may have been lost with the process's queue), and recorded as sent.
    pub fn resume(&self, s: &EnrollmentStatus) -> Result<()> {
        match s.state {
            EnrollmentState::Uploaded => self.run(&s.upload_id),
            _ if s.owes_message() => self.send_pending(&s.upload_id),
            _ => self.resend(s),
        }
    }

    /// Sends the dataset step's message of a `cropped` enrollment (again: the step takes a
    /// repeated message as a no-op), as after a crash.
    pub fn resend(&self, s: &EnrollmentStatus) -> Result<()> {
        self.queue
            .send(&IngestMessage::for_status(s).to_json())
            .map_err(|e| Error::Internal(format!("cannot queue the crops: {e}")))
    }

    /// Takes an object stored under `uploads/<folder>/<file>` (an S3 upload event; `tag` is its
    /// ETag) through ingest: an enrollment's presigned upload (`uploads/<slug>/<upload-id>.<ext>`
    /// of a `created` enrollment), or any file dropped in a person's folder (the drop folder:
    /// the folder names the person, e.g. `uploads/ada_lovelace/clip.mp4`). The same object
    /// always gets the same upload id, so a repeated event changes nothing. An object that
    /// cannot be used ends `failed` with the reason (and is not an error: retrying cannot help).
    /// `size` (from the event), when over the limits, fails the upload without reading it.
    pub fn uploaded_object(
        &self,
        key: &str,
        tag: &str,
        size: Option<u64>,
    ) -> Result<EnrollmentStatus> {
        let too_large = size.filter(|&n| n > MAX_VIDEO_BYTES as u64);
        if let (Some(n), Err(_)) = (too_large, twin_core::store::check_key(key)) {
            return Err(Error::TooLarge(format!(
                "an upload of {n} bytes with an unusable name was left alone"
            )));
        }
        twin_core::store::check_key(key).map_err(|e| Error::BadInput(e.to_string()))?;
        let upload = keys::parse_upload_key(key)
            .ok_or_else(|| Error::BadInput(format!("{key} is not uploads/<person>/<file>")))?;
        // An upload of a person who was erased (it arrived after the erasure): deleted unread.
        let refused = dataset::refused_uploads(&*self.store)?;
        let drop_id = keys::drop_upload_id(key, tag);
        if let Some(id) = upload
            .upload_id
            .filter(|id| refused.contains(*id))
            .or(refused.contains(&drop_id).then_some(drop_id.as_str()))
        {
            crate::erasure::forget_upload(&*self.store, id, &[])?;
            self.store.delete(key)?;
            return Err(Error::NotFound(format!(
                "{key} belongs to an erased person and was deleted"
            )));
        }
        // A presigned enrollment upload.
        if let Some(id) = upload.upload_id {
            let record = match self.status(id) {
                Ok(st) => Some(st),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(mut st) = record {
                if st.slug == upload.folder && st.source_key.as_deref().is_none_or(|k| k == key) {
                    match st.state {
                        EnrollmentState::Created => {
                            st.upload(key.to_string())?;
                            self.save(&st, Condition::None)?;
                        }
                        EnrollmentState::Uploaded => {}
                        EnrollmentState::Cropped => {
                            self.send_pending(id)?;
                            return self.status(id);
                        }
                        EnrollmentState::Indexed | EnrollmentState::Failed => return Ok(st),
                    }
                    if let Some(n) = too_large {
                        self.fail(st, media::too_large_message(n, MAX_VIDEO_BYTES))?;
                    } else {
                        self.run(id)?;
                    }
                    return self.status(id);
                }
            }
        }
        // The drop folder.
        let (display_name, slug) = self.drop_identity(upload.folder)?;
        let upload_id = drop_id;
        if let Ok(st) = self.status(&upload_id) {
            if st.owes_message() {
                self.send_pending(&upload_id)?;
                return self.status(&upload_id);
            }
            if st.state != EnrollmentState::Uploaded {
                return Ok(st);
            }
        } else {
            let mut st =
                EnrollmentStatus::dropped(upload_id.clone(), slug, display_name, key.to_string());
            // Refused from its name and size alone, without reading it.
            let refused = match upload.media {
                None => Some(format!("{:?} is not {}", upload.file, media::ACCEPTED)),
                Some(m) => size
                    .filter(|&n| n > m.limit() as u64)
                    .map(|n| media::too_large_message(n, m.limit())),
            };
            if let Some(reason) = refused {
                st.fail(reason)?;
            }
            match self.save(&st, Condition::IfAbsent) {
                Ok(()) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            if st.state == EnrollmentState::Failed {
                return self.status(&upload_id);
            }
        }
        self.run(&upload_id)?;
        self.status(&upload_id)
    }

    /// The person a drop-folder name stands for: the gallery's name when the slug is known,
    /// else the name the folder spells ([`names::person_from_folder`]).
    fn drop_identity(&self, folder: &str) -> Result<(String, String)> {
        let display_name = names::person_from_folder(folder)?;
        let slug = names::slugify(&display_name);
        names::check_slug(&slug)?;
        let known = dataset::load_current_people(&*self.store)?
            .and_then(|m| m.identity(&slug).map(|i| i.display_name.clone()));
        Ok((known.unwrap_or(display_name), slug))
    }

    /// Enrollments left between steps (a process stopped in the middle): `uploaded` ones are
    /// owed their ingest, `cropped` ones their message.
    pub fn pending(&self) -> Result<Vec<EnrollmentStatus>> {
        Ok(enrollment::list_statuses(&*self.store)?
            .into_iter()
            .filter(|s| s.state.is_pending())
            .collect())
    }
}

/// A chip as PNG bytes.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(Error::internal)?;
    Ok(out.into_inner())
}

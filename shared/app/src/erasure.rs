//! Erasure: a person asks to be forgotten. They are hidden at once (never matched or shown from
//! the moment the request arrives), their embeddings leave the dataset in a new version, and
//! their crops, uploads and enrollment records are deleted (`docs/STATES.md`).

use std::sync::Arc;

use twin_core::dataset::Update;
use twin_core::enrollment;
use twin_core::keys;
use twin_core::store::ObjectStore;

use crate::error::Result;
use crate::gallery::{DatasetWriter, GalleryView};

/// The erasure use case.
pub struct Erasure {
    store: Arc<dyn ObjectStore>,
    writer: Arc<DatasetWriter>,
    gallery: Arc<GalleryView>,
    /// Length of the embeddings (the backbone's).
    dim: usize,
}

impl Erasure {
    /// Erasure over `store`, committing through `writer`, hiding in `gallery`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        writer: Arc<DatasetWriter>,
        gallery: Arc<GalleryView>,
        dim: usize,
    ) -> Self {
        Erasure {
            store,
            writer,
            gallery,
            dim,
        }
    }

    /// Erases the person `slug`: their embeddings, crops, uploads and enrollment records.
    pub fn erase(&self, slug: &str) -> Result<()> {
        let ident = self.gallery.identity(slug)?;
        let _hidden = self.gallery.hide(&ident.slug);
        self.writer.commit(
            self.dim,
            &[Update::Erase {
                slug: ident.slug.clone(),
            }],
        )?;
        self.gallery.refresh()?;
        for prefix in [keys::crops_of(slug)?, keys::uploads_of(slug)?] {
            for k in self.store.list(&prefix)? {
                self.store.delete(&k)?;
            }
        }
        for s in enrollment::list_statuses(&*self.store)? {
            if s.slug == slug {
                self.store.delete(&keys::status_key(&s.upload_id)?)?;
            }
        }
        Ok(())
    }
}

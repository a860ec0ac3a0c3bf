//! The gallery as this process serves it: the current dataset version loaded for search, the
//! people being erased (hidden at once, before their erasure commits), gallery pages and crops,
//! and the one writer of dataset versions in this process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use twin_core::dataset::{self, Update};
use twin_core::gallery::Gallery;
use twin_core::keys;
use twin_core::store::ObjectStore;
use twin_core::sync;

use crate::error::{Error, Result};

/// One identity of the gallery.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityInfo {
    /// Its slug.
    pub slug: String,
    /// Its name.
    pub display_name: String,
    /// Number of crops.
    pub crops: usize,
    /// A crop to show.
    pub picture: Option<String>,
}

impl From<dataset::Identity> for IdentityInfo {
    fn from(i: dataset::Identity) -> Self {
        IdentityInfo {
            picture: i.crops.first().cloned(),
            crops: i.crops.len(),
            slug: i.slug,
            display_name: i.display_name,
        }
    }
}

/// A page of the gallery.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityPage {
    /// Identities in all.
    pub total: usize,
    /// Index of the first on this page.
    pub offset: usize,
    /// This page.
    pub identities: Vec<IdentityInfo>,
}

/// Commits dataset versions for this process, one at a time (other processes are kept apart by
/// the conditional write of `dataset/CURRENT`).
pub struct DatasetWriter {
    store: Arc<dyn ObjectStore>,
    lock: Mutex<()>,
}

impl DatasetWriter {
    /// A writer over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        DatasetWriter {
            store,
            lock: Mutex::new(()),
        }
    }

    /// Commits `updates` on the current version (embeddings of `dim` values); returns the version
    /// now current. Compacts when the version has grown too many segments.
    pub fn commit(&self, dim: usize, updates: &[Update]) -> Result<u64> {
        Ok(self.commit_reporting(dim, updates)?.0)
    }

    /// [`DatasetWriter::commit`], also saying what the compaction that followed it did.
    pub fn commit_reporting(
        &self,
        dim: usize,
        updates: &[Update],
    ) -> Result<(u64, Option<dataset::Compaction>)> {
        let _g = sync::lock(&self.lock);
        let v = dataset::commit(&*self.store, dim, updates)?;
        if dataset::needs_compaction(&*self.store)? {
            let c = dataset::compact(&*self.store)?;
            return Ok((c.version, Some(c)));
        }
        Ok((v, None))
    }

    /// Compacts the dataset now (see [`dataset::compact`]): erased people's rows and every older
    /// version are deleted, and a format-1 store is migrated.
    pub fn compact(&self) -> Result<dataset::Compaction> {
        let _g = sync::lock(&self.lock);
        Ok(dataset::compact(&*self.store)?)
    }

    /// Compacts when [`dataset::needs_compaction`] says so (opening a data folder, the functions
    /// after their work).
    pub fn compact_if_needed(&self) -> Result<Option<dataset::Compaction>> {
        let _g = sync::lock(&self.lock);
        if dataset::needs_compaction(&*self.store)? {
            return Ok(Some(dataset::compact(&*self.store)?));
        }
        Ok(None)
    }
}

/// The gallery served by this process. Opening it reads nothing: the current version is loaded
/// by the first search (or by [`GalleryView::warm`], which a server runs in the background as it
/// starts), so a process is ready at once whatever the gallery's size, and requests that need no
/// embeddings (pages, identities, pictures) never load them.
pub struct GalleryView {
    store: Arc<dyn ObjectStore>,
    /// `None` until loaded.
    current: RwLock<Option<Arc<Gallery>>>,
    /// One load at a time.
    loading: Mutex<()>,
    /// People being erased: never shown or matched, even before the erasure commits.
    hidden: RwLock<HashSet<String>>,
}

impl GalleryView {
    /// The gallery over `store`, not loaded yet.
    pub fn open(store: Arc<dyn ObjectStore>) -> Self {
        GalleryView {
            store,
            current: RwLock::new(None),
            loading: Mutex::new(()),
            hidden: RwLock::new(HashSet::new()),
        }
    }

    /// The gallery over `store`, loaded now.
    pub fn load(store: Arc<dyn ObjectStore>) -> Result<Self> {
        let view = Self::open(store);
        view.refresh()?;
        Ok(view)
    }

    /// The gallery searched now, loading the current version first if nothing is loaded yet.
    pub fn current(&self) -> Result<Arc<Gallery>> {
        if let Some(g) = sync::read(&self.current).clone() {
            return Ok(g);
        }
        let _one = sync::lock(&self.loading);
        if let Some(g) = sync::read(&self.current).clone() {
            return Ok(g);
        }
        self.refresh()?;
        Ok(sync::read(&self.current).clone().unwrap_or_default())
    }

    /// Loads the gallery now if nothing is loaded yet (a server's start, in the background);
    /// a failure is logged (the first search tries again).
    pub fn warm(&self) {
        let started = std::time::Instant::now();
        match self.current() {
            Ok(g) => tracing::info!(
                rows = g.rows(),
                ms = started.elapsed().as_millis() as u64,
                "gallery loaded"
            ),
            Err(e) => tracing::error!(error = %e, "cannot load the gallery"),
        }
    }

    /// The dataset version loaded (`None`: nothing loaded yet; 0: an empty dataset).
    pub fn loaded_version(&self) -> Option<u64> {
        sync::read(&self.current).as_ref().map(|g| g.version())
    }

    /// Loads the current dataset version; returns it.
    pub fn refresh(&self) -> Result<u64> {
        let g = match dataset::load_current_for_search(&self.store)? {
            Some(v) => Gallery::from_search(v),
            None => Gallery::default(),
        };
        let v = g.version();
        *sync::write(&self.current) = Some(Arc::new(g));
        Ok(v)
    }

    /// [`GalleryView::refresh`] when a version is loaded (one committed here is then searched at
    /// once); nothing otherwise (the first search loads the newest).
    pub fn refresh_if_loaded(&self) -> Result<()> {
        if self.loaded_version().is_some() {
            self.refresh()?;
        }
        Ok(())
    }

    /// Reloads when `dataset/CURRENT` moved (another process committed); errors are logged.
    pub fn refresh_if_moved(&self) {
        let current = match self.store.get(keys::DATASET_CURRENT) {
            Ok(Some(o)) => String::from_utf8_lossy(&o.data).trim().parse::<u64>().ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read dataset/CURRENT");
                return;
            }
        };
        let Some(loaded) = self.loaded_version() else {
            return;
        };
        if current.is_some_and(|v| v != loaded) {
            if let Err(e) = self.refresh() {
                tracing::error!(error = %e, "cannot load the new dataset version");
            }
        }
    }

    /// Reloads when `version` is newer than the one loaded (someone was just indexed in it).
    pub fn catch_up(&self, version: u64) -> Result<()> {
        if self.loaded_version().is_some_and(|v| version > v) {
            self.refresh()?;
        }
        Ok(())
    }

    /// The people hidden now.
    pub fn hidden(&self) -> HashSet<String> {
        sync::read(&self.hidden).clone()
    }

    /// Whether `slug` is hidden now.
    pub fn is_hidden(&self, slug: &str) -> bool {
        sync::read(&self.hidden).contains(slug)
    }

    /// Hides `slug` until the guard is dropped.
    pub fn hide(&self, slug: &str) -> Hidden<'_> {
        sync::write(&self.hidden).insert(slug.to_string());
        Hidden {
            view: self,
            slug: slug.to_string(),
        }
    }

    /// A page of the gallery, by slug (`limit` between 1 and 500).
    pub fn identities(&self, offset: usize, limit: usize) -> Result<IdentityPage> {
        let manifest = dataset::load_current_manifest(&*self.store)?;
        let hidden = self.hidden();
        let all: Vec<IdentityInfo> = manifest
            .map(|m| m.identities)
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !hidden.contains(&i.slug))
            .map(IdentityInfo::from)
            .collect();
        let total = all.len();
        let identities = all
            .into_iter()
            .skip(offset)
            .take(limit.clamp(1, 500))
            .collect();
        Ok(IdentityPage {
            total,
            offset,
            identities,
        })
    }

    /// One identity.
    pub fn identity(&self, slug: &str) -> Result<IdentityInfo> {
        let not_found = || Error::NotFound(format!("no identity {slug:?} in the gallery"));
        twin_core::names::check_slug(slug).map_err(|_| not_found())?;
        if self.is_hidden(slug) {
            return Err(not_found());
        }
        let manifest = dataset::load_current_manifest(&*self.store)?.ok_or_else(not_found)?;
        manifest
            .identity(slug)
            .cloned()
            .map(IdentityInfo::from)
            .ok_or_else(not_found)
    }

    /// The PNG bytes of a crop (not of a hidden person).
    pub fn crop(&self, key: &str) -> Result<Vec<u8>> {
        let nf = || Error::NotFound("no such picture".into());
        let owner = keys::crop_owner(key).ok_or_else(nf)?;
        if twin_core::store::check_key(key).is_err() || self.is_hidden(owner) {
            return Err(nf());
        }
        Ok(self.store.get(key)?.ok_or_else(nf)?.data)
    }
}

/// A person hidden from the gallery while the guard lives.
pub struct Hidden<'a> {
    view: &'a GalleryView,
    slug: String,
}

impl Drop for Hidden<'_> {
    fn drop(&mut self) {
        sync::write(&self.view.hidden).remove(&self.slug);
    }
}

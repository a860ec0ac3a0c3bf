//! The fault walk: a person's whole life in the product (enroll a photo, ingest, the dataset
//! step, train, promote, erase), with one fault injected at every call the steps make to the
//! store and the queue, and after recovery the same state as a run without faults.
//!
//! Three walks, each over every call of every step:
//! - **fail**: the Nth call fails and does nothing (a storage or queue error);
//! - **lost reply**: the Nth write happens, then reports a failure (a timeout after S3 or SQS
//!   took the request);
//! - **kill**: the process is killed just before its Nth write (a child process, aborted).
//!
//! Recovery is what the product does after each: the step is tried again as its host would (the
//! client repeats its request, the upload event or the queue message is delivered again, the
//! training schedule runs again, the user repeats the erasure); after a kill, a new process
//! opens the folder first (compaction of an interrupted erasure, enrollments left between steps
//! resumed, their messages sent again). The state after the step, every object in the store
//! and the messages waiting, must then equal the fault-free run's: nothing lost, nothing
//! half-written, nothing duplicated (a message delivered twice is allowed, as SQS does, and
//! must change nothing).
//!
//! Each step starts from a copy of the fault-free run's folder before it, so the walk costs one
//! step per fault. Run it with `cargo test -p twin-app --test fault_walk`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twin_app::dataset_step::DatasetStep;
use twin_app::enrollment::Enrollments;
use twin_app::erasure::Erasure;
use twin_app::gallery::{DatasetWriter, GalleryView};
use twin_app::import::Import;
use twin_app::ingest::Ingest;
use twin_app::serving::ModelServing;
use twin_app::training::TrainJob;
use twin_app::{Engines, Error};
use twin_core::enrollment::{self, EnrollmentState};
use twin_core::queue::{InProcessQueue, Queue, QueueError, Received};
use twin_core::store::{Condition, LocalStore, ObjectStore, StoreError, Tagged};
use twin_faces::pipeline::FacePipeline;
use twin_model::embed::Embedder;

/// The person enrolled, trained on and erased: a fifth photo of someone in the gallery.
const PERSON: &str = "tom_hanks";
const GALLERY: [&str; 3] = ["Tom_Hanks", "Barack_Obama", "Madonna"];
const PHOTOS_EACH: usize = 6;
/// How many times a step is tried before the walk calls it lost.
const ATTEMPTS: usize = 4;
/// Set in the child process of the kill walk: `<step>:<write to die before>:<folder>`.
const CHILD_ENV: &str = "TWIN_FAULT_WALK_CHILD";

// ---------------------------------------------------------------------------------------------
// The faults.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Count the calls, inject nothing.
    Count,
    /// The Nth call fails without effect.
    Fail,
    /// The Nth write takes effect, then fails.
    LostReply,
    /// The process dies before its Nth write.
    Kill,
}

/// One counter of calls shared by the store and the queue, and the fault to inject.
struct Faults {
    mode: Mode,
    /// 1-based index of the call (of every call for `Fail`, of writes for the others).
    at: usize,
    calls: AtomicUsize,
    writes: AtomicUsize,
    /// What each call was (`Count` mode): "get status/…", "put crops/…", "send".
    log: Mutex<Vec<String>>,
    /// Whether the fault fired.
    fired: AtomicUsize,
}

enum Action {
    Proceed,
    FailBefore,
    FailAfter,
}

impl Faults {
    fn new(mode: Mode, at: usize) -> Arc<Faults> {
        Arc::new(Faults {
            mode,
            at,
            calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            fired: AtomicUsize::new(0),
        })
    }

    fn hit(&self, what: String, write: bool) -> Action {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let nth_write = if write {
            self.writes.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        if self.mode == Mode::Count {
            self.log.lock().unwrap().push(what);
            return Action::Proceed;
        }
        let here = match self.mode {
            Mode::Fail => call == self.at,
            _ => write && nth_write == self.at,
        };
        if !here {
            return Action::Proceed;
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Kill => std::process::abort(),
            Mode::LostReply => Action::FailAfter,
            _ => Action::FailBefore,
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) > 0
    }
}

fn injected(key: &str) -> StoreError {
    StoreError::Backend {
        key: key.to_string(),
        message: "injected fault".into(),
    }
}

/// The store with faults.
struct FaultStore {
    inner: LocalStore,
    faults: Arc<Faults>,
}

impl FaultStore {
    fn run<T>(
        &self,
        what: &str,
        key: &str,
        write: bool,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.faults.hit(format!("{what} {key}"), write) {
            Action::Proceed => f(),
            Action::FailBefore => Err(injected(key)),
            Action::FailAfter => {
                f()?;
                Err(injected(key))
            }
        }
    }
}

impl ObjectStore for FaultStore {
    fn get(&self, key: &str) -> Result<Option<Tagged>, StoreError> {
        self.run("get", key, false, || self.inner.get(key))
    }
    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
        self.run("put", key, true, || self.inner.put(key, data, cond))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run("delete", key, true, || self.inner.delete(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.run("list", prefix, false, || self.inner.list(prefix))
    }
    fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("get_range", key, false, || {
            self.inner.get_range(key, start, len)
        })
    }
    fn list_with_age(&self, prefix: &str) -> Result<Vec<(String, Option<Duration>)>, StoreError> {
        self.run("list", prefix, false, || self.inner.list_with_age(prefix))
    }
    fn file_of(&self, key: &str) -> Option<PathBuf> {
        // A mapping of the folder's file, as the local store gives (not a call that can fail
        // the way a read does).
        self.inner.file_of(key)
    }
}

/// The queue with faults (an at-least-once queue whose messages come back at once).
struct FaultQueue {
    inner: InProcessQueue,
    faults: Arc<Faults>,
}

impl FaultQueue {
    fn run<T>(
        &self,
        what: &str,
        write: bool,
        f: impl FnOnce() -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        match self.faults.hit(what.to_string(), write) {
            Action::Proceed => f(),
            Action::FailBefore => Err(QueueError("injected fault".into())),
            Action::FailAfter => {
                f()?;
                Err(QueueError("injected fault".into()))
            }
        }
    }

    /// The bodies waiting, without taking them.
    fn bodies(&self) -> Vec<String> {
        let got = self.inner.receive(1000, Duration::ZERO).unwrap();
        // Visibility zero: they are back at once, in order.
        got.into_iter().map(|r| r.body).collect()
    }
}

impl Queue for FaultQueue {
    fn send(&self, body: &str) -> Result<(), QueueError> {
        self.run("send", true, || self.inner.send(body))
    }
    fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.run("receive", false, || self.inner.receive(max, wait))
    }
    fn ack(&self, receipt: u64) -> Result<(), QueueError> {
        self.run("ack", true, || self.inner.ack(receipt))
    }
}

// ---------------------------------------------------------------------------------------------
// The steps.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Enroll,
    Ingest,
    Dataset,
    Train,
    Promote,
    Erase,
}

const STEPS: [Step; 6] = [
    Step::Enroll,
    Step::Ingest,
    Step::Dataset,
    Step::Train,
    Step::Promote,
    Step::Erase,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Enroll => "enroll",
            Step::Ingest => "ingest",
            Step::Dataset => "dataset",
            Step::Train => "train",
            Step::Promote => "promote",
            Step::Erase => "erase",
        }
    }

    fn parse(s: &str) -> Step {
        *STEPS.iter().find(|x| x.name() == s).expect("a step")
    }
}

/// The engines, opened once.
struct World {
    models: PathBuf,
    photos: Arc<FacePipeline>,
    videos: Arc<FacePipeline>,
    backbone: Arc<Embedder>,
    photo: Vec<u8>,
}

impl World {
    fn open() -> World {
        let models = twin_tests::models_dir();
        let engines = Engines::open(&models, 1).expect("engines (run scripts/setup)");
        let videos = Arc::new(Engines::videos(&models).unwrap());
        let photo = std::fs::read(twin_tests::data_dir().join("faces/Tom_Hanks/9.jpg"))
            .expect("test data faces/Tom_Hanks/9.jpg");
        World {
            models,
            photos: engines.photos,
            videos,
            backbone: engines.backbone,
            photo,
        }
    }
}

/// The product's parts over one folder and one queue, with faults.
struct Parts {
    store: Arc<FaultStore>,
    queue: Arc<FaultQueue>,
    writer: Arc<DatasetWriter>,
    enrollments: Enrollments,
    ingest: Ingest,
    dataset: DatasetStep,
    train: TrainJob,
    models: Arc<ModelServing>,
    erasure: Erasure,
}

impl Parts {
    fn new(world: &World, dir: &Path, queued: &[String], faults: Arc<Faults>) -> Parts {
        let store = Arc::new(FaultStore {
            inner: LocalStore::open(dir).unwrap(),
            faults: faults.clone(),
        });
        let queue = Arc::new(FaultQueue {
            inner: InProcessQueue::new(Duration::ZERO),
            faults,
        });
        for body in queued {
            queue.inner.send(body).unwrap();
        }
        let dyn_store: Arc<dyn ObjectStore> = store.clone();
        let writer = Arc::new(DatasetWriter::new(dyn_store.clone()));
        let gallery = Arc::new(GalleryView::open(dyn_store.clone()));
        let models = Arc::new(ModelServing::new(
            dyn_store.clone(),
            world.backbone.clone(),
            1,
        ));
        Parts {
            enrollments: Enrollments::new(dyn_store.clone(), None),
            ingest: Ingest::new(
                dyn_store.clone(),
                queue.clone(),
                world.photos.clone(),
                world.videos.clone(),
                world.backbone.clone(),
            ),
            dataset: DatasetStep::new(
                dyn_store.clone(),
                world.backbone.clone(),
                writer.clone(),
                None,
            ),
            train: TrainJob::new(
                dyn_store.clone(),
                Some(world.models.join(twin_core::paths::BACKBONE_FILE)),
                1,
            ),
            erasure: Erasure::new(
                dyn_store.clone(),
                writer.clone(),
                gallery,
                models.clone(),
                world.backbone.dim(),
            ),
            models,
            writer,
            store,
            queue,
        }
    }

    /// The enrollment between steps (the one not abandoned by a failed request).
    fn upload_id(&self) -> String {
        let all = enrollment::list_statuses(&self.store.inner).unwrap();
        all.iter()
            .find(|s| s.state != EnrollmentState::Created)
            .or(all.first())
            .map(|s| s.upload_id.clone())
            .expect("an enrollment")
    }

    /// Runs `step` once, as its host does.
    fn attempt(&self, step: Step, world: &World) -> Result<(), Error> {
        match step {
            Step::Enroll => {
                // The client: start an enrollment (again if it got no answer), then send the
                // photo (again if it got no answer). A repeated upload that finds its photo
                // stored already asks for the status, which says so.
                let known = Some(last_id()).filter(|id| !id.is_empty());
                let id = match known {
                    Some(id) => id,
                    None => {
                        let e = self.enrollments.create("Tom Hanks", Some(PERSON))?;
                        set_last_id(&e.upload_id);
                        e.upload_id
                    }
                };
                match self
                    .enrollments
                    .store_upload(&id, "image/jpeg", &world.photo)
                {
                    Err(Error::Conflict(_))
                        if self.enrollments.status(&id)?.state == EnrollmentState::Uploaded =>
                    {
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            }
            Step::Ingest => self.ingest.run(&self.upload_id()),
            Step::Dataset => self.dataset.drain(&*self.queue).map(|_| ()),
            Step::Train => self.train.run(None).map(|_| ()),
            Step::Promote => {
                let n = twin_model::models::list(&*self.store)
                    .map_err(Error::internal)?
                    .first()
                    .map(|v| v.version)
                    .expect("a trained model");
                self.models.promote(n).map(|_| ())
            }
            Step::Erase => match self.erasure.erase(PERSON) {
                Ok(_) => Ok(()),
                // A repeated erasure of someone already gone.
                Err(Error::NotFound(_)) if !erase_first() => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Runs `step` until it succeeds (a fault fails one attempt; recovery tries again).
    fn run(&self, step: Step, world: &World) -> Result<usize, String> {
        set_erase_first(true);
        let mut errors = Vec::new();
        for attempt in 1..=ATTEMPTS {
            match self.attempt(step, world) {
                Ok(()) => return Ok(attempt),
                Err(e) => errors.push(e.to_string()),
            }
            set_erase_first(false);
        }
        Err(format!(
            "{} failed {ATTEMPTS} times: {errors:?}",
            step.name()
        ))
    }

    /// What a new process does on opening the folder before anything else: an erasure a crash
    /// interrupted is compacted, enrollments left between steps are resumed (their messages
    /// sent again: the queue of the killed process is gone).
    fn reopen(&self) -> Result<(), Error> {
        self.writer.compact_if_needed()?;
        for s in self.ingest.pending()? {
            self.ingest.resume(&s)?;
        }
        Ok(())
    }
}

// The enrollment the client is sending, and whether an erasure is on its first try (a client
// remembers both; the walk keeps them per process).
thread_local! {
    static LAST_ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static ERASE_FIRST: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}
fn last_id() -> String {
    LAST_ID.with(|l| l.borrow().clone())
}
fn set_last_id(id: &str) {
    LAST_ID.with(|l| *l.borrow_mut() = id.to_string());
}
fn erase_first() -> bool {
    ERASE_FIRST.with(|e| e.get())
}
fn set_erase_first(v: bool) {
    ERASE_FIRST.with(|e| e.set(v));
}

// ---------------------------------------------------------------------------------------------
// The state.

/// Every object in the folder (upload ids replaced by their place, so two runs compare) and the
/// distinct messages waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    objects: BTreeMap<String, String>,
    queued: BTreeSet<String>,
}

fn state(dir: &Path, queued: &[String], abandoned_ok: bool) -> State {
    let store = LocalStore::open(dir).unwrap();
    let mut statuses = enrollment::list_statuses(&store).unwrap();
    // An enrollment whose create answered with an error is never sent anything by the client:
    // it stays `created` until its person is erased. Compared apart.
    if abandoned_ok {
        statuses.retain(|s| s.state != EnrollmentState::Created || s.upload_id == last_id());
    }
    let ids: Vec<String> = statuses.iter().map(|s| s.upload_id.clone()).collect();
    let hide = |bytes: &[u8]| -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (i, id) in ids.iter().enumerate() {
            let mark = format!("{:_<32}", format!("UPLOAD{i}"));
            replace_all(&mut out, id.as_bytes(), mark.as_bytes());
        }
        out
    };
    let mut objects = BTreeMap::new();
    for key in keys_in(dir) {
        if abandoned_ok && key.starts_with("status/") && !ids.iter().any(|id| key.contains(id)) {
            continue;
        }
        let data = store.get(&key).unwrap().expect("listed").data;
        let name = String::from_utf8(hide(key.as_bytes())).unwrap();
        let body = hide(&data);
        let shown = if key.ends_with(".json") || key.ends_with("CURRENT") {
            normalize_json(&body)
        } else {
            format!(
                "{} bytes, {}",
                body.len(),
                twin_core::store::content_tag(&body)
            )
        };
        objects.insert(name, shown);
    }
    State {
        objects,
        queued: queued
            .iter()
            .map(|b| String::from_utf8(hide(b.as_bytes())).unwrap())
            .collect(),
    }
}

/// A JSON object with what a clock or a stopwatch wrote masked.
fn normalize_json(bytes: &[u8]) -> String {
    fn mask(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k.ends_with("_at") || k.ends_with("_ms") || k.ends_with("seconds") {
                        *x = serde_json::Value::String("<time>".into());
                    } else {
                        mask(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(mask),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut v) => {
            mask(&mut v);
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Every key in the folder (its files, less the store's own).
fn keys_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with(".twin-") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn replace_all(hay: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= hay.len() {
        if &hay[i..i + from.len()] == from {
            hay[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

fn diff(want: &State, got: &State) -> String {
    let mut out = Vec::new();
    for (k, v) in &want.objects {
        match got.objects.get(k) {
            None => out.push(format!("missing {k}")),
            Some(g) if g != v => out.push(format!("changed {k}:\n  want {v}\n  got  {g}")),
            _ => {}
        }
    }
    for k in got.objects.keys() {
        if !want.objects.contains_key(k) {
            out.push(format!("extra {k}: {}", got.objects[k]));
        }
    }
    if want.queued != got.queued {
        out.push(format!(
            "messages: want {:?}, got {:?}",
            want.queued, got.queued
        ));
    }
    out.join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-free run.

/// A step of the fault-free run: the folder and messages before it, the state after it, and
/// the calls it made.
struct Checkpoint {
    step: Step,
    before: PathBuf,
    queued_before: Vec<String>,
    client_id: String,
    after: State,
    calls: Vec<String>,
    writes: usize,
}

fn gallery_folder(scratch: &Path) -> PathBuf {
    let dir = scratch.join("gallery-photos");
    for who in GALLERY {
        let src = twin_tests::data_dir().join("faces").join(who);
        let dst = dir.join(who);
        std::fs::create_dir_all(&dst).unwrap();
        for i in 1..=PHOTOS_EACH {
            std::fs::copy(src.join(format!("{i}.jpg")), dst.join(format!("{i}.jpg")))
                .unwrap_or_else(|e| panic!("{}/{i}.jpg: {e}", src.display()));
        }
    }
    dir
}

fn fault_free(world: &World, scratch: &Path) -> Vec<Checkpoint> {
    let live = scratch.join("live");
    {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(&live).unwrap());
        let writer = Arc::new(DatasetWriter::new(store.clone()));
        let summary = Import::new(
            store.clone(),
            world.photos.clone(),
            world.backbone.clone(),
            writer,
            Arc::new(GalleryView::open(store)),
        )
        .folder(&gallery_folder(scratch), &|_, _| {})
        .unwrap();
        assert_eq!(summary.identities, GALLERY.len());
    }
    let mut queued: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        let before = scratch.join(format!("before-{i}-{}", step.name()));
        copy_dir(&live, &before);
        let faults = Faults::new(Mode::Count, 0);
        let parts = Parts::new(world, &live, &queued, faults.clone());
        let client_id = last_id();
        parts
            .run(*step, world)
            .unwrap_or_else(|e| panic!("the fault-free run: {e}"));
        let calls = faults.log.lock().unwrap().clone();
        let writes = faults.writes.load(Ordering::SeqCst);
        let queued_before = std::mem::replace(&mut queued, parts.queue.bodies());
        out.push(Checkpoint {
            step: *step,
            before,
            queued_before,
            client_id,
            after: state(&live, &queued, false),
            calls,
            writes,
        });
    }
    // The run itself did what it should: trained on the photo, and forgot it.
    let last = &out.last().unwrap().after;
    assert!(
        !last.objects.keys().any(|k| k.contains(PERSON)),
        "erased: {:?}",
        last.objects.keys()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// The walks.

#[derive(Default)]
struct Tally {
    injected: usize,
    attempts_max: usize,
    duplicated_messages: usize,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.injected += o.injected;
        self.attempts_max = self.attempts_max.max(o.attempts_max);
        self.duplicated_messages += o.duplicated_messages;
        self.failures.extend(o.failures);
    }
}

fn check(cp: &Checkpoint, dir: &Path, queued: &[String], label: &str, t: &mut Tally) {
    let got = state(dir, queued, cp.step == Step::Enroll);
    let d = diff(&cp.after, &got);
    if !d.is_empty() {
        t.failures.push(format!("{label}: the state differs:\n{d}"));
    }
    if queued.len() > BTreeSet::from_iter(queued.iter()).len() {
        t.duplicated_messages += 1;
    }
}

fn label_of(mode: Mode) -> &'static str {
    match mode {
        Mode::Count => "count",
        Mode::Fail => "fail",
        Mode::LostReply => "lost reply",
        Mode::Kill => "kill",
    }
}

/// One fault: `mode` at call (or write) `n` of the step `cp`, then recovery and the check.
fn inject(world: &World, cp: &Checkpoint, scratch: &Path, mode: Mode, n: usize) -> Tally {
    let mut t = Tally::default();
    let dir = scratch.join(format!("{}-{}-{n}", label_of(mode), cp.step.name()));
    copy_dir(&cp.before, &dir);
    let label = format!("{} at {} call {n}", label_of(mode), cp.step.name());
    set_last_id(&cp.client_id);
    if mode == Mode::Kill {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(
                CHILD_ENV,
                format!("{}:{n}:{}", cp.step.name(), dir.display()),
            )
            .env("TWIN_FAULT_WALK_QUEUED", cp.queued_before.join("\n"))
            .env("TWIN_FAULT_WALK_CLIENT", &cp.client_id)
            .output()
            .unwrap();
        if out.status.success() {
            t.failures.push(format!(
                "{label}: the child was not killed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return t;
        }
        t.injected += 1;
        // A new process: the queue died with the old one. The client knows the enrollment it
        // was answered (its record is written before the answer).
        if cp.step == Step::Enroll {
            let store = LocalStore::open(&dir).unwrap();
            if let Some(s) = enrollment::list_statuses(&store).unwrap().first() {
                set_last_id(&s.upload_id);
            }
        }
        let parts = Parts::new(world, &dir, &[], Faults::new(Mode::Count, 0));
        let recovered = parts
            .reopen()
            .map_err(|e| e.to_string())
            .and_then(|_| parts.run(cp.step, world));
        match recovered {
            Ok(_) => check(cp, &dir, &parts.queue.bodies(), &label, &mut t),
            Err(e) => t.failures.push(format!("{label}: not recovered: {e}")),
        }
    } else {
        let faults = Faults::new(mode, n);
        let parts = Parts::new(world, &dir, &cp.queued_before, faults.clone());
        match parts.run(cp.step, world) {
            Ok(attempts) => {
                t.attempts_max = attempts;
                check(cp, &dir, &parts.queue.bodies(), &label, &mut t);
            }
            Err(e) => t.failures.push(format!("{label}: not recovered: {e}")),
        }
        if faults.fired() {
            t.injected += 1;
        } else {
            t.failures.push(format!(
                "{label}: the fault never fired (the calls changed)"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    t
}

/// Walks `mode` over every call (`fail`) or write (the others) of every step, on as many
/// threads as there are cores.
fn walk(world: &World, cps: &[Checkpoint], scratch: &Path, mode: Mode) -> Tally {
    let mut work = Vec::new();
    for cp in cps {
        let points = match mode {
            Mode::Fail => cp.calls.len(),
            _ => cp.writes,
        };
        work.extend((1..=points).map(|n| (cp, n)));
    }
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut t = Tally::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((cp, n)) = work.get(i) else { break };
                        t.add(inject(world, cp, scratch, mode, *n));
                    }
                    t
                })
            })
            .collect();
        for h in handles {
            total.add(h.join().expect("a walk thread"));
        }
    });
    total
}

/// The child of the kill walk: runs one step with the kill armed.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, ':');
    let step = Step::parse(parts.next().unwrap());
    let n: usize = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    let queued: Vec<String> = std::env::var("TWIN_FAULT_WALK_QUEUED")
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect();
    set_last_id(&std::env::var("TWIN_FAULT_WALK_CLIENT").unwrap_or_default());
    let world = World::open();
    let p = Parts::new(&world, &dir, &queued, Faults::new(Mode::Kill, n));
    // Killed before its nth write: reaching the end is the failure.
    let _ = p.run(step, &world);
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let world = World::open();
    let cps = fault_free(&world, scratch.path());
    println!("the fault-free run, calls per step (store and queue):");
    for cp in &cps {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for c in &cp.calls {
            let kind = c.split_whitespace().next().unwrap_or("").to_string();
            *kinds.entry(kind).or_default() += 1;
        }
        println!(
            "  {:<8} {:>3} calls ({} writes): {kinds:?}",
            cp.step.name(),
            cp.calls.len(),
            cp.writes
        );
    }
    let total: usize = cps.iter().map(|c| c.calls.len()).sum();
    let writes: usize = cps.iter().map(|c| c.writes).sum();
    println!("  total    {total} calls, {writes} writes");

    let mut failures = Vec::new();
    for mode in [Mode::Fail, Mode::LostReply, Mode::Kill] {
        let t0 = Instant::now();
        let t = walk(&world, &cps, scratch.path(), mode);
        println!(
            "{}: {} faults injected, {} recovered to the fault-free state ({} with a message delivered twice), at most {} attempts, {:.1} s",
            label_of(mode),
            t.injected,
            t.injected.saturating_sub(t.failures.len()),
            t.duplicated_messages,
            t.attempts_max,
            t0.elapsed().as_secs_f64()
        );
        failures.extend(t.failures);
    }
    println!("fault walk: {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}\n");
        }
        eprintln!(
            "{} of the injected faults were not recovered",
            failures.len()
        );
        std::process::exit(1);
    }
}

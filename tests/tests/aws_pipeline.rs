//! The whole AWS side against a real S3/SQS protocol server on loopback (moto): the four
//! functions' real handlers, driven with the events AWS would send them, each under its own IAM
//! role from `infra/template.yaml` with moto enforcing it ([`twin_tests::deploy`]): a call a
//! role does not allow fails the test, even where the product only logs the error. Each test
//! prints the S3 and SQS actions each function made.
//!
//! Photos dropped in `uploads/<Person>/` and `short_hamilton_clip.mp4` at
//! `uploads/lin_manuel_miranda/clip.mp4` go through `ingest` (one S3 notification per put, as
//! S3 sends it), the messages it really sent are received from the queue and handed to
//! `dataset` as an SQS event, the train request it sent goes to `train`, and an API Gateway
//! HTTP API (payload 2.0) `POST /v1/match` event with `lin-manuel-miranda.png` goes through the
//! `api` router. Then: the same S3 event and the same SQS batch delivered again leave the
//! bucket byte for byte as it was (keys and ETags), a batch of five messages with one malformed
//! fails exactly that one and commits the other four, and an enrollment made through the API
//! gets a presigned upload that, once used, is ingested like any other; a send to the ingest
//! queue that fails leaves the enrollment `cropped` with its message pending, and the
//! redelivered S3 event sends it, so the enrollment still reaches `indexed`; the enrolled person
//! is then erased through the API and nothing of them is left under `crops/`, `uploads/` or
//! `status/`; and a person the trained model knows is erased while an enrollment joined to them
//! is in flight, after which no object of the bucket names them or holds their embeddings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::Message;
use serde_json::{json, Value};
use tower::ServiceExt;
use twin_aws::Aws;
use twin_fn_api::ApiSettings;
use twin_fn_dataset::DatasetFn;
use twin_fn_ingest::IngestFn;
use twin_fn_train::TrainFn;
use twin_tests::deploy::Deployment;
use twin_tests::events::api_gateway_v2;
use twin_tests::{data_dir, require_backbone};

/// Photos per gallery identity dropped in the bucket.
const PHOTOS: usize = 8;
const GALLERY: [&str; 2] = ["Madonna", "Jerry_Seinfeld"];

fn models_dir() -> PathBuf {
    require_backbone().parent().unwrap().to_path_buf()
}

struct Env {
    deployment: Deployment,
    /// The administrator's clients: what AWS itself does (deliver events) and inspection.
    aws: Aws,
    bucket: String,
    ingest: IngestFn,
    dataset: DatasetFn,
    train: TrainFn,
}

impl Env {
    /// The template deployed with a train request after every new identity.
    fn start() -> Env {
        let deployment = Deployment::start(None, &[("TrainMinNew", "1")]);
        let aws = deployment.admin().clone();
        let bucket = deployment.bucket();
        let ingest = IngestFn::new(&deployment.aws_for("IngestFunction"), &models_dir(), 1)
            .expect("the ingest function starts");
        let min_new = deployment.env_value("DatasetFunction", "TWIN_TRAIN_MIN_NEW");
        let dataset = DatasetFn::new(
            &deployment.aws_for("DatasetFunction"),
            &models_dir().join(twin_core::paths::BACKBONE_FILE),
            1,
            min_new,
        )
        .expect("the dataset function starts");
        let train = TrainFn::new(
            &deployment.aws_for("TrainFunction"),
            Some(models_dir().join(twin_core::paths::BACKBONE_FILE)),
            1,
        );
        Env {
            deployment,
            aws,
            bucket,
            ingest,
            dataset,
            train,
        }
    }

    /// The api function's router under its role, as `main` builds it from its environment.
    async fn api(&self) -> axum::Router {
        let env = self.deployment.environment("ApiFunction");
        let settings = ApiSettings {
            models_dir: models_dir(),
            threads: 1,
            poll: std::time::Duration::from_secs(3600),
            api_key: Some("test-key".into()),
        };
        assert!(
            env.contains_key("TWIN_API_KEY"),
            "the template gives the api its key"
        );
        let aws = self.deployment.aws_for("ApiFunction");
        let (_system, router) =
            tokio::task::spawn_blocking(move || twin_fn_api::app(&aws, &settings))
                .await
                .unwrap()
                .expect("the api starts");
        router
    }

    /// Prints what each function did and fails on any call outside its role.
    fn check_roles(&self) {
        println!(
            "S3 and SQS calls by function (IAM enforced):\n{}",
            self.deployment.report()
        );
        self.deployment.assert_no_denials();
    }

    /// Puts an object and returns the S3 notification AWS would send for it.
    fn put(&self, key: &str, body: Vec<u8>) -> Value {
        let s3 = self.aws.s3().clone();
        let (b, k) = (self.bucket.clone(), key.to_string());
        let size = body.len();
        let etag = self.aws.block_on(async move {
            s3.put_object()
                .bucket(&b)
                .key(&k)
                .body(ByteStream::from(body))
                .send()
                .await
                .expect("put")
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string()
        });
        s3_event(&self.bucket, key, size, &etag)
    }

    /// An object's bytes.
    fn get(&self, key: &str) -> Vec<u8> {
        let s3 = self.aws.s3().clone();
        let (b, k) = (self.bucket.clone(), key.to_string());
        self.aws.block_on(async move {
            s3.get_object()
                .bucket(&b)
                .key(&k)
                .send()
                .await
                .expect("get")
                .body
                .collect()
                .await
                .expect("the body")
                .to_vec()
        })
    }

    /// Every object's key and ETag.
    fn listing(&self) -> BTreeMap<String, String> {
        let s3 = self.aws.s3().clone();
        let b = self.bucket.clone();
        self.aws.block_on(async move {
            let mut out = BTreeMap::new();
            let mut token = None;
            loop {
                let page = s3
                    .list_objects_v2()
                    .bucket(&b)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .expect("list");
                for o in page.contents() {
                    out.insert(
                        o.key().unwrap_or_default().to_string(),
                        o.e_tag().unwrap_or_default().to_string(),
                    );
                }
                token = page.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    return out;
                }
            }
        })
    }

    /// Receives every message waiting on a queue (up to 10 per call, as Lambda's poller does).
    fn receive_all(&self, url: &str) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let sqs = self.aws.sqs().clone();
            let u = url.to_string();
            let batch = self.aws.block_on(async move {
                sqs.receive_message()
                    .queue_url(&u)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive")
                    .messages()
                    .to_vec()
            });
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// Deletes delivered messages (what Lambda does with the ones a handler did not fail).
    fn delete(&self, url: &str, messages: &[Message]) {
        for m in messages {
            let sqs = self.aws.sqs().clone();
            let (u, h) = (url.to_string(), m.receipt_handle().unwrap().to_string());
            self.aws.block_on(async move {
                sqs.delete_message()
                    .queue_url(&u)
                    .receipt_handle(&h)
                    .send()
                    .await
                    .expect("delete")
            });
        }
    }

    fn ingest_url(&self) -> String {
        self.deployment.queue_url("IngestQueue")
    }

    fn train_url(&self) -> String {
        self.deployment.queue_url("TrainQueue")
    }

    async fn run_dataset(&self, messages: &[Message]) -> Vec<String> {
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(sqs_event(messages)).unwrap();
        let response = self
            .dataset
            .handle(event)
            .await
            .expect("the batch is handled");
        response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }
}

impl Drop for Env {
    /// A failed test still shows what each function did and what IAM refused.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "S3 and SQS calls by function (IAM enforced), at the failure:\n{}",
                self.deployment.report()
            );
        }
    }
}

/// An S3 `ObjectCreated:Put` notification as S3 sends it (key URL-encoded, `+` for spaces).
fn s3_event(bucket: &str, key: &str, size: usize, etag: &str) -> Value {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-29T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:TEST"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "TEST", "x-amz-id-2": "TEST"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploads",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "TEST"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": encoded, "size": size, "eTag": etag, "sequencer": "0055AED6DCD90281E5"}
        }
    }]})
}

/// The SQS event Lambda's poller would build from received messages.
fn sqs_event(messages: &[Message]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764417600000"},
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:twin-ingest",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

async fn api_call(router: &axum::Router, event: &str) -> (u16, Value) {
    let req = lambda_http::request::from_str(event).expect("an API Gateway v2 event");
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn photos(person: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let dir = data_dir().join("faces").join(person);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(n)
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_match_through_the_real_handlers_and_redelivery_changes_nothing() {
    let env = Env::start();

    // The drop folder: photos of two people, then the clip.
    for person in GALLERY {
        for (file, bytes) in photos(person, PHOTOS) {
            let event = env.put(&format!("uploads/{person}/{file}"), bytes);
            let out = env.ingest.handle(event).await.expect("ingest");
            assert_eq!(
                out["uploads"][0]["state"], "cropped",
                "{person}/{file}: {out}"
            );
        }
    }
    let clip = std::fs::read(data_dir().join("media/short_hamilton_clip.mp4")).unwrap();
    let clip_event = env.put("uploads/lin_manuel_miranda/clip.mp4", clip);
    let out = env
        .ingest
        .handle(clip_event.clone())
        .await
        .expect("ingest the clip");
    assert_eq!(out["uploads"][0]["state"], "cropped", "{out}");
    let kept = out["uploads"][0]["kept"].as_u64().unwrap();
    assert!(kept >= 20, "{kept} frames kept");

    // The messages ingest really sent, as Lambda's poller would batch them.
    let messages = env.receive_all(&env.ingest_url());
    assert_eq!(messages.len(), GALLERY.len() * PHOTOS + 1);
    let first_batch = messages[..10].to_vec();
    for batch in messages.chunks(10) {
        let failed = env.run_dataset(batch).await;
        assert!(failed.is_empty(), "{failed:?}");
        env.delete(&env.ingest_url(), batch);
    }

    // Train on the request the dataset function sent.
    let requests = env.receive_all(&env.train_url());
    assert!(
        !requests.is_empty(),
        "the dataset function asked for training"
    );
    let out = env.train.handle(sqs_event(&requests)).await.expect("train");
    assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    let trained: Vec<&Value> = out["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["trained"] == true)
        .collect();
    assert_eq!(trained.len(), 1, "one model per dataset version: {out}");
    assert_eq!(trained[0]["version"], 1, "{out}");
    env.delete(&env.train_url(), &requests);
    let store = env.aws.store();
    let metrics = twin_model::models::read_metrics(&store, 1)
        .unwrap()
        .unwrap();
    assert_eq!(metrics.identities, GALLERY.len() + 1);
    println!(
        "trained model 1: held-out top-1 {:.3} (baseline {:.3}), {}",
        metrics.model.top1,
        metrics.baseline.top1,
        if metrics.promoted {
            "promoted"
        } else {
            "not promoted"
        }
    );
    // The same request again (a redelivery): nothing new is trained.
    let again = env
        .train
        .train_if_new(Some(metrics.dataset_version))
        .await
        .unwrap();
    assert!(!again.trained, "{again:?}");

    // The api: a match request event through the router over the bucket.
    let router = env.api().await;
    // The page may send the presigned upload to the bucket's origin, and nowhere else.
    let res = router
        .clone()
        .oneshot(
            lambda_http::request::from_str(&api_gateway_v2("GET", "/", "text/html", b"", None))
                .unwrap(),
        )
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains(&format!(
            "connect-src 'self' {};",
            env.deployment.moto().endpoint()
        )),
        "{csp}"
    );
    let png = std::fs::read(data_dir().join("media/lin-manuel-miranda.png")).unwrap();
    let (status, body) = api_call(
        &router,
        &api_gateway_v2("POST", "/v1/match", "image/png", &png, Some("test-key")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let top = &body["faces"][0]["matches"][0];
    assert_eq!(top["slug"], "lin_manuel_miranda", "{body}");
    assert_eq!(top["display_name"], "Lin Manuel Miranda", "{body}");
    assert_eq!(top["same_person"], true, "{body}");
    let expected_model = if metrics.promoted {
        json!(1)
    } else {
        Value::Null
    };
    assert_eq!(body["model_version"], expected_model, "{body}");

    // Redelivery: the same S3 event, then the same SQS batch.
    let before = env.listing();
    let out = env.ingest.handle(clip_event).await.expect("ingest again");
    assert_eq!(out["uploads"][0]["state"], "indexed", "{out}");
    assert!(
        env.receive_all(&env.ingest_url()).is_empty(),
        "no second message"
    );
    let failed = env.run_dataset(&first_batch).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        env.receive_all(&env.train_url()).is_empty(),
        "no new train request"
    );
    assert_eq!(env.listing(), before, "a redelivery changed the bucket");

    // Five messages, one malformed: exactly that one fails, the four others are committed.
    let version_before = twin_core::dataset::load_current(&store)
        .unwrap()
        .unwrap()
        .manifest
        .version;
    for (file, bytes) in photos("Keanu_Reeves", 4) {
        env.ingest
            .handle(env.put(&format!("uploads/Keanu_Reeves/{file}"), bytes))
            .await
            .expect("ingest");
    }
    let sqs = env.aws.sqs().clone();
    let url = env.ingest_url();
    env.aws.block_on(async move {
        sqs.send_message()
            .queue_url(&url)
            .message_body("{\"v\": 1, \"upload_id\": \"../../etc\"")
            .send()
            .await
            .unwrap()
    });
    let five = env.receive_all(&env.ingest_url());
    assert_eq!(five.len(), 5);
    let malformed = five
        .iter()
        .find(|m| m.body().unwrap().contains("../../etc"))
        .unwrap()
        .message_id()
        .unwrap()
        .to_string();
    let failed = env.run_dataset(&five).await;
    assert_eq!(failed, vec![malformed]);
    let snapshot = twin_core::dataset::load_current(&store).unwrap().unwrap();
    assert_eq!(snapshot.manifest.version, version_before + 1);
    let keanu = snapshot
        .manifest
        .identity("keanu_reeves")
        .expect("committed");
    assert_eq!(keanu.uploads.len(), 4);

    // An enrollment through the API: a presigned PUT straight to the bucket, then its event.
    let photo = photos("Jerry_Seinfeld", 12).pop().unwrap().1;
    let request =
        json!({"name": "Ada Lovelace", "content_type": "image/jpeg", "size": photo.len()});
    let upload_id = enroll_presigned(&router, &request, photo.clone()).await;
    let key = format!("uploads/ada_lovelace/{upload_id}.jpg");
    let head = {
        let s3 = env.aws.s3().clone();
        let (b, k) = (env.bucket.clone(), key.clone());
        env.aws
            .block_on(async move { s3.head_object().bucket(&b).key(&k).send().await })
            .expect("the upload is in the bucket")
    };
    let event = s3_event(
        &env.bucket,
        &key,
        photo.len(),
        head.e_tag().unwrap().trim_matches('"'),
    );
    let out = env
        .ingest
        .handle(event)
        .await
        .expect("ingest the enrollment");
    assert_eq!(out["uploads"][0]["upload_id"], upload_id.as_str(), "{out}");
    assert_eq!(out["uploads"][0]["state"], "cropped", "{out}");
    let batch = env.receive_all(&env.ingest_url());
    assert_eq!(batch.len(), 1, "one message for the enrollment");
    assert!(env.run_dataset(&batch).await.is_empty());
    env.delete(&env.ingest_url(), &batch);
    assert_eq!(enrollment_state(&router, &upload_id).await, "indexed");

    // The queue fails the send (it is gone for a moment): the invocation fails, the crops and
    // the `cropped` state are kept with the message pending, and the redelivered event sends it.
    let (file, bytes) = photos("Keanu_Reeves", 5).pop().unwrap();
    let key = format!("uploads/Grace_Hopper/{file}");
    env.deployment.delete_queue("IngestQueue");
    let event = env.put(&key, bytes);
    let err = env
        .ingest
        .handle(event.clone())
        .await
        .expect_err("the send failed, so the invocation fails");
    println!("ingest with the queue gone: {err}");
    // moto answers a send to a deleted queue with 403 (AWS: NonExistentQueue): those refusals
    // are the failure made on purpose, and nothing else.
    let injected = env.deployment.take_denials("IngestFunction");
    let queue = env.deployment.spec()["queues"]["IngestQueue"]["name"].clone();
    assert!(
        !injected.is_empty()
            && injected
                .iter()
                .all(|c| c.action() == "sqs:SendMessage" && c.target == queue.as_str().unwrap()),
        "{injected:?}"
    );
    env.deployment.create_queue("IngestQueue");
    let out = env
        .ingest
        .handle(event)
        .await
        .expect("the redelivered event");
    assert_eq!(out["uploads"][0]["state"], "cropped", "{out}");
    let grace = out["uploads"][0]["upload_id"].as_str().unwrap().to_string();
    let batch = env.receive_all(&env.ingest_url());
    assert_eq!(batch.len(), 1, "the pending message was sent on redelivery");
    assert!(env.run_dataset(&batch).await.is_empty());
    env.delete(&env.ingest_url(), &batch);
    assert_eq!(enrollment_state(&router, &grace).await, "indexed");

    // Erase the enrolled person: nothing of them is left.
    let (status, body) = api_call(
        &router,
        &api_gateway_v2(
            "DELETE",
            "/v1/identities/ada_lovelace",
            "application/json",
            b"",
            Some("test-key"),
        ),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let left: Vec<String> = env
        .listing()
        .into_keys()
        .filter(|k| k.starts_with("crops/ada_lovelace/") || k.starts_with("uploads/ada_lovelace/"))
        .collect();
    assert!(left.is_empty(), "left after the erase: {left:?}");
    for key in env
        .listing()
        .into_keys()
        .filter(|k| k.starts_with("status/"))
    {
        let body = env.get(&key);
        assert!(
            !String::from_utf8_lossy(&body).contains("ada_lovelace"),
            "{key} still names the erased person"
        );
    }
    let (status, _) = api_call(
        &router,
        &api_gateway_v2(
            "GET",
            "/v1/identities/ada_lovelace",
            "application/json",
            b"",
            None,
        ),
    )
    .await;
    assert_eq!(status, 404);

    // Erase a person the trained model knows, while a second enrollment of theirs (joined to
    // them) is in flight: cropped, its message waiting for the dataset step.
    let model_labels = twin_model::models::read_labels(&store, 1).unwrap();
    assert!(
        model_labels.labels.iter().any(|l| l.slug == "madonna"),
        "model 1 knows madonna"
    );
    let before = twin_core::dataset::load_current(&store).unwrap().unwrap();
    let rows = person_rows(&before, "madonna");
    assert!(!rows.is_empty());
    let photo = photos("Madonna", 12).pop().unwrap().1;
    let request = json!({"name": "Madonna", "join": "madonna", "content_type": "image/jpeg", "size": photo.len()});
    let in_flight = enroll_presigned(&router, &request, photo).await;
    let key = format!("uploads/madonna/{in_flight}.jpg");
    let etag = env.listing()[&key].trim_matches('"').to_string();
    let out = env
        .ingest
        .handle(s3_event(&env.bucket, &key, env.get(&key).len(), &etag))
        .await
        .expect("ingest the joined enrollment");
    assert_eq!(out["uploads"][0]["state"], "cropped", "{out}");
    let pending = env.receive_all(&env.ingest_url());
    assert_eq!(pending.len(), 1);
    let (status, body) = api_call(
        &router,
        &api_gateway_v2(
            "DELETE",
            "/v1/identities/madonna",
            "application/json",
            b"",
            Some("test-key"),
        ),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // The in-flight message arrives after the erasure: refused, and what it left goes too.
    assert!(env.run_dataset(&pending).await.is_empty());
    env.delete(&env.ingest_url(), &pending);
    // The upload's S3 event delivered again after the erasure changes nothing either.
    let _ = env
        .ingest
        .handle(s3_event(&env.bucket, &key, 1, &etag))
        .await;
    let found = scan_bucket(&env, &["madonna", "Madonna"], &rows);
    assert!(
        found.is_empty(),
        "after the erasure the bucket still holds: {found:?}"
    );
    println!(
        "erasure scan of the bucket: {} objects, nothing of madonna",
        env.listing().len()
    );
    let (status, models) = api_call(
        &router,
        &api_gateway_v2("GET", "/v1/models", "application/json", b"", None),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!models.to_string().contains("madonna"), "{models}");
    env.check_roles();
}

/// The embedding rows of `slug` in a dataset version.
fn person_rows(s: &twin_core::dataset::Snapshot, slug: &str) -> Vec<Vec<f32>> {
    let dim = s.manifest.dim;
    let mut row = 0;
    let mut out = Vec::new();
    for i in &s.manifest.identities {
        for _ in &i.crops {
            if i.slug == slug {
                out.push(s.embeddings[row * dim..(row + 1) * dim].to_vec());
            }
            row += 1;
        }
    }
    out
}

/// Every object of the bucket that names one of `words` or holds one of `rows` (see
/// [`twin_tests::leak`]).
fn scan_bucket(env: &Env, words: &[&str], rows: &[Vec<f32>]) -> Vec<String> {
    env.listing()
        .into_keys()
        .filter_map(|key| twin_tests::leak(&key, &env.get(&key), words, rows))
        .collect()
}

/// `POST /v1/enrollments` with `request` (a presigned upload of a JPEG), then the `PUT` of
/// `photo` to the URL it answered, as the page does; returns the upload id.
async fn enroll_presigned(router: &axum::Router, request: &Value, photo: Vec<u8>) -> String {
    let (status, created) = api_call(
        router,
        &api_gateway_v2(
            "POST",
            "/v1/enrollments",
            "application/json",
            request.to_string().as_bytes(),
            Some("test-key"),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["upload_headers"]["content-type"], "image/jpeg",
        "{created}"
    );
    let url = created["upload_url"].as_str().unwrap().to_string();
    let put = tokio::task::spawn_blocking(move || {
        ureq::put(&url)
            .header("content-type", "image/jpeg")
            .send(&photo[..])
            .map(|r| r.status().as_u16())
    })
    .await
    .unwrap()
    .expect("the presigned PUT");
    assert_eq!(put, 200);
    created["upload_id"].as_str().unwrap().to_string()
}

/// An enrollment's state as `GET /v1/enrollments/{id}` reports it.
async fn enrollment_state(router: &axum::Router, upload_id: &str) -> String {
    let (status, body) = api_call(
        router,
        &api_gateway_v2(
            "GET",
            &format!("/v1/enrollments/{upload_id}"),
            "application/json",
            b"",
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_uploads_fail_with_a_reason_and_odd_names_are_taken_in() {
    let env = Env::start();
    // Not an image: failed with the reason, not an error (a retry cannot help).
    let out = env
        .ingest
        .handle(env.put("uploads/Ada/notes.mp4", b"this is a text file".to_vec()))
        .await
        .expect("handled");
    assert_eq!(out["uploads"][0]["state"], "failed", "{out}");
    let out = env
        .ingest
        .handle(env.put("uploads/Ada/readme.txt", b"hello".to_vec()))
        .await
        .expect("handled");
    assert_eq!(out["uploads"][0]["state"], "failed", "{out}");
    // A file outside any person's folder: left alone, not retried.
    let out = env
        .ingest
        .handle(env.put("uploads/loose.jpg", b"hello".to_vec()))
        .await
        .expect("not retried");
    assert_eq!(out["uploads"].as_array().unwrap().len(), 0, "{out}");
    assert!(
        out["skipped"][0]
            .as_str()
            .unwrap()
            .contains("is not uploads/<person>/<file>"),
        "{out}"
    );
    // A key with spaces and capitals: copied to a checked key and ingested.
    let (_, bytes) = photos("Madonna", 1).pop().unwrap();
    let out = env
        .ingest
        .handle(env.put("uploads/Jane Doe/My Photo (1).JPG", bytes))
        .await
        .expect("handled");
    assert_eq!(out["uploads"][0]["state"], "cropped", "{out}");
    let keys: Vec<String> = env.listing().into_keys().collect();
    assert!(
        !keys.iter().any(|k| k.contains(' ')),
        "the original key is gone: {keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("uploads/jane_doe/my_photo_1-") && k.ends_with(".jpg")),
        "{keys:?}"
    );
    // The copy's own notification names the same upload, already done: nothing new.
    let listing = env.listing();
    let (copy, copy_etag) = listing
        .iter()
        .find(|(k, _)| k.starts_with("uploads/jane_doe/my_photo_1-"))
        .unwrap();
    let size = listing.len(); // any size under the limits
    let again = env
        .ingest
        .handle(s3_event(
            &env.bucket,
            copy,
            size,
            copy_etag.trim_matches('"'),
        ))
        .await
        .expect("handled");
    assert_eq!(
        again["uploads"][0]["upload_id"], out["uploads"][0]["upload_id"],
        "{again}"
    );
    assert_eq!(again["uploads"][0]["state"], "cropped", "{again}");
    assert_eq!(env.listing(), listing, "the copy's event writes nothing");
    // Not an S3 event at all: the invocation fails (so it is retried, then dead-lettered).
    assert!(env.ingest.handle(json!({"hello": "world"})).await.is_err());
    // No message for the failed uploads, one for the photo.
    assert_eq!(env.receive_all(&env.ingest_url()).len(), 1);
    env.check_roles();
}

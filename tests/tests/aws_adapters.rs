//! The AWS adapters (`twin-aws`) against a real S3/SQS protocol server on loopback (moto).
//!
//! Each test starts its own moto server on a free port, so the tests run in parallel. Without
//! moto (`scripts/setup` installs it into `.venv`) every test fails with a message saying so.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use twin_core::rows::RowEncoding;

use aws_sdk_s3::primitives::ByteStream;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use twin_aws::{AwsError, PresignedPut};
use twin_core::dataset::{self, Update};
use twin_core::gallery::Gallery;
use twin_core::keys;
use twin_core::messages::IngestMessage;
use twin_core::queue::Queue;
use twin_core::store::{Condition, ObjectStore, StoreError};
use twin_tests::moto::{Moto, MAX_RECEIVE_COUNT, SECRET_KEY};

/// The embedding length of the gallery (dlib's descriptor).
const DIM: usize = 128;

#[test]
fn s3_store_round_trip_with_etags_and_paged_listing() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let store = sys.aws.store();

    assert_eq!(store.get("crops/ada/u-1/0.png").unwrap(), None);
    let t1 = store
        .put("crops/ada/u-1/0.png", b"first chip", Condition::None)
        .unwrap();
    let t2 = store
        .put("crops/ada/u-1/100.png", b"second chip", Condition::None)
        .unwrap();
    store
        .put("crops/bob/u-2/0.png", b"bob", Condition::None)
        .unwrap();
    let got = store.get("crops/ada/u-1/0.png").unwrap().unwrap();
    assert_eq!(got.data, b"first chip");
    assert_eq!(got.tag, t1, "the tag read is the ETag the write returned");
    assert_ne!(t1, t2, "different contents, different ETags");
    // The ETag of a single-part upload is the MD5 of the content, in quotes.
    assert!(
        t1.starts_with('"') && t1.ends_with('"') && t1.len() == 34,
        "{t1}"
    );

    assert_eq!(
        store.list("crops/ada/").unwrap(),
        ["crops/ada/u-1/0.png", "crops/ada/u-1/100.png"]
    );
    assert_eq!(store.list("crops/").unwrap().len(), 3);
    assert!(store.list("nothing/").unwrap().is_empty());

    store.delete("crops/ada/u-1/0.png").unwrap();
    store.delete("crops/ada/u-1/0.png").unwrap(); // absent: not an error
    assert_eq!(store.get("crops/ada/u-1/0.png").unwrap(), None);
    assert_eq!(store.list("crops/ada/").unwrap(), ["crops/ada/u-1/100.png"]);

    // Ranged reads: only the bytes asked for, fewer at the end, none past it.
    let part = |start, len| {
        store
            .get_range("crops/ada/u-1/100.png", start, len)
            .unwrap()
    };
    assert_eq!(part(7, 4).as_deref(), Some(&b"chip"[..]));
    assert_eq!(part(7, 100).as_deref(), Some(&b"chip"[..]));
    assert_eq!(part(7, u64::MAX).as_deref(), Some(&b"chip"[..]));
    assert_eq!(part(0, u64::MAX).as_deref(), Some(&b"second chip"[..]));
    assert_eq!(part(50, 4).as_deref(), Some(&b""[..]));
    assert_eq!(store.get_range("crops/ada/u-1/0.png", 0, 4).unwrap(), None);

    // Keys are checked before anything is sent.
    for bad in ["../etc/passwd", "uploads/a b.mp4", "a//b"] {
        assert!(matches!(store.get(bad), Err(StoreError::InvalidKey(_))));
        assert!(matches!(
            store.put(bad, b"x", Condition::None),
            Err(StoreError::InvalidKey(_))
        ));
    }

    // A bucket that does not exist is an error, not an empty store.
    let lost = twin_aws::Aws::connect(moto.config("twin-no-such-bucket", "", ""))
        .unwrap()
        .store();
    for result in [
        lost.get("dataset/CURRENT").map(|_| ()),
        lost.list("dataset/").map(|_| ()),
        lost.delete("dataset/CURRENT"),
    ] {
        assert!(
            matches!(result, Err(StoreError::Backend { .. })),
            "{result:?}"
        );
    }

    // More keys than one ListObjectsV2 page (1000) holds: every page is read, sorted.
    const MANY: usize = 1030;
    let s3 = sys.aws.s3().clone();
    let bucket = store.bucket().to_string();
    sys.aws.block_on(async move {
        for chunk in (0..MANY).collect::<Vec<_>>().chunks(50) {
            let mut set = tokio::task::JoinSet::new();
            for &i in chunk {
                let req = s3
                    .put_object()
                    .bucket(&bucket)
                    .key(format!("status/{i:05}.json"))
                    .body(ByteStream::from_static(b"{}"));
                set.spawn(async move { req.send().await.map(|_| ()) });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap().unwrap();
            }
        }
    });
    let listed = store.list("status/").unwrap();
    assert_eq!(listed.len(), MANY);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(listed[MANY - 1], format!("status/{:05}.json", MANY - 1));
}

#[test]
fn conditional_writes_refuse_stale_writers() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let store = sys.aws.store();
    let key = keys::DATASET_CURRENT;

    let t1 = store.put(key, b"1", Condition::IfAbsent).unwrap();
    assert!(
        matches!(
            store.put(key, b"x", Condition::IfAbsent),
            Err(StoreError::PreconditionFailed(_))
        ),
        "a second create-if-absent is refused"
    );
    let t2 = store
        .put(key, b"2", Condition::IfMatch(t1.clone()))
        .unwrap();
    assert!(
        matches!(
            store.put(key, b"3", Condition::IfMatch(t1)),
            Err(StoreError::PreconditionFailed(_))
        ),
        "a write on a stale tag is refused"
    );
    let cur = store.get(key).unwrap().unwrap();
    assert_eq!(
        (cur.data.as_slice(), cur.tag.as_str()),
        (&b"2"[..], t2.as_str())
    );
    let t4 = store.put(key, b"4", Condition::IfMatch(t2)).unwrap();
    assert_eq!(store.get(key).unwrap().unwrap().tag, t4);
    assert_eq!(store.get(key).unwrap().unwrap().data, b"4");
}

#[test]
fn unchecked_reads_take_user_keys_and_enforce_a_size_limit() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let store = sys.aws.store();
    let key = "uploads/Ada Lovelace/my first video (1).mp4";
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let (s3, bucket, body) = (
        sys.aws.s3().clone(),
        store.bucket().to_string(),
        data.clone(),
    );
    sys.aws.block_on(async move {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    });

    assert!(matches!(store.get(key), Err(StoreError::InvalidKey(_))));
    let got = store.get_unchecked(key, 1000).unwrap().unwrap();
    assert_eq!(got.data, data);
    assert!(got.tag.starts_with('"'), "an ETag: {}", got.tag);
    match store.get_unchecked(key, 999) {
        Err(AwsError::TooLarge { size, max, .. }) => assert_eq!((size, max), (1000, 999)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        store.get_unchecked("uploads/nobody here.mp4", 10).unwrap(),
        None
    );
    assert!(store.get_unchecked("", 10).is_err());
    assert!(store.get_unchecked("a\nb", 10).is_err());
}

/// Checks a presigned URL's SigV4 query signature as S3 would, for a request carrying
/// `headers`: moto accepts presigned URLs without checking their signatures, so this is how the
/// test knows what real S3 would refuse.
fn sigv4_presigned_valid(p: &PresignedPut, headers: &[(String, String)], secret: &str) -> bool {
    let rest = p.url.split_once("://").expect("a URL with a scheme").1;
    let (authority, path_query) = rest.split_at(rest.find('/').expect("a path"));
    let (path, query) = path_query.split_once('?').expect("a query");
    let decode = |s: &str| twin_aws::s3_event::decode_key(s).expect("a decodable parameter");
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| decode(v))
            .unwrap_or_else(|| panic!("the URL has no {name}"))
    };
    let date = param("X-Amz-Date");
    let credential = param("X-Amz-Credential");
    let signed_headers = param("X-Amz-SignedHeaders");
    let signature = param("X-Amz-Signature");
    pairs.retain(|(k, _)| *k != "X-Amz-Signature");
    pairs.sort();
    let canonical_query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = if name == "host" {
            authority.to_string()
        } else {
            match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, v)) => v.trim().to_string(),
                None => return false,
            }
        };
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
        p.method,
        canonical_query.join("&")
    );
    let (_, scope) = credential.split_once('/').expect("key id/scope");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let hmac = |key: &[u8], data: &str| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac(&key, part);
    }
    hex(&hmac(&key, &string_to_sign)) == signature
}

#[test]
fn presigned_put_works_with_a_plain_http_client_and_signs_type_and_length() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let store = sys.aws.store();
    let key = keys::upload_key(
        "ada_lovelace",
        &keys::new_upload_id(),
        twin_core::media::Media::Mp4,
    )
    .unwrap();
    let video: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let p = store
        .presign_put(
            &key,
            "video/mp4",
            video.len() as u64,
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(p.method, "PUT");
    assert!(p.url.starts_with(moto.endpoint()), "{}", p.url);
    let header = |name: &str| {
        p.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-type"), Some("video/mp4"));
    assert_eq!(header("content-length"), Some("4096"));
    assert!(
        p.url
            .contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"),
        "type and length are signed: {}",
        p.url
    );
    assert!(p.url.contains("X-Amz-Expires=300"), "{}", p.url);
    assert!(store
        .presign_put("../x", "video/mp4", 1, Duration::from_secs(60))
        .is_err());

    // What real S3 checks: the signature holds for these headers and for no others.
    assert!(sigv4_presigned_valid(&p, &p.headers, SECRET_KEY));
    let with = |name: &str, value: &str| -> Vec<(String, String)> {
        p.headers
            .iter()
            .map(|(k, v)| {
                let v = if k == name { value } else { v };
                (k.clone(), v.to_string())
            })
            .collect()
    };
    assert!(!sigv4_presigned_valid(
        &p,
        &with("content-length", "4095"),
        SECRET_KEY
    ));
    assert!(!sigv4_presigned_valid(
        &p,
        &with("content-length", "999999"),
        SECRET_KEY
    ));
    assert!(!sigv4_presigned_valid(
        &p,
        &with("content-type", "text/html"),
        SECRET_KEY
    ));
    assert!(!sigv4_presigned_valid(&p, &p.headers, "another secret"));

    // The upload itself, as a browser would send it.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.put(&p.url);
    for (k, v) in &p.headers {
        if k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.send(&video[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the presigned PUT is accepted");
    let stored = store
        .get(&key)
        .unwrap()
        .expect("the upload is in the bucket");
    assert_eq!(stored.data, video);
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(etag, stored.tag);
}

#[test]
fn sqs_queue_sends_receives_acks_and_redelivers() {
    let moto = Moto::start();
    let sys = moto.system(1);
    let q = sys.aws.ingest_queue();
    let train = sys.aws.train_queue();
    q.send("a").unwrap();
    q.send_batch(&["b".to_string(), "c".to_string()]).unwrap();
    train.send("t").unwrap();

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(q.receive(10, Duration::from_secs(1)).unwrap());
    }
    let mut bodies: Vec<&str> = got.iter().map(|r| r.body.as_str()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["a", "b", "c"],
        "the train queue's message stays there"
    );
    assert!(got.iter().all(|r| r.deliveries == 1));
    let receipts: BTreeSet<u64> = got.iter().map(|r| r.receipt).collect();
    assert_eq!(receipts.len(), 3, "receipts are distinct");

    for r in &got {
        if r.body != "c" {
            q.ack(r.receipt).unwrap();
        }
    }
    let c = got.iter().find(|r| r.body == "c").unwrap();
    let a = got.iter().find(|r| r.body == "a").unwrap();
    assert!(q.ack(a.receipt).is_err(), "a receipt acknowledged twice");
    assert!(
        q.receive(10, Duration::ZERO).unwrap().is_empty(),
        "c is in flight until its visibility timeout"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let again = q.receive(10, Duration::from_secs(5)).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].body.as_str(), again[0].deliveries), ("c", 2));
    assert_ne!(again[0].receipt, c.receipt);
    q.ack(again[0].receipt).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        q.receive(10, Duration::from_secs(1)).unwrap().is_empty(),
        "acknowledged messages do not come back"
    );

    let t = train.receive(10, Duration::from_secs(5)).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].body, "t");
    train.ack(t[0].receipt).unwrap();
}

#[test]
fn unacknowledged_messages_end_in_the_dead_letter_queue() {
    let moto = Moto::start();
    let sys = moto.system(1);
    let q = sys.aws.ingest_queue();
    q.send("poison").unwrap();
    for n in 1..=MAX_RECEIVE_COUNT {
        let got = q.receive(1, Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!(got[0].deliveries, n);
        std::thread::sleep(Duration::from_millis(1200));
    }
    assert!(q.receive(1, Duration::from_secs(1)).unwrap().is_empty());
    let dlq = sys.aws.queue(&sys.ingest_dlq_url);
    let dead = dlq.receive(1, Duration::from_secs(5)).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

#[test]
fn the_store_works_from_inside_an_async_runtime() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let store = Arc::new(sys.aws.store());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = store.clone();
    rt.block_on(async move {
        // Directly in async code (as a careless handler would) and in the blocking pool.
        s.put("models/CURRENT", b"1", Condition::None).unwrap();
        let s2 = s.clone();
        let got = tokio::task::spawn_blocking(move || s2.get("models/CURRENT").unwrap())
            .await
            .unwrap();
        assert_eq!(got.unwrap().data, b"1");
    });
    // And a store dropped inside async code does not panic either.
    let aws = sys.aws.clone();
    rt.block_on(async move {
        let s = aws.store();
        assert_eq!(s.list("models/").unwrap(), ["models/CURRENT"]);
        drop(s);
        drop(aws);
    });
}

/// One enrollment's ingest message and 128-d embeddings (two crops).
fn enrollment(round: usize, writer: usize) -> Update {
    let slug = format!("person_r{round}_w{writer}");
    let upload_id = format!("up-{round}-{writer}");
    let crops: Vec<String> = [0u64, 100]
        .iter()
        .map(|ms| keys::crop_key(&slug, &upload_id, *ms).unwrap())
        .collect();
    let message = IngestMessage {
        v: 1,
        upload_id: upload_id.clone(),
        slug: slug.clone(),
        display_name: format!("Person R{round} W{writer}"),
        source_key: keys::upload_key(&slug, &upload_id, twin_core::media::Media::Mp4).unwrap(),
        crops,
        rejected: Default::default(),
    };
    message.check().expect("a valid ingest message");
    let embeddings = (0..2)
        .map(|c| embedding((round * 10 + writer) * 2 + c))
        .collect();
    Update::Add {
        message,
        embeddings,
    }
}

/// A unit-length 128-d vector that depends on `seed`.
fn embedding(seed: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM)
        .map(|j| ((seed * 131 + j * 17) as f32 * 0.37).sin())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

#[test]
fn racing_dataset_commits_through_s3_lose_nothing() {
    const ROUNDS: usize = 5;
    const WRITERS: usize = 2;
    let moto = Moto::start();
    let sys = moto.system(30);
    let store: Arc<dyn ObjectStore> = Arc::new(sys.aws.store());

    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let update = enrollment(round, w);
                    barrier.wait();
                    dataset::commit(store.as_ref(), DIM, &[update])
                })
            })
            .collect();
        let versions: Vec<u64> = handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("each racing commit succeeds"))
            .collect();
        assert_ne!(versions[0], versions[1], "two commits, two versions");
    }

    let snap = dataset::load_current(store.as_ref()).unwrap().unwrap();
    let m = &snap.manifest;
    let want_slugs: BTreeSet<String> = (0..ROUNDS)
        .flat_map(|r| (0..WRITERS).map(move |w| format!("person_r{r}_w{w}")))
        .collect();
    let want_uploads: BTreeSet<String> = (0..ROUNDS)
        .flat_map(|r| (0..WRITERS).map(move |w| format!("up-{r}-{w}")))
        .collect();
    let slugs: BTreeSet<String> = m.identities.iter().map(|i| i.slug.clone()).collect();
    assert_eq!(
        slugs, want_slugs,
        "every racing writer's identity is in the final version"
    );
    assert_eq!(m.applied_uploads, want_uploads);
    assert_eq!(m.rows, ROUNDS * WRITERS * 2);
    assert_eq!(m.dim, DIM);
    // Each identity's rows are exactly the embeddings its writer sent.
    let mut row = 0;
    for ident in &m.identities {
        let (r, w) = ident
            .slug
            .strip_prefix("person_r")
            .and_then(|s| s.split_once("_w"))
            .map(|(r, w)| (r.parse::<usize>().unwrap(), w.parse::<usize>().unwrap()))
            .unwrap();
        for c in 0..2 {
            let got = &snap.embeddings[row * DIM..(row + 1) * DIM];
            // As stored: each value rounded to binary16 (storage format 4).
            let sent = RowEncoding::F16
                .decode(&RowEncoding::F16.encode(&embedding((r * 10 + w) * 2 + c)))
                .unwrap();
            assert!(
                got == sent.as_slice(),
                "{} row {c} holds another identity's embedding",
                ident.slug
            );
            row += 1;
        }
    }

    // The versions that became current form one chain of ROUNDS × WRITERS commits, each adding
    // exactly one upload to its parent: no commit overwrote another.
    let mut chain = Vec::new();
    let mut cur = Some(m.version);
    while let Some(n) = cur {
        let s = dataset::load_version(store.as_ref(), n).unwrap();
        chain.push(s.manifest.applied_uploads.len());
        cur = s.manifest.parent;
    }
    chain.reverse();
    assert_eq!(chain, (1..=ROUNDS * WRITERS).collect::<Vec<_>>());
    // And the writers really raced: losers claimed version numbers that never became current.
    let claimed = store.list("dataset/versions/").unwrap().len();
    eprintln!(
        "{} commits claimed {claimed} version numbers; final version {}",
        ROUNDS * WRITERS,
        m.version
    );
    assert!(
        claimed > ROUNDS * WRITERS && m.version > (ROUNDS * WRITERS) as u64,
        "no commit ever lost a race ({claimed} versions claimed for {} commits); the test did not test concurrency",
        ROUNDS * WRITERS
    );

    // The gallery a search reads (rows in ranged reads, crop keys only for the hits) finds each
    // writer's person by their embedding, with the crop of that row.
    let gallery = Gallery::from_search(dataset::load_current_for_search(&store).unwrap().unwrap());
    assert_eq!(gallery.rows(), m.rows);
    let hit = &gallery.search(&embedding((3 * 10 + 1) * 2 + 1), 1, &|_| false)[0];
    assert_eq!(hit.slug, "person_r3_w1");
    assert!(hit.distance < 1e-3, "{hit:?}");
    let want = &m.identity("person_r3_w1").unwrap().crops[1];
    assert_eq!(&hit.crop, want);
}

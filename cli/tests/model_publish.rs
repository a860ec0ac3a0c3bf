//! `twin model publish` against a real S3 server on loopback (moto): the backbone lands at
//! `models/base/backbone.onnx`, byte for byte; a file that is not a model is refused and
//! nothing is written.

use std::process::Command;

use twin_core::keys::BASE_BACKBONE;
use twin_core::store::ObjectStore;
use twin_tests::moto::{Moto, ACCESS_KEY, SECRET_KEY};
use twin_tests::require_backbone;

#[test]
fn publish_uploads_the_backbone_and_refuses_junk() {
    let moto = Moto::start();
    let sys = moto.system(30);
    let bucket = sys.aws.config().bucket.clone();
    let twin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_twin"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("twin runs")
    };
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not a model").unwrap();
    let out = twin(&[
        "model",
        "publish",
        "--bucket",
        &bucket,
        "--endpoint-url",
        moto.endpoint(),
        "--backbone",
        junk.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a usable backbone"), "{err}");
    let store = sys.aws.store();
    assert!(store.get(BASE_BACKBONE).unwrap().is_none());

    let out = twin(&[
        "model",
        "publish",
        "--bucket",
        &bucket,
        "--endpoint-url",
        moto.endpoint(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = store.get(BASE_BACKBONE).unwrap().expect("published");
    assert_eq!(stored.data, std::fs::read(require_backbone()).unwrap());
}

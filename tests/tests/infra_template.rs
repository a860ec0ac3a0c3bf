//! The AWS SAM template (`infra/template.yaml`) is linted by cfn-lint and holds to the contract
//! between the functions and their infrastructure.
//!
//! cfn-lint (from the venv `scripts/setup` makes) expands the SAM transform and checks every
//! resource against CloudFormation's schemas. The structural checks read the template through
//! cfn-lint's own YAML loader (it understands `!Ref`, `!Sub` and the other short forms) and
//! assert what cfn-lint cannot know: which function gets which event source, environment
//! variables, routes and permissions. A missing venv fails the test, naming `scripts/setup`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use twin_tests::{repo_root, SETUP_HINT};

/// The template, relative to the repository root.
const TEMPLATE: &str = "infra/template.yaml";

/// Loads a CloudFormation YAML file with cfn-lint's loader and prints it as JSON.
const DUMP_AS_JSON: &str = r#"
import json, sys
from cfnlint.decode import decode
template, errors = decode(sys.argv[1])
if errors:
    sys.exit("\n".join(str(e) for e in errors))
json.dump(template, sys.stdout)
"#;

/// Every route the api serves in AWS; the last three need write authorization.
const READ_ROUTES: &[&str] = &[
    "GET /",
    "GET /app.js",
    "GET /style.css",
    "GET /favicon.svg",
    "POST /v1/match",
    "GET /v1/enrollments/{id}",
    "GET /v1/identities",
    "GET /v1/identities/{slug}",
    "GET /v1/crops/{slug}/{upload_id}/{file}",
    "GET /v1/models",
    "GET /v1/openapi.json",
];
const WRITE_ROUTES: &[&str] = &[
    "POST /v1/enrollments",
    "DELETE /v1/identities/{slug}",
    "POST /v1/models/{n}/promote",
];

fn venv_tool(name: &str) -> PathBuf {
    let path = twin_tests::venv_tool(name);
    assert!(
        path.is_file(),
        "{} is missing (the venv with cfn-lint); {SETUP_HINT}",
        path.display()
    );
    path
}

fn template() -> Value {
    let python = venv_tool("python3");
    let out = Command::new(&python)
        .arg("-c")
        .arg(DUMP_AS_JSON)
        .arg(TEMPLATE)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    assert!(
        out.status.success(),
        "cannot read {TEMPLATE} with cfn-lint's loader:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the loader prints JSON")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(r.is_object(), "{TEMPLATE} has no resource {name}");
    r
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == ty)
        .collect()
}

fn env_keys(function: &Value) -> BTreeSet<&str> {
    function["Properties"]["Environment"]["Variables"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn is_ref(v: &Value, name: &str) -> bool {
    v.get("Ref").and_then(Value::as_str) == Some(name)
}

#[test]
fn template_passes_cfn_lint() {
    let cfn_lint = venv_tool("cfn-lint");
    let out = Command::new(&cfn_lint)
        .arg(TEMPLATE)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", cfn_lint.display()));
    assert!(
        out.status.success(),
        "cfn-lint {TEMPLATE} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn functions_are_packaged_as_the_contract_says() {
    let t = template();
    let root = repo_root();
    // ingest and api link OpenCV: container images built from infra/Dockerfile.
    for (name, bin, package) in [
        ("IngestFunction", "ingest", "twin-fn-ingest"),
        ("ApiFunction", "api", "twin-fn-api"),
    ] {
        let f = resource(&t, name);
        assert_eq!(f["Properties"]["PackageType"], "Image", "{name}");
        let meta = &f["Metadata"];
        let dockerfile = Path::new("infra").join(meta["Dockerfile"].as_str().expect("Dockerfile"));
        let context = root
            .join("infra")
            .join(meta["DockerContext"].as_str().expect("DockerContext"));
        assert!(
            context.join(meta["Dockerfile"].as_str().unwrap()).is_file(),
            "{name}: {} is not in the Docker context {}",
            dockerfile.display(),
            context.display()
        );
        assert_eq!(meta["DockerBuildArgs"]["BIN"], bin, "{name}");
        assert_eq!(meta["DockerBuildArgs"]["PACKAGE"], package, "{name}");
    }
    // dataset and train do not: zip packages built by cargo lambda, with the ONNX Runtime layer.
    for (name, crate_dir, bin) in [
        ("DatasetFunction", "functions/dataset", "dataset"),
        ("TrainFunction", "functions/train", "train"),
    ] {
        let p = &resource(&t, name)["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{name}");
        assert_eq!(p["Handler"], "bootstrap", "{name}");
        assert_eq!(
            resource(&t, name)["Metadata"]["BuildMethod"],
            "rust-cargolambda"
        );
        let code = root
            .join("infra")
            .join(p["CodeUri"].as_str().expect("CodeUri"));
        assert_eq!(code, root.join("infra/..").join(crate_dir), "{name}");
        let manifest = std::fs::read_to_string(code.join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", code.display()));
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{name}: {crate_dir}/Cargo.toml has no binary {bin}"
        );
        assert!(
            as_list(&p["Layers"])
                .iter()
                .any(|l| is_ref(l, "OrtModelsLayer")),
            "{name} lacks the ONNX Runtime layer"
        );
        assert_eq!(
            p["Environment"]["Variables"]["ORT_DYLIB_PATH"],
            "/opt/lib/libonnxruntime.so"
        );
        assert_eq!(
            p["Environment"]["Variables"]["TWIN_MODELS_DIR"],
            "/opt/models"
        );
    }
}

#[test]
fn functions_get_the_environment_they_read() {
    let t = template();
    let want: [(&str, &[&str]); 4] = [
        ("IngestFunction", &["TWIN_BUCKET", "TWIN_INGEST_QUEUE_URL"]),
        (
            "DatasetFunction",
            &[
                "TWIN_BUCKET",
                "TWIN_TRAIN_QUEUE_URL",
                "TWIN_TRAIN_MIN_NEW",
                "TWIN_MODELS_DIR",
                "ORT_DYLIB_PATH",
            ],
        ),
        (
            "TrainFunction",
            &["TWIN_BUCKET", "TWIN_MODELS_DIR", "ORT_DYLIB_PATH"],
        ),
        (
            "ApiFunction",
            &["TWIN_BUCKET", "TWIN_API_KEY", "TWIN_MODEL_POLL_SECONDS"],
        ),
    ];
    // Globals hold properties directly (no `Properties` level).
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]["RUST_LOG"].is_object(),
        "RUST_LOG is not set for every function"
    );
    for (name, keys) in want {
        let have = env_keys(resource(&t, name));
        for key in keys {
            assert!(have.contains(key), "{name} lacks {key}");
        }
    }
    // The API key comes from Secrets Manager at deploy time, never from the template.
    let key = serde_json::to_string(
        &resource(&t, "ApiFunction")["Properties"]["Environment"]["Variables"]["TWIN_API_KEY"],
    )
    .unwrap();
    assert!(
        key.contains("{{resolve:secretsmanager:"),
        "TWIN_API_KEY is not a Secrets Manager reference: {key}"
    );
}

#[test]
fn queues_outlast_their_consumers_and_dead_letter() {
    let t = template();
    // Visibility timeouts come from a table keyed by the consumer's timeout: every allowed
    // timeout has a row, and every row is at least 6 × timeout + the longest batching window.
    let table = t["Mappings"]["QueueVisibilityTimeout"]
        .as_object()
        .expect("QueueVisibilityTimeout");
    for param in ["DatasetTimeout", "TrainTimeout"] {
        for allowed in as_list(&t["Parameters"][param]["AllowedValues"]) {
            let timeout = allowed.as_u64().expect("timeouts are numbers");
            let visibility = table
                .get(&timeout.to_string())
                .and_then(|row| row["Seconds"].as_u64())
                .unwrap_or_else(|| panic!("no visibility row for {param}={timeout}"));
            assert!(
                visibility >= 6 * timeout + 300,
                "{param}={timeout}: visibility {visibility}"
            );
        }
    }
    for (queue, dlq, timeout) in [
        ("IngestQueue", "IngestDeadLetterQueue", "DatasetTimeout"),
        ("TrainQueue", "TrainDeadLetterQueue", "TrainTimeout"),
    ] {
        let p = &resource(&t, queue)["Properties"];
        let find = &p["VisibilityTimeout"]["Fn::FindInMap"];
        assert_eq!(find[0], "QueueVisibilityTimeout", "{queue}");
        assert!(
            is_ref(&find[1], timeout),
            "{queue}'s visibility follows {timeout}"
        );
        let redrive = &p["RedrivePolicy"];
        assert_eq!(
            redrive["deadLetterTargetArn"]["Fn::GetAtt"][0], dlq,
            "{queue}"
        );
        assert!(
            is_ref(&redrive["maxReceiveCount"], "MaxReceiveCount"),
            "{queue}"
        );
    }
    // Every dead-letter queue (and ingest's failure destination) has an alarm on it.
    let alarmed: BTreeSet<&str> = resources_of_type(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible")
        .filter_map(|(_, a)| a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0].as_str())
        .collect();
    for q in [
        "IngestDeadLetterQueue",
        "TrainDeadLetterQueue",
        "IngestFailedEventsQueue",
    ] {
        assert!(alarmed.contains(q), "no alarm on {q}");
    }
    let ingest = &resource(&t, "IngestFunction")["Properties"]["EventInvokeConfig"];
    assert_eq!(ingest["DestinationConfig"]["OnFailure"]["Type"], "SQS");
}

#[test]
fn concurrency_throttling_and_timeouts_are_bounded() {
    let t = template();
    let default = |param: &str| -> u64 {
        t["Parameters"][param]["Default"]
            .as_u64()
            .unwrap_or_else(|| panic!("{param} has no numeric default"))
    };
    // Every function has its own reserved concurrency (a ceiling and a floor), a parameter
    // whose 0 means none.
    for f in [
        "IngestFunction",
        "DatasetFunction",
        "TrainFunction",
        "ApiFunction",
    ] {
        let prefix = f.trim_end_matches("Function");
        let param = format!("{prefix}ReservedConcurrency");
        let value = &resource(&t, f)["Properties"]["ReservedConcurrentExecutions"]["Fn::If"];
        assert_eq!(value[0], format!("{prefix}Reserved"), "{f}");
        assert!(is_ref(&value[1], &param), "{f}: {value}");
        assert!(is_ref(&value[2], "AWS::NoValue"), "{f}: {value}");
        assert!(default(&param) >= 1, "{param}");
        assert_eq!(t["Parameters"][&param]["MinValue"], 0, "{param}");
    }
    // A queue's poller never runs more dataset or train invocations than are reserved.
    assert!(default("DatasetReservedConcurrency") >= default("DatasetMaximumConcurrency"));
    let train_poller = resource(&t, "TrainFunction")["Properties"]["Events"]["TrainRequests"]
        ["Properties"]["ScalingConfig"]["MaximumConcurrency"]
        .as_u64()
        .expect("the train queue's poller has a maximum concurrency");
    assert!(default("TrainReservedConcurrency") >= train_poller);
    // The HTTP API is throttled.
    let stage = &resource(&t, "HttpApiStage")["Properties"]["DefaultRouteSettings"];
    assert!(is_ref(
        &stage["ThrottlingRateLimit"],
        "ApiThrottlingRateLimit"
    ));
    assert!(is_ref(
        &stage["ThrottlingBurstLimit"],
        "ApiThrottlingBurstLimit"
    ));
    assert!(default("ApiThrottlingRateLimit") >= 1 && default("ApiThrottlingBurstLimit") >= 1);
    // The api's S3 requests give up before the HTTP API's 30 s integration timeout.
    let env = &resource(&t, "ApiFunction")["Properties"]["Environment"]["Variables"];
    let attempt = env["TWIN_AWS_ATTEMPT_TIMEOUT_SECONDS"]
        .as_u64()
        .expect("attempt timeout");
    let operation = env["TWIN_AWS_OPERATION_TIMEOUT_SECONDS"]
        .as_u64()
        .expect("operation timeout");
    assert!(
        attempt <= operation && operation < default("ApiTimeout"),
        "{attempt} {operation}"
    );
}

#[test]
fn events_reach_the_right_functions() {
    let t = template();
    let upload = &resource(&t, "IngestFunction")["Properties"]["Events"]["Upload"];
    assert_eq!(upload["Type"], "S3");
    assert_eq!(
        upload["Properties"]["Filter"]["S3Key"]["Rules"][0]["Value"],
        "uploads/"
    );

    let ingest_msgs = &resource(&t, "DatasetFunction")["Properties"]["Events"]["IngestMessages"];
    assert_eq!(ingest_msgs["Type"], "SQS");
    assert_eq!(
        ingest_msgs["Properties"]["Queue"]["Fn::GetAtt"][0],
        "IngestQueue"
    );
    assert_eq!(ingest_msgs["Properties"]["BatchSize"], 10);
    assert_eq!(
        ingest_msgs["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    assert!(is_ref(
        &ingest_msgs["Properties"]["MaximumBatchingWindowInSeconds"],
        "DatasetBatchingWindowSeconds"
    ));

    let train = &resource(&t, "TrainFunction")["Properties"]["Events"];
    assert_eq!(
        train["TrainRequests"]["Properties"]["Queue"]["Fn::GetAtt"][0],
        "TrainQueue"
    );
    assert_eq!(train["TrainRequests"]["Properties"]["BatchSize"], 1);
    assert_eq!(train["Scheduled"]["Type"], "Schedule");
}

#[test]
fn http_api_routes_and_write_authorization() {
    let t = template();
    let mut reads = BTreeSet::new();
    let mut writes = BTreeSet::new();
    for (name, route) in resources_of_type(&t, "AWS::ApiGatewayV2::Route") {
        let p = &route["Properties"];
        let key = p["RouteKey"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: RouteKey"));
        assert_eq!(
            p["Target"]["Fn::Sub"], "integrations/${HttpApiIntegration}",
            "{name}"
        );
        if is_ref(&p["AuthorizationType"], "WriteRoutesAuthorization") {
            writes.insert(key);
        } else {
            assert!(
                p["AuthorizationType"].is_null(),
                "{name}: unexpected authorization"
            );
            reads.insert(key);
        }
    }
    assert_eq!(reads, READ_ROUTES.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(
        writes,
        WRITE_ROUTES.iter().copied().collect::<BTreeSet<_>>()
    );
    let integration = &resource(&t, "HttpApiIntegration")["Properties"];
    assert_eq!(integration["PayloadFormatVersion"], "2.0");
    assert_eq!(
        integration["IntegrationUri"]["Fn::GetAtt"][0],
        "ApiFunction"
    );
}

#[test]
fn storage_is_private_and_permissions_are_narrow() {
    let t = template();
    let bucket = &resource(&t, "Bucket")["Properties"];
    let block = &bucket["PublicAccessBlockConfiguration"];
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[k], true, "public access: {k}");
    }
    assert!(bucket["BucketEncryption"].is_object(), "bucket encryption");
    let rules = as_list(&bucket["LifecycleConfiguration"]["Rules"]);
    assert!(
        rules
            .iter()
            .any(|r| r["Prefix"] == "uploads/"
                && is_ref(&r["ExpirationInDays"], "UploadExpirationDays")),
        "uploads/ does not expire"
    );
    let tls = serde_json::to_string(&resource(&t, "BucketPolicy")["Properties"]).unwrap();
    assert!(
        tls.contains("aws:SecureTransport"),
        "the bucket policy does not require TLS"
    );

    // No role may use a wildcard action or an S3/SQS action on every resource.
    for (name, role) in resources_of_type(&t, "AWS::IAM::Role") {
        for policy in as_list(&role["Properties"]["Policies"]) {
            for st in as_list(&policy["PolicyDocument"]["Statement"]) {
                let actions: Vec<&str> = as_list(&st["Action"])
                    .iter()
                    .filter_map(|a| a.as_str())
                    .collect();
                for a in &actions {
                    assert!(!a.ends_with(":*") && *a != "*", "{name}: action {a}");
                }
                let everything = as_list(&st["Resource"])
                    .iter()
                    .any(|r| r.as_str() == Some("*"));
                assert!(!everything, "{name}: {actions:?} on *");
            }
        }
    }
    for (name, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        assert!(
            f["Properties"]["Role"].is_object(),
            "{name} has no role of its own"
        );
        assert!(
            f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"].is_string(),
            "{name}: log group with retention"
        );
    }
}

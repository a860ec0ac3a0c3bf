//! `infra/template.yaml` deployed on moto with IAM enforced, so that each function runs with
//! exactly the permissions its role gives it in AWS.
//!
//! [`Deployment::start`] has `tests/aws/deployment.py` resolve what the template deploys (the
//! SAM transform and every intrinsic resolved for moto's account, with the bucket prefix
//! `twin-<port>`) and create it on a fresh moto server: the bucket with the template's CORS
//! rules, every queue with its attributes (dead-letter queues, visibility timeouts), and every
//! IAM role with its policies. An administrator (a user with `*`) does the setup and what AWS
//! itself does in the tests (deliver S3 and SQS events, look at the bucket); each function gets
//! the temporary credentials of its role (`sts:AssumeRole`) and the environment the template
//! gives it. Then moto starts enforcing IAM: a call a role does not allow answers 403, as in AWS.
//!
//! Every S3 and SQS request a function makes is recorded ([`CallLog`], an SDK interceptor), so a
//! test can list what each function did and fail on any denial, including the ones the product
//! only logs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde_json::Value;
use twin_aws::{Aws, AwsConfig, Function as FunctionKind};

use crate::moto::{Moto, REGION};
use crate::{repo_root, venv_tool, SETUP_HINT};

/// moto's account.
pub const ACCOUNT: &str = "123456789012";
/// The stack name physical names are built from.
pub const STACK: &str = "twin";
/// The template, relative to the repository root.
pub const TEMPLATE: &str = "infra/template.yaml";

/// One S3 or SQS request a function made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    /// `s3` or `sqs`.
    pub service: String,
    /// The API operation, e.g. `GetObject`.
    pub operation: String,
    /// The object key (S3) or the queue's name (SQS).
    pub target: String,
    /// The HTTP status of the answer (0 when none came).
    pub status: u16,
}

impl Call {
    /// The IAM-style action, e.g. `s3:GetObject`.
    pub fn action(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }

    /// The target with the parts that vary per object folded: `crops/…`, `dataset/CURRENT`.
    pub fn target_pattern(&self) -> String {
        if self.service != "s3" {
            return self.target.clone();
        }
        match self.target.split_once('/') {
            Some((_, "CURRENT")) => self.target.clone(),
            Some((first, _)) => format!("{first}/…"),
            None if self.target.is_empty() => "(bucket)".into(),
            None => self.target.clone(),
        }
    }

    /// Whether IAM refused it.
    pub fn denied(&self) -> bool {
        self.status == 403
    }
}

/// The requests made through the clients it is installed in.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Debug, Clone)]
struct Pending(String);

impl Storable for Pending {
    type Storer = StoreReplace<Pending>;
}

impl CallLog {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        twin_core::sync::lock(&self.calls).clone()
    }

    /// The calls IAM refused.
    pub fn denials(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::denied).collect()
    }

    /// Removes the refused calls from the record and returns them.
    pub fn take_denials(&self) -> Vec<Call> {
        let mut calls = twin_core::sync::lock(&self.calls);
        let (denied, kept) = calls.drain(..).partition(Call::denied);
        *calls = kept;
        denied
    }
}

/// The key (path-style S3 URL) or queue name (SQS, from the JSON body's `QueueUrl`).
fn target_of(uri: &str, body: Option<&[u8]>) -> String {
    let path = uri
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map(|x| x.1).unwrap_or(""))
        .unwrap_or(uri);
    let path = path.split('?').next().unwrap_or("");
    if let Some(queue) = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v["QueueUrl"].as_str().map(str::to_string))
    {
        return queue.rsplit('/').next().unwrap_or("").to_string();
    }
    // Path style: /<bucket>/<key>.
    let key = path.split_once('/').map(|x| x.1).unwrap_or("");
    crate::percent_decode(key)
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "twin-tests-call-log"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = target_of(request.uri(), request.body().bytes());
        cfg.interceptor_state().store_put(Pending(target));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_ascii_lowercase(), m.name().to_string()))
            .unwrap_or_default();
        let target = cfg
            .load::<Pending>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let status = context.response().map(|r| r.status().as_u16()).unwrap_or(0);
        twin_core::sync::lock(&self.calls).push(Call {
            service,
            operation,
            target,
            status,
        });
        Ok(())
    }
}

/// A function of the template, as deployed.
struct Function {
    environment: BTreeMap<String, String>,
    credentials: (String, String, String),
    log: CallLog,
}

/// The template on moto, IAM enforced.
pub struct Deployment {
    moto: Moto,
    spec: Value,
    admin: Aws,
    functions: BTreeMap<String, Function>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Deployment {
    /// Deploys the template on a new moto server and switches IAM enforcement on.
    /// `api_origin`: where the test serves the HTTP API (the bucket's CORS rules name it);
    /// `params`: template parameters other than their defaults, as a deployer would set them.
    pub fn start(api_origin: Option<&str>, params: &[(&str, &str)]) -> Deployment {
        let moto = Moto::start();
        let spec = deploy_template(&moto, api_origin, params);
        let bucket = text(&spec["bucket"]["name"]);
        let admin = Aws::connect(
            AwsConfig::new(&bucket, "", "")
                .with_endpoint(moto.endpoint())
                .with_region(REGION)
                .with_static_credentials(
                    &text(&spec["admin"]["key"]),
                    &text(&spec["admin"]["secret"]),
                ),
        )
        .expect("admin clients");
        let mut functions = BTreeMap::new();
        for (name, f) in spec["functions"].as_object().expect("functions") {
            let role = f["role"].as_str().expect("a role");
            let c = &spec["roles"][role]["credentials"];
            assert!(c.is_object(), "{name}'s role {role} has no credentials");
            let credentials = (text(&c["key"]), text(&c["secret"]), text(&c["token"]));
            let environment = f["environment"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default();
            functions.insert(
                name.clone(),
                Function {
                    environment,
                    credentials,
                    log: CallLog::default(),
                },
            );
        }
        moto.enforce_iam();
        Deployment {
            moto,
            spec,
            admin,
            functions,
        }
    }

    /// The moto server.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// What `deployment.py` resolved from the template.
    pub fn spec(&self) -> &Value {
        &self.spec
    }

    /// The bucket's name.
    pub fn bucket(&self) -> String {
        text(&self.spec["bucket"]["name"])
    }

    /// A queue's URL by the template's logical id (`IngestQueue`, ...).
    pub fn queue_url(&self, logical: &str) -> String {
        let url = &self.spec["queues"][logical]["url"];
        assert!(url.is_string(), "the template has no queue {logical}");
        text(url)
    }

    /// Deletes a queue (as an operator or an outage would): sends to it fail until
    /// [`Deployment::create_queue`] makes it again.
    pub fn delete_queue(&self, logical: &str) {
        let url = self.queue_url(logical);
        let sqs = self.admin.sqs().clone();
        self.admin
            .block_on(async move { sqs.delete_queue().queue_url(&url).send().await })
            .unwrap_or_else(|e| panic!("delete {logical}: {e:?}"));
    }

    /// Creates a queue of the template again, with its attributes and URL.
    pub fn create_queue(&self, logical: &str) {
        use aws_sdk_sqs::types::QueueAttributeName;
        let q = self.spec["queues"][logical].clone();
        let mut req = self.admin.sqs().create_queue().queue_name(text(&q["name"]));
        for (k, v) in q["attributes"].as_object().into_iter().flatten() {
            req = req.attributes(QueueAttributeName::from(k.as_str()), text(v));
        }
        let url = self
            .admin
            .block_on(async move { req.send().await })
            .unwrap_or_else(|e| panic!("create {logical}: {e:?}"))
            .queue_url()
            .unwrap_or_default()
            .to_string();
        assert_eq!(url, self.queue_url(logical));
    }

    /// Clients with every permission: setup, inspection, and what AWS itself does (delivering
    /// S3 and SQS events).
    pub fn admin(&self) -> &Aws {
        &self.admin
    }

    /// The environment the template gives a function (`IngestFunction`, ...).
    pub fn environment(&self, function: &str) -> BTreeMap<String, String> {
        self.function(function).environment.clone()
    }

    /// A variable of the environment the template gives a function, parsed; panics, naming
    /// it, when the template does not set it or it does not parse.
    pub fn env_value<T: std::str::FromStr>(&self, function: &str, name: &str) -> T {
        self.environment(function)
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the template sets no usable {name} for {function}"))
    }

    /// The template's value of a function's property: `timeout`, `memory`,
    /// `reserved_concurrency`.
    pub fn function_property(&self, function: &str, property: &str) -> Value {
        self.spec["functions"][function][property].clone()
    }

    fn function(&self, name: &str) -> &Function {
        self.functions
            .get(name)
            .unwrap_or_else(|| panic!("the template has no function {name}"))
    }

    /// The function's role credentials: access key id, secret, session token.
    pub fn credentials(&self, function: &str) -> (String, String, String) {
        self.function(function).credentials.clone()
    }

    /// The configuration a function reads from its environment, signed with its role's
    /// credentials and recording its calls.
    pub fn config_for(&self, function: &str) -> AwsConfig {
        let f = self.function(function);
        let env = f.environment.clone();
        let (key, secret, token) = f.credentials.clone();
        // The queues the function sends to must be in its environment, as its code needs them.
        let kind = match function {
            "IngestFunction" => FunctionKind::Ingest,
            "DatasetFunction" => FunctionKind::Dataset,
            "TrainFunction" => FunctionKind::Train,
            _ => FunctionKind::Api,
        };
        AwsConfig::from_lookup(|name| env.get(name).cloned(), kind)
            .unwrap_or_else(|e| panic!("{function}'s environment: {e}"))
            .with_endpoint(self.moto.endpoint())
            .with_region(REGION)
            .with_session_credentials(&key, &secret, &token)
            .with_interceptor(f.log.clone())
    }

    /// Clients for a function (see [`Deployment::config_for`]).
    pub fn aws_for(&self, function: &str) -> Aws {
        Aws::connect(self.config_for(function)).expect("clients for a function")
    }

    /// The calls a function made so far.
    pub fn calls(&self, function: &str) -> Vec<Call> {
        self.function(function).log.calls()
    }

    /// Takes a function's denials out of the record (a failure the test caused on purpose)
    /// and returns them.
    pub fn take_denials(&self, function: &str) -> Vec<Call> {
        self.function(function).log.take_denials()
    }

    /// Every denial so far, by function.
    pub fn denials(&self) -> BTreeMap<String, Vec<Call>> {
        self.functions
            .iter()
            .map(|(n, f)| (n.clone(), f.log.denials()))
            .filter(|(_, d)| !d.is_empty())
            .collect()
    }

    /// For each function: each action on each target pattern, with how many calls were made and
    /// how many were denied.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.functions {
            let mut seen: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
            for c in f.log.calls() {
                let e = seen.entry((c.action(), c.target_pattern())).or_default();
                e.0 += 1;
                e.1 += usize::from(c.denied());
            }
            out.push_str(&format!("{name}:\n"));
            if seen.is_empty() {
                out.push_str("  (no calls)\n");
            }
            for ((action, target), (n, denied)) in seen {
                let d = if denied > 0 {
                    format!(", {denied} DENIED")
                } else {
                    String::new()
                };
                out.push_str(&format!("  {action} {target}: {n}{d}\n"));
            }
        }
        out
    }

    /// Panics with the report when any function was refused anything.
    pub fn assert_no_denials(&self) {
        let denials = self.denials();
        assert!(
            denials.is_empty(),
            "calls outside the template's roles:\n{}\nall calls:\n{}",
            denials
                .iter()
                .flat_map(|(f, calls)| calls
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(move |c| format!("  {f}: {} {}", c.action(), c.target)))
                .collect::<Vec<_>>()
                .join("\n"),
            self.report()
        );
    }
}

/// Runs `tests/aws/deployment.py --deploy` against this server.
fn deploy_template(moto: &Moto, api_origin: Option<&str>, params: &[(&str, &str)]) -> Value {
    let python = venv_tool("python3");
    let script = repo_root().join("tests/aws/deployment.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(TEMPLATE)
        .args(["--stack", STACK, "--account", ACCOUNT, "--region", REGION])
        .args(["--endpoint", moto.endpoint()])
        .arg("--param")
        .arg(format!("BucketNamePrefix=twin-{}", moto.port()))
        .arg("--deploy")
        .current_dir(repo_root());
    for (name, value) in params {
        cmd.arg("--param").arg(format!("{name}={value}"));
    }
    if let Some(origin) = api_origin {
        cmd.args(["--api-origin", origin]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    assert!(
        out.status.success(),
        "{} failed (aws-sam-translator and cfn-lint come from {SETUP_HINT}):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("deployment.py prints JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_keys_and_queue_names() {
        assert_eq!(
            target_of(
                "http://127.0.0.1:5000/twin-b/crops/ada/x%20y.png?x-id=PutObject",
                None
            ),
            "crops/ada/x y.png"
        );
        assert_eq!(
            target_of(
                "http://127.0.0.1:5000/",
                Some(br#"{"QueueUrl":"http://127.0.0.1:5000/123456789012/twin-IngestQueue"}"#)
            ),
            "twin-IngestQueue"
        );
        let c = Call {
            service: "s3".into(),
            operation: "GetObject".into(),
            target: "dataset/CURRENT".into(),
            status: 403,
        };
        assert_eq!(c.target_pattern(), "dataset/CURRENT");
        assert!(c.denied());
        let c = Call {
            target: "crops/ada/1.png".into(),
            ..c
        };
        assert_eq!(c.target_pattern(), "crops/…");
    }
}

//! Where the bucket and queues are, and the SDK clients built from that.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use twin_core::store::StoreError;

use crate::bridge::Bridge;
use crate::{S3Store, SqsQueue};

/// Environment variable naming the bucket.
pub const ENV_BUCKET: &str = "TWIN_BUCKET";
/// Environment variable naming the ingest → dataset queue.
pub const ENV_INGEST_QUEUE: &str = "TWIN_INGEST_QUEUE_URL";
/// Environment variable naming the dataset → train queue.
pub const ENV_TRAIN_QUEUE: &str = "TWIN_TRAIN_QUEUE_URL";
/// Environment variable overriding the AWS endpoint (moto, LocalStack).
pub const ENV_ENDPOINT: &str = "AWS_ENDPOINT_URL";

/// Environment variable naming the folder with the models (a layer's `/opt/models`).
pub const ENV_MODELS_DIR: &str = twin_core::paths::MODELS_DIR_ENV;
/// Environment variable: threads for embedding and training.
pub const ENV_THREADS: &str = "TWIN_THREADS";
/// Environment variable: seconds one attempt of an AWS request may take.
pub const ENV_ATTEMPT_TIMEOUT: &str = "TWIN_AWS_ATTEMPT_TIMEOUT_SECONDS";
/// Environment variable: seconds one AWS request may take, retries included.
pub const ENV_OPERATION_TIMEOUT: &str = "TWIN_AWS_OPERATION_TIMEOUT_SECONDS";

/// An environment variable's value; unset when empty or blank.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A count from the environment: `default` when unset, empty or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    env_var(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The runtime pieces of a function: ONNX Runtime from `ORT_DYLIB_PATH` (the layer's library)
/// and the models from [`ENV_MODELS_DIR`] when set, else from a `vendor/` beside the executable
/// or above the folder cargo started it from. The function loads ONNX Runtime from there.
pub fn runtime_from_env() -> twin_core::paths::RuntimeFiles {
    let exe = std::env::current_exe().ok();
    let cargo_dir = env_var("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    twin_core::paths::RuntimeFiles::locate(
        env_var(twin_core::paths::ORT_LIB_ENV).map(std::path::PathBuf::from),
        env_var(ENV_MODELS_DIR).map(std::path::PathBuf::from),
        &twin_core::paths::search_roots(exe.as_deref(), cargo_dir.as_deref()),
    )
}

/// Attempts per request (the first one included) for transient failures.
const DEFAULT_MAX_ATTEMPTS: u32 = 4;

/// How long AWS requests may take. Every client gets all three, so a stalled connection or a
/// slow endpoint fails a request (and its retries) instead of hanging the function until its
/// own timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// One attempt (the largest object the product reads is a 50 MB video).
    pub attempt: Duration,
    /// The whole request, retries and backoff included.
    pub operation: Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(30),
            operation: Duration::from_secs(90),
        }
    }
}

/// A failure of the AWS adapters outside the core's own error types.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Required configuration is missing.
    #[error("missing environment variable(s): {}", .0.join(", "))]
    MissingEnv(Vec<String>),
    /// The configuration cannot be used.
    #[error("AWS configuration: {0}")]
    Config(String),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object is larger than the caller allows.
    #[error("the object at {key:?} has {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The key read.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// Static credentials (tests against moto; Lambdas use their role instead).
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials (an assumed role's).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The functions of the template, by the queues each sends to (its environment names only
/// those, as its role allows only those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Sends the dataset step's messages.
    Ingest,
    /// Sends train requests.
    Dataset,
    /// Sends nothing.
    Train,
    /// Sends nothing (uploads are presigned; their events start ingest).
    Api,
    /// A tool or a test with every queue (`twin model publish`, the adapters' tests).
    All,
}

impl Function {
    /// Whether it sends to the ingest → dataset queue.
    pub fn sends_to_ingest_queue(self) -> bool {
        matches!(self, Function::Ingest | Function::All)
    }

    /// Whether it sends to the dataset → train queue.
    pub fn sends_to_train_queue(self) -> bool {
        matches!(self, Function::Dataset | Function::All)
    }
}

/// Where the system's bucket and queues are.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The bucket of the storage layout.
    pub bucket: String,
    /// ingest → dataset queue URL.
    pub ingest_queue_url: String,
    /// dataset → train queue URL.
    pub train_queue_url: String,
    /// Endpoint override (then S3 uses path-style addressing).
    pub endpoint_url: Option<String>,
    /// Region; `None` takes it from the usual AWS environment and profile.
    pub region: Option<String>,
    /// Credentials; `None` uses the default chain (environment, profile, Lambda role).
    pub credentials: Option<StaticCredentials>,
    /// Attempts per request for transient failures (standard retry mode with backoff).
    pub max_attempts: u32,
    /// Timeouts of every request.
    pub timeouts: AwsTimeouts,
    /// Interceptors added to both clients (e.g. a record of the calls made).
    pub interceptors: Vec<aws_sdk_s3::config::SharedInterceptor>,
}

impl AwsConfig {
    /// Explicit values (tests); region, endpoint and credentials from the default chain unless set.
    pub fn new(bucket: &str, ingest_queue_url: &str, train_queue_url: &str) -> Self {
        AwsConfig {
            bucket: bucket.to_string(),
            ingest_queue_url: ingest_queue_url.to_string(),
            train_queue_url: train_queue_url.to_string(),
            endpoint_url: None,
            region: None,
            credentials: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeouts: AwsTimeouts::default(),
            interceptors: Vec::new(),
        }
    }

    /// Sets the endpoint override.
    pub fn with_endpoint(mut self, url: &str) -> Self {
        self.endpoint_url = Some(url.to_string());
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self
    }

    /// Sets static credentials.
    pub fn with_static_credentials(mut self, access_key_id: &str, secret: &str) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: None,
        });
        self
    }

    /// Sets temporary credentials (an assumed role's key, secret and session token).
    pub fn with_session_credentials(
        mut self,
        access_key_id: &str,
        secret: &str,
        session_token: &str,
    ) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: Some(session_token.to_string()),
        });
        self
    }

    /// Adds an interceptor to both clients.
    pub fn with_interceptor(
        mut self,
        interceptor: impl aws_sdk_s3::config::Intercept + 'static,
    ) -> Self {
        self.interceptors
            .push(aws_sdk_s3::config::SharedInterceptor::new(interceptor));
        self
    }

    /// Reads `TWIN_BUCKET`, the queue URL `function` sends to (`TWIN_INGEST_QUEUE_URL`,
    /// `TWIN_TRAIN_QUEUE_URL`) and the optional `AWS_ENDPOINT_URL`; region and credentials come
    /// from the usual AWS environment. A queue the function does not send to may be unset.
    pub fn from_env(function: Function) -> Result<Self, AwsError> {
        Self::from_lookup(|name| std::env::var(name).ok(), function)
    }

    /// [`AwsConfig::from_env`] over any variable lookup.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        function: Function,
    ) -> Result<Self, AwsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut missing = Vec::new();
        let mut need = |name: &str, needed: bool| {
            get(name).unwrap_or_else(|| {
                if needed {
                    missing.push(name.to_string());
                }
                String::new()
            })
        };
        let bucket = need(ENV_BUCKET, true);
        let ingest = need(ENV_INGEST_QUEUE, function.sends_to_ingest_queue());
        let train = need(ENV_TRAIN_QUEUE, function.sends_to_train_queue());
        if !missing.is_empty() {
            return Err(AwsError::MissingEnv(missing));
        }
        let mut c = AwsConfig::new(bucket.trim(), ingest.trim(), train.trim());
        c.endpoint_url = get(ENV_ENDPOINT).map(|v| v.trim().to_string());
        let seconds = |name: &str| -> Result<Option<Duration>, AwsError> {
            get(name)
                .map(|v| match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                    _ => Err(AwsError::Config(format!(
                        "{name} must be a whole number of seconds above 0, not {v:?}"
                    ))),
                })
                .transpose()
        };
        if let Some(d) = seconds(ENV_ATTEMPT_TIMEOUT)? {
            c.timeouts.attempt = d;
        }
        if let Some(d) = seconds(ENV_OPERATION_TIMEOUT)? {
            c.timeouts.operation = d;
        }
        if c.timeouts.attempt > c.timeouts.operation {
            return Err(AwsError::Config(format!(
                "{ENV_ATTEMPT_TIMEOUT} ({} s) is longer than {ENV_OPERATION_TIMEOUT} ({} s)",
                c.timeouts.attempt.as_secs(),
                c.timeouts.operation.as_secs()
            )));
        }
        Ok(c)
    }
}

/// The SDK clients for one [`AwsConfig`], and the runtime their requests run on.
#[derive(Clone)]
pub struct Aws {
    bridge: Arc<Bridge>,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    config: AwsConfig,
}

impl Aws {
    /// Builds the clients (no request is made). Fails when no region can be found.
    pub fn connect(config: AwsConfig) -> Result<Self, AwsError> {
        if config.bucket.is_empty() {
            return Err(AwsError::Config("the bucket name is empty".into()));
        }
        let bridge = Arc::new(
            Bridge::new().map_err(|e| AwsError::Config(format!("cannot start a runtime: {e}")))?,
        );
        let retry = RetryConfig::standard()
            .with_max_attempts(config.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.timeouts.connect)
            .operation_attempt_timeout(config.timeouts.attempt)
            .operation_timeout(config.timeouts.operation)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "twin-aws-static",
            ));
        }
        let sdk = bridge.run(loader.load());
        if sdk.region().is_none() {
            return Err(AwsError::Config(
                "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
                    .into(),
            ));
        }
        let mut s3_conf =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(config.endpoint_url.is_some());
        let mut sqs_conf = aws_sdk_sqs::config::Builder::from(&sdk);
        for i in &config.interceptors {
            s3_conf.push_interceptor(i.clone());
            sqs_conf.push_interceptor(i.clone());
        }
        Ok(Aws {
            bridge,
            s3: aws_sdk_s3::Client::from_conf(s3_conf.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs_conf.build()),
            config,
        })
    }

    /// The configuration the clients were built from.
    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// The S3 client.
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// The SQS client.
    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    /// Runs a future on the adapters' runtime and waits for it (setup code, tests).
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.bridge.run(fut)
    }

    /// The object store over the configured bucket.
    pub fn store(&self) -> S3Store {
        S3Store::new(self.bridge.clone(), self.s3.clone(), &self.config.bucket)
    }

    /// The ingest → dataset queue.
    pub fn ingest_queue(&self) -> SqsQueue {
        self.queue(&self.config.ingest_queue_url)
    }

    /// The dataset → train queue.
    pub fn train_queue(&self) -> SqsQueue {
        self.queue(&self.config.train_queue_url)
    }

    /// Any queue by URL.
    pub fn queue(&self, url: &str) -> SqsQueue {
        SqsQueue::new(self.bridge.clone(), self.sqs.clone(), url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err =
            AwsConfig::from_lookup(lookup(&[(ENV_INGEST_QUEUE, "http://q/1")]), Function::All)
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TWIN_BUCKET"), "{text}");
        assert!(text.contains("TWIN_TRAIN_QUEUE_URL"), "{text}");
        assert!(!text.contains("TWIN_INGEST_QUEUE_URL"), "{text}");
        // Empty counts as missing.
        let err = AwsConfig::from_lookup(
            lookup(&[
                (ENV_BUCKET, " "),
                (ENV_INGEST_QUEUE, "a"),
                (ENV_TRAIN_QUEUE, "b"),
            ]),
            Function::All,
        )
        .unwrap_err();
        assert!(matches!(err, AwsError::MissingEnv(v) if v == ["TWIN_BUCKET"]));
        // A function that sends to no queue needs only the bucket.
        let c = AwsConfig::from_lookup(lookup(&[(ENV_BUCKET, "b")]), Function::Api).unwrap();
        assert_eq!(
            (c.ingest_queue_url.as_str(), c.train_queue_url.as_str()),
            ("", "")
        );
        let err =
            AwsConfig::from_lookup(lookup(&[(ENV_BUCKET, "b")]), Function::Ingest).unwrap_err();
        assert!(matches!(err, AwsError::MissingEnv(v) if v == ["TWIN_INGEST_QUEUE_URL"]));
    }

    #[test]
    fn reads_the_environment() {
        let c = AwsConfig::from_lookup(
            lookup(&[
                (ENV_BUCKET, "twin-data"),
                (ENV_INGEST_QUEUE, "http://127.0.0.1:5000/123/ingest"),
                (ENV_TRAIN_QUEUE, "http://127.0.0.1:5000/123/train"),
                (ENV_ENDPOINT, "http://127.0.0.1:5000"),
            ]),
            Function::All,
        )
        .unwrap();
        assert_eq!(c.bucket, "twin-data");
        assert_eq!(c.train_queue_url, "http://127.0.0.1:5000/123/train");
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        let without = AwsConfig::from_lookup(
            lookup(&[
                (ENV_BUCKET, "b"),
                (ENV_INGEST_QUEUE, "i"),
                (ENV_TRAIN_QUEUE, "t"),
            ]),
            Function::All,
        )
        .unwrap();
        assert_eq!(without.endpoint_url, None);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = AwsConfig::new("b", "i", "t").with_static_credentials("AKIDEXAMPLE", "s3cr3t");
        let text = format!("{c:?}");
        assert!(
            text.contains("AKIDEXAMPLE") && !text.contains("s3cr3t"),
            "{text}"
        );
        let c = AwsConfig::new("b", "i", "t").with_session_credentials(
            "ASIAEXAMPLE",
            "s3cr3t",
            "t0k3n",
        );
        let text = format!("{c:?}");
        assert!(
            text.contains("ASIAEXAMPLE") && !text.contains("s3cr3t") && !text.contains("t0k3n"),
            "{text}"
        );
    }

    #[test]
    fn every_client_gets_connect_attempt_and_operation_timeouts() {
        let vars = [
            (ENV_BUCKET, "b"),
            (ENV_INGEST_QUEUE, "i"),
            (ENV_TRAIN_QUEUE, "t"),
            (ENV_ATTEMPT_TIMEOUT, "4"),
            (ENV_OPERATION_TIMEOUT, "15"),
        ];
        let c = AwsConfig::from_lookup(lookup(&vars), Function::All)
            .unwrap()
            .with_region("us-east-1");
        assert_eq!(c.timeouts.attempt, Duration::from_secs(4));
        assert_eq!(c.timeouts.operation, Duration::from_secs(15));
        let aws = Aws::connect(c).unwrap();
        let s3 = aws.s3().config().timeout_config().expect("S3 timeouts");
        let sqs = aws.sqs().config().timeout_config().expect("SQS timeouts");
        for t in [s3, sqs] {
            assert_eq!(t.connect_timeout(), Some(Duration::from_secs(5)));
            assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(4)));
            assert_eq!(t.operation_timeout(), Some(Duration::from_secs(15)));
        }
        // Defaults when unset; nonsense refused with the variable named.
        let d = AwsConfig::from_lookup(lookup(&vars[..3]), Function::All).unwrap();
        assert_eq!(d.timeouts, AwsTimeouts::default());
        for bad in [("0", "15"), ("x", "15"), ("20", "15")] {
            let err = AwsConfig::from_lookup(
                lookup(&[
                    (ENV_BUCKET, "b"),
                    (ENV_INGEST_QUEUE, "i"),
                    (ENV_TRAIN_QUEUE, "t"),
                    (ENV_ATTEMPT_TIMEOUT, bad.0),
                    (ENV_OPERATION_TIMEOUT, bad.1),
                ]),
                Function::All,
            )
            .unwrap_err();
            assert!(err.to_string().contains(ENV_ATTEMPT_TIMEOUT), "{err}");
        }
    }
}

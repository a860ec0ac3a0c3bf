//! A real S3/SQS protocol server on loopback for the AWS adapters' tests: moto, from the venv
//! that `scripts/setup` makes, started through `tests/aws/moto_server.py` (moto's own server,
//! with the two things AWS accepts under IAM enforcement that moto's does not: CORS preflights
//! and presigned requests; see that file).
//!
//! Each [`Moto`] is its own server process on a free port (so tests run in parallel), killed
//! when dropped. [`Moto::enforce_iam`] switches on moto's IAM authorization (see
//! [`crate::deploy`], which deploys the SAM template's roles and runs each function under its
//! own). [`Moto::system`] creates what the product expects in an account: a bucket and
//! the two queues (the ingest queue with a dead-letter queue), and hands back an
//! [`twin_aws::Aws`] pointed at them. A missing moto is a panic that names `scripts/setup`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use twin_aws::{Aws, AwsConfig};

use crate::SETUP_HINT;

/// Static credentials moto accepts.
pub const ACCESS_KEY: &str = "test";
/// Static credentials moto accepts.
pub const SECRET_KEY: &str = "test";
/// The region of every test resource.
pub const REGION: &str = "us-east-1";
/// How long a server gets to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries before the ingest queue moves a message to its dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// A running moto server.
pub struct Moto {
    child: Child,
    port: u16,
    endpoint: String,
    log: tempfile::NamedTempFile,
}

/// The product's resources in a moto account.
pub struct MotoSystem {
    /// Clients and configuration (bucket, ingest and train queues).
    pub aws: Aws,
    /// The ingest queue's dead-letter queue.
    pub ingest_dlq_url: String,
}

/// `<repo>/.venv/bin/moto_server`.
pub fn moto_server_path() -> PathBuf {
    crate::venv_tool("moto_server")
}

/// The launcher that runs moto's server with AWS's behaviour under IAM enforcement.
pub fn launcher_path() -> PathBuf {
    crate::repo_root().join("tests/aws/moto_server.py")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    /// Panics, naming `scripts/setup`, when moto is not installed or does not start.
    pub fn start() -> Moto {
        let exe = moto_server_path();
        assert!(
            exe.is_file(),
            "moto is missing ({} does not exist); {SETUP_HINT} (it installs moto[server] into .venv)",
            exe.display()
        );
        // A port picked free can be taken before moto binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&exe, free_port()) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("moto_server did not start: {last}\n(if moto is broken: {SETUP_HINT})");
    }

    fn try_start(exe: &Path, port: u16) -> Result<Moto, String> {
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
        let out = log.reopen().map_err(|e| format!("log file: {e}"))?;
        let err = log.reopen().map_err(|e| format!("log file: {e}"))?;
        // The venv's Python (next to moto_server) runs the launcher.
        let python = exe.with_file_name("python3");
        let child = Command::new(&python)
            .arg(launcher_path())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let mut moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!(
                    "moto_server exited ({status}) on port {port}:\n{}",
                    moto.log_text()
                ));
            }
            // Only our own server says it runs on the port (another test's server may answer
            // there while ours fails to bind it).
            let ours = moto
                .log_text()
                .contains(&format!("Running on http://127.0.0.1:{port}"));
            if ours
                && TcpStream::connect_timeout(
                    &(Ipv4Addr::LOCALHOST, port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Ok(moto);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "moto_server did not answer on port {port} within {START_TIMEOUT:?}:\n{}",
                    moto.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Switches on IAM authorization: from now on every request must be signed by a key moto
    /// knows, whose policies allow it (moto's `INITIAL_NO_AUTH_ACTION_COUNT`, set to 0 through
    /// its `/moto-api/reset-auth`).
    pub fn enforce_iam(&self) {
        let status = ureq::post(&format!("{}/moto-api/reset-auth", self.endpoint))
            .send("0")
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("moto's reset-auth: {e}"));
        assert_eq!(status, 200, "moto's reset-auth");
    }

    /// What the server printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A configuration for this server: endpoint, region, static credentials.
    pub fn config(&self, bucket: &str, ingest_queue_url: &str, train_queue_url: &str) -> AwsConfig {
        AwsConfig::new(bucket, ingest_queue_url, train_queue_url)
            .with_endpoint(&self.endpoint)
            .with_region(REGION)
            .with_static_credentials(ACCESS_KEY, SECRET_KEY)
    }

    /// Creates a bucket `twin-test-<port>`, the ingest queue (visibility `visibility_secs`,
    /// dead-letter queue after [`MAX_RECEIVE_COUNT`] deliveries) and the train queue.
    pub fn system(&self, visibility_secs: u32) -> MotoSystem {
        let bucket = format!("twin-test-{}", self.port);
        let setup = Aws::connect(self.config(&bucket, "", "")).expect("clients for moto");
        let s3 = setup.s3().clone();
        let sqs = setup.sqs().clone();
        let b = bucket.clone();
        let (ingest, train, dlq) = setup.block_on(async move {
            s3.create_bucket()
                .bucket(&b)
                .send()
                .await
                .unwrap_or_else(|e| panic!("create bucket {b}: {e:?}"));
            let dlq = sqs
                .create_queue()
                .queue_name("twin-ingest-dlq")
                .send()
                .await
                .expect("create the dead-letter queue")
                .queue_url()
                .expect("a queue URL")
                .to_string();
            let dlq_arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("dead-letter queue attributes")
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .expect("the dead-letter queue's ARN");
            let redrive = format!(
                r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{MAX_RECEIVE_COUNT}"}}"#
            );
            let ingest = sqs
                .create_queue()
                .queue_name("twin-ingest")
                .attributes(
                    QueueAttributeName::VisibilityTimeout,
                    visibility_secs.to_string(),
                )
                .attributes(QueueAttributeName::RedrivePolicy, redrive)
                .send()
                .await
                .expect("create the ingest queue")
                .queue_url()
                .expect("a queue URL")
                .to_string();
            let train = sqs
                .create_queue()
                .queue_name("twin-train")
                .attributes(
                    QueueAttributeName::VisibilityTimeout,
                    visibility_secs.to_string(),
                )
                .send()
                .await
                .expect("create the train queue")
                .queue_url()
                .expect("a queue URL")
                .to_string();
            (ingest, train, dlq)
        });
        let aws = Aws::connect(self.config(&bucket, &ingest, &train)).expect("clients for moto");
        MotoSystem {
            aws,
            ingest_dlq_url: dlq,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

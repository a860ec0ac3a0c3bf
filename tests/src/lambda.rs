//! A Lambda function binary run locally as Lambda runs it, and an HTTP API in front of it as API
//! Gateway serves it: what `cargo lambda watch` does, inside a test, without a second build.
//!
//! - [`RuntimeApi`]: a minimal Lambda Runtime API on loopback (what `lambda_runtime` 1.x calls:
//!   `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
//!   `.../invocation/{id}/error`, `/2018-06-01/runtime/init/error`). It hands out queued events
//!   (a long poll, with the deadline, request id and function ARN headers) and reports what the
//!   function posts back, with the time it arrived.
//! - [`FunctionProcess`]: the binary spawned against it with the environment Lambda gives
//!   ([`lambda_command`]: a cleared environment plus `AWS_LAMBDA_*` and the region; the caller
//!   adds the role's credentials and the function's own variables), its output followed line by
//!   line ([`Logs`]), killed when dropped.
//! - [`LambdaFunction`]: one instance (one process) taking one invocation at a time, as Lambda
//!   sends it events; [`LambdaFunction::invoke`] queues an event and waits for its answer.
//! - [`HttpApi`]: an HTTP/1.1 server on 127.0.0.1 standing for an API Gateway HTTP API with
//!   `AWS_PROXY` integrations of payload format 2.0. Only the routes the template declares
//!   ([`template_routes`]) reach the function, others answer `404 {"message":"Not Found"}` as
//!   the gateway does; a route whose authorization is `AWS_IAM` answers 403 (request signing is
//!   not emulated); each request becomes a payload 2.0 event (method, `rawPath`,
//!   `rawQueryString`, lower-cased headers, cookies, base64 body, `requestContext.http`, the
//!   matched `routeKey` and path parameters) and the function's answer (`statusCode`, `headers`,
//!   `multiValueHeaders`, `cookies`, `body`, `isBase64Encoded`) becomes the HTTP response. A
//!   failed or timed-out invocation answers 500 `{"message":"Internal Server Error"}`, an event
//!   over Lambda's 6 MB payload limit 413. Every request is logged ([`HttpApi::access_log`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::deploy::{ACCOUNT, TEMPLATE};
use crate::events::{base64_decode, base64_encode};
use crate::moto::REGION;
use crate::resources::peak_rss_mb;
use crate::{repo_root, venv_tool, SETUP_HINT};

/// An HTTP answer: status, headers, body.
pub type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// Lambda's limit on a synchronous invocation's request and response payloads.
pub const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// What the function posted back.
#[derive(Debug)]
pub enum Post {
    /// `POST /2018-06-01/runtime/invocation/{id}/response`.
    Response {
        /// The invocation.
        id: String,
        /// The answer, as posted.
        body: Vec<u8>,
    },
    /// `POST /2018-06-01/runtime/invocation/{id}/error`.
    Error {
        /// The invocation.
        id: String,
        /// The error document.
        body: String,
    },
    /// `POST /2018-06-01/runtime/init/error`.
    InitError {
        /// The error document.
        body: String,
    },
}

/// A minimal Lambda Runtime API on loopback: hands out queued events on `GET /next` and reports
/// what the function posts back, with the time it arrived.
pub struct RuntimeApi {
    port: u16,
    events: Mutex<Option<Sender<(String, String)>>>,
    posts: Mutex<Receiver<(Instant, Post)>>,
    shared: Arc<Shared>,
}

struct Shared {
    events: Mutex<Receiver<(String, String)>>,
    posts: Mutex<Sender<(Instant, Post)>>,
    first_next: Mutex<Option<Instant>>,
    handed: Mutex<HashMap<String, Instant>>,
    stop: AtomicBool,
    function_arn: String,
    timeout: Duration,
}

impl RuntimeApi {
    /// Listens on a free loopback port; each invocation handed out gets a deadline `timeout`
    /// away and `function_arn` as the invoked function.
    pub fn start(function_arn: &str, timeout: Duration) -> RuntimeApi {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let (events_tx, events_rx) = mpsc::channel();
        let (posts_tx, posts_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(events_rx),
            posts: Mutex::new(posts_tx),
            first_next: Mutex::new(None),
            handed: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            function_arn: function_arn.to_string(),
            timeout,
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                let s = s.clone();
                std::thread::spawn(move || serve_runtime(conn, &s));
            }
        });
        RuntimeApi {
            port,
            events: Mutex::new(Some(events_tx)),
            posts: Mutex::new(posts_rx),
            shared,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queues an invocation.
    pub fn queue(&self, id: &str, event: &str) {
        if let Some(tx) = &*lock(&self.events) {
            tx.send((id.to_string(), event.to_string()))
                .expect("the emulator is running");
        }
    }

    /// The next post, if one arrives within `wait`.
    pub fn try_post(&self, wait: Duration) -> Result<Option<(Instant, Post)>, String> {
        match lock(&self.posts).recv_timeout(wait) {
            Ok(p) => Ok(Some(p)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(e) => Err(format!("the emulator stopped: {e}")),
        }
    }

    /// The next post; an error with the function's output when it exits or `limit` passes.
    pub fn next_post(
        &self,
        limit: Duration,
        function: &mut FunctionProcess,
    ) -> Result<(Instant, Post), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = self.try_post(Duration::from_millis(20))? {
                return Ok(p);
            }
            // The process exiting (an init failure before `run`, a crash) ends the wait.
            if let Some(status) = function.exited() {
                return Err(format!(
                    "the function exited ({status}) before answering; its output:\n{}",
                    function.logs().text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer within {limit:?}; the function's output:\n{}",
                    function.logs().text()
                ));
            }
        }
    }

    /// When the function first asked for an event (its init was done).
    pub fn first_next(&self) -> Option<Instant> {
        *lock(&self.shared.first_next)
    }

    /// When invocation `id` was handed out, if it was.
    pub fn handed_at(&self, id: &str) -> Option<Instant> {
        lock(&self.shared.handed).get(id).copied()
    }

    /// When invocation `id` was handed out (panics if it was not).
    pub fn handed(&self, id: &str) -> Instant {
        self.handed_at(id)
            .unwrap_or_else(|| panic!("invocation {id} was not handed out"))
    }

    /// Stops handing out events and accepting connections.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        lock(&self.events).take();
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    twin_core::sync::lock(m)
}

/// One HTTP/1.1 connection from the runtime client (kept alive across requests).
fn serve_runtime(conn: TcpStream, s: &Shared) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        let now = Instant::now();
        let (method, path, body) = (req.method, req.target, req.body);
        let reply = if method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
            lock(&s.first_next).get_or_insert(now);
            // Blocks until an event is queued (a long poll, as Lambda's is).
            let next = lock(&s.events).recv();
            let Ok((id, event)) = next else {
                let _ = out.shutdown(Shutdown::Both);
                return;
            };
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("a clock after 1970")
                + s.timeout;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: {}\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-674a0000-000000000000000000000000;Parent=0000000000000000;Sampled=0\r\n\
                 Content-Length: {}\r\n\r\n",
                deadline.as_millis(),
                s.function_arn,
                event.len()
            );
            lock(&s.handed).insert(id, Instant::now());
            [head.into_bytes(), event.into_bytes()].concat()
        } else if method == "POST" {
            let post = match path
                .strip_prefix("/2018-06-01/runtime/")
                .map(|p| p.split('/').collect::<Vec<_>>())
                .as_deref()
            {
                Some(["invocation", id, "response"]) => Some(Post::Response {
                    id: id.to_string(),
                    body,
                }),
                Some(["invocation", id, "error"]) => Some(Post::Error {
                    id: id.to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
                Some(["init", "error"]) => Some(Post::InitError {
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
                _ => None,
            };
            match post {
                Some(p) => {
                    let _ = lock(&s.posts).send((now, p));
                    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n".to_vec()
                }
                None => not_found(),
            }
        } else {
            not_found()
        };
        if out.write_all(&reply).and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

fn not_found() -> Vec<u8> {
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
}

/// One HTTP/1.1 request as read off a connection.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query string.
    pub target: String,
    /// `HTTP/1.1`.
    pub version: String,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`, or chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of a header (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request. `None` at the end of the connection (or on a malformed request).
pub fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let (mut length, mut chunked) = (0usize, false);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
        headers.push((name.to_string(), value.to_string()));
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                // Trailers are not expected; the final CRLF is read.
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        target,
        version,
        headers,
        body,
    })
}

/// The function's stdout and stderr, line by line, with the time each line arrived.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Logs {
    /// Follows a child's piped stdout and stderr; times count from `started`.
    pub fn follow(child: &mut Child, started: Instant) -> Logs {
        let logs = Logs::default();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout piped"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr piped"));
        for stream in [out, err] {
            let lines = logs.lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    lock(&lines).push((started.elapsed(), line));
                }
            });
        }
        logs
    }

    /// The JSON lines (Lambda's JSON log format), with their times.
    pub fn lines(&self) -> Vec<(Duration, Value)> {
        lock(&self.lines)
            .iter()
            .filter_map(|(t, l)| serde_json::from_str(l).ok().map(|v| (*t, v)))
            .collect()
    }

    /// Every line as printed.
    pub fn text(&self) -> String {
        lock(&self.lines)
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// The lines logged at level `ERROR` (JSON `"level":"ERROR"`, or a plain line saying
    /// `ERROR`).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.lines)
            .iter()
            .map(|(_, l)| l)
            .filter(|l| match serde_json::from_str::<Value>(l) {
                Ok(v) => v["level"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("error")),
                Err(_) => l.split_whitespace().any(|w| w == "ERROR"),
            })
            .cloned()
            .collect()
    }
}

/// A function's process: its output followed, killed when dropped (also when a check panics).
pub struct FunctionProcess {
    child: Child,
    logs: Logs,
}

impl FunctionProcess {
    /// Spawns `cmd` (see [`lambda_command`]) with its stdout and stderr followed; log times
    /// count from `started`.
    pub fn spawn(mut cmd: Command, started: Instant) -> FunctionProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        let logs = Logs::follow(&mut child, started);
        FunctionProcess { child, logs }
    }

    /// Its output.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The function binary with the environment Lambda gives every function: a cleared
/// environment, `AWS_LAMBDA_RUNTIME_API` (the emulator), the function's name, memory and
/// version, its log group and stream, JSON logs (the template's `LoggingConfig`), the region.
/// The caller adds the role's credentials and the function's own variables.
pub fn lambda_command(
    binary: &std::path::Path,
    runtime: &RuntimeApi,
    name: &str,
    memory_mb: u64,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("2026/11/29/[$LATEST]{name}"),
        )
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", REGION);
    cmd
}

/// An ARN for a function of moto's account.
pub fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

/// Why an invocation gave no answer.
#[derive(Debug, Clone)]
pub enum InvokeError {
    /// The function reported an error (`.../error` or `init/error`).
    Function(String),
    /// No answer within the timeout, or the process exited.
    NoAnswer(String),
    /// The process used more memory than the function is given (Lambda stops it).
    OutOfMemory(String),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Function(e) => write!(f, "the function failed: {e}"),
            InvokeError::NoAnswer(e) => write!(f, "no answer: {e}"),
            InvokeError::OutOfMemory(e) => write!(f, "out of memory: {e}"),
        }
    }
}

/// One instance of a function: its process and its Runtime API, one invocation at a time.
pub struct LambdaFunction {
    runtime: RuntimeApi,
    process: Mutex<FunctionProcess>,
    logs: Logs,
    timeout: Duration,
    init_limit: Duration,
    /// The memory the function is given (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, from the template's
    /// `MemorySize` through [`lambda_command`]), in MB.
    memory_mb: Option<u64>,
    next_id: AtomicU64,
}

impl LambdaFunction {
    /// Spawns the process `command` builds (given the emulator, see [`lambda_command`]):
    /// invocations time out after `timeout` (the template's `Timeout`); the first may wait
    /// `init_limit` for the function's init.
    pub fn start(
        function_arn: &str,
        timeout: Duration,
        init_limit: Duration,
        command: impl FnOnce(&RuntimeApi) -> Command,
    ) -> LambdaFunction {
        let runtime = RuntimeApi::start(function_arn, timeout);
        let cmd = command(&runtime);
        let memory_mb = cmd
            .get_envs()
            .find(|(k, _)| *k == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .and_then(|(_, v)| v?.to_str()?.parse().ok());
        let process = FunctionProcess::spawn(cmd, Instant::now());
        LambdaFunction {
            runtime,
            logs: process.logs().clone(),
            process: Mutex::new(process),
            timeout,
            init_limit,
            memory_mb,
            next_id: AtomicU64::new(0),
        }
    }

    /// The process's peak resident memory so far, in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        peak_rss_mb(lock(&self.process).id())
    }

    /// Lambda stops a function that uses more than its memory: so does this emulator (checked
    /// against the process's peak resident memory after each invocation, and the process is
    /// killed as Lambda would).
    fn check_memory(&self, process: &mut FunctionProcess, id: &str) -> Result<(), InvokeError> {
        let (Some(limit), Some(peak)) = (self.memory_mb, peak_rss_mb(process.id())) else {
            return Ok(());
        };
        if peak > limit as f64 {
            let _ = process.child.kill();
            return Err(InvokeError::OutOfMemory(format!(
                "invocation {id}: the process reached {peak:.0} MB of its {limit} MB"
            )));
        }
        Ok(())
    }

    /// Waits until the function asks for its first event (init done); an error with its
    /// output when it exits first or `limit` passes.
    pub fn wait_ready(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if self.runtime.first_next().is_some() {
                return Ok(started.elapsed());
            }
            let mut process = lock(&self.process);
            if let Some(status) = process.exited() {
                return Err(format!(
                    "the function exited ({status}) during init; its output:\n{}",
                    process.logs().text()
                ));
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "the function was not ready within {limit:?}; its output:\n{}",
                    process.logs().text()
                ));
            }
            drop(process);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The function's output so far.
    pub fn logs(&self) -> Logs {
        self.logs.clone()
    }

    /// Invokes the function synchronously with `event` and returns the payload it answered.
    /// Invocations are serialized: one process is one Lambda instance.
    pub fn invoke(&self, event: &str) -> Result<Vec<u8>, InvokeError> {
        let mut process = lock(&self.process);
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            self.next_id.fetch_add(1, Ordering::SeqCst)
        );
        let queued = Instant::now();
        self.runtime.queue(&id, event);
        loop {
            // The deadline runs from the moment the function takes the event; before that, the
            // function may still be in its init.
            let (deadline, what) = match self.runtime.handed_at(&id) {
                Some(at) => (at + self.timeout, "timed out"),
                None => (queued + self.init_limit, "was not taken (init too long)"),
            };
            if Instant::now() > deadline {
                return Err(InvokeError::NoAnswer(format!("invocation {id} {what}")));
            }
            if let Some(status) = process.exited() {
                return Err(InvokeError::NoAnswer(format!(
                    "the function exited ({status}) during invocation {id}"
                )));
            }
            let post = self
                .runtime
                .try_post(Duration::from_millis(20))
                .map_err(InvokeError::NoAnswer)?;
            match post {
                Some((_, Post::Response { id: got, body })) if got == id => {
                    self.check_memory(&mut process, &id)?;
                    return Ok(body);
                }
                Some((_, Post::Error { id: got, body })) if got == id => {
                    self.check_memory(&mut process, &id)?;
                    return Err(InvokeError::Function(body));
                }
                Some((_, Post::InitError { body })) => return Err(InvokeError::Function(body)),
                // Nothing yet, or a late answer to an earlier invocation that timed out.
                _ => {}
            }
        }
    }
}

/// A route of the HTTP API: `GET /v1/identities/{slug}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The template's logical id.
    pub id: String,
    /// `GET`, `POST`, ..., or `ANY`.
    pub method: String,
    /// `/v1/identities/{slug}`, or `$default` for the default route.
    pub path: String,
    /// `NONE`, `AWS_IAM`, `JWT`, `CUSTOM`.
    pub authorization: String,
}

impl Route {
    /// `GET /v1/identities/{slug}`, or `$default`.
    pub fn key(&self) -> String {
        if self.path == "$default" {
            self.path.clone()
        } else {
            format!("{} {}", self.method, self.path)
        }
    }

    /// The path parameters when `path` matches this route's path.
    fn parameters(&self, path: &str) -> Option<BTreeMap<String, String>> {
        if self.path == "$default" {
            return Some(BTreeMap::new());
        }
        let pattern: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut params = BTreeMap::new();
        for (i, p) in pattern.iter().enumerate() {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
                let rest = parts.get(i..).map(|r| r.join("/")).unwrap_or_default();
                if rest.is_empty() {
                    return None;
                }
                params.insert(name.to_string(), rest);
                return Some(params);
            }
            let part = parts.get(i)?;
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if part.is_empty() {
                    return None;
                }
                params.insert(name.to_string(), crate::percent_decode(part));
            } else if p != part {
                return None;
            }
        }
        (parts.len() == pattern.len()).then_some(params)
    }

    /// How specific the route is: literal segments first, then variables, greedy last.
    fn specificity(&self) -> (bool, usize, usize, bool) {
        let segments: Vec<&str> = self.path.split('/').collect();
        (
            self.path != "$default",
            !self.path.contains("+}") as usize,
            segments.iter().filter(|s| !s.starts_with('{')).count(),
            self.method != "ANY",
        )
    }
}

/// The route of `routes` a request matches: the most specific one (API Gateway's rule).
pub fn match_route<'a>(
    routes: &'a [Route],
    method: &str,
    path: &str,
) -> Option<(&'a Route, BTreeMap<String, String>)> {
    routes
        .iter()
        .filter(|r| r.method == method || r.method == "ANY" || r.path == "$default")
        .filter_map(|r| r.parameters(path).map(|p| (r, p)))
        .max_by_key(|(r, _)| r.specificity())
}

const ROUTES_SCRIPT: &str = r#"
import json, sys
from cfnlint.decode import decode
template, errors = decode(sys.argv[1])
if errors:
    sys.exit("\n".join(str(e) for e in errors))
params = dict(a.split("=", 1) for a in sys.argv[2:])
defaults = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
def value(x):
    if isinstance(x, dict) and list(x) == ["Ref"]:
        name = str(x["Ref"])
        if name not in params and name not in defaults:
            sys.exit(f"a route refers to {name}, which is not a parameter")
        return str(params.get(name, defaults.get(name)))
    if not isinstance(x, str):
        sys.exit(f"a route property is not a string or a parameter: {x!r}")
    return str(x)
routes = []
for logical, r in template.get("Resources", {}).items():
    if r.get("Type") != "AWS::ApiGatewayV2::Route":
        continue
    if "Condition" in r:
        sys.exit(f"{logical} has a condition, which this reader does not resolve")
    p = r.get("Properties", {})
    routes.append({"id": str(logical), "route_key": value(p["RouteKey"]),
                   "authorization": value(p.get("AuthorizationType", "NONE"))})
print(json.dumps(routes))
"#;

/// The HTTP API routes `infra/template.yaml` declares (`AWS::ApiGatewayV2::Route`), with their
/// authorization resolved for the template parameters `params` (defaults otherwise). Read
/// with the venv's cfn-lint, as `tests/tests/infra_template.rs` reads the template.
pub fn template_routes(params: &[(&str, &str)]) -> Vec<Route> {
    let python = venv_tool("python3");
    let out = Command::new(&python)
        .arg("-c")
        .arg(ROUTES_SCRIPT)
        .arg(repo_root().join(TEMPLATE))
        .args(params.iter().map(|(k, v)| format!("{k}={v}")))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    assert!(
        out.status.success(),
        "reading the template's routes failed (cfn-lint comes from {SETUP_HINT}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes: Vec<Value> =
        serde_json::from_slice(&out.stdout).expect("the routes script prints JSON");
    routes
        .into_iter()
        .map(|r| {
            let key = r["route_key"].as_str().expect("a route key");
            let (method, path) = match key.split_once(' ') {
                Some((m, p)) => (m.to_string(), p.to_string()),
                None => ("ANY".to_string(), key.to_string()),
            };
            Route {
                id: r["id"].as_str().unwrap_or_default().to_string(),
                method,
                path,
                authorization: r["authorization"].as_str().unwrap_or("NONE").to_string(),
            }
        })
        .collect()
}

/// One request the HTTP API answered.
#[derive(Debug, Clone)]
pub struct Access {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The route it matched (`-` for none).
    pub route: String,
    /// The status answered.
    pub status: u16,
    /// Time to the answer.
    pub elapsed: Duration,
    /// Why the gateway answered by itself, if it did (no route, the function failed, ...).
    pub gateway_error: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target: String = self.target.chars().take(100).collect();
        write!(
            f,
            "{} {target} [{}] {} {} ms",
            self.method,
            self.route,
            self.status,
            self.elapsed.as_millis()
        )?;
        if let Some(e) = &self.gateway_error {
            write!(f, " ({})", e.chars().take(300).collect::<String>())?;
        }
        Ok(())
    }
}

/// An API Gateway HTTP API (payload format 2.0) on a loopback listener, in front of one
/// function instance.
pub struct HttpApi {
    port: u16,
    log: Arc<Mutex<Vec<Access>>>,
    stop: Arc<AtomicBool>,
}

struct Gateway {
    routes: Vec<Route>,
    function: Arc<LambdaFunction>,
    log: Arc<Mutex<Vec<Access>>>,
    api_id: String,
    next_request: AtomicU64,
}

impl HttpApi {
    /// Serves `routes` on `listener` (bound on 127.0.0.1 by the caller, so that the origin is
    /// known before the stack is deployed), invoking `function`.
    pub fn serve(
        listener: TcpListener,
        routes: Vec<Route>,
        function: Arc<LambdaFunction>,
    ) -> HttpApi {
        let port = listener
            .local_addr()
            .expect("the listener's address")
            .port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let gateway = Arc::new(Gateway {
            routes,
            function,
            log: log.clone(),
            api_id: "httpapi".into(),
            next_request: AtomicU64::new(0),
        });
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                let gateway = gateway.clone();
                let stopped = stopped.clone();
                std::thread::spawn(move || gateway.serve(conn, &stopped));
            }
        });
        HttpApi { port, log, stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request answered so far, in order.
    pub fn access_log(&self) -> Vec<Access> {
        lock(&self.log).clone()
    }
}

impl Drop for HttpApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// A gateway-made answer: status and `{"message": ...}`, as API Gateway words them.
fn gateway_answer(status: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let message = match status {
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    (
        status,
        vec![("content-type".into(), "application/json".into())],
        json!({ "message": message }).to_string().into_bytes(),
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

impl Gateway {
    fn serve(&self, conn: TcpStream, stop: &AtomicBool) {
        let Ok(mut out) = conn.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(conn);
        while let Some(req) = read_request(&mut reader) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let started = Instant::now();
            let close = req
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                || req.version == "HTTP/1.0";
            let n = self.next_request.fetch_add(1, Ordering::SeqCst) + 1;
            let (route, (status, headers, body), gateway_error) = self.answer(&req, n);
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (name, value) in &headers {
                let lower = name.to_ascii_lowercase();
                if ["content-length", "transfer-encoding", "connection"].contains(&lower.as_str()) {
                    continue;
                }
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!(
                "apigw-requestid: req{n:012}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
                body.len(),
                if close { "close" } else { "keep-alive" }
            ));
            let head_only = req.method == "HEAD";
            let written = out
                .write_all(head.as_bytes())
                .and_then(|_| {
                    if head_only {
                        Ok(())
                    } else {
                        out.write_all(&body)
                    }
                })
                .and_then(|_| out.flush());
            lock(&self.log).push(Access {
                method: req.method.clone(),
                target: req.target.clone(),
                route,
                status,
                elapsed: started.elapsed(),
                gateway_error,
            });
            if written.is_err() || close {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// The matched route key, the answer, and why the gateway answered by itself if it did.
    fn answer(&self, req: &Request, n: u64) -> (String, HttpAnswer, Option<String>) {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let Some((route, params)) = match_route(&self.routes, &req.method, path) else {
            return ("-".into(), gateway_answer(404), Some("no route".into()));
        };
        let key = route.key();
        if route.authorization != "NONE" {
            // Request signing (AWS_IAM) and authorizers are not emulated: an unsigned request
            // is what the page sends, and the gateway refuses it.
            return (
                key,
                gateway_answer(403),
                Some(format!("{} authorization", route.authorization)),
            );
        }
        let event = self.event(req, &key, path, query, &params, n);
        if event.len() > PAYLOAD_LIMIT {
            return (
                key,
                gateway_answer(413),
                Some(format!("event of {} bytes", event.len())),
            );
        }
        match self.function.invoke(&event) {
            Ok(payload) if payload.len() > PAYLOAD_LIMIT => (
                key,
                gateway_answer(500),
                Some(format!("response of {} bytes", payload.len())),
            ),
            Ok(payload) => match http_response(&payload) {
                Ok(answer) => (key, answer, None),
                Err(e) => (key, gateway_answer(500), Some(e)),
            },
            Err(e) => (key, gateway_answer(500), Some(e.to_string())),
        }
    }

    /// The payload 2.0 event API Gateway sends for `req`.
    fn event(
        &self,
        req: &Request,
        route_key: &str,
        path: &str,
        query: &str,
        params: &BTreeMap<String, String>,
        n: u64,
    ) -> String {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let mut cookies: Vec<String> = Vec::new();
        for (name, value) in &req.headers {
            let name = name.to_ascii_lowercase();
            if name == "cookie" {
                cookies.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                );
                continue;
            }
            if name == "connection" || name == "transfer-encoding" {
                continue;
            }
            headers
                .entry(name)
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        headers.insert("x-forwarded-proto".into(), "http".into());
        headers.insert("x-forwarded-for".into(), "127.0.0.1".into());
        let host = headers.get("host").cloned().unwrap_or_default();
        headers.insert(
            "x-forwarded-port".into(),
            host.rsplit_once(':')
                .map(|x| x.1.to_string())
                .unwrap_or_default(),
        );
        let mut query_params: BTreeMap<String, String> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (
                crate::percent_decode(&k.replace('+', " ")),
                crate::percent_decode(&v.replace('+', " ")),
            );
            query_params
                .entry(k)
                .and_modify(|x| {
                    x.push(',');
                    x.push_str(&v);
                })
                .or_insert(v);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970");
        let request_id = format!("req{n:012}");
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT,
                "apiId": self.api_id,
                "domainName": host,
                "domainPrefix": host.split('.').next().unwrap_or_default(),
                "http": {
                    "method": req.method,
                    "path": path,
                    "protocol": req.version,
                    "sourceIp": "127.0.0.1",
                    "userAgent": req.header("user-agent").unwrap_or_default(),
                },
                "requestId": request_id,
                "routeKey": route_key,
                "stage": "$default",
                "time": http_date(now),
                "timeEpoch": now.as_millis() as u64,
            },
            "isBase64Encoded": false,
        });
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if !query_params.is_empty() {
            event["queryStringParameters"] = json!(query_params);
        }
        if !params.is_empty() {
            event["pathParameters"] = json!(params);
        }
        if !req.body.is_empty() {
            event["body"] = json!(base64_encode(&req.body));
            event["isBase64Encoded"] = json!(true);
        }
        event.to_string()
    }
}

/// `29/Nov/2026:12:00:00 +0000`, the format of `requestContext.time`.
fn http_date(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The HTTP response API Gateway makes of a payload 2.0 answer: `statusCode`, `headers`,
/// `multiValueHeaders`, `cookies` (as `set-cookie`), `body` (base64 when `isBase64Encoded`).
/// An answer without `statusCode` is the body itself, as JSON with status 200.
pub fn http_response(payload: &[u8]) -> Result<HttpAnswer, String> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the function's answer is not JSON: {e}"))?;
    if v.get("statusCode").is_none() {
        return Ok((
            200,
            vec![("content-type".into(), "application/json".into())],
            payload.to_vec(),
        ));
    }
    let status = v["statusCode"]
        .as_u64()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("bad statusCode {}", v["statusCode"]))? as u16;
    let mut headers = Vec::new();
    for (name, value) in v["headers"].as_object().into_iter().flatten() {
        headers.push((name.clone(), text_of(value)));
    }
    for (name, values) in v["multiValueHeaders"].as_object().into_iter().flatten() {
        for value in values.as_array().into_iter().flatten() {
            if !headers
                .iter()
                .any(|(n, x)| n.eq_ignore_ascii_case(name) && *x == text_of(value))
            {
                headers.push((name.clone(), text_of(value)));
            }
        }
    }
    for cookie in v["cookies"].as_array().into_iter().flatten() {
        headers.push(("set-cookie".into(), text_of(cookie)));
    }
    let body = match v.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if v["isBase64Encoded"] == true => {
            base64_decode(s).ok_or("the body is not valid base64")?
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok((status, headers, body))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, key: &str) -> Route {
        let (method, path) = key.split_once(' ').unwrap();
        Route {
            id: id.into(),
            method: method.into(),
            path: path.into(),
            authorization: "NONE".into(),
        }
    }

    #[test]
    fn routes_match_as_the_gateway_matches_them() {
        let routes = vec![
            route("a", "GET /v1/identities"),
            route("b", "GET /v1/identities/{slug}"),
            route("c", "DELETE /v1/identities/{slug}"),
            route("d", "GET /v1/crops/{slug}/{upload_id}/{file}"),
            route("e", "GET /v1/identities/me"),
            route("f", "GET /files/{path+}"),
        ];
        let m = |method, path| match_route(&routes, method, path).map(|(r, p)| (r.id.clone(), p));
        assert_eq!(m("GET", "/v1/identities").unwrap().0, "a");
        let (id, p) = m("GET", "/v1/identities/ada%20l").unwrap();
        assert_eq!((id.as_str(), p["slug"].as_str()), ("b", "ada l"));
        assert_eq!(m("DELETE", "/v1/identities/ada").unwrap().0, "c");
        assert_eq!(m("GET", "/v1/identities/me").unwrap().0, "e");
        assert_eq!(m("GET", "/v1/crops/a/b/1.png").unwrap().1.len(), 3);
        assert_eq!(m("GET", "/files/a/b/c").unwrap().1["path"], "a/b/c");
        assert!(m("PUT", "/v1/identities/ada").is_none());
        assert!(m("GET", "/v1/identities/").is_none());
        assert!(m("GET", "/v1/uploads/x").is_none());
        assert!(m("GET", "/files").is_none());
    }

    #[test]
    fn answers_become_http_responses() {
        let (status, headers, body) = http_response(
            br#"{"statusCode":201,"headers":{"content-type":"text/plain"},
                "multiValueHeaders":{"x-a":["1","2"]},"cookies":["a=b"],
                "body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(status, 201);
        assert_eq!(body, b"hi");
        assert!(headers.contains(&("x-a".into(), "2".into())));
        assert!(headers.contains(&("set-cookie".into(), "a=b".into())));
        let (status, _, body) = http_response(br#"{"hello":1}"#).unwrap();
        assert_eq!((status, body), (200, br#"{"hello":1}"#.to_vec()));
        assert!(http_response(br#"{"statusCode":"x"}"#).is_err());
    }

    #[test]
    fn request_times_are_formatted_as_the_gateway_does() {
        assert_eq!(
            http_date(Duration::from_secs(1_764_417_600)),
            "29/Nov/2025:12:00:00 +0000"
        );
    }
}

//! `twin serve --allow-writes-without-key` as a user on this machine starts it: it refuses to
//! listen beyond loopback, and on loopback it takes writes only as this machine's own page and
//! tools send them. Requests go over real sockets, written by hand so that every header is the
//! one a hostile page or a DNS-rebound name would bring.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use twin_tests::resources::served_address;

fn twin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_twin"))
}

/// A keyless server on a free loopback port, stopped on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keyless(data: &Path) -> Server {
    let mut child = Command::new(twin())
        .arg("--data")
        .arg(data)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--allow-writes-without-key",
        ])
        .env_remove("TWIN_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("twin serve starts");
    let addr = served_address(&mut child);
    Server { child, addr }
}

/// Sends one request with exactly these headers; returns the status and the body.
fn send(addr: &str, request_line: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!("{request_line} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What is tried, the request line, its headers, and what the refusal must say.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, &'a str);

#[test]
fn a_keyless_server_refuses_other_machines_other_sites_and_rebound_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyless(dir.path());
    let addr = server.addr.as_str();
    let port = addr.rsplit(':').next().unwrap();
    let here = format!("localhost:{port}");
    let erase = "DELETE /v1/identities/nobody_here";
    let promote = "POST /v1/models/7/promote";

    // This machine's own page and tools: let through (nobody to erase, no model 7).
    let (status, body) = send(addr, erase, &[("Host", here.clone())], "");
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        addr,
        erase,
        &[
            ("Host", addr.to_string()),
            ("Origin", format!("http://{addr}")),
        ],
        "",
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        addr,
        promote,
        &[
            ("Host", here.clone()),
            ("Content-Type", "application/json".into()),
        ],
        "",
    );
    assert_eq!(status, 404, "{body}");

    // What a page elsewhere can make a browser send: refused with 403, nothing done.
    let cases: Vec<Case> = vec![
        (
            "DNS rebinding (a name that now points at 127.0.0.1)",
            erase,
            vec![("Host", format!("evil.example:{port}"))],
            "answers only to localhost",
        ),
        (
            "another site's page",
            erase,
            vec![
                ("Host", here.clone()),
                ("Origin", "https://evil.example".into()),
            ],
            "another site's page",
        ),
        (
            "a sandboxed page",
            erase,
            vec![("Host", here.clone()), ("Origin", "null".into())],
            "another site's page",
        ),
        (
            "the browser's own word",
            erase,
            vec![
                ("Host", here.clone()),
                ("Sec-Fetch-Site", "cross-site".into()),
            ],
            "the browser says",
        ),
        (
            "a cross-site form rolling the model back",
            promote,
            vec![
                ("Host", here.clone()),
                ("Content-Type", "application/x-www-form-urlencoded".into()),
            ],
            "application/json",
        ),
        (
            "a bodiless POST",
            promote,
            vec![("Host", here.clone())],
            "application/json",
        ),
        (
            "a text/plain enrollment (a simple request)",
            "POST /v1/enrollments",
            vec![
                ("Host", here.clone()),
                ("Content-Type", "text/plain".into()),
            ],
            "application/json",
        ),
    ];
    for (what, line, headers, says) in cases {
        let body = if line.contains("enrollments") {
            r#"{"name":"Mallory"}"#
        } else {
            ""
        };
        let (status, answer) = send(addr, line, &headers, body);
        assert_eq!(status, 403, "{what}: {answer}");
        assert!(answer.contains(says), "{what}: {answer}");
    }
    // Reads under a rebound name are refused too (the gallery's faces are nobody else's).
    let (status, _) = send(
        addr,
        "GET /v1/identities",
        &[("Host", "rebound.evil.example".into())],
        "",
    );
    assert_eq!(status, 403);
    let (status, _) = send(addr, "GET /v1/identities", &[("Host", here)], "");
    assert_eq!(status, 200);
    // Nothing was enrolled.
    assert!(!dir.path().join("status").exists());
}

#[test]
fn a_keyless_server_will_not_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(twin())
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--addr", "0.0.0.0:0", "--allow-writes-without-key"])
        .env_remove("TWIN_API_KEY")
        .output()
        .expect("twin runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an API key")
            && err.contains("TWIN_API_KEY"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never served");
}

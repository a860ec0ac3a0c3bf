//! Eight copies of a hostile photo at once against `twin serve`: a flat grey 12000 × 4166 JPEG
//! (under a megabyte, no face), the picture that once took a server to 13.5 GB. Every answer
//! must be an answer (a result, a refusal, or "busy, come back"), and the server's peak memory
//! must stay under 1.5 GB.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twin_tests::resources::{hostile_jpeg, peak_rss_mb, served_address};

/// The most the server may hold at its peak, in MB.
const PEAK_MB: f64 = 1536.0;
/// Requests at once.
const PARALLEL: usize = 8;

/// One `POST /v1/match`; the status and the error code, if any.
fn post(addr: &str, photo: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    // A guard against a hang, not a measure: the test fails rather than waits forever.
    s.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    write!(
        s,
        "POST /v1/match HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        photo.len()
    )
    .unwrap();
    s.write_all(photo).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("an answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let code = answer
        .split("\"code\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    if status == 503 {
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: "),
            "a busy answer says when to come back: {answer}"
        );
    }
    (status, code)
}

/// `twin serve` on `dir` with a key; its address.
fn serve(dir: &Path) -> (std::process::Child, String) {
    let mut child = Command::new(Path::new(env!("CARGO_BIN_EXE_twin")))
        .arg("--data")
        .arg(dir)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("TWIN_API_KEY", "hostile-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("twin serve starts");
    let addr = served_address(&mut child);
    (child, addr)
}

#[test]
fn eight_hostile_photos_at_once_stay_under_a_bound() {
    let photo = hostile_jpeg();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    let pid = child.id();
    let started_mb = peak_rss_mb(pid).expect("the server runs");

    let t = Instant::now();
    let answers: Vec<(u16, String, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|_| {
                let (addr, photo) = (&addr, &photo);
                s.spawn(move || {
                    let t = Instant::now();
                    let (status, code) = post(addr, photo);
                    (status, code, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak_mb = peak_rss_mb(pid).expect("the server runs");
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{PARALLEL} × {} KB JPEG of 12000×4166 at once: peak RSS {peak_mb:.0} MB (at start {started_mb:.0} MB); all answered in {:.1} s",
        photo.len() / 1024,
        t.elapsed().as_secs_f64()
    );
    for (status, code, s) in &answers {
        println!("  {status} {code} after {s:.1} s");
    }
    for (status, code, _) in &answers {
        assert!(
            matches!(
                (status, code.as_str()),
                (200, _) | (422, "no_face") | (503, "busy")
            ),
            "{status} {code}"
        );
    }
    assert!(
        answers.iter().any(|a| a.0 == 422),
        "at least one photo was searched"
    );
    assert!(
        peak_mb < PEAK_MB,
        "peak RSS {peak_mb:.0} MB, over {PEAK_MB} MB"
    );
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    // Slow headers: a header line a second, never the blank line that ends them. Without a
    // deadline the server would keep the connection as long as the client likes.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    c.write_all(b"GET /v1/identities HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let t = Instant::now();
    let mut closed = false;
    // The guard: a minute, six times the server's deadline.
    while t.elapsed() < Duration::from_secs(60) {
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // an error answer, then the close
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if c.write_all(b"X-Slow: 1\r\n").is_err() {
            closed = true;
            break;
        }
    }
    println!(
        "trickled headers: connection closed by the server after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // A prompt client is still served.
    let mut ok = TcpStream::connect(&addr).unwrap();
    ok.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        closed,
        "the server kept a connection that never finished its headers"
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

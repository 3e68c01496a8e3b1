//! What the server says in its log: that ingest was opened without a token, and an unreadable
//! ring file once, not at every scan; and that it says it without colour codes in a file.

mod common;
use common::*;

use std::io::Read;
use std::process::{Command, Stdio};

/// Runs a worker with `extra` flags, lets `exercise` use it, stops it and returns its log.
fn log_of(ring_dir: &std::path::Path, extra: &[&str], exercise: impl FnOnce(u16)) -> String {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ringcast-server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--ring-dir")
        .arg(ring_dir)
        .args(extra)
        .env("RINGCAST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringcast-server");
    let mut guard = ChildGuard(child);
    wait_for("the server to answer /healthz", || {
        http_get(port, "/healthz").ok().filter(|r| r.status == 200)
    });
    exercise(port);
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    let mut log = String::new();
    if let Some(mut stderr) = guard.0.stderr.take() {
        stderr.read_to_string(&mut log).expect("read the log");
    }
    log
}

#[test]
fn ingest_opened_on_purpose_is_warned_about_and_the_log_has_no_colour_codes() {
    let dir = temp_ring_dir();
    let open = log_of(dir.path(), &["--allow-open-ingest"], |_| {});
    assert!(open.contains("ingest is open"), "log: {open}");
    // Written to a pipe (as to a file or the journal): no ANSI escape sequences.
    assert!(
        !open.contains('\u{1b}'),
        "colour codes in the log: {open:?}"
    );
    for quiet in [&[][..], &["--ingest-token", "s3cret"]] {
        let log = log_of(dir.path(), quiet, |_| {});
        assert!(!log.contains("ingest is open"), "log: {log}");
    }
}

#[test]
fn an_unreadable_ring_file_is_warned_about_once() {
    let dir = temp_ring_dir();
    std::fs::write(ring_path(dir.path(), "cam9"), vec![0xAB; 4096]).expect("garbage ring");
    let log = log_of(dir.path(), &[], |port| {
        // Every listing rescans; so does naming the camera.
        for _ in 0..5 {
            assert_eq!(http_get(port, "/api/cameras").expect("listing").status, 200);
            assert_eq!(http_get(port, "/ws/cam9").expect("answer").status, 404);
        }
    });
    let warnings = log.lines().filter(|l| l.contains("does not open")).count();
    assert_eq!(warnings, 1, "log: {log}");
}

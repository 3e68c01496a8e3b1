//! ringcast-loadgen against the bare fan-out fed by ringcast-replay: real processes, real
//! sockets, counts and consistency only (no timing assertions).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Kills and reaps a child process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A ~100 KB 720p JPEG, made once per test with ffmpeg's test source.
fn test_jpeg(dir: &Path) -> PathBuf {
    let path = dir.join("frame.jpg");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1280x720")
        .args(["-vf", "noise=alls=9:allf=u", "-frames:v", "1", "-q:v", "3"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (apt install ffmpeg)");
    assert!(status.success(), "ffmpeg could not make a test JPEG");
    path
}

struct Bench {
    _replay: Running,
    _fanout: Running,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Starts replay (30 fps) into a temp ring dir and the fan-out on a free port.
fn start_bench() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = test_jpeg(dir.path());
    let rings = dir.path().join("rings");
    let replay = Running(
        Command::new(env!("CARGO_BIN_EXE_ringcast-replay"))
            .arg("--jpeg")
            .arg(&jpeg)
            .args(["--fps", "30", "--camera", "cam"])
            .arg("--ring-dir")
            .arg(&rings)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut fanout = Command::new(env!("CARGO_BIN_EXE_ringcast-fanout"))
        .args(["--listen", "127.0.0.1:0", "--camera", "cam"])
        .arg("--ring-dir")
        .arg(&rings)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = fanout.stdout.take().unwrap();
    let fanout = Running(fanout);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the fan-out did not print its port within 20 s");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the fan-out's first line {line:?}"));
    Bench {
        _replay: replay,
        _fanout: fanout,
        port,
        _dir: dir,
    }
}

/// Runs the load generator to completion and parses its JSON summary.
fn loadgen(args: &[&str]) -> Value {
    loadgen_and_stderr(args).0
}

/// [`loadgen`], with what it wrote on stderr.
fn loadgen_and_stderr(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args(args)
        .args(["--quiet", "--per-viewer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "loadgen's stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Every received frame is in order and the frame numbers between the first and the last one
/// are exactly the received plus the skipped ones.
fn assert_skips_consistent(viewer: &Value) {
    assert_eq!(u(&viewer["out_of_order"]), 0, "{viewer}");
    assert_eq!(u(&viewer["without_timing"]), 0, "{viewer}");
    let span = u(&viewer["last_frame"]) - u(&viewer["first_frame"]) + 1;
    assert_eq!(
        span,
        u(&viewer["frames_total"]) + u(&viewer["skipped_total"]),
        "{viewer}"
    );
}

/// The `cpu` object has its three fields with values that can be true, and the stderr warning
/// is there exactly when the report says the load generator was the bottleneck.
fn assert_cpu_sane(report: &Value, stderr: &str) {
    let cpu = &report["cpu"];
    let mut keys: Vec<&str> = cpu
        .as_object()
        .unwrap_or_else(|| panic!("no cpu object in {report}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["bottleneck", "busiest_thread_share", "seconds"],
        "{cpu}"
    );
    let seconds = cpu["seconds"].as_f64().unwrap();
    let share = cpu["busiest_thread_share"].as_f64().unwrap();
    let window = report["window_s"].as_f64().unwrap();
    assert!(seconds >= 0.0, "{cpu}");
    // A little over 1.0 is possible: the thread's readings bracket the window from just after
    // its start to just after its end.
    assert!((0.0..=1.05).contains(&share), "{cpu}");
    // The process is all threads, the busiest included; slack for the threads' readings being
    // taken a few milliseconds apart.
    assert!(seconds + 0.05 >= share * window, "{cpu}, window {window} s");
    // Not more than every thread at a full core, plus the main thread's nearly nothing.
    let threads = report["threads"].as_u64().unwrap() as f64;
    assert!(
        seconds <= (threads + 0.5) * window,
        "{cpu}, window {window} s"
    );
    assert_eq!(cpu["bottleneck"], share >= 0.9, "{cpu}");
    assert_eq!(
        stderr.contains("the load generator was the bottleneck"),
        share >= 0.9,
        "{cpu}, stderr: {stderr}"
    );
}

#[test]
fn the_report_says_how_much_cpu_the_loadgen_used_in_the_window() {
    let bench = start_bench();
    let url = format!("ws://127.0.0.1:{}/ws/cam", bench.port);
    let (report, stderr) = loadgen_and_stderr(&[
        "--url",
        &url,
        "--viewers",
        "10",
        "--threads",
        "2",
        "--duration",
        "2",
        "--copy-payload",
    ]);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(u(&report["frames"]) > 0, "no frames: {report}");
    assert_cpu_sane(&report, &stderr);
    // Receiving and copying a few hundred 100 KB frames takes some CPU: zero would mean the
    // readings were never taken.
    let cpu = &report["cpu"];
    assert!(cpu["seconds"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(cpu["busiest_thread_share"].as_f64().unwrap() > 0.0, "{cpu}");
}

#[test]
fn twenty_viewers_of_the_fanout_all_get_frames_without_errors() {
    let bench = start_bench();
    let url = format!("ws://127.0.0.1:{}/ws/cam", bench.port);
    let (report, stderr) = loadgen_and_stderr(&[
        "--url",
        &url,
        "--viewers",
        "20",
        "--duration",
        "3",
        "--ramp",
        "0.5",
    ]);
    assert_eq!(report["mode"], "ws");
    assert_eq!(u(&report["viewers_connected"]), 20);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(report["close_codes"], serde_json::json!({}));
    assert_eq!(u(&report["all"]["viewers_without_frames"]), 0);
    assert!(report["all"]["fps"]["min"].as_f64().unwrap() > 0.0);
    assert!(report["all"]["latency_ms"]["samples"].as_u64().unwrap() > 0);
    let viewers = report["per_viewer"].as_array().unwrap();
    assert_eq!(viewers.len(), 20);
    for viewer in viewers {
        assert!(u(&viewer["frames"]) > 0, "{viewer}");
        assert_skips_consistent(viewer);
    }
    let skipped: u64 = viewers.iter().map(|v| u(&v["skipped"])).sum();
    assert_eq!(u(&report["frames_skipped"]), skipped);
    assert_cpu_sane(&report, &stderr);
}

#[test]
fn slow_viewers_are_reported_as_their_own_group_across_threads() {
    let bench = start_bench();
    let url = format!("ws://127.0.0.1:{}/ws/cam", bench.port);
    let report = loadgen(&[
        "--url",
        &url,
        "--viewers",
        "10",
        "--slow",
        "2",
        "--slow-rate",
        "200000",
        "--threads",
        "2",
        "--duration",
        "3",
    ]);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(u(&report["slow"]["viewers"]), 2);
    assert_eq!(u(&report["fast"]["viewers"]), 8);
    assert_eq!(u(&report["fast"]["viewers_without_frames"]), 0);
    let viewers = report["per_viewer"].as_array().unwrap();
    for viewer in viewers {
        assert_eq!(viewer["slow"], u(&viewer["id"]) < 2, "{viewer}");
        assert!(u(&viewer["frames_total"]) > 0, "{viewer}");
        assert_skips_consistent(viewer);
    }
    let slow_frames: u64 = viewers[..2].iter().map(|v| u(&v["frames"])).sum();
    assert_eq!(u(&report["slow"]["frames"]), slow_frames);
}

#[test]
fn refused_connections_and_unknown_paths_are_counted_by_kind() {
    let bench = start_bench();
    let unknown = format!("ws://127.0.0.1:{}/ws/nope", bench.port);
    let report = loadgen(&["--url", &unknown, "--viewers", "3", "--duration", "0.5"]);
    assert_eq!(report["errors"], serde_json::json!({"http_404": 3}));
    assert_eq!(u(&report["viewers_connected"]), 0);
    assert_eq!(u(&report["all"]["viewers_without_frames"]), 3);

    // A port nobody listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{closed}/ws/cam");
    let report = loadgen(&["--url", &url, "--viewers", "2", "--duration", "0.5"]);
    assert_eq!(report["errors"], serde_json::json!({"connect_refused": 2}));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args(["--url", "ftp://x/y", "--viewers", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only ws:// and http://"), "{stderr}");
}

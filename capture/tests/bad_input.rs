//! Wrong flags and unusable setups end capture at once, non-zero, with a one-line reason; an
//! unreachable camera's credentials stay out of the log.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn refused(args: &[&str], reason: &str) {
    let output = capture_output(args);
    assert!(!output.status.success(), "{args:?} was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains(reason))
        .unwrap_or_else(|| panic!("{args:?}: no line saying {reason:?} in:\n{stderr}"));
    assert!(line.len() < 300, "reason is not one readable line: {line}");
}

#[test]
fn bad_flags_and_setups_exit_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    refused(
        &["--camera", "Cam 1", "--ring-dir", ring_dir],
        "is not allowed",
    );
    refused(
        &[
            "--camera",
            "cam1",
            "--source",
            "ftp://cam/x",
            "--ring-dir",
            ring_dir,
        ],
        "unknown source",
    );
    refused(
        &[
            "--camera",
            "cam1",
            "--source",
            "v4l2:/dev/video-missing",
            "--ring-dir",
            ring_dir,
        ],
        "does not exist",
    );
    refused(
        &[
            "--camera",
            "cam1",
            "--size",
            "1280by720",
            "--ring-dir",
            ring_dir,
        ],
        "is not a size",
    );
    refused(
        &["--camera", "cam1", "--push", "http://server/ingest/cam1"],
        "--push needs a ws:// URL",
    );
    refused(
        &["--camera", "cam1", "--push", "ws://127.0.0.1:9/ingest/cam2"],
        "--push sends to camera cam2 but --camera is cam1",
    );
    refused(
        &["--camera", "cam1", "--rotate", "45", "--ring-dir", ring_dir],
        "use 90, 180 or 270",
    );
}

#[test]
fn a_second_capture_for_the_same_camera_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    let _first = capture(&[
        "--camera",
        "dup",
        "--size",
        "160x120",
        "--fps",
        "5",
        "--ring-dir",
        ring_dir,
    ]);
    let mut reader = open_ring(dir.path(), "dup");
    read_frames(&mut reader, 1);
    refused(
        &["--camera", "dup", "--ring-dir", ring_dir],
        "holds this ring",
    );
}

#[test]
fn list_devices_runs_without_a_camera() {
    let output = capture_output(&["--list-devices"]);
    assert!(output.status.success());
    assert!(!output.stdout.is_empty());
}

#[test]
fn list_devices_can_come_from_the_environment() {
    let output = std::process::Command::new(bin())
        .env("RINGCAST_LIST_DEVICES", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ringcast-capture");
    assert!(output.status.success(), "{output:?}");
    assert!(!output.stdout.is_empty());
}

#[test]
fn a_camera_password_stays_out_of_the_log_even_in_ffmpeg_messages() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: ffmpeg says why it cannot connect, naming the URL.
    let url = format!("rtsp://viewer:hunter2@127.0.0.1:{}/stream1", free_port());
    let mut child = Command::new(bin())
        .args(["--camera", "door", "--source", &url])
        .arg("--ring-dir")
        .arg(dir.path())
        .env("RINGCAST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = String::new();
    let forwarded = |line: &str| line.contains("ffmpeg[") && line.contains("rtsp://***@127.0.0.1");
    while !seen.lines().any(forwarded) {
        match log.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(_) => panic!("ffmpeg's messages about the camera were not forwarded:\n{seen}"),
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().unwrap();
    let log: String = seen + &log.into_iter().map(|line| line + "\n").collect::<String>();
    assert!(
        !log.contains("hunter2"),
        "the password is in the log:\n{log}"
    );
}

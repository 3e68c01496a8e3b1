//! Wrong flags and unusable setups end capture at once, non-zero, with a one-line reason.

mod common;

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

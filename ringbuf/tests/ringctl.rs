//! `ringcast-ringctl inspect`, run as an operator would.

use std::process::Command;

use ringbuf::{CameraId, RingGeometry, RingWriter, VideoFormat, WallNanos};

fn ringctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringcast-ringctl"))
}

#[test]
fn inspect_json_describes_a_live_ring() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = RingGeometry {
        slot_count: 5,
        slot_size: 4096,
    };
    let mut writer =
        RingWriter::create(dir.path(), &CameraId::new("door").unwrap(), geometry).unwrap();
    writer.set_video_format(VideoFormat {
        width: 640,
        height: 360,
        fps_milli: 10_000,
    });
    for n in 1..=3 {
        writer.publish(b"\xff\xd8\xff\xd9", WallNanos(n)).unwrap();
    }
    let out = ringctl()
        .args(["inspect", "--json"])
        .arg(writer.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["camera"], "door");
    assert_eq!(v["head"], 3);
    assert_eq!(v["online"], true);
    assert_eq!(v["writer_pid"], std::process::id());
    assert_eq!(v["slot_count"], 5);
    assert_eq!(v["slot_size"], 4096);
    assert_eq!(v["width"], 640);
    assert_eq!(v["height"], 360);
    assert_eq!(v["frames_published"], 3);

    drop(writer);
    let out = ringctl()
        .args(["inspect", "--json"])
        .arg(dir.path().join("door.ring"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["online"], false);
    assert_eq!(v["status"], "offline");
}

#[test]
fn inspect_text_names_the_camera_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(
        dir.path(),
        &CameraId::new("yard").unwrap(),
        RingGeometry::default(),
    )
    .unwrap();
    writer.publish(b"\xff\xd8\xff\xd9", WallNanos(1)).unwrap();
    let out = ringctl()
        .arg("inspect")
        .arg(writer.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("camera            yard"), "{text}");
    assert!(text.contains("head              1"), "{text}");
    assert!(text.contains("writer            online"), "{text}");
}

#[test]
fn a_file_that_is_not_a_ring_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("short.ring", b"hello".to_vec(), "truncated"),
        ("foreign.ring", vec![7u8; 8192], "bad magic"),
        ("missing.ring", Vec::new(), "No such file"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        if !bytes.is_empty() {
            std::fs::write(&path, bytes).unwrap();
        }
        let out = ringctl().arg("inspect").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name} accepted");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(reason), "{name}: {err}");
    }
}

//! The real capture and two workers, watched by the clients people use: a Rust WebSocket
//! client, Python `websockets`, ffmpeg on the MJPEG stream and curl for a snapshot.

mod common;
use common::*;

use std::process::Command;

/// The checkout's venv with `websockets` (scripts/install-deps makes it).
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");

const PY_VIEWER: &str = r#"
import asyncio, json, re, sys
import websockets

async def main(url, count):
    numbers = []
    async with websockets.connect(url, max_size=None) as ws:
        while len(numbers) < count:
            message = await ws.recv()
            assert isinstance(message, bytes), "binary messages only"
            assert message[:2] == b"\xff\xd8", "starts with SOI"
            assert message.rstrip(b"\0")[-2:] == b"\xff\xd9", "ends with EOI"
            found = re.search(rb"ringcast frame=(\d+)", message[:200])
            numbers.append(int(found.group(1)))
    print(json.dumps(numbers))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"#;

fn python() -> String {
    std::env::var("RINGCAST_TEST_PYTHON").unwrap_or_else(|_| PYTHON.to_owned())
}

#[test]
fn capture_and_two_workers_serve_every_kind_of_client() {
    let dir = temp_ring_dir();
    let _capture = start_capture(dir.path(), "cam1", 10, &[]);
    let server = Server::start(dir.path(), 2, &[]);
    wait_for("cam1 online with a measured fps", || {
        let online = server.camera_field("cam1", "status")? == "online";
        let fps = server.camera_field("cam1", "fps")?.as_f64()?;
        (online && fps > 5.0).then_some(())
    });

    // Rust: consecutive frames that are JPEGs.
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let numbers: Vec<u64> = (0..10)
        .map(|_| {
            let jpeg = next_binary(&mut ws);
            ringbuf::frame::check_jpeg(&jpeg).expect("a JPEG");
            frame_no(&jpeg)
        })
        .collect();
    assert!(frame_numbers_consecutive(&numbers[1..]), "{numbers:?}");

    // The Rust viewer stays connected: the API and metrics show it.
    wait_for("/api/cameras to count the viewer", || {
        (server.camera_field("cam1", "viewers")? == 1).then_some(())
    });
    let cam = server
        .cameras()
        .as_array()
        .and_then(|a| a.first().cloned())
        .expect("one camera");
    assert_eq!(cam["online"], true);
    assert_eq!(
        (cam["width"].as_u64(), cam["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(cam["fps"].as_f64().unwrap_or(0.0) > 5.0, "{cam}");
    assert!(cam["last_frame_age_s"].as_f64().is_some(), "{cam}");
    wait_for("a worker's /metrics to show the viewer", || {
        let metrics = String::from_utf8(server.get("/metrics").body).ok()?;
        for line in metrics.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("`name value` lines");
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
            assert!(name.starts_with("ringcast_"), "{line:?}");
        }
        metrics
            .contains("ringcast_viewers{camera=\"cam1\"")
            .then_some(())
            .filter(|_| {
                metrics
                    .lines()
                    .any(|l| l.starts_with("ringcast_viewers{camera=\"cam1\"") && l.ends_with(" 1"))
            })
    });
    let list: serde_json::Value =
        serde_json::from_slice(&server.get("/cameras_list").body).expect("JSON");
    assert_eq!(list, serde_json::json!({ "cameras": ["cam1"] }));

    // Python websockets, an outside client.
    let output = Command::new(python())
        .args(["-c", PY_VIEWER, &server.ws_url("/ws/cam1"), "10"])
        .output()
        .expect("run Python");
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let numbers: Vec<u64> = serde_json::from_slice(&output.stdout).expect("numbers");
    assert!(frame_numbers_consecutive(&numbers[1..]), "{numbers:?}");

    // ffmpeg decodes frames from the MJPEG stream.
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &server.url("/stream/cam1.mjpg")])
        .args(["-frames:v", "5", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoded = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(decoded, 5, "ffmpeg decoded {decoded} frames");

    // curl fetches a snapshot that ffmpeg decodes.
    let snapshot = dir.path().join("snapshot.jpg");
    let status = Command::new("curl")
        .args(["-sSf", "-o"])
        .arg(&snapshot)
        .arg(server.url("/snapshot/cam1.jpg"))
        .status()
        .expect("run curl");
    assert!(status.success());
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&snapshot)
        .output()
        .expect("run ffprobe");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "640,360");
}

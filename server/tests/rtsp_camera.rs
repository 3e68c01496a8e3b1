//! An RTSP camera end to end: GStreamer's RTSP server (capture's test camera,
//! `capture/tests/rtsp_server.py`) sends x264, `ringcast-capture --codec h264` reads it with
//! retina, two server workers serve it, and what a WebSocket viewer receives decodes with ffmpeg
//! without a complaint.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use common::h264::{decode_with_ffmpeg, next_message, Message};
use common::*;
use ringbuf::FrameKind;

/// Debian's python, where python3-gi and GStreamer's introspection data are installed.
const PYTHON: &str = "/usr/bin/python3";

fn rtsp_camera(port: u16) -> ChildGuard {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capture/tests/rtsp_server.py");
    let child = Command::new(PYTHON)
        .arg(script)
        .args(["--port", &port.to_string(), "--video", "h264"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run rtsp_server.py (scripts/install-deps installs GStreamer's RTSP server)");
    let camera = ChildGuard(child);
    wait_for("the RTSP camera to listen", || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    });
    camera
}

fn capture_rtsp(port: u16, ring_dir: &Path) -> ChildGuard {
    let child = Command::new(capture_binary())
        .args(["--camera", "ipcam", "--codec", "h264"])
        .args(["--source", &format!("rtsp://127.0.0.1:{port}/test")])
        .arg("--ring-dir")
        .arg(ring_dir)
        .env("RINGCAST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start ringcast-capture");
    ChildGuard(child)
}

#[test]
fn a_websocket_viewer_of_an_rtsp_h264_camera_receives_decodable_video() {
    let dir = temp_ring_dir();
    let port = free_port();
    let _camera = rtsp_camera(port);
    let _capture = capture_rtsp(port, dir.path());
    let server = Server::start(dir.path(), 2, &[]);
    wait_for("the RTSP camera online", || {
        (server.camera_field("ipcam", "status")? == "online").then_some(())
    });
    let mut ws = ws_connect(server.port, "/ws/ipcam");
    let Message::Config(config) = next_message(&mut ws) else {
        panic!("the first message is not the decoder configuration");
    };
    assert!(config["codec"]
        .as_str()
        .is_some_and(|c| c.starts_with("avc1.")));
    let mut stream = Vec::new();
    let mut units = 0;
    while units < 45 {
        if let Message::Unit(unit) = next_message(&mut ws) {
            if units == 0 {
                assert_eq!(unit.kind, FrameKind::Key, "a viewer starts at a keyframe");
            }
            stream.extend_from_slice(&unit.bytes);
            units += 1;
        }
    }
    assert_eq!(decode_with_ffmpeg(&stream, dir.path()), 45);
}

//! H.264 cameras through the server: `/ws/{cam}` sends the decoder configuration and then the
//! camera's access units untouched, from a keyframe on, to every viewer, slow ones included;
//! the JPEG-only routes say why they cannot serve such a camera.

mod common;
use common::h264::{
    access_units, decode_with_ffmpeg, jpeg_copy_viewers, next_message, AccessUnit, H264Feeder,
    JpegCopyFeeder, Message, GOP, HEIGHT, WIDTH,
};
use common::*;
use ringbuf::FrameKind;

/// Reads `/ws/{cam}` until `count` access units came, checking the configuration comes first.
fn receive_units(ws: &mut Ws, count: usize) -> (serde_json::Value, Vec<AccessUnit>) {
    let Message::Config(config) = next_message(ws) else {
        panic!("the first message is not the decoder configuration");
    };
    let mut units = Vec::new();
    while units.len() < count {
        match next_message(ws) {
            Message::Unit(unit) => units.push(unit),
            Message::Config(again) => assert_eq!(again, config, "the stream did not change"),
        }
    }
    (config, units)
}

fn concatenated(units: &[AccessUnit]) -> Vec<u8> {
    units.iter().flat_map(|u| u.bytes.iter().copied()).collect()
}

#[test]
fn a_websocket_viewer_gets_the_configuration_then_the_access_units_untouched() {
    let dir = temp_ring_dir();
    let _feeder = H264Feeder::start(dir.path(), "cam1", 30);
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let (config, units) = receive_units(&mut ws, 45);

    assert_eq!(config["type"], "config");
    let codec = config["codec"].as_str().expect("a codec string");
    assert!(codec.starts_with("avc1.") && codec.len() == 11, "{codec}");
    assert_eq!(config["codedWidth"], WIDTH);
    assert_eq!(config["codedHeight"], HEIGHT);

    assert_eq!(
        units[0].kind,
        FrameKind::Key,
        "a viewer starts at a keyframe"
    );
    for pair in units.windows(2) {
        assert_eq!(pair[1].frame_no.0, pair[0].frame_no.0 + 1, "no frame lost");
    }
    let sent = access_units();
    for unit in &units {
        let original = &sent[(unit.frame_no.0 as usize - 1) % sent.len()];
        assert_eq!(&unit.bytes, original, "frame {} changed", unit.frame_no);
        assert_eq!(
            unit.kind == FrameKind::Key,
            unit.frame_no.0 % GOP as u64 == 1
        );
        assert!(unit.capture.0 > 0);
    }
    assert_eq!(decode_with_ffmpeg(&concatenated(&units), dir.path()), 45);
}

#[test]
fn api_cameras_says_the_codec_its_string_and_the_bitrate() {
    let dir = temp_ring_dir();
    let _feeder = H264Feeder::start(dir.path(), "cam1", 30);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let (config, _) = receive_units(&mut ws, 1);
    let bitrate = wait_for("a bitrate in /api/cameras", || {
        let kbps = server.camera_field("cam1", "bitrate_kbps")?.as_f64()?;
        (kbps > 0.0).then_some(kbps)
    });
    assert!(bitrate < 10_000.0, "{bitrate} kbit/s for 320x240");
    assert_eq!(server.camera_field("cam1", "codec").unwrap(), "h264");
    assert_eq!(
        server.camera_field("cam1", "codec_string").unwrap(),
        config["codec"]
    );
}

#[test]
fn jpeg_routes_serve_the_jpeg_copy_of_an_h264_camera_and_only_while_watched() {
    let dir = temp_ring_dir();
    let _feeder = H264Feeder::start(dir.path(), "cam1", 30);
    let _copier = JpegCopyFeeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, "cam1");
    let copy_demand = || jpeg_copy_viewers(dir.path(), "cam1");
    assert_eq!(copy_demand(), 0, "nobody watches a JPEG route yet");

    // A snapshot wakes the idle copy and gets a fresh JPEG.
    let snapshot = http_get(server.port, "/snapshot/cam1.jpg").expect("an answer");
    assert_eq!(
        snapshot.status,
        200,
        "{}",
        String::from_utf8_lossy(&snapshot.body)
    );
    ringbuf::frame::check_jpeg(&snapshot.body).expect("a JPEG");

    // The MJPEG stream and the older WebSocket route carry the copy's frames.
    let mut mjpeg = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &server.url("/stream/cam1.mjpg")])
        .args(["-frames:v", "5", "-f", "null", "-"])
        .spawn()
        .expect("run ffmpeg");
    let mut legacy = ws_connect(server.port, "/websocket_handler_site/cam1");
    let jpeg = next_binary(&mut legacy);
    ringbuf::frame::check_jpeg(&jpeg).expect("a JPEG on the older route");
    assert!(ringbuf::frame::read_timing(&jpeg).is_some());
    wait_for("the copy's viewers in its demand file", || {
        (copy_demand() >= 1).then_some(())
    });
    assert!(
        mjpeg.wait().expect("ffmpeg").success(),
        "ffmpeg read 5 frames"
    );
    drop(legacy);
    wait_for("no demand once nobody watches", || {
        (copy_demand() == 0).then_some(())
    });
}

#[test]
fn jpeg_only_routes_refuse_an_h264_camera_and_say_where_to_watch_it() {
    let dir = temp_ring_dir();
    let _feeder = H264Feeder::start(dir.path(), "cam1", 30);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    for path in ["/snapshot/cam1.jpg", "/stream/cam1.mjpg"] {
        let response = http_get(server.port, path).expect("an answer");
        let body = String::from_utf8_lossy(&response.body);
        assert_eq!(response.status, 406, "{path}: {body}");
        assert!(body.contains("h264") && body.contains("/ws/cam1"), "{body}");
    }
    let refused = tungstenite::client(
        "ws://127.0.0.1/websocket_handler_site/cam1",
        std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap(),
    );
    assert!(refused.is_err(), "the older route expects JPEG");
}

#[test]
fn a_slow_viewer_resumes_at_keyframes_and_decodes_while_a_fast_one_misses_nothing() {
    let dir = temp_ring_dir();
    let _feeder = H264Feeder::start(dir.path(), "cam1", 30);
    // A small send buffer, so that the kernel holds few frames for the slow viewer and the
    // server sees it fall behind soon.
    let server = Server::start(dir.path(), 1, &["--sndbuf", "8192"]);
    wait_camera_listed(&server, "cam1");
    let mut fast = ws_connect(server.port, "/ws/cam1");
    let mut slow = ws_connect_small_rcvbuf(server.port, "/ws/cam1", 4096);
    let slow_reader = std::thread::spawn(move || {
        let Message::Config(_) = next_message(&mut slow) else {
            panic!("no configuration first");
        };
        let mut units = Vec::new();
        // A viewer that takes a frame every 100 ms cannot keep up with 30 fps. The first frames
        // it gets were queued in the sockets' buffers (some 30 KB, a score of these small
        // frames) before the server saw it fall behind: 40 reach past them.
        while units.len() < 40 {
            if let Message::Unit(unit) = next_message(&mut slow) {
                units.push(unit);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        units
    });
    let (_, fast_units) = receive_units(&mut fast, 120);
    let slow_units = slow_reader.join().expect("slow viewer");

    for pair in fast_units.windows(2) {
        assert_eq!(
            pair[1].frame_no.0,
            pair[0].frame_no.0 + 1,
            "fast viewer lost a frame"
        );
    }
    assert_eq!(slow_units[0].kind, FrameKind::Key);
    let mut gaps = 0;
    for pair in slow_units.windows(2) {
        if pair[1].frame_no.0 != pair[0].frame_no.0 + 1 {
            gaps += 1;
            assert_eq!(
                pair[1].kind,
                FrameKind::Key,
                "after frame {} the slow viewer got frame {}, not a keyframe",
                pair[0].frame_no,
                pair[1].frame_no
            );
        }
    }
    let numbers: Vec<u64> = slow_units.iter().map(|u| u.frame_no.0).collect();
    assert!(gaps > 0, "the slow viewer was never behind: {numbers:?}");
    assert_eq!(
        decode_with_ffmpeg(&concatenated(&slow_units), dir.path()),
        40
    );
}

//! Remote cameras on /ingest/{cam} and the older /video_remote_source/{cam}: their frames reach
//! viewers byte for byte (apart from the timing segment), and they hear about demand.

mod common;
use common::*;

use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// A distinct valid JPEG per index: the test picture with zero padding, which decoders ignore.
fn jpeg_number(i: usize) -> Vec<u8> {
    let mut jpeg = base_jpeg().to_vec();
    jpeg.resize(jpeg.len() + i, 0);
    jpeg
}

/// Reads the next binary message from a camera connection (`1`/`0` demand messages).
fn next_demand(camera: &mut Ws) -> Vec<u8> {
    loop {
        match camera.read().expect("camera reads from the server") {
            Message::Binary(bytes) => return bytes.to_vec(),
            Message::Close(close) => panic!("server closed the camera: {close:?}"),
            _ => {}
        }
    }
}

fn wait_demand(camera: &mut Ws, wanted: &[u8]) {
    wait_for(&format!("demand message {wanted:?}"), || {
        (next_demand(camera) == wanted).then_some(())
    });
}

fn ingest_reaches_viewers(ingest_path: &str, viewer_path: &str, flags: &[&str]) {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 2, flags);
    let mut camera = ws_connect(server.port, ingest_path);
    // Asked for a first frame, which makes the camera (nobody can watch it before).
    wait_demand(&mut camera, b"1");
    camera
        .send(Message::binary(jpeg_number(0)))
        .expect("send a frame");
    wait_camera_listed(&server, "cam9");
    wait_demand(&mut camera, b"0");
    let mut viewer = ws_connect(server.port, viewer_path);
    wait_demand(&mut camera, b"1");
    // The viewer may first get the frame sent before it came; then every frame sent after.
    for i in 1..=20 {
        camera
            .send(Message::binary(jpeg_number(i)))
            .expect("send a frame");
        loop {
            let (_, got) = strip_timing(&next_binary(&mut viewer));
            if got == jpeg_number(i) {
                break;
            }
            assert_eq!(got, jpeg_number(0), "frame {i} arrives byte for byte");
        }
    }
    let second = raw_request(
        server.port,
        format!(
            "GET {ingest_path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("second ingest answered");
    assert_eq!(second.status, 409, "a second writer for cam9 gets 409");
    wait_for("the ingest camera online", || {
        (server.camera_field("cam9", "status")? == "online").then_some(())
    });
    drop(viewer);
    wait_demand(&mut camera, b"0");
    wait_for("the unwatched, quiet ingest camera to be idle", || {
        (server.camera_field("cam9", "status")? == "idle").then_some(())
    });
    drop(camera);
    wait_for("the ingest camera offline once it left", || {
        (server.camera_field("cam9", "status")? == "offline").then_some(())
    });
}

#[test]
fn frames_pushed_to_ingest_reach_ws_viewers_and_a_second_ingest_gets_409() {
    ingest_reaches_viewers(
        "/ingest/cam9?token=cam-secret",
        "/ws/cam9",
        &["--ingest-token", "cam-secret"],
    );
}

/// The older server's camera scripts: with the token added to their URL, or, without one, on a
/// server whose ingest was opened on purpose.
#[test]
fn frames_pushed_to_the_old_route_reach_old_route_viewers() {
    ingest_reaches_viewers(
        "/video_remote_source/cam9?token=cam-secret",
        "/websocket_handler_site/cam9",
        &["--ingest-token", "cam-secret"],
    );
    ingest_reaches_viewers(
        "/video_remote_source/cam9",
        "/websocket_handler_site/cam9",
        &["--allow-open-ingest"],
    );
}

#[test]
fn non_jpeg_and_oversized_frames_are_refused_with_a_close_reason() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        1,
        &["--max-frame-bytes", "65536", "--allow-open-ingest"],
    );
    let expect_close = |camera: &mut Ws, code: u16| loop {
        match camera.read() {
            Ok(Message::Close(Some(close))) => {
                assert_eq!(close.code, CloseCode::from(code), "{}", close.reason);
                assert!(!close.reason.is_empty());
                return;
            }
            Ok(_) => {}
            Err(e) => panic!("expected close {code}, got {e}"),
        }
    };
    let mut camera = ws_connect(server.port, "/ingest/cam9");
    camera
        .send(Message::binary(b"GIF89a not a jpeg".to_vec()))
        .expect("send");
    expect_close(&mut camera, 1003);
    let mut camera = wait_for("the ring writer to be free again", || {
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).ok()?;
        tungstenite::client(server.ws_url("/ingest/cam9"), stream)
            .ok()
            .map(|(ws, _)| ws)
    });
    // Exactly the largest frame allowed: taken, its timing segment and all.
    let largest = jpeg_number(65536 - base_jpeg().len());
    camera.send(Message::binary(largest.clone())).expect("send");
    wait_camera_listed(&server, "cam9");
    let (_, got) = strip_timing(&server.get("/snapshot/cam9.jpg").body);
    assert_eq!(got, largest);
    camera
        .send(Message::binary(jpeg_number(100_000)))
        .expect("send");
    expect_close(&mut camera, 1009);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn ingest_needs_the_ingest_token_when_one_is_set() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &["--ingest-token", "cam-secret"]);
    let upgrade = |path: &str| {
        raw_request(
            server.port,
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("answered")
        .status
    };
    assert_eq!(upgrade("/ingest/cam9"), 401);
    assert_eq!(upgrade("/ingest/cam9?token=wrong"), 401);
    let mut camera = ws_connect(server.port, "/ingest/cam9?token=cam-secret");
    camera.send(Message::binary(jpeg_number(1))).expect("send");
    wait_camera_listed(&server, "cam9");
    std::thread::sleep(Duration::from_millis(100));
}

/// A remote `ringcast-capture --push --on-demand`: it sends nothing while nobody watches, a
/// viewer of the camera gets its frames, and when the viewer leaves it stops again.
#[test]
fn a_pushing_capture_reaches_viewers_and_follows_their_demand() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 2, &["--ingest-token", "s3cret"]);
    let camera = ChildGuard(
        std::process::Command::new(capture_binary())
            .args([
                "--camera", "remote", "--source", "test", "--size", "320x240",
            ])
            .args(["--fps", "10", "--on-demand", "--idle-after", "1"])
            .args(["--push", &server.ws_url("/ingest/remote")])
            .env("RINGCAST_PUSH_TOKEN", "s3cret")
            .env("RINGCAST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start ringcast-capture --push"),
    );
    wait_for("the pushed camera to be listed as idle", || {
        (server.camera_field("remote", "status")? == "idle").then_some(())
    });

    let mut viewer = ws_connect(server.port, "/ws/remote");
    let numbers: Vec<u64> = (0..10)
        .map(|_| frame_no(&next_binary(&mut viewer)))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] > w[0]),
        "frame numbers must increase: {numbers:?}"
    );
    wait_for(
        "the pushed camera to be listed as online while watched",
        || (server.camera_field("remote", "status")? == "online").then_some(()),
    );
    drop(viewer);

    wait_for(
        "the pushed camera to idle again once its viewer left",
        || (server.camera_field("remote", "status")? == "idle").then_some(()),
    );
    drop(camera);
}

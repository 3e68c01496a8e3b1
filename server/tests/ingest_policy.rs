//! What a remote camera may and may not do on the ingest routes: it needs the ingest token (or an
//! ingest opened on purpose), never writes a local capture's camera (and gives one up to the
//! local capture that comes for it), only creates the cameras it is allowed, leaves no files
//! behind when it sends junk, is capped in number, is dropped when it goes quiet, and is
//! forgotten after it left.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

use tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The status of a WebSocket upgrade to `path`, with `extra` header lines.
fn upgrade_status(port: u16, path: &str, extra: &str) -> u16 {
    raw_request(
        port,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .expect("answered")
    .status
}

/// The close code the server ends a camera's connection with (waiting for it).
fn close_code(camera: &mut Ws) -> u16 {
    close_of(camera).0
}

/// The close the server ends a camera's connection with: code and reason.
fn close_of(camera: &mut Ws) -> (u16, String) {
    loop {
        match camera.read() {
            Ok(Message::Close(Some(close))) => {
                return (u16::from(close.code), close.reason.to_string())
            }
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

fn files_of(dir: &Path, camera: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{camera}.")))
        .collect()
}

#[test]
fn ingest_is_closed_without_a_token_unless_opened_on_purpose() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &[]);
    assert_eq!(upgrade_status(server.port, "/ingest/cam9", ""), 401);
    assert_eq!(
        upgrade_status(server.port, "/video_remote_source/cam9", ""),
        401
    );
    let refused = server.get("/ingest/cam9");
    assert!(String::from_utf8_lossy(&refused.body).contains("--ingest-token"));
    drop(server);

    let server = Server::start(dir.path(), 1, &["--allow-open-ingest"]);
    assert_eq!(upgrade_status(server.port, "/ingest/cam9", ""), 101);
}

#[test]
fn every_protected_route_refuses_a_missing_wrong_or_other_token_and_other_sites() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 5);
    let server = Server::start(
        dir.path(),
        1,
        &["--token", "view", "--ingest-token", "push"],
    );
    wait_for("cam1 listed", || {
        (server.get("/api/cameras?token=view").status == 200).then_some(())
    });
    for path in [
        "/",
        "/api/cameras",
        "/cameras_list",
        "/metrics",
        "/snapshot/cam1.jpg",
        "/stream/cam1.mjpg",
        "/ws/cam1",
        "/websocket_handler_site/cam1",
    ] {
        assert_eq!(server.get(path).status, 401, "{path} without a token");
        let wrong = format!("{path}?token=nope");
        assert_eq!(server.get(&wrong).status, 401, "{path} with a wrong token");
        let pushing = format!("{path}?token=push");
        assert_eq!(
            server.get(&pushing).status,
            401,
            "{path} with the ingest token"
        );
    }
    for path in ["/ingest/cam9", "/video_remote_source/cam9"] {
        assert_eq!(upgrade_status(server.port, path, ""), 401, "{path}");
        let viewing = format!("{path}?token=view");
        assert_eq!(
            upgrade_status(server.port, &viewing, ""),
            401,
            "{path} with the viewing token"
        );
    }
    // Another site's page, in a viewer's browser that knows the token: refused.
    let elsewhere = "Origin: https://evil.example\r\n";
    assert_eq!(
        upgrade_status(server.port, "/ws/cam1?token=view", elsewhere),
        403
    );
    assert_eq!(
        upgrade_status(server.port, "/ingest/cam9?token=push", elsewhere),
        403
    );
    // The server's own pages, and clients that are not browsers (no Origin), are served.
    let own = format!("Origin: http://127.0.0.1:{}\r\n", server.port);
    assert_eq!(
        upgrade_status(server.port, "/ws/cam1?token=view", &own),
        101
    );
    assert_eq!(upgrade_status(server.port, "/ws/cam1?token=view", ""), 101);
}

#[test]
fn origins_named_by_the_operator_may_open_websockets() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 5);
    let server = Server::start(
        dir.path(),
        2,
        &[
            "--allowed-origins",
            "https://wall.example, https://other.example/",
        ],
    );
    wait_camera_listed(&server, "cam1");
    for (origin, status) in [
        ("https://wall.example", 101),
        ("https://OTHER.example", 101),
        ("https://evil.example", 403),
        ("null", 403),
    ] {
        let header = format!("Origin: {origin}\r\n");
        assert_eq!(
            upgrade_status(server.port, "/ws/cam1", &header),
            status,
            "{origin}"
        );
    }
}

#[test]
fn a_local_capture_s_camera_is_never_taken_over_not_even_while_it_restarts() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &["--allow-open-ingest"]);
    let mut capture = start_capture(dir.path(), "cam1", 10, &[]);
    wait_camera_listed(&server, "cam1");
    assert_eq!(
        upgrade_status(server.port, "/ingest/cam1", ""),
        409,
        "while it runs"
    );
    // Killed: its ring stays, and is still its own.
    capture.0.kill().unwrap();
    capture.0.wait().unwrap();
    assert_eq!(
        upgrade_status(server.port, "/ingest/cam1", ""),
        409,
        "while it is down"
    );
    let _again = start_capture(dir.path(), "cam1", 10, &[]);
    wait_for("the capture back", || {
        (server.camera_field("cam1", "status")? == "online").then_some(())
    });
}

#[test]
fn a_local_capture_takes_its_camera_back_from_a_remote_one_that_came_first() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 2, &["--allow-open-ingest"]);
    // After a reboot, say: the remote camera connects before the local capture starts.
    let mut remote = ws_connect(server.port, "/ingest/cam1");
    remote.send(Message::binary(base_jpeg().to_vec())).unwrap();
    wait_camera_listed(&server, "cam1");
    let mut capture = start_capture(dir.path(), "cam1", 10, &[]);
    assert_eq!(
        close_of(&mut remote),
        (
            1008,
            "a capture on this host has taken this camera".to_owned()
        )
    );
    let ring = ring_path(dir.path(), "cam1");
    wait_for("the local capture's frames", || {
        let info = ringbuf::RingReader::open(&ring).ok()?.info();
        (info.writer_kind == ringbuf::WriterKind::Local && info.head.0 > 2).then_some(())
    });
    assert!(
        matches!(capture.0.try_wait(), Ok(None)),
        "the capture gave up"
    );
    assert_eq!(upgrade_status(server.port, "/ingest/cam1", ""), 409);
}

#[test]
fn ingest_creates_only_the_cameras_it_may_and_at_most_so_many() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        2,
        &[
            "--allow-open-ingest",
            "--ingest-cameras",
            "door,yard-*",
            "--max-ingest-cameras",
            "2",
        ],
    );
    assert_eq!(upgrade_status(server.port, "/ingest/lab", ""), 403);
    let mut door = ws_connect(server.port, "/ingest/door");
    door.send(Message::binary(base_jpeg().to_vec())).unwrap();
    let mut yard = ws_connect(server.port, "/ingest/yard-1");
    yard.send(Message::binary(base_jpeg().to_vec())).unwrap();
    wait_camera_listed(&server, "door");
    wait_camera_listed(&server, "yard-1");
    assert_eq!(
        upgrade_status(server.port, "/ingest/yard-2", ""),
        503,
        "a third camera"
    );
    // A camera already there may connect again (after its old connection is gone).
    drop(door);
    wait_for("door offline", || {
        (server.camera_field("door", "status")? == "offline").then_some(())
    });
    assert_eq!(upgrade_status(server.port, "/ingest/door", ""), 101);
}

#[test]
fn junk_from_a_connection_leaves_no_files_behind() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &["--allow-open-ingest"]);
    for n in 0..52 {
        let mut camera = ws_connect(server.port, &format!("/ingest/probe{n}"));
        camera
            .send(Message::binary(b"not a jpeg".to_vec()))
            .unwrap();
        assert_eq!(close_code(&mut camera), 1003);
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("probe"))
        .collect();
    assert!(left.is_empty(), "junk made files: {left:?}");
    assert_eq!(server.cameras(), serde_json::json!([]));
}

#[test]
fn a_quiet_camera_is_dropped_but_one_told_to_stop_is_not() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        1,
        &["--allow-open-ingest", "--ingest-idle-timeout", "1"],
    );
    // Never sends a frame.
    let mut silent = ws_connect(server.port, "/ingest/silent");
    assert_eq!(close_code(&mut silent), 1008);
    // Sends one, is told nobody watches, and rightly sends nothing more.
    let mut idle = ws_connect(server.port, "/ingest/idle");
    idle.send(Message::binary(base_jpeg().to_vec())).unwrap();
    wait_for("the camera told to stop", || match idle.read().ok()? {
        Message::Binary(bytes) if bytes.as_ref() == b"0" => Some(()),
        _ => None,
    });
    idle.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Several idle timeouts long; the server repeats its `0` meanwhile.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        match idle.read() {
            Ok(Message::Close(close)) => panic!("a camera told to stop was dropped: {close:?}"),
            Ok(Message::Binary(bytes)) => assert_eq!(bytes.as_ref(), b"0", "told to send"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_camera_that_left_is_forgotten_with_its_files() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        2,
        &["--allow-open-ingest", "--forget-after", "1"],
    );
    let mut camera = ws_connect(server.port, "/ingest/gone");
    camera.send(Message::binary(base_jpeg().to_vec())).unwrap();
    wait_camera_listed(&server, "gone");
    assert_eq!(
        files_of(dir.path(), "gone").len(),
        2,
        "a ring and a demand file"
    );
    drop(camera);
    wait_for("the camera forgotten", || {
        (server.camera_field("gone", "id").is_none() && files_of(dir.path(), "gone").is_empty())
            .then_some(())
    });
    // A local capture's camera is never forgotten, however long it is gone.
    let mut capture = start_capture(dir.path(), "local", 10, &[]);
    wait_camera_listed(&server, "local");
    capture.0.kill().unwrap();
    capture.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        dir.path().join("local.ring").exists(),
        "the ring was removed"
    );
    assert_eq!(
        server.camera_field("local", "status"),
        Some(serde_json::json!("offline"))
    );
}

#[test]
fn ingest_cameras_count_against_max_clients_with_the_viewers() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        1,
        &["--allow-open-ingest", "--max-clients", "1"],
    );
    let mut camera = ws_connect(server.port, "/ingest/cam1");
    camera.send(Message::binary(base_jpeg().to_vec())).unwrap();
    wait_camera_listed(&server, "cam1");
    assert_eq!(upgrade_status(server.port, "/ws/cam1", ""), 503, "a viewer");
    assert_eq!(
        upgrade_status(server.port, "/ingest/cam2", ""),
        503,
        "a second camera"
    );
    drop(camera);
    wait_for("room for a viewer", || {
        (upgrade_status(server.port, "/ws/cam1", "") == 101).then_some(())
    });
}

#[test]
fn connections_waiting_for_a_first_frame_are_capped_too() {
    let dir = temp_ring_dir();
    let server = Server::start(
        dir.path(),
        1,
        &["--allow-open-ingest", "--max-ingest-cameras", "2"],
    );
    let waiting: Vec<Ws> = ["a", "b"]
        .iter()
        .map(|name| ws_connect(server.port, &format!("/ingest/{name}")))
        .collect();
    assert_eq!(upgrade_status(server.port, "/ingest/c", ""), 503);
    drop(waiting);
    wait_for("room again", || {
        (upgrade_status(server.port, "/ingest/c", "") == 101).then_some(())
    });
}

#[test]
fn a_camera_that_floods_pings_and_never_reads_is_cut_off() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &["--allow-open-ingest"]);
    let mut camera = ws_connect_small_rcvbuf(server.port, "/ingest/flood", 4096);
    camera
        .send(Message::binary(base_jpeg().to_vec()))
        .expect("the first frame");
    // Pongs pile up unread until the server gives up writing them; then the connection ends,
    // and sending fails.
    let payload = vec![0x55; 125];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ended = std::iter::repeat_with(|| camera.send(Message::Ping(payload.clone().into())))
        .take_while(|_| std::time::Instant::now() < deadline)
        .find_map(Result::err);
    assert!(ended.is_some(), "the connection was never cut");
    wait_for("the camera offline", || {
        (server.camera_field("flood", "status")? == "offline").then_some(())
    });
}

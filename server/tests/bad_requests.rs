//! Bad requests get a clear answer and the worker keeps serving everyone else.

mod common;
use common::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str, key: &str, version: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn bad_requests_are_answered_and_streaming_goes_on() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 20);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let before = frame_no(&next_binary(&mut ws));
    let port = server.port;

    let status = |request: &[u8]| raw_request(port, request).expect("answered").status;
    assert_eq!(server.get("/nothing/here").status, 404);
    assert_eq!(server.get("/ws/nocam").status, 404);
    assert_eq!(server.get("/stream/nocam.mjpg").status, 404);
    assert_eq!(server.get("/snapshot/nocam.jpg").status, 404);
    assert_eq!(server.get("/ws/Bad%20Name").status, 404);
    assert_eq!(status(b"BLAH\x01 / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
    assert_eq!(status(b"GET noslash HTTP/1.1\r\n\r\n"), 400);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(status(huge.as_bytes()), 431);
    assert_eq!(
        status(&upgrade_request("/ws/cam1", "not-base64!", "13")),
        400
    );
    assert_eq!(status(&upgrade_request("/ws/cam1", KEY, "8")), 426);
    assert_eq!(status(b"GET /ws/cam1 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(
        status(b"POST /api/cameras HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        405
    );
    let answer = raw_request(port, b"GET /nothing HTTP/1.1\r\n\r\n").expect("answered");
    assert!(!answer.body.is_empty(), "a 404 says why");

    // A client that hangs up mid-head, and one that sends garbage after the upgrade.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    {
        use std::io::Write;
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        raw.write_all(&upgrade_request("/ws/cam1", KEY, "13"))
            .expect("write");
        raw.write_all(&[0xff; 64]).expect("write garbage frames");
    }

    let after = frame_no(&next_binary(&mut ws));
    assert!(after > before, "the viewer kept streaming");
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn viewers_need_the_token_when_one_is_set() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 1, &["--token", "s3cret"]);
    assert_eq!(server.get("/healthz").status, 200, "health needs no token");
    assert_eq!(server.get("/api/cameras").status, 401);
    assert_eq!(server.get("/snapshot/cam1.jpg").status, 401);
    assert_eq!(server.get("/metrics").status, 401);
    assert_eq!(server.get("/ws/cam1?token=wrong").status, 401);
    wait_for("cam1 listed with the token", || {
        let response = server.get("/api/cameras?token=s3cret");
        (response.status == 200 && String::from_utf8_lossy(&response.body).contains("cam1"))
            .then_some(())
    });
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let bearer = raw_request(
            server.port,
            format!("GET /cameras_list HTTP/1.1\r\nAuthorization: {scheme} s3cret\r\n\r\n")
                .as_bytes(),
        )
        .expect("answered");
        assert_eq!(bearer.status, 200, "scheme {scheme}");
    }
    let basic = raw_request(
        server.port,
        b"GET /cameras_list HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n",
    )
    .expect("answered");
    assert_eq!(basic.status, 401);
    let mut ws = ws_connect(server.port, "/ws/cam1?token=s3cret");
    next_binary(&mut ws);
    assert_eq!(server.get("/").status, 401);
    assert_eq!(server.get("/?token=s3cret").status, 200);
    // The viewer's code is no secret: its modules load by plain URLs.
    assert_eq!(server.get("/assets/app.js").status, 200);
}

#[test]
fn viewers_over_max_clients_get_503() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 1, &["--max-clients", "1"]);
    wait_camera_listed(&server, "cam1");
    let mut first = ws_connect(server.port, "/ws/cam1");
    next_binary(&mut first);
    let refused =
        raw_request(server.port, &upgrade_request("/ws/cam1", KEY, "13")).expect("answered");
    assert_eq!(refused.status, 503);
    drop(first);
    wait_for("a free place after the first viewer left", || {
        let answer = raw_request(server.port, &upgrade_request("/ws/cam1", KEY, "13")).ok()?;
        (answer.status == 101).then_some(())
    });
}

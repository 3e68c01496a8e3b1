//! Keepalive: viewers get a ping every --ping-interval (30 s by default); one that never
//! answers is closed, one that answers stays.

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ringbuf::{CameraId, RingGeometry, RingWriter};
use tungstenite::Message;

#[test]
fn a_viewer_that_never_answers_pings_is_dropped_and_one_that_answers_stays() {
    let dir = temp_ring_dir();
    // A camera that publishes nothing, so the only traffic is keepalive.
    let _writer = RingWriter::create(
        dir.path(),
        &CameraId::new("cam1").unwrap(),
        RingGeometry::default(),
    )
    .expect("ring");
    let server = Server::start(dir.path(), 1, &["--ping-interval", "0.5"]);
    wait_camera_listed(&server, "cam1");

    let mut answering = ws_connect(server.port, "/ws/cam1");
    // tungstenite answers each ping while it reads; this viewer outlives several intervals.
    let until = Instant::now() + Duration::from_secs(2);
    let mut pings = 0;
    while Instant::now() < until {
        match answering
            .read()
            .expect("the answering viewer stays connected")
        {
            Message::Ping(_) => pings += 1,
            Message::Close(close) => panic!("answering viewer closed: {close:?}"),
            _ => {}
        }
    }
    assert!(pings >= 2, "{pings} pings");
    drop(answering);

    let mut silent = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    silent
        .write_all(
            b"GET /ws/cam1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("upgrade");
    silent.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut received = Vec::new();
    silent
        .read_to_end(&mut received)
        .expect("the server closes the silent viewer");
    let going_away = [0x88, 2 + 17, 0x03, 0xE9];
    assert!(
        received.windows(4).any(|w| w == going_away),
        "close 1001 in {received:?}"
    );
}

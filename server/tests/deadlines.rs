//! A client that never reads cannot hold a task and socket: a reply is given up, a viewer stuck
//! in a pong is dropped as stalled. An error reply is read to its end even when the client sent
//! more than the server read.

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::Duration;

use ringbuf::frame::{insert_timing, FrameTiming};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock};

/// The test JPEG padded with comment segments to about 7 MB, more than the kernel buffers
/// (send buffer at most 4 MiB by default, a small receive buffer) take in.
fn big_jpeg() -> Vec<u8> {
    let base = base_jpeg();
    let mut jpeg = base[..2].to_vec();
    let filler = vec![b'x'; 65_533];
    for _ in 0..110 {
        jpeg.extend_from_slice(&[0xFF, 0xFE, 0xFF, 0xFF]);
        jpeg.extend_from_slice(&filler);
    }
    jpeg.extend_from_slice(&base[2..]);
    jpeg
}

#[test]
fn a_snapshot_client_that_never_reads_is_dropped() {
    let dir = temp_ring_dir();
    let camera = CameraId::new("big").expect("camera name");
    let geometry = RingGeometry {
        slot_count: 2,
        slot_size: 8 << 20,
    };
    let mut writer = RingWriter::create(dir.path(), &camera, geometry).expect("create ring");
    let mut frame = Vec::new();
    let capture = SystemClock.wall();
    let timing = FrameTiming {
        frame_no: writer.next_frame_no(),
        capture,
    };
    insert_timing(&big_jpeg(), timing, &mut frame).expect("timing");
    writer.publish(&frame, capture).expect("publish");
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "big");
    let full = server.get("/snapshot/big.jpg");
    assert_eq!(full.status, 200);
    assert_eq!(full.body.len(), frame.len(), "a reading client gets it all");

    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
    socket.connect(&addr.into()).expect("connect");
    let mut stalled: std::net::TcpStream = socket.into();
    stalled
        .write_all(b"GET /snapshot/big.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    // Not reading for well over the server's reply deadline; meanwhile the server serves others.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(server.get("/healthz").status, 200);

    stalled.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the stalled reply: {e}"),
        }
    }
    let sent_body = received.len().saturating_sub(full_head_len(&received));
    assert!(
        sent_body < frame.len(),
        "the server gave the reply up ({} of {} bytes came)",
        sent_body,
        frame.len()
    );
}

fn full_head_len(reply: &[u8]) -> usize {
    reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| at + 4)
}

#[test]
fn a_431_with_more_input_behind_it_arrives_whole() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &[]);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut request = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(200_000)).into_bytes();
    request.extend_from_slice(b"\r\n\r\n");
    let mut writing = client.try_clone().expect("clone");
    // The server stops reading at 8 KiB; the rest is written (or refused) on the side.
    let writer = std::thread::spawn(move || writing.write_all(&request).is_ok());
    let mut reply = Vec::new();
    client
        .read_to_end(&mut reply)
        .expect("the 431 reply arrives whole, not cut off by a reset");
    let _ = writer.join();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected a 431 reply, got {text:?}"
    );
}

/// The value of `name{camera="cam1",...}` in this worker's /metrics.
fn cam1_metric(server: &Server, name: &str) -> Option<u64> {
    let metrics = server.get("/metrics");
    let prefix = format!("{name}{{camera=\"cam1\"");
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
}

#[test]
fn a_viewer_that_pings_but_never_reads_is_dropped_as_stalled() {
    let dir = temp_ring_dir();
    // One frame, then a quiet camera: only pongs are written to the viewer.
    Feeder::start(dir.path(), "cam1", 20).stop();
    let server = Server::start(dir.path(), 1, &["--stall-timeout", "1"]);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect_small_rcvbuf(server.port, "/ws/cam1", 4096);
    wait_for("the viewer counted", || {
        (cam1_metric(&server, "ringcast_viewers")? == 1).then_some(())
    });
    ws.get_mut()
        .set_write_timeout(Some(Duration::from_millis(100)))
        .expect("write timeout");
    let payload = vec![b'p'; 125];
    wait_for("the pinging viewer dropped as stalled", || {
        for _ in 0..200 {
            // The server stops reading once it dropped the viewer; then sending fails.
            if ws
                .send(tungstenite::Message::Ping(payload.clone().into()))
                .is_err()
            {
                break;
            }
        }
        let stalled = cam1_metric(&server, "ringcast_stalls_total")? >= 1;
        let gone = cam1_metric(&server, "ringcast_viewers")? == 0;
        (stalled && gone).then_some(())
    });
}

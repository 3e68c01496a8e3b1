//! What a viewer sends is checked: a valid close code is echoed, a bad one answered with 1002, a
//! text message that is not UTF-8 with 1007.

mod common;
use common::*;

use std::io::{Read, Write};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Opens a WebSocket by hand (so any close payload can be sent), sends a masked close frame with
/// `payload`, and returns the code of the server's close frame.
fn close_answer(port: u16, payload: &[u8]) -> Option<u16> {
    answer_to_frame(port, 0x88, payload)
}

/// Opens a WebSocket by hand, sends one masked frame (`first_byte`: FIN and opcode) with
/// `payload`, and returns the code of the server's close frame.
fn answer_to_frame(port: u16, first_byte: u8, payload: &[u8]) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let request = format!(
        "GET /ws/cam1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("upgrade");
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).expect("a frame");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a handshake response")
        + 4;
    assert!(received.starts_with(b"HTTP/1.1 101"), "upgraded");
    server_close_code(&received[head_end..])
}

/// Walks the server's (unmasked) frames and returns the close frame's code.
fn server_close_code(mut frames: &[u8]) -> Option<u16> {
    while frames.len() >= 2 {
        let opcode = frames[0] & 0x0F;
        let (len, header) = match frames[1] & 0x7F {
            126 if frames.len() >= 4 => (u16::from_be_bytes([frames[2], frames[3]]) as usize, 4),
            127 if frames.len() >= 10 => (
                u64::from_be_bytes(frames[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            short => (short as usize, 2),
        };
        let body = frames.get(header..header + len)?;
        if opcode == 0x8 {
            return (body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
        }
        frames = &frames[header + len..];
    }
    None
}

#[test]
fn valid_close_codes_are_echoed_and_invalid_ones_get_1002() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 5);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    let port = server.port;

    assert_eq!(close_answer(port, &1000u16.to_be_bytes()), Some(1000));
    assert_eq!(close_answer(port, &4000u16.to_be_bytes()), Some(4000));
    assert_eq!(close_answer(port, b""), Some(1000), "no code: normal");
    assert_eq!(close_answer(port, &[0x03]), Some(1002), "one-byte payload");
    for code in [1005u16, 1006, 1015, 999, 2000, 5000] {
        assert_eq!(
            close_answer(port, &code.to_be_bytes()),
            Some(1002),
            "code {code}"
        );
    }
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(&[0xC3, 0x28]);
    assert_eq!(
        close_answer(port, &bad_reason),
        Some(1002),
        "non-UTF-8 reason"
    );
}

#[test]
fn a_text_message_that_is_not_utf8_is_answered_with_1007() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 5);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    assert_eq!(
        answer_to_frame(server.port, 0x81, &[0xC3, 0x28]),
        Some(1007)
    );
}

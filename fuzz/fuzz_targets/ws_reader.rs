//! The WebSocket frame reader of viewers and ingest (`WsReader::new` + `next_buffered`, its
//! synchronous core), two ways, chosen by the top bit of the first byte:
//!
//! - raw: the rest of the input is what the client sent. Every message is at most
//!   `max_message` bytes, a text message is UTF-8, a ping payload is at most 125 bytes, a close
//!   code is one a peer may send; and reading a prefix of the stream gives a prefix of the
//!   messages (the reader sees the stream in pieces as reads deliver it), ending in the same
//!   error if the prefix already held it.
//! - round trip: the input describes messages, which are framed as a client frames them
//!   (masked, fragmented, with pings between fragments) and must come out exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::Input;
use ringcast_server::websocket::{Incoming, ReadError, WsReader};

/// The viewer's limit, and sizes around the length encodings' boundaries.
const MAX_MESSAGES: [usize; 8] = [4096, 0, 1, 125, 126, 65_535, 65_536, 2 << 20];

type Outcome = Result<Incoming, String>;

fn read_all(bytes: &[u8], max: usize) -> Vec<Outcome> {
    let mut reader = WsReader::new((), bytes.to_vec(), max);
    let mut out = Vec::new();
    loop {
        match reader.next_buffered() {
            Ok(Some(message)) => out.push(Ok(message)),
            Ok(None) => return out,
            Err(e) => {
                check_error(&e, max);
                out.push(Err(format!("{e:?}")));
                return out;
            }
        }
    }
}

fn check_error(e: &ReadError, max: usize) {
    match e {
        ReadError::TooLarge { len, max: m } => {
            assert_eq!(*m, max);
            assert!(*len > max as u64);
        }
        ReadError::Protocol(_) | ReadError::NotUtf8 => {}
        ReadError::Eof | ReadError::Io(_) => panic!("no I/O happens here, yet {e:?}"),
    }
    let close = e
        .close_reason()
        .expect("a protocol error is answered with a close");
    assert!(matches!(close.0, 1002 | 1007 | 1009));
}

fn check_message(message: &Incoming, max: usize) {
    match message {
        Incoming::Binary(payload) => assert!(payload.len() <= max),
        Incoming::Text(payload) => {
            assert!(payload.len() <= max);
            assert!(std::str::from_utf8(payload).is_ok());
        }
        Incoming::Ping(payload) => assert!(payload.len() <= 125),
        Incoming::Pong => {}
        Incoming::Close(code) => {
            if let Some(code) = code {
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
            }
        }
    }
}

fn raw(mut input: Input) {
    let max = MAX_MESSAGES[usize::from(input.u8()) % MAX_MESSAGES.len()];
    let cut = input.u16();
    let stream = input.rest();
    let full = read_all(stream, max);
    for message in full.iter().flatten() {
        check_message(message, max);
    }
    let cut = usize::from(cut) % (stream.len() + 1);
    let prefix = read_all(&stream[..cut], max);
    assert!(prefix.len() <= full.len(), "more messages from a prefix");
    assert_eq!(
        &full[..prefix.len()],
        &prefix[..],
        "a prefix of the stream read differently"
    );
}

/// Frames a client would send: FIN bit, opcode, mask bit, the shortest length form, the key.
fn client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

fn round_trip(mut input: Input) {
    let max = 2 << 20;
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    while !input.is_empty() {
        let kind = input.u8();
        let mask = [input.u8(), input.u8(), input.u8(), input.u8()];
        let len = usize::from(input.u16() % 1024);
        // Long payloads repeat the bytes given, so that every length form is reached.
        let repeat = if kind & 0x40 != 0 { 80 } else { 1 };
        let bytes = input.bytes(len);
        match kind % 4 {
            0 | 1 => {
                let text = kind % 4 == 1;
                let payload: Vec<u8> = if text {
                    String::from_utf8_lossy(bytes).repeat(repeat).into_bytes()
                } else {
                    bytes.repeat(repeat)
                };
                let fragments = usize::from(kind >> 2 & 3) + 1;
                let size = payload.len().div_ceil(fragments).max(1);
                let chunks: Vec<&[u8]> = if payload.is_empty() {
                    vec![&[]]
                } else {
                    payload.chunks(size).collect()
                };
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 {
                        if text {
                            1
                        } else {
                            2
                        }
                    } else {
                        0
                    };
                    client_frame(&mut stream, i + 1 == chunks.len(), opcode, chunk, mask);
                    if kind & 0x80 != 0 && i + 1 < chunks.len() {
                        // A control frame between fragments is allowed (RFC 6455 5.4).
                        client_frame(&mut stream, true, 9, &chunk[..chunk.len().min(125)], mask);
                        expected.push(Incoming::Ping(chunk[..chunk.len().min(125)].to_vec()));
                    }
                }
                expected.push(if text {
                    Incoming::Text(payload)
                } else {
                    Incoming::Binary(payload)
                });
            }
            2 => {
                let payload = &bytes[..bytes.len().min(125)];
                client_frame(&mut stream, true, 9, payload, mask);
                expected.push(Incoming::Ping(payload.to_vec()));
            }
            _ => {
                client_frame(&mut stream, true, 10, &bytes[..bytes.len().min(125)], mask);
                expected.push(Incoming::Pong);
            }
        }
    }
    let got = read_all(&stream, max);
    let expected: Vec<Outcome> = expected.into_iter().map(Ok).collect();
    assert_eq!(got, expected);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    if input.u8() & 0x80 == 0 {
        raw(input);
    } else {
        round_trip(input);
    }
});

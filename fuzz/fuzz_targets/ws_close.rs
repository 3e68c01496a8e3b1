//! Close frames: `ringcast_server::websocket::parse_close` on any payload a peer may send, and
//! the server's own `close_frame` on any code and reason.
//!
//! Invariants: parse_close agrees with RFC 6455 7.4 (an empty payload has no code; one byte is
//! an error; a code is accepted only in 1000-1003, 1007-1014 or 3000-4999, and only with a UTF-8
//! reason), and a frame the server builds is one control frame of at most 125 payload bytes
//! whose payload parse_close reads back to its code, the reason cut on a character boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_server::websocket::{close_frame, parse_close, ReadError};

fn allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_close(data);
    match data {
        [] => assert!(matches!(parsed, Ok(None))),
        [_] => assert!(matches!(parsed, Err(ReadError::Protocol(_)))),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if allowed(code) && std::str::from_utf8(reason).is_ok() {
                assert_eq!(parsed.unwrap(), Some(code));
            } else {
                assert!(matches!(parsed, Err(ReadError::Protocol(_))));
            }

            let reason = String::from_utf8_lossy(reason);
            let frame = close_frame(code, &reason);
            assert_eq!(frame[0], 0x88, "FIN and the close opcode");
            let len = usize::from(frame[1]);
            assert!(
                len <= 125 && len == frame.len() - 2,
                "one short unmasked frame"
            );
            let payload = &frame[2..];
            assert_eq!(&payload[..2], &code.to_be_bytes());
            let sent = std::str::from_utf8(&payload[2..]).expect("the reason stays UTF-8");
            assert!(reason.starts_with(sent));
            assert!(
                sent.len() == reason.len() || sent.len() + 4 > 123,
                "cut only to fit"
            );
            match parse_close(payload) {
                Ok(Some(back)) => assert!(allowed(code) && back == code),
                Ok(None) => panic!("a code was sent"),
                Err(_) => assert!(!allowed(code)),
            }
        }
    }
});

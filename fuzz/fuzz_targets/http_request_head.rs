//! The server's HTTP request head parser (`ringcast_server::http::parse_head`), fed the bytes a
//! client sends, then the upgrade checks and token lookup the routes run on what it returns.
//!
//! Invariants: a complete head is recognised as soon as it is all there and is not changed by
//! what follows it (the server parses a growing buffer, and what follows is the start of a
//! WebSocket stream); the head ends with a blank line; the path starts with '/' and holds no
//! query; a prefix of an incomplete head is incomplete too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_server::http::{parse_head, HeadError};
use ringcast_server::websocket::{accept_key, is_upgrade};

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len());
            assert!(
                data[..len].ends_with(b"\n"),
                "a head ends with a blank line"
            );
            assert!(request.path.starts_with('/'));
            assert!(!request.path.contains('?'));
            let (again, again_len) = parse_head(&data[..len])
                .expect("the head alone parses")
                .expect("the head alone is complete");
            assert_eq!(again_len, len);
            assert_eq!(format!("{again:?}"), format!("{request:?}"));
            // What the routes do with a request.
            let _ = request.presented_token();
            let _ = request.query_param("token");
            if is_upgrade(&request) {
                if let Ok(key) = accept_key(&request) {
                    assert_eq!(key.len(), 28, "base64 of a SHA-1");
                }
            }
        }
        Ok(None) => {
            for cut in [data.len() / 2, data.len().saturating_sub(1)] {
                assert!(
                    matches!(parse_head(&data[..cut]), Ok(None)),
                    "a prefix of an incomplete head is incomplete"
                );
            }
        }
        Err(HeadError::Malformed(_) | HeadError::TooLarge) => {}
        Err(other) => panic!("parse_head returned {other:?}, which only reading can"),
    }
});

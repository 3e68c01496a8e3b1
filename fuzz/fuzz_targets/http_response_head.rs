//! The HTTP source's response head check (`capture::source::http::parse_head`), fed what a
//! camera answers up to the end of its headers.
//!
//! Invariants: it accepts only a complete HTTP response with status 200 and a multipart or
//! image/jpeg Content-Type (checked against httparse directly), and says chunked exactly when
//! a Transfer-Encoding header names chunked.
#![no_main]

use capture::source::http::parse_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(head) = parse_head(data) else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    assert!(matches!(
        response.parse(data),
        Ok(httparse::Status::Complete(_))
    ));
    assert_eq!(response.code, Some(200));
    let value = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let content_type = value("content-type").unwrap_or_default();
    assert!(content_type.starts_with("multipart/") || content_type.starts_with("image/jpeg"));
    assert_eq!(
        head.chunked,
        value("transfer-encoding").is_some_and(|te| te.contains("chunked"))
    );
});

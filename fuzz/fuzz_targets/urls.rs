//! URL parsing of `--source` and `--push`: `<capture::cli::SourceSpec as FromStr>`,
//! `capture::source::http::HttpUrl::parse` and `capture::push::PushUrl::parse`, on any string.
//!
//! Invariants: a source spec keeps the URL as given, and its kind matches the scheme; an HTTP
//! URL has a host, a target starting with '/', and parses back to itself when written out again
//! (credentials percent-encoded, IPv6 hosts bracketed, the port explicit); a push URL keeps
//! the URL as given and names a valid camera that appears in its path.
#![no_main]

use std::fmt::Write as _;
use std::str::FromStr;

use capture::cli::SourceSpec;
use capture::push::PushUrl;
use capture::source::http::HttpUrl;
use libfuzzer_sys::fuzz_target;

fn http_url(s: &str) {
    let Ok(url) = HttpUrl::parse(s) else {
        return;
    };
    assert!(!url.host.is_empty());
    assert!(url.target.starts_with('/'), "target {:?}", url.target);
    assert!(!url.host.contains('@') && !url.host.contains('/') && !url.host.contains('?'));
    let mut again = String::from("http://");
    if let Some(credentials) = &url.credentials {
        for b in credentials.bytes() {
            write!(again, "%{b:02X}").unwrap();
        }
        again.push('@');
    }
    if url.host.contains(':') || url.host.starts_with('[') {
        write!(again, "[{}]", url.host).unwrap();
    } else {
        again.push_str(&url.host);
    }
    write!(again, ":{}{}", url.port, url.target).unwrap();
    assert_eq!(
        HttpUrl::parse(&again).as_ref(),
        Ok(&url),
        "{s:?} written out again as {again:?}"
    );
}

fn source_spec(s: &str) {
    let Ok(spec) = SourceSpec::from_str(s) else {
        return;
    };
    let lower = s.to_ascii_lowercase();
    match &spec {
        SourceSpec::TestPattern => assert_eq!(s, "test"),
        SourceSpec::Stdin => assert!(s == "stdin" || s == "-"),
        SourceSpec::V4l2(path) => {
            assert_eq!(
                Some(path.as_os_str()),
                s.strip_prefix("v4l2:").map(|p| p.as_ref())
            );
            assert!(!path.as_os_str().is_empty());
        }
        SourceSpec::Http(url) => {
            assert_eq!(url, s);
            assert!(lower.starts_with("http://"));
            assert!(spec.passes_frames_through());
        }
        SourceSpec::Ffmpeg(url) => {
            assert_eq!(url, s);
            assert!(lower.starts_with("rtsp://") || lower.starts_with("rtmp://"));
        }
    }
}

fn push_url(s: &str) {
    let Ok(url) = PushUrl::parse(s) else {
        return;
    };
    assert_eq!(url.as_str(), s);
    assert!(s.starts_with("ws://"));
    let camera = url.camera().as_str();
    assert!(ringbuf::CameraId::new(camera).is_ok());
    assert!(
        s.contains(&format!("/ingest/{camera}"))
            || s.contains(&format!("/video_remote_source/{camera}")),
        "camera {camera:?} is not in {s:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    source_spec(s);
    http_url(s);
    push_url(s);
    let _ = capture::cli::redact(s);
});

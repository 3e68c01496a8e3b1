//! A worker serves /healthz, /api/cameras, /ws/{cam}, /stream/{cam}.mjpg and the viewer's files
//! from a ring.

mod common;
use common::*;

#[test]
fn a_websocket_viewer_gets_consecutive_frames_from_a_ring() {
    viewer_gets_consecutive_frames(&[]);
}

#[test]
fn the_epoll_fallback_serves_the_same_stream() {
    viewer_gets_consecutive_frames(&["--io-driver", "epoll"]);
}

fn viewer_gets_consecutive_frames(flags: &[&str]) {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 1, flags);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let numbers: Vec<u64> = (0..20)
        .map(|_| {
            let jpeg = next_binary(&mut ws);
            let (n, rest) = strip_timing(&jpeg);
            assert_eq!(rest, base_jpeg(), "frame {n} arrives byte for byte");
            n
        })
        .collect();
    assert!(
        frame_numbers_consecutive(&numbers[1..]),
        "gaps in {numbers:?}"
    );
    let status = wait_for("cam1 online with one viewer", || {
        let cams = server.cameras();
        let cam = cams.as_array()?.iter().find(|c| c["id"] == "cam1")?.clone();
        (cam["status"] == "online" && cam["viewers"] == 1).then_some(cam)
    });
    assert_eq!(status["width"], 640);
    assert_eq!(status["height"], 360);
}

#[test]
fn the_viewers_files_are_revalidated_by_their_etag() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 1, &[]);
    let first = server.get("/assets/app.js");
    assert_eq!(first.status, 200);
    assert!(first.head.contains("text/javascript"), "{}", first.head);
    assert!(
        first.head.contains("Cache-Control: no-cache"),
        "{}",
        first.head
    );
    let etag = first
        .head
        .lines()
        .find_map(|line| line.strip_prefix("ETag: "))
        .expect("an ETag")
        .trim()
        .to_owned();
    let again = raw_request(
        server.port,
        format!("GET /assets/app.js HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let changed = raw_request(
        server.port,
        b"GET /assets/app.js HTTP/1.1\r\nIf-None-Match: \"other\"\r\n\r\n",
    )
    .unwrap();
    assert_eq!((changed.status, changed.body), (200, first.body));
    assert_eq!(server.get("/assets/missing.js").status, 404);
    assert_eq!(server.get("/assets/../Cargo.toml").status, 404);
    // A page opened with ?token= must not hand its URL to every request it makes.
    let page = server.get("/?token=t");
    assert!(
        page.head.contains("Referrer-Policy: no-referrer"),
        "{}",
        page.head
    );
}

/// The first `n` bytes of the MJPEG stream of `cam1`, asked for with `extra` headers.
fn mjpeg_start(port: u16, extra: &str, n: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET /stream/cam1.mjpg HTTP/1.1\r\n{extra}\r\n").unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while bytes.len() < n {
        let read = stream.read(&mut buf).unwrap();
        assert!(read > 0, "the stream ended");
        bytes.extend_from_slice(&buf[..read]);
    }
    let body = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    bytes.drain(..body);
    bytes
}

#[test]
fn mjpeg_parts_end_with_their_delimiter_and_an_img_gets_its_headers_in_advance() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    let part_len = base_jpeg().len() + 200;

    let plain = mjpeg_start(server.port, "", 3 * part_len);
    let head = b"--ringcast-frame\r\nContent-Type: image/jpeg\r\nContent-Length: ";
    assert!(
        plain.starts_with(head),
        "{:?}",
        String::from_utf8_lossy(&plain[..80])
    );
    let length_end = plain.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let length: usize = std::str::from_utf8(&plain[head.len()..length_end])
        .unwrap()
        .parse()
        .unwrap();
    let after = &plain[length_end + 4 + length..];
    assert!(
        after.starts_with(b"\r\n--ringcast-frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
    );

    let img = "Accept: image/avif,image/webp,image/apng,image/*,*/*;q=0.8\r\n";
    let early = mjpeg_start(server.port, img, 3 * part_len);
    let advance = b"--ringcast-frame\r\nContent-Type: image/jpeg\r\n\r\n";
    assert!(
        early.starts_with(advance),
        "{:?}",
        String::from_utf8_lossy(&early[..80])
    );
    let jpeg = &early[advance.len()..];
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let end = jpeg.windows(2).position(|w| w == [0xFF, 0xD9]).unwrap() + 2;
    assert!(
        jpeg[end..]
            .starts_with(b"\r\n--ringcast-frame\r\nContent-Type: image/jpeg\r\n\r\n\xFF\xD8"),
        "{:?}",
        String::from_utf8_lossy(&jpeg[end..end + 60])
    );
}

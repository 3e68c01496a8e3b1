//! Real external sources: ffmpeg on stdin, an MJPEG HTTP camera, an RTMP camera via ffmpeg.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ringbuf::{OfflineReason, WriterStatus};

const FFMPEG_FRAMES: usize = 45;

fn ffmpeg_testsrc(out: &[&str], realtime: bool) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.args(["-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30"])
        .args([
            "-frames:v",
            &FFMPEG_FRAMES.to_string(),
            "-threads",
            "1",
            "-q:v",
            "5",
        ])
        .args(out);
    cmd
}

#[test]
fn every_ffmpeg_frame_on_stdin_arrives_unchanged_apart_from_the_timing_segment() {
    let reference_dir = tempfile::tempdir().unwrap();
    let pattern = reference_dir.path().join("f%03d.jpg");
    let status = ffmpeg_testsrc(&["-f", "image2", pattern.to_str().unwrap()], false)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    let reference: Vec<Vec<u8>> = (1..=FFMPEG_FRAMES)
        .map(|i| std::fs::read(reference_dir.path().join(format!("f{i:03}.jpg"))).unwrap())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut ffmpeg = ffmpeg_testsrc(&["-f", "mjpeg", "-"], true)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    let ffmpeg_out = ffmpeg.stdout.take().unwrap();
    let _ffmpeg = Running {
        child: ffmpeg,
        name: "ffmpeg".into(),
    };
    let child = Command::new(bin())
        .args(["--camera", "piped", "--source", "stdin", "--ring-dir"])
        .arg(dir.path())
        .stdin(Stdio::from(ffmpeg_out))
        .spawn()
        .unwrap();
    let mut capture = Running {
        child,
        name: "ringcast-capture".into(),
    };

    let mut reader = open_ring(dir.path(), "piped");
    let mut seen = 0;
    while let Some((meta, jpeg)) = frame_within(&mut reader, Duration::from_secs(5)) {
        let index = meta.frame_no.0 as usize - 1;
        assert_eq!(
            without_timing(&jpeg),
            reference[index],
            "frame {} differs from what ffmpeg sent",
            meta.frame_no
        );
        seen += 1;
        if index + 1 == FFMPEG_FRAMES {
            break;
        }
    }
    assert!(seen >= FFMPEG_FRAMES / 2, "only {seen} frames read back");
    let status = capture
        .wait_exit()
        .expect("capture exits when stdin closes");
    assert!(status.success());
    let info = reader.info();
    assert_eq!(
        info.frames_published, FFMPEG_FRAMES as u64,
        "not every frame was published"
    );
    assert_eq!(info.head.0, FFMPEG_FRAMES as u64);
}

/// A small MJPEG "IP camera": multipart/x-mixed-replace, parts alternately with and without
/// Content-Length, some garbage parts and one truncated JPEG among them.
fn mjpeg_camera(port: u16, seed_base: u8, sent: Arc<Mutex<HashSet<Vec<u8>>>>) -> TcpCamera {
    TcpCamera::start(port, move |socket, stop| {
        let _ = serve_mjpeg(socket, seed_base, stop, &sent);
    })
}

fn serve_mjpeg(
    mut socket: TcpStream,
    seed_base: u8,
    stop: &AtomicBool,
    sent: &Mutex<HashSet<Vec<u8>>>,
) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    let mut request = [0u8; 2048];
    let n = socket.read(&mut request)?;
    let request = String::from_utf8_lossy(&request[..n]).into_owned();
    // `/chunked…` answers with Transfer-Encoding: chunked, as some cameras and proxies do;
    // a path with `/private` wants Basic credentials user:pw.
    let chunked = request.starts_with("GET /chunked");
    if request.contains("/private") && !request.contains("Authorization: Basic dXNlcjpwdw==") {
        return socket.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    }
    let mut out = Body { socket, chunked };
    out.socket.write_all(if chunked {
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nTransfer-Encoding: chunked\r\n\r\n"
    } else {
        b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
    })?;
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let jpeg = make_jpeg(160, 120, seed_base.wrapping_add(n as u8));
        if n % 7 == 0 {
            out.write(b"--frame\r\nContent-Type: text/plain\r\n\r\nnot a picture \xff\xd9\r\n")?;
        }
        if n % 11 == 0 {
            out.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n")?;
            out.write(&jpeg[..jpeg.len() / 2])?;
            out.write(b"\r\n")?;
        }
        sent.lock().unwrap().insert(jpeg.clone());
        if n % 2 == 0 {
            out.write(
                format!(
                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .as_bytes(),
            )?;
        } else {
            out.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n")?;
        }
        // Split the JPEG in two writes, so chunk borders fall inside it.
        out.write(&jpeg[..jpeg.len() / 3])?;
        out.write(&jpeg[jpeg.len() / 3..])?;
        out.write(b"\r\n")?;
        std::thread::sleep(Duration::from_millis(33));
    }
    Ok(())
}

/// The response body, plain or in HTTP chunks.
struct Body {
    socket: TcpStream,
    chunked: bool,
}

impl Body {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.chunked {
            write!(self.socket, "{:x}\r\n", bytes.len())?;
            self.socket.write_all(bytes)?;
            self.socket.write_all(b"\r\n")
        } else {
            self.socket.write_all(bytes)
        }
    }
}

#[test]
fn an_http_mjpeg_camera_is_passed_through_skipping_garbage_and_recovered_after_a_restart() {
    let port = free_port();
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let mut camera = mjpeg_camera(port, 0, Arc::clone(&sent));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/video.mjpg");
    let _capture = capture(&[
        "--camera",
        "ipcam",
        "--source",
        &url,
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut reader = open_ring(dir.path(), "ipcam");

    let frames = read_frames(&mut reader, 25);
    for (_, jpeg) in &frames {
        let original = without_timing(jpeg);
        assert!(
            sent.lock().unwrap().contains(&original),
            "a published frame is not one the camera sent intact"
        );
    }

    camera.kill();
    // Whatever was in flight drains; then nothing comes while the camera is down, and readers
    // are told the camera is offline although capture itself is alive.
    while frame_within(&mut reader, Duration::from_millis(500)).is_some() {}
    let limit = Duration::from_secs(3);
    wait_for("the ring to say the source is down", || {
        reader.writer_status(limit) == WriterStatus::Offline(OfflineReason::SourceDown)
    });
    let _camera = mjpeg_camera(port, 100, Arc::clone(&sent));
    let (_, jpeg) = frame_within(&mut reader, DEADLINE)
        .expect("capture did not resume after the camera came back");
    assert_eq!(reader.writer_status(limit), WriterStatus::Online);
    assert!(sent.lock().unwrap().contains(&without_timing(&jpeg)));
    assert_eq!(decode(&jpeg).width, 160);
}

fn rtmp_camera(port: u16) -> Running {
    let address = format!("rtmp://127.0.0.1:{port}/live/cam");
    let output: [&std::ffi::OsStr; 5] = [
        "-f".as_ref(),
        "flv".as_ref(),
        "-listen".as_ref(),
        "1".as_ref(),
        address.as_ref(),
    ];
    ffmpeg_h264_camera("ffmpeg rtmp camera", 15, &output)
}

#[test]
fn an_rtmp_camera_is_read_through_ffmpeg_and_recovered_after_it_restarts() {
    let port = free_port();
    let mut camera = rtmp_camera(port);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rtmp://127.0.0.1:{port}/live/cam");
    let mut capture = capture(&[
        "--camera",
        "rtmpcam",
        "--source",
        &url,
        "--size",
        "256x144",
        "--fps",
        "10",
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut reader = open_ring(dir.path(), "rtmpcam");
    let frames = read_frames(&mut reader, 5);
    let image = decode(&frames[4].1);
    assert_eq!((image.width, image.height), (256, 144));
    let ffmpeg_children: Vec<i32> = children_of(capture.pid());
    assert!(!ffmpeg_children.is_empty(), "no ffmpeg child found");

    let _ = camera.child.kill();
    let _ = camera.child.wait();
    while frame_within(&mut reader, Duration::from_millis(500)).is_some() {}
    camera = rtmp_camera(port);
    frame_within(&mut reader, DEADLINE).expect("capture did not recover when the camera came back");

    let children = children_of(capture.pid());
    assert!(capture.terminate().success());
    for pid in children {
        wait_for("ffmpeg child to end with capture", || !alive(pid));
    }
    drop(camera);
}

#[test]
fn a_hung_source_does_not_keep_capture_from_stopping_on_sigterm() {
    // A "camera" that accepts the connection and then never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let mut capture = capture(&[
        "--camera",
        "hung",
        "--source",
        &url,
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let (_socket, _) = listener.accept().unwrap();
    let reader = open_ring(dir.path(), "hung");
    let asked = std::time::Instant::now();
    assert!(capture.terminate().success());
    eprintln!("stopped {} ms after SIGTERM", asked.elapsed().as_millis());
    assert!(matches!(
        reader.writer_status(Duration::from_secs(5)),
        ringbuf::WriterStatus::Offline(_)
    ));
}

#[test]
fn a_chunked_mjpeg_stream_behind_basic_auth_is_read() {
    let port = free_port();
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let _camera = mjpeg_camera(port, 50, Arc::clone(&sent));
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    let url = format!("http://user:pw@127.0.0.1:{port}/chunked/private");
    let _capture = capture(&[
        "--camera",
        "chunked",
        "--source",
        &url,
        "--ring-dir",
        ring_dir,
    ]);
    let mut reader = open_ring(dir.path(), "chunked");
    for (_, jpeg) in read_frames(&mut reader, 10) {
        assert!(sent.lock().unwrap().contains(&without_timing(&jpeg)));
    }
}

/// A "camera" that answers like an MJPEG camera and then sends bytes that never make a frame
/// (a frame start followed by endless entropy data, as a hostile or confused camera might).
fn endless_non_jpeg_camera(
    port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
) -> TcpCamera {
    TcpCamera::start(port, move |mut socket, stop| {
        connections.fetch_add(1, Ordering::SeqCst);
        let _ = socket.set_nonblocking(false);
        let mut request = [0u8; 2048];
        let _ = socket.read(&mut request);
        let head =
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
        let mut sent = socket
            .write_all(head)
            .and_then(|()| socket.write_all(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]));
        let run = vec![0x5Au8; 16 << 10];
        while sent.is_ok() && !stop.load(Ordering::Relaxed) {
            sent = socket.write_all(&run);
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[test]
fn a_camera_sending_bytes_that_never_make_a_frame_is_reconnected_and_capture_still_stops() {
    let port = free_port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _camera = endless_non_jpeg_camera(port, Arc::clone(&connections));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let mut capture = capture(&[
        "--camera",
        "noise",
        "--source",
        &url,
        "--ring-dir",
        dir.path().to_str().unwrap(),
        "--max-frame-bytes",
        "65536",
    ]);
    let reader = open_ring(dir.path(), "noise");
    wait_for("the camera reported lost", || {
        reader.writer_status(Duration::from_secs(5))
            == WriterStatus::Offline(OfflineReason::SourceDown)
    });
    wait_for("capture reconnecting to the camera", || {
        connections.load(Ordering::SeqCst) >= 2
    });
    assert!(capture.terminate().success());
}

#[test]
fn size_and_fps_are_not_claimed_for_frames_passed_through_from_stdin() {
    let frames = [make_jpeg(96, 64, 1), make_jpeg(96, 64, 2)];
    let dir = run_on_stdin("through", &frames, &["--fps", "25", "--size", "320x240"]);
    let reader = open_ring(dir.path(), "through");
    let info = reader.info();
    assert_eq!((info.format.width, info.format.height), (96, 64));
    assert_eq!(
        info.format.fps_milli, 0,
        "--fps was advertised for a pass-through source"
    );
}

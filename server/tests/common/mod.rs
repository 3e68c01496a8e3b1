//! Helpers of the server's tests: a real server process on a free port, rings fed from the test
//! (with JPEGs made by ffmpeg), and plain HTTP and WebSocket clients.

#![allow(dead_code)]

pub mod browser;
pub mod h264;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringbuf::frame::{insert_timing, read_timing, FrameTiming};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock, VideoFormat};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` until it gives a value or the deadline passes, then fails saying `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `ringcast-server`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(ring_dir: &Path, workers: u32, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ringcast-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--workers", &workers.to_string()])
            .arg("--ring-dir")
            .arg(ring_dir)
            .args(extra)
            .env("RINGCAST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start ringcast-server");
        let server = Server { child, port };
        wait_for("the server to answer /healthz", || {
            http_get(port, "/healthz").ok().filter(|r| r.status == 200)
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Response {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn cameras(&self) -> serde_json::Value {
        let response = self.get("/api/cameras");
        assert_eq!(response.status, 200);
        serde_json::from_slice(&response.body).expect("/api/cameras is JSON")
    }

    pub fn camera_field(&self, cam: &str, field: &str) -> Option<serde_json::Value> {
        self.cameras()
            .as_array()?
            .iter()
            .find(|c| c["id"] == cam)
            .map(|c| c[field].clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// One request over a fresh connection; the server closes it after the response.
pub fn http_get(port: u16, path: &str) -> std::io::Result<Response> {
    raw_request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

pub fn raw_request(port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        raw.extend_from_slice(&chunk[..n]);
        // A 101 answer goes on as a WebSocket: its head is all there is to read.
        let upgraded = raw.starts_with(b"HTTP/1.1 101") && raw.windows(4).any(|w| w == b"\r\n\r\n");
        if n == 0 || upgraded {
            break;
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {raw:?}")))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {head:?}")))?;
    Ok(Response {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

/// A small real JPEG (640x360 test pattern), made once per test binary by ffmpeg.
pub fn base_jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
    JPEG.get_or_init(|| {
        let output = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=1",
            ])
            .args([
                "-frames:v",
                "1",
                "-q:v",
                "5",
                "-f",
                "image2pipe",
                "-c:v",
                "mjpeg",
                "-",
            ])
            .output()
            .expect("run ffmpeg to make a test JPEG");
        assert!(output.status.success(), "ffmpeg failed: {output:?}");
        output.stdout
    })
}

/// The frame number and the JPEG without its timing segment.
pub fn strip_timing(jpeg: &[u8]) -> (u64, Vec<u8>) {
    let timing = read_timing(jpeg).expect("frame carries ringcast timing");
    let seg_len = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    let mut rest = jpeg[..2].to_vec();
    rest.extend_from_slice(&jpeg[4 + seg_len..]);
    (timing.frame_no.0, rest)
}

pub fn frame_no(jpeg: &[u8]) -> u64 {
    read_timing(jpeg)
        .expect("frame carries ringcast timing")
        .frame_no
        .0
}

/// A thread that publishes into a ring until it is stopped, at the latest when dropped.
pub struct PublishingThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl PublishingThread {
    /// Runs `publish`, which watches the flag that tells it to stop and returns how many frames
    /// it published.
    pub fn spawn(publish: impl FnOnce(&AtomicBool) -> u64 + Send + 'static) -> PublishingThread {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        PublishingThread {
            stop,
            thread: Some(std::thread::spawn(move || publish(&stopping))),
        }
    }

    /// Stops publishing (the ring goes offline) and returns how many frames were published.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for PublishingThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Publishes the test JPEG (with timing) into a ring at `fps` from a thread, like a capture.
pub struct Feeder(PublishingThread);

impl Feeder {
    pub fn start(ring_dir: &Path, cam: &str, fps: u32) -> Feeder {
        let camera = CameraId::new(cam).expect("camera name");
        let mut writer =
            RingWriter::create(ring_dir, &camera, RingGeometry::default()).expect("create ring");
        writer.set_video_format(VideoFormat {
            width: 640,
            height: 360,
            fps_milli: fps * 1000,
        });
        let interval = Duration::from_secs(1) / fps;
        Feeder(PublishingThread::spawn(move |stopping| {
            let mut out = Vec::new();
            let mut next = Instant::now();
            let mut published = 0;
            while !stopping.load(Ordering::Relaxed) {
                let capture = SystemClock.wall();
                let timing = FrameTiming {
                    frame_no: writer.next_frame_no(),
                    capture,
                };
                insert_timing(base_jpeg(), timing, &mut out).expect("timing");
                writer.publish(&out, capture).expect("publish");
                published += 1;
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            published
        }))
    }

    /// Stops publishing (the ring goes offline) and returns how many frames were published.
    pub fn stop(self) -> u64 {
        self.0.stop()
    }
}

pub type Ws = tungstenite::WebSocket<TcpStream>;

pub fn ws_connect(port: u16, path: &str) -> Ws {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake for {path}: {e}"));
    ws
}

/// The next binary message (skipping pings, which tungstenite answers).
pub fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read a WebSocket message") {
            tungstenite::Message::Binary(bytes) => return bytes.to_vec(),
            tungstenite::Message::Close(close) => panic!("server closed: {close:?}"),
            _ => {}
        }
    }
}

pub fn temp_ring_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringcast-server-test")
        .tempdir()
        .expect("temp dir")
}

pub fn wait_camera_listed(server: &Server, cam: &str) {
    wait_for(&format!("camera {cam} in /api/cameras"), || {
        server.camera_field(cam, "id")
    });
}

pub fn ring_path(dir: &Path, cam: &str) -> PathBuf {
    ringbuf::ring_path(dir, &CameraId::new(cam).expect("camera name"))
}

pub fn frame_numbers_consecutive(numbers: &[u64]) -> bool {
    numbers.windows(2).all(|w| w[1] == w[0] + 1)
}

/// The capture binary built beside this server (`cargo build -p ringcast-capture`).
pub fn capture_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_ringcast-server")).with_file_name("ringcast-capture");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p ringcast-capture` (the workspace test does)",
        path.display()
    );
    path
}

/// Starts `ringcast-capture` with its test source.
pub fn start_capture(ring_dir: &Path, cam: &str, fps: u32, extra: &[&str]) -> ChildGuard {
    let child = Command::new(capture_binary())
        .args(["--camera", cam, "--source", "test", "--size", "640x360"])
        .args(["--fps", &fps.to_string()])
        .arg("--ring-dir")
        .arg(ring_dir)
        .args(extra)
        .env("RINGCAST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start ringcast-capture");
    ChildGuard(child)
}

/// A WebSocket client whose socket has a small receive buffer, so that not reading shows at
/// once (on loopback the kernel would otherwise autotune it to megabytes).
pub fn ws_connect_small_rcvbuf(port: u16, path: &str, rcvbuf: usize) -> Ws {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake for {path}: {e}"));
    ws
}

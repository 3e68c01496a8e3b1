//! `--push ws://server:7474/ingest/NAME`: frames go to a ringcast server's ingest route as one
//! binary WebSocket message each, instead of into a local ring (a camera on a remote node).
//!
//! Pushing never queues: the pipeline leaves each frame in a one-frame slot and a sender thread
//! takes the newest; a frame replaced before it was sent is counted as dropped. The server
//! answers with `1`/`0` (somebody watches / nobody does), which `--on-demand` follows. A lost
//! connection is retried with the same backoff as a failed source.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ringbuf::{FrameKind, FrameNo, VideoFormat, WallNanos, WriterState};
use tracing::{info, warn};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::backoff::Backoff;
use crate::demand::RemoteDemand;
use crate::sink::Sink;
use crate::stats::Stats;
use crate::CaptureError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that cannot make progress for this long means the link is dead: reconnect.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(10);
/// How long a read for the server's `1`/`0` may block between frames.
const READ_POLL: Duration = Duration::from_millis(1);
/// The push socket's send buffer. Kept to a few frames so that on a slow link frames wait in
/// our one-frame slot, where a newer one replaces them, not in a kernel queue that grows
/// latency (loopback and LAN would otherwise autotune it to megabytes).
const SEND_BUFFER: usize = 256 << 10;
/// How long the sender waits for a frame before looking at the socket again.
const FRAME_WAIT: Duration = Duration::from_millis(50);

/// A checked `--push` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    url: String,
    host: String,
    port: u16,
    camera: ringbuf::CameraId,
}

impl PushUrl {
    pub fn parse(url: &str) -> Result<PushUrl, CaptureError> {
        let bad = || CaptureError::BadPushUrl(url.to_owned());
        let rest = url.strip_prefix("ws://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
        let camera = path
            .strip_prefix("ingest/")
            .or_else(|| path.strip_prefix("video_remote_source/"))
            .ok_or_else(bad)?;
        let camera = camera.split('?').next().unwrap_or("");
        let camera = ringbuf::CameraId::new(camera).map_err(|_| bad())?;
        let (host, port) = crate::source::http::split_host_port(authority).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(PushUrl {
            url: url.to_owned(),
            host,
            port,
            camera,
        })
    }

    /// The camera the URL pushes to; it must be the one capture runs for.
    pub fn camera(&self) -> &ringbuf::CameraId {
        &self.camera
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// The newest frame not yet sent.
#[derive(Default)]
struct Slot {
    frame: Mutex<Option<Vec<u8>>>,
    filled: Condvar,
    stop: AtomicBool,
    /// Frames are only kept while a connection is up: after a reconnect the first frame sent
    /// is a fresh one, not whatever was left over from before the outage.
    connected: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Vec<u8>>> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `wait` for a frame and takes it.
    fn take(&self, wait: Duration) -> Option<Vec<u8>> {
        let guard = self.lock();
        let (mut guard, _) = self
            .filled
            .wait_timeout_while(guard, wait, |f| f.is_none() && !self.stop.load(Relaxed))
            .unwrap_or_else(|e| e.into_inner());
        guard.take()
    }
}

/// Sends frames to a remote ringcast server.
pub struct PushSink {
    slot: Arc<Slot>,
    next: FrameNo,
    stats: Arc<Stats>,
    sender: Option<JoinHandle<()>>,
}

impl PushSink {
    pub fn start(
        url: PushUrl,
        token: Option<String>,
        stats: Arc<Stats>,
        demand: Arc<RemoteDemand>,
    ) -> Result<PushSink, CaptureError> {
        let slot = Arc::new(Slot::default());
        let sender = Sender {
            url,
            token,
            slot: Arc::clone(&slot),
            stats: Arc::clone(&stats),
            demand,
        };
        let handle = std::thread::Builder::new()
            .name("push".into())
            .spawn(move || sender.run())
            .map_err(|source| CaptureError::Thread {
                what: "push",
                source,
            })?;
        Ok(PushSink {
            slot,
            next: FrameNo(1),
            stats,
            sender: Some(handle),
        })
    }
}

impl Sink for PushSink {
    fn next_frame_no(&self) -> FrameNo {
        self.next
    }

    // Every pushed frame is a JPEG, so a keyframe (`--codec h264` refuses `--push`).
    fn publish(&mut self, jpeg: &[u8], _capture: WallNanos, _kind: FrameKind) -> bool {
        self.next = self.next.next();
        if !self.slot.connected.load(Relaxed) {
            return false;
        }
        let mut slot = self.slot.lock();
        if slot.replace(jpeg.to_vec()).is_some() {
            self.stats.push_dropped.fetch_add(1, Relaxed);
        }
        drop(slot);
        self.slot.filled.notify_one();
        true
    }

    // The server that receives the frames keeps the ring and its heartbeat; an idle pusher
    // simply sends nothing.
    fn heartbeat(&mut self) {}

    fn set_state(&mut self, _state: WriterState) {}

    fn set_video_format(&mut self, _format: VideoFormat) {}

    // A server refusing or dropping the connection is retried, never final.
    fn lost(&self) -> Option<&str> {
        None
    }
}

impl Drop for PushSink {
    fn drop(&mut self) {
        self.slot.stop.store(true, Relaxed);
        self.slot.filled.notify_all();
        if let Some(handle) = self.sender.take() {
            // The sender notices `stop` within one FRAME_WAIT unless stuck in a write, which
            // is bounded by WRITE_STALL_LIMIT; do not wait for that on the way out.
            for _ in 0..20 {
                if handle.is_finished() {
                    let _ = handle.join();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

struct Sender {
    url: PushUrl,
    token: Option<String>,
    slot: Arc<Slot>,
    stats: Arc<Stats>,
    demand: Arc<RemoteDemand>,
}

/// Why a connection ended.
enum LinkEnd {
    Stopped,
    Lost(String),
}

impl Sender {
    fn run(self) {
        let mut backoff = Backoff::default();
        let target = self.url.as_str().to_owned();
        while !self.stopped() {
            let end = match self.connect() {
                Ok(socket) => {
                    info!("pushing to {target}");
                    // A new connection starts watched; the server says `0` if nobody is.
                    self.demand.set(true);
                    self.slot.connected.store(true, Relaxed);
                    let end = self.pump(socket, &mut backoff);
                    self.slot.connected.store(false, Relaxed);
                    self.slot.lock().take();
                    end
                }
                Err(reason) => LinkEnd::Lost(reason),
            };
            match end {
                LinkEnd::Stopped => return,
                LinkEnd::Lost(reason) => {
                    let delay = backoff.next_delay();
                    warn!(
                        "push to {target}: {reason}; retrying in {} s",
                        delay.as_secs()
                    );
                    self.sleep(delay);
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.slot.stop.load(Relaxed)
    }

    fn sleep(&self, delay: Duration) {
        let guard = self.slot.lock();
        let _ = self
            .slot
            .filled
            .wait_timeout_while(guard, delay, |_| !self.stopped());
    }

    fn connect(&self) -> Result<WebSocket<TcpStream>, String> {
        let addrs = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.url.host))?;
        let mut last = String::from("no address");
        let mut socket = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let socket = socket.ok_or(last)?;
        let setup = |e: std::io::Error| format!("socket setup: {e}");
        socket.set_nodelay(true).map_err(setup)?;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER)
            .map_err(|e| setup(e.into()))?;
        socket
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(setup)?;
        socket
            .set_write_timeout(Some(WRITE_STALL_LIMIT))
            .map_err(setup)?;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("bad URL: {e}"))?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                "the push token contains characters a header cannot carry".to_owned()
            })?;
            request.headers_mut().insert("Authorization", value);
        }
        let (ws, _response) = tungstenite::client(request, socket).map_err(|e| match e {
            HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                format!("the server refused the ingest connection: HTTP {status} {body}")
            }
            HandshakeError::Failure(e) => format!("WebSocket handshake failed: {e}"),
            HandshakeError::Interrupted(_) => "no handshake answer in time".to_owned(),
        })?;
        ws.get_ref()
            .set_read_timeout(Some(READ_POLL))
            .map_err(setup)?;
        Ok(ws)
    }

    fn pump(&self, mut ws: WebSocket<TcpStream>, backoff: &mut Backoff) -> LinkEnd {
        loop {
            if self.stopped() {
                let _ = ws.close(None);
                let _ = ws.flush();
                return LinkEnd::Stopped;
            }
            if let Some(frame) = self.slot.take(FRAME_WAIT) {
                let len = frame.len() as u64;
                if let Err(e) = ws.send(Message::binary(frame)) {
                    return LinkEnd::Lost(format!("sending failed: {}", describe(&e)));
                }
                backoff.reset();
                self.stats.published.fetch_add(1, Relaxed);
                self.stats.bytes.fetch_add(len, Relaxed);
            }
            if let Err(reason) = self.read_messages(&mut ws) {
                return LinkEnd::Lost(reason);
            }
        }
    }

    /// Takes whatever the server has sent (demand, pings, close) without waiting for more.
    fn read_messages(&self, ws: &mut WebSocket<TcpStream>) -> Result<(), String> {
        loop {
            match ws.read() {
                Ok(Message::Binary(payload)) => self.on_demand_message(&payload),
                Ok(Message::Text(text)) => self.on_demand_message(text.as_bytes()),
                Ok(Message::Close(frame)) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    return Err(format!("the server closed the connection {why}"));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    // Nothing more for now; a pong queued by a ping goes out with this flush.
                    return match ws.flush() {
                        Ok(()) => Ok(()),
                        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                            Ok(())
                        }
                        Err(e) => Err(describe(&e)),
                    };
                }
                Err(e) => return Err(describe(&e)),
            }
        }
    }

    fn on_demand_message(&self, payload: &[u8]) {
        match payload.trim_ascii() {
            b"1" | [1] => self.demand.set(true),
            b"0" | [0] => self.demand.set(false),
            _ => {}
        }
    }
}

fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "the connection closed".into()
        }
        tungstenite::Error::Io(io) if io.kind() == ErrorKind::WouldBlock => format!(
            "the server took nothing for {} s",
            WRITE_STALL_LIMIT.as_secs()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls_must_name_an_ingest_route_and_a_valid_camera() {
        let url = PushUrl::parse("ws://10.0.0.1:7474/ingest/cam1").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("10.0.0.1", 7474));
        assert!(PushUrl::parse("ws://server/video_remote_source/cam2").is_ok());
        let v6 = PushUrl::parse("ws://[::1]:7474/ingest/x").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.camera().as_str()),
            ("::1", 7474, "x")
        );
        let v6 = PushUrl::parse("ws://[fe80::1]/ingest/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fe80::1", 80));
        for bad in [
            "http://server/ingest/cam1",
            "ws://server/ws/cam1",
            "ws://server/ingest/Cam 1",
            "ws://server:x/ingest/cam1",
            "ws:///ingest/cam1",
            "ws://::1:7474/ingest/cam1",
            "ws://[::1/ingest/cam1",
        ] {
            assert!(PushUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_newest_frame_wins_and_replaced_frames_are_counted() {
        let stats = Arc::new(Stats::default());
        let slot = Arc::new(Slot::default());
        slot.connected.store(true, Relaxed);
        let mut sink = PushSink {
            slot: Arc::clone(&slot),
            next: FrameNo(1),
            stats: Arc::clone(&stats),
            sender: None,
        };
        for frame in [b"a", b"b", b"c"] {
            assert!(sink.publish(frame, WallNanos(0), FrameKind::Key));
        }
        assert_eq!(slot.take(Duration::ZERO), Some(b"c".to_vec()));
        assert_eq!(stats.push_dropped.load(Relaxed), 2);
        assert_eq!(sink.next_frame_no(), FrameNo(4));

        // While disconnected nothing is kept, so nothing stale is sent after a reconnect.
        slot.connected.store(false, Relaxed);
        assert!(!sink.publish(b"d", WallNanos(0), FrameKind::Key));
        assert_eq!(slot.take(Duration::ZERO), None);
    }
}

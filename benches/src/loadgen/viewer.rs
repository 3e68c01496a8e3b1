//! One simulated viewer: connect, handshake, then receive frames and account for each.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use ringbuf::{Clock, SystemClock};
use socket2::{Domain, Protocol, Socket, Type};

use super::engine::Shared;
use super::{Mode, Plan, Target};
use crate::wire::{close_frame, pong_frame, Event, MjpegParser, Parser, WsParser};

/// Bytes read (copied) at a frame's start when payloads are dropped in the kernel: enough for a
/// WebSocket header or multipart part header plus the JPEG prefix the parser keeps, so that the
/// rest of the frame can be skipped with MSG_TRUNC instead of being copied by a larger read.
const HEAD_READ: usize = crate::wire::PREFIX_LEN + 256;

/// Response headers longer than this are refused.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a viewer stopped early. [`kind`](Self::kind) is the key it is counted under.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ViewerError {
    #[error("cannot create a socket: {0}")]
    Socket(io::Error),
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("no connection and handshake within the connect timeout")]
    Timeout,
    #[error("server answered HTTP {0}")]
    Status(u16),
    #[error("bad handshake response: {0}")]
    Handshake(String),
    #[error("{0}")]
    Protocol(#[from] crate::wire::WireError),
    #[error("connection reset")]
    Reset,
    #[error("the server closed the connection without a close frame")]
    Eof,
    #[error("socket error: {0}")]
    Io(io::Error),
}

impl ViewerError {
    pub(crate) fn kind(&self) -> String {
        match self {
            ViewerError::Socket(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                "too_many_open_files".into()
            }
            ViewerError::Socket(_) => "socket".into(),
            ViewerError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                "connect_refused".into()
            }
            ViewerError::Connect(_) => "connect".into(),
            ViewerError::Timeout => "connect_timeout".into(),
            ViewerError::Status(code) => format!("http_{code}"),
            ViewerError::Handshake(_) => "handshake".into(),
            ViewerError::Protocol(_) => "protocol".into(),
            ViewerError::Reset => "reset".into(),
            ViewerError::Eof => "eof".into(),
            ViewerError::Io(_) => "io".into(),
        }
    }
}

/// What one viewer saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct ViewerStats {
    pub connected: bool,
    pub frames_total: u64,
    pub frames_window: u64,
    pub skipped_total: u64,
    pub skipped_window: u64,
    pub out_of_order: u64,
    pub without_timing: u64,
    pub first_frame: Option<u64>,
    pub last_frame: Option<u64>,
    pub bytes: u64,
    pub close_code: Option<u16>,
    /// Closed by the server (close frame or final boundary) before the end.
    pub closed: bool,
    pub error: Option<String>,
    pub error_detail: Option<String>,
    /// End-to-end latencies, µs, of frames completed in the measurement window.
    pub latencies_us: Vec<i64>,
}

enum State {
    Pending,
    Connecting { since: Instant },
    Handshake { since: Instant, key: String },
    Streaming(Parser),
    Done,
}

/// Reading budget of a slow viewer.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Burst allowed after an idle spell: a tenth of a second of reading.
    const BURST_SECS: f64 = 0.1;

    fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: 0.0,
            last: now,
        }
    }

    fn available(&mut self, now: Instant) -> usize {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate * Self::BURST_SECS + 1.0);
        self.tokens as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// Scratch space a viewer thread lends to each viewer it services.
pub(crate) struct Scratch {
    pub buf: Vec<u8>,
    pub events: Vec<Event>,
}

pub(crate) struct Viewer {
    pub id: usize,
    pub slow: bool,
    pub connect_at: Instant,
    state: State,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    out_sent: usize,
    bucket: Option<Bucket>,
    /// A slow viewer that stopped reading with bytes waiting: the edge-triggered poll will not
    /// report them again, so the thread revisits it on its tick.
    pub throttled: bool,
    response: Vec<u8>,
    pub stats: ViewerStats,
}

impl Viewer {
    pub(crate) fn new(id: usize, slow: bool, connect_at: Instant) -> Viewer {
        Viewer {
            id,
            slow,
            connect_at,
            state: State::Pending,
            stream: None,
            out: Vec::new(),
            out_sent: 0,
            bucket: None,
            throttled: false,
            response: Vec::new(),
            stats: ViewerStats::default(),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming(_))
    }

    /// Starts connecting; failures are recorded on the viewer.
    pub(crate) fn start(
        &mut self,
        registry: &Registry,
        token: Token,
        plan: &Plan,
        shared: &Shared,
    ) {
        let rcvbuf = if self.slow {
            Some(plan.slow_rcvbuf)
        } else {
            plan.rcvbuf
        };
        let now = Instant::now();
        if self.slow {
            self.bucket = Some(Bucket::new(plan.slow_rate, now));
        }
        let result = open_socket(plan.target.addr, rcvbuf).and_then(|mut stream| {
            registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .map_err(ViewerError::Socket)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.stream = Some(stream);
                self.state = State::Connecting { since: now };
            }
            Err(e) => self.fail(e, shared),
        }
    }

    /// Gives up on a viewer still connecting or handshaking after the connect timeout.
    pub(crate) fn check_timeout(&mut self, now: Instant, plan: &Plan, shared: &Shared) {
        let since = match self.state {
            State::Connecting { since } | State::Handshake { since, .. } => since,
            _ => return,
        };
        if now.saturating_duration_since(since) > plan.connect_timeout {
            self.fail(ViewerError::Timeout, shared);
        }
    }

    /// Handles readiness reported by the poll (or a tick, for throttled slow viewers).
    pub(crate) fn on_ready(&mut self, plan: &Plan, shared: &Shared, scratch: &mut Scratch) {
        if let Err(e) = self.advance(plan, shared, scratch) {
            self.fail(e, shared);
        }
    }

    fn advance(
        &mut self,
        plan: &Plan,
        shared: &Shared,
        scratch: &mut Scratch,
    ) -> Result<(), ViewerError> {
        if let State::Connecting { since } = self.state {
            if !self.connection_ready()? {
                return Ok(());
            }
            let key = tungstenite::handshake::client::generate_key();
            self.out = request(&plan.target, &key);
            self.out_sent = 0;
            self.state = State::Handshake { since, key };
        }
        self.flush()?;
        if let State::Handshake { .. } = self.state {
            self.read_response(plan, shared, scratch)?;
        }
        if let State::Streaming(_) = self.state {
            self.pump(plan.copy_payload, shared, scratch)?;
        }
        Ok(())
    }

    /// Whether a non-blocking connect has completed (mio: check the error, then the peer).
    fn connection_ready(&mut self) -> Result<bool, ViewerError> {
        let Some(stream) = &self.stream else {
            return Ok(false);
        };
        if let Some(e) = stream.take_error().map_err(ViewerError::Connect)? {
            return Err(ViewerError::Connect(e));
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(ViewerError::Connect(e)),
        }
    }

    /// Writes what is queued (request, pongs, close) until done or the socket is full.
    fn flush(&mut self) -> Result<(), ViewerError> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        while self.out_sent < self.out.len() {
            match stream.write(&self.out[self.out_sent..]) {
                Ok(0) => return Err(ViewerError::Eof),
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        Ok(())
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), ViewerError> {
        self.out.extend_from_slice(bytes);
        self.flush()
    }

    fn read_response(
        &mut self,
        plan: &Plan,
        shared: &Shared,
        scratch: &mut Scratch,
    ) -> Result<(), ViewerError> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        let State::Handshake { key, .. } = &self.state else {
            return Ok(());
        };
        loop {
            let n = match stream.read(&mut scratch.buf[..4096]) {
                Ok(0) => return Err(ViewerError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            self.response.extend_from_slice(&scratch.buf[..n]);
            if let Some((parser, head_len)) = check_response(plan.target.mode, key, &self.response)?
            {
                let rest = std::mem::take(&mut self.response);
                self.state = State::Streaming(parser);
                self.stats.connected = true;
                shared.progress.connected_one();
                self.handle_bytes(&rest[head_len..], shared, scratch)?;
                return Ok(());
            }
        }
    }

    /// Reads (or, past each JPEG's prefix, discards unread) until the socket is empty or a slow
    /// viewer's budget is spent.
    fn pump(
        &mut self,
        copy_payload: bool,
        shared: &Shared,
        scratch: &mut Scratch,
    ) -> Result<(), ViewerError> {
        loop {
            if !self.is_streaming() {
                return Ok(());
            }
            let mut limit = scratch.buf.len();
            if let Some(bucket) = &mut self.bucket {
                limit = limit.min(bucket.available(Instant::now()));
                if limit == 0 {
                    self.throttled = true;
                    return Ok(());
                }
            }
            let skippable = match &self.state {
                State::Streaming(parser) if !copy_payload => parser.skippable(),
                _ => 0,
            };
            let Some(stream) = &mut self.stream else {
                return Ok(());
            };
            let result = if skippable > 0 {
                let n = limit.min(usize::try_from(skippable).unwrap_or(usize::MAX));
                discard(stream, &mut scratch.buf[..n])
            } else if copy_payload {
                stream.read(&mut scratch.buf[..limit])
            } else {
                stream.read(&mut scratch.buf[..limit.min(HEAD_READ)])
            };
            let n = match result {
                Ok(0) => return Err(ViewerError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.throttled = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            if let Some(bucket) = &mut self.bucket {
                bucket.take(n);
            }
            self.stats.bytes += n as u64;
            if skippable > 0 {
                if let State::Streaming(parser) = &mut self.state {
                    parser.skip(n as u64, &mut scratch.events);
                }
                self.handle_events(shared, scratch)?;
            } else {
                let data = std::mem::take(&mut scratch.buf);
                let handled = self.handle_bytes(&data[..n], shared, scratch);
                scratch.buf = data;
                handled?;
            }
        }
    }

    fn handle_bytes(
        &mut self,
        data: &[u8],
        shared: &Shared,
        scratch: &mut Scratch,
    ) -> Result<(), ViewerError> {
        if let State::Streaming(parser) = &mut self.state {
            parser.feed(data, &mut scratch.events)?;
        }
        self.handle_events(shared, scratch)
    }

    fn handle_events(&mut self, shared: &Shared, scratch: &mut Scratch) -> Result<(), ViewerError> {
        let now = Instant::now();
        for event in scratch.events.drain(..) {
            match event {
                Event::Frame(received) => {
                    self.record_frame(received.timing, now, shared);
                }
                Event::Ping(data) => {
                    let pong = pong_frame(&data);
                    self.out.extend_from_slice(&pong);
                }
                Event::Close(code) => {
                    self.stats.close_code = code;
                    self.stats.closed = true;
                    shared.progress.closed_one();
                    if code.is_some() {
                        self.out.extend_from_slice(&close_frame());
                    }
                    self.state = State::Done;
                }
            }
        }
        self.flush()?;
        if self.is_done() {
            self.stream = None;
        }
        Ok(())
    }

    fn record_frame(
        &mut self,
        timing: Option<ringbuf::frame::FrameTiming>,
        now: Instant,
        shared: &Shared,
    ) {
        let s = &mut self.stats;
        let in_window = now >= shared.window_start;
        s.frames_total += 1;
        if in_window {
            s.frames_window += 1;
        }
        let mut skipped = 0;
        match timing {
            None => s.without_timing += 1,
            Some(t) => {
                let n = t.frame_no.0;
                match s.last_frame {
                    None => s.first_frame = Some(n),
                    Some(last) if n > last => skipped = n - last - 1,
                    Some(_) => s.out_of_order += 1,
                }
                if s.last_frame.is_none_or(|last| n > last) {
                    s.last_frame = Some(n);
                }
                s.skipped_total += skipped;
                if in_window {
                    s.skipped_window += skipped;
                    let wall = SystemClock.wall().0 as i64;
                    s.latencies_us.push((wall - t.capture.0 as i64) / 1000);
                }
            }
        }
        shared.progress.frame(skipped);
    }

    fn fail(&mut self, error: ViewerError, shared: &Shared) {
        if self.is_done() {
            return;
        }
        let error = match error {
            ViewerError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset => ViewerError::Reset,
            other => other,
        };
        shared.progress.error_one(self.stats.connected);
        shared.log_error(self.id, &error);
        self.stats.error = Some(error.kind());
        self.stats.error_detail = Some(error.to_string());
        self.state = State::Done;
        self.stream = None;
    }

    /// At the end of the run: a WebSocket viewer says goodbye (best effort), then the socket
    /// closes.
    pub(crate) fn finish(&mut self, mode: Mode, shared: &Shared) {
        if self.is_streaming() && mode == Mode::Ws {
            // The run is over: a full socket just means the close frame is not sent.
            let _ = self.queue(&close_frame());
        }
        if self.is_streaming() {
            shared.progress.disconnected_one();
        }
        self.state = State::Done;
        self.stream = None;
    }
}

fn io_error(e: io::Error) -> ViewerError {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ViewerError::Reset,
        _ => ViewerError::Io(e),
    }
}

/// A non-blocking TCP socket with its receive buffer set before connecting (so the window
/// scale matches it), with the connect under way.
fn open_socket(addr: SocketAddr, rcvbuf: Option<usize>) -> Result<TcpStream, ViewerError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ViewerError::Socket)?;
    socket.set_nonblocking(true).map_err(ViewerError::Socket)?;
    if let Some(size) = rcvbuf {
        socket
            .set_recv_buffer_size(size)
            .map_err(ViewerError::Socket)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(ViewerError::Connect(e)),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Receives up to `buf.len()` bytes and throws them away in the kernel (`MSG_TRUNC` on TCP
/// drops the data without copying it to user space), returning how many were dropped.
fn discard(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call (with MSG_TRUNC
    // the kernel does not even write to it), and the descriptor is open: `stream` owns it.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn request(target: &Target, key: &str) -> Vec<u8> {
    let (path, host) = (&target.path, &target.authority);
    match target.mode {
        Mode::Ws => format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             User-Agent: ringcast-loadgen\r\n\r\n"
        ),
        Mode::Mjpeg => format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: multipart/x-mixed-replace\r\n\
             User-Agent: ringcast-loadgen\r\n\r\n"
        ),
    }
    .into_bytes()
}

/// Checks the server's answer once its head is complete: the stream parser to use and the
/// length of the head. `Ok(None)`: the head is not complete yet.
fn check_response(
    mode: Mode,
    key: &str,
    bytes: &[u8],
) -> Result<Option<(Parser, usize)>, ViewerError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if bytes.len() > MAX_RESPONSE_HEAD => {
            return Err(ViewerError::Handshake("response head too long".into()))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ViewerError::Handshake(e.to_string())),
    };
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let parser = match mode {
        Mode::Ws => {
            if code != 101 {
                return Err(ViewerError::Status(code));
            }
            let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
            if header("sec-websocket-accept").as_deref() != Some(expected.as_str()) {
                return Err(ViewerError::Handshake("wrong Sec-WebSocket-Accept".into()));
            }
            Parser::Ws(WsParser::new())
        }
        Mode::Mjpeg => {
            if code != 200 {
                return Err(ViewerError::Status(code));
            }
            if header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
            {
                return Err(ViewerError::Handshake(
                    "chunked MJPEG is not supported".into(),
                ));
            }
            let content_type = header("content-type").unwrap_or_default();
            let boundary = boundary_of(&content_type).ok_or_else(|| {
                ViewerError::Handshake(format!("not a multipart stream: {content_type:?}"))
            })?;
            Parser::Mjpeg(MjpegParser::new(&boundary))
        }
    };
    Ok(Some((parser, head_len)))
}

/// The boundary parameter of a `multipart/x-mixed-replace` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/x-mixed-replace")
    {
        return None;
    }
    parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// How long a viewer may stay throttled before the thread looks at it again.
pub(crate) const THROTTLE_TICK: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_handshake_needs_101_and_the_right_accept_key() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x00";
        let (parser, len) = check_response(Mode::Ws, key, ok).unwrap().unwrap();
        assert!(matches!(parser, Parser::Ws(_)));
        assert_eq!(len, ok.len() - 2);
        assert!(check_response(Mode::Ws, key, &ok[..20]).unwrap().is_none());
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(
            check_response(Mode::Ws, key, wrong),
            Err(ViewerError::Handshake(_))
        ));
        let busy = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        let err = check_response(Mode::Ws, key, busy).err().unwrap();
        assert_eq!(err.kind(), "http_503");
    }

    #[test]
    fn mjpeg_needs_a_multipart_boundary() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=\"frame\"\r\n\r\n";
        assert!(matches!(
            check_response(Mode::Mjpeg, "", ok),
            Ok(Some((Parser::Mjpeg(_), _)))
        ));
        let jpeg = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n";
        assert!(matches!(
            check_response(Mode::Mjpeg, "", jpeg),
            Err(ViewerError::Handshake(_))
        ));
        assert_eq!(
            boundary_of("multipart/x-mixed-replace;boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(boundary_of("multipart/x-mixed-replace"), None);
    }
}

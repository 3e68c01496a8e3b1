//! `ringcast-fanout`: the bare fan-out that DESIGN.md's performance targets are stated against.
//! One thread follows one ring and writes each new frame, as one prebuilt WebSocket binary
//! frame, to every connected socket with non-blocking writes. A socket still busy with an older
//! frame gets the newest one when it is done (never a queue). No SO_SNDBUF cap unless asked, no
//! stall policy, no other routes: the simplest correct thing, so that ringcast-server's cost
//! can be stated as a ratio to it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use ringbuf::{ring_path, CameraId, RingReader};
use slab::Slab;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

const LISTENER: Token = Token(usize::MAX - 1);
const RING: Token = Token(usize::MAX - 2);

/// How often the ring's signal thread wakes us without a frame, to notice a stop request.
const TICK: Duration = Duration::from_millis(200);

/// Request heads longer than this are refused.
const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ringcast-fanout",
    about = "Bare WebSocket fan-out of one ring: the baseline ringcast-server is measured against"
)]
pub struct FanoutArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:7575", env = "RINGCAST_LISTEN")]
    pub listen: SocketAddr,
    /// The camera whose ring is served at /ws/CAMERA.
    #[arg(long, env = "RINGCAST_CAMERA")]
    pub camera: CameraId,
    #[arg(long, default_value = ringbuf::DEFAULT_RING_DIR, env = "RINGCAST_RING_DIR")]
    pub ring_dir: PathBuf,
    /// SO_SNDBUF for each viewer (default: the kernel's autotuning).
    #[arg(long, env = "RINGCAST_SNDBUF")]
    pub sndbuf: Option<usize>,
    /// Stop after this many seconds (default: run until SIGTERM or SIGINT).
    #[arg(long, env = "RINGCAST_DURATION")]
    pub duration: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("ring {}: {source}", path.display())]
    Ring {
        path: PathBuf,
        source: ringbuf::Error,
    },
    #[error("--duration {0}: not a number of seconds")]
    BadDuration(f64),
    #[error("event loop: {0}")]
    Poll(#[from] io::Error),
}

/// One frame as every viewer receives it: WebSocket header and JPEG, built once.
struct WireFrame {
    number: u64,
    bytes: Vec<u8>,
}

impl WireFrame {
    fn new(number: u64, jpeg: &[u8]) -> WireFrame {
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut bytes = Vec::with_capacity(header.len(jpeg.len() as u64) + jpeg.len());
        // Writing into a Vec cannot fail.
        let _ = header.format(jpeg.len() as u64, &mut bytes);
        bytes.extend_from_slice(jpeg);
        WireFrame { number, bytes }
    }
}

enum Phase {
    /// Reading the upgrade request.
    Request(Vec<u8>),
    /// Writing the handshake reply; `upgrade` false: an error reply, then close.
    Reply {
        bytes: Vec<u8>,
        sent: usize,
        upgrade: bool,
    },
    Streaming {
        sending: Option<(Rc<WireFrame>, usize)>,
        last_sent: u64,
    },
}

struct Client {
    stream: TcpStream,
    phase: Phase,
}

/// What to do with a client after servicing it.
#[derive(PartialEq, Eq)]
enum Keep {
    Yes,
    Close,
}

/// Counters logged every few seconds.
#[derive(Default)]
struct Counters {
    frames_in: u64,
    frames_out: u64,
    accepted: u64,
}

pub struct Fanout {
    poll: Poll,
    listener: TcpListener,
    clients: Slab<Client>,
    path: String,
    sndbuf: Option<usize>,
    current: Option<Rc<WireFrame>>,
    counters: Counters,
}

/// Runs the fan-out until `stop` is set (or `--duration` ends). Prints `listening on ADDR` on
/// stdout once the port is open, so scripts and tests that asked for port 0 learn the port.
pub fn run(args: &FanoutArgs, stop: Arc<AtomicBool>) -> Result<(), FanoutError> {
    let deadline = match args.duration {
        Some(secs) => Some(
            Instant::now()
                + Duration::try_from_secs_f64(secs).map_err(|_| FanoutError::BadDuration(secs))?,
        ),
        None => None,
    };
    let poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen).map_err(|source| FanoutError::Listen {
        addr: args.listen,
        source,
    })?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    // Whoever reads the port may be waiting for this line; a closed stdout is not our problem.
    let _ = io::stdout().flush();
    let ring = ring_path(&args.ring_dir, &args.camera);
    let mut reader = wait_for_ring(&ring, &stop, deadline)?;
    let Some(reader) = reader.as_mut() else {
        return Ok(());
    };
    let mut signal =
        UnixStream::from_std(reader.signal(TICK).map_err(|source| FanoutError::Ring {
            path: ring.clone(),
            source,
        })?);
    poll.registry()
        .register(&mut signal, RING, Interest::READABLE)?;
    tracing::info!(ring = %ring.display(), %local, "serving /ws/{}", args.camera);
    let mut fanout = Fanout {
        poll,
        listener,
        clients: Slab::new(),
        path: format!("/ws/{}", args.camera),
        sndbuf: args.sndbuf,
        current: None,
        counters: Counters::default(),
    };
    fanout.serve(reader, &mut signal, &stop, deadline)
}

/// Waits for the ring file to appear (a source may start after us). `None`: asked to stop first.
fn wait_for_ring(
    path: &std::path::Path,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<Option<RingReader>, FanoutError> {
    let mut said = false;
    loop {
        if stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        if path.exists() {
            return RingReader::open(path)
                .map(Some)
                .map_err(|source| FanoutError::Ring {
                    path: path.to_owned(),
                    source,
                });
        }
        if !said {
            tracing::info!(ring = %path.display(), "waiting for the ring to appear");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Fanout {
    fn serve(
        &mut self,
        reader: &mut RingReader,
        signal: &mut UnixStream,
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Result<(), FanoutError> {
        let mut events = Events::with_capacity(4096);
        let mut jpeg = Vec::new();
        let mut scratch = vec![0u8; 4096];
        let mut last_log = Instant::now();
        while !stop.load(Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all()?,
                    RING => {
                        drain(signal, &mut scratch);
                        self.take_newest(reader, &mut jpeg);
                    }
                    Token(key) => self.service(key, &mut scratch),
                }
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                tracing::info!(
                    viewers = self.clients.len(),
                    frames_in = self.counters.frames_in,
                    frames_out = self.counters.frames_out,
                    accepted = self.counters.accepted,
                    "fan-out"
                );
            }
        }
        Ok(())
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: refuse this one and
                // keep serving the others.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return Ok(());
                }
            };
            if let Some(size) = self.sndbuf {
                // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
                if let Err(e) = socket2::SockRef::from(&fd).set_send_buffer_size(size) {
                    tracing::warn!("SO_SNDBUF {size}: {e}");
                }
            }
            let entry = self.clients.vacant_entry();
            self.poll.registry().register(
                &mut stream,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            entry.insert(Client {
                stream,
                phase: Phase::Request(Vec::new()),
            });
            self.counters.accepted += 1;
        }
    }

    /// Copies the newest frame out of the ring (once) and starts it on every idle viewer.
    fn take_newest(&mut self, reader: &mut RingReader, jpeg: &mut Vec<u8>) {
        reader.skip_to_newest();
        let meta = match reader.try_next(jpeg) {
            Ok(Some(meta)) => meta,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("ring: {e}");
                return;
            }
        };
        self.counters.frames_in += 1;
        let frame = Rc::new(WireFrame::new(meta.frame_no.0, jpeg));
        self.current = Some(frame);
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Streaming { sending: None, .. }))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.write_frames(key);
        }
    }

    fn service(&mut self, key: usize, scratch: &mut [u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let keep = match client.phase {
            Phase::Request(_) => read_request(client, &self.path, scratch),
            Phase::Reply { .. } => Keep::Yes,
            Phase::Streaming { .. } => discard_input(client, scratch),
        };
        if keep == Keep::Close {
            self.close(key);
            return;
        }
        self.write_frames(key);
    }

    /// Writes what `key` has pending (handshake reply, then frames) until its socket is full.
    fn write_frames(&mut self, key: usize) {
        let current = self.current.clone();
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let keep = match write_pending(client, current.as_ref(), &mut self.counters) {
            Ok(keep) => keep,
            Err(_) => Keep::Close,
        };
        if keep == Keep::Close {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            // The socket closes when dropped just below; deregistering cannot fail in a way
            // that matters then.
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }
}

fn drain(signal: &mut UnixStream, scratch: &mut [u8]) {
    while let Ok(n) = signal.read(scratch) {
        if n == 0 {
            break;
        }
    }
}

/// Reads the upgrade request; once complete, queues the reply.
fn read_request(client: &mut Client, path: &str, scratch: &mut [u8]) -> Keep {
    let Phase::Request(buf) = &mut client.phase else {
        return Keep::Yes;
    };
    loop {
        match client.stream.read(scratch) {
            Ok(0) => return Keep::Close,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Keep::Close,
        }
    }
    let reply = match handshake_reply(buf, path) {
        Some(reply) => reply,
        None if buf.len() > MAX_REQUEST => plain_reply(431, "Request Header Fields Too Large"),
        None => return Keep::Yes,
    };
    client.phase = Phase::Reply {
        upgrade: reply.0,
        bytes: reply.1,
        sent: 0,
    };
    Keep::Yes
}

/// The reply to a complete request head: `(true, 101 ...)` for a valid upgrade to `path`,
/// `(false, error)` otherwise. `None` while the head is incomplete.
fn handshake_reply(buf: &[u8], path: &str) -> Option<(bool, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(plain_reply(400, "Bad Request")),
    }
    if request.method != Some("GET") || request.path != Some(path) {
        return Some(plain_reply(404, "Not Found"));
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let version = header("sec-websocket-version") == Some(b"13".as_slice());
    let (true, true, Some(key)) = (upgrade, version, header("sec-websocket-key")) else {
        return Some(plain_reply(400, "Bad Request"));
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    Some((
        true,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
    ))
}

fn plain_reply(code: u16, reason: &str) -> (bool, Vec<u8>) {
    (
        false,
        format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    )
}

/// Reads and drops what a viewer sends (pongs, its close frame); closes on EOF or error.
fn discard_input(client: &mut Client, scratch: &mut [u8]) -> Keep {
    loop {
        match client.stream.read(scratch) {
            Ok(0) => return Keep::Close,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Keep::Yes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Keep::Close,
        }
    }
}

/// Writes until the socket is full or nothing is pending: the handshake reply, then the frame in
/// progress, then the newest frame if it was not sent yet.
fn write_pending(
    client: &mut Client,
    current: Option<&Rc<WireFrame>>,
    counters: &mut Counters,
) -> io::Result<Keep> {
    loop {
        match &mut client.phase {
            Phase::Request(_) => return Ok(Keep::Yes),
            Phase::Reply {
                bytes,
                sent,
                upgrade,
            } => {
                if !write_some(&mut client.stream, bytes, sent)? {
                    return Ok(Keep::Yes);
                }
                if !*upgrade {
                    return Ok(Keep::Close);
                }
                client.phase = Phase::Streaming {
                    sending: None,
                    last_sent: 0,
                };
            }
            Phase::Streaming { sending, last_sent } => {
                if sending.is_none() {
                    match current {
                        Some(frame) if frame.number > *last_sent => {
                            *sending = Some((Rc::clone(frame), 0));
                        }
                        _ => return Ok(Keep::Yes),
                    }
                }
                let Some((frame, sent)) = sending else {
                    return Ok(Keep::Yes);
                };
                if !write_some(&mut client.stream, &frame.bytes, sent)? {
                    return Ok(Keep::Yes);
                }
                *last_sent = frame.number;
                *sending = None;
                counters.frames_out += 1;
            }
        }
    }
}

/// Writes `bytes[*sent..]`; true when all of it is written, false when the socket is full.
fn write_some(stream: &mut TcpStream, bytes: &[u8], sent: &mut usize) -> io::Result<bool> {
    while *sent < bytes.len() {
        match stream.write(&bytes[*sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_websocket_upgrade_to_the_camera_path_is_accepted() {
        let ok = b"GET /ws/cam HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (upgrade, reply) = handshake_reply(ok, "/ws/cam").unwrap();
        assert!(upgrade);
        assert!(String::from_utf8(reply)
            .unwrap()
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(handshake_reply(&ok[..30], "/ws/cam").is_none());
        let (upgrade, reply) = handshake_reply(ok, "/ws/other").unwrap();
        assert!(!upgrade && reply.starts_with(b"HTTP/1.1 404"));
        let plain = b"GET /ws/cam HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(handshake_reply(plain, "/ws/cam")
            .unwrap()
            .1
            .starts_with(b"HTTP/1.1 400"));
    }

    #[test]
    fn a_wire_frame_is_one_unmasked_binary_websocket_frame() {
        let frame = WireFrame::new(7, &[0xAB; 300]);
        assert_eq!(&frame.bytes[..4], &[0x82, 126, 0x01, 0x2C]);
        assert_eq!(frame.bytes.len(), 304);
    }
}

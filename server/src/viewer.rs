//! Streaming a camera to one viewer, over WebSocket or MJPEG. The sending task takes the newest
//! frame it has not sent from the camera ([`Camera::poll_frame`]) and writes the shared buffer
//! with one vectored write (prebuilt header + payload); it holds at most that one frame. A second
//! task reads what the viewer sends (pongs, pings, close) and tells the sender through
//! [`ViewerControl`].

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::buf::IoVecBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use monoio::time::Sleep;

use crate::hub::{
    bump, Camera, DecoderConfig, Follower, Frame, MJPEG_PART_END, MJPEG_PART_END_AND_HEAD,
};
use crate::websocket::{self, close, Incoming, WsReader};

/// The largest message a viewer may send (viewers only answer pings and say goodbye).
const VIEWER_MAX_MESSAGE: usize = 4096;
/// How long a closing viewer gets to take the close frame and answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a stalled viewer gets to take the rest of the frame in flight, so that the 4008
/// close can follow it on a clean stream. No new frame is sent meanwhile; a viewer that takes
/// nothing in this time is dropped without a close frame.
const FINISH_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    WebSocket,
    Mjpeg(PartHeads),
}

/// Where an MJPEG stream puts each part's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartHeads {
    /// Just before the part, with its Content-Length: what players and tools (ffmpeg, VLC,
    /// scripts) read best.
    WithLength,
    /// Right after the previous part, so without Content-Length: Chromium shows a part only
    /// once the next part's headers arrive (crbug.com/527446), so a browser's `<img>` would
    /// otherwise always show the frame before the newest, a whole second late on a 1 fps camera.
    InAdvance,
}

impl PartHeads {
    /// What a request is for: a browser asking for an image (an `<img>`: `Accept` starting with
    /// `image/`, or `Sec-Fetch-Dest: image`, which browsers send only to secure origins) gets
    /// headers in advance; anything else, Content-Length.
    pub fn for_request(request: &crate::http::Request) -> PartHeads {
        let wants_image = request.fetch_dest.as_deref() == Some("image")
            || request
                .accept
                .as_deref()
                .is_some_and(|accept| accept.trim_start().starts_with("image/"));
        if wants_image {
            PartHeads::InAdvance
        } else {
            PartHeads::WithLength
        }
    }
}

impl PartHeads {
    /// What follows the response head: the first delimiter, and the first part's headers if
    /// they go in advance.
    pub fn stream_start(self) -> &'static [u8] {
        match self {
            PartHeads::WithLength => &MJPEG_PART_END[2..],
            PartHeads::InAdvance => &MJPEG_PART_END_AND_HEAD[2..],
        }
    }
}

/// What the reading task tells the sending task.
#[derive(Default)]
pub struct ViewerControl {
    waker: RefCell<Option<Waker>>,
    pong_due: RefCell<Option<Vec<u8>>>,
    ended: RefCell<Option<ReadEnd>>,
    pong_seen: Cell<bool>,
}

/// How the viewer's side of the conversation ended.
#[derive(Clone, Debug)]
enum ReadEnd {
    /// It sent a close frame (with this code).
    Closed(Option<u16>),
    /// It broke the protocol; answer with this close.
    Refused(u16, String),
    /// The connection is gone.
    Gone,
}

impl ViewerControl {
    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn register(&self, cx: &Context<'_>) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    fn end(&self, end: ReadEnd) {
        self.ended.borrow_mut().get_or_insert(end);
        self.wake();
    }

    fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }
}

enum Event {
    Frame(Rc<Frame>),
    Pong(Vec<u8>),
    PingDue,
    Ended(ReadEnd),
}

/// Why a viewer's stream ended.
#[derive(Debug)]
enum End {
    Read(ReadEnd),
    Stalled {
        frame_finished: bool,
    },
    NoPong,
    WriteFailed,
    /// The camera's ring now carries another codec than the viewer was sent.
    CodecChanged,
}

/// Settings of a viewer's stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    pub protocol: Protocol,
    pub stall_timeout: Duration,
    pub ping_interval: Duration,
}

/// Streams `camera` to the viewer on `stream` (whose response head was already sent) until the
/// viewer leaves, stalls or breaks the protocol. `already` holds bytes the client sent after its
/// request head.
pub async fn stream_to_viewer(
    stream: TcpStream,
    already: Vec<u8>,
    camera: Rc<Camera>,
    settings: StreamSettings,
) {
    let fd = stream.as_raw_fd();
    let (read_half, mut write_half) = stream.into_split();
    let control = Rc::new(ViewerControl::default());
    match settings.protocol {
        Protocol::WebSocket => {
            monoio::spawn(read_websocket(read_half, already, Rc::clone(&control)));
        }
        Protocol::Mjpeg(_) => {
            monoio::spawn(read_until_closed(read_half, Rc::clone(&control)));
        }
    }
    let counted = camera.count_viewer();
    let end = send_frames(&mut write_half, &camera, &control, settings).await;
    drop(counted);
    tracing::debug!(camera = %camera.id, "viewer ended: {end:?}");
    finish(
        &mut write_half,
        fd,
        &control,
        settings.protocol,
        &camera,
        end,
    )
    .await;
}

async fn send_frames<W: AsyncWriteRent>(
    out: &mut W,
    camera: &Camera,
    control: &ViewerControl,
    settings: StreamSettings,
) -> End {
    let follower = Follower::default();
    let codec = camera.codec();
    let mut config_sent: Option<Rc<DecoderConfig>> = None;
    let mut iov = Some(FrameIo::new_iovecs());
    let keepalive = settings.protocol == Protocol::WebSocket;
    let mut ping = std::pin::pin!(monoio::time::sleep(settings.ping_interval));
    // One timer for every write of this viewer, reset per write rather than made anew.
    let mut stall = std::pin::pin!(monoio::time::sleep(settings.stall_timeout));
    let mut awaiting_pong = false;
    loop {
        let event =
            poll_fn(|cx| next_event(cx, camera, control, &follower, keepalive, ping.as_mut()))
                .await;
        match event {
            Event::Frame(frame) => {
                if frame.codec != codec {
                    return End::CodecChanged;
                }
                if let Some(config) = new_config(&frame, config_sent.as_ref()) {
                    let message = send_small(out, config.message.clone());
                    if let Err(end) = watched(message, &settings, stall.as_mut(), camera).await {
                        return end;
                    }
                    config_sent = Some(config);
                }
                let sent =
                    send_frame_watched(out, frame, &mut iov, settings, stall.as_mut(), camera);
                if let Err(end) = sent.await {
                    return end;
                }
            }
            Event::Pong(payload) => {
                let pong = send_small(out, websocket::pong_frame(&payload));
                if let Err(end) = watched(pong, &settings, stall.as_mut(), camera).await {
                    return end;
                }
            }
            Event::PingDue => {
                if awaiting_pong && !control.pong_seen.get() {
                    return End::NoPong;
                }
                control.pong_seen.set(false);
                awaiting_pong = true;
                ping.as_mut()
                    .reset(monoio::time::Instant::now() + settings.ping_interval);
                let ping = send_small(out, websocket::ping_frame(b"ringcast"));
                if let Err(end) = watched(ping, &settings, stall.as_mut(), camera).await {
                    return end;
                }
            }
            Event::Ended(end) => return End::Read(end),
        }
    }
}

/// The decoder configuration `frame` needs, if the viewer was not sent it yet (H.264 keyframes
/// carry theirs; the same configuration is the same `Rc`).
fn new_config(frame: &Frame, sent: Option<&Rc<DecoderConfig>>) -> Option<Rc<DecoderConfig>> {
    let config = frame.decoder_config.as_ref()?;
    let known = sent.is_some_and(|sent| Rc::ptr_eq(sent, config));
    (!known).then(|| Rc::clone(config))
}

fn next_event(
    cx: &mut Context<'_>,
    camera: &Camera,
    control: &ViewerControl,
    follower: &Follower,
    keepalive: bool,
    ping: Pin<&mut Sleep>,
) -> Poll<Event> {
    if let Some(end) = control.ended.borrow().clone() {
        return Poll::Ready(Event::Ended(end));
    }
    if let Some(payload) = control.pong_due.borrow_mut().take() {
        return Poll::Ready(Event::Pong(payload));
    }
    if let Poll::Ready(frame) = camera.poll_frame(follower, cx) {
        return Poll::Ready(Event::Frame(frame));
    }
    control.register(cx);
    if keepalive && ping.poll(cx).is_ready() {
        return Poll::Ready(Event::PingDue);
    }
    Poll::Pending
}

/// Writes one frame under the stall deadline.
async fn send_frame_watched<W: AsyncWriteRent>(
    out: &mut W,
    frame: Rc<Frame>,
    iov: &mut Option<FrameIovecs>,
    settings: StreamSettings,
    stall: Pin<&mut Sleep>,
    camera: &Camera,
) -> Result<(), End> {
    let write = write_frame(out, frame, iov, settings.protocol);
    let bytes = watched(write, &settings, stall, camera).await?;
    bump(&camera.counters.frames_sent, 1);
    bump(&camera.counters.bytes_sent, bytes as u64);
    Ok(())
}

/// Runs one write to the viewer; if the socket does not take it within the stall timeout, the
/// viewer is too slow. The write in flight then gets [`FINISH_GRACE`] to finish, so that the
/// 4008 close can follow on a clean stream.
async fn watched<T>(
    write: impl Future<Output = io::Result<T>>,
    settings: &StreamSettings,
    mut stall: Pin<&mut Sleep>,
    camera: &Camera,
) -> Result<T, End> {
    let mut write = std::pin::pin!(write);
    stall
        .as_mut()
        .reset(monoio::time::Instant::now() + settings.stall_timeout);
    let written = monoio::select! {
        result = &mut write => Some(result),
        _ = stall => None,
    };
    match written {
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) => Err(End::WriteFailed),
        None => {
            bump(&camera.counters.stalls, 1);
            let finished = matches!(monoio::time::timeout(FINISH_GRACE, write).await, Ok(Ok(_)));
            Err(End::Stalled {
                frame_finished: finished,
            })
        }
    }
}

/// The iovecs of one frame's write: header, payload, trailer.
type FrameIovecs = Box<[libc::iovec; 3]>;

/// The header, payload and trailer of a shared frame as one vectored write. The iovecs live in a
/// box that the viewer reuses for every frame, so a write allocates nothing.
struct FrameIo {
    _frame: Rc<Frame>,
    iov: FrameIovecs,
    first: usize,
}

impl FrameIo {
    fn new_iovecs() -> FrameIovecs {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Box::new([empty; 3])
    }

    fn new(frame: Rc<Frame>, mut iov: FrameIovecs, protocol: Protocol) -> FrameIo {
        let (header, trailer): (&[u8], &'static [u8]) = match protocol {
            Protocol::WebSocket => (&frame.ws_head, b""),
            Protocol::Mjpeg(PartHeads::WithLength) => (&frame.part_header, MJPEG_PART_END),
            Protocol::Mjpeg(PartHeads::InAdvance) => (b"", MJPEG_PART_END_AND_HEAD),
        };
        for (slot, bytes) in iov.iter_mut().zip([header, &frame.payload, trailer]) {
            *slot = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
        }
        FrameIo {
            _frame: frame,
            iov,
            first: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.iov[self.first..].iter().map(|v| v.iov_len).sum()
    }

    /// Moves past `n` bytes the socket took.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.first < self.iov.len() {
            let entry = &mut self.iov[self.first];
            let step = n.min(entry.iov_len);
            // SAFETY: `step` is at most the entry's length, so the new base stays inside (or one
            // past the end of) the buffer the entry points into.
            entry.iov_base = unsafe { entry.iov_base.cast::<u8>().add(step) }.cast();
            entry.iov_len -= step;
            n -= step;
            if entry.iov_len == 0 {
                self.first += 1;
            }
        }
    }
}

// SAFETY: the iovecs point into `_frame`'s header and payload, which the Rc keeps alive and never
// mutates while it is shared, and into a static trailer; the iovec array is boxed, so the pointer returned stays the same
// when the FrameIo moves into and out of the runtime, and `first` only changes between writes.
unsafe impl IoVecBuf for FrameIo {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.first..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len() - self.first
    }
}

async fn write_frame<W: AsyncWriteRent>(
    out: &mut W,
    frame: Rc<Frame>,
    iov: &mut Option<FrameIovecs>,
    protocol: Protocol,
) -> io::Result<usize> {
    let boxed = iov.take().unwrap_or_else(FrameIo::new_iovecs);
    let mut buf = FrameIo::new(frame, boxed, protocol);
    let total = buf.remaining();
    while buf.remaining() > 0 {
        let (result, returned) = out.writev(buf).await;
        buf = returned;
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) => return Err(e),
        }
    }
    *iov = Some(buf.iov);
    Ok(total)
}

async fn send_small<W: AsyncWriteRent>(out: &mut W, bytes: Vec<u8>) -> io::Result<()> {
    let (result, _) = out.write_all(bytes).await;
    result.map(|_| ())
}

/// Says goodbye as the end calls for, then shuts the socket down so the reading task ends too.
async fn finish<W: AsyncWriteRent>(
    out: &mut W,
    fd: RawFd,
    control: &ViewerControl,
    protocol: Protocol,
    camera: &Camera,
    end: End,
) {
    let goodbye = match (&end, protocol) {
        (
            End::Stalled {
                frame_finished: true,
            },
            Protocol::WebSocket,
        ) => {
            tracing::info!(camera = %camera.id, "viewer too slow, closing with 4008");
            Some(websocket::close_frame(close::TOO_SLOW, "too slow"))
        }
        (End::Stalled { .. }, _) => {
            tracing::info!(camera = %camera.id, "viewer too slow, dropping it");
            None
        }
        (End::CodecChanged, Protocol::WebSocket) => Some(websocket::close_frame(
            close::SERVICE_RESTART,
            "the camera changed codec",
        )),
        (End::NoPong, Protocol::WebSocket) => Some(websocket::close_frame(
            close::GOING_AWAY,
            "no answer to ping",
        )),
        (End::Read(ReadEnd::Closed(code)), Protocol::WebSocket) => Some(websocket::close_frame(
            websocket::echo_close_code(*code),
            "",
        )),
        (End::Read(ReadEnd::Refused(code, reason)), Protocol::WebSocket) => {
            Some(websocket::close_frame(*code, reason))
        }
        _ => None,
    };
    if let Some(frame) = goodbye {
        let sent = monoio::time::timeout(CLOSE_GRACE, send_small(out, frame)).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = monoio::time::timeout(CLOSE_GRACE, out.shutdown()).await;
            let _ = monoio::time::timeout(CLOSE_GRACE, wait_ended(control)).await;
        }
    }
    // Ends the reading task's pending read; the descriptor closes when both halves are dropped.
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
}

async fn wait_ended(control: &ViewerControl) {
    poll_fn(|cx| {
        if control.is_ended() {
            Poll::Ready(())
        } else {
            control.register(cx);
            Poll::Pending
        }
    })
    .await
}

async fn read_websocket<R: AsyncReadRent>(read: R, already: Vec<u8>, control: Rc<ViewerControl>) {
    let mut reader = WsReader::new(read, already, VIEWER_MAX_MESSAGE);
    loop {
        match reader.next().await {
            Ok(Incoming::Ping(payload)) => {
                *control.pong_due.borrow_mut() = Some(payload);
                control.wake();
            }
            Ok(Incoming::Pong) => control.pong_seen.set(true),
            Ok(Incoming::Binary(_) | Incoming::Text(_)) => {}
            Ok(Incoming::Close(code)) => return control.end(ReadEnd::Closed(code)),
            Err(e) => {
                let end = match e.close_reason() {
                    Some((code, reason)) => ReadEnd::Refused(code, reason),
                    None => ReadEnd::Gone,
                };
                return control.end(end);
            }
        }
    }
}

/// MJPEG viewers say nothing; reading only tells when they hang up.
async fn read_until_closed<R: AsyncReadRent>(mut read: R, control: Rc<ViewerControl>) {
    let mut buf = vec![0u8; 256];
    loop {
        let (result, returned) = read.read(buf).await;
        buf = returned;
        if !matches!(result, Ok(n) if n > 0) {
            return control.end(ReadEnd::Gone);
        }
    }
}

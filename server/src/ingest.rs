//! `/ingest/{cam}` and the older `/video_remote_source/{cam}`: a remote camera sends JPEG frames
//! as binary WebSocket messages; the worker that accepted it becomes the ring's writer. The
//! camera is told `1` (send) or `0` (stop) the moment demand for it changes across all workers.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};
use ringbuf::frame::{check_jpeg, insert_timing, read_timing, FrameTiming};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock, VideoFormat};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::http::{self, error_response, Request, Status};
use crate::hub::bump;
use crate::websocket::{self, close, Incoming, WsReader};
use crate::worker::Worker;

/// Ring slots of a ring created for an ingest camera.
const INGEST_SLOTS: u32 = 8;
/// How often demand is looked at (and the ring's heartbeat written) while the camera is quiet.
const DEMAND_POLL: Duration = Duration::from_millis(100);
/// The older server repeated the demand state every 2 s; cameras written for it may rely on that.
const DEMAND_REPEAT: Duration = Duration::from_secs(2);
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long after its last frame an unwatched ingest camera counts as idle.
const IDLE_AFTER_LAST_FRAME: Duration = Duration::from_secs(1);
/// A camera whose connection takes nothing (unacknowledged data, or keepalive probes unanswered)
/// for this long is gone, and its ring is released for a new connection.
const CAMERA_GONE_AFTER: Duration = Duration::from_secs(15);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Shared between the ingest connection's reading task and its sending task.
#[derive(Default)]
struct IngestControl {
    waker: RefCell<Option<Waker>>,
    pong_due: RefCell<Option<Vec<u8>>>,
    /// Set when reading ends: the close to send, if any (`Some(None)`: just stop).
    finished: RefCell<Option<Option<(u16, String)>>>,
    sender_done: Cell<bool>,
    /// Whether the ring is marked idle (nobody watches and the camera stopped sending).
    ring_idle: Cell<bool>,
    last_frame: Cell<Option<monoio::time::Instant>>,
}

impl IngestControl {
    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

pub async fn serve(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    request: Request,
    already: Vec<u8>,
    camera: CameraId,
) {
    let accept = match websocket::accept_key(&request) {
        Ok(accept) => accept,
        Err(e) => {
            let _ = http::refuse_and_close(&mut stream, error_response(e.status(), &e.to_string()))
                .await;
            return;
        }
    };
    let geometry = RingGeometry {
        slot_count: INGEST_SLOTS,
        slot_size: worker.config.max_frame_bytes,
    };
    let writer = match RingWriter::create(&worker.config.ring_dir, &camera, geometry) {
        Ok(writer) => writer,
        Err(e @ ringbuf::Error::WriterBusy { .. }) => {
            let _ = http::refuse_and_close(
                &mut stream,
                error_response(Status::Conflict, &e.to_string()),
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::warn!(camera = %camera, "ingest: {e}");
            let _ = http::refuse_and_close(&mut stream, ring_error_response(&e)).await;
            return;
        }
    };
    let demand = match DemandFile::open(&worker.config.ring_dir, &camera) {
        Ok(demand) => demand,
        Err(e) => {
            tracing::warn!(camera = %camera, "ingest: {e}");
            let _ = http::refuse_and_close(&mut stream, ring_error_response(&e)).await;
            return;
        }
    };
    let handshake = websocket::handshake_response(&accept);
    if http::write_within(&mut stream, handshake, http::WRITE_TIMEOUT)
        .await
        .is_err()
    {
        return;
    }
    tune_camera_socket(&stream);
    tracing::info!(camera = %camera, "ingest camera connected");
    worker.hub.discover(&camera);
    let writer = Rc::new(RefCell::new(writer));
    let control = Rc::new(IngestControl::default());
    let (read_half, write_half) = stream.into_split();
    // The sender only borrows the writer: the ring's lock goes with this connection, even if the
    // sender is still finishing a write.
    monoio::spawn(send_demand(
        write_half,
        Rc::clone(&control),
        Rc::downgrade(&writer),
        demand,
    ));
    let mut reader = WsReader::new(read_half, already, worker.config.max_frame_bytes);
    let ending = receive_frames(&worker, &mut reader, &writer, &control).await;
    *control.finished.borrow_mut() = Some(ending);
    control.wake();
    let _ = monoio::time::timeout(
        CLOSE_GRACE * 2,
        poll_fn(|cx| {
            if control.sender_done.get() {
                Poll::Ready(())
            } else {
                *control.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }),
    )
    .await;
    drop(writer);
    tracing::info!(camera = %camera, "ingest camera disconnected");
}

/// The refusal of an ingest camera whose ring or demand file could not be made: no room is the
/// operator's to fix (507), anything else is the server's (500).
fn ring_error_response(error: &ringbuf::Error) -> Vec<u8> {
    let status = match error {
        ringbuf::Error::NoSpace { .. } => Status::InsufficientStorage,
        _ => Status::InternalError,
    };
    error_response(status, &error.to_string())
}

/// Turns off Nagle (the one-byte demand messages should not wait) and makes a camera that
/// vanished without closing (power or network gone) noticed within [`CAMERA_GONE_AFTER`], by
/// keepalive while nothing is sent and by TCP_USER_TIMEOUT while messages go unacknowledged.
fn tune_camera_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::warn!("SO_KEEPALIVE: {e}");
    }
    if let Err(e) = socket.set_tcp_user_timeout(Some(CAMERA_GONE_AFTER)) {
        tracing::warn!("TCP_USER_TIMEOUT: {e}");
    }
}

/// Publishes frames until the camera leaves or sends something refused; returns the close to
/// send it.
async fn receive_frames<R: monoio::io::AsyncReadRent>(
    worker: &Worker,
    reader: &mut WsReader<R>,
    writer: &RefCell<RingWriter>,
    control: &IngestControl,
) -> Option<(u16, String)> {
    let mut with_timing = Vec::new();
    loop {
        let message = match reader.next().await {
            Ok(message) => message,
            Err(e) => {
                if e.close_reason().is_some() {
                    bump(&worker.counters.ingest_refused, 1);
                }
                return e.close_reason();
            }
        };
        match message {
            Incoming::Binary(jpeg) => {
                if let Err(refusal) = publish(writer, &jpeg, &mut with_timing) {
                    bump(&worker.counters.ingest_refused, 1);
                    return Some(refusal);
                }
                bump(&worker.counters.ingest_frames, 1);
                control.last_frame.set(Some(monoio::time::Instant::now()));
                // Publishing marked the ring streaming again; only our record of it is left.
                control.ring_idle.set(false);
            }
            Incoming::Text(_) | Incoming::Pong => {}
            Incoming::Ping(payload) => {
                *control.pong_due.borrow_mut() = Some(payload);
                control.wake();
            }
            Incoming::Close(code) => {
                return Some((websocket::echo_close_code(code), String::new()))
            }
        }
    }
}

/// Checks one frame, adds the timing segment and publishes it.
fn publish(
    writer: &RefCell<RingWriter>,
    jpeg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), (u16, String)> {
    check_jpeg(jpeg).map_err(|e| (close::UNSUPPORTED_DATA, format!("not a JPEG: {e}")))?;
    let mut writer = writer.borrow_mut();
    // A frame that already carries ringcast timing (a `ringcast-capture --push`) keeps its
    // capture time, so latency is measured from the camera, not from this hop.
    let capture = read_timing(jpeg).map_or_else(|| SystemClock.wall(), |t| t.capture);
    let timing = FrameTiming {
        frame_no: writer.next_frame_no(),
        capture,
    };
    insert_timing(jpeg, timing, out)
        .map_err(|e| (close::UNSUPPORTED_DATA, format!("not a JPEG: {e}")))?;
    if let Ok(size) = imagesize::blob_size(jpeg) {
        writer.set_video_format(VideoFormat {
            width: size.width as u32,
            height: size.height as u32,
            fps_milli: 0,
        });
    }
    writer
        .publish(out, capture)
        .map(|_| ())
        .map_err(|e| (close::TOO_BIG, e.to_string()))
}

/// Sends `1`/`0` whenever demand changes (and repeats it every 2 s), answers pings, keeps the
/// ring's heartbeat, and sends the final close.
async fn send_demand<W: AsyncWriteRent>(
    mut out: W,
    control: Rc<IngestControl>,
    writer: Weak<RefCell<RingWriter>>,
    demand: Arc<DemandFile>,
) {
    let mut told: Option<bool> = None;
    let mut told_at = monoio::time::Instant::now();
    loop {
        let finished = control.finished.borrow_mut().take();
        if let Some(ending) = finished {
            if let Some((code, reason)) = ending {
                let frame = websocket::close_frame(code, &reason);
                let _ = monoio::time::timeout(CLOSE_GRACE, out.write_all(frame)).await;
            }
            let _ = monoio::time::timeout(CLOSE_GRACE, out.shutdown()).await;
            break;
        }
        let pong = control.pong_due.borrow_mut().take();
        if let Some(payload) = pong {
            let pong = websocket::pong_frame(&payload);
            if http::write_within(&mut out, pong, http::WRITE_TIMEOUT)
                .await
                .is_err()
            {
                break;
            }
        }
        let Some(ring) = writer.upgrade() else {
            break;
        };
        let watched = demand.viewers(DEFAULT_CELL_EXPIRY) > 0;
        mark_idle(&control, &mut ring.borrow_mut(), watched);
        drop(ring);
        if told != Some(watched) || told_at.elapsed() >= DEMAND_REPEAT {
            if told != Some(watched) {
                tracing::info!(
                    "ingest camera told {}",
                    if watched { "1 (send)" } else { "0 (stop)" }
                );
            }
            let payload: &[u8] = if watched { b"1" } else { b"0" };
            let message = websocket::small_frame(OpCode::Data(Data::Binary), payload);
            if http::write_within(&mut out, message, http::WRITE_TIMEOUT)
                .await
                .is_err()
            {
                break;
            }
            told = Some(watched);
            told_at = monoio::time::Instant::now();
        }
        match writer.upgrade() {
            Some(ring) => {
                if let Err(e) = ring.borrow_mut().heartbeat() {
                    tracing::warn!("ingest ring: {e}");
                }
            }
            None => break,
        }
        let _ = monoio::time::timeout(
            DEMAND_POLL,
            poll_fn(|cx| {
                if control.finished.borrow().is_some() || control.pong_due.borrow().is_some() {
                    Poll::Ready(())
                } else {
                    *control.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }),
        )
        .await;
    }
    control.sender_done.set(true);
    control.wake();
}

/// The ring is idle (not offline) while nobody watches and the camera has stopped sending, as a
/// local on-demand capture's would be.
fn mark_idle(control: &IngestControl, writer: &mut RingWriter, watched: bool) {
    let quiet = control
        .last_frame
        .get()
        .is_none_or(|at| at.elapsed() >= IDLE_AFTER_LAST_FRAME);
    let idle = !watched && quiet;
    if control.ring_idle.replace(idle) != idle {
        if let Err(e) = writer.set_idle(idle) {
            tracing::warn!("ingest ring: {e}");
        }
    }
}

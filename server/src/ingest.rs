//! `/ingest/{cam}` and the older `/video_remote_source/{cam}`: a remote camera sends JPEG frames
//! as binary WebSocket messages; the worker that accepted it becomes the ring's writer. The
//! camera is told `1` (send) or `0` (stop) the moment demand for it changes across all workers.
//!
//! What a remote camera may do is bounded: it needs the ingest token (unless ingest was opened on
//! purpose), it may only create cameras `--ingest-cameras` allows and never write one a capture on
//! this host writes, at most `--max-ingest-cameras` exist at once, its ring and demand files are
//! made only when its first valid frame arrives, and it is dropped when it sends no frame for
//! `--ingest-idle-timeout` while it was asked to send.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use monoio::time::Instant;
use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};
use ringbuf::frame::{check_jpeg, insert_timing, read_timing, FrameTiming, TIMING_SEGMENT_MAX};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock, VideoFormat};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::http::{self, Request, Status};
use crate::hub::bump;
use crate::websocket::{self, close, Incoming, WsReader};
use crate::worker::{Gauged, Worker};

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
/// SO_SNDBUF of a camera's socket (Linux doubles it).
const CAMERA_SNDBUF: usize = 8 << 10;

/// One ingest connection's state, shared by its reading task and its sending task.
struct IngestControl {
    waker: RefCell<Option<Waker>>,
    pong_due: RefCell<Option<Vec<u8>>>,
    /// Set when reading ends: the close to send, if any (`Some(None)`: just stop).
    finished: RefCell<Option<Option<(u16, String)>>>,
    sender_done: Cell<bool>,
    /// The camera's ring, from its first valid frame on. Held by this connection alone: it is
    /// taken out (and the ring's lock released) the moment reading ends.
    writer: RefCell<Option<RingWriter>>,
    demand: RefCell<Option<Arc<DemandFile>>>,
    /// Whether the ring is marked idle (nobody watches and the camera stopped sending).
    ring_idle: Cell<bool>,
    /// What the camera was last told: send (`true`) or stop.
    told: Cell<Option<bool>>,
    /// Since when the camera has been expected to send: the connection, its last frame, or the
    /// moment it was told to send again.
    expected_since: Cell<Instant>,
    last_frame: Cell<Option<Instant>>,
    /// The ring was given up to a capture on this host: frames still arriving while the close
    /// is on its way are dropped, and never make the ring again.
    gave_up: Cell<bool>,
}

impl IngestControl {
    fn new() -> IngestControl {
        IngestControl {
            waker: RefCell::new(None),
            pong_due: RefCell::new(None),
            finished: RefCell::new(None),
            sender_done: Cell::new(false),
            writer: RefCell::new(None),
            demand: RefCell::new(None),
            ring_idle: Cell::new(false),
            told: Cell::new(None),
            expected_since: Cell::new(Instant::now()),
            last_frame: Cell::new(None),
            gave_up: Cell::new(false),
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// When the camera must have sent its next frame, or `None` while it was told to stop.
    fn frame_due(&self, idle_timeout: Duration) -> Option<Instant> {
        (self.told.get() != Some(false)).then(|| self.expected_since.get() + idle_timeout)
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
        Err(e) => return crate::routes::refuse(&worker, stream, e.status(), &e.to_string()).await,
    };
    // A camera is a streaming connection like a viewer: it counts against --max-clients.
    let admitted = may_ingest(&worker, &camera).and_then(|()| {
        worker.admit().ok_or_else(|| {
            (
                Status::ServiceUnavailable,
                "too many connections (--max-clients)".to_owned(),
            )
        })
    });
    let _admitted = match admitted {
        Ok(guard) => guard,
        Err((status, reason)) => {
            bump(&worker.counters.ingest_refused, 1);
            tracing::info!(camera = %camera, "ingest refused: {reason}");
            return crate::routes::refuse(&worker, stream, status, &reason).await;
        }
    };
    // Counted from here, before the handshake's await, so that connections arriving meanwhile
    // see it.
    let _connected = Gauged::new(&worker.counters.ingest_connections);
    let handshake = websocket::handshake_response(&accept);
    if http::write_within(&mut stream, handshake, http::WRITE_TIMEOUT)
        .await
        .is_err()
    {
        return;
    }
    tune_camera_socket(&stream);
    tracing::info!(camera = %camera, "ingest camera connected");
    let control = Rc::new(IngestControl::new());
    let socket = stream.as_raw_fd();
    let (read_half, write_half) = stream.into_split();
    monoio::spawn(send_demand(
        write_half,
        Rc::clone(&control),
        Rc::clone(&worker),
        camera.clone(),
        socket,
    ));
    let mut reader = WsReader::new(read_half, already, worker.config.max_frame_bytes);
    let ending = receive_frames(&worker, &camera, &mut reader, &control).await;
    // The ring's lock goes with the connection, even if the sender is still finishing a write.
    drop(control.writer.borrow_mut().take());
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
    tracing::info!(camera = %camera, "ingest camera disconnected");
}

/// Whether a remote camera may publish `camera` now, asked before the handshake so that it gets
/// an HTTP status saying why not. The ring is made (and all of this checked again) only at its
/// first frame.
fn may_ingest(worker: &Worker, camera: &CameraId) -> Result<(), (Status, String)> {
    if let Some(allowed) = &worker.config.ingest_cameras {
        if !allowed.allows(camera) {
            return Err((
                Status::Forbidden,
                format!("ingest may not create camera {camera} (see --ingest-cameras)"),
            ));
        }
    }
    match ringbuf::ingest_may_write(&worker.config.ring_dir, camera, ring_geometry(worker)) {
        Ok(()) => {}
        Err(e @ (ringbuf::Error::LocalCamera { .. } | ringbuf::Error::WriterBusy { .. })) => {
            return Err((Status::Conflict, e.to_string()))
        }
        Err(e @ ringbuf::Error::NoSpace { .. }) => {
            return Err((Status::InsufficientStorage, e.to_string()))
        }
        Err(e) => {
            tracing::warn!(camera = %camera, "ingest: {e}");
            return Err((Status::InternalError, e.to_string()));
        }
    }
    // Connections waiting for their first frame have no ring yet, but may each hold a
    // message of up to --max-frame-bytes: they are capped too.
    let max = worker.config.max_ingest_cameras;
    if worker.counters.ingest_connections.get() >= max as u64 {
        return Err((
            Status::ServiceUnavailable,
            format!("this worker takes at most {max} ingest connections (--max-ingest-cameras)"),
        ));
    }
    too_many_cameras(worker, camera).map_or(Ok(()), |why| Err((Status::ServiceUnavailable, why)))
}

/// Why another ingest camera cannot be made, if it cannot: `camera` would be one too many.
fn too_many_cameras(worker: &Worker, camera: &CameraId) -> Option<String> {
    worker.hub.rescan();
    let max = worker.config.max_ingest_cameras;
    let others = worker
        .hub
        .cameras()
        .iter()
        .filter(|c| c.is_ingest() && c.id != *camera)
        .count();
    (others >= max)
        .then(|| format!("this server takes at most {max} ingest cameras (--max-ingest-cameras)"))
}

/// Turns off Nagle (the one-byte demand messages should not wait), makes a camera that
/// vanished without closing (power or network gone) noticed within [`CAMERA_GONE_AFTER`], by
/// keepalive while nothing is sent and by TCP_USER_TIMEOUT while messages go unacknowledged, and
/// keeps the send buffer small: a camera is sent only one-byte messages and pongs, so one that
/// takes none of them (while flooding pings, say) is found out after kilobytes, not megabytes.
fn tune_camera_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    if let Err(e) = socket.set_send_buffer_size(CAMERA_SNDBUF) {
        tracing::warn!("SO_SNDBUF: {e}");
    }
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

/// Publishes frames until the camera leaves, goes quiet, or sends something refused; returns the
/// close to send it.
async fn receive_frames<R: monoio::io::AsyncReadRent>(
    worker: &Worker,
    camera: &CameraId,
    reader: &mut WsReader<R>,
    control: &IngestControl,
) -> Option<(u16, String)> {
    let mut with_timing = Vec::new();
    loop {
        // No timeout here: a read cut short would lose what it took (the sender enforces the
        // idle limit by closing the socket, which ends this read).
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
            Incoming::Binary(_) if control.gave_up.get() => {}
            Incoming::Binary(jpeg) => {
                if let Err(refusal) = publish(worker, camera, control, &jpeg, &mut with_timing) {
                    bump(&worker.counters.ingest_refused, 1);
                    return Some(refusal);
                }
                bump(&worker.counters.ingest_frames, 1);
                let now = Instant::now();
                control.last_frame.set(Some(now));
                control.expected_since.set(now);
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

/// Checks one frame, adds the timing segment and publishes it, making the camera's ring first if
/// this is its first frame.
fn publish(
    worker: &Worker,
    camera: &CameraId,
    control: &IngestControl,
    jpeg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), (u16, String)> {
    check_jpeg(jpeg).map_err(|e| (close::UNSUPPORTED_DATA, format!("not a JPEG: {e}")))?;
    if control.writer.borrow().is_none() {
        open_ring(worker, camera, control)?;
    }
    let mut slot = control.writer.borrow_mut();
    let Some(writer) = slot.as_mut() else {
        return Err((close::INTERNAL_ERROR, "the ring went away".into()));
    };
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
    writer.publish(out, capture).map(|_| ()).map_err(|e| {
        let code = match e {
            ringbuf::Error::FrameTooLarge { .. } => close::TOO_BIG,
            _ => close::INTERNAL_ERROR,
        };
        (code, e.to_string())
    })
}

fn ring_geometry(worker: &Worker) -> RingGeometry {
    RingGeometry {
        slot_count: INGEST_SLOTS,
        // Room for a frame of exactly --max-frame-bytes once the timing segment is in it.
        slot_size: worker.config.max_frame_bytes + TIMING_SEGMENT_MAX,
    }
}

/// Makes (or takes over) the camera's ring and its demand file, at its first valid frame.
fn open_ring(
    worker: &Worker,
    camera: &CameraId,
    control: &IngestControl,
) -> Result<(), (u16, String)> {
    if let Some(why) = too_many_cameras(worker, camera) {
        return Err((close::TRY_AGAIN_LATER, why));
    }
    let geometry = ring_geometry(worker);
    let dir = &worker.config.ring_dir;
    let refused = |e: ringbuf::Error| {
        tracing::warn!(camera = %camera, "ingest: {e}");
        (ring_error_close(&e), e.to_string())
    };
    let writer = RingWriter::create_for_ingest(dir, camera, geometry).map_err(refused)?;
    let demand = DemandFile::open(dir, camera).map_err(refused)?;
    *control.writer.borrow_mut() = Some(writer);
    *control.demand.borrow_mut() = Some(demand);
    worker.hub.discover(camera);
    control.wake();
    Ok(())
}

/// The close for a ring that could not be made: someone else's camera is a policy matter, a
/// full ring directory is one to come back from later, anything else is the server's fault.
fn ring_error_close(error: &ringbuf::Error) -> u16 {
    match error {
        ringbuf::Error::LocalCamera { .. } | ringbuf::Error::WriterBusy { .. } => {
            close::POLICY_VIOLATION
        }
        ringbuf::Error::NoSpace { .. } => close::TRY_AGAIN_LATER,
        _ => close::INTERNAL_ERROR,
    }
}

/// Sends `1`/`0` whenever demand changes (and repeats it every 2 s), answers pings, keeps the
/// ring's heartbeat, drops a camera that stays quiet while asked to send, and sends the final
/// close.
async fn send_demand<W: AsyncWriteRent>(
    mut out: W,
    control: Rc<IngestControl>,
    worker: Rc<Worker>,
    camera: CameraId,
    socket: RawFd,
) {
    let mut told_at = Instant::now();
    let idle_timeout = worker.config.ingest_idle_timeout;
    loop {
        if control
            .frame_due(idle_timeout)
            .is_some_and(|due| Instant::now() >= due)
        {
            bump(&worker.counters.ingest_refused, 1);
            let reason = format!("no frame for {} s", idle_timeout.as_secs_f64());
            tracing::info!(camera = %camera, "ingest camera dropped: {reason}");
            let frame = websocket::close_frame(close::POLICY_VIOLATION, &reason);
            let _ = monoio::time::timeout(CLOSE_GRACE, out.write_all(frame)).await;
            break;
        }
        let finished = control.finished.borrow_mut().take();
        if let Some(ending) = finished {
            if let Some((code, reason)) = ending {
                let frame = websocket::close_frame(code, &reason);
                let _ = monoio::time::timeout(CLOSE_GRACE, out.write_all(frame)).await;
            }
            let _ = monoio::time::timeout(CLOSE_GRACE, out.shutdown()).await;
            break;
        }
        if control
            .writer
            .borrow()
            .as_ref()
            .is_some_and(RingWriter::local_capture_waits)
        {
            // A capture on this host asked for the camera: it has the name before a remote
            // camera, so the ring's lock goes at once, not when the camera has read the close.
            drop(control.writer.borrow_mut().take());
            control.gave_up.set(true);
            bump(&worker.counters.ingest_refused, 1);
            let reason = "a capture on this host has taken this camera";
            tracing::info!(camera = %camera, "ingest camera closed: {reason}");
            let frame = websocket::close_frame(close::POLICY_VIOLATION, reason);
            let _ = monoio::time::timeout(CLOSE_GRACE, out.write_all(frame)).await;
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
        // Demand exists once the ring does (at the first frame). Until then nobody can watch a
        // camera that is not listed yet: the camera is asked for a frame (`1`), which lists it.
        let demand = control.demand.borrow().clone();
        let watched = demand.is_none_or(|demand| demand.viewers(DEFAULT_CELL_EXPIRY) > 0);
        keep_ring(&control, watched);
        let told = control.told.get();
        if told != Some(watched) || told_at.elapsed() >= DEMAND_REPEAT {
            if told != Some(watched) {
                tracing::info!(
                    "ingest camera told {}",
                    if watched { "1 (send)" } else { "0 (stop)" }
                );
                if watched {
                    // Asked to send again: the idle limit counts from now.
                    control.expected_since.set(Instant::now());
                }
            }
            let payload: &[u8] = if watched { b"1" } else { b"0" };
            let message = websocket::small_frame(OpCode::Data(Data::Binary), payload);
            if http::write_within(&mut out, message, http::WRITE_TIMEOUT)
                .await
                .is_err()
            {
                break;
            }
            control.told.set(Some(watched));
            told_at = Instant::now();
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
    // However the sender ends (idle camera, a camera that takes nothing, the reader finished),
    // the reading task's read ends at once too: a connection is never left reading with nobody
    // enforcing the idle limit.
    let _ = nix::sys::socket::shutdown(socket, nix::sys::socket::Shutdown::Both);
    control.sender_done.set(true);
    control.wake();
}

/// The ring's heartbeat, and its idle mark: idle (not offline) while nobody watches and the
/// camera has stopped sending, as a local on-demand capture's would be.
fn keep_ring(control: &IngestControl, watched: bool) {
    let mut slot = control.writer.borrow_mut();
    let Some(writer) = slot.as_mut() else {
        return;
    };
    let quiet = control
        .last_frame
        .get()
        .is_none_or(|at| at.elapsed() >= IDLE_AFTER_LAST_FRAME);
    let idle = !watched && quiet;
    let result = if control.ring_idle.replace(idle) != idle {
        writer.set_idle(idle)
    } else {
        writer.heartbeat()
    };
    if let Err(e) = result {
        tracing::warn!("ingest ring: {e}");
    }
}

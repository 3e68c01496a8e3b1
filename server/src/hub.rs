//! Cameras of one worker: one ring reader per camera copies each new frame out once into a shared
//! [`Frame`] (with the WebSocket and multipart headers prebuilt) and wakes the camera's viewers.
//! Nothing is queued per viewer. A viewer of a JPEG camera takes the newest frame it has not
//! sent. A viewer of an H.264 camera needs every frame from a keyframe on, so the camera keeps
//! its current group of pictures (the frames since the last keyframe): a new viewer starts at
//! that keyframe at once, and a viewer still behind when the next keyframe comes jumps to it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::io::AsyncReadRent;
use ringbuf::demand::{DemandCell, DemandFile};
use ringbuf::frame::{access_unit_header, FrameTiming, AU_HEADER_LEN};
use ringbuf::{
    feed_ring_path, scan_ring_dir, CameraId, Clock, Codec, Feed, FrameKind, FrameNo, MonoNanos,
    RingReader, RingWatcher, SystemClock, WallNanos, WriterKind, WriterStatus,
};

use crate::websocket::{binary_header, text_frame};

/// How often a ring reader wakes without a frame, to notice an offline or replaced ring.
const RING_TICK: Duration = Duration::from_millis(500);
/// How often the ring directory is rescanned for new cameras.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// The multipart boundary of `/stream/{cam}.mjpg`, as a macro so that the constants built from
/// it cannot drift apart.
macro_rules! mjpeg_boundary {
    () => {
        "ringcast-frame"
    };
}

/// Multipart boundary of `/stream/{cam}.mjpg`.
pub const MJPEG_BOUNDARY: &str = mjpeg_boundary!();
/// What ends every part of `/stream/{cam}.mjpg`: the delimiter line that also opens the next.
/// Ending a part with it, rather than starting the next, tells a client the part is whole as
/// soon as it arrives, not when the next frame does (other MJPEG streamers do the same).
pub const MJPEG_PART_END: &[u8] = concat!("\r\n--", mjpeg_boundary!(), "\r\n").as_bytes();
/// [`MJPEG_PART_END`] and the next part's headers, sent in advance (see
/// `viewer::PartHeads::InAdvance`).
pub const MJPEG_PART_END_AND_HEAD: &[u8] = concat!(
    "\r\n--",
    mjpeg_boundary!(),
    "\r\nContent-Type: image/jpeg\r\n\r\n"
)
.as_bytes();

/// The most of a group of pictures a camera keeps (a minute at 30 fps, or 64 MiB). Past it the
/// group's oldest frames go: viewers in step go on, but new viewers, and viewers further behind,
/// wait for the next keyframe.
const MAX_GOP_FRAMES: usize = 1800;
const MAX_GOP_BYTES: usize = 64 << 20;

/// One frame as every viewer of this process sends it.
pub struct Frame {
    /// Counts frames this process published for the camera (survives ring replacement).
    pub seq: u64,
    pub frame_no: FrameNo,
    pub capture: WallNanos,
    pub codec: Codec,
    pub kind: FrameKind,
    /// The encoded frame: a whole JPEG, or an H.264 access unit in Annex B form.
    pub payload: Vec<u8>,
    /// What precedes `payload` in its WebSocket message: the frame header and, for H.264, the
    /// access unit header (`ringbuf::frame::access_unit_header`).
    pub ws_head: Vec<u8>,
    /// The part headers of `/stream/{cam}.mjpg` (JPEG only); the delimiter before them ended
    /// the previous part (or the head).
    pub part_header: Vec<u8>,
    /// On H.264 keyframes: the decoder configuration this frame and those after it need.
    pub decoder_config: Option<Rc<DecoderConfig>>,
}

impl Frame {
    fn jpeg(seq: u64, frame_no: FrameNo, capture: WallNanos, jpeg: Vec<u8>) -> Frame {
        let part_header = format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )
        .into_bytes();
        Frame {
            seq,
            frame_no,
            capture,
            codec: Codec::Jpeg,
            kind: FrameKind::Key,
            ws_head: binary_header(jpeg.len()).as_bytes().to_vec(),
            part_header,
            payload: jpeg,
            decoder_config: None,
        }
    }

    fn h264(
        seq: u64,
        meta: &ringbuf::FrameMeta,
        access_unit: Vec<u8>,
        decoder_config: Option<Rc<DecoderConfig>>,
    ) -> Frame {
        let mut ws_head = binary_header(AU_HEADER_LEN + access_unit.len())
            .as_bytes()
            .to_vec();
        let timing = FrameTiming {
            frame_no: meta.frame_no,
            capture: meta.capture,
        };
        ws_head.extend_from_slice(&access_unit_header(meta.kind, timing));
        Frame {
            seq,
            frame_no: meta.frame_no,
            capture: meta.capture,
            codec: Codec::H264,
            kind: meta.kind,
            payload: access_unit,
            ws_head,
            part_header: Vec::new(),
            decoder_config,
        }
    }
}

/// What a viewer's H.264 decoder must be configured with, and the WebSocket text message that
/// says it: `{"type":"config","codec":"avc1.64001F","codedWidth":1280,"codedHeight":720}`.
pub struct DecoderConfig {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// The whole WebSocket frame.
    pub message: Vec<u8>,
}

impl DecoderConfig {
    fn new(codec: String, width: u32, height: u32) -> DecoderConfig {
        let mut config = serde_json::json!({ "type": "config", "codec": codec });
        // The size is a hint WebCodecs may do without, but not a zero one (a ring whose writer
        // has not said its size yet).
        if width > 0 && height > 0 {
            config["codedWidth"] = width.into();
            config["codedHeight"] = height.into();
        }
        let text = config.to_string();
        DecoderConfig {
            message: text_frame(&text),
            codec,
            width,
            height,
        }
    }

    fn describes(&self, codec: &str, width: u32, height: u32) -> bool {
        self.codec == codec && self.width == width && self.height == height
    }
}

/// What `/api/cameras` calls a camera's state; `Removed` cameras are no longer listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraState {
    Online,
    Idle,
    Offline,
    Removed,
}

impl CameraState {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Online => "online",
            CameraState::Idle => "idle",
            CameraState::Offline | CameraState::Removed => "offline",
        }
    }

    fn from_writer(status: WriterStatus) -> CameraState {
        match status {
            WriterStatus::Online => CameraState::Online,
            WriterStatus::Idle => CameraState::Idle,
            WriterStatus::Offline(_) => CameraState::Offline,
        }
    }
}

/// Per camera and worker counters, for `/metrics`.
#[derive(Default)]
pub struct CameraCounters {
    pub frames_in: Cell<u64>,
    pub frames_sent: Cell<u64>,
    pub bytes_sent: Cell<u64>,
    /// Frames a viewer passed over because a newer one was there when it was ready.
    pub viewer_skips: Cell<u64>,
    pub stalls: Cell<u64>,
    pub ring_skipped: Cell<u64>,
    pub ring_torn: Cell<u64>,
    pub viewers_total: Cell<u64>,
}

pub fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get().wrapping_add(by));
}

/// A camera as one worker sees it.
pub struct Camera {
    pub id: CameraId,
    /// The camera's own ring, or the JPEG copy of an H.264 camera.
    feed: Feed,
    latest: RefCell<Option<Rc<Frame>>>,
    /// H.264: the frames since the last keyframe (empty for JPEG, and until the first
    /// keyframe), at most [`MAX_GOP_FRAMES`] and [`MAX_GOP_BYTES`] of them.
    gop: RefCell<Gop>,
    /// H.264: the decoder configuration of the last keyframe.
    decoder_config: RefCell<Option<Rc<DecoderConfig>>>,
    codec: Cell<Codec>,
    /// Bits per second the ring received over the last second.
    pub bitrate: Cell<f64>,
    waiters: RefCell<Vec<Waker>>,
    /// Bumped whenever `waiters` is emptied, so a viewer knows whether it is still listed.
    waiters_epoch: Cell<u64>,
    viewers: Cell<u32>,
    state: Cell<CameraState>,
    pub width: Cell<u32>,
    pub height: Cell<u32>,
    pub fps: Cell<f64>,
    pub published_at: Cell<MonoNanos>,
    /// Who writes the camera: a capture on this host, or a remote camera through ingest.
    kind: Cell<WriterKind>,
    following: Cell<bool>,
    demand: RefCell<Option<(Arc<DemandFile>, DemandCell)>>,
    pub counters: CameraCounters,
}

/// One viewer counted in a camera's viewers (and its demand cell) while it lives.
pub struct ViewerCount<'a>(&'a Camera);

impl Drop for ViewerCount<'_> {
    fn drop(&mut self) {
        self.0.remove_viewer();
    }
}

/// A viewer's place in a camera's stream: the last frame it took, and whether its waker is
/// already in the camera's list (the list's epoch when it was added, plus one).
#[derive(Default)]
pub struct Follower {
    seen: Cell<u64>,
    registered_in: Cell<u64>,
}

impl Follower {
    /// Counts `frame` as taken: the next frame is a newer one.
    pub fn saw(&self, frame: &Frame) {
        self.seen.set(frame.seq);
    }
}

impl Camera {
    /// Whether a remote camera writes this one, through ingest.
    pub fn is_ingest(&self) -> bool {
        self.kind.get() == WriterKind::Ingest
    }

    fn new(id: CameraId) -> Camera {
        Camera::of_feed(id, Feed::Camera)
    }

    fn of_feed(id: CameraId, feed: Feed) -> Camera {
        Camera {
            id,
            feed,
            latest: RefCell::new(None),
            gop: RefCell::new(Gop::default()),
            decoder_config: RefCell::new(None),
            codec: Cell::new(Codec::Jpeg),
            bitrate: Cell::new(0.0),
            waiters: RefCell::new(Vec::new()),
            waiters_epoch: Cell::new(0),
            viewers: Cell::new(0),
            state: Cell::new(CameraState::Offline),
            width: Cell::new(0),
            height: Cell::new(0),
            fps: Cell::new(0.0),
            published_at: Cell::new(MonoNanos(0)),
            kind: Cell::new(WriterKind::Local),
            following: Cell::new(false),
            demand: RefCell::new(None),
            counters: CameraCounters::default(),
        }
    }

    pub fn state(&self) -> CameraState {
        self.state.get()
    }

    pub fn viewers(&self) -> u32 {
        self.viewers.get()
    }

    pub fn codec(&self) -> Codec {
        self.codec.get()
    }

    /// Whether this is the JPEG copy of an H.264 camera (made only while watched).
    pub fn is_jpeg_copy(&self) -> bool {
        self.feed == Feed::JpegCopy
    }

    /// The codec string of an H.264 camera's stream, once a keyframe has come.
    pub fn codec_string(&self) -> Option<String> {
        let config = self.decoder_config.borrow();
        config.as_ref().map(|config| config.codec.clone())
    }

    pub fn latest(&self) -> Option<Rc<Frame>> {
        self.latest.borrow().clone()
    }

    fn next_seq(&self) -> u64 {
        self.latest.borrow().as_ref().map_or(1, |f| f.seq + 1)
    }

    /// Follows a ring of `codec`. A ring replaced by one of another codec starts the camera
    /// afresh: what was kept of the old stream means nothing to the new one's viewers.
    fn set_codec(&self, codec: Codec) {
        if self.codec.replace(codec) != codec {
            *self.gop.borrow_mut() = Gop::default();
            self.decoder_config.borrow_mut().take();
        }
    }

    /// The shared frame for `payload`, as the ring's reader returned it.
    fn frame(&self, meta: ringbuf::FrameMeta, payload: Vec<u8>) -> Frame {
        let seq = self.next_seq();
        match self.codec.get() {
            Codec::Jpeg => Frame::jpeg(seq, meta.frame_no, meta.capture, payload),
            Codec::H264 => {
                let config = if meta.kind.is_key() {
                    self.decoder_config_for(&payload)
                } else {
                    None
                };
                Frame::h264(seq, &meta, payload, config)
            }
        }
    }

    /// Makes `frame` the newest and wakes every viewer waiting for one.
    fn publish(&self, frame: Frame) {
        bump(&self.counters.frames_in, 1);
        let frame = Rc::new(frame);
        if frame.codec == Codec::H264 {
            self.extend_gop(&frame);
        }
        *self.latest.borrow_mut() = Some(frame);
        self.wake_waiters();
    }

    fn extend_gop(&self, frame: &Rc<Frame>) {
        self.gop.borrow_mut().push(frame);
    }

    /// The decoder configuration for a keyframe of this camera: the last one if nothing
    /// changed, so that viewers can tell a change by identity.
    fn decoder_config_for(&self, access_unit: &[u8]) -> Option<Rc<DecoderConfig>> {
        let codec = ringbuf::h264::codec_string(access_unit)?;
        let (width, height) = (self.width.get(), self.height.get());
        let mut current = self.decoder_config.borrow_mut();
        match current.as_ref() {
            Some(config) if config.describes(&codec, width, height) => Some(Rc::clone(config)),
            _ => {
                let config = Rc::new(DecoderConfig::new(codec, width, height));
                *current = Some(Rc::clone(&config));
                Some(config)
            }
        }
    }

    fn wake_waiters(&self) {
        self.waiters_epoch.set(self.waiters_epoch.get() + 1);
        // Drain keeps the vector's capacity, so publishing allocates nothing per viewer.
        let mut waiters = self.waiters.borrow_mut();
        for waker in waiters.drain(..) {
            waker.wake();
        }
    }

    /// Viewers that left while the camera published nothing are still in the list (with their
    /// tasks' memory); when they clearly outnumber the viewers, wake everyone: the live ones
    /// list themselves again, the others are let go.
    fn prune_waiters(&self) {
        let listed = self.waiters.borrow().len();
        if listed > 2 * self.viewers.get() as usize + 16 {
            self.wake_waiters();
        }
    }

    /// The frame `follower` sends next, or else registers the task for the next: for JPEG the
    /// newest frame it has not taken; for H.264 the one after the last it took, or the current
    /// group's keyframe for a new viewer and for one whose next frame is gone.
    pub fn poll_frame(&self, follower: &Follower, cx: &mut Context<'_>) -> Poll<Rc<Frame>> {
        let next = match self.codec.get() {
            Codec::Jpeg => self.latest.borrow().clone(),
            Codec::H264 => self.gop.borrow().after(follower.seen.get()).cloned(),
        };
        if let Some(frame) = next.filter(|frame| frame.seq != follower.seen.get()) {
            let seen = follower.seen.get();
            if seen != 0 && frame.seq > seen + 1 {
                bump(&self.counters.viewer_skips, frame.seq - seen - 1);
            }
            follower.seen.set(frame.seq);
            return Poll::Ready(frame);
        }
        let epoch = self.waiters_epoch.get() + 1;
        if follower.registered_in.get() != epoch {
            follower.registered_in.set(epoch);
            self.waiters.borrow_mut().push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Counts a viewer in until the guard is dropped, however its task ends.
    pub fn count_viewer(&self) -> ViewerCount<'_> {
        self.add_viewer();
        ViewerCount(self)
    }

    /// Counts a viewer in (or out) and tells the demand file at once.
    fn add_viewer(&self) {
        self.viewers.set(self.viewers.get() + 1);
        bump(&self.counters.viewers_total, 1);
        self.report_demand();
    }

    fn remove_viewer(&self) {
        self.viewers.set(self.viewers.get().saturating_sub(1));
        self.report_demand();
    }

    fn report_demand(&self) {
        if let Some((_, cell)) = self.demand.borrow().as_ref() {
            cell.set_viewers(self.viewers.get());
        }
    }

    fn heartbeat_demand(&self) {
        if let Some((_, cell)) = self.demand.borrow().as_ref() {
            cell.heartbeat();
        }
    }

    /// Viewers of this camera across every worker, from the demand file.
    pub fn all_workers_viewers(&self) -> Option<u64> {
        let demand = self.demand.borrow();
        let (file, _) = demand.as_ref()?;
        Some(file.viewers(ringbuf::demand::DEFAULT_CELL_EXPIRY))
    }

    /// Seconds since the ring's last publish, if it ever published.
    pub fn frame_age(&self, now: MonoNanos) -> Option<Duration> {
        let at = self.published_at.get();
        (at.0 != 0).then(|| now.since(at))
    }
}

/// The frames of an H.264 camera since its last keyframe: consecutive `seq`s, the keyframe
/// first unless the group outgrew its limits.
#[derive(Default)]
struct Gop {
    frames: VecDeque<Rc<Frame>>,
    bytes: usize,
    /// Whether `frames` still starts at the keyframe (a viewer may start there).
    from_key: bool,
}

impl Gop {
    /// A keyframe starts a new group; a delta frame joins the current one (none before the
    /// first keyframe: it could not be decoded).
    fn push(&mut self, frame: &Rc<Frame>) {
        if frame.kind.is_key() {
            *self = Gop {
                frames: VecDeque::with_capacity(self.frames.capacity()),
                bytes: 0,
                from_key: true,
            };
        } else if self.frames.is_empty() {
            return;
        }
        self.bytes += frame.payload.len();
        self.frames.push_back(Rc::clone(frame));
        while self.frames.len() > MAX_GOP_FRAMES || self.bytes > MAX_GOP_BYTES {
            let Some(oldest) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= oldest.payload.len();
            self.from_key = false;
        }
    }

    /// The frame after `seen`, or for a viewer that has taken nothing yet (`seen` 0) or whose
    /// next frame is gone, the group's keyframe (if the group still has it).
    fn after(&self, seen: u64) -> Option<&Rc<Frame>> {
        let first = self.frames.front()?.seq;
        if seen != 0 && seen + 1 >= first {
            return self.frames.get(usize::try_from(seen + 1 - first).ok()?);
        }
        self.frames.front().filter(|_| self.from_key)
    }
}

/// All cameras of one worker.
pub struct Hub {
    ring_dir: std::path::PathBuf,
    offline_after: Duration,
    forget_after: Duration,
    cameras: RefCell<BTreeMap<CameraId, Rc<Camera>>>,
    /// The JPEG copies of H.264 cameras that routes sending JPEG have asked for.
    jpeg_copies: RefCell<BTreeMap<CameraId, Rc<Camera>>>,
    /// One waiting thread for every ring this worker follows (DESIGN.md: one thread per process,
    /// the ring waiter being the allowed exception).
    watcher: RingWatcher,
    /// Ring files that would not open, by path, with the inode warned about: each file is
    /// warned about once, not on every scan.
    unreadable: RefCell<HashMap<PathBuf, u64>>,
    /// Why the last scan of the ring directory failed, warned about once until it changes.
    scan_failure: RefCell<Option<String>>,
}

impl Hub {
    pub fn new(
        ring_dir: &Path,
        offline_after: Duration,
        forget_after: Duration,
    ) -> Result<Rc<Hub>, ringbuf::Error> {
        Ok(Rc::new(Hub {
            ring_dir: ring_dir.to_owned(),
            offline_after,
            forget_after,
            cameras: RefCell::new(BTreeMap::new()),
            jpeg_copies: RefCell::new(BTreeMap::new()),
            watcher: RingWatcher::start(RING_TICK)?,
            unreadable: RefCell::new(HashMap::new()),
            scan_failure: RefCell::new(None),
        }))
    }

    pub fn ring_dir(&self) -> &Path {
        &self.ring_dir
    }

    /// A listed camera (one whose ring this worker follows). A ring that appeared since the
    /// last scan is picked up at once, so a viewer never waits for the next scan.
    pub fn camera(self: &Rc<Self>, id: &str) -> Option<Rc<Camera>> {
        let id = CameraId::new(id).ok()?;
        let listed = |hub: &Hub| {
            hub.cameras
                .borrow()
                .get(&id)
                .filter(|c| c.following.get())
                .cloned()
        };
        if let Some(camera) = listed(self) {
            return Some(camera);
        }
        if !ringbuf::ring_path(&self.ring_dir, &id).exists() {
            return None;
        }
        self.discover(&id);
        listed(self)
    }

    /// What routes that send JPEG serve of `camera`: the camera itself if it is a JPEG camera;
    /// for an H.264 camera, its JPEG copy, if its capture makes one. The copy's viewers are its
    /// demand: its capture decodes only while some watch.
    pub fn jpeg_feed(self: &Rc<Self>, camera: &Rc<Camera>) -> Option<Rc<Camera>> {
        if camera.codec() == Codec::Jpeg {
            return Some(Rc::clone(camera));
        }
        let following = |hub: &Hub| {
            hub.jpeg_copies
                .borrow()
                .get(&camera.id)
                .filter(|c| c.following.get())
                .cloned()
        };
        if let Some(copy) = following(self) {
            return Some(copy);
        }
        let path = feed_ring_path(&self.ring_dir, &camera.id, Feed::JpegCopy);
        if !path.exists() {
            return None;
        }
        let copy = Rc::clone(
            self.jpeg_copies
                .borrow_mut()
                .entry(camera.id.clone())
                .or_insert_with(|| Rc::new(Camera::of_feed(camera.id.clone(), Feed::JpegCopy))),
        );
        self.start_following(&copy, &path);
        following(self)
    }

    /// Copies whose ring went (and came back, or may) while viewers still wait on them: those
    /// viewers get frames again as soon as the ring opens.
    fn refollow_jpeg_copies(self: &Rc<Self>) {
        let lost: Vec<Rc<Camera>> = self
            .jpeg_copies
            .borrow()
            .values()
            .filter(|c| !c.following.get())
            .cloned()
            .collect();
        for copy in lost {
            let path = feed_ring_path(&self.ring_dir, &copy.id, Feed::JpegCopy);
            if path.exists() {
                self.start_following(&copy, &path);
            }
        }
    }

    /// Every listed camera (its ring opened and followed), by name.
    pub fn cameras(&self) -> Vec<Rc<Camera>> {
        self.cameras
            .borrow()
            .values()
            .filter(|c| c.following.get())
            .cloned()
            .collect()
    }

    /// Every camera this worker tracks, listed or not (for metrics of viewers still attached).
    pub fn all_cameras(&self) -> Vec<Rc<Camera>> {
        self.cameras.borrow().values().cloned().collect()
    }

    /// Opens readers for rings that appeared and forgets cameras that are not followed and
    /// that nobody watches (removed rings, and ring files that would not open).
    pub fn rescan(self: &Rc<Self>) {
        let found = match scan_ring_dir(&self.ring_dir) {
            Ok(found) => {
                self.scan_failure.borrow_mut().take();
                found
            }
            Err(e) => {
                let why = e.to_string();
                if self.scan_failure.borrow().as_deref() != Some(why.as_str()) {
                    tracing::warn!("scanning the ring directory: {why}");
                    *self.scan_failure.borrow_mut() = Some(why);
                }
                return;
            }
        };
        self.unreadable
            .borrow_mut()
            .retain(|path, _| found.iter().any(|(_, p)| p == path));
        for (id, path) in found {
            let camera = Rc::clone(
                self.cameras
                    .borrow_mut()
                    .entry(id.clone())
                    .or_insert_with(|| Rc::new(Camera::new(id))),
            );
            if !camera.following.get() {
                self.start_following(&camera, &path);
            }
        }
        let keep = |_: &CameraId, c: &mut Rc<Camera>| c.following.get() || c.viewers() > 0;
        self.cameras.borrow_mut().retain(keep);
        self.jpeg_copies.borrow_mut().retain(keep);
        self.refollow_jpeg_copies();
    }

    /// Makes a camera known before its ring scan (an ingest camera that just created its ring).
    pub fn discover(self: &Rc<Self>, id: &CameraId) {
        let path = ringbuf::ring_path(&self.ring_dir, id);
        let camera = Rc::clone(
            self.cameras
                .borrow_mut()
                .entry(id.clone())
                .or_insert_with(|| Rc::new(Camera::new(id.clone()))),
        );
        if !camera.following.get() {
            self.start_following(&camera, &path);
        }
    }

    fn start_following(self: &Rc<Self>, camera: &Rc<Camera>, path: &Path) {
        let reader = match RingReader::open(path) {
            Ok(reader) => reader,
            Err(e) => {
                self.note_unreadable(camera, path, &e);
                return;
            }
        };
        self.unreadable.borrow_mut().remove(path);
        let signal = match watch(&self.watcher, &reader) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(camera = %camera.id, "cannot follow the ring: {e}");
                return;
            }
        };
        if camera.demand.borrow().is_none() {
            *camera.demand.borrow_mut() = claim_demand(&self.ring_dir, &camera.id, camera.feed);
            camera.report_demand();
        }
        camera.following.set(true);
        // Known at once, so a listing made before the reader task first runs is right.
        camera.state.set(CameraState::from_writer(
            reader.writer_status(self.offline_after),
        ));
        let info = reader.info();
        camera.width.set(info.format.width);
        camera.height.set(info.format.height);
        camera.kind.set(info.writer_kind);
        camera.set_codec(info.codec);
        tracing::info!(camera = %camera.id, "following {}", path.display());
        monoio::spawn(follow(Rc::clone(self), Rc::clone(camera), reader, signal));
    }
}

impl Hub {
    /// Warns once per ring file (path and inode) that does not open; a file that is only being
    /// created opens at a later scan, a corrupt or foreign one never does.
    fn note_unreadable(&self, camera: &Camera, path: &Path, error: &ringbuf::Error) {
        let inode = std::fs::metadata(path).map_or(0, |m| m.ino());
        let before = self.unreadable.borrow_mut().insert(path.to_owned(), inode);
        if before == Some(inode) {
            tracing::debug!(camera = %camera.id, "ring still not readable: {error}");
        } else {
            tracing::warn!(camera = %camera.id, "ring file {} does not open, not listing it: {error}", path.display());
        }
    }
}

/// A socket of the hub's watcher that wakes the event loop when `reader`'s ring may have a frame.
fn watch(
    watcher: &RingWatcher,
    reader: &RingReader,
) -> Result<monoio::net::UnixStream, ringbuf::Error> {
    let signal = watcher.watch(reader)?;
    monoio::net::UnixStream::from_std(signal).map_err(|source| ringbuf::Error::Io {
        path: reader.path().to_owned(),
        source,
    })
}

fn claim_demand(dir: &Path, id: &CameraId, feed: Feed) -> Option<(Arc<DemandFile>, DemandCell)> {
    let claimed = DemandFile::open_feed(dir, id, feed)
        .and_then(|file: Arc<DemandFile>| file.claim_cell().map(|cell| (file, cell)));
    match claimed {
        Ok(claimed) => Some(claimed),
        Err(e) => {
            tracing::warn!(camera = %id, "no demand cell, on-demand cameras will not see this worker's viewers: {e}");
            None
        }
    }
}

/// The ring reader task of one camera: copies each new frame out once and publishes it.
async fn follow(
    hub: Rc<Hub>,
    camera: Rc<Camera>,
    mut reader: RingReader,
    mut signal: monoio::net::UnixStream,
) {
    let offline_after = hub.offline_after;
    let mut wake_buf = vec![0u8; 64];
    let mut spare = Vec::new();
    let mut housekeeping = HouseKeeping::new(&reader);
    loop {
        let taken = drain_ring(&camera, &mut reader, &mut spare);
        if taken == 0 || camera.state() != CameraState::Online {
            // Woken without a frame, the writer may have stopped, idled or lost its source;
            // with frames from a camera not known online, it is back. Viewers learn either now
            // rather than at the next housekeeping.
            note_state(&camera, &reader, SystemClock.mono(), offline_after);
        }
        // A retired ring (replaced by its writer, or cut short) is reopened at once; the file
        // system is asked about the others once a second.
        if reader.is_retired() || housekeeping.due() {
            if reader.is_replaced() {
                match reopen(&hub.watcher, &camera, &reader) {
                    Reopened::Following(new_reader, new_signal) => {
                        reader = new_reader;
                        signal = new_signal;
                        camera.set_codec(reader.codec());
                        // Its newest frame at once; then the loop waits as always, so that a
                        // file retired as soon as it is opened cannot spin this worker.
                        drain_ring(&camera, &mut reader, &mut spare);
                    }
                    Reopened::Removed => break,
                    // Cut short, or scribbled: its writer puts a sound file back. Until then
                    // the old reader says the camera is offline, and every wake-up (at least
                    // one a tick) tries again.
                    Reopened::NotYet => {}
                }
            }
            housekeeping.run(&camera, &reader, offline_after);
            forget_if_abandoned(&hub, &camera);
        }
        let (result, buf) = signal.read(wake_buf).await;
        wake_buf = buf;
        if !matches!(result, Ok(n) if n > 0) {
            tracing::warn!(camera = %camera.id, "ring signal ended: {result:?}");
            break;
        }
    }
    camera.following.set(false);
    camera.state.set(CameraState::Removed);
    *camera.demand.borrow_mut() = None;
    tracing::info!(camera = %camera.id, "ring removed");
}

/// What became of a ring whose file was replaced.
enum Reopened {
    Following(RingReader, monoio::net::UnixStream),
    /// No file at the path any more: the camera is gone.
    Removed,
    /// A file that does not open as a ring (yet).
    NotYet,
}

fn reopen(watcher: &RingWatcher, camera: &Camera, old: &RingReader) -> Reopened {
    let reader = match RingReader::open(old.path()) {
        Ok(reader) => reader,
        Err(ringbuf::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Reopened::Removed
        }
        Err(e) => {
            tracing::debug!(camera = %camera.id, "ring not back yet: {e}");
            return Reopened::NotYet;
        }
    };
    match watch(watcher, &reader) {
        Ok(signal) => {
            tracing::info!(camera = %camera.id, "ring replaced, following the new file");
            Reopened::Following(reader, signal)
        }
        Err(e) => {
            tracing::warn!(camera = %camera.id, "cannot follow the new ring file: {e}");
            Reopened::NotYet
        }
    }
}

/// Copies out what the ring has, newest only: a reader of this process that fell behind skips.
/// `spare` is the buffer the next frame is copied into; it becomes that frame's own storage.
/// Returns how many frames it took.
fn drain_ring(camera: &Camera, reader: &mut RingReader, spare: &mut Vec<u8>) -> usize {
    let before = reader.stats();
    // An H.264 frame needs the ones before it: those are taken in order (a reader lapped by
    // the writer resumes at a keyframe by itself).
    let behind = reader.head().0 > camera.latest().map_or(0, |f| f.frame_no.0) + 1;
    if behind && reader.codec() == Codec::Jpeg {
        reader.skip_to_newest();
    }
    let mut taken = 0;
    loop {
        match reader.try_next(spare) {
            Ok(Some(meta)) => {
                taken += 1;
                let room = spare.len() + spare.len() / 4;
                let payload = std::mem::replace(spare, Vec::with_capacity(room));
                let frame = camera.frame(meta, payload);
                camera.publish(frame);
                // Housekeeping refreshes this only once a second; the age in /api/cameras
                // should not be that stale.
                camera.published_at.set(SystemClock.mono());
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(camera = %camera.id, "{e}");
                break;
            }
        }
    }
    let after = reader.stats();
    bump(
        &camera.counters.ring_skipped,
        after.skipped.saturating_sub(before.skipped),
    );
    bump(
        &camera.counters.ring_torn,
        after.torn.saturating_sub(before.torn),
    );
    taken
}

/// The camera's state as its writer says it, as of `now`.
fn note_state(
    camera: &Camera,
    reader: &RingReader,
    now: MonoNanos,
    offline_after: Duration,
) -> CameraState {
    let state = CameraState::from_writer(reader.writer_status_at(now, offline_after));
    if state != camera.state() {
        tracing::info!(camera = %camera.id, "camera is {}", state.as_str());
        camera.state.set(state);
    }
    state
}

/// Once a second: writer state, measured fps, picture size, demand heartbeat.
struct HouseKeeping {
    last: MonoNanos,
    last_published: u64,
    last_bytes: u64,
}

const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

impl HouseKeeping {
    fn new(reader: &RingReader) -> HouseKeeping {
        HouseKeeping {
            last: MonoNanos(0),
            last_published: reader.info().frames_published,
            last_bytes: reader.info().bytes_published,
        }
    }

    fn due(&self) -> bool {
        SystemClock.mono().since(self.last) >= HOUSEKEEPING_EVERY
    }

    fn run(&mut self, camera: &Camera, reader: &RingReader, offline_after: Duration) {
        let now = SystemClock.mono();
        let info = reader.info();
        let state = note_state(camera, reader, now, offline_after);
        let elapsed = now.since(self.last).as_secs_f64();
        let published = info.frames_published.saturating_sub(self.last_published);
        let bytes = info.bytes_published.saturating_sub(self.last_bytes);
        if self.last.0 != 0 && elapsed > 0.0 {
            let online = state == CameraState::Online;
            let per_second = |count: u64| if online { count as f64 / elapsed } else { 0.0 };
            camera.fps.set(per_second(published));
            camera.bitrate.set(per_second(bytes) * 8.0);
        }
        self.last = now;
        self.last_published = info.frames_published;
        self.last_bytes = info.bytes_published;
        camera.width.set(info.format.width);
        camera.height.set(info.format.height);
        camera.published_at.set(info.published_at);
        camera.kind.set(info.writer_kind);
        camera.heartbeat_demand();
        camera.prune_waiters();
    }
}

/// Removes an ingest camera's files once its writer has been gone for `forget_after`, so that
/// lists do not fill with cameras that left. Any worker may do it; the ring's lock decides.
fn forget_if_abandoned(hub: &Hub, camera: &Camera) {
    if !camera.is_ingest() || camera.state() != CameraState::Offline {
        return;
    }
    match ringbuf::forget_abandoned_ingest_camera(&hub.ring_dir, &camera.id, hub.forget_after) {
        Ok(true) => tracing::info!(
            camera = %camera.id,
            "forgot ingest camera, gone for {} s",
            hub.forget_after.as_secs()
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(camera = %camera.id, "forgetting an ingest camera: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn camera() -> Camera {
        Camera::new(CameraId::new("cam1").unwrap())
    }

    fn publish(camera: &Camera, n: u64) {
        let frame = Frame::jpeg(
            camera.next_seq(),
            FrameNo(n),
            WallNanos(0),
            vec![0xFF, 0xD8, 0xFF, 0xD9],
        );
        camera.publish(frame);
    }

    /// An H.264 access unit: a keyframe (SPS, PPS, IDR slice) or a delta frame.
    fn access_unit(kind: FrameKind) -> Vec<u8> {
        match kind {
            FrameKind::Key => vec![
                0, 0, 0, 1, 0x67, 0x42, 0xE0, 0x1E, 0xAB, 0, 0, 1, 0x68, 0xCE, 0, 0, 1, 0x65, 0x88,
            ],
            FrameKind::Delta => vec![0, 0, 0, 1, 0x41, 0x9A],
        }
    }

    /// Publishes frames `from..=to` of an H.264 camera, a keyframe every `gop` from frame 1.
    fn publish_h264(camera: &Camera, from: u64, to: u64, gop: u64) {
        for n in from..=to {
            let kind = if (n - 1) % gop == 0 {
                FrameKind::Key
            } else {
                FrameKind::Delta
            };
            let meta = ringbuf::FrameMeta {
                frame_no: FrameNo(n),
                capture: WallNanos(n),
                len: 0,
                kind,
            };
            let frame = camera.frame(meta, access_unit(kind));
            camera.publish(frame);
        }
    }

    fn h264_camera() -> Camera {
        let camera = camera();
        camera.set_codec(Codec::H264);
        camera.width.set(640);
        camera.height.set(360);
        camera
    }

    /// The frame numbers `viewer` takes now, until it has to wait.
    fn take_all(camera: &Camera, viewer: &Follower) -> Vec<u64> {
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut taken = Vec::new();
        while let Poll::Ready(frame) = camera.poll_frame(viewer, &mut cx) {
            taken.push(frame.frame_no.0);
        }
        taken
    }

    #[test]
    fn a_new_h264_viewer_starts_at_the_keyframe_and_gets_every_frame_after_it() {
        let camera = h264_camera();
        publish_h264(&camera, 1, 7, 5);
        let viewer = Follower::default();
        assert_eq!(take_all(&camera, &viewer), [6, 7]);
        publish_h264(&camera, 8, 9, 5);
        assert_eq!(take_all(&camera, &viewer), [8, 9], "in order, none skipped");
        assert_eq!(camera.counters.viewer_skips.get(), 0);
    }

    #[test]
    fn a_slow_h264_viewer_jumps_to_the_next_keyframe_and_counts_what_it_missed() {
        let camera = h264_camera();
        publish_h264(&camera, 1, 2, 5);
        let viewer = Follower::default();
        assert_eq!(take_all(&camera, &viewer), [1, 2]);
        // Frames 3..=12 while the viewer is busy: groups start at 6 and 11.
        publish_h264(&camera, 3, 12, 5);
        assert_eq!(take_all(&camera, &viewer), [11, 12]);
        assert_eq!(camera.counters.viewer_skips.get(), 8);
    }

    #[test]
    fn a_group_past_its_limit_keeps_viewers_in_step_and_makes_new_ones_wait_for_a_keyframe() {
        let camera = h264_camera();
        let viewer = Follower::default();
        publish_h264(&camera, 1, 1, 10_000);
        assert_eq!(take_all(&camera, &viewer), [1]);
        let last = MAX_GOP_FRAMES as u64 + 10;
        let lagging = Follower::default();
        assert_eq!(take_all(&camera, &lagging), [1]);
        for n in 2..=last {
            publish_h264(&camera, n, n, 10_000);
            assert_eq!(take_all(&camera, &viewer), [n], "in step: it goes on");
        }
        assert!(
            take_all(&camera, &lagging).is_empty(),
            "its next frame went with the oldest of the group"
        );
        let newcomer = Follower::default();
        assert!(
            take_all(&camera, &newcomer).is_empty(),
            "no keyframe to start at"
        );
        publish_h264(&camera, 10_001, 10_001, 10_000);
        assert_eq!(take_all(&camera, &newcomer), [10_001]);
        assert_eq!(take_all(&camera, &lagging), [10_001]);
    }

    #[test]
    fn keyframes_share_a_decoder_configuration_until_the_stream_changes() {
        let camera = h264_camera();
        publish_h264(&camera, 1, 11, 5);
        let keyframe = |camera: &Camera| camera.latest().unwrap().decoder_config.clone();
        let first = keyframe(&camera).expect("frame 11 is a keyframe");
        let text = String::from_utf8_lossy(&first.message);
        assert!(
            text.ends_with(
                r#"{"codec":"avc1.42E01E","codedHeight":360,"codedWidth":640,"type":"config"}"#
            ),
            "{text}"
        );
        publish_h264(&camera, 12, 16, 5);
        assert!(Rc::ptr_eq(&first, &keyframe(&camera).unwrap()));
        camera.width.set(1280);
        camera.height.set(720);
        publish_h264(&camera, 17, 21, 5);
        let resized = keyframe(&camera).unwrap();
        assert!(!Rc::ptr_eq(&first, &resized));
        assert_eq!((resized.width, resized.height), (1280, 720));
        assert_eq!(camera.codec_string().as_deref(), Some("avc1.42E01E"));
    }

    #[test]
    fn an_h264_message_carries_kind_number_and_capture_time_before_the_access_unit() {
        let camera = h264_camera();
        publish_h264(&camera, 1, 2, 5);
        let frame = camera.latest().unwrap();
        let header = &frame.ws_head[frame.ws_head.len() - AU_HEADER_LEN..];
        assert_eq!(header[0], 0, "a delta frame");
        assert_eq!(header[1..9], 2u64.to_be_bytes());
        assert_eq!(header[9..17], 2u64.to_be_bytes());
        assert_eq!(
            frame.ws_head[1] as usize,
            AU_HEADER_LEN + frame.payload.len()
        );
    }

    #[test]
    fn a_viewer_gets_the_newest_frame_once_and_counts_what_it_skipped() {
        let camera = camera();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let viewer = Follower::default();
        assert!(camera.poll_frame(&viewer, &mut cx).is_pending());
        publish(&camera, 1);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "woken by the frame");
        let Poll::Ready(frame) = camera.poll_frame(&viewer, &mut cx) else {
            panic!("frame 1 ready")
        };
        assert_eq!(frame.frame_no, FrameNo(1));
        assert!(
            camera.poll_frame(&viewer, &mut cx).is_pending(),
            "not twice"
        );
        for n in 2..=4 {
            publish(&camera, n);
        }
        let Poll::Ready(frame) = camera.poll_frame(&viewer, &mut cx) else {
            panic!("frame 4 ready")
        };
        assert_eq!(frame.frame_no, FrameNo(4), "only the newest");
        assert_eq!(camera.counters.viewer_skips.get(), 2);
    }

    #[test]
    fn viewers_that_left_without_a_frame_are_pruned_and_live_ones_relist() {
        let camera = camera();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            // Each follower registers once; dropping it is a viewer that left.
            assert!(camera
                .poll_frame(&Follower::default(), &mut cx)
                .is_pending());
        }
        let live = Follower::default();
        assert!(camera.poll_frame(&live, &mut cx).is_pending());
        camera.add_viewer();
        assert_eq!(camera.waiters.borrow().len(), 101);
        camera.prune_waiters();
        assert!(camera.waiters.borrow().is_empty());
        assert!(camera.poll_frame(&live, &mut cx).is_pending());
        assert_eq!(
            camera.waiters.borrow().len(),
            1,
            "the live viewer listed itself again"
        );
    }
}

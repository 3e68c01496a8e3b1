//! The single writer of a ring: creates or takes over the file under an exclusive flock and
//! publishes frames.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::dir::{
    check_room, demand_path, ensure_ring_dir, feed_ring_path, open_regular, reserve_space,
    ring_path, Access, Feed,
};
use crate::futex;
use crate::h264;
use crate::mapped::{
    format_of, header_of, map_header, write_camera, write_codec_string, Layout, MapAccess,
    MappedRing, RingGeometry, RingHeader, HEADER_SIZE, KIND_INGEST, KIND_LOCAL, LAYOUT_VERSION,
    MAGIC, STATE_IDLE, STATE_OFFLINE, STATE_REPLACED, STATE_SOURCE_DOWN, STATE_STREAMING,
};
use crate::seqlock::{self, Stamp};
use crate::types::{Clock, Codec, FrameKind, MonoNanos, SystemClock};
use crate::{CameraId, Error, FrameNo, WallNanos};

/// Ring files are readable by the writer's group (the servers), writable by the writer only.
const RING_MODE: u32 = 0o640;

/// How often `create` retries when the file is replaced or created under it by another process.
const CREATE_ATTEMPTS: usize = 5;
/// How long [`RingWriter::create`] waits for an ingest writer to give up a local camera's ring.
/// A server worker looks every 100 ms, but a write to a camera that does not read can keep it
/// busy for up to 5 s first.
pub const INGEST_YIELD_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting capture tries the ring again, renewing its claim.
const INGEST_YIELD_POLL: Duration = Duration::from_millis(50);

/// How often a writer checks that its file is still sound: at its path, whole, its header as
/// written. Between checks, a file cut short is noticed as soon as the writer touches a page it
/// lost (see `Mapping::is_damaged`).
const CHECK_FILE_EVERY: Duration = Duration::from_secs(1);

/// The picture a ring carries, for viewers and `/api/cameras`. May change while the ring lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second, in thousandths (29.97 fps = 29970).
    pub fps_milli: u32,
}

/// Who writes a camera's ring, as the ring file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterKind {
    /// A capture process on this host (files from before writers were told apart count as
    /// this).
    Local,
    /// A server worker writing what a remote camera sends it (ingest).
    Ingest,
}

impl WriterKind {
    fn raw(self) -> u32 {
        match self {
            WriterKind::Local => KIND_LOCAL,
            WriterKind::Ingest => KIND_INGEST,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> WriterKind {
        if raw == KIND_INGEST {
            WriterKind::Ingest
        } else {
            WriterKind::Local
        }
    }
}

/// What a live writer tells readers about its camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// Capturing; frames are coming.
    Streaming,
    /// Alive but not capturing, because nobody watches (`--on-demand`).
    Idle,
    /// Alive, but its source failed (camera unplugged or unreachable) and is being retried.
    /// Readers report the camera offline. The next published frame means streaming again.
    SourceDown,
}

impl WriterState {
    fn raw(self) -> u32 {
        match self {
            WriterState::Streaming => STATE_STREAMING,
            WriterState::Idle => STATE_IDLE,
            WriterState::SourceDown => STATE_SOURCE_DOWN,
        }
    }
}

/// The writer of one camera's ring. Holding it means holding the ring file's exclusive lock;
/// dropping it marks the ring offline and releases the lock.
///
/// The file is the writer's to keep sound: if another process truncates, removes or scribbles
/// on it, the writer notices (when it touches a lost page, and within [`CHECK_FILE_EVERY`] in any
/// case), puts a new file at the path that continues the numbering, and carries on. Readers of
/// the old file are told to open the path again. It never takes the path from another live
/// writer: if one holds the file now at the path, this writer has lost its ring, and says so
/// with [`Error::WriterBusy`].
pub struct RingWriter {
    ring: MappedRing,
    /// Held for the writer's lifetime: the flock is what makes this process the only writer.
    lock: Flock<File>,
    path: PathBuf,
    camera: CameraId,
    kind: WriterKind,
    head: FrameNo,
    /// What readers have been told, kept here so that a new file can say it again.
    state: WriterState,
    format: VideoFormat,
    /// The codec string last written to the header (H.264 rings: from the last keyframe's SPS).
    codec_string: Option<String>,
    /// H.264 rings: a frame was not published, so the delta frames after it refer to a picture
    /// no reader has; they are refused until the next keyframe.
    chain_broken: bool,
    checked_at: MonoNanos,
    /// Set once another live writer holds the path: the pid recorded in its ring, if any.
    /// Nothing this writer publishes reaches a reader after that.
    lost_to: Option<Option<u32>>,
}

impl RingWriter {
    /// Creates `<dir>/<camera>.ring`, or takes over an existing one. An existing ring of the same
    /// geometry keeps its frames and numbering; one of another geometry (or a damaged file) is
    /// replaced by a new file that continues the numbering where it can be read. The file's
    /// space is reserved here: a full file system is an error now ([`Error::NoSpace`]), never a
    /// fault later.
    ///
    /// A camera of this host comes before a remote one: if ingest holds the ring, the ingest
    /// writer is asked to give it up and this waits up to [`INGEST_YIELD_WAIT`] for it
    /// ([`Error::HeldByIngest`] if it did not).
    pub fn create(
        dir: &Path,
        camera: &CameraId,
        geometry: RingGeometry,
    ) -> Result<RingWriter, Error> {
        RingWriter::create_for_codec(dir, camera, geometry, Codec::Jpeg)
    }

    /// [`create`](Self::create) for frames of `codec`. An existing ring of another codec is
    /// replaced, as one of another geometry is.
    pub fn create_for_codec(
        dir: &Path,
        camera: &CameraId,
        geometry: RingGeometry,
        codec: Codec,
    ) -> Result<RingWriter, Error> {
        let layout = Layout::new(geometry, codec)?;
        RingWriter::create_local(dir, camera, layout, Feed::Camera)
    }

    /// The writer of an H.264 camera's JPEG copy ([`Feed::JpegCopy`]): a JPEG ring beside the
    /// camera's, which a capture fills while someone watches a route that sends JPEG.
    pub fn create_jpeg_copy(
        dir: &Path,
        camera: &CameraId,
        geometry: RingGeometry,
    ) -> Result<RingWriter, Error> {
        let layout = Layout::new(geometry, Codec::Jpeg)?;
        RingWriter::create_local(dir, camera, layout, Feed::JpegCopy)
    }

    fn create_local(
        dir: &Path,
        camera: &CameraId,
        layout: Layout,
        feed: Feed,
    ) -> Result<RingWriter, Error> {
        let started = SystemClock.mono();
        loop {
            match RingWriter::create_as(dir, camera, layout, WriterKind::Local, feed) {
                Err(Error::HeldByIngest { .. })
                    if SystemClock.mono().since(started) < INGEST_YIELD_WAIT =>
                {
                    std::thread::sleep(INGEST_YIELD_POLL);
                }
                result => return result,
            }
        }
    }

    /// [`create`](Self::create) for a remote camera's frames (ingest): the same, except that a
    /// ring a capture on this host writes (or wrote: it may be restarting) is never taken over,
    /// [`Error::LocalCamera`].
    pub fn create_for_ingest(
        dir: &Path,
        camera: &CameraId,
        geometry: RingGeometry,
    ) -> Result<RingWriter, Error> {
        let layout = Layout::new(geometry, Codec::Jpeg)?;
        RingWriter::create_as(dir, camera, layout, WriterKind::Ingest, Feed::Camera)
    }

    fn create_as(
        dir: &Path,
        camera: &CameraId,
        layout: Layout,
        kind: WriterKind,
        feed: Feed,
    ) -> Result<RingWriter, Error> {
        ensure_ring_dir(dir)?;
        let path = feed_ring_path(dir, camera, feed);
        let claim = Claim { camera, kind };
        for _ in 0..CREATE_ATTEMPTS {
            let opened = open_regular(&path, Access::ReadWrite);
            let attempt = match opened {
                Ok(file) => take_over(file, &path, &claim, layout)?,
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    let fresh = NewRing {
                        camera,
                        kind,
                        layout,
                        head: FrameNo::NONE,
                    };
                    remove_stale_temp_files(&path);
                    let prepared = prepare(&path, &fresh)?;
                    prepared
                        .link_if_absent(&path)?
                        .then(|| prepared.into_ring())
                        .map(|(ring, lock)| RingWriter::start(ring, lock, &path, &claim))
                }
                Err(e) => return Err(e),
            };
            if let Some(writer) = attempt {
                return Ok(writer);
            }
        }
        Err(Error::io(&path)(io::Error::other(
            "the ring file kept being replaced while opening it",
        )))
    }

    /// Claims a ring whose lock we hold: records our pid, resumes after the last published frame.
    fn start(ring: MappedRing, lock: Flock<File>, path: &Path, claim: &Claim<'_>) -> RingWriter {
        let head = FrameNo(ring.header().head.load(Relaxed));
        let mut writer = RingWriter {
            ring,
            lock,
            path: path.to_owned(),
            camera: claim.camera.clone(),
            kind: claim.kind,
            head,
            state: WriterState::Streaming,
            format: VideoFormat::default(),
            codec_string: None,
            chain_broken: false,
            checked_at: SystemClock.mono(),
            lost_to: None,
        };
        writer.announce();
        writer
    }

    /// Writes who we are and what we know into the header, and wakes readers.
    fn announce(&mut self) {
        let header = self.ring.header();
        header.writer_pid.store(std::process::id(), Relaxed);
        header.writer_starts.fetch_add(1, Relaxed);
        header.writer_kind.store(self.kind.raw(), Relaxed);
        if self.kind == WriterKind::Local {
            // The ring is the local capture's again: whoever asked for it has it.
            header.local_claim.store(0, Relaxed);
        }
        header.heartbeat.store(SystemClock.mono().0, Relaxed);
        header.writer_state.store(self.state.raw(), Relaxed);
        store_format(header, self.format);
        if let Some(codec) = &self.codec_string {
            write_codec_string(header, codec);
        }
        wake_readers(header);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For an ingest writer: whether a capture on this host has asked for this camera's ring
    /// (it is waiting in [`RingWriter::create`]). The ingest writer should then be dropped
    /// soon: a local camera has the name before a remote one.
    pub fn local_capture_waits(&self) -> bool {
        self.kind == WriterKind::Ingest && self.ring.header().live_local_claim().is_some()
    }

    pub fn geometry(&self) -> RingGeometry {
        self.ring.layout().geometry()
    }

    pub fn codec(&self) -> Codec {
        self.ring.layout().codec
    }

    /// The last published frame ([`FrameNo::NONE`] if none yet).
    pub fn head(&self) -> FrameNo {
        self.head
    }

    /// The number the next [`publish`](Self::publish) will give its frame (for the COM segment).
    pub fn next_frame_no(&self) -> FrameNo {
        self.head.next()
    }

    /// Publishes one frame and wakes every waiting reader: a JPEG, or an H.264 access unit
    /// (a keyframe if it holds an IDR picture). A frame larger than a slot is refused and
    /// counted in the header; nothing is truncated. Fails only if the file had to be replaced
    /// (see [`RingWriter`]) and no new one could be made, or, on an H.264 ring, for a delta
    /// frame after a frame that was not published ([`Error::AwaitingKeyframe`]).
    pub fn publish(&mut self, payload: &[u8], capture: WallNanos) -> Result<FrameNo, Error> {
        let kind = match self.codec() {
            Codec::H264 if !h264::is_keyframe(payload) => FrameKind::Delta,
            Codec::Jpeg | Codec::H264 => FrameKind::Key,
        };
        self.publish_frame(payload, capture, kind)
    }

    /// [`publish`](Self::publish) with the frame's kind known to the caller (an encoder or an
    /// RTSP client says it). Every JPEG is a keyframe, whatever `kind` says. A keyframe of an
    /// H.264 ring also updates the header's codec string from its SPS, before readers can see
    /// the frame.
    pub fn publish_frame(
        &mut self,
        payload: &[u8],
        capture: WallNanos,
        kind: FrameKind,
    ) -> Result<FrameNo, Error> {
        let kind = if self.codec() == Codec::Jpeg {
            FrameKind::Key
        } else {
            kind
        };
        let published = self.publish_in_chain(payload, capture, kind);
        if self.codec() == Codec::H264 {
            match &published {
                Ok(_) if kind.is_key() => self.chain_broken = false,
                Ok(_) => {}
                Err(_) => self.chain_broken = true,
            }
        }
        published
    }

    fn publish_in_chain(
        &mut self,
        payload: &[u8],
        capture: WallNanos,
        kind: FrameKind,
    ) -> Result<FrameNo, Error> {
        if self.chain_broken && !kind.is_key() {
            self.ring.header().frames_rejected.fetch_add(1, Relaxed);
            return Err(Error::AwaitingKeyframe);
        }
        let slot_size = self.ring.layout().slot_size;
        if payload.len() > slot_size {
            self.ring.header().frames_rejected.fetch_add(1, Relaxed);
            return Err(Error::FrameTooLarge {
                len: payload.len(),
                slot_size,
            });
        }
        let now = SystemClock.mono();
        self.keep_file_sound(now)?;
        if kind.is_key() && self.codec() == Codec::H264 {
            self.note_codec_string(payload);
        }
        let stamp = Stamp {
            frame: self.head.next(),
            capture,
            kind,
        };
        seqlock::publish(&self.ring, stamp, payload);
        if self.ring.is_damaged() {
            // The file shrank under this very publish, so the frame reached no reader: give it
            // to the new file instead.
            self.replace_file()?;
            seqlock::publish(&self.ring, stamp, payload);
        }
        let frame = stamp.frame;
        self.head = frame;
        self.state = WriterState::Streaming;

        // Relaxed: counters and times are informational; nothing is published through them.
        let header = self.ring.header();
        let now = now.0;
        if header.writer_state.load(Relaxed) != STATE_STREAMING {
            header.writer_state.store(STATE_STREAMING, Relaxed);
        }
        header.published_at.store(now, Relaxed);
        header.heartbeat.store(now, Relaxed);
        header.frames_published.fetch_add(1, Relaxed);
        header
            .bytes_published
            .fetch_add(payload.len() as u64, Relaxed);
        wake_readers(header);
        Ok(frame)
    }

    /// A sign of life while no frame is published (an idle on-demand camera, a source
    /// reconnecting). Readers call a writer offline when this stops for longer than their limit.
    /// Also where a quiet writer notices that its file was tampered with, and replaces it.
    pub fn heartbeat(&mut self) -> Result<(), Error> {
        let now = SystemClock.mono();
        self.keep_file_sound(now)?;
        self.ring.header().heartbeat.store(now.0, Relaxed);
        Ok(())
    }

    /// Tells readers what the camera is doing; see [`WriterState`]. Publishing a frame sets
    /// [`WriterState::Streaming`] by itself.
    pub fn set_state(&mut self, state: WriterState) -> Result<(), Error> {
        self.state = state;
        let header = self.ring.header();
        header.writer_state.store(state.raw(), Relaxed);
        self.heartbeat()?;
        wake_readers(self.ring.header());
        Ok(())
    }

    /// Shorthand for [`set_state`](Self::set_state) with `Idle` or `Streaming`.
    pub fn set_idle(&mut self, idle: bool) -> Result<(), Error> {
        self.set_state(if idle {
            WriterState::Idle
        } else {
            WriterState::Streaming
        })
    }

    /// Writes the codec string of `keyframe`'s SPS to the header if it changed. Ordered before
    /// the frame by the Release stores of the publish that follows.
    fn note_codec_string(&mut self, keyframe: &[u8]) {
        let Some(codec) = h264::codec_string(keyframe) else {
            return;
        };
        if self.codec_string.as_ref() != Some(&codec) {
            write_codec_string(self.ring.header(), &codec);
            self.codec_string = Some(codec);
        }
    }

    pub fn set_video_format(&mut self, format: VideoFormat) {
        self.format = format;
        store_format(self.ring.header(), format);
    }

    /// Replaces the file if it shrank (known at once) or, once per [`CHECK_FILE_EVERY`], if it is
    /// no longer at its path, whole and as written.
    fn keep_file_sound(&mut self, now: MonoNanos) -> Result<(), Error> {
        if let Some(pid) = self.lost_to {
            return Err(Error::WriterBusy {
                path: self.path.clone(),
                pid,
            });
        }
        if self.ring.is_damaged() {
            return self.replace_file();
        }
        if now.since(self.checked_at) < CHECK_FILE_EVERY {
            return Ok(());
        }
        self.checked_at = now;
        if !self.file_is_sound() {
            return self.replace_file();
        }
        // A state scribbled over (say, "replaced") would send readers away for good while the
        // camera idles and nothing else rewrites it.
        let header = self.ring.header();
        if header.writer_state.load(Relaxed) != self.state.raw() {
            header.writer_state.store(self.state.raw(), Relaxed);
            wake_readers(header);
        }
        Ok(())
    }

    fn file_is_sound(&self) -> bool {
        let Ok(len) = self.lock.metadata().map(|m| m.len()) else {
            return false;
        };
        still_at(&self.lock, &self.path)
            && Layout::validate(self.ring.header(), len, &self.path).is_ok_and(
                |(layout, camera)| {
                    layout.geometry() == self.geometry()
                        && camera == self.camera
                        && self.ring.header().head.load(Relaxed) == self.head.0
                },
            )
    }

    /// Puts a new file at the path that continues the numbering, moves to it, and tells the
    /// readers of the old one to open the path again.
    fn replace_file(&mut self) -> Result<(), Error> {
        // The directory itself may be gone (removed with everything in it).
        if let Some(dir) = self.path.parent() {
            ensure_ring_dir(dir)?;
        }
        let fresh = NewRing {
            camera: &self.camera,
            kind: self.kind,
            layout: *self.ring.layout(),
            head: self.head,
        };
        let prepared = prepare(&self.path, &fresh)?;
        self.put_in_place(&prepared)?;
        let (ring, lock) = prepared.into_ring();
        retire_file(&self.lock, &self.path);
        self.ring = ring;
        self.lock = lock;
        self.checked_at = SystemClock.mono();
        self.announce();
        Ok(())
    }

    /// Puts `prepared` at the path in place of our own damaged file, of a file no writer holds,
    /// or of nothing; never in place of another live writer's ring.
    fn put_in_place(&mut self, prepared: &Prepared) -> Result<(), Error> {
        for _ in 0..CREATE_ATTEMPTS {
            let there = match open_regular(&self.path, Access::ReadWrite) {
                Ok(file) => file,
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    if prepared.link_if_absent(&self.path)? {
                        return Ok(());
                    }
                    // Someone created it just now: look at what it is.
                    continue;
                }
                Err(e) => return Err(e),
            };
            if same_file(&there, &self.lock) {
                return prepared.rename_to(&self.path);
            }
            match Flock::lock(there, FlockArg::LockExclusiveNonblock) {
                // Held while the new file takes its place, so no writer can take it meanwhile.
                Ok(_stale) => return prepared.rename_to(&self.path),
                Err((there, nix::errno::Errno::EWOULDBLOCK)) => {
                    let pid = pid_in(&there, &self.path);
                    self.lost_to = Some(pid);
                    return Err(Error::WriterBusy {
                        path: self.path.clone(),
                        pid,
                    });
                }
                Err((_, errno)) => return Err(Error::io(&self.path)(errno.into())),
            }
        }
        Err(Error::io(&self.path)(io::Error::other(
            "the ring file kept being replaced while putting a new one in place",
        )))
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        let header = self.ring.header();
        header.writer_state.store(STATE_OFFLINE, Relaxed);
        wake_readers(header);
    }
}

fn store_format(header: &RingHeader, format: VideoFormat) {
    header.width.store(format.width, Relaxed);
    header.height.store(format.height, Relaxed);
    header.fps_milli.store(format.fps_milli, Relaxed);
}

fn wake_readers(header: &RingHeader) {
    // SYNC POINT: Release orders this bump after the `head` store of the frame just published.
    // A reader loads the futex word before `head`; if it then misses the new head it still
    // holds the old futex value, so its FUTEX_WAIT returns at once instead of sleeping.
    header.futex.fetch_add(1, Release);
    futex::wake_all(&header.futex);
}

/// Tells the readers of a file that a new one took its place, and wakes them to reopen.
fn retire(header: &RingHeader) {
    header.writer_state.store(STATE_REPLACED, Relaxed);
    wake_readers(header);
}

/// [`retire`] for a file that may have been cut short: its header is mapped afresh (the writer's
/// own mapping of it may hold a zero page now, which no reader sees), and a file shorter than
/// its header page gets the page back, so that the word its readers sleep on exists again. The
/// file is no longer at its path, so nothing else is affected.
fn retire_file(file: &File, path: &Path) {
    if file
        .metadata()
        .is_ok_and(|meta| meta.len() < HEADER_SIZE as u64)
    {
        let _ = file.set_len(HEADER_SIZE as u64);
    }
    if let Ok(page) = map_header(file, MapAccess::Write, path) {
        retire(header_of(&page));
    }
}

/// Which camera a writer claims, and as whom.
struct Claim<'a> {
    camera: &'a CameraId,
    kind: WriterKind,
}

/// Locks an existing file and, if it is still the one at `path`, takes it over.
/// `Ok(None)`: the file was replaced or removed meanwhile; try again.
fn take_over(
    file: File,
    path: &Path,
    claim: &Claim<'_>,
    layout: Layout,
) -> Result<Option<RingWriter>, Error> {
    let camera = claim.camera;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            if claim.kind == WriterKind::Local && ask_ingest_to_yield(&file, path) {
                return Err(Error::HeldByIngest {
                    path: path.to_owned(),
                    pid: pid_in(&file, path),
                });
            }
            return Err(Error::WriterBusy {
                path: path.to_owned(),
                pid: pid_in(&file, path),
            });
        }
        Err((_, errno)) => return Err(Error::io(path)(errno.into())),
    };
    if !still_at(&lock, path) {
        return Ok(None);
    }
    let file_len = lock.metadata().map_err(Error::io(path))?.len();
    // The header page alone first, as a reader does: what it says is checked against the file
    // before anything more is mapped.
    let header_page = if file_len >= HEADER_SIZE as u64 {
        Some(map_header(&lock, MapAccess::Write, path)?)
    } else {
        None
    };
    let found = header_page.as_ref().and_then(|page| {
        Layout::validate(header_of(page), file_len, path)
            .ok()
            .map(|(found, found_camera)| (found, found_camera, header_of(page)))
    });
    if let Some((_, _, header)) = &found {
        let found_kind = WriterKind::from_raw(header.writer_kind.load(Relaxed));
        if claim.kind == WriterKind::Ingest
            && (found_kind != WriterKind::Ingest || header.live_local_claim().is_some())
        {
            return Err(Error::LocalCamera {
                path: path.to_owned(),
            });
        }
    }
    if let Some((found, found_camera, _)) = &found {
        if found.geometry() == layout.geometry()
            && found.codec == layout.codec
            && found_camera == camera
        {
            // A file from before space was reserved (or with holes punched) gets it now.
            reserve_space(&lock, layout.file_size as u64, path)?;
            let ring = MappedRing::map(&lock, layout, MapAccess::Write, path)?;
            return Ok(Some(RingWriter::start(ring, lock, path, claim)));
        }
    }
    // A ring of another geometry, codec or camera keeps its numbering going, so viewers see no
    // regression; a file that is no ring at all has none to keep.
    let old_header = found.map(|(_, _, header)| header);
    let head = old_header
        .map(|header| header.head.load(Relaxed))
        .filter(|&head| head <= FrameNo::MAX_VALID.0)
        .map_or(FrameNo::NONE, FrameNo);
    let fresh = NewRing {
        camera,
        kind: claim.kind,
        layout,
        head,
    };
    // We hold the lock of the file at the path: nobody else can be putting one there.
    let prepared = prepare(path, &fresh)?;
    prepared.rename_to(path)?;
    let (ring, new_lock) = prepared.into_ring();
    if let Some(header) = old_header {
        retire(header);
    }
    Ok(Some(RingWriter::start(ring, new_lock, path, claim)))
}

/// What a new ring file starts with.
#[derive(Clone, Copy)]
struct NewRing<'a> {
    camera: &'a CameraId,
    kind: WriterKind,
    layout: Layout,
    /// The last frame number of the ring it replaces, so numbering never goes back.
    head: FrameNo,
}

/// A complete ring in a locked temporary file beside its path, not yet visible to readers.
struct Prepared {
    tmp: TempName,
    ring: MappedRing,
    lock: Flock<File>,
}

/// The name of a temporary file, removed when dropped: after the file was renamed into place
/// there is nothing to remove, after a link or a failure the name must go.
struct TempName(PathBuf);

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Builds a complete ring in a temporary file, locked from the start (so that a leftover of a
/// crash can be told from one being filled), space reserved and header written, so that it can
/// be put at its path in one step and no reader ever sees a half-written header.
fn prepare(path: &Path, new: &NewRing<'_>) -> Result<Prepared, Error> {
    let tmp = TempName(temp_path(path));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(RING_MODE)
        .open(&tmp.0)
        .map_err(Error::io(&tmp.0))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| Error::io(&tmp.0)(errno.into()))?;
    // The umask may have narrowed the mode given at open.
    lock.set_permissions(fs::Permissions::from_mode(RING_MODE))
        .map_err(Error::io(&tmp.0))?;
    reserve_space(&lock, new.layout.file_size as u64, &tmp.0)?;
    let ring = MappedRing::map(&lock, new.layout, MapAccess::Write, &tmp.0)?;
    init_header(ring.header(), new);
    Ok(Prepared { tmp, ring, lock })
}

impl Prepared {
    /// Puts the ring at `path`, in place of whatever is there.
    fn rename_to(&self, path: &Path) -> Result<(), Error> {
        fs::rename(&self.tmp.0, path).map_err(Error::io(path))
    }

    /// Puts the ring at `path` unless something is there already (`Ok(false)`: another writer
    /// created it first).
    fn link_if_absent(&self, path: &Path) -> Result<bool, Error> {
        match fs::hard_link(&self.tmp.0, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    fn into_ring(self) -> (MappedRing, Flock<File>) {
        (self.ring, self.lock)
    }
}

/// A name no other attempt uses, even one of a process with the same pid: a leftover of a crash
/// must not block a later writer.
fn temp_path(path: &Path) -> PathBuf {
    static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let attempt = ATTEMPTS.fetch_add(1, Relaxed);
    let now = SystemClock.wall().0;
    path.with_file_name(format!(
        ".{name}.{}.{now:x}.{attempt}.tmp",
        std::process::id()
    ))
}

/// Removes the temporary files of `path`'s ring that a crashed writer left behind (16 MiB each on
/// a tmpfs): those nobody holds locked. One being filled right now is locked by its maker.
fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !(file_name.starts_with(&prefix) && file_name.ends_with(".tmp")) {
            continue;
        }
        let Ok(file) = open_regular(&entry.path(), Access::ReadWrite) else {
            continue;
        };
        if let Ok(_unused) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn init_header(header: &RingHeader, new: &NewRing<'_>) {
    let NewRing {
        camera,
        kind,
        layout,
        head,
    } = *new;
    // Relaxed throughout: the file becomes visible to readers only through the rename or link
    // that follows, a system call that orders these stores before any reader's open.
    header.version.store(LAYOUT_VERSION, Relaxed);
    header.header_size.store(HEADER_SIZE as u32, Relaxed);
    header.slot_count.store(layout.slot_count, Relaxed);
    header.format.store(format_of(layout.codec), Relaxed);
    header.slot_size.store(layout.slot_size as u64, Relaxed);
    header.slot_stride.store(layout.stride as u64, Relaxed);
    write_camera(header, camera);
    // Before the file is visible, so that no reader or ingest check ever sees a new ingest ring
    // as a local one (or the reverse).
    header.writer_kind.store(kind.raw(), Relaxed);
    header.head.store(head.0, Relaxed);
    header.magic.store(MAGIC, Relaxed);
}

/// Whether `file` is still the file named `path` (not unlinked or replaced since we opened it).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(ours), Ok(named)) => ours.dev() == named.dev() && ours.ino() == named.ino(),
        _ => false,
    }
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// For a local writer finding the ring held: if an ingest writer holds it, records (or renews)
/// this process's claim in the header (see [`RingWriter::local_capture_waits`]) and says so.
fn ask_ingest_to_yield(file: &File, path: &Path) -> bool {
    if kind_of(file, path) != Some(WriterKind::Ingest) {
        return false;
    }
    let Ok(page) = map_header(file, MapAccess::Write, path) else {
        return false;
    };
    let header = header_of(&page);
    // Relaxed: the claim is a hint between processes that nothing else is ordered by; a worker
    // that reads half of a new claim decides again at its next look, 100 ms later.
    header.local_claim_at.store(SystemClock.mono().0, Relaxed);
    header.local_claim.store(std::process::id(), Relaxed);
    true
}

/// Whether a ring file belongs to a capture on this host: its sound header says a local writer
/// made it, or a local capture's claim on it is current. One mapping of the header answers both.
fn held_for_local_capture(file: &File, path: &Path) -> bool {
    let Some(len) = file.metadata().ok().map(|meta| meta.len()) else {
        return false;
    };
    if len < HEADER_SIZE as u64 {
        return false;
    }
    let Ok(page) = map_header(file, MapAccess::Read, path) else {
        return false;
    };
    let header = header_of(&page);
    let written_locally = Layout::validate(header, len, path).is_ok()
        && WriterKind::from_raw(header.writer_kind.load(Relaxed)) != WriterKind::Ingest;
    written_locally || header.live_local_claim().is_some()
}

/// The pid recorded in a ring file's header, for the "who holds it" message.
fn pid_in(file: &File, path: &Path) -> Option<u32> {
    if file.metadata().ok()?.len() < HEADER_SIZE as u64 {
        return None;
    }
    let page = map_header(file, MapAccess::Read, path).ok()?;
    let header = header_of(&page);
    if header.magic.load(Relaxed) != MAGIC {
        return None;
    }
    Some(header.writer_pid.load(Relaxed)).filter(|&pid| pid != 0)
}

/// Whether ingest may write `camera` now, in a ring of `geometry`: it has no ring (and the
/// directory can take one: writable, with room), or an ingest ring no live writer holds. A
/// check before answering a remote camera; [`RingWriter::create_for_ingest`] decides.
pub fn ingest_may_write(
    dir: &Path,
    camera: &CameraId,
    geometry: RingGeometry,
) -> Result<(), Error> {
    let path = ring_path(dir, camera);
    let file = match open_regular(&path, Access::ReadOnly) {
        Ok(file) => file,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let layout = Layout::new(geometry, Codec::Jpeg)?;
            return check_room(dir, layout.file_size as u64);
        }
        Err(e) => return Err(e),
    };
    if held_for_local_capture(&file, &path) {
        return Err(Error::LocalCamera { path });
    }
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Taken over in place, or replaced if its geometry differs: either way the writer
        // writes the directory.
        Ok(_free) => check_room(dir, 0),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::WriterBusy {
            pid: pid_in(&file, &path),
            path,
        }),
        Err((_, errno)) => Err(Error::io(&path)(errno.into())),
    }
}

/// Removes the ring and demand files of an ingest camera that no writer has kept alive for
/// `gone_for` (its heartbeat is that old and nobody holds the ring), so that lists do not fill
/// with cameras that left. Returns whether it removed them; a local camera's ring is never
/// touched.
pub fn forget_abandoned_ingest_camera(
    dir: &Path,
    camera: &CameraId,
    gone_for: std::time::Duration,
) -> Result<bool, Error> {
    let path = ring_path(dir, camera);
    let file = match open_regular(&path, Access::ReadWrite) {
        Ok(file) => file,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    // Held while the files go, so that no writer can take the ring meanwhile.
    let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return Ok(false);
    };
    if !still_at(&lock, &path) || kind_of(&lock, &path) != Some(WriterKind::Ingest) {
        return Ok(false);
    }
    let page = map_header(&lock, MapAccess::Read, &path)?;
    let heartbeat = MonoNanos(header_of(&page).heartbeat.load(Relaxed));
    if SystemClock.mono().since(heartbeat) < gone_for {
        return Ok(false);
    }
    fs::remove_file(&path).map_err(Error::io(&path))?;
    let demand = demand_path(dir, camera);
    match fs::remove_file(&demand) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(&demand)(e)),
        _ => Ok(true),
    }
}

/// The writer kind a valid ring file says; `None` for a file that is not a ring.
fn kind_of(file: &File, path: &Path) -> Option<WriterKind> {
    let len = file.metadata().ok()?.len();
    if len < HEADER_SIZE as u64 {
        return None;
    }
    let page = map_header(file, MapAccess::Read, path).ok()?;
    let header = header_of(&page);
    Layout::validate(header, len, path).ok()?;
    Some(WriterKind::from_raw(header.writer_kind.load(Relaxed)))
}

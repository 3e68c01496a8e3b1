//! A reader of one ring: maps the file read-only, checks it, and follows the writer with its
//! own cursor.

use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{send, MsgFlags};

use crate::dir::{open_regular, Access};
use crate::futex;
use crate::mapped::{
    header_of, map_header, read_codec_string, Layout, MapAccess, MappedRing, RingGeometry,
    RingHeader, HEADER_SIZE, STATE_IDLE, STATE_OFFLINE, STATE_REPLACED, STATE_SOURCE_DOWN,
};
use crate::seqlock::{Cursor, FrameMeta, Read, ReaderStats};
use crate::sync::{acquire_u32, acquire_u64};
use crate::types::{Clock, Codec, MonoNanos, SystemClock};
use crate::wakeup::observe;
use crate::writer::{VideoFormat, WriterKind};
use crate::{CameraId, Error, FrameNo};

/// Whether a ring's writer is there, as a reader judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterStatus {
    /// Publishing (or about to: the writer is alive and capturing).
    Online,
    /// Alive but not capturing, because nobody is watching (`--on-demand`).
    Idle,
    Offline(OfflineReason),
}

impl WriterStatus {
    /// `online`, `idle` or `offline`, as in `/api/cameras`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriterStatus::Online => "online",
            WriterStatus::Idle => "idle",
            WriterStatus::Offline(_) => "offline",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineReason {
    /// The writer marked the ring offline when it stopped (or none ever started).
    Stopped,
    /// The recorded writer process no longer exists (it was killed or crashed).
    ProcessGone { pid: u32 },
    /// The writer's heartbeat is older than the reader's limit (it hangs).
    Silent { for_: Duration },
    /// The writer is alive but its camera is not: it is retrying the source.
    SourceDown,
    /// The writer moved to a new file at the same path; open it again.
    Replaced,
}

/// A snapshot of a ring's header, for status pages and `ringcast-ringctl`.
#[derive(Clone, Debug)]
pub struct RingInfo {
    pub camera: CameraId,
    pub geometry: RingGeometry,
    pub codec: Codec,
    /// The H.264 stream's codec string (`avc1.64001F`), once its first keyframe is published.
    pub codec_string: Option<String>,
    pub format: VideoFormat,
    pub head: FrameNo,
    pub writer_pid: u32,
    pub heartbeat: MonoNanos,
    pub published_at: MonoNanos,
    pub frames_published: u64,
    pub bytes_published: u64,
    pub frames_rejected: u64,
    pub writer_starts: u64,
    pub writer_kind: WriterKind,
    /// A capture on this host waiting for this ring while ingest holds it (its pid), if its
    /// claim is current.
    pub local_claim: Option<u32>,
}

/// How long [`RingReader::next_timeout`] sleeps at a time before it asks the file system
/// whether its file is still the ring.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Reads one ring. Each reader has its own cursor: it returns every frame while it keeps up
/// and skips to the newest (counting what it skipped) when it falls behind.
pub struct RingReader {
    ring: Arc<MappedRing>,
    path: PathBuf,
    camera: CameraId,
    cursor: Cursor,
    identity: (u64, u64),
}

impl RingReader {
    /// Maps `path` read-only and validates its header against the file. The first frame
    /// returned is the newest keyframe still in the ring (for JPEG: the newest frame), or the
    /// first one published after this call.
    pub fn open(path: &Path) -> Result<RingReader, Error> {
        let file = open_regular(path, Access::ReadOnly)?;
        let meta = file.metadata().map_err(Error::io(path))?;
        if meta.len() < HEADER_SIZE as u64 {
            return Err(Error::Truncated {
                path: path.to_owned(),
                expected: HEADER_SIZE as u64,
                actual: meta.len(),
            });
        }
        // The header page alone first: the rest is mapped only once the header has said how
        // large the ring is, so a hostile file cannot make us map more than a valid ring needs.
        let header_page = map_header(&file, MapAccess::Read, path)?;
        let (layout, camera) = Layout::validate(header_of(&header_page), meta.len(), path)?;
        drop(header_page);
        let ring = MappedRing::map(&file, layout, MapAccess::Read, path)?;
        let cursor = Cursor::starting_now(&ring);
        Ok(RingReader {
            ring: Arc::new(ring),
            path: path.to_owned(),
            camera,
            cursor,
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn geometry(&self) -> RingGeometry {
        self.ring.layout().geometry()
    }

    pub fn codec(&self) -> Codec {
        self.ring.layout().codec
    }

    fn header(&self) -> &RingHeader {
        self.ring.header()
    }

    /// The last published frame.
    pub fn head(&self) -> FrameNo {
        FrameNo(acquire_u64(&self.header().head))
    }

    pub fn stats(&self) -> ReaderStats {
        self.cursor.stats()
    }

    /// Copies the next frame into `out` (replacing its contents) if one is there; never blocks.
    /// This is the form for async runtimes, woken by [`signal`](Self::signal).
    pub fn try_next(&mut self, out: &mut Vec<u8>) -> Result<Option<FrameMeta>, Error> {
        match self.cursor.read(&*self.ring, out) {
            // Part of the copy may have come from a page the file lost (see `is_retired`).
            Read::Frame(_) if self.ring.is_damaged() => Ok(None),
            Read::Frame(meta) => Ok(Some(meta)),
            Read::Nothing => Ok(None),
            Read::Corrupt { frame, reason } => Err(Error::CorruptSlot {
                frame: frame.0,
                reason,
            }),
        }
    }

    /// Like [`try_next`](Self::try_next), but waits up to `timeout` for a frame to be published.
    /// Returns `None` early when the ring is [replaced](Self::is_replaced): no frame will come to
    /// this file any more, the path must be opened again. A writer that replaces its file wakes
    /// its readers; a file replaced without a wake-up is noticed within [`RECHECK_EVERY`].
    pub fn next_timeout(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<FrameMeta>, Error> {
        // No deadline at all for a timeout too long to add to now (`Duration::MAX`).
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // SYNC POINT: the futex word is loaded before `try_next` loads `head`; see
            // writer::wake_readers for why this order cannot lose a wake-up.
            let seen = acquire_u32(&self.header().futex);
            if let Some(frame) = self.try_next(out)? {
                return Ok(Some(frame));
            }
            if self.is_retired() {
                return Ok(None);
            }
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(None);
            }
            let slept_since = Instant::now();
            futex::wait(&self.header().futex, seen, left.min(RECHECK_EVERY));
            if slept_since.elapsed() >= RECHECK_EVERY && self.is_replaced() {
                return Ok(None);
            }
        }
    }

    /// The newest frame, without moving the cursor (for snapshots). `None` if no frame was
    /// ever published, the writer kept overwriting it faster than it could be copied, or it is
    /// not a keyframe (an H.264 delta frame means nothing alone).
    pub fn newest(&self, out: &mut Vec<u8>) -> Option<FrameMeta> {
        let mut cursor = Cursor::starting_at(self.head());
        match cursor.read(&*self.ring, out) {
            Read::Frame(meta) if !self.ring.is_damaged() => Some(meta),
            Read::Frame(_) | Read::Nothing | Read::Corrupt { .. } => None,
        }
    }

    /// Moves the cursor so that the next frame returned is the newest; what is passed over is
    /// counted as skipped.
    pub fn skip_to_newest(&mut self) {
        let head = self.head();
        if head != FrameNo::NONE {
            self.cursor.skip_to(head);
        }
    }

    pub fn info(&self) -> RingInfo {
        let h = self.header();
        RingInfo {
            camera: self.camera.clone(),
            geometry: self.geometry(),
            codec: self.codec(),
            codec_string: read_codec_string(h),
            format: VideoFormat {
                width: h.width.load(Relaxed),
                height: h.height.load(Relaxed),
                fps_milli: h.fps_milli.load(Relaxed),
            },
            head: self.head(),
            writer_pid: h.writer_pid.load(Relaxed),
            heartbeat: MonoNanos(h.heartbeat.load(Relaxed)),
            published_at: MonoNanos(h.published_at.load(Relaxed)),
            frames_published: h.frames_published.load(Relaxed),
            bytes_published: h.bytes_published.load(Relaxed),
            frames_rejected: h.frames_rejected.load(Relaxed),
            writer_starts: h.writer_starts.load(Relaxed),
            writer_kind: WriterKind::from_raw(h.writer_kind.load(Relaxed)),
            local_claim: h.live_local_claim(),
        }
    }

    /// The writer's status now; see [`writer_status_at`](Self::writer_status_at).
    pub fn writer_status(&self, silent_limit: Duration) -> WriterStatus {
        self.writer_status_at(SystemClock.mono(), silent_limit)
    }

    /// The writer's status as of `now`: offline if it said so, if its process is gone, or if its
    /// heartbeat is older than `silent_limit`.
    pub fn writer_status_at(&self, now: MonoNanos, silent_limit: Duration) -> WriterStatus {
        let h = self.header();
        let state = h.writer_state.load(Relaxed);
        match state {
            STATE_OFFLINE => return WriterStatus::Offline(OfflineReason::Stopped),
            STATE_REPLACED => return WriterStatus::Offline(OfflineReason::Replaced),
            _ => {}
        }
        let pid = h.writer_pid.load(Relaxed);
        if !process_exists(pid) {
            return WriterStatus::Offline(OfflineReason::ProcessGone { pid });
        }
        let silent_for = now.since(MonoNanos(h.heartbeat.load(Relaxed)));
        if silent_for > silent_limit {
            return WriterStatus::Offline(OfflineReason::Silent { for_: silent_for });
        }
        match state {
            STATE_IDLE => WriterStatus::Idle,
            STATE_SOURCE_DOWN => WriterStatus::Offline(OfflineReason::SourceDown),
            _ => WriterStatus::Online,
        }
    }

    /// The mapping, shared with a [`RingWatcher`](crate::RingWatcher) thread.
    pub(crate) fn mapped(&self) -> Arc<MappedRing> {
        Arc::clone(&self.ring)
    }

    /// Whether the ring itself says this reader must open the path again: its writer moved to a
    /// new file, or the file shrank under the mapping. Costs no system call, so an event loop
    /// can ask on every wake-up; [`is_replaced`](Self::is_replaced) also asks the file system.
    pub fn is_retired(&self) -> bool {
        self.ring.is_damaged() || self.header().writer_state.load(Relaxed) == STATE_REPLACED
    }

    /// Whether this reader should be dropped and the path opened again: it is
    /// [retired](Self::is_retired), or the file at our path is no longer the one we mapped
    /// (removed or replaced), or it is shorter than the ring (cut short under us).
    pub fn is_replaced(&self) -> bool {
        if self.is_retired() {
            return true;
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                (meta.dev(), meta.ino()) != self.identity
                    || meta.len() < self.ring.layout().file_size as u64
            }
            Err(_) => true,
        }
    }

    /// Returns a socket that becomes readable whenever a frame may be waiting, and at least every
    /// `tick` (so an event loop can also notice an offline writer). A thread of this process
    /// waits on the ring's futex and writes a byte to the socket's peer; it ends within one
    /// `tick` after the returned socket is dropped. Read and discard the bytes, then call
    /// [`try_next`](Self::try_next) until it returns `None`.
    pub fn signal(&self, tick: Duration) -> Result<UnixStream, Error> {
        let (ours, theirs) = UnixStream::pair().map_err(Error::io(&self.path))?;
        ours.set_nonblocking(true).map_err(Error::io(&self.path))?;
        theirs
            .set_nonblocking(true)
            .map_err(Error::io(&self.path))?;
        let ring = Arc::clone(&self.ring);
        // Read before the socket is handed out: every change after it gets a poke.
        let last = acquire_u32(&ring.header().futex);
        std::thread::Builder::new()
            .name(format!("ring-signal-{}", self.camera))
            .spawn(move || signal_loop(&ring, &ours, last, tick))
            .map_err(Error::io(&self.path))?;
        Ok(theirs)
    }
}

/// The waiting thread behind [`RingReader::signal`] (and [`RingWatcher`](crate::RingWatcher)'s
/// fallback on kernels without FUTEX_WAITV): pokes the socket after every change of the ring's
/// futex word since `last` (the value seen when the socket was handed out), and at least every
/// `tick`. A wake-up that changes nothing still pokes: it costs the reader one `try_next`.
pub(crate) fn signal_loop(ring: &MappedRing, peer: &UnixStream, mut last: u32, tick: Duration) {
    let futex_word = &ring.header().futex;
    loop {
        futex::wait(futex_word, last, tick);
        // Woken, timed out or interrupted: a poke either way, and the value to sleep on next.
        observe(futex_word, &mut last);
        // A full socket already holds an unread wake-up, which is all the reader needs.
        match send(
            peer.as_raw_fd(),
            &[1],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists but belongs to someone else.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

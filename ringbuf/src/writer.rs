//! The single writer of a ring: creates or takes over the file under an exclusive flock and
//! publishes frames.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Relaxed, Release};

use memmap2::MmapMut;
use nix::fcntl::{Flock, FlockArg};

use crate::dir::{ensure_ring_dir, open_regular, ring_path, Access};
use crate::futex;
use crate::mapped::{
    header_of, write_camera, Layout, MappedRing, RingGeometry, RingHeader, FORMAT_JPEG,
    HEADER_SIZE, LAYOUT_VERSION, MAGIC, STATE_IDLE, STATE_OFFLINE, STATE_SOURCE_DOWN,
    STATE_STREAMING,
};
use crate::seqlock;
use crate::types::{Clock, SystemClock};
use crate::{CameraId, Error, FrameNo, WallNanos};

/// Ring files are readable by the writer's group (the servers), writable by the writer only.
const RING_MODE: u32 = 0o640;

/// How often `create` retries when the file is replaced or created under it by another process.
const CREATE_ATTEMPTS: usize = 5;

/// The picture a ring carries, for viewers and `/api/cameras`. May change while the ring lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second, in thousandths (29.97 fps = 29970).
    pub fps_milli: u32,
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
pub struct RingWriter {
    ring: MappedRing<MmapMut>,
    /// Held for the writer's lifetime: the flock is what makes this process the only writer.
    _lock: Flock<File>,
    path: PathBuf,
    head: FrameNo,
}

impl RingWriter {
    /// Creates `<dir>/<camera>.ring`, or takes over an existing one. An existing ring of the same
    /// geometry keeps its frames and numbering; one of another geometry (or a damaged file) is
    /// replaced by a new file that continues the numbering where it can be read.
    pub fn create(
        dir: &Path,
        camera: &CameraId,
        geometry: RingGeometry,
    ) -> Result<RingWriter, Error> {
        let layout = Layout::for_geometry(geometry)?;
        ensure_ring_dir(dir)?;
        let path = ring_path(dir, camera);
        for _ in 0..CREATE_ATTEMPTS {
            let opened = open_regular(&path, Access::ReadWrite);
            let attempt = match opened {
                Ok(file) => take_over(file, &path, camera, layout)?,
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    let fresh = NewRing {
                        camera,
                        layout,
                        head: FrameNo::NONE,
                    };
                    create_file(&path, &fresh, Placement::IfAbsent)?
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn geometry(&self) -> RingGeometry {
        self.ring.layout().geometry()
    }

    /// The last published frame ([`FrameNo::NONE`] if none yet).
    pub fn head(&self) -> FrameNo {
        self.head
    }

    /// The number the next [`publish`](Self::publish) will give its frame (for the COM segment).
    pub fn next_frame_no(&self) -> FrameNo {
        self.head.next()
    }

    /// Publishes one frame and wakes every waiting reader. A frame larger than a slot is refused
    /// and counted in the header; nothing is truncated.
    pub fn publish(&mut self, payload: &[u8], capture: WallNanos) -> Result<FrameNo, Error> {
        let header = self.ring.header();
        let slot_size = self.ring.layout().slot_size;
        if payload.len() > slot_size {
            header.frames_rejected.fetch_add(1, Relaxed);
            return Err(Error::FrameTooLarge {
                len: payload.len(),
                slot_size,
            });
        }
        let frame = self.head.next();
        seqlock::publish(&self.ring, frame, payload, capture);
        self.head = frame;

        // Relaxed: counters and times are informational; nothing is published through them.
        let now = SystemClock.mono().0;
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
    pub fn heartbeat(&self) {
        self.ring
            .header()
            .heartbeat
            .store(SystemClock.mono().0, Relaxed);
    }

    /// Tells readers what the camera is doing; see [`WriterState`]. Publishing a frame sets
    /// [`WriterState::Streaming`] by itself.
    pub fn set_state(&self, state: WriterState) {
        let header = self.ring.header();
        header.writer_state.store(state.raw(), Relaxed);
        self.heartbeat();
        wake_readers(header);
    }

    /// Shorthand for [`set_state`](Self::set_state) with `Idle` or `Streaming`.
    pub fn set_idle(&self, idle: bool) {
        self.set_state(if idle {
            WriterState::Idle
        } else {
            WriterState::Streaming
        });
    }

    pub fn set_video_format(&self, format: VideoFormat) {
        let header = self.ring.header();
        header.width.store(format.width, Relaxed);
        header.height.store(format.height, Relaxed);
        header.fps_milli.store(format.fps_milli, Relaxed);
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        let header = self.ring.header();
        header.writer_state.store(STATE_OFFLINE, Relaxed);
        wake_readers(header);
    }
}

fn wake_readers(header: &RingHeader) {
    // SYNC POINT: Release orders this bump after the `head` store of the frame just published.
    // A reader loads the futex word before `head`; if it then misses the new head it still
    // holds the old futex value, so its FUTEX_WAIT returns at once instead of sleeping.
    header.futex.fetch_add(1, Release);
    futex::wake_all(&header.futex);
}

/// Locks an existing file and, if it is still the one at `path`, takes it over.
/// `Ok(None)`: the file was replaced or removed meanwhile; try again.
fn take_over(
    file: File,
    path: &Path,
    camera: &CameraId,
    layout: Layout,
) -> Result<Option<RingWriter>, Error> {
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(Error::WriterBusy {
                path: path.to_owned(),
                pid: pid_in(&file),
            })
        }
        Err((_, errno)) => return Err(Error::io(path)(errno.into())),
    };
    if !still_at(&lock, path) {
        return Ok(None);
    }
    let file_len = lock.metadata().map_err(Error::io(path))?.len();
    let previous = if file_len >= HEADER_SIZE as u64 {
        // SAFETY: we hold the exclusive lock, so no cooperating writer changes the file's size
        // while it is mapped; readers only read it, through atomics (see mapped::header_of).
        let map = unsafe { MmapMut::map_mut(&*lock) }.map_err(Error::io(path))?;
        Layout::validate(header_of(&map), file_len, path)
            .ok()
            .map(|(found, found_camera)| (map, found, found_camera))
    } else {
        None
    };
    match previous {
        Some((map, found, found_camera))
            if found.geometry() == layout.geometry()
                && found_camera == *camera
                && header_of(&map).head.load(Relaxed) <= FrameNo::MAX_VALID.0 =>
        {
            Ok(Some(start(MappedRing::new(map, found), lock, path)))
        }
        other => {
            // Keep the numbering going across a geometry change, so viewers see no regression.
            let head = other
                .map(|(map, _, _)| header_of(&map).head.load(Relaxed))
                .filter(|&h| h <= FrameNo::MAX_VALID.0)
                .map_or(FrameNo::NONE, FrameNo);
            create_file(
                path,
                &NewRing {
                    camera,
                    layout,
                    head,
                },
                Placement::Replace,
            )
        }
    }
}

/// Whether a new file may take the place of an existing one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    IfAbsent,
    Replace,
}

/// What a new ring file starts with.
#[derive(Clone, Copy)]
struct NewRing<'a> {
    camera: &'a CameraId,
    layout: Layout,
    /// The last frame number of the ring it replaces, so numbering never goes back.
    head: FrameNo,
}

/// Builds a complete ring in a temporary file, locked, then puts it at `path` in one step, so no
/// reader ever sees a half-written header. `Ok(None)`: another writer created `path` first.
fn create_file(
    path: &Path,
    ring: &NewRing<'_>,
    placement: Placement,
) -> Result<Option<RingWriter>, Error> {
    let tmp = temp_path(path);
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(RING_MODE)
        .open(&tmp)
        .map_err(Error::io(&tmp))?;
    let result = fill_and_place(file, &tmp, path, ring, placement);
    // The temporary name is gone on success (renamed) or must go on failure; either way a
    // leftover is ours to remove, and a missing one is fine.
    let _ = fs::remove_file(&tmp);
    result
}

fn fill_and_place(
    file: File,
    tmp: &Path,
    path: &Path,
    new: &NewRing<'_>,
    placement: Placement,
) -> Result<Option<RingWriter>, Error> {
    let layout = new.layout;
    // The umask may have narrowed the mode given at open.
    file.set_permissions(fs::Permissions::from_mode(RING_MODE))
        .map_err(Error::io(tmp))?;
    file.set_len(layout.file_size as u64)
        .map_err(Error::io(tmp))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| Error::io(tmp)(errno.into()))?;
    // SAFETY: the file is new, sized above, and only this process knows its name yet.
    let map = unsafe { MmapMut::map_mut(&*lock) }.map_err(Error::io(tmp))?;
    let ring = MappedRing::new(map, layout);
    init_header(ring.header(), new);
    match placement {
        Placement::Replace => fs::rename(tmp, path).map_err(Error::io(path))?,
        Placement::IfAbsent => match fs::hard_link(tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(Error::io(path)(e)),
        },
    }
    Ok(Some(start(ring, lock, path)))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn init_header(header: &RingHeader, new: &NewRing<'_>) {
    let NewRing {
        camera,
        layout,
        head,
    } = *new;
    // Relaxed throughout: the file becomes visible to readers only through the rename or link
    // that follows, a system call that orders these stores before any reader's open.
    header.version.store(LAYOUT_VERSION, Relaxed);
    header.header_size.store(HEADER_SIZE as u32, Relaxed);
    header.slot_count.store(layout.slot_count, Relaxed);
    header.format.store(FORMAT_JPEG, Relaxed);
    header.slot_size.store(layout.slot_size as u64, Relaxed);
    header.slot_stride.store(layout.stride as u64, Relaxed);
    write_camera(header, camera);
    header.head.store(head.0, Relaxed);
    header.magic.store(MAGIC, Relaxed);
}

/// Claims a ring whose lock we hold: records our pid, resumes after the last published frame.
fn start(ring: MappedRing<MmapMut>, lock: Flock<File>, path: &Path) -> RingWriter {
    let header = ring.header();
    header.writer_pid.store(std::process::id(), Relaxed);
    header.writer_starts.fetch_add(1, Relaxed);
    header.heartbeat.store(SystemClock.mono().0, Relaxed);
    header.writer_state.store(STATE_STREAMING, Relaxed);
    let head = FrameNo(header.head.load(Relaxed));
    wake_readers(header);
    RingWriter {
        ring,
        _lock: lock,
        path: path.to_owned(),
        head,
    }
}

/// Whether `file` is still the file named `path` (not unlinked or replaced since we opened it).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(ours), Ok(named)) => ours.dev() == named.dev() && ours.ino() == named.ino(),
        _ => false,
    }
}

/// The pid recorded in a ring file's header, for the "who holds it" message.
fn pid_in(file: &File) -> Option<u32> {
    let len = file.metadata().ok()?.len();
    if len < HEADER_SIZE as u64 {
        return None;
    }
    // SAFETY: read-only mapping of a file another writer holds; the header is read through
    // atomics only (see mapped::header_of). Only the header page is mapped.
    let map = unsafe { memmap2::MmapOptions::new().len(HEADER_SIZE).map(file) }.ok()?;
    let header = header_of(&map);
    if header.magic.load(Relaxed) != MAGIC {
        return None;
    }
    Some(header.writer_pid.load(Relaxed)).filter(|&pid| pid != 0)
}

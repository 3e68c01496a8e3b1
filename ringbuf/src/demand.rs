//! Demand files: how many viewers each server worker has for a camera, so that an on-demand
//! capture stops when nobody watches and starts the moment somebody does (DESIGN.md, "Demand").
//!
//! `<ring-dir>/<camera>.demand` is one page: a small header (magic, version, a futex word bumped
//! on every change) and [`CELLS`] cells of `{pid, viewers, heartbeat}`. Each server worker claims
//! one cell and keeps it current; capture sums the live cells and sleeps on the futex word. A
//! worker that dies leaves a cell whose heartbeat stops; readers ignore it after their expiry, and
//! the next worker to claim a cell may take it over.
//!
//! Server workers may write the file, so capture must not trust it: every field is an atomic
//! (nothing written there is undefined behaviour), the mapping survives the file being truncated
//! (see `mapping`), and a [`DemandFile`] maps the file anew when it was truncated, removed or
//! replaced. A worker whose cell was lost that way, or scribbled over, claims one again at its
//! next heartbeat.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::dir::{
    ensure_ring_dir, feed_demand_path, feed_ring_path, open_regular, reserve_space, Access, Feed,
};
use crate::futex;
use crate::mapping::{Atomics, Mapping};
use crate::sync::acquire_u32;
use crate::types::{Clock, MonoNanos, SystemClock};
use crate::{CameraId, Error};

const MAGIC: u64 = u64::from_le_bytes(*b"RCDEMAND");
const VERSION: u32 = 1;
/// Cells per file: the most server workers that can report demand for one camera.
pub const CELLS: usize = 64;
const FILE_SIZE: usize = 4096;
/// Demand files are written by server workers, which may run as another user of the group
/// (see `dir::ensure_ring_dir`).
const DEMAND_MODE: u32 = 0o660;

/// How old a cell's heartbeat may be before its viewers no longer count. Workers beat every
/// second; a few missed beats mean the worker is gone.
pub const DEFAULT_CELL_EXPIRY: Duration = Duration::from_secs(5);

/// How often a demand file checks that its path still names the file it mapped.
const CHECK_PATH_EVERY: Duration = Duration::from_secs(1);

#[repr(C)]
struct DemandHeader {
    magic: AtomicU64,
    version: AtomicU32,
    cell_count: AtomicU32,
    /// Bumped whenever a cell's viewer count changes; capture FUTEX_WAITs on it.
    futex: AtomicU32,
    /// Up to the cells' 16-byte alignment, spelled out: a shared reference to the page must not
    /// cover bytes that are not atomics, since other processes may write them.
    _reserved: [AtomicU32; 3],
}

#[repr(C, align(16))]
struct Cell {
    pid: AtomicU32,
    viewers: AtomicU32,
    heartbeat: AtomicU64,
}

impl Cell {
    /// Whether the cell's worker beat recently enough, as of `now`. A heartbeat in the future
    /// can only be scribbled: it does not keep a cell alive forever.
    fn is_alive(&self, now: MonoNanos, expiry: Duration) -> bool {
        let beat = MonoNanos(self.heartbeat.load(Relaxed));
        self.pid.load(Acquire) != 0 && now.since(beat) <= expiry && beat.since(now) <= expiry
    }
}

#[repr(C)]
struct DemandPage {
    header: DemandHeader,
    cells: [Cell; CELLS],
}

// SAFETY: atomic integers, structs and arrays of them only (`repr(C)`, no padding: checked
// below).
unsafe impl Atomics for DemandPage {}

const _: () = assert!(std::mem::size_of::<DemandPage>() <= FILE_SIZE);
const _: () = assert!(std::mem::size_of::<DemandHeader>() == 32);
const _: () = assert!(std::mem::size_of::<Cell>() == 16);
const _: () =
    assert!(std::mem::size_of::<DemandPage>() == 32 + CELLS * std::mem::size_of::<Cell>());

/// One mapping of the file, and which file it was.
struct Mapped {
    map: Mapping,
    identity: (u64, u64),
}

impl Mapped {
    fn page(&self) -> &DemandPage {
        self.map.atomics_at(0)
    }
}

/// A mapped demand file. Both sides open it with [`DemandFile::open`], which creates it if it
/// is missing.
pub struct DemandFile {
    path: PathBuf,
    /// The ring the demand is for: a demand file removed after its ring is not made again.
    ring: PathBuf,
    current: RwLock<Arc<Mapped>>,
    /// CLOCK_MONOTONIC ns of the last check that the path still names the mapped file.
    path_checked: AtomicU64,
}

impl DemandFile {
    pub fn open(dir: &Path, camera: &CameraId) -> Result<Arc<DemandFile>, Error> {
        DemandFile::open_feed(dir, camera, Feed::Camera)
    }

    /// The demand file of one of a camera's feeds.
    pub fn open_feed(dir: &Path, camera: &CameraId, feed: Feed) -> Result<Arc<DemandFile>, Error> {
        ensure_ring_dir(dir)?;
        let path = feed_demand_path(dir, camera, feed);
        let mapped = map_file(&path)?;
        Ok(Arc::new(DemandFile {
            path,
            ring: feed_ring_path(dir, camera, feed),
            current: RwLock::new(Arc::new(mapped)),
            path_checked: AtomicU64::new(SystemClock.mono().0),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping as it is, never made anew (for a cell withdrawing: a demand file removed on
    /// purpose must not come back for it).
    fn current(&self) -> Arc<Mapped> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The mapping to use now: the current one, or a new one if the file was truncated,
    /// removed or replaced under it. If no new one can be made, the old one serves (a damaged
    /// page reads as zeros: no viewers) and the next call tries again.
    fn mapped(&self) -> Arc<Mapped> {
        // A panic while holding the lock cannot leave it inconsistent (one pointer swap), so a
        // poisoned lock is still usable.
        let current = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        if current.map.is_damaged() || !self.still_at_path(&current) {
            return self.remap(current);
        }
        current
    }

    /// Whether the path still names the mapped file; asked of the file system at most once per
    /// [`CHECK_PATH_EVERY`].
    fn still_at_path(&self, mapped: &Mapped) -> bool {
        let now = SystemClock.mono();
        let checked = MonoNanos(self.path_checked.load(Relaxed));
        if now.since(checked) < CHECK_PATH_EVERY {
            return true;
        }
        self.path_checked.store(now.0, Relaxed);
        fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == mapped.identity)
    }

    fn remap(&self, stale: Arc<Mapped>) -> Arc<Mapped> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, &stale) {
            return Arc::clone(&current);
        }
        // A demand file serves a ring. Once the ring is gone (an ingest camera forgotten:
        // `forget_abandoned_ingest_camera` removes the ring, then the demand file), a process
        // still holding the old mapping must not bring the demand file back as an orphan.
        if !self.ring.exists() {
            return stale;
        }
        match map_file(&self.path) {
            // The ring went while the file was made, perhaps after its demand file was removed:
            // take back what was made. Made before the ring went, the remover removes it.
            Ok(fresh) if !self.ring.exists() => {
                remove_if_same(&self.path, fresh.identity);
                stale
            }
            Ok(fresh) => {
                *current = Arc::new(fresh);
                Arc::clone(&current)
            }
            Err(_) => stale,
        }
    }

    /// Viewers across all workers whose cells are alive as of `now`.
    pub fn viewers_at(&self, now: MonoNanos, expiry: Duration) -> u64 {
        self.mapped()
            .page()
            .cells
            .iter()
            .filter(|cell| cell.is_alive(now, expiry))
            .map(|cell| u64::from(cell.viewers.load(Relaxed)))
            .sum()
    }

    pub fn viewers(&self, expiry: Duration) -> u64 {
        self.viewers_at(SystemClock.mono(), expiry)
    }

    /// The change counter; pass it to [`wait_for_change`](Self::wait_for_change).
    pub fn generation(&self) -> u32 {
        acquire_u32(&self.mapped().page().header.futex)
    }

    /// Sleeps until a worker changes its viewer count after `generation` was read, or `timeout`.
    pub fn wait_for_change(&self, generation: u32, timeout: Duration) {
        futex::wait(&self.mapped().page().header.futex, generation, timeout);
    }

    /// Takes a free cell (or one whose worker died) for this process.
    pub fn claim_cell(self: &Arc<Self>) -> Result<DemandCell, Error> {
        let index = self.claim_index()?;
        Ok(DemandCell {
            file: Arc::clone(self),
            index: AtomicUsize::new(index),
            viewers: AtomicU32::new(0),
        })
    }

    fn claim_index(&self) -> Result<usize, Error> {
        let mapped = self.mapped();
        let me = std::process::id();
        let now = SystemClock.mono();
        for (index, cell) in mapped.page().cells.iter().enumerate() {
            let pid = cell.pid.load(Acquire);
            if pid != 0 && cell.is_alive(now, DEFAULT_CELL_EXPIRY) {
                continue;
            }
            // Heartbeat first, so the cell never looks both ours and expired.
            cell.heartbeat.store(now.0, Relaxed);
            if cell.pid.compare_exchange(pid, me, AcqRel, Acquire).is_ok() {
                cell.viewers.store(0, Relaxed);
                return Ok(index);
            }
        }
        Err(Error::io(&self.path)(io::Error::other(format!(
            "all {CELLS} demand cells are in use"
        ))))
    }
}

/// One worker's cell in a demand file. Dropping it withdraws the worker's viewers.
pub struct DemandCell {
    file: Arc<DemandFile>,
    index: AtomicUsize,
    /// The count this worker reports, kept here so that a lost or overwritten cell can be
    /// filled in again.
    viewers: AtomicU32,
}

impl DemandCell {
    /// Records this worker's viewer count (and a heartbeat); wakes capture if it changed.
    pub fn set_viewers(&self, viewers: u32) {
        self.viewers.store(viewers, Relaxed);
        self.report();
    }

    /// Keeps the cell alive without changing the count. Call at least every second. A cell
    /// that is no longer this process's (the file was replaced, another worker took it while
    /// this one stalled, or it was scribbled over) is claimed again; a count overwritten is
    /// written again.
    pub fn heartbeat(&self) {
        self.report();
    }

    /// Writes heartbeat and count into the cell, if it is still ours; else into a new one.
    fn report(&self) {
        let mapped = self.file.mapped();
        let me = std::process::id();
        let mut index = self.index.load(Relaxed);
        if mapped.page().cells[index].pid.load(Acquire) != me {
            match self.file.claim_index() {
                Ok(claimed) => {
                    index = claimed;
                    self.index.store(index, Relaxed);
                }
                // All cells taken: nothing to write into until one frees up.
                Err(_) => return,
            }
        }
        let cell = &mapped.page().cells[index];
        cell.heartbeat.store(SystemClock.mono().0, Relaxed);
        let viewers = self.viewers.load(Relaxed);
        if cell.viewers.swap(viewers, Relaxed) != viewers {
            notify(&mapped);
        }
    }
}

impl Drop for DemandCell {
    fn drop(&mut self) {
        let mapped = self.file.current();
        let cell = &mapped.page().cells[self.index.load(Relaxed)];
        if cell.pid.load(Acquire) != std::process::id() {
            return;
        }
        cell.viewers.store(0, Relaxed);
        cell.pid.store(0, Release);
        notify(&mapped);
    }
}

fn notify(mapped: &Mapped) {
    let futex = &mapped.page().header.futex;
    // SYNC POINT: Release orders the viewer count stored before it ahead of the bump; capture
    // reads the generation (Acquire) before summing, so a change after its read always moves
    // the word it waits on.
    futex.fetch_add(1, Release);
    futex::wake_all(futex);
}

/// Opens (creating if needed) and maps the demand file at `path`, claiming it if it is new. A
/// file that is not a demand file (scribbled over, or something else under its name) is replaced
/// by a new one: demand is only what the workers report now, and they report it again.
fn map_file(path: &Path) -> Result<Mapped, Error> {
    let mapped = map_existing(path)?;
    if is_demand_file(&mapped) {
        return Ok(mapped);
    }
    put_fresh_file(path)?;
    let mapped = map_existing(path)?;
    if is_demand_file(&mapped) {
        Ok(mapped)
    } else {
        Err(Error::BadMagic {
            path: path.to_owned(),
        })
    }
}

fn map_existing(path: &Path) -> Result<Mapped, Error> {
    let file = open_or_create(path)?;
    let meta = file.metadata().map_err(Error::io(path))?;
    Ok(Mapped {
        map: Mapping::read_write(&file, FILE_SIZE, path)?,
        identity: (meta.dev(), meta.ino()),
    })
}

/// Whether the file is a demand file, making it one if it is new (all zeros).
fn is_demand_file(mapped: &Mapped) -> bool {
    let header = &mapped.page().header;
    // A zero magic is a file created just now by us or by a racing peer (or cut short and grown
    // again): claim it. Only a compare-and-swap from zero initialises, so two cannot both do it.
    let _ = header
        .magic
        .compare_exchange(0, MAGIC, AcqRel, Acquire)
        .map(|_| {
            header.version.store(VERSION, Relaxed);
            header.cell_count.store(CELLS as u32, Relaxed);
        });
    header.magic.load(Acquire) == MAGIC
}

/// Removes the file at `path` if it is still the one with `identity` (device, inode).
fn remove_if_same(path: &Path, identity: (u64, u64)) {
    if fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
        let _ = fs::remove_file(path);
    }
}

/// Puts a new, empty demand file at `path` in one step (readers never see a half-made one).
fn put_fresh_file(path: &Path) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:x}.tmp",
        std::process::id(),
        SystemClock.wall().0
    ));
    let made = open_or_create(&tmp).and_then(|_| fs::rename(&tmp, path).map_err(Error::io(path)));
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

fn open_or_create(path: &Path) -> Result<File, Error> {
    let file = open_regular(path, Access::Create { mode: DEMAND_MODE })?;
    if file.metadata().map_err(Error::io(path))?.len() == 0 {
        // Only a file we (or a racing peer) just created is empty; the umask may have narrowed
        // its mode.
        let _ = file.set_permissions(fs::Permissions::from_mode(DEMAND_MODE));
    }
    // Every time, not only at creation: a file cut short by someone gets its page back, and a
    // full file system is an error here rather than a fault later.
    reserve_space(&file, FILE_SIZE as u64, path)?;
    Ok(file)
}

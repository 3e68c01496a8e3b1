//! Demand files: how many viewers each server worker has for a camera, so that an on-demand
//! capture stops when nobody watches and starts the moment somebody does (DESIGN.md, "Demand").
//!
//! `<ring-dir>/<camera>.demand` is one page: a small header (magic, version, a futex word bumped
//! on every change) and [`CELLS`] cells of `{pid, viewers, heartbeat}`. Each server worker claims
//! one cell and keeps it current; capture sums the live cells and sleeps on the futex word. A
//! worker that dies leaves a cell whose heartbeat stops; readers ignore it after their expiry, and
//! the next worker to claim a cell may take it over.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapMut;

use crate::dir::{demand_path, ensure_ring_dir, open_regular, Access};
use crate::futex;
use crate::types::{Clock, MonoNanos, SystemClock};
use crate::{CameraId, Error};

const MAGIC: u64 = u64::from_le_bytes(*b"RCDEMAND");
const VERSION: u32 = 1;
/// Cells per file: the most server workers that can report demand for one camera.
pub const CELLS: usize = 64;
const FILE_SIZE: usize = 4096;
/// Demand files are written by server workers, which may run as another user of the group.
const DEMAND_MODE: u32 = 0o660;

/// How old a cell's heartbeat may be before its viewers no longer count. Workers beat every
/// second; a few missed beats mean the worker is gone.
pub const DEFAULT_CELL_EXPIRY: Duration = Duration::from_secs(5);

#[repr(C)]
struct DemandHeader {
    magic: AtomicU64,
    version: AtomicU32,
    cell_count: AtomicU32,
    /// Bumped whenever a cell's viewer count changes; capture FUTEX_WAITs on it.
    futex: AtomicU32,
    _reserved: AtomicU32,
}

#[repr(C, align(16))]
struct Cell {
    pid: AtomicU32,
    viewers: AtomicU32,
    heartbeat: AtomicU64,
}

#[repr(C)]
struct DemandPage {
    header: DemandHeader,
    cells: [Cell; CELLS],
}

const _: () = assert!(std::mem::size_of::<DemandPage>() <= FILE_SIZE);

/// A mapped demand file. Both sides open it with [`DemandFile::open`], which creates it if it
/// is missing or not a demand file.
pub struct DemandFile {
    map: MmapMut,
    path: PathBuf,
}

impl DemandFile {
    pub fn open(dir: &Path, camera: &CameraId) -> Result<Arc<DemandFile>, Error> {
        ensure_ring_dir(dir)?;
        let path = demand_path(dir, camera);
        let file = open_or_create(&path)?;
        // SAFETY: the file is FILE_SIZE bytes (open_or_create sizes it; nobody shrinks it) and
        // is only ever accessed through the atomics of DemandPage, by every process.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(Error::io(&path))?;
        let demand = DemandFile { map, path };
        demand.check()?;
        Ok(Arc::new(demand))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn page(&self) -> &DemandPage {
        // SAFETY: the mapping is FILE_SIZE >= size_of::<DemandPage>() bytes and page-aligned;
        // DemandPage is atomics only (valid for every bit pattern) and is accessed only
        // atomically by every process.
        unsafe { &*self.map.as_ptr().cast::<DemandPage>() }
    }

    fn check(&self) -> Result<(), Error> {
        let header = &self.page().header;
        // A zero magic is a file created just now by us or by a racing peer: claim it. Only a
        // compare-and-swap from zero initialises, so two creators cannot both do it.
        let _ = header
            .magic
            .compare_exchange(0, MAGIC, AcqRel, Acquire)
            .map(|_| {
                header.version.store(VERSION, Relaxed);
                header.cell_count.store(CELLS as u32, Relaxed);
            });
        if header.magic.load(Acquire) != MAGIC {
            return Err(Error::BadMagic {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Viewers across all workers whose cells are alive as of `now`.
    pub fn viewers_at(&self, now: MonoNanos, expiry: Duration) -> u64 {
        self.page()
            .cells
            .iter()
            .filter(|cell| cell.pid.load(Acquire) != 0)
            .filter(|cell| now.since(MonoNanos(cell.heartbeat.load(Relaxed))) <= expiry)
            .map(|cell| u64::from(cell.viewers.load(Relaxed)))
            .sum()
    }

    pub fn viewers(&self, expiry: Duration) -> u64 {
        self.viewers_at(SystemClock.mono(), expiry)
    }

    /// The change counter; pass it to [`wait_for_change`](Self::wait_for_change).
    pub fn generation(&self) -> u32 {
        self.page().header.futex.load(Acquire)
    }

    /// Sleeps until a worker changes its viewer count after `generation` was read, or `timeout`.
    pub fn wait_for_change(&self, generation: u32, timeout: Duration) {
        futex::wait(&self.page().header.futex, generation, timeout);
    }

    /// Takes a free cell (or one whose worker died) for this process.
    pub fn claim_cell(self: &Arc<Self>) -> Result<DemandCell, Error> {
        let me = std::process::id();
        let now = SystemClock.mono();
        for (index, cell) in self.page().cells.iter().enumerate() {
            let pid = cell.pid.load(Acquire);
            let reclaimable = pid == 0
                || now.since(MonoNanos(cell.heartbeat.load(Relaxed))) > DEFAULT_CELL_EXPIRY;
            if !reclaimable {
                continue;
            }
            // Heartbeat first, so the cell never looks both ours and expired.
            cell.heartbeat.store(now.0, Relaxed);
            if cell.pid.compare_exchange(pid, me, AcqRel, Acquire).is_ok() {
                cell.viewers.store(0, Relaxed);
                return Ok(DemandCell {
                    file: Arc::clone(self),
                    index,
                });
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
    index: usize,
}

impl DemandCell {
    fn cell(&self) -> &Cell {
        &self.file.page().cells[self.index]
    }

    /// Records this worker's viewer count (and a heartbeat); wakes capture if it changed.
    pub fn set_viewers(&self, viewers: u32) {
        let cell = self.cell();
        cell.heartbeat.store(SystemClock.mono().0, Relaxed);
        if cell.viewers.swap(viewers, Relaxed) != viewers {
            self.notify();
        }
    }

    /// Keeps the cell alive without changing the count. Call at least every second.
    pub fn heartbeat(&self) {
        self.cell().heartbeat.store(SystemClock.mono().0, Relaxed);
    }

    fn notify(&self) {
        let futex = &self.file.page().header.futex;
        // SYNC POINT: Release orders the viewer count stored above before the bump; capture
        // reads the generation (Acquire) before summing, so a change after its read always
        // moves the word it waits on.
        futex.fetch_add(1, Release);
        futex::wake_all(futex);
    }
}

impl Drop for DemandCell {
    fn drop(&mut self) {
        let cell = self.cell();
        cell.viewers.store(0, Relaxed);
        cell.pid.store(0, Release);
        self.notify();
    }
}

fn open_or_create(path: &Path) -> Result<File, Error> {
    let file = open_regular(path, Access::Create { mode: DEMAND_MODE })?;
    let len = file.metadata().map_err(Error::io(path))?.len();
    if len < FILE_SIZE as u64 {
        // Only a file we (or a racing peer) just created is this short; growing it zero-fills.
        if len == 0 {
            let _ = file.set_permissions(fs::Permissions::from_mode(DEMAND_MODE));
        }
        file.set_len(FILE_SIZE as u64).map_err(Error::io(path))?;
    }
    Ok(file)
}

//! Mappings of ring and demand files, and the guard that keeps a process alive when another
//! process shrinks a file it has mapped.
//!
//! Two rules hold for every byte of every mapping:
//!
//! - It is reached only through a raw pointer (`memmap2::MmapRaw`) and atomics. No `&[u8]`, nor
//!   any reference to non-atomic data, is ever made over a file that another process writes: a
//!   shared reference promises the compiler that the bytes behind it do not change while it
//!   lives. References to atomics are the one kind allowed, because an atomic is an `UnsafeCell`
//!   whose contents may change under a shared reference, from another thread or another process
//!   alike ([`Mapping::atomics_at`]).
//!
//! - An access past the end of the file does not kill the process. A file can shrink under its
//!   mappings (`truncate` by any process allowed to write it) and a hole in a sparse file cannot
//!   be filled on a full tmpfs; the kernel answers the access with SIGBUS, whose default is death.
//!   For ringcast that is bad input like a scribbled header, and it recovers: a process-wide
//!   SIGBUS handler, installed with the first mapping, puts a zero page where the missing one
//!   was, marks the mapping damaged, and returns, so the faulting access completes on the new
//!   page. The mapping's owner sees [`Mapping::is_damaged`] and maps the file anew (a writer
//!   replaces it). Faults anywhere else go to the handler that was there before — normally the
//!   default, so the process dies exactly as it would have.
//!
//! Why a handler rather than another mechanism: file seals (`F_SEAL_SHRINK`) forbid the
//! truncate, but only on memfd files, which cannot be given a name in the ring directory where
//! servers discover cameras; reading with `pread` instead of mapping cannot carry the futex words
//! or the seqlock's atomics; checking the file's size before each access races the very truncate
//! it checks for.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::path::Path;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::OnceLock;

use memmap2::{MmapOptions, MmapRaw};

use crate::Error;

/// Types made of atomics only, which may be viewed in a mapping with [`Mapping::atomics_at`].
///
/// # Safety
/// The type must consist of atomic integers only (arrays and `repr(C)` structs of them, with no
/// padding that carries meaning): every bit pattern is then a valid value, and every access goes
/// through an `UnsafeCell`, so another process changing the bytes is defined behaviour.
pub(crate) unsafe trait Atomics {}

// SAFETY: atomic integers are the base case.
unsafe impl Atomics for AtomicU32 {}
// SAFETY: as above.
unsafe impl Atomics for AtomicU64 {}

/// A shared mapping of (part of) a file, guarded against SIGBUS; see the module documentation.
pub(crate) struct Mapping {
    raw: MmapRaw,
    /// This mapping's entry in [`GUARDED`].
    entry: &'static Guarded,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` for reading; readers only ever load from it.
    pub(crate) fn read_only(file: &File, len: usize, path: &Path) -> Result<Mapping, Error> {
        Mapping::guard(MmapOptions::new().len(len).map_raw_read_only(file), path)
    }

    /// Maps the first `len` bytes of `file` for reading and writing.
    pub(crate) fn read_write(file: &File, len: usize, path: &Path) -> Result<Mapping, Error> {
        Mapping::guard(MmapOptions::new().len(len).map_raw(file), path)
    }

    fn guard(raw: io::Result<MmapRaw>, path: &Path) -> Result<Mapping, Error> {
        let raw = raw.map_err(Error::io(path))?;
        install_handler().map_err(Error::io(path))?;
        let entry = Guarded::claim(raw.as_ptr() as usize, raw.len()).ok_or_else(|| {
            Error::io(path)(io::Error::other(format!(
                "this process already maps {GUARDED_MAX} ring and demand files"
            )))
        })?;
        Ok(Mapping { raw, entry })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether a page of this mapping went missing (the file shrank under it) and was replaced
    /// by a zero page: what is read from the mapping is no longer the file's, and what is written
    /// to it no longer reaches the file. Map the file anew.
    pub(crate) fn is_damaged(&self) -> bool {
        // SYNC POINT: pairs with the handler's Release store, made before it puts the zero page
        // in: a thread that read from the zero page and then asks, sees the flag.
        self.entry.damaged.load(Acquire)
    }

    /// The `T` at `offset`. Panics if it does not lie within the mapping or is misaligned: offsets
    /// come from a validated layout, so that is a bug here, not bad input.
    pub(crate) fn atomics_at<T: Atomics>(&self, offset: usize) -> &T {
        &self.atomics_slice::<T>(offset, 1)[0]
    }

    /// `count` consecutive `T` starting at `offset`; panics as [`atomics_at`](Self::atomics_at).
    pub(crate) fn atomics_slice<T: Atomics>(&self, offset: usize, count: usize) -> &[T] {
        let size = std::mem::size_of::<T>()
            .checked_mul(count)
            .and_then(|size| size.checked_add(offset));
        assert!(
            size.is_some_and(|end| end <= self.len()),
            "{count} atomics at {offset} lie outside a mapping of {} bytes",
            self.len()
        );
        // SAFETY: `offset` is within the mapping (checked above), so the pointer stays inside
        // the same allocation.
        let at = unsafe { self.raw.as_mut_ptr().add(offset) };
        assert_eq!(
            at.align_offset(std::mem::align_of::<T>()),
            0,
            "misaligned atomics in a mapping"
        );
        // SAFETY: the range is inside the mapping, which lives as long as `self`, and aligned
        // (both checked above). `T: Atomics` makes every bit pattern valid and every access
        // atomic, so other processes writing the file race nothing (see the module
        // documentation). The pointer comes from `MmapRaw`, never from a reference over the
        // mapping, so it carries the provenance to write where the mapping is writable. On a
        // read-only mapping only relaxed loads happen (see `sync::acquire_u64`). A page that
        // vanishes under the reference is replaced by the SIGBUS guard, so it stays dereferenceable.
        unsafe { std::slice::from_raw_parts(at.cast::<T>(), count) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Before `raw` unmaps: the handler must never act on an address range that is no longer
        // ours.
        self.entry.release();
    }
}

/// The most mappings one process may hold: a server maps one ring and one demand file per
/// camera, so this is far beyond any real use, and it keeps the handler's search allocation-free.
const GUARDED_MAX: usize = 4096;

/// One guarded address range. The handler reads these, so they are plain atomics in a static
/// array: nothing in it allocates, locks or can be freed under the handler.
struct Guarded {
    claimed: AtomicBool,
    /// A seqlock over `start` and `end`: odd while they change, so that the handler never acts
    /// on a range mixed from an entry's old and new mappings.
    generation: AtomicUsize,
    /// First address of the range; 0 while the entry is free.
    start: AtomicUsize,
    end: AtomicUsize,
    damaged: AtomicBool,
}

static GUARDED: [Guarded; GUARDED_MAX] = [const {
    Guarded {
        claimed: AtomicBool::new(false),
        generation: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        damaged: AtomicBool::new(false),
    }
}; GUARDED_MAX];

impl Guarded {
    fn claim(start: usize, len: usize) -> Option<&'static Guarded> {
        let entry = GUARDED.iter().find(|entry| {
            entry
                .claimed
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        })?;
        entry.damaged.store(false, Relaxed);
        entry.set_range(start, start + len);
        Some(entry)
    }

    fn release(&self) {
        self.set_range(0, 0);
        self.claimed.store(false, Release);
    }

    /// The writer side of the entry's seqlock; only the entry's owner calls it.
    fn set_range(&self, start: usize, end: usize) {
        self.generation.fetch_add(1, Relaxed);
        // SYNC POINT: keeps the stores below from being seen before the odd generation; a
        // handler that sees any of them sees the odd value (or a later one) at its re-check.
        fence(Release);
        self.start.store(start, Relaxed);
        self.end.store(end, Relaxed);
        // SYNC POINT: Release publishes the range to a handler whose Acquire load of the
        // generation sees this even value.
        self.generation.fetch_add(1, Release);
    }

    /// The entry's range, if it is not changing right now.
    fn range(&self) -> Option<std::ops::Range<usize>> {
        let before = self.generation.load(Acquire);
        if before % 2 == 1 {
            return None;
        }
        let range = self.start.load(Relaxed)..self.end.load(Relaxed);
        // SYNC POINT: keeps the loads above from moving below the re-check (as in the ring's
        // own seqlock, `seqlock::copy_frame`).
        fence(Acquire);
        (self.generation.load(Relaxed) == before).then_some(range)
    }

    /// The entry whose range holds `addr`, if any.
    fn holding(addr: usize) -> Option<&'static Guarded> {
        GUARDED
            .iter()
            .find(|entry| entry.range().is_some_and(|range| range.contains(&addr)))
    }
}

/// The page size, read once before the handler is installed (sysconf is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The SIGBUS disposition found when ours was installed, to pass foreign faults on to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

fn install_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        PAGE_SIZE.store(usize::try_from(page).unwrap_or(4096), Relaxed);
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags), and
        // both calls get valid pointers or null where the kernel allows it.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, ptr::null(), &mut previous) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            // Set before ours is installed, so the handler always finds it.
            let _ = PREVIOUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = on_sigbus;
            action.sa_sigaction = handler as libc::sighandler_t;
            // ONSTACK: a thread with an alternate signal stack (std gives the threads it
            // starts one, for its stack-overflow handler) keeps using it, as the handler we pass
            // faults on to expects.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    installed.map_err(io::Error::from_raw_os_error)
}

/// The SIGBUS handler. Everything it calls is async-signal-safe: atomic loads and stores on a
/// static array, mmap (a bare system call on Linux), and for foreign faults, sigaction and
/// raise or the previous handler.
extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to a SA_SIGINFO handler. For a fault
    // (BUS_ADRERR: an address the file no longer backs), si_addr is the faulting address; any
    // other SIGBUS (sent with kill, a hardware memory error) is not ours to absorb.
    let fault = unsafe { ((*info).si_code == libc::BUS_ADRERR).then(|| (*info).si_addr()) };
    if let Some(addr) = fault.map(|addr| addr as usize) {
        if let Some(entry) = Guarded::holding(addr) {
            // SYNC POINT: Release, before the zero page exists: whoever reads from that page
            // and then asks `is_damaged` (Acquire) learns what it read.
            entry.damaged.store(true, Release);
            if replace_page(addr) {
                return;
            }
        }
    }
    pass_on(signal, info, context);
}

/// Puts a private zero page where the page holding `addr` was. The mapping is ours (registered
/// and not yet unmapped), so nothing else lives at that address.
fn replace_page(addr: usize) -> bool {
    let page_size = PAGE_SIZE.load(Relaxed);
    let page = addr & !(page_size - 1);
    // SAFETY: MAP_FIXED over one page of a mapping this process owns and keeps registered until
    // it unmaps the whole range; the new page is unmapped with it.
    let mapped = unsafe {
        libc::mmap(
            page as *mut c_void,
            page_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    mapped != libc::MAP_FAILED
}

/// A fault that is not ours: what the previous disposition would have done.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restoring the default disposition and raising the signal again, which stays
        // pending while this handler runs and kills the process when it returns (as the fault
        // would have; a hardware fault cannot be ignored).
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    }
    let siginfo = previous.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0);
    // SAFETY: `handler` is the function the previous disposition named, called with the
    // signature its flags declare (sa_sigaction with SA_SIGINFO, sa_handler without).
    unsafe {
        if siginfo {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            handler(signal, info, context);
        } else {
            let handler: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            handler(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn two_page_file() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two-pages");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.write_all(&[7u8; 8192]).unwrap();
        (dir, path, file)
    }

    #[test]
    fn a_page_cut_off_under_a_mapping_reads_as_zero_and_marks_it_damaged() {
        let (_dir, path, file) = two_page_file();
        let map = Mapping::read_only(&file, 8192, &path).unwrap();
        let word = map.atomics_at::<AtomicU64>(4096);
        assert_eq!(word.load(Relaxed), u64::from_ne_bytes([7; 8]));
        assert!(!map.is_damaged());
        file.set_len(4096).unwrap();
        assert_eq!(word.load(Relaxed), 0, "the lost page reads as zeros");
        assert!(map.is_damaged());
        assert_eq!(
            map.atomics_at::<AtomicU64>(0).load(Relaxed),
            u64::from_ne_bytes([7; 8]),
            "the page still in the file is still the file's"
        );
    }

    #[test]
    fn a_writable_mapping_survives_writes_past_the_end_of_its_file() {
        let (_dir, path, file) = two_page_file();
        let map = Mapping::read_write(&file, 8192, &path).unwrap();
        file.set_len(0).unwrap();
        map.atomics_at::<AtomicU64>(4096).store(42, Relaxed);
        assert_eq!(map.atomics_at::<AtomicU64>(4096).load(Relaxed), 42);
        assert!(map.is_damaged());
        assert_eq!(
            file.metadata().unwrap().len(),
            0,
            "nothing reached the file"
        );
    }

    #[test]
    fn a_released_entry_is_claimed_again_undamaged() {
        let (_dir, path, file) = two_page_file();
        let first = Mapping::read_only(&file, 8192, &path).unwrap();
        file.set_len(0).unwrap();
        first.atomics_at::<AtomicU64>(0).load(Relaxed);
        assert!(first.is_damaged());
        drop(first);
        file.set_len(8192).unwrap();
        let second = Mapping::read_only(&file, 8192, &path).unwrap();
        second.atomics_at::<AtomicU64>(0).load(Relaxed);
        assert!(!second.is_damaged());
    }

    #[test]
    #[should_panic(expected = "outside a mapping")]
    fn an_offset_past_the_mapping_is_a_bug_caught_before_any_access() {
        let (_dir, path, file) = two_page_file();
        let map = Mapping::read_only(&file, 8192, &path).unwrap();
        map.atomics_at::<AtomicU64>(8192);
    }
}

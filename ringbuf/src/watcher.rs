//! One waiter thread per process for all of its rings. It sleeps on every watched ring's futex
//! word at once (FUTEX_WAITV, Linux 5.16+) and makes that ring's socket readable when the ring
//! publishes, so a single-threaded event loop follows any number of cameras with one extra
//! thread rather than one per camera. On older kernels each ring gets a thread of its own
//! ([`RingReader::signal`]), with the same sockets.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memmap2::Mmap;
use nix::sys::socket::{send, MsgFlags};

use crate::futex::{self, WaitAny, WaitOn, WAITV_MAX};
use crate::mapped::MappedRing;
use crate::reader::RingReader;
use crate::Error;

/// Watches rings for one event loop. Dropping it stops its thread within one tick.
pub struct RingWatcher {
    shared: Arc<Shared>,
    tick: Duration,
}

struct Shared {
    /// Bumped (and woken) when a ring is added or the watcher stops, so the thread re-reads its
    /// list at once. Process-local, but waited on with the same shared-futex flags as the rings.
    control: AtomicU32,
    stopped: AtomicBool,
    /// Set once the kernel says it has no FUTEX_WAITV; new rings then get threads of their own.
    unsupported: AtomicBool,
    rings: Mutex<Vec<Watched>>,
}

struct Watched {
    ring: Arc<MappedRing<Mmap>>,
    /// The thread's end of the socket pair; the event loop holds the other.
    peer: UnixStream,
}

impl Shared {
    fn rings(&self) -> MutexGuard<'_, Vec<Watched>> {
        // A panic while holding the lock cannot leave the list inconsistent (pushes and
        // retains only), so a poisoned lock is still usable.
        self.rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poke(&self) {
        self.control.fetch_add(1, Release);
        futex::wake_all(&self.control);
    }
}

impl RingWatcher {
    /// Starts the waiting thread. Every watched socket also becomes readable at least every
    /// `tick`, so the event loop can notice an offline writer.
    pub fn start(tick: Duration) -> Result<RingWatcher, Error> {
        let shared = Arc::new(Shared {
            control: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
            unsupported: AtomicBool::new(false),
            rings: Mutex::new(Vec::new()),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ring-watcher".into())
            .spawn(move || run(&thread_shared, tick))
            .map_err(|e| Error::Io {
                path: "ring-watcher thread".into(),
                source: e,
            })?;
        Ok(RingWatcher { shared, tick })
    }

    /// A socket that becomes readable whenever `reader`'s ring may hold a new frame, and at least
    /// every tick. Read and discard its bytes, then call `try_next` until it returns `None`.
    /// Dropping the socket stops the watching.
    pub fn watch(&self, reader: &RingReader) -> Result<UnixStream, Error> {
        if self.shared.unsupported.load(Relaxed) {
            return reader.signal(self.tick);
        }
        let (peer, theirs) = UnixStream::pair().map_err(Error::io(reader.path()))?;
        for socket in [&peer, &theirs] {
            socket
                .set_nonblocking(true)
                .map_err(Error::io(reader.path()))?;
        }
        self.shared.rings().push(Watched {
            ring: reader.mapped(),
            peer,
        });
        self.shared.poke();
        Ok(theirs)
    }
}

impl Drop for RingWatcher {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Relaxed);
        self.shared.poke();
    }
}

fn run(shared: &Shared, tick: Duration) {
    let mut last_tick = Instant::now();
    while !shared.stopped.load(Relaxed) {
        // Before the list: a ring added after this read bumps the word and ends the wait.
        let control = shared.control.load(Acquire);
        let rings: Vec<Arc<MappedRing<Mmap>>> =
            shared.rings().iter().map(|w| Arc::clone(&w.ring)).collect();
        // SYNC POINT: each futex word is read (Acquire) before the wait that compares against it,
        // and the writer bumps it after publishing `head` (see writer::wake_readers). A publish
        // after this read changes the word, so the wait returns at once and the ring is
        // signalled below; every publish is signalled at least once.
        let seen: Vec<u32> = rings
            .iter()
            .map(|r| r.header().futex.load(Acquire))
            .collect();
        if !wait(shared, control, &rings, &seen, tick) {
            hand_over_to_threads(shared, tick);
            return;
        }
        let tick_due = last_tick.elapsed() >= tick;
        if tick_due {
            last_tick = Instant::now();
        }
        shared.rings().retain(|watched| {
            let changed = rings
                .iter()
                .zip(&seen)
                .find(|(ring, _)| Arc::ptr_eq(ring, &watched.ring))
                .is_none_or(|(ring, &old)| ring.header().futex.load(Acquire) != old);
            !(changed || tick_due) || poke_socket(&watched.peer)
        });
    }
}

/// Waits for any ring or the control word to change, or a tick. `false`: no FUTEX_WAITV here.
fn wait(
    shared: &Shared,
    control: u32,
    rings: &[Arc<MappedRing<Mmap>>],
    seen: &[u32],
    tick: Duration,
) -> bool {
    let mut words = vec![WaitOn {
        word: &shared.control,
        expected: control,
    }];
    words.extend(
        rings
            .iter()
            .zip(seen)
            .take(WAITV_MAX - 1)
            .map(|(ring, &expected)| WaitOn {
                word: &ring.header().futex,
                expected,
            }),
    );
    // Rings beyond what one FUTEX_WAITV takes are polled instead, every millisecond.
    let timeout = if rings.len() >= WAITV_MAX {
        Duration::from_millis(1)
    } else {
        tick
    };
    futex::wait_any(&words, timeout) == WaitAny::Returned
}

/// Old kernels: every ring watched so far, and every one watched from now on, gets a thread.
fn hand_over_to_threads(shared: &Shared, tick: Duration) {
    shared.unsupported.store(true, Relaxed);
    for watched in shared.rings().drain(..) {
        let ring = watched.ring;
        let peer = watched.peer;
        // A thread that cannot be started drops its socket: the event loop sees it end, as
        // when a ring goes away, and can watch the ring again.
        let _ = std::thread::Builder::new()
            .name("ring-signal".into())
            .spawn(move || crate::reader::signal_loop(&ring, &peer, tick));
    }
}

/// A socket that cannot be signalled any more (the event loop dropped its end) is forgotten.
/// Returns whether to keep watching.
fn poke_socket(peer: &UnixStream) -> bool {
    // A full socket already holds an unread wake-up, which is all the event loop needs.
    matches!(
        send(
            peer.as_raw_fd(),
            &[1],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL
        ),
        Ok(_) | Err(nix::errno::Errno::EAGAIN)
    )
}

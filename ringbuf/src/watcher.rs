//! Waiter threads for all of a process's rings. Each thread sleeps on up to [`GROUP_RINGS`]
//! rings' futex words at once (FUTEX_WAITV, Linux 5.16+) and makes a ring's socket readable when
//! the ring publishes, so a single-threaded event loop follows any number of cameras with one
//! extra thread per [`GROUP_RINGS`] cameras rather than one per camera. Where FUTEX_WAITV does
//! not work (older kernels, or a container's system-call filter refuses it), which is found out
//! once at start, each ring gets a thread of its own ([`RingReader::signal`]) with the same
//! sockets. See `wakeup` for why no publish goes unsignalled.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::socket::{send, MsgFlags};

use crate::futex::{self, WaitOn, WAITV_MAX};
use crate::mapped::MappedRing;
use crate::reader::RingReader;
use crate::sync::acquire_u32;
use crate::wakeup::observe;
use crate::Error;

/// Rings one waiter thread follows: one FUTEX_WAITV call takes [`WAITV_MAX`] words, and one of
/// them is the thread's control word.
const GROUP_RINGS: usize = WAITV_MAX - 1;

/// How long a waiter thread pauses after a wait that failed for a reason other than the ordinary
/// ones (a word's page cut off by a truncate, which the next pass repairs), so that no failure
/// can spin a core.
const AFTER_FAILED_WAIT: Duration = Duration::from_millis(10);

/// The longest tick a watcher takes: a longer one is shortened to it (a day is as good as never
/// for an event loop, and deadlines stay far from overflowing).
const MAX_TICK: Duration = Duration::from_secs(24 * 60 * 60);

/// Watches rings for one event loop. Dropping it stops its waiter threads at once; a ring's
/// own thread (where FUTEX_WAITV does not work) ends within a tick of its socket being dropped.
pub struct RingWatcher {
    tick: Duration,
    mode: Mode,
}

enum Mode {
    /// FUTEX_WAITV works: groups of rings, a thread each.
    Grouped(Mutex<Vec<Arc<Group>>>),
    /// It does not: a thread per ring.
    ThreadPerRing,
}

/// The rings of one waiter thread.
struct Group {
    /// Bumped (and woken) when a ring is added or the watcher stops, so the thread re-reads its
    /// list at once. Process-local, but waited on with the same shared-futex flags as the rings.
    control: AtomicU32,
    stopped: AtomicBool,
    rings: Mutex<Vec<Arc<Watched>>>,
}

struct Watched {
    ring: Arc<MappedRing>,
    /// The thread's end of the socket pair; the event loop holds the other.
    peer: UnixStream,
    /// The ring's futex word as last acted on: read by `watch` before the socket is handed out,
    /// then changed only by the group's thread.
    last: AtomicU32,
}

impl Group {
    fn start(tick: Duration) -> Result<Arc<Group>, Error> {
        let group = Arc::new(Group {
            control: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
            rings: Mutex::new(Vec::new()),
        });
        let thread_group = Arc::clone(&group);
        std::thread::Builder::new()
            .name("ring-watcher".into())
            .spawn(move || run(&thread_group, tick))
            .map_err(|e| Error::Io {
                path: "ring-watcher thread".into(),
                source: e,
            })?;
        Ok(group)
    }

    fn rings(&self) -> MutexGuard<'_, Vec<Arc<Watched>>> {
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
    /// Finds out whether FUTEX_WAITV works here. Every watched socket also becomes readable at
    /// least every `tick`, so the event loop can notice an offline writer.
    pub fn start(tick: Duration) -> Result<RingWatcher, Error> {
        let tick = tick.min(MAX_TICK);
        let mode = if futex::waitv_works() {
            Mode::Grouped(Mutex::new(Vec::new()))
        } else {
            Mode::ThreadPerRing
        };
        Ok(RingWatcher { tick, mode })
    }

    /// A socket that becomes readable whenever `reader`'s ring may hold a new frame (every
    /// publish after this call is signalled), and at least every tick. Read and discard its
    /// bytes, then call `try_next` until it returns `None`. Dropping the socket stops the
    /// watching.
    pub fn watch(&self, reader: &RingReader) -> Result<UnixStream, Error> {
        let Mode::Grouped(groups) = &self.mode else {
            return reader.signal(self.tick);
        };
        let (peer, theirs) = UnixStream::pair().map_err(Error::io(reader.path()))?;
        for socket in [&peer, &theirs] {
            socket
                .set_nonblocking(true)
                .map_err(Error::io(reader.path()))?;
        }
        let ring = reader.mapped();
        let last = AtomicU32::new(acquire_u32(&ring.header().futex));
        let watched = Arc::new(Watched { ring, peer, last });
        let mut groups = groups.lock().unwrap_or_else(|p| p.into_inner());
        let group = match groups.iter().find(|g| g.rings().len() < GROUP_RINGS) {
            Some(group) => Arc::clone(group),
            None => {
                let group = Group::start(self.tick)?;
                groups.push(Arc::clone(&group));
                group
            }
        };
        group.rings().push(watched);
        group.poke();
        Ok(theirs)
    }
}

impl Drop for RingWatcher {
    fn drop(&mut self) {
        if let Mode::Grouped(groups) = &self.mode {
            for group in groups.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                group.stopped.store(true, Relaxed);
                group.poke();
            }
        }
    }
}

/// A waiter thread: signal what changed (and everything, once per tick), then sleep until a
/// word moves from what was signalled.
fn run(group: &Group, tick: Duration) {
    let mut next_tick = Instant::now() + tick;
    while !group.stopped.load(Relaxed) {
        // Before the list: a ring added after this read bumps the word and ends the wait.
        let control = acquire_u32(&group.control);
        let rings: Vec<Arc<Watched>> = group.rings().clone();
        let tick_due = Instant::now() >= next_tick;
        if tick_due {
            next_tick = Instant::now() + tick;
        }
        let gone: Vec<&Arc<Watched>> = rings
            .iter()
            .filter(|watched| !signal_if_changed(watched, tick_due))
            .collect();
        if !gone.is_empty() {
            group
                .rings()
                .retain(|watched| !gone.iter().any(|g| Arc::ptr_eq(g, watched)));
        }
        let mut words = vec![WaitOn {
            word: &group.control,
            expected: control,
        }];
        words.extend(rings.iter().map(|watched| WaitOn {
            word: &watched.ring.header().futex,
            expected: watched.last.load(Relaxed),
        }));
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(errno) = futex::wait_any(&words, timeout) {
            if !futex::is_ordinary(errno) {
                std::thread::sleep(AFTER_FAILED_WAIT);
            }
        }
    }
}

/// Pokes the ring's socket if its futex word moved (or a tick is due). Returns whether to keep
/// watching: a socket the event loop dropped cannot be signalled any more.
fn signal_if_changed(watched: &Watched, tick_due: bool) -> bool {
    let mut last = watched.last.load(Relaxed);
    let changed = observe(&watched.ring.header().futex, &mut last);
    watched.last.store(last, Relaxed);
    if !(changed || tick_due) {
        return true;
    }
    // A full socket already holds an unread wake-up, which is all the event loop needs.
    matches!(
        send(
            watched.peer.as_raw_fd(),
            &[1],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL
        ),
        Ok(_) | Err(nix::errno::Errno::EAGAIN)
    )
}

//! The watcher's wake-up protocol under loom: a writer publishes to two rings, one watcher thread
//! follows them with the shipped [`observe`], the loop `watcher::run` has (control word first,
//! then the list, then each ring's word, then one wait on all of them) and a futex that behaves
//! like the kernel's, and a reader per ring sleeps on its socket until it sees the ring's last
//! frame. The second ring is watched while the watcher already waits, as `RingWatcher::watch`
//! does it: its value is read first, then it joins the list, then the control word moves.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ringcast-ringbuf --release --lib loom`.
//!
//! Checked for every interleaving: every publish is signalled, so each reader, loading `head`
//! after a signal, reaches the last frame. A lost wake-up leaves a reader asleep on its socket
//! for good, which loom reports as a deadlock. The model has teeth: the watcher of the previous
//! release (which compared against a second, fresh load of each word instead of the value it had
//! acted on) fails it.

use std::sync::atomic::Ordering::{Relaxed, Release};

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use crate::sync::{acquire_u32, acquire_u64};
use crate::wakeup::observe;

/// Frames the writer publishes to each ring.
const FRAMES: u64 = 2;

/// The kernel's futex as the watcher uses it: the waiter compares the words under the lock the
/// waker takes to wake, so a change either shows in the comparison or wakes the sleeper. Like
/// the real one, a wait may end with nothing changed; callers loop.
struct Futex {
    lock: Mutex<()>,
    woken: Condvar,
}

impl Futex {
    /// FUTEX_WAITV: sleeps unless a word already differs from its expected value.
    fn wait_any(&self, words: &[(&AtomicU32, u32)]) {
        let guard = self.lock.lock().unwrap();
        if words
            .iter()
            .all(|(word, expected)| word.load(Relaxed) == *expected)
        {
            drop(self.woken.wait(guard).unwrap());
        }
    }

    fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap();
        self.woken.notify_all();
    }
}

/// The socket pair between the watcher and an event loop: a pending byte, or none.
struct Socket {
    pending: Mutex<bool>,
    readable: Condvar,
}

impl Socket {
    fn poke(&self) {
        *self.pending.lock().unwrap() = true;
        self.readable.notify_all();
    }

    fn read(&self) {
        let mut pending = self.pending.lock().unwrap();
        while !*pending {
            pending = self.readable.wait(pending).unwrap();
        }
        *pending = false;
    }
}

struct Ring {
    head: AtomicU64,
    futex_word: AtomicU32,
    /// The value the watcher last acted on (`Watched::last`).
    last: AtomicU32,
    socket: Socket,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            head: AtomicU64::new(0),
            futex_word: AtomicU32::new(0),
            last: AtomicU32::new(0),
            socket: Socket {
                pending: Mutex::new(false),
                readable: Condvar::new(),
            },
        }
    }
}

struct World {
    rings: [Ring; 2],
    /// The rings watched so far, by index (`Group::rings`).
    watched: Mutex<Vec<usize>>,
    control: AtomicU32,
    futex: Futex,
}

impl World {
    fn new() -> World {
        World {
            rings: [Ring::new(), Ring::new()],
            watched: Mutex::new(Vec::new()),
            control: AtomicU32::new(0),
            futex: Futex {
                lock: Mutex::new(()),
                woken: Condvar::new(),
            },
        }
    }

    /// What `RingWriter::publish` does after the slot: `head`, then the futex word, then a wake.
    fn publish(&self, ring: usize, frame: u64) {
        let ring = &self.rings[ring];
        ring.head.store(frame, Release);
        ring.futex_word.fetch_add(1, Release);
        self.futex.wake_all();
    }

    /// `RingWatcher::watch`: the value first, then the list, then the control word.
    fn watch(&self, ring: usize) {
        let value = acquire_u32(&self.rings[ring].futex_word);
        self.rings[ring].last.store(value, Relaxed);
        self.watched.lock().unwrap().push(ring);
        self.control.fetch_add(1, Release);
        self.futex.wake_all();
    }

    /// The watcher thread's loop, until it has acted on every publish of both rings (the real
    /// one runs on).
    fn run_watcher(&self) {
        loop {
            let control = acquire_u32(&self.control);
            let watched = self.watched.lock().unwrap().clone();
            for &index in &watched {
                let ring = &self.rings[index];
                let mut last = ring.last.load(Relaxed);
                if observe(&ring.futex_word, &mut last) {
                    ring.socket.poke();
                }
                ring.last.store(last, Relaxed);
            }
            let done = |ring: &Ring| u64::from(ring.last.load(Relaxed)) == FRAMES;
            if watched.len() == self.rings.len() && self.rings.iter().all(done) {
                return;
            }
            let mut words = vec![(&self.control, control)];
            words.extend(watched.iter().map(|&index| {
                let ring = &self.rings[index];
                (&ring.futex_word, ring.last.load(Relaxed))
            }));
            self.futex.wait_any(&words);
        }
    }

    /// An event loop following one ring: wait for the socket, then look at `head`.
    fn follow(&self, ring: usize) {
        let ring = &self.rings[ring];
        loop {
            ring.socket.read();
            if acquire_u64(&ring.head) == FRAMES {
                return;
            }
        }
    }
}

#[test]
fn loom_the_watcher_signals_every_publish_even_of_a_ring_watched_while_it_waits() {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(|| {
        let world = Arc::new(World::new());
        world.watch(0);
        let spawn = |f: fn(&World)| {
            let world = Arc::clone(&world);
            thread::spawn(move || f(&world))
        };
        let watcher = spawn(World::run_watcher);
        let first = spawn(|world| world.follow(0));
        world.publish(0, 1);
        world.watch(1);
        let second = spawn(|world| world.follow(1));
        world.publish(1, 1);
        world.publish(0, 2);
        world.publish(1, 2);
        first.join().unwrap();
        second.join().unwrap();
        watcher.join().unwrap();
    });
}

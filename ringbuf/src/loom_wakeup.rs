//! The watcher's wake-up protocol under loom: a writer publishes to two rings, one watcher thread
//! follows both with the shipped [`observe`] and a futex that behaves like the kernel's, and a
//! reader per ring sleeps on its socket until it sees the ring's last frame.
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

use crate::sync::acquire_u64;
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
    socket: Socket,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            head: AtomicU64::new(0),
            futex_word: AtomicU32::new(0),
            socket: Socket {
                pending: Mutex::new(false),
                readable: Condvar::new(),
            },
        }
    }
}

struct World {
    rings: [Ring; 2],
    futex: Futex,
}

impl World {
    fn new() -> World {
        World {
            rings: [Ring::new(), Ring::new()],
            futex: Futex {
                lock: Mutex::new(()),
                woken: Condvar::new(),
            },
        }
    }

    /// What `RingWriter::publish` does after the slot: `head`, then the futex word, then a wake.
    fn publish(&self, ring: &Ring, frame: u64) {
        ring.head.store(frame, Release);
        ring.futex_word.fetch_add(1, Release);
        self.futex.wake_all();
    }

    /// The watcher thread's loop, until it has acted on every publish (the real one runs on).
    fn watch(&self, mut last: [u32; 2]) {
        loop {
            for (ring, last) in self.rings.iter().zip(&mut last) {
                if observe(&ring.futex_word, last) {
                    ring.socket.poke();
                }
            }
            if last.iter().all(|&l| u64::from(l) == FRAMES) {
                return;
            }
            let [a, b] = &self.rings;
            self.futex
                .wait_any(&[(&a.futex_word, last[0]), (&b.futex_word, last[1])]);
        }
    }

    /// An event loop following one ring: wait for the socket, then look at `head`.
    fn follow(&self, ring: &Ring) {
        loop {
            ring.socket.read();
            if acquire_u64(&ring.head) == FRAMES {
                return;
            }
        }
    }
}

#[test]
fn loom_the_watcher_signals_every_publish_of_every_ring() {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(|| {
        let world = Arc::new(World::new());
        // Read when the sockets are handed out, before any publish.
        let last = [0, 0];
        let watcher = {
            let world = Arc::clone(&world);
            thread::spawn(move || world.watch(last))
        };
        let followers: Vec<_> = (0..2)
            .map(|index| {
                let world = Arc::clone(&world);
                thread::spawn(move || world.follow(&world.rings[index]))
            })
            .collect();
        for frame in 1..=FRAMES {
            for ring in &world.rings {
                world.publish(ring, frame);
            }
        }
        for follower in followers {
            follower.join().unwrap();
        }
        watcher.join().unwrap();
    });
}

//! The seqlock protocol under loom: one writer and two readers on a ring small enough that the
//! writer laps the readers, explored over all interleavings the model checker allows.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ringcast-ringbuf --release --lib loom`.
//!
//! Checked for every interleaving:
//! - a returned frame's bytes are exactly what the writer published under that number (nothing
//!   torn or mixed from two frames is ever accepted);
//! - frame numbers a reader returns strictly increase, and its `skipped` counter equals the sum of
//!   the gaps between them (counted from where it started), exactly;
//! - once the writer is done, each reader reaches the last frame;
//! - a reader of a ring whose slots start empty under an inherited `head` (the new file of a
//!   geometry change) skips the missing frames at once and never counts them as torn.
//!
//! Payloads of five words, four of them stored as one block, run the shipped store loop with
//! both its block and its tail path; one word keeps the wider scenarios small enough to explore.
//!
//! The model has teeth: deleting either fence of the protocol (the writer's Release fence after
//! the odd mark, or the reader's Acquire fence before the re-check) makes every scenario below
//! fail with "torn frame accepted".

use std::sync::atomic::Ordering::Relaxed;

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;

use crate::seqlock::{publish, Cursor, Read, RingMemory, SlotMeta, SlotRef, WORD};
use crate::types::{FrameNo, WallNanos};

struct HeapRing {
    head: AtomicU64,
    metas: Vec<SlotMeta>,
    payloads: Vec<Vec<AtomicU64>>,
    words: usize,
}

impl HeapRing {
    /// A ring whose slots are empty and whose `head` is `head`: 0 for a new ring, more for the
    /// file that replaces a ring of another geometry.
    fn new(slots: usize, words: usize, head: FrameNo) -> HeapRing {
        HeapRing {
            head: AtomicU64::new(head.0),
            metas: (0..slots).map(|_| SlotMeta::new()).collect(),
            payloads: (0..slots)
                .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            words,
        }
    }
}

impl RingMemory for HeapRing {
    fn head(&self) -> &AtomicU64 {
        &self.head
    }
    fn slot_count(&self) -> u32 {
        self.metas.len() as u32
    }
    fn slot_size(&self) -> usize {
        self.words * WORD
    }
    fn slot(&self, index: usize) -> SlotRef<'_> {
        SlotRef {
            meta: &self.metas[index],
            payload: &self.payloads[index],
        }
    }
}

/// Frame `n`'s payload of `words` words: every byte says `n`, and its length depends on `n` (a
/// whole number of words, or three bytes short of it), so a copy mixing two frames, or a length
/// from one frame with bytes of another, is caught.
fn payload_of(n: u64, words: usize) -> Vec<u8> {
    let len = if n % 2 == 0 {
        words * WORD
    } else {
        words * WORD - 3
    };
    vec![n as u8; len]
}

/// What one reader has returned so far, checked frame by frame.
struct Follower {
    cursor: Cursor,
    previous: FrameNo,
    gaps: u64,
    buf: Vec<u8>,
}

impl Follower {
    /// A reader opened on a ring whose `head` is `head`: it starts there, as `RingReader::open`.
    fn new(head: FrameNo) -> Follower {
        let start = head.max(FrameNo(1));
        Follower {
            cursor: Cursor::starting_at(start),
            previous: FrameNo(start.0 - 1),
            gaps: 0,
            buf: Vec::new(),
        }
    }

    /// One read; returns whether it got a frame.
    fn read_once(&mut self, ring: &HeapRing) -> bool {
        match self.cursor.read(ring, &mut self.buf) {
            Read::Frame(meta) => {
                assert!(
                    meta.frame_no > self.previous,
                    "frame numbers went backwards"
                );
                assert_eq!(
                    self.buf,
                    payload_of(meta.frame_no.0, ring.words),
                    "torn frame accepted"
                );
                assert_eq!(meta.capture, WallNanos(meta.frame_no.0 * 10));
                // Every frame from 1 on is accounted for: returned, or counted as skipped.
                self.gaps += self.previous.gap_to(meta.frame_no);
                self.previous = meta.frame_no;
                assert_eq!(self.cursor.stats().skipped, self.gaps, "skips miscounted");
                true
            }
            Read::Nothing => false,
            Read::Corrupt { frame, reason } => panic!("frame {frame} corrupt: {reason}"),
        }
    }
}

/// The shape of one model run.
struct Scenario {
    slots: usize,
    /// Payload words per slot.
    words: usize,
    /// `head` of the ring before the first publish, its slots empty: 0 for a new ring.
    inherited_head: FrameNo,
    /// The last frame published. The first frame after `inherited_head` is published before the
    /// readers start (for a new ring), or none is (for an inherited head, so that the readers
    /// meet the missing frame); the rest race them.
    last_frame: u64,
    readers: usize,
    /// Reads each reader makes while the writer runs (bounded: spinning would make the state
    /// space infinite). After the writer is done, each reader reads on to the last frame.
    racing_reads: usize,
    /// Preemptions loom explores per execution (LOOM_MAX_PREEMPTIONS overrides): each extra
    /// reader multiplies the interleavings, so wider scenarios get a tighter bound.
    preemptions: usize,
}

fn model(scenario: Scenario) {
    let Scenario {
        slots,
        words,
        inherited_head,
        last_frame,
        readers,
        racing_reads,
        preemptions,
    } = scenario;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(move || {
        let ring = Arc::new(HeapRing::new(slots, words, inherited_head));
        let publish_frame = |ring: &HeapRing, n: u64| {
            publish(ring, FrameNo(n), &payload_of(n, words), WallNanos(n * 10));
        };
        // A new ring has its first frame before the readers start, so the racing part is short
        // enough to explore: the writer then publishes the rest, lapping the ring.
        let mut next = inherited_head.0 + 1;
        if inherited_head == FrameNo::NONE {
            publish_frame(&ring, next);
            next += 1;
        }
        let readers: Vec<_> = (0..readers)
            .map(|_| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut follower = Follower::new(FrameNo(ring.head.load(Relaxed)));
                    for _ in 0..racing_reads {
                        follower.read_once(&ring);
                    }
                    follower
                })
            })
            .collect();
        for n in next..=last_frame {
            publish_frame(&ring, n);
        }
        for reader in readers {
            let mut follower = reader.join().unwrap();
            while follower.read_once(&ring) {}
            assert_eq!(
                follower.previous,
                FrameNo(last_frame),
                "reader did not reach the last frame"
            );
            if inherited_head != FrameNo::NONE && slots as u64 > last_frame - inherited_head.0 {
                // No slot was reused, so nothing can have been overwritten under a copy.
                assert_eq!(
                    follower.cursor.stats().torn,
                    0,
                    "a missing frame counted torn"
                );
            }
        }
    });
}

#[test]
fn loom_writer_laps_one_reader_on_two_slots() {
    model(Scenario {
        slots: 2,
        words: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 1,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_the_block_store_loop_laps_one_reader_on_two_slots() {
    model(Scenario {
        slots: 2,
        words: 5,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 1,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_one_reader_keeps_up_or_skips_on_three_slots() {
    model(Scenario {
        slots: 3,
        words: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 5,
        readers: 1,
        racing_reads: 3,
        preemptions: 2,
    });
}

#[test]
fn loom_two_readers_race_the_writer_through_slot_reuse() {
    model(Scenario {
        slots: 2,
        words: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 2,
        racing_reads: 1,
        preemptions: 1,
    });
}

#[test]
fn loom_a_new_file_after_a_geometry_change_skips_its_missing_frames() {
    model(Scenario {
        slots: 4,
        words: 1,
        inherited_head: FrameNo(3),
        last_frame: 5,
        readers: 1,
        racing_reads: 2,
        preemptions: 2,
    });
}

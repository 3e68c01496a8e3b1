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
//! - once the writer is done, each reader reaches the last frame.
//!
//! The model has teeth: deleting either fence of the protocol (the writer's Release fence after
//! the odd mark, or the reader's Acquire fence before the re-check) makes every scenario below
//! fail with "torn frame accepted".

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;

use crate::seqlock::{publish, Cursor, Read, RingMemory, SlotMeta, SlotRef, WORD};
use crate::types::{FrameNo, WallNanos};

/// One payload word, whose bytes and length both differ between frames: a copy mixing two frames'
/// payload, length or number is caught. (Each extra word multiplies the interleavings.)
const PAYLOAD_WORDS: usize = 1;

struct HeapRing {
    head: AtomicU64,
    metas: Vec<SlotMeta>,
    payloads: Vec<Vec<AtomicU64>>,
}

impl HeapRing {
    fn new(slots: usize) -> HeapRing {
        HeapRing {
            head: AtomicU64::new(0),
            metas: (0..slots).map(|_| SlotMeta::new()).collect(),
            payloads: (0..slots)
                .map(|_| (0..PAYLOAD_WORDS).map(|_| AtomicU64::new(0)).collect())
                .collect(),
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
        PAYLOAD_WORDS * WORD
    }
    fn slot(&self, index: usize) -> SlotRef<'_> {
        SlotRef {
            meta: &self.metas[index],
            payload: &self.payloads[index],
        }
    }
}

/// Frame `n`'s payload: every byte says `n`, and its length depends on `n`, so a copy mixing two
/// frames, or a length from one frame with bytes of another, is caught.
fn payload_of(n: u64) -> Vec<u8> {
    let len = if n % 2 == 0 { WORD } else { WORD - 3 };
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
    fn new() -> Follower {
        Follower {
            cursor: Cursor::starting_at(FrameNo(1)),
            previous: FrameNo::NONE,
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
                assert_eq!(self.buf, payload_of(meta.frame_no.0), "torn frame accepted");
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
    /// Frames published in all; frame 1 before the readers start, the rest racing them.
    frames: u64,
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
        frames,
        readers,
        racing_reads,
        preemptions,
    } = scenario;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(move || {
        let ring = Arc::new(HeapRing::new(slots));
        // Frame 1 is there before the readers start, so the racing part is short enough to
        // explore: the writer then publishes the rest, lapping the ring.
        publish(&*ring, FrameNo(1), &payload_of(1), WallNanos(10));
        let readers: Vec<_> = (0..readers)
            .map(|_| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut follower = Follower::new();
                    for _ in 0..racing_reads {
                        follower.read_once(&ring);
                    }
                    follower
                })
            })
            .collect();
        for n in 2..=frames {
            publish(&*ring, FrameNo(n), &payload_of(n), WallNanos(n * 10));
        }
        for reader in readers {
            let mut follower = reader.join().unwrap();
            while follower.read_once(&ring) {}
            assert_eq!(
                follower.previous,
                FrameNo(frames),
                "reader did not reach the last frame"
            );
        }
    });
}

#[test]
fn loom_writer_laps_one_reader_on_two_slots() {
    model(Scenario {
        slots: 2,
        frames: 3,
        readers: 1,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_one_reader_keeps_up_or_skips_on_three_slots() {
    model(Scenario {
        slots: 3,
        frames: 5,
        readers: 1,
        racing_reads: 3,
        preemptions: 2,
    });
}

#[test]
fn loom_two_readers_race_the_writer_through_slot_reuse() {
    model(Scenario {
        slots: 2,
        frames: 3,
        readers: 2,
        racing_reads: 1,
        preemptions: 1,
    });
}

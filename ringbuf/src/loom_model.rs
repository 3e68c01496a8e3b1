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
//! - the first frame a reader returns, and every frame after a gap, is a keyframe, and a
//!   returned frame's kind is the one published with it (H.264 rings, where a frame after a gap
//!   can be a delta frame that no decoder can use);
//! - once the writer is done, each reader reaches the last frame;
//! - a reader of a ring whose slots start empty under an inherited `head` (the new file of a
//!   geometry change) skips the missing frames at once and never counts them as torn.
//!
//! Payloads of five words, four of them stored as one block, run the shipped store loop with
//! both its block and its tail path; one word keeps the wider scenarios small enough to explore.
//!
//! The model has teeth: deleting either fence of the protocol (the writer's Release fence after
//! the odd mark, or the reader's Acquire fence before the re-check) makes every scenario below
//! fail with "torn frame accepted"; letting a reader return the delta frame it finds after a gap
//! fails the H.264 scenario with "a delta frame after a gap".

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;

use crate::seqlock::{publish, Cursor, Read, RingMemory, SlotMeta, SlotRef, Stamp, WORD};
use crate::types::{FrameKind, FrameNo, WallNanos};

struct HeapRing {
    head: AtomicU64,
    metas: Vec<SlotMeta>,
    payloads: Vec<Vec<AtomicU64>>,
    words: usize,
    key_every: u64,
}

impl HeapRing {
    /// A ring whose slots are empty and whose `head` is `head`: 0 for a new ring, more for the
    /// file that replaces a ring of another geometry.
    fn new(slots: usize, words: usize, head: FrameNo, key_every: u64) -> HeapRing {
        HeapRing {
            head: AtomicU64::new(head.0),
            metas: (0..slots).map(|_| SlotMeta::new()).collect(),
            payloads: (0..slots)
                .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            words,
            key_every,
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
    fn every_frame_is_key(&self) -> bool {
        self.key_every == 1
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

/// Frame `n`'s kind when every `key_every`-th frame is a keyframe (from frame 1 on): 1 for a
/// JPEG ring.
fn kind_of(n: u64, key_every: u64) -> FrameKind {
    if (n - 1) % key_every == 0 {
        FrameKind::Key
    } else {
        FrameKind::Delta
    }
}

/// What one reader has returned so far, checked frame by frame.
struct Follower {
    cursor: Cursor,
    previous: FrameNo,
    gaps: u64,
    key_every: u64,
    /// Whether the next frame returned must be a keyframe: at the start and after a gap.
    needs_key: bool,
    buf: Vec<u8>,
}

impl Follower {
    /// A reader opened on `ring` now, as `RingReader::open` opens one.
    fn new(ring: &HeapRing, key_every: u64) -> Follower {
        let cursor = Cursor::starting_now(ring);
        Follower {
            previous: FrameNo(cursor.next().0 - 1),
            cursor,
            gaps: 0,
            key_every,
            needs_key: true,
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
                assert_eq!(meta.kind, kind_of(meta.frame_no.0, self.key_every));
                let gap = self.previous.gap_to(meta.frame_no);
                if self.needs_key || gap > 0 {
                    assert!(meta.kind.is_key(), "a delta frame after a gap");
                }
                self.needs_key = false;
                // Every frame from 1 on is accounted for: returned, or counted as skipped.
                self.gaps += gap;
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
    /// Every how many frames the writer publishes a keyframe: 1 for JPEG, more for H.264. The
    /// last frame must be a keyframe, so that a reader that lost the stream finds it again.
    key_every: u64,
    /// `head` of the ring before the first publish, its slots empty: 0 for a new ring.
    inherited_head: FrameNo,
    /// The last frame published. The first frame after `inherited_head` is published before the
    /// readers start (for a new ring), or none is (for an inherited head, so that the readers
    /// meet the missing frame); the rest race them.
    last_frame: u64,
    readers: usize,
    /// Whether readers open the ring while the writer publishes (their first look at the slots
    /// races it) or before it goes on.
    open_racing: bool,
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
        key_every,
        inherited_head,
        last_frame,
        readers,
        open_racing,
        racing_reads,
        preemptions,
    } = scenario;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    assert!(kind_of(last_frame, key_every).is_key());
    builder.check(move || {
        let ring = Arc::new(HeapRing::new(slots, words, inherited_head, key_every));
        let publish_frame = |ring: &HeapRing, n: u64| {
            let stamp = Stamp {
                frame: FrameNo(n),
                capture: WallNanos(n * 10),
                kind: kind_of(n, key_every),
            };
            publish(ring, stamp, &payload_of(n, words));
        };
        // A new ring has its first frame before the readers start, so the racing part is short
        // enough to explore: the writer then publishes the rest, lapping the ring.
        let mut next = inherited_head.0 + 1;
        if inherited_head == FrameNo::NONE {
            publish_frame(&ring, next);
            next += 1;
        }
        // Readers open the ring before the writer races them, except where a scenario asks
        // otherwise: opening reads slots as `catch_up` does, and racing it in every scenario
        // multiplies the interleavings beyond what the suite can afford.
        let readers: Vec<_> = (0..readers)
            .map(|_| {
                let ring = Arc::clone(&ring);
                let opened = (!open_racing).then(|| Follower::new(&ring, key_every));
                thread::spawn(move || {
                    let mut follower = opened.unwrap_or_else(|| Follower::new(&ring, key_every));
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
        key_every: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 1,
        open_racing: false,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_the_block_store_loop_laps_one_reader_on_two_slots() {
    model(Scenario {
        slots: 2,
        words: 5,
        key_every: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 1,
        open_racing: false,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_one_reader_keeps_up_or_skips_on_three_slots() {
    model(Scenario {
        slots: 3,
        words: 1,
        key_every: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 5,
        readers: 1,
        open_racing: false,
        racing_reads: 3,
        preemptions: 2,
    });
}

#[test]
fn loom_two_readers_race_the_writer_through_slot_reuse() {
    model(Scenario {
        slots: 2,
        words: 1,
        key_every: 1,
        inherited_head: FrameNo::NONE,
        last_frame: 3,
        readers: 2,
        open_racing: false,
        racing_reads: 1,
        preemptions: 1,
    });
}

#[test]
fn loom_a_new_file_after_a_geometry_change_skips_its_missing_frames() {
    model(Scenario {
        slots: 4,
        words: 1,
        key_every: 1,
        inherited_head: FrameNo(3),
        last_frame: 5,
        readers: 1,
        open_racing: false,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_an_h264_reader_lapped_on_three_slots_never_resumes_on_a_delta_frame() {
    model(Scenario {
        slots: 3,
        words: 1,
        key_every: 3,
        inherited_head: FrameNo::NONE,
        last_frame: 4,
        readers: 1,
        open_racing: false,
        racing_reads: 2,
        preemptions: 2,
    });
}

#[test]
fn loom_an_h264_reader_opened_while_the_writer_laps_three_slots_starts_at_a_keyframe() {
    model(Scenario {
        slots: 3,
        words: 1,
        key_every: 2,
        inherited_head: FrameNo::NONE,
        last_frame: 5,
        readers: 1,
        open_racing: true,
        racing_reads: 1,
        preemptions: 1,
    });
}

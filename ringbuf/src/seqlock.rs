//! The seqlock protocol of one slot, and a reader's cursor over the ring.
//!
//! This module is the whole of the concurrency argument; the mapped file (`mapped`) only supplies
//! the memory. It is written against [`crate::sync`] so that loom checks this very code.
//!
//! Sequence word of a slot: `0` = never written, `2n - 1` = frame `n` is being written,
//! `2n` = frame `n` is complete. There is exactly one writer (it holds the ring file's flock),
//! so marking a slot needs a plain store, not the compare-and-swap a multi-writer seqlock uses.
//!
//! Payloads are copied word by word with relaxed atomic loads and stores. A reader races the
//! writer by design (that is what makes it a seqlock), and a racing non-atomic read would be a
//! data race, i.e. undefined behaviour, even though the torn result is thrown away. Word-sized
//! relaxed atomics compile to plain moves and make the race defined. The `atomic-memcpy` crate does
//! the same for `Sized` values only; frames have a length known at run time, hence this loop.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{acquire_u64, fence, AtomicU64};
use crate::types::{FrameKind, FrameNo, WallNanos};

/// Size of a payload word: payload areas are whole numbers of these.
pub(crate) const WORD: usize = std::mem::size_of::<u64>();

/// Metadata at the start of each slot. 64-byte aligned so slots never share a cache line.
#[repr(C, align(64))]
pub(crate) struct SlotMeta {
    pub(crate) seq: AtomicU64,
    pub(crate) len: AtomicU64,
    pub(crate) capture: AtomicU64,
    pub(crate) frame_no: AtomicU64,
    /// [`FLAG_KEY`] for a keyframe.
    pub(crate) flags: AtomicU64,
    /// The rest of the cache line, spelled out: a shared reference to the slot must not cover
    /// bytes that are not atomics, since another process may write them.
    _reserved: [AtomicU64; 3],
}

/// `flags` bit of a frame decodable on its own ([`FrameKind::Key`]).
const FLAG_KEY: u64 = 1;

fn flags_of(kind: FrameKind) -> u64 {
    match kind {
        FrameKind::Key => FLAG_KEY,
        FrameKind::Delta => 0,
    }
}

fn kind_of(flags: u64) -> FrameKind {
    if flags & FLAG_KEY != 0 {
        FrameKind::Key
    } else {
        FrameKind::Delta
    }
}

#[cfg(loom)]
impl SlotMeta {
    pub(crate) fn new() -> SlotMeta {
        SlotMeta {
            seq: AtomicU64::new(0),
            len: AtomicU64::new(0),
            capture: AtomicU64::new(0),
            frame_no: AtomicU64::new(0),
            flags: AtomicU64::new(0),
            _reserved: [(); 3].map(|()| AtomicU64::new(0)),
        }
    }
}

/// One slot as the protocol sees it.
pub(crate) struct SlotRef<'a> {
    pub(crate) meta: &'a SlotMeta,
    /// At least `slot_size` bytes, as whole words.
    pub(crate) payload: &'a [AtomicU64],
}

/// The memory a ring lives in: a mapped file in production, plain heap memory under loom.
pub(crate) trait RingMemory {
    /// Number of the last published frame ([`FrameNo::NONE`] before the first).
    fn head(&self) -> &AtomicU64;
    fn slot_count(&self) -> u32;
    /// Largest payload a slot holds, in bytes.
    fn slot_size(&self) -> usize;
    /// `index < slot_count()`.
    fn slot(&self, index: usize) -> SlotRef<'_>;
    /// Whether every frame stands alone (JPEG): then no slot's flags need reading to find a
    /// keyframe.
    fn every_frame_is_key(&self) -> bool;
}

fn slot_of(ring: &impl RingMemory, frame: FrameNo) -> SlotRef<'_> {
    ring.slot((frame.0 % u64::from(ring.slot_count())) as usize)
}

const fn writing_seq(frame: FrameNo) -> u64 {
    frame.0.wrapping_mul(2).wrapping_sub(1)
}

const fn complete_seq(frame: FrameNo) -> u64 {
    frame.0.wrapping_mul(2)
}

/// What the writer stores beside a frame's bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) frame: FrameNo,
    pub(crate) capture: WallNanos,
    pub(crate) kind: FrameKind,
}

/// Writes `payload` as frame `stamp.frame` and advances `head` to it.
///
/// The caller is the ring's only writer, the frame is `head + 1`, and `payload` fits a slot.
pub(crate) fn publish(ring: &impl RingMemory, stamp: Stamp, payload: &[u8]) {
    let Stamp {
        frame,
        capture,
        kind,
    } = stamp;
    debug_assert!(payload.len() <= ring.slot_size());
    let slot = slot_of(ring, frame);

    // Relaxed: ordering against the payload stores comes from the fence below.
    slot.meta.seq.store(writing_seq(frame), Relaxed);
    // SYNC POINT: keeps the payload and metadata stores below from being seen before the odd mark.
    // A reader that observes any of them and then runs its Acquire fence (see `copy_frame`) is
    // guaranteed to see a sequence value no older than this odd one, and discards its copy.
    fence(Release);

    store_words(slot.payload, payload);
    slot.meta.len.store(payload.len() as u64, Relaxed);
    slot.meta.capture.store(capture.0, Relaxed);
    slot.meta.frame_no.store(frame.0, Relaxed);
    slot.meta.flags.store(flags_of(kind), Relaxed);

    // SYNC POINT: Release publishes the payload and metadata written above to any reader whose
    // Acquire load of `seq` sees this even value.
    slot.meta.seq.store(complete_seq(frame), Release);
    // SYNC POINT: Release so that a reader whose Acquire load of `head` sees `frame` also sees the
    // slot's even sequence value stored just above (and everything before it).
    ring.head().store(frame.0, Release);
}

fn store_words(dst: &[AtomicU64], src: &[u8]) {
    // Four words per iteration: the loop's bookkeeping otherwise costs as much as the stores.
    const BLOCK: usize = 4 * WORD;
    let mut blocks = src.chunks_exact(BLOCK);
    for (words, block) in dst.chunks_exact(4).zip(&mut blocks) {
        for (word, bytes) in words.iter().zip(block.chunks_exact(WORD)) {
            let bytes: [u8; WORD] = bytes.try_into().expect("chunks_exact yields whole words");
            word.store(u64::from_ne_bytes(bytes), Relaxed);
        }
    }
    let done = src.len() - blocks.remainder().len();
    let rest = &src[done..];
    let dst = &dst[done / WORD..];
    let mut chunks = rest.chunks_exact(WORD);
    for (word, chunk) in dst.iter().zip(&mut chunks) {
        let bytes: [u8; WORD] = chunk.try_into().expect("chunks_exact yields whole words");
        word.store(u64::from_ne_bytes(bytes), Relaxed);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut bytes = [0u8; WORD];
        bytes[..tail.len()].copy_from_slice(tail);
        dst[rest.len() / WORD].store(u64::from_ne_bytes(bytes), Relaxed);
    }
}

fn load_words(src: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    let words = len.div_ceil(WORD);
    out.clear();
    out.reserve(words * WORD);
    // Writing into the spare capacity, rather than zero-filling with `resize` first, saves a
    // pass over the frame: a frame is copied out once per server process, on the hot path.
    let spare = &mut out.spare_capacity_mut()[..words * WORD];
    for (chunk, word) in spare.chunks_exact_mut(WORD).zip(&src[..words]) {
        for (dst, byte) in chunk.iter_mut().zip(word.load(Relaxed).to_ne_bytes()) {
            dst.write(byte);
        }
    }
    // SAFETY: the loop above initialised the first `words * WORD >= len` bytes of the spare
    // capacity (`src[..words]` would have panicked had the slot been shorter).
    unsafe { out.set_len(len) };
}

/// What a reader learns about a frame besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    pub frame_no: FrameNo,
    /// When the capture side took the frame (CLOCK_REALTIME).
    pub capture: WallNanos,
    pub len: usize,
    pub kind: FrameKind,
}

/// The outcome of one attempt to copy a frame out of its slot.
#[derive(Debug)]
pub(crate) enum CopyOutcome {
    Complete(FrameMeta),
    /// The slot never held the frame: it holds an older one, or nothing. A frame up to `head` is
    /// always in its slot or overwritten by a newer one, except in a file that took over the
    /// numbering of a replaced ring (a geometry change, a damaged file): its slots start empty.
    Missing,
    /// The slot held a newer frame, or the writer changed it while we copied.
    Torn,
    /// The slot was stable but its metadata cannot be right: only a foreign or broken writer does this.
    Corrupt(String),
}

/// Copies frame `frame` into `out`, or reports why it could not.
pub(crate) fn copy_frame(ring: &impl RingMemory, frame: FrameNo, out: &mut Vec<u8>) -> CopyOutcome {
    let slot = slot_of(ring, frame);
    // SYNC POINT: Acquire pairs with the writer's Release store of the even value, so the payload
    // and metadata of `frame` are visible to the loads below. (A relaxed load and a fence, as
    // readers map the ring read-only: see `sync::acquire_u64`.)
    let before = acquire_u64(&slot.meta.seq);
    if before < writing_seq(frame) {
        // The caller saw `head >= frame` (Acquire), and the writer completes a frame's slot
        // before advancing `head` to it, so an older sequence here was never overwritten by
        // `frame`: it was never written in this file.
        return CopyOutcome::Missing;
    }
    if before != complete_seq(frame) {
        return CopyOutcome::Torn;
    }
    let len = slot.meta.len.load(Relaxed);
    let capture = slot.meta.capture.load(Relaxed);
    let stored_no = slot.meta.frame_no.load(Relaxed);
    let flags = slot.meta.flags.load(Relaxed);
    // A torn `len` may be anything: never copy past the slot, whatever it says.
    let slot_size = ring.slot_size();
    let copy_len = usize::try_from(len).map_or(slot_size, |l| l.min(slot_size));
    load_words(slot.payload, copy_len, out);

    // SYNC POINT: keeps the payload loads above from moving below the re-check. Pairs with the
    // writer's Release fence: if any load above saw a byte of a newer frame, the re-check sees
    // (at least) that frame's odd mark.
    fence(Acquire);
    if slot.meta.seq.load(Relaxed) != before {
        return CopyOutcome::Torn;
    }
    if copy_len as u64 != len {
        return CopyOutcome::Corrupt(format!("length {len} exceeds the slot size {slot_size}"));
    }
    if stored_no != frame.0 {
        return CopyOutcome::Corrupt(format!("slot says frame {stored_no}"));
    }
    CopyOutcome::Complete(FrameMeta {
        frame_no: frame,
        capture: WallNanos(capture),
        len: copy_len,
        kind: kind_of(flags),
    })
}

/// What one reader has seen: its own, never shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    /// Frames returned.
    pub delivered: u64,
    /// Frames never returned because the reader fell behind: exactly the sum of the gaps between
    /// consecutive returned frame numbers (and before the first, counted from where it started).
    pub skipped: u64,
    /// Copies thrown away because the writer overwrote the slot during or before the copy.
    pub torn: u64,
}

/// How many times one `read` call retries torn copies before it gives up until the next wake-up.
/// Bounded so that a ring scribbled on by a foreign process cannot spin a reader forever.
const MAX_TORN_ATTEMPTS: usize = 8;

/// A reader's position: the next frame it wants, and what it has seen so far.
///
/// After any gap (a fresh start, a skip, a missing or corrupt frame) the next frame returned is
/// a keyframe: an H.264 decoder cannot use a delta frame whose predecessors it never got. Every
/// JPEG frame is a keyframe, so for JPEG rings this changes nothing.
#[derive(Clone, Debug)]
pub(crate) struct Cursor {
    next: FrameNo,
    needs_key: bool,
    stats: ReaderStats,
}

/// The result of [`Cursor::read`].
#[derive(Debug)]
pub(crate) enum Read {
    Frame(FrameMeta),
    /// Nothing newer than the last returned frame (or only torn copies this time).
    Nothing,
    /// The frame at the cursor was unreadable; the cursor moved past it.
    Corrupt {
        frame: FrameNo,
        reason: String,
    },
}

impl Cursor {
    /// A cursor whose first frame will be the first keyframe from `next` on (or the newest
    /// keyframe, if `next` is already overwritten).
    pub(crate) fn starting_at(next: FrameNo) -> Cursor {
        Cursor {
            next,
            needs_key: true,
            stats: ReaderStats::default(),
        }
    }

    /// A cursor for a reader that starts now: at the newest keyframe still readable, so that a
    /// decoder can begin at once, or else at `head` (waiting there for the next keyframe).
    pub(crate) fn starting_now(ring: &impl RingMemory) -> Cursor {
        // SYNC POINT: Acquire, as in `read`: the slots up to `head` are complete (or newer).
        let head = FrameNo(acquire_u64(ring.head())).min(FrameNo::MAX_VALID);
        let start = newest_key(ring, head).unwrap_or(head).max(FrameNo(1));
        Cursor::starting_at(start)
    }

    /// The next frame this cursor wants.
    #[cfg(all(loom, test))]
    pub(crate) fn next(&self) -> FrameNo {
        self.next
    }

    pub(crate) fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Moves to `frame` (which must not be behind the cursor), counting what is passed over.
    /// Whatever follows a gap must start at a keyframe.
    pub(crate) fn skip_to(&mut self, frame: FrameNo) {
        if frame > self.next {
            self.stats.skipped += frame.0 - self.next.0;
            self.next = frame;
            self.needs_key = true;
        }
    }

    /// Whether `head` holds a frame this cursor has not returned yet.
    pub(crate) fn has_new(&self, head: FrameNo) -> bool {
        head != FrameNo::NONE && head >= self.next
    }

    /// Copies the next frame into `out`, skipping ahead first if the writer has lapped us.
    pub(crate) fn read(&mut self, ring: &impl RingMemory, out: &mut Vec<u8>) -> Read {
        // Missing frames move the cursor towards `head` and torn copies are retried a few times;
        // either way the loop is bounded, whatever a foreign process does to the ring.
        let mut torn = 0;
        for _ in 0..MAX_TORN_ATTEMPTS + ring.slot_count() as usize {
            // SYNC POINT: Acquire pairs with the writer's Release store of `head`: the slot of
            // every frame up to `head` is seen complete (or newer) by `copy_frame`.
            let head = FrameNo(acquire_u64(ring.head()));
            if head > FrameNo::MAX_VALID {
                return Read::Corrupt {
                    frame: head,
                    reason: "head is beyond any real frame number".into(),
                };
            }
            if !self.has_new(head) {
                self.follow_regression(head);
                return Read::Nothing;
            }
            self.catch_up(ring, head);
            // A delta frame after a gap is passed over unread: on a hostile ring flagged all
            // delta, copying each only to drop it would cost a whole ring's bytes per call.
            let may_be_delta = self.needs_key && !ring.every_frame_is_key();
            if may_be_delta && stable_kind(ring, self.next) == Some(FrameKind::Delta) {
                self.skip_to(self.next.next());
                continue;
            }
            match copy_frame(ring, self.next, out) {
                // Undecodable after a gap: passed over like a frame skipped.
                CopyOutcome::Complete(meta) if self.needs_key && !meta.kind.is_key() => {
                    self.skip_to(meta.frame_no.next());
                }
                CopyOutcome::Complete(meta) => {
                    self.next = meta.frame_no.next();
                    self.needs_key = false;
                    self.stats.delivered += 1;
                    return Read::Frame(meta);
                }
                CopyOutcome::Missing => self.skip_to(self.next.next()),
                // Overwritten under us: the writer is at least a lap ahead, so the next attempt's
                // catch-up jumps to the newest frame.
                CopyOutcome::Torn => {
                    self.stats.torn += 1;
                    torn += 1;
                    if torn == MAX_TORN_ATTEMPTS {
                        break;
                    }
                }
                CopyOutcome::Corrupt(reason) => {
                    let frame = self.next;
                    self.skip_to(frame.next());
                    return Read::Corrupt { frame, reason };
                }
            }
        }
        Read::Nothing
    }

    /// Slots `head - (slot_count - 2) ..= head` are safe to read (see [`readable_lag`]).
    /// Anything older is given up for the newest keyframe among them, or, if none is readable,
    /// for `head` (and the wait for the next keyframe that the gap implies).
    fn catch_up(&mut self, ring: &impl RingMemory, head: FrameNo) {
        if head.0 - self.next.0 > readable_lag(ring) {
            self.skip_to(newest_key(ring, head).unwrap_or(head));
        }
    }

    /// A `head` behind what we already returned means the ring was reset under us (only a
    /// foreign writer does that; ours resumes numbering). Follow it rather than wait forever;
    /// the frames that follow are a new stream, to be entered at a keyframe.
    fn follow_regression(&mut self, head: FrameNo) {
        if head.next() < self.next {
            self.next = head.next();
            self.needs_key = true;
        }
    }
}

/// How far behind `head` a frame may be and still be read: one slot of margin keeps a reader
/// off the slot the writer fills next.
fn readable_lag(ring: &impl RingMemory) -> u64 {
    u64::from(ring.slot_count().saturating_sub(2))
}

/// The newest keyframe among the readable frames up to `head`, judged by each slot's flags
/// alone (the copy that follows checks the frame again).
fn newest_key(ring: &impl RingMemory, head: FrameNo) -> Option<FrameNo> {
    if ring.every_frame_is_key() {
        return Some(head);
    }
    let oldest = head.0.saturating_sub(readable_lag(ring)).max(1);
    (oldest..=head.0)
        .rev()
        .map(FrameNo)
        .find(|&frame| is_key_in_slot(ring, frame))
}

/// Whether `frame`'s slot holds `frame`, complete, flagged as a keyframe.
fn is_key_in_slot(ring: &impl RingMemory, frame: FrameNo) -> bool {
    stable_kind(ring, frame) == Some(FrameKind::Key)
}

/// The kind of `frame`, if its slot holds it complete and unchanged while its flags are read:
/// the seqlock read of `copy_frame` applied to the flags word alone.
fn stable_kind(ring: &impl RingMemory, frame: FrameNo) -> Option<FrameKind> {
    let slot = slot_of(ring, frame);
    // SYNC POINT: Acquire pairs with the writer's Release store of the even value, so the flags
    // loaded next are `frame`'s or newer.
    let before = acquire_u64(&slot.meta.seq);
    if before != complete_seq(frame) {
        return None;
    }
    let flags = slot.meta.flags.load(Relaxed);
    // SYNC POINT: keeps the flags load from moving below the re-check, as in `copy_frame`: a
    // flags word of a newer frame implies the re-check sees that frame's odd mark.
    fence(Acquire);
    (slot.meta.seq.load(Relaxed) == before).then_some(kind_of(flags))
}

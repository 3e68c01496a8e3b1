//! Cutting an H.264 Annex B byte stream (`ffmpeg … -f h264 -`) into access units, one picture
//! each. Nothing in the stream says where an access unit ends; ITU-T H.264 7.4.1.2.3 says where
//! the next one begins: at an access unit delimiter, or, once the current unit holds a picture,
//! at an SPS, PPS, SEI or NAL unit of types 14 to 18, or at the first slice of another picture
//! (`first_mb_in_slice` 0). An end of sequence or of stream closes its unit.
//!
//! The bytes of each access unit are passed on exactly as they came. Written by hand: the
//! crates that read H.264 parse NAL units, but none cuts a byte stream into access units.

use memchr::memmem;
use ringbuf::h264::{NAL_ACCESS_UNIT_DELIMITER, NAL_IDR_SLICE, NAL_PPS, NAL_SPS};

use super::carries_picture;
use crate::split::{Split, Splitter};

const START_CODE: [u8; 3] = [0, 0, 1];

/// NAL unit types (table 7-1), besides those in [`ringbuf::h264`], that decide where access
/// units begin.
const NAL_NON_IDR_SLICE: u8 = 1;
const NAL_SEI: u8 = 6;
const NAL_END_OF_SEQUENCE: u8 = 10;
const NAL_END_OF_STREAM: u8 = 11;
/// Prefix NAL unit to subset SPS and the reserved types after them: each, like an SPS, may
/// only come before the pictures of its access unit.
const NAL_BEFORE_PICTURE: std::ops::RangeInclusive<u8> = 14..=18;

/// What the access unit being gathered holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    has_picture: bool,
    /// An end of sequence or of stream: whatever follows begins the next unit.
    closed: bool,
}

impl Progress {
    fn note(&mut self, nal_header: u8) {
        let nal_type = nal_header & 0x1F;
        self.has_picture |= carries_picture(nal_type);
        self.closed |= matches!(nal_type, NAL_END_OF_SEQUENCE | NAL_END_OF_STREAM);
    }

    /// Whether the NAL unit `nal` (from its header byte on, possibly cut short by the end of
    /// what was read) begins a new access unit after this one; `None` until that can be told.
    fn is_ended_by(self, nal: &[u8]) -> Option<bool> {
        let &header = nal.first()?;
        if self.closed {
            return Some(true);
        }
        let nal_type = header & 0x1F;
        Some(match nal_type {
            NAL_ACCESS_UNIT_DELIMITER => true,
            NAL_SEI | NAL_SPS | NAL_PPS => self.has_picture,
            t if NAL_BEFORE_PICTURE.contains(&t) => self.has_picture,
            NAL_NON_IDR_SLICE | NAL_IDR_SLICE => self.has_picture && starts_picture(*nal.get(1)?),
            _ => false,
        })
    }
}

/// Whether a slice whose header begins with `byte` is the first of its picture:
/// `first_mb_in_slice`, an Exp-Golomb number, is 0 exactly when its first bit is 1.
fn starts_picture(byte: u8) -> bool {
    byte & 0x80 != 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Passing over bytes up to where an access unit surely begins: at the start of the stream
    /// (bytes before the first start code, or a stream joined in the middle of a picture), and
    /// after a unit that grew past the limit. The progress is that of the unit passed over.
    Resyncing(Progress),
    Gathering(Progress),
}

#[derive(Debug)]
pub struct AccessUnitSplitter {
    buf: Vec<u8>,
    state: State,
    /// Where the access unit being gathered (or the bytes being passed over) starts in `buf`.
    /// What is before it is done with, and is dropped in bulk by [`push`](Splitter::push),
    /// not unit by unit, so that the work is in proportion to the stream's length.
    start: usize,
    /// Where the search for the next start code resumes.
    scan: usize,
    /// An access unit longer than this is dropped as broken.
    limit: usize,
}

impl AccessUnitSplitter {
    /// A splitter for access units of at most `max_frame_bytes` (`--max-frame-bytes`).
    pub fn new(max_frame_bytes: usize) -> AccessUnitSplitter {
        AccessUnitSplitter {
            buf: Vec::new(),
            // As if after a picture: the stream may begin in the middle of one.
            state: State::Resyncing(Progress {
                has_picture: true,
                closed: false,
            }),
            start: 0,
            scan: 0,
            limit: max_frame_bytes,
        }
    }

    /// Bytes held that are not yet part of a complete access unit.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn progress(&mut self) -> &mut Progress {
        match &mut self.state {
            State::Resyncing(progress) | State::Gathering(progress) => progress,
        }
    }

    /// Where the next start code begins, from `scan` on.
    fn find_start_code(&self) -> Option<usize> {
        memmem::find(&self.buf[self.scan..], &START_CODE).map(|i| self.scan + i)
    }

    /// Where a unit beginning with the start code at `at` begins: with the zero byte before it,
    /// if there is one, so that a four-byte start code stays whole.
    fn cut_before(&self, at: usize) -> usize {
        if at > self.start && self.buf[at - 1] == 0 {
            at - 1
        } else {
            at
        }
    }

    /// Starts a new access unit at `cut`; returns the one it ends, if one was being gathered.
    fn begin_unit(&mut self, cut: usize) -> Option<Split> {
        let ended = match self.state {
            State::Gathering(_) => Some(self.piece(cut)),
            State::Resyncing(_) => None,
        };
        self.start = cut;
        self.state = State::Gathering(Progress::default());
        ended
    }

    /// The bytes from the unit's start to `end`: a frame, or broken if longer than the limit.
    fn piece(&self, end: usize) -> Split {
        let bytes = self.buf[self.start..end].to_vec();
        if bytes.len() > self.limit {
            Split::Broken(bytes)
        } else {
            Split::Frame(bytes)
        }
    }

    /// No further start code can be judged yet. A unit that is already sure to be longer than
    /// the limit is given up now, so that a stream that never ends one cannot fill memory.
    fn wait_for_more(&mut self) -> Option<Split> {
        // Any start code found later is at `scan` or after, so the unit being gathered holds
        // at least everything before the zero byte that may precede it; that byte is kept, as
        // it may belong to the next unit.
        let sure_end = self.scan.saturating_sub(1).max(self.start);
        match self.state {
            State::Gathering(progress) if sure_end - self.start > self.limit => {
                let broken = Split::Broken(self.buf[self.start..sure_end].to_vec());
                self.start = sure_end;
                self.state = State::Resyncing(progress);
                Some(broken)
            }
            State::Gathering(_) => None,
            State::Resyncing(_) => {
                self.start = sure_end;
                None
            }
        }
    }
}

impl Splitter for AccessUnitSplitter {
    fn push(&mut self, data: &[u8]) {
        // Dropping what is done once it is at least half the buffer keeps each byte moved a
        // bounded number of times.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn next_frame(&mut self) -> Option<Split> {
        loop {
            let Some(at) = self.find_start_code() else {
                // The last two bytes may be the first two of a start code.
                self.scan = self.scan.max(self.buf.len().saturating_sub(2));
                return self.wait_for_more();
            };
            let progress = *self.progress();
            let nal = &self.buf[at + START_CODE.len()..];
            let Some(ends_unit) = progress.is_ended_by(nal) else {
                self.scan = at;
                return self.wait_for_more();
            };
            let header = nal[0];
            let cut = self.cut_before(at);
            self.scan = at + START_CODE.len();
            let ended = if ends_unit {
                self.begin_unit(cut)
            } else {
                None
            };
            self.progress().note(header);
            if ended.is_some() {
                return ended;
            }
        }
    }

    fn finish(&mut self) -> Option<Split> {
        let last = match self.state {
            State::Gathering(_) if self.buf.len() > self.start => Some(self.piece(self.buf.len())),
            _ => None,
        };
        *self = AccessUnitSplitter::new(self.limit);
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AUD: &[u8] = &[0, 0, 0, 1, 0x09, 0xF0];
    const SPS: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xD9];
    const PPS: &[u8] = &[0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80];
    const SEI: &[u8] = &[0, 0, 1, 0x06, 0x05, 0x01, 0x80];

    /// A slice: IDR or not, the first of its picture or not, `len` bytes of slice data.
    fn slice(idr: bool, first: bool, len: usize) -> Vec<u8> {
        let header = if idr { 0x65 } else { 0x41 };
        let first_byte = if first { 0x88 } else { 0x24 };
        let mut v = vec![0, 0, 1, header, first_byte];
        v.extend((0..len).map(|i| 0x10 + (i % 0xE0) as u8));
        v
    }

    fn split_all(input: &[u8], chunk: usize, limit: usize) -> Vec<Split> {
        let mut splitter = AccessUnitSplitter::new(limit);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            splitter.push(piece);
            while let Some(split) = splitter.next_frame() {
                out.push(split);
            }
        }
        out.extend(splitter.finish());
        out
    }

    fn frames(units: &[Vec<u8>]) -> Vec<Split> {
        units.iter().map(|u| Split::Frame(u.clone())).collect()
    }

    #[test]
    fn delimiters_begin_access_units() {
        let units = vec![
            [AUD, SPS, PPS, &slice(true, true, 20)].concat(),
            [AUD, &slice(false, true, 5)[..]].concat(),
            [AUD, &slice(false, true, 7)[..]].concat(),
        ];
        for chunk in [1, 2, 3, 5, 1000] {
            assert_eq!(split_all(&units.concat(), chunk, 1 << 20), frames(&units));
        }
    }

    #[test]
    fn without_delimiters_parameter_sets_sei_and_first_slices_begin_access_units() {
        let units = vec![
            [SPS, PPS, SEI, &slice(true, true, 9)].concat(),
            slice(false, true, 4),
            [SEI, &slice(false, true, 4)[..]].concat(),
            [SPS, PPS, &slice(true, true, 3)].concat(),
        ];
        assert_eq!(split_all(&units.concat(), 3, 1 << 20), frames(&units));
    }

    #[test]
    fn the_slices_of_one_picture_stay_in_one_access_unit() {
        let units = vec![
            [
                SPS,
                PPS,
                &slice(true, true, 8),
                &slice(true, false, 8),
                &slice(true, false, 8),
            ]
            .concat(),
            [slice(false, true, 6), slice(false, false, 6)].concat(),
        ];
        assert_eq!(split_all(&units.concat(), 4, 1 << 20), frames(&units));
    }

    #[test]
    fn an_end_of_stream_closes_its_access_unit() {
        let units = vec![
            [&slice(false, true, 4)[..], &[0, 0, 1, 0x0B]].concat(),
            slice(false, false, 4),
        ];
        // A slice that is not the first of a picture cannot begin a unit, unless the previous
        // one was closed.
        assert_eq!(split_all(&units.concat(), 2, 1 << 20), frames(&units));
    }

    #[test]
    fn bytes_before_the_first_access_unit_are_passed_over() {
        let unit = [AUD, &slice(false, true, 4)[..]].concat();
        let mut stream = b"garbage \x00\x01 and a slice joined midway:".to_vec();
        stream.extend_from_slice(&slice(false, false, 6));
        stream.extend_from_slice(&unit);
        assert_eq!(split_all(&stream, 7, 1 << 20), frames(&[unit]));
        assert_eq!(split_all(b"no start code at all", 4, 1 << 20), vec![]);
    }

    #[test]
    fn the_end_of_the_input_ends_the_last_access_unit_wherever_it_was_cut() {
        let stream = [
            AUD,
            SPS,
            PPS,
            &slice(true, true, 10),
            AUD,
            &slice(false, true, 10),
        ]
        .concat();
        for cut in 0..=stream.len() {
            let splits = split_all(&stream[..cut], 3, 1 << 20);
            let joined: Vec<u8> = splits
                .iter()
                .flat_map(|s| match s {
                    Split::Frame(f) => f.clone(),
                    Split::Broken(_) => panic!("broken at cut {cut}"),
                })
                .collect();
            // Once the first NAL unit's header (byte 4) is in, everything comes out, in order.
            let expected = if cut > 4 { &stream[..cut] } else { &[] };
            assert_eq!(joined, expected, "cut at {cut}");
        }
    }

    #[test]
    fn an_access_unit_past_the_limit_is_dropped_and_the_next_one_arrives() {
        let small = [AUD, &slice(false, true, 10)[..]].concat();
        let huge = [AUD, &slice(false, true, 5000)[..]].concat();
        let stream = [small.clone(), huge, small.clone(), small.clone()].concat();
        for chunk in [7, 100, 10_000] {
            let splits = split_all(&stream, chunk, 1000);
            assert_eq!(splits.len(), 4, "chunk {chunk}");
            assert_eq!(splits[0], Split::Frame(small.clone()));
            assert!(matches!(splits[1], Split::Broken(_)));
            assert_eq!(splits[2..], frames(&[small.clone(), small.clone()])[..]);
        }
    }

    #[test]
    fn a_unit_that_never_ends_is_given_up_without_holding_more_than_the_limit() {
        let mut splitter = AccessUnitSplitter::new(10_000);
        splitter.push(AUD);
        splitter.push(&slice(false, true, 0));
        let mut broken = 0;
        for _ in 0..100 {
            splitter.push(&[0x55; 1000]);
            while let Some(split) = splitter.next_frame() {
                assert!(matches!(split, Split::Broken(_)));
                broken += 1;
            }
            assert!(splitter.buffered() <= 10_000 + 3);
        }
        assert_eq!(broken, 1, "reported once, then passed over");
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_flood_of_tiny_access_units_splits_into_every_one_and_keeps_little() {
        let tiny = [AUD, &slice(false, true, 0)[..]].concat();
        let stream = tiny.repeat(50_000);
        let mut splitter = AccessUnitSplitter::new(1 << 20);
        let mut count = 0;
        for piece in stream.chunks(64 << 10) {
            splitter.push(piece);
            while let Some(split) = splitter.next_frame() {
                assert_eq!(split, Split::Frame(tiny.clone()));
                count += 1;
            }
            assert!(splitter.buffered() <= 2 * tiny.len());
            assert!(
                splitter.buf.len() <= 3 * (64 << 10),
                "what was consumed is dropped"
            );
        }
        count += splitter.finish().into_iter().count();
        assert_eq!(count, 50_000);
    }

    /// A stream made of NAL units whose kinds, lengths and start codes proptest picks, with
    /// garbage in front.
    fn arbitrary_stream() -> impl Strategy<Value = Vec<u8>> {
        let nal = (
            prop::sample::select(vec![1u8, 5, 6, 7, 8, 9, 10, 11, 12, 14, 20]),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(1u8..=0xFF, 0..40),
        )
            .prop_map(|(nal_type, first, long_start, body)| {
                let mut v = if long_start {
                    vec![0, 0, 0, 1]
                } else {
                    vec![0, 0, 1]
                };
                v.push(0x60 | nal_type);
                v.push(if first { 0x80 } else { 0x40 });
                v.extend(body);
                v
            });
        (
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(nal, 0..60),
        )
            .prop_map(|(garbage, nals)| [garbage, nals.concat()].concat())
    }

    /// Broken pieces' lengths depend on when the limit was noticed; that there was one does not.
    fn outline(splits: Vec<Split>) -> Vec<Option<Vec<u8>>> {
        splits
            .into_iter()
            .map(|s| match s {
                Split::Frame(f) => Some(f),
                Split::Broken(_) => None,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn splitting_does_not_depend_on_how_the_input_was_read(
            stream in arbitrary_stream(),
            chunk in 1usize..50,
            limit in prop::sample::select(vec![0usize, 8, 30, 100, 1 << 20]),
        ) {
            prop_assert_eq!(
                outline(split_all(&stream, chunk, limit)),
                outline(split_all(&stream, stream.len(), limit))
            );
        }

        #[test]
        fn access_units_are_pieces_of_the_input_in_order_and_never_past_the_limit(
            stream in arbitrary_stream(),
            chunk in 1usize..50,
            limit in prop::sample::select(vec![0usize, 30, 1 << 20]),
        ) {
            let mut rest = &stream[..];
            for split in split_all(&stream, chunk, limit) {
                if let Split::Frame(unit) = split {
                    prop_assert!(unit.len() <= limit);
                    let at = memmem::find(rest, &unit);
                    prop_assert!(at.is_some(), "not a piece of what is left");
                    rest = &rest[at.unwrap_or(0) + unit.len()..];
                }
            }
        }

        #[test]
        fn any_bytes_split_without_panicking(
            input in prop::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..64,
        ) {
            split_all(&input, chunk, 512);
        }
    }
}

//! Cutting a byte stream into JPEG frames: concatenated JPEGs (`ffmpeg -f mjpeg -`) or a
//! multipart MJPEG body, with or without Content-Length. Markers are parsed properly (segment
//! lengths, entropy-coded data with byte stuffing), so an EXIF thumbnail's end marker or a
//! stray 0xFFD9 in a header does not cut a frame short; anything outside a JPEG (multipart
//! headers, boundaries, garbage) is skipped.
//!
//! Written by hand: the crates that parse JPEG want a complete image in memory, and the
//! multipart crates want well-formed parts; a camera stream is neither.

use memchr::memchr;

pub use crate::split::Split;
use crate::split::Splitter;

/// Room above `--max-frame-bytes` for what the pipeline may legitimately shrink away (fill
/// bytes, a larger APP segment); a frame past the limit plus this is cut off unread.
const LIMIT_SLACK: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for an SOI marker.
    Searching,
    /// Inside a frame's marker segments, at offset `pos` of the buffer.
    Segments,
    /// Inside entropy-coded data after SOS.
    Entropy,
}

#[derive(Debug)]
pub struct JpegSplitter {
    buf: Vec<u8>,
    state: State,
    /// Where the current frame (or the search for one) starts in `buf`; what is before it is
    /// done with, and is dropped in bulk by [`push`](Self::push), not frame by frame, so that a
    /// stream of many tiny frames costs time in proportion to its bytes.
    start: usize,
    /// Where parsing continues in `buf`.
    pos: usize,
    /// A frame that grows past this many bytes is cut off as broken (and the scan resyncs on
    /// the next SOI), so a stream that never ends a frame cannot fill memory.
    limit: usize,
}

impl JpegSplitter {
    /// A splitter for frames of at most about `max_frame_bytes` (`--max-frame-bytes`).
    pub fn new(max_frame_bytes: usize) -> JpegSplitter {
        JpegSplitter {
            buf: Vec::new(),
            state: State::Searching,
            start: 0,
            pos: 0,
            limit: max_frame_bytes.saturating_add(LIMIT_SLACK),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        // Dropping what is done once it is at least half the buffer keeps each byte moved a
        // bounded number of times.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete (or broken) frame in what was pushed so far.
    pub fn next_frame(&mut self) -> Option<Split> {
        loop {
            let step = match self.state {
                State::Searching => {
                    if !self.find_soi() {
                        return None;
                    }
                    Some(Step::Continue)
                }
                State::Segments => self.step_segment(),
                State::Entropy => self.step_entropy(),
            };
            match step {
                Some(Step::Continue) => {}
                Some(Step::Done(end)) => return Some(Split::Frame(self.take(end))),
                Some(Step::Broken(end)) => return Some(Split::Broken(self.take(end))),
                // Waiting for more bytes: unless the frame is already too large to be one.
                None => return self.cut_oversized(self.buf.len()),
            }
            if let Some(broken) = self.cut_oversized(self.pos) {
                return Some(broken);
            }
        }
    }

    /// The frame so far, up to `end`, as broken if it is longer than the limit; the scan then
    /// resyncs after what was consumed.
    fn cut_oversized(&mut self, end: usize) -> Option<Split> {
        (end - self.start > self.limit).then(|| Split::Broken(self.take(end)))
    }

    /// Skips everything before the next SOI; `false` if there is none yet.
    fn find_soi(&mut self) -> bool {
        let mut from = self.start;
        while let Some(i) = memchr(0xFF, &self.buf[from..]) {
            let at = from + i;
            match self.buf.get(at + 1) {
                Some(0xD8) => {
                    self.start = at;
                    self.pos = at + 2;
                    self.state = State::Segments;
                    return true;
                }
                Some(_) => from = at + 1,
                None => {
                    // Keep a trailing 0xFF: it may be the first half of an SOI.
                    self.start = at;
                    self.pos = at;
                    return false;
                }
            }
        }
        self.start = self.buf.len();
        self.pos = self.start;
        false
    }

    fn step_segment(&mut self) -> Option<Step> {
        let buf = &self.buf;
        let pos = self.pos;
        let &first = buf.get(pos)?;
        if first != 0xFF {
            return Some(Step::Broken(pos));
        }
        let &marker = buf.get(pos + 1)?;
        match marker {
            // Fill byte before a marker.
            0xFF => self.pos += 1,
            0xD9 => return Some(Step::Done(pos + 2)),
            0xD8 => return Some(Step::Broken(pos)),
            0x01 | 0xD0..=0xD7 => self.pos += 2,
            _ => {
                let len_bytes = buf.get(pos + 2..pos + 4)?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                if len < 2 {
                    return Some(Step::Broken(pos));
                }
                self.pos = pos + 2 + len;
                if marker == 0xDA {
                    self.state = State::Entropy;
                }
            }
        }
        Some(Step::Continue)
    }

    fn step_entropy(&mut self) -> Option<Step> {
        let Some(i) = memchr(0xFF, self.buf.get(self.pos..)?) else {
            // No marker in what is buffered: never scan these bytes again.
            self.pos = self.buf.len();
            return None;
        };
        let at = self.pos + i;
        let Some(&next) = self.buf.get(at + 1) else {
            // A trailing 0xFF is the first half of a marker; resume at it.
            self.pos = at;
            return None;
        };
        match next {
            // Stuffed 0xFF, a restart marker, or fill: still entropy-coded data.
            0x00 | 0xD0..=0xD7 => self.pos = at + 2,
            0xFF => self.pos = at + 1,
            0xD8 => return Some(Step::Broken(at)),
            _ => {
                self.pos = at;
                self.state = State::Segments;
            }
        }
        Some(Step::Continue)
    }

    /// The bytes from the frame's start up to `end` as one frame; the search goes on after it.
    fn take(&mut self, end: usize) -> Vec<u8> {
        let end = end.min(self.buf.len());
        let frame = self.buf[self.start..end].to_vec();
        self.start = end;
        self.pos = end;
        self.state = State::Searching;
        frame
    }
}

impl Splitter for JpegSplitter {
    fn push(&mut self, data: &[u8]) {
        JpegSplitter::push(self, data);
    }

    fn next_frame(&mut self) -> Option<Split> {
        JpegSplitter::next_frame(self)
    }
}

enum Step {
    Continue,
    Done(usize),
    Broken(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small structurally complete JPEG: SOI, APP0, SOS with some entropy data, EOI.
    fn jpeg(tag: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, tag, 0xD9];
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, tag]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn split_all(input: &[u8], chunk: usize) -> Vec<Split> {
        let mut splitter = JpegSplitter::new(1 << 20);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            splitter.push(piece);
            while let Some(split) = splitter.next_frame() {
                out.push(split);
            }
        }
        out
    }

    #[test]
    fn concatenated_jpegs_split_exactly_whatever_the_read_sizes() {
        let stream = [jpeg(1), jpeg(2), jpeg(3)].concat();
        for chunk in [1, 2, 3, 7, 1000] {
            let frames = split_all(&stream, chunk);
            assert_eq!(
                frames,
                vec![
                    Split::Frame(jpeg(1)),
                    Split::Frame(jpeg(2)),
                    Split::Frame(jpeg(3))
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn multipart_headers_and_garbage_between_frames_are_skipped() {
        let mut stream = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        stream.extend_from_slice(&jpeg(1));
        stream.extend_from_slice(b"\r\n--frame\r\n\xff\xfe garbage \xd9\r\n\r\n");
        stream.extend_from_slice(&jpeg(2));
        assert_eq!(
            split_all(&stream, 5),
            vec![Split::Frame(jpeg(1)), Split::Frame(jpeg(2))]
        );
    }

    #[test]
    fn a_flood_of_tiny_frames_splits_into_every_one_and_keeps_little() {
        let tiny = [0xFF, 0xD8, 0xFF, 0xD9];
        let stream = tiny.repeat(128 << 10);
        let mut splitter = JpegSplitter::new(1 << 20);
        let mut frames = 0;
        for piece in stream.chunks(64 << 10) {
            splitter.push(piece);
            while let Some(split) = splitter.next_frame() {
                assert_eq!(split, Split::Frame(tiny.to_vec()));
                frames += 1;
            }
            assert_eq!(splitter.buffered(), 0);
            assert!(
                splitter.buf.len() <= 2 * (64 << 10),
                "what was consumed is dropped"
            );
        }
        assert_eq!(frames, 128 << 10);
    }

    #[test]
    fn a_truncated_frame_is_reported_broken_and_the_next_one_still_arrives() {
        let mut stream = jpeg(1);
        stream.truncate(15);
        stream.extend_from_slice(&jpeg(2));
        let frames = split_all(&stream, 4);
        assert_eq!(frames.len(), 2);
        assert!(matches!(frames[0], Split::Broken(_)));
        assert_eq!(frames[1], Split::Frame(jpeg(2)));
    }

    #[test]
    fn entropy_data_without_markers_is_scanned_once_and_cut_at_the_limit() {
        let max = 100_000;
        let mut splitter = JpegSplitter::new(max);
        splitter.push(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]);
        assert_eq!(splitter.next_frame(), None);
        let zeros = vec![0u8; 4096];
        let mut broken = 0;
        for _ in 0..200 {
            splitter.push(&zeros);
            match splitter.next_frame() {
                None => assert_eq!(splitter.pos, splitter.buf.len(), "rescans from the start"),
                Some(Split::Broken(bytes)) => {
                    assert!(bytes.len() <= max + LIMIT_SLACK + zeros.len());
                    broken += 1;
                }
                Some(Split::Frame(_)) => panic!("zeros made a frame"),
            }
            assert!(splitter.buffered() <= max + LIMIT_SLACK + zeros.len());
        }
        assert_eq!(
            broken, 1,
            "the oversized frame is reported once, then skipped"
        );
        // A trailing 0xFF is kept: it may start a marker.
        let mut splitter = JpegSplitter::new(max);
        splitter.push(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0xFF]);
        assert_eq!(splitter.next_frame(), None);
        assert_eq!(splitter.pos, 7);
        splitter.push(&[0xD9]);
        assert!(matches!(splitter.next_frame(), Some(Split::Frame(_))));
    }

    proptest::proptest! {
        #[test]
        fn a_frame_that_never_ends_never_buffers_past_the_limit(
            max in 0usize..20_000,
            run in proptest::collection::vec(0u8..0xFF, 1..512),
            chunk_count in 1usize..300,
        ) {
            let mut splitter = JpegSplitter::new(max);
            splitter.push(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]);
            for _ in 0..chunk_count {
                splitter.push(&run);
                while let Some(split) = splitter.next_frame() {
                    proptest::prop_assert!(matches!(split, Split::Broken(_)));
                }
                proptest::prop_assert!(splitter.buffered() <= max + LIMIT_SLACK);
            }
        }

        #[test]
        fn any_bytes_split_without_panicking_into_well_formed_frames(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            chunk in 1usize..64,
        ) {
            for split in split_all(&input, chunk) {
                if let Split::Frame(frame) = split {
                    proptest::prop_assert!(frame.starts_with(&[0xFF, 0xD8]));
                    proptest::prop_assert!(frame.ends_with(&[0xFF, 0xD9]));
                }
            }
        }

        #[test]
        fn frames_survive_any_garbage_between_them(
            garbage in proptest::collection::vec(0u8..0xFF, 0..200),
            chunk in 1usize..64,
        ) {
            // Garbage without 0xFF cannot start a marker; the frames around it come out intact.
            let stream = [jpeg(1), garbage.clone(), jpeg(2), garbage, jpeg(3)].concat();
            let frames = split_all(&stream, chunk);
            proptest::prop_assert_eq!(
                frames,
                vec![Split::Frame(jpeg(1)), Split::Frame(jpeg(2)), Split::Frame(jpeg(3))]
            );
        }
    }
}

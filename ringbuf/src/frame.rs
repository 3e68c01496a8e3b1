//! Framing that capture, server and load generator share: recognising a JPEG, and how a frame's
//! number and capture time reach viewers (docs/ARCHITECTURE.md, the server's routes).
//!
//! A JPEG carries them in a comment (marker 0xFFFE) placed right after SOI, holding the text
//! `ringcast frame=<n> capture_ns=<t>`. Decoders ignore comments; the viewer page and the load
//! generator parse it to measure end-to-end latency. An H.264 access unit cannot carry them
//! without changing the camera's bytes, so its WebSocket message puts them in a small header in
//! front of it ([`access_unit_header`]).

use crate::{FrameKind, FrameNo, WallNanos};

pub const SOI: [u8; 2] = [0xFF, 0xD8];
pub const EOI: [u8; 2] = [0xFF, 0xD9];
const COM: u8 = 0xFE;
const TIMING_PREFIX: &[u8] = b"ringcast ";

/// The most bytes [`insert_timing`] adds to a frame: the segment's marker and length, and its
/// text with both numbers at their longest (20 digits each). A ring meant for frames of up to N
/// bytes as they come needs slots of N plus this.
pub const TIMING_SEGMENT_MAX: usize = 4 + "ringcast frame= capture_ns=".len() + 2 * 20;

/// Why bytes are not accepted as a JPEG frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("{0} bytes is too short for a JPEG")]
    TooShort(usize),
    #[error("does not start with a JPEG start-of-image marker")]
    NoStartOfImage,
    #[error("does not end with a JPEG end-of-image marker")]
    NoEndOfImage,
}

/// Cheap structural check of a complete JPEG: SOI first, EOI last (trailing zero padding, which
/// some cameras add, is allowed). It does not decode the image.
pub fn check_jpeg(bytes: &[u8]) -> Result<(), JpegError> {
    if bytes.len() < 4 {
        return Err(JpegError::TooShort(bytes.len()));
    }
    if bytes[..2] != SOI {
        return Err(JpegError::NoStartOfImage);
    }
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < 4 || bytes[end - 2..end] != EOI {
        return Err(JpegError::NoEndOfImage);
    }
    Ok(())
}

/// A frame's number and capture time, as carried in its COM segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTiming {
    pub frame_no: FrameNo,
    pub capture: WallNanos,
}

impl FrameTiming {
    fn text(&self) -> String {
        format!(
            "ringcast frame={} capture_ns={}",
            self.frame_no.0, self.capture.0
        )
    }
}

/// Writes `jpeg` into `out` (replacing its contents) with `timing` in a COM segment right after
/// SOI. A ringcast timing segment already there (a frame that went through another ringcast
/// hop) is replaced, not stacked.
pub fn insert_timing(jpeg: &[u8], timing: FrameTiming, out: &mut Vec<u8>) -> Result<(), JpegError> {
    if jpeg.len() < 2 {
        return Err(JpegError::TooShort(jpeg.len()));
    }
    if jpeg[..2] != SOI {
        return Err(JpegError::NoStartOfImage);
    }
    let rest = &jpeg[2 + existing_timing_len(jpeg)..];
    let text = timing.text();
    // The segment length counts its own two length bytes; the text is far below 64 KiB.
    let seg_len = (text.len() + 2) as u16;
    out.clear();
    out.reserve(jpeg.len() + text.len() + 4);
    out.extend_from_slice(&SOI);
    out.extend_from_slice(&[0xFF, COM]);
    out.extend_from_slice(&seg_len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(rest);
    Ok(())
}

/// The timing a ringcast capture put in `jpeg`, if any.
pub fn read_timing(jpeg: &[u8]) -> Option<FrameTiming> {
    let text = timing_text(jpeg)?;
    let text = std::str::from_utf8(text.strip_prefix(TIMING_PREFIX)?).ok()?;
    let mut frame_no = None;
    let mut capture = None;
    for field in text.split(' ') {
        match field.split_once('=')? {
            ("frame", v) => frame_no = Some(FrameNo(v.parse().ok()?)),
            ("capture_ns", v) => capture = Some(WallNanos(v.parse().ok()?)),
            _ => {}
        }
    }
    Some(FrameTiming {
        frame_no: frame_no?,
        capture: capture?,
    })
}

/// The body of a COM segment right after SOI, if there is one.
fn com_after_soi(jpeg: &[u8]) -> Option<&[u8]> {
    if jpeg.len() < 6 || jpeg[..2] != SOI || jpeg[2] != 0xFF || jpeg[3] != COM {
        return None;
    }
    let seg_len = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    jpeg.get(6..4 + seg_len.max(2))
}

fn timing_text(jpeg: &[u8]) -> Option<&[u8]> {
    com_after_soi(jpeg).filter(|body| body.starts_with(TIMING_PREFIX))
}

/// Bytes before an H.264 access unit in its WebSocket message.
pub const AU_HEADER_LEN: usize = 17;
/// Bit of the access unit header's first byte: the access unit is a keyframe.
const AU_FLAG_KEY: u8 = 1;

/// The header of an H.264 access unit's WebSocket message: one byte of flags (bit 0: keyframe),
/// then the frame number and the capture time (CLOCK_REALTIME ns), each a big-endian u64 (as
/// JavaScript's `DataView.getBigUint64` reads by default).
pub fn access_unit_header(kind: FrameKind, timing: FrameTiming) -> [u8; AU_HEADER_LEN] {
    let mut header = [0u8; AU_HEADER_LEN];
    header[0] = if kind.is_key() { AU_FLAG_KEY } else { 0 };
    header[1..9].copy_from_slice(&timing.frame_no.0.to_be_bytes());
    header[9..17].copy_from_slice(&timing.capture.0.to_be_bytes());
    header
}

/// What an access unit header at the start of `message` says, if `message` is long enough to
/// hold one (and a byte of access unit) and does not start as a JPEG does.
pub fn read_access_unit_header(message: &[u8]) -> Option<(FrameKind, FrameTiming)> {
    if message.len() <= AU_HEADER_LEN || message.starts_with(&SOI) {
        return None;
    }
    let number = |at: usize| {
        let bytes: [u8; 8] = message[at..at + 8].try_into().expect("eight bytes");
        u64::from_be_bytes(bytes)
    };
    let kind = if message[0] & AU_FLAG_KEY != 0 {
        FrameKind::Key
    } else {
        FrameKind::Delta
    };
    let timing = FrameTiming {
        frame_no: FrameNo(number(1)),
        capture: WallNanos(number(9)),
    };
    Some((kind, timing))
}

/// Bytes taken by an existing ringcast timing segment after SOI (0 if none).
fn existing_timing_len(jpeg: &[u8]) -> usize {
    timing_text(jpeg).map_or(0, |body| body.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &[u8] = &[0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x02, 0xFF, 0xD9];

    fn timing(n: u64) -> FrameTiming {
        FrameTiming {
            frame_no: FrameNo(n),
            capture: WallNanos(1_700_000_000_123_456_789 + n),
        }
    }

    #[test]
    fn timing_round_trips_and_keeps_the_rest_of_the_jpeg() {
        let mut out = Vec::new();
        insert_timing(TINY, timing(42), &mut out).unwrap();
        assert_eq!(read_timing(&out), Some(timing(42)));
        assert_eq!(&out[..2], &SOI);
        assert!(out.ends_with(&TINY[2..]));
        check_jpeg(&out).unwrap();
    }

    #[test]
    fn the_timing_segment_never_adds_more_than_its_maximum() {
        let mut out = Vec::new();
        let longest = FrameTiming {
            frame_no: FrameNo(u64::MAX),
            capture: WallNanos(u64::MAX),
        };
        insert_timing(TINY, longest, &mut out).unwrap();
        assert_eq!(out.len(), TINY.len() + TIMING_SEGMENT_MAX);
    }

    #[test]
    fn a_second_timing_replaces_the_first() {
        let (mut once, mut twice) = (Vec::new(), Vec::new());
        insert_timing(TINY, timing(1), &mut once).unwrap();
        insert_timing(&once, timing(2), &mut twice).unwrap();
        assert_eq!(read_timing(&twice), Some(timing(2)));
        assert_eq!(once.len(), twice.len());
    }

    #[test]
    fn foreign_comments_are_kept_and_not_read_as_timing() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x07];
        jpeg.extend_from_slice(b"hello");
        jpeg.extend_from_slice(&TINY[2..]);
        assert_eq!(read_timing(&jpeg), None);
        let mut out = Vec::new();
        insert_timing(&jpeg, timing(3), &mut out).unwrap();
        assert!(out.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn non_jpegs_are_refused_with_the_reason() {
        assert_eq!(check_jpeg(b"GIF89a...."), Err(JpegError::NoStartOfImage));
        assert_eq!(check_jpeg(&TINY[..6]), Err(JpegError::NoEndOfImage));
        assert_eq!(check_jpeg(&[0xFF]), Err(JpegError::TooShort(1)));
        let mut padded = TINY.to_vec();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(check_jpeg(&padded), Ok(()));
        let mut out = Vec::new();
        assert_eq!(
            insert_timing(b"not a jpeg", timing(1), &mut out),
            Err(JpegError::NoStartOfImage)
        );
    }

    #[test]
    fn an_access_unit_header_round_trips_and_is_never_read_from_a_jpeg() {
        let mut message = access_unit_header(FrameKind::Key, timing(7)).to_vec();
        message.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        assert_eq!(
            read_access_unit_header(&message),
            Some((FrameKind::Key, timing(7)))
        );
        let delta = access_unit_header(FrameKind::Delta, timing(8));
        assert_eq!(delta[0], 0);
        assert_eq!(delta[1..9], 8u64.to_be_bytes());
        assert_eq!(
            read_access_unit_header(&delta),
            None,
            "no access unit after it"
        );
        let mut jpeg = Vec::new();
        insert_timing(TINY, timing(9), &mut jpeg).unwrap();
        assert_eq!(read_access_unit_header(&jpeg), None);
    }

    #[test]
    fn truncated_or_garbled_comments_are_ignored() {
        assert_eq!(
            read_timing(&[0xFF, 0xD8, 0xFF, 0xFE, 0x01, 0x00, b'r']),
            None
        );
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x17];
        jpeg.extend_from_slice(b"ringcast frame=x y=1\xff");
        assert_eq!(read_timing(&jpeg), None);
    }
}

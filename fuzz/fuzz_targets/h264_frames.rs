//! What ring readers and viewers make of H.264 bytes from outside (`ringbuf::h264`,
//! `ringbuf::frame`'s access unit header): `nal_units`, `nal_type`, `is_keyframe`,
//! `codec_string`, `read_access_unit_header` and `access_unit_header`, on any bytes.
//!
//! Input: `[flags: 1 byte][frame number: 8 bytes][capture ns: 8 bytes][bytes]`.
//!
//! Invariants: every NAL unit is a non-empty piece of the input, in order, not overlapping the
//! next, ending in a non-zero byte; no NAL unit holds a start code; is_keyframe is exactly
//! "some NAL unit has type 5"; a codec string is `avc1.` and six upper-case hex digits, made
//! from the first SPS found; an access unit header written for the input's numbers reads back
//! exactly in front of the bytes, and a message starting as a JPEG is never read as one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbuf::frame::{access_unit_header, read_access_unit_header, FrameTiming};
use ringbuf::h264::{codec_string, is_keyframe, nal_type, nal_units, NAL_IDR_SLICE, NAL_SPS};
use ringbuf::{FrameKind, FrameNo, WallNanos};
use ringcast_fuzz::Input;

/// Where `piece` starts within `whole`, which it borrows from.
fn offset_in(whole: &[u8], piece: &[u8]) -> usize {
    let offset = (piece.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        offset + piece.len() <= whole.len(),
        "a NAL unit outside the input"
    );
    offset
}

fn check_nal_units(stream: &[u8]) {
    let mut end_of_previous = 0;
    for nal in nal_units(stream) {
        assert!(!nal.is_empty());
        assert_ne!(nal.last(), Some(&0), "trailing zeros are trimmed");
        assert!(
            !nal.windows(3).any(|w| w == [0, 0, 1]),
            "a start code inside a NAL unit"
        );
        let start = offset_in(stream, nal);
        assert!(
            start >= end_of_previous + 3,
            "NAL units overlap or lack a start code"
        );
        assert_eq!(stream[start - 3..start], [0, 0, 1]);
        end_of_previous = start + nal.len();
    }
}

fn check_codec_string(stream: &[u8]) {
    let first_sps = nal_units(stream).find(|nal| nal_type(nal) == Some(NAL_SPS));
    match codec_string(stream) {
        Some(codec) => {
            let sps = first_sps.expect("a codec string without an SPS");
            let hex = codec.strip_prefix("avc1.").expect("avc1. prefix");
            assert_eq!(hex.len(), 6);
            assert!(hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
            let expected = format!("{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]);
            assert_eq!(hex, expected);
        }
        None => assert!(first_sps.is_none_or(|sps| sps.len() < 4)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let timing = FrameTiming {
        frame_no: FrameNo(input.u64()),
        capture: WallNanos(input.u64()),
    };
    let stream = input.rest();

    check_nal_units(stream);
    let has_idr = nal_units(stream).any(|nal| nal_type(nal) == Some(NAL_IDR_SLICE));
    assert_eq!(is_keyframe(stream), has_idr);
    check_codec_string(stream);

    let kind = if flags & 1 == 1 {
        FrameKind::Key
    } else {
        FrameKind::Delta
    };
    let mut message = access_unit_header(kind, timing).to_vec();
    message.extend_from_slice(stream);
    let read = read_access_unit_header(&message);
    if stream.is_empty() {
        assert_eq!(read, None, "a header with no access unit after it");
    } else {
        assert_eq!(read, Some((kind, timing)));
    }
    if stream.starts_with(&[0xFF, 0xD8]) {
        assert_eq!(
            read_access_unit_header(stream),
            None,
            "a JPEG read as an access unit"
        );
    }
});

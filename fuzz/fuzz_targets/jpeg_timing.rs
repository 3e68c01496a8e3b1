//! The timing COM segment (`ringbuf::frame`): `insert_timing`, `read_timing` and `check_jpeg`
//! on any bytes, with any frame number and capture time.
//!
//! Input: `[frame number: 8 bytes][capture ns: 8 bytes][bytes]`; with the top bit of the first
//! byte set the bytes are made JPEG-looking (SOI in front, EOI at the end), so that most inputs
//! take the paths a real frame takes.
//!
//! Invariants: check_jpeg agrees with its definition (SOI first, EOI last before any zero
//! padding); insert_timing refuses exactly what does not start with SOI; what it writes is SOI,
//! one COM segment with the timing, then the input after its SOI and after a ringcast timing
//! segment already there; read_timing reads the timing back; inserting again replaces rather
//! than stacks; and a frame that passed check_jpeg still passes it with its timing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbuf::frame::{check_jpeg, insert_timing, read_timing, FrameTiming, JpegError};
use ringbuf::{FrameNo, WallNanos};
use ringcast_fuzz::Input;

/// check_jpeg as its documentation states it.
fn model_check(bytes: &[u8]) -> Result<(), JpegError> {
    if bytes.len() < 4 {
        return Err(JpegError::TooShort(bytes.len()));
    }
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegError::NoStartOfImage);
    }
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    if end < 4 || !bytes[..end].ends_with(&[0xFF, 0xD9]) {
        return Err(JpegError::NoEndOfImage);
    }
    Ok(())
}

/// Bytes after SOI taken by a ringcast timing segment (FF FE, length, "ringcast ..."), if the
/// segment is whole.
fn existing_timing(jpeg: &[u8]) -> usize {
    if jpeg.len() < 6 || jpeg[2] != 0xFF || jpeg[3] != 0xFE {
        return 0;
    }
    let seg_len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    if seg_len < 2 || 4 + seg_len > jpeg.len() {
        return 0;
    }
    if jpeg[6..4 + seg_len].starts_with(b"ringcast ") {
        2 + seg_len
    } else {
        0
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (frame_no, capture) = (input.u64(), input.u64());
    let timing = FrameTiming {
        frame_no: FrameNo(frame_no),
        capture: WallNanos(capture),
    };
    let jpeg: Vec<u8> = if frame_no & 0x80 != 0 {
        [&[0xFF, 0xD8][..], input.rest(), &[0xFF, 0xD9]].concat()
    } else {
        input.rest().to_vec()
    };

    assert_eq!(check_jpeg(&jpeg), model_check(&jpeg));
    let _ = read_timing(&jpeg);

    let mut out = vec![1, 2, 3];
    let result = insert_timing(&jpeg, timing, &mut out);
    if jpeg.len() < 2 {
        assert_eq!(result, Err(JpegError::TooShort(jpeg.len())));
        return;
    }
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        assert_eq!(result, Err(JpegError::NoStartOfImage));
        return;
    }
    result.expect("a JPEG-looking input takes a timing");

    let text = format!("ringcast frame={frame_no} capture_ns={capture}");
    let mut expected = vec![0xFF, 0xD8, 0xFF, 0xFE];
    expected.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    expected.extend_from_slice(text.as_bytes());
    let existing = existing_timing(&jpeg);
    expected.extend_from_slice(&jpeg[2 + existing..]);
    assert_eq!(out, expected, "what insert_timing wrote");

    assert_eq!(read_timing(&out), Some(timing), "the timing reads back");

    let other = FrameTiming {
        frame_no: FrameNo(frame_no.wrapping_add(1)),
        capture: WallNanos(capture ^ 0xFFFF),
    };
    let (mut twice, mut direct) = (Vec::new(), Vec::new());
    insert_timing(&out, other, &mut twice).unwrap();
    insert_timing(&jpeg, other, &mut direct).unwrap();
    assert_eq!(twice, direct, "a second timing replaces the first");
    assert_eq!(read_timing(&twice), Some(other));

    if existing == 0 && check_jpeg(&jpeg).is_ok() {
        assert!(check_jpeg(&out).is_ok(), "the timing broke a valid frame");
    }
});

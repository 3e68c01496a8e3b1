//! The multipart/JPEG splitter of the HTTP and stdin sources (`capture::jpeg_split`), fed in
//! pieces whose sizes the fuzzer chooses, with `--max-frame-bytes` from a few real values.
//!
//! Input: `[max][run length][run byte][run position][piece sizes][stream]`. With the top bit of
//! `max` set, a run of `run length` × 512 bytes (up to 127.5 KiB) of `run byte` is inserted into
//! the stream, so that frames past the limit (64 KiB above the smallest maxima) and long
//! entropy-coded runs are reached without huge inputs.
//!
//! Invariants: a frame starts with FF D8, ends with FF D9, passes `ringbuf::frame::check_jpeg`
//! and is at most the limit (max + 64 KiB) plus its 2-byte EOI; a broken frame starts with
//! FF D8; what comes out are disjoint pieces of the stream, in order; after the splitter has
//! said "no more frames", it holds at most the limit; and while no frame can reach the limit,
//! the result does not depend on how the stream was cut into pushes.
#![no_main]

use capture::jpeg_split::{JpegSplitter, Split};
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::{pieces_scaled, Input};

const MAXES: [usize; 5] = [0, 1000, 100_000, 1 << 20, usize::MAX];
const LIMIT_SLACK: usize = 64 << 10;

fn split(pushes: &[&[u8]], max: usize) -> Vec<Split> {
    let limit = max.saturating_add(LIMIT_SLACK);
    let mut splitter = JpegSplitter::new(max);
    let mut out = Vec::new();
    for push in pushes {
        splitter.push(push);
        while let Some(split) = splitter.next_frame() {
            out.push(split);
        }
        assert!(
            splitter.buffered() <= limit,
            "holds {} bytes, limit {limit}",
            splitter.buffered()
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_byte = input.u8();
    let (run_len, run_byte, run_at) = (input.u8(), input.u8(), input.u8());
    let sizes = input.piece_sizes();
    let given = input.rest();
    let max = MAXES[usize::from(max_byte & 0x7F) % MAXES.len()];
    let limit = max.saturating_add(LIMIT_SLACK);

    let stream: Vec<u8> = if max_byte & 0x80 != 0 && run_len > 0 {
        let at = given.len() * usize::from(run_at) / 256;
        let mut s = given[..at].to_vec();
        s.resize(at + usize::from(run_len) * 512, run_byte);
        s.extend_from_slice(&given[at..]);
        s
    } else {
        given.to_vec()
    };

    // Pieces grow with the stream: a long run is not pushed a byte at a time.
    let pushes = pieces_scaled(&stream, sizes, (stream.len() / 4096).max(1));
    let splits = split(&pushes, max);
    let mut offset = 0;
    for s in &splits {
        let bytes = match s {
            Split::Frame(frame) => {
                assert!(frame.starts_with(&[0xFF, 0xD8]), "a frame starts with SOI");
                assert!(frame.ends_with(&[0xFF, 0xD9]), "a frame ends with EOI");
                assert!(ringbuf::frame::check_jpeg(frame).is_ok());
                assert!(
                    frame.len() <= limit.saturating_add(2),
                    "frame of {}",
                    frame.len()
                );
                frame
            }
            Split::Broken(bytes) => {
                assert!(
                    bytes.starts_with(&[0xFF, 0xD8]),
                    "a broken frame starts with SOI"
                );
                bytes
            }
        };
        let found = memchr::memmem::find(&stream[offset..], bytes)
            .expect("every split is a piece of the stream after the previous one");
        offset += found + bytes.len();
    }

    // A segment length can move the parse up to 64 KiB past the bytes it has, so only a stream
    // that stays that far below the limit can never be cut.
    if stream.len() + (66 << 10) < limit && pushes.len() > 1 {
        let whole = split(&[&stream], max);
        assert_eq!(
            splits, whole,
            "the result depends on how the stream was pushed"
        );
    }
});

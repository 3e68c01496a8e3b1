//! `Transfer-Encoding: chunked` decoding of the HTTP source (`capture::source::http::
//! ChunkedDecoder`), two ways, chosen by the top bit of the first byte:
//!
//! - raw: the rest is a body (after the piece sizes), fed in pieces the fuzzer chooses. The
//!   output is never longer than the input, and it and the verdict (error or not) do not depend
//!   on the pieces: the same as feeding the body in one go.
//! - round trip: the rest is data, which is chunk-encoded as a camera would (chunk sizes from
//!   the input, some with extensions, blank lines, upper-case hex, then the last chunk and
//!   trailing bytes); decoding it in pieces gives back exactly the data.
#![no_main]

use capture::source::http::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::{pieces, Input, XorShift};

fn decode(pushes: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    for push in pushes {
        if decoder.feed(push, &mut out).is_err() {
            return (out, false);
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let seed = input.u64();
    let sizes = input.piece_sizes();
    let given = input.rest();
    if mode & 0x80 == 0 {
        let pushes = pieces(given, sizes);
        let (out, ok) = decode(&pushes);
        assert!(out.len() <= given.len(), "more data out than bytes in");
        let (whole_out, whole_ok) = decode(&[given]);
        assert_eq!(ok, whole_ok, "the verdict depends on the reads");
        assert_eq!(out, whole_out, "the data depends on the reads");
    } else {
        let mut rng = XorShift::new(seed);
        let mut body = Vec::new();
        let mut rest = given;
        while !rest.is_empty() {
            let n = (1 + rng.below(300) as usize).min(rest.len());
            let size = match rng.below(3) {
                0 => format!("{n:X}"),
                1 => format!("{n:x}"),
                _ => format!("{n:08x}"),
            };
            body.extend_from_slice(size.as_bytes());
            if rng.below(4) == 0 {
                body.extend_from_slice(b" ;name=\"value\"");
            }
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(&rest[..n]);
            body.extend_from_slice(b"\r\n");
            if rng.below(8) == 0 {
                // A blank line between chunks, which the decoder tolerates.
                body.extend_from_slice(b"\r\n");
            }
            rest = &rest[n..];
        }
        body.extend_from_slice(b"0\r\n\r\n");
        // Whatever follows the last chunk is not data.
        body.extend_from_slice(&given[..given.len().min(16)]);
        let (out, ok) = decode(&pieces(&body, sizes));
        assert!(ok, "a well-formed chunked body was refused");
        assert_eq!(out, given, "the chunked body decoded to other data");
    }
});

//! The H.264 side of `--source stdin --codec h264`: the access unit splitter
//! (`capture::h264::split`) fed in pieces whose sizes the fuzzer chooses, with
//! `--max-frame-bytes` from a few real values, and every access unit it yields through the H.264
//! pipeline (`capture::h264::pipeline`: SPS parsing with h264-reader, parameter sets inserted).
//!
//! Input: `[max][piece sizes][stream]`.
//!
//! Invariants: an access unit is at most the limit; what comes out are disjoint pieces of the
//! stream, in order; after the splitter has said "no more units", it holds at most the limit
//! plus the five bytes of a start code it has yet to judge (zero byte, start code, header); the
//! units and the number of broken pieces do not depend on how the stream was cut into pushes;
//! and every keyframe the pipeline publishes holds an SPS, a PPS and an IDR slice.
#![no_main]

use capture::h264::pipeline::H264Pipeline;
use capture::h264::split::AccessUnitSplitter;
use capture::pipeline::Processed;
use capture::split::{Split, Splitter};
use libfuzzer_sys::fuzz_target;
use ringbuf::h264::{nal_type, nal_units, NAL_IDR_SLICE, NAL_PPS, NAL_SPS};
use ringbuf::FrameKind;
use ringcast_fuzz::{pieces, Input};

const MAXES: [usize; 4] = [0, 64, 4096, 1 << 20];

fn split(pushes: &[&[u8]], max: usize) -> Vec<Split> {
    let mut splitter = AccessUnitSplitter::new(max);
    let mut out = Vec::new();
    for push in pushes {
        splitter.push(push);
        while let Some(split) = splitter.next_frame() {
            out.push(split);
        }
        assert!(
            splitter.buffered() <= max.saturating_add(5),
            "holds {} bytes, limit {max}",
            splitter.buffered()
        );
    }
    out.extend(splitter.finish());
    out
}

/// The units whole, the broken pieces only counted: how much of a unit that grew too large
/// was read when the splitter gave it up depends on the pushes.
fn outline(splits: &[Split]) -> Vec<Option<&[u8]>> {
    splits
        .iter()
        .map(|split| match split {
            Split::Frame(unit) => Some(&unit[..]),
            Split::Broken(_) => None,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max = MAXES[usize::from(input.u8()) % MAXES.len()];
    let sizes = input.piece_sizes();
    let stream = input.rest();

    let pushes = pieces(stream, sizes);
    let splits = split(&pushes, max);
    let mut offset = 0;
    for s in &splits {
        let bytes = match s {
            Split::Frame(unit) => {
                assert!(unit.len() <= max, "unit of {} bytes", unit.len());
                unit
            }
            Split::Broken(bytes) => bytes,
        };
        let found = memchr::memmem::find(&stream[offset..], bytes)
            .expect("every piece is a piece of the stream after the previous one");
        offset += found + bytes.len();
    }
    if pushes.len() > 1 {
        let whole = split(&[stream], max);
        assert_eq!(
            outline(&splits),
            outline(&whole),
            "the result depends on how the stream was pushed"
        );
    }

    let mut pipeline = H264Pipeline::default();
    for s in &splits {
        let Split::Frame(unit) = s else { continue };
        if let Processed::Publish {
            frame,
            kind: FrameKind::Key,
            ..
        } = pipeline.process(unit)
        {
            let types: Vec<u8> = nal_units(frame).filter_map(nal_type).collect();
            for needed in [NAL_SPS, NAL_PPS, NAL_IDR_SLICE] {
                assert!(
                    types.contains(&needed),
                    "a keyframe without {needed}: {types:?}"
                );
            }
        }
    }
});

//! What happens to every H.264 access unit between source and sink: the parameter sets are
//! remembered, a keyframe that lacks them gets them, and nothing is published until a keyframe
//! a decoder can start from, so that any reader can begin at any keyframe in the ring.
//! Otherwise access units pass through untouched.

use ringbuf::h264::{
    is_keyframe, nal_type, nal_units, NAL_ACCESS_UNIT_DELIMITER, NAL_PPS, NAL_SPS,
};
use ringbuf::FrameKind;

use super::carries_picture;
use super::sps::{picture_of, SpsError};
use crate::pipeline::{Picture, Processed};

/// A four-byte start code, as H.264 B.1.2 wants before parameter sets.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The latest sequence parameter set and the picture it describes.
#[derive(Debug)]
struct Sps {
    nal: Vec<u8>,
    picture: Picture,
}

/// Which NAL units an access unit holds.
#[derive(Debug, Default)]
struct Contents {
    picture: bool,
    sps: bool,
    pps: bool,
}

#[derive(Debug)]
pub struct H264Pipeline {
    sps: Option<Sps>,
    pps: Option<Vec<u8>>,
    /// No keyframe has been published since the stream (re)started: until one is, access units
    /// would reach readers that cannot decode them.
    awaiting_keyframe: bool,
    out: Vec<u8>,
}

impl Default for H264Pipeline {
    fn default() -> H264Pipeline {
        H264Pipeline {
            sps: None,
            pps: None,
            awaiting_keyframe: true,
            out: Vec::new(),
        }
    }
}

impl H264Pipeline {
    /// The stream starts over (capture resumed, or the source reconnected): what comes next is
    /// published from its first keyframe on. The parameter sets are kept.
    pub fn restart(&mut self) {
        self.awaiting_keyframe = true;
    }

    pub fn process<'a>(&'a mut self, unit: &'a [u8]) -> Processed<'a> {
        let contents = match self.remember_parameter_sets(unit) {
            Ok(contents) => contents,
            Err(e) => return Processed::Corrupt(e.to_string()),
        };
        if !contents.picture {
            return Processed::Corrupt("an access unit without a picture".into());
        }
        let keyframe = is_keyframe(unit);
        if self.awaiting_keyframe && !keyframe {
            return Processed::BeforeKeyframe;
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Processed::BeforeKeyframe;
        };
        let picture = sps.picture;
        let frame = if keyframe && !(contents.sps && contents.pps) {
            with_parameter_sets(unit, &sps.nal, pps, &mut self.out);
            &self.out[..]
        } else {
            unit
        };
        self.awaiting_keyframe = false;
        Processed::Publish {
            frame,
            kind: if keyframe {
                FrameKind::Key
            } else {
                FrameKind::Delta
            },
            picture,
        }
    }

    /// Notes the SPS and PPS in `unit` as the latest, and what else it holds.
    fn remember_parameter_sets(&mut self, unit: &[u8]) -> Result<Contents, SpsError> {
        let mut contents = Contents::default();
        for nal in nal_units(unit) {
            match nal_type(nal) {
                Some(NAL_SPS) => {
                    contents.sps = true;
                    if self.sps.as_ref().is_none_or(|sps| sps.nal != nal) {
                        let picture = picture_of(nal)?;
                        self.sps = Some(Sps {
                            nal: nal.to_vec(),
                            picture,
                        });
                    }
                }
                Some(NAL_PPS) => {
                    contents.pps = true;
                    if self.pps.as_deref() != Some(nal) {
                        self.pps = Some(nal.to_vec());
                    }
                }
                Some(t) if carries_picture(t) => contents.picture = true,
                _ => {}
            }
        }
        Ok(contents)
    }
}

/// `unit` into `out` with an SPS and a PPS where H.264 7.4.1.2.3 puts them, after any access
/// unit delimiter and before everything else: the unit's own, or else `sps` and `pps`.
fn with_parameter_sets(unit: &[u8], sps: &[u8], pps: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let of_type = |wanted: u8| nal_units(unit).filter(move |nal| nal_type(nal) == Some(wanted));
    for nal in of_type(NAL_ACCESS_UNIT_DELIMITER) {
        append_nal(out, nal);
    }
    for (wanted, stored) in [(NAL_SPS, sps), (NAL_PPS, pps)] {
        let mut own = of_type(wanted).peekable();
        if own.peek().is_none() {
            append_nal(out, stored);
        }
        for nal in own {
            append_nal(out, nal);
        }
    }
    let placed = [NAL_ACCESS_UNIT_DELIMITER, NAL_SPS, NAL_PPS];
    for nal in nal_units(unit).filter(|nal| !nal_type(nal).is_some_and(|t| placed.contains(&t))) {
        append_nal(out, nal);
    }
}

fn append_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&START_CODE);
    out.extend_from_slice(nal);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::samples::{PPS, SPS_320X240_30 as SPS};

    const AUD: &[u8] = &[0x09, 0xF0];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x21];
    const P: &[u8] = &[0x41, 0x9A, 0x02];
    const SEI: &[u8] = &[0x06, 0x05, 0x01, 0x80];

    fn unit(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            append_nal(&mut out, nal);
        }
        out
    }

    /// What became of `unit`: published (as these bytes, of this kind), or why not.
    fn outcome(pipeline: &mut H264Pipeline, unit: &[u8]) -> Result<(Vec<u8>, FrameKind), String> {
        match pipeline.process(unit) {
            Processed::Publish { frame, kind, .. } => Ok((frame.to_vec(), kind)),
            Processed::BeforeKeyframe => Err("before keyframe".into()),
            Processed::Unchanged => Err("unchanged".into()),
            Processed::Corrupt(reason) => Err(reason),
        }
    }

    #[test]
    fn a_keyframe_with_its_parameter_sets_passes_untouched() {
        let mut pipeline = H264Pipeline::default();
        // With a three-byte start code before the slice: nothing is rewritten.
        let mut keyframe = unit(&[AUD, SPS, PPS]);
        keyframe.extend_from_slice(&[0, 0, 1]);
        keyframe.extend_from_slice(IDR);
        assert_eq!(
            outcome(&mut pipeline, &keyframe),
            Ok((keyframe.clone(), FrameKind::Key))
        );
        let delta = unit(&[AUD, P]);
        assert_eq!(
            outcome(&mut pipeline, &delta),
            Ok((delta.clone(), FrameKind::Delta))
        );
        match pipeline.process(&keyframe) {
            Processed::Publish { picture, .. } => assert_eq!(
                picture,
                Picture {
                    width: 320,
                    height: 240,
                    fps_milli: Some(30_000)
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_keyframe_without_parameter_sets_gets_the_latest_after_its_delimiter() {
        let mut pipeline = H264Pipeline::default();
        outcome(&mut pipeline, &unit(&[SPS, PPS, IDR])).unwrap();
        assert_eq!(
            outcome(&mut pipeline, &unit(&[AUD, SEI, IDR])),
            Ok((unit(&[AUD, SPS, PPS, SEI, IDR]), FrameKind::Key))
        );
        assert_eq!(
            outcome(&mut pipeline, &unit(&[IDR])),
            Ok((unit(&[SPS, PPS, IDR]), FrameKind::Key))
        );
        // A unit with an SPS of its own but no PPS keeps its SPS and gets the PPS after it.
        assert_eq!(
            outcome(&mut pipeline, &unit(&[SEI, SPS, IDR])),
            Ok((unit(&[SPS, PPS, SEI, IDR]), FrameKind::Key))
        );
    }

    #[test]
    fn nothing_is_published_before_a_keyframe_a_decoder_can_start_from() {
        let mut pipeline = H264Pipeline::default();
        let before = Err("before keyframe".to_string());
        assert_eq!(outcome(&mut pipeline, &unit(&[P])), before);
        // A keyframe, but no parameter sets have been seen to give it.
        assert_eq!(outcome(&mut pipeline, &unit(&[IDR])), before);
        assert_eq!(outcome(&mut pipeline, &unit(&[SPS, P])), before);
        assert_eq!(
            outcome(&mut pipeline, &unit(&[PPS, IDR])),
            Ok((unit(&[SPS, PPS, IDR]), FrameKind::Key))
        );
        assert!(outcome(&mut pipeline, &unit(&[P])).is_ok());

        pipeline.restart();
        assert_eq!(outcome(&mut pipeline, &unit(&[P])), before);
        assert!(outcome(&mut pipeline, &unit(&[IDR])).is_ok());
    }

    #[test]
    fn units_that_cannot_be_used_are_corrupt() {
        let mut pipeline = H264Pipeline::default();
        let unreadable = outcome(&mut pipeline, &unit(&[&[0x67, 0x42], PPS, IDR]));
        assert!(unreadable.unwrap_err().starts_with("unreadable SPS"));
        let no_picture = outcome(&mut pipeline, &unit(&[AUD, SPS, PPS]));
        assert_eq!(no_picture, Err("an access unit without a picture".into()));
        assert_eq!(
            outcome(&mut pipeline, b"no start code"),
            Err("an access unit without a picture".into())
        );
    }
}

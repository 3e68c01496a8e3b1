//! What a sequence parameter set says about the picture: its size, cropping applied, and the
//! frame rate if the stream carries timing. Parsed with `h264-reader`, the crate the retina
//! RTSP client uses.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{decode_nal, BitRead, BitReader, BitReaderError, Numeric, Primitive};

use crate::cli::Size;
use crate::pipeline::Picture;

/// Stated frame rates outside this range (in thousandths) are taken for wrong timing
/// information, which cameras do send, rather than for the rate.
const PLAUSIBLE_FPS_MILLI: std::ops::RangeInclusive<u64> = 1..=240_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpsError {
    #[error("unreadable SPS: {0}")]
    Unreadable(String),

    #[error("the SPS says {width}x{height}, outside 1 to {max} pixels a side", max = Size::MAX)]
    SizeOutOfRange { width: u32, height: u32 },
}

/// The picture of the SPS `nal` (a NAL unit without its start code, header byte included).
pub fn picture_of(nal: &[u8]) -> Result<Picture, SpsError> {
    if nal.is_empty() {
        // `decode_nal` takes its header byte for granted.
        return Err(SpsError::Unreadable("no header byte".into()));
    }
    let rbsp = decode_nal(nal).map_err(|e| SpsError::Unreadable(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(TrailingDataTolerated(BitReader::new(&rbsp[..])))
        .map_err(|e| SpsError::Unreadable(format!("{e:?}")))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|e| SpsError::Unreadable(format!("{e:?}")))?;
    let sides = 1..=Size::MAX;
    if !sides.contains(&width) || !sides.contains(&height) {
        return Err(SpsError::SizeOutOfRange { width, height });
    }
    Ok(Picture {
        width,
        height,
        fps_milli: stated_fps_milli(&sps),
    })
}

/// A reader that lets an SPS end with bytes after its trailing bits. Some cameras send such an
/// SPS, decoders play it, and retina accepts it: refusing it would refuse every keyframe of
/// those cameras. Everything else is the inner reader's.
struct TrailingDataTolerated<R>(R);

impl<R: BitRead> BitRead for TrailingDataTolerated<R> {
    fn read_ue(&mut self, name: &'static str) -> Result<u32, BitReaderError> {
        self.0.read_ue(name)
    }

    fn read_se(&mut self, name: &'static str) -> Result<i32, BitReaderError> {
        self.0.read_se(name)
    }

    fn read_bool(&mut self, name: &'static str) -> Result<bool, BitReaderError> {
        self.0.read_bool(name)
    }

    fn read<U: Numeric>(
        &mut self,
        bit_count: u32,
        name: &'static str,
    ) -> Result<U, BitReaderError> {
        self.0.read(bit_count, name)
    }

    fn read_to<V: Primitive>(&mut self, name: &'static str) -> Result<V, BitReaderError> {
        self.0.read_to(name)
    }

    fn skip(&mut self, bit_count: u32, name: &'static str) -> Result<(), BitReaderError> {
        self.0.skip(bit_count, name)
    }

    fn has_more_rbsp_data(&mut self, name: &'static str) -> Result<bool, BitReaderError> {
        self.0.has_more_rbsp_data(name)
    }

    fn finish_rbsp(self) -> Result<(), BitReaderError> {
        match self.0.finish_rbsp() {
            Err(BitReaderError::RemainingData) => Ok(()),
            other => other,
        }
    }

    fn finish_sei_payload(self) -> Result<(), BitReaderError> {
        self.0.finish_sei_payload()
    }
}

/// The frame rate of the SPS's timing information: two ticks a frame, as x264 and cameras
/// count them (a tick is a field).
fn stated_fps_milli(sps: &SeqParameterSet) -> Option<u32> {
    let timing = sps.vui_parameters.as_ref()?.timing_info.as_ref()?;
    let ticks_per_frame = 2 * u64::from(timing.num_units_in_tick);
    let fps_milli = (u64::from(timing.time_scale) * 1000).checked_div(ticks_per_frame)?;
    PLAUSIBLE_FPS_MILLI
        .contains(&fps_milli)
        .then(|| u32::try_from(fps_milli).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::samples::SPS_320X240_30;

    /// x264's SPS for 1920x1080 at 30 fps: 1088 coded lines, cropped to 1080.
    const SPS_1080P: &[u8] = &[
        0x67, 0x42, 0xC0, 0x28, 0xDA, 0x01, 0xE0, 0x08, 0x9F, 0x97, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x2A,
    ];

    #[test]
    fn an_sps_with_bytes_after_its_trailing_bits_is_read() {
        let mut padded = SPS_1080P.to_vec();
        padded.extend_from_slice(&[0x12, 0x34]);
        assert_eq!(picture_of(&padded), picture_of(SPS_1080P));
        assert!(picture_of(SPS_1080P).is_ok());
    }

    #[test]
    fn size_and_frame_rate_come_from_the_sps() {
        assert_eq!(
            picture_of(SPS_320X240_30),
            Ok(Picture {
                width: 320,
                height: 240,
                fps_milli: Some(30_000)
            })
        );
    }

    #[test]
    fn cropping_is_applied() {
        let picture = picture_of(SPS_1080P).unwrap();
        assert_eq!((picture.width, picture.height), (1920, 1080));
    }

    #[test]
    fn a_broken_sps_is_an_error_not_a_panic() {
        assert!(matches!(picture_of(&[0x67]), Err(SpsError::Unreadable(_))));
        assert!(picture_of(&SPS_320X240_30[..6]).is_err());
        for len in 0..SPS_320X240_30.len() {
            let _ = picture_of(&SPS_320X240_30[..len]);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_sps_bytes_read_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = picture_of(&[&[0x67], &body[..]].concat());
        }

        #[test]
        fn a_damaged_real_sps_reads_without_panicking(at in 1usize..22, byte: u8) {
            let mut sps = SPS_320X240_30.to_vec();
            sps[at] = byte;
            let _ = picture_of(&sps);
        }
    }
}

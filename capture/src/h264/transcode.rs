//! H.264 access units to JPEG, for the JPEG copy of an H.264 camera: openh264 decodes, and
//! libjpeg-turbo compresses the decoded planes as they are (4:2:0 both sides, so no colour
//! conversion and no RGB picture in between).

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use turbojpeg::{Compressor, Subsamp, YuvPlanesImage};

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("H.264 decoding: {0}")]
    Decode(#[from] openh264::Error),

    #[error("JPEG encoding: {0}")]
    Encode(#[from] turbojpeg::Error),

    #[error("the decoder gave a {width}x{height} picture whose planes are too short for it")]
    ShortPlanes { width: usize, height: usize },
}

/// One JPEG made from a decoded picture.
#[derive(Debug)]
pub struct Jpeg<'a> {
    pub bytes: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// A decoder and a compressor, kept from frame to frame: making either costs far more than a
/// frame does.
pub struct Transcoder {
    decoder: Decoder,
    compressor: Compressor,
    /// Sized for the worst case of the picture size, so compressing never allocates.
    out: Vec<u8>,
}

impl Transcoder {
    pub fn new(quality: u8) -> Result<Transcoder, TranscodeError> {
        let mut compressor = Compressor::new()?;
        compressor.set_quality(i32::from(quality))?;
        compressor.set_subsamp(Subsamp::Sub2x2)?;
        Ok(Transcoder {
            decoder: Decoder::new()?,
            compressor,
            out: Vec::new(),
        })
    }

    /// Forgets everything decoded so far, after an error: the next unit decoded must be a
    /// keyframe.
    pub fn reset(&mut self) -> Result<(), TranscodeError> {
        self.decoder = Decoder::new()?;
        Ok(())
    }

    /// Decodes `unit` for the pictures that follow it, without making a JPEG of it.
    pub fn decode(&mut self, unit: &[u8]) -> Result<(), TranscodeError> {
        self.decoder.decode(unit)?;
        Ok(())
    }

    /// Decodes `unit` and compresses its picture; `None` if it gave none.
    pub fn transcode(&mut self, unit: &[u8]) -> Result<Option<Jpeg<'_>>, TranscodeError> {
        let Some(picture) = self.decoder.decode(unit)? else {
            return Ok(None);
        };
        let planes = planes_of(&picture)?;
        let needed = self.compressor.buf_len(planes.width, planes.height)?;
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let len = self
            .compressor
            .compress_yuv_planes_to_slice(&planes, &mut self.out)?;
        Ok(Some(Jpeg {
            bytes: &self.out[..len],
            // Both below 2^16: H.264 levels stop far short of that.
            width: planes.width as u32,
            height: planes.height as u32,
        }))
    }
}

/// The picture as libjpeg-turbo takes it. An odd width or height (a cropped stream) loses its
/// last column or row: libjpeg-turbo reads 4:2:0 planes in whole pairs of rows and columns, and
/// the decoder's planes end with the picture. The lengths are checked here because
/// libjpeg-turbo's wrapper panics on planes too short.
fn planes_of(picture: &impl YUVSource) -> Result<YuvPlanesImage<&[u8]>, TranscodeError> {
    let (width, height) = picture.dimensions();
    let (y_stride, u_stride, v_stride) = picture.strides();
    let (width, height) = (width & !1, height & !1);
    let short = || TranscodeError::ShortPlanes { width, height };
    if width == 0 || height == 0 {
        return Err(short());
    }
    let fits = |plane: &[u8], stride: usize, plane_width: usize, rows: usize| {
        stride >= plane_width && (rows - 1) * stride + plane_width <= plane.len()
    };
    let (chroma_width, chroma_rows) = (width / 2, height / 2);
    if !(fits(picture.y(), y_stride, width, height)
        && fits(picture.u(), u_stride, chroma_width, chroma_rows)
        && fits(picture.v(), v_stride, chroma_width, chroma_rows))
    {
        return Err(short());
    }
    Ok(YuvPlanesImage {
        y_plane: picture.y(),
        u_plane: picture.u(),
        v_plane: picture.v(),
        width,
        height,
        y_stride,
        u_stride,
        v_stride,
        subsamp: Subsamp::Sub2x2,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::h264::encoder::{EncoderSettings, H264Encoder, I420};

    /// A moving gradient, so that delta frames are not empty.
    fn picture(width: usize, height: usize, frame: usize) -> Vec<u8> {
        let mut pixels = vec![128u8; width * height * 3 / 2];
        for (i, y) in pixels[..width * height].iter_mut().enumerate() {
            *y = ((i % width + i / width + frame * 4) % 256) as u8;
        }
        pixels
    }

    fn encoded(width: usize, height: usize, frames: usize) -> Vec<Vec<u8>> {
        let settings = EncoderSettings {
            bitrate_kbps: 2000,
            gop: 30,
        };
        let mut encoder = H264Encoder::new(settings, 30).unwrap();
        (0..frames)
            .map(|frame| {
                let pixels = picture(width, height, frame);
                encoder
                    .encode(&I420::new(width, height, &pixels).unwrap())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn every_unit_from_a_keyframe_on_becomes_a_jpeg_of_the_stream_size() {
        let units = encoded(320, 240, 5);
        let mut transcoder = Transcoder::new(80).unwrap();
        for unit in &units {
            let jpeg = transcoder.transcode(unit).unwrap().expect("a picture");
            assert_eq!((jpeg.width, jpeg.height), (320, 240));
            let header = turbojpeg::read_header(jpeg.bytes).unwrap();
            assert_eq!((header.width, header.height), (320, 240));
        }
    }

    #[test]
    fn garbage_is_an_error_and_a_reset_decoder_starts_again_at_a_keyframe() {
        let units = encoded(64, 48, 2);
        let mut transcoder = Transcoder::new(80).unwrap();
        let garbage = [
            0, 0, 0, 1, 0x65, 0xFF, 0x00, 0x13, 0x37, 0, 0, 1, 0x41, 0xFF,
        ];
        // openh264 may conceal rather than refuse; what matters is that it does not panic
        // and that a reset decoder takes the stream again.
        let _ = transcoder.transcode(&garbage);
        transcoder.reset().unwrap();
        assert!(transcoder.transcode(&units[0]).unwrap().is_some());
        assert!(transcoder.transcode(&units[1]).unwrap().is_some());
    }

    /// Not an assertion, a figure: what one 720p frame costs to decode and compress. Run with
    /// `cargo test --release -p ringcast-capture --lib cost_of -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, meaningful only in a release build"]
    fn cost_of_transcoding_720p() {
        let units = encoded(1280, 720, 60);
        let mut transcoder = Transcoder::new(80).unwrap();
        let started = Instant::now();
        for unit in &units {
            transcoder.transcode(unit).unwrap();
        }
        let transcode = started.elapsed() / units.len() as u32;
        transcoder.reset().unwrap();
        let started = Instant::now();
        for unit in &units {
            transcoder.decode(unit).unwrap();
        }
        let decode_only = started.elapsed() / units.len() as u32;
        eprintln!("720p: decode {decode_only:?}, decode + JPEG {transcode:?} per frame");
    }
}

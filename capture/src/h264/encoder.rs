//! capture's own H.264 encoder, for the test pattern (`--codec h264`): openh264, built from
//! the source bundled with its crate, so no system library is needed. Every IDR access unit it
//! makes begins with its SPS and PPS, as the ring wants of keyframes.

use std::time::Instant;

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType,
    VuiConfig,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

use crate::cli::Size;
use crate::SourceError;

/// `--bitrate` when not given, in kbit/s: 720p30 of the test pattern looks clean at this.
pub const DEFAULT_BITRATE_KBPS: u32 = 2000;
/// `--gop` when not given: a keyframe a second at 30 fps, so a new viewer waits at most that.
pub const DEFAULT_GOP: u32 = 30;
/// openh264 encodes up to level 5.2: at most 3840 by 2160 pixels, either way round.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// What `--bitrate` and `--gop` ask of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub bitrate_kbps: u32,
    /// Frames from one keyframe to the next.
    pub gop: u32,
}

impl EncoderSettings {
    pub fn from_flags(bitrate_kbps: Option<u32>, gop: Option<u32>) -> EncoderSettings {
        EncoderSettings {
            bitrate_kbps: bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS),
            gop: gop.unwrap_or(DEFAULT_GOP),
        }
    }
}

/// Checks that the encoder can take pictures of `size`, so a wrong `--size` is refused at start.
pub fn check_size(size: Size) -> Result<(), SourceError> {
    let unsupported = |reason| SourceError::UnsupportedSize { size, reason };
    if size.width % 2 != 0 || size.height % 2 != 0 {
        return Err(unsupported("H.264 in 4:2:0 needs an even width and height"));
    }
    let long = size.width.max(size.height);
    let short = size.width.min(size.height);
    if long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
        return Err(unsupported("openh264 encodes at most 3840x2160"));
    }
    Ok(())
}

pub struct H264Encoder {
    /// Boxed: it holds the description of its last output inline, some 7 KiB.
    encoder: Box<Encoder>,
    started: Instant,
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings, fps: u32) -> Result<H264Encoder, SourceError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(
                settings.bitrate_kbps.saturating_mul(1000),
            ))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(settings.gop))
            // Skipped frames would break the pattern's frame rate, and a scene change would
            // bring an extra keyframe: the stream keeps exactly `--fps` and `--gop`, and rate
            // control meets the bitrate through the quantiser alone (which makes openh264 warn
            // on stderr, once per encoder, that it cannot hold the bitrate strictly).
            .skip_frames(false)
            .scene_change_detect(false)
            // The pattern is drawn in full-range BT.601, as JPEG has it; a decoder told nothing
            // would take it for limited range and stretch its levels.
            .vui(VuiConfig::bt601().full_range(true))
            // One thread: capture's cores belong to the server.
            .num_threads(1);
        Ok(H264Encoder {
            encoder: Box::new(Encoder::with_api_config(
                OpenH264API::from_source(),
                config,
            )?),
            started: Instant::now(),
        })
    }

    /// Makes the next access unit an IDR one (with its SPS and PPS); the group of pictures
    /// counts from there.
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// One access unit in Annex B form; an IDR one (the first, then every `gop` frames) with
    /// its SPS and PPS in front.
    pub fn encode(&mut self, picture: &I420<'_>) -> Result<Vec<u8>, SourceError> {
        let at = Timestamp::from_millis(self.started.elapsed().as_millis() as u64);
        Ok(self.encoder.encode_at(picture, at)?.to_vec())
    }
}

/// A picture in planar YUV 4:2:0 (Y, then U, then V, rows without padding) of even width and
/// height, as the test pattern draws it.
pub struct I420<'a> {
    width: usize,
    height: usize,
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
}

impl<'a> I420<'a> {
    /// `None` unless `pixels` holds exactly such a picture: the encoder reads the planes
    /// through raw pointers, as far as the size says.
    pub fn new(width: usize, height: usize, pixels: &'a [u8]) -> Option<I420<'a>> {
        if width % 2 != 0 || height % 2 != 0 {
            return None;
        }
        let y_len = width.checked_mul(height)?;
        let uv_len = y_len / 4;
        if pixels.len() != y_len + 2 * uv_len {
            return None;
        }
        let (y, uv) = pixels.split_at(y_len);
        let (u, v) = uv.split_at(uv_len);
        Some(I420 {
            width,
            height,
            y,
            u,
            v,
        })
    }
}

impl YUVSource for I420<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        self.y
    }

    fn u(&self) -> &[u8] {
        self.u
    }

    fn v(&self) -> &[u8] {
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::h264::{is_keyframe, nal_type, nal_units, NAL_IDR_SLICE, NAL_PPS, NAL_SPS};

    fn gray(width: usize, height: usize, shade: u8) -> Vec<u8> {
        vec![shade; width * height * 3 / 2]
    }

    #[test]
    fn keyframes_come_every_gop_frames_with_their_parameter_sets() {
        let settings = EncoderSettings {
            bitrate_kbps: 300,
            gop: 4,
        };
        let mut encoder = H264Encoder::new(settings, 30).unwrap();
        let keyframes: Vec<bool> = (0..9u8)
            .map(|i| {
                let pixels = gray(64, 48, 16 + 8 * i);
                let unit = encoder
                    .encode(&I420::new(64, 48, &pixels).unwrap())
                    .unwrap();
                if is_keyframe(&unit) {
                    let types: Vec<_> = nal_units(&unit).filter_map(nal_type).collect();
                    assert_eq!(types, [NAL_SPS, NAL_PPS, NAL_IDR_SLICE]);
                }
                is_keyframe(&unit)
            })
            .collect();
        assert_eq!(
            keyframes,
            [true, false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn sizes_the_encoder_cannot_take_are_refused_up_front() {
        let size = |width, height| Size { width, height };
        assert!(check_size(size(1280, 720)).is_ok());
        assert!(check_size(size(2160, 3840)).is_ok());
        assert!(check_size(size(321, 240)).is_err());
        assert!(check_size(size(4096, 2160)).is_err());
        assert!(I420::new(64, 48, &gray(64, 47, 0)).is_none());
        assert!(I420::new(63, 48, &gray(63, 48, 0)).is_none());
    }
}

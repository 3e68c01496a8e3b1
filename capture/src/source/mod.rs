//! Camera sources. Each kind of camera is one file here implementing [`Source`]: `open` connects
//! (or opens the device) and returns a [`FrameStream`] of frames (JPEGs, or H.264 access units
//! with `--codec h264`); dropping the stream releases the camera. The supervisor calls `open`
//! again after a failure or an idle period.
//!
//! To add a source: write `source/<kind>.rs` with a `Source` and a `FrameStream`, add a
//! [`SourceSpec`] variant in `cli.rs` and a line in [`build`].

mod byte_stream;
mod ffmpeg;
pub mod http;
pub mod rtsp;
mod stdin;
mod test_pattern;
pub mod v4l2;

use std::time::Duration;

use ringbuf::{CameraId, Codec, WallNanos};

use crate::cli::{Args, Size, SourceSpec};
use crate::h264::encoder::EncoderSettings;
use crate::SourceError;

pub use ffmpeg::{ffmpeg_args, FfmpegSource};
pub use http::HttpSource;
pub use rtsp::RtspSource;
pub use stdin::StdinSource;
pub use test_pattern::{wall_clock_text, TestPattern};
pub use v4l2::V4l2Source;

/// How long a stream may wait for a frame before returning `Ok(None)`, so the supervisor can
/// notice a pause or stop request.
pub const POLL: Duration = Duration::from_millis(200);

/// One frame from a source: a JPEG, or an H.264 access unit in Annex B form.
#[derive(Debug, Clone)]
pub struct Captured {
    pub data: Vec<u8>,
    /// When the frame was taken (or received, for cameras that do not say).
    pub capture: WallNanos,
}

/// What one call of [`FrameStream::next_frame`] brought.
#[derive(Debug)]
pub enum Pulled {
    Frame(Captured),
    /// A piece of the stream that started as a frame but broke off (truncated, cut off past
    /// the size limit); dropped here and only counted.
    Broken {
        bytes: usize,
    },
}

pub trait Source: Send {
    /// What this source is, for logs ("V4L2 device /dev/video0").
    fn describe(&self) -> String;

    /// Checks what must hold before capture starts at all (a device path that exists), so a
    /// wrong flag exits at once instead of retrying forever.
    fn preflight(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// The frame rate this source aims for, if it decides one (for the ring's header).
    fn nominal_fps(&self) -> Option<u32> {
        None
    }

    /// Connects to the camera (or opens the device).
    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError>;
}

pub trait FrameStream: Send {
    /// The next frame (or broken piece); `Ok(None)` if none came within about [`POLL`].
    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError>;

    /// Makes the next frame one a decoder can start from (H.264: an IDR picture). Sources whose
    /// every frame is one, or that cannot choose (a camera's own H.264), ignore this, and capture
    /// waits for their next keyframe.
    fn request_keyframe(&mut self) {}

    /// The frame rate agreed with the camera on opening, where that differs from what
    /// [`Source::nominal_fps`] could say beforehand (a V4L2 driver picks the nearest it has).
    fn negotiated_fps(&self) -> Option<u32> {
        None
    }
}

/// What sources that encode or scale need to know.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub camera: CameraId,
    pub size: Option<Size>,
    pub fps: Option<u32>,
    pub quality: u8,
    /// `--max-frame-bytes`: byte-stream sources give up on a frame that grows much past it.
    pub max_frame_bytes: usize,
    pub codec: Codec,
    /// For sources that encode H.264 themselves.
    pub encoder: EncoderSettings,
}

impl SourceOptions {
    pub fn from_args(args: &Args, camera: CameraId) -> SourceOptions {
        SourceOptions {
            camera,
            size: args.size,
            fps: args.fps,
            quality: args.quality,
            max_frame_bytes: args.max_frame_bytes,
            codec: args.codec,
            encoder: EncoderSettings::from_flags(args.bitrate, args.gop),
        }
    }
}

/// The source a `--source` value names.
pub fn build(spec: &SourceSpec, options: SourceOptions) -> Box<dyn Source> {
    match spec {
        SourceSpec::TestPattern => Box::new(TestPattern::new(options)),
        SourceSpec::V4l2(path) => Box::new(V4l2Source::new(path.clone(), options)),
        SourceSpec::Http(url) => Box::new(HttpSource::new(url.clone(), options.max_frame_bytes)),
        SourceSpec::Stdin => Box::new(StdinSource::new(&options)),
        SourceSpec::Ffmpeg(url) if spec.is_rtsp() && options.codec == Codec::H264 => {
            Box::new(RtspSource::new(url.clone(), &options))
        }
        SourceSpec::Ffmpeg(url) => Box::new(FfmpegSource::new(url.clone(), options)),
    }
}

/// Wall-clock time now.
pub fn now_wall() -> WallNanos {
    use ringbuf::Clock;
    ringbuf::SystemClock.wall()
}

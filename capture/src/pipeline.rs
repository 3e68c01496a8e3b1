//! What happens to every frame between source and sink. A JPEG gets a structural check,
//! `--drop-same-frames`, rotate/flip, timestamp, and the COM timing segment with the number the
//! sink will give it; an H.264 access unit goes through [`H264Pipeline`].

use ringbuf::frame::{check_jpeg, insert_timing, FrameTiming};
use ringbuf::{Codec, FrameKind, FrameNo};

use crate::cli::{Flip, Rotation, Size};
use crate::h264::pipeline::H264Pipeline;
use crate::source::wall_clock_text;
use crate::source::Captured;
use crate::transform::{combined_op, Orienter, Stamper};

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub camera: String,
    pub quality: u8,
    pub timestamp: bool,
    pub rotate: Option<Rotation>,
    pub flip: Option<Flip>,
    pub drop_same_frames: u32,
}

/// The picture a frame holds, as the frame itself says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// The frame rate the stream states, in thousandths (H.264 timing information).
    pub fps_milli: Option<u32>,
}

/// What became of one frame.
#[derive(Debug)]
pub enum Processed<'a> {
    /// Publish these bytes (a JPEG with its timing segment, or an access unit).
    Publish {
        frame: &'a [u8],
        kind: FrameKind,
        picture: Picture,
    },
    /// Same as the previous frame; skipped (`--drop-same-frames`).
    Unchanged,
    /// An H.264 access unit that needs frames before it, and no keyframe has been published
    /// since the stream (re)started; dropped.
    BeforeKeyframe,
    /// Not a usable frame; dropped.
    Corrupt(String),
}

pub enum Pipeline {
    Jpeg(JpegPipeline),
    H264(H264Pipeline),
}

impl Pipeline {
    pub fn new(codec: Codec, options: &PipelineOptions) -> Result<Pipeline, turbojpeg::Error> {
        Ok(match codec {
            Codec::Jpeg => Pipeline::Jpeg(JpegPipeline::new(options)?),
            Codec::H264 => Pipeline::H264(H264Pipeline::default()),
        })
    }

    /// `frame_no` is the number the sink will give the frame, for JPEG's timing segment.
    pub fn process<'a>(&'a mut self, frame: &'a Captured, frame_no: FrameNo) -> Processed<'a> {
        match self {
            Pipeline::Jpeg(jpeg) => jpeg.process(frame, frame_no),
            Pipeline::H264(h264) => h264.process(&frame.data),
        }
    }

    /// The source starts over (capture resumed, or the source reconnected): an H.264 stream
    /// must be published from a keyframe again.
    pub fn restart(&mut self) {
        if let Pipeline::H264(h264) = self {
            h264.restart();
        }
    }
}

pub struct JpegPipeline {
    drop_same: Option<DropSame>,
    orienter: Option<Orienter>,
    stamper: Option<Stamper>,
    /// Kept, not made per frame: reading a header is cheap, setting up a decompressor is not.
    headers: turbojpeg::Decompressor,
    out: Vec<u8>,
}

impl JpegPipeline {
    pub fn new(options: &PipelineOptions) -> Result<JpegPipeline, turbojpeg::Error> {
        let op = combined_op(options.rotate, options.flip);
        let orienter = if op == turbojpeg::TransformOp::None {
            None
        } else {
            Some(Orienter::new(op, options.quality)?)
        };
        let stamper = if options.timestamp {
            Some(Stamper::new(options.camera.clone(), options.quality)?)
        } else {
            None
        };
        Ok(JpegPipeline {
            drop_same: (options.drop_same_frames > 0)
                .then(|| DropSame::new(options.drop_same_frames)),
            orienter,
            stamper,
            headers: turbojpeg::Decompressor::new()?,
            out: Vec::new(),
        })
    }

    pub fn process(&mut self, frame: &Captured, frame_no: FrameNo) -> Processed<'_> {
        if let Err(e) = check_jpeg(&frame.data) {
            return Processed::Corrupt(e.to_string());
        }
        if let Some(drop_same) = &mut self.drop_same {
            if drop_same.is_repeat(&frame.data) {
                return Processed::Unchanged;
            }
        }
        let header = match self.headers.read_header(&frame.data) {
            Ok(header) => header,
            Err(e) => return Processed::Corrupt(format!("unreadable JPEG header: {e}")),
        };
        let (mut width, mut height) = (header.width, header.height);
        let limit = Size::MAX as usize;
        if width == 0 || height == 0 || width > limit || height > limit {
            // Decoding (for --timestamp, --rotate) would allocate for whatever a corrupt
            // header claims; viewers could not use such a frame either.
            return Processed::Corrupt(format!(
                "picture size {width}x{height} is outside 1 to {limit} pixels a side"
            ));
        }
        let oriented;
        let mut jpeg: &[u8] = &frame.data;
        if let Some(orienter) = &mut self.orienter {
            match orienter.apply(jpeg) {
                Ok(out) => oriented = out,
                Err(e) => return Processed::Corrupt(format!("cannot rotate or flip: {e}")),
            }
            jpeg = &oriented;
            if orienter.swaps_axes() {
                (width, height) = (height, width);
            }
        }
        let stamped;
        if let Some(stamper) = &mut self.stamper {
            match stamper.apply(jpeg, &wall_clock_text()) {
                Ok(out) => stamped = out,
                Err(e) => return Processed::Corrupt(format!("cannot draw the timestamp: {e}")),
            }
            jpeg = &stamped;
        }
        let timing = FrameTiming {
            frame_no,
            capture: frame.capture,
        };
        if let Err(e) = insert_timing(jpeg, timing, &mut self.out) {
            return Processed::Corrupt(e.to_string());
        }
        Processed::Publish {
            frame: &self.out,
            kind: FrameKind::Key,
            picture: Picture {
                width: width as u32,
                height: height as u32,
                fps_milli: None,
            },
        }
    }
}

/// `--drop-same-frames N`: a frame byte-for-byte equal to the previous one is skipped, but
/// never more than N in a row, so viewers still see a sign of life on a static scene.
#[derive(Debug)]
pub struct DropSame {
    limit: u32,
    previous: Vec<u8>,
    skipped_in_a_row: u32,
}

impl DropSame {
    pub fn new(limit: u32) -> DropSame {
        DropSame {
            limit,
            previous: Vec::new(),
            skipped_in_a_row: 0,
        }
    }

    /// Whether to skip `jpeg`; remembers it as the previous frame otherwise.
    pub fn is_repeat(&mut self, jpeg: &[u8]) -> bool {
        if jpeg == self.previous.as_slice() {
            if self.skipped_in_a_row < self.limit {
                self.skipped_in_a_row += 1;
                return true;
            }
        } else {
            self.previous.clear();
            self.previous.extend_from_slice(jpeg);
        }
        self.skipped_in_a_row = 0;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_frames_are_skipped_up_to_the_limit_in_a_row() {
        let mut drop_same = DropSame::new(2);
        let kept: Vec<bool> = [b"a", b"a", b"a", b"a", b"b", b"b", b"a"]
            .iter()
            .map(|f| !drop_same.is_repeat(&f[..]))
            .collect();
        assert_eq!(kept, [true, false, false, true, true, false, true]);
    }

    #[test]
    fn garbage_is_reported_corrupt_not_published() {
        let options = PipelineOptions {
            camera: "cam1".into(),
            quality: 80,
            timestamp: false,
            rotate: None,
            flip: None,
            drop_same_frames: 0,
        };
        let mut pipeline = Pipeline::new(Codec::Jpeg, &options).unwrap();
        let frame = Captured {
            data: b"\xff\xd8 not really a jpeg \xff\xd9".to_vec(),
            capture: ringbuf::WallNanos(1),
        };
        assert!(matches!(
            pipeline.process(&frame, FrameNo(1)),
            Processed::Corrupt(_)
        ));
    }
}

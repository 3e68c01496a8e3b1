//! The test pattern: colour bars, a gray ramp, a moving block, and the camera name, frame counter
//! and wall-clock time, generated straight in YUV 4:2:0 and encoded with turbojpeg, or with
//! openh264 for `--codec h264`. It paces itself to `--fps`.

use std::time::{Duration, Instant};

use ringbuf::Codec;
use turbojpeg::{Compressor, Subsamp, YuvImage};

use super::{now_wall, Captured, FrameStream, Pulled, Source, SourceOptions, POLL};
use crate::cli::Size;
use crate::h264::encoder::{self, H264Encoder, I420};
use crate::overlay::{text_scale, PlaneLayout, Planes, Rect};
use crate::SourceError;

pub const DEFAULT_SIZE: Size = Size {
    width: 1280,
    height: 720,
};
pub const DEFAULT_FPS: u32 = 30;

/// Seconds the moving block takes to cross the picture.
const CROSSING_SECS: f64 = 4.0;

pub struct TestPattern {
    options: SourceOptions,
}

impl TestPattern {
    pub fn new(options: SourceOptions) -> TestPattern {
        TestPattern { options }
    }

    fn size(&self) -> Size {
        self.options.size.unwrap_or(DEFAULT_SIZE)
    }

    fn fps(&self) -> u32 {
        self.options.fps.unwrap_or(DEFAULT_FPS)
    }
}

impl Source for TestPattern {
    fn describe(&self) -> String {
        let (size, fps) = (self.size(), self.fps());
        match self.options.codec {
            Codec::Jpeg => format!("test pattern {size} at {fps} fps"),
            Codec::H264 => {
                let settings = self.options.encoder;
                format!(
                    "test pattern {size} at {fps} fps in H.264 at {} kbit/s, a keyframe every {} frames",
                    settings.bitrate_kbps, settings.gop
                )
            }
        }
    }

    fn preflight(&self) -> Result<(), SourceError> {
        match self.options.codec {
            Codec::Jpeg => Ok(()),
            Codec::H264 => encoder::check_size(self.size()),
        }
    }

    fn nominal_fps(&self) -> Option<u32> {
        Some(self.fps())
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        Ok(Box::new(PatternStream::new(
            &self.options,
            self.size(),
            self.fps(),
        )?))
    }
}

/// What the pattern is encoded with.
enum PatternEncoder {
    Jpeg(Compressor),
    H264(H264Encoder),
}

impl PatternEncoder {
    fn new(options: &SourceOptions, fps: u32) -> Result<PatternEncoder, SourceError> {
        Ok(match options.codec {
            Codec::Jpeg => {
                let mut compressor = Compressor::new()?;
                compressor.set_quality(i32::from(options.quality))?;
                compressor.set_subsamp(Subsamp::Sub2x2)?;
                PatternEncoder::Jpeg(compressor)
            }
            Codec::H264 => PatternEncoder::H264(H264Encoder::new(options.encoder, fps)?),
        })
    }

    fn encode(&mut self, pixels: &[u8], layout: PlaneLayout) -> Result<Vec<u8>, SourceError> {
        match self {
            PatternEncoder::Jpeg(compressor) => {
                let image = yuv_image(pixels, size_of(layout));
                Ok(compressor.compress_yuv_to_vec(image)?)
            }
            PatternEncoder::H264(encoder) => {
                // Never fails for a size that passed `check_size`, whose even sides leave
                // turbojpeg's planes without padding.
                let picture = I420::new(layout.width, layout.height, pixels).ok_or_else(|| {
                    SourceError::Protocol("test pattern buffer is not an I420 picture".into())
                })?;
                encoder.encode(&picture)
            }
        }
    }
}

struct PatternStream {
    camera: String,
    layout: PlaneLayout,
    background: Vec<u8>,
    scratch: Vec<u8>,
    encoder: PatternEncoder,
    interval: Duration,
    next_due: Instant,
    started: Instant,
    count: u64,
}

impl PatternStream {
    fn new(options: &SourceOptions, size: Size, fps: u32) -> Result<PatternStream, SourceError> {
        let layout = PlaneLayout::of(&yuv_image((), size));
        let mut background = vec![0; layout.y_len() + 2 * layout.uv_len()];
        paint_background(layout, &mut background);
        let now = Instant::now();
        Ok(PatternStream {
            camera: options.camera.to_string(),
            layout,
            scratch: background.clone(),
            background,
            encoder: PatternEncoder::new(options, fps)?,
            interval: Duration::from_secs_f64(1.0 / f64::from(fps)),
            next_due: now,
            started: now,
            count: 0,
        })
    }

    /// Sleeps towards the next frame's time; `false` if it has not come within [`POLL`].
    fn wait_until_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_due {
            std::thread::sleep((self.next_due - now).min(POLL));
            if Instant::now() < self.next_due {
                return false;
            }
        }
        self.next_due += self.interval;
        // After a stall (the pipeline was busy, the machine loaded) restart the schedule from
        // now instead of bursting to catch up.
        if self.next_due + self.interval < Instant::now() {
            self.next_due = Instant::now() + self.interval;
        }
        true
    }

    fn render(&mut self) -> Result<Vec<u8>, SourceError> {
        self.count += 1;
        self.scratch.copy_from_slice(&self.background);
        let layout = self.layout;
        let Some(mut planes) = Planes::split(layout, &mut self.scratch) else {
            return Err(SourceError::Protocol(
                "test pattern buffer has the wrong size".into(),
            ));
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        draw_moving_block(&mut planes, elapsed);
        let title = format!("{} #{}", self.camera, self.count);
        let clock = wall_clock_text();
        let widest = title.chars().count().max(clock.chars().count());
        let scale = text_scale(layout.width, layout.height, widest);
        let margin = 4 * scale;
        let line = 10 * scale;
        planes.draw_text_contrasting(margin, margin, scale, &title);
        planes.draw_text_contrasting(margin, margin + line, scale, &clock);
        self.encoder.encode(&self.scratch, layout)
    }
}

impl FrameStream for PatternStream {
    fn request_keyframe(&mut self) {
        if let PatternEncoder::H264(encoder) = &mut self.encoder {
            encoder.force_keyframe();
        }
    }

    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        if !self.wait_until_due() {
            return Ok(None);
        }
        let capture = now_wall();
        let data = self.render()?;
        Ok(Some(Pulled::Frame(Captured { data, capture })))
    }
}

fn yuv_image<T>(pixels: T, size: Size) -> YuvImage<T> {
    YuvImage {
        pixels,
        width: size.width as usize,
        align: 1,
        height: size.height as usize,
        subsamp: Subsamp::Sub2x2,
    }
}

fn size_of(layout: PlaneLayout) -> Size {
    Size {
        width: layout.width as u32,
        height: layout.height as u32,
    }
}

/// Local wall-clock time to the millisecond, as an operator reads it.
pub fn wall_clock_text() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// Full-range BT.601 YUV of an RGB colour, as JPEG uses.
fn yuv_of(r: f64, g: f64, b: f64) -> (u8, u8, u8) {
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let u = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let v = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    let clamp = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    (clamp(y), clamp(u), clamp(v))
}

const BARS: [(f64, f64, f64); 8] = [
    (191.0, 191.0, 191.0),
    (191.0, 191.0, 0.0),
    (0.0, 191.0, 191.0),
    (0.0, 191.0, 0.0),
    (191.0, 0.0, 191.0),
    (191.0, 0.0, 0.0),
    (0.0, 0.0, 191.0),
    (16.0, 16.0, 16.0),
];

/// Colour bars over the top three quarters, a gray ramp below.
fn paint_background(layout: PlaneLayout, pixels: &mut [u8]) {
    let Some(mut planes) = Planes::split(layout, pixels) else {
        return;
    };
    let (w, h) = (layout.width, layout.height);
    let bars_h = h * 3 / 4;
    for (i, &(r, g, b)) in BARS.iter().enumerate() {
        let x0 = w * i / BARS.len();
        let x1 = w * (i + 1) / BARS.len();
        let rect = Rect {
            x: x0,
            y: 0,
            w: x1 - x0,
            h: bars_h,
        };
        planes.fill(rect, yuv_of(r, g, b));
    }
    const STEPS: usize = 16;
    for step in 0..STEPS {
        let x0 = w * step / STEPS;
        let x1 = w * (step + 1) / STEPS;
        let level = (step * 255 / (STEPS - 1)) as f64;
        let rect = Rect {
            x: x0,
            y: bars_h,
            w: x1 - x0,
            h: h - bars_h,
        };
        planes.fill(rect, yuv_of(level, level, level));
    }
}

/// A block that moves back and forth across the middle, so motion is visible.
fn draw_moving_block(planes: &mut Planes<'_>, elapsed_secs: f64) {
    let (w, h) = (planes.layout.width, planes.layout.height);
    let side = (h / 6).max(2);
    let travel = w.saturating_sub(side) as f64;
    let phase = (elapsed_secs / CROSSING_SECS) % 2.0;
    let along = if phase < 1.0 { phase } else { 2.0 - phase };
    let rect = Rect {
        x: (along * travel) as usize,
        y: h / 2 - side / 2,
        w: side,
        h: side,
    };
    planes.fill(rect, yuv_of(255.0, 255.0, 255.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::CameraId;

    #[test]
    fn frames_decode_at_the_requested_size() {
        let options = SourceOptions {
            camera: CameraId::new("cam1").unwrap(),
            size: Some(Size {
                width: 320,
                height: 180,
            }),
            fps: Some(240),
            quality: 80,
            max_frame_bytes: 2 << 20,
            codec: Codec::Jpeg,
            encoder: encoder::EncoderSettings::from_flags(None, None),
        };
        let mut stream = TestPattern::new(options).open().unwrap();
        let frame = loop {
            if let Some(Pulled::Frame(frame)) = stream.next_frame().unwrap() {
                break frame;
            }
        };
        let header = turbojpeg::read_header(&frame.data).unwrap();
        assert_eq!((header.width, header.height), (320, 180));
    }
}

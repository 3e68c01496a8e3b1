//! `ringcast-replay`: publishes one fixed JPEG into a ring at a steady rate, each copy with its
//! own frame number and capture time in the COM timing segment. A frame source that costs
//! almost nothing and gives the same bytes every run, for repeatable benchmarks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ringbuf::frame::{check_jpeg, insert_timing, FrameTiming, JpegError};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock, VideoFormat};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ringcast-replay",
    about = "Publishes one JPEG file into a ring at a fixed frame rate, with frame timing"
)]
pub struct ReplayArgs {
    /// The JPEG to publish (e.g. one 720p test frame made with ffmpeg).
    #[arg(long, env = "RINGCAST_JPEG")]
    pub jpeg: PathBuf,
    #[arg(long, default_value_t = 30.0, env = "RINGCAST_FPS")]
    pub fps: f64,
    #[arg(long, env = "RINGCAST_CAMERA")]
    pub camera: CameraId,
    #[arg(long, default_value = ringbuf::DEFAULT_RING_DIR, env = "RINGCAST_RING_DIR")]
    pub ring_dir: PathBuf,
    #[arg(long, default_value_t = 8, env = "RINGCAST_SLOTS")]
    pub slots: u32,
    /// Stop after this many seconds (default: until SIGTERM or SIGINT).
    #[arg(long, env = "RINGCAST_DURATION")]
    pub duration: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a JPEG: {source}", path.display())]
    NotJpeg { path: PathBuf, source: JpegError },
    #[error("--fps {0}: must be more than 0 and at most 1000")]
    BadFps(f64),
    #[error("--duration {0}: not a number of seconds")]
    BadDuration(f64),
    #[error(transparent)]
    Ring(#[from] ringbuf::Error),
}

/// Room left in a slot beyond the JPEG, for the timing segment.
const TIMING_ROOM: usize = 4096;

/// Publishes until `stop` is set or the duration ends; returns how many frames were published.
pub fn run(args: &ReplayArgs, stop: &AtomicBool) -> Result<u64, ReplayError> {
    if !(args.fps > 0.0 && args.fps <= 1000.0) {
        return Err(ReplayError::BadFps(args.fps));
    }
    let deadline = match args.duration {
        Some(secs) => Some(
            Instant::now()
                + Duration::try_from_secs_f64(secs).map_err(|_| ReplayError::BadDuration(secs))?,
        ),
        None => None,
    };
    let jpeg = std::fs::read(&args.jpeg).map_err(|source| ReplayError::Read {
        path: args.jpeg.clone(),
        source,
    })?;
    check_jpeg(&jpeg).map_err(|source| ReplayError::NotJpeg {
        path: args.jpeg.clone(),
        source,
    })?;
    let geometry = RingGeometry {
        slot_count: args.slots,
        slot_size: RingGeometry::default()
            .slot_size
            .max(jpeg.len() + TIMING_ROOM),
    };
    let mut writer = RingWriter::create(&args.ring_dir, &args.camera, geometry)?;
    let (width, height) = dimensions(&jpeg).unwrap_or((0, 0));
    writer.set_video_format(VideoFormat {
        width,
        height,
        fps_milli: (args.fps * 1000.0).round() as u32,
    });
    tracing::info!(
        ring = %writer.path().display(),
        bytes = jpeg.len(),
        width,
        height,
        fps = args.fps,
        "replaying"
    );
    let interval = Duration::from_secs_f64(1.0 / args.fps);
    let mut frame = Vec::with_capacity(jpeg.len() + TIMING_ROOM);
    let mut next = Instant::now();
    let mut published = 0;
    while !stop.load(Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let timing = FrameTiming {
            frame_no: writer.next_frame_no(),
            capture: SystemClock.wall(),
        };
        insert_timing(&jpeg, timing, &mut frame).map_err(|source| ReplayError::NotJpeg {
            path: args.jpeg.clone(),
            source,
        })?;
        writer.publish(&frame, timing.capture)?;
        published += 1;
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > interval {
            // Far behind (the machine was busy): keep the rate from here rather than bursting
            // to catch up, as a camera would.
            next = now;
        }
    }
    Ok(published)
}

/// Width and height from the first start-of-frame segment (SOF0..SOF15 except DHT, JPG, DAC).
pub fn dimensions(jpeg: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return None;
        }
        let marker = jpeg[at + 1];
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof {
            let sof = jpeg.get(at + 4..at + 9)?;
            let height = u16::from_be_bytes([sof[1], sof[2]]);
            let width = u16::from_be_bytes([sof[3], sof[4]]);
            return Some((u32::from(width), u32::from(height)));
        }
        if marker == 0xDA {
            return None;
        }
        at += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_come_from_the_start_of_frame_segment() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0];
        jpeg.extend_from_slice(&[
            0xFF, 0xC0, 0x00, 0x0B, 8, 0x02, 0xD0, 0x05, 0x00, 3, 0, 0, 0,
        ]);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(dimensions(&jpeg), Some((1280, 720)));
        assert_eq!(dimensions(&[0xFF, 0xD8, 0x00]), None);
        assert_eq!(dimensions(&[0xFF, 0xD8, 0xFF, 0xC0, 0x00]), None);
    }
}

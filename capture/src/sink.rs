//! Where processed frames go: the local ring, or a remote server (see [`crate::push`]).

use ringbuf::{FrameNo, RingWriter, VideoFormat, WallNanos, WriterState};
use tracing::warn;

/// A destination for frames, and for the signs of life readers judge the camera by.
pub trait Sink {
    /// The number the next published frame will carry (for its timing segment).
    fn next_frame_no(&self) -> FrameNo;
    /// Publishes one complete JPEG. A frame the sink refuses is logged and counted by the sink;
    /// it never stops capture.
    fn publish(&mut self, jpeg: &[u8], capture: WallNanos);
    /// Alive, even though no frame comes (reconnecting, idle).
    fn heartbeat(&self);
    /// Idle, or source down; publishing a frame means streaming again.
    fn set_state(&self, state: WriterState);
    fn set_video_format(&self, format: VideoFormat);
}

/// The local ring.
pub struct RingSink {
    writer: RingWriter,
    stats: std::sync::Arc<crate::stats::Stats>,
    too_large_warnings: crate::stats::LogLimit,
}

impl RingSink {
    pub fn new(writer: RingWriter, stats: std::sync::Arc<crate::stats::Stats>) -> RingSink {
        RingSink {
            writer,
            stats,
            too_large_warnings: crate::stats::LogLimit::new(std::time::Duration::from_secs(10)),
        }
    }
}

impl Sink for RingSink {
    fn next_frame_no(&self) -> FrameNo {
        self.writer.next_frame_no()
    }

    fn publish(&mut self, jpeg: &[u8], capture: WallNanos) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.writer.publish(jpeg, capture) {
            Ok(_) => {
                self.stats.published.fetch_add(1, Relaxed);
                self.stats.bytes.fetch_add(jpeg.len() as u64, Relaxed);
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Relaxed);
                if self.too_large_warnings.allow(std::time::Instant::now()) {
                    warn!("frame not published: {e} (raise --max-frame-bytes or lower --quality)");
                }
            }
        }
    }

    fn heartbeat(&self) {
        self.writer.heartbeat();
    }

    fn set_state(&self, state: WriterState) {
        self.writer.set_state(state);
    }

    fn set_video_format(&self, format: VideoFormat) {
        self.writer.set_video_format(format);
    }
}

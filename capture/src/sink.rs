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
    fn heartbeat(&mut self);
    /// Idle, or source down; publishing a frame means streaming again.
    fn set_state(&mut self, state: WriterState);
    fn set_video_format(&mut self, format: VideoFormat);
}

/// The local ring.
pub struct RingSink {
    writer: RingWriter,
    stats: std::sync::Arc<crate::stats::Stats>,
    too_large_warnings: crate::stats::LogLimit,
    ring_warnings: crate::stats::LogLimit,
}

impl RingSink {
    pub fn new(writer: RingWriter, stats: std::sync::Arc<crate::stats::Stats>) -> RingSink {
        let every = std::time::Duration::from_secs(10);
        RingSink {
            writer,
            stats,
            too_large_warnings: crate::stats::LogLimit::new(every),
            ring_warnings: crate::stats::LogLimit::new(every),
        }
    }

    /// The ring file was tampered with and could not be replaced (the directory is gone or
    /// full): capture goes on, and the writer tries again at the next frame or heartbeat.
    fn warn_unsound(&mut self, result: Result<(), ringbuf::Error>) {
        if let Err(e) = result {
            if self.ring_warnings.allow(std::time::Instant::now()) {
                warn!("the ring file needs replacing, and that failed: {e}");
            }
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
            Err(e @ ringbuf::Error::FrameTooLarge { .. }) => {
                self.stats.rejected.fetch_add(1, Relaxed);
                if self.too_large_warnings.allow(std::time::Instant::now()) {
                    warn!("frame not published: {e} (raise --max-frame-bytes or lower --quality)");
                }
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Relaxed);
                self.warn_unsound(Err(e));
            }
        }
    }

    fn heartbeat(&mut self) {
        let result = self.writer.heartbeat();
        self.warn_unsound(result);
    }

    fn set_state(&mut self, state: WriterState) {
        let result = self.writer.set_state(state);
        self.warn_unsound(result);
    }

    fn set_video_format(&mut self, format: VideoFormat) {
        self.writer.set_video_format(format);
    }
}

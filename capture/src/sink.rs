//! Where processed frames go: the local ring, or a remote server (see [`crate::push`]).

use ringbuf::{FrameKind, FrameNo, RingWriter, VideoFormat, WallNanos, WriterState};
use tracing::warn;

/// A destination for frames, and for the signs of life readers judge the camera by.
pub trait Sink {
    /// The number the next published frame will carry (for its timing segment).
    fn next_frame_no(&self) -> FrameNo;
    /// Publishes one complete frame: a JPEG, or an H.264 access unit; returns whether the sink
    /// took it. A frame the sink refuses is logged and counted by the sink; it never stops
    /// capture.
    fn publish(&mut self, frame: &[u8], capture: WallNanos, kind: FrameKind) -> bool;
    /// Alive, even though no frame comes (reconnecting, idle).
    fn heartbeat(&mut self);
    /// Idle, or source down; publishing a frame means streaming again.
    fn set_state(&mut self, state: WriterState);
    fn set_video_format(&mut self, format: VideoFormat);
    /// Why this sink can take no more frames, once it cannot: another writer holds the ring
    /// now (its file was removed and a new capture made one).
    fn lost(&self) -> Option<&str>;
}

/// The local ring.
pub struct RingSink {
    writer: RingWriter,
    stats: std::sync::Arc<crate::stats::Stats>,
    too_large_warnings: crate::stats::LogLimit,
    ring_warnings: crate::stats::LogLimit,
    lost: Option<String>,
}

impl RingSink {
    pub fn new(writer: RingWriter, stats: std::sync::Arc<crate::stats::Stats>) -> RingSink {
        let every = std::time::Duration::from_secs(10);
        RingSink {
            writer,
            stats,
            too_large_warnings: crate::stats::LogLimit::new(every),
            ring_warnings: crate::stats::LogLimit::new(every),
            lost: None,
        }
    }

    /// The ring file was tampered with and could not be replaced. Another writer holding the
    /// path ends this capture; anything else (the directory full or in the way) is retried at
    /// the next frame or heartbeat.
    fn note_ring_error(&mut self, result: Result<(), ringbuf::Error>) {
        match result {
            Ok(()) => {}
            Err(e @ ringbuf::Error::WriterBusy { .. }) => self.lost = Some(e.to_string()),
            Err(e) => {
                if self.ring_warnings.allow(std::time::Instant::now()) {
                    warn!("the ring file needs replacing, and that failed: {e}");
                }
            }
        }
    }
}

impl Sink for RingSink {
    fn next_frame_no(&self) -> FrameNo {
        self.writer.next_frame_no()
    }

    fn publish(&mut self, frame: &[u8], capture: WallNanos, kind: FrameKind) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.writer.publish_frame(frame, capture, kind) {
            Ok(_) => {
                self.stats.published.fetch_add(1, Relaxed);
                self.stats.bytes.fetch_add(frame.len() as u64, Relaxed);
                return true;
            }
            Err(e @ ringbuf::Error::FrameTooLarge { .. }) => {
                self.stats.rejected.fetch_add(1, Relaxed);
                if self.too_large_warnings.allow(std::time::Instant::now()) {
                    let remedy = match self.writer.codec() {
                        ringbuf::Codec::Jpeg => "lower --quality",
                        ringbuf::Codec::H264 => "lower the bitrate",
                    };
                    warn!("frame not published: {e} (raise --max-frame-bytes or {remedy})");
                }
            }
            // Not a refusal of the frame: the ring file could not be kept sound (the log says
            // why, and the published count shows the gap).
            Err(e) => self.note_ring_error(Err(e)),
        }
        false
    }

    fn heartbeat(&mut self) {
        let result = self.writer.heartbeat();
        self.note_ring_error(result);
    }

    fn set_state(&mut self, state: WriterState) {
        let result = self.writer.set_state(state);
        self.note_ring_error(result);
    }

    fn set_video_format(&mut self, format: VideoFormat) {
        self.writer.set_video_format(format);
    }

    fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }
}

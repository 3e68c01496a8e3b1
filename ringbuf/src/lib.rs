//! The shared-memory frame ring: one capture process writes encoded frames (JPEG images or
//! H.264 access units) into a file-backed seqlock ring, and any number of server processes map
//! it read-only and follow it, each with its own cursor. A reader never slows the writer; a
//! reader that falls behind skips ahead (to a keyframe).
//!
//! Besides the ring this crate holds what both ends of it need: camera names, the ring
//! directory convention, JPEG framing with the timing comment, H.264 framing, the demand files,
//! and the service manager's watchdog setting.
//!
//! ```no_run
//! use ringbuf::{CameraId, RingGeometry, RingReader, RingWriter, WallNanos};
//! use std::{path::Path, time::Duration};
//!
//! let dir = Path::new("/dev/shm/ringcast");
//! let camera = CameraId::new("cam1")?;
//! let mut writer = RingWriter::create(dir, &camera, RingGeometry::default())?;
//! let mut reader = RingReader::open(writer.path())?;
//! writer.publish(b"\xff\xd8...\xff\xd9", WallNanos(0))?;
//! let mut frame = Vec::new();
//! let meta = reader.next_timeout(&mut frame, Duration::from_secs(1))?;
//! # Ok::<(), ringbuf::Error>(())
//! ```

mod error;
mod seqlock;
mod sync;
mod types;
mod wakeup;

#[cfg(not(loom))]
pub mod demand;
#[cfg(not(loom))]
mod dir;
#[cfg(not(loom))]
pub mod frame;
#[cfg(not(loom))]
mod futex;
#[cfg(not(loom))]
pub mod h264;
#[cfg(not(loom))]
mod mapped;
#[cfg(not(loom))]
mod mapping;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
pub mod service;
#[cfg(not(loom))]
mod watcher;
#[cfg(not(loom))]
mod writer;

#[cfg(all(loom, test))]
mod loom_model;
#[cfg(all(loom, test))]
mod loom_wakeup;

pub use error::Error;
pub use seqlock::{FrameMeta, ReaderStats};
pub use types::{CameraId, Clock, Codec, FrameKind, FrameNo, MonoNanos, SystemClock, WallNanos};

#[cfg(not(loom))]
pub use dir::{
    check_ring_dir, demand_path, ensure_ring_dir, feed_demand_path, feed_ring_path, ring_path,
    scan_ring_dir, Feed, DEFAULT_RING_DIR, DEMAND_EXTENSION, RING_EXTENSION,
};
#[cfg(not(loom))]
pub use mapped::{RingGeometry, MAX_SLOTS, MAX_SLOT_SIZE, MIN_SLOTS};
#[cfg(not(loom))]
pub use reader::{OfflineReason, RingInfo, RingReader, WriterStatus, RECHECK_EVERY};
#[cfg(not(loom))]
pub use watcher::RingWatcher;
#[cfg(not(loom))]
pub use writer::{
    forget_abandoned_ingest_camera, ingest_may_write, RingWriter, VideoFormat, WriterKind,
    WriterState, INGEST_YIELD_WAIT,
};

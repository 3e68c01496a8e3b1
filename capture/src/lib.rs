//! ringcast-capture: takes frames from one camera source and publishes them, as JPEG or as
//! H.264 access units, into that camera's ring (or pushes JPEG to a remote server's ingest route).
//!
//! The parts: a [`source`] yields frames (one file per kind of camera, behind the
//! [`source::Source`] trait), a supervisor thread keeps it running with backoff, the
//! [`pipeline`] checks each frame (a JPEG is also transformed and stamped with its timing; an
//! H.264 access unit is made decodable from any keyframe, see [`h264`]), and a [`sink`]
//! publishes it. [`run::run`] ties them together for the binary, and [`notify`] tells systemd
//! how it goes.

pub mod backoff;
pub mod cli;
pub mod demand;
pub mod error;
pub mod h264;
pub mod jpeg_copy;
pub mod jpeg_split;
pub mod notify;
pub mod overlay;
pub mod pipeline;
pub mod push;
pub mod run;
pub mod sink;
pub mod source;
pub mod split;
pub mod stats;
pub mod supervisor;
pub mod transform;

pub use cli::Args;
pub use error::{CaptureError, SourceError};

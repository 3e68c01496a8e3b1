//! Small value types that must not be mixed up: frame numbers, camera names, times.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// The number of a published frame. The first frame a ring ever carries is 1; 0 means "none yet".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct FrameNo(pub u64);

impl FrameNo {
    /// "No frame published yet", as stored in a fresh ring's `head`.
    pub const NONE: FrameNo = FrameNo(0);

    /// Above any number a real ring reaches (2^62 frames is 4.9 billion years at 30 fps), and low
    /// enough that a slot's sequence word (twice the number) cannot overflow. A larger `head` is
    /// a scribbled header.
    pub const MAX_VALID: FrameNo = FrameNo(1 << 62);

    pub fn next(self) -> FrameNo {
        FrameNo(self.0.wrapping_add(1))
    }

    /// How many frame numbers lie strictly between `self` and a later `other`.
    pub fn gap_to(self, other: FrameNo) -> u64 {
        other.0.saturating_sub(self.0).saturating_sub(1)
    }
}

impl fmt::Display for FrameNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A camera's name: `[a-z0-9_-]{1,32}`. It names the ring file, URLs and metrics labels, so it is
/// checked once, here, and carried as this type from then on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CameraId(String);

impl CameraId {
    pub const MAX_LEN: usize = 32;

    pub fn new(name: &str) -> Result<CameraId, Error> {
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if name.is_empty() || name.len() > Self::MAX_LEN || !name.chars().all(allowed) {
            return Err(Error::InvalidCameraName(name.to_owned()));
        }
        Ok(CameraId(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CameraId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CameraId::new(s)
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Wall-clock time (CLOCK_REALTIME) in nanoseconds since the Unix epoch: when a frame was captured.
/// Comparable across machines with synchronised clocks, which is what end-to-end latency needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct WallNanos(pub u64);

/// CLOCK_MONOTONIC in nanoseconds: system-wide on one boot, never jumps, so heartbeats written by
/// one process can be aged by another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct MonoNanos(pub u64);

impl MonoNanos {
    /// How long ago `earlier` was, as seen at `self`; zero if `earlier` lies in the future.
    pub fn since(self, earlier: MonoNanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Where time comes from, so that heartbeat and offline rules can be tested without sleeping.
pub trait Clock {
    fn wall(&self) -> WallNanos;
    fn mono(&self) -> MonoNanos;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> WallNanos {
        WallNanos(clock_ns(nix::time::ClockId::CLOCK_REALTIME))
    }
    fn mono(&self) -> MonoNanos {
        MonoNanos(clock_ns(nix::time::ClockId::CLOCK_MONOTONIC))
    }
}

fn clock_ns(clock: nix::time::ClockId) -> u64 {
    // Both clocks always exist on Linux; clock_gettime can only fail for an invalid clock id.
    let ts = nix::time::clock_gettime(clock).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

/// How a ring's frames are encoded; fixed for the life of a ring file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Each frame a complete JPEG.
    Jpeg,
    /// Each frame one H.264 access unit as an Annex B byte stream (start codes before each NAL
    /// unit); keyframes carry their SPS and PPS, so decoding can start at any of them.
    H264,
}

impl Codec {
    /// `jpeg` or `h264`, as in `/api/cameras` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Jpeg => "jpeg",
            Codec::H264 => "h264",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "jpeg" | "mjpeg" => Ok(Codec::Jpeg),
            "h264" => Ok(Codec::H264),
            other => Err(Error::UnknownCodec(other.to_owned())),
        }
    }
}

/// What a frame is to a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// Decodable on its own: every JPEG, an H.264 access unit with an IDR picture.
    Key,
    /// Needs the frames before it, back to the last keyframe: other H.264 access units.
    Delta,
}

impl FrameKind {
    pub fn is_key(self) -> bool {
        self == FrameKind::Key
    }
}

//! What can go wrong, as enums whose messages an operator can act on.

use std::io;

/// Errors that stop capture (bad flags, a ring already taken, a missing device at start).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Ring(#[from] ringbuf::Error),

    #[error("{0}")]
    Source(#[from] SourceError),

    #[error("--push needs a ws:// URL ending in /ingest/<camera>, got {0:?}")]
    BadPushUrl(String),

    #[error("--push sends to camera {pushed} but --camera is {camera}; they must be the same")]
    PushCameraMismatch {
        pushed: ringbuf::CameraId,
        camera: ringbuf::CameraId,
    },

    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },

    #[error("cannot install the signal handler: {0}")]
    Signals(io::Error),

    #[error("the source thread ended unexpectedly")]
    SourceThreadLost,

    #[error("the ring was taken over while this capture ran: {0}")]
    RingLost(String),

    #[error("JPEG library: {0}")]
    Jpeg(#[from] turbojpeg::Error),

    #[error("the JPEG copy of the H.264 stream: {0}")]
    JpegCopy(#[from] crate::h264::transcode::TranscodeError),

    #[error("{flag} works on JPEG frames only; leave it out with --codec h264")]
    JpegOnlyFlag { flag: &'static str },

    #[error("{flag} sets capture's own H.264 encoder, which only --source test --codec h264 uses")]
    EncoderFlagUnused { flag: &'static str },

    #[error(
        "--source {kind} cannot deliver --codec {codec}: H.264 comes from --source test, stdin or rtsp://…"
    )]
    CodecUnavailable {
        kind: &'static str,
        codec: ringbuf::Codec,
    },
}

/// Errors of a running source. The supervisor logs them and retries with backoff, except
/// [`SourceError::Finished`], which ends capture (stdin closed: the producer is done).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{0}")]
    Protocol(String),

    #[error("the input is finished")]
    Finished,

    #[error("camera device {device}: {reason}")]
    Device { device: String, reason: String },

    #[error("JPEG encoding: {0}")]
    Jpeg(#[from] turbojpeg::Error),

    #[error("H.264 encoding: {0}")]
    H264(#[from] openh264::Error),

    #[error("RTSP: {0}")]
    Rtsp(#[from] retina::Error),

    #[error("the RTSP camera offers no H.264 video (it offers {offered}); --codec mjpeg reads other codecs through ffmpeg")]
    NotH264 { offered: String },

    #[error("{url} is not a usable rtsp:// URL: {reason}")]
    BadRtspUrl { url: String, reason: String },

    #[error("the H.264 encoder cannot take {size} pictures: {reason}")]
    UnsupportedSize {
        size: crate::cli::Size,
        reason: &'static str,
    },
}

impl SourceError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> SourceError {
        let what = what.into();
        move |source| SourceError::Io { what, source }
    }
}

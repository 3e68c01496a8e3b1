//! Cutting a byte stream into frames, whatever the codec: [`crate::jpeg_split`] for JPEG,
//! [`crate::h264::split`] for H.264 access units. The byte-stream sources (stdin, HTTP, ffmpeg)
//! feed what they read into one of these.

use ringbuf::Codec;

/// What a splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    Frame(Vec<u8>),
    /// A frame that broke off (cut short, interrupted by the next one, or grown past the size
    /// limit); its bytes, for the caller to count and drop.
    Broken(Vec<u8>),
}

pub trait Splitter: Send {
    /// Adds bytes read from the stream.
    fn push(&mut self, data: &[u8]);

    /// The next complete (or broken) frame in what was pushed so far.
    fn next_frame(&mut self) -> Option<Split>;

    /// What is left once the stream has ended. A JPEG ends with its own marker, so nothing is;
    /// an H.264 access unit ends only where the next one begins, so the last one comes out here.
    fn finish(&mut self) -> Option<Split> {
        None
    }
}

/// The splitter for frames of `codec` of at most about `max_frame_bytes` (`--max-frame-bytes`).
pub fn for_codec(codec: Codec, max_frame_bytes: usize) -> Box<dyn Splitter> {
    match codec {
        Codec::Jpeg => Box::new(crate::jpeg_split::JpegSplitter::new(max_frame_bytes)),
        Codec::H264 => Box::new(crate::h264::split::AccessUnitSplitter::new(max_frame_bytes)),
    }
}

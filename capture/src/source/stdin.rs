//! `--source stdin`: concatenated JPEGs (`ffmpeg … -f mjpeg -`) or a multipart MJPEG stream on
//! standard input, or with `--codec h264` an H.264 Annex B stream (`ffmpeg … -f h264 -`), passed
//! through unchanged. When the producer closes the pipe, capture ends.

use std::io::Stdin;
use std::os::fd::{AsFd, BorrowedFd};

use ringbuf::Codec;

use super::byte_stream::ByteStream;
use super::{FrameStream, Pulled, Source, SourceOptions};
use crate::split;
use crate::SourceError;

pub struct StdinSource {
    codec: Codec,
    max_frame_bytes: usize,
    /// `--fps`: an H.264 stream's rate as the operator states it, where the stream may not.
    fps: Option<u32>,
}

impl StdinSource {
    pub fn new(options: &SourceOptions) -> StdinSource {
        StdinSource {
            codec: options.codec,
            max_frame_bytes: options.max_frame_bytes,
            fps: options.fps,
        }
    }
}

impl Source for StdinSource {
    fn describe(&self) -> String {
        match self.codec {
            Codec::Jpeg => "standard input".into(),
            Codec::H264 => "H.264 on standard input".into(),
        }
    }

    fn nominal_fps(&self) -> Option<u32> {
        match self.codec {
            Codec::Jpeg => None,
            Codec::H264 => self.fps,
        }
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        // Reopening after an idle period continues the same pipe: frames the producer wrote
        // meanwhile are read then (and the newest published).
        Ok(Box::new(StdinStream {
            inner: ByteStream::new(
                StdinReader(std::io::stdin()),
                split::for_codec(self.codec, self.max_frame_bytes),
                None,
                Box::new(|| SourceError::Finished),
            ),
        }))
    }
}

struct StdinStream {
    inner: ByteStream<StdinReader>,
}

impl FrameStream for StdinStream {
    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        self.inner.next_frame()
    }
}

/// Stdin, read without its internal buffer so that poll on fd 0 tells the whole truth.
struct StdinReader(Stdin);

impl std::io::Read for StdinReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        nix::unistd::read(self.0.as_fd(), buf).map_err(std::io::Error::from)
    }
}

impl AsFd for StdinReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

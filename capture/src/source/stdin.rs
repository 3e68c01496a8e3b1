//! `--source stdin`: concatenated JPEGs (`ffmpeg … -f mjpeg -`) or a multipart MJPEG stream on
//! standard input, passed through unchanged. When the producer closes the pipe, capture ends.

use std::io::Stdin;
use std::os::fd::{AsFd, BorrowedFd};

use super::byte_stream::ByteStream;
use super::{FrameStream, Pulled, Source};
use crate::SourceError;

pub struct StdinSource {
    max_frame_bytes: usize,
}

impl StdinSource {
    pub fn new(max_frame_bytes: usize) -> StdinSource {
        StdinSource { max_frame_bytes }
    }
}

impl Source for StdinSource {
    fn describe(&self) -> String {
        "standard input".into()
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        // Reopening after an idle period continues the same pipe: frames the producer wrote
        // meanwhile are read then (and the newest published).
        Ok(Box::new(StdinStream {
            inner: ByteStream::new(
                StdinReader(std::io::stdin()),
                self.max_frame_bytes,
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

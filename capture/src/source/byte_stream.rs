//! A frame stream over any readable file descriptor (stdin, a socket, a child's stdout): waits
//! with poll so it can return to the supervisor, cuts the bytes into frames (JPEGs or H.264
//! access units), and notices a source that has gone silent.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{now_wall, Captured, Pulled, POLL};
use crate::split::{Split, Splitter};
use crate::SourceError;

const READ_CHUNK: usize = 256 << 10;

/// What the end of the bytes means for this source.
pub type OnEnd = Box<dyn FnMut() -> SourceError + Send>;

pub struct ByteStream<R> {
    reader: R,
    splitter: Box<dyn Splitter>,
    chunk: Vec<u8>,
    last_frame: Instant,
    silent_limit: Option<Duration>,
    decoder: Option<super::http::ChunkedDecoder>,
    decoded: Vec<u8>,
    on_end: OnEnd,
}

impl<R: Read + AsFd + Send> ByteStream<R> {
    pub fn new(
        reader: R,
        splitter: Box<dyn Splitter>,
        silent_limit: Option<Duration>,
        on_end: OnEnd,
    ) -> ByteStream<R> {
        ByteStream {
            reader,
            splitter,
            chunk: vec![0; READ_CHUNK],
            last_frame: Instant::now(),
            silent_limit,
            decoder: None,
            decoded: Vec::new(),
            on_end,
        }
    }

    /// Bytes already read past the HTTP headers, and whether the body is chunked.
    pub fn with_body_start(
        mut self,
        start: &[u8],
        chunked: bool,
    ) -> Result<ByteStream<R>, SourceError> {
        if chunked {
            self.decoder = Some(super::http::ChunkedDecoder::default());
        }
        self.feed(start)?;
        Ok(self)
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), SourceError> {
        match &mut self.decoder {
            Some(decoder) => {
                self.decoded.clear();
                decoder.feed(data, &mut self.decoded)?;
                self.splitter.push(&self.decoded);
            }
            None => self.splitter.push(data),
        }
        Ok(())
    }

    /// The next frame or broken piece. Returns `Ok(None)` once about [`POLL`] has passed
    /// without one, however many bytes arrived meanwhile, so the supervisor can pause or stop.
    pub fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        let began = Instant::now();
        loop {
            if let Some(split) = self.splitter.next_frame() {
                return Ok(Some(self.pulled(split)));
            }
            self.check_silence()?;
            let left = POLL.saturating_sub(began.elapsed());
            if left.is_zero() || !self.wait_readable(left)? {
                return Ok(None);
            }
            let n = match self.reader.read(&mut self.chunk) {
                Ok(0) => return self.finish().map(Some),
                Ok(n) => n,
                Err(e) if is_retry(&e) => continue,
                Err(e) => return Err(SourceError::io("reading the stream")(e)),
            };
            let chunk = std::mem::take(&mut self.chunk);
            let fed = self.feed(&chunk[..n]);
            self.chunk = chunk;
            fed?;
        }
    }

    /// What to hand the supervisor for `split`; a whole frame also restarts the silence timer.
    fn pulled(&mut self, split: Split) -> Pulled {
        match split {
            Split::Frame(data) => {
                self.last_frame = Instant::now();
                Pulled::Frame(Captured {
                    data,
                    capture: now_wall(),
                })
            }
            Split::Broken(data) => Pulled::Broken { bytes: data.len() },
        }
    }

    /// The end of the bytes: the frame it completes, if any, then what the end means.
    fn finish(&mut self) -> Result<Pulled, SourceError> {
        match self.splitter.finish() {
            Some(split) => Ok(self.pulled(split)),
            None => Err((self.on_end)()),
        }
    }

    /// Bytes that never make a frame (garbage, another codec) count as silence: the camera is
    /// reconnected as if it sent nothing.
    fn check_silence(&self) -> Result<(), SourceError> {
        match self.silent_limit {
            Some(limit) if self.last_frame.elapsed() > limit => Err(SourceError::Protocol(
                format!("no frame for {} s", limit.as_secs()),
            )),
            _ => Ok(()),
        }
    }

    fn wait_readable(&self, wait: Duration) -> Result<bool, SourceError> {
        let fd = self.reader.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        // Rounded up, so a wait of under a millisecond still waits rather than spins.
        let millis = i32::try_from(wait.as_millis() + 1).unwrap_or(i32::MAX);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(SourceError::io(format!(
                "waiting for data on fd {}",
                self.reader.as_fd().as_raw_fd()
            ))(e.into())),
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

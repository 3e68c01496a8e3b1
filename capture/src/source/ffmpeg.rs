//! `--source rtsp://…` / `rtmp://…`: most IP cameras speak RTSP with H.264. An `ffmpeg` child
//! process (never linked, so codecs and protocol quirks stay ffmpeg's business) transcodes to
//! MJPEG on its stdout at the requested size, fps and quality. Its stderr goes to the log; when
//! it exits the supervisor restarts it with backoff; it is killed with the stream and, through
//! PR_SET_PDEATHSIG, if capture itself dies.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use ringbuf::Codec;
use tracing::{debug, info, warn};

use super::byte_stream::ByteStream;
use super::{FrameStream, Pulled, Source, SourceOptions};
use crate::cli::{redact, redact_in};
use crate::split;
use crate::SourceError;

/// ffmpeg that delivers nothing for this long (stuck connecting, camera frozen) is restarted.
const SILENT_LIMIT: Duration = Duration::from_secs(15);
/// The network timeout handed to ffmpeg, in microseconds.
const NETWORK_TIMEOUT_US: &str = "10000000";

pub struct FfmpegSource {
    url: String,
    options: SourceOptions,
    program: String,
}

impl FfmpegSource {
    pub fn new(url: String, options: SourceOptions) -> FfmpegSource {
        FfmpegSource {
            url,
            options,
            program: std::env::var("RINGCAST_FFMPEG").unwrap_or_else(|_| "ffmpeg".into()),
        }
    }
}

/// ffmpeg's mjpeg `-q:v` (2 best … 31 worst) for a JPEG quality of 1 to 100.
pub fn qscale_for_quality(quality: u8) -> u32 {
    let quality = u32::from(quality.clamp(1, 100));
    2 + (100 - quality) * 29 / 99
}

/// The ffmpeg command line (without the program name) for `url`.
pub fn ffmpeg_args(url: &str, options: &SourceOptions) -> Vec<String> {
    let mut args: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "warning"]
        .map(String::from)
        .to_vec();
    if url.to_ascii_lowercase().starts_with("rtsp://") {
        args.extend(["-rtsp_transport", "tcp", "-timeout", NETWORK_TIMEOUT_US].map(String::from));
    } else {
        args.extend(["-rw_timeout", NETWORK_TIMEOUT_US].map(String::from));
    }
    args.extend(["-i".to_owned(), url.to_owned(), "-an".to_owned()]);
    if let Some(size) = options.size {
        args.extend([
            "-vf".into(),
            format!("scale={}:{}", size.width, size.height),
        ]);
    }
    if let Some(fps) = options.fps {
        args.extend(["-r".into(), fps.to_string()]);
    }
    let qscale = qscale_for_quality(options.quality).to_string();
    args.extend(
        [
            "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", &qscale, "-f", "mjpeg", "-",
        ]
        .map(String::from),
    );
    args
}

impl Source for FfmpegSource {
    fn describe(&self) -> String {
        format!("ffmpeg reading {}", redact(&self.url))
    }

    fn nominal_fps(&self) -> Option<u32> {
        // ffmpeg is told `-r` only when --fps is given; otherwise the camera decides.
        self.options.fps
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        let mut command = Command::new(&self.program);
        command
            .args(ffmpeg_args(&self.url, &self.options))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: getpid has no preconditions and cannot fail.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child between fork and exec, where only
        // async-signal-safe calls are allowed and nothing may allocate (another thread of the
        // parent may have held the allocator's lock at fork). It calls only prctl, getppid and
        // errno reads, and builds its errors from raw OS codes, which do not allocate; it reads
        // `parent`, a plain integer copied into the closure.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                // Compared with the pid we started from, not with 1, because an orphan goes to
                // the nearest subreaper (systemd --user, a container's init).
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            SourceError::io(format!("starting {} (is ffmpeg installed?)", self.program))(e)
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SourceError::Protocol("ffmpeg started without pipes".into()));
        };
        info!(
            "started ffmpeg (pid {}) for {}",
            child.id(),
            redact(&self.url)
        );
        forward_log(stderr, child.id(), self.url.clone());
        let pid = child.id();
        let stream = ByteStream::new(
            stdout,
            split::for_codec(Codec::Jpeg, self.options.max_frame_bytes),
            Some(SILENT_LIMIT),
            Box::new(move || SourceError::Protocol(format!("ffmpeg (pid {pid}) exited"))),
        );
        Ok(Box::new(FfmpegStream {
            inner: stream,
            child,
        }))
    }
}

/// ffmpeg's messages, line by line, into our log, without the credentials of `url` (ffmpeg names
/// the URL in its errors). The thread ends when ffmpeg exits.
fn forward_log(stderr: std::process::ChildStderr, pid: u32, url: String) {
    let spawned = std::thread::Builder::new()
        .name("ffmpeg-log".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = redact_in(line.trim(), &url);
                if line.is_empty() {
                    continue;
                }
                // ffmpeg 5 says this for every MJPEG encode from a scaler; it is not a fault.
                if line.contains("deprecated pixel format used") {
                    debug!("ffmpeg[{pid}]: {line}");
                } else {
                    warn!("ffmpeg[{pid}]: {line}");
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot forward ffmpeg's messages: {e}");
    }
}

struct FfmpegStream {
    inner: ByteStream<ChildStdout>,
    child: Child,
}

impl FrameStream for FfmpegStream {
    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        self.inner
            .next_frame()
            .map_err(|e| match self.exit_status() {
                Some(status) => SourceError::Protocol(format!("ffmpeg exited ({status})")),
                None => SourceError::Protocol(format!("{e}; restarting ffmpeg")),
            })
    }
}

impl FfmpegStream {
    /// ffmpeg's exit status if it has exited or does so within a moment (its output just
    /// ended, so it usually is on its way out).
    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for FfmpegStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Size;
    use ringbuf::CameraId;

    #[test]
    fn ffmpeg_is_asked_for_mjpeg_at_the_requested_size_fps_and_quality() {
        let options = SourceOptions {
            camera: CameraId::new("cam1").unwrap(),
            size: Some(Size {
                width: 640,
                height: 360,
            }),
            fps: Some(15),
            quality: 80,
            max_frame_bytes: 2 << 20,
            codec: ringbuf::Codec::Jpeg,
            encoder: crate::h264::encoder::EncoderSettings::from_flags(None, None),
        };
        let args = ffmpeg_args("rtsp://cam/stream", &options).join(" ");
        assert!(args.contains("-rtsp_transport tcp"), "{args}");
        assert!(args.contains("-i rtsp://cam/stream"), "{args}");
        assert!(args.contains("-vf scale=640:360 -r 15"), "{args}");
        assert!(args.ends_with("-f mjpeg -"), "{args}");
        assert_eq!(qscale_for_quality(100), 2);
        assert_eq!(qscale_for_quality(1), 31);
    }
}

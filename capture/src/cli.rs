//! The command line (DESIGN.md, "Binaries and their flags"); every flag can also come from a
//! `RINGCAST_<FLAG>` environment variable, for systemd EnvironmentFiles.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use ringbuf::{CameraId, Codec};

use crate::CaptureError;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringcast-capture",
    version,
    about = "Capture one camera (test pattern, V4L2, HTTP MJPEG, stdin, RTSP/RTMP) into its ring"
)]
pub struct Args {
    /// Camera name: 1 to 32 of a-z, 0-9, '_' or '-'. Names the ring file and the URLs.
    #[arg(long, env = "RINGCAST_CAMERA", value_parser = parse_camera, required_unless_present = "list_devices")]
    pub camera: Option<CameraId>,

    /// test | v4l2:/dev/videoN | http://… | stdin | rtsp://… | rtmp://…
    #[arg(long, env = "RINGCAST_SOURCE", default_value = "test")]
    pub source: SourceSpec,

    /// Picture size WIDTHxHEIGHT (test pattern default 1280x720; cameras: asked of the device).
    #[arg(long, env = "RINGCAST_SIZE")]
    pub size: Option<Size>,

    /// Frames per second (test pattern default 30; cameras: asked of the device).
    #[arg(long, env = "RINGCAST_FPS", value_parser = clap::value_parser!(u32).range(1..=240))]
    pub fps: Option<u32>,

    /// What goes into the ring: mjpeg (JPEG frames) or h264 (H.264 access units, from --source
    /// test, encoded here, or passed through from --source stdin, an Annex B stream, or from an
    /// rtsp:// camera's H.264).
    #[arg(long, env = "RINGCAST_CODEC", default_value = "mjpeg")]
    pub codec: Codec,

    /// Bitrate of the H.264 test pattern in kbit/s [default: 2000].
    #[arg(long, env = "RINGCAST_BITRATE", value_parser = clap::value_parser!(u32).range(50..=100_000))]
    pub bitrate: Option<u32>,

    /// Frames from one keyframe to the next in the H.264 test pattern [default: 30].
    #[arg(long, env = "RINGCAST_GOP", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub gop: Option<u32>,

    /// JPEG quality for frames this process encodes, 1 to 100.
    #[arg(long, env = "RINGCAST_QUALITY", default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,

    /// Draw the camera name and the wall-clock time onto every frame.
    #[arg(long, env = "RINGCAST_TIMESTAMP", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub timestamp: bool,

    /// Rotate every frame clockwise by 90, 180 or 270 degrees.
    #[arg(long, env = "RINGCAST_ROTATE")]
    pub rotate: Option<Rotation>,

    /// Mirror every frame: h (left-right) or v (top-bottom).
    #[arg(long, env = "RINGCAST_FLIP")]
    pub flip: Option<Flip>,

    /// Skip a frame identical to the previous one, up to N in a row (0: publish every frame).
    #[arg(long, env = "RINGCAST_DROP_SAME_FRAMES", default_value_t = 0)]
    pub drop_same_frames: u32,

    /// Directory of the ring files.
    #[arg(long, env = "RINGCAST_RING_DIR", default_value = ringbuf::DEFAULT_RING_DIR)]
    pub ring_dir: PathBuf,

    /// Ring slots (frames kept).
    #[arg(long, env = "RINGCAST_SLOTS", default_value_t = 8)]
    pub slots: u32,

    /// Largest frame in bytes; larger frames are refused and counted.
    #[arg(long, env = "RINGCAST_MAX_FRAME_BYTES", default_value_t = 2 << 20)]
    pub max_frame_bytes: usize,

    /// Send frames to a ringcast server's ingest route (ws://host:port/ingest/NAME) instead of a
    /// local ring.
    #[arg(long, env = "RINGCAST_PUSH")]
    pub push: Option<String>,

    /// The server's ingest token (sent as `Authorization: Bearer`). Prefer the environment
    /// variable: a command line is visible to every user in `ps`.
    #[arg(
        long,
        env = "RINGCAST_PUSH_TOKEN",
        hide_env_values = true,
        requires = "push"
    )]
    pub push_token: Option<String>,

    /// Capture only while someone watches (local: the demand file; with --push: the server's
    /// 1/0 messages).
    #[arg(long, env = "RINGCAST_ON_DEMAND", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub on_demand: bool,

    /// Seconds without a viewer before an on-demand capture idles.
    #[arg(long, env = "RINGCAST_IDLE_AFTER", default_value = "10", value_parser = parse_seconds)]
    pub idle_after: Seconds,

    /// Print the V4L2 devices with their formats, sizes and frame rates, and exit.
    #[arg(long, env = "RINGCAST_LIST_DEVICES", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub list_devices: bool,
}

impl Args {
    /// Refuses, before anything starts, flags that cannot go with `--codec` or its source.
    pub fn check_codec_flags(&self) -> Result<(), CaptureError> {
        if !self.source.can_deliver(self.codec) {
            return Err(CaptureError::CodecUnavailable {
                kind: self.source.kind(),
                codec: self.codec,
            });
        }
        if self.codec == Codec::H264 {
            let jpeg_only = [
                ("--timestamp", self.timestamp),
                ("--rotate", self.rotate.is_some()),
                ("--flip", self.flip.is_some()),
                ("--drop-same-frames", self.drop_same_frames > 0),
                ("--push", self.push.is_some()),
            ];
            if let Some(&(flag, _)) = jpeg_only.iter().find(|(_, given)| *given) {
                return Err(CaptureError::JpegOnlyFlag { flag });
            }
        }
        if !self.encodes_h264() {
            let encoder_flags = [("--bitrate", self.bitrate), ("--gop", self.gop)];
            if let Some(&(flag, _)) = encoder_flags.iter().find(|(_, value)| value.is_some()) {
                return Err(CaptureError::EncoderFlagUnused { flag });
            }
        }
        Ok(())
    }

    /// Whether capture encodes H.264 itself (the test pattern), where `--bitrate` and `--gop`
    /// apply.
    fn encodes_h264(&self) -> bool {
        self.codec == Codec::H264 && self.source == SourceSpec::TestPattern
    }
}

fn parse_camera(s: &str) -> Result<CameraId, String> {
    CameraId::new(s).map_err(|e| e.to_string())
}

/// A duration given in (possibly fractional) seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

fn parse_seconds(s: &str) -> Result<Seconds, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 86_400.0)
        .map(|v| Seconds(Duration::from_secs_f64(v)))
        .ok_or_else(|| format!("{s:?} is not a number of seconds between 0 and 86400"))
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    TestPattern,
    V4l2(PathBuf),
    Http(String),
    Stdin,
    /// rtsp:// or rtmp://, read through an ffmpeg child (or, rtsp:// with `--codec h264`, through
    /// retina).
    Ffmpeg(String),
}

impl SourceSpec {
    /// Sources that pass the camera's frames on as they come, so `--size` and `--fps` do
    /// not apply to them.
    pub fn passes_frames_through(&self) -> bool {
        matches!(self, SourceSpec::Http(_) | SourceSpec::Stdin)
    }

    /// Whether this source can produce frames of `codec`.
    pub fn can_deliver(&self, codec: Codec) -> bool {
        match codec {
            Codec::Jpeg => true,
            Codec::H264 => {
                matches!(self, SourceSpec::TestPattern | SourceSpec::Stdin) || self.is_rtsp()
            }
        }
    }

    /// Whether this is an rtsp:// camera.
    pub fn is_rtsp(&self) -> bool {
        matches!(self, SourceSpec::Ffmpeg(url) if has_scheme(url, "rtsp://"))
    }

    /// The kind of source, as the `--source` value begins (for messages: URLs may hold
    /// credentials).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::TestPattern => "test",
            SourceSpec::V4l2(_) => "v4l2",
            SourceSpec::Http(_) => "http",
            SourceSpec::Stdin => "stdin",
            SourceSpec::Ffmpeg(_) if self.is_rtsp() => "rtsp",
            SourceSpec::Ffmpeg(_) => "rtmp",
        }
    }
}

/// Whether `url` begins with `scheme` (given in lower case), in any case.
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "test" {
            return Ok(SourceSpec::TestPattern);
        }
        if s == "stdin" || s == "-" {
            return Ok(SourceSpec::Stdin);
        }
        if let Some(device) = s.strip_prefix("v4l2:") {
            if device.is_empty() {
                return Err("v4l2: needs a device path, e.g. v4l2:/dev/video0".into());
            }
            return Ok(SourceSpec::V4l2(PathBuf::from(device)));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") {
            return Ok(SourceSpec::Http(s.to_owned()));
        }
        if lower.starts_with("rtsp://") || lower.starts_with("rtmp://") {
            return Ok(SourceSpec::Ffmpeg(s.to_owned()));
        }
        if lower.starts_with("https://") {
            return Err(format!(
                "{s:?}: https cameras are not supported; use http:// or an rtsp:// URL"
            ));
        }
        Err(format!(
            "unknown source {s:?}: use test, v4l2:/dev/videoN, http://…, stdin, rtsp://… or rtmp://…"
        ))
    }
}

/// A URL with any `user:password@` replaced, for logs.
pub fn redact(url: &str) -> String {
    match credentials(url) {
        Some(secret) => url.replacen(secret, "***@", 1),
        None => url.to_owned(),
    }
}

/// `line` (another program's message about `url`) with `url`'s `user:password@` replaced.
pub fn redact_in(line: &str, url: &str) -> String {
    match credentials(url) {
        Some(secret) => line.replace(secret, "***@"),
        None => line.to_owned(),
    }
}

/// The `user:password@` of `url`, if it has one.
fn credentials(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(&rest[..=at])
}

/// A picture size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const MIN: u32 = 16;
    pub const MAX: u32 = 8192;
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a size: use WIDTHxHEIGHT, e.g. 1280x720");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        let range = Size::MIN..=Size::MAX;
        if !range.contains(&width) || !range.contains(&height) {
            return Err(format!(
                "size {width}x{height} is out of range: each side from {} to {} pixels",
                Size::MIN,
                Size::MAX
            ));
        }
        Ok(Size { width, height })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    R90,
    R180,
    R270,
}

impl FromStr for Rotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "90" => Ok(Rotation::R90),
            "180" => Ok(Rotation::R180),
            "270" => Ok(Rotation::R270),
            _ => Err(format!("rotation {s:?}: use 90, 180 or 270")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Horizontal,
    Vertical,
}

impl FromStr for Flip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h" => Ok(Flip::Horizontal),
            "v" => Ok(Flip::Vertical),
            _ => Err(format!("flip {s:?}: use h or v")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_recognised_by_scheme() {
        assert_eq!("test".parse(), Ok(SourceSpec::TestPattern));
        assert_eq!("stdin".parse(), Ok(SourceSpec::Stdin));
        assert_eq!(
            "v4l2:/dev/video2".parse(),
            Ok(SourceSpec::V4l2("/dev/video2".into()))
        );
        assert!(matches!(
            "http://cam/video".parse::<SourceSpec>(),
            Ok(SourceSpec::Http(_))
        ));
        assert!(matches!(
            "rtsp://cam/1".parse::<SourceSpec>(),
            Ok(SourceSpec::Ffmpeg(_))
        ));
        assert!(matches!(
            "rtmp://cam/1".parse::<SourceSpec>(),
            Ok(SourceSpec::Ffmpeg(_))
        ));
        assert!("ftp://cam".parse::<SourceSpec>().is_err());
        assert!("v4l2:".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!(
            "1280x720".parse(),
            Ok(Size {
                width: 1280,
                height: 720
            })
        );
        for bad in ["1280", "x720", "axb", "0x0", "99999x10", "-1x5"] {
            assert!(bad.parse::<Size>().is_err(), "{bad} accepted");
        }
    }

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["ringcast-capture", "--camera", "cam1"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).unwrap()
    }

    #[test]
    fn h264_comes_from_the_test_pattern_stdin_or_rtsp() {
        for source in ["test", "stdin", "rtsp://u:secret@cam/1", "RTSP://cam/1"] {
            assert!(parse(&["--codec", "h264", "--source", source])
                .check_codec_flags()
                .is_ok());
        }
        let refused = parse(&["--codec", "h264", "--source", "rtmp://u:secret@cam/1"])
            .check_codec_flags()
            .unwrap_err()
            .to_string();
        assert!(refused.starts_with("--source rtmp cannot deliver --codec h264"));
        assert!(!refused.contains("secret"));
        assert_eq!(parse(&[]).codec, Codec::Jpeg);
    }

    #[test]
    fn jpeg_only_flags_are_refused_with_h264_by_name() {
        for (flag, value) in [
            ("--timestamp", None),
            ("--rotate", Some("90")),
            ("--flip", Some("h")),
            ("--drop-same-frames", Some("3")),
            ("--push", Some("ws://server/ingest/cam1")),
        ] {
            let mut args = vec!["--codec", "h264", flag];
            args.extend(value);
            let refused = parse(&args).check_codec_flags().unwrap_err().to_string();
            assert!(
                refused.starts_with(&format!("{flag} works on JPEG")),
                "{refused}"
            );
        }
    }

    #[test]
    fn encoder_flags_need_our_encoder() {
        assert!(
            parse(&["--codec", "h264", "--bitrate", "500", "--gop", "10"])
                .check_codec_flags()
                .is_ok()
        );
        for args in [
            &["--bitrate", "500"][..],
            &["--codec", "h264", "--source", "stdin", "--gop", "10"],
        ] {
            let refused = parse(args).check_codec_flags().unwrap_err().to_string();
            assert!(refused.contains("capture's own H.264 encoder"), "{refused}");
        }
        assert!(Args::try_parse_from(["ringcast-capture", "--gop", "0"]).is_err());
    }

    #[test]
    fn credentials_are_hidden_in_logged_urls() {
        assert_eq!(
            redact("rtsp://admin:secret@10.0.0.5:554/stream"),
            "rtsp://***@10.0.0.5:554/stream"
        );
        assert_eq!(redact("http://cam/a@b"), "http://cam/a@b");
        assert_eq!(
            redact_in(
                "rtsp://admin:secret@10.0.0.5:554/stream: Connection refused",
                "rtsp://admin:secret@10.0.0.5:554/stream"
            ),
            "rtsp://***@10.0.0.5:554/stream: Connection refused"
        );
    }

    #[test]
    fn every_flag_is_parsed_from_the_command_line() {
        let args = Args::try_parse_from([
            "ringcast-capture",
            "--camera",
            "cam1",
            "--source",
            "test",
            "--size",
            "640x360",
            "--fps",
            "10",
            "--rotate",
            "90",
            "--flip",
            "h",
            "--idle-after",
            "2.5",
        ])
        .unwrap();
        assert_eq!(args.camera.unwrap().as_str(), "cam1");
        assert_eq!(args.fps, Some(10));
        assert_eq!(args.rotate, Some(Rotation::R90));
        assert_eq!(args.idle_after, Seconds(Duration::from_millis(2500)));
        assert!(Args::try_parse_from(["ringcast-capture", "--camera", "Cam 1"]).is_err());
        assert!(Args::try_parse_from(["ringcast-capture", "--list-devices"]).is_ok());
    }
}

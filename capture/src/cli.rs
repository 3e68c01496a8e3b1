//! The command line (DESIGN.md, "Binaries and their flags"); every flag can also come from a
//! `RINGCAST_<FLAG>` environment variable, for systemd EnvironmentFiles.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use ringbuf::CameraId;

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
    /// rtsp:// or rtmp://, read through an ffmpeg child.
    Ffmpeg(String),
}

impl SourceSpec {
    /// Sources that pass the camera's frames on as they come, so `--size` and `--fps` do
    /// not apply to them.
    pub fn passes_frames_through(&self) -> bool {
        matches!(self, SourceSpec::Http(_) | SourceSpec::Stdin)
    }
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

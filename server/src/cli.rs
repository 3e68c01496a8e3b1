//! Command-line flags (each also read from `RINGCAST_<FLAG>`) and the settings a worker runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Kernel send buffer asked for per viewer socket. Linux doubles the value it is given, so this
/// holds about five 100 KB frames of 720p: enough to keep a fast viewer busy, too little to hide
/// seconds of video from a slow one.
pub const DEFAULT_SNDBUF: usize = 256 * 1024;

/// Unsent bytes a viewer socket may hold before the kernel refuses more (TCP_NOTSENT_LOWAT).
pub const DEFAULT_NOTSENT_LOWAT: u32 = 16 * 1024;

/// Largest JPEG an ingest camera may send (one ring slot).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 2 << 20;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringcast-server",
    version,
    about = "Serves the cameras' rings to browsers over WebSocket and MJPEG"
)]
pub struct Args {
    /// Address to listen on (shared by all workers through SO_REUSEPORT).
    #[arg(long, env = "RINGCAST_LISTEN", default_value = "0.0.0.0:7474")]
    pub listen: SocketAddr,

    /// Worker processes to start on the listening port; 1 runs the server in this process.
    #[arg(long, env = "RINGCAST_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// Directory of the cameras' ring files.
    #[arg(long, env = "RINGCAST_RING_DIR", default_value = ringbuf::DEFAULT_RING_DIR)]
    pub ring_dir: PathBuf,

    /// Seconds a viewer's socket may refuse a frame before it is closed (4008 "too slow").
    #[arg(long, env = "RINGCAST_STALL_TIMEOUT", default_value = "5", value_parser = parse_seconds)]
    pub stall_timeout: Duration,

    /// SO_SNDBUF asked for on each viewer socket, in bytes (the kernel doubles it).
    #[arg(long, env = "RINGCAST_SNDBUF", default_value_t = DEFAULT_SNDBUF,
          value_parser = parse_sndbuf)]
    pub sndbuf: usize,

    /// TCP_NOTSENT_LOWAT on each viewer socket, in bytes: the kernel takes no more frame data
    /// while this much is still unsent, so a slow viewer's backlog stays small and it gets the
    /// newest frame next; 0 leaves the kernel default.
    #[arg(long, env = "RINGCAST_NOTSENT_LOWAT", default_value_t = DEFAULT_NOTSENT_LOWAT)]
    pub notsent_lowat: u32,

    /// Token viewers must present (`?token=T` or `Authorization: Bearer T`); none: open.
    #[arg(long, env = "RINGCAST_TOKEN")]
    pub token: Option<String>,

    /// Token remote cameras must present on the ingest routes (`?token=T` or `Authorization:
    /// Bearer T`). Without it, ingest is refused unless --allow-open-ingest is given.
    #[arg(long, env = "RINGCAST_INGEST_TOKEN")]
    pub ingest_token: Option<String>,

    /// Accept remote cameras on the ingest routes without a token (anyone who reaches the port
    /// can then publish a camera). For trusted networks and the older server's camera scripts.
    #[arg(long, env = "RINGCAST_ALLOW_OPEN_INGEST")]
    pub allow_open_ingest: bool,

    /// Cameras ingest may create: names or globs (`*`, `?`), separated by commas. Default: any
    /// name; a camera a capture on this host writes is never taken over, whatever this says.
    #[arg(long, env = "RINGCAST_INGEST_CAMERAS", value_parser = parse_camera_patterns)]
    pub ingest_cameras: Option<CameraPatterns>,

    /// Most cameras ingest may have at once (their rings and demand files take memory).
    #[arg(long, env = "RINGCAST_MAX_INGEST_CAMERAS", default_value_t = 16)]
    pub max_ingest_cameras: usize,

    /// Seconds after its writer went away that an ingest camera's files are removed.
    #[arg(long, env = "RINGCAST_FORGET_AFTER", default_value = "600", value_parser = parse_seconds)]
    pub forget_after: Duration,

    /// Seconds an ingest camera may send no frame (while it was asked to send) before it is
    /// dropped.
    #[arg(long, env = "RINGCAST_INGEST_IDLE_TIMEOUT", default_value = "15",
          value_parser = parse_seconds)]
    pub ingest_idle_timeout: Duration,

    /// Origins whose pages may open WebSockets here (`https://cams.example.com`, comma
    /// separated). Default: only pages served by this server (the request's own host). Clients
    /// that are not browsers send no Origin and are not affected.
    #[arg(long, env = "RINGCAST_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Most connections one address may hold per worker (0: no limit); more are refused with 503.
    #[arg(long, env = "RINGCAST_MAX_CLIENTS_PER_IP", default_value_t = 0)]
    pub max_clients_per_ip: usize,

    /// Most streaming connections per worker (WebSocket and MJPEG viewers, ingest cameras);
    /// more get 503.
    #[arg(long, env = "RINGCAST_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Largest frame an ingest camera may send, in bytes. Rings it creates have slots of this
    /// plus room for the timing segment, so a frame of exactly this size fits.
    #[arg(long, env = "RINGCAST_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Seconds without a writer heartbeat before a camera counts as offline.
    #[arg(long, env = "RINGCAST_OFFLINE_AFTER", default_value = "3", value_parser = parse_seconds)]
    pub offline_after: Duration,

    /// Event loop: `auto` (io_uring where the kernel has it, else epoll), or `epoll` to force
    /// the fallback.
    #[arg(long, env = "RINGCAST_IO_DRIVER", value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,

    /// Seconds between WebSocket keepalive pings; a viewer that has not answered one by the
    /// next is dropped.
    #[arg(long, env = "RINGCAST_PING_INTERVAL", default_value = "30", value_parser = parse_seconds)]
    pub ping_interval: Duration,

    /// This worker's number, for metrics labels (set by the supervisor, or per systemd instance).
    #[arg(long, env = "RINGCAST_WORKER_INDEX", hide = true)]
    pub worker_index: Option<u32>,
}

/// Which monoio driver a worker runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDriver {
    Auto,
    Epoll,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "{text} s is out of range: use more than 0 and at most 86400"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_sndbuf(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "{bytes} bytes is out of range: use 4096 to 1073741824"
        ));
    }
    Ok(bytes)
}

/// Camera names or globs, as `--ingest-cameras` gives them.
#[derive(Debug, Clone)]
pub struct CameraPatterns {
    text: String,
    patterns: Vec<glob::Pattern>,
}

impl CameraPatterns {
    pub fn allows(&self, camera: &ringbuf::CameraId) -> bool {
        self.patterns
            .iter()
            .any(|pattern| pattern.matches(camera.as_str()))
    }

    /// As given on the command line.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One name or glob of `--ingest-cameras`. Only what can match a camera name is accepted, so a
/// pattern that could never match (`Cam1`, `cams/*`) is an error at start, not a camera refused
/// later for no visible reason.
fn parse_camera_pattern(pattern: &str) -> Result<glob::Pattern, String> {
    let can_match = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '_' | '-' | '*' | '?' | '[' | ']' | '!')
    };
    if let Some(bad) = pattern.chars().find(|&c| !can_match(c)) {
        return Err(format!(
            "{pattern:?} cannot match a camera name ({bad:?}): names are a-z, 0-9, '_' and '-', \
             globs add '*', '?' and [...]"
        ));
    }
    glob::Pattern::new(pattern).map_err(|e| format!("{pattern:?} is not a name or glob: {e}"))
}

/// One origin of `--allowed-origins`, as browsers send it (`https://host[:port]`, no path), in
/// the form it is compared in: lower case, no trailing `/`, no default port (browsers leave it
/// out). A blank entry (a trailing comma, an empty variable) is empty and left out.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    if origin.is_empty() {
        return Ok(origin);
    }
    let (scheme, default_port) = match origin.split_once("://") {
        Some(("https", _)) => ("https", ":443"),
        Some(("http", _)) => ("http", ":80"),
        _ => return Err(not_an_origin(text)),
    };
    let authority = &origin[scheme.len() + 3..];
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    let host_is_named = !authority.is_empty() && !authority.starts_with(':');
    if !host_is_named || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(not_an_origin(text));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn not_an_origin(text: &str) -> String {
    format!(
        "{text:?} is not an origin: give scheme and host as a browser sends them, e.g. \
         https://cams.example.com or http://intranet:8080"
    )
}

fn parse_camera_patterns(text: &str) -> Result<CameraPatterns, String> {
    let patterns: Vec<glob::Pattern> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_camera_pattern)
        .collect::<Result<_, _>>()?;
    if patterns.is_empty() {
        return Err("give at least one camera name or glob".into());
    }
    Ok(CameraPatterns {
        text: text.to_owned(),
        patterns,
    })
}

/// The settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub listen: SocketAddr,
    pub ring_dir: PathBuf,
    pub stall_timeout: Duration,
    pub sndbuf: usize,
    pub notsent_lowat: u32,
    pub token: Option<String>,
    pub ingest_token: Option<String>,
    pub allow_open_ingest: bool,
    pub ingest_cameras: Option<CameraPatterns>,
    pub max_ingest_cameras: usize,
    pub forget_after: Duration,
    pub ingest_idle_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub max_clients_per_ip: usize,
    pub max_clients: usize,
    pub max_frame_bytes: usize,
    pub offline_after: Duration,
    pub worker_label: String,
    pub ping_interval: Duration,
    pub io_driver: IoDriver,
}

impl WorkerConfig {
    pub fn from_args(args: &Args) -> WorkerConfig {
        WorkerConfig {
            listen: args.listen,
            ring_dir: args.ring_dir.clone(),
            stall_timeout: args.stall_timeout,
            sndbuf: args.sndbuf,
            notsent_lowat: args.notsent_lowat,
            token: args.token.clone().filter(|t| !t.is_empty()),
            ingest_token: args.ingest_token.clone().filter(|t| !t.is_empty()),
            allow_open_ingest: args.allow_open_ingest,
            ingest_cameras: args.ingest_cameras.clone(),
            max_ingest_cameras: args.max_ingest_cameras,
            forget_after: args.forget_after,
            ingest_idle_timeout: args.ingest_idle_timeout,
            allowed_origins: args
                .allowed_origins
                .iter()
                .filter(|origin| !origin.is_empty())
                .cloned()
                .collect(),
            max_clients_per_ip: args.max_clients_per_ip,
            max_clients: args.max_clients,
            max_frame_bytes: args.max_frame_bytes,
            offline_after: args.offline_after,
            worker_label: args
                .worker_index
                .map_or_else(|| std::process::id().to_string(), |i| i.to_string()),
            ping_interval: args.ping_interval,
            io_driver: args.io_driver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        assert_eq!(
            parse_origin(" HTTPS://Cams.Example.com/ ").unwrap(),
            "https://cams.example.com"
        );
        assert_eq!(
            parse_origin("http://intranet:8443").unwrap(),
            "http://intranet:8443"
        );
        assert_eq!(
            parse_origin("https://cams:443").unwrap(),
            "https://cams",
            "browsers leave the default port out"
        );
        assert_eq!(parse_origin(" ").unwrap(), "", "a blank entry is left out");
        for bad in [
            "cams.example.com",
            "https://",
            "https://:8080",
            "ftp://cams",
            "https://cams/viewer",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ingest_camera_patterns_must_be_able_to_match_a_camera() {
        let patterns = parse_camera_patterns("yard-*, gate?,porch").unwrap();
        let camera = |name| ringbuf::CameraId::new(name).unwrap();
        assert!(patterns.allows(&camera("yard-east")));
        assert!(patterns.allows(&camera("gate2")));
        assert!(patterns.allows(&camera("porch")));
        assert!(!patterns.allows(&camera("garage")));
        for bad in ["Cam1", "cams/*", "cam.1", " , ", "[a-"] {
            assert!(parse_camera_patterns(bad).is_err(), "{bad:?}");
        }
    }
}

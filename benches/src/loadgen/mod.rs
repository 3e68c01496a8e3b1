//! `ringcast-loadgen`: many WebSocket or MJPEG viewers against one URL, on a few threads with
//! non-blocking sockets (mio/epoll), measuring per viewer what it receives: frames, skipped
//! frame numbers and end-to-end latency from each JPEG's COM timing segment.

mod cpu;
mod engine;
mod report;
mod viewer;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cpu::CpuReport;
pub use report::{GroupReport, Report, ViewerReport};

use engine::{Progress, Shared};
use viewer::Viewer;

/// What the viewers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// WebSocket, one binary message per JPEG (`/ws/{cam}`).
    Ws,
    /// `multipart/x-mixed-replace` over HTTP (`/stream/{cam}.mjpg`).
    Mjpeg,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ringcast-loadgen",
    about = "Many WebSocket or MJPEG viewers against one stream URL; a JSON summary on stdout"
)]
pub struct LoadArgs {
    /// The stream: ws://HOST:PORT/ws/CAM or http://HOST:PORT/stream/CAM.mjpg.
    #[arg(long, env = "RINGCAST_URL")]
    pub url: String,
    /// How the viewers talk to the server; by default taken from the URL's scheme.
    #[arg(long, value_enum, env = "RINGCAST_MODE")]
    pub mode: Option<Mode>,
    #[arg(long, default_value_t = 100, env = "RINGCAST_VIEWERS")]
    pub viewers: usize,
    /// Seconds measured, after the ramp and the warm-up.
    #[arg(long, default_value_t = 10.0, env = "RINGCAST_DURATION")]
    pub duration: f64,
    /// Seconds over which the viewers connect, evenly spread (0: all at once).
    #[arg(long, default_value_t = 0.0, env = "RINGCAST_RAMP")]
    pub ramp: f64,
    /// Seconds after the ramp before measuring starts, so that connection set-up is not counted.
    #[arg(long, default_value_t = 1.0, env = "RINGCAST_WARMUP")]
    pub warmup: f64,
    /// SO_RCVBUF for every fast viewer (default: the kernel's autotuning).
    #[arg(long, env = "RINGCAST_RCVBUF")]
    pub rcvbuf: Option<usize>,
    /// How many of the viewers read slowly (the first ones to connect).
    #[arg(long, default_value_t = 0, env = "RINGCAST_SLOW")]
    pub slow: usize,
    /// Bytes per second a slow viewer reads.
    #[arg(long, default_value_t = 50_000, env = "RINGCAST_SLOW_RATE")]
    pub slow_rate: u64,
    /// SO_RCVBUF for slow viewers: small, or loopback autotuning hides the slowness in the kernel.
    #[arg(long, default_value_t = 65_536, env = "RINGCAST_SLOW_RCVBUF")]
    pub slow_rcvbuf: usize,
    /// Threads the viewers are spread over.
    #[arg(long, default_value_t = 1, env = "RINGCAST_THREADS")]
    pub threads: usize,
    /// Seconds a viewer may take to connect and complete its handshake.
    #[arg(long, default_value_t = 10.0, env = "RINGCAST_CONNECT_TIMEOUT")]
    pub connect_timeout: f64,
    /// Read every payload byte into user space, as a real client does, instead of dropping
    /// what follows each JPEG's timing segment in the kernel (MSG_TRUNC). Costs the load
    /// client about a copy per frame, and shifts receive-side work the server's way.
    #[arg(long, env = "RINGCAST_COPY_PAYLOAD")]
    pub copy_payload: bool,
    /// Also list every viewer in the JSON summary.
    #[arg(long, env = "RINGCAST_PER_VIEWER")]
    pub per_viewer: bool,
    /// No progress lines on stderr.
    #[arg(long, env = "RINGCAST_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("URL {url:?}: cannot resolve {host:?}: {source}")]
    Resolve {
        url: String,
        host: String,
        source: std::io::Error,
    },
    #[error("--{flag}: {reason}")]
    BadOption { flag: &'static str, reason: String },
    #[error("cannot start a viewer thread: {0}")]
    Thread(std::io::Error),
    #[error("viewer thread failed: {0}")]
    Poll(std::io::Error),
}

/// Where the viewers connect and what they send.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// `host[:port]` for the Host header.
    pub authority: String,
    pub path: String,
    pub mode: Mode,
}

impl Target {
    pub(crate) fn parse(url: &str, mode: Option<Mode>) -> Result<Target, LoadError> {
        let bad = |reason: &str| LoadError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected ws://HOST:PORT/PATH or http://HOST:PORT/PATH"))?;
        let (scheme_mode, default_port) = match scheme {
            "ws" => (Mode::Ws, 80),
            "http" => (Mode::Mjpeg, 80),
            _ => return Err(bad("only ws:// and http:// are supported")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve {
                url: url.to_owned(),
                host: authority.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Target {
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
            mode: mode.unwrap_or(scheme_mode),
        })
    }
}

/// The checked form of [`LoadArgs`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub target: Target,
    pub viewers: usize,
    pub ramp: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub rcvbuf: Option<usize>,
    pub slow: usize,
    pub slow_rate: u64,
    pub slow_rcvbuf: usize,
    pub threads: usize,
    pub connect_timeout: Duration,
    pub copy_payload: bool,
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(value).map_err(|_| LoadError::BadOption {
        flag,
        reason: format!("{value} is not a number of seconds"),
    })
}

impl Plan {
    pub(crate) fn from_args(args: &LoadArgs) -> Result<Plan, LoadError> {
        let option = |flag, reason: &str| LoadError::BadOption {
            flag,
            reason: reason.to_owned(),
        };
        if args.viewers == 0 {
            return Err(option("viewers", "need at least one viewer"));
        }
        if args.slow > args.viewers {
            return Err(option("slow", "more slow viewers than viewers"));
        }
        if args.slow_rate == 0 {
            return Err(option("slow-rate", "must be at least 1 byte per second"));
        }
        if !(1..=256).contains(&args.threads) {
            return Err(option("threads", "must be 1 to 256"));
        }
        let duration = seconds("duration", args.duration)?;
        if duration.is_zero() {
            return Err(option("duration", "must be more than 0 s"));
        }
        Ok(Plan {
            target: Target::parse(&args.url, args.mode)?,
            viewers: args.viewers,
            ramp: seconds("ramp", args.ramp)?,
            warmup: seconds("warmup", args.warmup)?,
            duration,
            rcvbuf: args.rcvbuf,
            slow: args.slow,
            slow_rate: args.slow_rate,
            slow_rcvbuf: args.slow_rcvbuf,
            threads: args.threads.min(args.viewers),
            connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
            copy_payload: args.copy_payload,
        })
    }

    /// When viewer `id` connects, relative to the start.
    fn connect_offset(&self, id: usize) -> Duration {
        self.ramp.mul_f64(id as f64 / self.viewers as f64)
    }
}

/// Runs the whole load and returns its summary. Progress goes to stderr once a second unless
/// `args.quiet`; a warning goes there if the load generator was saturated, quiet or not.
pub fn run(args: &LoadArgs) -> Result<Report, LoadError> {
    let plan = Arc::new(Plan::from_args(args)?);
    let start = Instant::now();
    let window_start = start + plan.ramp + plan.warmup;
    let shared = Arc::new(Shared {
        start,
        window_start,
        end: window_start + plan.duration,
        progress: Progress::default(),
    });
    let mut handles = Vec::with_capacity(plan.threads);
    for thread in 0..plan.threads {
        let viewers: Vec<Viewer> = (thread..plan.viewers)
            .step_by(plan.threads)
            .map(|id| Viewer::new(id, id < plan.slow, start + plan.connect_offset(id)))
            .collect();
        let (plan, shared) = (Arc::clone(&plan), Arc::clone(&shared));
        let handle = std::thread::Builder::new()
            .name(format!("viewers-{thread}"))
            .spawn(move || engine::run_viewers(&plan, viewers, &shared))
            .map_err(LoadError::Thread)?;
        handles.push(handle);
    }
    let mut last = ProgressSnapshot::default();
    let mut tick = start;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if !args.quiet && tick.elapsed() >= Duration::from_secs(1) {
            tick += Duration::from_secs(1);
            last = print_progress(&shared, &plan, last);
        }
    }
    let mut viewers = Vec::with_capacity(plan.viewers);
    let mut cpu = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.join() {
            Ok(Ok((done, thread_cpu))) => {
                viewers.extend(done);
                cpu.push(thread_cpu);
            }
            Ok(Err(e)) => return Err(LoadError::Poll(e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    viewers.sort_by_key(|v| v.id);
    let window = shared.end.saturating_duration_since(shared.window_start);
    let cpu = CpuReport::of(&cpu, window);
    // Also under --quiet: a saturated load generator makes every other figure suspect, and
    // scripts that pass --quiet are the ones that keep numbers.
    if let Some(warning) = cpu.warning() {
        eprintln!("{warning}");
    }
    Ok(Report::build(
        &plan,
        args,
        &viewers,
        window,
        cpu,
        args.per_viewer,
    ))
}

#[derive(Debug, Default, Clone, Copy)]
struct ProgressSnapshot {
    frames: u64,
}

fn print_progress(shared: &Shared, plan: &Plan, last: ProgressSnapshot) -> ProgressSnapshot {
    let p = &shared.progress;
    let frames = p.frames.load(Relaxed);
    let connected = p.connected.load(Relaxed);
    let per_second = frames - last.frames;
    let per_viewer = if connected > 0 {
        per_second as f64 / connected as f64
    } else {
        0.0
    };
    let phase = if Instant::now() < shared.window_start {
        "warm-up"
    } else {
        "measuring"
    };
    eprintln!(
        "[{:>4.0}s {phase}] connected {connected}/{} | frames/s {per_second} ({per_viewer:.1} per viewer) | skipped {} | closed {} | errors {}",
        shared.start.elapsed().as_secs_f64(),
        plan.viewers,
        p.skipped.load(Relaxed),
        p.closed.load(Relaxed),
        p.errors.load(Relaxed),
    );
    ProgressSnapshot { frames }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_mode_address_and_path() {
        let t = Target::parse("ws://127.0.0.1:7474/ws/cam1", None).unwrap();
        assert_eq!(t.mode, Mode::Ws);
        assert_eq!(t.addr, "127.0.0.1:7474".parse().unwrap());
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:7474", "/ws/cam1")
        );
        let t = Target::parse("http://127.0.0.1:8000/stream/cam1.mjpg", None).unwrap();
        assert_eq!(t.mode, Mode::Mjpeg);
        assert!(matches!(
            Target::parse("https://127.0.0.1/x", None),
            Err(LoadError::BadUrl { .. })
        ));
        assert!(matches!(
            Target::parse("ws:///x", None),
            Err(LoadError::BadUrl { .. })
        ));
    }
}

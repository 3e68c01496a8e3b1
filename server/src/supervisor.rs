//! `--workers N`: this process starts N worker processes on the same port (each binds it with
//! SO_REUSEPORT itself), restarts any that dies, and stops them all on SIGTERM or SIGINT.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::{Args, IoDriver, WorkerConfig};
use crate::worker::{self, bind_reuseport};
use crate::ServerError;

const POLL: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after its start is restarted only after this delay, so
/// a worker that cannot start does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long workers get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the server as `args` asks: in this process for one worker, else as a supervisor.
pub fn run(args: &Args) -> Result<(), ServerError> {
    raise_open_file_limit();
    // Made (or checked) before any worker starts, so that a directory another user prepared is
    // refused once, with its reason, rather than by every worker in a restart loop.
    ringbuf::ensure_ring_dir(&args.ring_dir)?;
    if args.workers == 1 {
        return worker::run(WorkerConfig::from_args(args));
    }
    ensure_port_free(args.listen)?;
    // Binding here first turns port 0 into a concrete port the workers can share, and holds it.
    let reserved = bind_reuseport(args.listen, false)?;
    let listen = reserved
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(args.listen);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(ServerError::Signals)?;
    }
    tracing::info!("supervising {} workers on http://{listen}", args.workers);
    let mut workers: Vec<Slot> = (0..args.workers)
        .map(|index| Slot::start(args, listen, index))
        .collect::<Result<_, _>>()?;
    while !stop.load(Ordering::Relaxed) {
        for slot in &mut workers {
            slot.check(args, listen);
        }
        std::thread::sleep(POLL);
    }
    tracing::info!("stopping workers");
    stop_all(&mut workers);
    Ok(())
}

/// SO_REUSEPORT would let this server silently share the port with another one already
/// listening there; sharing is for our own workers only, so refuse instead.
fn ensure_port_free(addr: std::net::SocketAddr) -> Result<(), ServerError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .and_then(|socket| {
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())
    });
    probe.map_err(|source| ServerError::Listen { addr, source })
}

/// One worker position: its process, or when it may be started again.
struct Slot {
    index: u32,
    child: Option<Child>,
    started: Instant,
    restart_at: Option<Instant>,
}

impl Slot {
    fn start(args: &Args, listen: std::net::SocketAddr, index: u32) -> Result<Slot, ServerError> {
        let child = spawn_worker(args, listen, index)?;
        Ok(Slot {
            index,
            child: Some(child),
            started: Instant::now(),
            restart_at: None,
        })
    }

    fn check(&mut self, args: &Args, listen: std::net::SocketAddr) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => tracing::warn!(
                    worker = self.index,
                    pid = child.id(),
                    "worker exited ({status}), restarting it"
                ),
                Err(e) => tracing::warn!(worker = self.index, "cannot wait for worker: {e}"),
            }
            self.child = None;
            let quick = self.started.elapsed() < RESTART_DELAY;
            self.restart_at =
                Some(Instant::now() + if quick { RESTART_DELAY } else { Duration::ZERO });
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            match spawn_worker(args, listen, self.index) {
                Ok(child) => {
                    self.child = Some(child);
                    self.started = Instant::now();
                    self.restart_at = None;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    self.restart_at = Some(Instant::now() + RESTART_DELAY);
                }
            }
        }
    }
}

fn spawn_worker(
    args: &Args,
    listen: std::net::SocketAddr,
    index: u32,
) -> Result<Child, ServerError> {
    let fail = |source| ServerError::SpawnWorker { index, source };
    let exe = std::env::current_exe().map_err(fail)?;
    let mut command = Command::new(exe);
    command
        .arg("--listen")
        .arg(listen.to_string())
        .args(["--workers", "1", "--worker-index", &index.to_string()])
        .arg("--ring-dir")
        .arg(&args.ring_dir)
        .arg("--stall-timeout")
        .arg(args.stall_timeout.as_secs_f64().to_string())
        .arg("--sndbuf")
        .arg(args.sndbuf.to_string())
        .arg("--notsent-lowat")
        .arg(args.notsent_lowat.to_string())
        .arg("--ping-interval")
        .arg(args.ping_interval.as_secs_f64().to_string())
        .arg("--max-clients")
        .arg(args.max_clients.to_string())
        .arg("--max-frame-bytes")
        .arg(args.max_frame_bytes.to_string())
        .arg("--offline-after")
        .arg(args.offline_after.as_secs_f64().to_string())
        .arg("--max-ingest-cameras")
        .arg(args.max_ingest_cameras.to_string())
        .arg("--forget-after")
        .arg(args.forget_after.as_secs_f64().to_string())
        .arg("--ingest-idle-timeout")
        .arg(args.ingest_idle_timeout.as_secs_f64().to_string())
        .arg("--max-clients-per-ip")
        .arg(args.max_clients_per_ip.to_string())
        .arg("--io-driver")
        .arg(match args.io_driver {
            IoDriver::Auto => "auto",
            IoDriver::Epoll => "epoll",
        });
    if args.allow_open_ingest {
        command.arg("--allow-open-ingest");
    }
    if let Some(cameras) = &args.ingest_cameras {
        command.arg("--ingest-cameras").arg(cameras.as_str());
    }
    if !args.allowed_origins.is_empty() {
        command
            .arg("--allowed-origins")
            .arg(args.allowed_origins.join(","));
    }
    // Tokens go through the environment, not the command line that `ps` shows.
    for (name, value) in [
        ("RINGCAST_TOKEN", &args.token),
        ("RINGCAST_INGEST_TOKEN", &args.ingest_token),
    ] {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it makes the
    // kernel stop the worker if the supervisor dies without stopping it.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let child = command.spawn().map_err(fail)?;
    tracing::info!(worker = index, pid = child.id(), "worker started");
    Ok(child)
}

fn stop_all(workers: &mut [Slot]) {
    for slot in workers.iter() {
        if let Some(child) = &slot.child {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for slot in workers.iter_mut() {
        let Some(child) = &mut slot.child else {
            continue;
        };
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(POLL / 4);
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every viewer is a socket: lift the soft limit on open files (often 1024) to the hard limit,
/// as systemd's LimitNOFILE would. Workers inherit it.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

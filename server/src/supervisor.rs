//! `--workers N`: this process starts N worker processes on the same port (each binds it with
//! SO_REUSEPORT itself), restarts any that dies or stops answering, and stops them all on SIGTERM
//! or SIGINT. Workers report to it in systemd's notify protocol (see `notify`), and it reports
//! for them all to systemd.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::{Args, IoDriver, WorkerConfig};
use crate::notify::{Report, ServiceManager, WorkerLine, WORKER_WATCHDOG};
use crate::worker::{self, bind_reuseport};
use crate::ServerError;

const POLL: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after its start is restarted only after this delay, so
/// a worker that cannot start does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long workers get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A worker silent this long (it pings every second) has a hung event loop: it is killed and
/// replaced. Far above a busy loop's delays, well below systemd's usual watchdogs.
const WORKER_SILENCE_LIMIT: Duration = Duration::from_secs(10);

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
    // Only this user may send to the workers' notify sockets.
    let lines = tempfile::Builder::new()
        .prefix("ringcast-workers-")
        .tempdir()
        .map_err(ServerError::NotifyDir)?;
    let mut workers: Vec<Slot> = (0..args.workers)
        .map(|index| Slot::start(args, listen, index, lines.path()))
        .collect::<Result<_, _>>()?;
    let manager = ServiceManager::from_env();
    let mut told_ready = false;
    let mut next_ping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for slot in &mut workers {
            slot.check(args, listen);
        }
        let up = workers.iter().filter(|w| w.ready).count();
        let report = Report::combine(workers.iter().filter_map(|w| w.report));
        let status = format!(
            "{up} of {} workers up on http://{listen}: {report}",
            workers.len()
        );
        if !told_ready && up == workers.len() {
            tracing::info!("all {up} workers ready");
            manager.ready(&status, None);
            told_ready = true;
        } else if Instant::now() >= next_ping {
            manager.alive(&status, None);
            next_ping = Instant::now() + manager.interval();
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

/// One worker position: its process, or when it may be started again, and what it said last.
struct Slot {
    index: u32,
    child: Option<Child>,
    started: Instant,
    restart_at: Option<Instant>,
    line: WorkerLine,
    /// Whether this worker (this process of it) said `READY=1`.
    ready: bool,
    last_heard: Instant,
    report: Option<Report>,
}

impl Slot {
    fn start(
        args: &Args,
        listen: std::net::SocketAddr,
        index: u32,
        lines: &Path,
    ) -> Result<Slot, ServerError> {
        let line = WorkerLine::bind(&lines.join(format!("worker-{index}.sock")))
            .map_err(|source| ServerError::NotifyLine { index, source })?;
        let child = spawn_worker(args, listen, index, line.address())?;
        Ok(Slot {
            index,
            child: Some(child),
            started: Instant::now(),
            restart_at: None,
            line,
            ready: false,
            last_heard: Instant::now(),
            report: None,
        })
    }

    fn check(&mut self, args: &Args, listen: std::net::SocketAddr) {
        self.listen_to_worker();
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) if self.last_heard.elapsed() < WORKER_SILENCE_LIMIT => return,
                Ok(None) => {
                    tracing::warn!(
                        worker = self.index,
                        pid = child.id(),
                        "worker silent for {} s, its event loop hangs: killing and restarting it",
                        WORKER_SILENCE_LIMIT.as_secs()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Ok(Some(status)) => tracing::warn!(
                    worker = self.index,
                    pid = child.id(),
                    "worker exited ({status}), restarting it"
                ),
                Err(e) => tracing::warn!(worker = self.index, "cannot wait for worker: {e}"),
            }
            self.child = None;
            self.ready = false;
            self.report = None;
            let quick = self.started.elapsed() < RESTART_DELAY;
            self.restart_at =
                Some(Instant::now() + if quick { RESTART_DELAY } else { Duration::ZERO });
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            // Whatever the last process said is not the new one's word.
            self.line.drain();
            match spawn_worker(args, listen, self.index, self.line.address()) {
                Ok(child) => {
                    self.child = Some(child);
                    self.started = Instant::now();
                    self.last_heard = Instant::now();
                    self.restart_at = None;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    self.restart_at = Some(Instant::now() + RESTART_DELAY);
                }
            }
        }
    }

    /// Takes in what the worker sent; what a dead worker sent before it died is dropped.
    fn listen_to_worker(&mut self) {
        let heard = self.line.drain();
        if self.child.is_none() {
            return;
        }
        if heard.anything {
            self.last_heard = Instant::now();
        }
        self.ready |= heard.ready;
        if heard.report.is_some() {
            self.report = heard.report;
        }
    }
}

fn spawn_worker(
    args: &Args,
    listen: std::net::SocketAddr,
    index: u32,
    notify_socket: &Path,
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
    // The worker reports to this supervisor, never to systemd (which takes only the main
    // process's word); `WATCHDOG_PID` names this process, not the worker.
    command
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", WORKER_WATCHDOG.as_micros().to_string())
        .env_remove("WATCHDOG_PID");
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

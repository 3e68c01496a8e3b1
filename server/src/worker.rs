//! One worker process: a monoio runtime on one thread, its own SO_REUSEPORT listener, its own
//! readers of every ring. A worker alone is a complete server.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::{IoDriver, WorkerConfig};
use crate::hub::{CameraState, Hub, SCAN_INTERVAL};
use crate::notify::{Report, ServiceManager};
use crate::ServerError;
use crate::{metrics, routes};

/// Pending connections the kernel keeps per listener before the worker accepts them.
const LISTEN_BACKLOG: i32 = 4096;
/// io_uring submission queue size: room for every viewer's pending read and write.
const URING_ENTRIES: u32 = 4096;
/// Back-off after accept fails (usually: out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a worker shares its metrics with the others.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Connections taken from the listener's queue at most per turn of the event loop, beyond the
/// one the loop's accept brought (see `take_waiting_connections`).
const ACCEPTS_PER_TURN: usize = 256;

/// Per worker counters, for `/metrics`.
#[derive(Default)]
pub struct WorkerCounters {
    pub connections: Cell<u64>,
    pub bad_requests: Cell<u64>,
    pub refused_full: Cell<u64>,
    /// Connections refused because their address had `--max-clients-per-ip` already.
    pub refused_per_ip: Cell<u64>,
    /// Connections dropped for not sending a whole request head in time.
    pub head_timeouts: Cell<u64>,
    pub ingest_frames: Cell<u64>,
    pub ingest_refused: Cell<u64>,
    /// Connections still reading their request head (a gauge).
    pub reading_heads: Cell<u64>,
    /// Remote cameras connected now (a gauge).
    pub ingest_connections: Cell<u64>,
}

/// Counts one in a gauge for as long as it lives.
pub struct Gauged<'a>(&'a Cell<u64>);

impl<'a> Gauged<'a> {
    pub fn new(gauge: &'a Cell<u64>) -> Gauged<'a> {
        gauge.set(gauge.get() + 1);
        Gauged(gauge)
    }
}

impl Drop for Gauged<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What every connection task of a worker shares.
pub struct Worker {
    pub config: WorkerConfig,
    pub hub: Rc<Hub>,
    /// Streaming viewers now (WebSocket and MJPEG), checked against `--max-clients`.
    pub streaming: Cell<usize>,
    /// Connections now, by address, checked against `--max-clients-per-ip`.
    pub per_address: RefCell<HashMap<IpAddr, usize>>,
    /// Where the server's workers keep their metrics snapshots (see `metrics`).
    pub snapshots: PathBuf,
    pub counters: WorkerCounters,
    pub driver: &'static str,
}

impl Worker {
    /// What this worker tells the service manager about itself.
    pub fn report(&self) -> Report {
        let cameras = self.hub.cameras();
        let online = cameras
            .iter()
            .filter(|c| c.state() == CameraState::Online)
            .count();
        Report {
            viewers: self.streaming.get() as u64,
            cameras_online: online as u64,
            cameras: cameras.len() as u64,
        }
    }

    /// Counts a connection from `address` for as long as the returned guard lives; `None` when
    /// that address has `--max-clients-per-ip` already.
    pub fn admit_address(self: &Rc<Self>, address: IpAddr) -> Option<AddressGuard> {
        let limit = self.config.max_clients_per_ip;
        let mut counts = self.per_address.borrow_mut();
        let count = counts.entry(address).or_insert(0);
        if limit > 0 && *count >= limit {
            crate::hub::bump(&self.counters.refused_per_ip, 1);
            return None;
        }
        *count += 1;
        Some(AddressGuard {
            worker: Rc::clone(self),
            address,
        })
    }

    /// Counts a streaming viewer for as long as the returned guard lives; `None` when full.
    pub fn admit(self: &Rc<Self>) -> Option<StreamingGuard> {
        if self.streaming.get() >= self.config.max_clients {
            crate::hub::bump(&self.counters.refused_full, 1);
            return None;
        }
        self.streaming.set(self.streaming.get() + 1);
        Some(StreamingGuard(Rc::clone(self)))
    }
}

pub struct AddressGuard {
    worker: Rc<Worker>,
    address: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut counts = self.worker.per_address.borrow_mut();
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

pub struct StreamingGuard(Rc<Worker>);

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0
            .streaming
            .set(self.0.streaming.get().saturating_sub(1));
    }
}

/// Binds `addr` with SO_REUSEPORT, as every worker of one server does. `listen: false` only
/// reserves the address (the supervisor does this to turn port 0 into a real port).
pub fn bind_reuseport(addr: SocketAddr, listen: bool) -> Result<Socket, ServerError> {
    let fail = |source| ServerError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_reuse_port(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    if listen {
        socket.listen(LISTEN_BACKLOG).map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
    }
    Ok(socket)
}

/// Runs one worker until it fails; io_uring if the kernel has it, epoll otherwise.
pub fn run(config: WorkerConfig) -> Result<(), ServerError> {
    let socket = bind_reuseport(config.listen, true)?;
    let listener: std::net::TcpListener = socket.into();
    if config.io_driver == IoDriver::Epoll {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(ServerError::Runtime)?;
        return runtime.block_on(serve(listener, config, "epoll"));
    }
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(URING_ENTRIES)
        .build()
        .map_err(ServerError::Runtime)?;
    let driver = match &runtime {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    runtime.block_on(serve(listener, config, driver))
}

async fn serve(
    listener: std::net::TcpListener,
    config: WorkerConfig,
    driver: &'static str,
) -> Result<(), ServerError> {
    let local = listener.local_addr().map_err(ServerError::Accept)?;
    let listener = monoio::net::TcpListener::from_std(listener).map_err(ServerError::Accept)?;
    let hub = Hub::new(&config.ring_dir, config.offline_after, config.forget_after)?;
    let snapshots = metrics::snapshot_dir(&config.ring_dir, local.port());
    let worker = Rc::new(Worker {
        config,
        hub: Rc::clone(&hub),
        streaming: Cell::new(0),
        per_address: RefCell::new(HashMap::new()),
        snapshots,
        counters: WorkerCounters::default(),
        driver,
    });
    hub.rescan();
    monoio::spawn(rescan_forever(hub));
    monoio::spawn(publish_metrics_forever(Rc::clone(&worker)));
    tracing::info!(
        worker = %worker.config.worker_label,
        "serving http://{local} with {driver}, rings in {}",
        worker.config.ring_dir.display()
    );
    if worker.config.ingest_token.is_none() {
        if worker.config.allow_open_ingest {
            tracing::warn!(
                worker = %worker.config.worker_label,
                "ingest is open (--allow-open-ingest): anyone who reaches /ingest/{{cam}} can publish a camera"
            );
        } else {
            tracing::info!(
                worker = %worker.config.worker_label,
                "ingest is closed: set --ingest-token to accept remote cameras"
            );
        }
    }
    tell_manager_ready(&worker, local);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                serve_connection(&worker, stream, peer);
                take_waiting_connections(&worker, &listener);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

fn serve_connection(worker: &Rc<Worker>, stream: monoio::net::TcpStream, peer: SocketAddr) {
    crate::hub::bump(&worker.counters.connections, 1);
    monoio::spawn(routes::handle_connection(
        Rc::clone(worker),
        stream,
        peer.ip(),
    ));
}

/// Accepts, without waiting, every connection already in the listener's queue.
///
/// With io_uring an accept completes once per turn of the event loop, and the loop of a worker
/// busy with thousands of viewers turns slowly: one connection per turn let new viewers wait
/// longer than their clients would (2000 viewers of 720p on one worker: a third of them timed out
/// after 10 s, where epoll, whose accept is a plain call, took them all). The listener is
/// non-blocking (see `bind_reuseport`), so this stops at an empty queue, or after
/// [`ACCEPTS_PER_TURN`]: a queue that never empties (a flood of connections) must not keep the
/// loop from the viewers it has.
fn take_waiting_connections(worker: &Rc<Worker>, listener: &monoio::net::TcpListener) {
    // SAFETY: the descriptor is the listener's, which `listener` keeps open for longer than
    // this borrow lives (to the end of this function).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(listener.as_raw_fd()) };
    let listening = socket2::SockRef::from(&fd);
    for _ in 0..ACCEPTS_PER_TURN {
        let accepted = listening.accept().and_then(|(socket, peer)| {
            socket.set_nonblocking(true)?;
            let peer = peer.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "a peer without an IP address")
            })?;
            let stream = monoio::net::TcpStream::from_std(socket.into())?;
            Ok((stream, peer))
        });
        match accepted {
            Ok((stream, peer)) => serve_connection(worker, stream, peer),
            // WouldBlock: the queue is empty. Any other error the loop's next accept meets too,
            // and reports (and backs off).
            Err(_) => return,
        }
    }
}

/// `READY=1` to the service manager, then a ping with the status for as long as the event loop
/// runs: the pings come from this loop, so a loop that hangs stops them (see `notify`).
fn tell_manager_ready(worker: &Rc<Worker>, local: SocketAddr) {
    let manager = ServiceManager::from_env();
    if !manager.is_listening() {
        return;
    }
    let serving = format!("serving http://{local} with {}", worker.driver);
    let report = worker.report();
    manager.ready(&format!("{serving}: {report}"), Some(report));
    let worker = Rc::clone(worker);
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(manager.interval()).await;
            let report = worker.report();
            manager.alive(&format!("{serving}: {report}"), Some(report));
        }
    });
}

async fn accept_failed(e: io::Error) {
    tracing::warn!("accept: {e}");
    monoio::time::sleep(ACCEPT_BACKOFF).await;
}

/// This worker's metrics for the others to report, once a second (see `metrics`).
async fn publish_metrics_forever(worker: Rc<Worker>) {
    let mut warned = false;
    loop {
        let snapshot = metrics::Snapshot::of(&worker);
        if let Err(e) = metrics::publish_snapshot(&snapshot, &worker.snapshots) {
            if !warned {
                tracing::warn!("metrics of this worker cannot be shared with the others: {e}");
                warned = true;
            }
        }
        monoio::time::sleep(METRICS_EVERY).await;
    }
}

async fn rescan_forever(hub: Rc<Hub>) {
    loop {
        monoio::time::sleep(SCAN_INTERVAL).await;
        hub.rescan();
    }
}

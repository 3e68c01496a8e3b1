//! The event loop of one viewer thread: connects its viewers on schedule and services them as
//! epoll (through mio, edge-triggered) reports their sockets ready.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::cpu::{WindowClock, WindowCpu};
use super::viewer::{Scratch, Viewer, ViewerError, THROTTLE_TICK};
use super::Plan;

/// How many viewer errors are logged one by one; the rest are only counted.
const LOGGED_ERRORS: usize = 10;

/// Largest read: several frames of a fast viewer in one call when it has fallen behind.
const READ_BUF: usize = 256 * 1024;

/// Longest sleep in the poll, so timeouts and the end of the run are noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// How often viewers still connecting are checked against the connect timeout.
const TIMEOUT_SWEEP: Duration = Duration::from_millis(250);

/// What every viewer thread shares: the run's timeline and live counters.
pub(crate) struct Shared {
    pub start: Instant,
    pub window_start: Instant,
    pub end: Instant,
    pub progress: Progress,
}

impl Shared {
    pub(crate) fn log_error(&self, viewer: usize, error: &ViewerError) {
        let logged = self.progress.logged.fetch_add(1, Relaxed);
        if logged < LOGGED_ERRORS {
            tracing::warn!(viewer, kind = %error.kind(), "{error}");
        } else if logged == LOGGED_ERRORS {
            tracing::warn!("more viewer errors: only counted from now on");
        }
    }
}

/// Counters for the progress line.
#[derive(Default)]
pub(crate) struct Progress {
    pub connected: AtomicUsize,
    pub frames: AtomicU64,
    pub skipped: AtomicU64,
    pub closed: AtomicU64,
    pub errors: AtomicU64,
    logged: AtomicUsize,
}

impl Progress {
    pub(crate) fn connected_one(&self) {
        self.connected.fetch_add(1, Relaxed);
    }

    pub(crate) fn disconnected_one(&self) {
        self.connected.fetch_sub(1, Relaxed);
    }

    pub(crate) fn closed_one(&self) {
        self.closed.fetch_add(1, Relaxed);
        self.disconnected_one();
    }

    pub(crate) fn error_one(&self, was_connected: bool) {
        self.errors.fetch_add(1, Relaxed);
        if was_connected {
            self.disconnected_one();
        }
    }

    pub(crate) fn frame(&self, skipped: u64) {
        self.frames.fetch_add(1, Relaxed);
        if skipped > 0 {
            self.skipped.fetch_add(skipped, Relaxed);
        }
    }
}

/// Runs `viewers` (sorted by connect time) until the end of the run; returns them with their
/// statistics, and the CPU time used in the measurement window.
pub(crate) fn run_viewers(
    plan: &Plan,
    mut viewers: Vec<Viewer>,
    shared: &Shared,
) -> io::Result<(Vec<Viewer>, WindowCpu)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = Scratch {
        buf: vec![0; READ_BUF],
        events: Vec::new(),
    };
    let slow: Vec<usize> = (0..viewers.len()).filter(|&i| viewers[i].slow).collect();
    let mut next_connect = 0;
    let mut last_sweep = Instant::now();
    let mut cpu = WindowClock::default();
    loop {
        let now = Instant::now();
        // Before the end check, so that even a window shorter than one turn of the loop has
        // a start reading.
        if !cpu.started() && now >= shared.window_start {
            cpu.start();
        }
        if now >= shared.end {
            break;
        }
        while next_connect < viewers.len() && viewers[next_connect].connect_at <= now {
            viewers[next_connect].start(poll.registry(), Token(next_connect), plan, shared);
            next_connect += 1;
        }
        let wake = if cpu.started() {
            shared.end
        } else {
            shared.window_start
        };
        let wait = wait_time(&viewers, next_connect, &slow, wake, now);
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if let Some(viewer) = viewers.get_mut(event.token().0) {
                viewer.on_ready(plan, shared, &mut scratch);
            }
        }
        for &i in &slow {
            if viewers[i].throttled {
                viewers[i].on_ready(plan, shared, &mut scratch);
            }
        }
        let now = Instant::now();
        if now.saturating_duration_since(last_sweep) >= TIMEOUT_SWEEP {
            last_sweep = now;
            for viewer in &mut viewers[..next_connect] {
                viewer.check_timeout(now, plan, shared);
            }
        }
    }
    // Before `finish`: the window is over, and its clean-up is not part of it.
    let cpu = cpu.stop();
    for viewer in &mut viewers {
        viewer.finish(plan.target.mode, shared);
    }
    Ok((viewers, cpu))
}

fn wait_time(
    viewers: &[Viewer],
    next_connect: usize,
    slow: &[usize],
    wake: Instant,
    now: Instant,
) -> Duration {
    let mut wait = wake.saturating_duration_since(now).min(MAX_WAIT);
    if let Some(next) = viewers.get(next_connect) {
        wait = wait.min(next.connect_at.saturating_duration_since(now));
    }
    if slow.iter().any(|&i| viewers[i].throttled) {
        wait = wait.min(THROTTLE_TICK);
    }
    wait
}

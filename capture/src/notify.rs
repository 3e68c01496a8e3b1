//! Telling systemd how capture is doing (`Type=notify` units, `sd_notify(3)` through the
//! `sd-notify` crate): `READY=1` once the ring (or push link) is open and the source thread runs,
//! `WATCHDOG=1` from the main loop — a loop that hangs stops the pings, and systemd restarts
//! capture —, and `STATUS=` with the camera's state for `systemctl status`. Without
//! `NOTIFY_SOCKET` nothing is sent.
//!
//! The pings come from the main loop, not from a thread of their own, on purpose: a thread
//! would go on pinging for a loop that no longer moves frames.

use std::fmt;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What the camera is doing, as `systemctl status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Opening the source, or waiting for its first frame.
    Starting,
    Streaming,
    /// On demand, with nobody watching: the camera is released.
    Idle,
    /// The source failed and is being retried.
    SourceDown,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Starting => "waiting for the camera's first frame",
            Condition::Streaming => "streaming",
            Condition::Idle => "idle, nobody is watching",
            Condition::SourceDown => "camera lost, retrying",
        })
    }
}

/// The service manager this process reports to, as its environment names it.
#[derive(Debug)]
pub struct ServiceManager {
    listening: bool,
    /// Half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` advises; `None` without a watchdog.
    ping_every: Option<Duration>,
    next: Instant,
    last_status: Instant,
    warned: bool,
}

impl ServiceManager {
    pub fn from_env(now: Instant) -> ServiceManager {
        ServiceManager {
            listening: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
            ping_every: ringbuf::service::watchdog_from_env().map(|watchdog| watchdog / 2),
            next: now,
            last_status: now,
            warned: false,
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.send(Some(NotifyState::Ready), status);
    }

    /// Called on every turn of the main loop: pings (if a watchdog is on) and refreshes the
    /// status when due. `status` gets the time since the last status.
    pub fn tick(&mut self, now: Instant, status: impl FnOnce(Duration) -> String) {
        if !self.listening || now < self.next {
            return;
        }
        let text = status(now.duration_since(self.last_status));
        self.send(self.ping_every.map(|_| NotifyState::Watchdog), &text);
        self.last_status = now;
        self.next = now + self.ping_every.unwrap_or(STATUS_EVERY);
    }

    fn send(&mut self, state: Option<NotifyState<'_>>, status: &str) {
        if !self.listening {
            return;
        }
        let mut states: Vec<NotifyState<'_>> = state.into_iter().collect();
        states.push(NotifyState::Status(status));
        if let Err(e) = sd_notify::notify(false, &states) {
            // Said once: the manager may be restarting, and a line per ping would flood the log.
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!("cannot notify the service manager: {e}");
            }
        }
    }
}

//! Telling the service manager how the server is doing, in systemd's notify protocol
//! (`sd_notify(3)`): `READY=1` once it serves, `WATCHDOG=1` while its loop runs, `STATUS=` for
//! `systemctl status`. Without `NOTIFY_SOCKET` nothing is sent.
//!
//! Sent by hand rather than with the `sd-notify` crate (which capture uses): its send blocks
//! when the manager's queue is full, and here the sender is a worker's event loop, whose every
//! viewer would freeze with it. A message that finds the queue full is dropped instead.
//!
//! A lone worker (`--workers 1`, as the units run it) talks to systemd itself, from its event
//! loop, so a loop that hangs stops the pings and systemd restarts it. Under a supervisor
//! (`--workers N`) every worker talks the same protocol to the supervisor, on a socket of its own
//! ([`WorkerLine`]); the supervisor is ready once every worker is, sums their figures into its
//! own `STATUS=`, pings systemd from its own loop, and replaces a worker whose pings stop. Only
//! the supervisor talks to systemd, as `NotifyAccess=main` requires.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// The watchdog a supervisor gives its workers: they ping every half of it.
pub const WORKER_WATCHDOG: Duration = Duration::from_secs(2);
/// Application variables carry the figures a supervisor sums (`sd_notify(3)` reserves the
/// `X_` prefix for them; systemd ignores them).
const VIEWERS_VAR: &str = "X_RINGCAST_VIEWERS=";
const CAMERAS_VAR: &str = "X_RINGCAST_CAMERAS=";

/// What a server reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub viewers: u64,
    pub cameras_online: u64,
    pub cameras: u64,
}

impl Report {
    /// Several workers' figures as one server's: viewers add up; every worker follows the same
    /// rings, so the cameras are those the most informed worker sees.
    pub fn combine(reports: impl IntoIterator<Item = Report>) -> Report {
        reports
            .into_iter()
            .fold(Report::default(), |sum, r| Report {
                viewers: sum.viewers + r.viewers,
                cameras_online: sum.cameras_online.max(r.cameras_online),
                cameras: sum.cameras.max(r.cameras),
            })
    }

    fn variables(&self) -> [String; 2] {
        [
            format!("{VIEWERS_VAR}{}", self.viewers),
            format!("{CAMERAS_VAR}{}/{}", self.cameras_online, self.cameras),
        ]
    }

    /// The report in a worker's message, if it carries one.
    fn parse(message: &str) -> Option<Report> {
        let mut viewers = None;
        let mut cameras = None;
        for line in message.lines() {
            if let Some(value) = line.strip_prefix(VIEWERS_VAR) {
                viewers = value.parse().ok();
            } else if let Some(value) = line.strip_prefix(CAMERAS_VAR) {
                let (online, all) = value.split_once('/')?;
                cameras = Some((online.parse().ok()?, all.parse().ok()?));
            }
        }
        let (cameras_online, cameras) = cameras?;
        Some(Report {
            viewers: viewers?,
            cameras_online,
            cameras,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.viewers == 1 { "" } else { "s" };
        write!(
            f,
            "{} viewer{plural}, {} of {} cameras online",
            self.viewers, self.cameras_online, self.cameras
        )
    }
}

/// The service manager this process reports to, as its environment names it.
#[derive(Debug)]
pub struct ServiceManager {
    /// An unbound socket that never blocks, and `NOTIFY_SOCKET`'s address.
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` advises; `None` without a watchdog.
    ping_every: Option<Duration>,
    warned: Cell<bool>,
}

impl ServiceManager {
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            socket: notify_socket(),
            ping_every: ringbuf::service::watchdog_from_env().map(|watchdog| watchdog / 2),
            warned: Cell::new(false),
        }
    }

    /// Whether anyone listens: without a socket there is nothing to tell.
    pub fn is_listening(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to call [`ServiceManager::alive`].
    pub fn interval(&self) -> Duration {
        self.ping_every.unwrap_or(STATUS_EVERY)
    }

    pub fn ready(&self, status: &str, report: Option<Report>) {
        self.send(Some("READY=1"), status, report);
    }

    /// A watchdog ping (if a watchdog is on) with the current status.
    pub fn alive(&self, status: &str, report: Option<Report>) {
        self.send(self.ping_every.map(|_| "WATCHDOG=1"), status, report);
    }

    fn send(&self, state: Option<&str>, status: &str, report: Option<Report>) {
        let Some((socket, address)) = &self.socket else {
            return;
        };
        let mut lines: Vec<String> = state.into_iter().map(str::to_owned).collect();
        lines.push(format!("STATUS={status}"));
        lines.extend(report.iter().flat_map(Report::variables));
        let message = lines.join("\n") + "\n";
        if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
            // Said once: the manager may be restarting, and a line per ping would flood the log.
            if !self.warned.replace(true) {
                tracing::warn!("cannot notify the service manager: {e}");
            }
        }
    }
}

/// A socket for `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace. A bad value is
/// said once and ignored: the server serves without a manager rather than not at all.
fn notify_socket() -> Option<(UnixDatagram, SocketAddr)> {
    let value = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
    let opened = (|| {
        let address = match value.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&value)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        io::Result::Ok((socket, address))
    })();
    opened
        .inspect_err(|e| tracing::warn!("NOTIFY_SOCKET={value:?} is unusable: {e}"))
        .ok()
}

/// The supervisor's end of one worker's notify socket.
pub struct WorkerLine {
    socket: UnixDatagram,
    path: PathBuf,
}

/// What a worker said since the last look.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    pub anything: bool,
    pub ready: bool,
    pub report: Option<Report>,
}

impl WorkerLine {
    /// A socket at `path`, which lies in a directory only this user can enter.
    pub fn bind(path: &Path) -> io::Result<WorkerLine> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        Ok(WorkerLine {
            socket,
            path: path.to_owned(),
        })
    }

    /// The `NOTIFY_SOCKET` value that reaches this line.
    pub fn address(&self) -> &Path {
        &self.path
    }

    /// Everything that arrived, without waiting.
    pub fn drain(&self) -> Heard {
        let mut heard = Heard::default();
        let mut buf = [0u8; 4096];
        while let Ok(len) = self.socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..len]);
            heard.anything = true;
            heard.ready |= message.lines().any(|l| l == "READY=1");
            if let Some(report) = Report::parse(&message) {
                heard.report = Some(report);
            }
        }
        heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_trip_through_a_message() {
        let report = Report {
            viewers: 12,
            cameras_online: 3,
            cameras: 4,
        };
        let message = format!(
            "WATCHDOG=1\nSTATUS={report}\n{}\n",
            report.variables().join("\n")
        );
        assert_eq!(Report::parse(&message), Some(report));
        assert_eq!(report.to_string(), "12 viewers, 3 of 4 cameras online");
        assert_eq!(Report::parse("WATCHDOG=1\nX_RINGCAST_CAMERAS=x/4\n"), None);
    }

    #[test]
    fn workers_add_up_their_viewers_and_share_their_cameras() {
        let a = Report {
            viewers: 2,
            cameras_online: 3,
            cameras: 4,
        };
        let b = Report {
            viewers: 5,
            cameras_online: 2,
            cameras: 4,
        };
        assert_eq!(
            Report::combine([a, b]),
            Report {
                viewers: 7,
                cameras_online: 3,
                cameras: 4
            }
        );
    }

    #[test]
    fn a_line_hears_readiness_and_figures() {
        let dir = tempfile::tempdir().unwrap();
        let line = WorkerLine::bind(&dir.path().join("w.sock")).unwrap();
        assert_eq!(line.drain(), Heard::default());
        let sender = UnixDatagram::unbound().unwrap();
        sender
            .send_to(b"READY=1\nSTATUS=x\n", line.address())
            .unwrap();
        sender
            .send_to(
                b"WATCHDOG=1\nX_RINGCAST_VIEWERS=1\nX_RINGCAST_CAMERAS=1/2\n",
                line.address(),
            )
            .unwrap();
        let heard = line.drain();
        assert!(heard.anything && heard.ready);
        assert_eq!(
            heard.report,
            Some(Report {
                viewers: 1,
                cameras_online: 1,
                cameras: 2
            })
        );
    }
}

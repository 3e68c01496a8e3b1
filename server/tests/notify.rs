//! The binaries under a service manager, without systemd: the test plays systemd's part — a
//! datagram socket named by `NOTIFY_SOCKET`, a watchdog in `WATCHDOG_USEC` — and checks that they
//! say READY=1, ping from their main loop (a loop stopped by ptrace while the process lives stops
//! the pings, and they come back when it runs again), report their state in STATUS=, and that
//! only the main process speaks, as `NotifyAccess=main` requires.

mod common;

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};

/// The watchdog the tests set: the binaries ping every 200 ms.
const WATCHDOG_USEC: &str = "400000";
/// Far more than a ping interval: silence this long means no pings.
const SILENCE: Duration = Duration::from_millis(1500);

/// One notification and who sent it (the kernel's word, `SO_PASSCRED`).
#[derive(Debug)]
struct Message {
    pid: i32,
    text: String,
}

impl Message {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    fn status(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// The service manager's end.
struct Manager {
    socket: UnixDatagram,
    /// Holds the socket, and is the binaries' `TMPDIR`: what they leave there is seen.
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket::setsockopt(&socket, sockopt::PassCred, &true).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager { socket, dir, path }
    }

    /// `command` told to report here, with the test's watchdog.
    fn spawn(&self, command: &mut Command) -> ChildGuard {
        let child = command
            .env("NOTIFY_SOCKET", &self.path)
            .env("TMPDIR", self.dir.path())
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env_remove("WATCHDOG_PID")
            .env("RINGCAST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the binary");
        ChildGuard(child)
    }

    /// The next message within `wait`.
    fn receive(&self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(UnixCredentials);
            let Ok(msg) = socket::recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            ) else {
                continue;
            };
            let pid = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                    _ => None,
                })
                .expect("the kernel names the sender");
            let len = msg.bytes;
            return Some(Message {
                pid,
                text: String::from_utf8_lossy(&buf[..len]).into_owned(),
            });
        }
        None
    }

    /// Everything that arrives within `wait`; every message must come from `pid`.
    fn collect(&self, pid: i32, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        let mut messages = Vec::new();
        while let Some(message) = self.receive(deadline.saturating_duration_since(Instant::now())) {
            assert_eq!(
                message.pid, pid,
                "only the main process speaks: {message:?}"
            );
            messages.push(message);
        }
        messages
    }

    /// Waits (20 s at most) for a message from `pid` that `wanted` accepts.
    fn wait_for(&self, pid: i32, what: &str, wanted: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(message) = self.receive(Duration::from_millis(200)) {
                assert_eq!(
                    message.pid, pid,
                    "only the main process speaks: {message:?}"
                );
                if wanted(&message) {
                    return message;
                }
            }
        }
        panic!("no {what} within 20 s");
    }

    fn pings_within(&self, pid: i32, wait: Duration) -> usize {
        let messages = self.collect(pid, wait);
        messages.iter().filter(|m| m.has("WATCHDOG=1")).count()
    }

    /// Checks that pings come while `pid`'s main thread runs, stop while it is held, and come
    /// back once it runs again.
    fn assert_pings_follow_the_main_loop(&self, pid: i32) {
        assert!(self.pings_within(pid, Duration::from_secs(2)) >= 3);
        {
            let _held = HeldThread::hold(pid);
            // What was sent before the hold may still be queued.
            self.collect(pid, Duration::from_millis(300));
            assert_eq!(
                self.pings_within(pid, SILENCE),
                0,
                "pings went on while the main loop was stopped"
            );
        }
        self.wait_for(pid, "ping once the loop runs again", |m| {
            m.has("WATCHDOG=1")
        });
    }
}

/// One thread of another process stopped by ptrace (the others run on), until dropped. This is
/// a hung loop as the watchdog must see it: the process lives, its main loop does not move.
struct HeldThread(libc::pid_t);

impl HeldThread {
    fn hold(tid: libc::pid_t) -> HeldThread {
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take no memory from this process; the tracee
        // is a child of this test, which Linux lets its parent trace.
        let seized = unsafe {
            libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) == 0
                && libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) == 0
        };
        assert!(seized, "ptrace: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: `status` is a valid place for waitpid to write to.
        let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        assert_eq!(waited, tid, "waitpid: {}", std::io::Error::last_os_error());
        HeldThread(tid)
    }
}

impl Drop for HeldThread {
    fn drop(&mut self) {
        // SAFETY: the thread is in a ptrace stop (waited for above); detaching lets it run on.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0);
        }
    }
}

/// A process stopped with SIGSTOP, let go on when dropped: should the test fail before it is
/// replaced, it must not stay behind, stopped, holding the port (a stopped process keeps a
/// pending SIGTERM from its parent's death until it runs). SIGCONT harms no other process that
/// the pid may name by then.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn server(manager: &Manager, ring_dir: &Path, workers: u32) -> (ChildGuard, u16) {
    let port = free_port();
    let child = manager.spawn(
        Command::new(env!("CARGO_BIN_EXE_ringcast-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--workers", &workers.to_string()])
            .arg("--ring-dir")
            .arg(ring_dir),
    );
    (child, port)
}

fn pid(child: &Child) -> i32 {
    child.id() as i32
}

/// The processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_lone_worker_says_ready_reports_its_viewers_and_pings_from_its_event_loop() {
    let dir = temp_ring_dir();
    let _camera = start_capture(dir.path(), "cam1", 10, &[]);
    let manager = Manager::new();
    let (server, port) = server(&manager, dir.path(), 1);
    let pid = pid(&server.0);
    let ready = manager.wait_for(pid, "READY=1", |m| m.has("READY=1"));
    assert!(
        ready
            .status()
            .is_some_and(|s| s.contains("serving http://")),
        "{ready:?}"
    );

    wait_for("cam1 listed", || {
        let cameras = http_get(port, "/api/cameras").ok()?;
        String::from_utf8_lossy(&cameras.body)
            .contains("\"cam1\"")
            .then_some(())
    });
    let _viewer = ws_connect(port, "/ws/cam1");
    let status = manager.wait_for(pid, "a status with the viewer", |m| {
        m.status()
            .is_some_and(|s| s.ends_with(": 1 viewer, 1 of 1 cameras online"))
    });
    assert!(status.has("WATCHDOG=1"), "{status:?}");
    manager.assert_pings_follow_the_main_loop(pid);
}

#[test]
fn a_supervisor_speaks_for_its_workers_and_replaces_one_that_hangs() {
    let dir = temp_ring_dir();
    let manager = Manager::new();
    let (server, _port) = server(&manager, dir.path(), 2);
    let pid = pid(&server.0);
    let ready = manager.wait_for(pid, "READY=1", |m| m.has("READY=1"));
    assert!(
        ready
            .status()
            .is_some_and(|s| s.starts_with("2 of 2 workers up")),
        "{ready:?}"
    );

    // A worker whose loop stops (SIGSTOP: it lives, it does nothing) is replaced, while the
    // supervisor goes on pinging: the other worker still serves.
    let workers = children(pid);
    assert_eq!(workers.len(), 2, "{workers:?}");
    let _stopped = Stopped::stop(workers[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            manager.pings_within(pid, Duration::from_secs(3)) > 0,
            "the supervisor stopped pinging while a worker hung"
        );
        let now = children(pid);
        if now.len() == 2 && !now.contains(&workers[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung worker was not replaced"
        );
    }
    manager.wait_for(pid, "both workers up again", |m| {
        m.status()
            .is_some_and(|s| s.starts_with("2 of 2 workers up"))
    });
    manager.assert_pings_follow_the_main_loop(pid);

    // Stopped, it leaves nothing behind: the workers' sockets were in a directory of its own.
    stop(server);
    let left: Vec<_> = std::fs::read_dir(manager.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notify.sock"]);
}

/// SIGTERM, as systemd stops a service, and its clean exit.
fn stop(mut process: ChildGuard) {
    signal(pid(&process.0), nix::sys::signal::Signal::SIGTERM);
    let status = process.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn capture_says_ready_reports_its_camera_and_pings_from_its_main_loop() {
    let dir = temp_ring_dir();
    let manager = Manager::new();
    let capture = manager.spawn(
        Command::new(capture_binary())
            .args(["--camera", "cam1", "--source", "test"])
            .args(["--size", "320x240", "--fps", "10"])
            .arg("--ring-dir")
            .arg(dir.path()),
    );
    let pid = pid(&capture.0);
    manager.wait_for(pid, "READY=1", |m| m.has("READY=1"));
    manager.wait_for(pid, "a streaming status", |m| {
        m.status()
            .is_some_and(|s| s.starts_with("cam1: streaming 320x240 at ") && s.ends_with(" fps"))
    });
    // Only the main loop stops: the source thread goes on making frames.
    manager.assert_pings_follow_the_main_loop(pid);
}

#[test]
fn an_idle_capture_goes_on_pinging() {
    let dir = temp_ring_dir();
    let manager = Manager::new();
    let capture = manager.spawn(
        Command::new(capture_binary())
            .args(["--camera", "cam1", "--source", "test", "--on-demand"])
            .args(["--idle-after", "0.5"])
            .arg("--ring-dir")
            .arg(dir.path()),
    );
    let pid = pid(&capture.0);
    manager.wait_for(pid, "an idle status", |m| {
        m.status() == Some("cam1: idle, nobody is watching")
    });
    assert!(manager.pings_within(pid, Duration::from_secs(2)) >= 3);
}

//! `--workers N`: the parent restarts a worker that dies and stops them all on SIGTERM.

mod common;
use common::*;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn workers_of(parent: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purpose: it serves nothing and only waits to be reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_dead_worker_is_restarted_and_sigterm_stops_all_of_them() {
    let dir = temp_ring_dir();
    let mut server = Server::start(dir.path(), 2, &[]);
    let parent = server.child.id();
    let first = wait_for("two workers", || {
        let workers = workers_of(parent);
        (workers.len() == 2).then_some(workers)
    });
    kill(Pid::from_raw(first[0]), Signal::SIGKILL).expect("kill a worker");
    let second = wait_for("the killed worker to be replaced", || {
        let workers = workers_of(parent);
        (workers.len() == 2 && !workers.contains(&first[0])).then_some(workers)
    });
    assert!(second.contains(&first[1]), "the other worker kept running");
    for _ in 0..20 {
        assert_eq!(server.get("/healthz").status, 200);
    }

    kill(Pid::from_raw(parent as i32), Signal::SIGTERM).expect("SIGTERM the parent");
    let status = wait_for("the parent to exit", || {
        server.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "parent exit status {status}");
    for pid in second {
        wait_for(&format!("worker {pid} to stop"), || {
            (!alive(pid)).then_some(())
        });
    }
}

#[test]
fn a_second_server_on_the_same_port_is_refused_not_merged() {
    let dir = temp_ring_dir();
    let first = Server::start(dir.path(), 2, &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-server"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", first.port),
            "--workers",
            "2",
        ])
        .arg("--ring-dir")
        .arg(dir.path())
        .output()
        .expect("run a second server");
    assert!(!second.status.success(), "the second server must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert_eq!(first.get("/healthz").status, 200);
}

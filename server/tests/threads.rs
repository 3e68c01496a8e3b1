//! One waiting thread per worker for all its cameras (DESIGN.md: one thread per process, the
//! ring waiter being the allowed exception).

mod common;
use common::*;

/// The names of the process's threads, without io_uring's kernel workers.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|task| {
            let comm = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(comm).ok()?.trim().to_owned())
        })
        .filter(|name| !name.starts_with("iou-"))
        .collect()
}

#[test]
fn a_worker_waits_on_all_its_rings_with_one_thread() {
    let dir = temp_ring_dir();
    let _feeders: Vec<Feeder> = ["cam1", "cam2", "cam3"]
        .into_iter()
        .map(|cam| Feeder::start(dir.path(), cam, 10))
        .collect();
    let server = Server::start(dir.path(), 1, &[]);
    for cam in ["cam1", "cam2", "cam3"] {
        wait_camera_listed(&server, cam);
    }
    // A new thread carries its parent's name until it has named itself, so a listed camera's
    // waiter may still be called "ringcast-server" for a moment: wait until only the event loop
    // (the main thread) is.
    let names = wait_for("the ring waiter threads to name themselves", || {
        let names = thread_names(server.child.id());
        let unnamed = names.iter().filter(|n| *n == "ringcast-server").count();
        let waiters = names
            .iter()
            .any(|n| n == "ring-watcher" || n.starts_with("ring-signal"));
        (unnamed == 1 && waiters).then_some(names)
    });
    let watchers = names
        .iter()
        .filter(|n| n.as_str() == "ring-watcher")
        .count();
    // Thread names are cut to 15 bytes: "ring-signal-cam1" reads "ring-signal-cam".
    let per_ring = names
        .iter()
        .filter(|n| n.starts_with("ring-signal"))
        .count();
    if per_ring == 0 {
        assert_eq!(watchers, 1, "one watcher thread: {names:?}");
        assert_eq!(names.len(), 2, "the event loop and the watcher: {names:?}");
    } else {
        // Kernels without FUTEX_WAITV (before 5.16) fall back to a thread per ring.
        assert_eq!((watchers, per_ring), (0, 3), "a thread per ring: {names:?}");
    }
}

//! `RingWatcher`: every publish of every ring is signalled, however many rings there are and
//! whether or not the kernel lets it use FUTEX_WAITV, and a watcher with nothing to do sleeps.
//!
//! The tests look at the watcher's threads through /proc (their wake-ups and CPU time), so they
//! take turns: no other test of this binary starts threads while one of them counts.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ringbuf::{CameraId, RingGeometry, RingReader, RingWatcher, RingWriter, WallNanos};

/// Long enough that no tick ever stands in for a lost signal.
const NO_TICK: Duration = Duration::from_secs(3600);

/// How long a signal may take before the test calls it lost. Generous: a loaded CI machine can
/// stall a thread for a long time, and a lost signal never comes at all.
const LOST_AFTER: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn geometry() -> RingGeometry {
    RingGeometry {
        slot_count: 4,
        slot_size: 64,
    }
}

fn writer(dir: &Path, name: &str) -> RingWriter {
    RingWriter::create(dir, &CameraId::new(name).unwrap(), geometry()).unwrap()
}

fn readable_within(socket: &UnixStream, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    poll(&mut fds, ms).is_ok_and(|n| n > 0)
}

fn drain(socket: &UnixStream) {
    use std::io::Read;
    let mut buf = [0u8; 256];
    while (&*socket).read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// This process's threads whose name starts with `prefix`, by id.
fn threads_named(prefix: &str) -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            comm.starts_with(prefix).then_some(tid)
        })
        .collect()
}

/// Times the threads have gone to sleep, summed.
fn sleeps(tids: &BTreeSet<u32>) -> u64 {
    tids.iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// CPU time the threads have used, summed.
fn cpu_time(tids: &BTreeSet<u32>) -> Duration {
    let ns: u64 = tids
        .iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

#[test]
fn a_quiet_ring_beside_a_busy_one_has_every_publish_signalled() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = writer(dir.path(), "quiet");
    let mut busy = writer(dir.path(), "busy");
    let watcher = RingWatcher::start(NO_TICK).unwrap();
    let quiet_socket = watcher
        .watch(&RingReader::open(quiet.path()).unwrap())
        .unwrap();
    let busy_socket = watcher
        .watch(&RingReader::open(busy.path()).unwrap())
        .unwrap();

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The busy ring keeps the watcher passing through its loop, so a publish of the quiet
        // ring can land at any point of a pass.
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                busy.publish(b"busy", WallNanos(0)).unwrap();
                drain(&busy_socket);
            }
        });
        let _stop = StopOnDrop(&stop);
        for n in 1..=2000u64 {
            drain(&quiet_socket);
            quiet.publish(&n.to_le_bytes(), WallNanos(n)).unwrap();
            assert!(
                readable_within(&quiet_socket, LOST_AFTER),
                "publish {n} of the quiet ring was never signalled"
            );
        }
    });
}

/// Stops a helper thread of a scope however the scope's own work ends, a failed assertion
/// included: the scope could not end otherwise.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn more_rings_than_one_wait_takes_are_all_signalled_without_polling() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let before = threads_named("ring-watcher");
    let watcher = RingWatcher::start(NO_TICK).unwrap();
    let mut writers: Vec<RingWriter> = (0..300)
        .map(|n| writer(dir.path(), &format!("cam{n}")))
        .collect();
    let sockets: Vec<UnixStream> = writers
        .iter()
        .map(|w| watcher.watch(&RingReader::open(w.path()).unwrap()).unwrap())
        .collect();
    let threads: BTreeSet<u32> = threads_named("ring-watcher")
        .difference(&before)
        .copied()
        .collect();

    // Idle, the waiter threads sleep: no polling (which would wake each of them a thousand
    // times a second).
    std::thread::sleep(Duration::from_millis(100));
    sockets.iter().for_each(drain);
    let sleeps_before = sleeps(&threads);
    std::thread::sleep(Duration::from_millis(500));
    let woken = sleeps(&threads) - sleeps_before;
    assert!(
        woken < 20,
        "idle waiter threads woke {woken} times in 500 ms"
    );

    for index in [0, 126, 127, 200, 299] {
        writers[index].publish(b"x", WallNanos(1)).unwrap();
        assert!(
            readable_within(&sockets[index], LOST_AFTER),
            "ring {index} of 300 was not signalled"
        );
    }
}

/// A filter on this thread (and the threads it starts) that refuses FUTEX_WAITV with EPERM, as a
/// container's seccomp profile may.
fn refuse_futex_waitv() {
    let refuse = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let filter = [
        // The system call number is the first word of `struct seccomp_data`.
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_futex_waitv as u32,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, refuse),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points to `filter`, both alive for the calls; the kernel copies the
    // program. Without TSYNC the filter applies to this thread and those it starts only.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[test]
fn where_a_filter_refuses_futex_waitv_each_ring_gets_a_thread_and_nothing_spins() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Everything on a thread of its own: the filter cannot be taken off again.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                refuse_futex_waitv();
                let before = threads_named("ring-");
                let watcher = RingWatcher::start(NO_TICK).unwrap();
                let mut early = writer(dir.path(), "early");
                let early_socket = watcher
                    .watch(&RingReader::open(early.path()).unwrap())
                    .unwrap();
                early.publish(b"1", WallNanos(1)).unwrap();
                assert!(readable_within(&early_socket, LOST_AFTER), "early ring");
                // A ring watched after the watcher has been waiting for a while.
                std::thread::sleep(Duration::from_millis(50));
                let mut late = writer(dir.path(), "late");
                let late_socket = watcher
                    .watch(&RingReader::open(late.path()).unwrap())
                    .unwrap();
                late.publish(b"2", WallNanos(2)).unwrap();
                assert!(readable_within(&late_socket, LOST_AFTER), "late ring");

                let threads: BTreeSet<u32> = threads_named("ring-")
                    .difference(&before)
                    .copied()
                    .collect();
                assert_eq!(threads.len(), 2, "one thread per ring");
                let busy_before = cpu_time(&threads);
                let started = Instant::now();
                std::thread::sleep(Duration::from_millis(500));
                let busy = cpu_time(&threads) - busy_before;
                assert!(
                    busy < started.elapsed() / 10,
                    "idle ring threads used {busy:?} of CPU in {:?}",
                    started.elapsed()
                );
            })
            .join()
            .unwrap();
    });
}

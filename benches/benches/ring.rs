//! Benchmarks of the ring: publishing and reading 20 KB, 200 KB and 2 MB frames beside a plain
//! memcpy of the same size (the floor), and the wake-up latency from a publish to a reader blocked
//! in another process.
//!
//! The wake-up latency is measured outside criterion: each sample crosses two processes, and what
//! matters is its distribution (median, p99), which criterion does not report. The reader process
//! is this bench binary re-executed; every frame carries the CLOCK_MONOTONIC time taken just
//! before its publish, and the reader subtracts it from the time it returns the frame. A bare
//! futex wake between two processes runs interleaved with it, as the floor on this machine at
//! that moment.
//!
//! Run: `cargo bench -p ringcast-benches --bench ring`. Rings live in a temporary directory under
//! /dev/shm (tmpfs, as in production) when it exists.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ringbuf::{Clock, RingGeometry, RingReader, RingWatcher, RingWriter, SystemClock, WallNanos};
use tempfile::TempDir;

const SIZES: [(&str, usize); 3] = [("20KB", 20_000), ("200KB", 200_000), ("2MB", 2_000_000)];

/// DESIGN.md's default ring: 8 slots of 2 MiB.
const GEOMETRY: RingGeometry = RingGeometry {
    slot_count: 8,
    slot_size: 2 << 20,
};

/// Environment variable naming the role of a re-executed bench binary.
const ROLE_ENV: &str = "RINGCAST_BENCH_ROLE";

fn camera() -> ringbuf::CameraId {
    ringbuf::CameraId::new("bench").expect("a valid camera name")
}

fn ring_dir() -> TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary ring directory")
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 131 % 251) as u8).collect()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    // An empty frame shows what a publish costs besides the copy.
    for (name, size) in [("0B", 0)].into_iter().chain(SIZES) {
        let dir = ring_dir();
        let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).expect("writer");
        let frame = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &frame, |b, frame| {
            b.iter(|| {
                writer
                    .publish(black_box(frame), WallNanos(0))
                    .expect("fits")
            })
        });
    }
    group.finish();
}

/// `try_next` into a reused Vec, right after the frame was published (as a server worker does
/// when woken); only the read is timed.
fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    for (name, size) in SIZES {
        let dir = ring_dir();
        let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).expect("writer");
        let mut reader = RingReader::open(writer.path()).expect("reader");
        let frame = payload(size);
        let mut out = Vec::with_capacity(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    writer.publish(&frame, WallNanos(0)).expect("fits");
                    let start = Instant::now();
                    let got = reader.try_next(black_box(&mut out)).expect("a sound ring");
                    spent += start.elapsed();
                    assert_eq!(got.map(|meta| meta.len), Some(size));
                }
                spent
            })
        });
    }
    group.finish();
}

/// The floor: one `copy_from_slice` of the frame into a buffer of the same size. A second
/// variant copies into 8 buffers in turn, touching as much memory as the ring's 8 slots do.
fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    for (name, size) in SIZES {
        let src = payload(size);
        let mut dst = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("one", name), &src, |b, src| {
            b.iter(|| black_box(&mut dst).copy_from_slice(black_box(src)))
        });
        let mut dsts = vec![vec![0u8; size]; GEOMETRY.slot_count as usize];
        let mut next = 0;
        group.bench_with_input(BenchmarkId::new("rotating8", name), &src, |b, src| {
            b.iter(|| {
                black_box(&mut dsts[next]).copy_from_slice(black_box(src));
                next = (next + 1) % dsts.len();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = ring;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = publish, read, memcpy
}

/// What the waiting process waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// `RingReader::next_timeout`: a FUTEX_WAIT on the ring's futex word.
    NextTimeout,
    /// `RingReader::signal`: a waiter thread that writes to a socket, which the reader blocks on
    /// before `try_next` (the form an async server uses).
    SignalSocket,
    /// `RingWatcher::watch`: the one waiter thread per process (FUTEX_WAITV over every ring)
    /// that writes to the ring's socket; what ringcast-server uses.
    Watcher,
    /// No ring: a bare FUTEX_WAIT / FUTEX_WAKE pair on a shared file mapping, DESIGN.md's
    /// reference figure, measured in the same run so that the ring's own share shows under
    /// whatever else the machine is doing.
    BareFutex,
}

const WAITERS: [Waiter; 4] = [
    Waiter::BareFutex,
    Waiter::NextTimeout,
    Waiter::SignalSocket,
    Waiter::Watcher,
];

impl Waiter {
    fn name(self) -> &'static str {
        match self {
            Waiter::NextTimeout => "next_timeout",
            Waiter::SignalSocket => "signal",
            Waiter::Watcher => "watcher",
            Waiter::BareFutex => "bare_futex",
        }
    }

    fn parse(name: &str) -> Option<Waiter> {
        WAITERS.into_iter().find(|w| w.name() == name)
    }
}

/// What one wake-up run measured.
#[derive(Default)]
struct WakeUps {
    /// Publish to return from the reader's wait, in nanoseconds.
    latencies: Vec<u64>,
    /// Frames the reader never returned because it fell several frames behind.
    skipped: u64,
}

/// The bare futex baseline's shared memory: a futex word at offset 0 and the waker's
/// CLOCK_MONOTONIC stamp at offset 8, in a mapped file both processes open.
mod bare_futex {
    use std::fs::OpenOptions;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, AtomicU64};
    use std::time::Duration;

    const LEN: usize = 4096;

    pub struct Shared {
        base: *mut libc::c_void,
    }

    impl Shared {
        pub fn map(path: &Path) -> Shared {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .expect("the futex file");
            file.set_len(LEN as u64).expect("size the futex file");
            // SAFETY: a fresh shared mapping of a file of LEN bytes; the pointer is checked below
            // and unmapped only in Drop, after every reference handed out has gone.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap the futex file");
            Shared { base }
        }

        pub fn word(&self) -> &AtomicU32 {
            // SAFETY: offset 0 of a live, page-aligned mapping; both processes touch it only
            // through atomics, for which any bit pattern is valid.
            unsafe { &*self.base.cast::<AtomicU32>() }
        }

        pub fn stamp(&self) -> &AtomicU64 {
            // SAFETY: as for `word`, at offset 8 (8-byte aligned), within the mapping.
            unsafe { &*self.base.cast::<u8>().add(8).cast::<AtomicU64>() }
        }
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            // SAFETY: `base` came from mmap of LEN bytes and nothing borrowed from it outlives self.
            unsafe { libc::munmap(self.base, LEN) };
        }
    }

    /// FUTEX_WAIT (shared) while the word equals `expected`, at most `timeout`.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a live aligned u32 and `ts` outlives the call; every outcome
        // (woken, value changed, timeout, signal) makes the caller re-check.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
            )
        };
    }

    pub fn wake(word: &AtomicU32) {
        // SAFETY: `word` is a live aligned u32; FUTEX_WAKE only hashes its address.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
    }
}

/// Wake-ups before the measured ones, one lap of the ring and some: the first touch of each page
/// of a fresh mapping faults, which a long-lived ring pays once, not per frame.
const WARMUP: usize = 72;

/// Wakes a process of role `waiter` `WARMUP + count` times, one every millisecond (long enough
/// for it to have handled the last wake-up and gone back to sleep), `frame_size` bytes each for a
/// ring, and returns what it measured over the last `count`.
fn wake_ups(waiter: Waiter, frame_size: usize, count: usize) -> WakeUps {
    use std::sync::atomic::Ordering::{Relaxed, Release};
    let dir = ring_dir();
    // Many slots, so that a reader descheduled for a while still gets every frame late (and the
    // delay shows in the figures) instead of skipping frames whose latency would go uncounted.
    let geometry = RingGeometry {
        slot_count: 64,
        slot_size: frame_size.max(8),
    };
    let futex_path = dir.path().join("futex");
    let mut publish: Box<dyn FnMut(u64)> = if waiter == Waiter::BareFutex {
        let shared = bare_futex::Shared::map(&futex_path);
        Box::new(move |now| {
            shared.stamp().store(now, Relaxed);
            shared.word().fetch_add(1, Release);
            bare_futex::wake(shared.word());
        })
    } else {
        let mut writer = RingWriter::create(dir.path(), &camera(), geometry).expect("writer");
        let mut frame = payload(frame_size.max(8));
        Box::new(move |now| {
            frame[..8].copy_from_slice(&now.to_le_bytes());
            writer.publish(&frame, WallNanos(now)).expect("fits");
        })
    };
    let path = match waiter {
        Waiter::BareFutex => futex_path,
        _ => ringbuf::ring_path(dir.path(), &camera()),
    };
    let mut child = spawn_waiter(&path, waiter, WARMUP + count);
    let mut output = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut ready = String::new();
    output.read_line(&mut ready).expect("waiter output");
    assert_eq!(ready.trim(), "ready", "the waiting process did not start");

    for _ in 0..WARMUP + count {
        std::thread::sleep(Duration::from_millis(1));
        publish(SystemClock.mono().0);
    }
    let mut rest = String::new();
    output.read_to_string(&mut rest).expect("waiter output");
    let status = child.wait().expect("waiter exit");
    assert!(status.success(), "the waiting process failed: {status}");
    let mut numbers = rest
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("a number"));
    let skipped = numbers.next().expect("the waiter's skip count");
    let latencies: Vec<u64> = numbers.collect();
    assert_eq!(
        latencies.len() as u64 + skipped,
        count as u64,
        "wake-ups neither seen nor skipped"
    );
    WakeUps { latencies, skipped }
}

fn spawn_waiter(path: &Path, waiter: Waiter, total: usize) -> Child {
    Command::new(std::env::current_exe().expect("path of the bench binary"))
        .env(ROLE_ENV, waiter.name())
        .env("WAIT_PATH", path)
        .env("COUNT", total.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the waiting process")
}

/// What a waiting process saw of the wake-ups after the warm-up.
#[derive(Default)]
struct Tally {
    last: u64,
    missed: u64,
    latencies: Vec<u64>,
}

impl Tally {
    /// Wake-up (or frame) number `n`, seen `latency` ns after it was sent; numbers start at 1
    /// and only grow.
    fn saw(&mut self, n: u64, latency: u64) {
        let warmup = WARMUP as u64;
        if n > warmup {
            self.missed += n - self.last.max(warmup) - 1;
            self.latencies.push(latency);
        }
        self.last = n;
    }

    fn print(&self) {
        println!("{}", self.missed);
        let text: Vec<String> = self.latencies.iter().map(u64::to_string).collect();
        println!("{}", text.join(" "));
    }
}

/// The waiting process: prints "ready", then how many of the measured wake-ups it missed and
/// the latency of each one it saw, in ns.
fn waiter_process(waiter: Waiter) {
    let path = PathBuf::from(std::env::var_os("WAIT_PATH").expect("WAIT_PATH"));
    let count: u64 = std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .expect("COUNT");
    let tally = match waiter {
        Waiter::BareFutex => wait_bare(&path, count),
        _ => wait_ring(&path, waiter, count),
    };
    tally.print();
}

fn wait_bare(path: &Path, count: u64) -> Tally {
    use std::sync::atomic::Ordering::{Acquire, Relaxed};
    let shared = bare_futex::Shared::map(path);
    let mut seen = shared.word().load(Acquire);
    println!("ready");
    let mut tally = Tally::default();
    while u64::from(seen) < count {
        bare_futex::wait(shared.word(), seen, Duration::from_secs(10));
        let now = SystemClock.mono().0;
        let value = shared.word().load(Acquire);
        if value != seen {
            let stamp = shared.stamp().load(Relaxed);
            tally.saw(u64::from(value), now.saturating_sub(stamp));
            seen = value;
        }
    }
    tally
}

fn wait_ring(path: &Path, waiter: Waiter, count: u64) -> Tally {
    let mut reader = RingReader::open(path).expect("open the ring");
    // Kept alive for the whole wait: dropping the watcher stops its thread.
    let watcher = (waiter == Waiter::Watcher)
        .then(|| RingWatcher::start(Duration::from_secs(1)).expect("watcher"));
    let mut socket = match (waiter, &watcher) {
        (Waiter::SignalSocket, _) => Some(reader.signal(Duration::from_secs(1)).expect("signal")),
        (Waiter::Watcher, Some(watcher)) => Some(watcher.watch(&reader).expect("watch")),
        _ => None,
    };
    if let Some(socket) = &socket {
        socket.set_nonblocking(false).expect("blocking socket");
    }
    println!("ready");
    let mut out = Vec::new();
    let mut tally = Tally::default();
    let mut wakeup = [0u8; 64];
    loop {
        let meta = match socket.as_mut() {
            None => reader
                .next_timeout(&mut out, Duration::from_secs(10))
                .expect("a sound ring")
                .expect("a frame within 10 s"),
            Some(socket) => loop {
                if let Some(meta) = reader.try_next(&mut out).expect("a sound ring") {
                    break meta;
                }
                let woken = socket.read(&mut wakeup).expect("wake-up socket");
                assert!(woken > 0, "the signal thread closed its socket");
            },
        };
        let now = SystemClock.mono().0;
        let stamp = u64::from_le_bytes(out[..8].try_into().expect("8 bytes"));
        tally.saw(meta.frame_no.0, now.saturating_sub(stamp));
        if meta.frame_no.0 >= count {
            return tally;
        }
    }
}

/// A wake-up the waiter never saw on its own (it was more than a millisecond late, so the next
/// one overtook it): sorts after every measured latency.
const MISSED: u64 = u64::MAX;

fn percentile(sorted: &[u64], p: f64) -> String {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    match sorted[index] {
        MISSED => "(missed)".to_owned(),
        ns => format!("{:.1} us", ns as f64 / 1000.0),
    }
}

/// Runs every case in turn, `rounds` times, so that each sees the same mix of quiet and busy
/// moments on a shared machine, then prints each one's distribution.
fn report_wake_ups(count: usize, rounds: usize) {
    let cases: Vec<(Waiter, &str, usize)> = WAITERS
        .into_iter()
        .flat_map(|waiter| match waiter {
            Waiter::BareFutex => vec![(waiter, "-", 8)],
            _ => vec![(waiter, "64B", 64), (waiter, "200KB", 200_000)],
        })
        .collect();
    let mut results: Vec<WakeUps> = cases.iter().map(|_| WakeUps::default()).collect();
    for _ in 0..rounds {
        for ((waiter, _, size), result) in cases.iter().zip(&mut results) {
            let round = wake_ups(*waiter, *size, count / rounds);
            result.latencies.extend(round.latencies);
            result.skipped += round.skipped;
        }
    }
    println!(
        "\nwake-up latency, publish -> waiter in another process ({count} wake-ups each, \
         {rounds} interleaved rounds):"
    );
    for ((waiter, size, _), mut result) in cases.into_iter().zip(results) {
        let missed = usize::try_from(result.skipped).expect("a count of wake-ups");
        result
            .latencies
            .resize(result.latencies.len() + missed, MISSED);
        result.latencies.sort_unstable();
        let l = &result.latencies;
        println!(
            "wake/{}/{size}: median {}, p90 {}, p99 {}, max {}, {} missed (counted as late)",
            waiter.name(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            percentile(l, 1.0),
            result.skipped,
        );
    }
}

fn main() {
    if let Some(waiter) = std::env::var(ROLE_ENV)
        .ok()
        .as_deref()
        .and_then(Waiter::parse)
    {
        waiter_process(waiter);
        return;
    }
    ring();
    // `cargo bench` passes --bench; without it (cargo test) this is a smoke run.
    if std::env::args().any(|arg| arg == "--bench") {
        report_wake_ups(2000, 4);
    } else {
        report_wake_ups(20, 2);
    }
    Criterion::default().configure_from_args().final_summary();
}

//! Benchmarks of the ring: publishing and reading 20 KB, 200 KB and 2 MB frames beside a plain
//! memcpy of the same size (the floor), and the wake-up latency from a publish to a reader blocked
//! in another process.
//!
//! The wake-up latency is measured outside criterion: each sample crosses two processes, and what
//! matters is its distribution (median, p99), which criterion does not report. The reader process
//! is this bench binary re-executed; every frame carries the CLOCK_MONOTONIC time taken just
//! before its publish, and the reader subtracts it from the time it returns the frame.
//!
//! Run: `cargo bench -p ringcast-benches --bench ring`. Rings live in a temporary directory under
//! /dev/shm (tmpfs, as in production) when it exists.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ringbuf::{Clock, RingGeometry, RingReader, RingWriter, SystemClock, WallNanos};
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

/// The ring's payload copy loops by themselves, on heap memory, to attribute the cost of publish
/// and read. These mirror `store_words` and `load_words` in `ringbuf/src/seqlock.rs` (private
/// there); keep them in step with it.
mod copy_loops {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    const WORD: usize = 8;

    pub fn store_words(dst: &[AtomicU64], src: &[u8]) {
        let mut chunks = src.chunks_exact(WORD);
        for (word, chunk) in dst.iter().zip(&mut chunks) {
            let bytes: [u8; WORD] = chunk.try_into().expect("chunks_exact yields whole words");
            word.store(u64::from_ne_bytes(bytes), Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut bytes = [0u8; WORD];
            bytes[..tail.len()].copy_from_slice(tail);
            dst[src.len() / WORD].store(u64::from_ne_bytes(bytes), Relaxed);
        }
    }

    pub fn load_words(src: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
        let words = len.div_ceil(WORD);
        out.clear();
        out.resize(words * WORD, 0);
        load_loop(src, words, out);
        out.truncate(len);
    }

    /// `load_words` without its `clear` + `resize` (which writes zeros over the whole frame
    /// before the loop overwrites them): `out` already holds `words * 8` bytes.
    pub fn load_loop(src: &[AtomicU64], words: usize, out: &mut [u8]) {
        for (chunk, word) in out.chunks_exact_mut(WORD).zip(&src[..words]) {
            chunk.copy_from_slice(&word.load(Relaxed).to_ne_bytes());
        }
    }
}

fn copy_parts(c: &mut Criterion) {
    use std::sync::atomic::AtomicU64;
    let mut group = c.benchmark_group("copy_loops");
    for (name, size) in SIZES {
        let src = payload(size);
        let words = size.div_ceil(8);
        let slot: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        copy_loops::store_words(&slot, &src);
        let mut out = Vec::with_capacity(words * 8);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("store_words", name), &src, |b, src| {
            b.iter(|| copy_loops::store_words(black_box(&slot), black_box(src)))
        });
        group.bench_function(BenchmarkId::new("load_words", name), |b| {
            b.iter(|| copy_loops::load_words(black_box(&slot), size, black_box(&mut out)))
        });
        out.resize(words * 8, 0);
        group.bench_function(BenchmarkId::new("load_loop_only", name), |b| {
            b.iter(|| copy_loops::load_loop(black_box(&slot), words, black_box(&mut out)))
        });
    }
    group.finish();
}

criterion_group! {
    name = ring;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = publish, read, memcpy, copy_parts
}

/// How the reader process waits for frames.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    /// `RingReader::next_timeout`: a FUTEX_WAIT on the ring's futex word.
    NextTimeout,
    /// `RingReader::signal`: a waiter thread that writes to a socket, which the reader blocks on
    /// before `try_next` (the form an async server uses).
    SignalSocket,
}

impl Waiter {
    fn name(self) -> &'static str {
        match self {
            Waiter::NextTimeout => "next_timeout",
            Waiter::SignalSocket => "signal",
        }
    }

    fn parse(name: &str) -> Option<Waiter> {
        [Waiter::NextTimeout, Waiter::SignalSocket]
            .into_iter()
            .find(|w| w.name() == name)
    }
}

/// What one wake-up run measured.
struct WakeUps {
    /// Publish to return from the reader's wait, in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// Frames the reader never returned because it fell several frames behind.
    skipped: u64,
}

/// Publishes `count` frames, one every millisecond, to a reader in another process.
fn wake_ups(waiter: Waiter, frame_size: usize, count: usize) -> WakeUps {
    let dir = ring_dir();
    // Many slots, so that a reader descheduled for a while still gets every frame late (and the
    // delay shows in the figures) instead of skipping frames whose latency would go uncounted.
    let geometry = RingGeometry {
        slot_count: 64,
        slot_size: frame_size.max(8),
    };
    let mut writer = RingWriter::create(dir.path(), &camera(), geometry).expect("writer");
    let mut child = spawn_wake_reader(writer.path(), waiter, count);
    let mut output = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut ready = String::new();
    output.read_line(&mut ready).expect("reader output");
    assert_eq!(ready.trim(), "ready", "the reader process did not start");

    let mut frame = payload(frame_size.max(8));
    for _ in 0..count {
        // Long enough for the reader to have handled the last frame and gone back to sleep.
        std::thread::sleep(Duration::from_millis(1));
        let now = SystemClock.mono().0;
        frame[..8].copy_from_slice(&now.to_le_bytes());
        writer.publish(&frame, WallNanos(now)).expect("fits");
    }
    let mut rest = String::new();
    output.read_to_string(&mut rest).expect("reader output");
    let status = child.wait().expect("reader exit");
    assert!(status.success(), "the reader process failed: {status}");
    let mut numbers = rest
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("a number"));
    let skipped = numbers.next().expect("the reader's skip count");
    let mut latencies: Vec<u64> = numbers.collect();
    assert_eq!(
        latencies.len() as u64 + skipped,
        count as u64,
        "frames neither returned nor skipped"
    );
    latencies.sort_unstable();
    WakeUps { latencies, skipped }
}

fn spawn_wake_reader(path: &Path, waiter: Waiter, count: usize) -> Child {
    Command::new(std::env::current_exe().expect("path of the bench binary"))
        .env(ROLE_ENV, waiter.name())
        .env("RING_PATH", path)
        .env("COUNT", count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the reader process")
}

/// The reader process: prints "ready", then the latency of each frame in ns.
fn wake_reader(waiter: Waiter) {
    let path = PathBuf::from(std::env::var_os("RING_PATH").expect("RING_PATH"));
    let count: usize = std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .expect("COUNT");
    let mut reader = RingReader::open(&path).expect("open the ring");
    let mut socket = match waiter {
        Waiter::NextTimeout => None,
        Waiter::SignalSocket => {
            let socket = reader.signal(Duration::from_secs(1)).expect("signal");
            socket.set_nonblocking(false).expect("blocking socket");
            Some(socket)
        }
    };
    println!("ready");
    let mut out = Vec::new();
    let mut latencies = Vec::with_capacity(count);
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
        debug_assert_eq!(meta.capture.0, stamp);
        latencies.push(now.saturating_sub(stamp));
        if meta.frame_no.0 >= count as u64 {
            break;
        }
    }
    // Frames skipped (the reader was descheduled for several frames) have no latency.
    println!("{}", reader.stats().skipped);
    let text: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!("{}", text.join(" "));
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn report_wake_ups(count: usize) {
    println!("\nwake-up latency, publish -> reader in another process ({count} wake-ups each):");
    for waiter in [Waiter::NextTimeout, Waiter::SignalSocket] {
        for (name, size) in [("64B", 64), ("200KB", 200_000)] {
            let WakeUps { latencies, skipped } = wake_ups(waiter, size, count);
            println!(
                "wake/{}/{name}: median {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us, \
                 {skipped} frames skipped",
                waiter.name(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.9),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0),
            );
        }
    }
}

fn main() {
    if let Some(waiter) = std::env::var(ROLE_ENV)
        .ok()
        .as_deref()
        .and_then(Waiter::parse)
    {
        wake_reader(waiter);
        return;
    }
    ring();
    // `cargo bench` passes --bench; without it (cargo test) this is a smoke run.
    let benching = std::env::args().any(|arg| arg == "--bench");
    report_wake_ups(if benching { 2000 } else { 20 });
    Criterion::default().configure_from_args().final_summary();
}

//! Multi-process stress: one writer process, four reader processes (one deliberately slow), all
//! on one ring file. Every frame checks itself (see `common::check_frame`), so a reader that
//! returned torn, stale or foreign bytes fails the run. Once paced at about 1,000 frames/s, which
//! the fast readers follow without missing a frame; once flat out, where readers are lapped and
//! torn copies must be discarded, never returned.
//!
//! The children are this test binary re-executed (`child_process` dispatches on the role).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{check_frame, env, env_u64, mix, report, ChildProcess, FrameMaker, PATIENCE};
use ringbuf::{CameraId, FrameNo, RingGeometry, RingReader, RingWriter, WallNanos};
use serde_json::{json, Value};

const FRAMES: u64 = 20_000;
/// Salt of every frame in these runs (there is one writer).
const SALT: u64 = 0x5EED;
const CAMERA: &str = "stress";
const FAST_READERS: usize = 3;

/// The two runs share the machine's two cores; run them one after the other so the paced run's
/// promise ("fast readers miss nothing") is tested on a machine not also busy with the flat-out run.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    geometry: RingGeometry,
    /// Time between frames; `None` = flat out.
    pace: Option<Duration>,
    /// What the slow reader sleeps after each frame it gets.
    slow_delay: Duration,
}

/// The length of frame `frame`: spread over `0..=slot_size`, both ends included regularly.
fn frame_len(frame: u64, slot_size: usize) -> usize {
    match frame % 100 {
        0 => 0,
        1 => slot_size,
        2 => common::STAMP_LEN - 1,
        _ => (mix(frame) % (slot_size as u64 + 1)) as usize,
    }
}

#[test]
fn paced_fast_readers_miss_nothing_and_the_slow_reader_counts_its_gaps() {
    // 256 slots at 1 ms a frame: a fast reader may be descheduled for a quarter of a second on
    // a busy machine before it would have to skip.
    let run = Run {
        geometry: RingGeometry {
            slot_count: 256,
            slot_size: 4096,
        },
        pace: Some(Duration::from_millis(1)),
        slow_delay: Duration::from_millis(5),
    };
    let results = stress(&run);
    println!("paced: slow reader {:?}", results.slow);
    for fast in &results.fast {
        assert_eq!(
            fast.frames, FRAMES,
            "a fast reader missed frames at 1,000 frames/s: {fast:?}"
        );
        assert_eq!(fast.skipped, 0, "{fast:?}");
        assert_eq!(fast.max_gap, 0, "{fast:?}");
    }
}

#[test]
fn flat_out_nothing_torn_is_returned() {
    // As few slots as a ring may have: a reader copies the newest frame while the writer fills
    // the other slot and then overwrites the one being copied, so copies race the writer.
    let run = Run {
        geometry: RingGeometry {
            slot_count: 2,
            slot_size: 16 * 1024,
        },
        pace: None,
        slow_delay: Duration::from_millis(1),
    };
    let results = stress(&run);
    let lapped: u64 = results.fast.iter().map(|r| r.skipped + r.torn).sum();
    println!(
        "flat out: fast readers' (frames, skipped, torn) = {:?}; slow {:?}",
        results
            .fast
            .iter()
            .map(|r| (r.frames, r.skipped, r.torn))
            .collect::<Vec<_>>(),
        (results.slow.frames, results.slow.skipped, results.slow.torn)
    );
    assert!(
        lapped > 0,
        "flat out, no fast reader was ever lapped: the run did not race reads against writes"
    );
}

/// What one reader process saw, as it reported it.
#[derive(Debug)]
struct ReaderResult {
    frames: u64,
    last: u64,
    gap_sum: u64,
    max_gap: u64,
    skipped: u64,
    delivered: u64,
    torn: u64,
}

struct Results {
    fast: Vec<ReaderResult>,
    slow: ReaderResult,
}

/// Runs one writer and four readers over a fresh ring and checks what holds in every run.
fn stress(run: &Run) -> Results {
    let _alone = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let camera = CameraId::new(CAMERA).unwrap();
    // The file exists before the readers start; the writer process takes it over.
    let path = RingWriter::create(dir.path(), &camera, run.geometry)
        .unwrap()
        .path()
        .to_owned();

    let mut readers: Vec<ChildProcess> = (0..=FAST_READERS)
        .map(|i| {
            let slow = i == FAST_READERS;
            let delay = if slow { run.slow_delay } else { Duration::ZERO };
            spawn_reader(&path, delay)
        })
        .collect();
    for reader in &mut readers {
        assert_eq!(reader.report(PATIENCE)["ready"], true);
    }

    let mut writer = spawn_writer(dir.path(), run);
    let written = writer.report(PATIENCE);
    assert_eq!(written["published"], FRAMES, "writer: {written}");
    writer.finish(PATIENCE);

    let mut results: Vec<ReaderResult> = readers
        .iter_mut()
        .map(|reader| check_reader(reader.report(PATIENCE)))
        .collect();
    for reader in readers {
        reader.finish(PATIENCE);
    }
    let slow = results.pop().expect("the slow reader");

    // The writer was never held back: it published every frame while the slow reader, which
    // cannot take more than a fraction of them, skipped the rest.
    assert!(
        slow.frames < FRAMES,
        "the slow reader was not slow: {slow:?}"
    );
    assert!(slow.skipped > 0, "the slow reader never skipped: {slow:?}");
    Results {
        fast: results,
        slow,
    }
}

/// Checks what holds for every reader and turns its report into a [`ReaderResult`].
fn check_reader(report: Value) -> ReaderResult {
    let bad = report["bad"].as_u64().unwrap();
    assert_eq!(
        bad, 0,
        "a reader returned frames that fail their check: {report}"
    );
    assert_eq!(report["error"], Value::Null, "{report}");
    let number = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    let stats = &report["stats"];
    let result = ReaderResult {
        frames: number("frames"),
        last: number("last"),
        gap_sum: number("gap_sum"),
        max_gap: number("max_gap"),
        skipped: stats["skipped"].as_u64().unwrap(),
        delivered: stats["delivered"].as_u64().unwrap(),
        torn: stats["torn"].as_u64().unwrap(),
    };
    assert_eq!(
        result.last, FRAMES,
        "a reader never got the last frame: {report}"
    );
    assert_eq!(
        result.delivered, result.frames,
        "delivered counts every frame returned: {report}"
    );
    assert_eq!(
        result.skipped, result.gap_sum,
        "skipped must equal the gaps between the frame numbers returned: {report}"
    );
    assert_eq!(
        result.frames + result.gap_sum,
        FRAMES,
        "every frame number is either returned or skipped: {report}"
    );
    result
}

fn spawn_reader(path: &Path, delay: Duration) -> ChildProcess {
    ChildProcess::spawn(
        "child_process",
        "reader",
        &[
            ("RING_PATH", path.display().to_string()),
            ("FRAMES", FRAMES.to_string()),
            ("DELAY_US", delay.as_micros().to_string()),
        ],
    )
}

fn spawn_writer(dir: &Path, run: &Run) -> ChildProcess {
    let pace = run.pace.map_or(0, |p| p.as_micros());
    ChildProcess::spawn(
        "child_process",
        "writer",
        &[
            ("RING_DIR", dir.display().to_string()),
            ("FRAMES", FRAMES.to_string()),
            ("PACE_US", pace.to_string()),
            ("SLOT_COUNT", run.geometry.slot_count.to_string()),
            ("SLOT_SIZE", run.geometry.slot_size.to_string()),
        ],
    )
}

/// The entry point of the child processes; does nothing in a normal test run.
#[test]
fn child_process() {
    match std::env::var(common::ROLE_ENV).as_deref() {
        Ok("writer") => writer_process(),
        Ok("reader") => reader_process(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {}
    }
}

fn writer_process() {
    let dir = PathBuf::from(env("RING_DIR"));
    let frames = env_u64("FRAMES");
    let pace = Duration::from_micros(env_u64("PACE_US"));
    let geometry = RingGeometry {
        slot_count: env_u64("SLOT_COUNT") as u32,
        slot_size: env_u64("SLOT_SIZE") as usize,
    };
    let mut writer = RingWriter::create(&dir, &CameraId::new(CAMERA).unwrap(), geometry).unwrap();
    assert_eq!(writer.head(), FrameNo::NONE);
    let maker = FrameMaker::start(1, SALT, move |n| frame_len(n, geometry.slot_size));
    let start = Instant::now();
    for n in 1..=frames {
        let (frame, payload) = maker.next();
        let published = writer.publish(&payload, WallNanos(n)).unwrap();
        assert_eq!(published, FrameNo(frame));
        maker.recycle(payload);
        if !pace.is_zero() {
            let due = start + pace * n as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    report(json!({ "published": writer.head().0 }));
}

fn reader_process() {
    let path = PathBuf::from(env("RING_PATH"));
    let frames = env_u64("FRAMES");
    let delay = Duration::from_micros(env_u64("DELAY_US"));
    let mut reader = RingReader::open(&path).unwrap();
    report(json!({ "ready": true }));

    let mut buf = Vec::new();
    // The reader opened before the first frame, so its cursor starts at frame 1.
    let mut previous = FrameNo::NONE;
    let (mut count, mut gap_sum, mut max_gap, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut first_bad: Option<String> = None;
    let mut error: Option<String> = None;
    loop {
        match reader.next_timeout(&mut buf, PATIENCE) {
            Ok(Some(meta)) => {
                count += 1;
                if meta.frame_no <= previous {
                    bad += 1;
                    first_bad.get_or_insert(format!(
                        "frame {} returned after frame {previous}",
                        meta.frame_no
                    ));
                } else {
                    let gap = previous.gap_to(meta.frame_no);
                    gap_sum += gap;
                    max_gap = max_gap.max(gap);
                }
                if let Err(why) = check_frame(&meta, &buf, SALT) {
                    bad += 1;
                    first_bad.get_or_insert(why);
                }
                if meta.capture != WallNanos(meta.frame_no.0) {
                    bad += 1;
                    first_bad.get_or_insert(format!(
                        "frame {}: capture time {:?}",
                        meta.frame_no, meta.capture
                    ));
                }
                previous = previous.max(meta.frame_no);
                if meta.frame_no.0 >= frames {
                    break;
                }
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
            }
            Ok(None) => {
                error = Some(format!(
                    "no frame within {PATIENCE:?} after frame {previous}"
                ));
                break;
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    report(json!({
        "frames": count,
        "last": previous.0,
        "gap_sum": gap_sum,
        "max_gap": max_gap,
        "bad": bad,
        "first_bad": first_bad,
        "error": error,
        "stats": reader.stats(),
    }));
}

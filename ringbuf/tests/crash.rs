//! A writer killed with SIGKILL in the middle of a write, many times over, on one ring file that
//! a reader keeps open throughout: the reader never returns a partial frame, every new writer
//! takes the same file over and resumes numbering right after the last published frame, and the
//! reader never sees a frame number go back.
//!
//! The writers are this test binary re-executed (`child_process` dispatches on the role). Frames
//! are large so that a publish takes long enough for a random kill to land inside it; after each
//! kill the test reads the slot's sequence word from the file to count the kills that did.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{
    check_frame, env, env_u64, fill_frame, report, wait_until, ChildProcess, FrameMaker, Rng,
};
use ringbuf::{
    CameraId, FrameNo, OfflineReason, RingGeometry, RingReader, RingWriter, WallNanos, WriterStatus,
};
use serde_json::json;

const KILLS: u64 = 50;
const CAMERA: &str = "crash";
const GEOMETRY: RingGeometry = RingGeometry {
    slot_count: 8,
    slot_size: 1 << 20,
};
/// The salt of the frame the test itself publishes at the end, after the last kill.
const FINAL_SALT: u64 = u64::MAX;

/// Offsets in the ring file (see `mapped.rs`): the header page is 4096 bytes; each slot is a
/// 64-byte metadata block (`seq` first) followed by the payload rounded up to 64 bytes.
const HEADER_SIZE: u64 = 4096;
const SLOT_STRIDE: u64 = 64 + (1 << 20);

/// What the reader that stayed open saw over the whole test.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    last: FrameNo,
    /// Frames that failed their check, or came after a frame with a higher or equal number.
    bad: Vec<String>,
    /// Salts (writer generations) of the frames returned, each once, in the order they came.
    salts: Vec<u64>,
}

#[test]
fn a_writer_killed_mid_write_leaves_no_partial_frame_and_a_new_writer_takes_over() {
    let (mut rng, seed) = Rng::from_time();
    println!("schedule seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let camera = CameraId::new(CAMERA).unwrap();
    let path = RingWriter::create(dir.path(), &camera, GEOMETRY)
        .unwrap()
        .path()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicU64::new(0));
    let reading = {
        let mut reader = RingReader::open(&path).unwrap();
        let (stop, returned) = (Arc::clone(&stop), Arc::clone(&returned));
        std::thread::spawn(move || {
            let seen = follow(&mut reader, &stop, &returned);
            (seen, reader)
        })
    };
    let observer = RingReader::open(&path).unwrap();
    let mut kills_mid_write = 0;

    for generation in 1..=KILLS {
        let head_before = observer.head();
        let mut writer = ChildProcess::spawn(
            "child_process",
            "writer",
            &[
                ("RING_DIR", dir.path().display().to_string()),
                ("SALT", generation.to_string()),
                ("SEED", rng.next_u64().to_string()),
            ],
        );
        let started = writer.report(common::PATIENCE);
        assert_eq!(
            started["next"],
            head_before.next().0,
            "writer {generation} does not resume after the last published frame"
        );

        // Kill once the writer is well under way and the reader has had a frame of it, so that
        // the reader's view spans every writer.
        let target = head_before.0 + rng.range(1, 3);
        wait_until(&format!("writer {generation} publishing"), || {
            observer.head().0 >= target && returned.load(Relaxed) > head_before.0
        });
        // Half the kills come at any moment; the other half once the next slot is marked
        // "being written", a little later, so that many land inside a write.
        if generation % 2 == 0 {
            wait_until(&format!("writer {generation} writing"), || {
                slot_being_written(&path, observer.head())
            });
            std::thread::sleep(Duration::from_micros(rng.range(0, 500)));
        } else {
            std::thread::sleep(Duration::from_micros(rng.range(0, 4000)));
        }
        writer.kill();

        if slot_being_written(&path, observer.head()) {
            kills_mid_write += 1;
        }
        assert_eq!(
            observer.writer_status(Duration::from_secs(3600)),
            WriterStatus::Offline(OfflineReason::ProcessGone { pid: writer.pid() })
        );
    }

    // The test itself takes over last, and the reader must get what it publishes.
    let last_head = observer.head();
    let mut writer = RingWriter::create(dir.path(), &camera, GEOMETRY).unwrap();
    assert_eq!(writer.head(), last_head);
    let mut payload = Vec::new();
    fill_frame(&mut payload, last_head.next().0, 1000, FINAL_SALT);
    assert_eq!(
        writer.publish(&payload, WallNanos(0)).unwrap(),
        last_head.next()
    );
    stop.store(true, Relaxed);
    let (seen, reader) = reading.join().expect("the reader thread panicked");

    println!(
        "{KILLS} kills, {kills_mid_write} in the middle of a write; reader: {} frames, stats {:?}",
        seen.frames,
        reader.stats()
    );
    assert!(seen.bad.is_empty(), "bad frames: {:?}", seen.bad);
    assert_eq!(
        seen.last,
        last_head.next(),
        "the reader missed the last frame"
    );
    assert_eq!(seen.salts.last(), Some(&FINAL_SALT));
    let every_writer: Vec<u64> = (1..=KILLS).chain([FINAL_SALT]).collect();
    assert_eq!(
        seen.salts, every_writer,
        "the reader did not see each writer's frames in order"
    );
    assert!(!reader.is_replaced(), "the ring file was replaced");
    assert_eq!(reader.info().writer_starts, KILLS + 2);
    assert!(
        kills_mid_write >= KILLS / 5,
        "only {kills_mid_write} of {KILLS} kills landed inside a write: the test did not test that"
    );
}

/// Reads until `stop` is set and nothing more comes, checking every frame.
fn follow(reader: &mut RingReader, stop: &AtomicBool, returned: &AtomicU64) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    loop {
        match reader.next_timeout(&mut buf, Duration::from_millis(100)) {
            Ok(Some(meta)) => {
                seen.frames += 1;
                if meta.frame_no <= seen.last {
                    seen.bad
                        .push(format!("frame {} after {}", meta.frame_no, seen.last));
                }
                seen.last = seen.last.max(meta.frame_no);
                returned.store(seen.last.0, Relaxed);
                match check_frame(&meta, &buf, 0) {
                    Ok(salt) if seen.salts.last() != Some(&salt) => seen.salts.push(salt),
                    Ok(_) => {}
                    Err(why) => seen.bad.push(why),
                }
            }
            Ok(None) if stop.load(Relaxed) => return seen,
            Ok(None) => {}
            Err(e) => seen.bad.push(e.to_string()),
        }
    }
}

/// Whether the slot of the frame after `head` is marked "being written" (after a kill: the
/// writer died between marking it and completing it).
fn slot_being_written(path: &Path, head: FrameNo) -> bool {
    let next = head.next().0;
    let slot = next % u64::from(GEOMETRY.slot_count);
    let mut seq = [0u8; 8];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut seq, HEADER_SIZE + slot * SLOT_STRIDE)
        .unwrap();
    u64::from_le_bytes(seq) == 2 * next - 1
}

/// The entry point of the writer processes; does nothing in a normal test run.
#[test]
fn child_process() {
    match std::env::var(common::ROLE_ENV).as_deref() {
        Ok("writer") => writer_process(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {}
    }
}

/// Takes the ring over and publishes large frames flat out until killed.
fn writer_process() {
    let dir = PathBuf::from(env("RING_DIR"));
    let salt = env_u64("SALT");
    let mut rng = Rng::new(env_u64("SEED"));
    let mut writer = RingWriter::create(&dir, &CameraId::new(CAMERA).unwrap(), GEOMETRY).unwrap();
    let first = writer.next_frame_no();
    report(json!({ "next": first.0 }));
    let half = GEOMETRY.slot_size as u64 / 2;
    let maker = FrameMaker::start(first.0, salt, move |_| {
        rng.range(half, GEOMETRY.slot_size as u64) as usize
    });
    loop {
        let (frame, payload) = maker.next();
        assert_eq!(
            writer.publish(&payload, WallNanos(salt)).unwrap(),
            FrameNo(frame)
        );
        maker.recycle(payload);
    }
}

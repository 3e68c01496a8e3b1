//! Other processes changing live ring and demand files: truncating, growing, removing, scribbling.
//! None of it may crash a reader or a writer (a mapped file that shrinks would otherwise kill
//! them with SIGBUS); the writer puts a sound file back, and readers follow it.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::files::truncate;
use common::{wait_until, ChildProcess, Rng, ROLE_ENV};
use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};
use ringbuf::{CameraId, FrameNo, RingGeometry, RingReader, RingWriter, WallNanos};

const GEOMETRY: RingGeometry = RingGeometry {
    slot_count: 4,
    slot_size: 16 << 10,
};

fn camera() -> CameraId {
    CameraId::new("tampered").unwrap()
}

fn frame(n: u64) -> Vec<u8> {
    let mut bytes = vec![n as u8; 5000];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

fn newest_from_a_new_reader(path: &Path) -> (FrameNo, Vec<u8>) {
    let reader = RingReader::open(path).unwrap();
    let mut buf = Vec::new();
    let meta = reader.newest(&mut buf).expect("a frame in the ring");
    (meta.frame_no, buf)
}

#[test]
fn a_ring_truncated_under_its_reader_and_writer_is_replaced_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    for n in 1..=6 {
        writer.publish(&frame(n), WallNanos(n)).unwrap();
    }
    assert!(reader.try_next(&mut buf).unwrap().is_some());
    assert!(!reader.is_replaced());

    truncate(&path, 4096 + 100);
    // Reading the lost slots: no SIGBUS; nothing torn is returned, and the reader knows.
    while let Ok(Some(meta)) = reader.try_next(&mut buf) {
        assert_eq!(
            buf,
            frame(meta.frame_no.0),
            "a frame read after the truncate"
        );
    }
    assert!(reader.is_replaced(), "the reader must reopen");

    // The writer's next publish lands in a new file that continues the numbering.
    let seventh = writer.publish(&frame(7), WallNanos(7)).unwrap();
    assert_eq!(seventh, FrameNo(7));
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(7), frame(7)));
}

#[test]
fn a_ring_truncated_to_nothing_under_a_writer_between_frames_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    writer.publish(&frame(1), WallNanos(1)).unwrap();
    truncate(&path, 0);
    writer.heartbeat().unwrap();
    writer.publish(&frame(2), WallNanos(2)).unwrap();
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(2), frame(2)));
}

#[test]
fn a_ring_removed_or_scribbled_on_is_put_back_by_its_writer_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    writer.publish(&frame(1), WallNanos(1)).unwrap();

    std::fs::remove_file(&path).unwrap();
    wait_until("the removed ring comes back", || {
        writer.heartbeat().unwrap();
        path.exists()
    });
    writer.publish(&frame(2), WallNanos(2)).unwrap();
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(2), frame(2)));

    let old = RingReader::open(&path).unwrap();
    // The magic and the head: new readers would refuse the file, old ones would follow nonsense.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"SCRIBBLE", 0).unwrap();
    file.write_all_at(&u64::MAX.to_le_bytes(), 104).unwrap();
    wait_until("the scribbled ring is replaced", || {
        writer.heartbeat().unwrap();
        RingReader::open(&path).is_ok()
    });
    assert!(
        old.is_replaced(),
        "readers of the scribbled file must reopen"
    );
    writer.publish(&frame(3), WallNanos(3)).unwrap();
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(3), frame(3)));
}

#[test]
fn a_ring_grown_under_its_reader_and_writer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    let mut reader = RingReader::open(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    truncate(&path, len * 3);
    let mut buf = Vec::new();
    for n in 1..=10 {
        writer.publish(&frame(n), WallNanos(n)).unwrap();
        let meta = reader.try_next(&mut buf).unwrap().unwrap();
        assert_eq!((meta.frame_no, &buf), (FrameNo(n), &frame(n)));
    }
    assert!(!reader.is_replaced());
}

/// The child of the scribbling test: a writer publishing flat out while its file is resized and
/// overwritten at random. It must neither crash nor stop.
#[test]
fn child_process() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("writer") {
        return;
    }
    let dir = std::path::PathBuf::from(common::env("RING_DIR"));
    let mut writer = RingWriter::create(&dir, &camera(), GEOMETRY).unwrap();
    let mut n = 0u64;
    loop {
        n += 1;
        // A failed replacement (the directory is being scribbled on too) is retried.
        let _ = writer.publish(&frame(n), WallNanos(n));
        if n % 1000 == 0 {
            common::report(serde_json::json!({ "published": n }));
        }
    }
}

#[test]
fn scribbling_on_and_resizing_a_live_ring_crashes_no_reader_or_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = ringbuf::ring_path(dir.path(), &camera());
    let mut child = ChildProcess::spawn(
        "child_process",
        "writer",
        &[("RING_DIR", dir.path().display().to_string())],
    );
    child.report(common::PATIENCE);
    let (mut rng, seed) = Rng::from_time();
    println!("seed {seed}");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut frames = 0u64;
                    let mut buf = Vec::new();
                    while !stop.load(Relaxed) {
                        let Ok(mut reader) = RingReader::open(&path) else {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        while !stop.load(Relaxed) && !reader.is_retired() {
                            if let Ok(Some(_)) = reader.try_next(&mut buf) {
                                frames += 1;
                            }
                        }
                    }
                    frames
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        for _ in 0..3000 {
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            match rng.range(0, 4) {
                0 => {
                    let _ = file.set_len(rng.range(0, len + 1));
                }
                1 => {
                    let _ = file.set_len(len + rng.range(1, 1 << 20));
                }
                _ => {
                    let junk: Vec<u8> = (0..rng.range(1, 512))
                        .map(|_| rng.next_u64() as u8)
                        .collect();
                    let _ = file.write_all_at(&junk, rng.range(0, len.max(1)));
                }
            }
        }
        drop(_stop);
        for reader in readers {
            reader.join().expect("a reader panicked");
        }
    });
    // The writer survived all of it, is still publishing, and its ring is sound again.
    wait_until("the ring is sound again", || {
        RingReader::open(&path).is_ok()
    });
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    let mut next_frame = || loop {
        if let Some(meta) = reader.next_timeout(&mut buf, common::PATIENCE).unwrap() {
            assert_eq!(buf, frame(meta.frame_no.0));
            break meta.frame_no;
        }
    };
    let first = next_frame();
    assert!(next_frame() > first, "the writer is still publishing");
    assert!(child.is_running(), "the writer is alive");
}

#[test]
fn a_demand_file_truncated_or_scribbled_under_capture_and_servers_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let capture = DemandFile::open(dir.path(), &camera()).unwrap();
    let worker = DemandFile::open(dir.path(), &camera()).unwrap();
    let cell = worker.claim_cell().unwrap();
    cell.set_viewers(3);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 3);

    truncate(capture.path(), 0);
    // No SIGBUS on either side; the count reads as nothing until the worker's next beat.
    capture.viewers(DEFAULT_CELL_EXPIRY);
    capture.generation();
    cell.heartbeat();
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 3);

    // A cell scribbled over (another pid, a heartbeat far in the future) neither keeps counting
    // forever nor robs the worker of its viewers.
    let file = OpenOptions::new().write(true).open(capture.path()).unwrap();
    for cell_offset in (32..4096 - 16).step_by(16) {
        file.write_all_at(&[0xAB; 16], cell_offset).unwrap();
    }
    cell.heartbeat();
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 3);

    std::fs::remove_file(capture.path()).unwrap();
    wait_until("both sides meet in the new file", || {
        cell.heartbeat();
        capture.viewers(DEFAULT_CELL_EXPIRY) == 3 && capture.path().exists()
    });
    drop(cell);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 0);
}

/// The child of the next test: a mapping that is not ringcast's, cut short and then read.
#[test]
fn foreign_fault_process() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("foreign") {
        return;
    }
    let dir = std::path::PathBuf::from(common::env("RING_DIR"));
    // A ringcast mapping first, so that the guard is installed.
    let _writer = RingWriter::create(&dir, &camera(), GEOMETRY).unwrap();
    let path = dir.join("foreign");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(8192).unwrap();
    // SAFETY: deliberately unsound in the way under test: the file shrinks under the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    file.set_len(0).unwrap();
    common::report(serde_json::json!({ "read": std::hint::black_box(map[4096]) }));
}

#[test]
fn a_fault_outside_ringcast_mappings_still_kills_as_it_would_have() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(exe)
        .args(["--exact", "foreign_fault_process", "--nocapture"])
        .env(ROLE_ENV, "foreign")
        .env("RING_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        status.status.signal(),
        Some(libc::SIGBUS),
        "the child should die of SIGBUS: {:?}\n{}",
        status.status,
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn a_writer_whose_directory_is_removed_puts_both_back() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().join("rings");
    let mut writer = RingWriter::create(&ring_dir, &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    std::fs::remove_dir_all(&ring_dir).unwrap();
    wait_until("the ring and its directory are back", || {
        writer.heartbeat().unwrap();
        path.exists()
    });
    writer.publish(&frame(1), WallNanos(1)).unwrap();
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(1), frame(1)));
}

#[test]
fn a_writer_whose_file_cannot_be_replaced_says_why_and_keeps_trying() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().join("rings");
    let mut writer = RingWriter::create(&ring_dir, &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    std::fs::remove_dir_all(&ring_dir).unwrap();
    // Where the directory was, a file: no ring can be made there.
    std::fs::write(&ring_dir, b"in the way").unwrap();
    let failure = loop {
        match writer.heartbeat() {
            Ok(()) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break e,
        }
    };
    assert!(
        failure
            .to_string()
            .contains(&ring_dir.display().to_string()),
        "the error names the directory: {failure}"
    );
    std::fs::remove_file(&ring_dir).unwrap();
    wait_until("the ring is back once the way is clear", || {
        let _ = writer.publish(&frame(9), WallNanos(9));
        path.exists()
    });
    assert_eq!(newest_from_a_new_reader(&path).1, frame(9));
}

#[test]
fn opening_rings_while_another_process_resizes_them_never_panics_or_faults() {
    let dir = tempfile::tempdir().unwrap();
    let path = ringbuf::ring_path(dir.path(), &camera());
    drop(RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap());
    let full = std::fs::metadata(&path).unwrap().len();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len([0, full / 2, full, 4096][(n % 4) as usize]);
                }
                n += 1;
            }
        });
        let _stop = StopOnDrop(&stop);
        let mut buf = Vec::new();
        for n in 1..=300u64 {
            // Errors are fine (the file may be short as the writer looks); a panic or a signal
            // is not.
            if let Ok(mut writer) = RingWriter::create(dir.path(), &camera(), GEOMETRY) {
                let _ = writer.publish(&frame(n), WallNanos(n));
            }
            if let Ok(mut reader) = RingReader::open(&path) {
                let _ = reader.try_next(&mut buf);
            }
        }
    });
}

/// Stops a helper thread of a scope however the scope's own work ends, a failed assertion
/// included: the scope could not end otherwise.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

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
    assert!(!reader.is_replaced());

    truncate(&path, 4096 + 100);
    // The reader's first read lands in a lost slot: no SIGBUS, nothing returned, and the
    // reader knows without asking the file system.
    assert_eq!(reader.try_next(&mut buf).unwrap(), None);
    assert!(reader.is_retired(), "the reader must reopen");

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
        // A failed replacement is retried at the next frame.
        let _ = writer.publish(&frame(n), WallNanos(n));
        if n == 1 {
            common::report(serde_json::json!({ "published": n }));
        }
        // 2,000 frames a second: quick enough to race everything, slow enough to leave the
        // test's threads a core.
        std::thread::sleep(Duration::from_micros(500));
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
                            let wait = Duration::from_millis(10);
                            if let Ok(Some(_)) = reader.next_timeout(&mut buf, wait) {
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
    // A slot scribbled at the very end may still be read once, as corrupt; never as a frame.
    let mut next_frame = || loop {
        if let Ok(Some(meta)) = reader.next_timeout(&mut buf, common::PATIENCE) {
            if buf == frame(meta.frame_no.0) {
                break meta.frame_no;
            }
        }
    };
    let first = next_frame();
    assert!(next_frame() > first, "the writer is still publishing");
    assert!(child.is_running(), "the writer is alive");
}

#[test]
fn a_demand_file_truncated_or_scribbled_under_capture_and_servers_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // Its ring: a demand file is made again only while the camera has one.
    let _writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
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

#[test]
fn a_demand_file_removed_after_its_ring_stays_removed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let worker = DemandFile::open(dir.path(), &camera()).unwrap();
    let cell = worker.claim_cell().unwrap();
    cell.set_viewers(1);
    std::fs::remove_file(writer.path()).unwrap();
    std::fs::remove_file(worker.path()).unwrap();
    // Past the path check's interval, so that each call below looks at the file system.
    std::thread::sleep(Duration::from_millis(1100));
    cell.heartbeat();
    assert_eq!(
        worker.viewers(DEFAULT_CELL_EXPIRY),
        1,
        "the old mapping still serves"
    );
    drop(cell);
    assert!(!worker.path().exists(), "the demand file came back");
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

/// The child of the next test: a SIGBUS sent, not caused by a fault, that claims an address in
/// a ring's mapping. It must not be taken for a page the file lost.
#[test]
fn sent_sigbus_process() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("sent") {
        return;
    }
    let dir = std::path::PathBuf::from(common::env("RING_DIR"));
    let mut writer = RingWriter::create(&dir, &camera(), GEOMETRY).unwrap();
    writer.publish(&frame(1), WallNanos(1)).unwrap();
    let reader = RingReader::open(writer.path()).unwrap();
    send_sigbus_claiming(mapping_start(writer.path(), "r--s"));
    let mut buf = Vec::new();
    let newest = reader.newest(&mut buf).map(|m| m.frame_no.0);
    common::report(serde_json::json!({
        "retired": reader.is_retired(),
        "newest": newest,
        "intact": buf == frame(1),
    }));
}

/// Where this process maps `path` with permissions `perms` (from /proc/self/maps).
fn mapping_start(path: &Path, perms: &str) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with(&*path.to_string_lossy()) && l.split(' ').nth(1) == Some(perms))
        .expect("the ring's mapping");
    usize::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

/// Queues a SIGBUS to this process whose siginfo says `si_addr = addr`, as `sigqueue` could, but
/// with the code of a queued signal (SI_QUEUE), not of a fault.
fn send_sigbus_claiming(addr: usize) {
    // SAFETY: an all-zero siginfo_t is valid; the fields set are the kernel's layout (signo,
    // errno, code, then the union, whose first word is si_addr for SIGBUS on 64-bit Linux).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = libc::SIGBUS;
        info.si_code = libc::SI_QUEUE;
        let base = std::ptr::addr_of_mut!(info).cast::<u8>();
        base.add(16).cast::<usize>().write_unaligned(addr);
        let sent = libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            libc::getpid(),
            libc::SIGBUS,
            std::ptr::addr_of!(info),
        );
        assert_eq!(
            sent,
            0,
            "rt_sigqueueinfo: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_sigbus_that_is_no_fault_of_a_ring_mapping_is_left_to_the_previous_handler() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    // A fault outside ringcast's mappings kills, as it would have without ringcast.
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(&exe)
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
    // A sent one naming a ring's page leaves the page alone (std's handler, the previous one,
    // ignores a SIGBUS that is not a fault).
    let mut child = ChildProcess::spawn(
        "sent_sigbus_process",
        "sent",
        &[("RING_DIR", dir.path().display().to_string())],
    );
    let report = child.report(common::PATIENCE);
    assert_eq!(
        report,
        serde_json::json!({ "retired": false, "newest": 1, "intact": true })
    );
}

#[test]
fn a_writer_never_takes_the_path_from_another_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = first.path().to_owned();
    std::fs::remove_file(&path).unwrap();
    // A second capture finds no ring and makes one, while the first still runs.
    let mut second = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    second.publish(&frame(1), WallNanos(1)).unwrap();
    let identity = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let second_file = identity();
    let lost = loop {
        match first.heartbeat() {
            Ok(()) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(lost, ringbuf::Error::WriterBusy { pid: Some(pid), .. } if pid == std::process::id()),
        "{lost:?}"
    );
    assert!(first.publish(&frame(2), WallNanos(2)).is_err());
    assert_eq!(
        identity(),
        second_file,
        "the second writer's file was replaced"
    );
    assert_eq!(newest_from_a_new_reader(&path), (FrameNo(1), frame(1)));
}

#[test]
fn a_reader_asleep_on_a_ring_whose_header_is_cut_off_is_woken() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), GEOMETRY).unwrap();
    let path = writer.path().to_owned();
    let mut reader = RingReader::open(&path).unwrap();
    let (done, returned) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let got = reader
            .next_timeout(&mut buf, Duration::MAX)
            .map(|m| m.is_some());
        let _ = done.send(());
        got
    });
    std::thread::sleep(Duration::from_millis(100));
    truncate(&path, 100);
    wait_until("the writer replaces its ring", || {
        writer.heartbeat().unwrap();
        RingReader::open(&path).is_ok()
    });
    returned
        .recv_timeout(common::PATIENCE)
        .expect("the reader of the cut ring was never woken");
    assert!(!waiting.join().unwrap().unwrap());
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

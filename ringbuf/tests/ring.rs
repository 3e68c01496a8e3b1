//! The ring's behaviour through its public API, within one process.

use std::time::Duration;

use ringbuf::{
    CameraId, Error, FrameNo, OfflineReason, RingGeometry, RingReader, RingWriter, WallNanos,
    WriterState, WriterStatus,
};

fn camera() -> CameraId {
    CameraId::new("cam1").unwrap()
}

fn small() -> RingGeometry {
    RingGeometry {
        slot_count: 4,
        slot_size: 1024,
    }
}

#[test]
fn a_reader_gets_every_frame_it_keeps_up_with() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    for n in 1..=20u64 {
        let payload = vec![n as u8; n as usize * 7];
        assert_eq!(writer.publish(&payload, WallNanos(n)).unwrap(), FrameNo(n));
        let meta = reader
            .next_timeout(&mut buf, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(meta.frame_no, FrameNo(n));
        assert_eq!(meta.capture, WallNanos(n));
        assert_eq!(buf, payload);
    }
    assert_eq!(reader.stats().skipped, 0);
    assert_eq!(reader.stats().delivered, 20);
}

#[test]
fn a_reader_that_falls_behind_skips_to_the_newest_and_counts_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    for n in 1..=10u64 {
        writer.publish(&[n as u8], WallNanos(n)).unwrap();
    }
    let mut buf = Vec::new();
    let meta = reader.try_next(&mut buf).unwrap().unwrap();
    assert_eq!(meta.frame_no, FrameNo(10));
    assert_eq!(reader.stats().skipped, 9);
    assert_eq!(reader.try_next(&mut buf).unwrap(), None);
}

#[test]
fn oversize_frames_are_refused_and_counted_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let err = writer.publish(&[0; 1025], WallNanos(0)).unwrap_err();
    assert!(matches!(
        err,
        Error::FrameTooLarge {
            len: 1025,
            slot_size: 1024
        }
    ));
    assert_eq!(writer.head(), FrameNo::NONE);
    let reader = RingReader::open(writer.path()).unwrap();
    assert_eq!(reader.info().frames_rejected, 1);
}

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    match RingWriter::create(dir.path(), &camera(), small()) {
        Err(Error::WriterBusy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        Err(other) => panic!("expected WriterBusy, got {other}"),
        Ok(_) => panic!("a second writer was allowed"),
    }
}

#[test]
fn a_new_writer_resumes_numbering_after_the_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    for n in 1..=5u64 {
        writer.publish(b"x", WallNanos(n)).unwrap();
    }
    let path = writer.path().to_owned();
    drop(writer);
    let mut reader = RingReader::open(&path).unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    assert_eq!(writer.publish(b"y", WallNanos(6)).unwrap(), FrameNo(6));
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while let Some(meta) = reader.try_next(&mut buf).unwrap() {
        seen.push(meta.frame_no.0);
    }
    assert_eq!(seen, vec![5, 6]);
    assert!(!reader.is_replaced());
}

#[test]
fn a_writer_with_another_geometry_replaces_the_file_and_keeps_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    writer.publish(b"x", WallNanos(1)).unwrap();
    let reader = RingReader::open(writer.path()).unwrap();
    drop(writer);
    let bigger = RingGeometry {
        slot_count: 3,
        slot_size: 4096,
    };
    let mut writer = RingWriter::create(dir.path(), &camera(), bigger).unwrap();
    assert!(reader.is_replaced());
    assert_eq!(writer.publish(b"y", WallNanos(2)).unwrap(), FrameNo(2));
    assert_eq!(RingReader::open(writer.path()).unwrap().geometry(), bigger);
}

#[test]
fn newest_returns_the_head_without_moving_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(reader.newest(&mut buf), None);
    writer.publish(b"one", WallNanos(1)).unwrap();
    writer.publish(b"two", WallNanos(2)).unwrap();
    assert_eq!(reader.newest(&mut buf).unwrap().frame_no, FrameNo(2));
    assert_eq!(buf, b"two");
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(1)
    );
}

#[test]
fn writer_status_follows_stop_heartbeat_idle_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let reader = RingReader::open(writer.path()).unwrap();
    let limit = Duration::from_secs(3);
    let beat = reader.info().heartbeat;
    assert_eq!(reader.writer_status_at(beat, limit), WriterStatus::Online);
    let later = ringbuf::MonoNanos(beat.0 + 4_000_000_000);
    assert!(matches!(
        reader.writer_status_at(later, limit),
        WriterStatus::Offline(OfflineReason::Silent { .. })
    ));
    writer.set_idle(true).unwrap();
    assert_eq!(reader.writer_status(limit), WriterStatus::Idle);
    writer.set_state(WriterState::SourceDown).unwrap();
    assert_eq!(
        reader.writer_status(limit),
        WriterStatus::Offline(OfflineReason::SourceDown)
    );
    writer.publish(b"back", WallNanos(1)).unwrap();
    assert_eq!(reader.writer_status(limit), WriterStatus::Online);
    drop(writer);
    assert_eq!(
        reader.writer_status(limit),
        WriterStatus::Offline(OfflineReason::Stopped)
    );
}

#[test]
fn ring_files_are_created_mode_0640() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let mode = std::fs::metadata(writer.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn scan_lists_rings_and_ignores_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let _a = RingWriter::create(dir.path(), &CameraId::new("b").unwrap(), small()).unwrap();
    let _b = RingWriter::create(dir.path(), &CameraId::new("a").unwrap(), small()).unwrap();
    std::fs::write(dir.path().join("Not Valid.ring"), b"").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
    let names: Vec<String> = ringbuf::scan_ring_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|(cam, _)| cam.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn the_signal_socket_wakes_on_publish() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let reader = RingReader::open(writer.path()).unwrap();
    let mut sock = reader.signal(Duration::from_secs(10)).unwrap();
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    writer.publish(b"x", WallNanos(1)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(sock.read(&mut byte).unwrap(), 1);
}

#[test]
fn one_watcher_signals_each_ring_that_publishes_and_only_it() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut door =
        RingWriter::create(dir.path(), &CameraId::new("door").unwrap(), small()).unwrap();
    let mut yard =
        RingWriter::create(dir.path(), &CameraId::new("yard").unwrap(), small()).unwrap();
    let watcher = ringbuf::RingWatcher::start(Duration::from_secs(30)).unwrap();
    let door_reader = RingReader::open(door.path()).unwrap();
    let yard_reader = RingReader::open(yard.path()).unwrap();
    let mut door_sock = watcher.watch(&door_reader).unwrap();
    let mut yard_sock = watcher.watch(&yard_reader).unwrap();
    let drain = |sock: &mut std::os::unix::net::UnixStream| {
        let mut buf = [0u8; 64];
        sock.set_nonblocking(true).unwrap();
        while sock.read(&mut buf).is_ok_and(|n| n > 0) {}
    };
    // Start from quiet sockets (a tick may have poked them).
    std::thread::sleep(Duration::from_millis(100));
    drain(&mut door_sock);
    drain(&mut yard_sock);

    door.publish(b"x", WallNanos(1)).unwrap();
    door_sock.set_nonblocking(false).unwrap();
    door_sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        door_sock.read(&mut byte).unwrap(),
        1,
        "door was not signalled"
    );
    yard_sock.set_nonblocking(true).unwrap();
    assert!(
        yard_sock.read(&mut byte).is_err(),
        "yard signalled without a frame"
    );

    // A socket the event loop dropped is forgotten; the others keep working.
    drop(door_sock);
    door.publish(b"y", WallNanos(2)).unwrap();
    yard.publish(b"z", WallNanos(3)).unwrap();
    yard_sock.set_nonblocking(false).unwrap();
    yard_sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        yard_sock.read(&mut byte).unwrap(),
        1,
        "yard was not signalled"
    );
}

#[test]
fn after_a_geometry_change_a_new_reader_gets_the_next_frame_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    for n in 1..=10 {
        writer.publish(&[n as u8; 10], WallNanos(n)).unwrap();
    }
    drop(writer);
    let eight_slots = RingGeometry {
        slot_count: 8,
        slot_size: 2048,
    };
    let mut writer = RingWriter::create(dir.path(), &camera(), eight_slots).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    writer.publish(b"eleven", WallNanos(11)).unwrap();
    let mut buf = Vec::new();
    let meta = reader
        .try_next(&mut buf)
        .unwrap()
        .expect("the first new frame");
    assert_eq!(
        (meta.frame_no, buf.as_slice()),
        (FrameNo(11), &b"eleven"[..])
    );
    let stats = reader.stats();
    assert_eq!(
        stats.torn, 0,
        "frame 10 is missing from the new file, not torn"
    );
    assert_eq!(stats.skipped, 1, "frame 10 is counted as skipped");
}

#[test]
fn readers_of_a_replaced_file_are_woken_and_told_to_open_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    writer.publish(b"x", WallNanos(1)).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    assert!(reader.try_next(&mut buf).unwrap().is_some());
    drop(writer);
    let (done, returned) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let got = reader.next_timeout(&mut buf, Duration::from_secs(120));
        let _ = done.send(());
        (reader, got.map(|frame| frame.is_some()))
    });
    // Let the reader fall asleep on the old file, then replace it with another geometry.
    std::thread::sleep(Duration::from_millis(100));
    let bigger = RingGeometry {
        slot_count: 3,
        slot_size: 4096,
    };
    let _writer = RingWriter::create(dir.path(), &camera(), bigger).unwrap();
    returned
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader of the replaced file was not woken");
    let (reader, got) = waiting.join().unwrap();
    assert!(!got.unwrap(), "no frame in the old file");
    assert!(reader.is_retired());
    assert_eq!(
        reader.writer_status(Duration::from_secs(5)),
        WriterStatus::Offline(OfflineReason::Replaced)
    );
}

#[test]
fn waiting_without_a_limit_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RingWriter::create(dir.path(), &camera(), small()).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    let waiting = std::thread::spawn(move || {
        let mut buf = Vec::new();
        reader
            .next_timeout(&mut buf, Duration::MAX)
            .map(|m| m.map(|m| m.frame_no))
    });
    std::thread::sleep(Duration::from_millis(50));
    writer.publish(b"x", WallNanos(1)).unwrap();
    assert_eq!(waiting.join().unwrap().unwrap(), Some(FrameNo(1)));
}

#[test]
fn ingest_never_writes_a_local_camera_and_forgets_only_its_own_abandoned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let remote = CameraId::new("remote").unwrap();
    let local = CameraId::new("local").unwrap();
    drop(RingWriter::create(dir.path(), &local, small()).unwrap());
    assert!(matches!(
        ringbuf::ingest_may_write(dir.path(), &local, small()),
        Err(Error::LocalCamera { .. })
    ));
    assert!(matches!(
        RingWriter::create_for_ingest(dir.path(), &local, small()),
        Err(Error::LocalCamera { .. })
    ));

    ringbuf::ingest_may_write(dir.path(), &remote, small()).unwrap();
    let mut writer = RingWriter::create_for_ingest(dir.path(), &remote, small()).unwrap();
    writer.publish(b"x", WallNanos(1)).unwrap();
    assert_eq!(
        RingReader::open(writer.path()).unwrap().info().writer_kind,
        ringbuf::WriterKind::Ingest
    );
    assert!(matches!(
        ringbuf::ingest_may_write(dir.path(), &remote, small()),
        Err(Error::WriterBusy { .. })
    ));
    // Long enough that a loaded machine cannot make the first check below come too late.
    let gone_for = Duration::from_secs(1);
    assert!(
        !ringbuf::forget_abandoned_ingest_camera(dir.path(), &remote, gone_for).unwrap(),
        "its writer holds it"
    );
    let path = writer.path().to_owned();
    drop(writer);
    assert!(
        !ringbuf::forget_abandoned_ingest_camera(dir.path(), &remote, gone_for).unwrap(),
        "not gone long enough"
    );
    std::thread::sleep(gone_for + Duration::from_millis(200));
    assert!(ringbuf::forget_abandoned_ingest_camera(dir.path(), &remote, gone_for).unwrap());
    assert!(!path.exists());
    assert!(!ringbuf::forget_abandoned_ingest_camera(dir.path(), &local, Duration::ZERO).unwrap());
    assert!(ringbuf::ring_path(dir.path(), &local).exists());
}

#[test]
fn a_local_capture_takes_its_camera_back_from_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let camera = CameraId::new("cam1").unwrap();
    // A remote camera got the name first (the local one was not running yet).
    let mut remote = RingWriter::create_for_ingest(dir.path(), &camera, small()).unwrap();
    remote.publish(b"remote", WallNanos(1)).unwrap();
    assert!(!remote.local_capture_waits());
    let local = std::thread::spawn({
        let dir = dir.path().to_owned();
        let camera = camera.clone();
        move || RingWriter::create(&dir, &camera, small())
    });
    // What a server worker does: it sees the capture waiting and lets go of the ring.
    let asked = std::time::Instant::now();
    while !remote.local_capture_waits() {
        assert!(asked.elapsed() < Duration::from_secs(10), "never asked");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        ringbuf::ingest_may_write(dir.path(), &camera, small()),
        Err(Error::LocalCamera { .. })
    ));
    drop(remote);
    let mut local = local.join().unwrap().expect("the capture got its ring");
    local.publish(b"local", WallNanos(2)).unwrap();
    let reader = RingReader::open(local.path()).unwrap();
    assert_eq!(reader.info().writer_kind, ringbuf::WriterKind::Local);
    assert_eq!(reader.info().head, FrameNo(2), "numbering goes on");
    assert!(matches!(
        ringbuf::ingest_may_write(dir.path(), &camera, small()),
        Err(Error::LocalCamera { .. })
    ));
    assert!(RingWriter::create_for_ingest(dir.path(), &camera, small()).is_err());
}

#[test]
fn a_local_capture_gives_up_on_an_ingest_writer_that_keeps_its_ring() {
    let dir = tempfile::tempdir().unwrap();
    let camera = CameraId::new("cam1").unwrap();
    let _remote = RingWriter::create_for_ingest(dir.path(), &camera, small()).unwrap();
    let started = std::time::Instant::now();
    let refused = RingWriter::create(dir.path(), &camera, small()).err();
    assert!(
        matches!(refused, Some(Error::HeldByIngest { .. })),
        "{refused:?}"
    );
    assert!(started.elapsed() >= ringbuf::INGEST_YIELD_WAIT);
}

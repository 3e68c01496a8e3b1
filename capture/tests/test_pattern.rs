//! The test pattern into a ring, read back with a RingReader.

mod common;

use common::*;
use ringbuf::frame::read_timing;
use ringbuf::WriterStatus;
use std::time::Duration;

#[test]
fn test_pattern_frames_are_valid_jpegs_numbered_without_gaps_with_monotonic_timing() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    let mut capture = capture(&[
        "--camera",
        "cam1",
        "--source",
        "test",
        "--size",
        "640x360",
        "--fps",
        "30",
        "--ring-dir",
        ring_dir,
    ]);
    let mut reader = open_ring(dir.path(), "cam1");
    let frames = read_frames(&mut reader, 30);

    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].0.frame_no.0,
            pair[0].0.frame_no.0 + 1,
            "gap in numbering"
        );
        let (a, b) = (
            read_timing(&pair[0].1).unwrap(),
            read_timing(&pair[1].1).unwrap(),
        );
        assert!(b.capture > a.capture, "capture times not increasing");
    }
    for (meta, jpeg) in &frames {
        let timing = read_timing(jpeg).expect("COM timing segment present");
        assert_eq!(timing.frame_no, meta.frame_no);
        assert_eq!(timing.capture, meta.capture);
        let image = decode(jpeg);
        assert_eq!((image.width, image.height), (640, 360));
    }
    let info = reader.info();
    assert_eq!((info.format.width, info.format.height), (640, 360));
    assert_eq!(info.format.fps_milli, 30_000);
    assert_eq!(
        reader.writer_status(Duration::from_secs(5)),
        WriterStatus::Online
    );

    assert!(
        capture.terminate().success(),
        "capture did not exit cleanly on SIGTERM"
    );
    assert!(matches!(
        reader.writer_status(Duration::from_secs(5)),
        WriterStatus::Offline(_)
    ));
}

#[test]
fn flags_are_also_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(bin())
        .env("RINGCAST_CAMERA", "envcam")
        .env("RINGCAST_SIZE", "320x240")
        .env("RINGCAST_FPS", "20")
        .env("RINGCAST_RING_DIR", dir.path())
        .env("RINGCAST_TIMESTAMP", "1")
        .spawn()
        .unwrap();
    let _guard = Running {
        child,
        name: "ringcast-capture".into(),
    };
    let mut reader = open_ring(dir.path(), "envcam");
    let frames = read_frames(&mut reader, 2);
    let image = decode(&frames[1].1);
    assert_eq!((image.width, image.height), (320, 240));
}

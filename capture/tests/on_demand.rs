//! `--on-demand`: no viewer → idle (no frames, little CPU, ring "idle" not "offline");
//! a viewer → frames again at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringbuf::demand::DemandFile;
use ringbuf::{CameraId, WriterStatus};

#[test]
fn an_on_demand_capture_idles_without_viewers_and_resumes_when_one_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(&[
        "--camera",
        "od",
        "--size",
        "320x240",
        "--fps",
        "10",
        "--on-demand",
        "--idle-after",
        "1",
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut reader = open_ring(dir.path(), "od");
    wait_for("the ring to say idle", || {
        reader.writer_status(Duration::from_secs(5)) == WriterStatus::Idle
    });

    let head = reader.head();
    let cpu_before = cpu_ticks(capture.pid());
    std::thread::sleep(Duration::from_millis(1500));
    let cpu_used = cpu_ticks(capture.pid()) - cpu_before;
    assert_eq!(reader.head(), head, "frames were published while idle");
    assert!(
        cpu_used <= 5,
        "idle capture used {cpu_used} clock ticks in 1.5 s"
    );
    // The heartbeat goes on: idle, not offline, even by a strict one-second rule.
    assert_eq!(
        reader.writer_status(Duration::from_secs(1)),
        WriterStatus::Idle
    );

    let demand = DemandFile::open(dir.path(), &CameraId::new("od").unwrap()).unwrap();
    let cell = demand.claim_cell().unwrap();
    let mut drained = Vec::new();
    while reader.try_next(&mut drained).unwrap().is_some() {}
    let asked = Instant::now();
    cell.set_viewers(1);
    let (meta, jpeg) =
        frame_within(&mut reader, DEADLINE).expect("no frame after a viewer arrived");
    eprintln!(
        "first frame {} ms after demand returned",
        asked.elapsed().as_millis()
    );
    assert!(meta.frame_no > head);
    assert_eq!(decode(&jpeg).width, 320);
    assert_eq!(
        reader.writer_status(Duration::from_secs(5)),
        WriterStatus::Online
    );
}

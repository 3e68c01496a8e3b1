//! The JPEG copy a real `ringcast-capture --codec h264` makes, served by two real workers: the
//! JPEG routes get pictures of the camera's size that carry the H.264 frame's number and
//! capture time, and once nobody watches them, capture stops decoding.

mod common;
use std::path::Path;
use std::time::{Duration, Instant};

use common::h264::jpeg_copy_viewers;
use common::*;
use ringbuf::{feed_ring_path, CameraId, Feed, RingReader, WriterStatus};

const CAM: &str = "h1";

fn camera() -> CameraId {
    CameraId::new(CAM).unwrap()
}

fn copy_frames_published(dir: &Path) -> u64 {
    RingReader::open(&feed_ring_path(dir, &camera(), Feed::JpegCopy))
        .expect("the copy's ring")
        .info()
        .frames_published
}

/// Whether the copy's ring says its writer idles (it does so before it stops decoding).
fn copy_idle(dir: &Path) -> bool {
    RingReader::open(&feed_ring_path(dir, &camera(), Feed::JpegCopy))
        .expect("the copy's ring")
        .writer_status(Duration::from_secs(3))
        == WriterStatus::Idle
}

fn start_h264_capture(dir: &Path) -> ChildGuard {
    start_capture(dir, CAM, 30, &["--codec", "h264", "--gop", "30"])
}

#[test]
fn an_h264_capture_fills_its_jpeg_copy_only_while_a_jpeg_route_is_watched() {
    let dir = temp_ring_dir();
    let _capture = start_h264_capture(dir.path());
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, CAM);
    wait_for("the copy's ring", || {
        feed_ring_path(dir.path(), &camera(), Feed::JpegCopy)
            .exists()
            .then_some(())
    });
    assert_eq!(copy_frames_published(dir.path()), 0, "nobody watched yet");

    let snapshot = server.get(&format!("/snapshot/{CAM}.jpg"));
    assert_eq!(
        snapshot.status,
        200,
        "{}",
        String::from_utf8_lossy(&snapshot.body)
    );
    let header = turbojpeg::read_header(&snapshot.body).expect("a JPEG");
    assert_eq!((header.width, header.height), (640, 360));
    let timing = ringbuf::frame::read_timing(&snapshot.body).expect("a timing comment");
    let camera_ring = RingReader::open(&ring_path(dir.path(), CAM)).expect("the camera's ring");
    assert!(
        timing.frame_no.0 >= 1 && timing.frame_no <= camera_ring.info().head,
        "the comment names an H.264 frame of the camera's ring: {timing:?}"
    );
    let age = ringbuf::Clock::wall(&ringbuf::SystemClock).0 - timing.capture.0;
    assert!(
        age < 60_000_000_000,
        "capture time is that of the H.264 frame"
    );

    let mjpeg = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &server.url(&format!("/stream/{CAM}.mjpg")),
        ])
        .args(["-frames:v", "5", "-f", "null", "-"])
        .status()
        .expect("run ffmpeg");
    assert!(mjpeg.success(), "ffmpeg read 5 frames of the MJPEG stream");

    wait_for("no demand for the copy once nobody watches", || {
        (jpeg_copy_viewers(dir.path(), CAM) == 0).then_some(())
    });
    // A frame being made when the last viewer left may still land, before the copy idles.
    wait_for("the copy to idle", || copy_idle(dir.path()).then_some(()));
    let published = copy_frames_published(dir.path());
    assert!(published >= 2, "the copy was filled while watched");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        copy_frames_published(dir.path()),
        published,
        "nothing is decoded while nobody watches"
    );
}

#[test]
fn watching_only_the_jpeg_copy_wakes_an_on_demand_h264_camera() {
    let dir = temp_ring_dir();
    let _capture = start_capture(
        dir.path(),
        CAM,
        30,
        &["--codec", "h264", "--on-demand", "--idle-after", "1"],
    );
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, CAM);
    let camera_ring = RingReader::open(&ring_path(dir.path(), CAM)).expect("the camera's ring");
    wait_for("the camera to idle", || {
        let status = camera_ring.writer_status(Duration::from_secs(5));
        (status == ringbuf::WriterStatus::Idle).then_some(())
    });

    let started = Instant::now();
    let snapshot = server.get(&format!("/snapshot/{CAM}.jpg"));
    assert_eq!(
        snapshot.status,
        200,
        "{}",
        String::from_utf8_lossy(&snapshot.body)
    );
    ringbuf::frame::check_jpeg(&snapshot.body).expect("a JPEG");
    eprintln!("snapshot of the idle camera took {:?}", started.elapsed());
}

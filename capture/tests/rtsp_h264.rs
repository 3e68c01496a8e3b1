//! An RTSP camera's H.264 read with `--codec h264` (retina, no ffmpeg): the camera is GStreamer's
//! RTSP server (`rtsp_server.py`) sending x264 over RTP interleaved on the RTSP connection. What
//! reaches the ring is what the camera encoded, every keyframe carries its parameter sets, ffmpeg
//! decodes it without a complaint, and when the camera restarts capture resumes at a keyframe.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ringbuf::h264::{
    is_keyframe, nal_type, nal_units, NAL_ACCESS_UNIT_DELIMITER, NAL_PPS, NAL_SPS,
};
use ringbuf::{FrameKind, FrameMeta};

/// Debian's python, where python3-gi and GStreamer's introspection data are installed (another
/// python3 earlier on PATH may not see them).
const PYTHON: &str = "/usr/bin/python3";
/// The access units each comparison covers: three of the camera's groups of 15.
const COMPARED: usize = 45;

/// GStreamer's RTSP server on `port` sending `video` (h264 or jpeg), recording the H.264 it
/// sends to `record`.
fn rtsp_camera(port: u16, video: &str, record: Option<&Path>) -> Running {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp_server.py");
    let mut command = Command::new(PYTHON);
    command
        .arg(script)
        .args(["--port", &port.to_string(), "--video", video])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(record) = record {
        command.arg("--record").arg(record);
    }
    let child = command
        .spawn()
        .expect("run rtsp_server.py (scripts/install-deps installs GStreamer's RTSP server)");
    let mut camera = Running {
        child,
        name: "rtsp_server.py".into(),
    };
    wait_for("the RTSP camera to listen", || {
        if let Ok(Some(status)) = camera.child.try_wait() {
            panic!("rtsp_server.py exited ({status}): is gir1.2-gst-rtsp-server-1.0 installed?");
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    camera
}

fn capture_h264(port: u16, ring_dir: &Path) -> Running {
    let args = h264_args(port, ring_dir);
    capture(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn h264_args(port: u16, ring_dir: &Path) -> Vec<String> {
    [
        "--camera",
        "rtsph264",
        "--codec",
        "h264",
        "--source",
        &format!("rtsp://127.0.0.1:{port}/test"),
        "--slots",
        "128",
        "--ring-dir",
        ring_dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// An access unit as the NAL units it holds, without their start codes.
type Nals = Vec<Vec<u8>>;

fn nals_of(unit: &[u8]) -> Nals {
    nal_units(unit).map(<[u8]>::to_vec).collect()
}

/// The access units of x264's byte stream, each beginning at its access unit delimiter.
fn recorded_units(path: &Path) -> Vec<Nals> {
    let stream = std::fs::read(path).unwrap_or_default();
    let mut units: Vec<Nals> = Vec::new();
    for nal in nal_units(&stream) {
        match units.last_mut() {
            Some(unit) if nal_type(nal) != Some(NAL_ACCESS_UNIT_DELIMITER) => {
                unit.push(nal.to_vec())
            }
            _ => units.push(vec![nal.to_vec()]),
        }
    }
    units
}

/// Asserts that `ring` (consecutive access units from the ring) is a run of what the camera
/// recorded in `record`, which may begin with units from before capture began playing (and
/// GStreamer's RTSP media, as it starts, hands the payloader its first keyframe twice).
///
/// Compared: each access unit's NAL units, in order, byte for byte (header and payload,
/// emulation-prevention bytes included). Not compared: the start codes between them. RTP
/// carries NAL units without start codes, so the ring has four-byte ones where x264 wrote
/// three-byte ones; and retina takes the in-band SPS and PPS out and puts its copy of them (the
/// same bytes) back before each keyframe.
fn assert_sent_byte_for_byte(ring: &[(FrameMeta, Vec<u8>)], record: &Path) {
    let ring: Vec<Nals> = ring.iter().map(|(_, unit)| nals_of(unit)).collect();
    let until = Instant::now() + DEADLINE;
    loop {
        let recorded = recorded_units(record);
        if recorded
            .windows(ring.len())
            .any(|run| run == ring.as_slice())
        {
            return;
        }
        if Instant::now() > until {
            let longest = (0..recorded.len())
                .map(|start| {
                    let run = recorded[start..].iter().zip(&ring);
                    run.take_while(|(sent, kept)| sent == kept).count()
                })
                .max()
                .unwrap_or(0);
            panic!(
                "the ring's {} access units are not a run of the {} the camera sent: \
                 at most {longest} match in a row",
                ring.len(),
                recorded.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every unit follows the one before it (the reader skipped nothing), the first is a keyframe,
/// and every keyframe holds an SPS and a PPS.
fn assert_decodable_run(frames: &[(FrameMeta, Vec<u8>)]) {
    assert_eq!(
        frames[0].0.kind,
        FrameKind::Key,
        "the run begins at a keyframe"
    );
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].0.frame_no.0,
            pair[0].0.frame_no.0 + 1,
            "frames were skipped"
        );
    }
    for (meta, unit) in frames {
        assert_eq!(meta.kind == FrameKind::Key, is_keyframe(unit));
        if meta.kind == FrameKind::Key {
            let types: Vec<_> = nal_units(unit).filter_map(nal_type).collect();
            assert!(
                types.contains(&NAL_SPS) && types.contains(&NAL_PPS),
                "a keyframe without its parameter sets: {types:?}"
            );
        }
    }
    let keyframes = frames.iter().filter(|(m, _)| m.kind == FrameKind::Key);
    assert!(
        keyframes.count() >= 2,
        "the camera sends a keyframe every 15 frames"
    );
}

fn assert_ffmpeg_decodes(frames: &[(FrameMeta, Vec<u8>)]) {
    assert_eq!(decoded_frames(&concatenated(frames)), Ok(frames.len()));
}

#[test]
fn an_rtsp_cameras_h264_reaches_the_ring_as_the_camera_encoded_it() {
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("sent.h264");
    let port = free_port();
    let _camera = rtsp_camera(port, "h264", Some(&record));
    let mut capture = capture_h264(port, work.path());
    let mut reader = open_ring(work.path(), "rtsph264");

    let frames = read_frames(&mut reader, COMPARED);
    assert_decodable_run(&frames);
    assert_ffmpeg_decodes(&frames);
    assert_sent_byte_for_byte(&frames, &record);
    let format = reader.info().format;
    assert_eq!((format.width, format.height), (320, 240));
    assert!(capture.terminate().success());
}

#[test]
fn capture_resumes_at_a_keyframe_when_the_rtsp_camera_restarts() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut camera = rtsp_camera(port, "h264", None);
    let mut capture = capture_h264(port, work.path());
    let mut reader = open_ring(work.path(), "rtsph264");
    read_frames(&mut reader, 5);

    drop(camera);
    while frame_within(&mut reader, Duration::from_millis(500)).is_some() {}
    let record = work.path().join("after-restart.h264");
    camera = rtsp_camera(port, "h264", Some(&record));
    let first = frame_within(&mut reader, DEADLINE)
        .expect("capture did not reconnect when the RTSP camera came back");
    assert_eq!(
        first.0.kind,
        FrameKind::Key,
        "the first unit after the restart"
    );
    let mut frames = vec![first];
    frames.extend(read_frames(&mut reader, COMPARED - 1));
    assert_decodable_run(&frames);
    assert_ffmpeg_decodes(&frames);
    assert_sent_byte_for_byte(&frames, &record);
    assert!(capture.terminate().success());
    drop(camera);
}

#[test]
fn a_camera_without_h264_is_refused_naming_what_it_offers() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let _camera = rtsp_camera(port, "jpeg", None);
    let child = Command::new(bin())
        .args(h264_args(port, work.path()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringcast-capture");
    let mut capture = Running {
        child,
        name: "ringcast-capture".into(),
    };
    let log = capture.child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let refusal = "the RTSP camera offers no H.264 video (it offers video/jpeg)";
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = received
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("capture never said: {refusal}"));
        if line.contains(refusal) {
            break;
        }
    }
    assert!(capture.terminate().success());
}

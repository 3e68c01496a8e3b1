//! `--codec h264`: the test pattern encoded with openh264, and an Annex B stream on stdin passed
//! through; every keyframe in the ring carries its parameter sets, and ffmpeg decodes what the
//! ring holds.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ringbuf::demand::DemandFile;
use ringbuf::h264::{
    is_keyframe, nal_type, nal_units, NAL_ACCESS_UNIT_DELIMITER, NAL_IDR_SLICE, NAL_PPS, NAL_SPS,
};
use ringbuf::{CameraId, Codec, FrameKind, FrameMeta, RingReader, VideoFormat, WriterStatus};

/// Frames in the streams ffmpeg makes for the stdin tests, and frames between their keyframes.
const STREAM_FRAMES: usize = 60;
const STREAM_GOP: usize = 15;

fn nal_types(unit: &[u8]) -> Vec<u8> {
    nal_units(unit).filter_map(nal_type).collect()
}

/// 320x240 at 30 fps from x264, without B-frames; `x264_params` chooses delimiters.
fn x264_stream(x264_params: &str) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=30"])
        .args(["-frames:v", &STREAM_FRAMES.to_string()])
        .args(["-c:v", "libx264", "-g", &STREAM_GOP.to_string(), "-bf", "0"])
        .args(["-x264-params", x264_params, "-f", "h264", "-"])
        .output()
        .expect("run ffmpeg (scripts/install-deps installs it)");
    assert!(
        output.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Everything the (finished) writer left in the ring from `reader`'s position on.
fn drain(reader: &mut RingReader) -> Vec<(FrameMeta, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    while let Some(meta) = reader.try_next(&mut buf).expect("ring read") {
        frames.push((meta, std::mem::take(&mut buf)));
    }
    frames
}

/// Feeds `stream` to an H.264 capture on stdin (a ring large enough that nothing is
/// overwritten), waits for it to finish at the end of the input, and returns what it published.
fn published_from_stdin(stream: &[u8]) -> (Vec<(FrameMeta, Vec<u8>)>, VideoFormat) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(bin())
        .args(["--camera", "h264in", "--source", "stdin", "--codec", "h264"])
        .args(["--slots", "128", "--ring-dir"])
        .arg(dir.path())
        .env_remove("RINGCAST_LOG")
        .stdin(Stdio::piped())
        .spawn()
        .expect("start ringcast-capture");
    let mut capture = Running {
        child,
        name: "ringcast-capture".into(),
    };
    // Open before anything is published, so that reading starts at the first frame.
    let mut reader = open_ring(dir.path(), "h264in");
    assert_eq!(reader.codec(), Codec::H264);
    {
        let mut stdin = capture.child.stdin.take().unwrap();
        stdin.write_all(stream).unwrap();
    }
    let status = capture
        .wait_exit()
        .expect("capture did not exit at the end of its input");
    assert!(status.success(), "capture failed: {status}");
    (drain(&mut reader), reader.info().format)
}

fn assert_every_keyframe_is_self_sufficient(frames: &[(FrameMeta, Vec<u8>)]) {
    for (meta, unit) in frames {
        assert_eq!(meta.kind == FrameKind::Key, is_keyframe(unit));
        if meta.kind == FrameKind::Key {
            let types = nal_types(unit);
            for needed in [NAL_SPS, NAL_PPS, NAL_IDR_SLICE] {
                assert!(
                    types.contains(&needed),
                    "keyframe {} lacks NAL type {needed}: {types:?}",
                    meta.frame_no
                );
            }
        }
    }
}

fn keyframe_positions(frames: &[(FrameMeta, Vec<u8>)]) -> Vec<usize> {
    (0..frames.len())
        .filter(|&i| frames[i].0.kind == FrameKind::Key)
        .collect()
}

#[test]
fn the_h264_test_pattern_has_a_keyframe_every_gop_frames_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    let _capture = capture(&[
        "--camera",
        "pattern",
        "--codec",
        "h264",
        "--gop",
        "10",
        "--bitrate",
        "1000",
        "--size",
        "320x240",
        "--fps",
        "30",
        "--slots",
        "64",
        "--ring-dir",
        ring_dir,
    ]);
    let mut reader = open_ring(dir.path(), "pattern");
    let frames = read_frames(&mut reader, 40);

    let info = reader.info();
    assert_eq!(info.codec, Codec::H264);
    let codec_string = info.codec_string.expect("the header has a codec string");
    assert!(codec_string.starts_with("avc1."), "{codec_string}");
    assert_eq!((info.format.width, info.format.height), (320, 240));
    assert_eq!(info.format.fps_milli, 30_000);

    let numbers: Vec<u64> = frames.iter().map(|(meta, _)| meta.frame_no.0).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "frames were skipped: {numbers:?}"
    );
    // A reader starts at a keyframe; from there, one every ten frames and none between.
    assert_eq!(keyframe_positions(&frames), [0, 10, 20, 30]);
    assert_every_keyframe_is_self_sufficient(&frames);

    assert_eq!(decoded_frames(&concatenated(&frames)), Ok(40));
}

#[test]
fn an_h264_stream_on_stdin_is_published_byte_for_byte_one_access_unit_per_frame() {
    for (what, params) in [
        ("with delimiters", "aud=1"),
        ("without delimiters", "aud=0"),
    ] {
        let stream = x264_stream(params);
        let has_delimiters = nal_types(&stream).contains(&NAL_ACCESS_UNIT_DELIMITER);
        assert_eq!(
            has_delimiters,
            params == "aud=1",
            "ffmpeg made the wrong stream"
        );

        let (frames, format) = published_from_stdin(&stream);
        assert_eq!(frames.len(), STREAM_FRAMES, "{what}");
        assert!(
            concatenated(&frames) == stream,
            "{what}: the published bytes differ"
        );
        assert_eq!(
            keyframe_positions(&frames),
            [0, 15, 30, 45],
            "{what}: keyframes"
        );
        assert_every_keyframe_is_self_sufficient(&frames);
        for (_, unit) in &frames {
            let slices = nal_types(unit)
                .iter()
                .filter(|&&t| t == 1 || t == 5)
                .count();
            assert_eq!(slices, 1, "{what}: one picture per access unit");
        }
        assert_eq!(
            format,
            VideoFormat {
                width: 320,
                height: 240,
                fps_milli: 30_000
            },
            "{what}: from the SPS and its timing"
        );
    }
}

/// `stream` cut into access units at its delimiters.
fn access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut units: Vec<Vec<u8>> = Vec::new();
    for nal in nal_units(stream) {
        if nal_type(nal) == Some(NAL_ACCESS_UNIT_DELIMITER) {
            units.push(Vec::new());
        }
        let unit = units
            .last_mut()
            .expect("the stream begins with a delimiter");
        unit.extend_from_slice(&[0, 0, 0, 1]);
        unit.extend_from_slice(nal);
    }
    units
}

fn without_parameter_sets(unit: &[u8]) -> Vec<u8> {
    nal_units(unit)
        .filter(|nal| !matches!(nal_type(nal), Some(NAL_SPS | NAL_PPS)))
        .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
        .collect()
}

#[test]
fn keyframes_on_stdin_without_parameter_sets_get_the_latest_ones() {
    let units = access_units(&x264_stream("aud=1"));
    assert_eq!(units.len(), STREAM_FRAMES);
    // Only the first access unit keeps its SPS and PPS, as some cameras send them.
    let stripped: Vec<u8> = units
        .iter()
        .enumerate()
        .flat_map(|(i, unit)| match i {
            0 => unit.clone(),
            _ => without_parameter_sets(unit),
        })
        .collect();
    assert_eq!(
        nal_types(&stripped)
            .iter()
            .filter(|&&t| t == NAL_SPS)
            .count(),
        1
    );

    let (frames, _) = published_from_stdin(&stripped);
    assert_eq!(frames.len(), STREAM_FRAMES);
    assert_every_keyframe_is_self_sufficient(&frames);
    for ((meta, published), original) in frames.iter().zip(&units) {
        // x264 repeats the same parameter sets at every keyframe: the inserted ones are those.
        assert!(
            nal_units(published).eq(nal_units(original)),
            "frame {}: {:?} is not {:?}",
            meta.frame_no,
            nal_types(published),
            nal_types(original)
        );
    }
    // A reader that joins at the second keyframe can decode from there.
    assert_eq!(
        decoded_frames(&concatenated(&frames[STREAM_GOP..])),
        Ok(STREAM_FRAMES - STREAM_GOP)
    );
}

#[test]
fn access_units_before_the_first_keyframe_on_stdin_are_not_published() {
    let units = access_units(&x264_stream("aud=1"));
    // Joined in the middle of the first group of pictures.
    let joined_late: Vec<u8> = units[5..].concat();
    let (frames, _) = published_from_stdin(&joined_late);
    assert_eq!(frames.len(), STREAM_FRAMES - STREAM_GOP);
    assert_eq!(frames[0].1, units[STREAM_GOP]);
    assert_eq!(
        decoded_frames(&concatenated(&frames)),
        Ok(STREAM_FRAMES - STREAM_GOP)
    );
}

#[test]
fn an_on_demand_h264_capture_resumes_with_a_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    // The group of pictures outlasts the test: keyframes come only when asked for.
    let _capture = capture(&[
        "--camera",
        "odh264",
        "--codec",
        "h264",
        "--gop",
        "3600",
        "--size",
        "160x120",
        "--fps",
        "20",
        "--on-demand",
        "--idle-after",
        "1",
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut reader = open_ring(dir.path(), "odh264");
    let demand = DemandFile::open(dir.path(), &CameraId::new("odh264").unwrap()).unwrap();
    // Asked at once, the source may not have let go of the encoder yet; later, it has.
    for (round, asked_after) in [0, 0, 300, 0].into_iter().enumerate() {
        wait_for("the ring to say idle", || {
            reader.writer_status(Duration::from_secs(5)) == WriterStatus::Idle
        });
        std::thread::sleep(Duration::from_millis(asked_after));
        drain(&mut reader);
        let head = reader.head();
        let cell = demand.claim_cell().unwrap();
        cell.set_viewers(1);
        // Read several frames, so that more than one came since the resume.
        let frames = read_frames(&mut reader, 3);
        let (first, _) = &frames[0];
        assert_eq!(
            first.frame_no.0,
            head.0 + 1,
            "round {round}: nothing skipped"
        );
        assert_eq!(first.kind, FrameKind::Key, "round {round}");
        assert!(frames[1..].iter().all(|(m, _)| m.kind == FrameKind::Delta));
        drop(cell);
    }
}

#[test]
fn flags_that_do_not_fit_h264_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().to_str().unwrap();
    let base = ["--camera", "cam1", "--ring-dir", ring_dir];
    let refusals: [(&[&str], &str); 9] = [
        (
            &["--codec", "h264", "--source", "v4l2:/dev/video0"],
            "--source v4l2 cannot deliver --codec h264",
        ),
        (
            &["--codec", "h264", "--source", "rtmp://user:pw@cam/1"],
            "--source rtmp cannot deliver --codec h264",
        ),
        (
            &["--codec", "h264", "--timestamp"],
            "--timestamp works on JPEG frames only",
        ),
        (
            &["--codec", "h264", "--rotate", "90"],
            "--rotate works on JPEG frames only",
        ),
        (
            &["--codec", "h264", "--push", "ws://127.0.0.1:9/ingest/cam1"],
            "--push works on JPEG frames only",
        ),
        (
            &["--bitrate", "500"],
            "--bitrate sets capture's own H.264 encoder",
        ),
        (
            &["--codec", "h264", "--source", "stdin", "--gop", "10"],
            "--gop sets capture's own H.264 encoder",
        ),
        (
            &["--codec", "h264", "--size", "321x240"],
            "needs an even width and height",
        ),
        (&["--codec", "vp8"], "unknown codec \"vp8\""),
    ];
    for (flags, reason) in refusals {
        let args: Vec<&str> = base.iter().chain(flags).copied().collect();
        let output = capture_output(&args);
        assert!(!output.status.success(), "{flags:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().any(|line| line.contains(reason)),
            "{flags:?}: no line saying {reason:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
        assert!(!stderr.contains("pw@"), "{flags:?} shows the password");
    }
    assert!(
        !ring_file(Path::new(ring_dir), "cam1").exists(),
        "a refused capture made a ring"
    );
}

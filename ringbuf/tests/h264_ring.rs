//! H.264 rings: the codec in the header, keyframe flags, and readers that never start or resume
//! on a frame a decoder cannot use.

use std::time::Duration;

use ringbuf::{
    CameraId, Codec, FrameKind, FrameNo, RingGeometry, RingReader, RingWriter, WallNanos,
};

fn camera() -> CameraId {
    CameraId::new("cam1").unwrap()
}

/// Eight slots: a reader may lag six frames behind `head` and still read.
fn geometry() -> RingGeometry {
    RingGeometry {
        slot_count: 8,
        slot_size: 1024,
    }
}

/// An IDR access unit (SPS of profile 0x42, constraints 0xE0, level 0x1E; PPS; IDR slice)
/// tagged with `n`.
fn key_au(n: u64) -> Vec<u8> {
    let mut au = vec![
        0, 0, 0, 1, 0x67, 0x42, 0xE0, 0x1E, 0xAB, 0, 0, 1, 0x68, 0xCE, 0x38,
    ];
    au.extend_from_slice(&[0, 0, 1, 0x65, 0x88]);
    au.extend_from_slice(&n.to_le_bytes());
    au
}

fn delta_au(n: u64) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x41, 0x9A];
    au.extend_from_slice(&n.to_le_bytes());
    au
}

/// Publishes frames `from..=to`, a keyframe every `gop` frames counted from frame 1.
fn publish_gops(writer: &mut RingWriter, from: u64, to: u64, gop: u64) {
    for n in from..=to {
        let (au, kind) = if (n - 1) % gop == 0 {
            (key_au(n), FrameKind::Key)
        } else {
            (delta_au(n), FrameKind::Delta)
        };
        let published = writer.publish_frame(&au, WallNanos(n), kind).unwrap();
        assert_eq!(published, FrameNo(n));
    }
}

fn h264_writer(dir: &std::path::Path) -> RingWriter {
    RingWriter::create_for_codec(dir, &camera(), geometry(), Codec::H264).unwrap()
}

#[test]
fn the_header_says_the_codec_and_the_codec_string_of_the_last_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    let reader = RingReader::open(writer.path()).unwrap();
    assert_eq!(reader.codec(), Codec::H264);
    assert_eq!(reader.info().codec_string, None, "no keyframe yet");
    publish_gops(&mut writer, 1, 2, 30);
    let info = reader.info();
    assert_eq!(info.codec, Codec::H264);
    assert_eq!(info.codec_string.as_deref(), Some("avc1.42E01E"));

    let jpeg = tempfile::tempdir().unwrap();
    let writer = RingWriter::create(jpeg.path(), &camera(), geometry()).unwrap();
    let info = RingReader::open(writer.path()).unwrap().info();
    assert_eq!((info.codec, info.codec_string), (Codec::Jpeg, None));
}

#[test]
fn a_reader_opened_mid_group_starts_at_its_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    publish_gops(&mut writer, 1, 7, 5);
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    let first = reader.try_next(&mut buf).unwrap().unwrap();
    assert_eq!((first.frame_no, first.kind), (FrameNo(6), FrameKind::Key));
    assert_eq!(buf, key_au(6));
    let second = reader.try_next(&mut buf).unwrap().unwrap();
    assert_eq!(
        (second.frame_no, second.kind),
        (FrameNo(7), FrameKind::Delta)
    );
}

#[test]
fn a_reader_opened_when_the_keyframe_is_gone_waits_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    publish_gops(&mut writer, 1, 20, 30);
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        reader.try_next(&mut buf).unwrap(),
        None,
        "frame 20 is a delta"
    );
    publish_gops(&mut writer, 21, 30, 30);
    assert_eq!(reader.try_next(&mut buf).unwrap(), None);
    publish_gops(&mut writer, 31, 32, 30);
    let meta = reader
        .next_timeout(&mut buf, Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!((meta.frame_no, meta.kind), (FrameNo(31), FrameKind::Key));
    assert_eq!(reader.stats().skipped, 11, "frames 20 to 30 passed over");
}

#[test]
fn a_lapped_reader_resumes_at_the_newest_readable_keyframe_and_counts_what_it_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    publish_gops(&mut writer, 1, 1, 4);
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(1)
    );
    // Frames 2..=20 while the reader sleeps: keyframes at 5, 9, 13, 17; readable: 14..=20.
    publish_gops(&mut writer, 2, 20, 4);
    let mut got = Vec::new();
    while let Some(meta) = reader.try_next(&mut buf).unwrap() {
        got.push((meta.frame_no.0, meta.kind));
    }
    assert_eq!(
        got,
        [
            (17, FrameKind::Key),
            (18, FrameKind::Delta),
            (19, FrameKind::Delta),
            (20, FrameKind::Delta)
        ]
    );
    assert_eq!(reader.stats().skipped, 15);
}

#[test]
fn a_lapped_reader_with_no_keyframe_in_reach_drops_delta_frames_until_one_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    let mut reader = RingReader::open(writer.path()).unwrap();
    let mut buf = Vec::new();
    publish_gops(&mut writer, 1, 1, 30);
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(1)
    );
    publish_gops(&mut writer, 2, 20, 30);
    assert_eq!(reader.try_next(&mut buf).unwrap(), None);
    publish_gops(&mut writer, 21, 31, 30);
    let meta = reader.try_next(&mut buf).unwrap().unwrap();
    assert_eq!((meta.frame_no, meta.kind), (FrameNo(31), FrameKind::Key));
    assert_eq!(reader.stats().skipped, 29);
    assert_eq!(reader.stats().delivered, 2);
}

#[test]
fn a_writer_of_another_codec_replaces_the_ring_and_keeps_its_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let mut jpeg = RingWriter::create(dir.path(), &camera(), geometry()).unwrap();
    for n in 1..=3u64 {
        jpeg.publish(b"\xff\xd8jpeg\xff\xd9", WallNanos(n)).unwrap();
    }
    drop(jpeg);
    let mut writer = h264_writer(dir.path());
    assert_eq!(writer.codec(), Codec::H264);
    publish_gops(&mut writer, 4, 4, 1);
    let mut reader = RingReader::open(writer.path()).unwrap();
    assert_eq!(reader.codec(), Codec::H264);
    let mut buf = Vec::new();
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(4)
    );
}

#[test]
fn after_a_refused_keyframe_delta_frames_are_refused_until_the_next_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = h264_writer(dir.path());
    let mut reader = RingReader::open(writer.path()).unwrap();
    publish_gops(&mut writer, 1, 2, 30);
    let mut huge = key_au(3);
    huge.resize(geometry().slot_size + 1, 0x88);
    assert!(matches!(
        writer.publish_frame(&huge, WallNanos(3), FrameKind::Key),
        Err(ringbuf::Error::FrameTooLarge { .. })
    ));
    for n in 4..=5 {
        assert!(matches!(
            writer.publish_frame(&delta_au(n), WallNanos(n), FrameKind::Delta),
            Err(ringbuf::Error::AwaitingKeyframe)
        ));
    }
    assert_eq!(
        writer.publish(&key_au(6), WallNanos(6)).unwrap(),
        FrameNo(3)
    );
    assert_eq!(
        writer.publish(&delta_au(7), WallNanos(7)).unwrap(),
        FrameNo(4)
    );
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Some(meta) = reader.try_next(&mut buf).unwrap() {
        got.push((meta.frame_no.0, meta.kind, buf.clone()));
    }
    let kinds: Vec<_> = got.iter().map(|(n, kind, _)| (*n, *kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, FrameKind::Key),
            (2, FrameKind::Delta),
            (3, FrameKind::Key),
            (4, FrameKind::Delta)
        ]
    );
    assert_eq!(got[2].2, key_au(6), "publish found the keyframe itself");
    assert_eq!(reader.info().frames_rejected, 3);
}

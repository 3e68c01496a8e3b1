//! Ring files that are damaged or forged: each gives a clean, distinct `ringbuf::Error` (or, for
//! a slot, `Error::CorruptSlot` from `try_next`), never a panic or an out-of-bounds read.
//!
//! Forgeries start from a real ring made by `RingWriter` and overwrite bytes at the offsets of
//! `mapped.rs`'s `RingHeader` (`repr(C)`, little-endian; offsets follow from the field order):
//!
//! | offset | field | | offset | field |
//! | --- | --- | --- | --- | --- |
//! | 0 | magic u64 = b"RINGCAST" | | 84 | writer_state u32 |
//! | 8 | version u32 = 2 | | 88 | writer_pid u32 |
//! | 12 | header_size u32 = 4096 | | 92 | futex u32 |
//! | 16 | slot_count u32 | | 96 | heartbeat u64 |
//! | 20 | format u32 = 1 (JPEG), 2 (H.264) | | 104 | head u64 |
//! | 24 | slot_size u64 | | 112 | published_at u64 |
//! | 32 | slot_stride u64 | | 120 | frames_published u64 |
//! | 40 | camera [u8; 32], NUL-padded | | 128 | bytes_published u64 |
//! | 72 | width u32 | | 136 | frames_rejected u64 |
//! | 76 | height u32 | | 144 | writer_starts u64 |
//! | 80 | fps_milli u32 | | 152 | writer_kind u32 (1 local, 2 ingest) |
//! | | | | 156 | local_claim u32 (pid of a capture waiting for an ingest ring) |
//! | | | | 160 | local_claim_at u64 (CLOCK_MONOTONIC ns the claim was last renewed) |
//! | | | | 168 | codec_string [u8; 32], NUL-padded (`avc1.42E01E`; empty for JPEG) |
//!
//! Slot `i` starts at `4096 + i * stride`, `stride = 64 + slot_size` rounded up to 64: `seq` u64
//! at +0 (`2n - 1` while frame `n` is written, `2n` once complete), `len` at +8, capture time at
//! +16, frame number at +24, flags at +32 (bit 0: keyframe), payload at +64. Frame `n` lives in
//! slot `n % slot_count`.
//! `the_documented_offsets_match_a_real_ring` pins this table to what the writer produces.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringbuf::{
    CameraId, Clock, Error, FrameNo, RingGeometry, RingReader, RingWriter, SystemClock, WallNanos,
    MAX_SLOTS, MAX_SLOT_SIZE,
};
use tempfile::TempDir;

const CAMERA: &str = "hostile";
const SLOT_COUNT: u32 = 4;
const SLOT_SIZE: usize = 1000;
const GEOMETRY: RingGeometry = RingGeometry {
    slot_count: SLOT_COUNT,
    slot_size: SLOT_SIZE,
};
const HEADER_SIZE: u64 = 4096;
const STRIDE: u64 = 64 + 1024;
const FILE_SIZE: u64 = HEADER_SIZE + SLOT_COUNT as u64 * STRIDE;

const MAGIC: u64 = 0;
const VERSION: u64 = 8;
const HEADER_SIZE_FIELD: u64 = 12;
const SLOT_COUNT_FIELD: u64 = 16;
const FORMAT: u64 = 20;
const SLOT_SIZE_FIELD: u64 = 24;
const STRIDE_FIELD: u64 = 32;
const CAMERA_FIELD: u64 = 40;
const WRITER_PID: u64 = 88;
const HEAD: u64 = 104;
const WRITER_STARTS: u64 = 144;
const WRITER_KIND: u64 = 152;
const LOCAL_CLAIM: u64 = 156;
const LOCAL_CLAIM_AT: u64 = 160;

const SEQ: u64 = 0;
const LEN: u64 = 8;
const CAPTURE: u64 = 16;
const FRAME_NO: u64 = 24;
const FLAGS: u64 = 32;
const PAYLOAD: u64 = 64;

fn slot_offset(frame: u64) -> u64 {
    HEADER_SIZE + (frame % u64::from(SLOT_COUNT)) * STRIDE
}

fn payload_of(frame: u64) -> Vec<u8> {
    vec![frame as u8; 10 + frame as usize]
}

/// A ring with frames 1..=3 published and its writer gone.
fn real_ring() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer =
        RingWriter::create(dir.path(), &CameraId::new(CAMERA).unwrap(), GEOMETRY).unwrap();
    for n in 1..=3 {
        writer.publish(&payload_of(n), WallNanos(n)).unwrap();
    }
    let path = writer.path().to_owned();
    (dir, path)
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn poke_u32(path: &Path, offset: u64, value: u32) {
    poke(path, offset, &value.to_le_bytes());
}

fn poke_u64(path: &Path, offset: u64, value: u64) {
    poke(path, offset, &value.to_le_bytes());
}

fn peek<const N: usize>(path: &Path, offset: u64) -> [u8; N] {
    let mut bytes = [0u8; N];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut bytes, offset)
        .unwrap();
    bytes
}

fn peek_u32(path: &Path, offset: u64) -> u32 {
    u32::from_le_bytes(peek(path, offset))
}

fn peek_u64(path: &Path, offset: u64) -> u64 {
    u64::from_le_bytes(peek(path, offset))
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The error opening `path` gives; fails the test if it opens.
fn refusal(path: &Path) -> Error {
    match RingReader::open(path) {
        Ok(_) => panic!("a forged ring was accepted"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error does not name the file: {message}"
            );
            e
        }
    }
}

/// The reason of a `BadHeader` refusal; fails the test on any other outcome.
fn bad_header(path: &Path) -> String {
    match refusal(path) {
        Error::BadHeader { reason, .. } => reason,
        other => panic!("expected BadHeader, got {other:?}"),
    }
}

#[test]
fn the_documented_offsets_match_a_real_ring() {
    let (_dir, path) = real_ring();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_SIZE);
    assert_eq!(peek::<8>(&path, MAGIC), *b"RINGCAST");
    assert_eq!(peek_u32(&path, VERSION), 2);
    assert_eq!(peek_u32(&path, HEADER_SIZE_FIELD), 4096);
    assert_eq!(peek_u32(&path, SLOT_COUNT_FIELD), SLOT_COUNT);
    assert_eq!(peek_u32(&path, FORMAT), 1);
    assert_eq!(peek_u64(&path, SLOT_SIZE_FIELD), SLOT_SIZE as u64);
    assert_eq!(peek_u64(&path, STRIDE_FIELD), STRIDE);
    assert_eq!(&peek::<32>(&path, CAMERA_FIELD)[..8], b"hostile\0");
    assert_eq!(peek_u32(&path, WRITER_PID), std::process::id());
    assert_eq!(peek_u64(&path, HEAD), 3);
    assert_eq!(peek_u64(&path, WRITER_STARTS), 1);
    assert_eq!(peek_u32(&path, WRITER_KIND), 1);
    for n in 1..=3u64 {
        let slot = slot_offset(n);
        assert_eq!(peek_u64(&path, slot + SEQ), 2 * n);
        assert_eq!(peek_u64(&path, slot + LEN), 10 + n);
        assert_eq!(peek_u64(&path, slot + CAPTURE), n);
        assert_eq!(peek_u64(&path, slot + FRAME_NO), n);
        assert_eq!(
            peek_u64(&path, slot + FLAGS),
            1,
            "every JPEG frame is a keyframe"
        );
        assert_eq!(peek::<11>(&path, slot + PAYLOAD), [n as u8; 11]);
    }
    // Untouched, the ring opens.
    RingReader::open(&path).unwrap();
}

#[test]
fn a_file_shorter_than_the_header_is_truncated() {
    let (_dir, path) = real_ring();
    for len in [4095, 100, 8, 0] {
        set_len(&path, len);
        match refusal(&path) {
            Error::Truncated {
                expected, actual, ..
            } => assert_eq!((expected, actual), (HEADER_SIZE, len)),
            other => panic!("{len} bytes: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn a_file_shorter_than_its_slots_is_truncated() {
    let (_dir, path) = real_ring();
    for len in [FILE_SIZE - 1, HEADER_SIZE + STRIDE, HEADER_SIZE] {
        set_len(&path, len);
        match refusal(&path) {
            Error::Truncated {
                expected, actual, ..
            } => assert_eq!((expected, actual), (FILE_SIZE, len)),
            other => panic!("{len} bytes: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn a_slot_count_the_file_cannot_hold_is_truncated() {
    let (_dir, path) = real_ring();
    poke_u32(&path, SLOT_COUNT_FIELD, MAX_SLOTS);
    match refusal(&path) {
        Error::Truncated {
            expected, actual, ..
        } => assert_eq!(
            (expected, actual),
            (HEADER_SIZE + u64::from(MAX_SLOTS) * STRIDE, FILE_SIZE)
        ),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn a_wrong_magic_is_not_a_ring() {
    let (_dir, path) = real_ring();
    poke(&path, MAGIC, b"RINGCASU");
    assert!(matches!(refusal(&path), Error::BadMagic { .. }));
    // A file of zeros of the right size, as a crashed `truncate` would leave.
    std::fs::write(&path, vec![0u8; FILE_SIZE as usize]).unwrap();
    assert!(matches!(refusal(&path), Error::BadMagic { .. }));
}

#[test]
fn a_wrong_version_is_named() {
    let (_dir, path) = real_ring();
    for version in [1, 3, 0, u32::MAX] {
        poke_u32(&path, VERSION, version);
        match refusal(&path) {
            Error::UnsupportedVersion {
                found, supported, ..
            } => assert_eq!((found, supported), (version, 2)),
            other => panic!("version {version}: expected UnsupportedVersion, got {other:?}"),
        }
    }
}

#[test]
fn impossible_slot_counts_are_bad_headers() {
    let (_dir, path) = real_ring();
    for count in [0, 1, MAX_SLOTS + 1, u32::MAX] {
        poke_u32(&path, SLOT_COUNT_FIELD, count);
        let reason = bad_header(&path);
        assert!(
            reason.contains(&format!("{count} slots")),
            "{count}: {reason}"
        );
    }
}

#[test]
fn slot_sizes_beyond_the_limits_are_bad_headers() {
    let (_dir, path) = real_ring();
    for size in [0, MAX_SLOT_SIZE as u64 + 1, u64::MAX] {
        poke_u64(&path, SLOT_SIZE_FIELD, size);
        let reason = bad_header(&path);
        assert!(reason.contains("slot size"), "{size}: {reason}");
    }
    // Each bound allowed, together more than any ring may be: refused before anything is mapped.
    poke_u32(&path, SLOT_COUNT_FIELD, MAX_SLOTS);
    poke_u64(&path, SLOT_SIZE_FIELD, MAX_SLOT_SIZE as u64);
    poke_u64(&path, STRIDE_FIELD, 64 + MAX_SLOT_SIZE as u64);
    let reason = bad_header(&path);
    assert!(reason.contains("too large"), "{reason}");
}

#[test]
fn a_stride_that_does_not_match_the_slot_size_is_a_bad_header() {
    let (_dir, path) = real_ring();
    for stride in [STRIDE + 64, STRIDE - 64, SLOT_SIZE as u64, 0, u64::MAX] {
        poke_u64(&path, STRIDE_FIELD, stride);
        let reason = bad_header(&path);
        assert!(
            reason.contains(&format!("slot stride {stride}")),
            "{stride}: {reason}"
        );
    }
}

#[test]
fn a_wrong_header_size_or_payload_format_is_a_bad_header() {
    let (_dir, path) = real_ring();
    poke_u32(&path, HEADER_SIZE_FIELD, 8192);
    assert!(bad_header(&path).contains("header size 8192"));
    poke_u32(&path, HEADER_SIZE_FIELD, 4096);
    poke_u32(&path, FORMAT, 7);
    assert!(bad_header(&path).contains("format 7"));
}

#[test]
fn camera_names_that_are_not_allowed_are_bad_headers() {
    let (_dir, path) = real_ring();
    let forged: [&[u8]; 6] = [
        b"CAM1",
        b"../../etc/passwd",
        b"cam 1",
        b"\xff\xfe",
        b"",
        b"caf\xc3\xa9",
    ];
    for name in forged {
        let mut field = [0u8; 32];
        field[..name.len()].copy_from_slice(name);
        poke(&path, CAMERA_FIELD, &field);
        let reason = bad_header(&path);
        assert!(reason.contains("camera name"), "{name:?}: {reason}");
    }
    // All 32 bytes used, no NUL: the longest allowed name, read in full.
    let longest = [b'x'; 32];
    poke(&path, CAMERA_FIELD, &longest);
    let reader = RingReader::open(&path).unwrap();
    assert_eq!(reader.camera().as_str(), "x".repeat(32));
}

#[test]
fn a_complete_slot_whose_length_exceeds_the_slot_is_a_corrupt_slot() {
    let (_dir, path) = real_ring();
    let mut reader = RingReader::open(&path).unwrap();
    // The reader starts at the newest frame (3); forge a writer that publishes frames 4 to 6.
    let mut buf = Vec::new();
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(3)
    );
    forge_frame(&path, 4, SLOT_SIZE as u64 + 1);
    forge_frame(&path, 5, u64::MAX);
    forge_frame(&path, 6, SLOT_SIZE as u64);
    poke_u64(&path, HEAD, 6);

    for (frame, len) in [(4, SLOT_SIZE as u64 + 1), (5, u64::MAX)] {
        match reader.try_next(&mut buf) {
            Err(Error::CorruptSlot { frame: f, reason }) => {
                assert_eq!(f, frame);
                assert!(reason.contains(&format!("length {len}")), "{reason}");
            }
            other => panic!("frame {frame}: expected CorruptSlot, got {other:?}"),
        }
    }
    // The reader moved past both and reads the next good frame, a full slot.
    let meta = reader.try_next(&mut buf).unwrap().unwrap();
    assert_eq!((meta.frame_no, meta.len), (FrameNo(6), SLOT_SIZE));
    assert_eq!(buf, vec![6u8; SLOT_SIZE]);
    let stats = reader.stats();
    assert_eq!((stats.delivered, stats.skipped), (2, 2));
}

#[test]
fn a_complete_slot_holding_another_frame_number_is_a_corrupt_slot() {
    let (_dir, path) = real_ring();
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    reader.try_next(&mut buf).unwrap().unwrap();
    forge_frame(&path, 4, 10);
    poke_u64(&path, slot_offset(4) + FRAME_NO, 8);
    poke_u64(&path, HEAD, 4);
    match reader.next_timeout(&mut buf, Duration::from_secs(1)) {
        Err(Error::CorruptSlot { frame: 4, reason }) => {
            assert!(reason.contains("slot says frame 8"), "{reason}")
        }
        other => panic!("expected CorruptSlot, got {other:?}"),
    }
    // A snapshot of the corrupt newest frame is simply not there.
    assert_eq!(reader.newest(&mut buf), None);
}

#[test]
fn a_slot_left_half_written_is_never_returned() {
    let (_dir, path) = real_ring();
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    reader.try_next(&mut buf).unwrap().unwrap();
    // A writer that died while writing frame 4, and a head that claims it anyway.
    forge_frame(&path, 4, 10);
    poke_u64(&path, slot_offset(4) + SEQ, 2 * 4 - 1);
    poke_u64(&path, HEAD, 4);
    assert_eq!(reader.try_next(&mut buf).unwrap(), None);
    assert_eq!(
        reader
            .next_timeout(&mut buf, Duration::from_millis(50))
            .unwrap(),
        None
    );
    assert!(reader.stats().torn > 0);
    assert_eq!(reader.newest(&mut buf), None);
}

#[test]
fn a_head_far_beyond_the_slots_gives_nothing_and_no_panic() {
    let (_dir, path) = real_ring();
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    reader.try_next(&mut buf).unwrap().unwrap();
    poke_u64(&path, HEAD, 1 << 40);
    for _ in 0..3 {
        assert_eq!(reader.try_next(&mut buf).unwrap(), None);
    }
    assert_eq!(reader.newest(&mut buf), None);
    // A reader opened now starts there and gets nothing either.
    let mut late = RingReader::open(&path).unwrap();
    assert_eq!(late.try_next(&mut buf).unwrap(), None);
}

#[test]
fn a_head_beyond_any_real_frame_number_is_a_bad_header() {
    let (_dir, path) = real_ring();
    // A complete slot for the forged head, so nothing but the number itself is wrong.
    forge_frame(&path, u64::MAX, 10);
    for head in [u64::MAX, FrameNo::MAX_VALID.0 + 1] {
        poke_u64(&path, HEAD, head);
        let reason = bad_header(&path);
        assert!(reason.contains(&format!("head {head}")), "{reason}");
    }
    poke_u64(&path, HEAD, FrameNo::MAX_VALID.0);
    RingReader::open(&path).unwrap();
}

#[test]
fn a_head_scribbled_past_the_numbers_under_a_reader_is_never_followed_round() {
    let (_dir, path) = real_ring();
    let mut reader = RingReader::open(&path).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        reader.try_next(&mut buf).unwrap().unwrap().frame_no,
        FrameNo(3)
    );
    forge_frame(&path, u64::MAX, 10);
    poke_u64(&path, HEAD, u64::MAX);
    for _ in 0..5 {
        match reader.try_next(&mut buf) {
            Err(Error::CorruptSlot { frame, reason }) => {
                assert_eq!(frame, u64::MAX);
                assert!(reason.contains("beyond any real frame number"), "{reason}");
            }
            other => panic!("expected CorruptSlot, got {other:?}"),
        }
    }
    assert_eq!(reader.stats().delivered, 1);
    assert_eq!(reader.newest(&mut buf), None);
}

#[test]
fn something_other_than_a_file_under_a_ring_name_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.ring");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let directory = dir.path().join("dir.ring");
    std::fs::create_dir(&directory).unwrap();
    for path in [fifo, directory] {
        let (tx, rx) = std::sync::mpsc::channel();
        let opening = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(RingReader::open(&opening).map(|_| ()));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Err(Error::NotAFile { path: named })) => assert_eq!(named, path),
            Ok(other) => panic!("{}: expected NotAFile, got {other:?}", path.display()),
            Err(_) => {
                // Release the open(2) blocked on the FIFO before failing.
                let _ = OpenOptions::new().write(true).open(&path);
                panic!("RingReader::open blocked on {}", path.display());
            }
        }
    }
}

#[test]
fn a_symbolic_link_under_a_ring_name_is_neither_read_nor_written_through() {
    let (dir, elsewhere) = real_ring();
    let before = std::fs::read(&elsewhere).unwrap();
    let ring_dir = tempfile::tempdir().unwrap();
    let planted = ring_dir.path().join(format!("{CAMERA}.ring"));
    std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
    assert!(matches!(
        RingReader::open(&planted),
        Err(Error::NotAFile { .. })
    ));
    let camera = CameraId::new(CAMERA).unwrap();
    assert!(matches!(
        RingWriter::create(ring_dir.path(), &camera, GEOMETRY),
        Err(Error::NotAFile { .. })
    ));
    assert!(matches!(
        ringbuf::demand::DemandFile::open(ring_dir.path(), &CameraId::new("linked").unwrap())
            .and_then(|_| {
                let demand = ring_dir.path().join("other.demand");
                std::os::unix::fs::symlink(&elsewhere, &demand).unwrap();
                ringbuf::demand::DemandFile::open(ring_dir.path(), &CameraId::new("other").unwrap())
            }),
        Err(Error::NotAFile { .. })
    ));
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        before,
        "the target was written"
    );
    drop(dir);
}

/// Writes frame `frame` into its slot as a complete frame whose `len` field is `len`, with a
/// payload of the byte `frame` over the whole slot.
fn forge_frame(path: &Path, frame: u64, len: u64) {
    let slot = slot_offset(frame);
    poke(path, slot + PAYLOAD, &[frame as u8; SLOT_SIZE]);
    poke_u64(path, slot + LEN, len);
    poke_u64(path, slot + CAPTURE, frame);
    poke_u64(path, slot + FRAME_NO, frame);
    poke_u64(path, slot + SEQ, frame.wrapping_mul(2));
}

/// What is wrong with a file, how to do it to a real ring, and where a writer taking the file over
/// must resume numbering.
type Damage = (&'static str, fn(&Path), FrameNo);

#[test]
fn a_writer_replaces_a_damaged_or_foreign_file() {
    let camera = CameraId::new(CAMERA).unwrap();
    let cases: [Damage; 5] = [
        ("too short", |p| set_len(p, 100), FrameNo::NONE),
        ("bad magic", |p| poke(p, MAGIC, b"XXXXXXXX"), FrameNo::NONE),
        (
            "absurd head",
            |p| poke_u64(p, HEAD, u64::MAX - 1),
            FrameNo::NONE,
        ),
        (
            "another camera's ring",
            |p| poke(p, CAMERA_FIELD, b"other\0\0\0"),
            FrameNo(3),
        ),
        (
            "another geometry",
            |p| {
                poke_u64(p, SLOT_SIZE_FIELD, 64);
                poke_u64(p, STRIDE_FIELD, 128);
            },
            FrameNo(3),
        ),
    ];
    for (what, damage, head) in cases {
        let (dir, path) = real_ring();
        damage(&path);
        let mut writer = RingWriter::create(dir.path(), &camera, GEOMETRY)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(writer.head(), head, "{what}");
        let frame = writer.publish(b"fresh", WallNanos(1)).unwrap();
        let reader = RingReader::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reader.geometry(), GEOMETRY, "{what}");
        assert_eq!(reader.camera(), &camera, "{what}");
        let mut buf = Vec::new();
        assert_eq!(reader.newest(&mut buf).unwrap().frame_no, frame, "{what}");
        assert_eq!(buf, b"fresh", "{what}");
    }
}

#[test]
fn an_unknown_writer_kind_counts_as_a_local_camera_that_ingest_never_takes() {
    let (dir, path) = real_ring();
    let camera = CameraId::new(CAMERA).unwrap();
    for forged in [0u32, 3, u32::MAX] {
        poke_u32(&path, WRITER_KIND, forged);
        assert!(matches!(
            ringbuf::ingest_may_write(dir.path(), &camera, GEOMETRY),
            Err(Error::LocalCamera { .. })
        ));
        assert!(matches!(
            RingWriter::create_for_ingest(dir.path(), &camera, GEOMETRY),
            Err(Error::LocalCamera { .. })
        ));
    }
}

#[test]
fn only_a_claim_renewed_within_a_second_holds_ingest_off() {
    let dir = tempfile::tempdir().unwrap();
    let camera = CameraId::new(CAMERA).unwrap();
    let path = RingWriter::create_for_ingest(dir.path(), &camera, GEOMETRY)
        .unwrap()
        .path()
        .to_owned();
    let now = SystemClock.mono().0;
    let second = 1_000_000_000;
    // Claims left by a capture that gave up or died long ago (whatever process has its pid
    // now, this one included), stamped in the future, or naming no process.
    for (pid, at) in [
        (std::process::id(), 0),
        (std::process::id(), now.saturating_sub(2 * second)),
        (std::process::id(), now + 60 * second),
        (std::process::id(), u64::MAX),
        (0, now),
    ] {
        poke_u32(&path, LOCAL_CLAIM, pid);
        poke_u64(&path, LOCAL_CLAIM_AT, at);
        ringbuf::ingest_may_write(dir.path(), &camera, GEOMETRY).unwrap();
        let writer = RingWriter::create_for_ingest(dir.path(), &camera, GEOMETRY).unwrap();
        assert!(!writer.local_capture_waits(), "pid {pid} at {at}");
        assert_eq!(RingReader::open(&path).unwrap().info().local_claim, None);
    }
    // A current one does, whichever pid it names.
    poke_u32(&path, LOCAL_CLAIM, 7);
    poke_u64(&path, LOCAL_CLAIM_AT, SystemClock.mono().0);
    assert!(matches!(
        ringbuf::ingest_may_write(dir.path(), &camera, GEOMETRY),
        Err(Error::LocalCamera { .. })
    ));
    assert_eq!(RingReader::open(&path).unwrap().info().local_claim, Some(7));
}

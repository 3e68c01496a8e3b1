//! The ring directory: who may have made it, and what happens when its file system is full.
//!
//! Some of these need root (to give a directory to another user, to mount a small tmpfs). CI
//! runs them as root; elsewhere they say they were skipped, except under `CI=true`, where
//! skipping would hide a failure.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::files::{root_for, SmallTmpfs};
use ringbuf::demand::DemandFile;
use ringbuf::{CameraId, Error, RingGeometry, RingReader, RingWriter, WallNanos};

fn camera() -> CameraId {
    CameraId::new("cam1").unwrap()
}

fn small() -> RingGeometry {
    RingGeometry {
        slot_count: 4,
        slot_size: 128 << 10,
    }
}

/// The reason of an `UntrustedRingDir` refusal from every way into a ring directory.
fn refusals(dir: &Path) -> Vec<String> {
    let reason = |result: Result<(), Error>| match result {
        Err(Error::UntrustedRingDir { reason, .. }) => reason,
        other => panic!("expected UntrustedRingDir, got {other:?}"),
    };
    vec![
        reason(RingWriter::create(dir, &camera(), small()).map(drop)),
        reason(DemandFile::open(dir, &camera()).map(drop)),
        reason(ringbuf::scan_ring_dir(dir).map(drop)),
    ]
}

#[test]
fn a_ring_directory_anyone_may_write_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("rings");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for reason in refusals(&dir) {
        assert!(reason.contains("chmod o-w"), "{reason}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    RingWriter::create(&dir, &camera(), small()).unwrap();
}

#[test]
fn a_ring_directory_another_user_made_is_refused() {
    if !root_for("a_ring_directory_another_user_made_is_refused") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("rings");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    for reason in refusals(&dir) {
        assert!(reason.contains("owned by uid 65534"), "{reason}");
    }
}

#[test]
fn a_ring_directory_that_is_a_symbolic_link_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.path().join("rings");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for reason in refusals(&link) {
        assert!(reason.contains("symbolic link"), "{reason}");
    }
}

#[test]
fn a_ring_that_does_not_fit_is_refused_naming_the_directory_and_the_space() {
    if !root_for("a_ring_that_does_not_fit_is_refused_naming_the_directory_and_the_space") {
        return;
    }
    let tmpfs = SmallTmpfs::mount("1m");
    let error = match RingWriter::create(&tmpfs.dir, &camera(), RingGeometry::default()) {
        Err(e @ Error::NoSpace { .. }) => e.to_string(),
        other => panic!("expected NoSpace, got {:?}", other.map(|_| ())),
    };
    assert!(error.contains(&tmpfs.dir.display().to_string()), "{error}");
    assert!(error.contains("16.0 MiB"), "{error}");
    assert!(error.contains("free"), "{error}");
    let left: Vec<_> = std::fs::read_dir(&tmpfs.dir).unwrap().collect();
    assert!(left.is_empty(), "the refused ring left files: {left:?}");
}

#[test]
fn a_ring_that_fits_never_faults_when_its_file_system_fills_up() {
    if !root_for("a_ring_that_fits_never_faults_when_its_file_system_fills_up") {
        return;
    }
    let tmpfs = SmallTmpfs::mount("1m");
    let mut writer = RingWriter::create(&tmpfs.dir, &camera(), small()).unwrap();
    let mut reader = RingReader::open(writer.path()).unwrap();
    tmpfs.fill();
    assert!(
        ringbuf::scan_ring_dir(&tmpfs.dir).is_ok(),
        "the full directory is still readable"
    );
    // Every slot written for the first time after the file system is full: the ring's pages
    // were reserved when it was made.
    let mut buf = Vec::new();
    for n in 1..=8u64 {
        let frame = vec![n as u8; 100_000];
        writer.publish(&frame, WallNanos(n)).unwrap();
        reader.try_next(&mut buf).unwrap().unwrap();
        assert_eq!(buf, frame);
    }
    match DemandFile::open(&tmpfs.dir, &CameraId::new("cam2").unwrap()) {
        Err(Error::NoSpace { .. }) => {}
        other => panic!("expected NoSpace, got {:?}", other.map(|_| ())),
    }
}

//! Demand files: server workers report viewers, capture sums the live ones.

use std::sync::Arc;
use std::time::Duration;

use ringbuf::demand::{DemandFile, CELLS, DEFAULT_CELL_EXPIRY};
use ringbuf::{CameraId, Clock, MonoNanos, SystemClock};

fn open(dir: &std::path::Path) -> Arc<DemandFile> {
    DemandFile::open(dir, &CameraId::new("cam1").unwrap()).unwrap()
}

#[test]
fn viewers_of_all_workers_add_up_and_leave_with_their_cell() {
    let dir = tempfile::tempdir().unwrap();
    let worker_a = open(dir.path());
    let worker_b = open(dir.path());
    let capture = open(dir.path());
    let a = worker_a.claim_cell().unwrap();
    let b = worker_b.claim_cell().unwrap();
    a.set_viewers(3);
    b.set_viewers(2);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 5);
    drop(a);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 2);
    b.set_viewers(0);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 0);
}

#[test]
fn a_silent_cell_stops_counting_after_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let demand = open(dir.path());
    let cell = demand.claim_cell().unwrap();
    cell.set_viewers(4);
    let now = SystemClock.mono();
    assert_eq!(demand.viewers_at(now, Duration::from_secs(5)), 4);
    let later = MonoNanos(now.0 + 6_000_000_000);
    assert_eq!(demand.viewers_at(later, Duration::from_secs(5)), 0);
}

#[test]
fn a_change_of_viewers_wakes_the_waiting_capture() {
    let dir = tempfile::tempdir().unwrap();
    let capture = open(dir.path());
    let generation = capture.generation();
    let server = open(dir.path());
    let waiter = std::thread::spawn(move || {
        capture.wait_for_change(generation, Duration::from_secs(20));
        capture.viewers(DEFAULT_CELL_EXPIRY)
    });
    let cell = server.claim_cell().unwrap();
    cell.set_viewers(1);
    assert_eq!(waiter.join().unwrap(), 1);
}

#[test]
fn cells_run_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let demand = open(dir.path());
    let held: Vec<_> = (0..CELLS).map(|_| demand.claim_cell().unwrap()).collect();
    let err = demand.claim_cell().err().expect("a cell beyond the last");
    assert!(err.to_string().contains("demand cells are in use"), "{err}");
    drop(held);
    assert!(demand.claim_cell().is_ok());
}

#[test]
fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cam1.demand"), vec![9u8; 4096]).unwrap();
    assert!(matches!(
        DemandFile::open(dir.path(), &CameraId::new("cam1").unwrap()),
        Err(ringbuf::Error::BadMagic { .. })
    ));
}

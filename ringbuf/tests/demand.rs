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
fn something_else_under_a_demand_file_name_is_replaced_by_a_demand_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam1.demand");
    std::fs::write(&path, vec![9u8; 4096]).unwrap();
    let demand = open(dir.path());
    let cell = demand.claim_cell().unwrap();
    cell.set_viewers(2);
    assert_eq!(open(dir.path()).viewers(DEFAULT_CELL_EXPIRY), 2);
    assert_eq!(&std::fs::read(&path).unwrap()[..8], b"RCDEMAND");
}

#[test]
fn a_worker_that_lost_its_cell_takes_another_instead_of_overwriting_it() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let capture = open(dir.path());
    let stalled = open(dir.path()).claim_cell().unwrap();
    stalled.set_viewers(5);
    // While this worker stalled, its cell expired and another worker (pid 1 stands in for it)
    // took it over: cell 0 is pid, viewers and heartbeat at 32, 36 and 40.
    let mut taken = Vec::new();
    taken.extend_from_slice(&1u32.to_le_bytes());
    taken.extend_from_slice(&2u32.to_le_bytes());
    taken.extend_from_slice(&SystemClock.mono().0.to_le_bytes());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(capture.path())
        .unwrap();
    file.write_all_at(&taken, 32).unwrap();
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 2);
    // The stalled worker comes back: its count goes to a cell of its own.
    stalled.set_viewers(6);
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 8);
    stalled.heartbeat();
    assert_eq!(capture.viewers(DEFAULT_CELL_EXPIRY), 8);
}

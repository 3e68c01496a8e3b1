//! Demand: an on-demand capture wakes for its first viewer, and the demand file follows viewers.

mod common;
use common::*;

use std::time::{Duration, Instant};

use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};
use ringbuf::CameraId;

#[test]
fn the_first_viewer_of_an_idle_on_demand_camera_gets_fresh_frames_and_demand_drops_to_zero() {
    let dir = temp_ring_dir();
    let _capture = start_capture(
        dir.path(),
        "cam1",
        10,
        &["--on-demand", "--idle-after", "1"],
    );
    let server = Server::start(dir.path(), 2, &[]);
    wait_for("cam1 idle", || {
        (server.camera_field("cam1", "status")? == "idle").then_some(())
    });
    let demand =
        DemandFile::open(dir.path(), &CameraId::new("cam1").unwrap()).expect("demand file");
    assert_eq!(demand.viewers(DEFAULT_CELL_EXPIRY), 0);

    let asked = Instant::now();
    let mut ws = ws_connect(server.port, "/ws/cam1");
    // The first frame may be the last one before the camera idled; the next ones are new.
    let first = frame_no(&next_binary(&mut ws));
    let fresh = frame_no(&next_binary(&mut ws));
    let waited = asked.elapsed();
    assert!(fresh > first);
    eprintln!("first fresh frame {waited:?} after connecting");
    assert_eq!(demand.viewers(DEFAULT_CELL_EXPIRY), 1);
    let next = frame_no(&next_binary(&mut ws));
    assert_eq!(next, fresh + 1);

    drop(ws);
    wait_for("the demand file to show zero viewers", || {
        (demand.viewers(DEFAULT_CELL_EXPIRY) == 0).then_some(())
    });
    wait_for("cam1 idle again", || {
        (server.camera_field("cam1", "status")? == "idle").then_some(())
    });
    std::thread::sleep(Duration::from_millis(10));
}

//! A ring file that never opens (corrupt, or not a ring) is not a camera; the others are served.

mod common;
use common::*;

#[test]
fn a_garbage_ring_file_is_not_listed_and_the_other_cameras_stream() {
    let dir = temp_ring_dir();
    std::fs::write(ring_path(dir.path(), "cam9"), vec![0xAB; 64 * 1024]).expect("garbage ring");
    let _feeder = Feeder::start(dir.path(), "cam1", 20);
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");

    let listed = server.cameras();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["cam1"], "only the camera whose ring opens is listed");
    let old_list = server.get("/cameras_list");
    assert!(!String::from_utf8_lossy(&old_list.body).contains("cam9"));
    assert_eq!(server.get("/ws/cam9").status, 404);
    assert_eq!(server.get("/snapshot/cam9.jpg").status, 404);
    assert_eq!(server.get("/stream/cam9.mjpg").status, 404);

    let mut ws = ws_connect(server.port, "/ws/cam1");
    let first = frame_no(&next_binary(&mut ws));
    let later = frame_no(&next_binary(&mut ws));
    assert!(later > first, "cam1 streams beside the garbage file");
}

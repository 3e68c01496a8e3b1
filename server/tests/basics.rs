//! A worker serves /healthz, /api/cameras and /ws/{cam} from a ring.

mod common;
use common::*;

#[test]
fn a_websocket_viewer_gets_consecutive_frames_from_a_ring() {
    viewer_gets_consecutive_frames(&[]);
}

#[test]
fn the_epoll_fallback_serves_the_same_stream() {
    viewer_gets_consecutive_frames(&["--io-driver", "epoll"]);
}

fn viewer_gets_consecutive_frames(flags: &[&str]) {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 1, flags);
    wait_camera_listed(&server, "cam1");
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let numbers: Vec<u64> = (0..20)
        .map(|_| {
            let jpeg = next_binary(&mut ws);
            let (n, rest) = strip_timing(&jpeg);
            assert_eq!(rest, base_jpeg(), "frame {n} arrives byte for byte");
            n
        })
        .collect();
    assert!(
        frame_numbers_consecutive(&numbers[1..]),
        "gaps in {numbers:?}"
    );
    let status = wait_for("cam1 online with one viewer", || {
        let cams = server.cameras();
        let cam = cams.as_array()?.iter().find(|c| c["id"] == "cam1")?.clone();
        (cam["status"] == "online" && cam["viewers"] == 1).then_some(cam)
    });
    assert_eq!(status["width"], 640);
    assert_eq!(status["height"], 360);
}

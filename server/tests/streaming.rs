//! Viewers of a ring across two workers: every viewer gets every frame; a stalled viewer is
//! closed with 4008 without costing the others a frame.

mod common;
use common::*;

use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// Reads frames until one numbered `last` or later; returns the numbers seen.
fn read_until(ws: &mut Ws, last: u64) -> Vec<u64> {
    let mut numbers = Vec::new();
    loop {
        let n = frame_no(&next_binary(ws));
        numbers.push(n);
        if n >= last {
            return numbers;
        }
    }
}

#[test]
fn two_hundred_viewers_across_two_workers_get_every_frame() {
    const VIEWERS: usize = 200;
    const FRAMES: u64 = 100; // 10 s at 10 fps
    let dir = temp_ring_dir();
    let feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, "cam1");
    let port = server.port;
    let all_connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let all_connected = std::sync::Arc::clone(&all_connected);
            std::thread::spawn(move || {
                let mut ws = ws_connect(port, "/ws/cam1");
                // While 200 clients connect, a viewer thread may not be scheduled to read for a
                // while, and the server rightly skips it ahead; counting starts once all are in.
                // From the frame after that on, none may be missing.
                next_binary(&mut ws);
                while !all_connected.load(std::sync::atomic::Ordering::Relaxed) {
                    next_binary(&mut ws);
                }
                let start = frame_no(&next_binary(&mut ws));
                let mut numbers = vec![start];
                numbers.extend(read_until(&mut ws, start + FRAMES));
                numbers
            })
        })
        .collect();
    wait_for("all viewers connected at once", || {
        (server.camera_field("cam1", "viewers")? == VIEWERS as u64).then_some(())
    });
    all_connected.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for (i, viewer) in viewers.into_iter().enumerate() {
        let numbers = viewer.join().expect("viewer thread");
        let gaps: Vec<_> = numbers.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert!(gaps.is_empty(), "viewer {i} missed frames: {gaps:?}");
        assert_eq!(numbers.len() as u64, FRAMES + 1, "viewer {i}");
        total += numbers.len();
    }
    assert!(total > VIEWERS * FRAMES as usize);
    assert!(feeder.stop() > FRAMES);
}

#[test]
fn a_stalled_viewer_is_closed_with_4008_and_fast_viewers_miss_nothing() {
    let dir = temp_ring_dir();
    let _feeder = Feeder::start(dir.path(), "cam1", 10);
    let server = Server::start(
        dir.path(),
        2,
        &["--stall-timeout", "1", "--sndbuf", "16384"],
    );
    wait_camera_listed(&server, "cam1");
    let port = server.port;
    let mut slow = ws_connect_small_rcvbuf(port, "/ws/cam1", 4096);
    let first_slow = frame_no(&next_binary(&mut slow));
    let fast: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ws = ws_connect(port, "/ws/cam1");
                let first = frame_no(&next_binary(&mut ws));
                read_until(&mut ws, first + 40)
            })
        })
        .collect();
    // Not reading for longer than the stall timeout; the server then finishes the frame in
    // flight (once we read again) and closes with 4008.
    std::thread::sleep(Duration::from_secs(3));
    let mut received = 0;
    let close = loop {
        match slow.read() {
            Ok(Message::Binary(_)) => received += 1,
            Ok(Message::Close(close)) => break close,
            Ok(_) => {}
            Err(e) => panic!("slow viewer saw {e} instead of a close frame"),
        }
    };
    let close = close.expect("close frame has a code");
    assert_eq!(close.code, CloseCode::from(4008));
    assert_eq!(close.reason.as_str(), "too slow");
    assert!(
        received < 30,
        "the stalled viewer was not cut off ({received} frames after {first_slow})"
    );
    for viewer in fast {
        let numbers = viewer.join().expect("fast viewer");
        assert!(
            frame_numbers_consecutive(&numbers),
            "fast viewer missed frames: {numbers:?}"
        );
    }
    let metrics = String::from_utf8(server.get("/metrics").body).expect("metrics text");
    let stalls: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringcast_stalls_total{camera=\"cam1\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    // /metrics is one worker's; the slow viewer may have been on the other one.
    assert!(stalls <= 1);
}

#[test]
fn viewers_stay_connected_while_capture_is_killed_and_restarted() {
    let dir = temp_ring_dir();
    let capture = start_capture(dir.path(), "cam1", 10, &[]);
    let server = Server::start(dir.path(), 2, &[]);
    wait_for("cam1 online", || {
        (server.camera_field("cam1", "status")? == "online").then_some(())
    });
    let mut ws = ws_connect(server.port, "/ws/cam1");
    let before = frame_no(&next_binary(&mut ws));
    drop(capture);
    wait_for("cam1 offline after its capture was killed", || {
        (server.camera_field("cam1", "status")? == "offline").then_some(())
    });
    // Drain what was sent before the kill; the connection must stay open meanwhile.
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut last = before;
    while let Ok(message) = ws.read() {
        if let Message::Binary(jpeg) = message {
            last = frame_no(&jpeg);
        }
    }
    ws.get_ref()
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout");
    let _capture = start_capture(dir.path(), "cam1", 10, &[]);
    wait_for("cam1 online again", || {
        (server.camera_field("cam1", "status")? == "online").then_some(())
    });
    let after = frame_no(&next_binary(&mut ws));
    assert!(after > last, "frame {after} after restart, {last} before");
    let next = frame_no(&next_binary(&mut ws));
    assert_eq!(next, after + 1);
}

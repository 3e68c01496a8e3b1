//! Other processes changing the files between capture and server — ring and demand files cut
//! short, grown, scribbled on, junk planted among the workers' metrics snapshots — and a ring
//! directory with no room or read-only: no ringcast process dies, viewers keep their
//! connections, and frames flow again.

mod common;
#[path = "../../ringbuf/tests/common/files.rs"]
mod files;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use files::{root_for, truncate, SmallTmpfs};

/// The worker processes of a `--workers N` server.
fn worker_pids(server: &Server) -> Vec<u32> {
    let pid = server.child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the server's children");
    let mut pids: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    pids.sort_unstable();
    pids
}

fn scribble(path: &Path, offset: u64, len: usize) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0x5A; len], offset).unwrap();
}

/// Something another process does to the ring or demand file: `(ring, demand, ring length)`.
type Tamper = fn(&Path, &Path, u64);

/// A remote camera's WebSocket handshake for `/ingest/{camera}`, with the token "secret".
fn ask_to_ingest(port: u16, camera: &str) -> Response {
    let request = format!(
        "GET /ingest/{camera} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer secret\r\n\r\n"
    );
    raw_request(port, request.as_bytes()).unwrap()
}

/// Every viewer receives a frame newer than `after`; returns the newest frame number seen.
fn all_receive_frames_after(viewers: &mut [Ws], after: u64) -> u64 {
    let mut newest = after;
    for viewer in viewers {
        let frame = loop {
            let frame = frame_no(&next_binary(viewer));
            if frame > after {
                break frame;
            }
        };
        newest = newest.max(frame);
    }
    newest
}

#[test]
fn tampering_with_live_ring_and_demand_files_kills_no_process_and_drops_no_viewer() {
    let dir = temp_ring_dir();
    // On demand, so that capture maps the demand file the workers write.
    let mut capture = start_capture(dir.path(), "cam1", 15, &["--on-demand"]);
    let server = Server::start(dir.path(), 2, &[]);
    wait_camera_listed(&server, "cam1");
    let workers = worker_pids(&server);
    assert_eq!(workers.len(), 2);
    let mut viewers: Vec<Ws> = (0..6)
        .map(|_| ws_connect(server.port, "/ws/cam1"))
        .collect();
    let mut seen = all_receive_frames_after(&mut viewers, 0);

    let ring = ring_path(dir.path(), "cam1");
    let demand = dir.path().join("cam1.demand");
    let ring_len = std::fs::metadata(&ring).unwrap().len();
    let steps: [(&str, Tamper); 7] = [
        ("ring cut to nothing", |ring, _, _| truncate(ring, 0)),
        ("ring cut into its slots", |ring, _, len| {
            truncate(ring, len / 3)
        }),
        ("ring grown", |ring, _, len| truncate(ring, len * 2)),
        ("ring header scribbled", |ring, _, _| {
            scribble(ring, 0, 4096)
        }),
        // The writer state (at 84) says "moved to a new file": followed naively, every worker
        // would reopen the same file over and over.
        ("ring said to be replaced", |ring, _, _| {
            let file = OpenOptions::new().write(true).open(ring).unwrap();
            file.write_all_at(&4u32.to_le_bytes(), 84).unwrap();
        }),
        ("demand file cut", |_, demand, _| truncate(demand, 0)),
        ("demand cells scribbled", |_, demand, _| {
            scribble(demand, 32, 4000)
        }),
    ];
    for (what, tamper) in steps {
        tamper(&ring, &demand, ring_len);
        seen = all_receive_frames_after(&mut viewers, seen);
        assert!(
            matches!(capture.0.try_wait(), Ok(None)),
            "capture died after: {what}"
        );
        assert_eq!(worker_pids(&server), workers, "a worker died after: {what}");
        assert_eq!(server.get("/healthz").status, 200, "after: {what}");
    }
    // The server still counts its viewers where an on-demand capture looks.
    wait_for("the viewers counted again", || {
        server
            .camera_field("cam1", "viewers")
            .and_then(|v| v.as_u64())
            .filter(|&n| n == viewers.len() as u64)
    });
}

/// Runs a capture into `dir` that must exit 1 at start; returns what it said.
fn capture_refused(dir: &Path, camera: &str) -> String {
    let capture = Command::new(capture_binary())
        .args(["--camera", camera, "--source", "test"])
        .arg("--ring-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&capture.stderr).into_owned();
    assert_eq!(capture.status.code(), Some(1), "capture: {stderr}");
    stderr
}

#[test]
fn a_ring_directory_without_room_refuses_capture_and_ingest_and_kills_nothing() {
    if !root_for("a_ring_directory_without_room_refuses_capture_and_ingest_and_kills_nothing") {
        return;
    }
    let tmpfs = SmallTmpfs::mount("1m");
    let stderr = capture_refused(&tmpfs.dir, "cam1");
    assert!(
        stderr.contains(&tmpfs.dir.display().to_string()) && stderr.contains("16.0 MiB"),
        "capture names the directory and the space: {stderr}"
    );

    let server = Server::start(&tmpfs.dir, 2, &["--ingest-token", "secret"]);
    let workers = worker_pids(&server);
    let response = ask_to_ingest(server.port, "cam2");
    assert_eq!(
        response.status,
        507,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(String::from_utf8_lossy(&response.body).contains("no space"));
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(worker_pids(&server), workers);
}

#[test]
fn a_read_only_ring_directory_refuses_capture_and_ingest_and_still_serves_what_it_holds() {
    if !root_for(
        "a_read_only_ring_directory_refuses_capture_and_ingest_and_still_serves_what_it_holds",
    ) {
        return;
    }
    let tmpfs = SmallTmpfs::mount("64m");
    // A camera that ran before the directory went read-only: its ring stays, offline.
    let mut earlier = start_capture(&tmpfs.dir, "cam1", 15, &[]);
    wait_for("the first frame", || {
        let ring = ringbuf::RingReader::open(&ring_path(&tmpfs.dir, "cam1")).ok()?;
        (ring.info().head.0 >= 1).then_some(())
    });
    earlier.0.kill().unwrap();
    earlier.0.wait().unwrap();
    tmpfs.remount_read_only();

    let stderr = capture_refused(&tmpfs.dir, "cam2");
    assert!(
        stderr.contains(&tmpfs.dir.display().to_string()) && stderr.contains("Read-only"),
        "capture names the directory and why: {stderr}"
    );

    let server = Server::start(&tmpfs.dir, 2, &["--ingest-token", "secret"]);
    let workers = worker_pids(&server);
    let response = ask_to_ingest(server.port, "cam3");
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(response.status, 500, "{body}");
    assert!(body.contains("Read-only"), "{body}");
    wait_camera_listed(&server, "cam1");
    assert_eq!(
        server.camera_field("cam1", "status"),
        Some(serde_json::json!("offline"))
    );
    let snapshot = server.get("/snapshot/cam1.jpg");
    assert_eq!(snapshot.status, 200);
    assert_eq!(
        &snapshot.body[..2],
        b"\xff\xd8",
        "the last frame, as a JPEG"
    );
    assert_eq!(server.get("/metrics").status, 200);
    assert_eq!(worker_pids(&server), workers);
}

#[test]
fn junk_in_the_metrics_directory_is_left_out_of_scrapes_and_never_written_through() {
    let dir = temp_ring_dir();
    let server = Server::start(dir.path(), 2, &[]);
    let workers = worker_pids(&server);
    let metrics = dir.path().join(format!(".metrics-{}", server.port));
    wait_for("both workers' snapshots", || {
        (metrics.join("worker-0.json").exists() && metrics.join("worker-1.json").exists())
            .then_some(())
    });
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    // A link where worker 1 writes its next snapshot; a FIFO, a huge file, series to inject,
    // a camera label to break out of, and a file naming another worker, all posing as workers.
    std::os::unix::fs::symlink(&victim, metrics.join(".worker-1.json.tmp")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(metrics.join("worker-7.json"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::fs::write(metrics.join("worker-8.json"), vec![b' '; 1 << 20]).unwrap();
    std::fs::write(
        metrics.join("worker-9.json"),
        r#"{"worker":"9\"} 1\nringcast_injected{x=\"","values":{},"cameras":{}}"#,
    )
    .unwrap();
    std::fs::write(
        metrics.join("worker-10.json"),
        r#"{"worker":"10","values":{},"cameras":{"a\"} 1\ninjected":{}}}"#,
    )
    .unwrap();
    std::fs::write(
        metrics.join("worker-11.json"),
        r#"{"worker":"1","values":{"ringcast_connections_total":999999},"cameras":{}}"#,
    )
    .unwrap();
    // Every worker publishes at least once meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..6 {
        let scrape = server.get("/metrics");
        assert_eq!(scrape.status, 200);
        let text = String::from_utf8(scrape.body).unwrap();
        let workers_seen: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("ringcast_connections_total{"))
            .filter_map(|l| l.split("worker=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            workers_seen.into_iter().collect::<Vec<_>>(),
            ["0", "1"],
            "{text}"
        );
        assert!(
            !text.contains("injected") && !text.contains("999999"),
            "{text}"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(worker_pids(&server), workers);
}

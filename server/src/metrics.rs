//! What a worker reports about itself: `/metrics` (Prometheus text), `/api/cameras` and the older
//! server's `/cameras_list` (JSON).

use std::cell::Cell;
use std::fmt::Write;
use std::rc::Rc;

use ringbuf::{Clock, SystemClock};
use serde::Serialize;

use crate::hub::{Camera, CameraCounters, CameraState};
use crate::worker::Worker;

/// One camera in `/api/cameras`.
#[derive(Serialize)]
pub struct CameraStatus {
    pub id: String,
    /// `online`, `idle` or `offline`.
    pub status: &'static str,
    pub online: bool,
    pub width: u32,
    pub height: u32,
    /// Frames per second the ring received over the last second.
    pub fps: f64,
    /// Viewers across all workers (from the demand file), or this worker's if it has none.
    pub viewers: u64,
    /// Viewers of the worker that answered.
    pub worker_viewers: u32,
    /// Seconds since the last frame; null if none was ever published.
    pub last_frame_age_s: Option<f64>,
}

pub fn camera_status(camera: &Camera) -> CameraStatus {
    let now = SystemClock.mono();
    let state = camera.state();
    CameraStatus {
        id: camera.id.to_string(),
        status: state.as_str(),
        online: state == CameraState::Online,
        width: camera.width.get(),
        height: camera.height.get(),
        fps: (camera.fps.get() * 100.0).round() / 100.0,
        viewers: camera
            .all_workers_viewers()
            .unwrap_or(u64::from(camera.viewers())),
        worker_viewers: camera.viewers(),
        last_frame_age_s: camera
            .frame_age(now)
            .map(|age| (age.as_secs_f64() * 1000.0).round() / 1000.0),
    }
}

pub fn cameras_json(cameras: &[Rc<Camera>]) -> String {
    let list: Vec<CameraStatus> = cameras.iter().map(|c| camera_status(c)).collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

/// The older server's list: `{"cameras": ["cam1", ...]}`.
pub fn cameras_list_json(cameras: &[Rc<Camera>]) -> String {
    let ids: Vec<&str> = cameras.iter().map(|c| c.id.as_str()).collect();
    serde_json::json!({ "cameras": ids }).to_string()
}

type CameraCounter = fn(&CameraCounters) -> &Cell<u64>;

const CAMERA_COUNTERS: &[(&str, &str, CameraCounter)] = &[
    (
        "ringcast_frames_in_total",
        "Frames this worker read from the camera's ring.",
        |c| &c.frames_in,
    ),
    (
        "ringcast_frames_sent_total",
        "Frames written to viewers.",
        |c| &c.frames_sent,
    ),
    (
        "ringcast_bytes_sent_total",
        "Frame bytes (with headers) written to viewers.",
        |c| &c.bytes_sent,
    ),
    (
        "ringcast_viewer_skipped_frames_total",
        "Frames viewers passed over because a newer one was ready.",
        |c| &c.viewer_skips,
    ),
    (
        "ringcast_stalls_total",
        "Viewers closed because their socket stalled (4008 too slow).",
        |c| &c.stalls,
    ),
    (
        "ringcast_ring_skipped_frames_total",
        "Frames this worker's ring reader skipped.",
        |c| &c.ring_skipped,
    ),
    (
        "ringcast_ring_torn_reads_total",
        "Ring reads discarded because the writer overwrote the slot.",
        |c| &c.ring_torn,
    ),
    ("ringcast_viewers_total", "Viewers that connected.", |c| {
        &c.viewers_total
    }),
];

/// `/metrics` in the Prometheus text exposition format.
pub fn prometheus(worker: &Worker) -> String {
    let label = &worker.config.worker_label;
    let cameras = worker.hub.all_cameras();
    let mut out = String::new();
    gauge_header(&mut out, "ringcast_viewers", "Viewers connected now.");
    for c in &cameras {
        let _ = writeln!(
            out,
            "ringcast_viewers{{camera=\"{}\",worker=\"{label}\"}} {}",
            c.id,
            c.viewers()
        );
    }
    gauge_header(
        &mut out,
        "ringcast_camera_online",
        "1 while the camera's writer publishes, else 0.",
    );
    for c in &cameras {
        let online = u8::from(c.state() == CameraState::Online);
        let _ = writeln!(
            out,
            "ringcast_camera_online{{camera=\"{}\",worker=\"{label}\"}} {online}",
            c.id
        );
    }
    gauge_header(
        &mut out,
        "ringcast_camera_fps",
        "Frames per second the ring received over the last second.",
    );
    for c in &cameras {
        let _ = writeln!(
            out,
            "ringcast_camera_fps{{camera=\"{}\",worker=\"{label}\"}} {:.2}",
            c.id,
            c.fps.get()
        );
    }
    for (name, help, counter) in CAMERA_COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for c in &cameras {
            let _ = writeln!(
                out,
                "{name}{{camera=\"{}\",worker=\"{label}\"}} {}",
                c.id,
                counter(&c.counters).get()
            );
        }
    }
    let worker_values = [
        (
            "ringcast_streaming_clients",
            "gauge",
            "Streaming viewers of this worker now.",
            worker.streaming.get() as u64,
        ),
        (
            "ringcast_connections_total",
            "counter",
            "Connections accepted.",
            worker.counters.connections.get(),
        ),
        (
            "ringcast_bad_requests_total",
            "counter",
            "Requests answered with 4xx.",
            worker.counters.bad_requests.get(),
        ),
        (
            "ringcast_refused_full_total",
            "counter",
            "Viewers refused with 503 over --max-clients.",
            worker.counters.refused_full.get(),
        ),
        (
            "ringcast_ingest_frames_total",
            "counter",
            "Frames received from ingest cameras.",
            worker.counters.ingest_frames.get(),
        ),
        (
            "ringcast_ingest_refused_total",
            "counter",
            "Ingest frames refused (not a JPEG, too large).",
            worker.counters.ingest_refused.get(),
        ),
    ];
    for (name, kind, help, value) in worker_values {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{worker=\"{label}\"}} {value}"
        );
    }
    out
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

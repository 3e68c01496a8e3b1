//! What the server reports about itself: `/metrics` (Prometheus text), `/api/cameras` and the
//! older server's `/cameras_list` (JSON).
//!
//! Behind one SO_REUSEPORT port any worker may answer a scrape, so each must answer for the whole
//! server. Every worker writes a snapshot of its counters, once a second, to
//! `<ring-dir>/.metrics-<port>/worker-<label>.json`; the worker that answers reads the others'
//! snapshots (ignoring any older than [`STALE_AFTER`]: a worker that is gone) and reports every
//! worker's series, each labelled with its worker. Its own come live, the others' at most a second
//! old. Counters are per worker, so a sum over `worker` adds up whichever worker answered.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use ringbuf::{CameraId, Clock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::hub::{Camera, CameraState};
use crate::worker::Worker;

/// A worker's snapshot older than this is of a worker that is gone.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// A gone worker's snapshot is removed after this (its label may be a pid that never returns).
const REMOVE_AFTER: Duration = Duration::from_secs(60);
/// A snapshot is a few KiB; a larger file is not one.
const MAX_SNAPSHOT_BYTES: u64 = 64 << 10;

/// One camera in `/api/cameras`.
#[derive(Serialize)]
pub struct CameraStatus {
    pub id: String,
    /// `online`, `idle` or `offline`.
    pub status: &'static str,
    pub online: bool,
    pub width: u32,
    pub height: u32,
    /// `jpeg` or `h264`.
    pub codec: ringbuf::Codec,
    /// An H.264 stream's codec string (`avc1.64001F`), once a keyframe has come; null for JPEG.
    pub codec_string: Option<String>,
    /// Frames per second the ring received over the last second.
    pub fps: f64,
    /// Kilobits per second the ring received over the last second (what one viewer is sent).
    pub bitrate_kbps: f64,
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
        codec: camera.codec(),
        codec_string: camera.codec_string(),
        fps: (camera.fps.get() * 100.0).round() / 100.0,
        bitrate_kbps: (camera.bitrate.get() / 10.0).round() / 100.0,
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

/// A metric and how to read it off a worker or a camera: the worker's own values come from
/// these, and its snapshot is keyed by the names.
struct Metric<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: fn(&T) -> u64,
}

const fn counter<T>(name: &'static str, help: &'static str, read: fn(&T) -> u64) -> Metric<T> {
    Metric {
        name,
        kind: "counter",
        help,
        read,
    }
}

const fn gauge<T>(name: &'static str, help: &'static str, read: fn(&T) -> u64) -> Metric<T> {
    Metric {
        name,
        kind: "gauge",
        help,
        read,
    }
}

fn get(cell: &Cell<u64>) -> u64 {
    cell.get()
}

const CAMERA_METRICS: &[Metric<Camera>] = &[
    gauge("ringcast_viewers", "Viewers connected now.", |c| {
        u64::from(c.viewers())
    }),
    counter(
        "ringcast_frames_in_total",
        "Frames the worker read from the camera's ring.",
        |c| get(&c.counters.frames_in),
    ),
    counter(
        "ringcast_frames_sent_total",
        "Frames written to viewers.",
        |c| get(&c.counters.frames_sent),
    ),
    counter(
        "ringcast_bytes_sent_total",
        "Frame bytes (with headers) written to viewers.",
        |c| get(&c.counters.bytes_sent),
    ),
    counter(
        "ringcast_viewer_skipped_frames_total",
        "Frames viewers passed over because a newer one was ready.",
        |c| get(&c.counters.viewer_skips),
    ),
    counter(
        "ringcast_stalls_total",
        "Viewers closed because their socket stalled (4008 too slow).",
        |c| get(&c.counters.stalls),
    ),
    counter(
        "ringcast_ring_skipped_frames_total",
        "Frames the worker's ring reader skipped.",
        |c| get(&c.counters.ring_skipped),
    ),
    counter(
        "ringcast_ring_torn_reads_total",
        "Ring reads discarded because the writer overwrote the slot.",
        |c| get(&c.counters.ring_torn),
    ),
    counter("ringcast_viewers_total", "Viewers that connected.", |c| {
        get(&c.counters.viewers_total)
    }),
];

const WORKER_METRICS: &[Metric<Worker>] = &[
    gauge(
        "ringcast_streaming_clients",
        "Streaming connections now: viewers and ingest cameras.",
        |w| w.streaming.get() as u64,
    ),
    gauge(
        "ringcast_reading_requests",
        "Connections still reading their request head.",
        |w| get(&w.counters.reading_heads),
    ),
    gauge(
        "ringcast_ingest_connections",
        "Remote cameras connected now.",
        |w| get(&w.counters.ingest_connections),
    ),
    counter("ringcast_connections_total", "Connections accepted.", |w| {
        get(&w.counters.connections)
    }),
    counter(
        "ringcast_bad_requests_total",
        "Requests answered with a 4xx status.",
        |w| get(&w.counters.bad_requests),
    ),
    counter(
        "ringcast_head_timeouts_total",
        "Connections dropped for not sending a whole request head in time.",
        |w| get(&w.counters.head_timeouts),
    ),
    counter(
        "ringcast_refused_full_total",
        "Viewers and ingest cameras refused with 503 over --max-clients.",
        |w| get(&w.counters.refused_full),
    ),
    counter(
        "ringcast_refused_per_ip_total",
        "Connections refused with 503 over --max-clients-per-ip.",
        |w| get(&w.counters.refused_per_ip),
    ),
    counter(
        "ringcast_ingest_frames_total",
        "Frames received from ingest cameras.",
        |w| get(&w.counters.ingest_frames),
    ),
    counter(
        "ringcast_ingest_refused_total",
        "Ingest cameras and frames refused (not allowed, not a JPEG, too large, quiet, or the camera taken back by a capture on this host).",
        |w| get(&w.counters.ingest_refused),
    ),
];

/// What a worker publishes of itself for the others to report.
#[derive(Serialize, Deserialize, Debug)]
pub struct Snapshot {
    worker: String,
    values: BTreeMap<String, u64>,
    cameras: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Snapshot {
    /// The worker's values now.
    pub fn of(worker: &Worker) -> Snapshot {
        let values = WORKER_METRICS
            .iter()
            .map(|m| (m.name.to_owned(), (m.read)(worker)))
            .collect();
        let cameras = worker
            .hub
            .all_cameras()
            .iter()
            .map(|camera| {
                let values = CAMERA_METRICS
                    .iter()
                    .map(|m| (m.name.to_owned(), (m.read)(camera)))
                    .collect();
                (camera.id.to_string(), values)
            })
            .collect();
        Snapshot {
            worker: worker.config.worker_label.clone(),
            values,
            cameras,
        }
    }

    /// Whether what a file says can go into a scrape as it is: it names the worker its file is
    /// named for, and its cameras are camera names (labels are printed unescaped).
    fn is_sound(&self, label: &str) -> bool {
        self.worker == label && self.cameras.keys().all(|c| CameraId::new(c).is_ok())
    }
}

/// Where the workers of the server on `port` keep their snapshots.
pub fn snapshot_dir(ring_dir: &Path, port: u16) -> PathBuf {
    ring_dir.join(format!(".metrics-{port}"))
}

/// Writes this worker's snapshot for the others, in one step (a reader never sees half of it).
///
/// The directory lies in the ring directory, which other users of the group may write: it gets
/// the ring directory's checks (not a link, not another user's, not writable by others), and
/// files are created anew without following links, so nothing planted there is written through.
pub fn publish_snapshot(snapshot: &Snapshot, dir: &Path) -> io::Result<()> {
    ringbuf::ensure_ring_dir(dir).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".worker-{}.json.tmp", snapshot.worker));
    // Left by a worker killed mid-write, or planted: a link is removed, not followed.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let json = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
    file.write_all(&json)?;
    std::fs::rename(&tmp, dir.join(format!("worker-{}.json", snapshot.worker)))
}

/// The label of a snapshot file's worker, from its name `worker-<label>.json`: a worker index
/// or a pid.
fn label_of(name: &str) -> Option<&str> {
    let label = name.strip_prefix("worker-")?.strip_suffix(".json")?;
    (!label.is_empty() && label.len() <= 20 && label.bytes().all(|b| b.is_ascii_digit()))
        .then_some(label)
}

/// The other workers' snapshots that are fresh; those of workers long gone are removed.
fn read_snapshots(dir: &Path, own: &str) -> Vec<Snapshot> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut fresh = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(label) = name.to_str().and_then(label_of) else {
            continue;
        };
        if label == own {
            continue;
        }
        let Some((snapshot, modified)) = read_snapshot(&entry.path()) else {
            continue;
        };
        // A time ahead of this clock (a clock set back, or a forged time) does not keep a
        // snapshot fresh for ever: only a little skew counts as now.
        let age = now
            .duration_since(modified)
            .unwrap_or_else(|ahead| REMOVE_AFTER.saturating_sub(ahead.duration()));
        if age > REMOVE_AFTER || modified.duration_since(now).is_ok_and(|a| a > REMOVE_AFTER) {
            let _ = std::fs::remove_file(entry.path());
        } else if age <= STALE_AFTER && snapshot.is_sound(label) {
            fresh.push(snapshot);
        }
    }
    fresh
}

/// A snapshot file and its modification time: a regular file (opened without following links,
/// and without blocking on a FIFO) of at most [`MAX_SNAPSHOT_BYTES`] that parses.
fn read_snapshot(path: &Path) -> Option<(Snapshot, SystemTime)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_SNAPSHOT_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_SNAPSHOT_BYTES).read_to_end(&mut bytes).ok()?;
    let snapshot = serde_json::from_slice(&bytes).ok()?;
    Some((snapshot, meta.modified().ok()?))
}

/// `/metrics` in the Prometheus text exposition format, for every worker of the server.
///
/// This worker's values are its own, now; the others' come from their snapshot files. This
/// worker's file is written first with the values reported here, so a later scrape answered by
/// another worker never reports less: a series only moves forward from one scrape to the next,
/// whichever worker answers (a counter seen going back would read as a restart), as long as the
/// snapshots can be written.
pub fn prometheus(worker: &Worker, snapshots: &Path) -> String {
    let own = Snapshot::of(worker);
    let _ = publish_snapshot(&own, snapshots);
    let mut all = read_snapshots(snapshots, &own.worker);
    all.push(own);
    all.sort_by(|a, b| a.worker.cmp(&b.worker));
    let mut out = String::new();
    camera_gauges(&mut out, &worker.hub.all_cameras());
    for metric in CAMERA_METRICS {
        family_header(&mut out, metric.name, metric.kind, metric.help);
        for snapshot in &all {
            for (camera, values) in &snapshot.cameras {
                let value = values.get(metric.name).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{}{{camera=\"{camera}\",worker=\"{}\"}} {value}",
                    metric.name, snapshot.worker
                );
            }
        }
    }
    for metric in WORKER_METRICS {
        family_header(&mut out, metric.name, metric.kind, metric.help);
        for snapshot in &all {
            let value = snapshot.values.get(metric.name).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{}{{worker=\"{}\"}} {value}",
                metric.name, snapshot.worker
            );
        }
    }
    out
}

/// What the cameras are doing: the same on every worker (they read the same rings), so labelled
/// by camera only.
fn camera_gauges(out: &mut String, cameras: &[Rc<Camera>]) {
    family_header(
        out,
        "ringcast_camera_online",
        "gauge",
        "1 while the camera's writer publishes, else 0.",
    );
    for c in cameras {
        let online = u8::from(c.state() == CameraState::Online);
        let _ = writeln!(
            out,
            "ringcast_camera_online{{camera=\"{}\"}} {online}",
            c.id
        );
    }
    family_header(
        out,
        "ringcast_camera_fps",
        "gauge",
        "Frames per second the ring received over the last second.",
    );
    for c in cameras {
        let _ = writeln!(
            out,
            "ringcast_camera_fps{{camera=\"{}\"}} {:.2}",
            c.id,
            c.fps.get()
        );
    }
}

fn family_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

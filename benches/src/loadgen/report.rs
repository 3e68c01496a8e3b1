//! The JSON summary printed at the end of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::cpu::CpuReport;
use super::viewer::Viewer;
use super::{LoadArgs, Mode, Plan};
use crate::stats::{FpsSummary, LatencySummary};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub mode: Mode,
    pub viewers: usize,
    /// Viewers whose handshake succeeded (at any time during the run).
    pub viewers_connected: usize,
    pub slow_viewers: usize,
    pub threads: usize,
    /// Whether payloads were read into user space (`--copy-payload`) or dropped in the kernel.
    pub copy_payload: bool,
    pub ramp_s: f64,
    pub warmup_s: f64,
    /// Length of the measurement window that fps, latency and `frames` refer to.
    pub window_s: f64,
    /// Viewer failures by kind (`connect_refused`, `http_503`, `protocol`, `eof`, ...).
    pub errors: BTreeMap<String, u64>,
    /// WebSocket close codes the server sent (`"none"`: the MJPEG stream ended).
    pub close_codes: BTreeMap<String, u64>,
    /// Frames received in the window, by all viewers.
    pub frames: u64,
    /// Frames received over the whole run.
    pub frames_total: u64,
    /// Frame numbers passed over between consecutive received frames, in the window.
    pub frames_skipped: u64,
    pub frames_skipped_total: u64,
    pub frames_out_of_order: u64,
    pub frames_without_timing: u64,
    pub bytes_total: u64,
    /// The load generator's own CPU time in the window, and whether it was the bottleneck.
    pub cpu: CpuReport,
    pub all: GroupReport,
    pub fast: GroupReport,
    pub slow: Option<GroupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_viewer: Option<Vec<ViewerReport>>,
}

/// Figures for a group of viewers (all, fast or slow).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub viewers: usize,
    pub connected: usize,
    pub viewers_without_frames: usize,
    pub frames: u64,
    pub frames_skipped: u64,
    /// Frames per second per viewer in the window; viewers that never connected count as 0.
    pub fps: Option<FpsSummary>,
    /// Receive wall-clock time minus capture time, over every frame in the window.
    pub latency_ms: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViewerReport {
    pub id: usize,
    pub slow: bool,
    pub connected: bool,
    pub frames: u64,
    pub frames_total: u64,
    pub skipped: u64,
    pub skipped_total: u64,
    pub out_of_order: u64,
    pub without_timing: u64,
    pub first_frame: Option<u64>,
    pub last_frame: Option<u64>,
    pub close_code: Option<u16>,
    pub error: Option<String>,
    pub error_detail: Option<String>,
}

impl Report {
    pub(crate) fn build(
        plan: &Plan,
        args: &LoadArgs,
        viewers: &[Viewer],
        window: Duration,
        cpu: CpuReport,
        per_viewer: bool,
    ) -> Report {
        let mut errors = BTreeMap::new();
        let mut close_codes = BTreeMap::new();
        for v in viewers {
            if let Some(kind) = &v.stats.error {
                *errors.entry(kind.clone()).or_insert(0) += 1;
            }
            if v.stats.closed {
                let code = v
                    .stats
                    .close_code
                    .map_or("none".to_owned(), |c| c.to_string());
                *close_codes.entry(code).or_insert(0) += 1;
            }
        }
        let sum = |f: fn(&Viewer) -> u64| viewers.iter().map(f).sum::<u64>();
        let slow: Vec<&Viewer> = viewers.iter().filter(|v| v.slow).collect();
        let fast: Vec<&Viewer> = viewers.iter().filter(|v| !v.slow).collect();
        Report {
            url: args.url.clone(),
            mode: plan.target.mode,
            viewers: plan.viewers,
            viewers_connected: viewers.iter().filter(|v| v.stats.connected).count(),
            slow_viewers: plan.slow,
            threads: plan.threads,
            copy_payload: plan.copy_payload,
            ramp_s: plan.ramp.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            window_s: window.as_secs_f64(),
            errors,
            close_codes,
            frames: sum(|v| v.stats.frames_window),
            frames_total: sum(|v| v.stats.frames_total),
            frames_skipped: sum(|v| v.stats.skipped_window),
            frames_skipped_total: sum(|v| v.stats.skipped_total),
            frames_out_of_order: sum(|v| v.stats.out_of_order),
            frames_without_timing: sum(|v| v.stats.without_timing),
            bytes_total: sum(|v| v.stats.bytes),
            cpu,
            all: GroupReport::of(&viewers.iter().collect::<Vec<_>>(), window),
            fast: GroupReport::of(&fast, window),
            slow: (!slow.is_empty()).then(|| GroupReport::of(&slow, window)),
            per_viewer: per_viewer.then(|| viewers.iter().map(ViewerReport::of).collect()),
        }
    }
}

impl GroupReport {
    fn of(viewers: &[&Viewer], window: Duration) -> GroupReport {
        let secs = window.as_secs_f64();
        let fps = viewers
            .iter()
            .map(|v| {
                if secs > 0.0 {
                    v.stats.frames_window as f64 / secs
                } else {
                    0.0
                }
            })
            .collect();
        let latencies = viewers
            .iter()
            .flat_map(|v| v.stats.latencies_us.iter().copied())
            .collect();
        GroupReport {
            viewers: viewers.len(),
            connected: viewers.iter().filter(|v| v.stats.connected).count(),
            viewers_without_frames: viewers.iter().filter(|v| v.stats.frames_total == 0).count(),
            frames: viewers.iter().map(|v| v.stats.frames_window).sum(),
            frames_skipped: viewers.iter().map(|v| v.stats.skipped_window).sum(),
            fps: FpsSummary::of(fps),
            latency_ms: LatencySummary::of_micros(latencies),
        }
    }
}

impl ViewerReport {
    fn of(v: &Viewer) -> ViewerReport {
        let s = &v.stats;
        ViewerReport {
            id: v.id,
            slow: v.slow,
            connected: s.connected,
            frames: s.frames_window,
            frames_total: s.frames_total,
            skipped: s.skipped_window,
            skipped_total: s.skipped_total,
            out_of_order: s.out_of_order,
            without_timing: s.without_timing,
            first_frame: s.first_frame,
            last_frame: s.last_frame,
            close_code: s.close_code,
            error: s.error.clone(),
            error_detail: s.error_detail.clone(),
        }
    }
}

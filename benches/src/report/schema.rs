//! `docs/bench/results.json` as `scripts/bench-report` writes it. Fields a quick or partial run
//! may leave out are optional, so that a report can still be drawn from what was measured.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Identifies the bare fan-out baseline among a scenario's targets.
pub const FANOUT: &str = "fanout";

#[derive(Debug, Clone, Deserialize)]
pub struct Results {
    pub commit: String,
    #[serde(default)]
    pub dirty: bool,
    pub date: String,
    #[serde(default)]
    pub machine: Machine,
    pub command: String,
    #[serde(default)]
    pub quick: bool,
    #[serde(default)]
    pub ring: Vec<RingBench>,
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    pub memory: Option<Memory>,
    /// Steps that failed; the report says so rather than show their gaps as unmeasured.
    #[serde(default)]
    pub failed: Vec<FailedStep>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FailedStep {
    pub step: String,
    pub error: String,
}

impl Results {
    pub fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Machine {
    pub cpus: Option<u32>,
    pub model: Option<String>,
    pub kernel: Option<String>,
    pub memory_gib: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RingBench {
    pub group: String,
    pub name: String,
    pub mean_ns: f64,
    pub command: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    pub command: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Every scenario so far streams JPEG; H.264 scenarios will say so.
    #[serde(default = "default_codec")]
    pub codec: String,
    pub size: Option<String>,
    pub fps: Option<f64>,
    pub frame_bytes: Option<u64>,
    pub runs: Option<u32>,
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub slow: u32,
    pub slow_rate: Option<u64>,
    #[serde(default)]
    pub summary: Vec<SummaryRow>,
    /// Why bench-server stopped before every run was done, if it did.
    pub stopped_early: Option<String>,
}

fn default_mode() -> String {
    "ws".to_owned()
}

fn default_codec() -> String {
    "jpeg".to_owned()
}

impl Scenario {
    pub fn row(&self, viewers: u32, target: &str) -> Option<&SummaryRow> {
        self.summary
            .iter()
            .find(|r| r.viewers == viewers && r.target == target)
    }

    /// The age a slow viewer's frame may reach: two transmit times of one frame at the slow
    /// viewer's rate, plus 0.1 s (the slow-viewer target).
    pub fn slow_age_limit_ms(&self) -> Option<f64> {
        let bytes = self.frame_bytes? as f64;
        let rate = self.slow_rate.filter(|&r| r > 0)? as f64;
        Some((2.0 * bytes / rate + 0.1) * 1000.0)
    }
}

/// Medians over a scenario's runs of one target at one viewer count (`scripts/bench-server`'s
/// "summary" rows).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SummaryRow {
    pub viewers: u32,
    pub target: String,
    pub runs: Option<u32>,
    pub fps_median: Option<f64>,
    pub fps_p10: Option<f64>,
    pub fps_min: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub cpu_pct_of_core: Option<f64>,
    pub cpu_us_per_frame: Option<f64>,
    pub cpu_per_frame_vs_fanout: Option<f64>,
    pub p99_vs_fanout: Option<f64>,
    pub loadgen_cpu_pct_of_core: Option<f64>,
    #[serde(default)]
    pub loadgen_bottleneck: Option<bool>,
    pub machine_busy_pct: Option<f64>,
    pub slow_fps_median: Option<f64>,
    pub slow_latency_p50_ms: Option<f64>,
    pub slow_latency_max_ms: Option<f64>,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub close_codes: BTreeMap<String, u64>,
}

/// At or above this share of the machine busy, a miss says more about the machine than about
/// the server.
pub const MACHINE_BUSY_LIMIT_PCT: f64 = 95.0;

impl SummaryRow {
    pub fn is_fanout(&self) -> bool {
        self.target == FANOUT
    }

    pub fn loadgen_bottleneck(&self) -> bool {
        self.loadgen_bottleneck.unwrap_or(false)
    }

    pub fn machine_saturated(&self) -> bool {
        self.machine_busy_pct
            .is_some_and(|b| b >= MACHINE_BUSY_LIMIT_PCT)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Memory {
    /// Viewers connected when the memory was read.
    pub viewers: u32,
    /// Viewers the load generator was asked for (older results files lack it).
    pub requested: Option<u32>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub per_viewer_bytes: f64,
    pub command: Option<String>,
}

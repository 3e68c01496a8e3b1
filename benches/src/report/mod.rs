//! `ringcast-report`: `docs/BENCHMARKS.md` and its SVG plots from the one results file
//! `scripts/bench-report` writes, so that the report can be redrawn without measuring again.

pub mod format;
pub mod markdown;
pub mod plots;
pub mod schema;
pub mod targets;

use std::fs;
use std::path::{Path, PathBuf};

pub use schema::Results;

/// Where the plots go, inside the output directory; the markdown links them relative to it.
pub const PLOT_DIR: &str = "bench";
pub const MARKDOWN: &str = "BENCHMARKS.md";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a results file of scripts/bench-report", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

pub fn load(path: &Path) -> Result<Results, ReportError> {
    let text = fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Writes `out_dir/BENCHMARKS.md` and the plots in `out_dir/bench/`; returns the files written.
pub fn render(results: &Results, out_dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let plot_dir = out_dir.join(PLOT_DIR);
    fs::create_dir_all(&plot_dir).map_err(|source| ReportError::Write {
        path: plot_dir.clone(),
        source,
    })?;
    let plots = plots::draw_all(results, &plot_dir)?;
    let checks = targets::evaluate(results);
    let markdown_path = out_dir.join(MARKDOWN);
    fs::write(&markdown_path, markdown::document(results, &checks, &plots)).map_err(|source| {
        ReportError::Write {
            path: markdown_path.clone(),
            source,
        }
    })?;
    let mut written: Vec<PathBuf> = plots.iter().map(|p| plot_dir.join(p.file)).collect();
    written.push(markdown_path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run in the shape scripts/bench-report writes, with a load-generator bottleneck
    /// at 2000 viewers, a 360p scenario, MJPEG, the slow pair, an H.264 stream and memory.
    const RESULTS: &str = r#"{
      "commit": "abc1234", "dirty": true, "date": "2026-11-30T03:10:00Z",
      "machine": {"cpus": 2, "model": "AMD EPYC Test", "kernel": "6.18.0", "memory_gib": 24},
      "command": "scripts/bench-report", "quick": false,
      "ring": [{"group": "publish", "name": "16KiB", "mean_ns": 1234.5,
                "command": "cargo bench -p ringcast-benches --bench ring"}],
      "scenarios": [
        {"id": "ws-720p", "title": "WebSocket viewers, 720p30",
         "command": "scripts/bench-server --viewers 100,1000,2000 --runs 3",
         "mode": "ws", "size": "1280x720", "fps": 30, "frame_bytes": 97750, "runs": 3,
         "duration_s": 10, "slow": 0, "slow_rate": 50000,
         "summary": [
           {"viewers": 100, "target": "fanout", "runs": 3, "fps_median": 30.0, "fps_p10": 29.9,
            "latency_p50_ms": 1.7, "latency_p99_ms": 5.5, "cpu_us_per_frame": 11.7,
            "loadgen_cpu_pct_of_core": 10, "machine_busy_pct": 40, "errors": 0, "close_codes": {}},
           {"viewers": 100, "target": "server-w1", "fps_median": 30.1, "fps_p10": 29.9,
            "latency_p50_ms": 2.0, "latency_p99_ms": 4.9, "cpu_us_per_frame": 12.3,
            "cpu_per_frame_vs_fanout": 1.05, "p99_vs_fanout": 0.89, "machine_busy_pct": 40},
           {"viewers": 1000, "target": "fanout", "fps_median": 29.9, "fps_p10": 29.8,
            "latency_p99_ms": 49.2, "cpu_us_per_frame": 12.6, "machine_busy_pct": 80},
           {"viewers": 1000, "target": "server-w1", "fps_median": 30.0, "fps_p10": 29.9,
            "latency_p99_ms": 37.3, "cpu_us_per_frame": 13.7, "cpu_per_frame_vs_fanout": 1.09,
            "p99_vs_fanout": 0.76, "machine_busy_pct": 85},
           {"viewers": 1000, "target": "server-w2", "fps_median": 30.0, "fps_p10": 29.9,
            "latency_p99_ms": 51.6, "cpu_us_per_frame": 13.0, "cpu_per_frame_vs_fanout": 1.03,
            "p99_vs_fanout": 1.05, "machine_busy_pct": 85},
           {"viewers": 2000, "target": "fanout", "fps_median": 21.8, "fps_p10": 21.6,
            "latency_p99_ms": 99, "cpu_us_per_frame": 13.0, "machine_busy_pct": 100,
            "loadgen_bottleneck": true},
           {"viewers": 2000, "target": "server-w1", "fps_median": 21.7, "fps_p10": 21.5,
            "latency_p99_ms": 277, "cpu_us_per_frame": 15.5, "machine_busy_pct": 100,
            "loadgen_bottleneck": true}
         ]},
        {"id": "ws-360p", "title": "WebSocket viewers, 640x360",
         "command": "scripts/bench-server --viewers 2000 --size 640x360",
         "mode": "ws", "size": "640x360", "fps": 30, "frame_bytes": 30000,
         "summary": [
           {"viewers": 2000, "target": "fanout", "fps_median": 30, "cpu_us_per_frame": 8.0},
           {"viewers": 2000, "target": "server-w2", "fps_median": 30, "cpu_us_per_frame": 7.6}
         ]},
        {"id": "mjpeg-720p", "title": "MJPEG viewers, 720p30",
         "command": "scripts/bench-server --mode mjpeg --viewers 100 --targets server",
         "stopped_early": "--max-minutes reached",
         "mode": "mjpeg", "size": "1280x720", "fps": 30, "frame_bytes": 97750,
         "summary": [{"viewers": 100, "target": "server-w1", "fps_median": 30.0,
                      "latency_p99_ms": 6.0, "cpu_us_per_frame": 14.0}]},
        {"id": "h264-720p", "title": "H.264 viewers, 720p30", "codec": "h264",
         "command": "scripts/bench-server --codec h264", "size": "1280x720", "fps": 30,
         "frame_bytes": 12000,
         "summary": [{"viewers": 1, "target": "server-w1", "fps_median": 30.0}]},
        {"id": "slow-alone", "title": "100 fast viewers alone",
         "command": "scripts/bench-server --viewers 100", "size": "1280x720", "fps": 30,
         "frame_bytes": 97750, "slow": 0,
         "summary": [{"viewers": 100, "target": "server-w1", "fps_median": 30.0,
                      "latency_p99_ms": 3.7}]},
        {"id": "slow-beside", "title": "100 fast viewers beside 20 slow ones",
         "command": "scripts/bench-server --viewers 120 --slow 20 --slow-rate 50000",
         "size": "1280x720", "fps": 30, "frame_bytes": 97750, "slow": 20, "slow_rate": 50000,
         "summary": [
           {"viewers": 120, "target": "fanout", "fps_median": 30.0, "latency_p99_ms": 6.2,
            "slow_fps_median": 0.5, "slow_latency_p50_ms": 7700, "slow_latency_max_ms": 11500},
           {"viewers": 120, "target": "server-w1", "fps_median": 30.0, "latency_p99_ms": 3.6,
            "slow_fps_median": 0.5, "slow_latency_p50_ms": 3800, "slow_latency_max_ms": 4400,
            "close_codes": {"4008": 1}}
         ]}
      ],
      "memory": {"viewers": 2000, "rss_before_kib": 4416, "rss_after_kib": 16856,
                 "per_viewer_bytes": 6400, "command": "scripts/bench-report (memory)"},
      "failed": [{"step": "ws-1080p", "error": "bench-server exited with 1 and wrote no results"}]
    }"#;

    fn render_sample() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("results.json");
        fs::write(&input, RESULTS).unwrap();
        let results = load(&input).unwrap();
        let written = render(&results, &dir.path().join("docs")).unwrap();
        (dir, written)
    }

    fn read(dir: &tempfile::TempDir, relative: &str) -> String {
        let path = dir.path().join("docs").join(relative);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn renders_every_plot_with_its_title_and_the_markdown() {
        let (dir, written) = render_sample();
        assert_eq!(written.len(), 6, "{written:?}");
        let expected = [
            (plots::FPS, "Delivered frame rate vs viewers"),
            (plots::P99, "p99 latency vs viewers"),
            (plots::CPU, "Server CPU per delivered frame vs viewers"),
            (plots::SLOW, "Slow viewers: age of the frames they receive"),
            (plots::BYTES, "Bytes per viewer per second, by stream"),
        ];
        for (file, title) in expected {
            let svg = read(&dir, &format!("{PLOT_DIR}/{file}"));
            assert!(
                svg.starts_with("<svg"),
                "{file}: {}",
                &svg[..svg.len().min(80)]
            );
            assert!(svg.len() > 3000, "{file} is only {} bytes", svg.len());
            assert!(svg.contains(title), "{file} lacks its title {title:?}");
            assert!(svg.contains("<text"), "{file} has no text");
        }
        let fps = read(&dir, &format!("{PLOT_DIR}/{}", plots::FPS));
        for label in [
            "bare fan-out, 720p",
            "server, 2 workers, 360p",
            "the bottleneck",
        ] {
            assert!(fps.contains(label), "fps plot lacks {label:?}");
        }
        let bytes = read(&dir, &format!("{PLOT_DIR}/{}", plots::BYTES));
        for label in ["JPEG 720p", "JPEG 360p", "JPEG 720p (MJPEG)", "H.264 720p"] {
            assert!(bytes.contains(label), "bytes plot lacks {label:?}");
        }
        assert!(read(&dir, &format!("{PLOT_DIR}/{}", plots::SLOW)).contains("4.01 s"));

        let md = read(&dir, MARKDOWN);
        assert!(md
            .lines()
            .next()
            .unwrap()
            .contains("Generated by scripts/bench-report"));
        assert!(md.contains("[BENCHMARKS-HISTORY.md](BENCHMARKS-HISTORY.md)"));
        assert!(md.contains("`abc1234` (with uncommitted changes)"));
        assert!(md.contains("2 CPUs, AMD EPYC Test, kernel 6.18.0, 24 GiB"));
        assert!(md.contains("| target | requirement | measured on | measured | verdict |"));
        assert!(md.contains(
            "| (a) 1000 WebSocket viewers of 720p30 | fps median ≥ 29.5 | server-w1, 1000 \
             viewers | 30.0 | met |"
        ));
        assert!(md.contains(
            "| p99 < 250 ms | server-w1, 2000 viewers | 277 ms | limit of this machine: the \
             load generator was the bottleneck (server-w1, 2000 viewers) |"
        ));
        assert!(md.contains("| CPU per delivered frame ≤ 1.0× the fan-out's | server-w2, 1000 viewers | 1.03× | **missed** |"));
        assert!(
            md.contains("| 2000†‡ | server-w1 |"),
            "bottleneck rows are marked"
        );
        assert!(md.contains("† The load generator was the bottleneck"));
        assert!(md.contains("    scripts/bench-server --viewers 100,1000,2000 --runs 3\n"));
        assert!(md.contains("| 4008 × 1 |"));
        assert!(md.contains(
            "**Step `ws-1080p` failed**: bench-server exited with 1 and wrote no results."
        ));
        assert!(md.contains("**Stopped early** (--max-minutes reached)"));
        assert!(md.contains("| publish | 16KiB | 1.23 µs |"));
        assert!(md.contains("| 2000 | 4416 KiB | 16856 KiB | 6400 B (6.2 KiB) | < 16 KiB |"));
        for file in [
            plots::FPS,
            plots::P99,
            plots::CPU,
            plots::SLOW,
            plots::BYTES,
        ] {
            let link = format!("]({PLOT_DIR}/{file})");
            assert_eq!(md.matches(&link).count(), 1, "{file} is embedded once");
        }
    }

    #[test]
    fn a_results_file_without_scenarios_still_renders() {
        let dir = tempfile::tempdir().unwrap();
        let results: Results = serde_json::from_str(
            r#"{"commit": "abc1234", "date": "2026-11-30", "command": "scripts/bench-report",
                "memory": null}"#,
        )
        .unwrap();
        let written = render(&results, dir.path()).unwrap();
        assert_eq!(written, vec![dir.path().join(MARKDOWN)]);
        let md = fs::read_to_string(dir.path().join(MARKDOWN)).unwrap();
        assert!(md.contains("| not measured |"));
    }

    #[test]
    fn a_broken_results_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        fs::write(&path, "{\"commit\": 1}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, ReportError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("results.json"), "{err}");
    }
}

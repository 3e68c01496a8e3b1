//! Order statistics for the load report: nearest-rank percentiles over sorted samples.

use serde::Serialize;

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` by the nearest-rank method: the smallest
/// sample with at least p % of the samples at or below it. `None` for no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Spread of per-viewer frame rates. Low percentiles matter: they are the viewers left behind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FpsSummary {
    pub median: f64,
    pub min: f64,
    pub p10: f64,
    pub max: f64,
}

impl FpsSummary {
    pub fn of(mut fps: Vec<f64>) -> Option<FpsSummary> {
        fps.sort_by(f64::total_cmp);
        Some(FpsSummary {
            median: percentile(&fps, 50.0)?,
            min: *fps.first()?,
            p10: percentile(&fps, 10.0)?,
            max: *fps.last()?,
        })
    }
}

/// End-to-end latency of delivered frames, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    /// From latencies in microseconds.
    pub fn of_micros(mut micros: Vec<i64>) -> Option<LatencySummary> {
        micros.sort_unstable();
        let ms = |v: i64| v as f64 / 1000.0;
        Some(LatencySummary {
            samples: micros.len(),
            p50: ms(percentile(&micros, 50.0)?),
            p90: ms(percentile(&micros, 90.0)?),
            p99: ms(percentile(&micros, 99.0)?),
            max: ms(*micros.last()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        assert_eq!(percentile(&[7], 10.0), Some(7));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn fps_summary_shows_the_slowest_viewers() {
        let s = FpsSummary::of(vec![30.0, 29.0, 10.0, 30.0, 30.0]).unwrap();
        assert_eq!((s.min, s.p10, s.median, s.max), (10.0, 10.0, 30.0, 30.0));
        assert_eq!(FpsSummary::of(Vec::new()), None);
    }
}

//! Counters shared by the source thread, the pipeline and the push thread, and the periodic
//! log line made from them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames that were not valid JPEG (dropped, never published).
    pub corrupt: AtomicU64,
    /// Frames identical to the previous one, not published (`--drop-same-frames`).
    pub unchanged: AtomicU64,
    /// Frames the push link was too slow for (a newer frame replaced them before sending).
    pub push_dropped: AtomicU64,
    /// Frames refused by the ring (larger than a slot).
    pub rejected: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub published: u64,
    pub bytes: u64,
    pub corrupt: u64,
    pub unchanged: u64,
    pub push_dropped: u64,
    pub rejected: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            published: self.published.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            unchanged: self.unchanged.load(Relaxed),
            push_dropped: self.push_dropped.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
        }
    }
}

/// At most one log line per period for a message that could otherwise repeat every frame.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    last: Option<Instant>,
}

impl LogLimit {
    pub fn new(period: Duration) -> LogLimit {
        LogLimit { period, last: None }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= self.period);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Turns counter snapshots into the periodic "fps, frame size, drops" log line.
pub struct Reporter {
    last: Snapshot,
    since: Instant,
}

impl Reporter {
    pub fn new(now: Instant) -> Reporter {
        Reporter {
            last: Snapshot::default(),
            since: now,
        }
    }

    pub fn seconds_since_report(&self, now: Instant) -> f64 {
        now.duration_since(self.since).as_secs_f64()
    }

    /// The line for the period since the previous call.
    pub fn line(&mut self, now: Snapshot, at: Instant) -> String {
        let secs = self.seconds_since_report(at).max(1e-3);
        let frames = now.published - self.last.published;
        let bytes = now.bytes - self.last.bytes;
        let avg_kb = if frames == 0 {
            0.0
        } else {
            bytes as f64 / frames as f64 / 1024.0
        };
        let line = format!(
            "{:.1} fps, {:.0} KiB per frame, dropped: {} corrupt, {} unchanged, {} too large, {} push-link too slow",
            frames as f64 / secs,
            avg_kb,
            now.corrupt - self.last.corrupt,
            now.unchanged - self.last.unchanged,
            now.rejected - self.last.rejected,
            now.push_dropped - self.last.push_dropped,
        );
        self.last = now;
        self.since = at;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_message_is_logged_once_per_period() {
        let start = Instant::now();
        let mut limit = LogLimit::new(Duration::from_secs(10));
        let allowed: Vec<bool> = [0, 1, 9, 10, 15, 21]
            .iter()
            .map(|&s| limit.allow(start + Duration::from_secs(s)))
            .collect();
        assert_eq!(allowed, [true, false, false, true, false, true]);
    }
}

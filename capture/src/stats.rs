//! Counters shared by the source thread, the pipeline and the push thread, and the periodic
//! log line made from them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ringbuf::Codec;

#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames that were not valid JPEG or H.264 (dropped, never published).
    pub corrupt: AtomicU64,
    /// H.264 access units before the first keyframe since the stream (re)started: no reader
    /// could decode them.
    pub before_keyframe: AtomicU64,
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
    pub before_keyframe: u64,
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
            before_keyframe: self.before_keyframe.load(Relaxed),
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
    codec: Codec,
    last: Snapshot,
    since: Instant,
}

impl Reporter {
    pub fn new(codec: Codec, now: Instant) -> Reporter {
        Reporter {
            codec,
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
        let last = self.last;
        let frames = now.published - last.published;
        let bytes = now.bytes - last.bytes;
        let avg_kb = if frames == 0 {
            0.0
        } else {
            bytes as f64 / frames as f64 / 1024.0
        };
        let fps = frames as f64 / secs;
        let line = match self.codec {
            Codec::Jpeg => format!(
                "{fps:.1} fps, {avg_kb:.0} KiB per frame, dropped: {} corrupt, {} unchanged, {} too large, {} push-link too slow",
                now.corrupt - last.corrupt,
                now.unchanged - last.unchanged,
                now.rejected - last.rejected,
                now.push_dropped - last.push_dropped,
            ),
            Codec::H264 => format!(
                "H.264 {fps:.1} fps, {:.0} kbit/s, {avg_kb:.0} KiB per frame, dropped: {} corrupt, {} before a keyframe, {} too large",
                kbit_per_second(bytes, secs),
                now.corrupt - last.corrupt,
                now.before_keyframe - last.before_keyframe,
                now.rejected - last.rejected,
            ),
        };
        self.last = now;
        self.since = at;
        line
    }
}

/// `bytes` over `secs` seconds, in kbit/s.
pub fn kbit_per_second(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / 1000.0 / secs
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

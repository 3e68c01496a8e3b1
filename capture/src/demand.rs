//! Whether anyone watches, and when an on-demand capture should idle or resume.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};

/// A source of "somebody is watching" that can be waited on.
pub trait Demand: Send + Sync {
    fn watched(&self) -> bool;
    /// A counter that moves whenever demand may have changed.
    fn generation(&self) -> u32;
    /// Sleeps until `generation` moves on, or `timeout`.
    fn wait_for_change(&self, generation: u32, timeout: Duration);
}

/// Local demand: the viewers the server workers record in `<ring-dir>/<cam>.demand`.
impl Demand for DemandFile {
    fn watched(&self) -> bool {
        self.viewers(DEFAULT_CELL_EXPIRY) > 0
    }
    fn generation(&self) -> u32 {
        DemandFile::generation(self)
    }
    fn wait_for_change(&self, generation: u32, timeout: Duration) {
        DemandFile::wait_for_change(self, generation, timeout);
    }
}

/// Remote demand: the `1`/`0` messages a ringcast server sends on the ingest connection.
/// Until the server says otherwise, the camera counts as watched.
#[derive(Debug)]
pub struct RemoteDemand {
    state: Mutex<(u32, bool)>,
    changed: Condvar,
}

impl Default for RemoteDemand {
    fn default() -> Self {
        RemoteDemand {
            state: Mutex::new((0, true)),
            changed: Condvar::new(),
        }
    }
}

impl RemoteDemand {
    pub fn set(&self, watched: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.1 != watched {
            *state = (state.0.wrapping_add(1), watched);
            self.changed.notify_all();
        }
    }
}

impl Demand for RemoteDemand {
    fn watched(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
    fn generation(&self) -> u32 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn wait_for_change(&self, generation: u32, timeout: Duration) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.0 == generation);
    }
}

/// How long a wait on the first of two demands lasts before the second is looked at again.
const LOOK_AT_SECOND_EVERY: Duration = Duration::from_millis(20);

/// Watched while either of two demands is: an H.264 camera's own viewers, or those of its JPEG
/// copy (someone who only watches its MJPEG still needs the camera to run).
pub struct EitherDemand {
    first: std::sync::Arc<dyn Demand>,
    second: std::sync::Arc<dyn Demand>,
}

impl EitherDemand {
    pub fn new(first: std::sync::Arc<dyn Demand>, second: std::sync::Arc<dyn Demand>) -> Self {
        EitherDemand { first, second }
    }
}

impl Demand for EitherDemand {
    fn watched(&self) -> bool {
        self.first.watched() || self.second.watched()
    }
    /// Moves when either moves (a sum that wraps back to the same value would need 2^32
    /// changes between two looks).
    fn generation(&self) -> u32 {
        self.first
            .generation()
            .wrapping_add(self.second.generation())
    }
    /// Sleeps on the first in short slices, since one thread cannot sleep on both: a change
    /// of the second is seen within [`LOOK_AT_SECOND_EVERY`].
    fn wait_for_change(&self, generation: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.generation() == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let first = self.first.generation();
            self.first
                .wait_for_change(first, left.min(LOOK_AT_SECOND_EVERY));
        }
    }
}

/// The idle rule: idle once nobody has watched for `idle_after`; active the moment somebody does.
#[derive(Debug)]
pub struct IdleRule {
    idle_after: Duration,
    last_watched: Instant,
    idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    GoIdle,
    Resume,
}

impl IdleRule {
    pub fn new(idle_after: Duration, now: Instant) -> IdleRule {
        IdleRule {
            idle_after,
            last_watched: now,
            idle: false,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.idle
    }

    pub fn update(&mut self, watched: bool, now: Instant) -> Option<Transition> {
        if watched {
            self.last_watched = now;
            if self.idle {
                self.idle = false;
                return Some(Transition::Resume);
            }
        } else if !self.idle && now.duration_since(self.last_watched) >= self.idle_after {
            self.idle = true;
            return Some(Transition::GoIdle);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idles_after_the_grace_period_and_resumes_at_once() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut rule = IdleRule::new(Duration::from_secs(10), start);
        assert_eq!(rule.update(false, at(9_999)), None);
        assert_eq!(rule.update(false, at(10_000)), Some(Transition::GoIdle));
        assert_eq!(rule.update(false, at(20_000)), None);
        assert_eq!(rule.update(true, at(20_001)), Some(Transition::Resume));
        assert_eq!(rule.update(false, at(25_000)), None);
        assert_eq!(rule.update(true, at(29_000)), None);
        assert_eq!(rule.update(false, at(38_999)), None);
        assert_eq!(rule.update(false, at(39_000)), Some(Transition::GoIdle));
    }

    #[test]
    fn remote_demand_wakes_waiters_on_change() {
        let demand = std::sync::Arc::new(RemoteDemand::default());
        assert!(demand.watched());
        let generation = demand.generation();
        let setter = std::sync::Arc::clone(&demand);
        let thread = std::thread::spawn(move || setter.set(false));
        demand.wait_for_change(generation, Duration::from_secs(20));
        thread.join().unwrap();
        assert!(!demand.watched());
        assert_ne!(demand.generation(), generation);
    }

    #[test]
    fn either_demand_is_watched_and_wakes_when_either_is() {
        let camera = std::sync::Arc::new(RemoteDemand::default());
        let copy = std::sync::Arc::new(RemoteDemand::default());
        camera.set(false);
        copy.set(false);
        let either = EitherDemand::new(camera.clone(), copy.clone());
        assert!(!either.watched());
        let generation = either.generation();
        let setter = std::sync::Arc::clone(&copy);
        let thread = std::thread::spawn(move || setter.set(true));
        let waited = std::time::Instant::now();
        either.wait_for_change(generation, Duration::from_secs(20));
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the copy's change did not wake the wait"
        );
        thread.join().unwrap();
        assert!(either.watched());
        assert_ne!(either.generation(), generation);
        copy.set(false);
        camera.set(true);
        assert!(either.watched());
    }
}

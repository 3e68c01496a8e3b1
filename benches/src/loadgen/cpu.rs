//! The load generator's own CPU time over the measurement window, so that a run can say when
//! the figures were limited by the load generator rather than by the server.

use std::time::Duration;

use serde::Serialize;

/// Share of one core at which a viewer thread counts as saturated. A thread near a full core
/// cannot read any faster: the kernel queues what it has not read yet, which the report sees as
/// lower fps and higher latency that the server did not cause. Not 1.0 because the thread also
/// sleeps briefly in epoll between bursts and is preempted by the server on a shared machine,
/// so a saturated thread measures somewhat below a full core.
pub(crate) const BOTTLENECK_SHARE: f64 = 0.9;

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
pub(crate) fn process_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    // Both clocks exist on every Linux since 2.6.12 and the pointer is valid, so a failure
    // would be a bug; zero turns it into an implausible figure rather than a lost run.
    debug_assert_eq!(rc, 0, "clock_gettime({id}) failed");
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one viewer thread measured between the start and the end of the window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WindowCpu {
    /// CPU time of the thread itself.
    pub thread: Duration,
    /// CPU time of the whole process over the same stretch of wall-clock time.
    pub process: Duration,
}

/// Takes [`WindowCpu`] readings at the start and at the end of the window.
#[derive(Debug, Default)]
pub(crate) struct WindowClock {
    start: Option<(Duration, Duration)>,
}

impl WindowClock {
    pub(crate) fn started(&self) -> bool {
        self.start.is_some()
    }

    pub(crate) fn start(&mut self) {
        self.start = Some((thread_time(), process_time()));
    }

    /// The CPU time since [`WindowClock::start`]; zero if the window never started.
    pub(crate) fn stop(&self) -> WindowCpu {
        let Some((thread0, process0)) = self.start else {
            return WindowCpu::default();
        };
        WindowCpu {
            thread: thread_time().saturating_sub(thread0),
            process: process_time().saturating_sub(process0),
        }
    }
}

/// The `cpu` object of the JSON summary.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuReport {
    /// CPU seconds the whole load generator used in the window, all threads together.
    pub seconds: f64,
    /// CPU seconds of the busiest viewer thread divided by the window's length: 1.0 is a full
    /// core.
    pub busiest_thread_share: f64,
    /// `busiest_thread_share >= 0.9`: the load generator itself may have limited fps and
    /// latency.
    pub bottleneck: bool,
}

impl CpuReport {
    /// `threads[0].process` stands for the whole process: every thread measures the same
    /// window, so any one of them will do.
    pub(crate) fn of(threads: &[WindowCpu], window: Duration) -> CpuReport {
        let secs = window.as_secs_f64();
        let busiest = threads.iter().map(|t| t.thread).max().unwrap_or_default();
        let busiest_thread_share = if secs > 0.0 {
            busiest.as_secs_f64() / secs
        } else {
            0.0
        };
        CpuReport {
            seconds: threads.first().map_or(0.0, |t| t.process.as_secs_f64()),
            busiest_thread_share,
            bottleneck: busiest_thread_share >= BOTTLENECK_SHARE,
        }
    }

    /// The line for stderr when the load generator was saturated.
    pub fn warning(&self) -> Option<String> {
        self.bottleneck.then(|| {
            format!(
                "WARNING: the load generator was the bottleneck: its busiest viewer thread used {:.0}% of a core over the window; fps and latency may be limited by ringcast-loadgen, not by the server (try more --threads or fewer viewers)",
                self.busiest_thread_share * 100.0
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spin(for_: Duration) {
        let t = Instant::now();
        while t.elapsed() < for_ {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn the_thread_clock_counts_only_the_calling_thread() {
        let spinner = std::thread::spawn(|| {
            let t0 = thread_time();
            spin(Duration::from_millis(300));
            thread_time() - t0
        });
        let (t0, p0) = (thread_time(), process_time());
        std::thread::sleep(Duration::from_millis(200));
        let (slept, process) = (thread_time() - t0, process_time() - p0);
        let spun = spinner.join().unwrap();
        // A loaded machine may give the spinner far less than a full core, but not nothing.
        assert!(spun > Duration::from_millis(10), "spinner used {spun:?}");
        assert!(slept < Duration::from_millis(20), "sleeper used {slept:?}");
        assert!(process > slept, "process {process:?}, sleeper {slept:?}");
    }

    #[test]
    fn the_busiest_thread_decides_the_bottleneck() {
        let at = |thread_ms, process_ms| WindowCpu {
            thread: Duration::from_millis(thread_ms),
            process: Duration::from_millis(process_ms),
        };
        let window = Duration::from_secs(10);
        // Two threads at 60% and 95% of a core: 1.55 cores in all is below 2, yet one is full.
        let saturated = CpuReport::of(&[at(6000, 15700), at(9500, 15600)], window);
        assert!((saturated.busiest_thread_share - 0.95).abs() < 1e-9);
        assert_eq!(saturated.seconds, 15.7);
        assert!(saturated.bottleneck);
        assert!(saturated.warning().unwrap().contains("95% of a core"));
        let fine = CpuReport::of(&[at(8900, 9000)], window);
        assert!(!fine.bottleneck);
        assert_eq!(fine.warning(), None);
        let empty = CpuReport::of(&[], Duration::ZERO);
        assert_eq!((empty.seconds, empty.busiest_thread_share), (0.0, 0.0));
    }
}

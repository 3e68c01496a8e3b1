//! What capture and the server both read of a service manager's environment.

use std::time::Duration;

/// The watchdog `WATCHDOG_USEC` asks for, unless `WATCHDOG_PID` names another process. Unlike
/// `sd_notify::watchdog_enabled`, a missing `WATCHDOG_PID` means this process, as
/// `sd_watchdog_enabled(3)` has it: the server's supervisor cannot know a worker's pid before it
/// starts it, and managers other than systemd may leave it out.
pub fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

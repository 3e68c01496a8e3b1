//! Measurements of ringcast: criterion benchmarks of the ring (`benches/`), the
//! `ringcast-loadgen` load client for servers, the bare fan-out baseline (`ringcast-fanout`) that
//! server figures are compared against, and a repeatable frame source (`ringcast-replay`).

pub mod fanout;
pub mod loadgen;
pub mod replay;
pub mod report;
pub mod stats;
pub mod wire;

/// Lifts the soft limit on open files to the hard limit (thousands of viewers need thousands of
/// descriptors) and returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; raising the soft limit up to the hard one is allowed
        // to any process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Sets up tracing to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

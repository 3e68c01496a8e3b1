use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ringcast_benches::replay::{run, ReplayArgs};

fn main() -> anyhow::Result<()> {
    ringcast_benches::init_logging();
    let args = ReplayArgs::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let published = run(&args, &stop)?;
    tracing::info!(published, "stopped");
    Ok(())
}

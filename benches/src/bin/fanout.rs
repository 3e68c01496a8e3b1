use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ringcast_benches::fanout::{run, FanoutArgs};

fn main() -> anyhow::Result<()> {
    ringcast_benches::init_logging();
    let args = FanoutArgs::parse();
    if let Err(e) = ringcast_benches::raise_open_file_limit() {
        tracing::warn!("could not raise the open-file limit: {e}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    run(&args, stop)?;
    Ok(())
}

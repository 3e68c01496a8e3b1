use clap::Parser;
use ringcast_benches::loadgen::{run, LoadArgs};

fn main() -> anyhow::Result<()> {
    ringcast_benches::init_logging();
    let args = LoadArgs::parse();
    if let Err(e) = ringcast_benches::raise_open_file_limit() {
        tracing::warn!("could not raise the open-file limit: {e}");
    }
    let report = run(&args)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

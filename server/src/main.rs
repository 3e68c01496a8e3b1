use std::io::IsTerminal;

use clap::Parser;
use ringcast_server::{supervisor, Args};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RINGCAST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    supervisor::run(&args)?;
    Ok(())
}

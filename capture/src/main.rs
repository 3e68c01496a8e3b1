//! `ringcast-capture`: parses flags and hands them to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The same variable as the server's, so one unit file setting covers both.
            EnvFilter::try_from_env("RINGCAST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = capture::Args::parse();
    match capture_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast-capture: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn capture_main(args: &capture::Args) -> anyhow::Result<()> {
    if args.list_devices {
        print!("{}", capture::source::v4l2::list_devices_text());
        return Ok(());
    }
    let camera = args
        .camera
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--camera is required"))?;
    capture::run::run(args, camera)?;
    Ok(())
}

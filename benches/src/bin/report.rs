use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ringcast_benches::report;

/// Writes docs/BENCHMARKS.md and the SVG plots in docs/bench/ from scripts/bench-report's
/// results file.
#[derive(Parser)]
#[command(name = "ringcast-report")]
struct Args {
    /// The results file scripts/bench-report wrote.
    #[arg(long, default_value = "docs/bench/results.json")]
    results: PathBuf,
    /// BENCHMARKS.md goes here, the plots into its bench/ directory.
    #[arg(long, default_value = "docs")]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let results = report::load(&args.results)?;
    let written = report::render(&results, &args.out_dir)
        .with_context(|| format!("rendering the report into {}", args.out_dir.display()))?;
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

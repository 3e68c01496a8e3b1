//! `ringcast-report`: `docs/BENCHMARKS.md` and its SVG plots from the one results file
//! `scripts/bench-report` writes, so that the report can be redrawn without measuring again.

pub mod format;
pub mod schema;
pub mod targets;


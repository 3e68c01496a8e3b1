//! `ringcast-ringctl inspect <file>`: what an operator runs when a camera looks wrong. Prints the
//! ring's header, head, writer state and counters (or one JSON object with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringbuf::{
    Clock, MonoNanos, OfflineReason, RingInfo, RingReader, SystemClock, WriterKind, WriterStatus,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "ringcast-ringctl",
    version,
    about = "Inspect ringcast ring files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a ring's header, head, writer state and counters.
    Inspect {
        /// The ring file, e.g. /dev/shm/ringcast/cam1.ring
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A writer whose heartbeat is older than this many seconds counts as offline.
        #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
        offline_after: f64,
    },
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() -> ExitCode {
    let Command::Inspect {
        file,
        json,
        offline_after,
    } = Cli::parse().command;
    let reader = match RingReader::open(&file) {
        Ok(reader) => reader,
        Err(e) => {
            eprintln!("ringcast-ringctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemClock.mono();
    let status = reader.writer_status_at(now, Duration::from_secs_f64(offline_after));
    let info = reader.info();
    if json {
        println!("{}", as_json(&info, status, now));
    } else {
        print!("{}", as_text(&reader, &info, status, now));
    }
    ExitCode::SUCCESS
}

fn age_secs(now: MonoNanos, then: MonoNanos) -> Option<f64> {
    (then.0 != 0).then(|| now.since(then).as_secs_f64())
}

fn status_detail(status: WriterStatus) -> String {
    match status {
        WriterStatus::Online => "online".into(),
        WriterStatus::Idle => "idle (on demand, nobody watching)".into(),
        WriterStatus::Offline(OfflineReason::Stopped) => "offline (writer stopped)".into(),
        WriterStatus::Offline(OfflineReason::ProcessGone { pid }) => {
            format!("offline (writer pid {pid} is gone)")
        }
        WriterStatus::Offline(OfflineReason::SourceDown) => {
            "offline (the writer is retrying its camera)".into()
        }
        WriterStatus::Offline(OfflineReason::Replaced) => {
            "offline (the writer moved to a new file at this path)".into()
        }
        WriterStatus::Offline(OfflineReason::Silent { for_ }) => {
            format!("offline (no heartbeat for {:.1} s)", for_.as_secs_f64())
        }
    }
}

fn as_json(info: &RingInfo, status: WriterStatus, now: MonoNanos) -> serde_json::Value {
    json!({
        "camera": info.camera,
        "head": info.head,
        "online": status == WriterStatus::Online,
        "status": status.as_str(),
        "status_detail": status_detail(status),
        "writer_pid": info.writer_pid,
        "codec": info.codec,
        "codec_string": info.codec_string,
        "slot_count": info.geometry.slot_count,
        "slot_size": info.geometry.slot_size,
        "width": info.format.width,
        "height": info.format.height,
        "fps": f64::from(info.format.fps_milli) / 1000.0,
        "heartbeat_age_s": age_secs(now, info.heartbeat),
        "last_frame_age_s": age_secs(now, info.published_at),
        "frames_published": info.frames_published,
        "bytes_published": info.bytes_published,
        "frames_rejected": info.frames_rejected,
        "writer_starts": info.writer_starts,
        "writer_kind": info.writer_kind,
        "local_claim_pid": info.local_claim,
    })
}

fn as_text(reader: &RingReader, info: &RingInfo, status: WriterStatus, now: MonoNanos) -> String {
    let age = |t| age_secs(now, t).map_or("never".to_owned(), |s| format!("{s:.3} s ago"));
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18}{v}\n"));
    line("file", reader.path().display().to_string());
    line("camera", info.camera.to_string());
    line("writer", status_detail(status));
    line("writer pid", info.writer_pid.to_string());
    line("writer starts", info.writer_starts.to_string());
    line(
        "written by",
        match info.writer_kind {
            WriterKind::Local => "a capture on this host",
            WriterKind::Ingest => "a server worker (ingest of a remote camera)",
        }
        .into(),
    );
    if let Some(pid) = info.local_claim {
        line(
            "claimed by",
            format!("capture pid {pid}, waiting for ingest to give the ring up"),
        );
    }
    line("heartbeat", age(info.heartbeat));
    line("head", info.head.to_string());
    line("last frame", age(info.published_at));
    line(
        "codec",
        match &info.codec_string {
            Some(string) => format!("{} ({string})", info.codec),
            None => info.codec.to_string(),
        },
    );
    line(
        "picture",
        format!(
            "{}x{} at {:.3} fps",
            info.format.width,
            info.format.height,
            f64::from(info.format.fps_milli) / 1000.0
        ),
    );
    line(
        "slots",
        format!(
            "{} x {} bytes",
            info.geometry.slot_count, info.geometry.slot_size
        ),
    );
    line("frames published", info.frames_published.to_string());
    line("bytes published", info.bytes_published.to_string());
    line("frames rejected", info.frames_rejected.to_string());
    out
}

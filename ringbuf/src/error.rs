use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a ring. Each message names the file or input at fault, so a
/// binary can print it as one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("camera name {0:?} is not allowed: use 1 to 32 of a-z, 0-9, '_' or '-'")]
    InvalidCameraName(String),

    #[error("unknown codec {0:?}: use jpeg or h264")]
    UnknownCodec(String),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error("{}: another writer{} holds this ring", path.display(), pid_suffix(*pid))]
    WriterBusy { path: PathBuf, pid: Option<u32> },

    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },

    #[error("{}: a capture on this host writes this camera; ingest may not", path.display())]
    LocalCamera { path: PathBuf },

    #[error("{}: a remote camera (ingest, in server process{}) holds this ring; it has been asked to give it up, try again", path.display(), pid_suffix(*pid))]
    HeldByIngest { path: PathBuf, pid: Option<u32> },

    #[error("ring directory {}: no space for a file of {}{}: free space on that file system, or make the ring smaller", dir.display(), size(*needed), free_suffix(*free))]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        free: Option<u64>,
    },

    #[error("ring directory {} cannot be trusted: {reason}", path.display())]
    UntrustedRingDir { path: PathBuf, reason: String },

    #[error("{}: not a ringcast ring (bad magic)", path.display())]
    BadMagic { path: PathBuf },

    #[error("{}: ring layout version {found} is not supported (this build reads version {supported})", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("{}: truncated ring: {actual} bytes, its header says {expected}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error("{}: impossible ring header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },

    #[error("ring geometry refused: {0}")]
    InvalidGeometry(String),

    #[error("frame of {len} bytes does not fit a slot of {slot_size} bytes")]
    FrameTooLarge { len: usize, slot_size: usize },

    #[error("H.264 delta frame refused: a frame before it was not published, so no reader could decode it; the stream resumes at the next keyframe")]
    AwaitingKeyframe,

    #[error("corrupt slot for frame {frame}: {reason}")]
    CorruptSlot { frame: u64, reason: String },
}

fn pid_suffix(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

fn free_suffix(free: Option<u64>) -> String {
    free.map(|f| format!(" ({} free)", size(f)))
        .unwrap_or_default()
}

/// A byte count as a person reads it: "16.0 MiB".
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(not(loom))]
impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

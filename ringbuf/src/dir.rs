//! The ring directory convention shared by capture and server: one `<camera>.ring` (and its
//! `<camera>.demand`) per camera in one directory.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{CameraId, Error};

/// Where rings live unless `--ring-dir` / `RINGCAST_RING_DIR` says otherwise: tmpfs, so frames
/// never touch a disk.
pub const DEFAULT_RING_DIR: &str = "/dev/shm/ringcast";

pub const RING_EXTENSION: &str = "ring";
pub const DEMAND_EXTENSION: &str = "demand";

pub fn ring_path(dir: &Path, camera: &CameraId) -> PathBuf {
    dir.join(format!("{camera}.{RING_EXTENSION}"))
}

pub fn demand_path(dir: &Path, camera: &CameraId) -> PathBuf {
    dir.join(format!("{camera}.{DEMAND_EXTENSION}"))
}

/// Creates the ring directory if needed: group-readable, so servers may run as another user of
/// the writer's group (ring files are 0640).
pub fn ensure_ring_dir(dir: &Path) -> Result<(), Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(Error::io(dir))
}

/// The cameras that have a ring file in `dir`, sorted by name. Files whose names are not
/// `<valid camera>.ring` are ignored (temporary files of a writer being created, for one).
pub fn scan_ring_dir(dir: &Path) -> Result<Vec<(CameraId, PathBuf)>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir)(e)),
    };
    let mut rings: Vec<(CameraId, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.extension()? != RING_EXTENSION {
                return None;
            }
            let camera = CameraId::new(path.file_stem()?.to_str()?).ok()?;
            Some((camera, path))
        })
        .collect();
    rings.sort();
    Ok(rings)
}

/// How a ring or demand file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadOnly,
    ReadWrite,
    /// Read-write, created (with `mode`) if missing.
    Create {
        mode: u32,
    },
}

/// Opens a file of the ring directory, refusing anything but a regular file. O_NONBLOCK keeps a
/// FIFO or device planted under a ring's name from blocking the open; on a regular file it
/// changes nothing (the rings are only ever mapped).
pub(crate) fn open_regular(path: &Path, access: Access) -> Result<File, Error> {
    let mut options = File::options();
    options.read(true).custom_flags(libc::O_NONBLOCK);
    match access {
        Access::ReadOnly => {}
        Access::ReadWrite => {
            options.write(true);
        }
        Access::Create { mode } => {
            options.write(true).create(true).truncate(false).mode(mode);
        }
    }
    let file = options.open(path).map_err(Error::io(path))?;
    let is_file = file.metadata().map_err(Error::io(path))?.is_file();
    if !is_file {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

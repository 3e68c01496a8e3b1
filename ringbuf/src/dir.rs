//! The ring directory convention shared by capture and server: one `<camera>.ring` (and its
//! `<camera>.demand`) per camera in one directory, and for an H.264 camera also
//! `<camera>.jpeg.ring` and `<camera>.jpeg.demand`, its JPEG copy ([`Feed::JpegCopy`]). A dot
//! is not allowed in camera names, so no camera's files can be taken for another's copy.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{CameraId, Error};

/// Where rings live unless `--ring-dir` / `RINGCAST_RING_DIR` says otherwise: tmpfs, so frames
/// never touch a disk.
pub const DEFAULT_RING_DIR: &str = "/dev/shm/ringcast";

pub const RING_EXTENSION: &str = "ring";
pub const DEMAND_EXTENSION: &str = "demand";

/// Which of a camera's rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feed {
    /// The camera's frames as its capture publishes them (JPEG or H.264).
    Camera,
    /// JPEG frames decoded from an H.264 camera, made by its capture only while someone watches
    /// a route that sends JPEG (`/stream`, `/snapshot`, the older WebSocket route).
    JpegCopy,
}

impl Feed {
    fn infix(self) -> &'static str {
        match self {
            Feed::Camera => "",
            Feed::JpegCopy => ".jpeg",
        }
    }
}

pub fn ring_path(dir: &Path, camera: &CameraId) -> PathBuf {
    feed_ring_path(dir, camera, Feed::Camera)
}

pub fn demand_path(dir: &Path, camera: &CameraId) -> PathBuf {
    feed_demand_path(dir, camera, Feed::Camera)
}

pub fn feed_ring_path(dir: &Path, camera: &CameraId, feed: Feed) -> PathBuf {
    dir.join(format!("{camera}{}.{RING_EXTENSION}", feed.infix()))
}

pub fn feed_demand_path(dir: &Path, camera: &CameraId, feed: Feed) -> PathBuf {
    dir.join(format!("{camera}{}.{DEMAND_EXTENSION}", feed.infix()))
}

/// Creates the ring directory if needed, and checks that it can be trusted: see
/// [`check_ring_dir`]. Capture and server normally run as one user. Ring files are 0640 and
/// demand files 0660 so that they can also run as several users of one group; the directory
/// must then belong to root (group-writable, not writable by others), as a systemd
/// `RuntimeDirectory` or a tmpfiles.d line makes it.
pub fn ensure_ring_dir(dir: &Path) -> Result<(), Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(Error::io(dir))?;
    check_ring_dir(dir)
}

/// Refuses a ring directory that someone else could have prepared: one that is a symbolic link,
/// not owned by this process's user or root, or writable by others. In a world-writable place
/// such as `/dev/shm`, another local user could otherwise create the directory first and then
/// swap ring files under the cameras (or plant links to files elsewhere).
pub fn check_ring_dir(dir: &Path) -> Result<(), Error> {
    let untrusted = |reason: String| Error::UntrustedRingDir {
        path: dir.to_owned(),
        reason,
    };
    let meta = fs::symlink_metadata(dir).map_err(Error::io(dir))?;
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            "it is a symbolic link; give the directory it points to".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(untrusted("it is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(untrusted(format!(
            "it is owned by uid {}, not by this user (uid {me}) or root; remove it, or chown it",
            meta.uid()
        )));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(untrusted(format!(
            "anyone may write to it (mode {:o}); chmod o-w it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Gives `file` all of its `len` bytes now, so that no later write can fault on a full file
/// system (tmpfs answers a write to a hole it cannot fill with SIGBUS).
pub(crate) fn reserve_space(file: &File, len: u64, path: &Path) -> Result<(), Error> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    match nix::fcntl::posix_fallocate(file, 0, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENOSPC) => {
            let dir = path.parent().unwrap_or(path);
            Err(Error::NoSpace {
                dir: dir.to_owned(),
                needed: len.unsigned_abs(),
                free: free_space(dir),
            })
        }
        Err(errno) => Err(Error::io(path)(errno.into())),
    }
}

/// Checks, before anything is made, that a new file of `needed` bytes (none: only the right
/// to write) could go into `dir`: this process may write there, the file system is not
/// read-only, and it has the room. Someone asking from outside (a remote camera) is then told
/// why at once, rather than let in and cut off at its first frame. A directory not made yet
/// passes: it is made with the file, and that says what went wrong.
pub(crate) fn check_room(dir: &Path, needed: u64) -> Result<(), Error> {
    match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(errno) => return Err(Error::io(dir)(errno.into())),
        Ok(()) => {}
    }
    match free_space(dir) {
        Some(free) if free < needed => Err(Error::NoSpace {
            dir: dir.to_owned(),
            needed,
            free: Some(free),
        }),
        _ => Ok(()),
    }
}

/// Bytes free for unprivileged use on the file system holding `dir`, if it can be told.
fn free_space(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The cameras that have a ring file in `dir`, sorted by name. Files whose names are not
/// `<valid camera>.ring` are ignored (temporary files of a writer being created, for one). A
/// directory that is not there yet holds no camera; one that cannot be trusted is an error
/// ([`check_ring_dir`]).
pub fn scan_ring_dir(dir: &Path) -> Result<Vec<(CameraId, PathBuf)>, Error> {
    match check_ring_dir(dir) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        checked => checked?,
    }
    let entries = fs::read_dir(dir).map_err(Error::io(dir))?;
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

/// Opens a file of the ring directory, refusing anything but a regular file. O_NOFOLLOW refuses
/// a symbolic link planted under a ring's name (it could point anywhere this process may write);
/// O_NONBLOCK keeps a FIFO or device from blocking the open, and changes nothing on a regular
/// file (the rings are only ever mapped).
pub(crate) fn open_regular(path: &Path, access: Access) -> Result<File, Error> {
    let mut options = File::options();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    match access {
        Access::ReadOnly => {}
        Access::ReadWrite => {
            options.write(true);
        }
        Access::Create { mode } => {
            options.write(true).create(true).truncate(false).mode(mode);
        }
    }
    let file = match options.open(path) {
        Ok(file) => file,
        // What O_NOFOLLOW answers for a symbolic link: not a regular file either.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::NotAFile {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(Error::io(path)(e)),
    };
    let is_file = file.metadata().map_err(Error::io(path))?.is_file();
    if !is_file {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

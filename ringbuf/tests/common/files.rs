//! Doing things to files as another process would, for the tests of ringbuf and of the server
//! (which includes this file by path): cutting them short, mounting a small file system.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `truncate -s SIZE path`, as any process that may write the file could do.
pub fn truncate(path: &Path, size: u64) {
    let status = Command::new("truncate")
        .arg("-s")
        .arg(size.to_string())
        .arg(path)
        .status()
        .expect("run truncate");
    assert!(status.success(), "truncate {} failed", path.display());
}

/// Whether this process may do what `test` needs root for (mounting, giving files away). CI
/// runs as root and must not skip; elsewhere the test says it was skipped.
pub fn root_for(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI must run it"
    );
    eprintln!("{test}: skipped, needs root");
    false
}

/// A tmpfs of a given size mounted on a new directory, unmounted when dropped.
pub struct SmallTmpfs {
    _base: tempfile::TempDir,
    pub dir: PathBuf,
}

impl SmallTmpfs {
    /// `size` as mount(8) takes it: "1m".
    pub fn mount(size: &str) -> SmallTmpfs {
        let base = tempfile::tempdir().expect("a temporary directory");
        let dir = base.path().join("rings");
        std::fs::create_dir(&dir).expect("the mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        SmallTmpfs { _base: base, dir }
    }

    /// Makes the file system read-only (fails while any file on it is open for writing: the
    /// kernel refuses with EBUSY).
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} read-only", self.dir.display());
    }

    /// Takes every byte left.
    pub fn fill(&self) {
        use std::io::Write;
        let mut junk = std::fs::File::create(self.dir.join("junk")).expect("a file to fill");
        let block = vec![0xAA; 4096];
        while junk.write_all(&block).is_ok() {}
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

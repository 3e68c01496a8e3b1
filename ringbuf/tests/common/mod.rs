//! What the multi-process ring tests share: self-checking frames, a small seeded random source,
//! and child processes that are this very test binary re-executed in another role.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringbuf::FrameMeta;

pub mod files;

/// Environment variable that turns a re-executed test binary into a child of the given role.
pub const ROLE_ENV: &str = "RINGCAST_TEST_ROLE";

/// Marks the lines a child prints for its parent; everything else on stdout is libtest's.
pub const REPORT_PREFIX: &str = "RINGCAST-TEST ";

/// How long a parent waits for anything a child should do before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Bytes at the start of every frame of at least this size: frame number, length, salt and a
/// checksum of the rest, each a little-endian u64. Shorter frames hold a prefix of these bytes.
pub const STAMP_LEN: usize = 32;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const HASH_PRIME: u64 = 0x0000_0100_0000_01B3;
const HASH_SEED: u64 = 0xCBF2_9CE4_8422_2325;

/// splitmix64's finaliser: a cheap bijective scrambler of a counter.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded random source (splitmix64): reproducible from the seed a failing test prints.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the clock, for "random moments"; print the seed so a failure can be replayed.
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform enough in `lo..=hi` for test schedules.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The first body word of frame `frame` written with `salt`.
fn body_base(frame: u64, salt: u64) -> u64 {
    mix(frame ^ salt.rotate_left(32))
}

/// The body word at `index` of a frame whose first body word is `base`: words differ between
/// frames and between positions, so bytes of one frame mixed into another never pass the check.
fn body_word(base: u64, index: u64) -> u64 {
    base.wrapping_add(index.wrapping_mul(GOLDEN))
}

fn hash_word(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(HASH_PRIME)
}

/// Fills `out` with frame `frame` of `len` bytes: the stamp, then a body determined by
/// `(frame, salt)`. The stamp's checksum covers the body.
pub fn fill_frame(out: &mut Vec<u8>, frame: u64, len: usize, salt: u64) {
    out.clear();
    out.resize(len.max(STAMP_LEN), 0);
    let base = body_base(frame, salt);
    let mut hash = HASH_SEED;
    for (i, chunk) in out[STAMP_LEN..].chunks_mut(8).enumerate() {
        let word = body_word(base, i as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
        hash = hash_word(hash, word_of(chunk));
    }
    let stamp = stamp(frame, len, salt, hash);
    out[..STAMP_LEN].copy_from_slice(&stamp);
    out.truncate(len);
}

fn stamp(frame: u64, len: usize, salt: u64, checksum: u64) -> [u8; STAMP_LEN] {
    let mut bytes = [0u8; STAMP_LEN];
    for (i, value) in [frame, len as u64, salt, checksum].into_iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// A chunk of at most 8 bytes as a little-endian word, zero-padded.
fn word_of(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..chunk.len()].copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

fn field(bytes: &[u8], index: usize) -> u64 {
    word_of(&bytes[index * 8..index * 8 + 8])
}

/// Frames made ahead by a thread of their own, so that a writer spends its time publishing (and
/// a reader racing it, or a kill at a random moment, meets a write in progress as often as can be).
pub struct FrameMaker {
    frames: Receiver<(u64, Vec<u8>)>,
    spare: mpsc::Sender<Vec<u8>>,
}

impl FrameMaker {
    /// Makes frames `first, first + 1, ...`, frame `n` being `len_of(n)` bytes written with `salt`.
    pub fn start(
        first: u64,
        salt: u64,
        mut len_of: impl FnMut(u64) -> usize + Send + 'static,
    ) -> FrameMaker {
        let (made, frames) = mpsc::sync_channel(4);
        let (spare, spares) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for frame in first.. {
                let mut payload = spares.try_recv().unwrap_or_default();
                fill_frame(&mut payload, frame, len_of(frame), salt);
                if made.send((frame, payload)).is_err() {
                    return;
                }
            }
        });
        FrameMaker { frames, spare }
    }

    /// The next frame's number and bytes.
    pub fn next(&self) -> (u64, Vec<u8>) {
        self.frames.recv().expect("the frame maker thread panicked")
    }

    /// Hands a published frame's buffer back for reuse.
    pub fn recycle(&self, payload: Vec<u8>) {
        // The maker only ends when this handle is dropped, so the buffer always has a taker.
        let _ = self.spare.send(payload);
    }
}

/// Checks that `bytes`, returned by a reader as `meta`, are exactly the frame a writer produced
/// with [`fill_frame`]. Frames of at least [`STAMP_LEN`] bytes carry their salt; shorter ones
/// are compared with what `short_salt` gives. Returns the frame's salt.
pub fn check_frame(meta: &FrameMeta, bytes: &[u8], short_salt: u64) -> Result<u64, String> {
    let frame = meta.frame_no.0;
    if bytes.len() != meta.len {
        return Err(format!(
            "frame {frame}: {} bytes returned, metadata says {}",
            bytes.len(),
            meta.len
        ));
    }
    if bytes.len() < STAMP_LEN {
        let mut expected = Vec::new();
        fill_frame(&mut expected, frame, bytes.len(), short_salt);
        return if expected == bytes {
            Ok(short_salt)
        } else {
            Err(format!(
                "frame {frame}: short frame {bytes:?} != {expected:?}"
            ))
        };
    }
    let (stamped_frame, stamped_len, salt) = (field(bytes, 0), field(bytes, 1), field(bytes, 2));
    if stamped_frame != frame || stamped_len != bytes.len() as u64 {
        return Err(format!(
            "frame {frame} of {} bytes carries the stamp of frame {stamped_frame} of {stamped_len} bytes",
            bytes.len()
        ));
    }
    let base = body_base(frame, salt);
    let mut hash = HASH_SEED;
    for (i, chunk) in bytes[STAMP_LEN..].chunks(8).enumerate() {
        let expected = body_word(base, i as u64).to_le_bytes();
        if chunk != &expected[..chunk.len()] {
            return Err(format!(
                "frame {frame}: body differs at byte {} (torn or foreign data)",
                STAMP_LEN + i * 8
            ));
        }
        hash = hash_word(hash, word_of(chunk));
    }
    if hash != field(bytes, 3) {
        return Err(format!("frame {frame}: checksum mismatch"));
    }
    Ok(salt)
}

/// This test binary re-executed as a child in `role`, running only the test `entry` (which
/// dispatches on [`ROLE_ENV`]). Its report lines arrive through a thread, so a parent can wait
/// with a deadline; it is killed when dropped, so a failing test leaves no process behind.
pub struct ChildProcess {
    child: Child,
    lines: Receiver<String>,
    role: String,
}

impl ChildProcess {
    pub fn spawn(entry: &str, role: &str, env: &[(&str, String)]) -> ChildProcess {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(exe);
        command
            .args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn a child test process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints "test child_process ... " without a newline before the test
                // runs, so the first report shares its line.
                if let Some(at) = line.find(REPORT_PREFIX) {
                    if tx
                        .send(line[at + REPORT_PREFIX.len()..].to_owned())
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        ChildProcess {
            child,
            lines,
            role: role.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has not exited (or been killed) yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The next report line, as JSON; fails the test if none comes within `patience`.
    pub fn report(&mut self, patience: Duration) -> serde_json::Value {
        match self.lines.recv_timeout(patience) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: bad report {line:?}: {e}", self.role)),
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no report within {patience:?}", self.role)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "{}: exited ({status:?}) without a report; its panic is above",
                    self.role
                )
            }
        }
    }

    /// Waits for the child to exit on its own and checks it succeeded.
    pub fn finish(mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            match self.child.try_wait().expect("wait for child") {
                Some(status) => {
                    assert!(status.success(), "{} exited with {status}", self.role);
                    return;
                }
                None if Instant::now() > deadline => {
                    panic!("{} did not exit within {patience:?}", self.role)
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Prints one report line for the parent.
pub fn report(value: serde_json::Value) {
    println!("{REPORT_PREFIX}{value}");
}

/// The value of a variable the parent set for this child.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child started without {key}"))
}

pub fn env_u64(key: &str) -> u64 {
    env(key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} is not a number: {e}"))
}

/// Polls `done` until it holds, failing with `what` if it does not within [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

//! Helpers for the integration tests: run the real binary against a temporary ring directory
//! and read what it publishes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ringbuf::{CameraId, FrameMeta, RingReader};

/// Generous limit for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringcast-capture")
}

/// A child process that is killed when the test ends, however it ends.
pub struct Running {
    pub child: Child,
    pub name: String,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.wait_exit()
            .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", self.name))
    }

    /// Waits (up to the deadline) for the process to exit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ringcast-capture` with `args`; its log goes to the test's stderr.
pub fn capture(args: &[&str]) -> Running {
    let child = Command::new(bin())
        .args(args)
        .env_remove("RINGCAST_LOG")
        .stdin(Stdio::null())
        .spawn()
        .expect("start ringcast-capture");
    Running {
        child,
        name: "ringcast-capture".into(),
    }
}

/// Runs `ringcast-capture` to completion (it must exit by itself).
pub fn capture_output(args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringcast-capture");
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ringcast-capture {args:?} did not exit by itself");
}

pub fn ring_file(dir: &Path, camera: &str) -> PathBuf {
    ringbuf::ring_path(dir, &CameraId::new(camera).unwrap())
}

/// Opens the camera's ring as soon as the capture has created it.
pub fn open_ring(dir: &Path, camera: &str) -> RingReader {
    let path = ring_file(dir, camera);
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(reader) = RingReader::open(&path) {
            return reader;
        }
        assert!(
            Instant::now() < until,
            "capture never created the ring {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `count` frames, failing if they do not come in time.
pub fn read_frames(reader: &mut RingReader, count: usize) -> Vec<(FrameMeta, Vec<u8>)> {
    let until = Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while frames.len() < count {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {count} frames arrived in the ring",
            frames.len()
        );
        let mut buf = Vec::new();
        if let Some(meta) = reader.next_timeout(&mut buf, left).expect("ring read") {
            frames.push((meta, buf));
        }
    }
    frames
}

/// Waits for a frame newer than `after`; `None` if none comes within `wait`.
pub fn frame_within(reader: &mut RingReader, wait: Duration) -> Option<(FrameMeta, Vec<u8>)> {
    let mut buf = Vec::new();
    reader
        .next_timeout(&mut buf, wait)
        .expect("ring read")
        .map(|meta| (meta, buf))
}

/// Polls `condition` until it holds; panics with `what` if it does not within the deadline.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Decodes a JPEG to RGB.
pub fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
    turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("frame decodes as JPEG")
}

/// A JPEG of `width`×`height` whose content depends on `seed`.
pub fn make_jpeg(width: usize, height: usize, seed: u8) -> Vec<u8> {
    let mut pixels = vec![0u8; width * height * 3];
    for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
        let (x, y) = (i % width, i / width);
        px[0] = (x as u8).wrapping_add(seed);
        px[1] = (y as u8).wrapping_mul(3);
        px[2] = seed.wrapping_mul(7);
    }
    let image = turbojpeg::Image {
        pixels: &pixels[..],
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 85, turbojpeg::Subsamp::Sub2x2)
        .expect("encode")
        .to_vec()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `jpeg` without the ringcast timing segment (what the source sent).
pub fn without_timing(jpeg: &[u8]) -> Vec<u8> {
    assert!(
        ringbuf::frame::read_timing(jpeg).is_some(),
        "published frame has no timing segment"
    );
    let seg_len = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&jpeg[4 + seg_len..]);
    out
}

/// Runs capture on `frames` fed through stdin, lets it finish at the end of input, and returns
/// the ring directory (the ring stays readable after the writer is gone).
pub fn run_on_stdin(camera: &str, frames: &[Vec<u8>], extra: &[&str]) -> tempfile::TempDir {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--camera",
        camera,
        "--source",
        "stdin",
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start ringcast-capture");
    let mut running = Running {
        child,
        name: "ringcast-capture".into(),
    };
    {
        let mut stdin = running.child.stdin.take().unwrap();
        for frame in frames {
            stdin.write_all(frame).unwrap();
        }
    }
    let status = running
        .wait_exit()
        .expect("capture did not exit at the end of its input");
    assert!(status.success(), "capture failed: {status}");
    dir
}

/// CPU time (user + system, in clock ticks) a process has used so far.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Child processes of `pid` (all its threads').
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// A pretend camera on a TCP port: a thread that accepts one connection at a time and hands it
/// to `serve` until the camera is killed (or dropped), which is how tests unplug a camera.
pub struct TcpCamera {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpCamera {
    pub fn start(
        port: u16,
        serve: impl Fn(std::net::TcpStream, &std::sync::atomic::AtomicBool) + Send + 'static,
    ) -> TcpCamera {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind camera port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((socket, _)) => serve(socket, &stop),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TcpCamera {
            stop,
            thread: Some(thread),
        }
    }

    pub fn kill(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for TcpCamera {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An ffmpeg camera: a live 320x240 test picture at 15 fps in H.264 (every `gop` frames a key
/// frame), sent where `output` says (the output format and address), until it is dropped.
pub fn ffmpeg_h264_camera(name: &str, gop: u32, output: &[&std::ffi::OsStr]) -> Running {
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", &gop.to_string()])
        .args(output)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Running {
        child,
        name: name.into(),
    }
}

/// Decodes an Annex B stream with ffmpeg: the number of frames, or ffmpeg's complaint.
pub fn decoded_frames(stream: &[u8]) -> Result<usize, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ring.h264");
    std::fs::write(&file, stream).unwrap();
    let decode = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "h264", "-i"])
        .arg(&file)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&decode.stderr);
    if !decode.status.success() || !errors.trim().is_empty() {
        return Err(errors.into_owned());
    }
    let frames = String::from_utf8_lossy(&decode.stdout)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .count();
    Ok(frames)
}

/// The access units of `frames` one after the other: the stream a reader received.
pub fn concatenated(frames: &[(FrameMeta, Vec<u8>)]) -> Vec<u8> {
    frames.iter().flat_map(|(_, unit)| unit.clone()).collect()
}

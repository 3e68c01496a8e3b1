//! H.264 cameras for the server's tests: a stream made by ffmpeg's x264, cut into access units,
//! published in a loop into an H.264 ring; a JPEG copy made while watched, as a capture makes
//! it; and a reader of what `/ws/{cam}` sends for them.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringbuf::demand::{DemandFile, DEFAULT_CELL_EXPIRY};
use ringbuf::frame::{insert_timing, read_access_unit_header, FrameTiming, AU_HEADER_LEN};
use ringbuf::h264::{nal_type, NAL_ACCESS_UNIT_DELIMITER};
use ringbuf::{
    CameraId, Clock, Codec, Feed, FrameKind, FrameNo, RingGeometry, RingWriter, SystemClock,
    VideoFormat, WallNanos,
};

use super::{PublishingThread, Ws};

pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 240;
/// Frames from one keyframe to the next.
pub const GOP: usize = 15;

/// Two seconds of x264 at 30 fps, an access unit delimiter before each access unit.
pub fn access_units() -> &'static [Vec<u8>] {
    static UNITS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    UNITS.get_or_init(|| {
        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={WIDTH}x{HEIGHT}:rate=30"))
            .args(["-frames:v", "60", "-c:v", "libx264", "-preset", "veryfast"])
            .args(["-tune", "zerolatency", "-bf", "0", "-g", &GOP.to_string()])
            .args(["-x264-params", "aud=1", "-f", "h264", "-"])
            .output()
            .expect("run ffmpeg (scripts/install-deps installs it)");
        assert!(
            output.status.success(),
            "ffmpeg: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        split_at_delimiters(&output.stdout)
    })
}

/// Cuts an Annex B stream before each access unit delimiter (with its start code).
fn split_at_delimiters(stream: &[u8]) -> Vec<Vec<u8>> {
    let starts: Vec<usize> = (0..stream.len().saturating_sub(4))
        .filter(|&i| stream[i..i + 4] == [0, 0, 0, 1])
        .filter(|&i| nal_type(&stream[i + 4..]) == Some(NAL_ACCESS_UNIT_DELIMITER))
        .collect();
    let ends = starts.iter().skip(1).copied().chain([stream.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| stream[start..end].to_vec())
        .collect()
}

/// Publishes [`access_units`] into an H.264 ring at `fps`, over and over (each loop starts at
/// a keyframe, so the stream stays decodable), until dropped.
pub struct H264Feeder(PublishingThread);

impl H264Feeder {
    pub fn start(ring_dir: &Path, cam: &str, fps: u32) -> H264Feeder {
        let camera = CameraId::new(cam).expect("camera name");
        // Many small slots: a server busy with other tests may fall a few frames behind, and
        // an H.264 reader lapped by the writer loses frames up to a keyframe.
        let geometry = RingGeometry {
            slot_count: 64,
            slot_size: 256 << 10,
        };
        let mut writer = RingWriter::create_for_codec(ring_dir, &camera, geometry, Codec::H264)
            .expect("create ring");
        writer.set_video_format(VideoFormat {
            width: WIDTH,
            height: HEIGHT,
            fps_milli: fps * 1000,
        });
        let units = access_units();
        let interval = Duration::from_secs(1) / fps;
        H264Feeder(PublishingThread::spawn(move |stopping| {
            let mut next = Instant::now();
            let mut published = 0;
            for unit in units.iter().cycle() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                // The writer finds each access unit's kind itself.
                writer.publish(unit, SystemClock.wall()).expect("publish");
                published += 1;
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            published
        }))
    }
}

/// One binary message of `/ws/{cam}` for an H.264 camera.
#[derive(Debug)]
pub struct AccessUnit {
    pub kind: FrameKind,
    pub frame_no: FrameNo,
    pub capture: WallNanos,
    pub bytes: Vec<u8>,
}

/// Parses a binary message: the 17-byte header, then the access unit.
pub fn parse_access_unit(message: &[u8]) -> AccessUnit {
    let (kind, timing) = read_access_unit_header(message)
        .unwrap_or_else(|| panic!("no access unit header in {} bytes", message.len()));
    AccessUnit {
        kind,
        frame_no: timing.frame_no,
        capture: timing.capture,
        bytes: message[AU_HEADER_LEN..].to_vec(),
    }
}

/// What `/ws/{cam}` sent: each decoder configuration (as JSON) and each access unit, in order.
#[derive(Debug)]
pub enum Message {
    Config(serde_json::Value),
    Unit(AccessUnit),
}

/// The next configuration or access unit (pings are answered by tungstenite).
pub fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read a WebSocket message") {
            tungstenite::Message::Text(text) => {
                return Message::Config(serde_json::from_str(&text).expect("config JSON"))
            }
            tungstenite::Message::Binary(bytes) => return Message::Unit(parse_access_unit(&bytes)),
            tungstenite::Message::Close(close) => panic!("server closed: {close:?}"),
            _ => {}
        }
    }
}

/// Decodes an Annex B stream with ffmpeg; returns how many frames it decoded, failing the test
/// on any decoder complaint.
pub fn decode_with_ffmpeg(stream: &[u8], dir: &Path) -> usize {
    let path = dir.join("received.h264");
    std::fs::write(&path, stream).expect("write the stream");
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "ffprobe complained about the stream: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a frame count")
}

/// Plays a capture's part for the JPEG copy of an H.264 camera: idle while nobody watches the
/// copy (its demand file says so), publishing JPEGs at `fps` while someone does.
pub struct JpegCopyFeeder(PublishingThread);

impl JpegCopyFeeder {
    pub fn start(ring_dir: &Path, cam: &str, fps: u32) -> JpegCopyFeeder {
        let camera = CameraId::new(cam).expect("camera name");
        let mut writer = RingWriter::create_jpeg_copy(ring_dir, &camera, RingGeometry::default())
            .expect("create the JPEG copy's ring");
        writer.set_idle(true).expect("idle");
        let demand = DemandFile::open_feed(ring_dir, &camera, Feed::JpegCopy).expect("demand file");
        let interval = Duration::from_secs(1) / fps;
        JpegCopyFeeder(PublishingThread::spawn(move |stopping| {
            let mut out = Vec::new();
            let mut published = 0;
            while !stopping.load(Ordering::Relaxed) {
                if demand.viewers(DEFAULT_CELL_EXPIRY) == 0 {
                    writer.set_idle(true).expect("idle");
                } else {
                    let capture = SystemClock.wall();
                    let timing = FrameTiming {
                        frame_no: writer.next_frame_no(),
                        capture,
                    };
                    insert_timing(super::base_jpeg(), timing, &mut out).expect("timing");
                    writer.publish(&out, capture).expect("publish");
                    published += 1;
                }
                std::thread::sleep(interval);
            }
            published
        }))
    }
}

/// Viewers of `cam`'s JPEG copy across every worker, as its demand file counts them.
pub fn jpeg_copy_viewers(ring_dir: &Path, cam: &str) -> u64 {
    let camera = CameraId::new(cam).expect("camera name");
    DemandFile::open_feed(ring_dir, &camera, Feed::JpegCopy)
        .expect("the copy's demand file")
        .viewers(DEFAULT_CELL_EXPIRY)
}

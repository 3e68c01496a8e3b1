//! The JPEG copy of an H.264 camera (`<cam>.jpeg.ring`): what `/stream`, `/snapshot` and the
//! older WebSocket route serve for it. A thread of its own decodes the camera's access units and
//! compresses each picture to JPEG, but only while the copy's demand file counts viewers, so an
//! H.264 camera nobody watches as JPEG costs one copy of each access unit and nothing more.
//!
//! The main loop hands over every access unit it published, never waiting: when the thread is
//! behind, older units are dropped. The thread keeps the current group of pictures (from its
//! keyframe on) even while idle, so a first viewer gets a picture as soon as the next unit
//! arrives, decoded from that keyframe, rather than after a whole group. After any gap (dropped
//! units, a decoder error) it waits for the next keyframe.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringbuf::frame::{insert_timing, FrameTiming};
use ringbuf::{FrameKind, FrameNo, RingWriter, VideoFormat, WriterState};
use tracing::warn;

use crate::demand::Demand;
use crate::h264::transcode::{TranscodeError, Transcoder};
use crate::stats::LogLimit;
use crate::CaptureError;

/// Access units waiting for the thread before the oldest are dropped. A first viewer's
/// catching up on a long group (hundreds of frames at 1080p) can outlast this: the copy then
/// starts at the next keyframe instead.
const HANDOFF_UNITS: usize = 16;
/// The group of pictures kept while waiting for viewers is given up past either bound (a
/// stream with rare keyframes); the copy then starts at the next keyframe.
const MAX_GROUP_UNITS: usize = 1200;
const MAX_GROUP_BYTES: usize = 64 << 20;
/// How often the copy's ring gets a sign of life while no JPEG is published.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One access unit as the camera's ring has it, with the number and capture time the JPEG made
/// from it carries, so that latency stays measurable end to end.
#[derive(Debug)]
pub struct AccessUnit {
    pub bytes: Vec<u8>,
    pub kind: FrameKind,
    pub timing: FrameTiming,
    /// The camera's nominal rate, for the copy's header.
    pub fps_milli: u32,
}

/// The running copy: hand units to [`JpegCopy::offer`]; dropping it stops the thread, which
/// marks the copy offline.
pub struct JpegCopy {
    handoff: Arc<Handoff>,
    thread: Option<JoinHandle<()>>,
}

impl JpegCopy {
    /// Starts the thread that fills `writer` (the copy's ring, marked idle here) while
    /// `demand` (the copy's demand file) says someone watches.
    pub fn start(
        mut writer: RingWriter,
        demand: Arc<dyn Demand>,
        quality: u8,
    ) -> Result<JpegCopy, CaptureError> {
        writer.set_idle(true)?;
        let copier = Copier {
            writer,
            demand,
            transcoder: Transcoder::new(quality)?,
            group: GroupOfPictures::default(),
            decoded: 0,
            watched: false,
            camera_down: false,
            format: VideoFormat::default(),
            last_heartbeat: Instant::now(),
            out: Vec::new(),
            warnings: LogLimit::new(WARN_EVERY),
        };
        let handoff = Arc::new(Handoff::default());
        let theirs = Arc::clone(&handoff);
        let thread = std::thread::Builder::new()
            .name("jpeg-copy".into())
            .spawn(move || copier.run(&theirs))
            .map_err(|source| CaptureError::Thread {
                what: "JPEG copy",
                source,
            })?;
        Ok(JpegCopy {
            handoff,
            thread: Some(thread),
        })
    }

    /// Hands a published access unit to the thread without waiting for it.
    pub fn offer(&self, unit: AccessUnit) {
        self.handoff.push(unit);
    }

    /// The camera lost its source: the copy says so too, rather than look alive with a frozen
    /// picture, until the camera's units come again.
    pub fn camera_lost(&self) {
        self.handoff.note_camera_lost();
    }
}

impl Drop for JpegCopy {
    fn drop(&mut self) {
        self.handoff.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    units: VecDeque<AccessUnit>,
    /// The camera lost its source since the thread last looked.
    camera_lost: bool,
    closed: bool,
}

/// A bounded queue whose pusher never waits: when it is full, what is in it goes, since a
/// decoder behind by that much must start again at a keyframe anyway.
#[derive(Debug, Default)]
struct Handoff {
    queue: Mutex<Queue>,
    ready: Condvar,
}

enum Popped {
    Unit(AccessUnit),
    Nothing,
    Closed,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, unit: AccessUnit) {
        let mut queue = self.lock();
        if queue.units.len() >= HANDOFF_UNITS {
            queue.units.clear();
        }
        queue.units.push_back(unit);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn note_camera_lost(&self) {
        let mut queue = self.lock();
        queue.units.clear();
        queue.camera_lost = true;
        self.ready.notify_one();
    }

    fn take_camera_lost(&self) -> bool {
        std::mem::take(&mut self.lock().camera_lost)
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn pop(&self, timeout: Duration) -> Popped {
        let queue = self.lock();
        let (mut queue, _) = self
            .ready
            .wait_timeout_while(queue, timeout, |q| {
                q.units.is_empty() && !q.closed && !q.camera_lost
            })
            .unwrap_or_else(|e| e.into_inner());
        if queue.closed {
            return Popped::Closed;
        }
        queue
            .units
            .pop_front()
            .map_or(Popped::Nothing, Popped::Unit)
    }
}

/// What became of a unit added to the group.
#[derive(Debug, PartialEq, Eq)]
enum Added {
    /// A keyframe: the group starts over with it.
    Started,
    Continued,
    /// It cannot be decoded: no keyframe since the last gap.
    Orphan,
}

/// The access units from the latest keyframe on, as long as none is missing.
#[derive(Debug, Default)]
struct GroupOfPictures {
    units: Vec<AccessUnit>,
    bytes: usize,
    /// The number the next unit must carry to follow the last one.
    next: Option<FrameNo>,
}

impl GroupOfPictures {
    fn add(&mut self, unit: AccessUnit) -> Added {
        let follows = self.next == Some(unit.timing.frame_no);
        self.next = Some(FrameNo(unit.timing.frame_no.0 + 1));
        let added = match unit.kind {
            FrameKind::Key => {
                self.clear();
                Added::Started
            }
            FrameKind::Delta if follows && !self.units.is_empty() => Added::Continued,
            FrameKind::Delta => {
                self.clear();
                return Added::Orphan;
            }
        };
        if self.units.len() >= MAX_GROUP_UNITS || self.bytes + unit.bytes.len() > MAX_GROUP_BYTES {
            self.clear();
            return Added::Orphan;
        }
        self.bytes += unit.bytes.len();
        self.units.push(unit);
        added
    }

    fn clear(&mut self) {
        self.units.clear();
        self.bytes = 0;
    }
}

/// The thread's state.
struct Copier {
    writer: RingWriter,
    demand: Arc<dyn Demand>,
    transcoder: Transcoder,
    group: GroupOfPictures,
    /// How many units of the group the decoder has had; 0 when it must start at the keyframe.
    decoded: usize,
    watched: bool,
    /// The copy's ring says the camera's source is down, until its units come again.
    camera_down: bool,
    format: VideoFormat,
    last_heartbeat: Instant,
    out: Vec<u8>,
    warnings: LogLimit,
}

/// Why the thread gives up: another writer took the copy's ring.
struct Lost;

impl Copier {
    fn run(mut self, handoff: &Handoff) {
        loop {
            if handoff.take_camera_lost() && self.camera_lost().is_err() {
                return;
            }
            let step = match handoff.pop(HEARTBEAT_EVERY) {
                Popped::Unit(unit) => self.take(unit, handoff),
                Popped::Nothing => Ok(()),
                Popped::Closed => return,
            };
            if step
                .and_then(|()| self.follow_demand())
                .and_then(|()| self.heartbeat())
                .is_err()
            {
                return;
            }
        }
    }

    /// What the copy had of the stream is gone with the camera's source; its ring says so.
    fn camera_lost(&mut self) -> Result<(), Lost> {
        self.group.clear();
        self.decoded = 0;
        self.camera_down = true;
        let down = self.writer.set_state(WriterState::SourceDown);
        self.note_ring_error(down)
    }

    fn take(&mut self, unit: AccessUnit, handoff: &Handoff) -> Result<(), Lost> {
        if std::mem::take(&mut self.camera_down) && !self.demand.watched() {
            // Back, but nobody watches the copy: idle again (publishing says streaming).
            let idled = self.writer.set_idle(true);
            self.note_ring_error(idled)?;
        }
        if self.group.add(unit) != Added::Continued {
            self.decoded = 0;
        }
        self.follow_demand()?;
        if self.watched {
            self.catch_up(handoff)?;
        }
        Ok(())
    }

    /// Idles the copy when its last viewer leaves; the decoder then starts again at the
    /// group's keyframe when the next one comes.
    fn follow_demand(&mut self) -> Result<(), Lost> {
        let watched = self.demand.watched();
        if self.watched && !watched {
            self.decoded = 0;
            let idled = self.writer.set_idle(true);
            self.note_ring_error(idled)?;
        }
        self.watched = watched;
        Ok(())
    }

    /// Decodes the units of the group the decoder has not had, and publishes the newest
    /// picture only: older ones would only delay it.
    fn catch_up(&mut self, handoff: &Handoff) -> Result<(), Lost> {
        let Some(newest) = self.group.units.len().checked_sub(1) else {
            return Ok(());
        };
        while self.decoded < newest {
            if handoff.is_closed() {
                return Ok(());
            }
            let decoded = self
                .transcoder
                .decode(&self.group.units[self.decoded].bytes);
            if let Err(e) = decoded {
                return self.restart_after(e);
            }
            self.decoded += 1;
        }
        if self.decoded > newest {
            return Ok(());
        }
        self.decoded += 1;
        let unit = &self.group.units[newest];
        let (timing, fps_milli) = (unit.timing, unit.fps_milli);
        let jpeg = match self.transcoder.transcode(&unit.bytes) {
            Ok(Some(jpeg)) => jpeg,
            Ok(None) => return Ok(()),
            Err(e) => return self.restart_after(e),
        };
        let format = VideoFormat {
            width: jpeg.width,
            height: jpeg.height,
            fps_milli,
        };
        if insert_timing(jpeg.bytes, timing, &mut self.out).is_err() {
            // libjpeg-turbo always writes SOI first; nothing to publish if it did not.
            return Ok(());
        }
        if format != self.format {
            self.writer.set_video_format(format);
            self.format = format;
        }
        self.publish(timing)
    }

    fn publish(&mut self, timing: FrameTiming) -> Result<(), Lost> {
        match self.writer.publish(&self.out, timing.capture) {
            Ok(_) => {
                self.last_heartbeat = Instant::now();
                Ok(())
            }
            Err(e @ ringbuf::Error::FrameTooLarge { .. }) => {
                if self.warnings.allow(Instant::now()) {
                    warn!("JPEG copy: {e} (raise --max-frame-bytes or lower --quality)");
                }
                Ok(())
            }
            Err(e) => self.note_ring_error(Err(e)),
        }
    }

    /// The decoder could not take the stream (corrupt input): it starts afresh at the next
    /// keyframe.
    fn restart_after(&mut self, error: TranscodeError) -> Result<(), Lost> {
        if self.warnings.allow(Instant::now()) {
            warn!("JPEG copy: {error}; waiting for the next keyframe (further errors in the next 10 s are not logged)");
        }
        self.group.clear();
        self.decoded = 0;
        if let Err(e) = self.transcoder.reset() {
            warn!("JPEG copy: cannot make a new decoder, so the copy stops: {e}");
            return Err(Lost);
        }
        Ok(())
    }

    fn heartbeat(&mut self) -> Result<(), Lost> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
            return Ok(());
        }
        self.last_heartbeat = Instant::now();
        let beat = self.writer.heartbeat();
        self.note_ring_error(beat)
    }

    /// Another writer holding the copy's ring ends the copy (the camera goes on); anything
    /// else is retried at the next heartbeat.
    fn note_ring_error(&mut self, result: Result<(), ringbuf::Error>) -> Result<(), Lost> {
        match result {
            Ok(()) => Ok(()),
            Err(e @ ringbuf::Error::WriterBusy { .. }) => {
                warn!("JPEG copy: the ring was taken over, so the copy stops: {e}");
                Err(Lost)
            }
            Err(e) => {
                if self.warnings.allow(Instant::now()) {
                    warn!("JPEG copy: the ring file needs replacing, and that failed: {e}");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::RemoteDemand;
    use crate::h264::encoder::{EncoderSettings, H264Encoder, I420};
    use ringbuf::frame::read_timing;
    use ringbuf::{feed_ring_path, CameraId, Feed, RingGeometry, RingReader, WallNanos};

    fn unit(frame_no: u64, kind: FrameKind) -> AccessUnit {
        AccessUnit {
            bytes: vec![0; 10],
            kind,
            timing: FrameTiming {
                frame_no: FrameNo(frame_no),
                capture: WallNanos(frame_no),
            },
            fps_milli: 30_000,
        }
    }

    #[test]
    fn a_group_starts_at_a_keyframe_and_ends_at_a_gap() {
        use FrameKind::{Delta, Key};
        let mut group = GroupOfPictures::default();
        assert_eq!(group.add(unit(1, Delta)), Added::Orphan);
        assert_eq!(group.add(unit(2, Key)), Added::Started);
        assert_eq!(group.add(unit(3, Delta)), Added::Continued);
        assert_eq!(group.units.len(), 2);
        assert_eq!(group.add(unit(5, Delta)), Added::Orphan);
        assert!(group.units.is_empty());
        assert_eq!(group.add(unit(6, Delta)), Added::Orphan);
        assert_eq!(group.add(unit(9, Key)), Added::Started);
        assert_eq!(group.units.len(), 1);
    }

    #[test]
    fn a_full_handoff_drops_the_older_units() {
        let handoff = Handoff::default();
        for n in 0..=HANDOFF_UNITS as u64 {
            handoff.push(unit(n, FrameKind::Delta));
        }
        match handoff.pop(Duration::ZERO) {
            Popped::Unit(unit) => assert_eq!(unit.timing.frame_no, FrameNo(HANDOFF_UNITS as u64)),
            _ => panic!("the newest unit should be kept"),
        }
        assert!(matches!(handoff.pop(Duration::ZERO), Popped::Nothing));
        handoff.close();
        assert!(matches!(handoff.pop(Duration::ZERO), Popped::Closed));
    }

    /// The copy of camera `copy` in `dir`, watched as `demand` says, and a reader of it.
    fn running_copy(dir: &std::path::Path, demand: &Arc<RemoteDemand>) -> (JpegCopy, RingReader) {
        let camera = CameraId::new("copy").unwrap();
        let writer = RingWriter::create_jpeg_copy(dir, &camera, RingGeometry::default()).unwrap();
        let copy = JpegCopy::start(writer, Arc::clone(demand) as Arc<dyn Demand>, 80).unwrap();
        let reader = RingReader::open(&feed_ring_path(dir, &camera, Feed::JpegCopy)).unwrap();
        (copy, reader)
    }

    /// `count` access units of a 64x48 picture, a keyframe every `gop`, numbered from 1.
    fn encoded_units(count: u64, gop: u32) -> Vec<AccessUnit> {
        let settings = EncoderSettings {
            bitrate_kbps: 300,
            gop,
        };
        let mut encoder = H264Encoder::new(settings, 30).unwrap();
        (1..=count)
            .map(|n| {
                let pixels = vec![(n * 8) as u8; 64 * 48 * 3 / 2];
                let bytes = encoder
                    .encode(&I420::new(64, 48, &pixels).unwrap())
                    .unwrap();
                let kind = if ringbuf::h264::is_keyframe(&bytes) {
                    FrameKind::Key
                } else {
                    FrameKind::Delta
                };
                AccessUnit {
                    bytes,
                    kind,
                    timing: FrameTiming {
                        frame_no: FrameNo(n),
                        capture: WallNanos(1_000 + n),
                    },
                    fps_milli: 30_000,
                }
            })
            .collect()
    }

    fn wait_for_frames(reader: &RingReader, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reader.info().frames_published < count {
            assert!(Instant::now() < deadline, "the copy published no JPEG");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn nothing_is_decoded_unwatched_and_a_viewer_gets_the_newest_picture_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let demand = Arc::new(RemoteDemand::default());
        demand.set(false);
        let (copy, mut reader) = running_copy(dir.path(), &demand);
        let mut units = encoded_units(8, 100).into_iter();
        for unit in units.by_ref().take(5) {
            copy.offer(unit);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(reader.info().frames_published, 0, "nobody watches");

        // Mid-group: the sixth unit is decoded from the keyframe, and only it is published.
        demand.set(true);
        copy.offer(units.next().unwrap());
        wait_for_frames(&reader, 1);
        let mut jpeg = Vec::new();
        reader.try_next(&mut jpeg).unwrap().expect("a JPEG");
        let timing = read_timing(&jpeg).expect("the H.264 frame's timing");
        assert_eq!(timing.frame_no, FrameNo(6));
        assert_eq!(timing.capture, WallNanos(1_006));
        assert_eq!(reader.info().format.width, 64);
        assert_eq!(reader.info().frames_published, 1);

        demand.set(false);
        for unit in units {
            copy.offer(unit);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            reader.info().frames_published <= 2,
            "a unit already taken may land"
        );
    }

    #[test]
    fn after_a_gap_the_copy_resumes_at_the_next_keyframe() {
        let dir = tempfile::tempdir().unwrap();
        let demand = Arc::new(RemoteDemand::default());
        let (copy, mut reader) = running_copy(dir.path(), &demand);
        let mut jpeg = Vec::new();
        let mut numbers = Vec::new();
        // Keyframes at 1, 5 and 9; frame 3 never comes, so 4 cannot be decoded.
        for unit in encoded_units(9, 4)
            .into_iter()
            .filter(|u| u.timing.frame_no.0 != 3)
        {
            copy.offer(unit);
            if reader
                .next_timeout(&mut jpeg, Duration::from_millis(500))
                .unwrap()
                .is_some()
            {
                numbers.push(read_timing(&jpeg).unwrap().frame_no.0);
            }
        }
        assert_eq!(numbers, [1, 2, 5, 6, 7, 8, 9]);
        drop(copy);
        assert_eq!(
            reader.writer_status(Duration::from_secs(5)),
            ringbuf::WriterStatus::Offline(ringbuf::OfflineReason::Stopped),
            "a stopped copy is offline"
        );
    }
}

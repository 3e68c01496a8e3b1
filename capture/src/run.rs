//! The capture process: flags in, frames flowing from the source thread through the pipeline to
//! the sink, until SIGTERM/SIGINT or the end of the input.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbuf::demand::DemandFile;
use ringbuf::frame::FrameTiming;
use ringbuf::{CameraId, Codec, Feed, RingGeometry, RingWriter, VideoFormat, WriterState};
use tracing::{info, warn};

use crate::cli::Args;
use crate::demand::{Demand, EitherDemand, IdleRule, RemoteDemand, Transition};
use crate::jpeg_copy::{AccessUnit, JpegCopy};
use crate::notify::{Condition, ServiceManager};
use crate::pipeline::{Pipeline, PipelineOptions, Processed};
use crate::push::{PushSink, PushUrl};
use crate::sink::{RingSink, Sink};
use crate::source::{self, Source, SourceOptions};
use crate::stats::{kbit_per_second, LogLimit, Reporter, Snapshot, Stats};
use crate::supervisor::{self, Control, SourceEvent};
use crate::CaptureError;

/// How often the main loop wakes without frames: heartbeat, signals, demand.
const TICK: Duration = Duration::from_millis(100);
/// How often the "fps, frame size, drops" line is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long to wait for the source thread to let go of the camera when stopping.
const SOURCE_STOP_GRACE: Duration = Duration::from_millis(500);

/// How the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Signal,
    InputFinished,
    /// The source thread ended without saying why (it panicked).
    SourceLost,
    /// Another writer holds the ring now: this capture's frames would reach nobody.
    RingLost,
}

/// Runs capture as the flags say until a signal or the end of the input.
pub fn run(args: &Args, camera: CameraId) -> Result<Ended, CaptureError> {
    args.check_codec_flags()?;
    let shutdown = install_signal_handlers()?;
    let stats = Arc::new(Stats::default());
    let source = source::build(&args.source, SourceOptions::from_args(args, camera.clone()));
    source.preflight()?;
    let (sink, demand) = open_sink(args, &camera, &stats)?;
    let (jpeg_copy, copy_demand) = start_jpeg_copy(args, &camera)?.unzip();
    let pipeline = Pipeline::new(
        args.codec,
        &PipelineOptions {
            camera: camera.to_string(),
            quality: args.quality,
            timestamp: args.timestamp,
            rotate: args.rotate,
            flip: args.flip,
            drop_same_frames: args.drop_same_frames,
        },
    )?;

    info!(
        "camera {camera}: capturing from {} into {}",
        source.describe(),
        sink_description(args, &camera)
    );
    warn_of_unused_picture_flags(args, source.as_ref());
    let fps_milli = source.nominal_fps().unwrap_or(0) * 1000;
    let control = Control::new();
    let (tx, rx) = sync_channel(1);
    let source_thread = supervisor::spawn(source, Arc::clone(&control), tx).map_err(|source| {
        CaptureError::Thread {
            what: "source",
            source,
        }
    })?;

    let mut capture = Capture {
        camera: camera.clone(),
        codec: args.codec,
        control: Arc::clone(&control),
        condition: Condition::Starting,
        status_since: Snapshot::default(),
        sink,
        pipeline,
        stats,
        fps_milli,
        format: VideoFormat::default(),
        corrupt_warnings: LogLimit::new(REPORT_EVERY),
        jpeg_copy,
    };
    let demand = if args.on_demand {
        either_of(demand, copy_demand)
    } else {
        None
    };
    let ended = capture.run_loop(&rx, demand.as_deref(), args, &shutdown);
    // Stopping the copy's thread marks the copy offline with the camera.
    capture.jpeg_copy = None;

    control.stop();
    drop(rx);
    wait_for_thread(source_thread, SOURCE_STOP_GRACE);
    info!("camera {camera}: stopped");
    match ended {
        Ended::SourceLost => Err(CaptureError::SourceThreadLost),
        Ended::RingLost => Err(CaptureError::RingLost(
            capture.sink.lost().unwrap_or_default().to_owned(),
        )),
        other => Ok(other),
    }
}

/// Passed-through frames keep the camera's size, and JPEG ones its rate too: say so rather than
/// ignore the flags silently.
fn warn_of_unused_picture_flags(args: &Args, source: &dyn Source) {
    if !args.source.passes_frames_through() {
        return;
    }
    let unused: Vec<&str> = [
        ("--size", args.size.is_some()),
        // A stream of H.264 may take its nominal rate from --fps.
        (
            "--fps",
            args.fps.is_some() && source.nominal_fps().is_none(),
        ),
    ]
    .into_iter()
    .filter_map(|(flag, unused)| unused.then_some(flag))
    .collect();
    if !unused.is_empty() {
        warn!(
            "{} not applied to {}: its frames are passed on as they come",
            unused.join(" and "),
            source.describe()
        );
    }
}

fn install_signal_handlers() -> Result<Arc<AtomicBool>, CaptureError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(CaptureError::Signals)?;
    }
    Ok(flag)
}

type OpenedSink = (Box<dyn Sink>, Option<Arc<dyn Demand>>);

fn open_sink(
    args: &Args,
    camera: &CameraId,
    stats: &Arc<Stats>,
) -> Result<OpenedSink, CaptureError> {
    if let Some(url) = &args.push {
        let url = PushUrl::parse(url)?;
        if url.camera() != camera {
            return Err(CaptureError::PushCameraMismatch {
                pushed: url.camera().clone(),
                camera: camera.clone(),
            });
        }
        let demand = Arc::new(RemoteDemand::default());
        let sink = PushSink::start(
            url,
            args.push_token.clone(),
            Arc::clone(stats),
            Arc::clone(&demand),
        )?;
        return Ok((Box::new(sink), Some(demand)));
    }
    let writer =
        RingWriter::create_for_codec(&args.ring_dir, camera, ring_geometry(args), args.codec)?;
    let demand: Option<Arc<dyn Demand>> = if args.on_demand {
        Some(ringbuf::demand::DemandFile::open(&args.ring_dir, camera)?)
    } else {
        None
    };
    Ok((Box::new(RingSink::new(writer, Arc::clone(stats))), demand))
}

fn ring_geometry(args: &Args) -> RingGeometry {
    RingGeometry {
        slot_count: args.slots,
        slot_size: args.max_frame_bytes,
    }
}

/// The JPEG copy and its demand.
type StartedCopy = (JpegCopy, Arc<dyn Demand>);

/// An H.264 camera writing a local ring also keeps its JPEG copy (see [`crate::jpeg_copy`]),
/// idle until someone watches it.
fn start_jpeg_copy(args: &Args, camera: &CameraId) -> Result<Option<StartedCopy>, CaptureError> {
    if args.codec != Codec::H264 || args.push.is_some() {
        return Ok(None);
    }
    let writer = RingWriter::create_jpeg_copy(&args.ring_dir, camera, ring_geometry(args))?;
    let demand: Arc<dyn Demand> = DemandFile::open_feed(&args.ring_dir, camera, Feed::JpegCopy)?;
    let copy = JpegCopy::start(writer, Arc::clone(&demand), args.quality)?;
    Ok(Some((copy, demand)))
}

/// An on-demand H.264 camera runs while its own ring or its JPEG copy is watched.
fn either_of(
    camera: Option<Arc<dyn Demand>>,
    jpeg_copy: Option<Arc<dyn Demand>>,
) -> Option<Arc<dyn Demand>> {
    match (camera, jpeg_copy) {
        (Some(camera), Some(copy)) => Some(Arc::new(EitherDemand::new(camera, copy))),
        (camera, copy) => camera.or(copy),
    }
}

fn sink_description(args: &Args, camera: &CameraId) -> String {
    match &args.push {
        Some(url) => format!("the ringcast server at {url}"),
        None => ringbuf::ring_path(&args.ring_dir, camera)
            .display()
            .to_string(),
    }
}

/// Lets the source thread finish if it does so within `grace`; a source stuck in a read is left
/// behind (the process exits around it).
fn wait_for_thread(thread: std::thread::JoinHandle<()>, grace: Duration) {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        warn!("the source did not stop in time; exiting without it");
    }
}

/// Empties the channel while idle: frames already on their way when the pause came are stale
/// and dropped, but the end of the input or of the source thread still ends capture.
fn drain_while_idle(frames: &Receiver<SourceEvent>, sink: &mut dyn Sink) -> Option<Ended> {
    loop {
        match frames.try_recv() {
            // A stream opened just before the pause is being closed: its rate does not matter.
            Ok(
                SourceEvent::Frame(_) | SourceEvent::Broken { .. } | SourceEvent::Negotiated { .. },
            ) => {}
            Ok(SourceEvent::Lost) => sink.set_state(WriterState::SourceDown),
            Ok(SourceEvent::Finished) => return Some(Ended::InputFinished),
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => return Some(Ended::SourceLost),
        }
    }
}

struct Capture {
    camera: CameraId,
    codec: Codec,
    /// The source thread's controls.
    control: Arc<Control>,
    condition: Condition,
    /// Counters when the last status was made, for its frame rate and bitrate.
    status_since: Snapshot,
    sink: Box<dyn Sink>,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    fps_milli: u32,
    format: VideoFormat,
    corrupt_warnings: LogLimit,
    jpeg_copy: Option<JpegCopy>,
}

impl Capture {
    fn run_loop(
        &mut self,
        frames: &Receiver<SourceEvent>,
        demand: Option<&dyn Demand>,
        args: &Args,
        shutdown: &AtomicBool,
    ) -> Ended {
        let mut idle_rule = IdleRule::new(args.idle_after.0, Instant::now());
        let mut reporter = Reporter::new(self.codec, Instant::now());
        let mut manager = ServiceManager::from_env(Instant::now());
        manager.ready(&self.status(Duration::ZERO));
        loop {
            manager.tick(Instant::now(), |since| self.status(since));
            if shutdown.load(Relaxed) {
                return Ended::Signal;
            }
            if self.sink.lost().is_some() {
                return Ended::RingLost;
            }
            self.sink.heartbeat();
            let idle = match demand {
                Some(demand) => match self.follow_demand(demand, &mut idle_rule, frames) {
                    Ok(idle) => idle,
                    Err(ended) => return ended,
                },
                None => false,
            };
            if !idle {
                match frames.recv_timeout(TICK) {
                    Ok(SourceEvent::Frame(frame)) => self.handle(&frame),
                    Ok(SourceEvent::Broken { bytes }) => {
                        self.count_corrupt(&format!(
                            "a broken piece of the stream ({bytes} bytes)"
                        ));
                        self.restart_at_keyframe();
                    }
                    Ok(SourceEvent::Negotiated { fps }) => {
                        self.fps_milli = fps.saturating_mul(1000)
                    }
                    Ok(SourceEvent::Lost) => {
                        self.condition = Condition::SourceDown;
                        self.sink.set_state(WriterState::SourceDown);
                        if let Some(copy) = &self.jpeg_copy {
                            copy.camera_lost();
                        }
                        self.restart_at_keyframe();
                    }
                    Ok(SourceEvent::Finished) => return Ended::InputFinished,
                    Err(RecvTimeoutError::Disconnected) => return Ended::SourceLost,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            if reporter.seconds_since_report(Instant::now()) >= REPORT_EVERY.as_secs_f64() {
                let line = reporter.line(self.stats.snapshot(), Instant::now());
                if idle {
                    info!("idle, nobody is watching; {line}");
                } else {
                    info!("{line}");
                }
            }
        }
    }

    /// Pauses or resumes the source as demand says; while idle, waits (up to one tick) for
    /// demand to change. Returns whether capture is idle, or how capture ended meanwhile.
    fn follow_demand(
        &mut self,
        demand: &dyn Demand,
        idle_rule: &mut IdleRule,
        frames: &Receiver<SourceEvent>,
    ) -> Result<bool, Ended> {
        let generation = demand.generation();
        match idle_rule.update(demand.watched(), Instant::now()) {
            Some(Transition::GoIdle) => {
                info!("nobody is watching: idling");
                self.control.pause();
                self.condition = Condition::Idle;
                self.sink.set_state(WriterState::Idle);
            }
            Some(Transition::Resume) => {
                info!("a viewer arrived: capturing");
                self.restart_at_keyframe();
                self.control.resume();
                self.condition = Condition::Starting;
                self.sink.set_state(WriterState::Streaming);
            }
            None => {}
        }
        if !idle_rule.is_idle() {
            return Ok(false);
        }
        if let Some(ended) = drain_while_idle(frames, self.sink.as_mut()) {
            return Err(ended);
        }
        demand.wait_for_change(generation, TICK);
        Ok(true)
    }

    fn handle(&mut self, captured: &source::Captured) {
        let frame_no = self.sink.next_frame_no();
        match self.pipeline.process(captured, frame_no) {
            Processed::Publish {
                frame,
                kind,
                picture,
            } => {
                let format = VideoFormat {
                    width: picture.width,
                    height: picture.height,
                    // The rate the source aims for or agreed, else what the stream states.
                    fps_milli: match self.fps_milli {
                        0 => picture.fps_milli.unwrap_or(0),
                        fps_milli => fps_milli,
                    },
                };
                if format != self.format {
                    info!("picture is {}x{}", format.width, format.height);
                    self.sink.set_video_format(format);
                    self.format = format;
                }
                let published = self.sink.publish(frame, captured.capture, kind);
                if let (true, Some(copy)) = (published, &self.jpeg_copy) {
                    copy.offer(AccessUnit {
                        bytes: frame.to_vec(),
                        kind,
                        timing: FrameTiming {
                            frame_no,
                            capture: captured.capture,
                        },
                        fps_milli: format.fps_milli,
                    });
                }
                self.condition = Condition::Streaming;
                if !published {
                    // Frames after one that is missing would not decode until the next keyframe.
                    self.restart_at_keyframe();
                }
            }
            Processed::Unchanged => {
                self.stats.unchanged.fetch_add(1, Relaxed);
            }
            Processed::BeforeKeyframe => {
                self.stats.before_keyframe.fetch_add(1, Relaxed);
            }
            Processed::Corrupt(reason) => {
                self.count_corrupt(&format!("a corrupt frame: {reason}"));
                // The H.264 frames after a dropped one refer to it.
                self.restart_at_keyframe();
            }
        }
    }

    /// What is published next must begin at a keyframe (the stream restarts, or a frame went
    /// missing): the pipeline holds back what cannot be decoded, and a source that encodes is
    /// asked for a keyframe at once rather than at the end of its group of pictures.
    fn restart_at_keyframe(&mut self) {
        // Every JPEG is a keyframe.
        if self.codec == Codec::H264 {
            self.pipeline.restart();
            self.control.request_keyframe();
        }
    }

    /// The line `systemctl status` shows; the frame and bit rates are over `since`.
    fn status(&mut self, since: Duration) -> String {
        let now = self.stats.snapshot();
        let last = std::mem::replace(&mut self.status_since, now);
        let camera = &self.camera;
        let condition = self.condition;
        if condition != Condition::Streaming || since.is_zero() {
            return format!("{camera}: {condition}");
        }
        let VideoFormat { width, height, .. } = self.format;
        let secs = since.as_secs_f64();
        let fps = (now.published - last.published) as f64 / secs;
        let line = format!("{camera}: {condition} {width}x{height} at {fps:.1} fps");
        match self.codec {
            Codec::Jpeg => line,
            Codec::H264 => {
                let kbit_s = kbit_per_second(now.bytes - last.bytes, secs);
                format!("{line}, H.264 at {kbit_s:.0} kbit/s")
            }
        }
    }

    fn count_corrupt(&mut self, what: &str) {
        self.stats.corrupt.fetch_add(1, Relaxed);
        if self.corrupt_warnings.allow(Instant::now()) {
            warn!("dropped {what} (further ones are counted in the periodic line)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::{OfflineReason, RingReader, WriterStatus};

    fn ring_sink(dir: &std::path::Path) -> (RingSink, RingReader) {
        let camera = CameraId::new("idle").unwrap();
        let geometry = RingGeometry {
            slot_count: 2,
            slot_size: 4096,
        };
        let writer = RingWriter::create(dir, &camera, geometry).unwrap();
        let reader = RingReader::open(&ringbuf::ring_path(dir, &camera)).unwrap();
        (RingSink::new(writer, Arc::default()), reader)
    }

    #[test]
    fn draining_while_idle_keeps_what_ends_capture_or_marks_the_camera_down() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, reader) = ring_sink(dir.path());
        let (tx, rx) = sync_channel(4);
        tx.send(SourceEvent::Broken { bytes: 3 }).unwrap();
        tx.send(SourceEvent::Lost).unwrap();
        assert_eq!(drain_while_idle(&rx, &mut sink), None);
        assert_eq!(
            reader.writer_status(Duration::from_secs(5)),
            WriterStatus::Offline(OfflineReason::SourceDown)
        );
        tx.send(SourceEvent::Finished).unwrap();
        assert_eq!(drain_while_idle(&rx, &mut sink), Some(Ended::InputFinished));
        drop(tx);
        assert_eq!(drain_while_idle(&rx, &mut sink), Some(Ended::SourceLost));
    }
}

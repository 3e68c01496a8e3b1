//! The capture process: flags in, frames flowing from the source thread through the pipeline to
//! the sink, until SIGTERM/SIGINT or the end of the input.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbuf::{CameraId, RingGeometry, RingWriter, VideoFormat, WriterState};
use tracing::{info, warn};

use crate::cli::Args;
use crate::demand::{Demand, IdleRule, RemoteDemand, Transition};
use crate::notify::{Condition, ServiceManager};
use crate::pipeline::{Pipeline, PipelineOptions, Processed};
use crate::push::{PushSink, PushUrl};
use crate::sink::{RingSink, Sink};
use crate::source::{self, SourceOptions};
use crate::stats::{LogLimit, Reporter, Stats};
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
    let shutdown = install_signal_handlers()?;
    let stats = Arc::new(Stats::default());
    let source = source::build(&args.source, SourceOptions::from_args(args, camera.clone()));
    source.preflight()?;
    let (sink, demand) = open_sink(args, &camera, &stats)?;
    let pipeline = Pipeline::new(&PipelineOptions {
        camera: camera.to_string(),
        quality: args.quality,
        timestamp: args.timestamp,
        rotate: args.rotate,
        flip: args.flip,
        drop_same_frames: args.drop_same_frames,
    })?;

    info!(
        "camera {camera}: capturing from {} into {}",
        source.describe(),
        sink_description(args, &camera)
    );
    if args.source.passes_frames_through() && (args.size.is_some() || args.fps.is_some()) {
        warn!(
            "--size and --fps do not apply to {}: its frames are passed on as they come",
            source.describe()
        );
    }
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
        condition: Condition::Starting,
        status_published: 0,
        sink,
        pipeline,
        stats,
        fps_milli,
        format: VideoFormat::default(),
        corrupt_warnings: LogLimit::new(REPORT_EVERY),
    };
    let demand = if args.on_demand { demand } else { None };
    let ended = capture.run_loop(&rx, &control, demand.as_deref(), args, &shutdown);

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
    let geometry = RingGeometry {
        slot_count: args.slots,
        slot_size: args.max_frame_bytes,
    };
    let writer = RingWriter::create(&args.ring_dir, camera, geometry)?;
    let demand: Option<Arc<dyn Demand>> = if args.on_demand {
        Some(ringbuf::demand::DemandFile::open(&args.ring_dir, camera)?)
    } else {
        None
    };
    Ok((Box::new(RingSink::new(writer, Arc::clone(stats))), demand))
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
    condition: Condition,
    /// Frames published when the last status was made, for its frame rate.
    status_published: u64,
    sink: Box<dyn Sink>,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    fps_milli: u32,
    format: VideoFormat,
    corrupt_warnings: LogLimit,
}

impl Capture {
    fn run_loop(
        &mut self,
        frames: &Receiver<SourceEvent>,
        control: &Control,
        demand: Option<&dyn Demand>,
        args: &Args,
        shutdown: &AtomicBool,
    ) -> Ended {
        let mut idle_rule = IdleRule::new(args.idle_after.0, Instant::now());
        let mut reporter = Reporter::new(Instant::now());
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
                Some(demand) => match self.follow_demand(demand, &mut idle_rule, control, frames) {
                    Ok(idle) => idle,
                    Err(ended) => return ended,
                },
                None => false,
            };
            if !idle {
                match frames.recv_timeout(TICK) {
                    Ok(SourceEvent::Frame(frame)) => self.handle(&frame),
                    Ok(SourceEvent::Broken { bytes }) => {
                        self.count_corrupt(&format!("a broken piece of the stream ({bytes} bytes)"))
                    }
                    Ok(SourceEvent::Negotiated { fps }) => {
                        self.fps_milli = fps.saturating_mul(1000)
                    }
                    Ok(SourceEvent::Lost) => {
                        self.condition = Condition::SourceDown;
                        self.sink.set_state(WriterState::SourceDown);
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
        control: &Control,
        frames: &Receiver<SourceEvent>,
    ) -> Result<bool, Ended> {
        let generation = demand.generation();
        match idle_rule.update(demand.watched(), Instant::now()) {
            Some(Transition::GoIdle) => {
                info!("nobody is watching: idling");
                control.pause();
                self.condition = Condition::Idle;
                self.sink.set_state(WriterState::Idle);
            }
            Some(Transition::Resume) => {
                info!("a viewer arrived: capturing");
                control.resume();
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

    fn handle(&mut self, frame: &source::Captured) {
        let frame_no = self.sink.next_frame_no();
        match self.pipeline.process(frame, frame_no) {
            Processed::Publish {
                jpeg,
                width,
                height,
            } => {
                let format = VideoFormat {
                    width,
                    height,
                    fps_milli: self.fps_milli,
                };
                if format != self.format {
                    info!("picture is {width}x{height}");
                    self.sink.set_video_format(format);
                    self.format = format;
                }
                self.sink.publish(jpeg, frame.capture);
                self.condition = Condition::Streaming;
            }
            Processed::Unchanged => {
                self.stats.unchanged.fetch_add(1, Relaxed);
            }
            Processed::Corrupt(reason) => self.count_corrupt(&format!("a corrupt frame: {reason}")),
        }
    }

    /// The line `systemctl status` shows; the frame rate is over `since`.
    fn status(&mut self, since: Duration) -> String {
        let published = self.stats.snapshot().published;
        let frames = published - std::mem::replace(&mut self.status_published, published);
        let camera = &self.camera;
        let condition = self.condition;
        if condition != Condition::Streaming || since.is_zero() {
            return format!("{camera}: {condition}");
        }
        let VideoFormat { width, height, .. } = self.format;
        let fps = frames as f64 / since.as_secs_f64();
        format!("{camera}: {condition} {width}x{height} at {fps:.1} fps")
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

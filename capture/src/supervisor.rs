//! The source thread: opens the source, pulls frames into a channel, and on failure retries with
//! backoff; while paused (on-demand, nobody watching) it holds no camera open. It runs on its own
//! thread so that a source stuck in a read can never keep the process from stopping.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::source::{Captured, FrameStream, Pulled, Source};
use crate::SourceError;

/// Messages from the source thread to the pipeline.
#[derive(Debug)]
pub enum SourceEvent {
    Frame(Captured),
    /// The source opened and agreed on this frame rate with the camera.
    Negotiated {
        fps: u32,
    },
    /// A piece of the stream that was not a whole frame, dropped by the source.
    Broken {
        bytes: usize,
    },
    /// The source failed and is being retried: readers should see the camera offline until the
    /// next frame.
    Lost,
    /// The input is finished for good (stdin closed): capture should end.
    Finished,
}

#[derive(Debug, Default)]
struct ControlState {
    paused: bool,
    stopped: bool,
    keyframe_wanted: bool,
}

/// How the pipeline tells the source thread to pause, resume or stop, and asks it for a
/// keyframe.
#[derive(Debug, Default)]
pub struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl Control {
    pub fn new() -> Arc<Control> {
        Arc::new(Control::default())
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        // A poisoned lock only means a thread panicked while holding two booleans; they are
        // still meaningful.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut ControlState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    pub fn pause(&self) {
        self.update(|s| s.paused = true);
    }

    pub fn resume(&self) {
        self.update(|s| s.paused = false);
    }

    pub fn stop(&self) {
        self.update(|s| s.stopped = true);
    }

    pub fn request_keyframe(&self) {
        self.update(|s| s.keyframe_wanted = true);
    }

    /// Whether a keyframe was asked for since the last call.
    fn take_keyframe_request(&self) -> bool {
        std::mem::take(&mut self.lock().keyframe_wanted)
    }

    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    fn should_pull(&self) -> bool {
        let state = self.lock();
        !state.paused && !state.stopped
    }

    /// Waits while paused; `false` once stopped.
    fn wait_while_paused(&self) -> bool {
        let mut state = self.lock();
        while state.paused && !state.stopped {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !state.stopped
    }

    /// Sleeps `delay`, or less if paused or stopped meanwhile.
    fn sleep(&self, delay: Duration) {
        let state = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(state, delay, |s| !s.paused && !s.stopped);
    }
}

/// Starts the source thread.
pub fn spawn(
    source: Box<dyn Source>,
    control: Arc<Control>,
    frames: SyncSender<SourceEvent>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || supervise(source, &control, &frames))
}

enum Outcome {
    Paused,
    Stopped,
    Failed(SourceError),
    Finished,
}

fn supervise(mut source: Box<dyn Source>, control: &Control, frames: &SyncSender<SourceEvent>) {
    let what = source.describe();
    let mut backoff = Backoff::default();
    while control.wait_while_paused() {
        let outcome = match source.open() {
            Ok(stream) => {
                info!("{what}: opened, capturing");
                if let Some(fps) = stream.negotiated_fps() {
                    if frames.send(SourceEvent::Negotiated { fps }).is_err() {
                        return;
                    }
                }
                pull(stream, control, frames, &mut backoff)
            }
            Err(e) => Outcome::Failed(e),
        };
        match outcome {
            Outcome::Paused => info!("{what}: released, nobody is watching"),
            Outcome::Stopped => return,
            Outcome::Finished => {
                info!("{what}: input finished");
                let _ = frames.send(SourceEvent::Finished);
                return;
            }
            Outcome::Failed(e) => {
                if frames.send(SourceEvent::Lost).is_err() {
                    return;
                }
                let delay = backoff.next_delay();
                warn!("{what}: {e}; retrying in {} s", delay.as_secs_f32().round());
                control.sleep(delay);
            }
        }
    }
}

fn pull(
    mut stream: Box<dyn FrameStream>,
    control: &Control,
    frames: &SyncSender<SourceEvent>,
    backoff: &mut Backoff,
) -> Outcome {
    loop {
        if !control.should_pull() {
            return if control.is_stopped() {
                Outcome::Stopped
            } else {
                Outcome::Paused
            };
        }
        if control.take_keyframe_request() {
            stream.request_keyframe();
        }
        match stream.next_frame() {
            Ok(Some(Pulled::Frame(frame))) => {
                backoff.reset();
                if frames.send(SourceEvent::Frame(frame)).is_err() {
                    return Outcome::Stopped;
                }
            }
            Ok(Some(Pulled::Broken { bytes })) => {
                if frames.send(SourceEvent::Broken { bytes }).is_err() {
                    return Outcome::Stopped;
                }
            }
            Ok(None) => {}
            Err(SourceError::Finished) => return Outcome::Finished,
            Err(e) => return Outcome::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A camera that agrees on 12 fps and then sends nothing.
    struct Quiet;

    impl Source for Quiet {
        fn describe(&self) -> String {
            "a quiet camera".into()
        }

        fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
            Ok(Box::new(QuietStream))
        }
    }

    struct QuietStream;

    impl FrameStream for QuietStream {
        fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
            std::thread::sleep(Duration::from_millis(10));
            Ok(None)
        }

        fn negotiated_fps(&self) -> Option<u32> {
            Some(12)
        }
    }

    #[test]
    fn the_negotiated_frame_rate_is_reported_when_the_source_opens() {
        let control = Control::new();
        let (tx, rx) = sync_channel(1);
        let thread = spawn(Box::new(Quiet), Arc::clone(&control), tx).unwrap();
        let event = rx.recv_timeout(Duration::from_secs(20));
        control.stop();
        thread.join().unwrap();
        assert!(
            matches!(event, Ok(SourceEvent::Negotiated { fps: 12 })),
            "{event:?}"
        );
    }
}

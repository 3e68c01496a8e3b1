//! `--push`: frames to a WebSocket ingest receiver, newest-wins, reconnecting, following 1/0.

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use ringbuf::frame::read_timing;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::Message;

#[derive(Default)]
struct Shared {
    frames: Mutex<Vec<Vec<u8>>>,
    authorization: Mutex<Option<String>>,
    /// A demand message (`1` or `0`) waiting to be sent to the pusher.
    outgoing: Mutex<Option<&'static [u8]>>,
    stop: AtomicBool,
}

/// An in-test ingest endpoint: accepts one WebSocket at a time and keeps the binary messages.
struct Receiver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// `read_pause`: how long to sleep after each message (a slow link); `rcvbuf`: the socket's
    /// receive buffer, kept small for a slow receiver so the pressure reaches the pusher soon.
    fn start(port: u16, read_pause: Duration, rcvbuf: Option<usize>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        if let Some(size) = rcvbuf {
            nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::RcvBuf, &size)
                .unwrap();
        }
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((socket, _)) => serve(socket, &shared, read_pause),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Receiver {
            shared,
            thread: Some(thread),
        }
    }

    fn frame_count(&self) -> usize {
        self.shared.frames.lock().unwrap().len()
    }

    fn wait_frames(&self, count: usize) {
        wait_for(&format!("{count} pushed frames"), || {
            self.frame_count() >= count
        });
    }

    fn send_demand(&self, message: &'static [u8]) {
        *self.shared.outgoing.lock().unwrap() = Some(message);
    }

    fn kill(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

// tungstenite's handshake callback signature fixes the (large) error type.
#[allow(clippy::result_large_err)]
fn serve(socket: TcpStream, shared: &Shared, read_pause: Duration) {
    socket.set_nonblocking(false).unwrap();
    let record_auth = |request: &Request, response: Response| {
        let auth = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        *shared.authorization.lock().unwrap() = auth.map(String::from);
        Ok(response)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(socket, record_auth) else {
        return;
    };
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(message) = shared.outgoing.lock().unwrap().take() {
            if ws.send(Message::binary(message.to_vec())).is_err() {
                return;
            }
        }
        match ws.read() {
            Ok(Message::Binary(jpeg)) => {
                shared.frames.lock().unwrap().push(jpeg.to_vec());
                std::thread::sleep(read_pause);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn push_capture(port: u16, extra: &[&str]) -> Running {
    let url = format!("ws://127.0.0.1:{port}/ingest/pushed");
    let mut args = vec!["--camera", "pushed", "--push", &url];
    args.extend_from_slice(extra);
    capture(&args)
}

#[test]
fn pushed_frames_arrive_intact_with_the_token_and_pushing_resumes_after_the_receiver_restarts() {
    let port = free_port();
    let mut receiver = Receiver::start(port, Duration::ZERO, None);
    let _capture = push_capture(
        port,
        &["--push-token", "s3cret", "--size", "320x240", "--fps", "15"],
    );
    receiver.wait_frames(10);
    {
        let frames = receiver.shared.frames.lock().unwrap();
        let mut last = 0;
        for jpeg in frames.iter() {
            let timing = read_timing(jpeg).expect("pushed frame carries its timing");
            assert!(timing.frame_no.0 > last, "frame numbers not increasing");
            last = timing.frame_no.0;
            let image = decode(jpeg);
            assert_eq!((image.width, image.height), (320, 240));
        }
    }
    assert_eq!(
        receiver.shared.authorization.lock().unwrap().as_deref(),
        Some("Bearer s3cret")
    );

    receiver.kill();
    let restarted = Receiver::start(port, Duration::ZERO, None);
    restarted.wait_frames(3);
    assert!(decode(&restarted.shared.frames.lock().unwrap()[2]).width == 320);
}

#[test]
fn a_slow_receiver_makes_the_pusher_drop_frames_not_grow_its_memory() {
    let port = free_port();
    let receiver = Receiver::start(port, Duration::from_millis(100), Some(8 << 10));
    let capture = push_capture(
        port,
        &["--size", "1280x720", "--fps", "30", "--quality", "95"],
    );
    receiver.wait_frames(30);
    let rss = rss_kib(capture.pid());
    let frames = receiver.shared.frames.lock().unwrap();
    let numbers: Vec<u64> = frames
        .iter()
        .map(|f| read_timing(f).unwrap().frame_no.0)
        .collect();
    let skipped: u64 = numbers.windows(2).map(|w| w[1] - w[0] - 1).sum();
    assert!(
        skipped > 0,
        "no frames were dropped for a slow receiver: {numbers:?}"
    );
    assert!(rss < 150 * 1024, "pusher memory grew to {rss} KiB");
    for jpeg in frames.iter() {
        decode(jpeg);
    }
}

#[test]
fn the_servers_demand_messages_stop_and_restart_an_on_demand_pusher() {
    let port = free_port();
    let receiver = Receiver::start(port, Duration::ZERO, None);
    let _capture = push_capture(
        port,
        &[
            "--size",
            "160x120",
            "--fps",
            "20",
            "--on-demand",
            "--idle-after",
            "0.2",
        ],
    );
    receiver.wait_frames(3);
    receiver.send_demand(b"0");
    // Once idle, nothing more arrives.
    let mut previous = receiver.frame_count();
    wait_for("frames to stop after `0`", || {
        std::thread::sleep(Duration::from_millis(600));
        let now = receiver.frame_count();
        let stopped = now == previous;
        previous = now;
        stopped
    });
    receiver.send_demand(b"1");
    receiver.wait_frames(previous + 3);
}

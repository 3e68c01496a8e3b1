//! One connection: read the request head, pick the route, answer or hand over to a stream.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::net::TcpStream;
use ringbuf::CameraId;

use crate::http::{self, error_response, response, HeadError, Request, Status};
use crate::hub::{bump, Camera, CameraState, Follower, Frame, MJPEG_BOUNDARY};
use crate::viewer::{self, PartHeads, Protocol, StreamSettings};
use crate::worker::{Gauged, StreamingGuard, Worker};
use crate::{ingest, metrics, web, websocket};

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Index,
    Asset(&'a str),
    Cameras,
    CamerasList,
    Healthz,
    Metrics,
    /// `/ws/{cam}`: the camera's frames as its ring has them (JPEG, or H.264 access units).
    WebSocket(&'a str),
    /// `/websocket_handler_site/{cam}`, the older server's route: JPEG frames only.
    LegacyWebSocket(&'a str),
    Mjpeg(&'a str),
    Snapshot(&'a str),
    Ingest(&'a str),
    NotFound,
}

pub fn route(path: &str) -> Route<'_> {
    let with_prefix = |prefix: &str, suffix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .filter(|cam| !cam.is_empty() && !cam.contains('/'))
    };
    match path {
        "/" | "/index.html" => return Route::Index,
        "/api/cameras" => return Route::Cameras,
        "/cameras_list" => return Route::CamerasList,
        "/healthz" => return Route::Healthz,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if let Some(cam) = with_prefix("/ws/", "") {
        return Route::WebSocket(cam);
    }
    if let Some(cam) = with_prefix("/websocket_handler_site/", "") {
        return Route::LegacyWebSocket(cam);
    }
    if let Some(file) = with_prefix("/assets/", "") {
        return Route::Asset(file);
    }
    if let Some(cam) = with_prefix("/stream/", ".mjpg") {
        return Route::Mjpeg(cam);
    }
    if let Some(cam) = with_prefix("/snapshot/", ".jpg") {
        return Route::Snapshot(cam);
    }
    if let Some(cam) =
        with_prefix("/ingest/", "").or_else(|| with_prefix("/video_remote_source/", ""))
    {
        return Route::Ingest(cam);
    }
    Route::NotFound
}

pub async fn handle_connection(worker: Rc<Worker>, mut stream: TcpStream, peer: IpAddr) {
    // Held for the whole connection, streaming included.
    let Some(_address) = worker.admit_address(peer) else {
        // Closed at once, without waiting for the rest of its input as other refusals do: that
        // wait would let the address hold yet more sockets.
        let reason = format!("too many connections from {peer}");
        let _ = http::send_and_close(
            &mut stream,
            error_response(Status::ServiceUnavailable, &reason),
        )
        .await;
        return;
    };
    let reading = Gauged::new(&worker.counters.reading_heads);
    let head = http::read_head(&mut stream).await;
    drop(reading);
    let (request, already) = match head {
        Ok(parsed) => parsed,
        Err(HeadError::TooLarge) => {
            return refuse(
                &worker,
                stream,
                Status::HeadersTooLarge,
                "request head too large",
            )
            .await
        }
        Err(HeadError::Malformed(why)) => {
            return refuse(
                &worker,
                stream,
                Status::BadRequest,
                &format!("malformed request: {why}"),
            )
            .await
        }
        Err(e) => {
            if matches!(e, HeadError::Timeout) {
                bump(&worker.counters.head_timeouts, 1);
            }
            tracing::debug!("{e}");
            return;
        }
    };
    dispatch(worker, stream, request, already).await;
}

/// Answers with an error status and closes; a client's error (4xx) counts as a bad request.
pub(crate) async fn refuse(worker: &Worker, mut stream: TcpStream, status: Status, reason: &str) {
    if status.is_client_error() {
        bump(&worker.counters.bad_requests, 1);
    }
    let _ = http::refuse_and_close(&mut stream, error_response(status, reason)).await;
}

async fn reply(mut stream: TcpStream, content_type: &str, body: &[u8]) {
    let _ = http::send_and_close(&mut stream, response(Status::Ok, content_type, "", body)).await;
}

/// Compares tokens in time independent of where they differ.
fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a WebSocket may be opened for the page the request comes from: one served by this
/// server (its origin names the host the request was sent to), one of `--allowed-origins`, or no
/// page at all (clients that are not browsers send no Origin). Browsers let any page open a
/// WebSocket anywhere, with the user's cookies and any token it knows; this keeps another site's
/// page from watching the cameras through a visitor's browser.
fn origin_allowed(config: &crate::cli::WorkerConfig, request: &Request) -> bool {
    let Some(origin) = request.origin.as_deref() else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let same_host = origin
        .split_once("://")
        .map(|(_, host)| host)
        .zip(request.host.as_deref())
        .is_some_and(|(origin_host, host)| origin_host == host.trim().to_ascii_lowercase());
    same_host || config.allowed_origins.contains(&origin)
}

fn authorized(expected: Option<&str>, request: &Request) -> bool {
    expected.is_none()
        || expected.is_some_and(|token| token_matches(token, request.presented_token().as_deref()))
}

async fn dispatch(worker: Rc<Worker>, stream: TcpStream, request: Request, already: Vec<u8>) {
    let path = request.path.clone();
    let route = route(&path);
    if route == Route::NotFound {
        return refuse(
            &worker,
            stream,
            Status::NotFound,
            &format!("no route {}", request.path),
        )
        .await;
    }
    if request.method != "GET" {
        return refuse(
            &worker,
            stream,
            Status::MethodNotAllowed,
            "only GET is served",
        )
        .await;
    }
    if matches!(route, Route::Ingest(_))
        && worker.config.ingest_token.is_none()
        && !worker.config.allow_open_ingest
    {
        return refuse(
            &worker,
            stream,
            Status::Unauthorized,
            "ingest is closed: the server has no --ingest-token (nor --allow-open-ingest)",
        )
        .await;
    }
    let needed = match route {
        Route::Healthz | Route::Asset(_) => None,
        Route::Ingest(_) => worker.config.ingest_token.as_deref(),
        _ => worker.config.token.as_deref(),
    };
    if !authorized(needed, &request) {
        return refuse(
            &worker,
            stream,
            Status::Unauthorized,
            "missing or wrong token",
        )
        .await;
    }
    if matches!(
        route,
        Route::WebSocket(_) | Route::LegacyWebSocket(_) | Route::Ingest(_)
    ) && !origin_allowed(&worker.config, &request)
    {
        let origin = request.origin.as_deref().unwrap_or_default();
        return refuse(
            &worker,
            stream,
            Status::Forbidden,
            &format!("WebSocket from a page of {origin} refused (see --allowed-origins)"),
        )
        .await;
    }
    if matches!(route, Route::Cameras | Route::CamerasList) {
        // Listings are fresh on every worker, not as of its last periodic scan.
        worker.hub.rescan();
    }
    match route {
        Route::Healthz => reply(stream, "text/plain", b"ok\n").await,
        Route::Index => serve_file(stream, &request, &web::INDEX).await,
        Route::Asset(file) => match web::asset(file) {
            Some(asset) => serve_file(stream, &request, asset).await,
            None => {
                refuse(
                    &worker,
                    stream,
                    Status::NotFound,
                    &format!("no asset {file:?}"),
                )
                .await
            }
        },
        Route::Cameras => {
            let body = metrics::cameras_json(&worker.hub.cameras());
            reply(stream, "application/json", body.as_bytes()).await
        }
        Route::CamerasList => {
            let body = metrics::cameras_list_json(&worker.hub.cameras());
            reply(stream, "application/json", body.as_bytes()).await
        }
        Route::Metrics => {
            let body = metrics::prometheus(&worker, &worker.snapshots);
            reply(stream, "text/plain; version=0.0.4", body.as_bytes()).await
        }
        Route::Snapshot(cam) => snapshot(worker, stream, cam).await,
        Route::WebSocket(cam) => {
            websocket_viewer(worker, stream, request, already, cam, Wants::AnyCodec).await
        }
        Route::LegacyWebSocket(cam) => {
            websocket_viewer(worker, stream, request, already, cam, Wants::Jpeg).await
        }
        Route::Mjpeg(cam) => mjpeg_viewer(worker, stream, &request, already, cam).await,
        Route::Ingest(cam) => match CameraId::new(cam) {
            Ok(id) => ingest::serve(worker, stream, request, already, id).await,
            Err(e) => refuse(&worker, stream, Status::BadRequest, &e.to_string()).await,
        },
        Route::NotFound => {}
    }
}

async fn serve_file(mut stream: TcpStream, request: &Request, file: &web::Asset) {
    let answer = http::revalidated_response(
        file.content_type,
        file.etag(),
        request.if_none_match.as_deref(),
        file.body,
    );
    let _ = http::send_and_close(&mut stream, answer).await;
}

async fn unknown_camera(worker: &Worker, stream: TcpStream, cam: &str) {
    refuse(
        worker,
        stream,
        Status::NotFound,
        &format!("no camera {cam:?}"),
    )
    .await
}

/// What a route can send: the camera's frames whatever they are, or JPEG only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wants {
    AnyCodec,
    Jpeg,
}

/// What route `cam` names: the camera, or for a route that sends JPEG, its JPEG feed (for an
/// H.264 camera, the JPEG copy its capture makes while someone watches). If there is none,
/// answers the request with why not.
async fn camera_for(
    worker: &Worker,
    stream: TcpStream,
    cam: &str,
    wants: Wants,
) -> Option<(Rc<Camera>, TcpStream)> {
    let Some(camera) = worker.hub.camera(cam) else {
        unknown_camera(worker, stream, cam).await;
        return None;
    };
    if wants == Wants::AnyCodec {
        return Some((camera, stream));
    }
    match worker.hub.jpeg_feed(&camera) {
        Some(feed) => Some((feed, stream)),
        None => {
            let reason = format!(
                "camera {cam} sends {}, and its capture makes no JPEG copy: watch it on /ws/{cam}",
                camera.codec()
            );
            refuse(worker, stream, Status::NotAcceptable, &reason).await;
            None
        }
    }
}

async fn snapshot(worker: Rc<Worker>, stream: TcpStream, cam: &str) {
    let Some((camera, stream)) = camera_for(&worker, stream, cam, Wants::Jpeg).await else {
        return;
    };
    match current_frame(&camera).await {
        Some(frame) => reply(stream, "image/jpeg", &frame.payload).await,
        None => {
            refuse(
                &worker,
                stream,
                Status::ServiceUnavailable,
                "the camera has sent no frame yet",
            )
            .await
        }
    }
}

/// How long a snapshot waits for the idle JPEG copy of an H.264 camera to send a frame: it
/// starts when asked, and its capture must first decode from the last keyframe.
const SNAPSHOT_WAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The camera's newest frame. The JPEG copy of an H.264 camera, made only while watched, is
/// asked for one when it is idle or has none yet (the request counts as its viewer meanwhile),
/// and its first new frame is taken, or if none comes in time, the last it had.
async fn current_frame(camera: &Camera) -> Option<Rc<Frame>> {
    let latest = camera.latest();
    let streaming = camera.state() == CameraState::Online && latest.is_some();
    let gone = matches!(camera.state(), CameraState::Offline | CameraState::Removed);
    if !camera.is_jpeg_copy() || streaming || gone {
        return latest;
    }
    let _watching = camera.count_viewer();
    let follower = Follower::default();
    if let Some(frame) = &latest {
        follower.saw(frame);
    }
    let next = std::future::poll_fn(|cx| camera.poll_frame(&follower, cx));
    match monoio::time::timeout(SNAPSHOT_WAKE_WAIT, next).await {
        Ok(frame) => Some(frame),
        Err(_) => latest,
    }
}

/// Counts a new viewer in and tunes its socket, or answers 503 when the worker is full.
async fn admit_viewer(
    worker: &Rc<Worker>,
    stream: TcpStream,
) -> Option<(StreamingGuard, TcpStream)> {
    let Some(guard) = worker.admit() else {
        refuse(
            worker,
            stream,
            Status::ServiceUnavailable,
            "too many viewers",
        )
        .await;
        return None;
    };
    tune_viewer_socket(worker, &stream);
    Some((guard, stream))
}

/// Caps the kernel's send buffer and its unsent part (so backlog cannot hide seconds of video
/// from a slow viewer), turns off Nagle (a frame is written whole; its tail should not wait for
/// an ACK) and turns on TCP keepalive.
fn tune_viewer_socket(worker: &Worker, stream: &TcpStream) {
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    if let Err(e) = socket.set_send_buffer_size(worker.config.sndbuf) {
        tracing::warn!("SO_SNDBUF: {e}");
    }
    let lowat = worker.config.notsent_lowat;
    if lowat > 0 {
        if let Err(e) = socket.set_tcp_notsent_lowat(lowat) {
            tracing::warn!("TCP_NOTSENT_LOWAT: {e}");
        }
    }
    let _ = stream.set_nodelay(true);
    // An MJPEG viewer of a camera that publishes nothing is never written to, so only TCP
    // keepalive notices that it vanished.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::warn!("SO_KEEPALIVE: {e}");
    }
}

const TCP_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn settings(worker: &Worker, protocol: Protocol) -> StreamSettings {
    StreamSettings {
        protocol,
        stall_timeout: worker.config.stall_timeout,
        ping_interval: worker.config.ping_interval,
    }
}

async fn websocket_viewer(
    worker: Rc<Worker>,
    stream: TcpStream,
    request: Request,
    already: Vec<u8>,
    cam: &str,
    wants: Wants,
) {
    let Some((camera, stream)) = camera_for(&worker, stream, cam, wants).await else {
        return;
    };
    let accept = match websocket::accept_key(&request) {
        Ok(accept) => accept,
        Err(e) => return refuse(&worker, stream, e.status(), &e.to_string()).await,
    };
    let Some((_guard, mut stream)) = admit_viewer(&worker, stream).await else {
        return;
    };
    let handshake = websocket::handshake_response(&accept);
    let stall_timeout = worker.config.stall_timeout;
    if http::write_within(&mut stream, handshake, stall_timeout)
        .await
        .is_err()
    {
        return;
    }
    viewer::stream_to_viewer(
        stream,
        already,
        camera,
        settings(&worker, Protocol::WebSocket),
    )
    .await;
}

async fn mjpeg_viewer(
    worker: Rc<Worker>,
    stream: TcpStream,
    request: &Request,
    already: Vec<u8>,
    cam: &str,
) {
    let Some((camera, stream)) = camera_for(&worker, stream, cam, Wants::Jpeg).await else {
        return;
    };
    let Some((_guard, mut stream)) = admit_viewer(&worker, stream).await else {
        return;
    };
    let heads = PartHeads::for_request(request);
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}\r\nCache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(heads.stream_start());
    let stall_timeout = worker.config.stall_timeout;
    if http::write_within(&mut stream, head, stall_timeout)
        .await
        .is_err()
    {
        return;
    }
    drop(already);
    viewer::stream_to_viewer(
        stream,
        Vec::new(),
        camera,
        settings(&worker, Protocol::Mjpeg(heads)),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_camera() {
        assert_eq!(route("/ws/cam1"), Route::WebSocket("cam1"));
        assert_eq!(
            route("/websocket_handler_site/cam1"),
            Route::LegacyWebSocket("cam1")
        );
        assert_eq!(route("/stream/cam1.mjpg"), Route::Mjpeg("cam1"));
        assert_eq!(route("/snapshot/cam1.jpg"), Route::Snapshot("cam1"));
        assert_eq!(route("/ingest/cam9"), Route::Ingest("cam9"));
        assert_eq!(route("/video_remote_source/cam9"), Route::Ingest("cam9"));
        assert_eq!(route("/ws/"), Route::NotFound);
        assert_eq!(route("/ws/a/b"), Route::NotFound);
        assert_eq!(route("/stream/cam1"), Route::NotFound);
        assert_eq!(route("/nothing"), Route::NotFound);
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", Some("abd")));
        assert!(!token_matches("abc", Some("ab")));
        assert!(!token_matches("abc", None));
    }
}

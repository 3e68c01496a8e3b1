//! ringcast behind nginx, as deploy/nginx/ringcast.conf sets it up: the shipped file, with only
//! its ports, upstream, certificate and log paths swapped for a test's, runs in a real nginx
//! (an unprivileged prefix in a temporary directory) in front of a real server, and a browser
//! and curl go through it over TLS.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringbuf::frame::{insert_timing, FrameTiming};
use ringbuf::{CameraId, Clock, RingGeometry, RingWriter, SystemClock};

const NGINX: &str = "/usr/sbin/nginx";

/// What ends every MJPEG part: the delimiter that tells a client the part is whole.
const PART_END: &[u8] = b"\r\n--ringcast-frame\r\n";

/// The shipped site file.
fn shipped_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/ringcast.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A running nginx in its own directory, stopped and its directory removed when dropped.
struct Nginx {
    child: std::process::Child,
    https_port: u16,
    http_port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with the shipped site in front of the server on `upstream_port`.
    fn start(upstream_port: u16) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: run scripts/install-deps (it installs the nginx package)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ringcast-nginx")
            .tempdir()
            .expect("temp dir");
        let (https_port, http_port) = two_free_ports();
        let (cert, key) = self_signed_certificate(dir.path());
        let site = test_site(
            &shipped_config(),
            upstream_port,
            https_port,
            http_port,
            &cert,
            &key,
            dir.path(),
        );
        std::fs::write(dir.path().join("ringcast.conf"), site).expect("write the site");
        std::fs::write(dir.path().join("nginx.conf"), MAIN_CONFIG).expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            // Where nginx logs before it has read the configuration: not /var/log/nginx.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            https_port,
            http_port,
            dir,
        };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        wait_for("nginx to listen", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}): {}", self.log("error.log"));
            }
            TcpStream::connect(("127.0.0.1", self.https_port)).ok()
        });
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM, which the master passes on to its workers; killing the master alone would leave
    /// the workers listening.
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports free now, and not the same one: both are held while the second is found.
fn two_free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = |listener: &std::net::TcpListener| listener.local_addr().expect("local addr").port();
    let (first, second) = (bind(), bind());
    (port(&first), port(&second))
}

/// The main configuration around the site: everything nginx writes stays in its prefix (the
/// test's directory), and it stays in the foreground as the test's child.
const MAIN_CONFIG: &str = "daemon off;
master_process on;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 64; }
http {
    access_log access.log;
    client_body_temp_path client_body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    include ringcast.conf;
}
";

/// The shipped site with the test's ports, upstream, certificate and log directory. IPv6
/// listeners are left out (a test machine may have no IPv6). Fails if the file no longer has
/// what is replaced, rather than testing something else.
fn test_site(
    shipped: &str,
    upstream_port: u16,
    https_port: u16,
    http_port: u16,
    cert: &Path,
    key: &Path,
    log_dir: &Path,
) -> String {
    let mut site: String = shipped
        .lines()
        .filter(|line| !line.trim_start().starts_with("listen [::]"))
        .map(|line| format!("{line}\n"))
        .collect();
    let replacements = [
        ("listen 443 ", format!("listen 127.0.0.1:{https_port} ")),
        ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
        (
            "server 127.0.0.1:7474;",
            format!("server 127.0.0.1:{upstream_port};"),
        ),
        ("/etc/ssl/certs/ringcast.pem", cert.display().to_string()),
        ("/etc/ssl/private/ringcast.key", key.display().to_string()),
        ("/var/log/nginx/", format!("{}/", log_dir.display())),
    ];
    for (from, to) in replacements {
        assert!(
            site.contains(from),
            "deploy/nginx/ringcast.conf no longer has {from:?}: update tests/nginx.rs"
        );
        site = site.replace(from, &to);
    }
    site
}

/// A certificate for localhost and its key, made by openssl in `dir`.
fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (scripts/install-deps installs it)");
    assert!(output.status.success(), "openssl failed: {output:?}");
    (cert, key)
}

/// curl's output for `args` (certificates not checked: the test's is self-signed).
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-k", "-s", "-S", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An MJPEG stream read by curl as it arrives, into a buffer the test looks at meanwhile.
struct Download {
    curl: ChildGuard,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Download {
    fn start(url: &str) -> Download {
        let mut child = Command::new("curl")
            .args(["-k", "-s", "-S", "-N", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run curl");
        let mut stdout = child.stdout.take().expect("curl's stdout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 16384];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Download {
            curl: ChildGuard(child),
            received,
        }
    }

    /// The numbers of the frames received whole, their part's end included.
    fn whole_frames(&self) -> Vec<u64> {
        whole_frames(&self.received.lock().unwrap())
    }

    fn still_open(&mut self) -> bool {
        matches!(self.curl.0.try_wait(), Ok(None))
    }
}

/// The frame numbers of the whole parts of an MJPEG body (parts with Content-Length, as a
/// client that is not a browser gets them).
fn whole_frames(body: &[u8]) -> Vec<u64> {
    const LENGTH: &[u8] = b"Content-Length: ";
    let mut frames = Vec::new();
    let mut rest = body;
    while let Some(at) = find(rest, LENGTH) {
        let after = &rest[at + LENGTH.len()..];
        let Some(head_end) = find(after, b"\r\n\r\n") else {
            break;
        };
        let len: usize = std::str::from_utf8(&after[..head_end])
            .ok()
            .and_then(|text| text.parse().ok())
            .expect("a Content-Length");
        let (start, end) = (head_end + 4, head_end + 4 + len);
        if after.len() < end + PART_END.len() {
            break;
        }
        assert!(
            after[end..].starts_with(PART_END),
            "a part ends with its delimiter"
        );
        frames.push(frame_no(&after[start..end]));
        rest = &after[end..];
    }
    frames
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A camera whose frames the test publishes one at a time.
struct StillCamera(RingWriter);

impl StillCamera {
    fn create(dir: &Path, name: &str) -> StillCamera {
        let camera = CameraId::new(name).expect("camera name");
        StillCamera(RingWriter::create(dir, &camera, RingGeometry::default()).expect("ring"))
    }

    /// Publishes the next frame and returns its number.
    fn publish(&mut self) -> u64 {
        let capture = SystemClock.wall();
        let frame_no = self.0.next_frame_no();
        let mut jpeg = Vec::new();
        insert_timing(base_jpeg(), FrameTiming { frame_no, capture }, &mut jpeg).expect("timing");
        self.0.publish(&jpeg, capture).expect("publish");
        frame_no.0
    }
}

/// Each frame reaches the viewer through nginx before the next one is published: nothing
/// holds the end of a frame back (proxy_buffering off), and the stream stays open.
fn mjpeg_is_not_buffered(nginx: &Nginx, still: &mut StillCamera) {
    let mut download = Download::start(&nginx.url("/stream/still.mjpg"));
    for _ in 0..3 {
        let frame = still.publish();
        wait_for(&format!("frame {frame} whole through nginx"), || {
            download.whole_frames().contains(&frame).then_some(())
        });
        assert!(download.still_open(), "the MJPEG stream ended");
    }
}

/// The viewer page over https (HTTP/2), and tokens (in the query, in a referrer, as a page with
/// a token makes its requests) kept out of the access log.
fn page_loads(nginx: &Nginx) {
    let page = curl(&[
        "-w",
        "\n%{http_code} %{http_version}",
        "--referer",
        &nginx.url("/?token=not-for-the-log-either"),
        &nginx.url("/?token=not-for-the-log"),
    ]);
    let (html, status) = page.rsplit_once('\n').expect("curl's status line");
    assert_eq!(status, "200 2", "status and HTTP version of the page");
    assert!(
        html.contains("<title>ringcast</title>"),
        "the viewer's page: {html}"
    );
    // nginx writes the line once the answer is sent, which may be after curl is done.
    let log = wait_for("the page in the access log", || {
        let log = nginx.log("ringcast.access.log");
        log.contains("\"GET / HTTP/2.0\" 200").then_some(log)
    });
    assert!(
        !log.contains("not-for-the-log"),
        "a token in the access log: {log}"
    );
}

/// Plain http is sent to https.
fn http_redirects(nginx: &Nginx) {
    let url = format!("http://localhost:{}/stream/cam1.mjpg", nginx.http_port);
    let answer = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &url,
    ]);
    assert_eq!(answer, "301 https://localhost/stream/cam1.mjpg");
}

/// A browser loads the page through nginx and a tile of `camera` goes live: its WebSocket
/// (wss, through nginx, past the server's Origin check) carries frames.
fn browser_tile_goes_live(nginx: &Nginx, camera: &str) {
    let mut browser = Browser::open("about:blank", 1024, 700);
    browser.ignore_certificate_errors();
    browser.navigate(&nginx.url("/"));
    let button = format!("document.querySelector('#camera-list button[data-camera=\"{camera}\"]')");
    browser.wait_for(
        &format!("{camera} in the camera list"),
        &format!("!!{button}"),
    );
    browser.eval(&format!("{button}.click()"));
    // Live with a frame rate: several frames drawn.
    browser.wait_for(
        &format!("the tile of {camera} live"),
        "[...document.querySelectorAll('#wall .tile')].some(t => t.dataset.state === 'live'
            && / fps /.test(t.querySelector('.stats').textContent))",
    );
    let socket = format!("wss://localhost:{}/ws/{camera}", nginx.https_port);
    let urls = browser.requested_urls();
    assert!(
        urls.iter().any(|url| url.starts_with(&socket)),
        "{socket} not in {urls:?}"
    );
    assert_eq!(
        browser.take_errors(),
        Vec::<String>::new(),
        "console errors"
    );
}

#[test]
fn viewers_get_the_page_mjpeg_and_websockets_through_the_shipped_nginx_site() {
    let dir = temp_ring_dir();
    let _capture = start_capture(dir.path(), "cam1", 10, &[]);
    let mut still = StillCamera::create(dir.path(), "still");
    let server = Server::start(dir.path(), 1, &[]);
    wait_camera_listed(&server, "cam1");
    wait_camera_listed(&server, "still");
    let nginx = Nginx::start(server.port);

    page_loads(&nginx);
    http_redirects(&nginx);
    mjpeg_is_not_buffered(&nginx, &mut still);
    browser_tile_goes_live(&nginx, "cam1");
}

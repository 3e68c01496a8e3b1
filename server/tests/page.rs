//! The page at `/`, as a browser shows it: headless Chromium loads it, decodes the cameras' MJPEG
//! streams, and the page writes each picture's size under it once a frame has arrived.

mod common;
use common::*;

use std::process::Command;

fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    // The flags keep a headless Chromium from reaching for the network on its own (this machine
    // has none) and from needing a sandbox when tests run as root.
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium (scripts/install-deps installs it)");
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chromium_shows_every_camera_live_on_the_page() {
    let dir = temp_ring_dir();
    let _cam1 = start_capture(dir.path(), "cam1", 10, &[]);
    let _cam2 = start_capture(dir.path(), "cam2", 10, &["--rotate", "90"]);
    let server = Server::start(dir.path(), 2, &[]);
    for cam in ["cam1", "cam2"] {
        wait_for(&format!("{cam} online"), || {
            (server.camera_field(cam, "status")? == "online").then_some(())
        });
    }
    let dom = wait_for("Chromium to show both pictures", || {
        let dom = chromium_dom(&server.url("/"));
        (dom.contains(", 640x360") && dom.contains(", 360x640")).then_some(dom)
    });
    assert!(dom.contains(r#"<img src="/stream/cam1.mjpg""#), "{dom}");
    assert!(dom.contains(r#"<img src="/stream/cam2.mjpg""#), "{dom}");
}

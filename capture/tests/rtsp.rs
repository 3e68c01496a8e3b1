//! An RTSP/H.264 camera read through capture's ffmpeg child.
//!
//! ffmpeg cannot serve RTSP to a player by itself (`-rtsp_flags listen` only receives), so the
//! camera here is ffmpeg encoding a test pattern to RTP over UDP, behind a minimal in-test RTSP
//! server that answers OPTIONS/DESCRIBE/SETUP/PLAY and relays the RTP packets interleaved on the
//! RTSP connection (RTP over TCP, what capture asks for).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// ffmpeg sending H.264 in RTP to `rtp_port`, describing the stream in `sdp`.
fn rtp_encoder(rtp_port: u16, sdp: &Path) -> Running {
    let address = format!("rtp://127.0.0.1:{rtp_port}");
    let output: [&std::ffi::OsStr; 7] = [
        "-bsf:v".as_ref(),
        "dump_extra".as_ref(),
        "-f".as_ref(),
        "rtp".as_ref(),
        "-sdp_file".as_ref(),
        sdp.as_os_str(),
        address.as_ref(),
    ];
    ffmpeg_h264_camera("ffmpeg rtp encoder", 5, &output)
}

/// The RTSP front of the camera.
fn rtsp_camera(port: u16, rtp: Arc<UdpSocket>, sdp: String) -> TcpCamera {
    TcpCamera::start(port, move |socket, stop| {
        let _ = serve_rtsp(socket, &rtp, &sdp, stop);
    })
}

/// One RTSP request: its method, CSeq and the URL it names.
fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(String, String, String)>> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let url = parts.next().unwrap_or("").to_owned();
    let mut cseq = String::from("0");
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = value.trim().to_owned(),
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Some((method, cseq, url)))
}

fn serve_rtsp(
    socket: TcpStream,
    rtp: &UdpSocket,
    sdp: &str,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = socket.try_clone()?;
    let mut reader = BufReader::new(socket);
    loop {
        let Some((method, cseq, url)) = read_request(&mut reader)? else {
            return Ok(());
        };
        let mut reply = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n");
        match method.as_str() {
            "OPTIONS" => reply.push_str("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"),
            "DESCRIBE" => reply.push_str(&format!(
                "Content-Base: {url}/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )),
            "SETUP" => reply.push_str(
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n\r\n",
            ),
            "PLAY" => reply.push_str("Session: 12345678\r\n\r\n"),
            _ => reply.push_str("\r\n"),
        }
        writer.write_all(reply.as_bytes())?;
        if method == "PLAY" {
            break;
        }
    }
    // Relay RTP from the encoder, interleaved on channel 0, until stopped.
    rtp.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut packet = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = rtp.recv(&mut packet) else {
            continue;
        };
        let mut frame = vec![b'$', 0];
        frame.extend_from_slice(&(n as u16).to_be_bytes());
        frame.extend_from_slice(&packet[..n]);
        writer.write_all(&frame)?;
    }
    Ok(())
}

/// The SDP ffmpeg wrote, with a control attribute so SETUP has a track URL.
fn load_sdp(path: &Path) -> String {
    wait_for("ffmpeg to write the SDP", || {
        std::fs::read_to_string(path).is_ok_and(|s| s.contains("m=video"))
    });
    let sdp = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in sdp
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("SDP:"))
    {
        out.push_str(line);
        out.push_str("\r\n");
        if line.starts_with("m=video") {
            out.push_str("a=control:trackID=0\r\n");
        }
    }
    out
}

#[test]
fn an_rtsp_camera_is_read_through_ffmpeg_and_recovered_after_it_goes_away() {
    let work = tempfile::tempdir().unwrap();
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let rtp_port = rtp.local_addr().unwrap().port();
    let sdp_path = work.path().join("camera.sdp");
    let _encoder = rtp_encoder(rtp_port, &sdp_path);
    let sdp = load_sdp(&sdp_path);

    let port = free_port();
    let mut camera = rtsp_camera(port, Arc::clone(&rtp), sdp.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let mut capture = capture(&[
        "--camera",
        "rtspcam",
        "--source",
        &url,
        "--fps",
        "10",
        "--ring-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut reader = open_ring(dir.path(), "rtspcam");
    let frames = read_frames(&mut reader, 5);
    let image = decode(&frames[4].1);
    assert_eq!((image.width, image.height), (320, 240));

    camera.kill();
    while frame_within(&mut reader, Duration::from_millis(500)).is_some() {}
    let _camera = rtsp_camera(port, rtp, sdp);
    frame_within(&mut reader, DEADLINE)
        .expect("capture did not recover when the RTSP camera came back");
    assert!(capture.terminate().success());
}

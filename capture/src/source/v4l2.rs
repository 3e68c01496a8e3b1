//! V4L2 cameras through the `v4l` crate. MJPEG is preferred and passed through as it comes
//! (only Huffman tables are added when the camera leaves them out, as many UVC cameras do);
//! otherwise YUYV or NV12 frames are encoded with turbojpeg. `--size` and `--fps` are
//! negotiated with the device and what it chose is logged.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tracing::info;
use turbojpeg::{Compressor, Subsamp, YuvImage};
use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::{now_wall, Captured, FrameStream, Pulled, Source, SourceOptions, POLL};
use crate::cli::Size;
use crate::SourceError;

/// Size asked of a camera when `--size` is not given.
pub const DEFAULT_SIZE: Size = Size {
    width: 1280,
    height: 720,
};
pub const DEFAULT_FPS: u32 = 30;
const BUFFERS: u32 = 4;
/// A started camera that delivers nothing for this long is considered lost and reopened.
const SILENT_LIMIT: Duration = Duration::from_secs(5);

/// The pixel formats capture can use, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelKind {
    Mjpeg,
    Yuyv,
    Nv12,
}

impl PixelKind {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelKind::Mjpeg => *b"MJPG",
            PixelKind::Yuyv => *b"YUYV",
            PixelKind::Nv12 => *b"NV12",
        }
    }

    fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelKind> {
        match &fourcc {
            b"MJPG" | b"JPEG" => Some(PixelKind::Mjpeg),
            b"YUYV" => Some(PixelKind::Yuyv),
            b"NV12" => Some(PixelKind::Nv12),
            _ => None,
        }
    }
}

/// Frame sizes a device offers for one pixel format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferedSizes {
    Discrete(Vec<Size>),
    Stepwise {
        min: Size,
        max: Size,
        step_width: u32,
        step_height: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedFormat {
    pub fourcc: [u8; 4],
    pub sizes: OfferedSizes,
}

/// What to ask the device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatChoice {
    pub kind: PixelKind,
    pub size: Size,
}

/// Picks the pixel format (MJPEG, else YUYV, else NV12) and the offered size closest to `want`.
pub fn choose_format(offered: &[OfferedFormat], want: Size) -> Result<FormatChoice, String> {
    let preference = [PixelKind::Mjpeg, PixelKind::Yuyv, PixelKind::Nv12];
    for kind in preference {
        let Some(format) = offered
            .iter()
            .find(|f| PixelKind::from_fourcc(f.fourcc) == Some(kind))
        else {
            continue;
        };
        if let Some(size) = closest_size(&format.sizes, want) {
            return Ok(FormatChoice { kind, size });
        }
    }
    let names: Vec<String> = offered
        .iter()
        .map(|f| String::from_utf8_lossy(&f.fourcc).into_owned())
        .collect();
    Err(format!(
        "offers none of MJPG, YUYV or NV12 (it offers: {})",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

fn closest_size(sizes: &OfferedSizes, want: Size) -> Option<Size> {
    let distance = |s: &Size| {
        (i64::from(s.width) - i64::from(want.width)).abs()
            + (i64::from(s.height) - i64::from(want.height)).abs()
    };
    match sizes {
        OfferedSizes::Discrete(list) => list.iter().copied().min_by_key(distance),
        OfferedSizes::Stepwise {
            min,
            max,
            step_width,
            step_height,
        } => {
            let fit = |want: u32, min: u32, max: u32, step: u32| {
                let step = step.max(1);
                let clamped = want.clamp(min, max);
                min + (clamped - min) / step * step
            };
            Some(Size {
                width: fit(want.width, min.width, max.width, *step_width),
                height: fit(want.height, min.height, max.height, *step_height),
            })
        }
    }
}

pub struct V4l2Source {
    path: PathBuf,
    options: SourceOptions,
}

impl V4l2Source {
    pub fn new(path: PathBuf, options: SourceOptions) -> V4l2Source {
        V4l2Source { path, options }
    }

    fn device_error(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Device {
            device: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    fn io_error(&self, doing: &str, e: io::Error) -> SourceError {
        let reason = match e.raw_os_error() {
            Some(libc::EBUSY) => format!("{doing}: the device is busy (another program uses it)"),
            Some(libc::ENODEV) | Some(libc::ENOENT) => {
                format!("{doing}: the device is gone (unplugged?)")
            }
            Some(libc::EACCES) => {
                format!("{doing}: permission denied (add the user to the 'video' group)")
            }
            _ => format!("{doing}: {e}"),
        };
        self.device_error(reason)
    }
}

impl Source for V4l2Source {
    fn describe(&self) -> String {
        format!("V4L2 device {}", self.path.display())
    }

    fn preflight(&self) -> Result<(), SourceError> {
        check_device_path(&self.path).map_err(|reason| self.device_error(reason))
    }

    fn nominal_fps(&self) -> Option<u32> {
        Some(self.options.fps.unwrap_or(DEFAULT_FPS))
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        let device = Device::with_path(&self.path).map_err(|e| self.io_error("cannot open", e))?;
        let offered =
            offered_formats(&device).map_err(|e| self.io_error("cannot list formats", e))?;
        let want_size = self.options.size.unwrap_or(DEFAULT_SIZE);
        let want_fps = self.options.fps.unwrap_or(DEFAULT_FPS);
        let choice = choose_format(&offered, want_size).map_err(|r| self.device_error(r))?;
        let asked = Format::new(
            choice.size.width,
            choice.size.height,
            FourCC::new(&choice.kind.fourcc()),
        );
        let got = device
            .set_format(&asked)
            .map_err(|e| self.io_error("cannot set the format", e))?;
        let kind = PixelKind::from_fourcc(got.fourcc.repr).ok_or_else(|| {
            self.device_error(format!(
                "switched to the unusable format {}",
                String::from_utf8_lossy(&got.fourcc.repr)
            ))
        })?;
        let params = device
            .set_params(&v4l::video::capture::Parameters::with_fps(want_fps))
            .map_err(|e| self.io_error("cannot set the frame rate", e))?;
        let fps = if params.interval.numerator == 0 {
            0.0
        } else {
            f64::from(params.interval.denominator) / f64::from(params.interval.numerator)
        };
        info!(
            "{}: {} {}x{} at {fps:.1} fps (asked {want_size} at {want_fps} fps)",
            self.describe(),
            String::from_utf8_lossy(&got.fourcc.repr),
            got.width,
            got.height
        );
        let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, BUFFERS)
            .map_err(|e| self.io_error("cannot map capture buffers", e))?;
        stream.set_timeout(SILENT_LIMIT);
        let encoder = match kind {
            PixelKind::Mjpeg => None,
            _ => Some(RawEncoder::new(self.options.quality)?),
        };
        Ok(Box::new(V4l2Stream {
            stream: Some(stream),
            device,
            path: self.path.clone(),
            kind,
            format: got,
            fps: (fps >= 1.0).then(|| fps.round() as u32),
            started: false,
            encoder,
        }))
    }
}

fn check_device_path(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() => Ok(()),
        Ok(_) => Err("is not a video device".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err("does not exist (is the camera plugged in? see --list-devices)".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

struct V4l2Stream {
    /// `Option` so that Drop can take it out and stop it first (see Drop).
    stream: Option<MmapStream<'static>>,
    device: Device,
    path: PathBuf,
    kind: PixelKind,
    format: Format,
    /// What the driver agreed to, if it said.
    fps: Option<u32>,
    started: bool,
    encoder: Option<RawEncoder>,
}

impl V4l2Stream {
    fn lost(&self, e: io::Error) -> SourceError {
        let reason = if e.kind() == io::ErrorKind::TimedOut {
            format!("no frame for {} s", SILENT_LIMIT.as_secs())
        } else {
            format!("capture failed: {e}")
        };
        SourceError::Device {
            device: self.path.display().to_string(),
            reason,
        }
    }
}

impl FrameStream for V4l2Stream {
    fn negotiated_fps(&self) -> Option<u32> {
        self.fps
    }

    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        if self.started {
            // Wait here rather than in the stream: after a timed-out dequeue the v4l stream
            // would queue its previous buffer twice.
            let ready = self
                .device
                .handle()
                .poll(libc::POLLIN, POLL.as_millis() as i32)
                .map_err(|e| self.lost(e))?;
            if ready == 0 {
                return Ok(None);
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.lost(io::ErrorKind::NotConnected.into()));
        };
        let (buffer, meta) = match stream.next() {
            Ok(frame) => frame,
            Err(e) => return Err(self.lost(e)),
        };
        self.started = true;
        let capture = now_wall();
        let used = (meta.bytesused as usize).min(buffer.len());
        let data = &buffer[..used];
        let jpeg = match (&mut self.encoder, self.kind) {
            (None, _) | (_, PixelKind::Mjpeg) => with_huffman_tables(data),
            (Some(encoder), kind) => encoder.encode(kind, &self.format, data)?,
        };
        Ok(Some(Pulled::Frame(Captured {
            data: jpeg,
            capture,
        })))
    }
}

impl Drop for V4l2Stream {
    fn drop(&mut self) {
        use v4l::io::traits::Stream as _;
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.stop();
            // The v4l stream panics in its Drop if stopping fails for any reason but an
            // unplugged device; a camera failing must not take the process down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)));
        }
    }
}

/// Encodes YUYV or NV12 frames to JPEG.
struct RawEncoder {
    compressor: Compressor,
    planar: Vec<u8>,
}

impl RawEncoder {
    fn new(quality: u8) -> Result<RawEncoder, SourceError> {
        let mut compressor = Compressor::new()?;
        compressor.set_quality(i32::from(quality))?;
        Ok(RawEncoder {
            compressor,
            planar: Vec::new(),
        })
    }

    fn encode(
        &mut self,
        kind: PixelKind,
        format: &Format,
        data: &[u8],
    ) -> Result<Vec<u8>, SourceError> {
        let (w, h) = (format.width as usize, format.height as usize);
        let stride = (format.stride as usize).max(match kind {
            PixelKind::Yuyv => w * 2,
            _ => w,
        });
        let subsamp = match kind {
            PixelKind::Yuyv => Subsamp::Sub2x1,
            _ => Subsamp::Sub2x2,
        };
        let ok = match kind {
            PixelKind::Yuyv => yuyv_to_planar(data, w, h, stride, &mut self.planar),
            _ => nv12_to_planar(data, w, h, stride, &mut self.planar),
        };
        if !ok {
            return Err(SourceError::Protocol(format!(
                "the camera sent a short frame ({} bytes for {w}x{h})",
                data.len()
            )));
        }
        Ok(self.compressor.compress_yuv_to_vec(YuvImage {
            pixels: &self.planar[..],
            width: w,
            align: 1,
            height: h,
            subsamp,
        })?)
    }
}

/// Packed YUYV (4:2:2) to turbojpeg's planar layout. `false` if `data` is too short.
pub fn yuyv_to_planar(data: &[u8], w: usize, h: usize, stride: usize, out: &mut Vec<u8>) -> bool {
    let cw = w.div_ceil(2);
    if w == 0 || h == 0 || w % 2 != 0 || data.len() < stride * (h - 1) + w * 2 {
        return false;
    }
    out.resize(w * h + 2 * cw * h, 0);
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * h);
    for row in 0..h {
        let line = &data[row * stride..row * stride + w * 2];
        for (i, px) in line.chunks_exact(4).enumerate() {
            y_plane[row * w + 2 * i] = px[0];
            y_plane[row * w + 2 * i + 1] = px[2];
            u_plane[row * cw + i] = px[1];
            v_plane[row * cw + i] = px[3];
        }
    }
    true
}

/// NV12 (Y plane, then interleaved UV at half resolution) to planar 4:2:0.
pub fn nv12_to_planar(data: &[u8], w: usize, h: usize, stride: usize, out: &mut Vec<u8>) -> bool {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let uv_start = stride * h;
    if w == 0 || h == 0 || data.len() < uv_start + stride * (ch - 1) + cw * 2 {
        return false;
    }
    out.resize(w * h + 2 * cw * ch, 0);
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    for row in 0..h {
        y_plane[row * w..(row + 1) * w].copy_from_slice(&data[row * stride..row * stride + w]);
    }
    for row in 0..ch {
        let line = &data[uv_start + row * stride..uv_start + row * stride + cw * 2];
        for (i, uv) in line.chunks_exact(2).enumerate() {
            u_plane[row * cw + i] = uv[0];
            v_plane[row * cw + i] = uv[1];
        }
    }
    true
}

/// `jpeg`, with the standard Huffman tables inserted before the scan if it has none. UVC
/// cameras commonly send "motion JPEG" without them; decoders in browsers refuse such frames.
pub fn with_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    match missing_dht_insert_point(jpeg) {
        Some(at) => {
            let tables = standard_dht();
            let mut out = Vec::with_capacity(jpeg.len() + tables.len());
            out.extend_from_slice(&jpeg[..at]);
            out.extend_from_slice(tables);
            out.extend_from_slice(&jpeg[at..]);
            out
        }
        None => jpeg.to_vec(),
    }
}

/// The offset of the SOS marker if no DHT segment comes before it.
fn missing_dht_insert_point(jpeg: &[u8]) -> Option<usize> {
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return None;
        }
        match jpeg[at + 1] {
            0xC4 => return None,
            0xDA => return Some(at),
            _ => {}
        }
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        at += 2 + len;
    }
    None
}

/// The DHT segments of the standard tables (JPEG Annex K), taken once from a tiny JPEG that
/// libjpeg-turbo encodes with them (it uses the standard tables unless told to optimise).
fn standard_dht() -> &'static [u8] {
    static TABLES: OnceLock<Vec<u8>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let pixels = [128u8; 16 * 16 * 3];
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width: 16,
            pitch: 48,
            height: 16,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 75, Subsamp::Sub2x2)
            .map(|jpeg| dht_segments(&jpeg))
            .unwrap_or_default()
    })
}

fn dht_segments(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && jpeg[at + 1] != 0xDA {
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        if jpeg[at + 1] == 0xC4 {
            out.extend_from_slice(&jpeg[at..(at + 2 + len).min(jpeg.len())]);
        }
        at += 2 + len;
    }
    out
}

fn offered_formats(device: &Device) -> io::Result<Vec<OfferedFormat>> {
    let mut offered = Vec::new();
    for description in device.enum_formats()? {
        let sizes = device.enum_framesizes(description.fourcc)?;
        let mut discrete = Vec::new();
        let mut stepwise = None;
        for size in sizes {
            match size.size {
                FrameSizeEnum::Discrete(d) => discrete.push(Size {
                    width: d.width,
                    height: d.height,
                }),
                FrameSizeEnum::Stepwise(s) => {
                    stepwise = Some(OfferedSizes::Stepwise {
                        min: Size {
                            width: s.min_width,
                            height: s.min_height,
                        },
                        max: Size {
                            width: s.max_width,
                            height: s.max_height,
                        },
                        step_width: s.step_width,
                        step_height: s.step_height,
                    })
                }
            }
        }
        offered.push(OfferedFormat {
            fourcc: description.fourcc.repr,
            sizes: stepwise.unwrap_or(OfferedSizes::Discrete(discrete)),
        });
    }
    Ok(offered)
}

/// `--list-devices`: every V4L2 device with its formats, sizes and frame rates.
pub fn list_devices_text() -> String {
    let mut nodes = v4l::context::enum_devices();
    nodes.sort_by_key(|n| n.index());
    if nodes.is_empty() {
        return "no V4L2 devices found (/dev/video* does not exist)\n".into();
    }
    let mut out = String::new();
    for node in nodes {
        let path = node.path().display().to_string();
        let device = match Device::with_path(node.path()) {
            Ok(device) => device,
            Err(e) => {
                let _ = writeln!(out, "{path}: cannot open: {e}");
                continue;
            }
        };
        let card = device
            .query_caps()
            .map(|c| format!("{} ({})", c.card, c.driver))
            .unwrap_or_else(|_| node.name().unwrap_or_default());
        let _ = writeln!(out, "{path}: {card}");
        describe_formats(&device, &mut out);
    }
    out
}

fn describe_formats(device: &Device, out: &mut String) {
    let Ok(formats) = device.enum_formats() else {
        let _ = writeln!(out, "  (no capture formats)");
        return;
    };
    for format in formats {
        let _ = writeln!(out, "  {} ({})", format.fourcc, format.description);
        for size in device.enum_framesizes(format.fourcc).unwrap_or_default() {
            match size.size {
                FrameSizeEnum::Discrete(d) => {
                    let rates = frame_rates(device, format.fourcc, d.width, d.height);
                    let _ = writeln!(out, "    {}x{}: {rates}", d.width, d.height);
                }
                FrameSizeEnum::Stepwise(s) => {
                    let _ = writeln!(
                        out,
                        "    {}x{} to {}x{} in steps of {}x{}",
                        s.min_width,
                        s.min_height,
                        s.max_width,
                        s.max_height,
                        s.step_width,
                        s.step_height
                    );
                }
            }
        }
    }
}

fn frame_rates(device: &Device, fourcc: FourCC, width: u32, height: u32) -> String {
    let intervals = device
        .enum_frameintervals(fourcc, width, height)
        .unwrap_or_default();
    let rates: Vec<String> = intervals
        .iter()
        .map(|i| match &i.interval {
            FrameIntervalEnum::Discrete(f) if f.numerator > 0 => {
                format!("{:.4}", f64::from(f.denominator) / f64::from(f.numerator))
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned()
            }
            other => other.to_string(),
        })
        .collect();
    if rates.is_empty() {
        "rates unknown".into()
    } else {
        format!("{} fps", rates.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    fn discrete(fourcc: &[u8; 4], sizes: &[(u32, u32)]) -> OfferedFormat {
        OfferedFormat {
            fourcc: *fourcc,
            sizes: OfferedSizes::Discrete(sizes.iter().map(|&(w, h)| size(w, h)).collect()),
        }
    }

    #[test]
    fn mjpeg_is_preferred_when_offered() {
        let offered = [
            discrete(b"YUYV", &[(640, 480), (1280, 720)]),
            discrete(b"MJPG", &[(640, 480), (1280, 720), (1920, 1080)]),
        ];
        let choice = choose_format(&offered, size(1280, 720)).unwrap();
        assert_eq!(
            choice,
            FormatChoice {
                kind: PixelKind::Mjpeg,
                size: size(1280, 720)
            }
        );
    }

    #[test]
    fn raw_formats_are_used_when_there_is_no_mjpeg() {
        let offered = [
            discrete(b"NV12", &[(640, 480)]),
            discrete(b"YUYV", &[(640, 480)]),
        ];
        let choice = choose_format(&offered, size(640, 480)).unwrap();
        assert_eq!(choice.kind, PixelKind::Yuyv);
        let only_nv12 = [discrete(b"NV12", &[(640, 480)])];
        assert_eq!(
            choose_format(&only_nv12, size(640, 480)).unwrap().kind,
            PixelKind::Nv12
        );
    }

    #[test]
    fn the_closest_offered_size_is_chosen() {
        let offered = [discrete(b"MJPG", &[(640, 480), (1280, 720), (1920, 1080)])];
        assert_eq!(
            choose_format(&offered, size(1280, 800)).unwrap().size,
            size(1280, 720)
        );
        let stepwise = [OfferedFormat {
            fourcc: *b"YUYV",
            sizes: OfferedSizes::Stepwise {
                min: size(160, 120),
                max: size(1920, 1080),
                step_width: 16,
                step_height: 8,
            },
        }];
        assert_eq!(
            choose_format(&stepwise, size(1000, 5000)).unwrap().size,
            size(992, 1080)
        );
    }

    #[test]
    fn a_device_without_usable_formats_is_refused_with_what_it_offers() {
        let offered = [discrete(b"H264", &[(1920, 1080)])];
        let err = choose_format(&offered, size(1920, 1080)).unwrap_err();
        assert!(err.contains("H264"), "{err}");
    }

    #[test]
    fn yuyv_and_nv12_become_planar() {
        let mut out = Vec::new();
        assert!(yuyv_to_planar(&[1, 2, 3, 4, 5, 6, 7, 8], 2, 2, 4, &mut out));
        assert_eq!(out, [1, 3, 5, 7, 2, 6, 4, 8]);
        let nv12 = [1, 2, 3, 4, 9, 8];
        assert!(nv12_to_planar(&nv12, 2, 2, 2, &mut out));
        assert_eq!(out, [1, 2, 3, 4, 9, 8]);
        assert!(!nv12_to_planar(&nv12[..5], 2, 2, 2, &mut out));
        assert!(!yuyv_to_planar(&[1, 2, 3], 2, 2, 4, &mut out));
    }

    #[test]
    fn huffman_tables_are_added_only_when_missing() {
        let pixels = [90u8; 32 * 16 * 3];
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width: 32,
            pitch: 96,
            height: 16,
            format: turbojpeg::PixelFormat::RGB,
        };
        let full = turbojpeg::compress(image, 80, Subsamp::Sub2x2)
            .unwrap()
            .to_vec();
        assert_eq!(with_huffman_tables(&full), full);
        // Strip the DHT segments, as a UVC camera would send the frame.
        let tables = dht_segments(&full);
        assert!(!tables.is_empty());
        let start = full.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        let mut stripped = full[..start].to_vec();
        stripped.extend_from_slice(&full[start + tables.len()..]);
        assert_eq!(missing_dht_insert_point(&stripped).map(|_| ()), Some(()));
        let repaired = with_huffman_tables(&stripped);
        assert_eq!(missing_dht_insert_point(&repaired), None);
        assert_eq!(repaired.len(), full.len());
        let decoded = turbojpeg::decompress(&repaired, turbojpeg::PixelFormat::RGB).unwrap();
        assert_eq!((decoded.width, decoded.height), (32, 16));
    }

    #[test]
    fn a_missing_device_is_named_in_the_error() {
        let err = check_device_path(Path::new("/dev/video-does-not-exist")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}

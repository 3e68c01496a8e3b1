//! The ring file: its header page, its slots, and how a mapping of it is checked before use.
//!
//! Layout (little-endian, `repr(C)`, version [`LAYOUT_VERSION`]):
//! `[header page: HEADER_SIZE bytes][slot 0][slot 1]...`, each slot being a 64-byte [`SlotMeta`]
//! followed by the payload rounded up to 64 bytes. Every field is accessed only through atomics,
//! by every process, so concurrent access is defined behaviour whatever the other side does; the
//! memory itself is reached only as `mapping` describes.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::mapping::{Atomics, Mapping};
use crate::seqlock::{RingMemory, SlotMeta, SlotRef, WORD};
use crate::types::{Clock, Codec, MonoNanos, SystemClock};
use crate::{CameraId, Error, FrameNo};

#[cfg(target_endian = "big")]
compile_error!("the ring file format is little-endian; big-endian hosts are not supported");

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RINGCAST");
/// 2: the codec (`format` may say H.264), the codec string, and each slot's keyframe flag.
pub(crate) const LAYOUT_VERSION: u32 = 2;
pub(crate) const HEADER_SIZE: usize = 4096;
const SLOT_META_SIZE: usize = std::mem::size_of::<SlotMeta>();
const SLOT_ALIGN: usize = 64;

/// Bounds a header must respect; a file outside them is refused, not mapped.
pub const MIN_SLOTS: u32 = 2;
pub const MAX_SLOTS: u32 = 1024;
pub const MAX_SLOT_SIZE: usize = 1 << 30;
/// Ring files larger than this are refused: no sane camera needs it, and a hostile header could
/// otherwise make readers map absurd sizes.
const MAX_FILE_SIZE: u64 = 64 << 30;

/// `format` field: what the payloads are ([`Codec`]).
const FORMAT_JPEG: u32 = 1;
const FORMAT_H264: u32 = 2;

pub(crate) fn format_of(codec: Codec) -> u32 {
    match codec {
        Codec::Jpeg => FORMAT_JPEG,
        Codec::H264 => FORMAT_H264,
    }
}

fn codec_of(format: u32) -> Option<Codec> {
    match format {
        FORMAT_JPEG => Some(Codec::Jpeg),
        FORMAT_H264 => Some(Codec::H264),
        _ => None,
    }
}

/// Writer states as stored in the header.
pub(crate) const STATE_OFFLINE: u32 = 0;
pub(crate) const STATE_STREAMING: u32 = 1;
pub(crate) const STATE_IDLE: u32 = 2;
pub(crate) const STATE_SOURCE_DOWN: u32 = 3;
/// The writer moved to a new file at the same path (another geometry, or this one was damaged):
/// readers should open the path again.
pub(crate) const STATE_REPLACED: u32 = 4;

/// The header page. Fields up to `camera` are written once, before the file is linked into the
/// ring directory; the rest change while the writer runs.
#[repr(C)]
pub(crate) struct RingHeader {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) header_size: AtomicU32,
    pub(crate) slot_count: AtomicU32,
    pub(crate) format: AtomicU32,
    pub(crate) slot_size: AtomicU64,
    pub(crate) slot_stride: AtomicU64,
    /// The camera name, NUL-padded.
    pub(crate) camera: [AtomicU64; CameraId::MAX_LEN / WORD],
    pub(crate) width: AtomicU32,
    pub(crate) height: AtomicU32,
    pub(crate) fps_milli: AtomicU32,
    pub(crate) writer_state: AtomicU32,
    pub(crate) writer_pid: AtomicU32,
    /// Bumped after every publish; readers FUTEX_WAIT on it (shared futex, across processes).
    pub(crate) futex: AtomicU32,
    /// CLOCK_MONOTONIC ns of the writer's last sign of life.
    pub(crate) heartbeat: AtomicU64,
    /// Number of the last published frame.
    pub(crate) head: AtomicU64,
    /// CLOCK_MONOTONIC ns of the last publish.
    pub(crate) published_at: AtomicU64,
    pub(crate) frames_published: AtomicU64,
    pub(crate) bytes_published: AtomicU64,
    /// Frames refused because they did not fit a slot.
    pub(crate) frames_rejected: AtomicU64,
    /// How many writers have opened this file (1 for a fresh file; more after restarts).
    pub(crate) writer_starts: AtomicU64,
    /// Who writes this camera: [`KIND_LOCAL`] or [`KIND_INGEST`]; 0 in files made before the
    /// field existed, which count as local.
    pub(crate) writer_kind: AtomicU32,
    /// Pid of a capture on this host waiting for this ring while an ingest writer holds it (0:
    /// none). The ingest writer gives the ring up; the capture's writer clears it.
    pub(crate) local_claim: AtomicU32,
    /// CLOCK_MONOTONIC ns when the waiting capture last renewed its claim; a claim not renewed
    /// for a second is over (the capture gave up or died).
    pub(crate) local_claim_at: AtomicU64,
    /// The codec string of the stream (RFC 6381, as WebCodecs takes it: `avc1.42E01E`),
    /// NUL-padded ASCII; empty for JPEG and until the first H.264 keyframe. Written by the
    /// writer before it publishes a keyframe with new parameters, read relaxed: informational
    /// (a viewer's decoder is configured from the keyframe it starts at).
    pub(crate) codec_string: [AtomicU64; CODEC_STRING_MAX / WORD],
}

/// Room for the longest codec string a ring stores (`avc1.PPCCLL` needs 11).
pub(crate) const CODEC_STRING_MAX: usize = 32;

/// A claim of a waiting capture (`local_claim`) not renewed for this long is over: the capture
/// gave up or died. Time decides, not whether the pid runs, so a pid reused by another process
/// (or one from another pid namespace) holds nothing.
pub(crate) const CLAIM_LIFETIME: Duration = Duration::from_secs(1);

impl RingHeader {
    /// The pid of a capture on this host waiting for this ring, if its claim is current:
    /// renewed within [`CLAIM_LIFETIME`]. A claim stamped in the future (only a forger writes
    /// one) counts for nothing.
    pub(crate) fn live_local_claim(&self) -> Option<u32> {
        // Relaxed: a hint between processes that orders nothing else; whoever reads half of a
        // new claim decides again at its next look.
        let pid = self.local_claim.load(Relaxed);
        let claimed_at = MonoNanos(self.local_claim_at.load(Relaxed));
        let now = SystemClock.mono();
        (pid != 0 && claimed_at <= now && now.since(claimed_at) < CLAIM_LIFETIME).then_some(pid)
    }
}

/// `writer_kind`: a capture process on this host.
pub(crate) const KIND_LOCAL: u32 = 1;
/// `writer_kind`: a server worker writing what a remote camera sends (ingest).
pub(crate) const KIND_INGEST: u32 = 2;

// SAFETY: atomic integers and an array of them only (`repr(C)`, no padding: checked below).
unsafe impl Atomics for RingHeader {}
// SAFETY: atomic integers and an array of them only (`repr(C)`, the whole cache line spelled
// out: checked below).
unsafe impl Atomics for SlotMeta {}

const _: () = assert!(std::mem::size_of::<RingHeader>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<RingHeader>() == 200);
const _: () = assert!(std::mem::size_of::<SlotMeta>() == 8 * 8);
const _: () = assert!(SLOT_META_SIZE == SLOT_ALIGN);

/// Slot count and payload capacity of a ring: fixed for the life of a ring file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    pub slot_count: u32,
    /// Largest frame a slot holds, in bytes.
    pub slot_size: usize,
}

impl Default for RingGeometry {
    /// DESIGN.md's defaults: 8 slots of 2 MiB.
    fn default() -> Self {
        RingGeometry {
            slot_count: 8,
            slot_size: 2 << 20,
        }
    }
}

/// Sizes derived from a validated geometry, and the codec; every offset into a mapping is
/// computed from these cached values, never re-read from the (shared, hostile) header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) slot_count: u32,
    pub(crate) slot_size: usize,
    pub(crate) stride: usize,
    pub(crate) file_size: usize,
    pub(crate) codec: Codec,
}

impl Layout {
    pub(crate) fn new(g: RingGeometry, codec: Codec) -> Result<Layout, Error> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&g.slot_count) {
            return Err(Error::InvalidGeometry(format!(
                "{} slots (allowed: {MIN_SLOTS} to {MAX_SLOTS})",
                g.slot_count
            )));
        }
        if g.slot_size == 0 || g.slot_size > MAX_SLOT_SIZE {
            return Err(Error::InvalidGeometry(format!(
                "slot size {} bytes (allowed: 1 to {MAX_SLOT_SIZE})",
                g.slot_size
            )));
        }
        let stride = SLOT_META_SIZE + g.slot_size.next_multiple_of(SLOT_ALIGN);
        let file_size = (g.slot_count as usize)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(HEADER_SIZE))
            .filter(|&s| s as u64 <= MAX_FILE_SIZE)
            .ok_or_else(|| Error::InvalidGeometry(format!("{g:?} is too large")))?;
        Ok(Layout {
            slot_count: g.slot_count,
            slot_size: g.slot_size,
            stride,
            file_size,
            codec,
        })
    }

    pub(crate) fn geometry(&self) -> RingGeometry {
        RingGeometry {
            slot_count: self.slot_count,
            slot_size: self.slot_size,
        }
    }

    /// Checks a header found in a file of `file_len` bytes, treating every field as hostile.
    pub(crate) fn validate(
        header: &RingHeader,
        file_len: u64,
        path: &Path,
    ) -> Result<(Layout, CameraId), Error> {
        let bad = |reason: String| Error::BadHeader {
            path: path.to_owned(),
            reason,
        };
        if header.magic.load(Relaxed) != MAGIC {
            return Err(Error::BadMagic {
                path: path.to_owned(),
            });
        }
        let version = header.version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: LAYOUT_VERSION,
            });
        }
        let header_size = header.header_size.load(Relaxed);
        if header_size as usize != HEADER_SIZE {
            return Err(bad(format!(
                "header size {header_size}, expected {HEADER_SIZE}"
            )));
        }
        let format = header.format.load(Relaxed);
        let codec =
            codec_of(format).ok_or_else(|| bad(format!("unknown payload format {format}")))?;
        let slot_size = usize::try_from(header.slot_size.load(Relaxed)).unwrap_or(usize::MAX);
        let geometry = RingGeometry {
            slot_count: header.slot_count.load(Relaxed),
            slot_size,
        };
        let layout = Layout::new(geometry, codec).map_err(|e| bad(e.to_string()))?;
        let stride = header.slot_stride.load(Relaxed);
        if stride != layout.stride as u64 {
            return Err(bad(format!(
                "slot stride {stride}, expected {} for slot size {slot_size}",
                layout.stride
            )));
        }
        if file_len < layout.file_size as u64 {
            return Err(Error::Truncated {
                path: path.to_owned(),
                expected: layout.file_size as u64,
                actual: file_len,
            });
        }
        let camera = read_camera(header).map_err(|e| bad(e.to_string()))?;
        let head = header.head.load(Relaxed);
        if head > FrameNo::MAX_VALID.0 {
            return Err(bad(format!("head {head} is beyond any real frame number")));
        }
        Ok((layout, camera))
    }
}

fn read_camera(header: &RingHeader) -> Result<CameraId, Error> {
    let mut bytes = Vec::with_capacity(CameraId::MAX_LEN);
    for word in &header.camera {
        bytes.extend_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CameraId::new(&String::from_utf8_lossy(&bytes[..end]))
}

/// The codec string in the header, if one is there and looks like one.
pub(crate) fn read_codec_string(header: &RingHeader) -> Option<String> {
    let mut bytes = Vec::with_capacity(CODEC_STRING_MAX);
    for word in &header.codec_string {
        bytes.extend_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let plausible = |c: char| c.is_ascii_alphanumeric() || c == '.';
    (!text.is_empty() && text.chars().all(plausible)).then(|| text.to_owned())
}

/// Stores `codec` (at most [`CODEC_STRING_MAX`] bytes; longer is cut) as the header's codec
/// string.
pub(crate) fn write_codec_string(header: &RingHeader, codec: &str) {
    let mut bytes = [0u8; CODEC_STRING_MAX];
    let len = codec.len().min(CODEC_STRING_MAX);
    bytes[..len].copy_from_slice(&codec.as_bytes()[..len]);
    for (word, chunk) in header.codec_string.iter().zip(bytes.chunks_exact(WORD)) {
        let chunk: [u8; WORD] = chunk.try_into().expect("chunks_exact yields whole words");
        word.store(u64::from_le_bytes(chunk), Relaxed);
    }
}

pub(crate) fn write_camera(header: &RingHeader, camera: &CameraId) {
    let mut bytes = [0u8; CameraId::MAX_LEN];
    bytes[..camera.as_str().len()].copy_from_slice(camera.as_str().as_bytes());
    for (word, chunk) in header.camera.iter().zip(bytes.chunks_exact(WORD)) {
        let chunk: [u8; WORD] = chunk.try_into().expect("chunks_exact yields whole words");
        word.store(u64::from_le_bytes(chunk), Relaxed);
    }
}

/// Whether a process maps a ring to read it or to write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapAccess {
    Read,
    Write,
}

/// Maps the header page of `file` alone: enough to validate it before mapping the rest.
pub(crate) fn map_header(file: &File, access: MapAccess, path: &Path) -> Result<Mapping, Error> {
    map(file, HEADER_SIZE, access, path)
}

fn map(file: &File, len: usize, access: MapAccess, path: &Path) -> Result<Mapping, Error> {
    match access {
        MapAccess::Read => Mapping::read_only(file, len, path),
        MapAccess::Write => Mapping::read_write(file, len, path),
    }
}

/// The ring header at the start of a mapping of at least a header page.
pub(crate) fn header_of(map: &Mapping) -> &RingHeader {
    map.atomics_at(0)
}

/// A mapping of a whole ring file whose layout has been validated.
pub(crate) struct MappedRing {
    map: Mapping,
    layout: Layout,
}

impl MappedRing {
    /// Maps exactly the ring `layout` describes. Offsets into it come only from `layout`, never
    /// from the (shared, hostile) header again.
    pub(crate) fn map(
        file: &File,
        layout: Layout,
        access: MapAccess,
        path: &Path,
    ) -> Result<MappedRing, Error> {
        let map = map(file, layout.file_size, access, path)?;
        Ok(MappedRing { map, layout })
    }

    pub(crate) fn header(&self) -> &RingHeader {
        header_of(&self.map)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// See [`Mapping::is_damaged`].
    pub(crate) fn is_damaged(&self) -> bool {
        self.map.is_damaged()
    }
}

impl RingMemory for MappedRing {
    fn head(&self) -> &AtomicU64 {
        &self.header().head
    }

    fn slot_count(&self) -> u32 {
        self.layout.slot_count
    }

    fn slot_size(&self) -> usize {
        self.layout.slot_size
    }

    fn every_frame_is_key(&self) -> bool {
        self.layout.codec == Codec::Jpeg
    }

    fn slot(&self, index: usize) -> SlotRef<'_> {
        assert!(
            index < self.layout.slot_count as usize,
            "slot index out of range"
        );
        // Within the mapping: index < slot_count, and the mapping is `file_size` bytes, which the
        // layout computed as the header page plus `slot_count` strides.
        let offset = HEADER_SIZE + index * self.layout.stride;
        let words = (self.layout.stride - SLOT_META_SIZE) / WORD;
        SlotRef {
            meta: self.map.atomics_at(offset),
            payload: self.map.atomics_slice(offset + SLOT_META_SIZE, words),
        }
    }
}

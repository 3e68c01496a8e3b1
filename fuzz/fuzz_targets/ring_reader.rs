//! The ring reader on arbitrary file contents: the input becomes `<dir>/fuzz.ring`, which
//! `ringbuf::RingReader::open` maps; then `try_next`, `newest`, `info`, `writer_status` and the
//! rest of what the server calls, a few times. Nothing may panic; errors are fine.
//!
//! Most inputs start from a real ring file, written at start-up by `ringbuf::RingWriter`
//! (4 slots of 256 bytes, 6 frames published, so 2 overwritten), and describe patches to it, so
//! that they pass the header checks and reach the slots. The first byte picks the mode:
//!
//! - below 0x40: the rest of the input is the whole file;
//! - otherwise: the real ring, then records `[op][offset: u16 LE][n][n bytes]` applied in
//!   order: op % 4 = 0 writes the bytes at `offset` (modulo the file length), 1 in the header
//!   fields, 2 in the slots, 3 sets the file's length to `offset` (cutting or zero-filling).
//!
//! Invariants: the unpatched ring reads back its newest frame exactly; a frame read is at most
//! a slot long and numbered from 1 up to the head, and successive frames have rising numbers;
//! `newest` returns the head's frame; `info` reports the geometry the reader mapped.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringbuf::{CameraId, MonoNanos, RingGeometry, RingReader, RingWriter, VideoFormat, WallNanos};
use ringcast_fuzz::Input;

const GEOMETRY: RingGeometry = RingGeometry {
    slot_count: 4,
    slot_size: 256,
};
const HEADER_SIZE: usize = 4096;
/// The header struct fills the first 168 bytes; patches reach a little past it too.
const HEADER_FIELDS: usize = 176;

struct Setup {
    dir: PathBuf,
    ring: PathBuf,
    template: Vec<u8>,
    newest: Vec<u8>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(setup) = SETUP.get() {
        let _ = std::fs::remove_dir_all(&setup.dir);
    }
}

fn payload(n: usize, len: usize) -> Vec<u8> {
    let mut p = vec![0xFF, 0xD8];
    p.extend((0..len.saturating_sub(4)).map(|i| (i * 7 + n) as u8));
    p.extend_from_slice(&[0xFF, 0xD9]);
    p.truncate(len.max(4));
    p
}

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ringcast-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let camera = CameraId::new("fuzz").unwrap();
        let mut newest = Vec::new();
        let template = {
            let mut writer = RingWriter::create(&dir, &camera, GEOMETRY).expect("a real ring");
            writer.set_video_format(VideoFormat {
                width: 640,
                height: 480,
                fps_milli: 25_000,
            });
            for (n, len) in [10, 256, 4, 100, 200, 37].into_iter().enumerate() {
                newest = payload(n, len);
                writer
                    .publish(&newest, WallNanos(1_700_000_000_000_000_000 + n as u64))
                    .unwrap();
            }
            std::fs::read(writer.path()).unwrap()
        };
        std::fs::remove_file(dir.join("fuzz.ring")).unwrap();
        if let Some(seeds) = std::env::var_os("RINGCAST_FUZZ_SEED_DIR") {
            // Seeds for the corpus (fuzz/seeds.py): the real ring as a whole file, and unpatched.
            let seeds = PathBuf::from(seeds);
            let mut raw = vec![0u8; 9];
            raw.extend_from_slice(&template);
            std::fs::write(seeds.join("real-ring-file"), raw).unwrap();
            std::fs::write(seeds.join("real-ring-unpatched"), [0x40; 9]).unwrap();
        }
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_dir) };
        Setup {
            ring: dir.join("fuzz.ring"),
            dir,
            template,
            newest,
        }
    })
}

fn patched(template: &[u8], mut input: Input) -> (Vec<u8>, bool) {
    let mut file = template.to_vec();
    let mut patched = false;
    while !input.is_empty() {
        patched = true;
        let op = input.u8();
        let offset = usize::from(input.u16());
        let n = usize::from(input.u8());
        let bytes = input.bytes(n);
        let at = match op % 4 {
            0 if !file.is_empty() => offset % file.len(),
            1 => offset % HEADER_FIELDS,
            2 => HEADER_SIZE + offset % (template.len() - HEADER_SIZE),
            3 => {
                file.resize(offset, 0);
                continue;
            }
            _ => continue,
        };
        if file.len() < at + bytes.len() {
            file.resize(at + bytes.len(), 0);
        }
        file[at..at + bytes.len()].copy_from_slice(bytes);
    }
    (file, patched)
}

fn exercise(reader: &mut RingReader, now: u64, intact: Option<&[u8]>) {
    let mut out = vec![0xAA; 7];
    let geometry = reader.geometry();
    let mut last = 0;
    for round in 0..3 {
        let info = reader.info();
        assert_eq!(info.geometry, geometry);
        assert_eq!(info.camera, *reader.camera());
        let head = reader.head();
        if let Ok(Some(meta)) = reader.try_next(&mut out) {
            assert_eq!(out.len(), meta.len);
            assert!(meta.len <= geometry.slot_size);
            assert!(meta.frame_no.0 >= 1 && meta.frame_no <= head);
            assert!(meta.frame_no.0 > last, "frames go forward");
            last = meta.frame_no.0;
            if let Some(newest) = intact {
                assert_eq!(out, newest, "the newest frame as it was published");
            }
        } else if round == 0 {
            assert!(intact.is_none(), "the real ring gave no frame");
        }
        if let Some(meta) = reader.newest(&mut out) {
            assert_eq!(meta.frame_no, head);
            assert!(out.len() <= geometry.slot_size);
        }
        let _ = reader.writer_status(Duration::from_secs(5));
        let _ = reader.writer_status_at(MonoNanos(now), Duration::from_millis(now & 0xFFFF));
        let _ = reader.is_retired();
        let _ = reader.is_replaced();
        let _ = reader.stats();
        if round == 1 {
            reader.skip_to_newest();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let mut input = Input::new(data);
    let mode = input.u8();
    let now = input.u64();
    let (file, intact) = if mode < 0x40 {
        (input.rest().to_vec(), false)
    } else {
        let (file, patched) = patched(&setup.template, input);
        (file, !patched)
    };
    std::fs::write(&setup.ring, &file).unwrap();
    match RingReader::open(&setup.ring) {
        Ok(mut reader) => {
            assert_eq!(reader.path(), setup.ring.as_path());
            let newest = intact.then_some(setup.newest.as_slice());
            exercise(&mut reader, now, newest);
        }
        Err(e) => {
            assert!(!intact, "the real ring was refused: {e}");
            let _ = e.to_string();
        }
    }
});

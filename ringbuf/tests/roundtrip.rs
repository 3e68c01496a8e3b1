//! Property: whatever sequence of frame sizes is published, a reader that keeps up gets each
//! frame back byte for byte; frames larger than a slot are refused whole, and nothing is truncated.

use proptest::prelude::*;
use ringbuf::{CameraId, Error, FrameNo, RingGeometry, RingReader, RingWriter, WallNanos};

const SLOT_SIZE: usize = 3000;

fn frame_bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_round_trip_byte_for_byte(sizes in prop::collection::vec(0..=SLOT_SIZE + 64, 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let geometry = RingGeometry { slot_count: 3, slot_size: SLOT_SIZE };
        let mut writer = RingWriter::create(dir.path(), &CameraId::new("prop").unwrap(), geometry).unwrap();
        let mut reader = RingReader::open(writer.path()).unwrap();
        let mut buf = Vec::new();
        let mut expected_no = FrameNo::NONE;
        for (seed, &len) in sizes.iter().enumerate() {
            let payload = frame_bytes(seed as u64, len);
            match writer.publish(&payload, WallNanos(seed as u64)) {
                Ok(no) => {
                    prop_assert!(len <= SLOT_SIZE);
                    expected_no = expected_no.next();
                    prop_assert_eq!(no, expected_no);
                    let meta = reader.try_next(&mut buf).unwrap().expect("frame just published");
                    prop_assert_eq!(meta.frame_no, no);
                    prop_assert_eq!(meta.len, len);
                    prop_assert_eq!(&buf, &payload);
                }
                Err(Error::FrameTooLarge { len: refused, slot_size }) => {
                    prop_assert!(len > SLOT_SIZE);
                    prop_assert_eq!((refused, slot_size), (len, SLOT_SIZE));
                    prop_assert_eq!(writer.head(), expected_no);
                    prop_assert_eq!(reader.try_next(&mut buf).unwrap(), None);
                }
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }
        prop_assert_eq!(reader.stats().skipped, 0);
        let rejected = sizes.iter().filter(|&&l| l > SLOT_SIZE).count() as u64;
        prop_assert_eq!(reader.info().frames_rejected, rejected);
    }
}

//! What both ends of an H.264 ring need to know about the stream: where the NAL units of an
//! access unit are (Annex B framing), whether it is a keyframe, and its codec string.
//!
//! Written here rather than taken from a crate because it is three byte patterns: the start
//! code, the NAL header's type bits and the first three bytes of an SPS. Parsing an SPS in full
//! (for the picture size) is capture's business and uses `h264-reader`.

/// NAL unit types (ITU-T H.264, table 7-1) that ringcast looks at.
pub const NAL_IDR_SLICE: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_ACCESS_UNIT_DELIMITER: u8 = 9;

/// The NAL units of an Annex B byte stream, without their start codes (`00 00 01` or
/// `00 00 00 01`) and without the zero bytes that may trail them. Bytes before the first start
/// code are not a NAL unit and are passed over.
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = after_start_code(stream);
    std::iter::from_fn(move || {
        let unit = rest?;
        let (nal, next) = match find_start_code(unit) {
            Some(at) => (&unit[..at], Some(&unit[at + 3..])),
            None => (unit, None),
        };
        rest = next;
        Some(trim_trailing_zeros(nal))
    })
    .filter(|nal| !nal.is_empty())
}

/// The type of a NAL unit (its header's low five bits).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|header| header & 0x1F)
}

/// Whether an access unit holds an IDR picture: decodable on its own (given its parameter sets).
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|nal| nal_type(nal) == Some(NAL_IDR_SLICE))
}

/// The RFC 6381 codec string (`avc1.PPCCLL`: profile, constraint flags, level, in hex) of the
/// first SPS in `access_unit`, as WebCodecs and `/api/cameras` use it.
pub fn codec_string(access_unit: &[u8]) -> Option<String> {
    let sps = nal_units(access_unit).find(|nal| nal_type(nal) == Some(NAL_SPS))?;
    match sps.get(1..4)? {
        [profile, constraints, level] => {
            Some(format!("avc1.{profile:02X}{constraints:02X}{level:02X}"))
        }
        _ => None,
    }
}

/// `stream` after its first start code, if it has one.
fn after_start_code(stream: &[u8]) -> Option<&[u8]> {
    find_start_code(stream).map(|at| &stream[at + 3..])
}

/// Where the next `00 00 01` starts.
fn find_start_code(bytes: &[u8]) -> Option<usize> {
    bytes.windows(3).position(|w| w == [0, 0, 1])
}

fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &nal[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDR access unit as x264 writes it: AUD, SPS (High, level 3.1), PPS, one slice.
    const IDR_AU: &[u8] = &[
        0, 0, 0, 1, 0x09, 0xF0, // AUD
        0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, // SPS
        0, 0, 1, 0x68, 0xEB, 0xE3, 0xCB, // PPS
        0, 0, 1, 0x65, 0x88, 0x84, 0x00, // IDR slice
    ];
    const P_AU: &[u8] = &[0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0x9A, 0x21];

    #[test]
    fn nal_units_are_found_between_short_and_long_start_codes() {
        let types: Vec<_> = nal_units(IDR_AU).filter_map(nal_type).collect();
        assert_eq!(types, [9, 7, 8, 5]);
        let sps = nal_units(IDR_AU).nth(1).unwrap();
        assert_eq!(sps, &[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9]);
    }

    #[test]
    fn keyframes_are_access_units_with_an_idr_slice() {
        assert!(is_keyframe(IDR_AU));
        assert!(!is_keyframe(P_AU));
        assert!(!is_keyframe(b"no start code at all"));
    }

    #[test]
    fn the_codec_string_comes_from_the_sps() {
        assert_eq!(codec_string(IDR_AU).as_deref(), Some("avc1.64001F"));
        assert_eq!(codec_string(P_AU), None);
        assert_eq!(codec_string(&[0, 0, 1, 0x67, 0x42]), None, "SPS cut short");
    }

    #[test]
    fn garbage_yields_no_nal_units_and_no_panic() {
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1, 0, 0, 1]).count(), 0);
        assert_eq!(nal_units(&[7, 7, 0, 0, 1, 0x41]).count(), 1);
    }
}

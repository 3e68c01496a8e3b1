//! H.264 in capture: cutting a byte stream into access units ([`split`]), keeping every
//! keyframe decodable on its own ([`pipeline`]), reading the picture size from the SPS
//! ([`sps`]), encoding the test pattern ([`encoder`]), and decoding access units into JPEG for
//! the camera's JPEG copy ([`transcode`]).

pub mod encoder;
pub mod pipeline;
pub mod split;
pub mod sps;
pub mod transcode;

/// Whether NAL units of this type (a slice or a slice data partition) carry a picture.
fn carries_picture(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

/// Real parameter sets, for tests.
#[cfg(test)]
pub(crate) mod samples {
    /// x264's SPS for 320x240 at 30 fps (Constrained Baseline, level 1.3).
    pub const SPS_320X240_30: &[u8] = &[
        0x67, 0x42, 0xC0, 0x0D, 0xDA, 0x05, 0x07, 0xEC, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0F, 0x03, 0xC5, 0x0A, 0xA8,
    ];
    /// A PPS to go with it.
    pub const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
}

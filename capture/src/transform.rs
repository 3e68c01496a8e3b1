//! Per-frame picture changes: `--rotate`/`--flip` as one lossless JPEG transform, and
//! `--timestamp` drawn into the decoded YUV planes before re-encoding.

use turbojpeg::{
    Compressor, Decompressor, Image, PixelFormat, Transform, TransformOp, Transformer, YuvImage,
};

use crate::cli::{Flip, Rotation};
use crate::overlay::{text_rect, text_scale, PlaneLayout, Planes};

/// The single JPEG transform that rotates clockwise by `rotate` and then mirrors by `flip`.
pub fn combined_op(rotate: Option<Rotation>, flip: Option<Flip>) -> TransformOp {
    use Flip::{Horizontal as H, Vertical as V};
    use Rotation::{R180, R270, R90};
    match (rotate, flip) {
        (None, None) => TransformOp::None,
        (None, Some(H)) | (Some(R180), Some(V)) => TransformOp::Hflip,
        (None, Some(V)) | (Some(R180), Some(H)) => TransformOp::Vflip,
        (Some(R90), None) => TransformOp::Rot90,
        (Some(R180), None) => TransformOp::Rot180,
        (Some(R270), None) => TransformOp::Rot270,
        (Some(R90), Some(H)) | (Some(R270), Some(V)) => TransformOp::Transpose,
        (Some(R90), Some(V)) | (Some(R270), Some(H)) => TransformOp::Transverse,
    }
}

/// Rotates/flips JPEG frames. Lossless when the picture is a whole number of MCU blocks along
/// the edges the operation moves; otherwise the frame is decoded, moved pixel by pixel and
/// re-encoded, so the output always has the full picture (a lossless transform would have to
/// drop or garble the partial edge blocks).
pub struct Orienter {
    op: TransformOp,
    quality: i32,
    transformer: Transformer,
    decompressor: Decompressor,
    compressor: Compressor,
    rgb: Vec<u8>,
    moved: Vec<u8>,
}

impl Orienter {
    pub fn new(op: TransformOp, quality: u8) -> Result<Orienter, turbojpeg::Error> {
        Ok(Orienter {
            op,
            quality: i32::from(quality),
            transformer: Transformer::new()?,
            decompressor: Decompressor::new()?,
            compressor: Compressor::new()?,
            rgb: Vec::new(),
            moved: Vec::new(),
        })
    }

    /// Whether the output is the input's height wide and width high.
    pub fn swaps_axes(&self) -> bool {
        swaps_axes(self.op)
    }

    pub fn apply(&mut self, jpeg: &[u8]) -> Result<Vec<u8>, turbojpeg::Error> {
        let mut lossless = Transform::op(self.op);
        lossless.perfect = true;
        match self.transformer.transform_to_vec(&lossless, jpeg) {
            Ok(out) => Ok(out),
            Err(_) => self.reencode(jpeg),
        }
    }

    fn reencode(&mut self, jpeg: &[u8]) -> Result<Vec<u8>, turbojpeg::Error> {
        let header = self.decompressor.read_header(jpeg)?;
        let (w, h) = (header.width, header.height);
        const BPP: usize = 3;
        self.rgb.resize(w * h * BPP, 0);
        let image = Image {
            pixels: &mut self.rgb[..],
            width: w,
            pitch: w * BPP,
            height: h,
            format: PixelFormat::RGB,
        };
        self.decompressor.decompress(jpeg, image)?;
        let (out_w, out_h) = move_pixels(self.op, &self.rgb, w, h, BPP, &mut self.moved);
        self.compressor.set_quality(self.quality)?;
        self.compressor.set_subsamp(match header.subsamp {
            turbojpeg::Subsamp::Gray => turbojpeg::Subsamp::Gray,
            _ => turbojpeg::Subsamp::Sub2x2,
        })?;
        self.compressor.compress_to_vec(Image {
            pixels: &self.moved[..],
            width: out_w,
            pitch: out_w * BPP,
            height: out_h,
            format: PixelFormat::RGB,
        })
    }
}

/// Where pixel (x, y) of a `w`×`h` picture lands under `op`, and the output size.
pub fn destination(op: TransformOp, x: usize, y: usize, w: usize, h: usize) -> (usize, usize) {
    match op {
        TransformOp::Hflip => (w - 1 - x, y),
        TransformOp::Vflip => (x, h - 1 - y),
        TransformOp::Transpose => (y, x),
        TransformOp::Transverse => (h - 1 - y, w - 1 - x),
        TransformOp::Rot90 => (h - 1 - y, x),
        TransformOp::Rot180 => (w - 1 - x, h - 1 - y),
        TransformOp::Rot270 => (y, w - 1 - x),
        _ => (x, y),
    }
}

/// Whether `op` swaps width and height.
pub fn swaps_axes(op: TransformOp) -> bool {
    matches!(
        op,
        TransformOp::Transpose | TransformOp::Transverse | TransformOp::Rot90 | TransformOp::Rot270
    )
}

fn move_pixels(
    op: TransformOp,
    src: &[u8],
    w: usize,
    h: usize,
    bpp: usize,
    dst: &mut Vec<u8>,
) -> (usize, usize) {
    let (out_w, out_h) = if swaps_axes(op) { (h, w) } else { (w, h) };
    dst.resize(out_w * out_h * bpp, 0);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = destination(op, x, y, w, h);
            let s = (y * w + x) * bpp;
            let d = (dy * out_w + dx) * bpp;
            dst[d..d + bpp].copy_from_slice(&src[s..s + bpp]);
        }
    }
    (out_w, out_h)
}

/// Draws the camera name and wall-clock time onto JPEG frames (decode to YUV, draw, re-encode
/// with the same chroma subsampling).
pub struct Stamper {
    camera: String,
    quality: i32,
    decompressor: Decompressor,
    compressor: Compressor,
    yuv: Vec<u8>,
}

impl Stamper {
    pub fn new(camera: String, quality: u8) -> Result<Stamper, turbojpeg::Error> {
        Ok(Stamper {
            camera,
            quality: i32::from(quality),
            decompressor: Decompressor::new()?,
            compressor: Compressor::new()?,
            yuv: Vec::new(),
        })
    }

    pub fn apply(&mut self, jpeg: &[u8], text_time: &str) -> Result<Vec<u8>, turbojpeg::Error> {
        let header = self.decompressor.read_header(jpeg)?;
        let len = turbojpeg::yuv_pixels_len(header.width, 1, header.height, header.subsamp)?;
        self.yuv.resize(len, 0);
        let mut image = YuvImage {
            pixels: &mut self.yuv[..],
            width: header.width,
            align: 1,
            height: header.height,
            subsamp: header.subsamp,
        };
        self.decompressor
            .decompress_to_yuv(jpeg, image.as_deref_mut())?;
        let layout = PlaneLayout::of(&image);
        if let Some(mut planes) = Planes::split(layout, image.pixels) {
            let text = format!("{} {}", self.camera, text_time);
            let scale = text_scale(header.width, header.height, text.chars().count());
            let margin = 4 * scale;
            let area = text_rect(0, 0, scale, &text);
            let y = header.height.saturating_sub(area.h + margin);
            planes.draw_text_contrasting(margin, y, scale, &text);
        }
        self.compressor.set_quality(self.quality)?;
        self.compressor.compress_yuv_to_vec(YuvImage {
            pixels: &self.yuv[..],
            width: header.width,
            align: 1,
            height: header.height,
            subsamp: header.subsamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_then_flip_compose_to_one_operation() {
        // Check the table against doing the two steps one after the other on a 3x2 picture.
        let rotations = [
            None,
            Some(Rotation::R90),
            Some(Rotation::R180),
            Some(Rotation::R270),
        ];
        let flips = [None, Some(Flip::Horizontal), Some(Flip::Vertical)];
        let (w, h) = (3, 2);
        for rotate in rotations {
            for flip in flips {
                let r_op = combined_op(rotate, None);
                let f_op = combined_op(None, flip);
                let both = combined_op(rotate, flip);
                for y in 0..h {
                    for x in 0..w {
                        let (rx, ry) = destination(r_op, x, y, w, h);
                        let (rw, rh) = if swaps_axes(r_op) { (h, w) } else { (w, h) };
                        let stepwise = destination(f_op, rx, ry, rw, rh);
                        assert_eq!(
                            destination(both, x, y, w, h),
                            stepwise,
                            "{rotate:?} then {flip:?}"
                        );
                    }
                }
            }
        }
    }
}

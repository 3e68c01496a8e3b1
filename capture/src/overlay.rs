//! Text on pictures: the timestamp (`--timestamp`) and the test pattern's captions, drawn with
//! the font8x8 bitmap font straight into a YUV image's planes, so no font file is needed.

use font8x8::legacy::BASIC_LEGACY;
use turbojpeg::{Subsamp, YuvImage};

/// Glyph cell of the bitmap font, in font pixels.
const GLYPH: usize = 8;
/// Luma of "white" and "black" text (full range JPEG YUV).
const WHITE: u8 = 255;
const BLACK: u8 = 0;
const NEUTRAL_CHROMA: u8 = 128;

/// Plane geometry of a planar YUV image as turbojpeg lays it out (Y, then U, then V).
#[derive(Debug, Clone, Copy)]
pub struct PlaneLayout {
    pub width: usize,
    pub height: usize,
    pub y_stride: usize,
    pub y_rows: usize,
    pub uv_stride: usize,
    pub uv_rows: usize,
    /// Horizontal and vertical chroma subsampling factors; `None` for grayscale.
    pub chroma: Option<(usize, usize)>,
}

impl PlaneLayout {
    pub fn of<T>(image: &YuvImage<T>) -> PlaneLayout {
        let chroma = match image.subsamp {
            Subsamp::Gray => None,
            other => Some((other.width(), other.height())),
        };
        PlaneLayout {
            width: image.width,
            height: image.height,
            y_stride: image.y_width(),
            y_rows: image.y_height(),
            uv_stride: image.uv_width(),
            uv_rows: image.uv_height(),
            chroma,
        }
    }

    pub fn y_len(&self) -> usize {
        self.y_stride * self.y_rows
    }

    pub fn uv_len(&self) -> usize {
        self.chroma.map_or(0, |_| self.uv_stride * self.uv_rows)
    }
}

/// Mutable views of the three planes of a YUV image.
pub struct Planes<'a> {
    pub layout: PlaneLayout,
    pub y: &'a mut [u8],
    pub u: &'a mut [u8],
    pub v: &'a mut [u8],
}

impl<'a> Planes<'a> {
    /// Splits a turbojpeg YUV buffer into its planes; `None` if the buffer is too short.
    pub fn split(layout: PlaneLayout, pixels: &'a mut [u8]) -> Option<Planes<'a>> {
        let (y_len, uv_len) = (layout.y_len(), layout.uv_len());
        if pixels.len() < y_len + 2 * uv_len {
            return None;
        }
        let (y, rest) = pixels.split_at_mut(y_len);
        let (u, rest) = rest.split_at_mut(uv_len);
        let v = &mut rest[..uv_len];
        Some(Planes { layout, y, u, v })
    }

    /// Mean luma of a rectangle (clipped to the picture); 128 if it is empty.
    pub fn mean_luma(&self, rect: Rect) -> u8 {
        let rect = rect.clip(self.layout.width, self.layout.height);
        let (mut sum, mut count) = (0u64, 0u64);
        // Every other row and column is plenty to tell bright from dark.
        for row in (rect.y..rect.y + rect.h).step_by(2) {
            let line = &self.y[row * self.layout.y_stride..];
            for &px in line[rect.x..rect.x + rect.w].iter().step_by(2) {
                sum += u64::from(px);
                count += 1;
            }
        }
        sum.checked_div(count).map_or(128, |mean| mean as u8)
    }

    /// Sets one pixel to a gray level (luma, and neutral chroma where it has chroma).
    fn put_gray(&mut self, x: usize, y: usize, luma: u8) {
        let l = self.layout;
        if x >= l.width || y >= l.height {
            return;
        }
        self.y[y * l.y_stride + x] = luma;
        if let Some((sx, sy)) = l.chroma {
            let i = (y / sy) * l.uv_stride + x / sx;
            self.u[i] = NEUTRAL_CHROMA;
            self.v[i] = NEUTRAL_CHROMA;
        }
    }

    /// Fills a rectangle with one YUV colour.
    pub fn fill(&mut self, rect: Rect, (y, u, v): (u8, u8, u8)) {
        let l = self.layout;
        let rect = rect.clip(l.width, l.height);
        for row in rect.y..rect.y + rect.h {
            let start = row * l.y_stride + rect.x;
            self.y[start..start + rect.w].fill(y);
        }
        if let Some((sx, sy)) = l.chroma {
            let (x0, x1) = (rect.x / sx, (rect.x + rect.w).div_ceil(sx));
            for row in rect.y / sy..(rect.y + rect.h).div_ceil(sy) {
                let start = row * l.uv_stride;
                self.u[start + x0..start + x1].fill(u);
                self.v[start + x0..start + x1].fill(v);
            }
        }
    }

    /// Draws `text` with its top-left corner at (`x`, `y`), each font pixel `scale` pixels wide.
    pub fn draw_text(&mut self, x: usize, y: usize, scale: usize, text: &str, luma: u8) {
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph_of(c);
            let left = x + i * GLYPH * scale;
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..GLYPH {
                    // font8x8 stores the leftmost pixel in the lowest bit.
                    if bits & (1 << gx) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            self.put_gray(left + gx * scale + dx, y + gy * scale + dy, luma);
                        }
                    }
                }
            }
        }
    }

    /// Draws `text` with each character in black where the picture behind it is bright and in
    /// white where it is dark, so it stays readable across a varied background.
    pub fn draw_text_contrasting(&mut self, x: usize, y: usize, scale: usize, text: &str) {
        let cell = GLYPH * scale;
        for (i, c) in text.chars().enumerate() {
            let left = x + i * cell;
            let behind = self.mean_luma(Rect {
                x: left,
                y,
                w: cell,
                h: cell,
            });
            let luma = if behind > 128 { BLACK } else { WHITE };
            let mut utf8 = [0u8; 4];
            self.draw_text(left, y, scale, c.encode_utf8(&mut utf8), luma);
        }
    }
}

fn glyph_of(c: char) -> [u8; 8] {
    let index = c as usize;
    if index < BASIC_LEGACY.len() {
        BASIC_LEGACY[index]
    } else {
        BASIC_LEGACY[b'?' as usize]
    }
}

/// The area `text` covers when drawn at (`x`, `y`) with `scale`.
pub fn text_rect(x: usize, y: usize, scale: usize, text: &str) -> Rect {
    Rect {
        x,
        y,
        w: text.chars().count() * GLYPH * scale,
        h: GLYPH * scale,
    }
}

/// A text scale that reads well at a picture's height (8-pixel glyphs for 240 lines and below)
/// and still fits `chars` characters (plus margins) across its width.
pub fn text_scale(width: usize, height: usize, chars: usize) -> usize {
    let by_height = height / 240;
    let by_width = width / ((chars + 1) * GLYPH).max(1);
    by_height.min(by_width).clamp(1, 8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Rect {
    fn clip(self, width: usize, height: usize) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Rect {
            x,
            y,
            w: self.w.min(width - x),
            h: self.h.min(height - y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: usize, height: usize, luma: u8) -> (PlaneLayout, Vec<u8>) {
        let yuv = YuvImage {
            pixels: (),
            width,
            align: 1,
            height,
            subsamp: Subsamp::Sub2x2,
        };
        let layout = PlaneLayout::of(&yuv);
        let mut pixels = vec![NEUTRAL_CHROMA; layout.y_len() + 2 * layout.uv_len()];
        pixels[..layout.y_len()].fill(luma);
        (layout, pixels)
    }

    #[test]
    fn text_is_dark_on_bright_and_bright_on_dark() {
        for (background, expected) in [(230, BLACK), (20, WHITE)] {
            let (layout, mut pixels) = image(64, 32, background);
            let mut planes = Planes::split(layout, &mut pixels).unwrap();
            planes.draw_text_contrasting(0, 0, 1, "8");
            assert!(planes.y.contains(&expected));
        }
    }

    #[test]
    fn drawing_past_the_edge_is_clipped_not_a_panic() {
        let (layout, mut pixels) = image(20, 10, 0);
        let mut planes = Planes::split(layout, &mut pixels).unwrap();
        planes.draw_text_contrasting(15, 5, 3, "clipped text");
        planes.fill(
            Rect {
                x: 18,
                y: 8,
                w: 100,
                h: 100,
            },
            (1, 2, 3),
        );
        assert_eq!(planes.y[9 * 20 + 19], 1);
    }
}

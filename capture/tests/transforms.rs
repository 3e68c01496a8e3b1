//! Rotate/flip, timestamp and drop-same-frames, on frames fed through stdin.

mod common;

use common::*;
use ringbuf::RingReader;

/// The newest frame of a finished capture, decoded.
fn newest_image(dir: &std::path::Path, camera: &str) -> turbojpeg::Image<Vec<u8>> {
    let reader = RingReader::open(&ring_file(dir, camera)).unwrap();
    let mut jpeg = Vec::new();
    reader.newest(&mut jpeg).expect("a frame was published");
    decode(&jpeg)
}

/// Pixel (x, y) of `image` as RGB.
fn px(image: &turbojpeg::Image<Vec<u8>>, x: usize, y: usize) -> [u8; 3] {
    let i = y * image.pitch + x * 3;
    [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]]
}

/// Mean absolute difference between `got` and `reference` seen through `map`, which gives for
/// each output pixel the reference pixel it should show.
fn mean_difference(
    got: &turbojpeg::Image<Vec<u8>>,
    reference: &turbojpeg::Image<Vec<u8>>,
    map: impl Fn(usize, usize) -> (usize, usize),
) -> f64 {
    let mut total = 0u64;
    for y in 0..got.height {
        for x in 0..got.width {
            let (rx, ry) = map(x, y);
            let (a, b) = (px(got, x, y), px(reference, rx, ry));
            total += (0..3).map(|c| u64::from(a[c].abs_diff(b[c]))).sum::<u64>();
        }
    }
    total as f64 / (got.width * got.height * 3) as f64
}

fn check_orientation(
    width: usize,
    height: usize,
    flags: &[&str],
    expect_swap: bool,
    map: impl Fn(usize, usize, usize, usize) -> (usize, usize),
    tolerance: f64,
) {
    let source = make_jpeg(width, height, 40);
    let reference = decode(&source);
    let dir = run_on_stdin("turned", std::slice::from_ref(&source), flags);
    let got = newest_image(dir.path(), "turned");
    let expected = if expect_swap {
        (height, width)
    } else {
        (width, height)
    };
    assert_eq!(
        (got.width, got.height),
        expected,
        "{flags:?}: wrong dimensions"
    );
    let diff = mean_difference(&got, &reference, |x, y| map(x, y, width, height));
    assert!(
        diff < tolerance,
        "{flags:?}: pixels differ from the reference by {diff:.2} on average"
    );
}

#[test]
fn rotation_and_flips_give_the_expected_dimensions_and_pixels() {
    // 64x48 is a whole number of MCUs: the lossless path. 100x60 is not: the re-encode path.
    for (w, h, tolerance) in [(64, 48, 1.5), (100, 60, 4.0)] {
        check_orientation(
            w,
            h,
            &["--rotate", "90"],
            true,
            |x, y, _w, h| (y, h - 1 - x),
            tolerance,
        );
        check_orientation(
            w,
            h,
            &["--rotate", "180"],
            false,
            |x, y, w, h| (w - 1 - x, h - 1 - y),
            tolerance,
        );
        check_orientation(
            w,
            h,
            &["--rotate", "270"],
            true,
            |x, y, w, _h| (w - 1 - y, x),
            tolerance,
        );
        check_orientation(
            w,
            h,
            &["--flip", "h"],
            false,
            |x, y, w, _h| (w - 1 - x, y),
            tolerance,
        );
        check_orientation(
            w,
            h,
            &["--flip", "v"],
            false,
            |x, y, _w, h| (x, h - 1 - y),
            tolerance,
        );
        // Rotate first, then mirror the rotated picture.
        check_orientation(
            w,
            h,
            &["--rotate", "90", "--flip", "h"],
            true,
            |x, y, _w, _h| (y, x),
            tolerance,
        );
    }
}

#[test]
fn the_timestamp_is_drawn_bottom_left_and_the_rest_of_the_picture_is_kept() {
    let (w, h) = (320, 240);
    let source = make_jpeg(w, h, 10);
    let reference = decode(&source);
    let dir = run_on_stdin("stamped", std::slice::from_ref(&source), &["--timestamp"]);
    let got = newest_image(dir.path(), "stamped");
    assert_eq!((got.width, got.height), (w, h));
    // Text rows: the bottom 8..20 pixel rows at scale 1, starting at x = 4.
    let text_band_changed = (h - 12..h - 4)
        .flat_map(|y| (4..100).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (a, b) = (px(&got, x, y), px(&reference, x, y));
            (0..3).any(|c| a[c].abs_diff(b[c]) > 60)
        })
        .count();
    assert!(
        text_band_changed > 50,
        "no text found bottom-left ({text_band_changed} pixels changed)"
    );
    let top_half = turbojpeg::Image {
        pixels: got.pixels[..got.pitch * (h / 2)].to_vec(),
        width: w,
        pitch: got.pitch,
        height: h / 2,
        format: got.format,
    };
    let diff = mean_difference(&top_half, &reference, |x, y| (x, y));
    assert!(
        diff < 3.0,
        "the picture away from the text changed by {diff:.2} on average"
    );
}

#[test]
fn identical_frames_are_dropped_up_to_n_in_a_row() {
    let same = make_jpeg(64, 48, 1);
    let mut frames = vec![same.clone(); 10];
    frames.push(make_jpeg(64, 48, 2));
    let dir = run_on_stdin("static", &frames, &["--drop-same-frames", "3"]);
    let reader = RingReader::open(&ring_file(dir.path(), "static")).unwrap();
    // Kept: the 1st, 5th and 9th of the ten identical frames, and the different one.
    assert_eq!(reader.info().frames_published, 4);
}

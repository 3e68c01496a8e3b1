//! Numbers as the report prints them: few digits, units attached, "–" for what was not measured.

pub const MISSING: &str = "–";

pub fn number(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => MISSING.to_owned(),
    }
}

/// Milliseconds with one decimal below 100 ms, where the decimal still carries information.
pub fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v.abs() < 100.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.0} ms"),
        None => MISSING.to_owned(),
    }
}

pub fn seconds_from_ms(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{:.2} s", v / 1000.0),
        None => MISSING.to_owned(),
    }
}

pub fn ratio(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{v:.2}×"),
        None => MISSING.to_owned(),
    }
}

/// A signed relative change, `+3.2 %` for 1.032.
pub fn change(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:+.1} %", (r - 1.0) * 100.0),
        None => MISSING.to_owned(),
    }
}

pub fn duration_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Decimal units, as frame sizes and rates are quoted elsewhere in the docs.
pub fn bytes(value: f64) -> String {
    if value < 1e3 {
        format!("{value:.0} B")
    } else if value < 1e6 {
        format!("{:.1} kB", value / 1e3)
    } else {
        format!("{:.2} MB", value / 1e6)
    }
}

/// Bytes as compared with a target in KiB.
pub fn bytes_and_kib(value: f64) -> String {
    format!("{value:.0} B ({:.1} KiB)", value / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_carry_units_and_missing_ones_a_dash() {
        assert_eq!(ms(Some(37.04)), "37.0 ms");
        assert_eq!(ms(Some(177.4)), "177 ms");
        assert_eq!(ms(None), MISSING);
        assert_eq!(ratio(Some(1.094)), "1.09×");
        assert_eq!(change(Some(0.968)), "-3.2 %");
        assert_eq!(duration_ns(1234.5), "1.23 µs");
        assert_eq!(bytes(6400.0), "6.4 kB");
        assert_eq!(bytes_and_kib(6400.0), "6400 B (6.2 KiB)");
        assert_eq!(number(Some(f64::NAN), 1), MISSING);
    }
}

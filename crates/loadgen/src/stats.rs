//! Figures and how they are summarised: latency histograms (HDR, microseconds, 3 significant
//! digits), the median and range over repetitions, and the formatting used in every report.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency a histogram holds exactly, in microseconds; longer ones are clamped to it.
/// Far above any request timeout, so nothing real is clamped.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;
/// Significant decimal digits kept: 3 means a value is off by at most 0.1%.
const HISTOGRAM_SIGFIGS: u8 = 3;

/// An empty latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, HISTOGRAM_SIGFIGS).expect("valid histogram bounds")
}

/// Records `d` in microseconds (at least 1, the histogram's lowest value).
pub fn record(histogram: &mut Histogram<u64>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(micros);
}

/// Latency figures of one phase, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The median and range of one figure over the repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1] })
    }

    /// `median (min–max)` with `fmt` for each, or just the value when all are equal.
    pub fn format(&self, fmt: impl Fn(f64) -> String) -> String {
        if self.min == self.max {
            fmt(self.median)
        } else {
            format!("{} ({}–{})", fmt(self.median), fmt(self.min), fmt(self.max))
        }
    }
}

/// A rate with thousands separators: `12,345`.
pub fn fmt_count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as milliseconds, without unit, with a precision that suits the size: `0.412`,
/// `12.34`, `250`.
pub fn fmt_millis(micros: f64) -> String {
    let ms = micros / 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

/// [`fmt_millis`] with its unit: `0.412 ms`.
pub fn fmt_ms(micros: f64) -> String {
    format!("{} ms", fmt_millis(micros))
}

/// A share of one core (or of anything) as a percentage, `?` where it could not be read.
pub fn fmt_share(share: Option<f64>) -> String {
    share.map_or_else(|| "?".to_owned(), |s| format!("{:.0}%", s * 100.0))
}

/// A phase's duration: `2 s`, `1.5 s`, `500 ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// A duration argument: `500ms`, `2s`, or seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Duration::from_secs_f64(v * unit)),
        _ => Err(format!("`{s}` is not a positive duration such as 500ms, 2s or 2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn medians_and_ranges() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 4.0]).unwrap().median, 2.5);
        assert!(Spread::of([]).is_none());
        assert_eq!(s.format(fmt_count), "2 (1–3)");
        assert_eq!(Spread::of([5.0]).unwrap().format(fmt_count), "5");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_count(1234567.4), "1,234,567");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_ms(412.0), "0.412 ms");
        assert_eq!(fmt_ms(12_340.0), "12.34 ms");
        assert_eq!(fmt_ms(250_000.0), "250 ms");
        assert_eq!(fmt_millis(12_340.0), "12.34");
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(fmt_duration(Duration::from_millis(500)), "500 ms");
    }

    #[test]
    fn histograms_round_to_three_digits() {
        let mut h = histogram();
        record(&mut h, Duration::from_micros(1234));
        record(&mut h, Duration::ZERO);
        let l = Latency::of(&h);
        assert_eq!(l.p50, 1);
        assert!((1233..=1235).contains(&l.max));
    }
}

//! Latency samples, percentiles, medians over repeated runs, and the plain-text tables the report
//! is made of.

use std::fmt::Write as _;
use std::time::Duration;

/// What the clients of one timed phase measured.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    /// Latency of every successful operation, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Operations that failed (transport error, timeout or unexpected status).
    pub errors: usize,
    /// The first failure, verbatim enough to report a server bug.
    pub first_error: Option<String>,
    /// From the first operation's start to the last one's end.
    pub wall: Duration,
    /// The phase stopped at its time cap before doing all its operations.
    pub capped: bool,
}

impl Phase {
    /// Adds one client's results.
    pub fn absorb(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.capped |= other.capped;
    }

    /// Records a failure; the first one is kept.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Sorted latencies and rates of this phase.
    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let secs = self.wall.as_secs_f64();
        Summary {
            count: sorted.len(),
            errors: self.errors,
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            throughput: if secs > 0.0 { sorted.len() as f64 / secs } else { 0.0 },
            capped: self.capped,
        }
    }
}

/// Nearest-rank percentile of sorted nanoseconds; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One phase, reduced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub errors: usize,
    pub p50: u64,
    pub p99: u64,
    /// Successful operations per second of wall time.
    pub throughput: f64,
    pub capped: bool,
}

/// The same phase repeated: medians of each figure and the spread of the throughput.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repeated {
    pub runs: usize,
    pub count: usize,
    pub errors: usize,
    pub p50: u64,
    pub p99: u64,
    pub throughput: f64,
    pub throughput_min: f64,
    pub throughput_max: f64,
    pub capped: bool,
}

impl Repeated {
    pub fn of(runs: &[Summary]) -> Repeated {
        let throughputs: Vec<f64> = runs.iter().map(|s| s.throughput).collect();
        Repeated {
            runs: runs.len(),
            count: median_u64(runs.iter().map(|s| s.count as u64).collect()) as usize,
            errors: runs.iter().map(|s| s.errors).sum(),
            p50: median_u64(runs.iter().map(|s| s.p50).collect()),
            p99: median_u64(runs.iter().map(|s| s.p99).collect()),
            throughput: median_f64(throughputs.clone()),
            throughput_min: throughputs.iter().copied().fold(f64::INFINITY, f64::min),
            throughput_max: throughputs.iter().copied().fold(0.0, f64::max),
            capped: runs.iter().any(|s| s.capped),
        }
    }
}

/// Median (mean of the middle two for an even count); 0 when empty.
pub fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    match values.len() {
        0 => 0,
        n if !n.is_multiple_of(2) => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// Median (mean of the middle two for an even count); 0 when empty.
pub fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Nanoseconds as `µs` below 1 ms, as `ms` below 1 s, else as `s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..10_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        10_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A rate with thousands separated by spaces, as in DESIGN.md.
pub fn fmt_rate(rate: f64) -> String {
    if rate < 100.0 {
        return format!("{rate:.1}");
    }
    group_thousands(rate.round() as u64)
}

/// `1234567` as `1 234 567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A plain-text table: the first column (or the first few) left-aligned, the others right-aligned.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new(), left: 1 }
    }

    /// Left-aligns the first `n` columns.
    pub fn left_aligned(mut self, n: usize) -> Table {
        self.left = n;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = width - cell.chars().count();
                if i > 0 {
                    out.push_str("  ");
                }
                if i < self.left {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = String::new();
        let _ = writeln!(out, "{}", line(&self.header));
        let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }
}

/// A small deterministic generator for picking keys (xorshift64).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median_u64(vec![5, 1, 3]), 3);
        assert_eq!(median_u64(vec![4, 1, 3, 2]), 2);
        assert!((median_f64(vec![2.0, 1.0]) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn formats() {
        assert_eq!(group_thousands(1_234_567), "1 234 567");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(fmt_ns(548_000), "548 µs");
        assert_eq!(fmt_ns(2_200_000), "2.20 ms");
        assert_eq!(fmt_ns(23_400_000), "23.4 ms");
        assert_eq!(fmt_ns(2_918_800_000), "2.92 s");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["op", "p50"]);
        table.row(vec!["create".into(), "1 ms".into()]);
        let text = table.render();
        assert_eq!(text, "op       p50\n------  ----\ncreate  1 ms\n");
    }
}

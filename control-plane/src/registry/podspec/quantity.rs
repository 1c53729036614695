//! Kubernetes resource quantities (`500m`, `1Gi`, `2e3`): parsing, comparison and the canonical
//! form the API server writes back (`1000m` → `1`, `1024Mi` → `1Gi`).
//!
//! Values are held as an `i128` count of nano-units, which covers every quantity the API accepts
//! in practice (up to ~1.7e29 units); parsing rounds finer values up to the next nano-unit, as
//! Kubernetes does.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// The regular expression Kubernetes quotes when a quantity does not parse.
pub(crate) const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const NANO: i128 = 1_000_000_000;

/// How the quantity was written; decides the suffix family of the canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `k`, `M`, `m`, … or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, …
    BinarySI,
    /// `e3`, `E-2`.
    DecimalExponent,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Quantity {
    pub(crate) fn zero() -> Self {
        Quantity { nanos: 0, format: Format::DecimalSI }
    }

    /// Parses the string form; `Err` carries the message Kubernetes gives.
    pub(crate) fn parse(s: &str) -> Result<Self, &'static str> {
        parse(s).ok_or(QUANTITY_FORMAT_ERROR)
    }

    /// Parses a JSON value: a string, or a plain number as YAML often produces (`cpu: 1`).
    pub(crate) fn from_json(v: &Value) -> Result<Self, &'static str> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            _ => Err(QUANTITY_FORMAT_ERROR),
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value in milli-units, rounded up (Kubernetes' `MilliValue`).
    pub(crate) fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    pub(crate) fn add(&self, other: &Quantity) -> Quantity {
        Quantity { nanos: self.nanos.saturating_add(other.nanos), format: self.format }
    }

    /// Rounds up to milli precision, as `SetDefaults_ResourceList` does for container resources.
    pub(crate) fn round_up_milli(&self) -> Quantity {
        Quantity { nanos: ceil_div(self.nanos, 1_000_000) * 1_000_000, format: self.format }
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

fn parse(s: &str) -> Option<Quantity> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let start_int = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &s[start_int..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let start_frac = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &s[start_frac..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let suffix = &s[i..];
    // (base, exponent, format): the value is mantissa × base^exponent.
    let (base, exponent, format): (i128, u32, Format) = match suffix {
        "" => (10, 0, Format::DecimalSI),
        "Ki" => (2, 10, Format::BinarySI),
        "Mi" => (2, 20, Format::BinarySI),
        "Gi" => (2, 30, Format::BinarySI),
        "Ti" => (2, 40, Format::BinarySI),
        "Pi" => (2, 50, Format::BinarySI),
        "Ei" => (2, 60, Format::BinarySI),
        _ => return parse_decimal_suffix(negative, int_digits, frac_digits, suffix),
    };
    let multiplier = base.checked_pow(exponent)?;
    build(negative, int_digits, frac_digits, multiplier, 0, format)
}

fn parse_decimal_suffix(negative: bool, int_digits: &str, frac_digits: &str, suffix: &str) -> Option<Quantity> {
    let exp10: i32 = match suffix {
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let e: i32 = rest.parse().ok()?;
            return build_exp10(negative, int_digits, frac_digits, e, Format::DecimalExponent);
        }
    };
    build_exp10(negative, int_digits, frac_digits, exp10, Format::DecimalSI)
}

fn build_exp10(negative: bool, int_digits: &str, frac_digits: &str, exp10: i32, format: Format) -> Option<Quantity> {
    if exp10 >= 0 {
        let multiplier = 10i128.checked_pow(exp10.unsigned_abs())?;
        build(negative, int_digits, frac_digits, multiplier, 0, format)
    } else {
        build(negative, int_digits, frac_digits, 1, exp10.unsigned_abs(), format)
    }
}

/// value = digits(int.frac) × multiplier / 10^divisor_exp10, in nano-units rounded away from zero.
fn build(
    negative: bool,
    int_digits: &str,
    frac_digits: &str,
    multiplier: i128,
    divisor_exp10: u32,
    format: Format,
) -> Option<Quantity> {
    let mut mantissa: i128 = 0;
    for b in int_digits.bytes().chain(frac_digits.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    // nanos = mantissa × multiplier × 10^9 / 10^(frac_len + divisor_exp10)
    let numerator = mantissa.checked_mul(multiplier)?.checked_mul(NANO)?;
    let scale = u32::try_from(frac_digits.len()).ok()?.checked_add(divisor_exp10)?;
    let nanos = match 10i128.checked_pow(scale) {
        Some(d) => ceil_div(numerator, d),
        // The divisor exceeds every representable numerator: a tiny non-zero value rounds up.
        None => i128::from(numerator != 0),
    };
    let mut format = format;
    if format == Format::BinarySI && nanos > 0 && nanos < NANO {
        format = Format::DecimalSI;
    }
    Some(Quantity { nanos: if negative { -nanos } else { nanos }, format })
}

fn remove_factors(mut value: i128, base: i128) -> (i128, i32) {
    let mut times = 0;
    while value != 0 && value % base == 0 {
        value /= base;
        times += 1;
    }
    (value, times)
}

impl fmt::Display for Quantity {
    /// The canonical form Kubernetes serialises (`Quantity.String()`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let mut format = self.format;
        if format == Format::BinarySI && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0) {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let (amount, exp) = remove_factors(self.nanos / NANO, 1024);
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].get(exp as usize).copied().unwrap_or("");
            return write!(f, "{amount}{suffix}");
        }
        let (mut amount, times) = remove_factors(self.nanos, 10);
        let mut exponent = times - 9;
        match exponent.rem_euclid(3) {
            1 => {
                amount *= 10;
                exponent -= 1;
            }
            2 => {
                amount *= 100;
                exponent -= 2;
            }
            _ => {}
        }
        if format == Format::DecimalExponent {
            return if exponent == 0 { write!(f, "{amount}") } else { write!(f, "{amount}e{exponent}") };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return write!(f, "{amount}e{exponent}"),
        };
        write!(f, "{amount}{suffix}")
    }
}

/// Rewrites every quantity of a `ResourceList` object in canonical form; with `round_milli`,
/// values are first rounded up to milli precision. Unparseable values are left for validation.
pub(crate) fn canonicalize_list(list: Option<&mut Value>, round_milli: bool) {
    let Some(Value::Object(map)) = list else { return };
    for v in map.values_mut() {
        if let Ok(q) = Quantity::from_json(v) {
            let q = if round_milli { q.round_up_milli() } else { q };
            *v = Value::String(q.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).expect("valid quantity").to_string()
    }

    #[test]
    fn canonical_forms_match_kubernetes() {
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("100m"), "100m");
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("128974848"), "128974848");
        assert_eq!(canon("129e6"), "129e6");
        assert_eq!(canon("129M"), "129M");
        assert_eq!(canon("1000M"), "1G");
        assert_eq!(canon("1200"), "1200");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("0Mi"), "0");
        assert_eq!(canon("512Ki"), "512Ki");
        assert_eq!(canon("100Ki"), "100Ki");
        assert_eq!(canon("-1"), "-1");
        assert_eq!(canon("1n"), "1n");
        assert_eq!(canon("500"), "500");
    }

    #[test]
    fn parse_errors_and_comparisons() {
        assert!(Quantity::parse("").is_err());
        assert!(Quantity::parse("abc").is_err());
        assert!(Quantity::parse("1Zi").is_err());
        assert!(Quantity::parse("1e").is_err());
        assert!(Quantity::parse("1x").is_err());
        let a = Quantity::parse("1").expect("valid");
        let b = Quantity::parse("1000m").expect("valid");
        assert_eq!(a, b);
        assert!(Quantity::parse("2").expect("valid") > Quantity::parse("1500m").expect("valid"));
        assert_eq!(Quantity::parse("0.0001").expect("valid").round_up_milli().to_string(), "1m");
        assert_eq!(Quantity::from_json(&serde_json::json!(2)).expect("number").to_string(), "2");
    }
}

//! DynamoDB number normalization (the DB-ESDK's `NormalizeNumber`).
//!
//! Accepted syntax: `[+-] digits [. digits] [(e|E) [+-] digits]` with at least one digit in the mantissa.
//! Output: no exponent, no leading zeros (except `0.` for magnitudes below one), no trailing fractional
//! zeros, `0` for zero. At most 38 significant digits; magnitude between 1e-130 and 9.99…e125.

use crate::error::DbeError;

/// Why a string is not a DynamoDB number.
pub(crate) type NumberError = &'static str;

const MAX_DIGITS: usize = 38;
/// Exponents beyond this are clamped; anything non-zero there is out of range anyway.
const EXP_CLAMP: i64 = 1_000_000_000_000;

/// Normalizes a DynamoDB number string exactly like DynamoDB (and the DB-ESDK) do.
///
/// ```
/// use ddbguard_dbe::normalize_number;
/// assert_eq!(normalize_number("-0.50").unwrap(), "-0.5");
/// assert_eq!(normalize_number("1E2").unwrap(), "100");
/// assert!(normalize_number("1e126").is_err());
/// ```
pub fn normalize_number(s: &str) -> Result<String, DbeError> {
    normalize(s).map_err(|what| DbeError::InvalidNumber {
        attribute: String::new(),
        what,
    })
}

/// Normalizes `s`; the error says what is wrong, without the value.
pub(crate) fn normalize(s: &str) -> Result<String, NumberError> {
    let b = s.as_bytes();
    let (neg, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        Some(_) => (false, b),
        None => return Err("empty string"),
    };
    if b.is_empty() {
        return Err("sign without digits");
    }
    // Split mantissa and exponent.
    let (mantissa, exp) = match b.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&b[..i], parse_exponent(&b[i + 1..])?),
        None => (b, 0i64),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("no digits");
    }
    if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return Err("invalid character");
    }
    // The significant digits: all mantissa digits without leading/trailing zeros, and the decimal point
    // position relative to the first significant digit.
    let lead_int = int_part.iter().take_while(|&&c| c == b'0').count();
    let digits_iter = || int_part[lead_int..].iter().chain(frac_part);
    let total: usize = int_part.len() - lead_int + frac_part.len();
    let lead_total = digits_iter().take_while(|&&c| c == b'0').count();
    if lead_total == total {
        return Ok("0".to_owned());
    }
    let trail = digits_iter().rev().take_while(|&&c| c == b'0').count();
    let sig_len = total - lead_total - trail;
    if sig_len > MAX_DIGITS {
        return Err("more than 38 significant digits");
    }
    let mut sig = [0u8; MAX_DIGITS];
    for (dst, src) in sig.iter_mut().zip(digits_iter().skip(lead_total).take(sig_len)) {
        *dst = *src;
    }
    let sig = &sig[..sig_len];
    // Value = 0.<sig> × 10^point, where point counts digits before the decimal point.
    let int_digits = (int_part.len() - lead_int) as i64;
    let point = int_digits - lead_total as i64 + exp;
    // Magnitude: first significant digit at 10^(point-1). DynamoDB: 1e-130 ..= 9.99…e125.
    if point - 1 < -130 {
        return Err("magnitude smaller than 1e-130");
    }
    if point - 1 > 125 {
        return Err("magnitude larger than 9.9999999999999999999999999999999999999e125");
    }
    let mut out = String::with_capacity(sig_len + 140);
    if neg {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..(-point) {
            out.push('0');
        }
        push_digits(&mut out, sig);
    } else {
        let point = point as usize; // 1..=126
        if point >= sig_len {
            push_digits(&mut out, sig);
            for _ in 0..(point - sig_len) {
                out.push('0');
            }
        } else {
            push_digits(&mut out, &sig[..point]);
            out.push('.');
            push_digits(&mut out, &sig[point..]);
        }
    }
    Ok(out)
}

fn push_digits(out: &mut String, digits: &[u8]) {
    out.extend(digits.iter().map(|&d| char::from(d)));
}

fn parse_exponent(b: &[u8]) -> Result<i64, NumberError> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return Err("exponent without digits");
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err("invalid character in exponent");
        }
        v = (v * 10 + i64::from(c - b'0')).min(EXP_CLAMP);
    }
    Ok(if neg { -v } else { v })
}

/// Whether `s` is already in normalized form (cheap check used on hot paths to avoid allocation).
pub(crate) fn normalize_cow(s: &str) -> Result<std::borrow::Cow<'_, str>, NumberError> {
    let n = normalize(s)?;
    Ok(if n == s {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str, want: &str) {
        assert_eq!(normalize(input).as_deref(), Ok(want), "input {input:?}");
    }

    fn bad(input: &str) {
        assert!(
            normalize(input).is_err(),
            "input {input:?} should fail, got {:?}",
            normalize(input)
        );
    }

    #[test]
    fn basics() {
        ok("0", "0");
        ok("-0", "0");
        ok("+0", "0");
        ok("0.00", "0");
        ok("000", "0");
        ok("0e99999999999999999999", "0");
        ok("-0.50", "-0.5");
        ok("1E2", "100");
        ok("1e+2", "100");
        ok("1e-2", "0.01");
        ok("+1", "1");
        ok("+001.100", "1.1");
        ok("1.", "1");
        ok(".5", "0.5");
        ok("-.5", "-0.5");
        ok("123.456", "123.456");
        ok("00.0011", "0.0011");
        ok("2000.000", "2000");
        ok("10.01", "10.01");
        ok("100e-1", "10");
        ok("1000e-2", "10");
        ok("0.05e5", "5000");
        ok("12345e-2", "123.45");
        ok("1.5e1", "15");
        ok("-1.5E-1", "-0.15");
    }

    #[test]
    fn range_limits() {
        ok("1e-130", &format!("0.{}1", "0".repeat(129)));
        ok(".01e-128", &format!("0.{}1", "0".repeat(129)));
        bad("1e-131");
        bad("0.9e-130");
        let max = "9.9999999999999999999999999999999999999E+125";
        let want = format!("{}{}", "9".repeat(38), "0".repeat(126 - 38));
        ok(max, &want);
        ok(&format!("-{max}"), &format!("-{want}"));
        bad("1e126");
        bad("10e125");
        ok("1e125", &format!("1{}", "0".repeat(125)));
        bad("1e99999999999999999999999");
        bad("1e-99999999999999999999999");
    }

    #[test]
    fn precision() {
        ok(&"1".repeat(38), &"1".repeat(38));
        bad(&"1".repeat(39));
        // Leading and trailing zeros do not count.
        ok(&format!("000{}000", "1".repeat(38)), &format!("{}000", "1".repeat(38)));
        ok(
            &format!("0.000{}000", "1".repeat(38)),
            &format!("0.000{}", "1".repeat(38)),
        );
        bad(&format!("1.{}1", "0".repeat(37)));
        ok(&format!("1.{}1", "0".repeat(36)), &format!("1.{}1", "0".repeat(36)));
    }

    #[test]
    fn syntax_errors() {
        for s in [
            "", "-", "+", ".", "e5", "1e", "1e+", "1e-", "--1", "+-1", "1.2.3", "1e5.5", "abc", " 1", "1 ", "1,0",
            "NaN", "Infinity", "0x10", "1ee5", "1e5e5", "١",
        ] {
            bad(s);
        }
    }

    #[test]
    fn public_wrapper() {
        assert_eq!(normalize_number("1E2").unwrap(), "100");
        let e = normalize_number("x").unwrap_err();
        assert_eq!(e.reason().as_str(), "invalid_number");
    }

    #[test]
    fn cow() {
        assert!(matches!(normalize_cow("1.5"), Ok(std::borrow::Cow::Borrowed(_))));
        assert!(matches!(normalize_cow("1.50"), Ok(std::borrow::Cow::Owned(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = normalize(&s);
        }

        #[test]
        fn idempotent(s in "[+-]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,3})?") {
            if let Ok(n) = normalize(&s) {
                proptest::prop_assert_eq!(normalize(&n), Ok(n.clone()));
            }
        }

        #[test]
        fn integers_match_i128(v in proptest::num::i64::ANY) {
            proptest::prop_assert_eq!(normalize(&v.to_string()), Ok(v.to_string()));
        }

        #[test]
        fn float_value_preserved(v in -1e100f64..1e100f64) {
            let s = format!("{v:e}");
            let n = normalize(&s).unwrap();
            let a: f64 = s.parse().unwrap();
            let b: f64 = n.parse().unwrap();
            proptest::prop_assert_eq!(a, b);
        }
    }
}

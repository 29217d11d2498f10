//! What DynamoDB bills: item sizes and capacity units, computed as DynamoDB documents them. The fake charges
//! with these; callers estimate with them where an endpoint reports no consumed capacity (the local
//! environment).

use crate::{AttributeValue, Item};

/// The size DynamoDB bills an item at: attribute names plus values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(n, v)| n.len() + value_size(v)).sum()
}

fn number_size(n: &str) -> usize {
    let digits = Decimal::parse(n).map_or(n.len(), |d| d.digits.len().max(1));
    digits.div_ceil(2) + 1
}

pub(crate) fn value_size(v: &AttributeValue) -> usize {
    use AttributeValue as V;
    match v {
        V::S(s) => s.len(),
        V::N(n) => number_size(n),
        V::B(b) => b.as_ref().len(),
        V::Bool(_) | V::Null(_) => 1,
        V::Ss(x) => x.iter().map(String::len).sum(),
        V::Ns(x) => x.iter().map(|n| number_size(n)).sum(),
        V::Bs(x) => x.iter().map(|b| b.as_ref().len()).sum(),
        V::L(x) => 3 + x.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        V::M(x) => 3 + x.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum::<usize>(),
        _ => 0,
    }
}

/// Write capacity units for an item of `size` bytes: one per started KB.
pub fn write_units(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// Read capacity units for `size` bytes: one per started 4 KB, half for an eventually consistent read.
pub fn read_units(size: usize, consistent: bool) -> f64 {
    let units = size.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// A decimal number as (negative, significant digits, exponent of the last digit): equal numbers have
/// equal representations.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub(crate) negative: bool,
    pub(crate) digits: Vec<u8>,
    pub(crate) exponent: i64,
}

impl Decimal {
    pub(crate) fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let mut exponent = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Decimal {
            negative,
            digits,
            exponent,
        })
    }
}

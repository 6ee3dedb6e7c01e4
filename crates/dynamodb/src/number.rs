//! DynamoDB numbers: exact decimals of up to 38 significant digits, magnitudes from 1E-130 to
//! under 1E+126. Written by hand because the crates at hand either round (`rust_decimal` keeps 28
//! digits) or bring arbitrary precision we would have to bound anyway; DynamoDB needs only
//! exact add, subtract, compare and a canonical text form.

use std::cmp::Ordering;
use std::fmt;

/// Significant digits DynamoDB keeps.
pub const MAX_DIGITS: usize = 38;
/// Largest allowed decimal exponent of the leading digit (9.99..E+125).
const MAX_EXP: i32 = 126;
/// Smallest allowed (1E-130).
const MIN_EXP: i32 = -129;

/// value = (neg ? -1 : 1) × 0.d₁d₂…dₙ × 10^exp; `digits` has no leading or trailing zeros, and
/// is empty for zero (then `neg` is false and `exp` 0). This form makes equal numbers equal
/// structurally, so `Eq` and `Hash` can be derived.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Number {
    neg: bool,
    digits: Vec<u8>,
    exp: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("The parameter cannot be converted to a numeric value")]
    Invalid,
    #[error("Attempting to store more than 38 significant digits in a Number")]
    TooPrecise,
    #[error("Number overflow. Attempting to store a number with magnitude larger than supported range")]
    Overflow,
    #[error("Number underflow. Attempting to store a number with magnitude smaller than supported range")]
    Underflow,
}

impl Number {
    pub fn zero() -> Self {
        Number { neg: false, digits: Vec::new(), exp: 0 }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Builds from raw digits (any leading/trailing zeros) and checks DynamoDB's limits.
    fn normalized(neg: bool, mut digits: Vec<u8>, mut exp: i32) -> Result<Self, NumberError> {
        let lead = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..lead);
        exp -= lead as i32;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Ok(Number::zero());
        }
        if digits.len() > MAX_DIGITS {
            return Err(NumberError::TooPrecise);
        }
        if exp > MAX_EXP {
            return Err(NumberError::Overflow);
        }
        if exp < MIN_EXP {
            return Err(NumberError::Underflow);
        }
        Ok(Number { neg, digits, exp })
    }

    pub fn parse(text: &str) -> Result<Self, NumberError> {
        let s = text.trim();
        let (neg, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(at) => (&s[..at], Some(&s[at + 1..])),
            None => (s, None),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(NumberError::Invalid);
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(NumberError::Invalid);
        }
        let e: i64 = match exponent {
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(NumberError::Invalid);
                }
                // Anything this long is out of range either way (leading zeros aside).
                let significant = digits.trim_start_matches('0');
                if significant.len() > 6 {
                    return Err(if e.starts_with('-') { NumberError::Underflow } else { NumberError::Overflow });
                }
                let magnitude: i64 =
                    if significant.is_empty() { 0 } else { significant.parse().map_err(|_| NumberError::Invalid)? };
                if e.starts_with('-') { -magnitude } else { magnitude }
            }
            None => 0,
        };
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let exp = int.len() as i64 + e;
        let exp = exp.clamp(i32::MIN as i64 / 2, i32::MAX as i64 / 2) as i32;
        let n = Self::normalized(neg, digits, exp)?;
        Ok(n)
    }

    /// Converts a machine integer; always within limits.
    pub fn from_i64(v: i64) -> Self {
        #[allow(clippy::unwrap_used)] // an i64 has at most 19 digits: always valid
        Self::parse(&v.to_string()).unwrap()
    }

    /// The value as an i64 if it is an integer in range (TTL timestamps, Limit values).
    pub fn to_i64(&self) -> Option<i64> {
        if self.exp > 19 || self.digits.len() as i32 > self.exp.max(0) {
            return if self.is_zero() { Some(0) } else { None };
        }
        let mut v: i128 = 0;
        for i in 0..self.exp as usize {
            v = v * 10 + *self.digits.get(i).unwrap_or(&0) as i128;
        }
        let v = if self.neg { -v } else { v };
        i64::try_from(v).ok()
    }

    /// The value as f64, for TTL comparisons (seconds since the epoch, possibly fractional).
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    pub fn neg(&self) -> Self {
        let mut n = self.clone();
        if !n.is_zero() {
            n.neg = !n.neg;
        }
        n
    }

    /// Exact sum, or an error when it needs more than 38 digits or leaves the range.
    pub fn add(&self, other: &Number) -> Result<Number, NumberError> {
        if self.is_zero() {
            return Ok(other.clone());
        }
        if other.is_zero() {
            return Ok(self.clone());
        }
        // Align both on the position of their lowest digit: a digit vector from `top` down.
        let low = (self.exp - self.digits.len() as i32).min(other.exp - other.digits.len() as i32);
        let top = self.exp.max(other.exp);
        let width = (top - low) as usize;
        // Beyond a few hundred digits the result cannot fit 38 digits (both are limited in range).
        let spread = |n: &Number| {
            let mut v = vec![0u8; width];
            let start = (top - n.exp) as usize;
            v[start..start + n.digits.len()].copy_from_slice(&n.digits);
            v
        };
        let (a, b) = (spread(self), spread(other));
        if self.neg == other.neg {
            let mut out = vec![0u8; width + 1];
            let mut carry = 0;
            for i in (0..width).rev() {
                let s = a[i] + b[i] + carry;
                out[i + 1] = s % 10;
                carry = s / 10;
            }
            out[0] = carry;
            Self::normalized(self.neg, out, top + 1)
        } else {
            // Subtract the smaller magnitude from the larger; the sign is the larger's.
            let (big, small, neg) = match a.cmp(&b) {
                Ordering::Equal => return Ok(Number::zero()),
                Ordering::Greater => (a, b, self.neg),
                Ordering::Less => (b, a, other.neg),
            };
            let mut out = vec![0u8; width];
            let mut borrow = 0i8;
            for i in (0..width).rev() {
                let mut d = big[i] as i8 - small[i] as i8 - borrow;
                borrow = 0;
                if d < 0 {
                    d += 10;
                    borrow = 1;
                }
                out[i] = d as u8;
            }
            Self::normalized(neg, out, top)
        }
    }

    pub fn sub(&self, other: &Number) -> Result<Number, NumberError> {
        self.add(&other.neg())
    }

    /// Bytes DynamoDB counts for this number in an item's size: about one byte per two
    /// significant digits, plus one.
    pub fn size(&self) -> usize {
        self.digits.len().div_ceil(2) + 1
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |n: &Number| {
            if n.is_zero() {
                0
            } else if n.neg {
                -1
            } else {
                1
            }
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal => {}
            o => return o,
        }
        let magnitude = self.exp.cmp(&other.exp).then_with(|| self.digits.cmp(&other.digits));
        if self.neg { magnitude.reverse() } else { magnitude }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Plain notation without exponent, as DynamoDB returns numbers ("1E+2" comes back as "100").
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let mut s = String::with_capacity(self.digits.len() + 4);
        if self.neg {
            s.push('-');
        }
        let digit = |d: &u8| char::from(b'0' + d);
        if self.exp <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-self.exp) as usize));
            s.extend(self.digits.iter().map(digit));
        } else {
            let int = self.exp as usize;
            for i in 0..int.max(self.digits.len()) {
                if i == int {
                    s.push('.');
                }
                s.push(self.digits.get(i).map_or('0', digit));
            }
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).expect(s)
    }

    #[test]
    fn canonical_text() {
        for (input, out) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("100", "100"),
            ("1E+2", "100"),
            ("1e2", "100"),
            ("001.500", "1.5"),
            ("-.5", "-0.5"),
            ("5.", "5"),
            ("123.456", "123.456"),
            ("0.0001", "0.0001"),
            ("1E-130", &format!("0.{}1", "0".repeat(129))),
            ("+7", "7"),
            ("1e-0000001", "0.1"),
            ("1E+0002", "100"),
        ] {
            assert_eq!(n(input).to_string(), out, "{input}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(Number::parse("1.23456789012345678901234567890123456789"), Err(NumberError::TooPrecise));
        assert!(Number::parse("1.2345678901234567890123456789012345678").is_ok());
        assert_eq!(Number::parse("1E+126"), Err(NumberError::Overflow));
        assert!(Number::parse("9.9999999999999999999999999999999999999E+125").is_ok());
        assert_eq!(Number::parse("1E-131"), Err(NumberError::Underflow));
        for bad in ["", "-", ".", "abc", "1e", "1e+", "NaN", "Infinity", "1..2", "1e1.5", "0x10", "1 2"] {
            assert_eq!(Number::parse(bad), Err(NumberError::Invalid), "{bad:?}");
        }
        // Trailing zeros are not significant.
        assert!(Number::parse(&format!("1{}", "0".repeat(60))).is_ok());
    }

    #[test]
    fn ordering() {
        let sorted = ["-100", "-1.5", "-1", "-0.001", "0", "0.001", "0.1", "0.12", "1", "1.5", "10", "99", "100"];
        for pair in sorted.windows(2) {
            assert!(n(pair[0]) < n(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(n("1.0"), n("1"));
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(n("0.1").add(&n("0.2")).unwrap().to_string(), "0.3");
        assert_eq!(n("1").sub(&n("3")).unwrap().to_string(), "-2");
        assert_eq!(n("99").add(&n("1")).unwrap().to_string(), "100");
        assert_eq!(n("-5").add(&n("5")).unwrap().to_string(), "0");
        assert_eq!(n("1E+37").sub(&n("9999999999999999999999999999999999999")).unwrap().to_string(), "1");
        assert_eq!(n("1E+38").add(&n("1")), Err(NumberError::TooPrecise));
        assert_eq!(n("9.9999999999999999999999999999999999999E+125").add(&n("1E+88")), Err(NumberError::Overflow));
        assert_eq!(n("1.5").to_i64(), None);
        assert_eq!(n("-42").to_i64(), Some(-42));
        assert_eq!(n("1700000000").to_i64(), Some(1_700_000_000));
    }
}

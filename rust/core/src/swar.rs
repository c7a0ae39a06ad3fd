//! Word-at-a-time byte tricks (SIMD within a register): finding a byte value and converting eight
//! ASCII digits at once. Each is tested against the plain computation.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// 0x80 in every byte of `word` equal to `b`, 0 elsewhere (exact: no false positives).
#[inline]
pub fn eq_mask(word: u64, b: u8) -> u64 {
    let x = word ^ (LO * b as u64);
    let t = (x & LOW7).wrapping_add(LOW7);
    !(t | x | LOW7)
}

/// Value of eight ASCII digits, the first one most significant; `None` if any byte is not a digit.
#[inline]
fn eight_digits(word: u64) -> Option<u64> {
    let d = word.wrapping_sub(LO * b'0' as u64);
    // A byte is a digit iff it is in 0..=9 after the subtraction: no borrow and +6 stays below 16.
    if (d | d.wrapping_add(LO * 6)) & (HI | (LO * 0x70)) != 0 {
        return None;
    }
    let v = (d.wrapping_mul(10) + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some((v.wrapping_mul(10000) + (v >> 32)) & 0xffff_ffff)
}

/// The value of 1 to 19 ASCII digits; `None` for an empty, longer or non-digit token.
#[inline]
pub fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut value = 0u64;
    let mut rest = s;
    while rest.len() >= 8 {
        value = value * 100_000_000 + eight_digits(u64::from_le_bytes(rest[..8].try_into().ok()?))?;
        rest = &rest[8..];
    }
    for &b in rest {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + digit as u64;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn reference(s: &[u8]) -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    }

    #[test]
    fn digits_match_reference() {
        let mut r = Rng::new(1, 0);
        let alphabet = b"0123456789/:a ";
        for _ in 0..200_000 {
            let len = r.below(22);
            let s: Vec<u8> = (0..len)
                .map(|_| if r.uniform() < 0.9 { b'0' + r.below(10) as u8 } else { alphabet[r.below(14)] })
                .collect();
            assert_eq!(parse_digits(&s), reference(&s), "{:?}", String::from_utf8_lossy(&s));
        }
        for b in 0..=255u8 {
            assert_eq!(parse_digits(&[b]), reference(&[b]), "byte {b}");
        }
        assert_eq!(parse_digits(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
    }

    #[test]
    fn eq_mask_is_exact() {
        let mut r = Rng::new(2, 0);
        for _ in 0..100_000 {
            let bytes: [u8; 8] = std::array::from_fn(|_| [0u8, 1, b',', b'"', 0x80, 0xff, 0x2b, 0x2d][r.below(8)]);
            let m = eq_mask(u64::from_le_bytes(bytes), b',');
            for (i, &b) in bytes.iter().enumerate() {
                assert_eq!((m >> (8 * i)) & 0xff == 0x80, b == b',', "{bytes:?}");
            }
        }
    }
}

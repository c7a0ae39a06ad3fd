//! Timestamps: integers or decimals (Unix seconds) and the date layouts of the supported dumps.
//! Everything becomes i64 Unix seconds; fractions of a second are truncated (ties then keep input order).

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
        return None;
    }
    s.parse().ok()
}

fn ymd(y: &str, m: &str, d: &str) -> Option<i64> {
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86400)
}

fn hms(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let h = num(parts.next()?)?;
    let m = num(parts.next()?)?;
    let sec = match parts.next() {
        Some(x) => num(x.split('.').next()?)?,
        None => 0,
    };
    (h < 24 && m < 60 && sec < 61).then_some(h * 3600 + m * 60 + sec)
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]`, ISO 8601 with `T` and an optional `Z` or `+hh:mm`
/// offset, and Amazon's `MM DD, YYYY`.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some((md, y)) = s.split_once(", ") {
        let (m, d) = md.split_once(' ')?;
        return ymd(y, m, d.trim());
    }
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut dp = date.splitn(3, '-');
    let day = ymd(dp.next()?, dp.next()?, dp.next()?)?;
    let Some(rest) = rest else { return Some(day) };
    let (clock, offset) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let sign = if rest.as_bytes()[i] == b'-' { -1 } else { 1 };
        let (oh, om) = rest[i + 1..].split_once(':').unwrap_or((&rest[i + 1..], "0"));
        (&rest[..i], sign * (num(oh)? * 3600 + num(om)? * 60))
    } else {
        (rest, 0)
    };
    Some(day + hms(clock)? - offset)
}

/// A Unix timestamp written as an integer or a decimal number.
pub fn parse_unix(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v.abs() < 9.0e15).then(|| v.floor() as i64)
}

/// Either form; numbers first.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    parse_unix(s).or_else(|| parse_date(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02"), Some(86400));
        assert_eq!(parse_date("2016-07-30 17:04:43"), Some(1469898283));
        assert_eq!(parse_date("2016-07-30T17:04:43Z"), Some(1469898283));
        assert_eq!(parse_date("2016-07-30T19:04:43+02:00"), Some(1469898283));
        assert_eq!(parse_date("07 30, 2016"), Some(1469836800));
        assert_eq!(parse_date("2016-02-30"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_timestamp("978300760.0"), Some(978300760));
        assert_eq!(parse_timestamp("12x"), None);
    }
}

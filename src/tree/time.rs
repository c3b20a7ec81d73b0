//! A small parser for the ISO-8601 / RFC 3339 timestamps the Buildkite API returns.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS`, an optional fraction (`.874`, any number of digits, kept to
//! nanoseconds), then `Z` or a `±HH:MM` / `±HHMM` / `±HH` offset. `t`, `z` and a space in
//! place of `T` are tolerated. Anything else (including out-of-range fields such as
//! `2015-02-30`) is `None`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// A cursor over ASCII bytes.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0, |acc, c| acc * 10 + u32::from(c - b'0')))
    }

    fn eat(&mut self, options: &[u8]) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if options.contains(&c) {
            self.i += 1;
            Some(c)
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
}

/// Parses a Buildkite timestamp such as `2015-05-09T21:05:59.874Z` into a [`SystemTime`];
/// `None` if it is not one.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let mut c = Cur {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let year = i64::from(c.digits(4)?);
    c.eat(b"-")?;
    let month = c.digits(2)?;
    c.eat(b"-")?;
    let day = c.digits(2)?;
    c.eat(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    c.eat(b":")?;
    let second = c.digits(2)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut nanos: u32 = 0;
    if c.eat(b".,").is_some() {
        let start = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            let pos = c.i - start;
            if pos < 9 {
                nanos += u32::from(c.b[c.i] - b'0') * 10u32.pow(8 - pos as u32);
            }
            c.i += 1;
        }
        if c.i == start {
            return None;
        }
    }
    let offset_secs: i64 = match c.eat(b"Zz+-")? {
        b'Z' | b'z' => 0,
        sign => {
            let h = c.digits(2)?;
            c.eat(b":");
            let m = if c.peek().is_some() { c.digits(2)? } else { 0 };
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
    };
    if c.i != c.b.len() {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        // date -u -d 2015-05-09T21:05:59Z +%s
        assert_eq!(
            parse_time("2015-05-09T21:05:59.874Z"),
            Some(at(1_431_205_559, 874_000_000))
        );
        assert_eq!(
            parse_time("2015-05-09T21:05:59Z"),
            Some(at(1_431_205_559, 0))
        );
        assert_eq!(
            parse_time("2024-02-29T12:00:00Z"),
            Some(at(1_709_208_000, 0))
        );
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(at(951_868_800, 0)));
    }

    #[test]
    fn offsets() {
        let z = parse_time("2015-05-09T21:05:59Z");
        assert_eq!(parse_time("2015-05-09T21:05:59+00:00"), z);
        assert_eq!(parse_time("2015-05-09T23:05:59+02:00"), z);
        assert_eq!(parse_time("2015-05-09T23:05:59+0200"), z);
        assert_eq!(parse_time("2015-05-09T16:35:59-04:30"), z);
        assert_eq!(
            parse_time("2015-05-09T21:05:59.874+00:00"),
            Some(at(1_431_205_559, 874_000_000))
        );
    }

    #[test]
    fn fractions() {
        assert_eq!(
            parse_time("1970-01-01T00:00:01.5Z"),
            Some(at(1, 500_000_000))
        );
        assert_eq!(
            parse_time("1970-01-01T00:00:01.123456789123Z"),
            Some(at(1, 123_456_789))
        );
        assert_eq!(parse_time("1970-01-01T00:00:01.Z"), None);
    }

    #[test]
    fn before_epoch() {
        assert_eq!(
            parse_time("1969-12-31T23:59:59Z"),
            UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
        assert_eq!(
            parse_time("1969-12-31T23:59:59.5Z"),
            UNIX_EPOCH.checked_sub(Duration::from_millis(500))
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2015-05-09",
            "2015-05-09T21:05:59",
            "2015-13-09T21:05:59Z",
            "2015-00-09T21:05:59Z",
            "2015-02-29T21:05:59Z",
            "2015-04-31T21:05:59Z",
            "2015-05-09T24:00:00Z",
            "2015-05-09T21:60:00Z",
            "2015-05-09T21:05:59Zjunk",
            "2015-05-09T21:05:59+25:00",
            "2015-5-9T21:05:59Z",
            "２０１５-05-09T21:05:59Z",
        ] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
    }

    #[test]
    fn days_from_civil_matches_known_values() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(1600, 3, 1), -135_080);
    }
}

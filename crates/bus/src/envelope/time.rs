//! Event times as Herald writes them (`2024-05-01T12:34:56.123456Z`), without chrono's
//! general formatter and parser on the hot path.

use chrono::{DateTime, Utc};

/// Parses an RFC 3339 time: the form Herald writes directly, any other through chrono.
pub(super) fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    parse_herald_time(value).or_else(|| DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc)))
}

/// Reads `2024-05-01T12:34:56.123456Z` (UTC, microseconds: what `to_headers` writes)
/// without chrono's general parser. Anything else, leap seconds included, gives `None`.
fn parse_herald_time(value: &str) -> Option<DateTime<Utc>> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    }
    let b = value.as_bytes();
    let shape = b.len() == 27 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'.' && b[26] == b'Z';
    if !shape {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let (h, m, s, us) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, digits(&b[20..26])?);
    if s >= 60 {
        return None;
    }
    Some(date.and_hms_micro_opt(h, m, s, us)?.and_utc())
}

/// Length of `2024-05-01T12:34:56.123456Z`.
pub(super) const HERALD_TIME_LEN: usize = 27;

/// Writes `time` as `2024-05-01T12:34:56.123456Z` (RFC 3339, UTC, microseconds: what
/// chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` writes) into `out`, without
/// allocating. `None` for years outside 0..=9999 and leap seconds (chrono writes those).
pub(super) fn write_herald_time<'a>(time: &DateTime<Utc>, out: &'a mut [u8; HERALD_TIME_LEN]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    fn put(out: &mut [u8], value: u32) {
        let mut v = value;
        for d in out.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None; // A leap second.
    }
    *out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out[0..4], year);
    put(&mut out[5..7], time.month());
    put(&mut out[8..10], time.day());
    put(&mut out[11..13], time.hour());
    put(&mut out[14..16], time.minute());
    put(&mut out[17..19], time.second());
    put(&mut out[20..26], nanos / 1000);
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    #[test]
    fn herald_times_parse_like_chrono() {
        for t in ["2024-05-01T12:34:56.123456Z", "1999-12-31T23:59:59.999999Z", "2024-02-29T00:00:00.000000Z", "2024-05-01T12:34:56Z", "2024-05-01T14:34:56.5+02:00", "2016-12-31T23:59:60.000000Z", "2024-05-01t12:34:56.123456z", "2024-05-01 12:34:56.123456789-07:30"] {
            let chrono = DateTime::parse_from_rfc3339(t).expect(t).with_timezone(&Utc);
            assert_eq!(parse_time(t), Some(chrono), "{t}");
        }
        for t in ["2024-02-30T00:00:00.000000Z", "2024-05-01T24:00:00.000000Z", "2024-05-01T12:34:56.12345xZ", "yesterday"] {
            assert_eq!(parse_time(t), None, "{t}");
        }
    }

    #[test]
    fn herald_times_are_written_like_chrono() {
        let times = ["2024-05-01T12:34:56.123456789Z", "1999-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00Z", "0001-01-01T00:00:00.000001Z", "9999-12-31T23:59:59.5Z"];
        for t in times.iter().map(|t| DateTime::parse_from_rfc3339(t).expect(t).with_timezone(&Utc)) {
            let mut out = [0u8; HERALD_TIME_LEN];
            assert_eq!(write_herald_time(&t, &mut out), Some(t.to_rfc3339_opts(SecondsFormat::Micros, true).as_str()), "{t:?}");
        }
        let leap = DateTime::parse_from_rfc3339("2016-12-31T23:59:60.25Z").expect("leap second").with_timezone(&Utc);
        assert_eq!(write_herald_time(&leap, &mut [0u8; HERALD_TIME_LEN]), None);
        let far = chrono::NaiveDate::from_ymd_opt(12_000, 1, 1).expect("date").and_hms_opt(0, 0, 0).expect("time").and_utc();
        assert_eq!(write_herald_time(&far, &mut [0u8; HERALD_TIME_LEN]), None);
    }
}

//! Durations as operators write them on command lines and in query strings.

use std::time::Duration;

/// Parses a duration: a number with a unit `ms`, `s`, `m`, `h` or `d` (`90s`, `10m`, `2h`).
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(herald_ops::parse_duration("10m"), Ok(Duration::from_secs(600)));
/// assert!(herald_ops::parse_duration("ten").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number with a unit (ms, s, m, h, d), e.g. 30s"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }
}

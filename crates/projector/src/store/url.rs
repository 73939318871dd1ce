//! [`StoreUrl`]: a store URL whose password never shows in messages, `Debug` or logs.

use std::ops::Range;
use std::path::Path;

use super::StoreError;

/// A store URL (`sqlite:PATH`, `postgres://user:password@host/db`) that keeps its
/// password out of everything it prints: `Display` and `Debug` write
/// `postgres://user:***@host/db` (and `password=***` for a password given as a
/// parameter). Only [`StoreUrl::expose`] returns the URL itself, for connecting.
///
/// Programs take it from `--store`, the `HERALD_STORE_URL` environment variable, or a
/// file (`--store-file PATH`, for example a mounted secret), so the password need not
/// appear on a command line, where every user of the machine can read it.
///
/// ```
/// use herald_projector::store::StoreUrl;
/// let url: StoreUrl = "postgres://herald:s3cret@db:5432/views?sslmode=require".parse().unwrap();
/// assert_eq!(url.to_string(), "postgres://herald:***@db:5432/views?sslmode=require");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// assert!(url.expose().contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StoreUrl(url.into())
    }

    /// Reads the URL from the file at `path` (surrounding whitespace, such as the final
    /// newline, is dropped).
    pub fn from_file(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::Connect(format!("cannot read the store URL from {}: {e}", path.display())))?;
        Ok(StoreUrl(text.trim().to_owned()))
    }

    /// The store from `--store` (or `HERALD_STORE_URL`, which clap puts there) or
    /// `--store-file`, whichever is given; `None` when neither is.
    pub fn from_flags(store: Option<StoreUrl>, store_file: Option<&Path>) -> Result<Option<Self>, StoreError> {
        match (store, store_file) {
            (_, Some(path)) => Self::from_file(path).map(Some),
            (url, None) => Ok(url),
        }
    }

    /// The URL itself, password included: only for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password in the URL, if any (to scrub it from a driver's messages).
    pub(crate) fn password(&self) -> Option<&str> {
        password_span(&self.0).map(|range| &self.0[range])
    }

    /// `message` with every occurrence of this URL's password replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        match self.password() {
            Some(p) if !p.is_empty() => message.replace(p, "***"),
            _ => message.to_owned(),
        }
    }
}

/// Byte range of the password: the user-info's `user:PASSWORD@`, or a `password=VALUE`
/// parameter (URL query or libpq `key=value` string, its value possibly quoted: `'a b'`).
/// A URL whose `//` is mistyped (`postgres:/u:pw@h`, `postgres:u:pw@h`) is read the same
/// way: messages about a malformed URL must not print its password either.
fn password_span(url: &str) -> Option<Range<usize>> {
    // The last '@' before the query ends the user info: a password typed without
    // percent-encoding may contain '@' or '/', a database path hardly does.
    if let Some(range) = herald_bus::redact::url_password(url, &['?', '#']) {
        return Some(range);
    }
    let key = url.find("password=")?;
    let start = key + "password=".len();
    if url[start..].starts_with('\'') {
        // libpq's quoting: up to the closing quote, `\'` and `\\` escaped inside.
        let bytes = url.as_bytes();
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => return Some(start..i + 1),
                _ => i += 1,
            }
        }
        return Some(start..url.len());
    }
    let end = url[start..].find(['&', ' ', '#']).map_or(url.len(), |n| start + n);
    Some(start..end)
}

/// `url` with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match password_span(url) {
        Some(range) => format!("{}***{}", &url[..range.start], &url[range.end..]),
        None => url.to_owned(),
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StoreUrl(s.to_owned()))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({:?})", redact(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("postgresql://u:p@ss/w0rd@h:5432/db?sslmode=require", "postgresql://u:***@h:5432/db?sslmode=require"),
            ("postgres://h/db?user=u&password=pw&sslmode=require", "postgres://h/db?user=u&password=***&sslmode=require"),
            ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite:views.db", "sqlite:views.db"),
            // Mistyped URLs, as an outside probe typed them: their messages printed the password.
            ("postgres:u:S3cr3tPw@127.0.0.1:55432/db", "postgres:u:***@127.0.0.1:55432/db"),
            ("postgresql:/u:S3cr3tPw@h/x", "postgresql:/u:***@h/x"),
            ("host=127.0.0.1 user=u password='S3cr3t Pw' dbname=d", "host=127.0.0.1 user=u password=*** dbname=d"),
            (r"host=::1 password='it\'s a secret' dbname=d", "host=::1 password=*** dbname=d"),
        ];
        for (url, shown) in cases {
            let url = StoreUrl::new(url);
            assert_eq!(url.to_string(), shown);
            assert_eq!(format!("{url:?}"), format!("StoreUrl({shown:?})"));
        }
        assert_eq!(StoreUrl::new("postgres://u:pw@h/db").scrub("auth failed for u with pw"), "auth failed for u with ***");
    }

    #[test]
    fn the_url_comes_from_a_file_trimmed() {
        let path = std::env::temp_dir().join(format!("herald-store-url-{}", std::process::id()));
        std::fs::write(&path, "postgres://u:pw@h/db\n").expect("write");
        let url = StoreUrl::from_flags(Some(StoreUrl::new("sqlite:ignored.db")), Some(&path)).expect("read").expect("some");
        assert_eq!(url.expose(), "postgres://u:pw@h/db");
        std::fs::remove_file(&path).ok();
        let missing = StoreUrl::from_file(&path).expect_err("gone");
        assert!(missing.to_string().contains("cannot read the store URL"), "{missing}");
    }
}

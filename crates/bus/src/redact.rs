//! Finding secrets in URLs, so messages can print a URL without its password.

use std::ops::Range;

/// Where the password of `url`'s user info (`scheme://user:PASSWORD@host`) lies, as a
/// byte range; `None` when the URL has no scheme or no password.
///
/// The user info ends at the last `@` before the first of `authority_ends`: a password
/// typed without percent-encoding may hold `@` or `:`. A URL for a service whose path may
/// hold `@` passes `&['/', '?', '#']`; one whose path hardly does (a database name) may pass
/// `&['?', '#']`, so that a password holding `/` is found whole. A mistyped scheme
/// separator (`scheme:/user:pw@host`, `scheme:user:pw@host`) is read the same way: the
/// messages about a malformed URL must not print its password either.
///
/// ```
/// use herald_bus::redact::url_password;
/// let url = "https://key:s3:cr@et@registry.example/api";
/// let range = url_password(url, &['/', '?', '#']).unwrap();
/// assert_eq!(&url[range], "s3:cr@et");
/// assert_eq!(url_password("http:/key:pw@host", &['/']).map(|r| r.len()), Some(2));
/// assert_eq!(url_password("https://user@host/a:b@c", &['/', '?', '#']), None);
/// assert_eq!(url_password("host:8081", &['/']), None);
/// ```
pub fn url_password(url: &str, authority_ends: &[char]) -> Option<Range<usize>> {
    let colon = url.find(':').filter(|&c| c > 0 && url[..c].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))?;
    let after = &url[colon + 1..];
    let start = colon + 1 + (after.len() - after.trim_start_matches('/').len());
    let rest = &url[start..];
    let authority = &rest[..rest.find(authority_ends).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

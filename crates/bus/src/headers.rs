//! Kafka headers with their names as bytes.
//!
//! On the wire a header's name is a length and bytes. Java's client reads them as UTF-8
//! (replacing what is not), librdkafka keeps them as they are, and rdkafka's Rust accessors
//! (`Headers::try_get`, `Headers::iter`) turn each name into a `&str` with an `unwrap`: one
//! record whose header name is not UTF-8, which any client but Java's can write, panics
//! every Rust reader of its topic, again on each restart. Herald reads consumed headers
//! with [`pairs`] and writes headers it copies with [`build`], names as bytes both ways,
//! so such a record is handled or dead-lettered like any other and kept byte for byte.
//! (Except a NUL byte in a name: librdkafka's header API takes and gives names as C
//! strings, so such a name is cut at its NUL, and nothing on this side can see past it.)
//!
//! ```
//! use rdkafka::message::{Header, OwnedHeaders};
//! let copied = herald_bus::headers::build([(&b"x-caf\xe9"[..], Some(&b"1"[..])), (b"gone", None)]);
//! let back: Vec<_> = herald_bus::headers::pairs(&copied).collect();
//! assert_eq!(back, [(&b"x-caf\xe9"[..], Some(&b"1"[..])), (b"gone", None)]);
//! ```
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedHeaders, Headers, OwnedHeaders};

/// Header lists [`pairs`] reads: a consumed message's ([`BorrowedHeaders`]) and
/// [`OwnedHeaders`] (a detached message's, or a record's to send).
pub trait HeaderList: Headers + sealed::Sealed {
    /// The list as rdkafka's borrowed view.
    fn borrowed(&self) -> &BorrowedHeaders;
}

impl HeaderList for BorrowedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self
    }
}

impl HeaderList for OwnedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for rdkafka::message::BorrowedHeaders {}
    impl Sealed for rdkafka::message::OwnedHeaders {}
}

/// Name and value of each header, in order, names as bytes (see the [module docs](self)).
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders};
/// let headers = OwnedHeaders::new().insert(Header { key: "ce_id", value: Some("1") });
/// assert_eq!(herald_bus::headers::pairs(&headers).collect::<Vec<_>>(), [(&b"ce_id"[..], Some(&b"1"[..]))]);
/// ```
pub fn pairs<H: HeaderList + ?Sized>(headers: &H) -> Pairs<'_> {
    let headers = headers.borrowed();
    Pairs { headers, next: 0, count: headers.count() }
}

/// The iterator of [`pairs`].
#[derive(Clone)]
pub struct Pairs<'a> {
    headers: &'a BorrowedHeaders,
    next: usize,
    count: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: rdkafka hands out `&BorrowedHeaders` as the librdkafka header list's own
        // address (`BorrowedHeaders::from_native_ptr`, `OwnedHeaders::as_borrowed`), so the
        // cast gives that list back, alive for 'a. librdkafka returns pointers into the
        // list's entries (a NUL-terminated name, `size` bytes of value or null), which live
        // as long as the list. The unit tests compare with rdkafka's own accessor.
        let err = unsafe { rd::rd_kafka_header_get_all(native(self.headers), self.next, &mut name, &mut value, &mut size) };
        self.next += 1;
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            self.next = self.count;
            return None;
        }
        // SAFETY: see above.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count.saturating_sub(self.next);
        (left, Some(left))
    }
}

/// A header list holding `pairs`, in order, names as bytes: what rdkafka's
/// `OwnedHeaders::insert` does for names that are `&str`.
pub fn build<'a>(pairs: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> OwnedHeaders {
    let pairs = pairs.into_iter();
    let headers = OwnedHeaders::new_with_capacity(pairs.size_hint().0);
    let list = native(headers.as_borrowed()).cast_mut();
    for (name, value) in pairs {
        let (value, size) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr().cast::<c_void>(), v.len() as isize));
        // SAFETY: `list` is the list `headers` owns (see `Pairs::next`), which nothing else
        // reads or writes meanwhile; librdkafka copies name and value.
        unsafe { rd::rd_kafka_header_add(list, name.as_ptr().cast::<c_char>(), name.len() as isize, value, size) };
    }
    headers
}

/// The librdkafka list behind rdkafka's borrowed view (see `Pairs::next`).
fn native(headers: &BorrowedHeaders) -> *const rd::rd_kafka_headers_t {
    (headers as *const BorrowedHeaders).cast()
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    #[test]
    fn pairs_read_what_rdkafka_reads() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some("0190b2a0-0000-7000-8000-000000000001") })
            .insert(Header { key: "empty", value: Some("") })
            .insert(Header::<&str> { key: "null", value: None })
            .insert(Header { key: "ce_type", value: Some(&[0xff_u8, 0, 1][..]) });
        let ours: Vec<_> = super::pairs(&headers).collect();
        let theirs: Vec<_> = headers.iter().map(|h| (h.key.as_bytes(), h.value)).collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours[2], (&b"null"[..], None), "a null value stays null");
        assert_eq!(ours[1], (&b"empty"[..], Some(&b""[..])), "an empty value stays empty");
        assert_eq!(super::pairs(&headers).size_hint(), (4, Some(4)));
        assert_eq!(super::pairs(&OwnedHeaders::new()).count(), 0);
    }

    #[test]
    fn names_that_are_not_utf8_go_through_unchanged() {
        let names: [&[u8]; 3] = [b"caf\xe9", b"\xff\xfe", "ünïcode".as_bytes()];
        let built = super::build(names.iter().map(|n| (*n, Some(*n))));
        let back: Vec<_> = super::pairs(&built).collect();
        assert_eq!(back, names.iter().map(|n| (*n, Some(*n))).collect::<Vec<_>>());
        // The same list as rdkafka builds it for names that are UTF-8.
        let valid = super::build([(&b"a"[..], Some(&b"1"[..])), (b"b", None)]);
        let theirs = OwnedHeaders::new().insert(Header { key: "a", value: Some("1") }).insert(Header::<&str> { key: "b", value: None });
        assert_eq!(super::pairs(&valid).collect::<Vec<_>>(), super::pairs(&theirs).collect::<Vec<_>>());
        assert_eq!(valid.count(), 2);
    }
}

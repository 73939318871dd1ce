//! A consumed record decoded for display: metadata from its headers, data from its payload.
//!
//! Decoding never fails as a whole: what cannot be decoded is kept as an error message
//! next to what could, so a bad record is shown, not fatal.

use std::borrow::Cow;

use chrono::SecondsFormat;
use herald_bus::envelope::header;
use herald_bus::Metadata;
use rdkafka::message::Message;
use serde::Serialize;

use herald_cli::json::AvroJson;

use crate::payload::Payloads;

/// A record, decoded as far as it goes.
#[derive(Debug)]
pub struct Decoded {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The key as text (lossy UTF-8), if any.
    pub key: Option<String>,
    /// Every header, values as text (lossy UTF-8).
    pub headers: Vec<(String, Option<String>)>,
    /// The CloudEvents metadata, when the headers are well formed.
    pub meta: Option<Metadata>,
    /// The decoded payload.
    pub data: Option<apache_avro::types::Value>,
    /// What could not be decoded (payload or headers).
    pub errors: Vec<String>,
}

impl Decoded {
    /// Decodes `msg`, its payload by `payloads`.
    pub async fn read<M: Message>(payloads: &Payloads, msg: &M) -> Self
    where
        M::Headers: herald_bus::headers::HeaderList,
    {
        let headers: Vec<(String, Option<String>)> = msg
            .headers()
            .map(|hs| {
                herald_bus::headers::pairs(hs)
                    .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.map(|v| String::from_utf8_lossy(v).into_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        let mut writer_name = String::new();
        let data = match msg.payload() {
            None => {
                errors.push(herald_bus::codec::DecodeError::Empty.to_string());
                None
            }
            Some(payload) => match payloads.split(payload).await {
                Ok((writer, datum)) => {
                    // Known even when the datum does not decode: the type is shown and
                    // checked against `ce_type` all the same.
                    writer_name = writer.name.clone();
                    match herald_bus::codec::decode_value(&writer, None, datum) {
                        Ok(value) => Some(value),
                        Err(e) => {
                            errors.push(e.to_string());
                            None
                        }
                    }
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let pairs = msg.headers().into_iter().flat_map(herald_bus::headers::pairs);
        let meta = match Metadata::from_record_header_pairs(pairs, msg.key(), &writer_name, msg.timestamp().to_millis()) {
            Ok(meta) => {
                // Shown all the same, flagged: a consumer dead-letters such a record.
                if let (false, Err(e)) = (writer_name.is_empty(), meta.check_type(&writer_name)) {
                    errors.push(e.to_string());
                }
                Some(meta)
            }
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        Decoded {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            meta,
            data,
            errors,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }

    /// The event type: `ce_type`, else the writer schema's name.
    pub fn event_type(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.event_type.as_str()).filter(|t| !t.is_empty()).or_else(|| self.header(header::TYPE))
    }

    /// The record as one line of JSON: `id`, `type`, `source`, `subject`, `time`, `key`,
    /// `partition`, `offset`, `headers` (every header in record order, as `{"key": ...,
    /// "value": ...}`, a name that repeats kept each time, as the dashboard shows dead
    /// letters), `data` (record fields in schema order), and `error` when something did
    /// not decode. Attributes missing from the headers are `null`.
    pub fn json_line(&self) -> String {
        let meta = self.meta.as_ref();
        let has = |name: &str| self.header(name).is_some();
        let line = JsonLine {
            id: meta.filter(|_| has(header::ID)).map(Metadata::ce_id),
            event_type: self.event_type(),
            source: meta.map(|m| m.source.as_str()).filter(|s| !s.is_empty()),
            // Not the Kafka key a missing `ce_subject` falls back to: missing is null.
            subject: meta.filter(|_| has(header::SUBJECT)).map(|m| m.subject.as_str()).filter(|s| !s.is_empty()),
            time: meta.filter(|_| has(header::TIME)).map(|m| m.time.to_rfc3339_opts(SecondsFormat::Micros, true)),
            key: self.key.as_deref(),
            partition: self.partition,
            offset: self.offset,
            headers: self.headers.iter().map(|(key, value)| HeaderJson { key, value: value.as_deref() }).collect(),
            data: self.data.as_ref().map(AvroJson),
            error: (!self.errors.is_empty()).then(|| self.errors.join("; ")),
        };
        serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// One readable line: `partition/offset time type key=... {data}`, or the decode error.
    pub fn line(&self) -> String {
        let mut line = format!("{}/{}", self.partition, self.offset);
        if let Some(time) = self.header(header::TIME) {
            line.push(' ');
            line.push_str(time);
        }
        line.push(' ');
        line.push_str(self.event_type().unwrap_or("?"));
        line.push_str(&format!(" key={}", self.key.as_deref().unwrap_or("-")));
        if let Some(data) = &self.data {
            line.push(' ');
            line.push_str(&serde_json::to_string(&AvroJson(data)).unwrap_or_default());
        }
        if !self.errors.is_empty() {
            line.push_str(&format!(" undecodable: {}", self.errors.join("; ")));
        }
        // The time, type and key came from the log as they were written: escaped, so a
        // record cannot forge lines or move the terminal's cursor.
        one_line(&line).into_owned()
    }
}

/// `text` with its control characters escaped as Rust escapes them (`\n`, `\t`,
/// `\u{1b}`), so it prints on one line and cannot move the terminal's cursor.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first `limit` bytes of `bytes` in hex, `…` when there are more.
pub fn hex_prefix(bytes: &[u8], limit: usize) -> String {
    let mut out: String = bytes.iter().take(limit).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    if bytes.len() > limit {
        out.push_str(" …");
    }
    out
}

/// One header of a [`JsonLine`].
#[derive(Serialize)]
struct HeaderJson<'a> {
    key: &'a str,
    value: Option<&'a str>,
}

/// The shape of a `--json` line.
#[derive(Serialize)]
struct JsonLine<'a> {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<&'a str>,
    source: Option<&'a str>,
    subject: Option<&'a str>,
    time: Option<String>,
    key: Option<&'a str>,
    partition: i32,
    offset: i64,
    headers: Vec<HeaderJson<'a>>,
    data: Option<AvroJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

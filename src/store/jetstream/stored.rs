//! Reading one stored message of a stream (at a sequence, or the last on a subject) from the
//! stream's leader, with its header block parsed here rather than by the client library.
//!
//! Anyone allowed to publish on the log's subjects can store a message whose header block the
//! library cannot parse. Its reader then fails every read of that message, and its connection
//! drops each time a consumer delivers it, so a view following the log through a consumer could
//! never pass it. Read here, a header block the connection accepts is read exactly as the
//! connection reads it, and one it would refuse reads as no headers: the message is a damaged
//! commit like any other undecodable one, and since no consumer ever delivers it, every node
//! reads it this way and gives it the same place in the feed. The key-value buckets' entries are
//! read the same way ([`kv_entry`]).

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::RawMessage;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, HeaderName, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{backend, other_error};
use crate::store::StoreError;

/// Which message of a stream to read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Which<'a> {
    /// The one stored at this sequence.
    Sequence(u64),
    /// The last one stored on this subject.
    LastOn(&'a str),
}

#[derive(Serialize)]
struct GetRequest<'a> {
    #[serde(rename = "seq", skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    #[serde(rename = "last_by_subj", skip_serializing_if = "Option::is_none")]
    last_by_subject: Option<&'a str>,
}

#[derive(Deserialize)]
struct GetResponse {
    message: RawMessage,
}

/// Reads `which` message of `stream`; `None` when the stream has no such message.
pub(super) async fn get(js: &jetstream::Context, stream: &str, which: Which<'_>) -> Result<Option<StreamMessage>, StoreError> {
    let request = match which {
        Which::Sequence(sequence) => GetRequest {
            sequence: Some(sequence),
            last_by_subject: None,
        },
        Which::LastOn(subject) => GetRequest {
            sequence: None,
            last_by_subject: Some(subject),
        },
    };
    let response: Response<GetResponse> = js.request(format!("STREAM.MSG.GET.{stream}"), &request).await.map_err(backend)?;
    match response {
        Response::Err { error } if error.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
        Response::Err { error } => Err(backend(error)),
        Response::Ok(GetResponse { message }) => decode(message).map(Some),
    }
}

/// The last entry of `key` in the key-value bucket `bucket`, read as any stored message is here
/// (the client library's own reads of a bucket take its messages over the wire, where a
/// malformed header block takes the connection down with it).
#[derive(Debug)]
pub(super) struct KvEntry {
    /// Its revision: its sequence in the bucket's stream.
    pub revision: u64,
    /// A put (not a delete or a purge).
    pub put: bool,
    pub value: bytes::Bytes,
}

pub(super) async fn kv_entry(js: &jetstream::Context, bucket: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
    let subject = format!("$KV.{bucket}.{key}");
    let Some(message) = get(js, &format!("KV_{bucket}"), Which::LastOn(&subject)).await? else {
        return Ok(None);
    };
    let operation = super::header(Some(&message.headers), "KV-Operation");
    Ok(Some(KvEntry {
        revision: message.sequence,
        put: !matches!(operation, Some("DEL" | "PURGE")),
        value: message.payload,
    }))
}

/// The message as stored: its payload, and its headers as the connection would read them.
fn decode(raw: RawMessage) -> Result<StreamMessage, StoreError> {
    let sequence = raw.sequence;
    let payload = STANDARD
        .decode(&raw.payload)
        .map_err(|e| other_error(format!("the payload of stream sequence {sequence} is not base64: {e}")))?;
    let headers = match raw.headers {
        None => HeaderMap::new(),
        Some(encoded) => {
            let block = STANDARD
                .decode(encoded)
                .map_err(|e| other_error(format!("the headers of stream sequence {sequence} are not base64: {e}")))?;
            header_block(&block).unwrap_or_else(|why| {
                tracing::warn!(sequence, why, "a stored message's header block is malformed: read as no headers");
                HeaderMap::new()
            })
        }
    };
    Ok(StreamMessage {
        subject: raw.subject.into(),
        sequence,
        headers,
        payload: payload.into(),
        time: raw.time,
    })
}

/// A header block read as the client library's connection reads one delivered to it (its
/// `HMSG` parser): what it refuses is refused here, for the same reason, and what it accepts is
/// read into the same headers. A node reads a commit either way (through its consumer, or one
/// by one while it has none), and both must give every node the same view.
pub(super) fn header_block(block: &[u8]) -> Result<HeaderMap, &'static str> {
    let text = std::str::from_utf8(block).map_err(|_| "not UTF-8")?;
    let mut lines = text.lines().peekable();
    let version_line = lines.next().ok_or("no version line")?;
    let suffix = version_line
        .strip_prefix("NATS/1.0")
        .ok_or("the version line is not NATS/1.0")?
        .trim();
    let status = suffix.split_once(' ').map_or(suffix, |(status, _)| status.trim());
    if !status.is_empty() && status.parse::<StatusCode>().is_err() {
        return Err("the status is not a number");
    }
    let mut headers = HeaderMap::new();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or("a header line without a colon")?;
        let name: HeaderName = name.parse().map_err(|_| "a header name with characters not allowed in one")?;
        // A value goes on over the lines that start with white space (kept as they are).
        let mut value = value.trim_start().to_owned();
        while let Some(more) = lines.next_if(|l| l.starts_with(char::is_whitespace)) {
            value.push_str(more);
        }
        value.truncate(value.trim_end().len());
        // A lone carriage return stays in a line; the client's header value type refuses one
        // by panicking (and so does its connection, given such a message).
        if value.contains(['\r', '\n']) {
            return Err("a header value with a carriage return");
        }
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers.get_all(name).map(|v| v.as_str().to_string()).collect()
    }

    #[test]
    fn a_well_formed_block_reads_as_the_connection_reads_it() {
        let headers = header_block(b"NATS/1.0\r\nA: 1\r\nB:two \r\n  more\r\nA: 3\r\n\r\n").expect("parsed");
        assert_eq!(values(&headers, "A"), ["1", "3"]);
        assert_eq!(values(&headers, "B"), ["two   more"]);
        assert!(header_block(b"NATS/1.0 503 No Responders\r\n\r\n").expect("status").is_empty());
    }

    #[test]
    fn a_block_the_connection_refuses_is_refused() {
        for block in [
            &b"NATS/1.0\r\nno colon here\r\n\r\n"[..],
            b"HTTP/1.1\r\nA: 1\r\n\r\n",
            b"NATS/1.0 xyz\r\n\r\n",
            b"NATS/1.0\r\nbad name: 1\r\n\r\n",
            b"NATS/1.0\r\n\xff: 1\r\n\r\n",
            b"NATS/1.0\r\nA: x\ry\r\n\r\n",
            b"",
        ] {
            assert!(header_block(block).is_err(), "{:?}", String::from_utf8_lossy(block));
        }
    }

    #[test]
    fn a_message_whose_block_is_malformed_reads_without_headers() {
        let raw: RawMessage = serde_json::from_value(serde_json::json!({
            "subject": "ns.events.x",
            "seq": 7,
            "data": STANDARD.encode(b"payload"),
            "hdrs": STANDARD.encode(b"NATS/1.0\r\nno colon\r\n\r\n"),
            "time": "2026-11-29T12:00:00Z",
        }))
        .expect("raw");
        let message = decode(raw).expect("decoded");
        assert_eq!((message.sequence, &message.payload[..]), (7, &b"payload"[..]));
        assert!(message.headers.is_empty());
    }
}

//! HTTP/1.1 request heads (parsed with httparse) and the plain responses of the small routes.

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 8192;
const MAX_HEADERS: usize = 48;
const READ_CHUNK: usize = 1024;
/// A client that has not sent its whole request head by then is dropped.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply (or an ingest camera's control message) the client has not taken by then is given
/// up, so a client that never reads cannot hold a task, socket and buffer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an error reply waits for the client's unread input to end before closing: closing
/// with input queued makes Linux send RST, and the client could lose the reply.
const LINGER: Duration = Duration::from_secs(1);

/// The parts of a request the routes look at.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub upgrade: Option<String>,
    pub connection: Option<String>,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub authorization: Option<String>,
    pub if_none_match: Option<String>,
    /// What the browser will use the response for (`image` for an `<img>`).
    pub fetch_dest: Option<String>,
    pub accept: Option<String>,
    pub host: Option<String>,
    /// Where a browser's page came from (`scheme://host[:port]`); clients that are not browsers
    /// send none.
    pub origin: Option<String>,
}

impl Request {
    /// The value of `name` in the query string, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The token the client presents: `?token=` or `Authorization: Bearer` (the scheme in any
    /// case, RFC 9110 11.1).
    pub fn presented_token(&self) -> Option<String> {
        self.query_param("token").or_else(|| {
            let (scheme, token) = self.authorization.as_deref()?.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("connection closed before a complete request")]
    Closed,
    #[error("no complete request within {HEAD_TIMEOUT:?}")]
    Timeout,
    #[error("reading the request: {0}")]
    Io(#[from] io::Error),
}

/// Reads and parses one request head. Returns it with the bytes that followed it (the start of
/// a WebSocket stream, if the client did not wait for the handshake).
pub async fn read_head<S: AsyncReadRent>(stream: &mut S) -> Result<(Request, Vec<u8>), HeadError> {
    match monoio::time::timeout(HEAD_TIMEOUT, read_head_unbounded(stream)).await {
        Ok(result) => result,
        Err(_) => Err(HeadError::Timeout),
    }
}

async fn read_head_unbounded<S: AsyncReadRent>(
    stream: &mut S,
) -> Result<(Request, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        if let Some((request, head_len)) = parse_head(&buf)? {
            return Ok((request, buf.split_off(head_len)));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(READ_CHUNK.min(MAX_HEAD_BYTES + 1 - buf.len()));
        let len = buf.len();
        let (result, slice) = stream.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        if result? == 0 {
            return Err(HeadError::Closed);
        }
    }
}

/// `Ok(None)`: the head is not complete yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err(HeadError::Malformed(format!(
            "request target {target:?} is not a path"
        )));
    }
    let mut request = Request {
        method: parsed.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query,
        ..Request::default()
    };
    for header in parsed.headers.iter() {
        let value = || {
            std::str::from_utf8(header.value)
                .map(|v| v.trim().to_owned())
                .map_err(|_| HeadError::Malformed(format!("header {} is not text", header.name)))
        };
        let slot = match header.name.to_ascii_lowercase().as_str() {
            "upgrade" => &mut request.upgrade,
            "connection" => &mut request.connection,
            "sec-websocket-key" => &mut request.ws_key,
            "sec-websocket-version" => &mut request.ws_version,
            "authorization" => &mut request.authorization,
            "if-none-match" => &mut request.if_none_match,
            "sec-fetch-dest" => &mut request.fetch_dest,
            "accept" => &mut request.accept,
            "host" => &mut request.host,
            "origin" => &mut request.origin,
            _ => continue,
        };
        *slot = Some(value()?);
    }
    Ok(Some((request, head_len)))
}

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    SwitchingProtocols,
    NotModified,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    Conflict,
    UpgradeRequired,
    HeadersTooLarge,
    InternalError,
    ServiceUnavailable,
    InsufficientStorage,
}

impl Status {
    /// A 4xx: the request was at fault.
    pub fn is_client_error(self) -> bool {
        self.line().starts_with('4')
    }

    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::SwitchingProtocols => "101 Switching Protocols",
            Status::NotModified => "304 Not Modified",
            Status::BadRequest => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::NotAcceptable => "406 Not Acceptable",
            Status::Conflict => "409 Conflict",
            Status::UpgradeRequired => "426 Upgrade Required",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::InternalError => "500 Internal Server Error",
            Status::ServiceUnavailable => "503 Service Unavailable",
            Status::InsufficientStorage => "507 Insufficient Storage",
        }
    }
}

/// A complete response with a body; the connection closes after it.
pub fn response(status: Status, content_type: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A file the client may keep and revalidate (`Cache-Control: no-cache` with an `ETag`): 304
/// without a body when `if_none_match` names this very content. These are the viewer's files:
/// `Referrer-Policy: no-referrer` keeps a page opened with `?token=` from repeating its URL, token
/// and all, in the `Referer` of every request it makes (and into proxies' logs).
pub fn revalidated_response(
    content_type: &str,
    etag: &str,
    if_none_match: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let fresh = if_none_match.is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let head = |status: Status, length: &str| {
        format!(
            "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\n{length}Cache-Control: no-cache\r\nETag: {etag}\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
            status.line()
        )
        .into_bytes()
    };
    if fresh {
        return head(Status::NotModified, "");
    }
    let mut out = head(Status::Ok, &format!("Content-Length: {}\r\n", body.len()));
    out.extend_from_slice(body);
    out
}

/// An error answer: the status and a one-line reason.
pub fn error_response(status: Status, reason: &str) -> Vec<u8> {
    let extra = match status {
        Status::Unauthorized => "WWW-Authenticate: Bearer\r\n",
        Status::UpgradeRequired => "Sec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        format!("{reason}\n").as_bytes(),
    )
}

/// Writes all of `bytes`, or fails with `TimedOut` once `deadline` has passed.
pub async fn write_within<S: AsyncWriteRent>(
    stream: &mut S,
    bytes: Vec<u8>,
    deadline: Duration,
) -> io::Result<()> {
    match monoio::time::timeout(deadline, stream.write_all(bytes)).await {
        Ok((result, _)) => result.map(|_| ()),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes `bytes` and shuts the sending side, so the client sees the end of the response; gives
/// up after [`WRITE_TIMEOUT`].
pub async fn send_and_close<S: AsyncWriteRent>(stream: &mut S, bytes: Vec<u8>) -> io::Result<()> {
    write_within(stream, bytes, WRITE_TIMEOUT).await?;
    match monoio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Sends an error reply and closes, reading and discarding what the client still sends until
/// it closes too or [`LINGER`] has passed.
pub async fn refuse_and_close<S: AsyncReadRent + AsyncWriteRent>(
    stream: &mut S,
    bytes: Vec<u8>,
) -> io::Result<()> {
    send_and_close(stream, bytes).await?;
    let _ = monoio::time::timeout(LINGER, discard_input(stream)).await;
    Ok(())
}

async fn discard_input<S: AsyncReadRent>(stream: &mut S) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let (result, returned) = stream.read(buf).await;
        buf = returned;
        if !matches!(result, Ok(n) if n > 0) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_is_parsed_with_path_query_and_upgrade_headers() {
        let raw = b"GET /ws/cam1?token=a%20b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let (req, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws/cam1");
        assert_eq!(req.presented_token().as_deref(), Some("a b"));
        assert_eq!(req.upgrade.as_deref(), Some("websocket"));
        assert_eq!(req.ws_key.as_deref(), Some("abc"));
        assert_eq!(&raw[len..], b"rest");
    }

    #[test]
    fn a_partial_head_asks_for_more_and_garbage_is_malformed() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(matches!(
            parse_head(b"G\x01T / HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"GET nopath HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn a_bearer_header_is_a_token_too() {
        let raw = b"GET / HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
        let (req, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.presented_token().as_deref(), Some("s3cret"));
    }
}

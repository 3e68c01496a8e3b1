//! `--source http://…`: an IP camera's MJPEG stream (`multipart/x-mixed-replace`, parts with or
//! without Content-Length, plain or chunked), frames passed through unchanged. A lost
//! connection is retried by the supervisor with backoff.
//!
//! The HTTP client is a minimal one over `TcpStream` and `httparse`: the stream is endless, so
//! what matters is a per-read timeout and handing raw body bytes to the JPEG splitter, which
//! the common blocking clients do not offer together.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ringbuf::Codec;

use super::byte_stream::ByteStream;
use super::{FrameStream, Pulled, Source, POLL};
use crate::cli::redact;
use crate::split;
use crate::SourceError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16 << 10;
/// A camera that sends nothing for this long is reconnected.
const SILENT_LIMIT: Duration = Duration::from_secs(10);

/// The parts of an `http://` URL a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub target: String,
    /// `user:password` from the URL, for Basic authentication.
    pub credentials: Option<String>,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| format!("{} is not an http:// URL", redact(url)))?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(percent_decode(userinfo)), host),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port)
            .ok_or_else(|| format!("{}: bad host or port", redact(url)))?;
        if host.is_empty() {
            return Err(format!("{}: no host", redact(url)));
        }
        Ok(HttpUrl {
            host,
            port,
            target,
            credentials,
        })
    }

    fn host_header(&self) -> String {
        // An IPv6 literal is bracketed in Host as in the URL, port or not (RFC 7230 5.4).
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (port 80 if none); `None` if malformed, including
/// an IPv6 literal without brackets.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((s.to_owned(), 80)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct HttpSource {
    url: String,
    max_frame_bytes: usize,
}

impl HttpSource {
    pub fn new(url: String, max_frame_bytes: usize) -> HttpSource {
        HttpSource {
            url,
            max_frame_bytes,
        }
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        format!("MJPEG camera {}", redact(&self.url))
    }

    fn preflight(&self) -> Result<(), SourceError> {
        HttpUrl::parse(&self.url)
            .map(|_| ())
            .map_err(SourceError::Protocol)
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        let url = HttpUrl::parse(&self.url).map_err(SourceError::Protocol)?;
        let mut socket = connect(&url)?;
        send_request(&mut socket, &url)?;
        let (head, body_start) = read_head(&mut socket)?;
        let response = parse_head(&head)?;
        let stream = ByteStream::new(
            socket,
            split::for_codec(Codec::Jpeg, self.max_frame_bytes),
            Some(SILENT_LIMIT),
            Box::new(|| SourceError::Protocol("the camera closed the connection".into())),
        )
        .with_body_start(&body_start, response.chunked)?;
        Ok(Box::new(HttpStream { inner: stream }))
    }
}

struct HttpStream {
    inner: ByteStream<TcpStream>,
}

impl FrameStream for HttpStream {
    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        self.inner.next_frame()
    }
}

fn connect(url: &HttpUrl) -> Result<TcpStream, SourceError> {
    let what = format!("connecting to {}:{}", url.host, url.port);
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(SourceError::io(&what))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(socket) => {
                socket
                    .set_read_timeout(Some(POLL))
                    .map_err(SourceError::io(&what))?;
                socket
                    .set_write_timeout(Some(CONNECT_TIMEOUT))
                    .map_err(SourceError::io(&what))?;
                let _ = socket.set_nodelay(true);
                return Ok(socket);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(SourceError::io(what)(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
    })))
}

fn send_request(socket: &mut TcpStream, url: &HttpUrl) -> Result<(), SourceError> {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringcast-capture/{}\r\nAccept: multipart/x-mixed-replace, image/jpeg, */*\r\nConnection: close\r\n",
        url.target,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(credentials) = &url.credentials {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    socket
        .write_all(request.as_bytes())
        .map_err(SourceError::io("sending the request"))
}

/// Reads up to the end of the response headers; returns them and the body bytes read past them.
fn read_head(socket: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), SourceError> {
    let deadline = Instant::now() + HEADER_TIMEOUT;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            let body = head.split_off(end + 4);
            return Ok((head, body));
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(SourceError::Protocol(
                "the response headers are too long".into(),
            ));
        }
        if Instant::now() > deadline {
            return Err(SourceError::Protocol(
                "no response headers within 10 s".into(),
            ));
        }
        match socket.read(&mut chunk) {
            Ok(0) => {
                return Err(SourceError::Protocol(
                    "the camera closed the connection before answering".into(),
                ))
            }
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(SourceError::io("reading the response")(e)),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub chunked: bool,
}

pub fn parse_head(head: &[u8]) -> Result<ResponseHead, SourceError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(SourceError::Protocol(
                "the camera's answer is not HTTP".into(),
            ))
        }
    }
    let code = response.code.unwrap_or(0);
    if code != 200 {
        return Err(SourceError::Protocol(format!(
            "the camera answered HTTP {code} {}",
            response.reason.unwrap_or("")
        )));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let content_type = header("content-type").unwrap_or_default();
    if !(content_type.starts_with("multipart/") || content_type.starts_with("image/jpeg")) {
        return Err(SourceError::Protocol(format!(
            "the camera sends {content_type:?}, not an MJPEG stream"
        )));
    }
    let chunked = header("transfer-encoding").is_some_and(|te| te.contains("chunked"));
    Ok(ResponseHead { chunked })
}

/// A chunk-size line longer than this is not chunk framing (real ones are a few hex digits and
/// perhaps a short extension).
const MAX_CHUNK_SIZE_LINE: usize = 1 << 10;

/// Undoes `Transfer-Encoding: chunked`, incrementally.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size_line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    Done,
}

impl ChunkedDecoder {
    /// Appends the data in `input` to `out`. A body that breaks the chunk framing is an error:
    /// there is no telling where data resumes, so the connection is dropped and made anew.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), SourceError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let nl = memchr::memchr(b'\n', input);
                    let line_part = &input[..nl.unwrap_or(input.len())];
                    if self.size_line.len() + line_part.len() > MAX_CHUNK_SIZE_LINE {
                        return Err(bad_chunking("a chunk-size line longer than 1 KiB"));
                    }
                    self.size_line.extend_from_slice(line_part);
                    let Some(nl) = nl else {
                        return Ok(());
                    };
                    input = &input[nl + 1..];
                    let line = String::from_utf8_lossy(&self.size_line).into_owned();
                    self.size_line.clear();
                    let digits = line.split(';').next().unwrap_or("").trim();
                    if digits.is_empty() {
                        continue;
                    }
                    self.state = match usize::from_str_radix(digits, 16) {
                        Ok(0) => ChunkState::Done,
                        Ok(n) => ChunkState::Data(n),
                        Err(_) => return Err(bad_chunking("a chunk size that is not hex")),
                    };
                }
                ChunkState::Data(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => match memchr::memchr(b'\n', input) {
                    Some(nl) => {
                        input = &input[nl + 1..];
                        self.state = ChunkState::Size;
                    }
                    None => return Ok(()),
                },
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

fn bad_chunking(what: &str) -> SourceError {
    SourceError::Protocol(format!("the chunked body is broken: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_target_and_credentials() {
        assert_eq!(
            HttpUrl::parse("http://admin:p%40ss@cam.local:8080/video.mjpg?res=hd").unwrap(),
            HttpUrl {
                host: "cam.local".into(),
                port: 8080,
                target: "/video.mjpg?res=hd".into(),
                credentials: Some("admin:p@ss".into()),
            }
        );
        let plain = HttpUrl::parse("http://10.0.0.2").unwrap();
        assert_eq!((plain.port, plain.target.as_str()), (80, "/"));
        let v6 = HttpUrl::parse("http://[::1]:81/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 81));
        assert!(HttpUrl::parse("http://cam:notaport/").is_err());
        assert!(HttpUrl::parse("http://::1:81/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_the_host_header() {
        let host = |url: &str| HttpUrl::parse(url).unwrap().host_header();
        assert_eq!(host("http://[::1]/x"), "[::1]");
        assert_eq!(host("http://[fe80::2]:8080/x"), "[fe80::2]:8080");
        assert_eq!(host("http://cam.local/x"), "cam.local");
        assert_eq!(host("http://10.0.0.2:81/"), "10.0.0.2:81");
    }

    #[test]
    fn only_a_200_mjpeg_answer_is_accepted() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=x\r\n\r\n";
        assert_eq!(parse_head(ok).unwrap(), ResponseHead { chunked: false });
        let denied = b"HTTP/1.1 401 Unauthorized\r\n\r\n";
        assert!(parse_head(denied).unwrap_err().to_string().contains("401"));
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n";
        assert!(parse_head(html).is_err());
    }

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 1..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            decoder.feed(&body[..split], &mut out).unwrap();
            decoder.feed(&body[split..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
        }
    }

    #[test]
    fn a_body_that_is_not_chunk_framing_is_an_error_and_holds_little() {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let endless = [b'7'; 300];
        let mut result = Ok(());
        for _ in 0..10 {
            result = decoder.feed(&endless, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "a size line without end was accepted");
        assert!(decoder.size_line.len() <= MAX_CHUNK_SIZE_LINE);
        let mut decoder = ChunkedDecoder::default();
        let err = decoder.feed(b"5\r\nhello\r\nnot hex\r\n", &mut out);
        assert!(err.unwrap_err().to_string().contains("not hex"));
    }
}

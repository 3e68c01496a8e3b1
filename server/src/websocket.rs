//! The WebSocket protocol on top of tungstenite's pieces: the handshake key, frame headers built
//! with `FrameHeader::format` and parsed with `FrameHeader::parse`. tungstenite's own `WebSocket`
//! owns the socket and copies every message into its buffers; a fan-out server must write one
//! shared frame to many sockets, so only the header code is borrowed.

use std::io::{self, Cursor};

use base64::Engine;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::http::{Request, Status};

/// Close codes this server sends.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Something the server's rules do not allow (a camera that is not the sender's to write,
    /// a camera that went quiet).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A text message that is not UTF-8 (RFC 6455 8.1).
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    /// A limit of the moment (no room, too many cameras): worth trying again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The viewer did not take frames for `--stall-timeout` (DESIGN.md).
    pub const TOO_SLOW: u16 = 4008;
    /// The camera's stream changed under the viewer (its ring now carries another codec):
    /// reconnect to get it as it is now.
    pub const SERVICE_RESTART: u16 = 1012;
}

/// Longest header of a server frame: 2 bytes, 8 of extended length, no mask.
pub const MAX_HEADER_LEN: usize = 10;

/// Why an upgrade request is refused, with the HTTP status to answer.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("not a WebSocket upgrade request (Upgrade: websocket and Connection: Upgrade needed)")]
    NotUpgrade,
    #[error("WebSocket upgrade needs GET, not {0}")]
    Method(String),
    #[error("unsupported Sec-WebSocket-Version {0:?}: only 13 is spoken")]
    Version(Option<String>),
    #[error("Sec-WebSocket-Key is missing or not 16 bytes in base64")]
    Key,
}

impl UpgradeError {
    pub fn status(&self) -> Status {
        match self {
            UpgradeError::Version(_) => Status::UpgradeRequired,
            UpgradeError::Method(_) => Status::MethodNotAllowed,
            UpgradeError::NotUpgrade | UpgradeError::Key => Status::BadRequest,
        }
    }
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether the request asks for a WebSocket at all (so a plain GET can get a clear 400).
pub fn is_upgrade(request: &Request) -> bool {
    has_token(request.upgrade.as_deref(), "websocket")
}

/// Checks an upgrade request (RFC 6455 section 4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub fn accept_key(request: &Request) -> Result<String, UpgradeError> {
    if !is_upgrade(request) || !has_token(request.connection.as_deref(), "upgrade") {
        return Err(UpgradeError::NotUpgrade);
    }
    if request.method != "GET" {
        return Err(UpgradeError::Method(request.method.clone()));
    }
    if request.ws_version.as_deref() != Some("13") {
        return Err(UpgradeError::Version(request.ws_version.clone()));
    }
    let key = request.ws_key.as_deref().ok_or(UpgradeError::Key)?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(UpgradeError::Key),
    }
}

pub fn handshake_response(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// A server frame header, kept inline: built once per frame and shared by every viewer.
#[derive(Clone, Copy, Debug)]
pub struct WsHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl WsHeader {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The header of an unfragmented, unmasked server frame carrying `payload_len` bytes.
pub fn frame_header(opcode: OpCode, payload_len: u64) -> WsHeader {
    let header = FrameHeader {
        is_final: true,
        opcode,
        ..FrameHeader::default()
    };
    let mut bytes = [0u8; MAX_HEADER_LEN];
    let mut out: &mut [u8] = &mut bytes;
    // A server header is at most MAX_HEADER_LEN bytes, so writing into the array cannot run out.
    let _ = header.format(payload_len, &mut out);
    let len = header.len(payload_len) as u8;
    WsHeader { bytes, len }
}

pub fn binary_header(payload_len: usize) -> WsHeader {
    frame_header(OpCode::Data(Data::Binary), payload_len as u64)
}

/// A whole text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    small_frame(OpCode::Data(Data::Text), text.as_bytes())
}

/// A whole control or small data frame, for pings, pongs, closes and demand messages.
pub fn small_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = frame_header(opcode, payload.len() as u64);
    let mut out = Vec::with_capacity(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A close frame; the reason is cut to fit the 125-byte control payload.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    small_frame(OpCode::Control(Control::Close), &payload)
}

pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    small_frame(OpCode::Control(Control::Ping), payload)
}

pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    small_frame(OpCode::Control(Control::Pong), payload)
}

/// One message from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The peer's close, with its code if it sent one.
    Close(Option<u16>),
}

/// Why reading from the peer ended.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed without a close frame")]
    Eof,
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("message of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: u64, max: usize },
    #[error("a text message that is not UTF-8")]
    NotUtf8,
}

impl ReadError {
    /// The close code and reason to send the peer, if the connection can still take one.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        match self {
            ReadError::Eof | ReadError::Io(_) => None,
            ReadError::Protocol(why) => Some((close::PROTOCOL_ERROR, why.clone())),
            ReadError::TooLarge { .. } => Some((close::TOO_BIG, self.to_string())),
            ReadError::NotUtf8 => Some((close::INVALID_PAYLOAD, self.to_string())),
        }
    }
}

/// Reads client frames: unmasks them, joins fragments, refuses what RFC 6455 forbids.
pub struct WsReader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    max_message: usize,
    partial: Option<(Data, Vec<u8>)>,
}

const READ_CHUNK: usize = 512;

impl<R: AsyncReadRent> WsReader<R> {
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(message) = self.next_buffered()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (result, slice) = self.io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        match result? {
            0 => Err(ReadError::Eof),
            _ => Ok(()),
        }
    }
}

/// The reader's synchronous core, which works on the bytes read so far (and which the fuzz
/// targets drive with bytes of their own).
impl<R> WsReader<R> {
    /// `already` holds bytes read past the HTTP head; `max_message` bounds every message.
    pub fn new(io: R, already: Vec<u8>, max_message: usize) -> WsReader<R> {
        WsReader {
            io,
            buf: already,
            start: 0,
            max_message,
            partial: None,
        }
    }

    /// The next whole message among the bytes read so far, if they hold one.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming>, ReadError> {
        while let Some((header, payload)) = self.parse_frame()? {
            if let Some(message) = self.assemble(header, payload)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    fn parse_frame(&mut self) -> Result<Option<(FrameHeader, Vec<u8>)>, ReadError> {
        let available = &self.buf[self.start..];
        let mut cursor = Cursor::new(available);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(e) => return Err(ReadError::Protocol(e.to_string())),
        };
        let partial_len = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
        if len.saturating_add(partial_len) > self.max_message as u64 {
            return Err(ReadError::TooLarge {
                len: len.saturating_add(partial_len),
                max: self.max_message,
            });
        }
        let header_len = cursor.position() as usize;
        let len = len as usize;
        if available.len() < header_len + len {
            self.buf.reserve(header_len + len - available.len());
            return Ok(None);
        }
        let Some(mask) = header.mask else {
            return Err(ReadError::Protocol("client frames must be masked".into()));
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol("reserved bits set".into()));
        }
        let begin = self.start + header_len;
        let mut payload = self.buf[begin..begin + len].to_vec();
        unmask(&mut payload, mask);
        self.start = begin + len;
        Ok(Some((header, payload)))
    }

    fn assemble(
        &mut self,
        header: FrameHeader,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, ReadError> {
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final || payload.len() > 125 {
                    return Err(ReadError::Protocol(
                        "control frames must be whole and at most 125 bytes".into(),
                    ));
                }
                match control {
                    Control::Ping => Ok(Some(Incoming::Ping(payload))),
                    Control::Pong => Ok(Some(Incoming::Pong)),
                    Control::Close => parse_close(&payload).map(|code| Some(Incoming::Close(code))),
                    Control::Reserved(_) => {
                        Err(ReadError::Protocol("reserved control opcode".into()))
                    }
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some((kind, mut joined)) = self.partial.take() else {
                    return Err(ReadError::Protocol("continuation without a message".into()));
                };
                joined.extend_from_slice(&payload);
                if header.is_final {
                    message(kind, joined).map(Some)
                } else {
                    self.partial = Some((kind, joined));
                    Ok(None)
                }
            }
            OpCode::Data(Data::Reserved(_)) => {
                Err(ReadError::Protocol("reserved data opcode".into()))
            }
            OpCode::Data(kind) => {
                if self.partial.is_some() {
                    return Err(ReadError::Protocol(
                        "new message before the last one ended".into(),
                    ));
                }
                if header.is_final {
                    message(kind, payload).map(Some)
                } else {
                    self.partial = Some((kind, payload));
                    Ok(None)
                }
            }
        }
    }
}

/// The code of a peer's close frame (`None`: it sent none). RFC 6455 7.4: a one-byte payload,
/// a code no endpoint may send, or a reason that is not UTF-8 is a protocol error.
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("close payload of one byte".into())),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(ReadError::Protocol(format!(
                    "close code {code} is not allowed"
                )));
            }
            std::str::from_utf8(reason)
                .map_err(|_| ReadError::Protocol("close reason is not UTF-8".into()))?;
            Ok(Some(code))
        }
    }
}

/// The code to echo to a peer that closed with `code` (already checked by the reader).
pub fn echo_close_code(code: Option<u16>) -> u16 {
    code.unwrap_or(close::NORMAL)
}

fn message(kind: Data, payload: Vec<u8>) -> Result<Incoming, ReadError> {
    match kind {
        Data::Text if std::str::from_utf8(&payload).is_err() => Err(ReadError::NotUtf8),
        Data::Text => Ok(Incoming::Text(payload)),
        _ => Ok(Incoming::Binary(payload)),
    }
}

/// Client-to-server masking is a 4-byte XOR; tungstenite keeps its helper private.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_short_medium_and_long_length_forms() {
        assert_eq!(binary_header(5).as_bytes(), &[0x82, 5]);
        assert_eq!(binary_header(300).as_bytes(), &[0x82, 126, 1, 44]);
        let long = binary_header(100_000);
        assert_eq!(long.as_bytes().len(), 10);
        assert_eq!(&long.as_bytes()[..2], &[0x82, 127]);
    }

    #[test]
    fn the_accept_key_matches_rfc_6455() {
        let request = Request {
            method: "GET".into(),
            upgrade: Some("websocket".into()),
            connection: Some("keep-alive, Upgrade".into()),
            ws_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            ws_version: Some("13".into()),
            ..Request::default()
        };
        assert_eq!(
            accept_key(&request).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let bad_key = Request {
            ws_key: Some("short".into()),
            ..request.clone()
        };
        assert!(matches!(accept_key(&bad_key), Err(UpgradeError::Key)));
        let bad_version = Request {
            ws_version: Some("8".into()),
            ..request
        };
        assert_eq!(
            accept_key(&bad_version).unwrap_err().status(),
            Status::UpgradeRequired
        );
    }

    #[test]
    fn close_frames_with_bad_codes_short_payloads_or_bad_reasons_are_protocol_errors() {
        assert_eq!(parse_close(b"").unwrap(), None);
        for code in [1000u16, 1003, 1007, 1014, 3000, 4999] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye é".as_bytes());
            assert_eq!(parse_close(&payload).unwrap(), Some(code));
        }
        assert!(matches!(parse_close(&[3]), Err(ReadError::Protocol(_))));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535] {
            assert!(
                matches!(
                    parse_close(&code.to_be_bytes()),
                    Err(ReadError::Protocol(_))
                ),
                "code {code} refused"
            );
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xC3, 0x28]);
        assert!(matches!(
            parse_close(&bad_reason),
            Err(ReadError::Protocol(_))
        ));
        assert_eq!(echo_close_code(None), close::NORMAL);
        assert_eq!(echo_close_code(Some(4000)), 4000);
    }

    #[test]
    fn close_reasons_are_cut_on_a_character_boundary() {
        let frame = close_frame(close::TOO_SLOW, &"é".repeat(100));
        assert!(frame.len() <= 2 + 125);
        assert_eq!(&frame[2..4], &4008u16.to_be_bytes());
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}

//! Incremental parsers for what a viewer receives once its handshake is done: WebSocket frames
//! (`/ws/{cam}`) and multipart parts (`/stream/{cam}.mjpg`).
//!
//! A load client must not spend the CPU it is measuring: each parser keeps only the first
//! [`PREFIX_LEN`] bytes of a frame (enough for a JPEG's COM timing segment, or the header in
//! front of an H.264 access unit) and then tells the caller,
//! through [`Parser::skippable`], how many payload bytes it may discard without reading them
//! (`recv` with `MSG_TRUNC`, which drops TCP data in the kernel without copying it out). That is
//! why frames are parsed here by hand instead of with tungstenite's `FrameCodec`, which buffers
//! every whole message; tungstenite still parses each frame header and builds the frames we send.

use std::io::Cursor;

use ringbuf::frame::{read_access_unit_header, read_timing, FrameTiming};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

/// Bytes kept from the start of each JPEG: SOI plus a COM segment of about 60 bytes.
pub const PREFIX_LEN: usize = 256;

/// Longest line accepted in a multipart stream (boundary or part header).
const MAX_LINE: usize = 1024;

/// The largest control frame payload RFC 6455 allows.
const MAX_CONTROL: u64 = 125;

/// What a parser found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete frame arrived (a JPEG, or an H.264 access unit).
    Frame(Received),
    /// The server pinged; answer with [`pong_frame`].
    Ping(Vec<u8>),
    /// The server closed the stream (WebSocket close frame with its code, or the closing
    /// multipart boundary with none).
    Close(Option<u16>),
}

/// One received frame, as far as the load client cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub timing: Option<FrameTiming>,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid WebSocket frame header: {0}")]
    BadHeader(String),
    #[error("the server sent a masked WebSocket frame")]
    MaskedFrame,
    #[error("WebSocket frame with reserved bits or opcode {0}")]
    Reserved(u8),
    #[error("WebSocket continuation frame outside a message")]
    StrayContinuation,
    #[error("new WebSocket message before the previous one ended")]
    UnfinishedMessage,
    #[error("WebSocket control frame of {0} bytes or fragmented")]
    BadControl(u64),
    #[error("multipart line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("expected the multipart boundary, got {0:?}")]
    BadBoundary(String),
    #[error("multipart part without a Content-Length header (not supported)")]
    NoContentLength,
    #[error("multipart Content-Length {0:?} is not a number")]
    BadContentLength(String),
}

/// A stream parser for one viewer.
#[derive(Debug)]
pub enum Parser {
    Ws(WsParser),
    Mjpeg(MjpegParser),
}

impl Parser {
    /// Parses `data`, appending what it completes to `events`.
    pub fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), WireError> {
        match self {
            Parser::Ws(p) => p.feed(data, events),
            Parser::Mjpeg(p) => p.feed(data, events),
        }
    }

    /// How many of the next bytes are payload the parser does not need to see.
    pub fn skippable(&self) -> u64 {
        match self {
            Parser::Ws(p) => p.frame.as_ref().map_or(0, |f| f.body.skippable()),
            Parser::Mjpeg(p) => p.body.as_ref().map_or(0, Body::skippable),
        }
    }

    /// Accounts for `n` (at most [`skippable`](Self::skippable)) bytes discarded unread.
    pub fn skip(&mut self, n: u64, events: &mut Vec<Event>) {
        match self {
            Parser::Ws(p) => {
                if p.advance_body(n) {
                    p.end_frame(events);
                }
            }
            Parser::Mjpeg(p) => {
                if let Some(body) = &mut p.body {
                    body.remaining -= n.min(body.remaining);
                    if body.remaining == 0 {
                        p.end_part(events);
                    }
                }
            }
        }
    }
}

/// The payload of a frame or part being received.
#[derive(Debug)]
struct Body {
    remaining: u64,
    /// Whether the next payload bytes must be looked at: a JPEG's prefix not yet complete, or a
    /// control frame. Anything else may be discarded unread.
    must_read: bool,
}

impl Body {
    fn skippable(&self) -> u64 {
        if self.must_read {
            0
        } else {
            self.remaining
        }
    }
}

/// Appends to `prefix` as much of `data` as fits in [`PREFIX_LEN`].
fn keep_prefix(prefix: &mut Vec<u8>, data: &[u8]) {
    let room = PREFIX_LEN.saturating_sub(prefix.len());
    prefix.extend_from_slice(&data[..room.min(data.len())]);
}

/// Which message a run of WebSocket data frames belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Binary,
    Text,
}

/// The WebSocket frame being received, once its header is complete.
#[derive(Debug)]
struct WsFrame {
    opcode: OpCode,
    fin: bool,
    body: Body,
}

#[derive(Debug, Default)]
pub struct WsParser {
    header: [u8; 14],
    header_have: usize,
    frame: Option<WsFrame>,
    message: Option<Message>,
    message_len: u64,
    prefix: Vec<u8>,
    control: Vec<u8>,
}

impl WsParser {
    pub fn new() -> WsParser {
        WsParser {
            prefix: Vec::with_capacity(PREFIX_LEN),
            ..WsParser::default()
        }
    }

    fn feed(&mut self, mut data: &[u8], events: &mut Vec<Event>) -> Result<(), WireError> {
        while !data.is_empty() {
            let Some(frame) = &self.frame else {
                let used = self.take_header(data, events)?;
                data = &data[used..];
                continue;
            };
            let take = frame.body.remaining.min(data.len() as u64) as usize;
            let chunk = &data[..take];
            match frame.opcode {
                OpCode::Control(_) => self.control.extend_from_slice(chunk),
                _ if self.message == Some(Message::Binary) => keep_prefix(&mut self.prefix, chunk),
                _ => {}
            }
            data = &data[take..];
            if self.advance_body(take as u64) {
                self.end_frame(events);
            }
        }
        Ok(())
    }

    /// Collects header bytes and starts the frame once they are all there; returns how many
    /// bytes of `data` it used.
    fn take_header(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<usize, WireError> {
        let mut used = 0;
        loop {
            let need = if self.header_have < 2 {
                2
            } else {
                header_len(self.header[1])
            };
            if self.header_have == need {
                self.start_frame(events)?;
                return Ok(used);
            }
            if used == data.len() {
                return Ok(used);
            }
            let take = (need - self.header_have).min(data.len() - used);
            self.header[self.header_have..self.header_have + take]
                .copy_from_slice(&data[used..used + take]);
            self.header_have += take;
            used += take;
        }
    }

    fn start_frame(&mut self, events: &mut Vec<Event>) -> Result<(), WireError> {
        let mut cursor = Cursor::new(&self.header[..self.header_have]);
        self.header_have = 0;
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Err(WireError::BadHeader("incomplete".into())),
            Err(e) => return Err(WireError::BadHeader(e.to_string())),
        };
        if header.mask.is_some() {
            return Err(WireError::MaskedFrame);
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WireError::Reserved(u8::from(header.opcode)));
        }
        let must_read = match header.opcode {
            OpCode::Data(Data::Continue) => {
                if self.message.is_none() {
                    return Err(WireError::StrayContinuation);
                }
                self.message == Some(Message::Binary) && self.prefix.len() < PREFIX_LEN
            }
            OpCode::Data(kind @ (Data::Binary | Data::Text)) => {
                if self.message.is_some() {
                    return Err(WireError::UnfinishedMessage);
                }
                self.message = Some(if kind == Data::Binary {
                    Message::Binary
                } else {
                    Message::Text
                });
                self.message_len = 0;
                self.prefix.clear();
                kind == Data::Binary
            }
            OpCode::Control(Control::Close | Control::Ping | Control::Pong) => {
                if len > MAX_CONTROL || !header.is_final {
                    return Err(WireError::BadControl(len));
                }
                self.control.clear();
                true
            }
            OpCode::Data(Data::Reserved(code)) | OpCode::Control(Control::Reserved(code)) => {
                return Err(WireError::Reserved(code))
            }
        };
        self.frame = Some(WsFrame {
            opcode: header.opcode,
            fin: header.is_final,
            body: Body {
                remaining: len,
                must_read,
            },
        });
        if len == 0 {
            self.end_frame(events);
        }
        Ok(())
    }

    /// Consumes `n` payload bytes; true when the frame's payload is complete.
    fn advance_body(&mut self, n: u64) -> bool {
        let Some(frame) = &mut self.frame else {
            return false;
        };
        let body = &mut frame.body;
        body.remaining -= n.min(body.remaining);
        if let OpCode::Data(_) = frame.opcode {
            self.message_len += n;
            if self.prefix.len() >= PREFIX_LEN {
                body.must_read = false;
            }
        }
        body.remaining == 0
    }

    fn end_frame(&mut self, events: &mut Vec<Event>) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        match frame.opcode {
            OpCode::Data(_) if frame.fin => {
                let message = self.message.take();
                if message == Some(Message::Binary) {
                    events.push(Event::Frame(Received {
                        timing: message_timing(&self.prefix),
                        len: self.message_len,
                    }));
                }
            }
            OpCode::Control(Control::Ping) => events.push(Event::Ping(self.control.clone())),
            OpCode::Control(Control::Close) => {
                let code = (self.control.len() >= 2)
                    .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
                events.push(Event::Close(code));
            }
            _ => {}
        }
    }
}

/// The timing a binary message of `/ws/{cam}` carries: in a JPEG's comment, or in the header of
/// an H.264 access unit.
fn message_timing(prefix: &[u8]) -> Option<FrameTiming> {
    read_timing(prefix).or_else(|| read_access_unit_header(prefix).map(|(_, timing)| timing))
}

/// Length of a WebSocket frame header, from its first two bytes.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// Mask for frames we send. RFC 6455 wants it unpredictable to protect intermediaries from cache
/// poisoning by scripts; a load client talks straight to the server, so a constant does.
const CLIENT_MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A masked pong answering a ping with `data`.
pub fn pong_frame(data: &[u8]) -> Vec<u8> {
    masked(Frame::pong(data.to_vec()))
}

/// A masked close frame with code 1000 (normal closure).
pub fn close_frame() -> Vec<u8> {
    masked(Frame::close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
}

fn masked(mut frame: Frame) -> Vec<u8> {
    frame.header_mut().mask = Some(CLIENT_MASK);
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    out
}

/// Parses a `multipart/x-mixed-replace` body whose parts carry `Content-Length` (as ringcast,
/// mjpg-streamer and ustreamer send); parts without it are refused rather than scanned for the
/// boundary, which would mean reading every byte.
#[derive(Debug)]
pub struct MjpegParser {
    /// `--boundary`, as it appears on a delimiter line.
    delimiter: Vec<u8>,
    line: Vec<u8>,
    in_headers: bool,
    content_length: Option<u64>,
    body: Option<Body>,
    part_len: u64,
    prefix: Vec<u8>,
}

impl MjpegParser {
    /// `boundary` as given in the response's Content-Type parameter.
    pub fn new(boundary: &str) -> MjpegParser {
        let boundary = boundary.trim_matches('"');
        let delimiter = if boundary.starts_with("--") {
            boundary.as_bytes().to_vec()
        } else {
            format!("--{boundary}").into_bytes()
        };
        MjpegParser {
            delimiter,
            line: Vec::new(),
            in_headers: false,
            content_length: None,
            body: None,
            part_len: 0,
            prefix: Vec::with_capacity(PREFIX_LEN),
        }
    }

    fn feed(&mut self, mut data: &[u8], events: &mut Vec<Event>) -> Result<(), WireError> {
        while !data.is_empty() {
            if let Some(body) = &mut self.body {
                let take = body.remaining.min(data.len() as u64) as usize;
                keep_prefix(&mut self.prefix, &data[..take]);
                body.remaining -= take as u64;
                if self.prefix.len() >= PREFIX_LEN {
                    body.must_read = false;
                }
                data = &data[take..];
                if body.remaining == 0 {
                    self.end_part(events);
                }
                continue;
            }
            let newline = data.iter().position(|&b| b == b'\n');
            let end = newline.map_or(data.len(), |i| i + 1);
            if self.line.len() + end > MAX_LINE {
                return Err(WireError::LineTooLong);
            }
            self.line.extend_from_slice(&data[..end]);
            data = &data[end..];
            if newline.is_some() {
                self.end_line(events)?;
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<Event>) -> Result<(), WireError> {
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !self.in_headers {
            if text.is_empty() {
                return Ok(());
            }
            if text == self.delimiter.as_slice() {
                self.in_headers = true;
                self.content_length = None;
                return Ok(());
            }
            if text.strip_suffix(b"--") == Some(self.delimiter.as_slice()) {
                events.push(Event::Close(None));
                return Ok(());
            }
            return Err(WireError::BadBoundary(
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        if text.is_empty() {
            self.in_headers = false;
            let len = self.content_length.ok_or(WireError::NoContentLength)?;
            self.prefix.clear();
            self.part_len = len;
            self.body = Some(Body {
                remaining: len,
                must_read: true,
            });
            if len == 0 {
                self.end_part(events);
            }
            return Ok(());
        }
        if let Some((name, value)) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.split_once(':'))
        {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let value = value.trim();
                let len = value
                    .parse()
                    .map_err(|_| WireError::BadContentLength(value.to_owned()))?;
                self.content_length = Some(len);
            }
        }
        Ok(())
    }

    fn end_part(&mut self, events: &mut Vec<Event>) {
        self.body = None;
        events.push(Event::Frame(Received {
            timing: read_timing(&self.prefix),
            len: self.part_len,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::frame::insert_timing;
    use ringbuf::{FrameNo, WallNanos};

    fn jpeg(n: u64, size: usize) -> Vec<u8> {
        let mut body = vec![0xFF, 0xD8];
        body.resize(size - 2, 0x55);
        body.extend_from_slice(&[0xFF, 0xD9]);
        let mut out = Vec::new();
        let timing = FrameTiming {
            frame_no: FrameNo(n),
            capture: WallNanos(1_000 + n),
        };
        insert_timing(&body, timing, &mut out).unwrap();
        out
    }

    fn ws_text(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut out)
            .unwrap();
        out
    }

    fn ws_binary(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::Data(Data::Binary), true)
            .format(&mut out)
            .unwrap();
        out
    }

    /// Feeds `stream` in pieces of `piece` bytes, skipping what the parser allows, the way the
    /// load client does.
    fn run(parser: &mut Parser, stream: &[u8], piece: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let skip = parser.skippable();
            if skip > 0 {
                let n = (skip as usize).min(piece).min(stream.len() - at);
                parser.skip(n as u64, &mut events);
                at += n;
            } else {
                let n = piece.min(stream.len() - at);
                parser.feed(&stream[at..at + n], &mut events).unwrap();
                at += n;
            }
        }
        events
    }

    fn frame_numbers(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(r) => Some(r.timing.unwrap().frame_no.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn h264_messages_give_their_timing_and_config_messages_are_no_frames() {
        use ringbuf::{FrameKind, FrameNo, WallNanos};
        let mut stream = ws_text(r#"{"type":"config","codec":"avc1.42E01E"}"#);
        for n in 1..=3u64 {
            let timing = FrameTiming {
                frame_no: FrameNo(n),
                capture: WallNanos(n * 1000),
            };
            let mut message = ringbuf::frame::access_unit_header(FrameKind::Delta, timing).to_vec();
            message.extend_from_slice(&vec![0x41; 5000]);
            stream.extend(ws_binary(&message));
        }
        for piece in [1, 9, 4096] {
            let events = run(&mut Parser::Ws(WsParser::new()), &stream, piece);
            assert_eq!(frame_numbers(&events), vec![1, 2, 3], "pieces of {piece}");
        }
    }

    #[test]
    fn websocket_frames_are_found_whatever_the_read_sizes() {
        let mut stream = Vec::new();
        for n in 1..=5 {
            stream.extend(ws_binary(&jpeg(n, 70_000 + n as usize)));
        }
        for piece in [1, 7, 300, 4096, 1 << 20] {
            let events = run(&mut Parser::Ws(WsParser::new()), &stream, piece);
            assert_eq!(
                frame_numbers(&events),
                vec![1, 2, 3, 4, 5],
                "pieces of {piece}"
            );
            let third = jpeg(3, 70_003).len() as u64;
            assert!(matches!(events[2], Event::Frame(Received { len, .. }) if len == third));
        }
    }

    #[test]
    fn fragmented_messages_pings_and_close_codes_are_understood() {
        let image = jpeg(9, 1000);
        let mut stream = Vec::new();
        Frame::message(image[..10].to_vec(), OpCode::Data(Data::Binary), false)
            .format(&mut stream)
            .unwrap();
        Frame::ping(b"hi".to_vec()).format(&mut stream).unwrap();
        Frame::message(image[10..].to_vec(), OpCode::Data(Data::Continue), true)
            .format(&mut stream)
            .unwrap();
        Frame::message(b"text".to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut stream)
            .unwrap();
        Frame::close(Some(CloseFrame {
            code: CloseCode::from(4008),
            reason: "too slow".into(),
        }))
        .format(&mut stream)
        .unwrap();
        let events = run(&mut Parser::Ws(WsParser::new()), &stream, 3);
        assert_eq!(events[0], Event::Ping(b"hi".to_vec()));
        assert_eq!(frame_numbers(&events), vec![9]);
        assert_eq!(events.last(), Some(&Event::Close(Some(4008))));
    }

    #[test]
    fn masked_or_reserved_frames_are_protocol_errors() {
        let mut masked_frame = Vec::new();
        let mut frame = Frame::message(vec![1, 2, 3], OpCode::Data(Data::Binary), true);
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        frame.format(&mut masked_frame).unwrap();
        let mut events = Vec::new();
        let mut parser = Parser::Ws(WsParser::new());
        assert_eq!(
            parser.feed(&masked_frame, &mut events),
            Err(WireError::MaskedFrame)
        );
        let mut parser = Parser::Ws(WsParser::new());
        assert!(matches!(
            parser.feed(&[0x83, 0x00], &mut events),
            Err(WireError::BadHeader(_))
        ));
        let mut parser = Parser::Ws(WsParser::new());
        assert_eq!(
            parser.feed(&[0xC2, 0x00], &mut events),
            Err(WireError::Reserved(2))
        );
        let mut parser = Parser::Ws(WsParser::new());
        assert_eq!(
            parser.feed(&[0x80, 0x00], &mut events),
            Err(WireError::StrayContinuation)
        );
    }

    fn part(boundary: &str, image: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            image.len()
        )
        .into_bytes();
        out.extend_from_slice(image);
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn multipart_parts_are_found_whatever_the_read_sizes() {
        let mut stream = Vec::new();
        for n in 1..=4 {
            stream.extend(part("frame", &jpeg(n, 50_000)));
        }
        stream.extend_from_slice(b"--frame--\r\n");
        for piece in [1, 5, 999, 1 << 20] {
            let events = run(
                &mut Parser::Mjpeg(MjpegParser::new("frame")),
                &stream,
                piece,
            );
            assert_eq!(
                frame_numbers(&events),
                vec![1, 2, 3, 4],
                "pieces of {piece}"
            );
            assert_eq!(events.last(), Some(&Event::Close(None)));
        }
    }

    #[test]
    fn multipart_without_length_or_with_a_foreign_boundary_is_refused() {
        let mut events = Vec::new();
        let mut parser = MjpegParser::new("frame");
        assert_eq!(
            parser.feed(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n", &mut events),
            Err(WireError::NoContentLength)
        );
        let mut parser = MjpegParser::new("frame");
        assert_eq!(
            parser.feed(b"--other\r\n", &mut events),
            Err(WireError::BadBoundary("--other".into()))
        );
        let mut parser = MjpegParser::new("frame");
        assert_eq!(
            parser.feed(&[b'x'; 2000], &mut events),
            Err(WireError::LineTooLong)
        );
    }
}

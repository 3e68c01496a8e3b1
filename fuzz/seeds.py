#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into DIR/<target>/ (default: fuzz/seeds-new).

Each seed is laid out as its target's header comment describes. JPEGs come from ffmpeg's test
source when ffmpeg is installed, else a small structurally complete JPEG is used. The ring
reader's seeds are written by the target itself: run it once with RINGCAST_FUZZ_SEED_DIR=DIR.
The corpora in fuzz/corpus/ started from these and were then grown and minimised by fuzzing.
"""
import os
import shutil
import struct
import subprocess
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds-new")

TINY = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x01, 0xD9, 0xFF, 0xDA, 0x00, 0x03, 0x01,
              0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0x01, 0xFF, 0xD9])


def real_jpegs():
    if shutil.which("ffmpeg") is None:
        return [TINY, TINY]
    stream = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=5",
         "-frames:v", "2", "-q:v", "10", "-f", "mjpeg", "-"],
        check=True, capture_output=True).stdout
    frames, start = [], 0
    while True:
        end = stream.find(b"\xff\xd9", start)
        if end < 0:
            break
        frames.append(stream[start:end + 2])
        start = end + 2
    return frames or [TINY]


def mask(payload, key=b"\x11\x22\x33\x44"):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def client_frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\x11\x22\x33\x44" + mask(payload)


def x264_stream(params):
    """Three frames of x264 (an IDR, two P) at 64x48, or a hand-made unit without ffmpeg."""
    if shutil.which("ffmpeg") is None:
        return (b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x42\xc0\x0d\xda\x05\x07\xec"
                b"\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0f\x03\xc5\x0a\xa8"
                b"\x00\x00\x00\x01\x68\xce\x3c\x80\x00\x00\x01\x65\x88\x84\x21")
    return subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5",
         "-frames:v", "3", "-c:v", "libx264", "-bf", "0", "-x264-params", params,
         "-f", "h264", "-"],
        check=True, capture_output=True).stdout


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


jpegs = real_jpegs()
frame = jpegs[0]

for name, req in {
    "ws-upgrade": b"GET /ws/cam1?token=a%20b HTTP/1.1\r\nHost: cams.local:8080\r\nUpgrade: websocket\r\n"
                  b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\nOrigin: http://cams.local:8080\r\n\r\n\x81\x85",
    "snapshot": b"GET /snapshot/cam1.jpg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                b"If-None-Match: \"abc\", W/\"def\"\r\nSec-Fetch-Dest: image\r\nAccept: image/*\r\n\r\n",
    "api": b"GET /api/cameras HTTP/1.0\r\nAccept: application/json\r\n\r\n",
    "partial": b"GET /mjpeg/cam1 HTTP/1.1\r\nHost: x\r\n",
}.items():
    write("http_request_head", name, req)

text = client_frame(1, "hello é".encode())
binary = client_frame(2, bytes(range(200)))
fragmented = client_frame(1, b"frag", fin=False) + client_frame(9, b"ping") + client_frame(0, b"ment")
close = client_frame(8, struct.pack(">H", 1000) + b"bye")
ingest = client_frame(2, frame)
write("ws_reader", "viewer-messages", b"\x00\x00\x00\x00" + text + binary + fragmented + close)
write("ws_reader", "ingest-frame", b"\x00\x07\x00\x00" + ingest + client_frame(10, b""))
write("ws_reader", "round-trip", b"\x80" + bytes([0x81, 1, 2, 3, 4, 5, 0]) + b"hello"
      + bytes([0x4C, 9, 9, 9, 9, 3, 0]) + b"abc")

write("ws_close", "normal", struct.pack(">H", 1000) + b"bye")
write("ws_close", "too-slow", struct.pack(">H", 4008) + "é".encode() * 70)
write("ws_close", "empty", b"")

multipart = b""
for jpeg in jpegs:
    multipart += (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                  + jpeg + b"\r\n")
write("jpeg_split", "multipart", b"\x00\x00\x00\x00\x02\x03\x40" + multipart)
write("jpeg_split", "concatenated", b"\x01\x00\x00\x00\x00" + b"".join(jpegs))
write("jpeg_split", "long-run", b"\x80\xa0\x00\xb4\x01\xff" + b"\xff\xd8\xff\xda\x00\x02\x11\x22\xff\xd9")

# [max: 1 MiB][no piece sizes], then [max: 4096][two piece sizes]
write("h264_split", "with-delimiters", b"\x03\x00" + x264_stream("aud=1"))
write("h264_split", "without-delimiters", b"\x02\x02\x05\x30" + x264_stream("aud=0"))
write("h264_split", "small-limit", b"\x01\x00" + b"garbage" + x264_stream("aud=1"))

write("chunked_decoder", "camera-body", b"\x00" + b"\x00" * 8 + b"\x01\x05"
      + b"%x\r\n" % len(jpegs[0]) + jpegs[0] + b"\r\n5;ext=1\r\nhello\r\n0\r\n\r\n")
write("chunked_decoder", "round-trip", b"\x80" + b"\x01" * 8 + b"\x00" + frame[:200])

for name, head in {
    "multipart": b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n"
                 b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n",
    "jpeg": b"HTTP/1.0 200 OK\r\ncontent-type: image/jpeg\r\n\r\n",
    "denied": b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n",
}.items():
    write("http_response_head", name, head)

for i, url in enumerate([
    "http://admin:p%40ss@cam.local:8080/video.mjpg?res=hd",
    "http://[fe80::2]:81/x",
    "HTTP://10.0.0.2?x=1",
    "ws://server.local:8080/ingest/cam1?token=s3cret",
    "ws://[::1]:9000/video_remote_source/front-door",
    "rtsp://user:pw@cam/stream",
    "v4l2:/dev/video0",
    "stdin",
    "test",
]):
    write("urls", "url-%d" % i, url.encode())

timing = b"\xff\xd8\xff\xfe\x00\x2c" + b"ringcast frame=42 capture_ns=1700000000123456789"[:42]
write("jpeg_timing", "real-jpeg", struct.pack("<QQ", 42, 1700000000123456789) + frame)
write("jpeg_timing", "with-timing", struct.pack("<QQ", 43, 7) + timing + frame[2:])
write("jpeg_timing", "made-jpeg", struct.pack("<QQ", 0x80, 1) + b"\xff\xe0\x00\x04ab")
print("seeds written to", out)

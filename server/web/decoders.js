// Decoders turn the messages of a camera's WebSocket into pictures to draw. A tile holds one
// decoder, hands it every message, and draws what it calls back with; the tile knows nothing of
// codecs. Each decoder decides what it may skip: JPEG frames stand alone, so the JPEG decoder
// keeps only the newest waiting one; the H.264 decoder must decode every frame from a keyframe
// on, and when it falls behind or fails it drops frames up to the next keyframe.
//
// The interface (`decoderFor(codec, { onPicture, onError })`):
//   configure(config)  a decoder configuration the server sent as a text message (JSON);
//                      JPEG cameras send none
//   push(data)         a binary message (ArrayBuffer)
//   close()            stops calling back and frees what the decoder holds
// and the callbacks:
//   onPicture(picture, { frameNo, captureMs })  `picture` is anything drawImage takes, with a
//                      close() the tile calls once it is drawn (an ImageBitmap today, a
//                      VideoFrame for H.264); captureMs is null without timing
//   onError(message)   a message that could not be decoded (the next one may be fine)

/** Whether this browser has a decoder for `codec` (as a decoder configuration names it). */
export function canDecode(codec) {
  if (codec === undefined || codec === 'jpeg') {
    return true;
  }
  return codec.startsWith('avc1.') && typeof VideoDecoder !== 'undefined';
}

/** The decoder for a camera's codec, as its decoder configuration names it. */
export function decoderFor(codec, callbacks) {
  if (codec === undefined || codec === 'jpeg') {
    return new JpegDecoder(callbacks);
  }
  if (codec.startsWith('avc1.')) {
    if (typeof VideoDecoder === 'undefined') {
      throw new Error('this browser cannot decode H.264 video (it has no WebCodecs)');
    }
    return new H264Decoder(callbacks);
  }
  throw new Error(`this page cannot decode ${codec}`);
}

/** Bytes before the access unit in an H.264 message: flags, frame number, capture time. */
const AU_HEADER_LEN = 17;
/** Frames waiting in the decoder beyond which it may be too slow for the stream. */
const MAX_DECODE_QUEUE = 15;
/**
 * How long the decoder may stay over MAX_DECODE_QUEUE before what waits is dropped: a new
 * viewer's first group of pictures arrives all at once and drains, a device too slow for the
 * stream never drains.
 */
const MAX_BACKLOG_MS = 1000;
/** A decoded frame with more than this many frames still waiting behind it is not drawn. */
const CATCH_UP_QUEUE = 2;
/** Capture times kept for frames not yet out of the decoder (bounded against a decoder that drops). */
const MAX_TIMINGS = 256;

/**
 * H.264 access units (Annex B, parameter sets in-band on keyframes) decoded with WebCodecs. The
 * server sends the configuration first and the first frame is a keyframe; after an error, a
 * reconfiguration, or a backlog that does not drain (a device too slow for the stream), delta
 * frames are skipped until the next keyframe, since a decoder cannot use a frame whose
 * predecessors it lacks.
 */
export class H264Decoder {
  constructor({ onPicture, onError }) {
    this.onPicture = onPicture;
    this.onError = onError;
    this.config = null;
    this.decoder = null;
    this.needKey = true;
    this.backlogSince = null;
    // Capture times by frame number (the chunk's timestamp), until the frame comes out.
    this.captureMs = new Map();
    this.closed = false;
  }

  configure({ codec, codedWidth, codedHeight }) {
    this.config = { codec, optimizeForLatency: true };
    if (codedWidth && codedHeight) {
      Object.assign(this.config, { codedWidth, codedHeight });
    }
    this.restart();
  }

  /** A decoder afresh with the current configuration, waiting for a keyframe. */
  restart() {
    if (this.decoder && this.decoder.state !== 'closed') {
      this.decoder.close();
    }
    this.captureMs.clear();
    this.needKey = true;
    this.backlogSince = null;
    this.decoder = new VideoDecoder({
      output: (frame) => this.output(frame),
      error: (error) => this.failed(error),
    });
    try {
      this.decoder.configure(this.config);
    } catch (error) {
      this.failed(error);
    }
  }

  push(data) {
    if (this.closed || !this.config || data.byteLength <= AU_HEADER_LEN) {
      return;
    }
    const view = new DataView(data);
    const key = (view.getUint8(0) & 1) === 1;
    if (this.decoder.state !== 'configured') {
      // Closed by an error: a new decoder can only start at a keyframe.
      if (!key) {
        return;
      }
      this.restart();
    }
    if (!key && (this.needKey || this.tooSlow())) {
      this.needKey = true;
      return;
    }
    this.needKey = false;
    const frameNo = Number(view.getBigUint64(1));
    this.rememberCapture(frameNo, nanosToMs(view.getBigUint64(9)));
    try {
      this.decoder.decode(new EncodedVideoChunk({
        type: key ? 'key' : 'delta',
        timestamp: frameNo,
        data: new Uint8Array(data, AU_HEADER_LEN),
      }));
    } catch (error) {
      this.failed(error);
    }
  }

  /** Whether frames have waited in the decoder, more than it can take, for too long. */
  tooSlow() {
    if (this.decoder.decodeQueueSize <= MAX_DECODE_QUEUE) {
      this.backlogSince = null;
      return false;
    }
    this.backlogSince ??= performance.now();
    return performance.now() - this.backlogSince > MAX_BACKLOG_MS;
  }

  rememberCapture(frameNo, captureMs) {
    this.captureMs.set(frameNo, captureMs);
    if (this.captureMs.size > MAX_TIMINGS) {
      this.captureMs.delete(this.captureMs.keys().next().value);
    }
  }

  output(frame) {
    // Looked up by the frame's own number, not by order: frames may come out of the decoder in
    // another order than they went in (B-frames).
    const frameNo = frame.timestamp;
    const captureMs = this.captureMs.get(frameNo) ?? null;
    this.captureMs.delete(frameNo);
    // Frames decoded to catch up (a new viewer starts at the group's keyframe, all of the group
    // arriving at once) are not drawn: only the present is.
    const catchingUp = this.decoder.decodeQueueSize > CATCH_UP_QUEUE;
    if (this.closed || catchingUp) {
      frame.close();
      return;
    }
    this.onPicture(frame, { frameNo, captureMs });
  }

  failed(error) {
    this.needKey = true;
    if (!this.closed) {
      this.onError(`the H.264 decoder failed, waiting for the next keyframe: ${error.message}`);
    }
  }

  close() {
    this.closed = true;
    this.captureMs.clear();
    if (this.decoder && this.decoder.state !== 'closed') {
      this.decoder.close();
    }
  }
}

/** Nanoseconds since 1970 (a BigInt) as milliseconds, exactly enough for latency. */
function nanosToMs(ns) {
  return Number(ns / 1000n) / 1000;
}

/** One JPEG per message, decoded off the main thread by the browser; no base64, no URLs. */
export class JpegDecoder {
  constructor({ onPicture, onError }) {
    this.onPicture = onPicture;
    this.onError = onError;
    this.waiting = null;
    this.decoding = false;
    this.closed = false;
  }

  configure() {}

  push(data) {
    // Newest frame only: one decode at a time, and a frame that arrives meanwhile replaces the
    // one waiting, so a slow device shows the present, not a growing past.
    this.waiting = data;
    if (!this.decoding) {
      this.decodeWaiting();
    }
  }

  async decodeWaiting() {
    this.decoding = true;
    while (this.waiting && !this.closed) {
      const bytes = new Uint8Array(this.waiting);
      this.waiting = null;
      try {
        const picture = await createImageBitmap(new Blob([bytes], { type: 'image/jpeg' }));
        if (this.closed) {
          picture.close();
        } else {
          this.onPicture(picture, readTiming(bytes));
        }
      } catch (error) {
        this.onError(`a frame did not decode: ${error.message}`);
      }
    }
    this.decoding = false;
  }

  close() {
    this.closed = true;
    this.waiting = null;
  }
}

/**
 * The frame number and capture time (ms since 1970) that ringcast puts in a JPEG comment
 * segment right after the start of image: `ringcast frame=<n> capture_ns=<t>`. Nulls when the
 * frame carries none.
 */
export function readTiming(bytes) {
  const none = { frameNo: null, captureMs: null };
  const isComment = bytes.length > 6
    && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff && bytes[3] === 0xfe;
  if (!isComment) {
    return none;
  }
  const length = (bytes[4] << 8) | bytes[5];
  const text = new TextDecoder().decode(bytes.subarray(6, Math.min(bytes.length, 4 + length)));
  const match = /^ringcast frame=(\d+) capture_ns=(\d+)$/.exec(text);
  if (!match) {
    return none;
  }
  const ns = match[2];
  // Nanoseconds since 1970 are beyond what a double holds exactly: split them as text.
  const captureMs = Number(ns.slice(0, -6) || '0') + Number(ns.slice(-6)) / 1e6;
  return { frameNo: Number(match[1]), captureMs };
}

// Decoders turn the messages of a camera's WebSocket into pictures to draw. A tile holds one
// decoder, hands it every message, and draws what it calls back with; the tile knows nothing of
// codecs. Each decoder decides what it may skip: JPEG frames stand alone, so the JPEG decoder
// keeps only the newest waiting one; an H.264 decoder must decode from a keyframe on.
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

/** The decoder for a camera's codec, as its decoder configuration names it. */
export function decoderFor(codec, callbacks) {
  switch (codec) {
    case 'jpeg':
    case undefined:
      return new JpegDecoder(callbacks);
    default:
      throw new Error(`this page cannot decode ${codec}`);
  }
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

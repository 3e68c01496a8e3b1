// Decoders turn the messages of a camera's WebSocket into pictures to draw. A tile holds one
// decoder and hands it every message; what the page draws does not depend on the codec.
//
// The interface:
//   configure(config)  a text message the server sent first (a decoder configuration);
//                      JPEG cameras send none
//   decode(data)       a binary message (ArrayBuffer) -> Promise of
//                      { picture, frameNo, captureMs } or null when there is nothing to draw;
//                      `picture` is anything `CanvasRenderingContext2D.drawImage` takes and has
//                      a close() that frees it (an ImageBitmap today, a VideoFrame for H.264)
//   close()            frees what the decoder holds
//
// Only JPEG exists today; an H.264 decoder on WebCodecs takes the same place through
// `decoderFor`.

/** The decoder for a camera's codec, as its decoder configuration names it. */
export function decoderFor(codec) {
  switch (codec) {
    case 'jpeg':
    case undefined:
      return new JpegDecoder();
    default:
      throw new Error(`this page cannot decode ${codec}`);
  }
}

/** One JPEG per message, decoded off the main thread by the browser; no base64, no URLs. */
export class JpegDecoder {
  configure() {}

  async decode(data) {
    const bytes = new Uint8Array(data);
    const timing = readTiming(bytes);
    const picture = await createImageBitmap(new Blob([bytes], { type: 'image/jpeg' }));
    return { picture, ...timing };
  }

  close() {}
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

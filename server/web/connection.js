// One tile's WebSocket to `/ws/{camera}`: open while the tile is visible, opened again with a
// growing delay when it drops, closed when the tile is hidden or closed.

import { webSocketUrl } from './api.js';

/** The server's close code for a viewer that could not keep up. */
export const TOO_SLOW = 4008;

const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 10_000;

export class CameraConnection {
  /**
   * `handlers`: `onOpen()`, `onMessage(data)` (text as a string, binary as an ArrayBuffer),
   * `onClose(code, retryInMs)` (retryInMs is null when no retry follows).
   */
  constructor(camera, handlers) {
    this.camera = camera;
    this.handlers = handlers;
    this.socket = null;
    this.wanted = false;
    this.retryTimer = null;
    this.retryMs = FIRST_RETRY_MS;
  }

  /** Connects, unless connected or about to retry. */
  start() {
    this.wanted = true;
    if (!this.socket && this.retryTimer === null) {
      this.open();
    }
  }

  /** Disconnects and stays so until `start`. */
  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close(1000, 'not shown');
    }
  }

  open() {
    this.retryTimer = null;
    const socket = new WebSocket(webSocketUrl(`/ws/${encodeURIComponent(this.camera)}`));
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => this.handlers.onOpen();
    socket.onmessage = (event) => {
      // A frame arrived: the connection works, so the next drop retries quickly again.
      this.retryMs = FIRST_RETRY_MS;
      this.handlers.onMessage(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      const retryInMs = this.wanted ? this.scheduleRetry() : null;
      this.handlers.onClose(event.code, retryInMs);
    };
    this.socket = socket;
  }

  scheduleRetry() {
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, LAST_RETRY_MS);
    this.retryTimer = setTimeout(() => this.open(), delay);
    return delay;
  }
}

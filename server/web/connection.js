// One tile's WebSocket to `/ws/{camera}` (or, for a browser that cannot decode the camera's
// H.264, to the route that sends its JPEG copy): open while the tile is shown, opened again
// after a growing, jittered delay when it drops, closed when the tile is hidden or closed.

import { webSocketUrl } from './api.js';

/** The server's close code for a viewer that could not keep up. */
export const TOO_SLOW = 4008;

/** The camera's frames as it makes them (JPEG or H.264). */
const NATIVE_ROUTE = '/ws/';
/** JPEG always: for an H.264 camera, the JPEG copy its capture makes while watched. */
const JPEG_ROUTE = '/websocket_handler_site/';

const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 10_000;
/** A connection that stayed up this long worked: the next drop retries quickly again. */
const HEALTHY_AFTER_MS = 10_000;

export class CameraConnection {
  /**
   * `handlers`: `onConnecting()`, `onOpen()`, `onMessage(data)` (text as a string, binary as an
   * ArrayBuffer), `onClose(code, retryAt)` (`retryAt`, a Date.now() time, is null when no retry
   * follows).
   */
  constructor(camera, handlers) {
    this.camera = camera;
    this.handlers = handlers;
    this.route = NATIVE_ROUTE;
    this.socket = null;
    this.wanted = false;
    this.retryTimer = null;
    this.healthyTimer = null;
    this.retryMs = FIRST_RETRY_MS;
  }

  /** Connects, unless connected or about to retry. */
  start() {
    this.wanted = true;
    if (!this.socket && this.retryTimer === null) {
      this.open();
    }
  }

  /** Cuts a retry's wait short: the camera is known to be there (again). */
  retryNow() {
    if (this.wanted && this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.open();
    }
  }

  /** From now on asks for JPEG frames, reconnecting if connected: for a browser that cannot
   * decode what the camera sends. */
  useJpegRoute() {
    if (this.route === JPEG_ROUTE) {
      return;
    }
    this.route = JPEG_ROUTE;
    if (this.wanted) {
      this.stop();
      this.start();
    }
  }

  /** Disconnects and stays so until `start`. */
  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.healthyTimer);
    this.retryTimer = null;
    const socket = this.socket;
    this.socket = null;
    if (!socket) {
      return;
    }
    socket.onclose = null;
    socket.onmessage = null;
    if (socket.readyState === WebSocket.CONNECTING) {
      // Closing before the handshake ends makes the browser log an error: close right after.
      socket.onopen = () => socket.close(1000, 'not shown');
    } else {
      socket.onopen = null;
      socket.close(1000, 'not shown');
    }
  }

  open() {
    this.retryTimer = null;
    this.handlers.onConnecting();
    const socket = new WebSocket(webSocketUrl(`${this.route}${encodeURIComponent(this.camera)}`));
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      this.healthyTimer = setTimeout(() => {
        this.retryMs = FIRST_RETRY_MS;
      }, HEALTHY_AFTER_MS);
      this.handlers.onOpen();
    };
    socket.onmessage = (event) => this.handlers.onMessage(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      clearTimeout(this.healthyTimer);
      const retryAt = this.wanted ? this.scheduleRetry() : null;
      this.handlers.onClose(event.code, retryAt);
    };
    this.socket = socket;
  }

  /** Schedules the next attempt; returns when it is due. */
  scheduleRetry() {
    // Jitter, so that twelve tiles that lost the server together do not come back in lockstep.
    const delay = Math.round(this.retryMs * (0.8 + 0.4 * Math.random()));
    this.retryMs = Math.min(this.retryMs * 2, LAST_RETRY_MS);
    this.retryTimer = setTimeout(() => this.open(), delay);
    return Date.now() + delay;
  }
}

// One picture on the wall: a camera's live frames drawn on a canvas, with its frame rate,
// latency and state, and its buttons. The tile only receives frames while it can be seen.

import { withToken } from './api.js';
import { CameraConnection, TOO_SLOW } from './connection.js';
import { canDecode, decoderFor } from './decoders.js';

/** A live tile that has drawn nothing for this long says what the camera is doing. */
const STALE_AFTER_MS = 2000;
/** Frame rate and latency are figured over this much of the recent past. */
const STATS_WINDOW_MS = 2000;

export class Tile {
  /** `onClose(tile)` is called when the user closes it. */
  constructor(camera, { onClose }) {
    this.camera = camera;
    this.element = document.getElementById('tile-template').content.firstElementChild.cloneNode(true);
    this.element.dataset.camera = camera;
    this.canvas = this.element.querySelector('.picture');
    this.context = this.canvas.getContext('2d');
    this.message = this.element.querySelector('.message');
    this.stats = this.element.querySelector('.stats');
    this.element.querySelector('.name').textContent = camera;

    this.drawn = [];
    this.lastDrawnAt = 0;
    // Undefined until the camera list first arrives; null when it does not list this camera.
    this.info = undefined;
    this.lastSeenAt = null;
    this.connectionState = 'connecting';
    this.retryAt = null;
    this.problem = null;
    this.shown = { inView: false, pageVisible: document.visibilityState === 'visible', covered: false };
    this.closed = false;

    this.decoder = this.newDecoder(undefined);
    this.connection = new CameraConnection(camera, {
      onConnecting: () => this.setConnectionState('connecting'),
      onOpen: () => this.opened(),
      onMessage: (data) => this.receive(data),
      onClose: (code, retryAt) => this.lost(code, retryAt),
    });
    this.wireControls(onClose);
    this.refreshTimer = setInterval(() => this.render(), 500);
    this.render();
  }

  wireControls(onClose) {
    const close = () => onClose(this);
    this.element.querySelector('.close').addEventListener('click', close);
    this.element.querySelector('.fullscreen').addEventListener('click', () => this.toggleFullscreen());
    this.element.addEventListener('dblclick', () => this.toggleFullscreen());
    this.element.addEventListener('keydown', (event) => {
      if (event.target !== this.element) {
        return;
      }
      if (event.key === 'Enter') {
        event.preventDefault();
        this.toggleFullscreen();
      } else if (event.key === 'Delete' || event.key === 'Backspace') {
        event.preventDefault();
        close();
      }
    });
    const snapshot = this.element.querySelector('.snapshot');
    snapshot.href = withToken(`/snapshot/${encodeURIComponent(this.camera)}.jpg`);
    snapshot.addEventListener('click', () => {
      snapshot.download = `${this.camera}-${localTimestamp(new Date())}.jpg`;
    });
  }

  newDecoder(codec) {
    return decoderFor(codec, {
      onPicture: (picture, timing) => this.draw(picture, timing),
      onError: () => {},
    });
  }

  toggleFullscreen() {
    if (document.fullscreenElement === this.element) {
      document.exitFullscreen();
    } else {
      this.element.requestFullscreen?.();
    }
  }

  /**
   * Whether the tile can be seen: in the viewport (`inView`), on a page that is shown
   * (`pageVisible`), and not under another tile in fullscreen (`covered`). Only a tile that can be
   * seen keeps its connection.
   */
  setVisibility(change) {
    Object.assign(this.shown, change);
    if (this.closed) {
      return;
    }
    const { inView, pageVisible, covered } = this.shown;
    if (inView && pageVisible && !covered) {
      this.connection.start();
    } else {
      this.connection.stop();
      this.setConnectionState('paused');
    }
  }

  /** What the camera list says of this camera (null: not listed). */
  update(info) {
    const wasOnline = this.info?.status === 'online';
    this.info = info;
    this.lastSeenAt = info && info.last_frame_age_s !== null && info.last_frame_age_s !== undefined
      ? Date.now() - info.last_frame_age_s * 1000
      : null;
    if (info?.status === 'online' && !wasOnline) {
      // Back (or listed at last): no reason to sit out the rest of a retry's wait.
      this.connection.retryNow();
    }
    this.render();
  }

  opened() {
    this.problem = null;
    // A new connection says afresh what it carries: a decoder configuration first for H.264,
    // nothing for JPEG (the camera may have changed codec while the tile was away).
    this.decoder.close();
    this.decoder = this.newDecoder(undefined);
    this.setConnectionState('open');
  }

  receive(data) {
    if (typeof data === 'string') {
      this.configure(data);
    } else {
      this.decoder.push(data);
    }
  }

  configure(text) {
    try {
      const config = JSON.parse(text);
      if (!canDecode(config.codec)) {
        this.connection.useJpegRoute();
        return;
      }
      this.decoder.close();
      this.decoder = this.newDecoder(config.codec);
      this.decoder.configure(config);
      this.problem = null;
      this.checkSupported(config);
    } catch (error) {
      this.problem = `cannot show this camera: ${error.message}`;
    }
    this.render();
  }

  /** Falls back to the camera's JPEG frames when this browser cannot decode its H.264 profile. */
  async checkSupported({ codec }) {
    if (typeof VideoDecoder === 'undefined' || !codec?.startsWith('avc1.')) {
      return;
    }
    const { supported } = await VideoDecoder.isConfigSupported({ codec });
    if (!supported && !this.closed) {
      this.connection.useJpegRoute();
    }
  }

  draw(picture, { captureMs }) {
    if (this.closed) {
      picture.close();
      return;
    }
    const width = picture.displayWidth ?? picture.width;
    const height = picture.displayHeight ?? picture.height;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.drawImage(picture, 0, 0);
    picture.close();
    const now = Date.now();
    this.lastDrawnAt = now;
    this.drawn.push({ at: now, latencyMs: captureMs === null ? null : now - captureMs });
  }

  lost(code, retryAt) {
    this.retryAt = retryAt;
    this.setConnectionState(code === TOO_SLOW ? 'slow' : 'disconnected');
  }

  setConnectionState(state) {
    this.connectionState = state;
    this.render();
  }

  /** The tile's state and what it says, from the connection, the frames and the camera list. */
  render() {
    const now = Date.now();
    this.drawn = this.drawn.filter((frame) => now - frame.at <= STATS_WINDOW_MS);
    const [state, message] = this.describe(now);
    if (this.element.dataset.state !== state) {
      this.element.dataset.state = state;
      this.element.setAttribute('aria-label', `camera ${this.camera}, ${state}`);
    }
    this.message.textContent = message;
    this.stats.textContent = state === 'live' ? this.statsText() : '';
  }

  describe(now) {
    if (this.problem) {
      return ['offline', this.problem];
    }
    const retry = this.retryAt === null
      ? ''
      : `, again in ${Math.max(0, Math.ceil((this.retryAt - now) / 1000))} s`;
    switch (this.connectionState) {
      case 'paused':
        return ['paused', 'paused while not shown'];
      case 'slow':
        return ['slow', `too slow: this connection could not keep up${retry}`];
      case 'disconnected':
        return ['offline', `disconnected${retry}`];
      case 'connecting':
        return ['connecting', 'connecting…'];
      default:
        break;
    }
    if (this.info === null) {
      return ['offline', 'not listed by the server'];
    }
    if (this.info?.status === 'offline') {
      const seen = this.lastSeenAt === null
        ? ', no picture yet'
        : `, last picture at ${new Date(this.lastSeenAt).toLocaleTimeString()}`;
      return ['offline', `offline${seen}`];
    }
    if (now - this.lastDrawnAt <= STALE_AFTER_MS) {
      return ['live', ''];
    }
    if (this.info?.status === 'idle') {
      return ['idle', 'idle: waking the camera…'];
    }
    return ['connecting', 'waiting for a picture…'];
  }

  statsText() {
    // Over the frames drawn in the window: right from the second frame on, not only once a
    // whole window has passed.
    const span = this.drawn.length < 2 ? 0 : this.drawn.at(-1).at - this.drawn[0].at;
    const fps = span === 0 ? 0 : ((this.drawn.length - 1) * 1000) / span;
    const latencies = this.drawn.map((frame) => frame.latencyMs).filter((ms) => ms !== null);
    const latency = latencies.length === 0 ? '' : ` · ${Math.round(median(latencies))} ms`;
    return `${fps.toFixed(1)} fps${latency}`;
  }

  close() {
    this.closed = true;
    clearInterval(this.refreshTimer);
    this.connection.stop();
    this.decoder.close();
    this.element.remove();
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** "2026-11-29T21-05-56" in the browser's own time zone, for file names. */
function localTimestamp(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}-${pad(date.getMinutes())}-${pad(date.getSeconds())}`;
}

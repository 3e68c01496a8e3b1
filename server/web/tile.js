// One picture on the wall: a camera's live frames drawn on a canvas, with its frame rate,
// latency and state, and its buttons. The tile only receives frames while it can be seen.

import { withToken } from './api.js';
import { CameraConnection, TOO_SLOW } from './connection.js';
import { decoderFor } from './decoders.js';

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
    this.element.setAttribute('aria-label', `camera ${camera}`);
    this.canvas = this.element.querySelector('.picture');
    this.context = this.canvas.getContext('2d');
    this.message = this.element.querySelector('.message');
    this.stats = this.element.querySelector('.stats');
    this.element.querySelector('.name').textContent = camera;

    this.decoder = decoderFor('jpeg');
    this.pending = null;
    this.decoding = false;
    this.drawn = [];
    this.lastDrawnAt = 0;
    // Undefined until the camera list first arrives; null when it does not list this camera.
    this.info = undefined;
    this.connectionState = 'connecting';
    this.retryAt = null;
    this.inView = false;
    this.pageVisible = document.visibilityState === 'visible';
    this.closed = false;

    this.connection = new CameraConnection(camera, {
      onOpen: () => this.setConnectionState('open'),
      onMessage: (data) => this.receive(data),
      onClose: (code, retryInMs) => this.lost(code, retryInMs),
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
      } else if (event.key === 'Delete') {
        event.preventDefault();
        close();
      }
    });
    const snapshot = this.element.querySelector('.snapshot');
    snapshot.href = withToken(`/snapshot/${encodeURIComponent(this.camera)}.jpg`);
    snapshot.addEventListener('click', () => {
      const stamp = new Date().toISOString().replaceAll(':', '-').replace(/\..*/, '');
      snapshot.download = `${this.camera}-${stamp}.jpg`;
    });
  }

  toggleFullscreen() {
    if (document.fullscreenElement === this.element) {
      document.exitFullscreen();
    } else {
      this.element.requestFullscreen?.();
    }
  }

  /** Whether the tile shows on screen (`inView`) and the page is shown at all. */
  setVisibility({ inView = this.inView, pageVisible = this.pageVisible }) {
    this.inView = inView;
    this.pageVisible = pageVisible;
    if (this.closed) {
      return;
    }
    if (inView && pageVisible) {
      this.connection.start();
    } else {
      this.connection.stop();
      this.setConnectionState('paused');
    }
  }

  /** What the camera list says of this camera (null: not listed). */
  update(info) {
    this.info = info;
    this.render();
  }

  receive(data) {
    if (typeof data === 'string') {
      this.configure(data);
      return;
    }
    // Newest frame only: one decode at a time, and a frame that arrives meanwhile replaces
    // the one waiting.
    this.pending = data;
    if (!this.decoding) {
      this.decodeWaiting();
    }
  }

  configure(text) {
    try {
      const config = JSON.parse(text);
      this.decoder.close();
      this.decoder = decoderFor(config.codec);
      this.decoder.configure(config);
    } catch (error) {
      this.showProblem(`cannot show this camera: ${error.message}`);
    }
  }

  async decodeWaiting() {
    this.decoding = true;
    while (this.pending && !this.closed) {
      const data = this.pending;
      this.pending = null;
      try {
        const decoded = await this.decoder.decode(data);
        if (decoded) {
          this.draw(decoded);
        }
      } catch {
        // A frame the browser cannot decode is skipped; the next one may be fine.
      }
    }
    this.decoding = false;
  }

  draw({ picture, captureMs }) {
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
    this.setConnectionState('open');
  }

  lost(code, retryInMs) {
    this.retryAt = retryInMs === null ? null : Date.now() + retryInMs;
    this.setConnectionState(code === TOO_SLOW ? 'slow' : 'disconnected');
  }

  setConnectionState(state) {
    this.connectionState = state;
    this.render();
  }

  showProblem(text) {
    this.problem = text;
    this.render();
  }

  /** The tile's state and what it says, from the connection, the frames and the camera list. */
  render() {
    const now = Date.now();
    this.drawn = this.drawn.filter((frame) => now - frame.at <= STATS_WINDOW_MS);
    const [state, message] = this.describe(now);
    this.element.dataset.state = state;
    this.message.textContent = message;
    this.stats.textContent = state === 'live' ? this.statsText() : '';
  }

  describe(now) {
    if (this.problem) {
      return ['offline', this.problem];
    }
    const status = this.info?.status;
    const retry = this.retryAt === null ? '' : `, again in ${Math.max(0, Math.ceil((this.retryAt - now) / 1000))} s`;
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
    if (status === 'offline') {
      return ['offline', `offline${lastSeen(this.info)}`];
    }
    if (now - this.lastDrawnAt <= STALE_AFTER_MS) {
      return ['live', ''];
    }
    if (status === 'idle') {
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

function lastSeen(info) {
  if (info.last_frame_age_s === null || info.last_frame_age_s === undefined) {
    return ', no picture yet';
  }
  const at = new Date(Date.now() - info.last_frame_age_s * 1000);
  return `, last picture at ${at.toLocaleTimeString()}`;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

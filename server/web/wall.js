// The wall of tiles: at most twelve, laid out to fill the window, remembered across reloads.
// Tiles scrolled out of sight, hidden under a tile in fullscreen, or on a page that is hidden,
// take no frames.

import { load, save } from './storage.js';
import { Tile } from './tile.js';

export const MAX_TILES = 12;
const STORE_KEY = 'ringcast.tiles';

export class Wall {
  /**
   * `confirmDuplicate(camera)` resolves to whether to open a camera that is already open;
   * `say(text)` shows a message to the user.
   */
  constructor(element, { confirmDuplicate, say }) {
    this.element = element;
    this.confirmDuplicate = confirmDuplicate;
    this.say = say;
    this.tiles = [];
    this.cameras = null;
    this.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        this.tileOf(entry.target)?.setVisibility({ inView: entry.isIntersecting });
      }
    });
    document.addEventListener('visibilitychange', () => {
      const pageVisible = document.visibilityState === 'visible';
      this.tiles.forEach((tile) => tile.setVisibility({ pageVisible }));
    });
    document.addEventListener('fullscreenchange', () => {
      const full = this.tileOf(document.fullscreenElement);
      this.tiles.forEach((tile) => tile.setVisibility({ covered: Boolean(full) && tile !== full }));
    });
  }

  /** Opens the tiles of the last visit. */
  restore() {
    for (const camera of loadStored()) {
      if (this.tiles.length < MAX_TILES) {
        this.add(camera);
      }
    }
  }

  /** Opens `camera`, asking first if it is already open; refuses a thirteenth tile. */
  async open(camera) {
    const full = () => {
      if (this.tiles.length < MAX_TILES) {
        return false;
      }
      this.say(`At most ${MAX_TILES} pictures at once: close one to open ${camera}.`, true);
      return true;
    };
    if (full()) {
      return false;
    }
    if (this.tiles.some((tile) => tile.camera === camera) && !(await this.confirmDuplicate(camera))) {
      return false;
    }
    // The wall may have filled while the question was open.
    if (full()) {
      return false;
    }
    const tile = this.add(camera);
    tile.element.focus({ preventScroll: true });
    return true;
  }

  add(camera) {
    const tile = new Tile(camera, { onClose: (closing) => this.close(closing) });
    this.tiles.push(tile);
    this.element.append(tile.element);
    if (this.cameras) {
      tile.update(this.cameras.get(camera) ?? null);
    }
    this.observer.observe(tile.element);
    this.changed();
    return tile;
  }

  close(tile) {
    const at = this.tiles.indexOf(tile);
    if (at < 0) {
      return;
    }
    this.observer.unobserve(tile.element);
    tile.close();
    this.tiles.splice(at, 1);
    this.changed();
    // Keyboard users stay on the wall: focus moves to the tile that took its place.
    this.tiles[Math.min(at, this.tiles.length - 1)]?.element.focus({ preventScroll: true });
  }

  /** The camera list as the server gave it. */
  update(cameras) {
    this.cameras = new Map(cameras.map((camera) => [camera.id, camera]));
    this.tiles.forEach((tile) => tile.update(this.cameras.get(tile.camera) ?? null));
  }

  changed() {
    const count = this.tiles.length;
    const columns = count <= 1 ? 1 : count <= 4 ? 2 : count <= 9 ? 3 : 4;
    this.element.dataset.count = String(count);
    this.element.style.setProperty('--columns', String(columns));
    this.element.style.setProperty('--rows', String(Math.max(1, Math.ceil(count / columns))));
    save(STORE_KEY, JSON.stringify(this.tiles.map((tile) => tile.camera)));
  }

  tileOf(element) {
    return this.tiles.find((tile) => tile.element === element);
  }
}

function loadStored() {
  try {
    const stored = JSON.parse(load(STORE_KEY) ?? '[]');
    return Array.isArray(stored) ? stored.filter((camera) => typeof camera === 'string') : [];
  } catch {
    return [];
  }
}

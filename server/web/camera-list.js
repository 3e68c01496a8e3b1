// The list of cameras to pick from, kept current by the page's polling of `/api/cameras`.

export class CameraList {
  /** `onPick(camera)` is called when the user picks a camera. */
  constructor(list, empty, { onPick }) {
    this.list = list;
    this.empty = empty;
    this.onPick = onPick;
    this.shown = '';
  }

  render(cameras) {
    const rows = cameras.map(describe);
    // Rebuilt only when something changed, so a button keeps its focus between polls.
    const shown = JSON.stringify(rows);
    if (shown === this.shown) {
      return;
    }
    this.shown = shown;
    this.empty.hidden = cameras.length > 0;
    this.list.replaceChildren(...rows.map((row) => this.item(row)));
  }

  item({ id, state, detail }) {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.camera = id;
    button.dataset.state = state;
    button.title = `Add ${id} to the wall`;
    const dot = document.createElement('span');
    dot.className = 'state-dot';
    dot.dataset.state = state;
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = id;
    const line = document.createElement('span');
    line.className = 'detail';
    line.textContent = detail;
    button.append(dot, name, line);
    button.addEventListener('click', () => this.onPick(id));
    const item = document.createElement('li');
    item.append(button);
    return item;
  }
}

function describe(camera) {
  const state = camera.status;
  const size = camera.width && camera.height ? `${camera.width}×${camera.height}` : '';
  const viewers = `${camera.viewers} watching`;
  switch (state) {
    case 'online':
      return { id: camera.id, state, detail: [size, `${camera.fps.toFixed(0)} fps`, viewers].filter(Boolean).join(' · ') };
    case 'idle':
      return { id: camera.id, state, detail: 'idle: starts when watched' };
    default:
      return { id: camera.id, state: 'offline', detail: `offline${lastSeen(camera.last_frame_age_s)}` };
  }
}

/** When the last picture came, to the minute, so that the text does not change every poll. */
function lastSeen(ageSeconds) {
  if (ageSeconds === null || ageSeconds === undefined) {
    return '';
  }
  const at = new Date(Date.now() - ageSeconds * 1000);
  return `, last seen ${at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`;
}

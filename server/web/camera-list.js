// The list of cameras to pick from, kept current by the page's polling of `/api/cameras`.
// Rows are updated in place, so a button keeps its keyboard focus while figures change.

export class CameraList {
  /** `onPick(camera)` is called when the user picks a camera. */
  constructor(list, empty, { onPick }) {
    this.list = list;
    this.empty = empty;
    this.onPick = onPick;
    this.rows = new Map();
  }

  render(cameras) {
    this.empty.hidden = cameras.length > 0;
    const listed = new Set(cameras.map((camera) => camera.id));
    for (const [id, row] of this.rows) {
      if (!listed.has(id)) {
        row.item.remove();
        this.rows.delete(id);
      }
    }
    // In the server's order (by name); a row already in place is not moved.
    let previous = null;
    for (const camera of cameras) {
      const row = this.rows.get(camera.id) ?? this.newRow(camera.id);
      row.show(describe(camera));
      const expected = previous ? previous.nextSibling : this.list.firstChild;
      if (expected !== row.item) {
        this.list.insertBefore(row.item, expected);
      }
      previous = row.item;
    }
  }

  newRow(id) {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.camera = id;
    button.title = `Add ${id} to the wall`;
    const dot = document.createElement('span');
    dot.className = 'state-dot';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = id;
    const detail = document.createElement('span');
    detail.className = 'detail';
    button.append(dot, name, detail);
    button.addEventListener('click', () => this.onPick(id));
    const item = document.createElement('li');
    item.append(button);
    const row = {
      item,
      show({ state, text }) {
        if (button.dataset.state !== state) {
          button.dataset.state = state;
          dot.dataset.state = state;
        }
        if (detail.textContent !== text) {
          detail.textContent = text;
        }
      },
    };
    this.rows.set(id, row);
    return row;
  }
}

function describe(camera) {
  const size = camera.width && camera.height ? `${camera.width}×${camera.height}` : '';
  switch (camera.status) {
    case 'online':
      return {
        state: 'online',
        text: [size, `${Math.round(camera.fps)} fps`, `${camera.viewers} watching`]
          .filter(Boolean)
          .join(' · '),
      };
    case 'idle':
      return { state: 'idle', text: 'idle: starts when watched' };
    default:
      return { state: 'offline', text: `offline${lastSeen(camera.last_frame_age_s)}` };
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

// What the page asks of the server. A token given to the page (`/?token=…`) goes with every
// request it makes: the camera list, the WebSockets and the snapshots.

const token = new URLSearchParams(location.search).get('token');

/** `path` with the page's token added to its query, if the page has one. */
export function withToken(path) {
  if (!token) {
    return path;
  }
  const separator = path.includes('?') ? '&' : '?';
  return `${path}${separator}token=${encodeURIComponent(token)}`;
}

/** The WebSocket URL of `path` on this server (wss: when the page came over https:). */
export function webSocketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${withToken(path)}`;
}

/**
 * The cameras as `/api/cameras` lists them: `{ id, status, online, width, height, fps, viewers,
 * last_frame_age_s }` each, `status` being "online", "idle" or "offline".
 */
export async function fetchCameras() {
  const response = await fetch(withToken('/api/cameras'), { cache: 'no-store' });
  if (!response.ok) {
    throw new Error(`the server answered ${response.status} ${response.statusText}`);
  }
  return response.json();
}

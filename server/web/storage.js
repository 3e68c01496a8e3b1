// What the page remembers between visits, in localStorage. Storage may be switched off or full;
// the page then works the same and only forgets.

export function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // Nothing to do: the page works without remembering.
  }
}

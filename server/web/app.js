// The page: theme, camera list, wall. It polls `/api/cameras` every second while it is shown,
// so camera states reach the wall within two seconds, and not at all while it is hidden.

import { fetchCameras } from './api.js';
import { CameraList } from './camera-list.js';
import { load, save } from './storage.js';
import { Wall } from './wall.js';

const POLL_MS = 1000;
const THEME_KEY = 'ringcast.theme';

const notice = document.getElementById('notice');
let noticeTimer = null;

/** A message in the top bar; a warning stays a little longer. */
function say(text, warning = false) {
  notice.textContent = text;
  notice.classList.toggle('warning', warning);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.textContent = '';
  }, warning ? 8000 : 4000);
}

/** The theme the user chose, else the system's; only a choice is remembered. */
function setUpTheme() {
  const button = document.getElementById('theme');
  const apply = (theme) => {
    document.documentElement.dataset.theme = theme;
    button.textContent = theme === 'dark' ? 'Light' : 'Dark';
  };
  const chosen = load(THEME_KEY);
  const prefersLight = matchMedia('(prefers-color-scheme: light)').matches;
  apply(chosen === 'dark' || chosen === 'light' ? chosen : prefersLight ? 'light' : 'dark');
  button.addEventListener('click', () => {
    const theme = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    apply(theme);
    save(THEME_KEY, theme);
  });
}

/**
 * The question asked before a camera opens a second time: the function returned resolves to
 * whether the user wants `camera` on the wall again.
 */
function duplicateQuestion() {
  const dialog = document.getElementById('confirm-duplicate');
  let answer = null;
  const answered = () => {
    const resolve = answer;
    answer = null;
    resolve?.(dialog.returnValue === 'yes');
  };
  // `close` comes from a queued task, so it may arrive after the next question is shown: such a
  // late one is not that question's answer.
  dialog.addEventListener('close', () => {
    if (!dialog.open) {
      answered();
    }
  });
  return (camera) => {
    // A question closed whose `close` has not arrived yet is answered now, while its value holds.
    answered();
    dialog.querySelector('.camera-name').textContent = camera;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      answer = resolve;
    });
  };
}

function setUpCameraToggle() {
  const button = document.getElementById('toggle-cameras');
  const cameras = document.getElementById('cameras');
  button.addEventListener('click', () => {
    const open = cameras.classList.toggle('open');
    button.setAttribute('aria-expanded', String(open));
  });
}

function start() {
  setUpTheme();
  setUpCameraToggle();
  const wall = new Wall(document.getElementById('wall'), {
    confirmDuplicate: duplicateQuestion(),
    say,
  });
  const list = new CameraList(
    document.getElementById('camera-list'),
    document.getElementById('camera-list-empty'),
    { onPick: (camera) => wall.open(camera) },
  );
  let failing = false;
  const refresh = async () => {
    try {
      const cameras = await fetchCameras();
      list.render(cameras);
      wall.update(cameras);
      if (failing) {
        say('connected to the server again');
        failing = false;
      }
    } catch (error) {
      failing = true;
      say(`cannot get the camera list: ${error.message}`, true);
    }
  };
  // One request at a time, and one timer: a poll asked for while one runs joins it.
  let timer = null;
  let running = null;
  const poll = () => {
    clearTimeout(timer);
    timer = null;
    running ??= refresh().finally(() => {
      running = null;
      if (document.visibilityState === 'visible' && timer === null) {
        timer = setTimeout(poll, POLL_MS);
      }
    });
    return running;
  };
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      poll();
    }
  });
  document.getElementById('refresh').addEventListener('click', poll);
  wall.restore();
  poll();
}

start();

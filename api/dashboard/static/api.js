// Talking to the REST API from the browser, and the token login.
//
// Two tokens, kept apart so that no token that can write outlives the tab:
// - reading: none when the server's reads are public; else a read-scoped token, kept in
//   localStorage ('sweepd.token') across visits. A token that turns out to be able to write
//   (the server names a token's scope in X-Sweepd-Token-Scope) is never kept there: it moves to
// - acting (submit, cancel, extend): "Sign in to act" asks for a write token, kept in
//   sessionStorage ('sweepd.act-token') for this tab's life, until "Sign out". Writes send it;
//   reads send it only when the server's reads need a token and no read token is stored.
// When a read comes back 401 the page's login form is shown; a token pasted there is checked
// against the server, stored where its scope says, and the page's load runs again.

import { setLive } from './ui.js';

const TOKEN_KEY = 'sweepd.token'; // localStorage: a read-only token
const ACT_KEY = 'sweepd.act-token'; // sessionStorage: a token that can write, for this tab only
const SCOPE_HEADER = 'X-Sweepd-Token-Scope';
const BASE = '/api/v1';

function stored(storage, key) {
  try { return window[storage].getItem(key) || ''; } catch { return ''; }
}

function store(storage, key, value) {
  try {
    if (value) window[storage].setItem(key, value);
    else window[storage].removeItem(key);
  } catch { /* storage disabled: the token lives as long as the page */ }
}

export const getToken = () => stored('localStorage', TOKEN_KEY); // the read token
export const getActToken = () => stored('sessionStorage', ACT_KEY);

// A read token goes to localStorage; anything that can write to this tab's sessionStorage only.
export function setToken(token, scope = 'read') {
  if (scope === 'read') {
    store('localStorage', TOKEN_KEY, token);
  } else {
    store('sessionStorage', ACT_KEY, token);
    if (getToken() === token) store('localStorage', TOKEN_KEY, '');
  }
}

export function clearToken() { store('localStorage', TOKEN_KEY, ''); }
export function signOut() { store('sessionStorage', ACT_KEY, ''); }

// Whether this tab is signed in to act (the pages show their submit/cancel controls then).
export const hasToken = () => getActToken() !== '';

let readsNeedToken = false; // set when a read without a token came back 401
let authChanged = () => {}; // runPage's: redraws the auth control and the page's buttons

function readToken() {
  return getToken() || (readsNeedToken ? getActToken() : '');
}

// A write token found in localStorage (stored by an older dashboard) moves to sessionStorage.
function keepByScope(token, scope) {
  if (scope && scope !== 'read' && token && token === getToken()) {
    setToken(token, scope);
    authChanged();
  }
}

export class ApiError extends Error {
  constructor(status, body, url) {
    super(`${status} from ${url}: ${detailLines(body).join('; ') || 'request failed'}`);
    this.status = status;
    this.body = body;
    this.url = url;
  }
}

// One request; JSON in and out. `body` strings are sent as they are (with `contentType`).
export async function api(path, { method = 'GET', body, contentType = 'application/json', query } = {}) {
  const headers = { Accept: 'application/json' };
  const reading = method === 'GET';
  const token = reading ? readToken() : (getActToken() || getToken());
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    headers['Content-Type'] = contentType;
    if (typeof body !== 'string') body = JSON.stringify(body);
  }
  let url = BASE + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const res = await fetch(url, { method, headers, body, cache: 'no-store' });
  if (reading && res.status === 401 && !token) {
    readsNeedToken = true; // reads are not public here: the act token (if any) reads too
    if (getActToken()) return api(path, { method, body, contentType, query });
  }
  if (token && res.status === 401 && token === getActToken()) { signOut(); authChanged(); }
  keepByScope(token, res.headers.get(SCOPE_HEADER));
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!res.ok) throw new ApiError(res.status, data, url);
  return data;
}

// Checks a pasted token against the server: {scope} when it is accepted, else {error}.
async function checkToken(token) {
  let res;
  try {
    res = await fetch(`${BASE}/sweeps?limit=1`, {
      headers: { Accept: 'application/json', Authorization: `Bearer ${token}` }, cache: 'no-store',
    });
  } catch (err) {
    return { error: `could not reach the server (${err.message || err})` };
  }
  if (res.ok) return { scope: res.headers.get(SCOPE_HEADER) || 'write' }; // unknown: keep it out of localStorage
  let detail = '';
  try { detail = detailLines(await res.json()).join('; '); } catch { /* not JSON */ }
  return { error: detail || `HTTP ${res.status}` };
}

// An API error body as lines a person can read: FastAPI's {"detail": [{loc, msg}]} (field paths
// joined with dots), {"detail": "…"}, or {"errors": [{path|field|loc, message|msg}]}.
export function detailLines(body) {
  if (body == null) return [];
  if (typeof body === 'string') return [body];
  const list = body.detail ?? body.errors ?? body.message ?? body;
  if (typeof list === 'string') return [list];
  if (!Array.isArray(list)) return [JSON.stringify(list)];
  return list.map((e) => {
    if (typeof e === 'string') return e;
    let where = e.loc ?? e.path ?? e.field ?? '';
    if (Array.isArray(where)) {
      where = where.filter((p) => p !== 'body')
        .map((p, i) => (typeof p === 'number' ? `[${p}]` : (i ? `.${p}` : p))).join('');
    }
    const msg = e.msg ?? e.message ?? JSON.stringify(e);
    return where ? `${where}: ${msg}` : msg;
  });
}

// ---- the page frame: login form, error banner, auth status -------------------------------

const $ = (id) => document.getElementById(id);

let loginMode = 'read'; // 'read': the page needs a token to read; 'act': signing in to act

function showLogin(message, mode = 'read') {
  loginMode = mode;
  $('login-title').textContent = mode === 'act' ? 'Sign in to act' : 'Sign in with an API token';
  $('login-why').textContent = message;
  $('login-cancel').hidden = mode !== 'act';
  $('login').hidden = false;
  $('content').hidden = true;
  $('login-token').focus();
}

function hideLogin() {
  $('login').hidden = true;
  $('content').hidden = false;
}

export function showError(err) {
  const box = $('page-error');
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = err instanceof ApiError && err.status === 404
    ? `Not found: ${detailLines(err.body).join('; ') || err.url}`
    : `Could not load this page: ${err.message || err}`;
  box.hidden = false;
}

const ACT_WHY = 'Paste a write token to submit, cancel or extend sweeps. It is kept for this tab only '
  + '(sessionStorage) and forgotten when you sign out or close the tab.';

function renderAuth() {
  const box = $('auth');
  box.replaceChildren();
  const button = (text, testid, onClick) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link';
    b.textContent = text;
    b.dataset.testid = testid;
    b.addEventListener('click', onClick);
    return b;
  };
  if (hasToken()) {
    const label = document.createElement('span');
    label.className = 'muted';
    label.textContent = 'Signed in to act (this tab)';
    label.dataset.testid = 'signed-in';
    box.append(label, button('Sign out', 'logout', () => { signOut(); authChanged(); }));
  } else {
    box.append(button('Sign in to act', 'login-open', () => showLogin(ACT_WHY, 'act')));
  }
  if (getToken()) {
    box.append(button('Forget read token', 'forget-read-token', () => { clearToken(); authChanged(); }));
  }
}

// Runs the page: `load()` reads the API and draws; a 401 anywhere shows the login form, and a
// token entered there re-runs `load()`. `onAuthChange()` redraws what depends on being signed
// in to act. Returns `fail(err)` for errors that happen later (polling).
export function runPage(load, { onAuthChange = () => {} } = {}) {
  authChanged = () => { renderAuth(); onAuthChange(); };
  renderAuth();
  let running = false;
  const attempt = async () => {
    if (running) return;
    running = true;
    showError(null);
    try { await load(); } catch (err) { fail(err); } finally { running = false; }
  };
  const fail = (err) => {
    if (err instanceof ApiError && err.status === 401) {
      const why = detailLines(err.body).join('; ');
      showLogin(readToken()
        ? `The server did not accept the stored token (${why}). Paste a valid one.`
        : 'This server needs a token to read sweeps. Paste a read token '
          + '(sweepd token create NAME --scope read); it is kept in this browser.');
    } else {
      console.error(err);
      showError(err);
    }
  };
  $('login-cancel').addEventListener('click', () => { hideLogin(); attempt(); });
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('login-token').value.trim();
    if (!token) return;
    const { scope, error } = await checkToken(token);
    if (error) {
      $('login-why').textContent = `The server did not accept this token: ${error}`;
      return;
    }
    if (loginMode === 'act' && scope === 'read') {
      setToken(token, 'read'); // still good for reading
      $('login-token').value = '';
      $('login-why').textContent = 'This token can only read (scope read): acting needs a write token '
        + '(sweepd token create NAME --scope write).';
      authChanged();
      return;
    }
    setToken(token, scope);
    $('login-token').value = '';
    hideLogin();
    authChanged();
    attempt();
  });
  attempt();
  return fail;
}

// Runs a live page (the sweep and trial pages): `refresh()` reads the API and draws, then again
// every `every` ms until `finished()` names the state the page has settled in. The live badge
// says which; a 401 or 404 while polling is the page's error, any other error is retried at
// half the pace. Returns `tick()`: refresh now and go on polling (after a change the page made).
export function runLivePage(refresh, { finished, onAuthChange, every = 2000 }) {
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    const settled = finished();
    if (settled) {
      setLive(`${settled} · not refreshing`, 'done');
      return;
    }
    setLive(`live · updated ${new Date().toLocaleTimeString()}`, 'on');
    timer = setTimeout(tick, every);
  };
  const tick = async () => {
    try {
      await refresh();
      schedule();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 404)) { fail(err); return; }
      console.error(err);
      setLive('connection lost · retrying', 'warn');
      timer = setTimeout(tick, every * 2);
    }
  };
  const fail = runPage(async () => {
    clearTimeout(timer);
    await refresh();
    schedule();
  }, { onAuthChange });
  return tick;
}

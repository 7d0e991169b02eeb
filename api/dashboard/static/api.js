// Talking to the REST API from the browser, and the token login.
//
// The token lives in localStorage and goes out as `Authorization: Bearer …`. When a read comes
// back 401 the page's login form is shown; a pasted token is stored and the page's load runs again.

import { setLive } from './ui.js';

const TOKEN_KEY = 'sweepd.token';
const BASE = '/api/v1';

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(token) {
  try { localStorage.setItem(TOKEN_KEY, token); } catch { /* private mode: session only */ }
}

export function clearToken() {
  try { localStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
}

export const hasToken = () => getToken() !== '';

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
  const token = getToken();
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
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!res.ok) throw new ApiError(res.status, data, url);
  return data;
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

function showLogin(message) {
  $('login-why').textContent = message;
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

function renderAuth(onChange) {
  const box = $('auth');
  box.replaceChildren();
  if (hasToken()) {
    const label = document.createElement('span');
    label.className = 'muted';
    label.textContent = 'Signed in with a token';
    const out = document.createElement('button');
    out.type = 'button';
    out.className = 'link';
    out.textContent = 'Forget token';
    out.dataset.testid = 'logout';
    out.addEventListener('click', () => { clearToken(); renderAuth(onChange); onChange(); });
    box.append(label, out);
  } else {
    const signIn = document.createElement('button');
    signIn.type = 'button';
    signIn.className = 'link';
    signIn.textContent = 'Sign in with a token';
    signIn.dataset.testid = 'login-open';
    signIn.addEventListener('click', () => showLogin('Paste an API token to submit and cancel sweeps.'));
    box.append(signIn);
  }
}

// Runs the page: `load()` reads the API and draws; a 401 anywhere shows the login form, and a
// token entered there re-runs `load()`. `onAuthChange()` redraws what depends on having a token.
// Returns `fail(err)` for errors that happen later (polling).
export function runPage(load, { onAuthChange = () => {} } = {}) {
  const changed = () => { onAuthChange(); };
  renderAuth(changed);
  let running = false;
  const attempt = async () => {
    if (running) return;
    running = true;
    showError(null);
    try { await load(); } catch (err) { fail(err); } finally { running = false; }
  };
  const fail = (err) => {
    if (err instanceof ApiError && err.status === 401) {
      showLogin(hasToken()
        ? 'The server did not accept the stored token. Paste a valid one.'
        : 'This server needs a token to read sweeps.');
    } else {
      console.error(err);
      showError(err);
    }
  };
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('login-token').value.trim();
    if (!token) return;
    setToken(token);
    $('login-token').value = '';
    hideLogin();
    renderAuth(changed);
    changed();
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

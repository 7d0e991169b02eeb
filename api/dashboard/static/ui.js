// Small DOM and formatting helpers shared by the pages. Text always goes in as text nodes.

export const $ = (id) => document.getElementById(id);

// h('a', {href: '/x', class: 'y', dataset: {testid: 'z'}, onclick}, 'text', child, …)
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Replace an element's children; arrays are flattened, null/undefined/false dropped.
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  return el;
}

export const TERMINAL_SWEEP = new Set(['succeeded', 'failed', 'cancelled']);
export const TERMINAL_TRIAL = new Set(['completed', 'stopped', 'failed', 'diverged', 'oom']);

// States that read differently from their value (sweepd/protocol.py SWEEP_STATE_LABELS).
export const STATE_LABELS = { validating: 'validating data', oom: 'out of memory' };
export const badge = (state) => h('span', { class: `badge s-${state}`, dataset: { state } }, STATE_LABELS[state] || state);

const intFmt = new Intl.NumberFormat('en-US');
export const fmtInt = (n) => (n == null ? '—' : intFmt.format(Math.round(n)));

// 12.3k / 4.5M: for budgets in a narrow column.
export function fmtCompact(n) {
  if (n == null) return '—';
  const a = Math.abs(n);
  if (a >= 1e9) return `${+(n / 1e9).toFixed(a >= 1e10 ? 0 : 1)}B`;
  if (a >= 1e6) return `${+(n / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e4) return `${+(n / 1e3).toFixed(a >= 1e5 ? 0 : 1)}k`;
  return fmtInt(n);
}

// A float to 4 significant digits, scientific when tiny or huge (learning rates: 2e-5).
export function fmtNum(x, digits = 4) {
  if (x == null || Number.isNaN(x)) return '—';
  if (typeof x !== 'number') return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e7) return fmtInt(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return x.toExponential(Math.max(0, digits - 2)).replace(/\.?0+e/, 'e');
  return String(+x.toPrecision(digits));
}

export const fmtPct = (f) => (f == null ? '—' : `${(100 * f).toFixed(f > 0 && f < 0.1 ? 1 : 0)}%`);

export function fmtSeconds(s) {
  if (s == null) return '—';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${(s / 86400).toFixed(1)} days`;
}

export function fmtAgo(iso) {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = (Date.now() - t) / 1000;
  if (s < 45) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 86400 * 30) {
    const d = Math.round(s / 86400);
    return `${d} day${d === 1 ? '' : 's'} ago`;
  }
  return new Date(t).toLocaleDateString();
}

export const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

// <time> showing "5 min ago" with the full date on hover.
export const timeEl = (iso) => (iso ? h('time', { datetime: iso, title: fmtDate(iso) }, fmtAgo(iso)) : '—');

export function fmtDuration(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? Date.parse(endIso) : Date.now();
  return fmtSeconds(Math.max(0, (end - Date.parse(startIso)) / 1000));
}

// Stacked progress bar of a sweep's trials: completed, stopped, failed (+diverged, +oom), running.
export function progressBar(p) {
  const planned = Math.max(p?.planned || 0, (p?.finished || 0) + (p?.running || 0) + (p?.pending || 0), 1);
  const parts = [
    ['completed', p?.completed || 0],
    ['stopped', p?.stopped || 0],
    ['failed', (p?.failed || 0) + (p?.diverged || 0) + (p?.oom || 0)],
    ['running', p?.running || 0],
  ];
  const done = p?.finished ?? (parts[0][1] + parts[1][1] + parts[2][1]);
  const bar = h('div', {
    class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(p?.planned || planned),
    'aria-valuenow': String(done), 'aria-label': `${done} of ${p?.planned ?? '?'} trials finished`,
    dataset: { testid: 'progress-bar' },
  });
  for (const [cls, n] of parts) {
    if (n > 0) bar.append(h('span', { class: `seg seg-${cls}`, style: { width: `${(100 * n) / planned}%` }, title: `${n} ${cls}` }));
  }
  return bar;
}

// "5 done · 2 stopped · 1 running · 0 failed"
export function trialCounts(p) {
  const failed = (p?.failed || 0) + (p?.diverged || 0) + (p?.oom || 0);
  return `${p?.completed || 0} done · ${p?.stopped || 0} stopped · ${p?.running || 0} running · ${failed} failed`
    + (p?.planned ? ` · of ${fmtInt(p.planned)}` : '');
}

export const objectiveLabel = (obj) => (obj ? `${obj.metric} (${obj.mode === 'max' ? 'higher' : 'lower'} is better)` : 'objective');

// Copy text with the async clipboard API (with a fallback for pages not in a secure context).
export async function copyText(text) {
  if (navigator.clipboard?.writeText) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall back */ }
  }
  const ta = h('textarea', { style: { position: 'fixed', opacity: '0' } });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  return ok;
}

// "Updated 12:03:04 · refreshing every 2 s" in the page head.
export function setLive(text, cls = '') {
  const el = $('live');
  if (!el) return;
  el.textContent = text;
  el.className = `live ${cls}`;
}

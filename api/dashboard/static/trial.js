// The trial page: one trial's curves, config, facts and events; refreshed while it runs.

import { api, runLivePage } from './api.js';
import { renderCurves, toColumns } from './curves.js';
import {
  $, fill, TERMINAL_SWEEP, TERMINAL_TRIAL, badge, fmtAgo, fmtDate, fmtDuration, fmtInt, fmtNum, fmtSeconds, h,
} from './ui.js';

const MAX_POINTS = 1000;
const EVENT_PAGE = 1000;

const trialId = $('main').dataset.trialId;
const S = { trial: null, sweep: null, points: [], events: [], lastEventId: null, drawn: false };

function renderHead() {
  const t = S.trial;
  const s = S.sweep;
  document.title = `Trial ${t.number} of ${s?.name ?? t.sweep_id} · sweepd`;
  $('trial-title').textContent = `Trial ${t.number}`;
  const state = badge(t.state);
  state.id = 'trial-state';
  state.dataset.testid = 'trial-state';
  $('trial-state').replaceWith(state);
  const crumb = $('crumb-sweep');
  crumb.href = `/sweeps/${encodeURIComponent(t.sweep_id)}`;
  crumb.textContent = s?.name ?? t.sweep_id;
  const metric = s?.objective?.metric || 'objective';
  fill($('trial-meta'),
    'of sweep ', h('a', { href: crumb.href }, s?.name ?? t.sweep_id),
    ' · ', metric, ' ', h('strong', {}, fmtNum(t.objective)),
    s?.best?.trial_id === t.id ? h('span', { class: 'tag tag-go', style: { marginLeft: '0.5rem' } }, 'best') : null);
  const reason = $('trial-reason');
  reason.hidden = !t.reason;
  reason.textContent = !t.reason ? '' : t.state === 'stopped' ? `Stopped early: ${t.reason}` : t.reason;
  const err = $('trial-error');
  err.hidden = !t.error;
  err.textContent = t.error ? `Error: ${t.error}` : '';
  renderErrorDetail(err, t.error_detail);
}

// A crash's last traceback lines, folded away under the error (a trainer error has none). Made
// once and kept across refreshes, so a reader's open/closed choice stands.
function renderErrorDetail(after, detail) {
  let box = document.getElementById('trial-error-detail');
  if (!detail) {
    if (box) box.hidden = true;
    return;
  }
  if (!box) {
    box = h('details', { id: 'trial-error-detail', class: 'card', dataset: { testid: 'trial-error-detail' } },
      h('summary', {}, 'Traceback (last lines)'),
      h('pre', { class: 'code', dataset: { testid: 'trial-traceback' } }));
    after.after(box);
  }
  box.hidden = false;
  box.querySelector('pre').textContent = detail;
}

// Every trial in the store is the sweep's own; a warm-started study also holds trials seeded from
// an earlier sweep (search.warm_start), which TPE learned from before this trial was suggested.
function origin() {
  const w = S.sweep?.warm_start;
  const own = h('span', { dataset: { testid: 'trial-origin' } }, 'own trial of this sweep');
  if (!w?.source) return own;
  return h('span', {}, own, '; its prior: ', fmtInt(w.trials_added), ` trial${w.trials_added === 1 ? '' : 's'} from sweep `,
    h('a', { href: `/sweeps/${encodeURIComponent(w.source)}`, dataset: { testid: 'trial-prior-source' } }, w.source));
}

function renderFacts() {
  const t = S.trial;
  const unit = S.sweep?.spec?.pruner?.time_attr || 'samples';
  const facts = [
    ['State', badge(t.state)],
    ['Objective', fmtNum(t.objective)],
    ['Samples seen', fmtInt(t.samples)],
    ['Tokens seen', fmtInt(t.tokens)],
    ['Compute time', fmtSeconds(t.seconds)],
    ['Attempts', fmtInt(t.attempts)],
    ['Started', t.started_at ? `${fmtDate(t.started_at)} (${fmtAgo(t.started_at)})` : '—'],
    ['Finished', t.finished_at ? `${fmtDate(t.finished_at)} (ran ${fmtDuration(t.started_at, t.finished_at) ?? '—'})` : '—'],
    t.stopped_at != null ? ['Stopped at', `${fmtInt(t.stopped_at)} ${unit}`] : null,
    ['Origin', origin()],
    ['Trial id', h('code', {}, t.id)],
  ].filter(Boolean);
  fill($('trial-facts'), ...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  $('trial-config').textContent = JSON.stringify(t.config ?? {}, null, 2);
  $('trial-final').textContent = t.metrics_final ? JSON.stringify(t.metrics_final, null, 2) : 'None yet.';
}

// Median of the non-null values (the points shown: up to MAX_POINTS steps, evenly spread).
function median(values) {
  const v = values.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

const lastOf = (values) => {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return values[i];
  return null;
};

// The steps' throughput and memory: latest and median tokens/s and MFU, the peak memory so far.
function renderThroughput() {
  const pts = S.points;
  const col = (k) => pts.map((p) => p[k]);
  const tps = col('tokens_per_second');
  const mfu = col('mfu');
  const mem = col('peak_memory_gb').filter((x) => x != null);
  const n = tps.filter((x) => x != null).length;
  const gb = (x) => (x == null ? '—' : `${x.toFixed(x < 10 ? 2 : 1)} GiB`);
  const pct = (f) => (f == null ? '—' : `${(100 * f).toFixed(1)}%`);
  const rows = [
    ['Tokens/s (latest)', fmtInt(lastOf(tps)), 'tps-latest'],
    [`Tokens/s (median of ${fmtInt(n)} step${n === 1 ? '' : 's'})`, fmtInt(median(tps)), 'tps-median'],
    ['MFU (latest)', pct(lastOf(mfu)), 'mfu-latest'],
    ['MFU (median)', pct(median(mfu)), 'mfu-median'],
    ['Peak memory', gb(mem.length ? Math.max(...mem) : null), 'peak-memory'],
  ];
  fill($('trial-throughput'), ...rows.flatMap(([k, v, id]) => [h('dt', {}, k), h('dd', { dataset: { testid: id } }, v)]));
}

function renderEvents() {
  const ol = $('trial-events');
  if (!S.events.length) { fill(ol, h('li', { class: 'muted' }, 'No events for this trial yet.')); return; }
  fill(ol, ...S.events.map((e) => {
    const action = e.payload?.action;
    const tag = e.kind === 'decision' ? (action === 'stop' ? ['stop', 'tag-stop'] : ['continue', 'tag-go'])
      : e.kind === 'error' ? ['error', 'tag-stop'] : [e.kind, 'tag-info'];
    return h('li', { dataset: { testid: 'trial-event', kind: e.kind } },
      h('span', { class: `tag ${tag[1]}` }, tag[0]), h('span', { class: 'msg' }, e.message),
      h('time', { class: 'small muted', datetime: e.created_at, title: fmtDate(e.created_at) }, ` ${fmtAgo(e.created_at)}`));
  }));
}

async function renderCharts() {
  const t = S.trial;
  const curve = [{ id: t.id, number: t.number, state: t.state, stopped_at: t.stopped_at, reason: t.reason, ...toColumns(S.points) }];
  const opts = { legend: false, clickThrough: false };
  await Promise.all([
    renderCurves($('chart-loss'), curve, 'loss', { title: 'Training loss', yLabel: 'loss', ...opts }),
    renderCurves($('chart-grad'), curve, 'grad_norm', { title: 'Gradient norm', yLabel: 'grad norm', logY: true, ...opts }),
    renderCurves($('chart-lr'), curve, 'lr', { title: 'Learning rate', yLabel: 'lr', ...opts }),
  ]);
  if (!S.drawn) {
    S.drawn = true;
    window.__sweepdRenderedAt = performance.now();
    window.__sweepdRendered = true;
  }
}

async function fetchEvents(sweepId) {
  for (let i = 0; i < 50; i++) {
    const page = await api(`/sweeps/${encodeURIComponent(sweepId)}/events`, { query: { after_id: S.lastEventId, limit: EVENT_PAGE } });
    const items = page.items || [];
    if (!items.length) break;
    S.events.push(...items.filter((e) => e.trial_id === trialId)); // the sweep's events, filtered here
    S.lastEventId = items[items.length - 1].id;
    if (items.length < EVENT_PAGE) break;
  }
}

async function refresh() {
  const enc = encodeURIComponent(trialId);
  const requests = Promise.all([
    api(`/trials/${enc}`),
    api(`/trials/${enc}/metrics`, { query: { max_points: MAX_POINTS } }),
  ]);
  const [trial, metrics] = await requests;
  S.trial = trial;
  S.points = metrics.points || [];
  const [sweep] = await Promise.all([api(`/sweeps/${encodeURIComponent(trial.sweep_id)}`), fetchEvents(trial.sweep_id)]);
  S.sweep = sweep;
  renderHead();
  renderFacts();
  renderThroughput();
  renderEvents();
  await renderCharts();
}

runLivePage(refresh, {
  finished: () => (TERMINAL_TRIAL.has(S.trial.state) || TERMINAL_SWEEP.has(S.sweep?.state) ? S.trial.state : null),
});

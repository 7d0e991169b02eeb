// The sweep page: everything about one sweep, refreshed every 2 s while it runs (no reload),
// and left alone once the sweep is finished.

import { api, ApiError, detailLines, hasToken, runLivePage } from './api.js';
import { hyperKeys, loadPlotly, paramLabel, renderParcoords, renderScatter } from './charts.js';
import { renderCurves } from './curves.js';
import { changePriority, shareLine } from './shares.js';
import {
  $, fill, TERMINAL_SWEEP, badge, copyText, fmtAgo, fmtCompact, fmtDate, fmtDuration, fmtInt, fmtNum, fmtPct,
  fmtSeconds, h, objectiveLabel, progressBar, timeEl, trialCounts,
} from './ui.js';

// Long curves are downsampled on the server: up to 200 points per trial, fewer when there are
// many trials (about 25,000 points per chart: 50 per trial for 500 trials), never under 50.
const curvePoints = (nTrials) => Math.min(200, Math.max(50, Math.floor(25000 / Math.max(1, nTrials))));
const trialCount = (sweep) => {
  const p = sweep.progress || {};
  return Math.max(p.planned || 0, (p.pending || 0) + (p.running || 0) + (p.finished || 0));
};
const EVENT_PAGE = 1000;
// Only the columns the two curve charts use (the curves call's payload is the page's largest).
const CURVE_FIELDS = 'step,samples,loss,grad_norm';

const sweepId = $('main').dataset.sweepId;
const enc = encodeURIComponent(sweepId);
const S = {
  sweep: null, trials: [], curves: [], decisions: [], lastEventId: null,
  calib: null, calibKey: null, sort: { key: 'number', dir: 1 }, drawn: false,
  curvesKey: null, hyperKey: null, logKey: null, dataEvent: null,
};

// ---- header, progress, best, ledger -----------------------------------------------------

function renderHeader() {
  const s = S.sweep;
  document.title = `${s.name} · sweepd`;
  $('sweep-name').textContent = s.name;
  const state = badge(s.state);
  state.id = 'sweep-state';
  state.dataset.testid = 'sweep-state';
  $('sweep-state').replaceWith(state);
  const pruner = s.spec?.pruner;
  const ran = fmtDuration(s.started_at, s.finished_at);
  fill($('sweep-meta'),
    'created ', timeEl(s.created_at),
    s.started_at ? [' · ', TERMINAL_SWEEP.has(s.state) ? 'ran for ' : 'running for ', ran] : null,
    s.finished_at ? [' · finished ', timeEl(s.finished_at)] : null,
    s.state === 'validating'
      ? [' · ', h('span', { dataset: { testid: 'validating-note' } }, "reading the data with the model's tokenizer; trials start once it passes")]
      : null,
    ' · objective ', h('strong', {}, objectiveLabel(s.objective)),
    pruner ? [' · pruner ', h('strong', {}, `${pruner.type}${pruner.signal ? ` on ${pruner.signal}` : ''}`)] : null,
  );
  const err = $('sweep-error');
  err.hidden = !s.error;
  err.textContent = s.error ? `Error: ${s.error}` : '';
  $('cancel-box').hidden = !(hasToken() && !TERMINAL_SWEEP.has(s.state));
  const finished = TERMINAL_SWEEP.has(s.state);
  fill($('sweep-share'), finished ? [] : shareLine(s)); // a finished sweep no longer shares the cluster
  $('sweep-share').hidden = finished;
  $('priority-box').hidden = !(hasToken() && !finished);
  if (document.activeElement !== $('priority-select')) $('priority-select').value = s.priority || 'normal';
}

function renderSummary() {
  const p = S.sweep.progress || {};
  fill($('progress'), progressBar(p), h('p', { class: 'small muted' }, trialCounts(p)));
  const items = [['planned', p.planned], ['pending', p.pending], ['running', p.running], ['completed', p.completed],
    ['stopped early', p.stopped], ['failed', p.failed], ['diverged', p.diverged], ['out of memory', p.oom]];
  fill($('counts'), ...items.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, fmtInt(v ?? 0)))));
}

function renderBest() {
  const s = S.sweep;
  const best = s.best;
  const box = $('best-body');
  const modelDir = s.ledger?.best_model_dir;
  let where;
  if (modelDir) where = h('p', { dataset: { testid: 'best-model-dir' } }, 'Saved model: ', h('code', { class: 'path' }, modelDir));
  else if (TERMINAL_SWEEP.has(s.state)) where = h('p', { class: 'muted', dataset: { testid: 'best-model-dir' } }, 'No model was kept for this sweep (save_best_model is off, or no trial finished).');
  else where = h('p', { class: 'muted', dataset: { testid: 'best-model-dir' } }, s.spec?.save_best_model === false ? 'Models are not kept for this sweep (save_best_model: false).' : 'The best trial\'s model is kept when the sweep finishes.');
  if (!best) { fill(box, h('p', { class: 'muted' }, 'No trial has finished with an objective yet.'), where); return; }
  const json = JSON.stringify(best.config, null, 2);
  const status = h('span', { class: 'small muted', role: 'status' });
  fill(box,
    h('p', { class: 'best-line' },
      h('a', { href: `/trials/${encodeURIComponent(best.trial_id)}` }, `Trial ${best.number}`), ' · ',
      s.objective?.metric || 'objective', ' ', h('strong', { dataset: { testid: 'best-objective' } }, fmtNum(best.objective))),
    h('pre', { class: 'code', dataset: { testid: 'best-config' } }, json),
    h('div', { class: 'row' },
      h('button', {
        type: 'button', dataset: { testid: 'copy-best' },
        onclick: async () => { status.textContent = (await copyText(json)) ? 'Copied to the clipboard.' : 'Copy failed: select the text instead.'; },
      }, 'Copy config'), status),
    where);
}

// A compute-budget sweep (search.compute_budget): spent of the total, what is left, and what the
// rest is projected to buy at the finished trials' mean cost.
function budgetBlock(b) {
  if (!b) return null;
  const unit = b.unit === 'samples' ? 'samples' : 'GPU hours';
  const f = b.unit === 'samples' ? fmtInt : (x) => fmtNum(x, 3);
  const more = b.projected_trials
    ? [`; ~${fmtInt(b.projected_trials)} more trial${b.projected_trials === 1 ? '' : 's'} at ${f(b.cost_per_trial)} each`,
      b.eta_seconds != null ? `, spent in ~${fmtSeconds(b.eta_seconds)}` : '']
    : (b.exhausted ? '; no further trial fits' : '');
  return h('div', { dataset: { testid: 'ledger-budget' } },
    h('p', {}, 'Budget: ', h('strong', {}, `${f(b.spent)} of ${f(b.total)} ${unit}`), ` spent (${fmtPct(b.fraction_spent)}) by `,
      fmtInt(b.trials_launched), ` trial${b.trials_launched === 1 ? '' : 's'}; ${f(b.remaining)} left`,
      b.committed ? `, ${f(b.committed)} committed to running trials` : '', more),
    h('div', { class: 'meter wide', title: `${f(b.spent)} of ${f(b.total)} ${unit}` },
      h('span', { style: { width: `${Math.min(100, 100 * (b.fraction_spent || 0))}%` } })));
}

function renderLedger() {
  const l = S.sweep.ledger || {};
  const box = $('ledger-body');
  const budget = budgetBlock(S.sweep.budget);
  if (!l.spent) { fill(box, budget, h('p', { class: 'muted' }, 'Nothing spent yet.')); return; }
  const cols = [['samples', fmtCompact], ['tokens', fmtCompact], ['seconds', fmtSeconds]];
  const line = (label, d, cls) => h('tr', { class: cls }, h('th', { scope: 'row' }, label), cols.map(([k, f]) => h('td', { class: 'num', title: d?.[k] == null ? null : fmtInt(d[k]) }, f(d?.[k]))));
  const spent = l.spent.samples ?? 0;
  const full = l.without_pruning?.samples ?? 0;
  fill(box, budget,
    h('p', { class: 'big', dataset: { testid: 'ledger-saved' } },
      h('strong', {}, fmtPct(l.fraction_saved ?? 0)), ' of the compute saved by stopping ',
      fmtInt(l.trials_stopped ?? 0), ` trial${l.trials_stopped === 1 ? '' : 's'} early`),
    h('div', { class: 'meter wide', title: `${fmtInt(spent)} of ${fmtInt(full)} samples` }, h('span', { style: { width: `${full ? Math.min(100, (100 * spent) / full) : 0}%` } })),
    h('table', { class: 'data compact' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), cols.map(([k]) => h('th', { scope: 'col', class: 'num' }, k)))),
      h('tbody', {},
        line('Spent', l.spent),
        line('Stopped trials would have spent', l.stopped_trials_would_have_spent, 'saved'),
        line('Without early stopping', l.without_pruning))));
}

// ---- trials table -------------------------------------------------------------------------

function columns(keys) {
  const metric = S.sweep.objective?.metric || 'objective';
  const trialLink = (t) => h('a', { href: `/trials/${encodeURIComponent(t.id)}` }, String(t.number));
  return [
    { key: 'number', label: '#', value: (t) => t.number, cell: trialLink, num: true },
    { key: 'state', label: 'State', value: (t) => t.state, cell: (t) => badge(t.state) },
    ...keys.map((k) => ({ key: `config.${k}`, label: paramLabel(k), value: (t) => t.config?.[k], cell: (t) => fmtNum(t.config?.[k]), num: true })),
    { key: 'objective', label: metric, value: (t) => t.objective, cell: (t) => fmtNum(t.objective), num: true },
    { key: 'samples', label: 'samples', value: (t) => t.samples, cell: (t) => fmtCompact(t.samples), num: true },
    {
      key: 'reason', label: 'Stop reason / error', value: (t) => t.reason || t.error || '',
      cell: (t) => (t.reason ? h('span', { class: 'reason', dataset: { testid: 'stop-reason' } }, t.reason)
        : t.error ? h('span', { class: 'err', title: t.error }, t.error.length > 120 ? `${t.error.slice(0, 120)}…` : t.error) : ''),
    },
  ];
}

function compare(a, b) {
  const an = a === undefined || a === null || a === '';
  const bn = b === undefined || b === null || b === '';
  if (an || bn) return an && bn ? 0 : an ? 1 : -1; // empty cells last either way
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function renderTable() {
  const cols = columns(hyperKeys(S.trials, S.sweep.spec));
  const { key, dir } = S.sort;
  const col = cols.find((c) => c.key === key) || cols[0];
  const rows = [...S.trials].sort((a, b) => {
    const va = col.value(a);
    const vb = col.value(b);
    const empty = (v) => v === undefined || v === null || v === '';
    if (empty(va) || empty(vb)) return compare(va, vb) || a.number - b.number;
    return dir * compare(va, vb) || a.number - b.number;
  });
  fill($('trials-head'), ...cols.map((c) => {
    const active = c.key === col.key;
    return h('th', { scope: 'col', class: c.num ? 'num' : null, 'aria-sort': active ? (dir > 0 ? 'ascending' : 'descending') : 'none' },
      h('button', {
        type: 'button', class: 'sort', dataset: { testid: `sort-${c.key}` },
        onclick: () => { S.sort = { key: c.key, dir: active ? -dir : 1 }; renderTable(); },
      }, c.label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (dir > 0 ? ' ▲' : ' ▼') : '')));
  }));
  fill($('trials-body'), ...(rows.length
    ? rows.map((t) => h('tr', { dataset: { testid: 'trial-row', trialId: t.id, state: t.state } },
      cols.map((c) => h('td', { class: c.num ? 'num' : null }, c.cell(t)))))
    : [h('tr', {}, h('td', { colspan: String(cols.length), class: 'muted' }, 'No trials yet.'))]));
  $('trials-count').textContent = `(${S.trials.length})`;
}

// ---- decision log -------------------------------------------------------------------------

// Where the study's prior came from (search.warm_start), linked; and how often the sweep was extended.
function renderWarmStart() {
  const w = S.sweep.warm_start;
  const n = S.sweep.extensions || 0;
  const el = $('warm-start');
  el.hidden = !w && !n;
  const plural = (k, word) => `${fmtInt(k)} ${word}${k === 1 ? '' : 's'}`;
  fill(el,
    w?.source ? ['Warm start: ', plural(w.trials_added, 'trial'), ' from sweep ',
      h('a', { href: `/sweeps/${encodeURIComponent(w.source)}`, dataset: { testid: 'warm-start-source' } }, w.source),
      ` seeded the study; ${plural(w.curves, 'curve')} to the pruner.`] : w ? w.message : null,
    n ? ` Extended ${n === 1 ? 'once' : `${n} times`}: the study and the pruner's state went on.` : null);
}

// What the data preflight found (its "data" event): samples, over-long samples dropped or truncated.
function renderDataPreflight() {
  const el = $('data-preflight');
  el.hidden = !S.dataEvent;
  if (S.dataEvent) el.textContent = `${S.dataEvent.message[0].toUpperCase()}${S.dataEvent.message.slice(1)}.`;
}

function renderLog() {
  renderWarmStart();
  renderDataPreflight();
  const p = S.sweep.spec?.pruner;
  $('pruner-desc').textContent = p
    // The stored spec carries the options as the pruner class resolved them: no defaults here.
    ? (p.type === 'none' ? 'no pruning: every trial runs its full budget.'
      : `${p.type} on ${p.signal}; rungs from ${fmtInt(p.grace)} ${p.time_attr}`
        + (p.reduction_factor != null ? `, ×${p.reduction_factor} each.`
          : p.interval != null ? `, then every ${fmtInt(p.interval)}.` : '.'))
    : '';
  const ol = $('decision-log');
  const key = `${S.decisions.length}|${S.trials.length}`;
  if (key === S.logKey) return; // nothing new (the times say "5 min ago" a little longer)
  S.logKey = key;
  if (!S.decisions.length) { fill(ol, h('li', { class: 'muted' }, 'No decisions yet.')); return; }
  const byId = new Map(S.trials.map((t) => [t.id, t]));
  fill(ol, ...S.decisions.slice().reverse().map((e) => {
    const action = e.payload?.action;
    const t = byId.get(e.trial_id);
    const num = e.payload?.trial_number ?? t?.number;
    return h('li', { class: `decision ${action === 'stop' ? 'stop' : ''}`, dataset: { testid: 'decision' } },
      h('span', { class: `tag ${action === 'stop' ? 'tag-stop' : 'tag-go'}` }, action === 'stop' ? 'stop' : 'continue'),
      e.trial_id ? h('a', { href: `/trials/${encodeURIComponent(e.trial_id)}`, class: 'strong' }, `trial ${num ?? e.trial_id}`) : null,
      ' ', h('span', { class: 'msg' }, e.message),
      h('time', { class: 'small muted', datetime: e.created_at, title: fmtDate(e.created_at) }, ` ${fmtAgo(e.created_at)}`));
  }));
}

// ---- calibration --------------------------------------------------------------------------

const SIGNAL_NAMES = { grad_norm: 'grad norm', loss: 'loss' };

function calibHint(row, objective) {
  const metric = objective?.metric || 'objective';
  const sig = SIGNAL_NAMES[row.signal] || row.signal;
  if (row.spearman == null) return `Not enough finished trials to tell yet (${row.n ?? 0}).`;
  const r = row.spearman;
  // > 0: a lower early signal went with a better final objective (whatever its direction).
  const agree = objective?.mode === 'max' ? -r : r;
  const few = (row.n ?? 0) < 5 ? ` Only ${row.n} trials: treat it as a hint.` : '';
  if (Math.abs(r) < 0.3) return `Weak: the early ${sig} says little about the final ${metric} here, so stopping on it is close to guessing.${few}`;
  const how = Math.abs(r) >= 0.7 ? 'clearly' : 'somewhat';
  if (agree > 0) {
    return `Trials with a lower early ${sig} ended ${how} better, so keeping the lowest ${sig} (stopping the highest) keeps the right trials.${few}`;
  }
  return `Trials with a higher early ${sig} ended ${how} better, so keeping the lowest ${sig} would stop the good ones`
    + `${row.signal === 'loss' ? ' (the sign arXiv 2412.13337 found: higher early loss, better model)' : ''}.${few}`;
}

function renderCalib() {
  const box = $('calib-body');
  const c = S.calib;
  if (!c) { fill(box, h('p', { class: 'muted' }, 'Loading…')); return; }
  if (c.error) { fill(box, h('p', { class: 'muted' }, `Calibration is not available: ${c.error}`)); return; }
  const unit = S.sweep.spec?.pruner?.time_attr || 'samples'; // the chart's axis when nothing prunes
  const metric = c.objective?.metric || S.sweep.objective?.metric || 'objective';
  const intro = h('p', { class: 'hint' },
    `Spearman rank correlation, across ${fmtInt(c.n_trials ?? 0)} finished trial${c.n_trials === 1 ? '' : 's'}, between each early signal and the final ${metric} `,
    `(${objectiveLabel(c.objective || S.sweep.objective).replace(/^\S+ /, '')}). `,
    '+1 or −1: the early signal ranks trials exactly as the final result does; near 0: it tells you little.');
  if (!c.rows?.length) { fill(box, intro, h('p', { class: 'muted' }, 'No rows yet: trials need to finish first.')); return; }
  fill(box, intro, h('table', { class: 'data compact', dataset: { testid: 'calibration-table' } },
    h('thead', {}, h('tr', {}, ['Signal', 'At', 'Spearman ρ', 'n', 'What it means'].map((t, i) => h('th', { scope: 'col', class: i === 2 || i === 3 ? 'num' : null }, t)))),
    h('tbody', {}, c.rows.map((r) => h('tr', { dataset: { testid: 'calibration-row' } },
      h('td', {}, SIGNAL_NAMES[r.signal] || r.signal),
      h('td', { class: 'nowrap' }, `${fmtInt(r.at)} ${unit}`),
      h('td', { class: `num ${r.spearman == null ? '' : Math.abs(r.spearman) >= 0.3 ? 'strong' : 'muted'}` }, r.spearman == null ? '—' : (r.spearman > 0 ? '+' : '') + r.spearman.toFixed(2)),
      h('td', { class: 'num' }, fmtInt(r.n)),
      h('td', { class: 'small' }, calibHint(r, c.objective || S.sweep.objective)))))));
}

// ---- charts -------------------------------------------------------------------------------

// What a redraw would change: nothing to do when the same (a finished trial's curve is fixed).
const curvesKey = () => `${S.sweep.best?.trial_id}|${S.curves.map((t) => {
  const n = t.step?.length ?? 0;
  return `${t.id}:${t.state}:${n}:${n ? t.step[n - 1] : ''}:${t.stopped_at}`;
}).join(',')}`;
const hyperKey = () => S.trials.map((t) => `${t.id}:${t.state}:${t.objective}:${JSON.stringify(t.config)}`).join(',');

async function renderCurveCharts() {
  const key = curvesKey();
  if (key === S.curvesKey) return;
  S.curvesKey = key;
  const bestId = S.sweep.best?.trial_id ?? null;
  await Promise.all([
    renderCurves($('chart-loss'), S.curves, 'loss', { title: 'Training loss', yLabel: 'loss', bestId }),
    renderCurves($('chart-grad'), S.curves, 'grad_norm', { title: 'Gradient norm (before clipping)', yLabel: 'grad norm', bestId, logY: true }),
  ]);
  if (!S.drawn) {
    S.drawn = true;
    await new Promise((r) => requestAnimationFrame(() => r()));
    window.__sweepdRenderedAt = performance.now();
    window.__sweepdRendered = true; // the benchmark and the tests wait for this
  }
}

async function renderHyperCharts() {
  const key = hyperKey();
  if (key === S.hyperKey) return;
  S.hyperKey = key;
  const keys = hyperKeys(S.trials, S.sweep.spec);
  await Promise.all([
    renderScatter($('chart-scatter'), S.trials, S.sweep.objective, { revision: `scatter-${sweepId}` }),
    renderParcoords($('chart-parcoords'), S.trials, S.sweep.objective, keys, { revision: `pc-${sweepId}` }),
  ]);
  window.__sweepdAllRenderedAt ??= performance.now();
}

// ---- loading and polling ------------------------------------------------------------------

async function fetchDecisions() {
  // Only events newer than the last one seen, a page at a time.
  for (let i = 0; i < 50; i++) {
    const page = await api(`/sweeps/${enc}/events`, { query: { kind: 'decision', after_id: S.lastEventId, limit: EVENT_PAGE } });
    const items = page.items || [];
    if (!items.length) break;
    S.decisions.push(...items);
    S.lastEventId = items[items.length - 1].id;
    if (items.length < EVENT_PAGE) break;
  }
}

async function fetchDataPreflight() {
  const page = await api(`/sweeps/${enc}/events`, { query: { kind: 'data', limit: 1 } });
  S.dataEvent = (page.items || [])[0] || null;
}

async function fetchCalibration() {
  try {
    S.calib = await api(`/sweeps/${enc}/calibration`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw err;
    S.calib = { error: err instanceof ApiError ? detailLines(err.body).join('; ') || `HTTP ${err.status}` : String(err) };
  }
}

// One refresh. The requests are ordered by what the page needs first: the sweep, then the
// curves (the biggest call), then the rest, which the server answers while the browser draws
// the curves with uPlot. plotly.js (the scatter and parallel coordinates only) is loaded once
// the curves are drawn: parsing it earlier would hold up the curves on the main thread.
// Concurrent CPU-bound calls would only slow each other down on the server.
async function refresh() {
  const started = performance.now();
  const sweep = await api(`/sweeps/${enc}`);
  const curves = await api(`/sweeps/${enc}/curves`, { query: { max_points: curvePoints(trialCount(sweep)), fields: CURVE_FIELDS } });
  if (!S.drawn) performance.mark('sweepd:data-loaded');
  const firstLoad = S.calib === null;
  const restP = Promise.all([
    api(`/sweeps/${enc}/trials`),
    fetchDecisions(),
    firstLoad ? fetchCalibration() : null, // later: again only when more trials have finished
    firstLoad ? fetchDataPreflight() : null, // written once, when the sweep is created
  ]);
  restP.catch(() => {}); // (its error is thrown below, once awaited)
  S.sweep = sweep;
  S.curves = curves.trials || [];
  renderHeader();
  renderSummary();
  await renderCurveCharts();
  loadPlotly().catch(() => {}); // now, while the other calls finish (renderHyperCharts awaits it)
  const [trials] = await restP;
  S.trials = trials.items || [];
  const finished = S.trials.filter((t) => t.objective != null).length;
  if (!firstLoad && (finished !== S.calibKey || S.calib?.error)) await fetchCalibration();
  S.calibKey = finished;
  renderBest();
  renderLedger();
  renderTable();
  renderLog();
  renderCalib();
  $('spec-json').textContent = JSON.stringify(sweep.spec ?? {}, null, 2);
  await renderHyperCharts();
  window.__sweepdLastRefreshMs = performance.now() - started; // the benchmark reads these
  window.__sweepdRefreshes = (window.__sweepdRefreshes || 0) + 1;
}

// ---- cancel -------------------------------------------------------------------------------

function cancelStep(confirming) {
  $('cancel-button').hidden = confirming;
  $('cancel-confirm').hidden = !confirming;
  $('cancel-keep').hidden = !confirming;
}

$('cancel-button').addEventListener('click', () => cancelStep(true));
$('cancel-keep').addEventListener('click', () => cancelStep(false));
$('cancel-confirm').addEventListener('click', async () => {
  const msg = $('cancel-msg');
  msg.textContent = 'Cancelling…';
  try {
    await api(`/sweeps/${enc}/cancel`, { method: 'POST' });
    msg.textContent = 'Cancel requested.';
    cancelStep(false);
    await tick();
  } catch (err) {
    msg.textContent = err instanceof ApiError
      ? `Could not cancel (${err.status}): ${detailLines(err.body).join('; ')}`
      : `Could not cancel: ${err.message || err}`;
  }
});

$('priority-select').addEventListener('change', (ev) => changePriority(sweepId, ev.target.value, $('priority-msg'), tick));

const tick = runLivePage(refresh, {
  finished: () => (S.sweep && TERMINAL_SWEEP.has(S.sweep.state) ? S.sweep.state : null),
  onAuthChange: () => { if (S.sweep) renderHeader(); },
});

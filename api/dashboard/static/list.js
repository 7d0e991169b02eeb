// The sweeps list: one API call per page (server-side limit/offset), and the submit form.

import { api, ApiError, detailLines, hasToken, runPage } from './api.js';
import { queueItem, shareCell } from './shares.js';
import { $, fill, badge, fmtCompact, fmtNum, fmtPct, h, progressBar, timeEl, trialCounts } from './ui.js';

const main = $('main');
const limit = Number(main.dataset.limit) || 20;
const offset = Number(main.dataset.offset) || 0;
const stateFilter = main.dataset.state || '';

function pageHref(off) {
  const q = new URLSearchParams();
  if (stateFilter) q.set('state', stateFilter);
  q.set('limit', String(limit));
  q.set('offset', String(Math.max(0, off)));
  return `/?${q}`;
}

function computeCell(ledger) {
  const spent = ledger?.spent?.samples;
  const full = ledger?.without_pruning?.samples;
  if (spent == null) return h('span', { class: 'muted' }, '—');
  const frac = full ? Math.min(1, spent / full) : null;
  return h('div', { class: 'compute' },
    h('div', { class: 'meter', title: `${fmtCompact(spent)} of ${fmtCompact(full)} samples a sweep without early stopping would use` },
      h('span', { style: { width: `${frac == null ? 0 : 100 * frac}%` } })),
    h('span', { class: 'small' }, `${fmtCompact(spent)} / ${fmtCompact(full)} samples`),
    ledger?.fraction_saved ? h('span', { class: 'small saved' }, ` · ${fmtPct(ledger.fraction_saved)} saved`) : null);
}

function bestCell(s) {
  if (!s.best || s.best.objective == null) return h('span', { class: 'muted' }, '—');
  return h('span', {},
    h('strong', {}, fmtNum(s.best.objective)),
    h('span', { class: 'small muted' }, ` ${s.objective?.metric || ''} · `),
    h('a', { href: `/trials/${encodeURIComponent(s.best.trial_id)}`, class: 'small' }, `trial ${s.best.number}`));
}

function row(s) {
  return h('tr', { dataset: { testid: 'sweep-row', sweepId: s.id, state: s.state } },
    h('td', {},
      h('a', { href: `/sweeps/${encodeURIComponent(s.id)}`, class: 'strong', dataset: { testid: 'sweep-link' } }, s.name),
      h('div', { class: 'small muted mono' }, s.id)),
    h('td', {}, badge(s.state), s.error ? h('div', { class: 'small err', title: s.error }, s.error.slice(0, 80)) : null),
    h('td', {}, progressBar(s.progress)),
    h('td', { class: 'small' }, trialCounts(s.progress)),
    h('td', {}, shareCell(s)),
    h('td', {}, bestCell(s)),
    h('td', {}, computeCell(s.ledger)),
    h('td', { class: 'small' }, timeEl(s.created_at)));
}

function renderPager(page) {
  const pager = $('pager');
  const { total, items } = page;
  const from = total ? offset + 1 : 0;
  const to = offset + items.length;
  const parts = [h('span', { class: 'muted', dataset: { testid: 'pager-summary' } }, `${from}–${to} of ${total}`)];
  if (offset > 0) parts.push(h('a', { href: pageHref(offset - limit), rel: 'prev', dataset: { testid: 'pager-prev' } }, '← Newer'));
  if (to < total) parts.push(h('a', { href: pageHref(offset + limit), rel: 'next', dataset: { testid: 'pager-next' } }, 'Older →'));
  fill(pager, ...parts);
}

// The queue: the first queued sweeps to start (up to 200, the API's page), in the order they start.
const QUEUE_PAGE = 200;

async function loadQueue() {
  const page = await api('/sweeps', { query: { state: 'queued', order: 'start', limit: QUEUE_PAGE } });
  const items = page.items.filter((s) => s.queue_position != null);
  $('queue-card').hidden = items.length === 0;
  $('queue-count').textContent = page.total ? `(${page.total})` : '';
  fill($('queue-list'), ...items.map(queueItem));
  const more = $('queue-more');
  more.hidden = page.total <= items.length;
  more.textContent = `and ${page.total - items.length} more queued sweeps after these`;
}

async function load() {
  const [page] = await Promise.all([api('/sweeps', { query: { limit, offset, state: stateFilter } }), loadQueue()]);
  const body = $('sweeps-body');
  fill(body, ...(page.items.length
    ? page.items.map(row)
    : [h('tr', {}, h('td', { colspan: '8', class: 'muted' }, stateFilter ? `No ${stateFilter} sweeps.` : 'No sweeps yet. Submit one below or with `sweepd submit SPEC`.'))]));
  renderPager(page);
  $('submit-card').hidden = !hasToken();
}

// ---- submit ------------------------------------------------------------------------------

function showSubmitErrors(lines) {
  const ul = $('submit-errors');
  fill(ul, ...lines.map((l) => h('li', {}, l)));
  ul.hidden = lines.length === 0;
}

$('submit-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('spec-text').value;
  const status = $('submit-status');
  showSubmitErrors([]);
  if (!text.trim()) { showSubmitErrors(['Paste a sweep spec first.']); return; }
  const isJson = /^\s*[{[]/.test(text);
  const button = $('submit-form').querySelector('button[type=submit]');
  button.disabled = true;
  status.textContent = 'Submitting…';
  try {
    const sweep = await api('/sweeps', { method: 'POST', body: text, contentType: isJson ? 'application/json' : 'application/yaml' });
    status.textContent = `Submitted sweep ${sweep.id}.`;
    window.location.href = `/sweeps/${encodeURIComponent(sweep.id)}`;
  } catch (err) {
    status.textContent = '';
    if (err instanceof ApiError) {
      const lines = detailLines(err.body);
      showSubmitErrors(err.status === 401 || err.status === 403
        ? [`The server refused the token (${err.status}). Sign in again with a valid token.`]
        : (lines.length ? lines : [`The server answered ${err.status}.`]));
    } else {
      showSubmitErrors([`Could not reach the server: ${err.message || err}`]);
    }
  } finally {
    button.disabled = false;
  }
});

runPage(load, { onAuthChange: () => { $('submit-card').hidden = !hasToken(); } });

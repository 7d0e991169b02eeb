// Sweeps sharing one cluster (issue 16): a sweep's priority, its place in the queue, its share of
// the cluster (running trials of the supervisor's limit) and what it waits for. Used by the
// sweeps list (its queue card and Share column) and the sweep page (its share line and the
// priority control of a tab signed in to act).

import { api, ApiError, detailLines } from './api.js';
import { TERMINAL_SWEEP, h, timeEl } from './ui.js';

export const PRIORITIES = ['low', 'normal', 'high'];

export const priorityBadge = (priority) => h('span', {
  class: `prio prio-${priority}`, title: 'priority: its weight in the cluster and its place in the queue',
  dataset: { testid: 'priority', priority },
}, priority);

// "3 of 4 trials": running trials of the supervisor's limit (its fair share of the cluster), or of
// the spec's max_concurrent when the supervisor set none.
export function shareText(s) {
  const of = s.trial_limit ?? s.max_concurrent;
  return `${s.running_trials ?? 0} of ${of ?? '?'} trials`;
}

const shareTitle = (s) => (s.trial_limit == null
  ? `running trials of its max_concurrent (${s.max_concurrent}): no limit from the supervisor`
  : `running trials of its fair share of the cluster (${s.trial_limit} trial slots)`);

const waiting = (s, cls, tag = 'div') => (s.waiting_for
  ? h(tag, { class: cls, dataset: { testid: 'waiting-for' } }, `waiting for ${s.waiting_for}`)
  : null);

// The list's Share cell: the priority, then the place in the queue (queued) or the share (running);
// a finished sweep shares nothing any more.
export function shareCell(s) {
  if (TERMINAL_SWEEP.has(s.state)) return h('span', { class: 'muted', dataset: { testid: 'share' } }, '—');
  return h('div', { class: 'share', dataset: { testid: 'share' } },
    priorityBadge(s.priority || 'normal'),
    s.queue_position != null
      ? h('span', { class: 'small', dataset: { testid: 'queue-position' } }, ` #${s.queue_position} in the queue`)
      : null,
    s.state === 'running'
      ? h('span', { class: 'small', title: shareTitle(s), dataset: { testid: 'share-text' } }, ` ${shareText(s)}`)
      : null,
    waiting(s, 'small muted'));
}

// One entry of the list page's queue card (the queued sweeps in the order they start).
export function queueItem(s) {
  return h('li', { dataset: { testid: 'queue-item', sweepId: s.id, position: String(s.queue_position) } },
    h('span', { class: 'queue-pos', dataset: { testid: 'queue-position' } }, `#${s.queue_position}`),
    h('a', { href: `/sweeps/${encodeURIComponent(s.id)}`, class: 'strong' }, s.name),
    ' ', priorityBadge(s.priority || 'normal'),
    h('span', { class: 'small muted' }, ' submitted ', timeEl(s.created_at)),
    waiting(s, 'small muted'));
}

// The sweep page's line under its title.
export function shareLine(s) {
  return [
    'Priority ', priorityBadge(s.priority || 'normal'),
    s.queue_position != null
      ? [' · ', h('span', { dataset: { testid: 'queue-position' } }, `#${s.queue_position} in the queue`)]
      : null,
    s.state === 'running'
      ? [' · running ', h('strong', { title: shareTitle(s), dataset: { testid: 'share-text' } }, shareText(s)),
        s.trial_limit == null ? ' (its max_concurrent)' : ' (its share of the cluster)']
      : null,
    s.waiting_for ? [' · ', waiting(s, 'waiting', 'span')] : null,
  ];
}

// The priority control (a tab signed in to act, a sweep not finished): PATCH /sweeps/{id}, then
// `done()` (the page refreshes). `msg` is the element that says how it went.
export async function changePriority(sweepId, priority, msg, done) {
  msg.textContent = 'Saving…';
  try {
    const sweep = await api(`/sweeps/${encodeURIComponent(sweepId)}`, { method: 'PATCH', body: { priority } });
    msg.textContent = `Priority ${sweep.priority}.`;
    await done();
  } catch (err) {
    msg.textContent = err instanceof ApiError
      ? `Could not change the priority (${err.status}): ${detailLines(err.body).join('; ')}`
      : `Could not change the priority: ${err.message || err}`;
  }
}

// Training curves (loss, grad norm, LR against samples seen) with uPlot: a canvas chart library
// that draws hundreds of lines in a few milliseconds. uPlot is served by the app from
// api/dashboard/static/vendor/, fetched from the npm registry at build time by `make setup`
// (scripts/fetch_vendor.py, pinned version and sha512); nothing comes from a CDN.
//
// uPlot runs in its "mode 2" (facets): every series carries its own [xs, ys]. Trials see
// samples at different rates (the batch size differs per trial), so their x values differ; the
// alternative, aligning every trial on one shared x array, would need either the union of all
// x values (500 trials x 50 points -> 25,000 xs x 500 series, almost all null) or resampling on
// a common grid on the server, which moves points off the ones the trainer logged (and the stop
// markers off their curves). Mode 2 draws exactly the points the server kept, one line each.
//
// uPlot's legend and hover (one row and one cursor point per series) do not work with 500
// series, so they are off. Instead: a tooltip that names the trial nearest to the mouse (a
// distance to each series' line segment in pixels), that trial redrawn bold on an overlay
// canvas, a click on it opens its trial page, a drag zooms on x and a double click resets.
// Each stopped trial is marked with a red x where the pruner stopped it (a draw hook), and
// hovering the mark shows the pruner's reason.

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#393b79'];
const STOP_COLOR = '#d62728';
export const colorFor = (number) => PALETTE[((number % PALETTE.length) + PALETTE.length) % PALETTE.length];
export const CURVE_FIELDS = ['step', 'samples', 'tokens', 'loss', 'grad_norm', 'lr', 'seconds'];
const HEIGHT = 340;
const HOVER_PX = 10; // how close (CSS px) the mouse must be to a line to name its trial
const STOP_PX = 9;

function rgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

const fmtInt = (v) => (v == null ? '—' : Math.round(v).toLocaleString('en-US'));
const fmtY = (v) => (v == null ? '—' : String(+v.toPrecision(4)));
function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(4));
}
// v rounded down or up to one significant digit (0.336 -> 0.3, 3.62 -> 4).
function roundSig(v, how) {
  const e = 10 ** Math.floor(Math.log10(v));
  return how(v / e) * e;
}
const yTick = (v) => {
  const a = Math.abs(v);
  return a === 0 || (a >= 1e-3 && a < 1e4) ? String(+v.toPrecision(3)) : v.toExponential(0);
};

// [{step, samples, loss, ...}] (the trial metrics route) -> {step: [...], samples: [...], ...},
// the columns the curves route returns per trial.
export function toColumns(points) {
  const cols = {};
  for (const k of CURVE_FIELDS) cols[k] = new Array(points.length);
  for (let i = 0; i < points.length; i++) for (const k of CURVE_FIELDS) cols[k][i] = points[i][k] ?? null;
  return cols;
}

// x of every point: samples seen (the pruner's time axis), the step where a point has none.
function xsOf(t) {
  const st = t.step || [];
  const sa = t.samples || [];
  const xs = new Array(st.length);
  for (let i = 0; i < st.length; i++) xs[i] = sa[i] ?? st[i];
  return xs;
}

// Where a stopped trial's mark goes: at stopped_at (on the samples axis), on its curve's last
// value at or before it; at its last point when stopped_at is unknown.
function stopPoint(t, xs, ys) {
  if (t.state !== 'stopped') return null;
  const at = t.stopped_at ?? Infinity;
  let y = null;
  let x = null;
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] > at && y !== null) break;
    if (ys[i] != null) { y = ys[i]; x = xs[i]; }
  }
  if (y == null) return null;
  return { x: t.stopped_at ?? x, y };
}

function lowerBound(xs, v) {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function segDist(px, py, ax, ay, bx, by) {
  const dx = bx - ax;
  const dy = by - ay;
  const len = dx * dx + dy * dy;
  let k = len ? ((px - ax) * dx + (py - ay) * dy) / len : 0;
  k = Math.max(0, Math.min(1, k));
  return Math.hypot(px - (ax + k * dx), py - (ay + k * dy));
}

// The trial (series index) whose line passes nearest to (left, top), CSS px in the plot area.
function nearestSeries(u, left, top) {
  const xv = u.posToVal(left, 'x');
  let best = null;
  let bestD = HOVER_PX;
  for (let i = 1; i < u.series.length; i++) {
    const [xs, ys] = u.data[i];
    if (!xs.length) continue;
    const j = lowerBound(xs, xv);
    for (const [a, b] of [[j - 1, j], [j, j + 1], [j - 2, j - 1]]) {
      if (a < 0 || a >= xs.length || ys[a] == null) continue;
      const ax = u.valToPos(xs[a], 'x');
      const ay = u.valToPos(ys[a], 'y');
      let d;
      if (b < 0 || b >= xs.length || ys[b] == null) d = Math.hypot(left - ax, top - ay);
      else d = segDist(left, top, ax, ay, u.valToPos(xs[b], 'x'), u.valToPos(ys[b], 'y'));
      if (d < bestD) {
        bestD = d;
        const bx = b >= 0 && b < xs.length && ys[b] != null ? u.valToPos(xs[b], 'x') : Infinity;
        best = { series: i, idx: Math.abs(left - ax) <= Math.abs(left - bx) ? a : b };
      }
    }
  }
  return best;
}

function drawStops(u, st) {
  if (!st.stops.length) return;
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  const dpr = u.pxRatio || window.devicePixelRatio || 1;
  const r = 5 * dpr;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.lineCap = 'round';
  for (const [color, w] of [['#ffffff', 4.5], [STOP_COLOR, 2.25]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = w * dpr;
    ctx.beginPath();
    for (const s of st.stops) {
      const x = u.valToPos(s.x, 'x', true);
      const y = u.valToPos(s.y, 'y', true);
      ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r);
      ctx.moveTo(x - r, y + r); ctx.lineTo(x + r, y - r);
    }
    ctx.stroke();
  }
  ctx.restore();
}

// The hovered trial, bold, on a canvas over the plot (no redraw of the 500 lines).
function drawHighlight(u, st, hit) {
  const cv = st.overlay;
  const dpr = window.devicePixelRatio || 1;
  const w = u.over.clientWidth;
  const hgt = u.over.clientHeight;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(hgt * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(hgt * dpr);
  }
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  if (!hit || hit.series == null) return;
  const [xs, ys] = u.data[hit.series];
  const m = st.meta[hit.series - 1];
  ctx.strokeStyle = colorFor(m.number);
  ctx.lineWidth = 3;
  ctx.lineJoin = 'round';
  ctx.beginPath();
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (ys[i] == null) { pen = false; continue; }
    const x = u.valToPos(xs[i], 'x');
    const y = u.valToPos(ys[i], 'y');
    if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    pen = true;
  }
  ctx.stroke();
  if (hit.idx != null && ys[hit.idx] != null) {
    ctx.fillStyle = colorFor(m.number);
    ctx.beginPath();
    ctx.arc(u.valToPos(xs[hit.idx], 'x'), u.valToPos(ys[hit.idx], 'y'), 4, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function tipText(st, hit) {
  if (hit.stop != null) {
    const s = st.stops[hit.stop];
    return [`trial ${s.number}: ${s.reason || 'stopped early'}`];
  }
  const m = st.meta[hit.series - 1];
  const [xs, ys] = st.u.data[hit.series];
  const lines = [
    `trial ${m.number} · ${m.state}${m.best ? ' · best' : ''}`,
    `${fmtInt(xs[hit.idx])} samples · ${st.yLabel} ${fmtY(ys[hit.idx])}`,
  ];
  if (m.reason) lines.push(`stopped: ${m.reason}`);
  if (st.clickThrough) lines.push('click to open the trial');
  return lines;
}

function onCursor(u, st) {
  const { left, top } = u.cursor;
  let hit = null;
  if (left != null && left >= 0 && top >= 0) {
    for (let k = 0; k < st.stops.length; k++) {
      const s = st.stops[k];
      if (Math.hypot(u.valToPos(s.x, 'x') - left, u.valToPos(s.y, 'y') - top) <= STOP_PX) {
        hit = { stop: k, series: s.series, idx: null };
        break;
      }
    }
    hit ??= nearestSeries(u, left, top);
  }
  const key = hit ? `${hit.series}:${hit.idx}:${hit.stop}` : '';
  if (key === st.hoverKey) return;
  st.hoverKey = key;
  st.hover = hit;
  drawHighlight(u, st, hit);
  const tip = st.tip;
  if (!hit) { tip.hidden = true; u.over.style.cursor = ''; return; }
  tip.replaceChildren(...tipText(st, hit).map((line, i) => {
    const el = document.createElement(i === 0 ? 'strong' : 'div');
    el.textContent = line;
    return el;
  }));
  tip.dataset.trialId = hit.series != null ? st.meta[hit.series - 1].id : '';
  tip.hidden = false;
  u.over.style.cursor = st.clickThrough && hit.series != null ? 'pointer' : '';
  // Next to the mouse, inside the chart box.
  const box = st.div.getBoundingClientRect();
  const over = u.over.getBoundingClientRect();
  const x = over.left - box.left + left;
  const y = over.top - box.top + top;
  const tw = tip.offsetWidth;
  tip.style.left = `${Math.max(0, x + 14 + tw > box.width ? x - 14 - tw : x + 14)}px`;
  tip.style.top = `${Math.max(0, y - 10)}px`;
}

function foot(st, trials) {
  const el = st.foot;
  if (st.legend && trials.length) {
    el.replaceChildren(...[...trials].sort((a, b) => a.number - b.number).map((t) => {
      const item = document.createElement('span');
      item.className = 'key';
      const sw = document.createElement('i');
      sw.style.background = colorFor(t.number);
      item.append(sw, `trial ${t.number}`);
      return item;
    }));
  } else if (trials.length > 1) {
    el.textContent = `${trials.length} trials · hover a line to name its trial${st.clickThrough ? ', click to open it' : ''} · drag to zoom, double-click to reset`;
  } else el.textContent = '';
}

function missingLibrary(div) {
  const p = document.createElement('p');
  p.className = 'alert';
  p.dataset.testid = 'chart-missing';
  p.textContent = 'The chart library (uPlot) did not load: the server has no /static/vendor/uPlot.iife.min.js. '
    + 'Run `make setup` (or python3 scripts/fetch_vendor.py) where sweepd is installed, then reload.';
  div.replaceChildren(p);
}

// Draw (or redraw) the curves of `key` ('loss' | 'grad_norm' | 'lr') for trials [{id, number,
// state, stopped_at, reason, step: [], samples: [], <key>: [] ...}] in `div`. Resolves once
// uPlot has drawn them, with the number of trial series drawn.
export async function renderCurves(div, trials, key, {
  title, yLabel = key, bestId = null, logY = false, legend = null, clickThrough = true,
} = {}) {
  const uPlot = window.uPlot;
  if (!uPlot) { missingLibrary(div); return 0; } // the rest of the page still works
  // The best trial last, so that it is drawn on top.
  const ordered = bestId == null ? trials : [...trials.filter((t) => t.id !== bestId), ...trials.filter((t) => t.id === bestId)];
  const cols = [];
  let lo = Infinity; let hi = -Infinity; let plo = Infinity; let phi = -Infinity; let xmax = 0;
  for (const t of ordered) {
    const xs = xsOf(t);
    const raw = t[key] || [];
    const ys = new Array(xs.length);
    for (let i = 0; i < xs.length; i++) {
      const v = raw[i];
      if (v == null || !Number.isFinite(v)) { ys[i] = null; continue; }
      ys[i] = v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (v > 0 && v < plo) plo = v;
      if (v > phi) phi = v;
      if (xs[i] > xmax) xmax = xs[i];
    }
    cols.push([xs, ys]);
  }
  // A log axis only where the values span a good factor (grad norms of diverging trials).
  const log = logY && Number.isFinite(plo) && phi / plo >= 4;
  if (log) for (const [, ys] of cols) for (let i = 0; i < ys.length; i++) if (ys[i] != null && ys[i] <= 0) ys[i] = null;

  const st = div.__sweepd ?? (div.__sweepd = { u: null, sig: null, zoomX: null, zoomed: false });
  Object.assign(st, { div, yLabel, clickThrough, legend: legend ?? (ordered.length > 0 && ordered.length <= 12), xmax });
  st.meta = ordered.map((t) => ({
    id: t.id, number: t.number, state: t.state, best: t.id === bestId, reason: t.state === 'stopped' ? (t.reason || 'stopped early') : null,
  }));
  st.stops = [];
  ordered.forEach((t, i) => {
    const p = stopPoint(t, cols[i][0], cols[i][1]);
    if (p) st.stops.push({ ...p, id: t.id, number: t.number, reason: t.reason, series: i + 1 });
  });
  // uPlot's mode 2 needs one series at least: with no trial yet, an empty placeholder.
  const data = cols.length ? [null, ...cols] : [null, [[], []]];
  const sig = `${key}|${log}|${st.legend}|${title}|${st.meta.map((m) => `${m.id}:${m.state}:${m.best}`).join(',')}`;
  const drawn = new Promise((resolve) => { st.onDraw = resolve; });

  if (st.u && st.sig === sig) {
    st.u.setData(data, !st.zoomed); // same series: new points only, the zoom is kept
  } else {
    st.u?.destroy();
    st.sig = sig;
    div.replaceChildren();
    div.classList.add('curves');
    const series = [{}, ...ordered.map((t, i) => {
      const best = t.id === bestId;
      const color = colorFor(t.number);
      return {
        label: `trial ${t.number}`,
        stroke: rgba(color, t.state === 'stopped' ? 0.45 : 0.9),
        width: best ? 2.75 : 1.25,
        dash: t.state === 'diverged' || t.state === 'failed' || t.state === 'oom' ? [4, 3] : undefined,
        points: { show: cols[i][0].length === 1, size: 6, fill: color, stroke: color },
      };
    })];
    if (!ordered.length) series.push({ label: 'no trials yet', show: true, stroke: 'transparent' });
    const yRange = (u, min, max) => {
      if (min == null || max == null) return log ? [0.1, 10] : [0, 1];
      if (log) return [roundSig(min / 1.1, Math.floor), roundSig(max * 1.1, Math.ceil)]; // round ends: round labels
      if (min === max) { const pad = Math.abs(min) * 0.5 || 1; return [min - pad, max + pad]; } // a constant LR
      const pad = (max - min) * 0.05;
      return [min - pad, max + pad];
    };
    const width = Math.max(240, Math.floor(div.clientWidth || 600));
    const opts = {
      mode: 2,
      title,
      width,
      height: HEIGHT,
      pxAlign: 0,
      legend: { show: false },
      cursor: {
        dataIdx: () => null, // no per-series hover (ours is in the setCursor hook)
        points: { show: false },
        drag: { x: true, y: false, setScale: true },
        focus: { prox: -1 },
      },
      focus: { alpha: 1 },
      scales: {
        x: { time: false, auto: true, range: (u, min, max) => [0, max > 0 ? max : 1] },
        y: { auto: true, distr: log ? 3 : 1, log: 10, range: yRange },
      },
      axes: [
        { label: 'samples seen', labelSize: 24, size: 40, stroke: '#1f2933', grid: { stroke: '#eef0f3', width: 1 }, ticks: { stroke: '#d5d9e0', width: 1 }, values: (u, splits) => splits.map((v) => (v == null ? '' : compact(v))) },
        { label: `${yLabel}${log ? ' (log)' : ''}`, labelSize: 24, size: 56, stroke: '#1f2933', grid: { stroke: '#eef0f3', width: 1 }, ticks: { stroke: '#d5d9e0', width: 1 }, values: (u, splits) => splits.map((v) => (v == null ? '' : yTick(v))) },
      ],
      series,
      hooks: {
        draw: [(u) => { drawStops(u, st); const done = st.onDraw; st.onDraw = null; done?.(); }],
        setCursor: [(u) => onCursor(u, st)],
        setScale: [(u, k) => {
          if (k !== 'x') return;
          const { min, max } = u.scales.x;
          st.zoomed = min > 1e-9 * st.xmax || max < st.xmax * (1 - 1e-9);
          st.zoomX = st.zoomed ? { min, max } : null;
          st.hoverKey = null;
        }],
      },
    };
    const u = new uPlot(opts, data, div);
    st.u = u;
    st.overlay = document.createElement('canvas');
    st.overlay.className = 'curve-hl';
    u.over.append(st.overlay);
    st.tip = document.createElement('div');
    st.tip.className = 'curve-tip';
    st.tip.dataset.testid = 'curve-tip';
    st.tip.setAttribute('role', 'tooltip');
    st.tip.hidden = true;
    st.foot = document.createElement('div');
    st.foot.className = 'curve-foot small muted';
    div.append(st.tip, st.foot);
    let down = null;
    u.over.addEventListener('mousedown', (e) => { down = [e.clientX, e.clientY]; });
    u.over.addEventListener('click', (e) => {
      const moved = down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 3;
      const hit = st.hover;
      if (!moved && st.clickThrough && hit?.series != null) {
        window.location.href = `/trials/${encodeURIComponent(st.meta[hit.series - 1].id)}`;
      }
    });
    u.over.addEventListener('mouseleave', () => { st.tip.hidden = true; st.hoverKey = null; drawHighlight(u, st, null); });
    if (st.zoomed && st.zoomX) u.setScale('x', st.zoomX);
    if (!st.resize) {
      let lastW = width;
      st.resize = new ResizeObserver(() => {
        const w = Math.max(240, Math.floor(div.clientWidth));
        if (st.u && w && Math.abs(w - lastW) > 1) { lastW = w; st.u.setSize({ width: w, height: HEIGHT }); }
      });
      st.resize.observe(div);
    }
  }
  foot(st, ordered);
  const hasPoints = cols.some(([xs]) => xs.length);
  div.classList.toggle('empty', !hasPoints);
  div.dataset.empty = hasPoints ? '' : 'No metrics recorded yet';
  await drawn;
  // Checkable state for the tests and the benchmark: what uPlot was given and drew.
  const n = st.u.series.filter((s, i) => i > 0 && s.label.startsWith('trial ')).length;
  div.dataset.series = String(n);
  div.dataset.stops = String(st.stops.length);
  div.dataset.log = String(log);
  return n;
}

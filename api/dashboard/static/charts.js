// The objective-vs-hyperparameter charts (LR x batch scatter, parallel coordinates) with
// plotly.js, served by the app from the plotly Python package (no CDN). The training curves are
// drawn with uPlot (curves.js); plotly.js (4.8 MB) is loaded only after them, so it never delays
// the curves. Plotly.react redraws cheaply with new data and keeps the user's zoom (uirevision).

let plotlyPromise = null;

const PLOTLY_SRC = '/static/vendor/plotly.min.js';

// plotly.js as a promise; the first call adds its <script>. It executes for a long moment on the
// main thread, so the sweep page calls this once the curves are drawn.
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = PLOTLY_SRC;
      s.async = true;
      s.onload = () => { performance.mark('sweepd:plotly-loaded'); resolve(window.Plotly); };
      s.onerror = () => { plotlyPromise = null; reject(new Error(`could not load ${PLOTLY_SRC}`)); };
      document.head.append(s);
    });
  }
  return plotlyPromise;
}

const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ['select2d', 'lasso2d', 'autoScale2d', 'toggleSpikelines'],
};

function baseLayout(extra = {}) {
  return {
    autosize: true,
    height: 340,
    margin: { l: 60, r: 20, t: 36, b: 48 },
    paper_bgcolor: 'rgba(0,0,0,0)',
    plot_bgcolor: '#ffffff',
    font: { family: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size: 12, color: '#1f2933' },
    hoverlabel: { align: 'left' },
    ...extra,
  };
}

const emptyNote = (text) => ({
  text, showarrow: false, xref: 'paper', yref: 'paper', x: 0.5, y: 0.5, font: { size: 14, color: '#6b7280' },
});

const esc = (s) => String(s ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function onClickTrial(div) {
  if (div.__sweepdClick) return;
  div.__sweepdClick = true;
  div.on('plotly_click', (ev) => {
    const pt = ev?.points?.[0];
    if (!pt) return;
    const id = typeof pt.customdata === 'string' ? pt.customdata : null;
    if (id) window.location.href = `/trials/${encodeURIComponent(id)}`;
  });
}

const tickLabel = (v) => {
  const a = Math.abs(v);
  return a === 0 || (a >= 1e-3 && a < 1e4) ? String(+v.toPrecision(3)) : v.toExponential(0);
};

// ---- objective vs hyperparameters ------------------------------------------------------------

const LABELS = {
  effective_batch_size: 'batch size', learning_rate: 'learning rate', warmup_steps: 'warmup steps',
  lr_scheduler: 'LR schedule', weight_decay: 'weight decay',
};
export const paramLabel = (key) => LABELS[key] || key.replace(/_/g, ' ');

function colorScale(objective) {
  // Best is always the bright end: reverse the scale when lower is better.
  return { colorscale: 'Viridis', reversescale: (objective?.mode || 'min') !== 'max' };
}

export async function renderScatter(div, trials, objective, { revision = 'scatter' } = {}) {
  const Plotly = await loadPlotly();
  const metric = objective?.metric || 'objective';
  const usable = trials.filter((t) => typeof t.config?.learning_rate === 'number' && typeof t.config?.effective_batch_size === 'number');
  const scored = usable.filter((t) => t.objective != null);
  const unscored = usable.filter((t) => t.objective == null);
  const hover = (t) => `trial ${t.number} · ${t.state}<br>learning rate ${t.config.learning_rate.toPrecision(3)}`
    + `<br>batch size ${t.config.effective_batch_size}<br>${esc(metric)} ${t.objective == null ? '—' : (+t.objective.toPrecision(4))}`;
  const data = [
    {
      type: 'scatter', mode: 'markers', name: 'with objective',
      x: scored.map((t) => t.config.learning_rate), y: scored.map((t) => t.config.effective_batch_size),
      customdata: scored.map((t) => t.id), hovertext: scored.map(hover), hoverinfo: 'text',
      marker: {
        size: 12, color: scored.map((t) => t.objective), ...colorScale(objective), showscale: scored.length > 0,
        line: { color: '#334155', width: 0.75 },
        colorbar: { title: { text: metric, side: 'right' }, thickness: 12, len: 0.9 },
      },
    },
    {
      type: 'scatter', mode: 'markers', name: 'no objective (stopped, running, failed)',
      x: unscored.map((t) => t.config.learning_rate), y: unscored.map((t) => t.config.effective_batch_size),
      customdata: unscored.map((t) => t.id), hovertext: unscored.map(hover), hoverinfo: 'text',
      marker: { size: 10, symbol: unscored.map((t) => (t.state === 'stopped' ? 'x-open' : 'circle-open')), color: '#94a3b8', line: { width: 1.5 } },
    },
  ];
  const batchSizes = [...new Set(usable.map((t) => t.config.effective_batch_size))].sort((a, b) => a - b);
  const layout = baseLayout({
    title: { text: `${metric} by learning rate and batch size`, x: 0.02, xanchor: 'left', font: { size: 14 } },
    xaxis: { title: { text: 'learning rate (log)' }, type: 'log', exponentformat: 'power', dtick: 'D2', gridcolor: '#eef0f3' },
    yaxis: { title: { text: 'effective batch size (log)' }, type: 'log', tickvals: batchSizes.length <= 12 ? batchSizes : undefined, gridcolor: '#eef0f3' },
    showlegend: true,
    legend: { orientation: 'h', y: -0.2, font: { size: 11 } },
    margin: { l: 60, r: 20, t: 36, b: 80 },
    height: 370,
    uirevision: revision,
    annotations: usable.length ? [] : [emptyNote('No trials with a learning rate and batch size yet')],
  });
  await Plotly.react(div, data, layout, CONFIG);
  onClickTrial(div);
}

// Hyperparameter keys worth a column / an axis: the spec's searched keys when known, else the
// well-known ones first and then every other scalar config key that varies across trials.
export function hyperKeys(trials, spec) {
  const seen = new Set();
  for (const t of trials) for (const [k, v] of Object.entries(t.config || {})) if (v === null || typeof v !== 'object') seen.add(k);
  const space = spec?.search?.space;
  if (space && typeof space === 'object') {
    const keys = Object.keys(space).filter((k) => seen.has(k));
    if (keys.length) return keys;
  }
  const known = ['effective_batch_size', 'learning_rate', 'warmup_steps', 'lr_scheduler'].filter((k) => seen.has(k));
  const varies = (k) => new Set(trials.map((t) => JSON.stringify(t.config?.[k]))).size > 1;
  const others = [...seen].filter((k) => !known.includes(k) && (trials.length < 2 || varies(k))).sort();
  return [...known, ...others];
}

function dimension(key, values) {
  const present = values.filter((v) => v !== undefined && v !== null);
  const numeric = present.length > 0 && present.every((v) => typeof v === 'number');
  if (numeric) {
    const lo = Math.min(...present);
    const hi = Math.max(...present);
    if (lo > 0 && hi > lo && (key === 'learning_rate' || hi / lo >= 100)) {
      const logs = values.map((v) => (v == null ? null : Math.log10(v)));
      const [a, b] = [Math.log10(lo), Math.log10(hi)];
      let ticks = [];
      for (let e = Math.ceil(a - 1e-9); e <= Math.floor(b + 1e-9); e++) ticks.push(e);
      if (ticks.length < 2) ticks = [a, ...ticks, b].filter((e, i, all) => i === 0 || e - all[i - 1] > 0.15 * (b - a));
      return {
        label: `${paramLabel(key)} (log)`, values: logs, range: [a, b],
        tickvals: ticks, ticktext: ticks.map((e) => (Number.isInteger(e) ? `1e${e}` : tickLabel(10 ** e))),
      };
    }
    return { label: paramLabel(key), values };
  }
  const cats = [...new Set(present.map(String))].sort();
  return {
    label: paramLabel(key),
    values: values.map((v) => (v == null ? null : cats.indexOf(String(v)))),
    tickvals: cats.map((_, i) => i),
    ticktext: cats,
    range: cats.length === 1 ? [-0.5, 0.5] : undefined,
  };
}

export async function renderParcoords(div, trials, objective, keys, { revision = 'parcoords' } = {}) {
  const Plotly = await loadPlotly();
  const metric = objective?.metric || 'objective';
  const scored = trials.filter((t) => t.objective != null);
  const layout = baseLayout({
    title: { text: `Parallel coordinates (${scored.length} trial${scored.length === 1 ? '' : 's'} with ${metric})`, x: 0.02, xanchor: 'left', y: 0.97, yanchor: 'top', font: { size: 14 } },
    margin: { l: 70, r: 60, t: 100, b: 30 },
    height: 370,
    uirevision: revision,
  });
  if (!scored.length || !keys.length) {
    layout.annotations = [emptyNote(scored.length ? 'No hyperparameters to show' : 'No trial has an objective yet')];
    layout.xaxis = { visible: false };
    layout.yaxis = { visible: false };
    await Plotly.react(div, [], layout, CONFIG);
    return;
  }
  const dims = keys.map((k) => dimension(k, scored.map((t) => t.config?.[k])));
  dims.push({ label: metric, values: scored.map((t) => t.objective) });
  const data = [{
    type: 'parcoords',
    dimensions: dims,
    // Coloured by the objective, which is also the last axis (so no colour bar).
    line: { color: scored.map((t) => t.objective), ...colorScale(objective), showscale: false },
    labelfont: { size: 12 },
    tickfont: { size: 11 },
  }];
  await Plotly.react(div, data, layout, CONFIG);
}

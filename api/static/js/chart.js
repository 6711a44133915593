// Line charts on uPlot (vendored, loaded as the global `uPlot` by index.html).
// The chart's container keeps `data-points`: how many points the chart has drawn, summed
// over its series (the browser test reads it; people can too, in the inspector).

export const PALETTE = ["#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#e67700", "#495057"];

function finite(v) {
  return v === null || v === undefined || !Number.isFinite(v) ? null : v;
}

const MARKER_EDGE = "#1d2530";

/** Upward triangles at the markers' (x, y), each filled with its color, on the plot's area. */
function drawMarkers(u, markers) {
  if (!markers.length) return;
  const r = 6 * uPlot.pxRatio;
  const {left, top, width, height} = u.bbox;
  const ctx = u.ctx;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.lineWidth = uPlot.pxRatio;
  ctx.strokeStyle = MARKER_EDGE;
  for (const {x, y, color} of markers) {
    const cx = u.valToPos(x, "x", true);
    const cy = u.valToPos(y, "y", true);
    ctx.beginPath();
    ctx.moveTo(cx, cy - r);
    ctx.lineTo(cx + r, cy + 0.8 * r);
    ctx.lineTo(cx - r, cy + 0.8 * r);
    ctx.closePath();
    ctx.fillStyle = color || MARKER_EDGE;
    ctx.fill();
    ctx.stroke();
  }
  ctx.restore();
}

export class LineChart {
  /**
   * @param {HTMLElement} container
   * @param {{series: {label: string, color?: string}[], xLabel?: string, yLabel?: string,
   *          height?: number, yFormat?: (v: number) => string, xFormat?: (v: number) => string,
   *          xLog?: boolean, xTicks?: number[], scatter?: boolean, markers?: string}} options
   * xLog: a log10 x axis (xs > 0). xTicks: the only x ticks (ascending; categories' indexes),
   * half a step of room each side. scatter: points only, no lines between them. markers: the
   * legend's label for the triangles setData's third argument draws (several may share an
   * x, which one series' points could not).
   */
  constructor(container, {series, xLabel = "step", yLabel = "", height = 300, yFormat, xFormat,
                          xLog = false, xTicks = null, scatter = false, markers = null} = {}) {
    this.container = container;
    this.height = height;
    this.xs = [];
    this.ys = series.map(() => []);
    this.drawn = 0;
    this.markers = [];
    this.hasMarkers = Boolean(markers);
    container.dataset.points = "0";
    container.dataset.markers = "0";
    const opts = {
      width: Math.max(container.clientWidth, 300),
      height,
      scales: {x: xLog ? {time: false, distr: 3, log: 10}
        : xTicks?.length ? {time: false, range: () => [xTicks[0] - 0.5, xTicks[xTicks.length - 1] + 0.5]}
          : {time: false}},
      axes: [
        {label: xLabel, stroke: "#5f6b7a", grid: {stroke: "#eef1f4"},
         splits: xTicks?.length ? () => xTicks : undefined,
         // uPlot passes null for a tick it leaves unlabelled (a log axis' minor ones).
         values: xFormat ? (u, vals) => vals.map((v) => (v === null ? null : xFormat(v))) : undefined},
        {label: yLabel, stroke: "#5f6b7a", grid: {stroke: "#eef1f4"}, size: 60,
         values: yFormat ? (u, vals) => vals.map(yFormat) : undefined},
      ],
      series: [
        {label: xLabel},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color || PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true,
          value: (u, v) => (v === null || v === undefined ? "—" : v.toFixed(4)),
          ...(scatter ? {paths: () => null, points: {show: true, size: 9}} : {}),
        })),
        // The markers' legend entry: a series of no points; hooks.draw paints the triangles.
        ...(markers ? [{label: markers, stroke: MARKER_EDGE, fill: MARKER_EDGE, paths: () => null,
                        points: {show: false}, value: () => String(this.markers.length)}] : []),
      ],
      legend: {live: true},
      cursor: {drag: {x: true, y: false}},
      hooks: {draw: [(u) => drawMarkers(u, this.markers)]},
    };
    this.plot = new uPlot(opts, this.plotData(), container);
    if (markers) this.plot.root.querySelector(".u-legend .u-series:last-child")?.classList.add("marker");
    this.resize = new ResizeObserver(() => {
      const width = Math.max(container.clientWidth, 300);
      if (width !== this.plot.width) this.plot.setSize({width, height: this.height});
    });
    this.resize.observe(container);
  }

  /**
   * Replaces every series: xs ascending, ys[i] aligned with xs (null = no point); and, on a
   * chart made with `markers`, its triangles: [{x, y, color}] (kept when left out).
   */
  setData(xs, ys, markers = this.markers) {
    this.xs = xs;
    this.ys = ys;
    this.markers = markers.filter((m) => finite(m.x) !== null && finite(m.y) !== null);
    this.redraw();
  }

  plotData() {
    return [this.xs, ...this.ys, ...(this.hasMarkers ? [this.xs.map(() => null)] : [])];
  }

  redraw() {
    this.plot.setData(this.plotData());
    let drawn = 0;
    for (const ys of this.ys) for (const y of ys) if (y !== null && y !== undefined) drawn++;
    this.drawn = drawn;
    this.container.dataset.points = String(drawn);
    this.container.dataset.markers = String(this.markers.length);
  }

  destroy() {
    this.resize.disconnect();
    this.plot.destroy();
  }
}

/**
 * One series that grows point by point (a job's live loss): points keyed by x, kept sorted,
 * redrawn at most once per animation frame however fast they arrive.
 */
export class LiveSeries {
  constructor(chart) {
    this.chart = chart;
    this.byX = new Map();
    this.xs = [];
    this.ys = [];
    this.pending = false;
  }

  get size() {
    return this.xs.length;
  }

  add(x, y) {
    y = finite(y);
    if (this.byX.has(x)) {
      const i = this.xs.indexOf(x); // a repeated point (a resumed job): keep the newest value
      this.ys[i] = y;
    } else if (!this.xs.length || x > this.xs[this.xs.length - 1]) {
      this.xs.push(x);
      this.ys.push(y);
    } else {
      let i = this.xs.findIndex((v) => v > x);
      this.xs.splice(i, 0, x);
      this.ys.splice(i, 0, y);
    }
    this.byX.set(x, y);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      // uPlot keeps the arrays it is given: hand it copies so later pushes do not race it.
      this.chart.setData(this.xs.slice(), [this.ys.slice()]);
    });
  }
}

/** Aligns several [xs, ys] tables on one ascending x axis (nulls where a series has no point). */
export function alignSeries(tables) {
  if (!tables.length) return [[]];
  return uPlot.join(tables.map(([xs, ys]) => [xs, ys]));
}

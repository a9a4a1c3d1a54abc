// Time-series charts on uPlot (vendored, global `uPlot`): axes, a legend with live values,
// a min–max band around the mean, an anomaly-score axis and alert periods shaded underneath.

export const PALETTE = ["#1b5bbf", "#c2410c", "#0f766e", "#7c3aed", "#b91c1c", "#4d7c0f",
  "#be185d", "#0369a1", "#a16207", "#475569", "#15803d", "#9333ea"];
const AXIS = { stroke: "#4a5567", grid: { stroke: "#e6e9ef", width: 1 }, ticks: { stroke: "#d6dce6", width: 1 },
  font: "12px system-ui, sans-serif", labelFont: "600 12px system-ui, sans-serif" };

// the y axis as wide as its longest tick label (plus the axis label), so labels never overlap
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
  }
  return Math.ceil(size) + 12;
}

function alertBands(getAlerts) {
  return {
    hooks: {
      drawClear: [(u) => {
        const alerts = getAlerts();
        if (!alerts || !alerts.length) return;
        const { left, top, width, height } = u.bbox;
        const ctx = u.ctx;
        const px = Math.max(1, Math.round(2 * (window.devicePixelRatio || 1)));
        ctx.save();
        for (const a of alerts) {
          const end = a.resolved_at ?? u.scales.x.max;
          let x0 = u.valToPos(a.fired_at, "x", true);
          let x1 = u.valToPos(end, "x", true);
          if (x1 < left || x0 > left + width) continue;
          x0 = Math.max(left, x0);
          x1 = Math.min(left + width, x1);
          const crit = a.severity === "critical";
          ctx.fillStyle = crit ? "rgba(176, 36, 27, 0.11)" : "rgba(196, 120, 0, 0.13)";
          ctx.fillRect(x0, top, Math.max(px, x1 - x0), height);
          ctx.fillStyle = crit ? "#b0241b" : "#a15c00";
          ctx.fillRect(x0, top, px, height);
        }
        ctx.restore();
      }],
    },
  };
}

// series: [{label, color, band: "min"|"max"|undefined, scale, dash, width}]; data: [x, ...ys]
export function timeChart(container, { series, data, height = 220, yLabel, scoreAxis = false,
  alerts = () => [], onDraw = null, xTime = true, xRange = null, width = null }) {
  const bands = [];
  const idx = (role) => series.findIndex((s) => s.role === role) + 1;
  if (idx("max") > 0 && idx("min") > 0) bands.push({ series: [idx("max"), idx("min")], fill: "rgba(27, 91, 191, 0.10)" });
  const opts = {
    width: Math.max(200, width || container.clientWidth || 600),
    height,
    class: "chart-plot",
    series: [
      { label: xTime ? "Time" : "x" },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: s.width ?? 1.6,
        scale: s.scale || "y",
        dash: s.dash,
        fill: s.fill,
        spanGaps: false,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? "—" : fmt(v)),
      })),
    ],
    axes: [
      { ...AXIS },
      { ...AXIS, scale: "y", label: yLabel, size: axisSize, labelSize: 18 },
      ...(scoreAxis ? [{ ...AXIS, scale: "score", side: 1, label: "anomaly score", size: axisSize, labelSize: 18,
        grid: { show: false }, stroke: "#9a3412", values: (u, vals) => vals.map((v) => v.toFixed(1)) }] : []),
    ],
    scales: { x: { time: xTime, ...(xRange ? { range: () => xRange() } : {}) }, ...(scoreAxis ? { score: { range: [0, 1] } } : {}) },
    bands,
    legend: { live: true },
    cursor: { drag: { x: true, y: false }, focus: { prox: 24 } },
    plugins: [alertBands(alerts)],
    hooks: { draw: [(u) => { if (onDraw) onDraw(u); }] },
  };
  const u = new window.uPlot(opts, data, container);
  let frame = 0;
  const ro = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      const w = Math.max(200, container.clientWidth);
      if (Math.abs(w - u.width) > 2) u.setSize({ width: w, height });
    });
  });
  ro.observe(container);
  return {
    u,
    setData(d) { u.setData(d); },
    destroy() { ro.disconnect(); cancelAnimationFrame(frame); u.destroy(); },
  };
}

function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

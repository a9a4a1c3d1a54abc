// One device: last values (live), a chart per field — mean with a min–max band, the anomaly
// score on its own axis, alert periods shaded — over a chosen range and resolution. The server
// downsamples to the charts' pixel width (/api/v1/dashboard/devices/{id}/charts?width=...).

import { api } from "../api.js";
import { PALETTE, timeChart } from "../charts.js";
import { append, clear, fmtAgo, fmtNum, fmtTime, h, labelled, panel, select, serverNow, severityBadge, statusBadge, syncClock } from "../util.js";

export const stream = { device: true }; // app.js: the stream carries this device's newest values; opened by ctx.live()

const RANGES = [["15m", "Last 15 minutes"], ["1h", "Last hour"], ["6h", "Last 6 hours"], ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"], ["30d", "Last 30 days"]];
const MAX_ALERT_ROWS = 50;
const RESOLUTIONS = [["auto", "Auto (rollup when it fits)"], ["raw", "Raw points"], ["1m", "1-minute rollup"],
  ["1h", "1-hour rollup"], ["1d", "1-day rollup"]];

export function mount(root, ctx) {
  const id = ctx.arg;
  ctx.setTitle(id, [h("a", { href: "#/devices" }, "Devices"), " / "]);
  const range = select(RANGES, ctx.params.get("range") || "1h");
  const res = select(RESOLUTIONS, ctx.params.get("res") || "auto");
  const liveBox = h("input", { type: "checkbox", checked: ctx.params.get("live") !== "0" });
  const info = h("div", { class: "source", id: "device-info" });
  const lastVals = h("div", { class: "lastvals", id: "last-values", "aria-live": "off" });
  const source = h("p", { class: "source", id: "chart-source", role: "status" }, "Loading…");
  const grid = h("div", { class: "grid charts", id: "charts" });
  const alertsBody = h("div", { class: "body flush" });
  root.append(
    info,
    lastVals,
    h("form", { class: "toolbar", style: "margin-top:16px", onsubmit: (e) => e.preventDefault() },
      labelled("Time range", range), labelled("Resolution", res),
      h("label", { class: "check" }, liveBox, "Live")),
    source,
    grid,
    panel("Alerts on this device in the range", alertsBody),
  );

  const charts = new Map(); // "measurement/field" -> {chart, box, card}
  let state = null; // last response
  let lastFetch = 0;
  let inflight = null;
  let stopped = false;
  let measured = false;

  function widthHint() {
    const w = grid.clientWidth || root.clientWidth || 800;
    const cols = Math.max(1, Math.floor((w + 16) / (420 + 16)));
    return Math.max(120, Math.min(4096, Math.floor((w - 16 * (cols - 1)) / cols) - 120));
  }

  function showDevice(d) {
    if (!d) return;
    clear(info).append(statusBadge(d.status), " ",
      [d.location, d.room, d.sensor_type].filter(Boolean).join(" · ") || "no location tags",
      ` · last seen ${fmtAgo(serverNow() - d.last_seen)}`);
    clear(lastVals);
    for (const [k, v] of Object.entries(d.fields || {})) {
      lastVals.append(h("div", { class: "lastval", "data-field": k }, h("div", { class: "k" }, k), h("div", { class: "v" }, fmtNum(v))));
    }
  }

  function seriesData(m, f) {
    const data = [m.time, f.mean, f.min, f.max];
    if (f.score) data.push(f.score);
    return data;
  }

  function alertsFor(m, f) {
    return () => (state ? state.alerts.filter((a) => (!a.measurement || a.measurement === m.measurement) && (!a.field || a.field === f.field)) : []);
  }

  function build(resp) {
    for (const c of charts.values()) c.chart.destroy();
    charts.clear();
    clear(grid);
    // every card first, in one insertion, then the charts: one layout, not one per chart
    const cards = [];
    for (const m of resp.measurements) {
      for (const f of m.fields) {
        const box = h("div", { class: "chart", "data-chart": `${m.measurement}/${f.field}` });
        const meta = h("span", { class: "meta" });
        cards.push({ m, f, box, meta, card: h("section", { class: "panel chart-card", "aria-label": `${f.field} chart` },
          h("header", {}, h("h3", {}, f.field, " ", h("span", { class: "meta" }, m.measurement)), meta),
          h("div", { class: "body" }, box)) });
      }
    }
    if (!cards.length) {
      grid.append(h("p", { class: "empty" }, "No numeric field to chart in this range."));
      return Promise.resolve();
    }
    grid.append(...cards.map((c) => c.card));
    const width = cards[0].box.clientWidth; // every chart is as wide as the first
    const pending = cards.map(({ m, f, box, meta }, i) => new Promise((drawn) => {
      const series = [
        { label: "mean", color: PALETTE[i % PALETTE.length], width: 1.8 },
        { label: "min", role: "min", color: "rgba(74, 85, 103, 0.45)", width: 1 },
        { label: "max", role: "max", color: "rgba(74, 85, 103, 0.45)", width: 1 },
      ];
      if (f.score) series.push({ label: "anomaly score", scale: "score", color: "rgba(194, 65, 12, 0.55)", width: 1, fill: "rgba(194, 65, 12, 0.10)" });
      const chart = timeChart(box, {
        series, data: seriesData(m, f), height: 210, yLabel: f.field, scoreAxis: !!f.score,
        alerts: alertsFor(m, f), xRange: () => [state.start, state.end], onDraw: () => drawn(), width,
      });
      charts.set(`${m.measurement}/${f.field}`, { chart, box, meta, hasScore: !!f.score });
    }));
    return Promise.all(pending);
  }

  function annotate(resp) {
    const parts = resp.measurements.map((m) => `${m.source} (${m.interval} buckets, ${m.points} points a series)`);
    source.textContent = `Read from ${parts.join("; ") || "nothing"}, at most one point per pixel (${resp.width} px) · mean with a min–max band; anomaly score (0–1) on the right axis; alert periods shaded.`;
    const notes = resp.measurements.map((m) => m.note).filter(Boolean);
    if (notes.length) source.textContent += ` Note: ${notes.join("; ")}.`;
    for (const m of resp.measurements) {
      for (const f of m.fields) {
        const c = charts.get(`${m.measurement}/${f.field}`);
        if (!c) continue;
        const n = f.mean.filter((v) => v !== null).length;
        c.box.dataset.points = String(n);
        c.box.dataset.last = String(m.time.length ? m.time[m.time.length - 1] : 0);
        const maxScore = f.score ? Math.max(0, ...f.score.filter((v) => v !== null)) : null;
        const nAlerts = alertsFor(m, f)().length;
        append(clear(c.meta), [
          maxScore !== null ? h("span", { class: `badge ${maxScore >= 0.6 ? "warning" : "info"}`, title: "highest anomaly score in the range" }, `score ≤ ${maxScore.toFixed(2)}`) : null,
          nAlerts ? h("span", { class: "badge critical", style: "margin-left:6px" }, `${nAlerts} alert${nAlerts > 1 ? "s" : ""}`) : null]);
      }
    }
    clear(alertsBody);
    if (!resp.alerts.length) { alertsBody.append(h("p", { class: "empty" }, "No alert in this range.")); return; }
    const shown = resp.alerts.slice(0, MAX_ALERT_ROWS);
    alertsBody.append(h("div", { class: "table-wrap" }, h("table", {},
      resp.alerts.length > shown.length ? h("caption", {}, `The ${shown.length} most recent of ${resp.alerts.length} alerts; all are shaded on the charts. `,
        h("a", { href: `#/alerts?series=${encodeURIComponent(id)}` }, "All alerts of this device")) : null,
      h("thead", {}, h("tr", {}, ["Severity", "Rule", "Field", "State", "Fired", "Resolved"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, shown.map((a) => h("tr", {},
        h("td", {}, severityBadge(a.severity)), h("td", {}, a.rule, h("span", { class: "sub" }, a.message || "")),
        h("td", {}, a.field || "—"), h("td", {}, a.acknowledged ? "acknowledged" : a.state),
        h("td", {}, fmtTime(a.fired_at)), h("td", {}, a.resolved_at ? fmtTime(a.resolved_at) : "—")))))));
  }

  function sameShape(resp) {
    let n = 0;
    for (const m of resp.measurements) {
      for (const f of m.fields) {
        const c = charts.get(`${m.measurement}/${f.field}`);
        if (!c || c.hasScore !== !!f.score) return false;
        n++;
      }
    }
    return n === charts.size && n > 0;
  }

  async function load() {
    if (inflight) return inflight;
    lastFetch = Date.now();
    inflight = (async () => {
      try {
        const resp = await api(`/api/v1/dashboard/devices/${encodeURIComponent(id)}/charts`, {
          params: { start: `now-${range.value}`, width: widthHint(), resolution: res.value } });
        if (stopped) return;
        syncClock(resp.now);
        state = resp;
        if (sameShape(resp)) {
          for (const m of resp.measurements) for (const f of m.fields) charts.get(`${m.measurement}/${f.field}`).chart.setData(seriesData(m, f));
        } else {
          const dataAt = performance.now();
          const drawn = build(resp);
          if (!measured) {
            measured = true;
            drawn.then(() => {
              const end = performance.now();
              performance.mark("sensorium:charts-drawn");
              performance.measure("sensorium:device-render", { start: ctx.routeStart, end });
              performance.measure("sensorium:device-data", { start: ctx.routeStart, end: dataAt });
              performance.measure("sensorium:device-draw", { start: dataAt, end });
              root.dataset.renderMs = String(Math.round(end - ctx.routeStart));
              ctx.live();
            });
          }
        }
        annotate(resp);
      } catch (err) {
        if (stopped) return;
        ctx.live(); // the overview numbers and the live indicator still come
        source.textContent = "";
        clear(grid).append(h("p", { class: "error-box", role: "alert" },
          err.status === 404 ? `No device “${id}”: no series has that device_id.` : `Could not load the charts: ${err.message}`));
      } finally {
        inflight = null;
      }
    })();
    return inflight;
  }

  function refreshMs() {
    const m = state && state.measurements[0];
    return m ? Math.min(60000, Math.max(2000, m.interval_ns / 1e6)) : 2000;
  }

  function changed() {
    ctx.setParams({ range: range.value, res: res.value, ...(liveBox.checked ? {} : { live: "0" }) });
    load();
  }
  range.addEventListener("change", changed);
  res.addEventListener("change", changed);
  liveBox.addEventListener("change", changed);
  ctx.on("device", (d) => {
    showDevice(d);
    if (liveBox.checked && Date.now() - lastFetch >= refreshMs()) load();
  });
  load(); // the device's tags and last values come with the first event of the stream
  return () => { stopped = true; for (const c of charts.values()) c.chart.destroy(); };
}

// Query: an SQL editor over /api/v1/query, the results as a table, an instant chart when the
// result has a time column, and a CSV download of the same query.

import { api, url, withToken } from "../api.js";
import { timeChart } from "../charts.js";
import { clear, fmtNum, h, labelled, panel, select } from "../util.js";

const SQL_KEY = "sensorium.sql";
const SHOW_ROWS = 500;
const MAX_SERIES = 12;
const EXAMPLES = [
  ["", "Examples…"],
  ["SELECT time_bucket(INTERVAL '10 seconds', time) AS time, avg(temperature) AS temperature, avg(humidity) AS humidity\nFROM climate\nWHERE time > (SELECT max(time) FROM climate) - INTERVAL '15 minutes'\nGROUP BY 1 ORDER BY 1", "Climate, 10 s averages"],
  ["SELECT time_bucket(INTERVAL '1 minute', time) AS time, device_id, avg(power) AS power\nFROM energy\nGROUP BY ALL ORDER BY 1", "Power per device (one series each)"],
  ["SELECT device_id, location, room, count(*) AS points, max(time) AS last_seen\nFROM climate\nGROUP BY ALL ORDER BY device_id", "Points per climate device"],
  ["SELECT time, device_id, field, value, score\nFROM anomaly_scores\nWHERE score >= 0.35\nORDER BY time DESC LIMIT 50", "Highest anomaly scores"],
  ["SELECT time, device_id, field, count, mean, min, max, p95\nFROM climate_1m\nWHERE field = 'temperature'\nORDER BY time DESC LIMIT 100", "1-minute temperature rollup"],
];
const DEFAULT_SQL = EXAMPLES[1][0];

function isTime(type) { return /^(timestamp|date)/.test(type); }
function isNumber(type) { return /^(double|float|int|uint|decimal|halffloat|bool)/.test(type); }
function isText(type) { return /^(string|large_string|dictionary)/.test(type); }

// rows → uPlot data: x = first time column; y = numeric columns, or one series per value of a
// text column when there is exactly one numeric column (e.g. per device_id).
export function chartData(res) {
  const ti = res.types.findIndex(isTime);
  if (ti < 0) return null;
  const nums = res.types.map((t, i) => (i !== ti && isNumber(t) ? i : -1)).filter((i) => i >= 0);
  if (!nums.length) return null;
  const texts = res.types.map((t, i) => (isText(t) ? i : -1)).filter((i) => i >= 0);
  const rows = res.rows.filter((r) => r[ti] !== null).map((r) => [Date.parse(r[ti]) / 1000, r]).sort((a, b) => a[0] - b[0]);
  const num = (v) => (v === null || v === undefined ? null : typeof v === "boolean" ? Number(v) : Number(v));
  if (nums.length === 1 && texts.length >= 1) {
    const gi = texts[0];
    const keys = [...new Set(rows.map(([, r]) => String(r[gi])))].slice(0, MAX_SERIES);
    const xs = [...new Set(rows.map(([t]) => t))];
    const at = new Map(xs.map((x, i) => [x, i]));
    const ys = keys.map(() => new Array(xs.length).fill(null));
    const ki = new Map(keys.map((k, i) => [k, i]));
    for (const [t, r] of rows) {
      const k = ki.get(String(r[gi]));
      if (k !== undefined) ys[k][at.get(t)] = num(r[nums[0]]);
    }
    return { labels: keys.map((k) => `${res.columns[nums[0]]} · ${k}`), data: [xs, ...ys], yLabel: res.columns[nums[0]] };
  }
  const cols = nums.slice(0, MAX_SERIES);
  return { labels: cols.map((i) => res.columns[i]), data: [rows.map(([t]) => t), ...cols.map((i) => rows.map(([, r]) => num(r[i])))],
    yLabel: cols.length === 1 ? res.columns[cols[0]] : "" };
}

export function mount(root, ctx) {
  ctx.setTitle("Query");
  let initial = ctx.params.get("sql");
  if (!initial) { try { initial = localStorage.getItem(SQL_KEY); } catch { initial = null; } }
  const editor = h("textarea", { rows: 7, spellcheck: "false", id: "sql" });
  editor.value = initial || DEFAULT_SQL;
  const examples = select(EXAMPLES, "");
  const run = h("button", { type: "submit", class: "primary", id: "run" }, "Run query");
  const csv = h("a", { class: "button", id: "csv", download: "query.csv", href: "#", "aria-disabled": "true" }, "Download CSV");
  const status = h("p", { role: "status", "aria-live": "polite", class: "muted", id: "query-status", style: "margin:0" }, "Ctrl+Enter runs the query.");
  const errorBox = h("div", { role: "alert" });
  const chartBox = h("div", { class: "chart", id: "query-chart" });
  const chartPanel = panel("Chart", h("div", { class: "body" }, chartBox), h("span", { class: "muted", style: "font-size:13px" }, "x: the first time column"));
  chartPanel.hidden = true;
  const results = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Run a query to see its results."));
  const tables = h("div", { class: "tables-list", id: "tables-list" }, h("p", { class: "muted" }, "Loading…"));
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); go(); } },
    labelled("SQL (read-only SELECT; DuckDB dialect)", editor),
    h("div", { class: "actions" }, run, csv, labelled("Examples", examples), status));
  root.append(
    h("div", { class: "query-layout" },
      h("section", { class: "panel", "aria-label": "SQL editor" }, h("div", { class: "body" }, form, errorBox)),
      panel("Tables", h("div", { class: "body" }, tables))),
    chartPanel,
    panel("Results", results),
  );
  let chart = null;
  let stopped = false;

  function setCsv(sql) {
    csv.href = withToken(url("/api/v1/query", { sql, format: "csv" }));
    csv.removeAttribute("aria-disabled");
  }

  async function go() {
    const sql = editor.value.trim();
    if (!sql) return;
    try { localStorage.setItem(SQL_KEY, sql); } catch { /* ignore */ }
    run.disabled = true;
    clear(errorBox);
    status.textContent = "Running…";
    const t0 = performance.now();
    try {
      const res = await api("/api/v1/query", { method: "POST", body: { sql } });
      if (stopped) return;
      const ms = performance.now() - t0;
      status.textContent = `${fmtNum(res.rows.length)} rows · ${res.columns.length} columns · ${ms.toFixed(0)} ms`;
      setCsv(sql);
      showTable(res);
      showChart(res);
    } catch (err) {
      if (stopped) return;
      status.textContent = "The query failed.";
      errorBox.append(h("p", { class: "error-box" }, err.message));
    } finally {
      run.disabled = false;
    }
  }

  function showTable(res) {
    clear(results);
    if (!res.rows.length) { results.append(h("p", { class: "empty" }, "The query returned no rows.")); return; }
    const shown = res.rows.slice(0, SHOW_ROWS);
    const numeric = res.types.map(isNumber);
    results.append(h("div", { class: "table-wrap", style: "max-height:520px" }, h("table", { id: "results-table" },
      h("caption", {}, res.rows.length > SHOW_ROWS ? `First ${SHOW_ROWS} of ${fmtNum(res.rows.length)} rows (the CSV has them all).` : `${fmtNum(res.rows.length)} rows.`),
      h("thead", {}, h("tr", {}, res.columns.map((c, i) => h("th", { scope: "col", class: numeric[i] ? "num" : null, title: res.types[i] }, c)))),
      h("tbody", {}, shown.map((r) => h("tr", {}, r.map((v, i) => h("td", { class: numeric[i] ? "num" : null },
        v === null ? h("span", { class: "muted" }, "null") : typeof v === "number" ? fmtNum(v, 4) : typeof v === "object" ? JSON.stringify(v) : String(v)))))))));
  }

  function showChart(res) {
    if (chart) { chart.destroy(); chart = null; }
    clear(chartBox);
    const cd = chartData(res);
    chartPanel.hidden = !cd;
    if (!cd) return;
    chart = timeChart(chartBox, { height: 260, yLabel: cd.yLabel, data: cd.data,
      series: cd.labels.map((label) => ({ label })) });
  }

  examples.addEventListener("change", () => {
    if (!examples.value) return;
    editor.value = examples.value;
    examples.value = "";
    editor.focus();
  });
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); go(); }
  });
  api("/api/v1/measurements").then((r) => {
    if (stopped) return;
    clear(tables);
    if (!r.measurements.length) { tables.append(h("p", { class: "muted" }, "No measurement yet.")); return; }
    for (const m of r.measurements) {
      const cols = Object.entries(m.columns).map(([c, k]) => `${c} (${k})`).join(", ");
      tables.append(h("button", { type: "button", title: cols, onclick: () => {
        editor.value = `SELECT *\nFROM ${m.name}\nORDER BY time DESC\nLIMIT 100`;
        editor.focus();
      } }, m.name));
    }
    tables.append(h("p", { class: "muted", style: "margin:8px 0 0" }, "Stream tables: <measurement>_1m, _1h, _1d (rollups), anomaly_scores, quality_findings, late_data."));
  }).catch((err) => { clear(tables).append(h("p", { class: "muted" }, `Could not list tables: ${err.message}`)); });
  if (ctx.params.get("run") === "1") go();
  return () => { stopped = true; if (chart) chart.destroy(); };
}

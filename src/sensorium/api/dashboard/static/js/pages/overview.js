// Overview: ingest rate, devices online/offline, alerts firing, data quality, storage used —
// live from the dashboard's event stream — with the ingest chart, firing alerts and top issues.

import { api } from "../api.js";
import { timeChart } from "../charts.js";
import { clear, fmtAgo, fmtBytes, fmtNum, fmtPct, fmtRate, h, panel, serverNow, severityBadge } from "../util.js";

function kpi(key, label) {
  const value = h("div", { class: "value", "data-kpi": key }, "—");
  const sub = h("div", { class: "sub", "data-kpi-sub": key }, "\u00a0");
  return { el: h("section", { class: "panel kpi", "aria-label": label }, h("div", { class: "label" }, label), value, sub), value, sub };
}

export function mount(root, ctx) {
  ctx.setTitle("Overview");
  const k = {
    rate: kpi("ingest-rate", "Ingest rate"),
    devices: kpi("devices-online", "Devices online"),
    alerts: kpi("alerts-firing", "Alerts firing"),
    quality: kpi("quality-rate", "Data quality"),
    storage: kpi("storage", "Storage used"),
  };
  const chartBox = h("div", { class: "chart", id: "ingest-chart" });
  const alertsBody = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  const issuesBody = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  root.append(
    h("div", { class: "grid kpis" }, Object.values(k).map((x) => x.el)),
    panel("Ingest rate (points/s)", h("div", { class: "body" }, chartBox),
      h("span", { class: "muted", style: "font-size:13px" }, "sampled every 2 s while a dashboard is open")),
    h("div", { class: "grid two", style: "margin-top:16px" },
      panel("Firing alerts", alertsBody, h("a", { href: "#/alerts" }, "All alerts")),
      panel("Top data-quality issues", issuesBody, h("a", { href: "#/quality" }, "Data quality"))),
  );

  let chart = null;
  let lastFiring = null;
  let lastQuality = 0;
  let stopped = false;

  function drawRate(ov) {
    const hist = ov.ingest.history || [];
    const data = [hist.map((p) => p[0]), hist.map((p) => p[1])];
    if (!chart) {
      chart = timeChart(chartBox, { height: 200, yLabel: "points/s",
        series: [{ label: "points/s", color: "#1b5bbf", fill: "rgba(27, 91, 191, 0.08)" }], data });
    } else {
      chart.setData(data);
    }
  }

  async function loadAlerts() {
    try {
      const res = await api("/api/v1/alerts", { params: { state: "firing", limit: 6 } });
      if (stopped) return;
      clear(alertsBody);
      if (!res.alerts.length) { alertsBody.append(h("p", { class: "empty" }, "No alert is firing.")); return; }
      alertsBody.append(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Severity"), h("th", { scope: "col" }, "Alert"), h("th", { scope: "col", class: "hide-narrow" }, "Since"))),
        h("tbody", {}, res.alerts.map((a) => h("tr", {},
          h("td", {}, severityBadge(a.severity)),
          h("td", {}, h("b", {}, a.rule), h("span", { class: "sub" }, a.message || a.series)),
          h("td", { class: "hide-narrow" }, fmtAgo(serverNow() - a.fired_at_ns / 1e9))))))));
    } catch (err) {
      clear(alertsBody).append(h("p", { class: "empty" }, err.status === 404 ? "The stream processor is off: no alerts." : `Could not load alerts: ${err.message}`));
    }
  }

  async function loadIssues() {
    try {
      const q = await api("/api/v1/quality", { params: { top: 5 } });
      if (stopped) return;
      clear(issuesBody);
      const f = q.findings;
      const rows = q.top_issues.map((i) => h("tr", {},
        h("td", {}, h("code", {}, i.rule), i.example ? h("span", { class: "sub" }, i.example) : null),
        h("td", { class: "num" }, fmtNum(i.count)), h("td", { class: "num" }, fmtNum(i.rejected))));
      if (!rows.length && !(f && f.total)) { issuesBody.append(h("p", { class: "empty" }, "No data-quality issue so far.")); return; }
      if (rows.length) {
        issuesBody.append(h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Rule"), h("th", { scope: "col", class: "num" }, "Rows"), h("th", { scope: "col", class: "num" }, "Rejected"))),
          h("tbody", {}, rows))));
      }
      if (f && f.total) {
        issuesBody.append(h("p", { class: "muted", style: "padding:10px 16px;margin:0" },
          `Stream findings: ${Object.entries(f.by_check).map(([c, v]) => `${c} ${v.count}`).join(" · ")}`));
      }
    } catch (err) {
      clear(issuesBody).append(h("p", { class: "empty" }, `Could not load the quality report: ${err.message}`));
    }
  }

  ctx.on("overview", (ov) => {
    const rate = ov.ingest.rate;
    k.rate.value.textContent = fmtRate(rate);
    k.rate.value.append(h("small", {}, " /s"));
    k.rate.sub.textContent = `${fmtNum(ov.ingest.points_total)} points accepted`;
    const d = ov.devices;
    k.devices.value.textContent = `${fmtNum(d.online)}`;
    k.devices.value.append(h("small", {}, ` / ${fmtNum(d.total)}`));
    k.devices.sub.textContent = `${fmtNum(d.offline)} offline (no data for ${Math.round(d.offline_after_s / 60)} min)`;
    if (ov.alerts) {
      k.alerts.value.textContent = fmtNum(ov.alerts.firing);
      const sev = Object.entries(ov.alerts.by_severity || {}).map(([s, n]) => `${n} ${s}`).join(", ");
      k.alerts.sub.textContent = `${fmtNum(ov.alerts.unacknowledged)} unacknowledged${sev ? " · " + sev : ""}`;
    } else {
      k.alerts.value.textContent = "—";
      k.alerts.sub.textContent = "stream processor off";
    }
    k.quality.value.textContent = fmtPct(ov.quality.valid_rate);
    k.quality.sub.textContent = `${fmtNum(ov.quality.rejected)} rejected · ${fmtNum(ov.quality.duplicates)} duplicates`;
    k.storage.value.textContent = fmtBytes(ov.storage.bytes);
    k.storage.sub.textContent = `lake ${fmtBytes(ov.storage.lake_bytes)} · log ${fmtBytes(ov.storage.wal_bytes)} · ${fmtNum(ov.storage.hot_rows)} rows in memory`;
    drawRate(ov);
    const firing = ov.alerts ? `${ov.alerts.firing}/${ov.alerts.total}/${ov.alerts.acknowledged}` : "";
    if (firing !== lastFiring) { lastFiring = firing; loadAlerts(); }
    if (Date.now() - lastQuality > 10000) { lastQuality = Date.now(); loadIssues(); }
  });
  loadAlerts();
  loadIssues();
  lastQuality = Date.now();
  return () => { stopped = true; if (chart) chart.destroy(); };
}

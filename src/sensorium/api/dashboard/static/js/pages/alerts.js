// Alerts: filter, acknowledge, live over server-sent events (the page's stream relays alert changes).

import { api } from "../api.js";
import { clear, debounce, fmtAgo, fmtNum, h, labelled, select, serverNow, severityBadge } from "../util.js";

const STATES = [["", "All"], ["firing", "Firing"], ["unacknowledged", "Firing, unacknowledged"],
  ["acknowledged", "Firing, acknowledged"], ["resolved", "Resolved"]];
const SEVERITIES = [["", "All"], ["critical", "Critical"], ["warning", "Warning"], ["info", "Info"]];
const BY_KEY = "sensorium.ackBy";
const CLOCK = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export const stream = { alerts: true }; // app.js: the page's event stream relays alert changes

function stateCell(a) {
  if (a.state === "firing" && a.acknowledged) {
    return h("span", {}, h("span", { class: "badge acked" }, "acknowledged"), h("span", { class: "sub" }, `by ${a.acked_by || "?"}${a.ack_note ? ": " + a.ack_note : ""}`));
  }
  return h("span", { class: `badge ${a.state === "firing" ? "firing" : "resolved"}` }, a.state);
}

export function mount(root, ctx) {
  ctx.setTitle("Alerts");
  const p = ctx.params;
  const state = select(STATES, p.get("state") ?? "");
  const severity = select(SEVERITIES, p.get("severity") || "");
  const rule = select([["", "All rules"]], p.get("rule") || "");
  const series = h("input", { type: "search", placeholder: "device, room, tag…", value: p.get("series") || "", autocomplete: "off" });
  let savedBy = "dashboard";
  try { savedBy = localStorage.getItem(BY_KEY) || "dashboard"; } catch { /* ignore */ }
  const by = h("input", { type: "text", value: savedBy, autocomplete: "name", maxlength: "64" });
  const counts = h("div", { class: "grid kpis", id: "alert-counts" });
  const body = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  const liveNote = h("span", { class: "muted", style: "font-size:13px", role: "status", "aria-live": "polite" }, "Connecting to live updates…");
  root.append(
    counts,
    h("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() },
      labelled("State", state), labelled("Severity", severity), labelled("Rule", rule),
      labelled("Series contains", series, "grow"), labelled("Acknowledge as", by)),
    h("section", { class: "panel", "aria-label": "Alerts" },
      h("header", {}, h("h2", {}, "Alerts, most recently changed first"), liveNote), body),
  );

  let stopped = false;
  const flash = new Set();

  function kpis(c) {
    clear(counts);
    const items = [["Firing", c.firing, "firing"], ["Unacknowledged", c.unacknowledged, "unacknowledged"],
      ["Acknowledged", c.acknowledged, "acknowledged"], ["Resolved", c.resolved, "resolved"]];
    for (const [label, n, key] of items) {
      counts.append(h("section", { class: "panel kpi", "aria-label": label },
        h("div", { class: "label" }, label), h("div", { class: "value", "data-count": key }, fmtNum(n))));
    }
  }

  async function ack(a, button) {
    button.disabled = true;
    const who = by.value.trim() || "dashboard";
    try { localStorage.setItem(BY_KEY, who); } catch { /* ignore */ }
    try {
      await api(`/api/v1/alerts/${encodeURIComponent(a.alert_id)}/ack`, { method: "POST", body: { by: who } });
      await load();
    } catch (err) {
      button.disabled = false;
      button.replaceWith(h("span", { class: "error-box", role: "alert" }, `Could not acknowledge: ${err.message}`));
    }
  }

  async function load() {
    try {
      const res = await api("/api/v1/alerts", { params: { state: state.value, severity: severity.value, rule: rule.value, series: series.value, limit: 200 } });
      if (stopped) return;
      kpis(res.counts);
      clear(body);
      if (!res.alerts.length) { body.append(h("p", { class: "empty" }, "No alert matches.")); return; }
      const now = serverNow();
      body.append(h("div", { class: "table-wrap" }, h("table", { id: "alerts-table" },
        h("thead", {}, h("tr", {}, ["Severity", "Alert", "Series", "Value", "Fired", "State", ""].map((t, i) =>
          h("th", { scope: "col", class: i === 2 || i === 3 ? "hide-narrow" : null }, t)))),
        h("tbody", {}, res.alerts.map((a) => {
          const dev = (a.tags || {}).device_id;
          const canAck = a.state === "firing" && !a.acknowledged;
          const btn = canAck ? h("button", { type: "button", class: "small", "aria-label": `Acknowledge ${a.rule} on ${dev || a.series}` }, "Acknowledge") : null;
          if (btn) btn.addEventListener("click", () => ack(a, btn));
          return h("tr", { "data-alert": a.alert_id, "data-state": a.acknowledged ? "acknowledged" : a.state, class: flash.has(a.alert_id) ? "flash" : null },
            h("td", {}, severityBadge(a.severity)),
            h("td", {}, h("b", {}, a.rule), h("span", { class: "sub" }, a.message || "")),
            h("td", { class: "hide-narrow" }, dev ? h("a", { href: `#/devices/${encodeURIComponent(dev)}` }, dev) : null,
              h("span", { class: "sub" }, [a.measurement, a.field].filter(Boolean).join(" · "))),
            h("td", { class: "hide-narrow num" }, fmtNum(a.value)),
            h("td", {}, fmtAgo(now - a.fired_at_ns / 1e9)),
            h("td", {}, stateCell(a)),
            h("td", {}, btn));
        })))));
      flash.clear();
    } catch (err) {
      if (!stopped) clear(body).append(h("p", { class: "error-box", role: "alert" },
        err.status === 404 ? "The stream processor is off (stream.enabled = false): no alerts." : `Could not load alerts: ${err.message}`));
    }
  }

  api("/api/v1/rules").then((r) => {
    if (stopped) return;
    const want = p.get("rule") || "";
    for (const x of r.rules) {
      const o = h("option", { value: x.name }, x.name);
      if (x.name === want) o.selected = true;
      rule.append(o);
    }
  }).catch(() => {});

  const reload = debounce(() => {
    const q = { state: state.value, severity: severity.value, rule: rule.value, series: series.value };
    ctx.setParams(Object.fromEntries(Object.entries(q).filter(([, v]) => v)));
    load();
  }, 200);
  for (const el of [state, severity, rule]) el.addEventListener("change", reload);
  series.addEventListener("input", reload);

  // live: the page's event stream relays every alert change and acknowledgement (as
  // /api/v1/alerts/stream does); each re-reads the list (coalesced), and so does every
  // reconnection, so nothing that happened in between is missed
  const liveReload = debounce(load, 250);
  let connected = false;
  const onEvent = (d) => {
    if (d && d.alert_id) flash.add(d.alert_id);
    liveNote.textContent = `Live · last change ${CLOCK.format(new Date())}`;
    liveReload();
  };
  ctx.on("open", () => {
    if (connected) liveReload();
    connected = true;
    if (!liveNote.textContent.startsWith("Live")) liveNote.textContent = "Live: changes appear as they happen";
  });
  ctx.on("alert", onEvent);
  ctx.on("ack", onEvent);
  load();
  return () => { stopped = true; };
}

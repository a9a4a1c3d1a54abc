// Data quality: totals, top issues, the stream's findings, worst devices, and the dead letters
// (rejected input, with reasons) with replay through the current rules.

import { api } from "../api.js";
import { clear, debounce, fmtNum, fmtPct, fmtTime, h, labelled, panel } from "../util.js";

const PAGE = 20;

function kpi(label, value, sub) {
  return h("section", { class: "panel kpi", "aria-label": label }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), h("div", { class: "sub" }, sub || "\u00a0"));
}

function table(headers, rows, attrs) {
  return h("div", { class: "table-wrap" }, h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map(([t, cls]) => h("th", { scope: "col", class: cls || null }, t)))),
    h("tbody", {}, rows)));
}

export function mount(root, ctx) {
  ctx.setTitle("Data quality");
  const p = ctx.params;
  const totals = h("div", { class: "grid kpis" });
  const issues = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  const findings = h("div", { class: "body flush" });
  const worst = h("div", { class: "body flush" });
  const rule = h("input", { type: "search", value: p.get("rule") || "", placeholder: "e.g. range:humidity", autocomplete: "off" });
  const device = h("input", { type: "search", value: p.get("device_id") || "", placeholder: "device_id", autocomplete: "off" });
  const reason = h("input", { type: "search", value: p.get("reason") || "", placeholder: "text in the reason", autocomplete: "off" });
  const replayBtn = h("button", { type: "button", class: "primary", id: "replay" }, "Replay matching dead letters");
  const result = h("p", { role: "status", "aria-live": "polite", id: "replay-result", class: "muted", style: "margin:0" });
  const letters = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  const pager = h("div", { class: "actions", style: "padding:10px 16px" });
  root.append(
    totals,
    h("div", { class: "grid two" },
      panel("Top issues", issues),
      panel("Stream findings (stuck, spike, dropout, drift)", findings)),
    panel("Devices with the lowest valid rate", worst),
    h("section", { class: "panel", "aria-label": "Dead letters" },
      h("header", {}, h("h2", {}, "Dead letters"), h("span", { class: "muted", style: "font-size:13px" }, "rejected input, kept with its reason; replay re-runs it through the current rules")),
      h("div", { class: "body" },
        h("form", { class: "toolbar", style: "margin:0", onsubmit: (e) => e.preventDefault() },
          labelled("Rule", rule), labelled("Device", device), labelled("Reason contains", reason, "grow"), replayBtn),
        result),
      letters, pager),
  );
  let stopped = false;
  let offset = 0;

  async function loadReport() {
    try {
      const q = await api("/api/v1/quality", { params: { top: 10 } });
      if (stopped) return;
      const t = q.totals;
      clear(totals).append(
        kpi("Valid rate", fmtPct(t.valid_rate), "accepted ÷ (accepted + rejected)"),
        kpi("Accepted rows", fmtNum(t.accepted), `${fmtNum(t.batches)} batches`),
        kpi("Rejected (dead letters)", fmtNum(t.rejected), `${fmtNum(t.replayed)} replayed`),
        kpi("Duplicates dropped", fmtNum(t.duplicates)),
        kpi("Flagged (kept)", fmtNum(t.flagged), "stored with a lower quality score"));
      clear(issues).append(q.top_issues.length
        ? table([["Rule"], ["Rows", "num"], ["Rejected", "num"]], q.top_issues.map((i) => h("tr", {},
          h("td", {}, h("code", {}, i.rule), i.example ? h("span", { class: "sub" }, i.example) : null),
          h("td", { class: "num" }, fmtNum(i.count)), h("td", { class: "num" }, fmtNum(i.rejected)))), { id: "issues-table" })
        : h("p", { class: "empty" }, "No issue so far."));
      const f = q.findings;
      clear(findings).append(f
        ? table([["Check"], ["Findings", "num"], ["Open", "num"], ["Devices", "num"], ["Max score", "num"]],
          Object.entries(f.by_check).map(([c, v]) => h("tr", {}, h("td", {}, c), h("td", { class: "num" }, fmtNum(v.count)),
            h("td", { class: "num" }, fmtNum(v.open)), h("td", { class: "num" }, fmtNum(v.devices)),
            h("td", { class: "num" }, v.max_score === null ? "—" : v.max_score.toFixed(2)))))
        : h("p", { class: "empty" }, "The stream's quality checks have not reported yet."));
      const devs = (q.per_device || []).filter((d) => d.rejected > 0).slice(0, 10);
      clear(worst).append(devs.length
        ? table([["Device"], ["Accepted", "num"], ["Rejected", "num"], ["Valid rate", "num"]], devs.map((d) => h("tr", {},
          h("td", {}, d.device_id ? h("a", { href: `#/devices/${encodeURIComponent(d.device_id)}` }, d.device_id) : "(no device_id)"),
          h("td", { class: "num" }, fmtNum(d.accepted)), h("td", { class: "num" }, fmtNum(d.rejected)),
          h("td", { class: "num" }, fmtPct(d.valid_rate)))))
        : h("p", { class: "empty" }, `Every one of ${fmtNum(q.devices)} devices has a valid rate of 100%.`));
    } catch (err) {
      if (!stopped) clear(issues).append(h("p", { class: "error-box", role: "alert" }, `Could not load the quality report: ${err.message}`));
    }
  }

  function filters() {
    return { rule: rule.value.trim(), device_id: device.value.trim(), reason: reason.value.trim() };
  }

  async function loadLetters() {
    try {
      const res = await api("/api/v1/dead-letters", { params: { ...filters(), limit: PAGE, offset } });
      if (stopped) return;
      clear(letters);
      clear(pager);
      if (!res.items.length) { letters.append(h("p", { class: "empty" }, res.total ? "No more dead letters." : "No dead letter matches.")); }
      else {
        letters.append(table([["Received"], ["Rule"], ["Device", "hide-narrow"], ["Reason"], ["Input", "hide-narrow"]],
          res.items.map((d) => h("tr", { "data-dead-letter": d.id },
            h("td", { class: "nowrap" }, fmtTime(d.received_ns / 1e9), h("span", { class: "sub" }, d.measurement || "")),
            h("td", {}, h("code", {}, d.rule || "—")),
            h("td", { class: "hide-narrow nowrap" }, d.device_id || "—"),
            h("td", { class: "reason" }, d.reason),
            h("td", { class: "hide-narrow" }, h("span", { class: "raw", title: d.raw || "" }, d.raw || "")))), { id: "dead-letters-table" }));
      }
      pager.append(h("span", { class: "muted" }, `${fmtNum(res.total)} dead letters match${res.total ? ` · showing ${offset + 1}–${offset + res.items.length}` : ""}`));
      if (offset > 0) pager.append(h("button", { type: "button", class: "small", onclick: () => { offset = Math.max(0, offset - PAGE); loadLetters(); } }, "Previous"));
      if (offset + res.items.length < res.total) pager.append(h("button", { type: "button", class: "small", onclick: () => { offset += PAGE; loadLetters(); } }, "Next"));
    } catch (err) {
      if (!stopped) clear(letters).append(h("p", { class: "error-box", role: "alert" }, `Could not load dead letters: ${err.message}`));
    }
  }

  replayBtn.addEventListener("click", async () => {
    replayBtn.disabled = true;
    result.textContent = "Replaying…";
    try {
      const f = filters();
      const r = await api("/api/v1/dead-letters/replay", { method: "POST", params: { rule: f.rule, device_id: f.device_id, reason: f.reason } });
      result.textContent = `Replayed ${fmtNum(r.replayed)}: ${fmtNum(r.stored)} now stored, ${fmtNum(r.still_rejected)} still rejected.`;
      offset = 0;
      await Promise.all([loadLetters(), loadReport()]);
    } catch (err) {
      result.textContent = `Replay failed: ${err.message}`;
    } finally {
      replayBtn.disabled = false;
    }
  });
  const reload = debounce(() => {
    const f = filters();
    ctx.setParams(Object.fromEntries(Object.entries(f).filter(([, v]) => v)));
    offset = 0;
    loadLetters();
  }, 250);
  for (const el of [rule, device, reason]) el.addEventListener("input", reload);
  let last = Date.now();
  ctx.on("overview", () => { if (Date.now() - last > 10000) { last = Date.now(); loadReport(); } });
  loadReport();
  loadLetters();
  return () => { stopped = true; };
}

// Devices: search, status, location, last values; refreshed live.

import { api } from "../api.js";
import { clear, debounce, fmtAgo, fmtNum, h, labelled, panel, select, serverNow, statusBadge, syncClock } from "../util.js";

export function valuesList(fields, limit = 6) {
  const entries = Object.entries(fields || {});
  return h("div", { class: "values" },
    entries.slice(0, limit).map(([k, v]) => h("span", {}, `${k} `, h("b", {}, fmtNum(v)))),
    entries.length > limit ? h("span", { class: "muted" }, `+${entries.length - limit} more`) : null);
}

export function mount(root, ctx) {
  ctx.setTitle("Devices");
  const q = h("input", { type: "search", placeholder: "id, location, room or kind", autocomplete: "off", value: ctx.params.get("q") || "" });
  const status = select([["", "All"], ["online", "Online"], ["offline", "Offline"]], ctx.params.get("status") || "");
  const count = h("p", { class: "muted", role: "status", "aria-live": "polite", style: "margin:0 0 0 auto" });
  const body = h("div", { class: "body flush" }, h("p", { class: "empty" }, "Loading…"));
  root.append(
    h("form", { class: "toolbar", role: "search", onsubmit: (e) => e.preventDefault() },
      labelled("Search devices", q, "grow"), labelled("Status", status), count),
    panel("Devices seen in the telemetry", body),
  );
  let stopped = false;
  let last = 0;
  let inflight = false;

  async function load() {
    if (inflight) return;
    inflight = true;
    last = Date.now();
    try {
      const res = await api("/api/v1/dashboard/devices", { params: { q: q.value, status: status.value } });
      if (stopped) return;
      syncClock(res.now);
      count.textContent = `${res.devices.length} of ${res.total} devices`;
      clear(body);
      if (!res.devices.length) {
        body.append(h("p", { class: "empty" }, res.total ? "No device matches." : "No device has sent data yet (series need a device_id tag)."));
        return;
      }
      const now = serverNow();
      body.append(h("div", { class: "table-wrap" }, h("table", { id: "devices-table" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Device"),
          h("th", { scope: "col" }, "Location"), h("th", { scope: "col", class: "hide-narrow" }, "Last seen"),
          h("th", { scope: "col", class: "hide-narrow" }, "Last values"))),
        h("tbody", {}, res.devices.map((d) => h("tr", { "data-device": d.device_id },
          h("td", {}, statusBadge(d.status)),
          h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(d.device_id)}` }, d.device_id),
            h("span", { class: "sub" }, d.sensor_type || d.measurements.join(", "))),
          h("td", {}, d.location || "—", h("span", { class: "sub" }, d.room || "")),
          h("td", { class: "hide-narrow" }, fmtAgo(now - d.last_seen)),
          h("td", { class: "hide-narrow" }, valuesList(d.fields))))))));
    } catch (err) {
      if (!stopped) clear(body).append(h("p", { class: "error-box", role: "alert" }, `Could not load devices: ${err.message}`));
    } finally {
      inflight = false;
    }
  }

  const reload = debounce(() => {
    ctx.setParams({ ...(q.value ? { q: q.value } : {}), ...(status.value ? { status: status.value } : {}) });
    load();
  }, 200);
  q.addEventListener("input", reload);
  status.addEventListener("change", reload);
  ctx.on("overview", () => { if (Date.now() - last > 5000) load(); });
  load();
  return () => { stopped = true; };
}

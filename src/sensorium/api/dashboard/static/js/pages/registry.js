// Registry: locations → rooms → devices. Devices the device registry knows are placed by it (its
// location and room names); the others by the location and room tags of their telemetry.

import { api } from "../api.js";
import { clear, fmtAgo, h, serverNow, syncClock } from "../util.js";

export function mount(root, ctx) {
  ctx.setTitle("Registry");
  const note = h("p", { class: "note", id: "registry-note" });
  root.append(note);
  const tree = h("div", { id: "registry-tree" }, h("p", { class: "empty" }, "Loading…"));
  root.append(tree);
  let stopped = false;
  let last = 0;
  const open = new Set();
  let first = true;

  async function load() {
    last = Date.now();
    try {
      const r = await api("/api/v1/dashboard/registry");
      if (stopped) return;
      syncClock(r.now);
      clear(note).append(r.placed
        ? h("span", {}, h("b", {}, `${r.placed} device${r.placed === 1 ? "" : "s"} placed by the registry. `),
          "Devices with a room or location in the device registry (sensorium registry, /api/v1/registry) are shown there; the others by the location and room tags of their newest points.")
        : h("span", {}, h("b", {}, "Derived from telemetry tags. "),
          "No device has a room or location in the device registry yet (sensorium registry import FILE): this tree is built from the location, room, device_id and sensor_type tags of the newest point of every series."));
      // keep what the user folded or unfolded
      for (const d of tree.querySelectorAll("details")) { if (d.open) open.add(d.dataset.location); else open.delete(d.dataset.location); }
      clear(tree);
      if (!r.locations.length) { tree.append(h("p", { class: "empty" }, "No device is registered or has sent data yet.")); return; }
      const now = serverNow();
      for (const loc of r.locations) {
        if (first) open.add(loc.location);
        const det = h("details", { class: "location", "data-location": loc.location, open: open.has(loc.location) },
          h("summary", {}, h("span", {}, loc.location), h("span", { class: "muted" },
            `${loc.rooms.length} room${loc.rooms.length === 1 ? "" : "s"} · ${loc.devices} device${loc.devices === 1 ? "" : "s"} · ${loc.online} online`)),
          h("div", { class: "rooms" }, loc.rooms.map((room) => h("section", { class: "room", "aria-label": `${loc.location} ${room.room}` },
            h("h3", {}, room.room, " ", h("span", { class: "muted", style: "font-weight:500" }, `${room.online}/${room.devices.length} online`)),
            h("ul", {}, room.devices.map((d) => h("li", {},
              h("span", { class: `status-dot ${d.status}`, title: d.status, "aria-label": d.status, role: "img" }),
              h("a", { href: `#/devices/${encodeURIComponent(d.device_id)}` }, d.name && d.name !== d.device_id ? `${d.name} (${d.device_id})` : d.device_id),
              h("span", { class: "muted" }, `${d.sensor_type || ""} · ${d.last_seen == null ? "no data yet" : fmtAgo(now - d.last_seen)}`))))))));
        tree.append(det);
      }
      first = false;
    } catch (err) {
      if (!stopped) clear(tree).append(h("p", { class: "error-box", role: "alert" }, `Could not load the registry: ${err.message}`));
    }
  }

  ctx.on("overview", () => { if (Date.now() - last > 10000) load(); });
  load();
  return () => { stopped = true; };
}

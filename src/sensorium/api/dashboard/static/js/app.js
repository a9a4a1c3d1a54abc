// The dashboard shell: hash routes (#/devices/dev-1?range=24h), one server-sent event stream
// (overview numbers every 2 s; a device page also gets its device's newest values), the live
// indicator, the narrow-screen menu and the token dialog.

import { api, events, onTokenNeeded, setToken } from "./api.js";
import * as alerts from "./pages/alerts.js";
import * as device from "./pages/device.js";
import * as devices from "./pages/devices.js";
import * as overview from "./pages/overview.js";
import * as quality from "./pages/quality.js";
import * as query from "./pages/query.js";
import * as registry from "./pages/registry.js";
import { clear, h, syncClock } from "./util.js";

const ROUTES = [
  { re: /^\/(overview)?$/, nav: "overview", page: overview },
  { re: /^\/devices$/, nav: "devices", page: devices },
  { re: /^\/devices\/(.+)$/, nav: "devices", page: device },
  { re: /^\/alerts$/, nav: "alerts", page: alerts },
  { re: /^\/quality$/, nav: "quality", page: quality },
  { re: /^\/query$/, nav: "query", page: query },
  { re: /^\/registry$/, nav: "registry", page: registry },
];

const view = document.getElementById("view");
const main = document.getElementById("main");
const title = document.getElementById("page-title");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
const liveText = document.getElementById("live-text");
const listeners = new Map();
let cleanup = null;
let stream = null;
let watchdog = null;
let firstRoute = true;
let renderSeq = 0;

function setLive(state) {
  live.classList.toggle("on", state === "on");
  live.classList.toggle("off", state === "off");
  liveText.textContent = state === "on" ? "Live" : state === "off" ? "Reconnecting…" : "Connecting…";
}

function emit(name, data) {
  for (const fn of listeners.get(name) || []) {
    try { fn(data); } catch (err) { console.warn(`${name} handler failed`, err); }
  }
}

// The server ends each stream after a few seconds and the browser reconnects at once; pages
// that keep state from events ("alert", "ack") re-read it on "open".
function connect(params) {
  const key = JSON.stringify(params);
  if (stream && stream.key === key) return;
  if (stream) stream.es.close();
  const es = events("/api/v1/dashboard/events", params);
  const alive = () => {
    setLive("on");
    clearTimeout(watchdog);
    watchdog = setTimeout(() => setLive("off"), 7000); // a tick is due every 2 s
  };
  es.addEventListener("open", () => { alive(); emit("open", null); });
  for (const name of ["overview", "device", "alert", "ack"]) {
    es.addEventListener(name, (e) => { alive(); emit(name, JSON.parse(e.data)); });
  }
  stream = { es, key };
}

function updateNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function alertsBadge(ov) {
  syncClock(ov.now);
  const link = document.querySelector('[data-nav="alerts"]');
  if (!link || !ov.alerts) return;
  let badge = link.querySelector(".badge");
  const n = ov.alerts.firing;
  if (!n) { if (badge) badge.remove(); return; }
  if (!badge) {
    badge = h("span", { class: "badge critical", style: "margin-left:auto" });
    link.append(badge);
  }
  badge.textContent = String(n);
  badge.setAttribute("aria-label", `${n} firing`);
}

async function render() {
  const seq = ++renderSeq;
  const raw = location.hash.replace(/^#/, "") || "/overview";
  if (!raw.startsWith("/")) return; // an in-page anchor, not a route
  const [path, qs] = raw.split("?");
  const route = ROUTES.find((r) => r.re.test(path)) || ROUTES[0];
  const match = path.match(route.re) || [];
  if (cleanup) { try { cleanup(); } catch (err) { console.warn(err); } }
  cleanup = null;
  listeners.clear();
  listeners.set("overview", new Set([alertsBadge]));
  clear(view);
  updateNav(route.nav);
  document.getElementById("nav").classList.remove("open");
  document.getElementById("menu-toggle").setAttribute("aria-expanded", "false");
  const routeStart = firstRoute ? 0 : performance.now();
  performance.mark("sensorium:route");
  const ctx = {
    params: new URLSearchParams(qs || ""),
    arg: match[1] ? decodeURIComponent(match[1]) : null,
    routeStart,
    on(name, fn) {
      if (!listeners.has(name)) listeners.set(name, new Set());
      listeners.get(name).add(fn);
    },
    setTitle(text, trail) {
      title.textContent = text;
      document.title = `${text} · Sensorium`;
      clear(crumbs);
      if (trail) crumbs.append(...trail);
    },
    setParams(params) {
      const q = new URLSearchParams(params).toString();
      history.replaceState(null, "", `#${path}${q ? "?" + q : ""}`);
    },
    current: () => seq === renderSeq,
  };
  // what the page's stream carries: {device: true} adds the device's newest values, {alerts:
  // true} alert changes. A device page opens it once its charts are drawn (ctx.live()), so that
  // the first overview computed for the stream does not compete with the chart data.
  const want = route.page.stream || {};
  const params = { ...(want.device ? { device_id: ctx.arg } : {}), ...(want.alerts ? { alerts: "true" } : {}) };
  ctx.live = () => { if (seq === renderSeq) connect(params); };
  if (!want.device) connect(params);
  if (!firstRoute) main.focus({ preventScroll: true });
  firstRoute = false;
  const done = route.page.mount(view, ctx);
  cleanup = typeof done === "function" ? done : null;
}

document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
document.getElementById("menu-toggle").addEventListener("click", (e) => {
  const nav = document.getElementById("nav");
  const open = !nav.classList.contains("open");
  nav.classList.toggle("open", open);
  e.currentTarget.setAttribute("aria-expanded", String(open));
});

const dialog = document.getElementById("token-dialog");
onTokenNeeded(() => { if (!dialog.open) dialog.showModal(); });
document.getElementById("token-form").addEventListener("submit", async () => {
  const user = document.getElementById("login-user").value.trim();
  const password = document.getElementById("login-password").value;
  const error = document.getElementById("login-error");
  error.hidden = true;
  if (user && password) {  // a session (POST /api/v1/login), kept like a token
    try {
      const res = await api("/api/v1/login", { method: "POST", body: { username: user, password } });
      setToken(res.token);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      if (!dialog.open) dialog.showModal();
      return;
    } finally {
      document.getElementById("login-password").value = "";
    }
  } else {
    setToken(document.getElementById("token-input").value.trim());
  }
  if (stream) { stream.es.close(); stream = null; }
  render();
});

window.addEventListener("hashchange", render);
render();

// DOM building without innerHTML (device ids, messages and SQL results are data, never markup),
// and formatting of numbers, bytes and times.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function panel(title, body, extra) {
  return h("section", { class: "panel", "aria-label": typeof title === "string" ? title : null },
    h("header", {}, typeof title === "string" ? h("h2", {}, title) : title, extra || null),
    body);
}

const NUMBER_FORMATS = [0, 1, 2, 3, 4, 5, 6].map((d) => new Intl.NumberFormat("en-US", { maximumFractionDigits: d }));

export function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return NUMBER_FORMATS[0].format(v);
  const a = Math.abs(v);
  const d = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : Math.min(6, digits);
  return NUMBER_FORMATS[d].format(v);
}

export function fmtRate(v) {
  if (v === null || v === undefined) return "—";
  return v >= 100 ? NUMBER_FORMATS[0].format(Math.round(v)) : v.toFixed(1);
}

export function fmtPct(v) {
  if (v === null || v === undefined) return "—";
  const p = v * 100;
  return (p >= 99.995 ? "100" : p.toFixed(2)) + "%";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)) + " " + units[i];
}

export function fmtAgo(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, seconds);
  if (s < 2) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const TIME_FORMAT = new Intl.DateTimeFormat("en-GB", { year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit" }); // one formatter: building one per call is slow

export function fmtTime(sec) {
  if (sec === null || sec === undefined) return "—";
  return TIME_FORMAT.format(new Date(sec * 1000));
}

export function nsToSec(ns) {
  return ns === null || ns === undefined ? null : ns / 1e9;
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

export function severityBadge(sev) {
  const cls = ["critical", "warning", "info"].includes(sev) ? sev : "info";
  return h("span", { class: `badge ${cls}` }, sev || "—");
}

export function statusBadge(status) {
  return h("span", { class: `badge ${status === "online" ? "ok" : "off"}` },
    h("span", { class: `status-dot ${status}`, "aria-hidden": "true" }), status);
}

export function labelled(label, control, cls) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: `field ${cls || ""}` }, h("label", { for: id }, label), control);
}

export function select(options, value) {
  const s = h("select", {});
  for (const [v, text] of options) {
    const o = h("option", { value: v }, text);
    if (String(v) === String(value)) o.selected = true;
    s.append(o);
  }
  return s;
}

// The server's clock (a simulator or a test may run it apart from this browser's).
let skew = 0;
export function syncClock(serverSeconds) {
  if (typeof serverSeconds === "number") skew = serverSeconds - Date.now() / 1000;
}
export function serverNow() {
  return Date.now() / 1000 + skew;
}

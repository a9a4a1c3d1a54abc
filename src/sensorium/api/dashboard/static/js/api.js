// Calls to the Sensorium HTTP API. With an auth_token on the server, the token kept in this
// browser goes as "Authorization: Token ..." (and as ?p= for EventSource and download links,
// which cannot send headers).

const TOKEN_KEY = "sensorium.token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

export function setToken(value) {
  try { localStorage.setItem(TOKEN_KEY, value); } catch { /* private mode: per page only */ }
}

let askToken = null;
export function onTokenNeeded(fn) { askToken = fn; }

export function url(path, params) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

export function withToken(u) {
  const t = token();
  if (t) u.searchParams.set("p", t);
  return u.toString();
}

export async function api(path, { params, method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Token ${t}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(url(path, params), { method, headers, body: payload, signal });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!res.ok) {
    if (res.status === 401 && askToken) askToken();
    throw new ApiError(res.status, data);
  }
  return data;
}

export function events(path, params) {
  return new EventSource(withToken(url(path, params)));
}

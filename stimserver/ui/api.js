// The viewer's reads of the JSON API. The browser sends the HttpOnly session cookie by itself
// (same origin); no key is ever held by this script.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function getJSON(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" },
    signal: options.signal, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function sendJSON(method, path, data) {
  const response = await fetch(path, { method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: data === undefined ? undefined : JSON.stringify(data) });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export const enc = encodeURIComponent;

export function targetPath(repo, target) {
  return `/v1/repo/${enc(repo)}/targets/${enc(target)}`;
}

export function bakePath(repo, bake) {
  return `/v1/repo/${enc(repo)}/bakes/${enc(bake)}`;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? "?" + s : "";
}

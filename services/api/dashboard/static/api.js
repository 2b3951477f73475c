// The job API client: the key lives in localStorage and travels as a Bearer token on every call.

const KEY_STORAGE = "alignd.apiKey";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function getKey() {
  return window.localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  // Keys are often copied from a curl line together with their "Bearer " prefix.
  window.localStorage.setItem(KEY_STORAGE, key.trim().replace(/^Bearer\s+/i, ""));
}

export function forgetKey() {
  window.localStorage.removeItem(KEY_STORAGE);
}

function errorMessage(status, body) {
  // The API answers {"error": {"message", "type", "param", "code"}}; FastAPI's own 404s use "detail".
  if (body && body.error && body.error.message) return body.error.message;
  if (body && typeof body.detail === "string") return body.detail;
  return `HTTP ${status}`;
}

/** Call the API; resolve with the parsed JSON or throw ApiError (status 0 for a network failure). */
export async function api(path, {method = "GET", query, body} = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = {Authorization: `Bearer ${getKey()}`, Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`, null);
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, parsed), parsed);
  return parsed;
}

/** Follow a cursor-paginated list ({data, has_more}) to the end, up to maxItems. */
export async function listAll(path, {query = {}, cursor = (item) => item.id, cursorParam = "after",
  maxItems = 100000} = {}) {
  const items = [];
  let after = query[cursorParam];
  for (;;) {
    const page = await api(path, {query: {...query, [cursorParam]: after}});
    const data = (page && page.data) || [];
    items.push(...data);
    if (!page || !page.has_more || data.length === 0 || items.length >= maxItems) break;
    after = cursor(data[data.length - 1]);
  }
  return items;
}

export const jobsApi = {
  list: (query) => api("/v1/fine_tuning/jobs", {query: {limit: 100, ...query}}),
  get: (id) => api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`),
  events: (id) => api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events`, {query: {limit: 100}}),
  checkpoints: (id) => api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/checkpoints`, {query: {limit: 100}}),
  /** Metric rows after a step (all when afterStep is undefined), oldest first. */
  metrics: (id, afterStep) => listAll(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/metrics`, {
    query: {limit: 5000, after_step: afterStep},
    cursor: (row) => row.step,
    cursorParam: "after_step",
  }),
  action: (id, action) => api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/${action}`, {method: "POST"}),
};

export const pipelinesApi = {
  list: () => api("/v1/pipelines", {query: {limit: 100}}),
  get: (id) => api(`/v1/pipelines/${encodeURIComponent(id)}`),
};

// REST calls (API.md). The session cookie authenticates same-origin requests; a token
// from this page's own login is also sent as a bearer header. It is kept in memory only.

let bearer = null;

export function setToken(token) {
  bearer = token;
}

export function token() {
  return bearer;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(`${status} ${error.code}: ${error.message}`);
    this.status = status;
    this.code = error.code;
    this.error = error;
  }
}

/** fetch JSON; resolves the decoded body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { raw = false, redirect = "follow" } = {}) {
  const headers = {};
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, credentials: "same-origin", redirect };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: "network_error", message: "the server cannot be reached" });
  }
  if (raw) return response;
  if (!response.ok) {
    let error = { code: "http_error", message: `HTTP ${response.status}` };
    try {
      const decoded = await response.json();
      if (decoded && decoded.error) error = decoded.error;
    } catch {
      // not a JSON error body: keep the generic one
    }
    throw new ApiError(response.status, error);
  }
  if (response.status === 204) return null;
  return response.json();
}

// Calls to the Cete REST API. Every failure becomes an ApiError whose
// message is the API's own (`{"error": {"code", "message"}}`), so the page
// can always say what went wrong.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // "412 PreconditionFailed: ..." (or the network failure as it is).
  describe() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

// fetch, with a deadline, turning HTTP errors into ApiError. Writes sent to
// a follower come back as a 307 to the leader, which fetch follows (the
// leader allows this page's origin: see the CORS note in openapi.yaml).
export async function call(url, options = {}) {
  const { timeout = 10000, ...init } = options;
  let response;
  try {
    response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeout) });
  } catch (e) {
    const why = e.name === 'TimeoutError' ? `no answer within ${timeout / 1000} s` : e.message;
    throw new ApiError(0, 'NetworkError', `cannot reach ${new URL(url, location.href).host}: ${why}`);
  }
  if (response.ok || response.status === 304) return response;
  const text = await response.text().catch(() => '');
  let code = 'HttpError';
  let message = text.trim() || response.statusText || 'no message';
  try {
    const body = JSON.parse(text);
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // not JSON: keep the text
  }
  throw new ApiError(response.status, code, message);
}

export async function json(url, options) {
  const response = await call(url, options);
  return response.json();
}

// `/v1/data/<key>`, each byte that needs it percent-encoded; `/` stays.
export function keyPath(key) {
  return '/v1/data/' + key.split('/').map(encodeURIComponent).join('/');
}

// The URL of `path` on the member whose HTTP address is `address`. An
// address without a host (":8001") is on the host this page came from, as
// the server's own redirects assume; the scheme is this page's (TLS is
// cluster-wide).
export function memberUrl(address, path) {
  const authority = address.startsWith(':') ? location.hostname + address : address;
  return `${location.protocol}//${authority}${path}`;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// The hub's HTTP API as the dashboard uses it: the session's token, JSON reads, writes,
// and the event stream read with fetch() so that it carries the same Authorization header
// (EventSource cannot send one, and the token never goes into a URL).

const KEY = "smartpark.token";

export class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (t, role) => { sessionStorage.setItem(KEY, t); sessionStorage.setItem(KEY + ".role", role); },
  role: () => sessionStorage.getItem(KEY + ".role") || "",
  clear: () => { sessionStorage.removeItem(KEY); sessionStorage.removeItem(KEY + ".role"); },
};

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token.get();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

// Listeners told when the hub answers 401 (the page then offers the login) -- to a request
// sent with the token kept now: a late answer to one sent before the login does not count.
export const onUnauthorized = new Set();
function refused(sent) {
  if (sent === token.get()) onUnauthorized.forEach((f) => f());
}

async function call(method, path, body, opts) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}),
                 signal: opts && opts.signal, cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const sent = token.get();
  const r = await fetch(path, init);
  if (r.status === 401) refused(sent);
  if (!r.ok) {
    let b = null;
    try { b = await r.json(); } catch (e) { b = null; }
    throw new HttpError(r.status, b);
  }
  return r;
}

export async function get(path, opts) {
  return (await call("GET", path, undefined, opts)).json();
}

// JSON of `path`, or null when the hub has no such route (404): for the parts of the park
// model a hub may not serve yet.
export async function getOptional(path, opts) {
  try {
    return await get(path, opts);
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) return null;
    throw e;
  }
}

export async function post(path, body) {
  return (await call("POST", path, body === undefined ? {} : body)).json();
}

export async function blob(path) {
  return (await call("GET", path)).blob();
}

// Try a token without keeping it: "admin", "read", or null when the hub refuses it.
export async function probe(t) {
  const r = await fetch("/api/access", { headers: { Authorization: "Bearer " + t }, cache: "no-store" });
  if (!r.ok) return null;
  return (await r.json()).role;
}

// What the kept token may do: {role, reads_need_token, writes}.
export async function access() {
  return (await call("GET", "/api/access")).json();
}

// The event stream: handlers[type](data) for each event; reconnects with a growing pause.
// status(true|false) tells whether the stream is open; query: e.g. "?readings_of=a,b".
// Returns a stop function.
export function stream(handlers, status, query) {
  let stopped = false;
  let ctrl = null;
  let pause = 500;
  async function run() {
    while (!stopped) {
      ctrl = new AbortController();
      const sent = token.get();
      try {
        const r = await fetch("/api/events" + (query || ""), { headers: headers({ Accept: "text/event-stream" }),
                                               signal: ctrl.signal, cache: "no-store" });
        if (r.status === 401) refused(sent);
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        pause = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        let first = true;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (first) { first = false; status(true); }  // the hub's greeting: it is subscribed
          buf += value.replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            dispatch(buf.slice(0, i), handlers);
            buf = buf.slice(i + 2);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      status(false);
      if (stopped) return;
      await new Promise((res) => setTimeout(res, pause));
      pause = Math.min(pause * 2, 15000);
    }
  }
  run();
  return () => { stopped = true; if (ctrl) ctrl.abort(); };
}

function dispatch(block, handlers) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c);
    const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
    if (field === "event") type = val;
    else if (field === "data") data.push(val);
  }
  if (!data.length || !handlers[type]) return;
  try {
    handlers[type](JSON.parse(data.join("\n")));
  } catch (e) {
    console.error("event", type, e);
  }
}

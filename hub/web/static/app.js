// The dashboard's pages (hash routes) and the live updates from the event stream.
import * as api from "./api.js";
import { Chart, fmtValue, sparkline, svg } from "./chart.js";

const main = document.getElementById("main");
const SEVERITIES = ["critical", "major", "minor", "warning"];
const MAX_ROWS = 200;   // node rows on the overview (the filter reaches the others)
let page = {};          // the current page's live handlers: reading, node, alarm
let stopStream = null;
let streamKey = null;   // the open stream's query and token: a page that wants the same keeps it
let gen = 0;            // bumped at every route change: late answers of an old page are dropped

// ---- helpers ------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined && k !== false) e.append(k);
  return e;
}

const enc = encodeURIComponent;
const nodeHref = (n) => "#/node/" + enc(n);
const chartHref = (n, s) => "#/chart/" + enc(n) + "/" + enc(s);

function when(t) {
  if (t === null || t === undefined) return "never";
  const d = Date.now() / 1000 - t;
  if (d < 0) return "in " + Math.round(-d) + " s";
  if (d < 90) return Math.round(d) + " s ago";
  if (d < 5400) return Math.round(d / 60) + " min ago";
  if (d < 129600) return Math.round(d / 3600) + " h ago";
  return new Date(t * 1000).toLocaleDateString();
}
const stamp = (t) => h("time", { title: t ? new Date(t * 1000).toLocaleString() : "" }, when(t));
const valueText = (v, unit) => fmtValue(v) + (unit && v !== null && v !== undefined ? " " + unit : "");
const badge = (on) => h("span", { class: "badge " + (on ? "on" : "off") }, on ? "online" : "offline");
const sevBadge = (s) => h("span", { class: "badge sev sev-" + s }, s);

function flash(el) { el.classList.remove("flash"); void el.offsetWidth; el.classList.add("flash"); }

function errorBox(e) {
  return h("p", { class: "err", role: "alert" }, "The hub answered: " + (e && e.message ? e.message : e));
}

function render(title, ...kids) {
  document.title = title + " · smartpark";
  main.replaceChildren(...kids);
}

// ---- routing ------------------------------------------------------------------------------

const routes = [
  [/^#?\/?$/, overview],
  [/^#\/node\/([^/?]+)$/, (m) => nodePage(decodeURIComponent(m[1]))],
  [/^#\/chart\/([^/?]+)\/([^/?]+)(?:\?(.*))?$/, (m) => chartPage(decodeURIComponent(m[1]), decodeURIComponent(m[2]), new URLSearchParams(m[3] || ""))],
  [/^#\/alarms$/, alarmsPage],
  [/^#\/login$/, loginPage],
];

async function route() {
  gen += 1;
  page = {};
  const hash = location.hash || "#/";
  const name = hash.startsWith("#/alarms") ? "alarms" : hash.startsWith("#/login") ? "login" : hash === "#/" || hash === "" ? "overview" : "";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.getElementById("nav-login").textContent = api.token.get() ? "Signed in" : "Sign in";
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) {
      const my = gen;
      main.replaceChildren(h("p", {}, "Loading…"));
      try {
        await fn(m);
      } catch (e) {  // a 401 went to the login; a page left behind keeps quiet
        if (my === gen && !(e instanceof api.HttpError && e.status === 401)) render("Error", errorBox(e));
      }
      if (document.activeElement === document.body || !main.contains(document.activeElement)) main.focus({ preventScroll: true });
      return;
    }
  }
  render("Not found", h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

api.onUnauthorized.add(() => {
  if (!location.hash.startsWith("#/login")) {
    sessionStorage.setItem("smartpark.after", location.hash || "#/");
    location.hash = "#/login";
  }
});

// The event stream a page wants: the readings of `nodes` only (null: every node's; [] none)
// -- a page never pulls the whole park's readings -- and every other event.
function useStream(nodes) {
  const query = nodes === null ? "" : "?readings_of=" + nodes.map(enc).join(",");
  const key = query + "\n" + api.token.get();
  if (key === streamKey && stopStream) return;
  streamKey = key;
  startStream(query);
}

function startStream(query) {
  if (stopStream) stopStream();
  const live = document.getElementById("live");
  live.textContent = "offline";
  live.classList.remove("on");
  stopStream = api.stream({
    reading: (d) => page.reading && page.reading(d),
    node: (d) => page.node && page.node(d),
    alarm: (d) => page.alarm && page.alarm(d),
  }, (on) => { live.textContent = on ? "live" : "offline"; live.classList.toggle("on", on); }, query);
}

// ---- login --------------------------------------------------------------------------------

async function loginPage() {
  const msg = h("p", { role: "status", id: "login-msg" });
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true, size: 36 });
  const form = h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    msg.textContent = "Checking…";
    msg.className = "";
    const role = await api.probe(input.value.trim());
    if (role) {
      api.token.set(input.value.trim(), role);
      const to = sessionStorage.getItem("smartpark.after") || "#/";
      sessionStorage.removeItem("smartpark.after");
      location.hash = to === "#/login" ? "#/" : to;
    } else {
      msg.textContent = "The hub refused this token.";  // or it is none of this hub's
      msg.className = "err";
      input.focus();
    }
  } },
  h("label", { for: "token" }, "Token"), input, " ",
  h("button", { type: "submit" }, "Sign in"));
  const kids = [h("h1", {}, "Sign in"),
    h("p", {}, "The read token shows the park; the admin token also acknowledges alarms. " +
      "The token is kept for this browser tab only and sent to the hub in a header."),
    form, msg];
  const acc = await api.access().catch(() => null);
  if (acc && !acc.reads_need_token && !api.token.get()) {
    kids.splice(2, 0, h("p", { class: "muted" }, "This hub's data is open to read here: sign in only to acknowledge alarms (admin token)."));
  }
  if (api.token.get()) {
    const role = (acc && acc.role) || api.token.role() || "stored";
    kids.push(h("p", { id: "signed-in" }, "You are signed in with the " + role + " token. ", h("button", { type: "button", class: "secondary", id: "signout", onclick: () => {
      api.token.clear(); route();
    } }, "Sign out")));
  }
  render("Sign in", ...kids);
  useStream([]);
  input.focus();
}

// ---- overview -----------------------------------------------------------------------------

async function overview() {
  const my = gen;
  const [ov, summary, zones] = await Promise.all([
    api.get("/api/overview?limit=" + MAX_ROWS), api.getOptional("/api/alarms/summary"),
    api.getOptional("/api/zones"),
  ]);
  if (my !== gen) return;
  const online = h("span", { class: "n", id: "count-online" }), offline = h("span", { class: "n", id: "count-offline" });
  const counts = (o) => { online.textContent = o.online; offline.textContent = o.offline; };
  counts(ov);
  const cards = h("div", { class: "cards" },
    h("div", { class: "card" }, online, h("span", { class: "l" }, "nodes online")),
    h("div", { class: "card" }, offline, h("span", { class: "l" }, "nodes offline")));
  const kids = [h("h1", {}, "Overview"), h("h2", { id: "h-counts" }, "Park"), cards];

  if (summary) {
    kids.push(h("section", { "aria-labelledby": "h-alarms", id: "alarm-summary" },
      h("h2", { id: "h-alarms" }, h("a", { href: "#/alarms" }, "Active alarms")),
      h("div", { class: "cards" }, SEVERITIES.map((s) => h("div", { class: "card" },
        h("span", { class: "n", "data-sev": s }, String((summary.active || {})[s] || 0)), sevBadge(s)))),
      h("p", { class: "muted" }, h("span", { id: "unacked" }, String(summary.unacked || 0)), " not acknowledged")));
  }

  if (zones && zones.length) {
    kids.push(h("section", { "aria-labelledby": "h-zones", id: "zones" }, h("h2", { id: "h-zones" }, "Zones"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Zone"), h("th", { scope: "col" }, "Nodes"), h("th", { scope: "col" }, "Latest"))),
        h("tbody", {}, zones.map((z) => h("tr", {}, h("th", { scope: "row" }, z.zone),
          h("td", { class: "num" }, String((z.nodes || []).length)),
          h("td", {}, Object.entries(z.latest || {}).map(([k, v]) =>
            h("span", { class: "kv" }, k + " " + fmtValue(v.v) + " ", h("a", { href: nodeHref(v.node), class: "muted" }, "(" + v.node + ")"), " ")))))))));
  }

  const map = await parkMap(ov.places.map((p) => ({ id: p.id, online: p.online, meta: { name: p.name, location: p.location } })));
  if (my !== gen) return;
  if (map) kids.push(h("section", { "aria-labelledby": "h-map", id: "map" }, h("h2", { id: "h-map" }, "Map"), map));

  // the node table: the hub sends the first MAX_ROWS (offline first); the filter asks it again
  const cell = (r) => h("span", { class: "kv", "data-series": r.node + "/" + r.sensor, title: r.sensor },
    r.sensor + " ", h("b", {}, valueText(r.value, r.unit)), "  ");
  const row = (n) => h("tr", { "data-node": n.id },
    h("th", { scope: "row" }, h("a", { href: nodeHref(n.id) }, (n.meta && n.meta.name) || n.id)),
    h("td", { "data-status": n.id }, badge(n.online)),
    h("td", { "data-seen": n.id }, stamp(n.last_seen)),
    h("td", { "data-values": n.id }, n.latest.map((r) => cell(Object.assign({ node: n.id }, r)))));
  const tbody = h("tbody"), shown = h("p", { class: "muted", id: "nodes-shown", role: "status" });
  const filter = h("input", { id: "node-filter", type: "search", size: 28 });
  const fill = (o) => {
    tbody.replaceChildren(...o.nodes.map(row));
    useStream(o.nodes.map((n) => n.id));
    shown.textContent = o.matched > o.nodes.length
      ? "Showing " + o.nodes.length + " of " + o.matched + " nodes, offline first: filter to find the others."
      : o.matched + " of " + o.total + " nodes.";
  };
  let timer = null;
  const refresh = () => api.get("/api/overview?limit=" + MAX_ROWS + "&q=" + enc(filter.value.trim()))
    .then((o) => { if (my === gen) { counts(o); fill(o); } }).catch(() => {});
  filter.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 250); });
  fill(ov);
  kids.push(h("section", { "aria-labelledby": "h-nodes" }, h("h2", { id: "h-nodes" }, "Nodes"),
    h("div", { class: "toolbar" }, h("label", { for: "node-filter" }, "Filter by id, name or zone"), filter), shown,
    h("table", { id: "nodes" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Node"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col" }, "Last seen"), h("th", { scope: "col" }, "Latest values"))), tbody)));
  render("Overview", ...kids);

  let countsTimer = null;
  const recount = () => { clearTimeout(countsTimer); countsTimer = setTimeout(refresh, 1000); };
  page.reading = (d) => {
    if (d.sensor.startsWith("health.")) return;
    const el = main.querySelector('[data-series="' + CSS.escape(d.node + "/" + d.sensor) + '"]');
    if (el) { el.querySelector("b").textContent = valueText(d.value, d.unit); flash(el); }
    else {
      const td = main.querySelector('[data-values="' + CSS.escape(d.node) + '"]');
      if (td && td.children.length < 8) td.append(cell(d));
      if (!td && tbody.childElementCount < MAX_ROWS) recount();  // a new node: ask for its row
    }
    const seen = main.querySelector('[data-seen="' + CSS.escape(d.node) + '"]');
    if (seen) seen.replaceChildren(stamp(d.time));
  };
  page.node = (d) => {
    recount();  // the counts (and the offline-first order) come from the hub
    const el = main.querySelector('[data-status="' + CSS.escape(d.node) + '"]');
    if (el) el.replaceChildren(badge(d.online));
    const dot = main.querySelector('[data-map-node="' + CSS.escape(d.node) + '"]');
    if (dot) {
      dot.setAttribute("fill", d.online ? "#0b5d3b" : "#8a1c1c");
      const a = dot.parentNode;
      a.setAttribute("aria-label", a.getAttribute("aria-label").replace(/, (online|offline)$/, d.online ? ", online" : ", offline"));
    }
  };
  page.alarm = () => {
    if (!summary) return;
    api.get("/api/alarms/summary").then((s) => {
      if (my !== gen) return;
      for (const k of SEVERITIES) main.querySelector('[data-sev="' + k + '"]').textContent = String((s.active || {})[k] || 0);
      document.getElementById("unacked").textContent = String(s.unacked || 0);
    }).catch(() => {});
  };
}

// Nodes on the site plan (x/y) or on a lat/lon projection; null when there is nothing to place.
async function parkMap(nodes) {
  const xy = nodes.filter((n) => typeof n.meta.location.x === "number");
  const ll = nodes.filter((n) => typeof n.meta.location.lat === "number");
  let root, place;
  if (xy.length) {
    const b = await api.blob("/api/siteplan").catch(() => null);  // 404: positions on a blank plan
    const url = b ? URL.createObjectURL(b) : null;
    const img = new Image();
    if (url) { img.src = url; await img.decode().catch(() => {}); }
    const frac = xy.every((n) => n.meta.location.x <= 1 && n.meta.location.y <= 1);
    const W = img.naturalWidth || (frac ? 1000 : Math.max(...xy.map((n) => n.meta.location.x)) + 50);
    const H = img.naturalHeight || (frac ? 700 : Math.max(...xy.map((n) => n.meta.location.y)) + 50);
    root = svg("svg", { class: "map", viewBox: "0 0 " + W + " " + H, role: "group", "aria-label": "Nodes on the site plan" });
    if (url) root.append(svg("image", { href: url, x: 0, y: 0, width: W, height: H }));
    place = xy.map((n) => [n, frac ? n.meta.location.x * W : n.meta.location.x, frac ? n.meta.location.y * H : n.meta.location.y]);
  } else if (ll.length) {
    // equirectangular around the park's middle latitude: true to scale at park sizes
    const lat = ll.map((n) => n.meta.location.lat), lon = ll.map((n) => n.meta.location.lon);
    const k = Math.cos(((Math.min(...lat) + Math.max(...lat)) / 2) * Math.PI / 180);
    const x0 = Math.min(...lon) * k, x1 = Math.max(...lon) * k, y0 = Math.min(...lat), y1 = Math.max(...lat);
    const W = 1000, H = 420;
    const s = Math.min(760 / Math.max(x1 - x0, 1e-9), 340 / Math.max(y1 - y0, 1e-9));
    const ox = (W - (x1 - x0) * s) / 2, oy = (H - (y1 - y0) * s) / 2;
    root = svg("svg", { class: "map", viewBox: "0 0 " + W + " " + H, role: "group", "aria-label": "Nodes by latitude and longitude" });
    place = ll.map((n) => [n, ox + (n.meta.location.lon * k - x0) * s, oy + (y1 - n.meta.location.lat) * s]);
  } else {
    return null;
  }
  const u = parseFloat(root.getAttribute("viewBox").split(" ")[2]) / 1000;  // marks sized to the plan
  for (const [n, x, y] of place) {
    const a = svg("a", { href: nodeHref(n.id), "aria-label": ((n.meta && n.meta.name) || n.id) + (n.online ? ", online" : ", offline") });
    a.append(svg("circle", { cx: x, cy: y, r: 9 * u, fill: n.online ? "#0b5d3b" : "#8a1c1c", stroke: "#fff", "stroke-width": 2 * u, "data-map-node": n.id }));
    a.append(svg("text", { x: x + 13 * u, y: y + 5 * u, "font-size": 15 * u }, (n.meta && n.meta.name) || n.id));
    root.append(a);
  }
  return root;
}

// ---- node ---------------------------------------------------------------------------------

// what the node says about itself (GET /api/nodes/{node} "diagnostics", docs/diagnostics.md)
function diagnosticsList(d) {
  d = d || {};
  const or = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));
  const safe = d.safe_mode || {};
  const clock = d.clock || {};
  const cfg = d.config || {};
  const refused = Object.entries(d.refused || {}).map(([code, k]) => code + " × " + k).join(", ");
  const sensors = Object.entries(d.sensors || {}).map(([name, st]) =>
    name + ": " + st.status + (st.errors ? " (" + st.errors + " errors)" : "")).join(", ");
  return h("dl", { class: "kv", id: "diagnostics" },
    h("dt", {}, "Safe mode"), h("dd", {}, safe.active === null || safe.active === undefined ? "–"
      : safe.active ? "yes, bad key " + or(safe.key) : "no"),
    h("dt", {}, "Sensors"), h("dd", {}, sensors || "–"),
    h("dt", {}, "Config"), h("dd", {}, "applied " + or(cfg.applied) + (cfg.rejected ? "; rejected " + cfg.rejected : "")),
    h("dt", {}, "Clock"), h("dd", {}, clock.synced === null || clock.synced === undefined ? "–"
      : clock.synced ? "synced" : "unsynced for " + or(clock.unsynced_for) + " s"),
    h("dt", {}, "Estimated times"), h("dd", {}, or(d.estimated)),
    h("dt", {}, "Refused by the hub"), h("dd", {}, refused || "none"),
    h("dt", {}, "Last crash"), h("dd", {}, or(d.crash)));
}

async function nodePage(id) {
  const my = gen;
  const [n, latest, cfg, alarms] = await Promise.all([
    api.get("/api/nodes/" + enc(id)), api.get("/api/latest?node=" + enc(id)),
    api.get("/api/nodes/" + enc(id) + "/config").catch(() => null),
    api.getOptional("/api/alarms?node=" + enc(id)),
  ]);
  if (my !== gen) return;
  const hv = (k, unit) => h("dd", { "data-health": k }, valueText(n.health[k], unit));
  const health = h("dl", { class: "kv" },
    h("dt", {}, "Battery"), hv("vbat", "V"), h("dt", {}, "RSSI"), hv("rssi", "dBm"),
    h("dt", {}, "Outbox"), hv("outbox", "records"), h("dt", {}, "Dropped"), hv("dropped", "records"),
    h("dt", {}, "Reset cause"), hv("reset"), h("dt", {}, "Uptime"), hv("uptime", "s"),
    h("dt", {}, "Free heap"), hv("heap_free", "B"), h("dt", {}, "Retransmissions"), hv("retx"));
  const up = n.update || {};
  const fw = h("dl", { class: "kv", id: "firmware" },
    h("dt", {}, "Running"), h("dd", {}, up.running || n.firmware || "–"),
    h("dt", {}, "Wanted"), h("dd", {}, up.wanted || "–"),
    h("dt", {}, "Update state"), h("dd", {}, up.state || "–"),
    h("dt", {}, "Last result"), h("dd", {}, up.result ? up.result + (up.reason ? " (" + up.reason + ")" : "") : "–"),
    h("dt", {}, "Since"), h("dd", {}, up.since ? stamp(up.since) : "–"));
  const diag = diagnosticsList(n.diagnostics);
  const meta = n.meta || {};
  const sensors = latest.filter((r) => !r.sensor.startsWith("health."));
  const rows = sensors.map((r) => {
    const sp = h("td", {});
    sparkline(id, r.sensor, 6 * 3600).then((s) => sp.append(s));
    return h("tr", {}, h("th", { scope: "row" }, h("a", { href: chartHref(id, r.sensor) }, r.sensor)),
      h("td", { class: "num", "data-series": id + "/" + r.sensor }, valueText(r.value, r.unit)),
      h("td", { "data-time": r.sensor }, stamp(r.time)), sp);
  });
  const kids = [
    h("p", {}, h("a", { href: "#/" }, "← Overview")),
    h("h1", {}, meta.name ? meta.name + " (" + id + ")" : id, " ", h("span", { id: "node-status" }, badge(n.online))),
    h("p", { class: "muted" }, "Last seen ", h("span", { id: "node-seen" }, stamp(n.last_seen)),
      meta.zone ? " · zone " + meta.zone : "", (meta.tags || []).length ? " · tags " + meta.tags.join(", ") : "",
      n.address ? " · " + n.address : ""),
    h("div", { class: "grid2" },
      h("section", { "aria-labelledby": "h-health" }, h("h2", { id: "h-health" }, "Health"), health),
      h("section", { "aria-labelledby": "h-fw" }, h("h2", { id: "h-fw" }, "Firmware"), fw)),
    h("section", { "aria-labelledby": "h-diag" }, h("h2", { id: "h-diag" }, "Diagnostics"), diag),
    h("section", { "aria-labelledby": "h-sensors" }, h("h2", { id: "h-sensors" }, "Sensors"),
      sensors.length ? h("table", { id: "sensors" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Series"), h("th", { scope: "col" }, "Latest"),
        h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Last 6 h"))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No readings yet.")),
  ];
  if (alarms) {
    kids.push(h("section", { "aria-labelledby": "h-nalarms", id: "node-alarms" }, h("h2", { id: "h-nalarms" }, "Alarms"),
      alarms.length ? [alarmTable(alarms, null), h("h3", {}, "History"), alarms.map(alarmHistory)]
        : h("p", { class: "muted" }, "No alarms for this node.")));
  }
  kids.push(h("section", { "aria-labelledby": "h-config" }, h("h2", { id: "h-config" }, "Configuration",
    cfg ? h("span", { class: "muted" }, " (version " + cfg.version + ")") : ""),
  h("pre", { id: "config", tabindex: "0" }, cfg ? JSON.stringify(cfg.config, null, 2) : "not available")));
  render(id, ...kids);
  useStream([id]);
  page.reading = (d) => {
    if (d.node !== id) return;
    if (d.sensor.startsWith("health.")) {
      const el = main.querySelector('[data-health="' + CSS.escape(d.sensor.slice(7)) + '"]');
      if (el) { el.textContent = valueText(d.value, d.unit); flash(el); }
    } else {
      const el = main.querySelector('[data-series="' + CSS.escape(id + "/" + d.sensor) + '"]');
      if (el) { el.textContent = valueText(d.value, d.unit); flash(el); }
      const t = main.querySelector('[data-time="' + CSS.escape(d.sensor) + '"]');
      if (t) t.replaceChildren(stamp(d.time));
    }
    document.getElementById("node-seen").replaceChildren(stamp(d.time));
  };
  page.node = (d) => { if (d.node === id) document.getElementById("node-status").replaceChildren(badge(d.online)); };
}

// ---- chart --------------------------------------------------------------------------------

const RANGES = [["1 h", 3600], ["6 h", 21600], ["24 h", 86400], ["7 d", 604800]];

async function chartPage(node, sensor, params) {
  const now = Date.now() / 1000;
  let t1 = parseFloat(params.get("to")), t0 = parseFloat(params.get("from"));
  if (!isFinite(t1)) t1 = now + 60;
  if (!isFinite(t0) || t0 >= t1) t0 = t1 - 86400;
  const el = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  el.setAttribute("class", "chart");
  el.id = "chart";
  const status = h("p", { id: "chart-status", role: "status", class: "muted" });
  const msg = h("p", { role: "status", id: "export-msg" });
  let chart = null;
  const btn = (label, fn, attrs) => h("button", Object.assign({ type: "button", onclick: fn }, attrs || {}), label);
  const exportCsv = async () => {
    const win = chart.data ? chart.data.window : "raw";
    msg.textContent = "Exporting…";
    try {
      const b = await api.blob(chart.url("&format=csv&window=" + win + "&limit=100000"));
      const a = h("a", { href: URL.createObjectURL(b), download: node + "_" + sensor + "_" + win + ".csv" });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      msg.textContent = "Exported " + win + " points as CSV.";
    } catch (e) { msg.textContent = "Export failed: " + e.message; }
  };
  render(sensor + " · " + node,
    h("p", {}, h("a", { href: nodeHref(node) }, "← " + node)),
    h("h1", {}, sensor, h("span", { class: "muted" }, " · " + node)),
    h("div", { class: "toolbar", role: "toolbar", "aria-label": "Time range" },
      RANGES.map(([label, span]) => btn("Last " + label, () => { const e = Date.now() / 1000 + 60; chart.setView(e - span, e); })),
      h("span", { class: "sep" }),
      btn("Zoom in", () => chart.zoom(0.5), { id: "zoom-in" }), btn("Zoom out", () => chart.zoom(2), { id: "zoom-out" }),
      btn("← Earlier", () => chart.pan(-0.5), { id: "pan-left" }), btn("Later →", () => chart.pan(0.5), { id: "pan-right" }),
      h("span", { class: "sep" }),
      btn("Export CSV", exportCsv, { id: "export", class: "secondary" })),
    el, status, msg,
    h("p", { class: "muted" }, "Wheel or + and − zoom, drag or arrow keys pan (with the chart focused). " +
      "The hub picks the resolution for the range: min–max bands of rollup buckets, the raw readings once zoomed in."));
  chart = new Chart(el, status, node, sensor, t0, t1, (a, b) => {
    history.replaceState(null, "", chartHref(node, sensor) + "?from=" + a.toFixed(0) + "&to=" + b.toFixed(0));
  });
  useStream([node]);
  page.reading = (d) => { if (d.node === node && d.sensor === sensor) chart.addLive(d.time, d.value); };
}

// ---- alarms -------------------------------------------------------------------------------

function alarmRow(a, onAck) {
  return h("tr", { "data-alarm": a.id },
    h("td", {}, sevBadge(a.severity)),
    h("td", {}, a.node ? h("a", { href: nodeHref(a.node) }, a.node) : a.zone || "–"),
    h("td", {}, a.sensor || "–"),
    h("td", {}, a.message || a.rule, a.value !== null && a.value !== undefined ? " (" + fmtValue(a.value) + ")" : ""),
    h("td", {}, stamp(a.raised)),
    h("td", {}, a.state + (a.cleared ? " " : ""), a.cleared ? stamp(a.cleared) : ""),
    h("td", {}, a.acked ? ["yes ", stamp(a.acked_at)] : onAck
      ? h("button", { type: "button", "data-ack": a.id, onclick: () => onAck(a) }, "Acknowledge")
      : "no"));
}

function alarmTable(list, onAck) {
  return h("table", { class: "alarms" }, h("thead", {}, h("tr", {},
    ["Severity", "Node", "Series", "Alarm", "Raised", "State", "Acknowledged"].map((c) => h("th", { scope: "col" }, c)))),
  h("tbody", {}, list.map((a) => alarmRow(a, onAck))));
}

// One alarm's history (raised, updated, acknowledged, cleared), fetched when opened.
function alarmHistory(a) {
  const list = h("ol", { class: "history" });
  const d = h("details", { "data-history": a.id, ontoggle: async () => {
    if (!d.open || list.childElementCount) return;
    try {
      const hist = await api.get("/api/alarms/" + enc(a.id) + "/history");
      list.replaceChildren(...hist.map((e) => h("li", {}, stamp(e.t), " " + e.event,
        e.value !== null && e.value !== undefined ? " (" + fmtValue(e.value) + ")" : "", e.by ? " by " + e.by : "")));
    } catch (e) { list.replaceChildren(h("li", {}, "Could not load the history: " + e.message)); }
  } }, h("summary", {}, sevBadge(a.severity), " " + (a.message || a.rule) + " · " + a.state), list);
  return d;
}

async function alarmsPage() {
  const my = gen;
  const state = h("select", { id: "f-state" }, ["active", "cleared", ""].map((s) => h("option", { value: s }, s || "all")));
  const sev = h("select", { id: "f-severity" }, [""].concat(SEVERITIES).map((s) => h("option", { value: s }, s || "any")));
  const holder = h("div", {});
  const msg = h("p", { role: "status", id: "alarm-msg" });
  const ack = async (a) => {
    try {
      const got = await api.post("/api/alarms/" + enc(a.id) + "/ack");
      msg.textContent = "Acknowledged.";
      msg.className = "";
      const row = holder.querySelector('[data-alarm="' + CSS.escape(String(a.id)) + '"]');
      if (row) row.replaceWith(alarmRow(got, ack));
    } catch (e) {
      msg.className = "err";
      msg.replaceChildren(...(e.status === 401 || e.status === 403
        ? ["Acknowledging needs the admin token: ", h("a", { href: "#/login", onclick: () => sessionStorage.setItem("smartpark.after", "#/alarms") }, "sign in with it"), "."]
        : ["Could not acknowledge: " + e.message]));
    }
  };
  const load = async () => {
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    if (sev.value) q.set("severity", sev.value);
    const list = await api.getOptional("/api/alarms" + (q.toString() ? "?" + q : ""));
    if (my !== gen) return;
    if (list === null) { holder.replaceChildren(h("p", { class: "muted", id: "no-alarms" }, "This hub does not serve alarms.")); return; }
    list.sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || b.raised - a.raised);
    holder.replaceChildren(list.length ? alarmTable(list, ack) : h("p", { class: "muted" }, "No alarms match."));
  };
  state.addEventListener("change", load);
  sev.addEventListener("change", load);
  render("Alarms", h("h1", {}, "Alarms"),
    h("div", { class: "toolbar" }, h("label", { for: "f-state" }, "State"), state, h("label", { for: "f-severity" }, "Severity"), sev),
    msg, holder);
  useStream([]);
  await load();
  page.alarm = () => load().catch(() => {});
}

// ---- start --------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();

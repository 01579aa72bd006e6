// The operations console: polls the hub's admin API every two seconds (paused while the tab is
// hidden) and draws the headline figures, the live charts, the store grid, the dead letters, the
// active alerts, a transaction's trace and the day's reconciliation. Every call carries the admin
// key from the tab's session storage; an answer of 401 or 403 brings back the sign-in form.

const POLL_MS = 2000;
const WINDOW_SECONDS = 300;
const RATE_SECONDS = 10; // the headline rate is the mean over this many seconds
const RECON_EVERY = 30; // polls between two reads of the day's reconciliation (it asks the ERP)
const DETAIL_EVERY = 5; // polls between two reads of the open store's detail (it reconciles its day)
const LABELLED_UP_TO = 120; // stores: up to this many, the grid shows each store's id
const KEY_ITEM = "tillflow.console.key";
const DEFAULT_WHY = "replayed from the console";
const CATEGORIES = [
  ["online", "Online"],
  ["behind", "Buffering"],
  ["offline", "Offline"],
  ["unknown", "Unknown"],
];

const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

const state = {
  timer: null,
  polls: 0,
  signedIn: false,
  samples: [],
  stores: [],
  cells: new Map(),
  storeFilter: "",
  categoryFilter: null,
  selectedStore: null,
  deadRows: new Map(),
  replayed: new Set(),
  deadTotal: 0,
  groupForms: new Map(),
  alertRows: new Map(),
};

// --- small helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replace `node`'s children with `children`, leaving out the null, undefined and false ones.
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

const muted = (text) => el("span", { class: "muted", text });

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  return node;
}

const integer = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 1, minimumFractionDigits: 1 });

function count(n) {
  return n === null || n === undefined ? "–" : integer.format(n);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${integer.format(seconds * 1000)} ms`;
  if (seconds < 60) return `${decimal.format(seconds)} s`;
  return age(seconds);
}

// A duration in one unit, for figures and chart axes: "850 ms", "2.4 s", "3.5 min", "14.8 h".
function short(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds === 0) return "0";
  if (seconds < 1) return `${integer.format(seconds * 1000)} ms`;
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
    if (seconds >= size) return `${decimal.format(seconds / size)} ${unit}`;
  }
  return `${decimal.format(seconds)} s`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function since(iso) {
  if (!iso) return "–";
  const at = Date.parse(iso);
  return Number.isNaN(at) ? iso : `${age((Date.now() - at) / 1000)} ago`;
}

function clock(iso) {
  const at = iso ? new Date(iso) : null;
  return at && !Number.isNaN(at.getTime()) ? at.toLocaleTimeString("en-GB") : "–";
}

function today() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

// --- the API ---------------------------------------------------------------------------------

class SignedOut extends Error {}

function key() {
  return sessionStorage.getItem(KEY_ITEM);
}

// One call to the hub: the parsed JSON body (or a Blob with `asBlob`), or null when the hub has no
// such endpoint (404). 401 and 403 sign the console out; other failures throw with the problem's detail.
async function api(path, { method = "GET", body, asBlob = false, missingOk = true } = {}) {
  const headers = { authorization: `Bearer ${key() || ""}`, accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    const problem = await response.json().catch(() => ({}));
    signOut(problem.detail || problem.title || `the hub answered ${response.status}`);
    throw new SignedOut();
  }
  if (response.status === 404 && missingOk) return null;
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || problem.title || `the hub answered ${response.status}`);
  }
  return asBlob ? response.blob() : response.json();
}

// --- sign-in ---------------------------------------------------------------------------------

function takeKeyFromAddress() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const given = fragment.get("key");
  if (given) {
    sessionStorage.setItem(KEY_ITEM, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function signOut(detail) {
  state.signedIn = false;
  clearTimeout(state.timer);
  sessionStorage.removeItem(KEY_ITEM);
  const error = $("login-error");
  error.textContent = detail || "";
  error.hidden = !detail;
  $("login").hidden = false;
  $("login-key").focus();
  setLive("signed out", "off");
}

function signIn(given) {
  sessionStorage.setItem(KEY_ITEM, given);
  $("login").hidden = true;
  state.signedIn = true;
  state.polls = 0;
  poll();
}

// --- polling ---------------------------------------------------------------------------------

function setLive(label, mode) {
  $("live-label").textContent = label;
  $("live-state").dataset.mode = mode;
}

function banner(message) {
  const node = $("banner");
  node.textContent = message || "";
  node.hidden = !message;
}

async function poll() {
  clearTimeout(state.timer);
  if (!state.signedIn || document.hidden) return;
  const jobs = [refreshSummary(), refreshStores(), refreshAlerts(), refreshDeadLetters()];
  if (state.selectedStore && state.polls % DETAIL_EVERY === 0) jobs.push(refreshStoreDetail());
  if (state.polls % RECON_EVERY === 0) jobs.push(refreshReconciliation());
  state.polls += 1;
  const results = await Promise.allSettled(jobs);
  if (results.some((r) => r.status === "rejected" && r.reason instanceof SignedOut)) return;
  const failed = results.find((r) => r.status === "rejected");
  if (document.hidden) {
    setLive("paused", "off");
  } else if (failed) {
    banner(`Some figures could not be read: ${failed.reason.message}`);
    setLive("reconnecting", "warn");
  } else {
    banner("");
    setLive("live", "on");
  }
  $("as-of").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  if (state.signedIn && !document.hidden) state.timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(state.timer);
    if (state.signedIn) setLive("paused", "off");
  } else {
    poll();
  }
});

// --- headline figures and charts -------------------------------------------------------------

function figure(testid, value, sub, tone) {
  const node = $(testid);
  node.querySelector(".value").textContent = value;
  if (sub !== undefined) node.querySelector(".sub").textContent = sub;
  node.dataset.tone = tone || "";
}

function latencyOf(summary, name) {
  const found = (summary.latency_seconds || {})[name];
  return found && found.count ? found : null;
}

async function refreshSummary() {
  const summary = await api("/v1/metrics/summary");
  if (summary === null) {
    figure("fig-accepted", "–", "metrics not available");
    return;
  }
  const now = Date.now() / 1000;
  const at = Date.parse(summary.at) / 1000;
  const accepted = (summary.ingest || {}).accepted_total ?? 0;
  const erp = latencyOf(summary, "erp_posted");
  const loyalty = latencyOf(summary, "loyalty_accrued");
  const last = state.samples[state.samples.length - 1];
  let rate = null;
  if (last) {
    const span = Number.isNaN(at) || Number.isNaN(last.at) || at <= last.at ? now - last.t : at - last.at;
    rate = span > 0 ? Math.max(0, (accepted - last.accepted) / span) : last.rate;
  }
  state.samples.push({ t: now, at, accepted, rate, erp, loyalty });
  while (state.samples.length && state.samples[0].t < now - WINDOW_SECONDS - 5) state.samples.shift();

  const ingest = summary.ingest || {};
  figure("fig-accepted", count(accepted), `${count(ingest.duplicate_total)} duplicates · ${count(ingest.conflict_total)} conflicts`);
  const recent = state.samples.filter((x) => x.t >= now - RATE_SECONDS - 1);
  const first = recent[0];
  const steady = first && now > first.t ? Math.max(0, (accepted - first.accepted) / (now - first.t)) : rate;
  figure("fig-rate", steady === null ? "–" : decimal.format(steady), `per second · last ${RATE_SECONDS} s`);
  figure("fig-erp-p99", erp ? short(erp.p99) : "–", erp ? `p50 ${short(erp.p50)} · ${count(erp.count)} posted` : "nothing posted yet");
  figure(
    "fig-loyalty-p99",
    loyalty ? short(loyalty.p99) : "–",
    loyalty ? `p50 ${short(loyalty.p50)} · ${count(loyalty.count)} accrued` : "nothing accrued yet",
  );
  const flows = Object.values(summary.flows || {});
  const dead = flows.reduce((sum, f) => sum + (f.dead_letters || 0), 0);
  const oldest = Math.max(0, ...flows.map((f) => f.oldest_dead_letter_age_seconds || 0));
  figure("fig-dead-letters", count(dead), dead ? `oldest ${age(oldest)}` : "none waiting", dead ? "bad" : "good");
  const stores = summary.stores || {};
  figure(
    "fig-stores",
    `${count(stores.online)} / ${count(stores.offline)}`,
    `${count(stores.unknown)} unknown · ${count(stores.buffered)} buffering`,
    stores.offline ? "bad" : "good",
  );
  drawCharts();
  drawFlows(summary);
}

// Each flow: how far it is, and what holds it back (the error of the batch that keeps failing:
// an ERP in maintenance, a platform away); each downstream system: its breaker and counters.
function drawFlows(summary) {
  const flows = Object.entries(summary.flows || {}).sort(([a], [b]) => a.localeCompare(b));
  fill(
    $("flows-table").querySelector("tbody"),
    ...flows.map(([name, f]) => {
      const waiting = (f.failures || 0) > 0;
      const stateText = waiting ? `waiting (${count(f.failures)} tries): ${f.last_error || "failing"}` : "running";
      return el(
        "tr",
        { "data-testid": "flow-row", "data-flow": name },
        el("td", {}, el("code", { text: name })),
        el("td", { class: "num", text: count(f.position) }),
        el("td", { class: "num", text: count(f.lag) }),
        el("td", { class: "num", text: count(f.pending) }),
        el("td", { class: "num", text: count(f.handled_total) }),
        el("td", { class: "num", text: count(f.retries_total) }),
        el("td", { class: "num", text: count(f.dead_letters) }),
        el("td", { class: "reason flow-state", "data-state": waiting ? "waiting" : "running", title: stateText, text: stateText }),
      );
    }),
  );
  const systems = Object.entries(summary.downstream || {}).sort(([a], [b]) => a.localeCompare(b));
  fill(
    $("downstream-table").querySelector("tbody"),
    ...systems.map(([name, d]) =>
      el(
        "tr",
        { "data-testid": "downstream-row", "data-system": name },
        el("td", {}, el("code", { text: name })),
        el("td", {}, el("span", { class: "pill", "data-status": d.breaker === "closed" ? "matched" : "mismatched", text: d.breaker })),
        el("td", { class: "num", text: count(d.calls) }),
        el("td", { class: "num", text: count(d.failures) }),
        el("td", { class: "num", text: count(d.throttled) }),
        el("td", { class: "num", text: `${count(d.paused_by_maintenance)} / ${count(d.paused_by_breaker)}` }),
      ),
    ),
  );
}

function drawCharts() {
  const points = (pick) => state.samples.map((s) => [s.t, pick(s)]);
  lineChart($("chart-throughput"), [{ name: "accepted/s", cls: "s-rate", points: points((s) => s.rate), area: true }], {
    format: (v) => decimal.format(v),
    minTop: 1,
  });
  lineChart(
    $("chart-latency"),
    [
      { name: "ERP p99", cls: "s-erp", points: points((s) => s.erp && s.erp.p99) },
      { name: "ERP p50", cls: "s-erp dashed", points: points((s) => s.erp && s.erp.p50) },
      { name: "loyalty p99", cls: "s-loyalty", points: points((s) => s.loyalty && s.loyalty.p99) },
      { name: "loyalty p50", cls: "s-loyalty dashed", points: points((s) => s.loyalty && s.loyalty.p50) },
    ],
    { format: short, minTop: 0.1 },
  );
}

// A round step for about four gridlines up to `value`: 1, 2 or 5 times a power of ten.
function niceStep(value) {
  const rough = value / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  for (const step of [1, 2, 5]) if (rough <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

// A line chart of the last WINDOW_SECONDS: `series` of [time, value|null] points, a gap at null.
function lineChart(host, series, { format, minTop }) {
  const width = Math.max(280, host.clientWidth || 600);
  const height = 170;
  const [left, right, top, bottom] = [56, 10, 8, 22];
  const now = Date.now() / 1000;
  const start = now - WINDOW_SECONDS;
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const step = niceStep(Math.max(minTop, ...values) * 1.05);
  const ceiling = step * Math.max(1, Math.ceil((Math.max(minTop, ...values) * 1.05) / step));
  const x = (t) => left + ((t - start) / WINDOW_SECONDS) * (width - left - right);
  const y = (v) => top + (1 - v / ceiling) * (height - top - bottom);
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let v = 0; v <= ceiling + step / 2; v += step) {
    chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end", text: format(v) }));
  }
  for (let m = 5; m >= 0; m -= 1) {
    const t = now - m * 60;
    const anchor = m === 0 ? "end" : m === 5 ? "start" : "middle";
    chart.append(svg("text", { class: "tick", x: x(t), y: height - 6, "text-anchor": anchor, text: m ? `−${m} min` : "now" }));
  }
  for (const s of series) {
    let line = "";
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined || t < start) {
        pen = false;
        continue;
      }
      line += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (!line) continue;
    if (s.area) {
      const drawn = s.points.filter(([t, v]) => v !== null && v !== undefined && t >= start);
      if (drawn.length > 1) {
        const base = y(0).toFixed(1);
        const fill = `M${x(drawn[0][0]).toFixed(1)},${base}` + line.replace(/^M/, "L") + `L${x(drawn[drawn.length - 1][0]).toFixed(1)},${base}Z`;
        chart.append(svg("path", { class: `area ${s.cls}`, d: fill }));
      }
    }
    chart.append(svg("path", { class: `series ${s.cls}`, d: line }));
  }
  const legend = el(
    "div",
    { class: "chart-legend" },
    series.map((s) => {
      const latest = [...s.points].reverse().find((p) => p[1] !== null && p[1] !== undefined);
      return el("span", { class: `key ${s.cls}` }, el("i"), s.name, el("b", { text: latest ? format(latest[1]) : "–" }));
    }),
  );
  fill(host, chart, legend);
}

// --- the store grid and one store's panel ----------------------------------------------------

function categoryOf(store) {
  if (store.status === "online" && (store.buffer_depth > 0 || store.oldest_unsent_age_seconds > 0)) return "behind";
  if (store.status === "buffered" || store.status === "behind") return "behind";
  return CATEGORIES.some(([c]) => c === store.status) ? store.status : "unknown";
}

async function refreshStores() {
  const health = await api("/v1/stores/health");
  if (health === null) return;
  state.stores = health.stores || [];
  drawStores();
}

function drawStores() {
  const grid = $("store-grid");
  const ids = state.stores.map((s) => s.store_id);
  if (ids.length !== state.cells.size || ids.some((id) => !state.cells.has(id))) {
    const cell = (id) => el("button", { type: "button", class: "cell", "data-testid": "store-cell", "data-store-id": id, role: "listitem" });
    state.cells = new Map(ids.map((id) => [id, cell(id)]));
    fill(grid, ...state.cells.values());
  }
  grid.classList.toggle("labelled", ids.length <= LABELLED_UP_TO);
  const counts = Object.fromEntries(CATEGORIES.map(([c]) => [c, 0]));
  const needle = state.storeFilter.trim().toLowerCase();
  for (const store of state.stores) {
    const category = categoryOf(store);
    counts[category] += 1;
    const cell = state.cells.get(store.store_id);
    cell.dataset.status = category;
    cell.textContent = ids.length <= LABELLED_UP_TO ? store.store_id : "";
    const label = CATEGORIES.find(([c]) => c === category)[1];
    const extra = store.buffer_depth ? ` · ${store.buffer_depth} waiting` : "";
    cell.title = `${store.store_id} · ${label}${extra} · heartbeat ${since(store.last_heartbeat_at)}`;
    cell.hidden = (needle && !store.store_id.toLowerCase().includes(needle)) || (state.categoryFilter && state.categoryFilter !== category);
    cell.classList.toggle("selected", store.store_id === state.selectedStore);
  }
  const legend = $("store-counts");
  fill(legend,
    el("span", { class: "total" }, `${count(ids.length)} stores`),
    ...CATEGORIES.map(([c, label]) =>
      el(
        "button",
        {
          type: "button",
          class: `chip${state.categoryFilter === c ? " active" : ""}`,
          "data-status": c,
          "data-testid": `store-count-${c}`,
          "aria-pressed": state.categoryFilter === c ? "true" : "false",
          onclick: () => {
            state.categoryFilter = state.categoryFilter === c ? null : c;
            drawStores();
          },
        },
        el("i"),
        `${label} `,
        el("b", { text: count(counts[c]) }),
      ),
    ),
  );
}

function openStore(storeId) {
  state.selectedStore = storeId;
  $("store-panel-title").textContent = `Store ${storeId}`;
  fill($("store-panel-body"), el("p", { class: "muted", text: "Loading…" }));
  $("store-panel").hidden = false;
  drawStores();
  refreshStoreDetail().catch(() => {});
}

function closeStore() {
  state.selectedStore = null;
  $("store-panel").hidden = true;
  drawStores();
}

async function refreshStoreDetail() {
  const storeId = state.selectedStore;
  if (!storeId) return;
  let detail = await api(`/v1/stores/${encodeURIComponent(storeId)}/detail`);
  if (detail === null) detail = state.stores.find((s) => s.store_id === storeId) || { store_id: storeId };
  if (storeId !== state.selectedStore) return;
  const row = (label, value, testid) => [el("dt", { text: label }), el("dd", { "data-testid": testid }, value)];
  const category = categoryOf(detail);
  const dead = detail.dead_letters || null;
  const missing = detail.missing || [];
  // the detail's conflicts are {count, newest}; a bare health entry has the agent's count only
  const conflicts = detail.conflicts && typeof detail.conflicts === "object" ? detail.conflicts : null;
  const conflictList = conflicts ? (Array.isArray(conflicts) ? conflicts : conflicts.newest || []) : [];
  const conflictCount = conflicts ? (Array.isArray(conflicts) ? conflicts.length : conflicts.count) : detail.conflicts;
  const master = detail.masterdata || null;
  const books = detail.reconciliation || null;
  const heard = detail.last_heartbeat_at;
  const skew = detail.clock_skew_seconds;
  const masterText = master && (master.up_to_date ? `version ${master.acked_version ?? "–"}, up to date` : `${count(master.behind)} versions behind`);
  const items = (list, show) => (list.length ? el("ul", { class: "plain" }, list.slice(0, 8).map((x) => el("li", {}, show(x)))) : null);
  fill($("store-panel-body"),
    el("div", { class: `status-line`, "data-status": category }, el("i"), CATEGORIES.find(([c]) => c === category)[1]),
    el(
      "dl",
      { class: "facts" },
      row("Buffer depth", count(detail.buffer_depth), "detail-buffer"),
      row("Oldest unsent", age(detail.oldest_unsent_age_seconds), "detail-oldest"),
      row("Last heartbeat", heard ? `${since(heard)} (${clock(heard)})` : "never", "detail-heartbeat"),
      row("Clock skew", skew === null || skew === undefined ? "–" : duration(Math.abs(skew)), "detail-skew"),
      row("Agent version", detail.agent_version || "–", "detail-version"),
      row("Delivered", count(detail.delivered_total), "detail-delivered"),
      row("Last error", detail.last_error || "none", "detail-error"),
      row("Missing", missing.length ? `${count(missing.length)} asked for, not held` : "none", "detail-missing"),
      row("Dead letters", dead ? count(dead.count) : "–", "detail-dead-letters"),
      row("Conflicts", count(conflictCount), "detail-conflicts"),
      master ? row("Master data", masterText, "detail-masterdata") : null,
      books
        ? row(
            `Books ${books.business_day}`,
            [
              el("span", { class: "pill", "data-status": books.status, text: books.status }),
              " ",
              el("a", { href: "#", class: "report-link", onclick: (e) => openReport(e, books.business_day, detail.store_id) }, "report"),
            ],
            "detail-books",
          )
        : null,
    ),
    missing.length ? el("h3", { text: "Missing transactions" }) : null,
    items(missing, (m) => el("code", { text: m })),
    dead && dead.newest && dead.newest.length ? el("h3", { text: "Newest dead letters" }) : null,
    dead && dead.newest ? items(dead.newest, (d) => [el("code", { text: d.transaction_id || d.subject || d.id }), " ", muted(d.reason || "")]) : null,
    conflictList.length ? el("h3", { text: "Latest conflicts" }) : null,
    items(conflictList, (c) => [el("code", { text: typeof c === "string" ? c : c.transaction_id }), " ", muted(c.received_at ? since(c.received_at) : "")]),
  );
}

// --- dead letters ----------------------------------------------------------------------------

function reasonForm(label, onConfirm, onCancel) {
  const input = el("input", { type: "text", value: DEFAULT_WHY, "aria-label": "Why", "data-testid": "replay-why" });
  const form = el(
    "form",
    {
      class: "inline-form",
      onsubmit: (event) => {
        event.preventDefault();
        onConfirm(input.value.trim() || DEFAULT_WHY, form);
      },
    },
    input,
    el("button", { type: "submit", class: "primary", "data-testid": "replay-confirm" }, label),
    el("button", { type: "button", class: "ghost", onclick: onCancel, "data-testid": "replay-cancel" }, "Cancel"),
  );
  setTimeout(() => input.select(), 0);
  return form;
}

async function replay(selection, why, form) {
  form.querySelectorAll("button, input").forEach((n) => (n.disabled = true));
  try {
    const answer = await api("/v1/dead-letters/replay", { method: "POST", body: { ...selection, why }, missingOk: false });
    return answer;
  } catch (error) {
    if (!(error instanceof SignedOut)) {
      form.querySelectorAll("button, input").forEach((n) => (n.disabled = false));
      banner(`Replay failed: ${error.message}`);
    }
    return null;
  }
}

// A dead letter's reason, its error's class set apart from what it says, on at most two lines.
function reasonText(reason) {
  const split = /^([A-Za-z_][\w.]*(?:Error|Exception)):\s*([\s\S]*)$/.exec(reason || "");
  if (!split) return el("div", { class: "clamp", text: reason || "–" });
  return el("div", { class: "clamp" }, el("span", { class: "error-class", text: split[1] }), " ", split[2]);
}

// A dead letter's row; its Replay button opens a row below it that asks why.
function deadLetterRow(dl) {
  const made = { dl, row: null, form: null, ageCell: null };
  const closeForm = () => {
    made.form?.remove();
    made.form = null;
    button.disabled = false;
  };
  const done = async (why, form) => {
    const answer = await replay({ ids: [dl.id] }, why, form);
    if (answer === null) return;
    state.replayed.add(dl.id);
    made.row.remove();
    made.form?.remove();
    state.deadRows.delete(dl.id);
    state.deadTotal = Math.max(0, state.deadTotal - 1);
    drawDeadLetterTotals();
  };
  const ask = () => {
    if (made.form) return;
    button.disabled = true;
    made.form = el(
      "tr",
      { class: "replay-row", "data-testid": "replay-form", "data-dead-letter-id": dl.id },
      el("td", { colspan: 6 }, el("span", { class: "muted", text: "Why replay it?" }), reasonForm("Replay", done, closeForm)),
    );
    made.row.after(made.form);
  };
  const button = el("button", { type: "button", class: "ghost", "data-testid": "replay", onclick: ask }, "Replay");
  const trace = () => dl.transaction_id && showTrace(dl.transaction_id);
  made.ageCell = el("td", { class: "num", text: age(dl.age_seconds) });
  made.row = el(
    "tr",
    { "data-testid": "dead-letter", "data-dead-letter-id": dl.id, "data-group": dl.group },
    el("td", { title: dl.reason }, reasonText(dl.reason)),
    el("td", {}, el("span", { class: "tag", text: dl.group })),
    el("td", { class: "tx" }, el("code", { class: "link", title: "show its trace", text: dl.transaction_id || dl.subject || "–", onclick: trace })),
    el("td", { class: "num", text: count(dl.attempts) }),
    made.ageCell,
    el("td", { class: "actions" }, button),
  );
  return made;
}

async function refreshDeadLetters() {
  const answer = await api("/v1/dead-letters?limit=200");
  const body = $("dead-letters").querySelector("tbody");
  if (answer === null) {
    $("dead-letters-empty").textContent = "Dead letters are not available on this hub.";
    return;
  }
  const listed = (answer.dead_letters || []).filter((dl) => !state.replayed.has(dl.id));
  const seen = new Set();
  for (const dl of listed) {
    seen.add(dl.id);
    const known = state.deadRows.get(dl.id);
    if (known) {
      known.ageCell.textContent = age(dl.age_seconds);
      known.dl = dl;
    } else {
      const made = deadLetterRow(dl);
      state.deadRows.set(dl.id, made);
      body.append(made.row);
    }
  }
  for (const [id, known] of state.deadRows) {
    if (!seen.has(id)) {
      known.row.remove();
      known.form?.remove();
      state.deadRows.delete(id);
    }
  }
  // newest first, as listed; rows are moved only when one arrived out of place
  const order = listed.flatMap((dl) => {
    const known = state.deadRows.get(dl.id);
    return known.form ? [known.row, known.form] : [known.row];
  });
  if (order.some((row, i) => body.children[i] !== row)) body.append(...order);
  state.deadTotal = answer.total ?? listed.length;
  drawDeadLetterTotals();
}

function drawDeadLetterTotals() {
  const rows = [...state.deadRows.values()];
  $("dead-letters-total").textContent = count(Math.max(rows.length, state.deadTotal));
  $("dead-letters-empty").hidden = rows.length > 0;
  $("dead-letters-empty").textContent = "No dead letters.";
  const groups = new Map();
  for (const { dl } of rows) groups.set(dl.group, (groups.get(dl.group) || 0) + 1);
  const host = $("dead-letter-groups");
  for (const group of [...state.groupForms.keys()]) if (!groups.has(group)) state.groupForms.delete(group);
  fill(host,
    ...[...groups].map(([group, n]) => {
      if (state.groupForms.has(group)) return state.groupForms.get(group);
      const attrs = { type: "button", class: "ghost", "data-testid": "replay-group", "data-group": group, onclick: () => askGroup(group) };
      return el("button", attrs, `Replay all ${group} (${count(n)})`);
    }),
  );
}

function askGroup(group) {
  const form = reasonForm(
    `Replay all ${group}`,
    async (why, f) => {
      const answer = await replay({ group }, why, f);
      if (answer !== null) {
        for (const [id, known] of state.deadRows) {
          if (known.dl.group === group) {
            state.replayed.add(id);
            known.row.remove();
            known.form?.remove();
            state.deadRows.delete(id);
          }
        }
        state.deadTotal = Math.max(0, state.deadTotal - (answer.replayed || 0));
        state.groupForms.delete(group);
        drawDeadLetterTotals();
      }
    },
    () => {
      state.groupForms.delete(group);
      drawDeadLetterTotals();
    },
  );
  state.groupForms.set(group, form);
  drawDeadLetterTotals();
}

// --- alerts ----------------------------------------------------------------------------------

async function refreshAlerts() {
  const answer = await api("/v1/alerts?state=firing");
  const host = $("alerts");
  if (answer === null) {
    fill(host, el("p", { class: "empty", text: "Alerts are not available on this hub." }));
    figure("fig-alerts", "–", "not available");
    return;
  }
  const alerts = answer.alerts || [];
  $("alerts-count").textContent = count(alerts.length);
  const worst = ["critical", "warning", "info"].find((s) => alerts.some((a) => a.severity === s));
  figure("fig-alerts", count(alerts.length), worst ? `worst: ${worst}` : "all quiet", alerts.length ? (worst === "critical" ? "bad" : "warn") : "good");
  if (!alerts.length) {
    fill(host, el("p", { class: "empty", text: "No alert is firing." }));
    return;
  }
  fill(host,
    el(
      "ul",
      { class: "alerts" },
      alerts.map((a) =>
        el(
          "li",
          { class: "alert", "data-testid": "alert", "data-alert-id": a.id, "data-severity": a.severity },
          el("span", { class: "severity", text: a.severity }),
          el(
            "div",
            { class: "alert-text" },
            el("div", { class: "alert-summary", text: a.summary || a.rule }),
            el("div", { class: "muted" }, `${a.rule}${a.subject ? ` · ${a.subject}` : ""} · since ${clock(a.fired_at)} (${since(a.fired_at)})`),
          ),
          a.acknowledged_at
            ? el("span", { class: "muted ack", "data-testid": "alert-acknowledged" }, `acknowledged${a.acknowledged_by ? ` by ${a.acknowledged_by}` : ""}`)
            : el("button", { type: "button", class: "ghost", "data-testid": "acknowledge", onclick: (e) => acknowledge(a, e.currentTarget) }, "Acknowledge"),
        ),
      ),
    ),
  );
}

async function acknowledge(alert, button) {
  button.disabled = true;
  try {
    await api(`/v1/alerts/${encodeURIComponent(alert.id)}/acknowledge`, { method: "POST", missingOk: false });
    button.replaceWith(el("span", { class: "muted ack", "data-testid": "alert-acknowledged", text: "acknowledged" }));
  } catch (error) {
    if (!(error instanceof SignedOut)) {
      button.disabled = false;
      banner(`Acknowledge failed: ${error.message}`);
    }
  }
}

// --- transaction search and trace ------------------------------------------------------------

async function search(query) {
  const q = query.trim();
  const results = $("trace-results");
  if (!q) return;
  fill(results, el("p", { class: "muted", text: "Searching…" }));
  fill($("trace-timeline"));
  try {
    const found = await api(`/v1/transactions-search?q=${encodeURIComponent(q)}`);
    if (found === null) {
      fill(results);
      await showTrace(q);
      return;
    }
    if (found.length === 1) {
      fill(results);
      await showTrace(found[0].transaction_id);
      return;
    }
    if (!found.length) {
      fill(results, el("p", { class: "empty", "data-testid": "trace-none", text: `No transaction matches “${q}”.` }));
      return;
    }
    fill(results,
      el(
        "ul",
        { class: "results" },
        found.slice(0, 50).map((t) =>
          el(
            "li",
            {},
            el(
              "button",
              { type: "button", class: "result", "data-testid": "trace-result", onclick: () => showTrace(t.transaction_id) },
              el("code", { text: t.transaction_id }),
              muted(` ${t.business_day || ""} · received ${clock(t.received_at)}`),
            ),
          ),
        ),
      ),
      found.length > 50 ? el("p", { class: "muted", text: `${count(found.length - 50)} more; narrow the search.` }) : null,
    );
  } catch (error) {
    if (!(error instanceof SignedOut)) fill(results, el("p", { class: "error", text: error.message }));
  }
}

async function showTrace(transactionId) {
  const host = $("trace-timeline");
  fill(host, el("p", { class: "muted", text: "Loading trace…" }));
  let trace;
  try {
    trace = await api(`/v1/transactions/${encodeURIComponent(transactionId)}/trace`);
  } catch (error) {
    if (!(error instanceof SignedOut)) fill(host, el("p", { class: "error", text: error.message }));
    return;
  }
  if (trace === null) {
    fill(host, el("p", { class: "empty", "data-testid": "trace-none", text: `No transaction ${transactionId}.` }));
    return;
  }
  const hops = trace.hops || [];
  const offsets = hops.map((h) => h.since_received_ms);
  const low = Math.min(0, ...offsets);
  const high = Math.max(1, ...offsets);
  const span = high - low;
  const pct = (ms) => `${(((ms - low) / span) * 100).toFixed(2)}%`;
  let previous = Math.max(low, Math.min(0, ...offsets));
  const rows = hops.map((h) => {
    const from = Math.min(previous, h.since_received_ms);
    const bar = el("span", { class: "bar" });
    bar.style.left = pct(from);
    bar.style.width = `max(3px, ${(((h.since_received_ms - from) / span) * 100).toFixed(2)}%)`;
    previous = Math.max(previous, h.since_received_ms);
    const family = h.hop.split(".")[0];
    return el(
      "div",
      { class: "hop", "data-testid": "trace-hop", "data-hop": h.hop, "data-family": family, title: h.detail || "" },
      el("span", { class: "hop-name", text: h.hop }),
      el("span", { class: "track" }, bar),
      el("span", { class: "hop-ms", text: `${h.since_received_ms >= 0 ? "+" : ""}${integer.format(h.since_received_ms)} ms` }),
    );
  });
  fill(host,
    el(
      "div",
      { class: "trace-head", "data-testid": "trace" },
      el("code", { "data-testid": "trace-transaction", text: trace.transaction_id }),
      trace.trace_id ? el("span", { class: "muted" }, "trace ", el("code", { text: trace.trace_id })) : null,
    ),
    rows.length ? el("div", { class: "timeline" }, rows) : el("p", { class: "empty", text: "No hop recorded yet." }),
  );
}

// --- reconciliation --------------------------------------------------------------------------

async function refreshReconciliation() {
  const day = $("recon-day").value || today();
  const answer = await api(`/v1/reconciliation?day=${encodeURIComponent(day)}`);
  const body = $("reconciliation").querySelector("tbody");
  const empty = $("recon-empty");
  if (answer === null) {
    fill(body);
    empty.hidden = false;
    empty.textContent = "Reconciliation is not available on this hub.";
    return;
  }
  // a store-day whose store has not closed it yet is open, not mismatched: no Z report to compare
  const days = (answer.store_days || []).map((d) =>
    !d.z_report && (!d.posting || d.posting.day_close === "none") ? { ...d, status: "open" } : d,
  );
  const statuses = new Map();
  for (const d of days) statuses.set(d.status, (statuses.get(d.status) || 0) + 1);
  const chip = ([status, n]) => el("span", { class: "chip", "data-status": status }, el("i"), `${status} `, el("b", { text: count(n) }));
  fill($("recon-counts"), [...statuses].map(chip));
  fill(body,
    ...days.map((d) => {
      const differences = d.differences || [];
      return el(
        "tr",
        { "data-testid": "recon-row", "data-store-id": d.store_id, "data-status": d.status },
        el("td", {}, el("code", { text: d.store_id })),
        el("td", {}, el("span", { class: "pill", "data-status": d.status, text: d.status })),
        el("td", { class: "num", text: count(d.transaction_count) }),
        el(
          "td",
          { class: "reason", title: differences.join("\n") },
          differences.length ? `${differences[0]}${differences.length > 1 ? ` (+${differences.length - 1} more)` : ""}` : "—",
          " ",
          el("a", { href: "#", class: "report-link", "data-testid": "recon-store-report", onclick: (e) => openReport(e, day, d.store_id) }, "report"),
        ),
      );
    }),
  );
  empty.hidden = days.length > 0;
  empty.textContent = `No store-day to show for ${day}.`;
}

// The HTML report needs the key, so it is fetched here and handed to the browser as a file.
async function openReport(event, day, store) {
  event.preventDefault();
  const only = (name) => (store ? `&${name}=${encodeURIComponent(store)}` : "");
  const query = `day=${encodeURIComponent(day)}`;
  try {
    let blob = await api(`/v1/reconciliation/report?${query}${only("store_id")}`, { asBlob: true });
    if (blob === null) blob = await api(`/v1/reconciliation?${query}${only("store")}&format=html`, { asBlob: true, missingOk: false });
    const url = URL.createObjectURL(new Blob([blob], { type: "text/html" }));
    const link = el("a", { href: url, download: `reconciliation-${day}${store ? `-${store}` : ""}.html` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    if (!(error instanceof SignedOut)) banner(`The report could not be read: ${error.message}`);
  }
}

// --- wiring ----------------------------------------------------------------------------------

function start() {
  takeKeyFromAddress();
  $("recon-day").value = today();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("login-key").value.trim();
    if (given) signIn(given);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("store-filter").addEventListener("input", (event) => {
    state.storeFilter = event.target.value;
    drawStores();
  });
  $("store-grid").addEventListener("click", (event) => {
    const cell = event.target.closest("[data-store-id]");
    if (cell) openStore(cell.dataset.storeId);
  });
  $("store-panel-close").addEventListener("click", closeStore);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.selectedStore) closeStore();
  });
  $("trace-search").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("trace-query").value);
  });
  $("recon-day").addEventListener("change", () => refreshReconciliation().catch(() => {}));
  $("recon-report").addEventListener("click", (event) => openReport(event, $("recon-day").value || today(), null));
  window.addEventListener("resize", drawCharts);
  if (key()) {
    state.signedIn = true;
    poll();
  } else {
    signOut("");
  }
}

start();

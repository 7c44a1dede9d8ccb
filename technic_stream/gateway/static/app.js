// technic-stream dashboard: REST (/v1) for state, one WebSocket (/v1/ws) for live data.
// The socket recovers each channel from the last offset and epoch this page saw (the
// gateway's Centrifugo-style recovery); the status pill says how that went.

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "technic-stream.api_key";

// -- REST ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

const auth = { key: null, token: null, expiresAt: 0, owner: null, refreshTimer: null };

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${auth.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401 && auth.key) {  // the token lapsed (or the gateway restarted): once more
    await signIn(auth.key);
    headers.Authorization = `Bearer ${auth.token}`;
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({ title: r.statusText }));
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

async function signIn(key) {
  const r = await fetch("/v1/auth/token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ api_key: key }),
  });
  const data = await r.json().catch(() => ({ title: r.statusText }));
  if (!r.ok) throw new ApiError(r.status, data);
  Object.assign(auth, { key, token: data.token, expiresAt: data.expires_at * 1000, owner: data.owner });
  clearTimeout(auth.refreshTimer);
  const refreshIn = Math.max(5_000, auth.expiresAt - Date.now() - 60_000);
  auth.refreshTimer = setTimeout(async () => {
    try {
      await signIn(key);
      live.refresh();
    } catch (e) { console.warn("token refresh failed", e); }
  }, refreshIn);
  return data;
}

// -- the live connection -------------------------------------------------------------------

class Live {
  constructor() {
    this.subs = new Map();  // channel -> {handler, policy, offset, epoch, recoverable}
    this.ws = null;
    this.attempt = 0;
    this.nextId = 1;
    this.everConnected = false;
    this.closedByUs = false;
  }

  setState(state, detail = "") {
    const el = $("#conn");
    el.dataset.state = state;
    el.textContent = detail ? `${state} · ${detail}` : state;
  }

  start() {
    this.closedByUs = false;
    this.open();
  }

  stop() {
    this.closedByUs = true;
    if (this.ws) this.ws.close(1000);
    this.subs.clear();
    this.setState("offline");
  }

  open() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/v1/ws?token=${encodeURIComponent(auth.token)}`);
    this.ws = ws;
    this.recovering = 0;
    this.lostAny = false;
    ws.onopen = () => {
      this.attempt = 0;
      if (this.everConnected && this.onReconnect) this.onReconnect();
      for (const [channel, sub] of this.subs) this.sendSubscribe(channel, sub, true);
      if (this.recovering === 0) this.setState("connected");
      else this.setState("reconnecting", "recovering");
      this.everConnected = true;
    };
    ws.onmessage = (ev) => {
      for (const line of String(ev.data).split("\n")) {
        if (line) this.onFrame(JSON.parse(line));
      }
    };
    ws.onclose = async (ev) => {
      if (this.ws !== ws || this.closedByUs) return;
      this.ws = null;
      this.setState("reconnecting", ev.code ? `closed ${ev.code}` : "");
      if (ev.code === 4401 && auth.key) {
        try { await signIn(auth.key); } catch (e) { /* retried below */ }
      }
      const delay = Math.min(10_000, 250 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      setTimeout(() => this.open(), delay);
    };
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  refresh() {
    this.send({ id: this.nextId++, cmd: "refresh", token: auth.token });
  }

  sendSubscribe(channel, sub, again, counted = true) {
    const cmd = { id: this.nextId++, cmd: "subscribe", channel };
    if (sub.policy) cmd.policy = sub.policy;
    if (again && sub.recoverable && sub.epoch !== null) {
      cmd.since = { offset: sub.offset, epoch: sub.epoch };
      if (counted && !sub.fresh) this.recovering += 1;
    }
    this.send(cmd);
  }

  // fromStart: the channel is new to this page and everything it holds is wanted (a
  // scan's channel, subscribed to right after the scan was submitted)
  subscribe(channel, handler, { policy = null, recoverable = true, fromStart = false } = {}) {
    const sub = { handler, policy, recoverable, offset: 0, epoch: null, fresh: fromStart, rewinding: false };
    if (fromStart) sub.epoch = "";
    this.subs.set(channel, sub);
    this.sendSubscribe(channel, sub, fromStart);
    return sub;
  }

  unsubscribe(channel) {
    if (this.subs.delete(channel)) this.send({ id: this.nextId++, cmd: "unsubscribe", channel });
  }

  onFrame(msg) {
    const sub = msg.channel ? this.subs.get(msg.channel) : null;
    switch (msg.type) {
      case "pub":
        if (!sub || sub.rewinding) return;
        if (msg.epoch === sub.epoch && msg.offset <= sub.offset) return;  // seen already
        sub.offset = msg.offset;
        sub.epoch = msg.epoch;
        sub.handler(msg.data, msg);
        return;
      case "subscribed":
        if (!sub) return;
        if (sub.fresh) {  // a new channel's whole history, read from its start
          if (msg.recovered === false && !sub.rewinding) {
            // published before we came (another epoch than the empty one asked for):
            // read it again from the start of the epoch it has
            sub.rewinding = true;
            this.send({ id: this.nextId++, cmd: "unsubscribe", channel: msg.channel });
            Object.assign(sub, { offset: 0, epoch: msg.epoch });
            this.sendSubscribe(msg.channel, sub, true, false);
            return;
          }
          sub.fresh = false;
          sub.rewinding = false;
          if (msg.recovered === false && sub.onGap) sub.onGap();  // trimmed already
          if (msg.recovered === false) Object.assign(sub, { offset: msg.offset, epoch: msg.epoch });
          return;
        }
        if (msg.recovered === false) {  // the history no longer covers the gap: reload
          this.lostAny = true;
          if (sub.onGap) sub.onGap();
        }
        if (sub.epoch === null || msg.recovered === false) {
          sub.offset = msg.offset;
          sub.epoch = msg.epoch;
        }
        if ("recovered" in msg) {
          this.recovering = Math.max(0, this.recovering - 1);
          if (this.recovering === 0) {
            this.setState(this.lostAny ? "gap" : "recovered",
              this.lostAny ? "history lost, state reloaded" : "no message lost");
          }
        }
        if (sub.onSubscribed) sub.onSubscribed(msg);
        return;
      case "unsubscribed":
        if (sub && msg.resubscribe) {
          if (msg.epoch !== undefined) { sub.offset = msg.offset; sub.epoch = msg.epoch; }
          this.sendSubscribe(msg.channel, sub, true);
        }
        return;
      case "error":
        if (msg.code === 4429 || msg.code === 4503) {  // rate limited / reconnecting: retry
          const retry = (msg.retry_after_s || 1) * 1000;
          for (const [channel, s] of this.subs) {
            if (s.pendingRetry) continue;
            s.pendingRetry = setTimeout(() => { s.pendingRetry = null; this.sendSubscribe(channel, s, true); }, retry);
          }
        } else if (msg.code !== 4409) {
          console.warn("gateway error", msg);
        }
        return;
      default:
    }
  }
}

const live = new Live();

// -- helpers ---------------------------------------------------------------------------------

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 16);
}

function fmtNum(x, digits = 2) {
  if (x === null || x === undefined) return "–";
  if (Math.abs(x) >= 1e6) return (x / 1e6).toFixed(2) + "M";
  return Number(x).toFixed(digits);
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// A rule error under its input: the text, a caret under the column, and the reason.
function showRuleError(box, input, err) {
  if (!err) { box.hidden = true; input.classList.remove("invalid"); return; }
  const item = (err.problem && err.problem.errors && err.problem.errors[0]) || {};
  const column = item.column;
  box.querySelector(".caret").textContent =
    column ? `${input.value}\n${" ".repeat(Math.max(0, column - 1))}^` : "";
  box.querySelector(".reason").textContent = column
    ? `column ${column}: ${item.reason}` : (err.message || String(err));
  box.dataset.column = column || "";
  box.hidden = false;
  input.classList.add("invalid");
  if (column) {
    input.focus();
    input.setSelectionRange(column - 1, column);
  }
}

// -- scans -----------------------------------------------------------------------------------

const scan = { id: null, rows: [], sortKey: "rank", sortDir: 1, final: false };

function scanBody() {
  const body = {
    scan_id: `s-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
    rule: $("#scan-rule").value.trim(),
    tf: $("#scan-tf").value,
    mode: $("#scan-mode").value,
    limit: Number($("#scan-limit").value) || 100,
  };
  if ($("#scan-universe").value === "__symbols") {
    body.symbols = $("#scan-symbols").value.split(/[\s,]+/).filter(Boolean).map((s) => s.toUpperCase());
  } else {
    body.universe = $("#scan-universe").value;
  }
  if (body.mode === "history") body.start = Date.parse($("#scan-start").value || "2000-01-01");
  return body;
}

async function runScan(ev) {
  ev.preventDefault();
  showRuleError($("#scan-rule-error"), $("#scan-rule"), null);
  if (scan.id) live.unsubscribe(`scan.${scan.id}`);
  const body = scanBody();
  Object.assign(scan, { id: body.scan_id, rows: [], final: false });
  renderScanRows();
  $("#scan-summary").textContent = "";
  try {
    await api("POST", "/v1/scans", body);
  } catch (err) {
    scan.id = null;
    if (err.status === 422) showRuleError($("#scan-rule-error"), $("#scan-rule"), err);
    else $("#scan-summary").textContent = `Scan refused: ${err.message}`;
    return;
  }
  $("#scan-progress").hidden = false;
  $("#scan-cancel").disabled = false;
  setProgress({ stage: "queued", percent: 0 });
  // the channel exists once the scan does; its history from the start holds whatever the
  // worker sent before this subscription arrived
  const sub = live.subscribe(`scan.${body.scan_id}`, onScanMessage, { fromStart: true });
  sub.onGap = () => reloadScan(body.scan_id);
}

function setProgress(p) {
  $("#scan-bar").style.width = `${p.percent || 0}%`;
  $("#scan-bar").dataset.percent = p.percent || 0;
  $("#scan-stage").textContent = p.queue_position ? `queued (#${p.queue_position})` : p.stage;
  $("#scan-percent").textContent = `${(p.percent || 0).toFixed(1)} %`;
  $("#scan-rate").textContent = p.rate ? `${Math.round(p.rate).toLocaleString()} symbols/s` : "";
  $("#scan-eta").textContent = p.eta_ms !== null && p.eta_ms !== undefined && p.stage !== "done" ? `ETA ${fmtMs(p.eta_ms)}` : "";
  $("#scan-current").textContent = p.current_symbol ? `at ${p.current_symbol}` : "";
  const looked = (p.cache_hits || 0) + (p.cache_misses || 0);
  $("#scan-cache").textContent = looked ? `cache ${Math.round((100 * p.cache_hits) / looked)} %` : "";
  $("#scan-status").textContent = `${(p.matches || 0).toLocaleString()} matches`;
  $("#scan-progress").dataset.stage = p.stage;
}

function onScanMessage(data) {
  if (data.type === "scan_progress") {
    setProgress(data);
    if (["done", "failed", "cancelled"].includes(data.stage)) $("#scan-cancel").disabled = true;
  } else if (data.type === "scan_result") {
    if (data.status === "partial") {
      if (scan.final) return;
      scan.rows.push(...data.matches);
    } else {
      scan.final = true;
      scan.rows = data.matches.slice();
      $("#scan-cancel").disabled = true;
      $("#scan-summary").textContent = data.status === "failed"
        ? `Failed: ${data.error}`
        : `${data.status}: ${data.total_matches.toLocaleString()} matches in ${data.symbols_scanned.toLocaleString()} symbols` +
          (data.unknown_symbols && data.unknown_symbols.length ? `; unknown: ${data.unknown_symbols.join(", ")}` : "");
      loadScanHistory();
    }
    renderScanRows();
  }
}

async function reloadScan(id) {
  const doc = await api("GET", `/v1/scans/${id}`);
  if (doc.progress) setProgress(doc.progress);
  if (doc.top) { scan.rows = doc.top; scan.final = ["done", "failed", "cancelled"].includes(doc.status); renderScanRows(); }
}

function renderScanRows() {
  const tbody = $("#scan-results tbody");
  const rows = scan.rows.map((m, i) => ({ ...m, rank: i + 1 }));
  const { sortKey: k, sortDir: d } = scan;
  rows.sort((a, b) => {
    const x = a[k], y = b[k];
    if (x === y) return a.rank - b.rank;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * d;
  });
  tbody.replaceChildren(...rows.slice(0, 1000).map((m) => el("tr", { "data-symbol": m.symbol },
    el("td", {}, m.rank),
    el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showChart(m.symbol, $("#scan-tf").value); } }, m.symbol)),
    el("td", {}, fmtTime(m.ts)),
    el("td", {}, fmtNum(m.score)),
    el("td", { class: "values" }, Object.entries(m.values || {}).map(([n, v]) => `${n} ${fmtNum(v)}`).join("  ")),
  )));
  for (const th of document.querySelectorAll("#scan-results th")) {
    th.dataset.sorted = th.dataset.key === k ? (d > 0 ? "asc" : "desc") : "";
  }
}

function sortScan(ev) {
  const key = ev.target.dataset.key;
  if (!key || key === "values") return;
  scan.sortDir = scan.sortKey === key ? -scan.sortDir : 1;
  scan.sortKey = key;
  renderScanRows();
}

async function cancelScan() {
  if (!scan.id) return;
  $("#scan-cancel").disabled = true;
  try { await api("POST", `/v1/scans/${scan.id}/cancel`); } catch (err) { $("#scan-summary").textContent = err.message; }
}

async function loadScanHistory() {
  const { scans } = await api("GET", "/v1/scans");
  $("#scan-history-list").replaceChildren(...scans.map((s) => el("li", {},
    el("a", { href: "#", onclick: (e) => { e.preventDefault(); openPastScan(s.scan_id); } },
      `${fmtTime(s.submitted_at)} · ${s.request ? s.request.rule : ""} · ${s.status}` +
      (s.total_matches !== undefined ? ` · ${s.total_matches} matches` : "")))));
}

async function openPastScan(id) {
  if (scan.id) live.unsubscribe(`scan.${scan.id}`);
  Object.assign(scan, { id, rows: [], final: true });
  const doc = await api("GET", `/v1/scans/${id}`);
  $("#scan-rule").value = doc.request ? doc.request.rule : "";
  $("#scan-progress").hidden = !doc.progress;
  if (doc.progress) setProgress(doc.progress);
  scan.rows = doc.top || [];
  $("#scan-summary").textContent = `${doc.status}: ${doc.total_matches ?? 0} matches in ${doc.symbols_scanned ?? 0} symbols`;
  renderScanRows();
}

// -- chart -----------------------------------------------------------------------------------

const chart = { api: null, symbol: null, tf: null, candles: null, lines: {}, markers: null, markerList: [], ro: null };
const OVERLAYS = { sma_20: "#2962ff", sma_50: "#ff6d00", ema_21: "#00897b", "bb_20_2.upper": "#9e9e9e", "bb_20_2.lower": "#9e9e9e", "bb_20_2.mid": "#bdbdbd" };
const LOWER = { rsi: { rsi_14: "#7b1fa2" }, macd: { "macd_12_26_9.macd": "#2962ff", "macd_12_26_9.signal": "#ff6d00" } };

async function showChart(symbol, tf) {
  symbol = symbol.trim().toUpperCase();
  $("#chart-symbol").value = symbol;
  $("#chart-tf").value = tf;
  $("#chart-error").textContent = "";
  delete $("#chart").dataset.live;
  if (chart.symbol) {
    live.unsubscribe(`bars.${chart.tf}.${chart.symbol}`);
    live.unsubscribe(`ind.${chart.tf}.${chart.symbol}`);
  }
  if (chart.api) { chart.api.remove(); chart.api = null; }
  const gen = (chart.gen = (chart.gen || 0) + 1);  // a newer call supersedes this one
  Object.assign(chart, { symbol, tf, lines: {}, markerList: [], candles: null, markers: null });
  let data;
  try {
    data = await api("GET", `/v1/bars/${tf}/${encodeURIComponent(symbol)}?limit=400`);
  } catch (err) {
    $("#chart-error").textContent = err.message;
    data = { ts: [], open: [], high: [], low: [], close: [], volume: [], indicators: {} };
  }
  if (gen !== chart.gen) return;
  const LC = window.LightweightCharts;
  if (!LC) { $("#chart-error").textContent = "the charting library is missing: run make install"; return; }
  const box = $("#chart");
  chart.api = LC.createChart(box, {
    autoSize: true, layout: { attributionLogo: false, background: { color: "#ffffff" }, textColor: "#222" },
    timeScale: { timeVisible: tf !== "1d" && tf !== "1w", secondsVisible: false },
    rightPriceScale: { borderVisible: false },
  });
  chart.candles = chart.api.addSeries(LC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a", wickDownColor: "#ef5350", borderVisible: false,
  });
  const t = data.ts.map((x) => Math.floor(x / 1000));
  chart.candles.setData(t.map((time, i) => ({ time, open: data.open[i], high: data.high[i], low: data.low[i], close: data.close[i] })));
  const lower = LOWER[$("#chart-lower").value];
  for (const [name, color] of Object.entries({ ...OVERLAYS, ...lower })) {
    const pane = name in OVERLAYS ? 0 : 1;
    const series = chart.api.addSeries(LC.LineSeries, {
      color, lineWidth: name.startsWith("bb_") ? 1 : 2, priceLineVisible: false, lastValueVisible: pane === 1, title: name,
    }, pane);
    const values = data.indicators[name] || [];
    series.setData(t.map((time, i) => (values[i] === null || values[i] === undefined ? { time } : { time, value: values[i] })));
    chart.lines[name] = series;
  }
  const panes = chart.api.panes();
  if (panes.length > 1) { panes[0].setStretchFactor(3); panes[1].setStretchFactor(1); }
  chart.markers = LC.createSeriesMarkers(chart.candles, []);
  chart.api.timeScale().fitContent();
  $("#chart-info").textContent = data.ts.length ? `${data.ts.length} bars to ${fmtTime(data.ts[data.ts.length - 1])}` : "no archived bars yet";
  box.dataset.symbol = symbol;
  box.dataset.bars = data.ts.length;
  try {
    const { alerts } = await api("GET", `/v1/alerts?symbol=${encodeURIComponent(symbol)}&tf=${tf}&limit=200`);
    if (gen !== chart.gen) return;
    for (const a of alerts) addMarker(a);
  } catch (err) { console.warn(err); }
  const bars = live.subscribe(`bars.${tf}.${symbol}`, onBar, { policy: "conflate", recoverable: false });
  live.subscribe(`ind.${tf}.${symbol}`, onInd, { policy: "conflate", recoverable: false });
  bars.onSubscribed = () => {  // from now on every new bar is drawn as it comes
    if (gen !== chart.gen) return;
    box.dataset.live = `bars.${tf}.${symbol}`;
    $("#chart-info").textContent = `${$("#chart-info").textContent.replace(/ · live$/, "")} · live`;
  };
}

function onBar(b) {
  if (!chart.candles || b.symbol !== chart.symbol) return;
  try {
    chart.candles.update({ time: Math.floor(b.ts / 1000), open: b.open, high: b.high, low: b.low, close: b.close });
    $("#chart").dataset.lastBar = b.ts;
  } catch (e) { /* older than the last bar shown: a replay from the start; ignore */ }
}

function onInd(m) {
  if (!chart.api || m.symbol !== chart.symbol) return;
  const time = Math.floor(m.ts / 1000);
  for (const [name, series] of Object.entries(chart.lines)) {
    const v = m.values[name];
    if (v === null || v === undefined) continue;
    try { series.update({ time, value: v }); } catch (e) { /* older bar */ }
  }
}

function ruleName(ruleId) {
  const r = rulesById.get(ruleId);
  return (r && r.name) || ruleId;
}

function addMarker(a) {
  if (!chart.markers || a.symbol !== chart.symbol || a.tf !== chart.tf) return;
  if (chart.markerList.some((m) => m.id === a.alert_id)) return;
  chart.markerList.push({ id: a.alert_id, time: Math.floor(a.ts / 1000), position: "aboveBar", color: "#f57c00", shape: "arrowDown", text: ruleName(a.rule_id) });
  chart.markerList.sort((x, y) => x.time - y.time);
  chart.markers.setMarkers(chart.markerList);
  $("#chart").dataset.markers = chart.markerList.length;
}

// -- alerts ----------------------------------------------------------------------------------

const feedIds = new Set();

function ruleBody() {
  const channels = [...document.querySelectorAll("input[name=channel]:checked")].map((c) => c.value);
  const symbols = $("#rule-symbols").value.split(/[\s,]+/).filter(Boolean).map((s) => s.toUpperCase());
  const expires = $("#rule-expires").value;
  const body = {
    expr: $("#rule-expr").value.trim(), tf: $("#rule-tf").value, mode: $("#rule-mode").value,
    cooldown_s: Number($("#rule-cooldown").value) || 0, channels: channels.length ? channels : ["ws"],
  };
  if ($("#rule-name").value.trim()) body.name = $("#rule-name").value.trim();
  if (symbols.length) body.symbols = symbols;
  if (expires) body.expires_at = Date.parse(expires);
  return body;
}

async function saveRule(ev) {
  ev.preventDefault();
  showRuleError($("#rule-expr-error"), $("#rule-expr"), null);
  $("#rule-error").textContent = "";
  const id = $("#rule-id").value;
  try {
    if (id) {
      const old = rulesById.get(id);
      await api("PUT", `/v1/rules/${id}`, { ...ruleBody(), active: old ? old.active : true });
    } else {
      await api("POST", "/v1/rules", ruleBody());
    }
  } catch (err) {
    const item = err.problem && err.problem.errors && err.problem.errors[0];
    if (err.status === 422 && item && item.column) showRuleError($("#rule-expr-error"), $("#rule-expr"), err);
    else $("#rule-error").textContent = err.message;
    return;
  }
  newRule();
  await loadRules();
}

function newRule() {
  $("#rule-form").reset();
  $("#rule-id").value = "";
  $("#rule-save").textContent = "Create alert";
  $("#rule-new").hidden = true;
}

function editRule(r) {
  $("#rule-id").value = r.rule_id;
  $("#rule-expr").value = r.expr;
  $("#rule-name").value = r.name || "";
  $("#rule-symbols").value = (r.symbols || []).join(", ");
  $("#rule-tf").value = r.tf;
  $("#rule-mode").value = r.mode;
  $("#rule-cooldown").value = r.cooldown_s || 0;
  $("#rule-expires").value = r.expires_at ? new Date(r.expires_at).toISOString().slice(0, 16) : "";
  for (const c of document.querySelectorAll("input[name=channel]")) c.checked = (r.channels || ["ws"]).includes(c.value);
  $("#rule-save").textContent = "Save alert";
  $("#rule-new").hidden = false;
}

const rulesById = new Map();
const RULE_FIELDS = ["name", "expr", "symbols", "universe", "tf", "mode", "cooldown_s", "expires_at", "channels", "message", "active", "throttle_max", "throttle_window_s"];

async function setActive(r, active) {
  const body = {};
  for (const k of RULE_FIELDS) if (r[k] !== undefined && r[k] !== null) body[k] = r[k];
  body.active = active;
  await api("PUT", `/v1/rules/${r.rule_id}`, body);
  await loadRules();
}

function ruleStatus(r) {
  if (!r.active) return "paused";
  if (r.expires_at && r.expires_at < Date.now()) return "expired";
  const s = r.state || {};
  if (s.status === "paused") return `paused by throttle${s.reason ? `: ${s.reason}` : ""}`;
  if (s.status && s.status !== "pending" && s.status !== "active") return s.reason ? `${s.status}: ${s.reason}` : s.status;
  return s.fired ? "fired" : "active";
}

async function loadRules() {
  const { rules } = await api("GET", "/v1/rules");
  rulesById.clear();
  for (const r of rules) rulesById.set(r.rule_id, r);
  $("#rules tbody").replaceChildren(...rules.map((r) => el("tr", { "data-rule": r.rule_id },
    el("td", {}, r.name || r.rule_id),
    el("td", { class: "mono" }, r.expr),
    el("td", {}, r.symbols ? r.symbols.join(", ") : r.universe || "all", ` · ${r.tf}`),
    el("td", {}, r.mode, r.cooldown_s ? ` · ${r.cooldown_s}s` : ""),
    el("td", { class: "status" }, ruleStatus(r)),
    el("td", {}, (r.state && r.state.fired) || 0),
    el("td", { class: "actions" },
      el("button", { type: "button", onclick: () => editRule(r) }, "Edit"),
      el("button", { type: "button", onclick: () => setActive(r, !r.active) }, r.active ? "Pause" : "Resume"),
      el("button", { type: "button", onclick: async () => { await api("DELETE", `/v1/rules/${r.rule_id}`); await loadRules(); } }, "Delete")),
  )));
}

function onAlert(a) {
  if (a.type !== "alert" || feedIds.has(a.alert_id)) return;
  feedIds.add(a.alert_id);
  const vals = Object.entries(a.values || {}).slice(0, 4).map(([n, v]) => `${n} ${fmtNum(v)}`).join(", ");
  const item = el("li", { "data-alert": a.alert_id, "data-rule": a.rule_id, "data-symbol": a.symbol },
    el("b", {}, a.symbol), ` ${ruleName(a.rule_id)} · close ${fmtNum(a.close)} · bar ${fmtTime(a.ts)}`,
    vals ? el("span", { class: "hint" }, ` · ${vals}`) : "",
    a.message ? el("div", { class: "hint" }, a.message) : "");
  const feed = $("#feed");
  // newest bar first; ties by arrival
  const before = [...feed.children].find((li) => Number(li.dataset.ts) < a.ts);
  item.dataset.ts = a.ts;
  feed.insertBefore(item, before || null);
  while (feed.children.length > 500) feed.lastChild.remove();
  $("#feed").dataset.count = feedIds.size;
  addMarker(a);
  if (rulesById.has(a.rule_id)) scheduleRulesReload();
}

let rulesReload = null;
function scheduleRulesReload() {
  if (rulesReload) return;
  rulesReload = setTimeout(async () => { rulesReload = null; try { await loadRules(); } catch (e) { /* next time */ } }, 1000);
}

async function loadRecentAlerts() {
  const { alerts } = await api("GET", "/v1/alerts?limit=100");
  for (const a of alerts.reverse()) onAlert({ type: "alert", ...a });
}

// -- start -----------------------------------------------------------------------------------

async function enter(key) {
  try {
    await signIn(key);
  } catch (err) {
    $("#signin-error").textContent = err.status === 401 ? `Sign-in refused: ${err.message}` : `Cannot reach the gateway: ${err.message}`;
    sessionStorage.removeItem(KEY_STORE);
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = auth.owner;
  // channels without recovery (the chart's quotes) are read again after a reconnect
  live.onReconnect = () => { if (chart.symbol) showChart(chart.symbol, chart.tf).catch(console.warn); };
  live.start();
  live.subscribe(`alerts.${auth.owner}`, onAlert);
  const alertsSub = live.subs.get(`alerts.${auth.owner}`);
  alertsSub.onGap = () => loadRecentAlerts().catch(console.warn);
  await loadRules().catch(console.warn);  // (the feed names rules)
  await Promise.allSettled([loadRecentAlerts(), loadScanHistory(), loadSymbols()]);
  // the first chart, unless one was asked for meanwhile (the page is usable at once)
  if (!chart.symbol && !chart.typed) await showChart($("#chart-symbol").value, $("#chart-tf").value);
}

async function loadSymbols() {
  const { symbols } = await api("GET", "/v1/symbols?tf=1d");
  $("#symbol-list").replaceChildren(...symbols.slice(0, 5000).map((s) => el("option", { value: s })));
  if (chart.symbol || chart.typed) return;  // the user is choosing: keep what they typed
  if (symbols.length && !symbols.includes($("#chart-symbol").value)) $("#chart-symbol").value = symbols[0];
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  live.stop();
  location.reload();
}

function init() {
  $("#signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); enter($("#api-key").value.trim()); });
  $("#signout").addEventListener("click", signOut);
  $("#scan-form").addEventListener("submit", runScan);
  $("#scan-cancel").addEventListener("click", cancelScan);
  $("#scan-results thead").addEventListener("click", sortScan);
  $("#scan-universe").addEventListener("change", () => { $("#scan-symbols-label").hidden = $("#scan-universe").value !== "__symbols"; });
  $("#scan-mode").addEventListener("change", () => { $("#scan-start-label").hidden = $("#scan-mode").value !== "history"; });
  $("#chart-symbol").addEventListener("input", () => { chart.typed = true; });
  $("#chart-form").addEventListener("submit", (ev) => { ev.preventDefault(); showChart($("#chart-symbol").value, $("#chart-tf").value); });
  $("#rule-form").addEventListener("submit", saveRule);
  $("#rule-new").addEventListener("click", newRule);
  $("#scan-rule").addEventListener("input", () => showRuleError($("#scan-rule-error"), $("#scan-rule"), null));
  $("#rule-expr").addEventListener("input", () => showRuleError($("#rule-expr-error"), $("#rule-expr"), null));
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key") || sessionStorage.getItem(KEY_STORE);
  if (key) { $("#api-key").value = key; enter(key); }
}

init();

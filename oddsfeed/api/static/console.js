// The trader console: one event's live board over the public WebSocket, with inline price
// edits (PATCH conditional on the version the trader saw), suspend/reopen, locks, event
// bet stop, the driving source per market, feed health, sparklines, the event's audit
// trail and the top risk accounts. It only calls the public HTTP API; no framework.
import { OddsFeed } from "/static/oddsfeed.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "oddsfeed.console.token";
const SPARK_POINTS = 30; // prices kept per selection for its sparkline
const LOCKED_BADGE = '<span class="badge lockmark" title="feed updates refused">LOCKED</span>';
const board = $("board");
const msg = $("msg");

const state = {
  token: null,
  scopes: new Set(),
  wsPort: null,
  feed: null,
  event: null,
  desk: new Map(), // market id -> {driver, locks, refused} from the desk view and deltas
  spark: new Map(), // market id -> {seeded, sels: Map(selection -> [{v, p}])}
  editing: null, // {mid, sid, epoch, version}
  deskMissing: false, // the desk view route answered 404: poll it rarely
  deskPolledAt: 0,
};

function fmt(p) {
  if (p === undefined || p === null) return "—";
  const n = Number(p);
  return n < 1.1 ? n.toFixed(4) : n.toFixed(2);
}

function say(text, kind = "") {
  msg.textContent = text;
  msg.className = `msg ${kind}`;
}

// A market's name is "<event title>: <market>" by convention (the simulator's, the demo's).
function title(name) {
  const i = name.indexOf(": ");
  return i < 0 ? name : name.slice(0, i);
}

function shortName(name) {
  const i = name.indexOf(": ");
  return i < 0 ? name : name.slice(i + 2);
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function scopesOf(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64));
    return new Set(String(claims.scope || "").split(/\s+/).filter(Boolean));
  } catch {
    return new Set();
  }
}

async function api(method, path, body, headers = {}) {
  const h = {...headers};
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, {method, headers: h,
                           body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    return {status: 0, ok: false, data: {detail: String(e)}};
  }
  let data = null;
  try { data = await r.json(); } catch { /* no body */ }
  return {status: r.status, ok: r.ok, data};
}

const mpath = (mid) => `/v1/markets/${encodeURIComponent(mid)}`;
const epath = (ev) => `/v1/events/${encodeURIComponent(ev)}`;

// ---- token, connection, event choice ---------------------------------------------------

function useToken(token) {
  state.token = token || null;
  state.scopes = token ? scopesOf(token) : new Set();
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = token || "";
  $("risk-panel").hidden = !state.scopes.has("risk:read");
  if (!token) say("paste a token with odds:write to trade", "warn");
  else if (!state.scopes.has("odds:write")) say("this token lacks odds:write: read only", "warn");
  else say("");
  connect();
  refreshEvents();
}

function connect() {
  if (state.feed) state.feed.close();
  const url = `ws://${location.hostname}:${state.wsPort || 8765}/ws`;
  const feed = new OddsFeed(url, {token: state.token, events: state.event ? [state.event] : []});
  state.feed = feed;
  feed.addEventListener("status", (e) => {
    if (feed !== state.feed) return;
    const {state: s, reconnects} = e.detail;
    $("conn").className = `conn ${s}`;
    $("conn").textContent = `${s}${reconnects ? ` (reconnects: ${reconnects})` : ""}`;
  });
  feed.addEventListener("feed", (e) => {
    board.classList.toggle("stale", e.detail.feed === "interrupted");
    if (e.detail.feed === "interrupted") say("live feed interrupted: prices may be stale", "err");
  });
  feed.addEventListener("snapshot", (e) => onMarket(e.detail.market, null, null));
  feed.addEventListener("change", (e) => onMarket(e.detail.market, e.detail.previous,
                                                  e.detail.delta));
  feed.addEventListener("gone", (e) => $(`m-${e.detail.id}`)?.remove());
  feed.connect();
}

async function refreshEvents() {
  const r = await api("GET", "/v1/markets");
  if (!r.ok) return;
  const select = $("event");
  const titles = new Map();
  for (const m of r.data.markets) {
    if (!titles.has(m.event)) titles.set(m.event, title(m.name) || m.event);
  }
  for (const o of [...select.options]) {
    if (!titles.has(o.value) && o.value !== state.event) o.remove(); // the event is over
  }
  for (const [ev, name] of titles) {
    if ([...select.options].some((o) => o.value === ev)) continue;
    select.add(new Option(`${name} (${ev})`, ev));
  }
  if (!state.event && titles.size) selectEvent(select.value || [...titles.keys()][0]);
}

function selectEvent(ev) {
  const feed = state.feed;
  if (state.event && state.event !== ev && feed) {
    for (const [id, m] of feed.markets) if (m.event === state.event) feed.markets.delete(id);
    feed.unsubscribe({events: [state.event]}).catch(() => {});
  }
  state.event = ev;
  $("event").value = ev;
  $("audit-event").textContent = ev;
  board.innerHTML = "";
  state.desk.clear();
  cancelEdit();
  if (feed) feed.subscribe({events: [ev]}).catch(() => {}); // kept for the reconnect too
  pollDesk();
  pollAudit();
}

// ---- the board ------------------------------------------------------------------------

function onMarket(market, previous, delta) {
  if (market.event !== state.event) return;
  const desk = state.desk.get(market.id) || {driver: null, locks: null, refused: {}};
  if (market.locks) desk.locks = market.locks;
  if (market.src) desk.driver = market.src;
  if (delta?.locks) desk.locks = delta.locks;
  if (delta?.src) desk.driver = delta.src;
  state.desk.set(market.id, desk);
  track(market, delta);
  render(market, previous);
}

function marketRow(market) {
  let row = $(`m-${market.id}`);
  if (row) return row;
  row = document.createElement("div");
  row.id = `m-${market.id}`;
  row.className = "cmarket";
  row.dataset.market = market.id;
  row.innerHTML = `<div class="mhead"><span class="name"></span><span class="meta"></span>
    <span class="acts"><button data-act="status" data-testid="status-toggle"></button>
    <button data-act="lock-market" data-testid="lock-market"></button></span></div>
    <table class="csels"><tbody></tbody></table>`;
  const rows = [...board.querySelectorAll(".cmarket")];
  const after = rows.find((r) => r.dataset.market > market.id);
  board.insertBefore(row, after || null);
  return row;
}

function render(market, previous) {
  const row = marketRow(market);
  const desk = state.desk.get(market.id) || {};
  const locks = desk.locks || {market: false, selections: []};
  const open = market.status === "open";
  row.dataset.status = market.status;
  row.dataset.version = market.version;
  row.dataset.epoch = market.epoch;
  row.classList.toggle("suspended", !open);
  row.classList.toggle("mlocked", !!locks.market);
  row.querySelector(".name").textContent = shortName(market.name);
  const refused = Object.values(desk.refused || {}).reduce((a, b) => a + b, 0);
  row.querySelector(".meta").innerHTML =
    `v${market.version} · <b class="st">${esc(market.status)}</b>` +
    ` · driver <span class="driver" data-testid="driver">${esc(desk.driver || "—")}</span>` +
    (locks.market ? ` · ${LOCKED_BADGE}` : "") +
    (refused ? ` · <span class="refused" data-testid="refused">${refused} refused</span>` : "") +
    (market.in_play ? ` · <span class="live">IN PLAY</span>` : "");
  const statusBtn = row.querySelector("[data-act=status]");
  statusBtn.textContent = open ? "Suspend" : "Reopen";
  statusBtn.disabled = ["settled", "closed"].includes(market.status) && !open;
  row.querySelector("[data-act=lock-market]").textContent =
    locks.market ? "Unlock market" : "Lock market";
  const body = row.querySelector("tbody");
  for (const [sid, sel] of Object.entries(market.selections)) {
    let tr = body.querySelector(`tr[data-sel="${sid}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.sel = sid;
      tr.innerHTML = `<td class="sname"></td><td class="pcell"></td><td class="spark"></td>
        <td><button data-act="lock-sel" class="small" data-testid="lock-sel"></button></td>
        <td class="note" data-testid="note"></td>`;
      body.appendChild(tr);
    }
    const selLocked = !!locks.market || (locks.selections || []).includes(sid);
    tr.classList.toggle("slocked", selLocked);
    tr.classList.toggle("inactive", sel.status !== "active");
    tr.querySelector(".sname").textContent =
      sel.point === undefined || sel.name.includes(String(sel.point)) ? sel.name
        : `${sel.name} ${sel.point}`;
    tr.querySelector(".sname").insertAdjacentHTML("beforeend", selLocked ? ` ${LOCKED_BADGE}` : "");
    tr.querySelector("[data-act=lock-sel]").textContent =
      (locks.selections || []).includes(sid) ? "Unlock" : "Lock";
    const ed = state.editing;
    if (!(ed && ed.mid === market.id && ed.sid === sid)) {
      const cell = tr.querySelector(".pcell");
      let btn = cell.querySelector("button.price");
      if (!btn) {
        cell.innerHTML = `<button class="price" data-act="edit" data-testid="price"
          aria-label="edit the price of ${esc(sel.name)}"></button>`;
        btn = cell.querySelector("button");
      }
      btn.textContent = fmt(sel.price);
      btn.dataset.price = sel.price;
      const before = previous?.selections?.[sid]?.price;
      if (before !== undefined && before !== sel.price) {
        btn.classList.remove("up", "down");
        void btn.offsetWidth; // restart the animation
        btn.classList.add(sel.price > before ? "up" : "down");
      }
    }
    tr.querySelector(".spark").innerHTML = sparkline(seriesOf(market.id, sid));
  }
  for (const tr of body.querySelectorAll("tr[data-sel]")) {
    if (!(tr.dataset.sel in market.selections)) tr.remove();
  }
}

// ---- sparklines -----------------------------------------------------------------------

function seriesOf(mid, sid) {
  return (state.spark.get(mid)?.sels.get(sid) || []).map((x) => x.p);
}

function addPoint(entry, sid, v, p) {
  if (p === undefined || p === null) return;
  const list = entry.sels.get(sid) || [];
  if (list.some((x) => x.v === v)) return;
  list.push({v, p: Number(p)});
  list.sort((a, b) => a.v - b.v);
  entry.sels.set(sid, list.slice(-SPARK_POINTS));
}

function track(market, delta) {
  let entry = state.spark.get(market.id);
  if (!entry || entry.epoch !== market.epoch) {
    entry = {seeded: false, epoch: market.epoch, sels: new Map()};
    state.spark.set(market.id, entry);
  }
  if (delta) {
    for (const [sid, ch] of Object.entries(delta.sel || {})) {
      addPoint(entry, sid, delta.v, ch.price);
    }
  } else {
    for (const [sid, sel] of Object.entries(market.selections)) {
      addPoint(entry, sid, market.version, sel.price);
    }
  }
  if (!entry.seeded) {
    entry.seeded = true;
    seed(market.id, entry);
  }
}

async function seed(mid, entry) {
  const r = await api("GET", `${mpath(mid)}/history?limit=${SPARK_POINTS}`);
  if (!r.ok) return;
  for (const e of r.data.entries) {
    const sels = e.op === "created" ? e.changes.selections : e.changes.sel;
    for (const [sid, s] of Object.entries(sels || {})) addPoint(entry, sid, e.version, s.price);
  }
  const m = state.feed?.markets.get(mid);
  if (m && m.event === state.event) render(m, null);
}

function sparkline(prices) {
  if (prices.length < 2) return "";
  const w = 72, h = 20;
  const lo = Math.min(...prices), hi = Math.max(...prices);
  const pts = prices.map((p, i) => {
    const x = 1 + (i * (w - 2)) / (prices.length - 1);
    const y = hi === lo ? h / 2 : h - 2 - ((p - lo) / (hi - lo)) * (h - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" ");
  const trend = prices[prices.length - 1] >= prices[0] ? "up" : "down";
  return `<svg class="sparkline ${trend}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"
    role="img" aria-label="last ${prices.length} prices, ${fmt(lo)} to ${fmt(hi)}">
    <polyline points="${pts}" fill="none" stroke="currentColor" stroke-width="1.3"/></svg>`;
}

// ---- actions --------------------------------------------------------------------------

function startEdit(mid, sid) {
  const m = state.feed?.markets.get(mid);
  if (!m || !m.selections[sid]) return;
  cancelEdit();
  state.editing = {mid, sid, epoch: m.epoch, version: m.version};
  const tr = $(`m-${mid}`).querySelector(`tr[data-sel="${sid}"]`);
  const cell = tr.querySelector(".pcell");
  cell.innerHTML = `<input class="pedit" data-testid="price-input" size="7"
    aria-label="new price for ${esc(m.selections[sid].name)} (Enter saves, Esc cancels)">`;
  const input = cell.querySelector("input");
  input.value = fmt(m.selections[sid].price);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); save(input); }
    if (e.key === "Escape") { e.preventDefault(); cancelEdit(true); }
  });
  input.focus();
  input.select();
}

function cancelEdit(refocus = false) {
  const ed = state.editing;
  if (!ed) return;
  state.editing = null;
  const row = $(`m-${ed.mid}`);
  const tr = row?.querySelector(`tr[data-sel="${ed.sid}"]`);
  if (!tr) return;
  tr.querySelector(".pcell").innerHTML = "";
  tr.querySelector(".note").textContent = "";
  tr.classList.remove("conflict");
  const m = state.feed?.markets.get(ed.mid);
  if (m) render(m, null);
  if (refocus) tr.querySelector("button.price")?.focus();
}

async function save(input) {
  const ed = state.editing;
  if (!ed) return;
  const raw = input.value.trim();
  const price = /^[0-9]+(\.[0-9]+)?$/.test(raw) ? Number(raw) : raw;
  const tr = input.closest("tr");
  const r = await api("PATCH", mpath(ed.mid), {selections: {[ed.sid]: {price}}},
                      {"If-Match": `"${ed.epoch}:${ed.version}"`});
  if (state.editing !== ed) return;
  if (r.ok) {
    say(`${ed.mid} ${ed.sid} set to ${fmt(r.data.selections?.[ed.sid]?.price ?? price)} ` +
        `(v${r.data.version})`, "ok");
    cancelEdit(true);
    afterAction();
  } else if (r.status === 412 && r.data?.current) {
    const cur = r.data.current;
    ed.epoch = cur.epoch;
    ed.version = cur.version;
    tr.classList.add("conflict");
    tr.querySelector(".note").innerHTML = "changed meanwhile: now " +
      `<b data-testid="current-price">${fmt(cur.selections?.[ed.sid]?.price)}</b> ` +
      `(v${cur.version}). Enter retries yours, Esc keeps it`;
    say(`${ed.mid} moved to v${cur.version} before your change: not saved`, "warn");
    input.focus();
  } else {
    say(`price not saved: ${r.status} ${r.data?.detail || ""}`, "err");
  }
}

async function toggleStatus(mid) {
  const m = state.feed?.markets.get(mid);
  if (!m) return;
  const status = m.status === "open" ? "suspended" : "open";
  const r = await api("PATCH", mpath(mid), {status});
  say(r.ok ? `${mid} ${status}` : `${mid} not changed: ${r.status} ${r.data?.detail || ""}`,
      r.ok ? "ok" : "err");
  afterAction();
}

async function toggleLock(mid, sid) {
  const locks = state.desk.get(mid)?.locks || {market: false, selections: []};
  const locked = sid === null ? !!locks.market : (locks.selections || []).includes(sid);
  const what = locked ? "unlock" : "lock";
  const r = await api("POST", `${mpath(mid)}/${what}`, {selections: sid === null ? null : [sid]});
  if (r.ok) {
    const desk = state.desk.get(mid) || {driver: null, refused: {}};
    desk.locks = r.data.locks;
    state.desk.set(mid, desk);
    const m = state.feed?.markets.get(mid);
    if (m) render(m, null);
    say(`${mid}${sid === null ? "" : ` ${sid}`} ${what}ed (v${r.data.version})`, "ok");
  } else {
    say(`${what} failed: ${r.status} ${r.data?.detail || r.data?.title || ""}`, "err");
  }
  afterAction();
}

function askBetStop() {
  if (!state.event) return;
  const dialog = $("confirm");
  $("confirm-text").textContent =
    `Bet stop on ${$("event").selectedOptions[0]?.text || state.event}: suspend every market now?`;
  dialog.returnValue = "";
  dialog.showModal();
}

async function betSwitch(stop) {
  const ev = state.event;
  const r = await api("POST", `${epath(ev)}/${stop ? "bet-stop" : "bet-start"}`);
  say(r.ok ? `bet ${stop ? "stop" : "start"} on ${ev}: ${r.data.markets.length} markets`
           : `bet ${stop ? "stop" : "start"} failed: ${r.status} ${r.data?.detail || ""}`,
      r.ok ? (stop ? "warn" : "ok") : "err");
  afterAction();
}

function afterAction() {
  pollDesk();
  pollAudit();
}

// ---- panels ---------------------------------------------------------------------------

async function pollDesk() {
  if (!state.event || !state.token) return;
  const now = Date.now();
  if (state.deskMissing && now - state.deskPolledAt < 10000) return;
  state.deskPolledAt = now;
  const r = await api("GET", `/v1/desk/markets?event=${encodeURIComponent(state.event)}`);
  state.deskMissing = r.status === 404;
  if (!r.ok) return;
  for (const d of r.data.markets) {
    if (d.event !== state.event) continue;
    const prev = state.desk.get(d.market) || {};
    state.desk.set(d.market, {driver: d.driver ?? prev.driver ?? null, locks: d.locks,
                              refused: d.refused || {}});
    const m = state.feed?.markets.get(d.market);
    if (m) render(m, null);
  }
}

function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s`
    : `${Math.round(ms / 60000)} min`;
}

async function pollFeeds() {
  if (!state.token) return;
  const r = await api("GET", "/v1/desk/feeds");
  if (!r.ok) return;
  const tbody = $("feeds").querySelector("tbody");
  tbody.innerHTML = r.data.feeds.map((f) => `<tr data-source="${esc(f.source)}"
      class="${f.stale ? "stale" : ""} ${f.suspended_for_silence ? "silent" : ""}"
      title="${f.stale ? "stale: its ingester stopped publishing" : "live"}">
    <td>${esc(f.source)}${f.stale ? ' <span class="badge stalemark">STALE</span>' : ""}</td>
    <td>${f.priority}</td><td>${ago(f.age_ms)}</td><td>${ago(f.lag_ms)}</td>
    <td>${f.markets}</td><td>${f.suspended_for_silence}</td></tr>`).join("") ||
    `<tr><td colspan="6" class="none">no feed has published its health</td></tr>`;
}

function summary(e) {
  if (e.op === "created") return "created";
  const parts = [];
  for (const [k, v] of Object.entries(e.changes)) {
    if (k === "sel") {
      for (const [sid, s] of Object.entries(v)) {
        const price = s.price !== undefined ? fmt(s.price) : "";
        parts.push(`${sid} ${price}${s.status ? ` ${s.status}` : ""}`);
      }
    } else if (k === "locks") {
      parts.push(`locks ${v.market ? "market" : (v.selections || []).join(",") || "none"}`);
    } else {
      parts.push(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
    }
  }
  return parts.join(", ");
}

async function pollAudit() {
  if (!state.event || !state.token) return;
  const r = await api("GET", `${epath(state.event)}/audit?limit=12`);
  if (!r.ok) return;
  $("audit").innerHTML = r.data.entries.map((e) => `<li class="${e.writer.startsWith("desk:")
      ? "desk" : ""}"><time>${new Date(e.ts).toLocaleTimeString()}</time>
    <span class="am">${esc(e.market)}</span> v${e.version}
    <span class="aw">${esc(e.writer || "?")}</span>
    <span class="ac">${esc(summary(e))}</span></li>`).join("");
}

async function pollRisk() {
  if (!state.scopes.has("risk:read")) return;
  const r = await api("GET", "/v1/risk/accounts?limit=5");
  $("risk-panel").hidden = !r.ok;
  if (!r.ok) return;
  $("risk").innerHTML = r.data.accounts.map((a) => `<li><b>${esc(a.sub)}</b> score
    ${Number(a.score).toFixed(2)}</li>`).join("") || "<li class='none'>no bets yet</li>";
}

// ---- wiring ---------------------------------------------------------------------------

board.addEventListener("click", (e) => {
  const btn = e.target.closest("button[data-act]");
  if (!btn) return;
  const mid = btn.closest(".cmarket").dataset.market;
  const sid = btn.closest("tr")?.dataset.sel ?? null;
  if (btn.dataset.act === "edit") startEdit(mid, sid);
  else if (btn.dataset.act === "status") toggleStatus(mid);
  else if (btn.dataset.act === "lock-market") toggleLock(mid, null);
  else if (btn.dataset.act === "lock-sel") toggleLock(mid, sid);
});

document.addEventListener("keydown", (e) => {
  const typing = e.target.closest?.("input, select, textarea");
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $("confirm").open) return;
  if (e.key === "b") { e.preventDefault(); askBetStop(); }
});

$("confirm").addEventListener("close", () => {
  if ($("confirm").returnValue === "yes") betSwitch(true);
});

async function start() {
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || sessionStorage.getItem(TOKEN_KEY);
  state.wsPort = params.get("ws_port");
  if (params.has("token")) { // keep the token out of the address bar and history
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  }
  try {
    const r = await fetch("/v1/demo/token");
    if (r.ok) {
      const d = await r.json();
      token = token || d.token;
      state.wsPort = state.wsPort || d.ws_port;
    }
  } catch { /* not in demo mode */ }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken($("token").value.trim());
  });
  $("event").addEventListener("change", (e) => selectEvent(e.target.value));
  $("bet-stop").addEventListener("click", askBetStop);
  $("bet-start").addEventListener("click", () => betSwitch(false));
  useToken(token);
  setInterval(pollFeeds, 1000);
  setInterval(pollDesk, 1000);
  setInterval(pollAudit, 2000);
  setInterval(pollRisk, 5000);
  setInterval(refreshEvents, 5000);
  pollFeeds();
  pollRisk();
}

start();

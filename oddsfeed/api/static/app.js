// The demo board: live markets by event, flashing prices, a bet slip validated over the
// WebSocket. Uses the oddsfeed browser client (clients/js/oddsfeed.js).
import { OddsFeed } from "/static/oddsfeed.js";

const board = document.getElementById("board");
const conn = document.getElementById("conn");
const legsEl = document.getElementById("legs");
const placeBtn = document.getElementById("place");
const resultEl = document.getElementById("result");
const feedBanner = document.getElementById("feed-banner");
const legs = []; // {market, selection, price, version, epoch, label}

function fmt(p) { const n = Number(p); return n < 1.1 ? n.toFixed(4) : n.toFixed(2); }

async function start() {
  const params = new URLSearchParams(location.search);
  let token = params.get("token");
  let wsPort = params.get("ws_port");
  try {
    const r = await fetch("/v1/demo/token");
    if (r.ok) { const d = await r.json(); token = token || d.token; wsPort = wsPort || d.ws_port; }
  } catch (e) { /* not in demo mode */ }
  const events = new Set();
  const r = await fetch("/v1/markets", token ? {headers: {Authorization: `Bearer ${token}`}} : {});
  if (r.ok) (await r.json()).markets.forEach((m) => events.add(m.event));
  const url = `ws://${location.hostname}:${wsPort || 8765}/ws`;
  const feed = new OddsFeed(url, {token, events: [...events]});
  feed.addEventListener("status", (e) => {
    const {state, reconnects} = e.detail;
    conn.className = `conn ${state}`;
    conn.textContent = `${state}${reconnects ? ` (reconnects: ${reconnects})` : ""}`;
  });
  feed.addEventListener("feed", (e) => {
    const interrupted = e.detail.feed === "interrupted";
    feedBanner.hidden = !interrupted;
    board.classList.toggle("stale", interrupted);
    renderSlip();
  });
  feed.addEventListener("snapshot", (e) => render(e.detail.market, null));
  feed.addEventListener("change", (e) => render(e.detail.market, e.detail.previous));
  feed.addEventListener("gone", (e) => document.getElementById(`m-${e.detail.id}`)?.remove());
  feed.connect();
  placeBtn.addEventListener("click", () => place(feed));
  document.getElementById("clear").addEventListener("click", () => {
    legs.length = 0; renderSlip(); resultEl.textContent = "";
  });
  // Events created later: poll the list now and then and subscribe new ones.
  setInterval(async () => {
    const res = await fetch("/v1/markets", token ? {headers: {Authorization: `Bearer ${token}`}} : {});
    if (!res.ok) return;
    const fresh = (await res.json()).markets.map((m) => m.event).filter((ev) => !events.has(ev));
    if (fresh.length) { fresh.forEach((ev) => events.add(ev)); feed.subscribe({events: fresh}).catch(() => {}); }
  }, 5000);
}

function eventCard(eventId) {
  let card = document.getElementById(`e-${eventId}`);
  if (!card) {
    card = document.createElement("div");
    card.className = "event";
    card.id = `e-${eventId}`;
    card.innerHTML = `<h3></h3>`;
    board.appendChild(card);
  }
  return card;
}

function render(market, previous) {
  const card = eventCard(market.event);
  card.querySelector("h3").textContent = market.name.split(":")[0];
  let row = document.getElementById(`m-${market.id}`);
  if (!row) {
    row = document.createElement("div");
    row.id = `m-${market.id}`;
    row.className = "market";
    row.innerHTML = `<div><div class="name"></div><div class="meta"></div></div><div class="sels"></div>`;
    card.appendChild(row);
  }
  const locked = market.status !== "open";
  row.classList.toggle("locked", locked);
  row.dataset.status = market.status;
  row.querySelector(".name").textContent = (market.name.split(":")[1] || market.name).trim();
  row.querySelector(".meta").innerHTML =
    `v${market.version} · ${market.status}${locked ? ' <span class="badge lock">LOCKED</span>' : ""}` +
    (market.in_play ? ` <span class="live">IN PLAY</span> ${market.bet_delay_ms} ms delay` : "");
  const sels = row.querySelector(".sels");
  for (const [sid, sel] of Object.entries(market.selections)) {
    let btn = sels.querySelector(`[data-sel="${sid}"]`);
    if (!btn) {
      btn = document.createElement("button");
      btn.className = "sel";
      btn.dataset.sel = sid;
      btn.innerHTML = `<span class="sname"></span><span class="price"></span>`;
      btn.addEventListener("click", () => addLeg(market.id, sid));
      sels.appendChild(btn);
    }
    btn.querySelector(".sname").textContent = sel.name + (sel.point !== undefined ? ` ${sel.point}` : "");
    btn.querySelector(".price").textContent = fmt(sel.price);
    btn.disabled = locked || sel.status !== "active";
    btn.classList.toggle("locked", btn.disabled);
    const before = previous?.selections?.[sid]?.price;
    if (before !== undefined && before !== sel.price) {
      btn.classList.remove("up", "down");
      void btn.offsetWidth; // restart the animation
      btn.classList.add(sel.price > before ? "up" : "down");
    }
    btn.dataset.price = sel.price;
  }
  for (const btn of sels.querySelectorAll("[data-sel]")) {
    if (!(btn.dataset.sel in market.selections)) btn.remove();
  }
  row.dataset.version = market.version;
  row.dataset.epoch = market.epoch;
  row._market = market;
}

function addLeg(marketId, sid) {
  const row = document.getElementById(`m-${marketId}`);
  const m = row._market;
  const sel = m.selections[sid];
  if (!sel || legs.some((l) => l.market === marketId)) return;
  legs.push({market: marketId, selection: sid, price: sel.price, version: m.version,
             epoch: m.epoch, label: `${m.name} — ${sel.name}`});
  renderSlip();
}

function renderSlip() {
  legsEl.innerHTML = "";
  legs.forEach((l, i) => {
    const li = document.createElement("li");
    li.innerHTML = `${l.label} @ <b>${fmt(l.price)}</b> <span data-leg="${i}"></span>`;
    legsEl.appendChild(li);
  });
  placeBtn.disabled = legs.length === 0 || !feedBanner.hidden;  // no bets on stale prices
}

async function place(feed) {
  placeBtn.disabled = true;
  resultEl.textContent = "checking…";
  const accept = document.getElementById("accept").value;
  try {
    const verdict = await feed.validate(
      legs.map(({market, selection, price, version, epoch}) => ({market, selection, price, version, epoch})),
      accept);
    resultEl.innerHTML = verdict.ok
      ? `<span class="ok" data-testid="verdict">Accepted</span>`
      : `<span class="rejected" data-testid="verdict">Rejected</span>`;
    verdict.legs.forEach((leg, i) => {
      const span = legsEl.querySelector(`[data-leg="${i}"]`);
      if (!span) return;
      if (leg.ok) { span.innerHTML = `<span class="ok">✓</span>`; return; }
      span.innerHTML = `<span class="rejected">${leg.reason}</span>` +
        (leg.price !== null ? ` now ${fmt(leg.price)} <button data-take="${i}">take it</button>` : "");
      const take = span.querySelector("button");
      if (take) take.addEventListener("click", () => {
        legs[i].price = leg.price; legs[i].version = leg.version; renderSlip();
      });
    });
  } catch (e) {
    resultEl.innerHTML = `<span class="rejected" data-testid="verdict">${e.code || "error"}: ${e.message}</span>`;
  }
  placeBtn.disabled = legs.length === 0 || !feedBanner.hidden;  // no bets on stale prices
}

start();

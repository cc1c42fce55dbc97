// oddsfeed browser client: a dependency-free ES module (JSON subprotocol).
//
// Keeps a local mirror of subscribed markets by the protocol's client rule, reconnects with
// jittered backoff, resumes every market from its (epoch, version) position, and emits
// events for UI code:
//   "status"   {state: "connecting" | "open" | "reconnecting" | "closed", reconnects}
//   "snapshot" {market}                 a market (re)arrived whole
//   "change"   {market, previous, delta} a delta applied
//   "gone"     {id}                     a market no longer exists
//   "error"    {code, message, id}
//
// const feed = new OddsFeed("ws://127.0.0.1:8765/ws", {token, events: ["ev1"]});
// feed.addEventListener("change", (e) => render(e.detail.market));
// feed.connect();
// const verdict = await feed.validate([{market, selection, price}], "exact");

export class OddsFeed extends EventTarget {
  constructor(url, {token = null, markets = [], events = [], maxBackoffMs = 10000} = {}) {
    super();
    this.url = url;
    this.token = token;
    this.wantMarkets = new Set(markets);
    this.wantEvents = new Set(events);
    this.markets = new Map(); // id -> market (selections: {id: {name, price, point?, status}})
    this.maxBackoffMs = maxBackoffMs;
    this.reconnects = 0;
    this.ws = null;
    this.closed = false;
    this._nextId = 1;
    this._pending = new Map(); // request id -> {resolve, reject}
    this._backoff = 250;
  }

  connect() {
    this.closed = false;
    this._emit("status", {state: this.reconnects ? "reconnecting" : "connecting",
                          reconnects: this.reconnects});
    const url = this.token ? `${this.url}?token=${encodeURIComponent(this.token)}` : this.url;
    const ws = new WebSocket(url, ["oddsfeed.v1.json"]);
    this.ws = ws;
    ws.onopen = () => {
      this._backoff = 250;
      this._emit("status", {state: "open", reconnects: this.reconnects});
      this._resubscribe();
    };
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = () => {
      for (const {reject} of this._pending.values()) reject(new Error("connection closed"));
      this._pending.clear();
      if (this.closed) {
        this._emit("status", {state: "closed", reconnects: this.reconnects});
        return;
      }
      this.reconnects += 1;
      this._emit("status", {state: "reconnecting", reconnects: this.reconnects});
      const wait = Math.min(this._backoff, this.maxBackoffMs) * (0.5 + Math.random());
      this._backoff = Math.min(this._backoff * 2, this.maxBackoffMs);
      setTimeout(() => { if (!this.closed) this.connect(); }, wait);
    };
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  }

  subscribe({markets = [], events = []} = {}) {
    markets.forEach((m) => this.wantMarkets.add(m));
    events.forEach((e) => this.wantEvents.add(e));
    return this._request({op: "subscribe", markets, events, from: this._positions(markets)});
  }

  unsubscribe({markets = [], events = []} = {}) {
    markets.forEach((m) => { this.wantMarkets.delete(m); this.markets.delete(m); });
    events.forEach((e) => this.wantEvents.delete(e));
    return this._request({op: "unsubscribe", markets, events});
  }

  // Validate a bet slip over the socket; resolves with {ok, legs: [...]}.
  validate(legs, accept = "exact") {
    return this._request({op: "validate", legs, accept});
  }

  _positions(ids) {
    const from = {};
    for (const id of ids) {
      const m = this.markets.get(id);
      if (m) from[id] = {epoch: m.epoch, version: m.version};
    }
    return from;
  }

  _resubscribe() {
    const markets = [...new Set([...this.wantMarkets, ...this.markets.keys()])];
    const events = [...this.wantEvents];
    if (!markets.length && !events.length) return;
    this._request({op: "subscribe", markets, events, from: this._positions(markets)})
      .catch(() => {});
  }

  _request(msg) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      this._pending.set(id, {resolve, reject});
      this.ws.send(JSON.stringify({...msg, id}));
    });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }

  _onFrame(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    const items = msg.op === "batch" ? msg.items : [msg];
    for (const item of items) this._onMessage(item);
  }

  _onMessage(msg) {
    const waiting = msg.id !== undefined ? this._pending.get(msg.id) : undefined;
    switch (msg.op) {
      case "snapshot":
        this.markets.set(msg.market.id, msg.market);
        this._emit("snapshot", {market: msg.market});
        break;
      case "delta":
        this._applyDelta(msg);
        break;
      case "gone":
        this.markets.delete(msg.m);
        this._emit("gone", {id: msg.m});
        break;
      case "subscribed":
        for (const id of msg.missing) {
          if (this.markets.delete(id)) this._emit("gone", {id});
        }
        break;
      case "status":
        // the node lost (interrupted) or regained (restored) the store: until restored,
        // what this client holds may be stale (docs/protocol.md, feed status)
        this.feedInterrupted = msg.feed === "interrupted";
        this._emit("feed", {feed: msg.feed});
        break;
      case "hello":
        // a new connection: the node says at once if its feed is interrupted
        if (this.feedInterrupted) {
          this.feedInterrupted = false;
          this._emit("feed", {feed: "restored"});
        }
        break;
      case "error":
        this._emit("error", msg);
        if (waiting) { this._pending.delete(msg.id); waiting.reject(Object.assign(
          new Error(msg.message), {code: msg.code})); return; }
        break;
      default:
        break; // heartbeat, pong, unsubscribed, validation
    }
    if (waiting) {
      this._pending.delete(msg.id);
      waiting.resolve(msg);
    }
  }

  // The client rule of protocol.md section 2.
  _applyDelta(d) {
    const local = this.markets.get(d.m);
    if (!local) return;
    if (d.e === local.epoch && d.v <= local.version) return; // duplicate
    if (d.e !== local.epoch || d.base !== local.version) {
      // a gap or another epoch: resume this market from our position
      this._request({op: "subscribe", markets: [d.m], from: this._positions([d.m])})
        .catch(() => {});
      return;
    }
    const previous = local;
    const market = {...local, selections: {...local.selections}, version: d.v, ts: d.ts};
    for (const f of ["name", "kind", "status", "in_play", "bet_delay_ms"]) {
      if (f in d) market[f] = d[f];
    }
    for (const [sid, change] of Object.entries(d.sel || {})) {
      if (change.status === "removed") { delete market.selections[sid]; continue; }
      const merged = {...(market.selections[sid] || {}), ...change};
      if (merged.point === null) delete merged.point;
      market.selections[sid] = merged;
    }
    this.markets.set(d.m, market);
    this._emit("change", {market, previous, delta: d});
  }
}

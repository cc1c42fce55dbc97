/* Long on purpose (one job, ~600 lines): harness.py compiles this one file with no build
 * system, so the WebSocket client, msgpack reader and epoll loop stay in one translation unit
 * (loadgen_json.h, the JSON reader, is included, not linked).
 *
 * The fan-out benchmark's load generator in C: the same job as loadgen.py (which stays as
 * the fallback where no C compiler is found), at a fraction of its CPU, so that on a small
 * machine the load generators leave the cores to the server under test.
 *
 * One process holds many WebSocket client connections (a minimal RFC 6455 client:
 * handshake, unmasked server frames in, masked frames out) on one epoll loop, subscribes
 * each to its markets with a msgpack frame, and checks every received delta for version
 * continuity: ``gaps`` counts a delta whose ``base`` is not the version held (oddsfeed) or
 * a version that is not the previous one plus one (naive). A conflated delta counts as
 * delivering each version it spans. Latency is receive time minus the ``ts`` the driver
 * stamped (unix ms), recorded from "go" to "stop".
 *
 * Usage: loadgen KIND HOST PORT SRC_IPS [json] (KIND: oddsfeed or naive; SRC_IPS
 * comma-separated; json: oddsfeed.v1.json and JSON payloads instead of msgpack).
 * stdin: a line with the connection count N, N lines of space-separated market ids, then
 * the commands "go" and "stop", one per line. stdout: "ready <connected>" once every
 * connection holds its snapshots (or after SYNC_TIMEOUT_S), then, after "stop", one JSON
 * object: messages, gaps, frames, n_lat, connected and lat_ms (at most 50,000 samples).
 * Every loop is bounded: connection attempts, the sync wait, and the run (stop on "stop",
 * on end of stdin, or after MAX_RUN_S).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAILURES 20      /* failed attempts after which no more connections are opened */
#define MAX_CONNECTING 32    /* handshakes in progress at once */
#define SYNC_TIMEOUT_S 120.0 /* how long to wait for every connection's snapshots */
#define MAX_RUN_S 1800.0     /* a run that is never stopped ends by itself */
#define MAX_SAMPLES 50000
#define MAX_MARKETS 64       /* markets per connection */
#define POLL_SLEEP_US 500    /* sleep between polls that found nothing (see the main loop) */

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED };

typedef struct {
    int fd, state, attempts, synced, nmarkets, nknown;
    char **markets;
    int64_t last[MAX_MARKETS]; /* -1: no version held yet */
    uint8_t *buf;
    size_t len, cap;
} Conn;

static int naive, json;
static Conn *conns;
static int nconns, connected, failures, synced_count, closed_count, measuring, opening;
static uint64_t messages, gaps, frames;
static double *lat;
static size_t nlat, latcap;

static double now_s(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) { fprintf(stderr, "loadgen: out of memory\n"); exit(1); }
    return q;
}

#include "loadgen_json.h"

/* ---- msgpack: just enough to walk maps and arrays and read strings and integers ---- */

typedef struct { const uint8_t *p, *end; int bad; } Rd;

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static int need(Rd *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) { r->bad = 1; return 0; }
    return 1;
}

/* Reads one header: returns its kind ('i' int, 's' str/bin, 'm' map, 'a' array, 'f' float,
 * 'n' nil/bool, 'x' ext) with *v = the int value or the length / element count. */
static int head(Rd *r, int64_t *v) {
    if (!need(r, 1)) return 0;
    uint8_t b = *r->p++;
    if (b <= 0x7f) { *v = b; return 'i'; }
    if (b >= 0xe0) { *v = (int8_t)b; return 'i'; }
    if ((b & 0xf0) == 0x80) { *v = b & 0x0f; return 'm'; }
    if ((b & 0xf0) == 0x90) { *v = b & 0x0f; return 'a'; }
    if ((b & 0xe0) == 0xa0) { *v = b & 0x1f; return 's'; }
    int n = 0, kind = 0, sgn = 0;
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: *v = 0; return 'n';
    case 0xcc: n = 1; kind = 'i'; break;
    case 0xcd: n = 2; kind = 'i'; break;
    case 0xce: n = 4; kind = 'i'; break;
    case 0xcf: n = 8; kind = 'i'; break;
    case 0xd0: n = 1; kind = 'i'; sgn = 1; break;
    case 0xd1: n = 2; kind = 'i'; sgn = 1; break;
    case 0xd2: n = 4; kind = 'i'; sgn = 1; break;
    case 0xd3: n = 8; kind = 'i'; sgn = 1; break;
    case 0xca: if (!need(r, 4)) return 0; r->p += 4; *v = 0; return 'f';
    case 0xcb: if (!need(r, 8)) return 0; r->p += 8; *v = 0; return 'f';
    case 0xd9: case 0xc4: n = 1; kind = 's'; break;
    case 0xda: case 0xc5: n = 2; kind = 's'; break;
    case 0xdb: case 0xc6: n = 4; kind = 's'; break;
    case 0xdc: n = 2; kind = 'a'; break;
    case 0xdd: n = 4; kind = 'a'; break;
    case 0xde: n = 2; kind = 'm'; break;
    case 0xdf: n = 4; kind = 'm'; break;
    case 0xd4: n = 0; *v = 2; break;  /* fixext 1..16: type byte + data */
    case 0xd5: *v = 3; break;
    case 0xd6: *v = 5; break;
    case 0xd7: *v = 9; break;
    case 0xd8: *v = 17; break;
    case 0xc7: n = 1; kind = 'x'; break;
    case 0xc8: n = 2; kind = 'x'; break;
    case 0xc9: n = 4; kind = 'x'; break;
    default: r->bad = 1; return 0;
    }
    if (b >= 0xd4 && b <= 0xd8) { if (!need(r, *v)) return 0; r->p += *v; return 'x'; }
    if (!need(r, n)) return 0;
    uint64_t u = be(r->p, n);
    r->p += n;
    if (kind == 'i' && sgn) {
        int sh = 64 - 8 * n;
        *v = (int64_t)(u << sh) >> sh;
    } else {
        *v = (int64_t)u;
    }
    if (kind == 'x') { if (!need(r, (size_t)*v + 1)) return 0; r->p += *v + 1; }
    return kind;
}

static void skip(Rd *r, int depth) {
    int64_t v;
    int k = head(r, &v);
    if (r->bad || depth > 32) { r->bad = 1; return; }
    if (k == 's') { if (need(r, v)) r->p += v; }
    else if (k == 'a') { for (int64_t i = 0; i < v && !r->bad; i++) skip(r, depth + 1); }
    else if (k == 'm') { for (int64_t i = 0; i < 2 * v && !r->bad; i++) skip(r, depth + 1); }
}

static int key_is(const uint8_t *k, int64_t n, const char *s) {
    return (size_t)n == strlen(s) && memcmp(k, s, n) == 0;
}

static int market_slot(Conn *c, const uint8_t *m, int64_t n) {
    for (int i = 0; i < c->nmarkets; i++)
        if (key_is(m, n, c->markets[i])) return i;
    return -1;
}

static void record(double ms) {
    if (!measuring) return;
    if (nlat == latcap) {
        latcap = latcap ? latcap * 2 : 1 << 16;
        lat = xrealloc(lat, latcap * sizeof *lat);
    }
    lat[nlat++] = ms;
}

/* One message map (a delta, a snapshot or anything else, which is skipped). */
static void on_item(Conn *c, Rd *r, double now_ms) {
    int64_t n, v;
    if (head(r, &n) != 'm') { r->bad = 1; return; }
    const uint8_t *op = NULL, *m = NULL, *sid = NULL;
    int64_t oplen = 0, mlen = 0, sidlen = 0, ver = -1, base = -1, ts = -1, sver = -1;
    for (int64_t i = 0; i < n && !r->bad; i++) {
        if (head(r, &v) != 's' || !need(r, v)) { r->bad = 1; return; }
        const uint8_t *k = r->p;
        int64_t klen = v;
        r->p += v;
        if (key_is(k, klen, "op") || key_is(k, klen, "m")) {
            if (head(r, &v) != 's' || !need(r, v)) { r->bad = 1; return; }
            if (k[0] == 'o') { op = r->p; oplen = v; } else { m = r->p; mlen = v; }
            r->p += v;
        } else if (key_is(k, klen, "v") || key_is(k, klen, "base") || key_is(k, klen, "ts")) {
            int kind = head(r, &v);
            if (kind != 'i' && kind != 'f') { r->bad = 1; return; }
            if (k[0] == 'v') ver = v; else if (k[0] == 'b') base = v; else ts = v;
        } else if (key_is(k, klen, "market") && !naive) {
            int64_t mn;
            if (head(r, &mn) != 'm') { r->bad = 1; return; }
            for (int64_t j = 0; j < mn && !r->bad; j++) {
                if (head(r, &v) != 's' || !need(r, v)) { r->bad = 1; return; }
                const uint8_t *k2 = r->p;
                int64_t k2len = v;
                r->p += v;
                if (key_is(k2, k2len, "id")) {
                    if (head(r, &v) != 's' || !need(r, v)) { r->bad = 1; return; }
                    sid = r->p; sidlen = v; r->p += v;
                } else if (key_is(k2, k2len, "version")) {
                    if (head(r, &v) != 'i') { r->bad = 1; return; }
                    sver = v;
                } else {
                    skip(r, 1);
                }
            }
        } else {
            skip(r, 1);
        }
    }
    if (r->bad) return;
    if (naive) {
        if (!m || ver < 0) return;
        int s = market_slot(c, m, mlen);
        if (s < 0) return;
        if (c->last[s] >= 0 && ver != c->last[s] + 1) gaps++;
        messages++;
        c->last[s] = ver;
        if (ts >= 0) record(now_ms - ts);
        return;
    }
    if (op && key_is(op, oplen, "snapshot")) {
        if (!sid || sver < 0) return;
        int s = market_slot(c, sid, sidlen);
        if (s < 0) return;
        if (c->last[s] < 0) c->nknown++;
        c->last[s] = sver;
        if (!c->synced && c->nknown >= c->nmarkets) { c->synced = 1; synced_count++; }
        return;
    }
    if (!op || !key_is(op, oplen, "delta") || !m || ver < 0 || base < 0) return;
    int s = market_slot(c, m, mlen);
    if (s < 0) return;
    if (c->last[s] >= 0) {
        if (base != c->last[s]) gaps++;
        messages += ver - base;
    } else {
        messages += 1;
        c->nknown++;
    }
    c->last[s] = ver;
    if (ts >= 0) record(now_ms - ts);
}

static void on_message(Conn *c, const uint8_t *p, size_t n) {
    static uint8_t *mp;
    static size_t mpcap;
    frames++;
    if (json && !(n = json_to_msgpack(p, n, &mp, &mpcap))) return;
    if (json) p = mp;
    double now_ms = now_s(CLOCK_REALTIME) * 1000.0;
    Rd r = {p, p + n, 0};
    /* a batch is {op: "batch", items: [...]}: look for "items" first, else one message */
    Rd peek = r;
    int64_t mn, v;
    if (head(&peek, &mn) != 'm') return;
    int is_batch = 0;
    const uint8_t *items = NULL;
    for (int64_t i = 0; i < mn && !peek.bad; i++) {
        if (head(&peek, &v) != 's' || !need(&peek, v)) return;
        const uint8_t *k = peek.p;
        int64_t klen = v;
        peek.p += v;
        if (key_is(k, klen, "op")) {
            if (head(&peek, &v) != 's' || !need(&peek, v)) return;
            is_batch = key_is(peek.p, v, "batch");
            peek.p += v;
        } else if (key_is(k, klen, "items")) {
            items = peek.p;
            skip(&peek, 1);
        } else {
            skip(&peek, 1);
        }
    }
    if (is_batch && items) {
        Rd ir = {items, r.end, 0};
        int64_t count;
        if (head(&ir, &count) != 'a') return;
        for (int64_t i = 0; i < count && !ir.bad; i++) on_item(c, &ir, now_ms);
    } else {
        on_item(c, &r, now_ms);
    }
}

/* ---- sockets ---- */

static void send_all(Conn *c, const uint8_t *p, size_t n) {
    /* small control writes on a socket that is keeping up: a short write is a dead peer */
    while (n) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_frame(Conn *c, int opcode, const uint8_t *payload, size_t n) {
    static uint8_t out[16 + 65536];  /* one thread: one buffer */
    size_t h = 0;
    if (n > 65535) return;
    out[h++] = 0x80 | opcode;
    if (n < 126) {
        out[h++] = 0x80 | n;
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = n >> 8;
        out[h++] = n & 0xff;
    }
    memset(out + h, 0, 4);  /* a mask of zeros: XOR is the identity (RFC 6455 allows it) */
    h += 4;
    memcpy(out + h, payload, n);
    send_all(c, out, h + n);
}

static size_t mp_str(uint8_t *o, const char *s) {
    size_t n = strlen(s), h = 0;
    if (n < 32) o[h++] = 0xa0 | n;
    else { o[h++] = 0xd9; o[h++] = (uint8_t)n; }
    memcpy(o + h, s, n);
    return h + n;
}

static void subscribe(Conn *c) {
    uint8_t p[MAX_MARKETS * 260 + 64];  /* ids are at most 255 bytes (read_spec checks) */
    size_t n = 0;
    if (naive) {
        p[n++] = 0x81;
    } else {
        p[n++] = 0x82;
        n += mp_str(p + n, "op");
        n += mp_str(p + n, "subscribe");
    }
    n += mp_str(p + n, "markets");
    if (c->nmarkets < 16) {
        p[n++] = 0x90 | c->nmarkets;
    } else {
        p[n++] = 0xdc;
        p[n++] = c->nmarkets >> 8;
        p[n++] = c->nmarkets & 0xff;
    }
    for (int i = 0; i < c->nmarkets; i++) n += mp_str(p + n, c->markets[i]);
    if (json && !naive) {  /* the naive server reads msgpack subscriptions either way */
        n = (size_t)sprintf((char *)p, "{\"op\":\"subscribe\",\"markets\":[");
        for (int i = 0; i < c->nmarkets; i++)
            n += (size_t)sprintf((char *)p + n, "%s\"%s\"", i ? "," : "", c->markets[i]);
        n += (size_t)sprintf((char *)p + n, "]}");
        send_frame(c, 0x1, p, n);
        return;
    }
    send_frame(c, 0x2, p, n);
}

/* every state change goes through here: ``opening`` counts connects and handshakes */
static void set_state(Conn *c, int s) {
    int was = c->state == S_CONNECTING || c->state == S_HANDSHAKE;
    int is = s == S_CONNECTING || s == S_HANDSHAKE;
    opening += is - was;
    c->state = s;
}

static void closed(Conn *c) {
    if (c->state == S_CLOSED) return;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->state == S_OPEN) closed_count++;
    set_state(c, S_CLOSED);
}

static void on_readable(Conn *c) {
    for (;;) {
        if (c->cap - c->len < 16384) {
            c->cap = c->cap ? c->cap * 2 : 32768;
            c->buf = xrealloc(c->buf, c->cap);
        }
        size_t space = c->cap - c->len;
        ssize_t got = read(c->fd, c->buf + c->len, space);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (got <= 0) { closed(c); return; }
        c->len += (size_t)got;
        if ((size_t)got < space) break; /* a short read: the socket is drained */
    }
    size_t pos = 0;
    if (c->state == S_HANDSHAKE) {
        uint8_t *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return;
        if (!memmem(c->buf, (size_t)(end - c->buf), " 101 ", 5)) { closed(c); return; }
        pos = (size_t)(end - c->buf) + 4;
        set_state(c, S_OPEN);
        connected++;
        subscribe(c);
        if (naive) { c->synced = 1; synced_count++; }  /* the naive server sends no catch-up */
    }
    while (c->len - pos >= 2) {
        uint8_t *f = c->buf + pos;
        size_t avail = c->len - pos, h = 2;
        uint64_t ln = f[1] & 0x7f;
        if (ln == 126) { if (avail < 4) break; ln = be(f + 2, 2); h = 4; }
        else if (ln == 127) { if (avail < 10) break; ln = be(f + 2, 8); h = 10; }
        if (avail - h < ln) break;
        int op = f[0] & 0x0f;
        if (op == 1 || op == 2) on_message(c, f + h, ln);
        else if (op == 9) send_frame(c, 0xA, f + h, ln);
        else if (op == 8) {
            send_frame(c, 0x8, f + h, ln < 2 ? ln : 2);
            closed(c);
            return;
        }
        pos += h + ln;
    }
    if (pos) {
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
    }
}

static int ep;

static int start_connect(Conn *c, struct sockaddr_in *dst, const char *src) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef IP_BIND_ADDRESS_NO_PORT
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, src, &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return -1; }
    if (connect(fd, (struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    set_state(c, S_CONNECTING);
    c->len = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void on_connected(Conn *c, const char *host) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { close(c->fd); c->fd = -1; set_state(c, S_IDLE); c->attempts++; failures++; return; }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    uint8_t key[16];
    char b64[32], req[512];
    static const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 16; i++) key[i] = (uint8_t)rand();
    int o = 0;
    for (int i = 0; i < 15; i += 3) {
        uint32_t v = key[i] << 16 | key[i + 1] << 8 | key[i + 2];
        b64[o++] = tbl[v >> 18]; b64[o++] = tbl[(v >> 12) & 63];
        b64[o++] = tbl[(v >> 6) & 63]; b64[o++] = tbl[v & 63];
    }
    b64[o++] = tbl[key[15] >> 2]; b64[o++] = tbl[(key[15] & 3) << 4];
    b64[o++] = '='; b64[o++] = '='; b64[o] = 0;
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     host, b64, naive ? "" : json ? "Sec-WebSocket-Protocol: oddsfeed.v1.json\r\n"
                                                   : "Sec-WebSocket-Protocol: oddsfeed.v1.msgpack\r\n");
    set_state(c, S_HANDSHAKE);
    send_all(c, (uint8_t *)req, (size_t)n);
}

static char *read_line(FILE *f) {
    static char *line;
    static size_t cap;
    ssize_t n = getline(&line, &cap, f);
    if (n < 0) return NULL;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    return line;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && strcmp(argv[5], "json") == 0)) {
        fprintf(stderr, "usage: loadgen oddsfeed|naive HOST PORT SRC_IP[,SRC_IP...] [json]\n");
        return 2;
    }
    naive = strcmp(argv[1], "naive") == 0;
    json = argc == 6;
    const char *host = argv[2];
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    char *ips[64];
    int nips = 0;
    for (char *s = strtok(argv[4], ","); s && nips < 64; s = strtok(NULL, ",")) ips[nips++] = s;
    if (!nips) return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;  /* each connection is a file descriptor */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char *line = read_line(stdin);
    if (!line) return 2;
    nconns = atoi(line);
    conns = calloc((size_t)nconns + 1, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        c->fd = -1;
        line = read_line(stdin);
        if (!line) return 2;
        c->markets = xrealloc(NULL, MAX_MARKETS * sizeof(char *));
        for (char *s = strtok(line, " "); s && c->nmarkets < MAX_MARKETS;
             s = strtok(NULL, " ")) {
            if (strlen(s) > 255) { fprintf(stderr, "loadgen: market id too long\n"); return 2; }
            c->markets[c->nmarkets++] = strdup(s);
        }
        for (int j = 0; j < MAX_MARKETS; j++) c->last[j] = -1;
    }
    srand((unsigned)getpid());
    ep = epoll_create1(0);
    int flags = fcntl(0, F_GETFL);
    fcntl(0, F_SETFL, flags | O_NONBLOCK);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);

    int next = 0, ready_sent = 0, stop = 0, retry_pending = 0;
    double t_start = now_s(CLOCK_MONOTONIC), sync_deadline = 0;
    char cmd[256];
    size_t cmdlen = 0;
    struct epoll_event evs[512];
    while (!stop && now_s(CLOCK_MONOTONIC) - t_start < MAX_RUN_S) {
        /* open connections, a bounded number of handshakes at a time */
        while (next < nconns && opening < MAX_CONNECTING && failures < MAX_FAILURES) {
            Conn *c = &conns[next];
            if (start_connect(c, &dst, ips[next % nips]) < 0) {
                c->attempts++;
                failures++;
            }
            next++;
        }
        /* retry failed connects (bounded: MAX_FAILURES overall, 5 per connection) */
        if (retry_pending)
            for (int i = 0; i < next && failures < MAX_FAILURES; i++)
                if (conns[i].state == S_IDLE && conns[i].attempts && conns[i].attempts < 5 &&
                    start_connect(&conns[i], &dst, ips[i % nips]) < 0) {
                    conns[i].attempts++;
                    failures++;
                }
        retry_pending = 0;
        for (int i = 0; i < next && !retry_pending && !ready_sent; i++)
            retry_pending = conns[i].state == S_IDLE && conns[i].attempts &&
                            conns[i].attempts < 5;
        if (!ready_sent && (next >= nconns || failures >= MAX_FAILURES) && !sync_deadline)
            sync_deadline = now_s(CLOCK_MONOTONIC) + SYNC_TIMEOUT_S;
        if (!ready_sent && sync_deadline && opening == 0 && !retry_pending &&
            (synced_count >= connected || now_s(CLOCK_MONOTONIC) > sync_deadline)) {
            printf("ready %d\n", connected);
            fflush(stdout);
            ready_sent = 1;
        }
        /* Poll, and sleep between polls instead of blocking in epoll_wait: on loopback the
         * sender's write pays for waking a receiver that sleeps on its sockets (an IPI and a
         * scheduler pass per write; measured: 20-25% more server CPU per delivery than with
         * a receiver that is busy). A real client is on another host; here a message waits
         * at most POLL_SLEEP_US for the next poll (the same for every server measured). */
        int n = epoll_wait(ep, evs, 512, 0);
        if (n == 0) {
            struct timespec ts = {0, POLL_SLEEP_US * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i < n; i++) {
            Conn *c = evs[i].data.ptr;
            if (!c) {  /* a command on stdin */
                ssize_t got = read(0, cmd + cmdlen, sizeof cmd - 1 - cmdlen);
                if (got == 0) { stop = 1; break; }
                if (got < 0) continue;
                cmdlen += (size_t)got;
                cmd[cmdlen] = 0;
                if (strstr(cmd, "go")) measuring = 1;
                if (strstr(cmd, "stop")) stop = 1;
                if (cmdlen > 128) cmdlen = 0;
                continue;
            }
            if (c->state == S_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, host);
            } else if (c->state == S_HANDSHAKE || c->state == S_OPEN) {
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            }
        }
    }
    /* reset instead of FIN: no TIME_WAIT left holding an ephemeral port for a minute */
    struct linger lg = {1, 0};
    for (int i = 0; i < nconns; i++) {
        if (conns[i].fd >= 0) {
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(conns[i].fd);
        }
    }
    size_t step = nlat > MAX_SAMPLES ? (nlat + MAX_SAMPLES - 1) / MAX_SAMPLES : 1;
    printf("{\"messages\": %llu, \"gaps\": %llu, \"frames\": %llu, \"n_lat\": %zu, "
           "\"connected\": %d, \"closed\": %d, \"lat_ms\": [",
           (unsigned long long)messages, (unsigned long long)gaps,
           (unsigned long long)frames, nlat, connected, closed_count);
    for (size_t i = 0; i < nlat; i += step) printf(i ? ",%.3f" : "%.3f", lat[i]);
    printf("]}\n");
    fflush(stdout);
    return 0;
}

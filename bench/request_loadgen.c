/* The request-path benchmark's WebSocket load generator: bet-slip validations over the
 * WebSocket `validate` op, the counterpart of wrk for the HTTP route (an external process,
 * never a Python client in the server's process). bench/request_path.py compiles this one
 * file with the machine's C compiler.
 *
 * CONNS connections (a minimal RFC 6455 client, JSON subprotocol: masked text frames out,
 * unmasked text frames in) each keep DEPTH validations outstanding: every reply sends the
 * next request. Slip n of a connection has LEGS legs on markets m((n + k) % MARKETS), k =
 * 0..LEGS-1, selection "h" at price 2.5 (the markets bench/request_path.py seeds).
 * Latency is the time from writing a request to reading its reply (matched by id), recorded
 * after a one-second warm-up for SECONDS seconds; every loop is bounded in time.
 *
 * Usage: request_loadgen HOST PORT TOKEN CONNS DEPTH SECONDS MARKETS LEGS
 * stdout: one JSON object: requests, errors (error replies and dropped connections),
 * seconds, p50_us, p99_us.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 256
#define MAX_SAMPLES 2000000
#define CONNECT_TIMEOUT_S 10.0

typedef struct {
    int fd, open;
    uint64_t next_id;
    double sent[MAX_DEPTH]; /* send time of request id, at id % MAX_DEPTH */
    uint8_t *buf;
    size_t len, cap;
} Conn;

static const char *token;
static int depth, markets, legs;
static uint64_t requests, errors;
static double *lat;
static size_t nlat;
static int measuring;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void send_request(Conn *c) {
    char body[4096];
    uint64_t id = c->next_id++;
    int n = snprintf(body, sizeof body, "{\"op\":\"validate\",\"id\":%llu,\"legs\":[",
                     (unsigned long long)id);
    for (int k = 0; k < legs; k++)
        n += snprintf(body + n, sizeof body - n,
                      "%s{\"market\":\"m%llu\",\"selection\":\"h\",\"price\":2.5}",
                      k ? "," : "", (unsigned long long)((id + k) % (uint64_t)markets));
    n += snprintf(body + n, sizeof body - n, "]}");
    uint8_t out[4200];
    size_t h = 0;
    out[h++] = 0x81; /* FIN, text */
    if (n < 126) {
        out[h++] = 0x80 | n;
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = n & 0xff;
    }
    memset(out + h, 0, 4); /* a mask of zeros: XOR is the identity (RFC 6455 allows it) */
    h += 4;
    memcpy(out + h, body, (size_t)n);
    c->sent[id % MAX_DEPTH] = now_s();
    if (send_all(c->fd, out, h + (size_t)n) < 0) c->open = 0;
}

static void on_message(Conn *c, const uint8_t *p, size_t n) {
    /* Every reply in the frame, found as text: {"op":"validation","id":N,...} alone, or
     * several as the items of a {"op":"batch","items":[...]} frame (only replies carry an
     * "id" key); each answered validation sends the next one. An error reply counts. */
    const uint8_t *end = p + n;
    for (const char *e = memmem(p, n, "\"op\":\"error\"", 12); e;
         e = memmem(e + 12, (size_t)(end - (const uint8_t *)(e + 12)), "\"op\":\"error\"", 12))
        errors++;
    for (const char *s = memmem(p, n, "\"id\":", 5); s;
         s = memmem(s + 5, (size_t)(end - (const uint8_t *)(s + 5)), "\"id\":", 5)) {
        uint64_t id = strtoull(s + 5, NULL, 10);
        if (measuring) {
            requests++;
            if (nlat < MAX_SAMPLES) lat[nlat++] = now_s() - c->sent[id % MAX_DEPTH];
        }
        send_request(c);
    }
}

static void on_readable(Conn *c) {
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap * 2 + 65536;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) { fprintf(stderr, "out of memory\n"); exit(1); }
        }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) { c->open = 0; return; }
        c->len += (size_t)r;
    }
    size_t at = 0;
    while (c->len - at >= 2) {
        const uint8_t *f = c->buf + at;
        size_t h = 2, n = f[1] & 0x7f;
        if (n == 126) {
            if (c->len - at < 4) break;
            n = (size_t)f[2] << 8 | f[3];
            h = 4;
        } else if (n == 127) {
            if (c->len - at < 10) break;
            n = 0;
            for (int i = 2; i < 10; i++) n = n << 8 | f[i];
            h = 10;
        }
        if (c->len - at < h + n) break;
        int opcode = f[0] & 0x0f;
        if (opcode == 8) { c->open = 0; return; }
        if (opcode == 1 || opcode == 2) on_message(c, f + h, n);
        at += h + n;
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
}

static int open_conn(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET /ws?token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: oddsfeed.v1.json\r\n\r\n",
                     token, host, port);
    if (send_all(fd, (uint8_t *)req, (size_t)n) < 0) { close(fd); return -1; }
    /* read the 101 response up to its blank line, byte by byte (once per connection) */
    char resp[4096];
    size_t got = 0;
    struct timeval tv = {.tv_sec = (long)CONNECT_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof resp - 1) {
        ssize_t r = read(fd, resp + got, 1);
        if (r <= 0) { close(fd); return -1; }
        got++;
        if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0) break;
    }
    resp[got] = 0;
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) { close(fd); return -1; }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: request_loadgen HOST PORT TOKEN CONNS DEPTH SECONDS MARKETS LEGS\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    token = argv[3];
    int nconns = atoi(argv[4]);
    depth = atoi(argv[5]);
    double seconds = atof(argv[6]);
    markets = atoi(argv[7]);
    legs = atoi(argv[8]);
    if (nconns < 1 || depth < 1 || depth > MAX_DEPTH || markets < 1 || legs < 1 || legs > 40) {
        fprintf(stderr, "request_loadgen: bad arguments\n");
        return 2;
    }
    lat = malloc(sizeof(double) * MAX_SAMPLES);
    Conn *conns = calloc((size_t)nconns, sizeof(Conn));
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = open_conn(host, port);
        if (conns[i].fd < 0) {
            fprintf(stderr, "request_loadgen: connection %d failed\n", i);
            return 1;
        }
        conns[i].open = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    for (int i = 0; i < nconns; i++)
        for (int d = 0; d < depth; d++) send_request(&conns[i]);
    double start = now_s(), measure_from = start + 1.0, end = measure_from + seconds;
    double measured_at = 0;
    struct epoll_event evs[64];
    for (;;) {
        double t = now_s();
        if (!measuring && t >= measure_from) { measuring = 1; measured_at = t; }
        if (t >= end) break;
        int n = epoll_wait(ep, evs, 64, 50);
        for (int i = 0; i < n; i++) {
            Conn *c = evs[i].data.ptr;
            if (c->open) on_readable(c);
            if (!c->open) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
            }
        }
    }
    double took = now_s() - measured_at;
    qsort(lat, nlat, sizeof(double), cmp);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("{\"requests\": %llu, \"errors\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, "
           "\"p99_us\": %.0f}\n", (unsigned long long)requests, (unsigned long long)errors,
           took, p50 * 1e6, p99 * 1e6);
    return 0;
}

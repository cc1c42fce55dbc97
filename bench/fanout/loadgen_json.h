/* JSON for the C load generator (included by loadgen.c, which stays one translation unit):
 * a received JSON text is rewritten into the msgpack the rest of loadgen.c already walks,
 * so both encodings go through one continuity check. Only what a server sends is needed:
 * objects, arrays, strings (escapes kept as written: ids and op names have none), integers
 * and other numbers (as float64), true, false, null.
 */

typedef struct { const uint8_t *p, *end; uint8_t *o, *oend; int bad; } Jx;

static void jx_ws(Jx *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static int jx_room(Jx *j, size_t n) {
    if ((size_t)(j->oend - j->o) < n) { j->bad = 1; return 0; }
    return 1;
}

static void jx_be(uint8_t *o, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) { o[i] = (uint8_t)v; v >>= 8; }
}

static void jx_value(Jx *j, int depth);

static void jx_string(Jx *j) {
    const uint8_t *s = ++j->p;  /* past the opening quote */
    while (j->p < j->end && *j->p != '"') j->p += *j->p == '\\' ? 2 : 1;
    if (j->p >= j->end) { j->bad = 1; return; }
    size_t n = (size_t)(j->p - s);
    j->p++;
    if (!jx_room(j, n + 5)) return;
    *j->o++ = 0xdb;
    jx_be(j->o, n, 4);
    j->o += 4;
    memcpy(j->o, s, n);
    j->o += n;
}

/* a container: msgpack wants the count first, so a 32-bit header is patched at the end */
static void jx_container(Jx *j, int depth, int object) {
    if (!jx_room(j, 5)) return;
    uint8_t *h = j->o;
    *j->o++ = object ? 0xdf : 0xdd;
    j->o += 4;
    j->p++;
    uint64_t count = 0;
    jx_ws(j);
    if (j->p < j->end && *j->p == (object ? '}' : ']')) { j->p++; jx_be(h + 1, 0, 4); return; }
    while (!j->bad) {
        jx_ws(j);
        if (object) {
            if (j->p >= j->end || *j->p != '"') { j->bad = 1; return; }
            jx_string(j);
            jx_ws(j);
            if (j->p >= j->end || *j->p != ':') { j->bad = 1; return; }
            j->p++;
        }
        jx_value(j, depth + 1);
        count++;
        jx_ws(j);
        if (j->p >= j->end) { j->bad = 1; return; }
        if (*j->p == ',') { j->p++; continue; }
        if (*j->p == (object ? '}' : ']')) { j->p++; break; }
        j->bad = 1;
    }
    jx_be(h + 1, count, 4);
}

static void jx_number(Jx *j) {
    const uint8_t *s = j->p;
    int integral = 1;
    while (j->p < j->end && strchr("+-0123456789.eE", *j->p)) {
        if (*j->p == '.' || *j->p == 'e' || *j->p == 'E') integral = 0;
        j->p++;
    }
    char tmp[64];
    size_t n = (size_t)(j->p - s);
    if (!n || n >= sizeof tmp || !jx_room(j, 9)) { j->bad = 1; return; }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (integral) {
        *j->o++ = 0xd3;
        jx_be(j->o, (uint64_t)strtoll(tmp, NULL, 10), 8);
    } else {
        double d = strtod(tmp, NULL);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        *j->o++ = 0xcb;
        jx_be(j->o, bits, 8);
    }
    j->o += 8;
}

static void jx_value(Jx *j, int depth) {
    jx_ws(j);
    if (depth > 32 || j->p >= j->end) { j->bad = 1; return; }
    uint8_t c = *j->p;
    if (c == '{' || c == '[') { jx_container(j, depth, c == '{'); return; }
    if (c == '"') { jx_string(j); return; }
    if (c == '-' || (c >= '0' && c <= '9')) { jx_number(j); return; }
    static const struct { const char *word; uint8_t mp; } lit[] = {
        {"true", 0xc3}, {"false", 0xc2}, {"null", 0xc0}};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(lit[i].word);
        if ((size_t)(j->end - j->p) >= n && memcmp(j->p, lit[i].word, n) == 0) {
            if (!jx_room(j, 1)) return;
            *j->o++ = lit[i].mp;
            j->p += n;
            return;
        }
    }
    j->bad = 1;
}

/* Rewrites the JSON text p[0..n) as msgpack into *out (grown as needed); returns its
 * length, or 0 when the text is not JSON this reader understands. */
static size_t json_to_msgpack(const uint8_t *p, size_t n, uint8_t **out, size_t *cap) {
    /* every JSON token is at least one byte; msgpack spends at most 9 per token */
    size_t want = n * 9 + 16;
    if (*cap < want) {
        *out = xrealloc(*out, want);
        *cap = want;
    }
    Jx j = {p, p + n, *out, *out + *cap, 0};
    jx_value(&j, 0);
    return j.bad ? 0 : (size_t)(j.o - *out);
}

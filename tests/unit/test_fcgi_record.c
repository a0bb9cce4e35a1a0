/* FastCGI records: encoding, name-value pairs, and the incremental decoder fed
 * whole, byte by byte, and with garbage. */
#include "test.h"

#include "common/buf.h"
#include "fcgi/record.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static void test_begin_abort_end(void)
{
    struct buf b;
    buf_init(&b, 1024);
    ASSERT_EQ(fcgi_encode_begin(&b, 1, FCGI_RESPONDER, 0), 0);
    ASSERT_EQ(fcgi_encode_abort(&b, 1), 0);
    static const uint8_t want[] = {1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0,
                                   0, 0, 0, 0, 1, 2, 0, 1, 0, 0, 0, 0};
    ASSERT_EQ(b.len, sizeof(want));
    ASSERT_TRUE(memcmp(b.data, want, sizeof(want)) == 0);
    buf_reset(&b);
    ASSERT_EQ(fcgi_encode_end(&b, 0x102, 0x01020304, FCGI_OVERLOADED), 0);
    static const uint8_t end[] = {1, 3, 1, 2, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0};
    ASSERT_EQ(b.len, sizeof(end));
    ASSERT_TRUE(memcmp(b.data, end, sizeof(end)) == 0);
    /* A buffer too small takes nothing. */
    struct buf small;
    buf_init(&small, 10);
    ASSERT_EQ(fcgi_encode_begin(&small, 1, FCGI_RESPONDER, 0), -ENOBUFS);
    ASSERT_EQ(small.len, 0);
    buf_finish(&b);
    buf_finish(&small);
}

static void test_stream_padding_and_split(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    ASSERT_EQ(fcgi_encode_stream(&b, FCGI_STDIN, 1, "hello", 5), 0);
    /* header, 5 bytes, 3 of padding */
    ASSERT_EQ(b.len, 16);
    ASSERT_EQ((uint8_t)b.data[5], 5);
    ASSERT_EQ((uint8_t)b.data[6], 3);
    ASSERT_MEMEQ(b.data + 8, 5, "hello");
    buf_reset(&b);
    ASSERT_EQ(fcgi_encode_stream(&b, FCGI_STDIN, 1, NULL, 0), 0);
    ASSERT_EQ(b.len, 8);
    ASSERT_EQ((uint8_t)b.data[1], FCGI_STDIN);
    ASSERT_EQ((uint8_t)b.data[5], 0);
    /* 200000 bytes: several records, each at most 65535 content bytes. */
    buf_reset(&b);
    size_t n = 200000;
    char *src = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (char)(i * 7);
    ASSERT_EQ(fcgi_encode_stream(&b, FCGI_STDOUT, 1, src, n), 0);
    struct fcgi_decoder d;
    fcgi_decoder_init(&d);
    size_t got = 0, off = 0;
    int records = 0;
    while (off < b.len) {
        struct fcgi_piece pc;
        long k = fcgi_decode(&d, b.data + off, b.len - off, &pc);
        ASSERT_TRUE(k > 0);
        if (k <= 0)
            break;
        off += (size_t)k;
        if (pc.type == FCGI_STDOUT) {
            ASSERT_TRUE(pc.len <= FCGI_CONTENT_MAX);
            ASSERT_TRUE(memcmp(pc.p, src + got, pc.len) == 0);
            got += pc.len;
            records++;
        }
    }
    ASSERT_EQ(got, n);
    ASSERT_EQ(records, 4);
    /* A full buffer takes nothing. */
    struct buf small;
    buf_init(&small, 100);
    ASSERT_EQ(fcgi_encode_stream(&small, FCGI_STDIN, 1, src, 200), -ENOBUFS);
    ASSERT_EQ(small.len, 0);
    free(src);
    buf_finish(&b);
    buf_finish(&small);
}

static void test_nv(void)
{
    struct buf b;
    buf_init(&b, 4096);
    char big[300];
    memset(big, 'v', sizeof(big));
    ASSERT_EQ(fcgi_nv_append(&b, "A", 1, "xy", 2), 0);
    ASSERT_EQ(fcgi_nv_append(&b, "LONG", 4, big, sizeof(big)), 0);
    ASSERT_EQ(b.len, 2 + 1 + 2 + 1 + 4 + 4 + 300);
    ASSERT_EQ((uint8_t)b.data[0], 1);
    ASSERT_EQ((uint8_t)b.data[1], 2);
    /* 300 in four bytes with the top bit set */
    ASSERT_EQ((uint8_t)b.data[6], 0x80);
    ASSERT_EQ((uint8_t)b.data[8], 1);
    ASSERT_EQ((uint8_t)b.data[9], 44);
    const char *n, *v;
    size_t nl, vl;
    long k = fcgi_nv_parse(b.data, b.len, &n, &nl, &v, &vl);
    ASSERT_EQ(k, 5);
    ASSERT_MEMEQ(n, nl, "A");
    ASSERT_MEMEQ(v, vl, "xy");
    long k2 = fcgi_nv_parse(b.data + k, b.len - (size_t)k, &n, &nl, &v, &vl);
    ASSERT_EQ(k2, (long)(b.len - (size_t)k));
    ASSERT_EQ(vl, 300);
    /* Every truncation is incomplete, never a wrong pair. */
    for (size_t cut = 0; cut < b.len - (size_t)k; cut++)
        ASSERT_EQ(fcgi_nv_parse(b.data + k, cut, &n, &nl, &v, &vl), -2);
    buf_finish(&b);
}

/* Feed bytes one at a time: pieces concatenate to the same streams. */
static void test_decode_bytewise(void)
{
    struct buf b;
    buf_init(&b, 4096);
    fcgi_encode_stream(&b, FCGI_STDOUT, 1, "Status: 200\r\n\r\nbody", 19);
    fcgi_encode_stream(&b, FCGI_STDERR, 1, "warn\n", 5);
    fcgi_encode_stream(&b, FCGI_STDOUT, 1, NULL, 0);
    fcgi_encode_end(&b, 1, 7, FCGI_REQUEST_COMPLETE);
    struct fcgi_decoder d;
    fcgi_decoder_init(&d);
    struct buf out, err;
    buf_init(&out, 4096);
    buf_init(&err, 4096);
    int ends = 0, eos = 0;
    uint32_t app = 0;
    for (size_t i = 0; i < b.len; i++) {
        struct fcgi_piece pc;
        long k = fcgi_decode(&d, b.data + i, 1, &pc);
        ASSERT_EQ(k, 1);
        if (pc.type == FCGI_STDOUT) {
            buf_append(&out, pc.p, pc.len);
            eos += pc.end_of_stream;
        } else if (pc.type == FCGI_STDERR) {
            buf_append(&err, pc.p, pc.len);
        } else if (pc.type == FCGI_END_REQUEST) {
            ends++;
            app = pc.app_status;
            ASSERT_EQ(pc.protocol_status, FCGI_REQUEST_COMPLETE);
            ASSERT_EQ(pc.request_id, 1);
        }
    }
    ASSERT_MEMEQ(out.data, out.len, "Status: 200\r\n\r\nbody");
    ASSERT_MEMEQ(err.data, err.len, "warn\n");
    ASSERT_EQ(ends, 1);
    ASSERT_EQ(eos, 1);
    ASSERT_EQ(app, 7);
    buf_finish(&b);
    buf_finish(&out);
    buf_finish(&err);
}

static void test_decode_garbage(void)
{
    struct fcgi_decoder d;
    struct fcgi_piece pc;
    /* HTTP instead of FastCGI: version 'H' */
    fcgi_decoder_init(&d);
    ASSERT_EQ(fcgi_decode(&d, "HTTP/1.1 200 OK\r\n", 17, &pc), -1);
    ASSERT_EQ(fcgi_decode(&d, "\1\6\0\1\0\0\0\0", 8, &pc), -1); /* stays failed */
    /* a type a web server never receives */
    fcgi_decoder_init(&d);
    ASSERT_EQ(fcgi_decode(&d, "\1\5\0\1\0\0\0\0", 8, &pc), -1);
    fcgi_decoder_init(&d);
    ASSERT_EQ(fcgi_decode(&d, "\1\14\0\1\0\0\0\0", 8, &pc), -1);
    /* END_REQUEST with a body that is not 8 bytes */
    fcgi_decoder_init(&d);
    ASSERT_EQ(fcgi_decode(&d, "\1\3\0\1\0\4\0\0", 8, &pc), -1);
    /* padding is skipped */
    fcgi_decoder_init(&d);
    static const char rec[] = "\1\6\0\1\0\1\3\0X\0\0\0\1\3\0\1\0\10\0\0\0\0\0\0\0\0\0\0";
    size_t off = 0;
    int seen = 0;
    while (off < sizeof(rec) - 1) {
        long k = fcgi_decode(&d, rec + off, sizeof(rec) - 1 - off, &pc);
        ASSERT_TRUE(k > 0);
        if (k <= 0)
            break;
        off += (size_t)k;
        if (pc.type == FCGI_STDOUT) {
            ASSERT_MEMEQ(pc.p, pc.len, "X");
            seen++;
        }
        if (pc.type == FCGI_END_REQUEST)
            seen += 10;
    }
    ASSERT_EQ(seen, 11);
}

int main(void)
{
    test_begin_abort_end();
    test_stream_padding_and_split();
    test_nv();
    test_decode_bytewise();
    test_decode_garbage();
    TEST_MAIN_END();
}

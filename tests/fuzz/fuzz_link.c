/* libFuzzer target for offload/link.c. The input is PATH, a newline, then the
 * raw query; each is read through a copy of exactly its length, so reading
 * past either is caught. Invariants: OK and EXPIRED come only with exactly one
 * well-formed expires=, which offload_link_expires() then returns, and the
 * verdict between them follows the clock; no expires= at all is MISSING; and
 * the same query with sig= replaced by the signature for its expires= and
 * PATH always passes the signature check (OK or EXPIRED, never BAD). */
#include "offload/link.h"

#include "fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define NOW 1767225600

static struct offload_link_key *key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    CHECK(offload_link_key_create("fuzz secret", 11, &key) == 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - (const char *)data) : size;
    size_t qlen = nl ? size - plen - 1 : 0;
    char *path = malloc(plen ? plen : 1), *query = malloc(qlen ? qlen : 1);
    memcpy(path, data, plen);
    if (qlen)
        memcpy(query, nl + 1, qlen);

    enum offload_link_verdict v = offload_link_check(key, NULL, path, plen, query, qlen, NOW);
    int64_t expires = -1;
    int er = offload_link_expires(query, qlen, &expires);
    if (v == OFFLOAD_LINK_OK || v == OFFLOAD_LINK_EXPIRED) {
        CHECK(er == 0);
        CHECK((v == OFFLOAD_LINK_OK) == (expires > NOW));
    }
    if (er == -ENOENT)
        CHECK(v == OFFLOAD_LINK_MISSING);

    if (er == 0) {
        /* Sign what the query says and check it again: never BAD. */
        char epoch[24], sig[OFFLOAD_LINK_SIG_LEN + 1], good[96];
        /* The one parameter named expires= (at the start or after '&'). */
        const char *e = query;
        while (!(qlen - (size_t)(e - query) >= 8 && memcmp(e, "expires=", 8) == 0)) {
            e = memchr(e, '&', qlen - (size_t)(e - query));
            CHECK(e != NULL);
            e++;
        }
        size_t elen = 0;
        while (e + 8 + elen < query + qlen && e[8 + elen] != '&')
            elen++;
        CHECK(elen <= OFFLOAD_LINK_EPOCH_MAX);
        memcpy(epoch, e + 8, elen);
        CHECK(offload_link_sign(key, epoch, elen, path, plen, sig) == 0);
        int n = snprintf(good, sizeof(good), "expires=%.*s&sig=%s", (int)elen, epoch, sig);
        CHECK(n > 0 && (size_t)n < sizeof(good));
        enum offload_link_verdict w =
            offload_link_check(key, NULL, path, plen, good, (size_t)n, NOW);
        CHECK(w == OFFLOAD_LINK_OK || w == OFFLOAD_LINK_EXPIRED);
        CHECK((w == OFFLOAD_LINK_OK) == (expires > NOW));
    }
    free(path);
    free(query);
    return 0;
}

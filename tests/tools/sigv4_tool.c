/* Test tool: sign requests read from stdin with ferry's SigV4 signer, one per
 * line, so tests can compare against a reference signer (botocore).
 *
 * Input line (space separated; strings are hex-encoded bytes, "." is the empty
 * string, "-" is NULL):
 *   MODE METHOD HOST PATH WHEN EXPIRES ACCESS SECRET TOKEN REGION PAYLOAD
 *   NQUERY (NAME VALUE)* NHEADERS (NAME VALUE)*
 * MODE is "header" or "presign"; PAYLOAD is a hex SHA-256 or "-" (UNSIGNED-PAYLOAD).
 * Output: one line per request, the Authorization value or the presigned query
 * string, or "ERROR <errno>".
 *
 * With --cache, every line signs through one struct sigv4_key_cache, as the
 * store does, never cleared: lines whose credentials, region or day differ
 * from the line before must each get their own key (rotated credentials). */
#include "store/sigv4.h"
#include "common/text.h"

#include "common/alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *next_field(char **save)
{
    return strtok_r(NULL, " \n", save);
}

/* Decode a hex field in place; returns NULL for "-" and "" for ".". */
static const char *decode(char *f)
{
    if (!f || strcmp(f, "-") == 0)
        return NULL;
    if (strcmp(f, ".") == 0)
        return "";
    size_t n = strlen(f) / 2;
    for (size_t i = 0; i < n; i++)
        f[i] = (char)(text_hex_value(f[2 * i]) * 16 + text_hex_value(f[2 * i + 1]));
    f[n] = '\0';
    return f;
}

static int sign_line(char *line, struct sigv4_key_cache *keys, struct buf *out)
{
    char *save = NULL;
    char *mode = strtok_r(line, " \n", &save);
    struct sigv4_request r = {0};
    struct sigv4_creds c = {0};
    if (!mode)
        return -EINVAL;
    r.method = next_field(&save);
    r.host = decode(next_field(&save));
    r.path = decode(next_field(&save));
    char *when = next_field(&save), *expires = next_field(&save);
    c.access_key = decode(next_field(&save));
    c.secret_key = decode(next_field(&save));
    c.session_token = decode(next_field(&save));
    c.region = decode(next_field(&save));
    c.service = "s3";
    c.keys = keys;
    char *payload = next_field(&save);
    if (!payload || !when || !expires)
        return -EINVAL;
    r.payload_hash = strcmp(payload, "-") == 0 ? NULL : payload;
    r.when = (time_t)strtoll(when, NULL, 10);

    struct sigv4_kv kv[2][64];
    size_t counts[2];
    for (int list = 0; list < 2; list++) {
        char *n = next_field(&save);
        counts[list] = n ? strtoul(n, NULL, 10) : 0;
        if (counts[list] > 64)
            return -EINVAL;
        for (size_t i = 0; i < counts[list]; i++) {
            kv[list][i].name = decode(next_field(&save));
            kv[list][i].value = decode(next_field(&save));
            if (!kv[list][i].name)
                return -EINVAL;
        }
    }
    r.query = kv[0];
    r.nquery = counts[0];
    r.headers = kv[1];
    r.nheaders = counts[1];
    if (strcmp(mode, "presign") == 0)
        return sigv4_presign(&r, &c, strtol(expires, NULL, 10), out);
    return sigv4_sign_header(&r, &c, out);
}

int main(int argc, char **argv)
{
    struct sigv4_key_cache keys = {0};
    int cached = argc > 1 && strcmp(argv[1], "--cache") == 0;
    char *line = NULL;
    size_t cap = 0;
    struct buf out;
    buf_init(&out, 1 << 20);
    while (getline(&line, &cap, stdin) > 0) {
        buf_reset(&out);
        int r = sign_line(line, cached ? &keys : NULL, &out);
        if (r < 0)
            printf("ERROR %d\n", -r);
        else
            printf("%s\n", out.data);
    }
    fflush(stdout);
    free(line);
    buf_finish(&out);
    sigv4_key_cache_clear(&keys);
    return 0;
}

#include "store/creds.h"

#include "common/alloc.h"
#include "common/timeutil.h"

#include <errno.h>
#include <ini.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int set(const char *s)
{
    return s && *s;
}

/* Wipe and free a secret; *field is NULL afterwards. */
static void secret_free(char **field)
{
    if (*field)
        OPENSSL_cleanse(*field, strlen(*field));
    free(*field);
    *field = NULL;
}

static void fill(struct creds *c, const char *ak, const char *sk, const char *token,
                 const char *source)
{
    c->access_key = xstrdup(ak);
    c->secret_key = xstrdup(sk);
    c->session_token = set(token) ? xstrdup(token) : NULL;
    snprintf(c->source, sizeof(c->source), "%s", source);
}

struct profile_scan {
    const char *profile;
    char *access_key, *secret_key, *session_token;
    char *expires; /* x_security_token_expires, as saml2aws and gimme-aws-creds write it */
    int found;
};

static void replace(char **field, const char *value)
{
    secret_free(field);
    *field = xstrdup(value);
}

static int profile_line(void *user, const char *section, const char *name, const char *value)
{
    struct profile_scan *p = user;
    if (strcmp(section, p->profile) != 0)
        return 1;
    p->found = 1;
    if (strcmp(name, "aws_access_key_id") == 0)
        replace(&p->access_key, value);
    else if (strcmp(name, "aws_secret_access_key") == 0)
        replace(&p->secret_key, value);
    else if (strcmp(name, "aws_session_token") == 0)
        replace(&p->session_token, value);
    else if (strcmp(name, "x_security_token_expires") == 0)
        replace(&p->expires, value);
    return 1;
}

static void scan_free(struct profile_scan *p)
{
    secret_free(&p->access_key);
    secret_free(&p->secret_key);
    secret_free(&p->session_token);
    secret_free(&p->expires);
}

static void stamp_of(const struct stat *st, struct creds_stamp *out)
{
    *out = (struct creds_stamp){
        .dev = (unsigned long long)st->st_dev,
        .ino = (unsigned long long)st->st_ino,
        .size = (unsigned long long)st->st_size,
        .mtime_ns = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
        .ctime_ns = (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec,
    };
}

/* Read profile from the credentials file at path into c (and remember the file). */
static int read_file(const char *path, const char *profile, struct creds *c, char *why,
                     size_t whylen)
{
    struct profile_scan scan = {.profile = profile};
    time_t expires = 0;
    FILE *f = fopen(path, "re");
    int r;
    if (!f) {
        snprintf(why, whylen,
                 "no credentials in [store] or the environment, and '%s' cannot be read", path);
        r = -ENOENT;
        goto fail;
    }
    struct stat st;
    struct creds_stamp stamp = {0};
    if (fstat(fileno(f), &st) == 0)
        stamp_of(&st, &stamp);
    int line = ini_parse_file(f, profile_line, &scan);
    fclose(f);
    if (line != 0) {
        snprintf(why, whylen, "%s:%d: cannot parse the credentials file", path, line);
        r = -EINVAL;
    } else if (!scan.found) {
        snprintf(why, whylen, "profile '%s' is not in '%s'", profile, path);
        r = -ENOENT;
    } else if (!set(scan.access_key) || !set(scan.secret_key)) {
        snprintf(why, whylen,
                 "profile '%s' in '%s' lacks aws_access_key_id or aws_secret_access_key", profile,
                 path);
        r = -EINVAL;
    } else if (set(scan.expires) && creds_parse_expiry(scan.expires, &expires) < 0) {
        snprintf(why, whylen,
                 "profile '%s' in '%s': x_security_token_expires: cannot parse '%.64s'", profile,
                 path, scan.expires);
        r = -EINVAL;
    } else {
        char source[64];
        snprintf(source, sizeof(source), "file:%s", profile);
        fill(c, scan.access_key, scan.secret_key, scan.session_token, source);
        c->file = xstrdup(path);
        c->profile = xstrdup(profile);
        c->stamp = stamp;
        c->checked_ms = time_mono_ms();
        c->expires = expires;
        r = 0;
    }
fail:
    scan_free(&scan);
    return r;
}

static int from_file(const char *profile, struct creds *c, char *why, size_t whylen)
{
    const char *path = getenv("AWS_SHARED_CREDENTIALS_FILE");
    if (set(path))
        return read_file(path, profile, c, why, whylen);
    const char *home = getenv("HOME");
    if (!set(home)) {
        snprintf(why, whylen, "no credentials in [store], the environment, or a file");
        return -ENOENT;
    }
    char *home_path = xasprintf("%s/.aws/credentials", home);
    int r = read_file(home_path, profile, c, why, whylen);
    free(home_path);
    return r;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int creds_refresh(struct creds *c, int force, char *why, size_t whylen)
{
    if (!c->file)
        return 0;
    uint64_t now = time_mono_ms();
    if (!force && now - c->checked_ms < 1000)
        return 0;
    c->checked_ms = now;
    struct stat st;
    struct creds_stamp stamp;
    if (stat(c->file, &st) < 0) {
        int e = errno;
        snprintf(why, whylen, "'%s': %s", c->file, strerror(e));
        return -e;
    }
    stamp_of(&st, &stamp);
    if (!force && memcmp(&stamp, &c->stamp, sizeof(stamp)) == 0)
        return 0;
    struct creds fresh;
    memset(&fresh, 0, sizeof(fresh));
    int r = read_file(c->file, c->profile, &fresh, why, whylen);
    if (r < 0)
        return r;
    int changed = !same(fresh.access_key, c->access_key) ||
                  !same(fresh.secret_key, c->secret_key) ||
                  !same(fresh.session_token, c->session_token);
    creds_finish(c);
    *c = fresh;
    return changed;
}

int creds_parse_expiry(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    if (*p == '.') /* fractional seconds: not needed for an expiry */
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    long offset = 0;
    if (*p == 'Z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int hh = 0, mm = 0;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 || mm > 59)
            return -EINVAL;
        offset = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *out = t - offset;
    return 0;
}

int creds_resolve(const char *cfg_access, const char *cfg_secret, const char *cfg_token,
                  const char *cfg_profile, struct creds *c, char *why, size_t whylen)
{
    memset(c, 0, sizeof(*c));
    if (set(cfg_access) || set(cfg_secret)) {
        if (!set(cfg_access) || !set(cfg_secret)) {
            snprintf(why, whylen, "[store] needs both access_key and secret_key");
            return -EINVAL;
        }
        fill(c, cfg_access, cfg_secret, cfg_token, "config");
        return 0;
    }
    const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (set(ak) || set(sk)) {
        if (!set(ak) || !set(sk)) {
            snprintf(why, whylen, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set");
            return -EINVAL;
        }
        time_t expires = 0;
        const char *exp = getenv("AWS_CREDENTIAL_EXPIRATION");
        if (set(exp) && creds_parse_expiry(exp, &expires) < 0) {
            snprintf(why, whylen,
                     "AWS_CREDENTIAL_EXPIRATION: cannot parse '%.64s' "
                     "(want 2026-01-31T12:00:00Z)",
                     exp);
            return -EINVAL;
        }
        fill(c, ak, sk, getenv("AWS_SESSION_TOKEN"), "environment");
        c->expires = expires;
        return 0;
    }
    const char *profile = set(cfg_profile) ? cfg_profile : getenv("AWS_PROFILE");
    return from_file(set(profile) ? profile : "default", c, why, whylen);
}

void creds_finish(struct creds *c)
{
    if (!c)
        return;
    secret_free(&c->access_key);
    secret_free(&c->secret_key);
    secret_free(&c->session_token);
    free(c->file);
    c->file = NULL;
    free(c->profile);
    c->profile = NULL;
}

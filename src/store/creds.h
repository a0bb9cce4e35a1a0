/* S3 credentials: the [store] keys, then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN (and AWS_CREDENTIAL_EXPIRATION, ISO 8601, for session
 * credentials that expire, as the AWS SDKs and credential helpers export it), then the shared
 * credentials file (AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials; profile from [store] profile, AWS_PROFILE, else "default"). */
#ifndef FERRY_STORE_CREDS_H
#define FERRY_STORE_CREDS_H

#include <stddef.h>
#include <time.h>

struct creds {
    char *access_key;
    char *secret_key;
    char *session_token; /* NULL when none */
    /* When temporary credentials expire (AWS_CREDENTIAL_EXPIRATION, or
     * x_security_token_expires in the file); 0: unknown. */
    time_t expires;
    char source[64]; /* "config", "environment", "file:PROFILE": for messages */
    /* From the shared credentials file: where, and that file as last read, so that
     * creds_refresh() can follow a rewrite (rotated session credentials). */
    char *file;    /* NULL when not from a file */
    char *profile; /* the file's profile */
    struct creds_stamp {
        unsigned long long dev, ino, size;
        long long mtime_ns, ctime_ns;
    } stamp;
    unsigned long long checked_ms; /* monotonic: the file was last looked at */
};

/** Resolve credentials in the documented order; the cfg_* arguments are the
 * [store] values (NULL or "" when unset). Fills c (caller-owned, creds_finish())
 * and returns 0, or returns -ENOENT (none found) / -EINVAL (incomplete) with a
 * reason in why that never contains a secret. Reads the environment: call before
 * starting threads that change it. */
int creds_resolve(const char *cfg_access, const char *cfg_secret, const char *cfg_token,
                  const char *cfg_profile, struct creds *c, char *why, size_t whylen);

/** Follow a rewrite of the shared credentials file c came from (session
 * credentials rotated by an agent while ferry runs). Looks at the file (one
 * stat, at most once per second unless force) and re-reads it when it changed,
 * or whenever force is set (the store just refused c: ExpiredToken and the like).
 * Returns 1 when c now holds different credentials, 0 when they are unchanged
 * (or c did not come from a file: the environment and the config cannot change
 * while ferry runs), or -errno with why set when the file cannot be used now
 * (c is left as it was). The thread that owns c. */
int creds_refresh(struct creds *c, int force, char *why, size_t whylen);

/** Parse an ISO 8601 UTC instant as AWS writes expirations ("2026-01-31T12:00:00Z",
 * optional fractional seconds, "Z" or "+HH:MM"/"-HH:MM") into *out. Returns 0 or
 * -EINVAL. Pure; any thread. */
int creds_parse_expiry(const char *s, time_t *out);

/** Wipe and free the secrets in c. NULL-safe. */
void creds_finish(struct creds *c);

#endif

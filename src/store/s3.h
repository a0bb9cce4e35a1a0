/* The S3 backend: requests signed with our SigV4 (store/sigv4.h) and sent with
 * libcurl. Uploads are per-file state machines (PUT, or Create / parts /
 * Complete / Abort) driven by one curl multi handle that the store keeps, so
 * store_put_many() runs many uploads on one thread and reuses connections
 * across calls; head, get, delete and abort use the store's own easy handle.
 * A struct store is used by one thread at a time. */
#ifndef FERRY_STORE_S3_H
#define FERRY_STORE_S3_H

#include "store/store.h"

struct ferry_conf;

/** Create the S3 backend from conf's [store] section: endpoint, region, bucket,
 * addressing, credentials (store/creds.h), TLS and timeouts. Returns 0 and *out,
 * or -EINVAL with err describing the configuration problem (no secrets). */
int s3_store_create(const struct ferry_conf *conf, struct store **out, struct store_error *err);

/** Is this S3 error code worth retrying (SlowDown, InternalError, RequestTimeout,
 * ServiceUnavailable)? */
int s3_code_is_retryable(const char *code);

/** Copy the text of the first <tag>...</tag> in xml[0..len) into out, with the
 * five XML entities decoded. Returns 0 or -ENOENT. */
int s3_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

/** Full-jitter backoff: a uniform random delay in [0, min(max_ms, base_ms << attempt)]
 * using and advancing *seed. */
unsigned s3_backoff_ms(unsigned attempt, unsigned base_ms, unsigned max_ms, uint64_t *seed);

#endif

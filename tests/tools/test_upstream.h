/* A test-only deferred handler for ferry-test (never linked into ferry):
 * requests under /_test/ are relayed to a line-protocol upstream on the unix
 * socket named by FERRY_TEST_UPSTREAM, exercising conn_defer(), request body
 * streaming and streamed responses through the real server.
 *
 * Protocol: ferry sends "METHOD PATH\n", then the request body, then shuts
 * down its write side; the upstream answers "STATUS LENGTH\n" (LENGTH -1:
 * unknown) followed by the body, and closes. */
#ifndef FERRY_TESTS_TEST_UPSTREAM_H
#define FERRY_TESTS_TEST_UPSTREAM_H

struct server;

/** Install the /_test/ handler in the backend slot of s. Supervisor thread,
 * before server_run(). Returns 0. */
int test_upstream_install(struct server *s);

#endif

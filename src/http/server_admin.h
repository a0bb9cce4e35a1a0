/* The server's part of the admin socket: its status section ("server": pid,
 * connections, requests). Kept out of server.c so that the admin module
 * depends on nothing in src/http. */
#ifndef FERRY_HTTP_SERVER_ADMIN_H
#define FERRY_HTTP_SERVER_ADMIN_H

struct admin;
struct server;

/**
 * Register the "server" status section of s with a. s must outlive a (or at
 * least every `status` a serves). Returns 0 or -EEXIST. The admin's loop
 * thread (the supervisor's).
 */
int server_register_admin(struct server *s, struct admin *a);

#endif

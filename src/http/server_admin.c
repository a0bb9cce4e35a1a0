#include "http/server_admin.h"

#include "admin/admin.h"
#include "common/buf.h"
#include "http/server.h"

#include <inttypes.h>
#include <unistd.h>

static int status_section(json_t *section, struct buf *text, void *arg)
{
    struct server *s = arg;
    struct server_stats st;
    server_get_stats(s, &st);
    int r =
        admin_json_add(section, json_pack("{s:i, s:I, s:I, s:I}", "pid", (int)getpid(),
                                          "connections_open", (json_int_t)st.connections_open,
                                          "requests_total", (json_int_t)st.requests_total,
                                          "requests_inflight", (json_int_t)st.requests_inflight));
    if (r == 0)
        r = buf_printf(text,
                       "server: pid %d, %" PRIu64 " connections open, %" PRIu64
                       " requests (%" PRIu64 " in flight)\n",
                       (int)getpid(), st.connections_open, st.requests_total, st.requests_inflight);
    return r;
}

int server_register_admin(struct server *s, struct admin *a)
{
    return admin_register_status(a, "server", status_section, s);
}

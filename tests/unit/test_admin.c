/* Unit tests for src/admin: the line protocol, the reply builders, the
 * listening socket, and a live admin on an event loop (command deadline, idle
 * timeout, eviction of the idlest client, held clients, error replies). */
#include "admin/admin.h"
#include "common/buf.h"
#include "common/evloop.h"
#include "common/timeutil.h"

#include "test.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void test_admin_parse(void)
{
    struct admin_request req;
    const char *l = "down retry_after=30 message=Back%20soon%25 drain=1\nup\n";
    int n = admin_parse_line(l, strlen(l), &req);
    ASSERT_EQ(n, (int)strlen("down retry_after=30 message=Back%20soon%25 drain=1\n"));
    ASSERT_MEMEQ(req.command.p, req.command.len, "down");
    ASSERT_EQ(req.nargs, 3);
    const struct admin_str *m = admin_request_arg(&req, "message");
    ASSERT_TRUE(m != NULL);
    char out[64];
    ASSERT_EQ(admin_decode_value(m, out, sizeof(out)), 10);
    ASSERT_STREQ(out, "Back soon%");
    ASSERT_EQ(admin_decode_value(m, out, 5), -1); /* does not fit */
    ASSERT_TRUE(admin_request_arg(&req, "until") == NULL);
    ASSERT_EQ(admin_parse_line(l + n, strlen(l + n), &req), 3);
    ASSERT_EQ(req.nargs, 0);

    ASSERT_EQ(admin_parse_line("status", 6, &req), -2);
    ASSERT_EQ(admin_parse_line("status\r\n", 8, &req), 8);
    ASSERT_EQ(admin_parse_line("  status  \n", 11, &req), 11);
    ASSERT_MEMEQ(req.command.p, req.command.len, "status");
    ASSERT_EQ(admin_parse_line("\n", 1, &req), -1);
    ASSERT_EQ(admin_parse_line("DOWN\n", 5, &req), -1);
    ASSERT_EQ(admin_parse_line("down x\n", 7, &req), -1);
    ASSERT_EQ(admin_parse_line("down =1\n", 8, &req), -1);
    ASSERT_EQ(admin_parse_line("down a=%zz\n", 11, &req), -1);
    ASSERT_EQ(admin_parse_line("down a=%4\n", 10, &req), -1);
    ASSERT_EQ(admin_parse_line("down a=\x01\n", 9, &req), -1);
    ASSERT_EQ(admin_parse_line("\xff\xfe\n", 3, &req), -1);
    ASSERT_EQ(admin_parse_line("GET / HTTP/1.1\r\n", 16, &req), -1);
    char many[512] = "down";
    for (int i = 0; i <= ADMIN_MAX_ARGS; i++)
        strcat(many, " a=1");
    strcat(many, "\n");
    ASSERT_EQ(admin_parse_line(many, strlen(many), &req), -1);

    struct buf b;
    buf_init(&b, 256);
    ASSERT_EQ(admin_encode_value(&b, "a b%\n\xc3\xa9=", 8), 0);
    ASSERT_STREQ(b.data, "a%20b%25%0A%C3%A9=");
    struct admin_str s = {b.data, b.len};
    ASSERT_EQ(admin_decode_value(&s, out, sizeof(out)), 8);
    ASSERT_TRUE(memcmp(out, "a b%\n\xc3\xa9=", 8) == 0);
    buf_finish(&b);
}

static void test_admin_listen(void)
{
    char dir[] = "/tmp/ferry-test-admin-XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/sub/ferry.sock", dir);
    int fd = admin_listen(path, err, sizeof(err));
    ASSERT_TRUE(fd >= 0);
    struct stat st;
    ASSERT_EQ(lstat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    /* A live server: refused. */
    ASSERT_EQ(admin_listen(path, err, sizeof(err)), -EADDRINUSE);
    ASSERT_TRUE(strstr(err, "another ferry is running") != NULL);
    /* A client: no reply within the timeout, reported as such. */
    struct buf reply;
    buf_init(&reply, 1024);
    ASSERT_EQ(admin_call(path, "status", &reply, 50, err, sizeof(err)), -ETIMEDOUT);
    ASSERT_STREQ(err, "the server did not answer within 0.05 s");
    /* A backlog that is full (nobody accepts): named as such, not EAGAIN. */
    int fillers[128], nfill = 0;
    for (; nfill < 128; nfill++) {
        fillers[nfill] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, path);
        if (connect(fillers[nfill], (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            close(fillers[nfill]);
            break;
        }
    }
    ASSERT_TRUE(nfill < 128);
    ASSERT_EQ(admin_call(path, "status", &reply, 50, err, sizeof(err)), -EAGAIN);
    ASSERT_STREQ(err, "the admin socket is full: the server did not accept the connection "
                      "within 0.05 s");
    while (nfill > 0)
        close(fillers[--nfill]);
    /* A stale socket (nobody listening): replaced. */
    close(fd);
    ASSERT_EQ(admin_call(path, "status", &reply, 50, err, sizeof(err)), -ECONNREFUSED);
    ASSERT_TRUE(strstr(err, "no server running") != NULL);
    fd = admin_listen(path, err, sizeof(err));
    ASSERT_TRUE(fd >= 0);
    close(fd);
    unlink(path);
    ASSERT_EQ(admin_call(path, "status", &reply, 50, err, sizeof(err)), -ENOENT);
    ASSERT_TRUE(strstr(err, "does not exist") != NULL);
    /* Not a socket: left alone. */
    FILE *f = fopen(path, "w");
    fclose(f);
    ASSERT_EQ(admin_listen(path, err, sizeof(err)), -EEXIST);
    unlink(path);
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    ASSERT_EQ(admin_listen(longp, err, sizeof(err)), -ENAMETOOLONG);
    buf_finish(&reply);
    snprintf(path, sizeof(path), "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

static void test_reply_builders(void)
{
    struct buf line;
    buf_init(&line, ADMIN_REPLY_MAX);
    json_t *r = json_object();
    json_object_set_new(r, "x", json_integer(1));
    ASSERT_EQ(admin_reply_error(r, "bad '%s'", "x\"y"), 0);
    admin_reply_format(r, &line);
    ASSERT_STREQ(line.data, "{\"ok\":false,\"error\":\"bad 'x\\\"y'\"}\n");
    /* A message that is not UTF-8 still gives a valid error reply. */
    admin_reply_error(r, "bad %s", "\xff");
    admin_reply_format(r, &line);
    ASSERT_STREQ(line.data, "{\"ok\":false,\"error\":\"error (its message is not UTF-8)\"}\n");
    /* json_pack() fails on a string that is not UTF-8: the add fails too. */
    json_object_clear(r);
    ASSERT_EQ(admin_json_add(r, json_pack("{s:s}", "a", "\xc3")), -EINVAL);
    ASSERT_EQ(admin_json_add(r, json_pack("{s:s}", "a", "\xc3\xa9")), 0);
    ASSERT_EQ(admin_json_add(r, json_integer(3)), -EINVAL); /* not an object */
    admin_reply_format(r, &line);
    ASSERT_STREQ(line.data, "{\"a\":\"\xc3\xa9\"}\n");
    /* Too large: an error reply, not a cut line. */
    char *big = malloc(ADMIN_REPLY_MAX);
    memset(big, 'x', ADMIN_REPLY_MAX - 1);
    big[ADMIN_REPLY_MAX - 1] = '\0';
    json_object_set_new(r, "big", json_string(big));
    admin_reply_format(r, &line);
    ASSERT_STREQ(line.data, "{\"ok\":false,\"error\":\"reply too large\"}\n");
    free(big);
    admin_reply_format(NULL, &line);
    ASSERT_STREQ(line.data, "{\"ok\":false,\"error\":\"the reply could not be built\"}\n");
    json_decref(r);
    buf_finish(&line);
}

/* ---- a live admin on a loop thread ---- */

struct live {
    struct evloop *loop;
    struct admin *admin;
    struct admin_client *held;
    bool break_status;
    char path[256];
    char dir[64];
    pthread_t thread;
};

static int cmd_hold(struct admin_client *c, const struct admin_request *req, json_t *reply,
                    void *arg)
{
    struct live *lv = arg;
    if (lv->held)
        return admin_reply_error(reply, "already holding one");
    lv->held = c;
    admin_client_hold(c);
    return ADMIN_REPLY_LATER;
}

static int cmd_release(struct admin_client *c, const struct admin_request *req, json_t *reply,
                       void *arg)
{
    struct live *lv = arg;
    if (!lv->held)
        return admin_reply_error(reply, "nothing held");
    struct admin_client *h = lv->held;
    lv->held = NULL;
    admin_client_reply(h, json_pack("{s:s}", "released", "yes"));
    return 0;
}

static int cmd_bad(struct admin_client *c, const struct admin_request *req, json_t *reply,
                   void *arg)
{
    json_object_set_new(reply, "partial", json_true());
    return admin_json_add(reply, json_pack("{s:s}", "text", "\xff\xfe"));
}

static int cmd_break(struct admin_client *c, const struct admin_request *req, json_t *reply,
                     void *arg)
{
    struct live *lv = arg;
    lv->break_status = !lv->break_status;
    return 0;
}

static int section_test(json_t *section, struct buf *text, void *arg)
{
    struct live *lv = arg;
    if (lv->break_status)
        return admin_json_add(section, json_pack("{s:s}", "x", "\xc0"));
    json_object_set_new(section, "fine", json_true());
    return buf_append_str(text, "test: fine\n");
}

static void *loop_main(void *arg)
{
    struct live *lv = arg;
    evloop_run(lv->loop);
    return NULL;
}

static void loop_stop(struct evloop *l, void *arg)
{
    evloop_stop(l);
}

static void live_start(struct live *lv)
{
    memset(lv, 0, sizeof(*lv));
    strcpy(lv->dir, "/tmp/ferry-test-admin-XXXXXX");
    ASSERT_TRUE(mkdtemp(lv->dir) != NULL);
    snprintf(lv->path, sizeof(lv->path), "%s/admin.sock", lv->dir);
    lv->loop = evloop_create();
    char err[256];
    lv->admin = admin_create(lv->loop, lv->path, err, sizeof(err));
    if (!lv->admin) {
        TEST_FAIL("admin_create: %s", err);
        exit(1);
    }
    admin_set_limits(lv->admin, 200, 300, 3);
    ASSERT_EQ(admin_register(lv->admin, "hold", cmd_hold, lv), 0);
    ASSERT_EQ(admin_register(lv->admin, "release", cmd_release, lv), 0);
    ASSERT_EQ(admin_register(lv->admin, "bad", cmd_bad, lv), 0);
    ASSERT_EQ(admin_register(lv->admin, "break", cmd_break, lv), 0);
    ASSERT_EQ(admin_register(lv->admin, "ping", cmd_bad, lv), -EEXIST);
    ASSERT_EQ(admin_register(lv->admin, "hold", cmd_bad, lv), -EEXIST);
    ASSERT_EQ(admin_register_status(lv->admin, "test", section_test, lv), 0);
    ASSERT_EQ(admin_register_status(lv->admin, "admin", section_test, lv), -EEXIST);
    pthread_create(&lv->thread, NULL, loop_main, lv);
}

static void live_stop(struct live *lv)
{
    evloop_post(lv->loop, loop_stop, NULL);
    pthread_join(lv->thread, NULL);
    admin_destroy(lv->admin);
    evloop_destroy(lv->loop);
    rmdir(lv->dir);
}

static int live_connect(struct live *lv)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, lv->path);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

/* Read one line (or up to EOF) within 3 s; returns its length, 0 at EOF. */
static size_t read_line(int fd, char *out, size_t outlen)
{
    size_t n = 0;
    while (n + 1 < outlen) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 3000) != 1)
            break;
        ssize_t r = recv(fd, out + n, 1, 0);
        if (r <= 0)
            break;
        n++;
        if (out[n - 1] == '\n')
            break;
    }
    out[n] = '\0';
    return n;
}

/* True when fd reaches EOF within 3 s (after any reply bytes). */
static bool wait_eof(int fd)
{
    char tmp[4096];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 3000) != 1)
            return false;
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r <= 0)
            return true;
    }
}

static json_t *call(int fd, const char *line)
{
    ASSERT_EQ(send(fd, line, strlen(line), MSG_NOSIGNAL), (long long)strlen(line));
    char buf[ADMIN_REPLY_MAX];
    size_t n = read_line(fd, buf, sizeof(buf));
    json_t *j = json_loadb(buf, n, 0, NULL);
    if (!json_is_object(j))
        TEST_FAIL("reply to '%s' is not a JSON object: '%s'", line, buf);
    return j;
}

static long long stat_of(struct live *lv, const char *name)
{
    int fd = live_connect(lv);
    json_t *j = call(fd, "status\n");
    long long v = json_integer_value(json_object_get(json_object_get(j, "admin"), name));
    json_decref(j);
    close(fd);
    return v;
}

static void test_live_replies(void)
{
    struct live lv;
    live_start(&lv);
    int fd = live_connect(&lv);
    json_t *j = call(fd, "ping\n");
    ASSERT_TRUE(json_is_true(json_object_get(j, "ok")) && json_is_true(json_object_get(j, "pong")));
    json_decref(j);
    /* A handler whose reply cannot be built: an error reply, nothing partial. */
    j = call(fd, "bad\n");
    ASSERT_TRUE(json_is_false(json_object_get(j, "ok")));
    ASSERT_STREQ(json_string_value(json_object_get(j, "error")),
                 "bad: the reply could not be built: Invalid argument");
    ASSERT_TRUE(json_object_get(j, "partial") == NULL);
    json_decref(j);
    j = call(fd, "status\n");
    ASSERT_TRUE(json_is_true(json_object_get(j, "ok")));
    ASSERT_TRUE(json_is_true(json_object_get(json_object_get(j, "test"), "fine")));
    const char *text = json_string_value(json_object_get(j, "text"));
    ASSERT_TRUE(text && strncmp(text, "test: fine\nadmin: ", 18) == 0);
    json_decref(j);
    json_decref(call(fd, "break\n"));
    j = call(fd, "status\n");
    ASSERT_STREQ(json_string_value(json_object_get(j, "error")),
                 "status: section 'test' could not be built: Invalid argument");
    json_decref(j);
    json_decref(call(fd, "break\n"));
    j = call(fd, "nope x=1\n");
    ASSERT_STREQ(json_string_value(json_object_get(j, "error")), "unknown command 'nope'");
    json_decref(j);
    close(fd);
    live_stop(&lv);
}

static void test_live_timeouts(void)
{
    struct live lv;
    live_start(&lv);
    /* Slowloris: a byte at a time never extends the deadline (200 ms). */
    int fd = live_connect(&lv);
    uint64_t t0 = time_mono_ms();
    for (int i = 0; i < 3; i++) {
        send(fd, "p", 1, MSG_NOSIGNAL);
        usleep(50 * 1000);
    }
    char line[1024];
    read_line(fd, line, sizeof(line));
    ASSERT_TRUE(wait_eof(fd));
    uint64_t took = time_mono_ms() - t0;
    ASSERT_TRUE(took >= 190 && took < 1500);
    ASSERT_TRUE(strstr(line, "no complete command line within 0.2 s") != NULL);
    close(fd);
    /* Idle between commands: closed after the idle timeout (300 ms). */
    fd = live_connect(&lv);
    json_decref(call(fd, "ping\n"));
    t0 = time_mono_ms();
    read_line(fd, line, sizeof(line));
    ASSERT_TRUE(wait_eof(fd));
    took = time_mono_ms() - t0;
    ASSERT_TRUE(took >= 290 && took < 1500);
    ASSERT_TRUE(strstr(line, "idle for 0.3 s") != NULL);
    close(fd);
    ASSERT_EQ(stat_of(&lv, "dropped_deadline"), 1);
    ASSERT_EQ(stat_of(&lv, "dropped_idle"), 1);
    live_stop(&lv);
}

static void test_live_eviction(void)
{
    struct live lv;
    live_start(&lv);
    admin_set_limits(lv.admin, 5000, 5000, 0); /* no timeouts during this test */
    int a = live_connect(&lv);
    usleep(20 * 1000);
    int b = live_connect(&lv);
    send(b, "pi", 2, MSG_NOSIGNAL); /* half a command: no protection */
    usleep(20 * 1000);
    int c = live_connect(&lv);
    ASSERT_EQ(send(c, "hold\n", 5, MSG_NOSIGNAL), 5); /* a command in progress */
    usleep(50 * 1000);
    /* Full (3 slots): each newcomer is served, the idlest client goes. */
    char line[1024];
    int d = live_connect(&lv);
    read_line(a, line, sizeof(line));
    ASSERT_TRUE(strstr(line, "the admin socket is full") != NULL);
    ASSERT_TRUE(wait_eof(a));
    int e = live_connect(&lv);
    ASSERT_TRUE(wait_eof(b));
    /* c is held: d, idle longest after it, goes instead. */
    int f = live_connect(&lv);
    ASSERT_TRUE(wait_eof(d));
    json_t *j = call(f, "release\n");
    ASSERT_TRUE(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    read_line(c, line, sizeof(line));
    ASSERT_STREQ(line, "{\"released\":\"yes\",\"ok\":true}\n");
    /* The held client is an ordinary one again. */
    j = call(c, "ping\n");
    ASSERT_TRUE(json_is_true(json_object_get(j, "pong")));
    json_decref(j);
    close(c);
    close(e);
    close(f);
    close(a);
    close(b);
    close(d);
    ASSERT_EQ(stat_of(&lv, "evicted"), 3);
    live_stop(&lv);
}

int main(void)
{
    test_admin_parse();
    test_reply_builders();
    test_admin_listen();
    test_live_replies();
    test_live_timeouts();
    test_live_eviction();
    TEST_MAIN_END();
}

/* Unit tests for src/offload/journal.c. The .c file is included so that the tests can
 * reach the checksum and swap the journal's fd for /dev/full. */
#include "offload/journal.c"

#include <signal.h>
#include <sys/resource.h>

#include "test.h"

static char dir[64];
static char jpath[128];

static void clean_dir(void)
{
    char p[160];
    unlink(jpath);
    snprintf(p, sizeof(p), "%s.tmp", jpath);
    unlink(p);
}

static struct journal *open_ok(void)
{
    struct journal *j = NULL;
    char err[256] = "";
    int r = journal_open(dir, &j, err, sizeof(err));
    if (r != 0)
        TEST_FAIL("journal_open: %d %s", r, err);
    return j;
}

static struct journal_entry entry(const char *rel, int stage, uint64_t seed)
{
    struct journal_entry e;
    memset(&e, 0, sizeof(e));
    e.rel = (char *)(uintptr_t)rel;
    e.stage = stage;
    e.id = (struct offload_ident){seed + 1, seed * 1000 + 7, seed * 4096,
                                  (int64_t)seed * 1000000007, -(int64_t)seed - 1};
    return e;
}

static void assert_same(const struct journal_entry *got, const struct journal_entry *want)
{
    if (!got) {
        TEST_FAIL("entry '%s' missing", want->rel);
        return;
    }
    ASSERT_STREQ(got->rel, want->rel);
    ASSERT_EQ(got->stage, want->stage);
    ASSERT_TRUE(memcmp(&got->id, &want->id, sizeof(got->id)) == 0);
    ASSERT_EQ(got->has_digest, want->has_digest);
    ASSERT_TRUE(memcmp(got->sha256, want->sha256, 32) == 0);
    ASSERT_TRUE(memcmp(got->md5, want->md5, 16) == 0);
    ASSERT_STREQ(got->upload_id, want->upload_id);
    ASSERT_STREQ(got->error, want->error);
}

/* The file's contents, NUL-terminated; *lines gets the number of '\n'. */
static char *slurp(size_t *len, size_t *lines)
{
    FILE *f = fopen(jpath, "rb");
    char *data = xmalloc(1 << 20);
    size_t n = f ? fread(data, 1, (1 << 20) - 1, f) : 0;
    if (f)
        fclose(f);
    data[n] = '\0';
    if (len)
        *len = n;
    if (lines) {
        *lines = 0;
        for (size_t i = 0; i < n; i++)
            *lines += data[i] == '\n';
    }
    return data;
}

static void spit(const char *data, size_t n)
{
    FILE *f = fopen(jpath, "wb");
    ASSERT_TRUE(f != NULL);
    if (!f)
        return;
    ASSERT_EQ(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_crc32(void)
{
    ASSERT_EQ(crc32_ieee("123456789", 9), 0xcbf43926u); /* the standard check value */
    ASSERT_EQ(crc32_ieee("", 0), 0);
}

static void test_round_trip_every_stage(void)
{
    static const char *const rels[] = {"q", "u", "s", "a", "f"};
    static const int stages[] = {OFFLOAD_QUEUED, OFFLOAD_UPLOADING, OFFLOAD_STORED,
                                 OFFLOAD_ARCHIVED, OFFLOAD_FAILED};
    struct journal_entry want[5];
    struct journal *j = open_ok();

    ASSERT_EQ(journal_count(j), 0);
    for (int i = 0; i < 5; i++) {
        want[i] = entry(rels[i], stages[i], (uint64_t)i + 1);
        want[i].has_digest = i >= 1;
        for (int k = 0; k < 32; k++)
            want[i].sha256[k] = (unsigned char)(k * 7 + i);
        for (int k = 0; k < 16; k++)
            want[i].md5[k] = (unsigned char)(255 - k - i);
        if (!want[i].has_digest) {
            memset(want[i].sha256, 0, 32);
            memset(want[i].md5, 0, 16);
        }
        if (stages[i] == OFFLOAD_UPLOADING)
            strcpy(want[i].upload_id, "2~abc/DEF+ghi==- x%");
        if (stages[i] == OFFLOAD_FAILED)
            strcpy(want[i].error, "store: 403 AccessDenied: \"no\"\nsecond line");
        ASSERT_EQ(journal_record(j, &want[i], i % 2 == 0), 0);
        assert_same(journal_get(j, rels[i]), &want[i]);
    }
    ASSERT_EQ(journal_count(j), 5);
    journal_close(j);

    for (int round = 0; round < 2; round++) { /* twice: the compacted file replays too */
        j = open_ok();
        if (!j)
            return;
        ASSERT_EQ(journal_count(j), 5);
        for (int i = 0; i < 5; i++)
            assert_same(journal_get(j, rels[i]), &want[i]);
        ASSERT_TRUE(journal_get(j, "nope") == NULL);
        journal_close(j);
    }
    clean_dir();
}

static void count_fn(const struct journal_entry *e, void *arg)
{
    size_t *n = arg;
    (*n)++;
    if (e->stage == OFFLOAD_DELETED)
        TEST_FAIL("foreach returned a deleted entry '%s'", e->rel);
}

static void test_transitions_and_delete(void)
{
    struct journal *j = open_ok();
    struct journal_entry a = entry("dir/a", OFFLOAD_QUEUED, 1), b = entry("dir/b", 0, 2);
    size_t n = 0, lines;

    ASSERT_EQ(journal_record(j, &a, false), 0);
    ASSERT_EQ(journal_record(j, &b, false), 0);
    a.stage = OFFLOAD_UPLOADING;
    strcpy(a.upload_id, "up-1");
    ASSERT_EQ(journal_record(j, &a, true), 0);
    a.stage = OFFLOAD_STORED;
    a.upload_id[0] = '\0';
    a.has_digest = true;
    a.sha256[0] = 0xab;
    ASSERT_EQ(journal_record(j, &a, true), 0);
    assert_same(journal_get(j, "dir/a"), &a);
    b.stage = OFFLOAD_DELETED;
    ASSERT_EQ(journal_record(j, &b, true), 0);
    ASSERT_TRUE(journal_get(j, "dir/b") == NULL);
    ASSERT_EQ(journal_count(j), 1);
    journal_foreach(j, count_fn, &n);
    ASSERT_EQ(n, 1);
    /* Deleting what is not there is harmless. */
    ASSERT_EQ(journal_record(j, &b, false), 0);
    ASSERT_EQ(journal_count(j), 1);
    journal_close(j);

    j = open_ok();
    ASSERT_EQ(journal_count(j), 1);
    assert_same(journal_get(j, "dir/a"), &a);
    ASSERT_TRUE(journal_get(j, "dir/b") == NULL);
    journal_close(j);
    /* The compacted file holds exactly the live entry and nothing of dir/b. */
    char *data = slurp(NULL, &lines);
    ASSERT_EQ(lines, 1);
    ASSERT_TRUE(strstr(data, "dir/b") == NULL);
    ASSERT_TRUE(strstr(data, " stored dir/a ") != NULL);
    free(data);
    clean_dir();
}

static void test_torn_last_line(void)
{
    struct journal *j = open_ok();
    struct journal_entry a = entry("a", OFFLOAD_QUEUED, 1), b = entry("b", OFFLOAD_QUEUED, 2);
    size_t len, lines;

    ASSERT_EQ(journal_record(j, &a, true), 0);
    ASSERT_EQ(journal_record(j, &b, true), 0);
    b.stage = OFFLOAD_STORED;
    ASSERT_EQ(journal_record(j, &b, true), 0);
    journal_close(j);

    /* Cut the last line in the middle, as a crash during the append would. */
    char *data = slurp(&len, &lines);
    ASSERT_EQ(lines, 3);
    ASSERT_EQ(truncate(jpath, (off_t)len - 20), 0);
    free(data);

    j = open_ok();
    ASSERT_EQ(journal_count(j), 2);
    b.stage = OFFLOAD_QUEUED; /* the torn "stored" line is gone */
    assert_same(journal_get(j, "b"), &b);
    assert_same(journal_get(j, "a"), &a);
    journal_close(j);
    data = slurp(&len, &lines);
    ASSERT_EQ(lines, 2);
    ASSERT_TRUE(len > 0 && data[len - 1] == '\n');
    free(data);

    /* A complete last line with a bad checksum is also a torn write: dropped. */
    data = slurp(&len, NULL);
    char *last = strstr(data, "\nj1 ") + 1;
    last[20] ^= 1;
    spit(data, len);
    free(data);
    j = open_ok();
    ASSERT_EQ(journal_count(j), 1);
    journal_close(j);

    /* A whole last line that only lacks its newline: its record never returned, so it
     * is dropped too. */
    data = slurp(&len, NULL);
    ASSERT_EQ(len > 0 && data[len - 1] == '\n', 1);
    spit(data, len - 1);
    free(data);
    j = open_ok();
    ASSERT_EQ(journal_count(j), 0);
    journal_close(j);

    /* A lone partial line in an otherwise empty journal. */
    spit("j1 0123", 7);
    j = open_ok();
    ASSERT_EQ(journal_count(j), 0);
    journal_close(j);
    clean_dir();
}

static void expect_bad(const char *why_substr)
{
    struct journal *j = NULL;
    char err[512] = "";
    ASSERT_EQ(journal_open(dir, &j, err, sizeof(err)), -EBADMSG);
    ASSERT_TRUE(j == NULL);
    journal_close(j);
    if (!strstr(err, why_substr))
        TEST_FAIL("error '%s' does not contain '%s'", err, why_substr);
}

static void test_corrupt_middle_line(void)
{
    struct journal *j = open_ok();
    struct journal_entry e;
    char want[256];
    size_t len;

    for (int i = 0; i < 3; i++) {
        char rel[8];
        snprintf(rel, sizeof(rel), "f%d", i);
        e = entry(rel, OFFLOAD_QUEUED, (uint64_t)i);
        ASSERT_EQ(journal_record(j, &e, false), 0);
    }
    journal_close(j);
    char *orig = slurp(&len, NULL);
    char *data = xstrdup(orig);

    /* Flip one byte of line 2: a checksum mismatch that is not the last line. */
    char *line2 = strchr(data, '\n') + 1;
    line2[30] ^= 1;
    spit(data, len);
    snprintf(want, sizeof(want), "%s:2: checksum mismatch", jpath);
    expect_bad(want);
    /* The refused journal is left as it was for the operator to look at. */
    char *after = slurp(NULL, NULL);
    ASSERT_STREQ(after, data);
    free(after);

    /* A garbage line in the middle. */
    struct buf b;
    buf_init(&b, 4096);
    size_t line1_len = (size_t)(strchr(orig, '\n') + 1 - orig);
    ASSERT_EQ(buf_printf(&b, "%.*sgarbage here\n%s", (int)line1_len, orig, orig + line1_len), 0);
    spit(b.data, b.len);
    snprintf(want, sizeof(want), "%s:2: not a journal line", jpath);
    expect_bad(want);

    /* A good checksum over a malformed body is refused even on the last line. */
    buf_reset(&b);
    ASSERT_EQ(buf_append(&b, orig, len), 0);
    const char *body = "stored x 1 2 3 4 5 - - - - extra";
    ASSERT_EQ(buf_printf(&b, "j1 %08x %s\n", crc32_ieee(body, strlen(body)), body), 0);
    spit(b.data, b.len);
    snprintf(want, sizeof(want), "%s:4: wrong number of fields", jpath);
    expect_bad(want);
    buf_reset(&b);
    body = "bogus x 1 2 3 4 5 - - - -";
    ASSERT_EQ(buf_printf(&b, "j1 %08x %s\n", crc32_ieee(body, strlen(body)), body), 0);
    ASSERT_EQ(buf_append(&b, orig, len), 0);
    spit(b.data, b.len);
    snprintf(want, sizeof(want), "%s:1: unknown stage", jpath);
    expect_bad(want);
    buf_finish(&b);

    free(orig);
    free(data);
    clean_dir();
}

static void test_compaction(void)
{
    struct journal *j = open_ok();
    char rel[16];
    size_t lines;

    /* 300 transitions over 10 files, 4 of which end deleted: the file must stay near
     * 4x live, not grow with every transition. */
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(rel, sizeof(rel), "f%d", i);
            struct journal_entry e = entry(rel, round % 4, (uint64_t)(round * 10 + i));
            if (round == 29 && i < 4)
                e.stage = OFFLOAD_DELETED;
            ASSERT_EQ(journal_record(j, &e, false), 0);
        }
        free(slurp(NULL, &lines));
        if (lines > JOURNAL_COMPACT_MIN + 10)
            TEST_FAIL("round %d: %zu lines for %zu live entries", round, lines, journal_count(j));
    }
    ASSERT_EQ(journal_count(j), 6);
    journal_close(j);

    j = open_ok();
    ASSERT_EQ(journal_count(j), 6);
    for (int i = 0; i < 10; i++) {
        snprintf(rel, sizeof(rel), "f%d", i);
        struct journal_entry want = entry(rel, 29 % 4, (uint64_t)(290 + i));
        if (i < 4)
            ASSERT_TRUE(journal_get(j, rel) == NULL);
        else
            assert_same(journal_get(j, rel), &want);
    }
    journal_close(j);
    free(slurp(NULL, &lines));
    ASSERT_EQ(lines, 6);
    /* No temp file is left behind. */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", jpath);
    ASSERT_EQ(access(tmp, F_OK), -1);
    clean_dir();
}

static void test_names(void)
{
    char longname[JOURNAL_REL_MAX + 2];
    const char *names[] = {
        "with space/and  two",
        "100% done %41%%",
        "-",
        "-dash/-x",
        "caf\xc3\xa9/\xe2\x82\xac \xf0\x9f\x93\xb7.jpg",
        "not utf8 \xff\xfe",
        "tab\there",
        "plus+and=eq&amp",
        longname,
    };
    /* 4095 bytes of two-byte UTF-8 and a last ASCII byte: the longest rel. */
    for (int i = 0; i < JOURNAL_REL_MAX - 1; i += 2)
        memcpy(longname + i, "\xc3\xa9", 2);
    longname[JOURNAL_REL_MAX - 1] = 'z';
    longname[JOURNAL_REL_MAX] = '\0';

    struct journal *j = open_ok();
    size_t n = sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < n; i++) {
        struct journal_entry e = entry(names[i], OFFLOAD_QUEUED, i);
        ASSERT_EQ(journal_record(j, &e, false), 0);
    }
    journal_close(j);
    j = open_ok();
    ASSERT_EQ(journal_count(j), n);
    for (size_t i = 0; i < n; i++) {
        struct journal_entry e = entry(names[i], OFFLOAD_QUEUED, i);
        assert_same(journal_get(j, names[i]), &e);
    }
    /* Every line is one line of printable ASCII. */
    size_t len, lines;
    char *data = slurp(&len, &lines);
    ASSERT_EQ(lines, n);
    for (size_t i = 0; i < len; i++)
        if (data[i] != '\n' && (data[i] < 0x20 || data[i] > 0x7e)) {
            TEST_FAIL("byte 0x%02x at %zu", (unsigned char)data[i], i);
            break;
        }
    free(data);

    /* One byte longer than any path: refused. Empty, bad stage, unterminated: -EINVAL. */
    longname[JOURNAL_REL_MAX] = 'z';
    longname[JOURNAL_REL_MAX + 1] = '\0';
    struct journal_entry e = entry(longname, OFFLOAD_QUEUED, 1);
    ASSERT_EQ(journal_record(j, &e, false), -ENAMETOOLONG);
    e = entry("", OFFLOAD_QUEUED, 1);
    ASSERT_EQ(journal_record(j, &e, false), -EINVAL);
    e = entry("x", 6, 1);
    ASSERT_EQ(journal_record(j, &e, false), -EINVAL);
    e = entry("x", -1, 1);
    ASSERT_EQ(journal_record(j, &e, false), -EINVAL);
    e = entry("x", OFFLOAD_FAILED, 1);
    memset(e.error, 'x', sizeof(e.error));
    ASSERT_EQ(journal_record(j, &e, false), -EINVAL);
    ASSERT_EQ(journal_count(j), n);
    journal_close(j);
    clean_dir();
}

static void test_locked(void)
{
    struct journal *j = open_ok(), *j2 = NULL;
    char err[256] = "";
    ASSERT_EQ(journal_open(dir, &j2, err, sizeof(err)), -EBUSY);
    ASSERT_TRUE(j2 == NULL);
    ASSERT_TRUE(strstr(err, "in use") != NULL);
    journal_close(j);
    j = open_ok(); /* released on close */
    journal_close(j);
    clean_dir();
}

/* Disk full: the record fails, memory keeps the old state, and the journal refuses to go
 * on (the partial write could not be cut off: /dev/full cannot be truncated). */
static void test_disk_full(void)
{
    struct journal *j = open_ok();
    struct journal_entry e = entry("a", OFFLOAD_QUEUED, 1);

    ASSERT_EQ(journal_record(j, &e, true), 0);
    int full = open("/dev/full", O_WRONLY | O_APPEND | O_CLOEXEC);
    if (full < 0) {
        fprintf(stderr, "no /dev/full: disk-full test skipped\n");
        journal_close(j);
        clean_dir();
        return;
    }
    int saved = j->fd;
    j->fd = full;
    e.stage = OFFLOAD_STORED;
    ASSERT_EQ(journal_record(j, &e, true), -ENOSPC);
    e.stage = OFFLOAD_QUEUED;
    assert_same(journal_get(j, "a"), &e);
    e.stage = OFFLOAD_STORED;
    ASSERT_EQ(journal_record(j, &e, true), -EIO); /* broken from now on */
    close(full);
    j->fd = saved;
    journal_close(j);
    j = open_ok();
    e.stage = OFFLOAD_QUEUED;
    assert_same(journal_get(j, "a"), &e);
    journal_close(j);
    clean_dir();
}

/* A short write (the file size limit stands in for a full disk) is cut back, so that the
 * next append does not leave a torn line in the middle of the file. */
static void test_short_write_rolled_back(void)
{
    struct journal *j = open_ok();
    struct journal_entry a = entry("a", OFFLOAD_QUEUED, 1), b = entry("b", OFFLOAD_QUEUED, 2);
    struct rlimit old, lim;

    ASSERT_EQ(journal_record(j, &a, true), 0);
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)j->size + 10;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    b.stage = OFFLOAD_UPLOADING;
    ASSERT_EQ(journal_record(j, &b, true), -EFBIG);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    ASSERT_TRUE(journal_get(j, "b") == NULL);
    b.stage = OFFLOAD_STORED;
    ASSERT_EQ(journal_record(j, &b, true), 0);
    journal_close(j);

    j = open_ok();
    if (!j)
        return;
    ASSERT_EQ(journal_count(j), 2);
    assert_same(journal_get(j, "b"), &b);
    journal_close(j);
    clean_dir();
}

static void test_open_errors(void)
{
    struct journal *j = NULL;
    char err[256] = "";
    ASSERT_EQ(journal_open("/nonexistent/dir", &j, err, sizeof(err)), -ENOENT);
    ASSERT_TRUE(j == NULL);
    ASSERT_TRUE(strstr(err, "/nonexistent/dir/offload.journal") != NULL);
    journal_close(NULL);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-journal-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(jpath, sizeof(jpath), "%s/offload.journal", dir);
    test_crc32();
    test_round_trip_every_stage();
    test_transitions_and_delete();
    test_torn_last_line();
    test_corrupt_middle_line();
    test_compaction();
    test_names();
    test_locked();
    test_disk_full();
    test_short_write_rolled_back();
    test_open_errors();
    clean_dir();
    rmdir(dir);
    TEST_MAIN_END();
}

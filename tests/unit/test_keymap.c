/* Unit tests for src/offload/keymap.c: which rels are keys, and URL -> rel. */
#include <errno.h>
#include <fnmatch.h>

#include "offload/keymap.h"
#include "test.h"

static int check(const char *rel)
{
    return offload_rel_check(rel, strlen(rel));
}

static void test_valid_rels(void)
{
    static const char *const ok[] = {
        "a",
        "a/b/c.jpg",
        "with space.txt",
        "100%.txt",
        "plus+sign",
        "...",
        ".hidden/..x/x..",
        "caf\xc3\xa9",      /* U+00E9 */
        "\xe2\x82\xac",     /* U+20AC */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above them */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x90\x80\x80", /* U+10000, smallest four-byte */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the largest */
        "\xc2\x80",         /* U+0080: a C1 control, valid UTF-8 */
        "~!@#$&'()*+,;=[]{}`^|\"<>?:",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (check(ok[i]) != 0)
            TEST_FAIL("rel %zu '%s' refused", i, ok[i]);
}

static void test_invalid_rels(void)
{
    static const char *const bad[] = {
        "",
        "/a",   /* leading '/': empty first segment */
        "a/",   /* empty last segment */
        "a//b", /* empty middle segment */
        ".",
        "..",
        "a/./b",
        "a/../b",
        "a/..",
        "./a",
        "a\\b", /* backslash */
        "a\rb",
        "a\nb",
        "a\tb",
        "\x01",
        "a\x1f",
        "a\x7f",
        "\x80", /* stray continuation byte */
        "a\xbf",
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong, two bytes */
        "\xe0\x80\xaf",     /* overlong '/', three bytes */
        "\xe0\x9f\xbf",     /* overlong U+07FF */
        "\xf0\x80\x80\xaf", /* overlong '/', four bytes */
        "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
        "\xed\xa0\x80",     /* U+D800 */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xff",
        "\xc3",         /* truncated two-byte */
        "\xe2\x82",     /* truncated three-byte */
        "\xf0\x90\x80", /* truncated four-byte */
        "\xe2\x82x",    /* bad continuation */
        "\xc3\xa9\xa9", /* one continuation too many */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (check(bad[i]) != -EINVAL)
            TEST_FAIL("rel %zu accepted", i);
    /* An embedded NUL within rel_len, and a truncated sequence cut by rel_len. */
    ASSERT_EQ(offload_rel_check("a\0b", 3), -EINVAL);
    ASSERT_EQ(offload_rel_check("\xc3\xa9", 1), -EINVAL);
    ASSERT_EQ(offload_rel_check("ab/..", 2), 0); /* only rel_len bytes count */
}

static void test_key_from_rel(void)
{
    char out[OFFLOAD_KEY_MAX + 8];

    ASSERT_EQ(offload_key_from_rel("uploads/", "a/b c.jpg", 9, out, sizeof(out)), 17);
    ASSERT_STREQ(out, "uploads/a/b c.jpg");
    ASSERT_EQ(offload_key_from_rel("", "x", 1, out, sizeof(out)), 1);
    ASSERT_STREQ(out, "x");
    ASSERT_EQ(offload_key_from_rel(NULL, "y", 1, out, sizeof(out)), 1);
    ASSERT_STREQ(out, "y");
    /* The prefix is used verbatim: no '/' is added. */
    ASSERT_EQ(offload_key_from_rel("p", "q", 1, out, sizeof(out)), 2);
    ASSERT_STREQ(out, "pq");
    /* rel_len bounds rel: not NUL-terminated input. */
    ASSERT_EQ(offload_key_from_rel("k/", "abcdef", 3, out, sizeof(out)), 5);
    ASSERT_STREQ(out, "k/abc");

    /* out is written only on success. */
    strcpy(out, "untouched");
    ASSERT_EQ(offload_key_from_rel("p/", "a/../b", 6, out, sizeof(out)), -EINVAL);
    ASSERT_EQ(offload_key_from_rel("p/", "", 0, out, sizeof(out)), -EINVAL);
    ASSERT_STREQ(out, "untouched");
}

static void test_key_length_limit(void)
{
    char rel[OFFLOAD_KEY_MAX + 2], out[OFFLOAD_KEY_MAX + 16];

    memset(rel, 'a', sizeof(rel));
    /* Exactly 1024 bytes of key: accepted, with or without a prefix. */
    ASSERT_EQ(offload_key_from_rel("", rel, OFFLOAD_KEY_MAX, out, sizeof(out)), OFFLOAD_KEY_MAX);
    ASSERT_EQ(strlen(out), OFFLOAD_KEY_MAX);
    ASSERT_EQ(offload_key_from_rel("pre/", rel, OFFLOAD_KEY_MAX - 4, out, sizeof(out)),
              OFFLOAD_KEY_MAX);
    ASSERT_EQ(memcmp(out, "pre/aaa", 7), 0);
    /* 1025: refused, whether the prefix or the rel pushes it over. */
    ASSERT_EQ(offload_key_from_rel("", rel, OFFLOAD_KEY_MAX + 1, out, sizeof(out)), -ENAMETOOLONG);
    ASSERT_EQ(offload_key_from_rel("pre/", rel, OFFLOAD_KEY_MAX - 3, out, sizeof(out)),
              -ENAMETOOLONG);
    /* outlen: the key plus its NUL must fit. */
    ASSERT_EQ(offload_key_from_rel("ab", "cd", 2, out, 5), 4);
    ASSERT_STREQ(out, "abcd");
    ASSERT_EQ(offload_key_from_rel("ab", "cd", 2, out, 4), -ENAMETOOLONG);
    ASSERT_EQ(offload_key_from_rel("ab", "cd", 2, out, 0), -ENAMETOOLONG);
    /* An invalid rel is -EINVAL even when it is also too long. */
    rel[5] = '\n';
    ASSERT_EQ(offload_key_from_rel("", rel, OFFLOAD_KEY_MAX + 1, out, sizeof(out)), -EINVAL);
}

static int url(const char *prefix, const char *path, const char **rel, size_t *rel_len)
{
    return offload_rel_from_url(prefix, path, strlen(path), rel, rel_len);
}

static void test_rel_from_url(void)
{
    const char *rel = NULL;
    size_t len = 0;

    ASSERT_EQ(url("/static/", "/static/a/b.jpg", &rel, &len), 1);
    ASSERT_MEMEQ(rel, len, "a/b.jpg");
    ASSERT_EQ(url("/static", "/static/a b", &rel, &len), 1);
    ASSERT_MEMEQ(rel, len, "a b");
    ASSERT_EQ(url("/", "/x", &rel, &len), 1);
    ASSERT_MEMEQ(rel, len, "x");

    /* Not under the prefix: 0, out-parameters untouched. */
    rel = "keep";
    len = 4;
    ASSERT_EQ(url("/static/", "/other/a", &rel, &len), 0);
    ASSERT_EQ(url("/static/", "/static", &rel, &len), 0);
    ASSERT_EQ(url("/static", "/staticfoo/a", &rel, &len), 0);
    ASSERT_EQ(url("/static", "/static", &rel, &len), 0);
    ASSERT_EQ(url("/static/", "/Static/a", &rel, &len), 0);
    ASSERT_EQ(url("/static/", "", &rel, &len), 0);
    /* Under it but not a rel: -EINVAL. */
    ASSERT_EQ(url("/static/", "/static/", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static/", "/static//a", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static/", "/static/../etc/passwd", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static/", "/static/a/./b", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static/", "/static/a\\b", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static/", "/static/\xc0\xae\xc0\xae/x", &rel, &len), -EINVAL);
    ASSERT_EQ(url("/static", "/static/", &rel, &len), -EINVAL);
    ASSERT_MEMEQ(rel, len, "keep");
    /* len bounds path: a NUL inside it is refused, bytes after it are ignored. */
    ASSERT_EQ(offload_rel_from_url("/s/", "/s/a\0b", 6, &rel, &len), -EINVAL);
    ASSERT_EQ(offload_rel_from_url("/s/", "/s/ab/../x", 5, &rel, &len), 1);
    ASSERT_MEMEQ(rel, len, "ab");
}

/* The serving side and the file side must agree: URL -> rel -> key == file rel -> key. */
static void test_url_and_file_agree(void)
{
    const char *rel;
    size_t len;
    char k1[OFFLOAD_KEY_MAX + 1], k2[OFFLOAD_KEY_MAX + 1];
    const char *path = "/static/2026/12/caf\xc3\xa9 menu+1.pdf";

    ASSERT_EQ(url("/static/", path, &rel, &len), 1);
    ASSERT_TRUE(offload_key_from_rel("up/", rel, len, k1, sizeof(k1)) > 0);
    ASSERT_TRUE(offload_key_from_rel("up/", "2026/12/caf\xc3\xa9 menu+1.pdf",
                                     strlen("2026/12/caf\xc3\xa9 menu+1.pdf"), k2, sizeof(k2)) > 0);
    ASSERT_STREQ(k1, k2);
    ASSERT_STREQ(k1, "up/2026/12/caf\xc3\xa9 menu+1.pdf");
}

/* offload_name_ignored() compares the usual patterns itself: it must say what
 * fnmatch(3) with no flags says, for every pattern and name, each pattern alone and
 * all of them together. */
static void test_ignored_is_fnmatch(void)
{
    static char *const pats[] = {
        ".*",   "*.tmp",        "*.part", "*", "",       "core",  "tmp*", "*.", ".",
        "*.t*", "**",           "a*b",    "?", "*.[ch]", "\\*.x", "*\\",  "[",  "*~",
        "~*",   "*caf\xc3\xa9", NULL,
    };
    static const char *const names[] = {
        "",         ".",           "..",
        ".x",       "x",           "a.tmp",
        ".tmp",     "tmp",         "a.tmpx",
        "a.part",   "core",        "core2",
        "tmpfile",  "a.",          "a.t",
        "ab",       "acb",         "a.c",
        "a.h",      "*.x",         "a\\",
        "x~",       "~x",          "a/b.tmp",
        "\xff\xfe", "caf\xc3\xa9", "un caf\xc3\xa9",
        "[",        "a.part.tmp",  "a b.tmp",
    };
    for (size_t i = 0; pats[i]; i++) {
        char *const one[] = {pats[i], NULL};
        for (size_t j = 0; j < sizeof(names) / sizeof(names[0]); j++) {
            bool want = fnmatch(pats[i], names[j], 0) == 0;
            if (offload_name_ignored(one, names[j]) != want)
                TEST_FAIL("pattern '%s', name '%s': fnmatch says %d", pats[i], names[j], want);
        }
    }
    char *const defaults[] = {".*", "*.tmp", "*.part", NULL};
    ASSERT_TRUE(offload_name_ignored(defaults, ".upload-1"));
    ASSERT_TRUE(offload_name_ignored(defaults, "x.part"));
    ASSERT_TRUE(!offload_name_ignored(defaults, "x.jpg"));
    ASSERT_TRUE(!offload_name_ignored(NULL, "x.tmp"));
}

int main(void)
{
    test_ignored_is_fnmatch();
    test_valid_rels();
    test_invalid_rels();
    test_key_from_rel();
    test_key_length_limit();
    test_rel_from_url();
    test_url_and_file_agree();
    TEST_MAIN_END();
}

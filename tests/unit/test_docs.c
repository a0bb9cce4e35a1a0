/* The documentation cannot drift from the key table: every key in conf_keys[]
 * must have an entry in ferry.conf(5) with its type and default, a commented
 * line with its default in ferry.conf.example, and a row in the README's
 * configuration reference; and nothing may be documented that the table lacks.
 *
 * usage: test_docs doc/ferry.conf.5 dist/ferry.conf.example README.md */
#include "common/conf.h"

#include "test.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <unistd.h>

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    struct buf b;
    buf_init(&b, 16 << 20);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (buf_append(&b, chunk, n) < 0)
            abort();
    fclose(f);
    if (!b.data)
        buf_append_str(&b, "");
    return b.data; /* the caller frees it */
}

/* [*start, *end) of the text between the line `head` and the next line that
 * starts with one of the strings in `stops`. Returns false when head is absent. */
static bool find_region(const char *text, const char *head, const char *const *stops,
                        const char **start, const char **end)
{
    size_t hlen = strlen(head);
    const char *p = text;
    for (;;) {
        const char *hit = strstr(p, head);
        if (!hit)
            return false;
        if ((hit == text || hit[-1] == '\n') && (hit[hlen] == '\n' || hit[hlen] == '\0')) {
            p = hit + hlen;
            break;
        }
        p = hit + 1;
    }
    *start = p;
    for (const char *line = p; *line; line++) {
        if (line[-1] != '\n')
            continue;
        for (const char *const *s = stops; *s; s++) {
            if (strncmp(line, *s, strlen(*s)) == 0) {
                *end = line;
                return true;
            }
        }
    }
    *end = p + strlen(p);
    return true;
}

/* Troff source to plain text: drop font escapes and \&, turn \- into -, and
 * join lines. Returns a heap string. */
static char *troff_plain(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len) {
            char c = s[i + 1];
            if (c == 'f' && i + 2 < len) {
                i += 2;
                continue;
            }
            if (c == '&') {
                i++;
                continue;
            }
            if (c == '-') {
                out[o++] = '-';
                i++;
                continue;
            }
        }
        out[o++] = s[i] == '\n' ? ' ' : s[i];
    }
    out[o] = '\0';
    return out;
}

static const char *type_word(const struct conf_key *k)
{
    switch (k->type) {
    case CONF_STR:
        return "String";
    case CONF_PATH:
        return "Path";
    case CONF_SECRET:
        return "Secret";
    case CONF_LIST:
        return "List";
    case CONF_BOOL:
        return "Boolean";
    case CONF_INT:
        return "Integer";
    case CONF_INT_AUTO:
        return "Integer or auto";
    case CONF_DURATION:
        return "Duration";
    case CONF_SIZE:
        return "Size";
    case CONF_ENUM:
        return "One of";
    }
    return "?";
}

static const struct conf_key *key_find(const char *section, const char *name, size_t namelen)
{
    for (const struct conf_key *k = conf_keys; k->name; k++)
        if (strcmp(k->section, section) == 0 && strlen(k->name) == namelen &&
            strncmp(k->name, name, namelen) == 0)
            return k;
    return NULL;
}

static void check_man_entry(const char *man, const struct conf_key *k)
{
    static const char *const section_stops[] = {".SS ", ".SH ", NULL};
    static const char *const entry_stops[] = {".TP", ".SS ", ".SH ", NULL};
    char head[128];
    snprintf(head, sizeof(head), ".SS \"[%s]\"", k->section);
    const char *s0, *s1;
    if (!find_region(man, head, section_stops, &s0, &s1)) {
        TEST_FAIL("ferry.conf.5: no section heading '%s' for key [%s] %s", head, k->section,
                  k->name);
        return;
    }
    char *section = strndup(s0, (size_t)(s1 - s0));
    snprintf(head, sizeof(head), ".TP\n.B %s", k->name);
    const char *e0, *e1;
    if (!find_region(section, head, entry_stops, &e0, &e1)) {
        TEST_FAIL("ferry.conf.5: key [%s] %s is not documented: add '.TP' and '.B %s' "
                  "under '.SS \"[%s]\"'",
                  k->section, k->name, k->name, k->section);
        free(section);
        return;
    }
    char *text = troff_plain(e0, (size_t)(e1 - e0));
    const char *body = text;
    while (*body == ' ')
        body++;
    const char *type = type_word(k);
    if (strncmp(body, type, strlen(type)) != 0)
        TEST_FAIL("ferry.conf.5: [%s] %s: entry should start with its type '%s', got '%.40s'",
                  k->section, k->name, type, body);
    char want[256];
    snprintf(want, sizeof(want), "Default: %s.", *k->def ? k->def : "empty");
    if (!strstr(body, want))
        TEST_FAIL("ferry.conf.5: [%s] %s: entry lacks '%s'", k->section, k->name, want);
    if (k->type == CONF_ENUM) {
        char choices[256];
        snprintf(choices, sizeof(choices), "One of %s.", k->choices);
        for (char *c = choices; *c; c++)
            if (*c == '|')
                *c = ',';
        /* "One of a, b, c." */
        struct buf spaced;
        buf_init(&spaced, 1024);
        for (const char *c = choices; *c; c++) {
            buf_append(&spaced, c, 1);
            if (*c == ',')
                buf_append_str(&spaced, " ");
        }
        if (strncmp(body, spaced.data, spaced.len) != 0)
            TEST_FAIL("ferry.conf.5: [%s] %s: entry should start with '%s'", k->section, k->name,
                      spaced.data);
        buf_finish(&spaced);
    }
    free(text);
    free(section);
}

/* Every ".TP/.B name" under a [section] heading must be a key of the table. */
static void check_man_no_stale(const char *man)
{
    const char *p = man;
    while ((p = strstr(p, "\n.SS \"[")) != NULL) {
        p += strlen("\n.SS \"[");
        const char *close = strchr(p, ']');
        if (!close)
            break;
        char section[64];
        snprintf(section, sizeof(section), "%.*s", (int)(close - p), p);
        const char *end = p;
        while ((end = strchr(end, '\n')) != NULL) {
            end++;
            if (strncmp(end, ".SS ", 4) == 0 || strncmp(end, ".SH ", 4) == 0)
                break;
            if (strncmp(end, ".TP\n.B ", 7) == 0) {
                const char *name = end + 7;
                size_t len = strcspn(name, " \n");
                if (!key_find(section, name, len))
                    TEST_FAIL("ferry.conf.5: documents [%s] %.*s, which is not in conf_keys[]",
                              section, (int)len, name);
            }
        }
        if (!end)
            break;
        p = end;
    }
}

/* Does the region of text under the line `head` (up to a line starting with
 * `stop`) contain `want`? Reports a failure naming `file` when not. */
static void check_region_has(const char *file, const char *text, const char *head, const char *stop,
                             const char *want, const struct conf_key *k)
{
    const char *const stops[] = {stop, NULL};
    const char *s0, *s1;
    if (!find_region(text, head, stops, &s0, &s1)) {
        TEST_FAIL("%s: no '%s' heading for key %s", file, head, k->name);
        return;
    }
    char *region = strndup(s0, (size_t)(s1 - s0));
    if (!strstr(region, want))
        TEST_FAIL("%s: [%s] %s: no line containing '%.*s' under '%s'", file, k->section, k->name,
                  (int)strcspn(want + 1, "\n"), want + 1, head);
    free(region);
}

/* ferry.conf.example: under "[section]", a line ";name = default". */
static void check_example_entry(const char *example, const struct conf_key *k)
{
    char head[128], want[512];
    snprintf(head, sizeof(head), "[%s]", k->section);
    snprintf(want, sizeof(want), "\n;%s =%s%s\n", k->name, *k->def ? " " : "", k->def);
    check_region_has("ferry.conf.example", example, head, "[", want, k);
}

/* Uncommenting every ";key = value" line of the example must give a valid
 * configuration equal to the built-in defaults. */
static void check_example_loads(const char *example)
{
    struct buf text;
    buf_init(&text, 1 << 20);
    for (const char *line = example; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
        if (line[0] == ';' && islower((unsigned char)line[1]))
            buf_append(&text, line + 1, len - 1);
        else
            buf_append(&text, line, len);
        line += len;
    }
    char path[] = "/tmp/ferry-test-docs-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text.data, text.len) != (ssize_t)text.len)
        abort();
    close(fd);

    struct ferry_conf def, ex;
    conf_init_defaults(&def);
    conf_init_defaults(&ex);
    struct buf err;
    buf_init(&err, 65536);
    int r = conf_load(&ex, path, &err);
    if (r != 0)
        TEST_FAIL("ferry.conf.example with every key uncommented does not load:\n%s",
                  err.data ? err.data : "");
    struct buf d1, d2;
    buf_init(&d1, 1 << 20);
    buf_init(&d2, 1 << 20);
    conf_dump(&def, &d1);
    conf_dump(&ex, &d2);
    if (r == 0 && strcmp(d1.data, d2.data) != 0)
        TEST_FAIL("ferry.conf.example's values differ from the defaults:\n--- defaults\n%s"
                  "--- example\n%s",
                  d1.data, d2.data);
    buf_finish(&d1);
    buf_finish(&d2);
    buf_finish(&err);
    conf_finish(&def);
    conf_finish(&ex);
    buf_finish(&text);
    unlink(path);
}

/* README.md: under "### [section]" a table row "| `name` | ...". */
static void check_readme_entry(const char *readme, const struct conf_key *k)
{
    char head[128], want[128];
    snprintf(head, sizeof(head), "### [%s]", k->section);
    snprintf(want, sizeof(want), "\n| `%s` |", k->name);
    check_region_has("README.md", readme, head, "#", want, k);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s ferry.conf.5 ferry.conf.example README.md\n", argv[0]);
        return 2;
    }
    char *man = read_file(argv[1]);
    char *example = read_file(argv[2]);
    char *readme = read_file(argv[3]);
    int keys = 0;
    for (const struct conf_key *k = conf_keys; k->name; k++, keys++) {
        check_man_entry(man, k);
        check_example_entry(example, k);
        check_readme_entry(readme, k);
        ASSERT_TRUE(k->help && *k->help);
    }
    ASSERT_TRUE(keys > 0);
    check_man_no_stale(man);
    check_example_loads(example);
    free(man);
    free(example);
    free(readme);
    if (test_failures)
        fprintf(stderr, "%d documentation problem(s); see doc/ferry.conf.5's header comment\n",
                test_failures);
    return test_failures ? 1 : 0;
}

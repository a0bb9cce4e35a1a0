#include "http/mime.h"

#include "common/alloc.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIME_EXT_MAX 32

struct mime_entry {
    char *ext; /* lower case; NULL = empty slot */
    char *type;
};

struct mime_table {
    struct mime_entry *slots;
    size_t cap; /* power of two */
    size_t count;
};

/* Used when /etc/mime.types is missing, and for types it lacks. */
static const char *const builtin[][2] = {
    {"html", "text/html"},        {"htm", "text/html"},
    {"css", "text/css"},          {"js", "text/javascript"},
    {"mjs", "text/javascript"},   {"json", "application/json"},
    {"txt", "text/plain"},        {"xml", "application/xml"},
    {"svg", "image/svg+xml"},     {"png", "image/png"},
    {"jpg", "image/jpeg"},        {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},         {"webp", "image/webp"},
    {"avif", "image/avif"},       {"ico", "image/vnd.microsoft.icon"},
    {"heic", "image/heic"},       {"tif", "image/tiff"},
    {"tiff", "image/tiff"},       {"bmp", "image/bmp"},
    {"pdf", "application/pdf"},   {"zip", "application/zip"},
    {"gz", "application/gzip"},   {"tar", "application/x-tar"},
    {"mp4", "video/mp4"},         {"webm", "video/webm"},
    {"mov", "video/quicktime"},   {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},         {"wav", "audio/wav"},
    {"woff", "font/woff"},        {"woff2", "font/woff2"},
    {"wasm", "application/wasm"}, {"csv", "text/csv"},
};

static uint64_t hash_ext(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)tolower((unsigned char)s[i]);
        h *= 1099511628211ULL;
    }
    return h;
}

static void table_put(struct mime_table *t, const char *ext, size_t len, const char *type,
                      int overwrite);

static void table_grow(struct mime_table *t)
{
    struct mime_entry *old = t->slots;
    size_t oldcap = t->cap;
    t->cap = oldcap ? oldcap * 2 : 256;
    t->slots = xcalloc(t->cap, sizeof(*t->slots));
    t->count = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].ext) {
            table_put(t, old[i].ext, strlen(old[i].ext), old[i].type, 1);
            free(old[i].ext);
            free(old[i].type);
        }
    }
    free(old);
}

static void table_put(struct mime_table *t, const char *ext, size_t len, const char *type,
                      int overwrite)
{
    if (len == 0 || len > MIME_EXT_MAX)
        return;
    if ((t->count + 1) * 2 > t->cap)
        table_grow(t);
    size_t i = hash_ext(ext, len) & (t->cap - 1);
    while (t->slots[i].ext) {
        if (strlen(t->slots[i].ext) == len && strncasecmp(t->slots[i].ext, ext, len) == 0) {
            if (overwrite) {
                free(t->slots[i].type);
                t->slots[i].type = xstrdup(type);
            }
            return;
        }
        i = (i + 1) & (t->cap - 1);
    }
    char *e = xstrndup(ext, len);
    for (char *p = e; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    t->slots[i].ext = e;
    t->slots[i].type = xstrdup(type);
    t->count++;
}

struct mime_table *mime_table_create(const char *path)
{
    struct mime_table *t = xcalloc(1, sizeof(*t));
    table_grow(t);
    FILE *f = path && *path ? fopen(path, "re") : NULL;
    if (f) {
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
            char *save = NULL;
            char *type = strtok_r(line, " \t\r\n", &save);
            if (!type || type[0] == '#' || !strchr(type, '/'))
                continue;
            for (char *ext = strtok_r(NULL, " \t\r\n", &save); ext;
                 ext = strtok_r(NULL, " \t\r\n", &save))
                table_put(t, ext, strlen(ext), type, 0);
        }
        fclose(f);
    }
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        table_put(t, builtin[i][0], strlen(builtin[i][0]), builtin[i][1], 0);
    return t;
}

void mime_table_destroy(struct mime_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; i++) {
        free(t->slots[i].ext);
        free(t->slots[i].type);
    }
    free(t->slots);
    free(t);
}

const char *mime_table_lookup(const struct mime_table *t, const char *name, size_t len)
{
    const char *dot = NULL;
    for (size_t i = len; i > 0; i--) {
        if (name[i - 1] == '.') {
            dot = name + i;
            break;
        }
        if (name[i - 1] == '/')
            break;
    }
    if (dot) {
        size_t elen = len - (size_t)(dot - name);
        if (elen && elen <= MIME_EXT_MAX) {
            size_t i = hash_ext(dot, elen) & (t->cap - 1);
            while (t->slots[i].ext) {
                if (strlen(t->slots[i].ext) == elen && strncasecmp(t->slots[i].ext, dot, elen) == 0)
                    return t->slots[i].type;
                i = (i + 1) & (t->cap - 1);
            }
        }
    }
    return "application/octet-stream";
}

#include "common/text.h"

#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

int text_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int text_each_word(const char *value, int (*fn)(const char *word, void *arg), void *arg)
{
    char *copy = xstrdup(value);
    char *save = NULL;
    int r = 0;
    for (char *w = strtok_r(copy, " \t", &save); w && r == 0; w = strtok_r(NULL, " \t", &save))
        r = fn(w, arg);
    free(copy);
    return r;
}

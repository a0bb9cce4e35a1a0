/* Minimal assertion macros that print both sides (libuv's ASSERT_EQ). */
#ifndef FERRY_TEST_H
#define FERRY_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;

#define TEST_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        test_failures++;                                                                           \
    } while (0)

#define ASSERT_TRUE(x)                                                                             \
    do {                                                                                           \
        if (!(x))                                                                                  \
            TEST_FAIL("ASSERT_TRUE(%s) failed", #x);                                               \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            TEST_FAIL("ASSERT_EQ(%s, %s): %lld != %lld", #a, #b, a_, b_);                          \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            TEST_FAIL("ASSERT_STREQ(%s, %s): \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",        \
                      b_ ? b_ : "(null)");                                                         \
    } while (0)

#define ASSERT_MEMEQ(p, n, lit)                                                                    \
    do {                                                                                           \
        const char *p_ = (const char *)(p);                                                        \
        size_t n_ = (size_t)(n);                                                                   \
        if (!p_ || n_ != strlen(lit) || memcmp(p_, lit, n_) != 0)                                  \
            TEST_FAIL("ASSERT_MEMEQ(%s): \"%.*s\" != \"%s\"", #p, p_ ? (int)n_ : 6,                \
                      p_ ? p_ : "(null)", lit);                                                    \
    } while (0)

#define TEST_MAIN_END()                                                                            \
    do {                                                                                           \
        if (test_failures) {                                                                       \
            fprintf(stderr, "%d assertion(s) failed\n", test_failures);                            \
            return 1;                                                                              \
        }                                                                                          \
        return 0;                                                                                  \
    } while (0)

#endif

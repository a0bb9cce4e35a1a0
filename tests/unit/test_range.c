/* Unit tests for common/range.c: the one Range parser of static files and stores. */
#include "common/range.h"

#include "test.h"

static void expect(const char *in, uint64_t size, enum range_outcome want, uint64_t off,
                   uint64_t len)
{
    uint64_t o = 12345, l = 54321;
    enum range_outcome got = range_parse(in, strlen(in), size, &o, &l);
    if (got != want) {
        TEST_FAIL("range_parse(\"%s\", %" PRIu64 ") = %d, want %d", in, size, got, want);
        return;
    }
    if (want != RANGE_SATISFIABLE) {
        /* out-parameters are written only on success */
        if (o != 12345 || l != 54321)
            TEST_FAIL("range_parse(\"%s\") wrote its out-parameters", in);
        return;
    }
    if (o != off || l != len)
        TEST_FAIL("range_parse(\"%s\", %" PRIu64 ") = %" PRIu64 "+%" PRIu64 ", want %" PRIu64
                  "+%" PRIu64,
                  in, size, o, l, off, len);
}

static void test_single(void)
{
    expect("bytes=0-9", 100, RANGE_SATISFIABLE, 0, 10);
    expect("bytes=0-0", 100, RANGE_SATISFIABLE, 0, 1);
    expect("bytes=99-99", 100, RANGE_SATISFIABLE, 99, 1);
    expect("BYTES=1-2", 100, RANGE_SATISFIABLE, 1, 2);
    expect("bytes=4831838208-4831838209", 5368709120ULL, RANGE_SATISFIABLE, 4831838208ULL, 2);
}

static void test_open_end(void)
{
    expect("bytes=0-", 100, RANGE_SATISFIABLE, 0, 100);
    expect("bytes=10-", 100, RANGE_SATISFIABLE, 10, 90);
    expect("bytes=90-500", 100, RANGE_SATISFIABLE, 90, 10);
    expect("bytes=0-18446744073709551615", 100, RANGE_IGNORE, 0, 0); /* above INT64_MAX */
    expect("bytes=0-9223372036854775807", 100, RANGE_SATISFIABLE, 0, 100);
    expect("bytes=100-", 100, RANGE_UNSATISFIABLE, 0, 0);
    expect("bytes=100-200", 100, RANGE_UNSATISFIABLE, 0, 0);
    expect("bytes=0-", 0, RANGE_UNSATISFIABLE, 0, 0);
}

static void test_suffix(void)
{
    expect("bytes=-5", 100, RANGE_SATISFIABLE, 95, 5);
    expect("bytes=-100", 100, RANGE_SATISFIABLE, 0, 100);
    expect("bytes=-500", 100, RANGE_SATISFIABLE, 0, 100);
    expect("bytes=-0", 100, RANGE_UNSATISFIABLE, 0, 0);
    expect("bytes=-5", 0, RANGE_UNSATISFIABLE, 0, 0);
    expect("bytes=-", 100, RANGE_IGNORE, 0, 0);
}

static void test_blanks_and_signs(void)
{
    expect("bytes= 1-2 ", 100, RANGE_SATISFIABLE, 1, 2);
    expect("bytes=\t1-2\t", 100, RANGE_SATISFIABLE, 1, 2);
    expect("bytes=1 -2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=1- 2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes =1-2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=+1-2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=1-+2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=--5", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=1--2", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=0x1-2", 100, RANGE_IGNORE, 0, 0);
    /* sscanf("%llu") used to accept these in the dir store */
    expect("bytes=-+5", 100, RANGE_IGNORE, 0, 0);
    expect("bytes= -5", 100, RANGE_SATISFIABLE, 95, 5);
}

static void test_invalid(void)
{
    expect("", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=   ", 100, RANGE_IGNORE, 0, 0);
    expect("items=0-1", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=a-b", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=5-1", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=5", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=500-1", 100, RANGE_IGNORE, 0, 0); /* invalid beats unsatisfiable */
    uint64_t o, l;
    ASSERT_EQ(range_parse(NULL, 0, 100, &o, &l), RANGE_IGNORE);
    /* (ptr, len): bytes past len are not read */
    ASSERT_EQ(range_parse("bytes=1-2junk", 9, 100, &o, &l), RANGE_SATISFIABLE);
    ASSERT_EQ(l, 2);
}

static void test_overflow(void)
{
    expect("bytes=9223372036854775807-", 100, RANGE_UNSATISFIABLE, 0, 0);
    /* leading zeros are not magnitude */
    expect("bytes=00000000000000000000000001-0000000000000000000000000002", 100, RANGE_SATISFIABLE,
           1, 2);
    expect("bytes=9223372036854775808-", 100, RANGE_IGNORE, 0, 0);
    /* wrapped to a small number by the old "a > 2^62" check */
    expect("bytes=46116860184273879040-", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=-99999999999999999999999", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=1-99999999999999999999999", 100, RANGE_IGNORE, 0, 0);
}

static void test_multiple(void)
{
    expect("bytes=0-1,5-6", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=0-1, 5-6", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=0-1,", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=,0-1", 100, RANGE_IGNORE, 0, 0);
    expect("bytes=200-300,0-1", 100, RANGE_IGNORE, 0, 0);
}

int main(void)
{
    test_single();
    test_open_end();
    test_suffix();
    test_blanks_and_signs();
    test_invalid();
    test_overflow();
    test_multiple();
    TEST_MAIN_END();
}

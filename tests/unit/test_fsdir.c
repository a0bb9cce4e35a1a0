/* Unit tests for common/fsdir.c: mkdir -p with fsync, and its dry run. */
#include "common/fsdir.h"

#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ferry-test-fsdir-XXXXXX";

static int mode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? (int)(st.st_mode & 07777) : -1;
}

static void test_make(void)
{
    char a[256], abc[300], file[300], under[320];
    snprintf(a, sizeof(a), "%s/a", tmpdir);
    snprintf(abc, sizeof(abc), "%s//b/c/", a);
    mode_t old = umask(022);
    ASSERT_EQ(fsdir_make(abc, 0700), 0);
    umask(old);
    ASSERT_EQ(mode_of(a), 0700);
    snprintf(abc, sizeof(abc), "%s/b/c", a);
    ASSERT_EQ(mode_of(abc), 0700);
    /* existing directories are fine and keep their mode */
    ASSERT_EQ(chmod(abc, 0750), 0);
    ASSERT_EQ(fsdir_make(abc, 0700), 0);
    ASSERT_EQ(mode_of(abc), 0750);
    /* a file in the way */
    snprintf(file, sizeof(file), "%s/file", tmpdir);
    int fd = open(file, O_WRONLY | O_CREAT, 0600);
    close(fd);
    snprintf(under, sizeof(under), "%s/x/y", file);
    ASSERT_EQ(fsdir_make(file, 0700), -ENOTDIR);
    ASSERT_EQ(fsdir_make(under, 0700), -ENOTDIR);
    ASSERT_EQ(fsdir_make("", 0700), -EINVAL);
}

static void test_probe(void)
{
    char p[320], why[320] = "";
    ASSERT_EQ(fsdir_probe(tmpdir, why, sizeof(why)), 0);
    snprintf(p, sizeof(p), "%s/new/deeper/", tmpdir);
    ASSERT_EQ(fsdir_probe(p, why, sizeof(why)), 1);
    ASSERT_EQ(mode_of(p), -1); /* nothing was created */
    snprintf(p, sizeof(p), "%s/file/x/y", tmpdir);
    ASSERT_EQ(fsdir_probe(p, why, sizeof(why)), -ENOTDIR);
    char want[320];
    snprintf(want, sizeof(want), "%s/file", tmpdir);
    ASSERT_STREQ(why, want);
    ASSERT_EQ(fsdir_probe("/", why, sizeof(why)), 0);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        return 1;
    test_make();
    test_probe();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        return 1;
    TEST_MAIN_END();
}

/* The hello-world FastCGI application of bench/fcgi/run.sh, on libfcgi: the
 * same binary and process count behind every server. It accepts on fd 0
 * (FCGI_LISTENSOCK_FILENO), reads the request body and answers
 * "Hello, world! read N bytes" (N: the body's length, so the POST runs can
 * check that every byte arrived), with no Content-Length, as a plain CGI
 * script does. For /accel it answers with only "X-Accel-Redirect:
 * /static/4k.bin" (ferry, nginx), for /sendfile with "X-Sendfile: SPOOL/4k.bin"
 * (lighttpd; SPOOL from the environment variable BENCH_SPOOL): the server then
 * sends that file itself. */
#include <fcgiapp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    FCGX_Request req;
    char buf[65536];
    FCGX_Init();
    FCGX_InitRequest(&req, 0, 0);
    while (FCGX_Accept_r(&req) >= 0) {
        long n = 0;
        int r;
        while ((r = FCGX_GetStr(buf, sizeof(buf), req.in)) > 0)
            n += r;
        const char *uri = FCGX_GetParam("REQUEST_URI", req.envp);
        if (uri && strcmp(uri, "/accel") == 0)
            FCGX_FPrintF(req.out, "X-Accel-Redirect: /static/4k.bin\r\n\r\n");
        else if (uri && strcmp(uri, "/sendfile") == 0)
            FCGX_FPrintF(req.out, "X-Sendfile: %s/4k.bin\r\n\r\n", getenv("BENCH_SPOOL"));
        else
            FCGX_FPrintF(req.out, "Content-Type: text/plain\r\n\r\nHello, world! read %ld bytes\n",
                         n);
        FCGX_Finish_r(&req);
    }
    return 0;
}

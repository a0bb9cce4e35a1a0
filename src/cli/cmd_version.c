#include "cli/cli.h"

#include <curl/curl.h>
#include <openssl/opensslv.h>
#include <stdio.h>

int cmd_version(int argc, char **argv)
{
    if (argc > 1)
        return cli_usage(argv[0]);
    printf("ferry %s\n", FERRY_VERSION);
    printf("libcurl %s, %s\n", curl_version_info(CURLVERSION_NOW)->version, OPENSSL_VERSION_TEXT);
    return EXIT_OK;
}

/* Unit tests for common/net.c address and CIDR parsing. */
#include "common/net.h"

#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static void test_addrs(void)
{
    struct net_addr a;
    ASSERT_EQ(net_parse_addr("127.0.0.1:8080", &a), 0);
    ASSERT_EQ(a.ss.ss_family, AF_INET);
    ASSERT_EQ(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 8080);
    ASSERT_EQ(net_parse_addr("[::1]:80", &a), 0);
    ASSERT_EQ(a.ss.ss_family, AF_INET6);
    ASSERT_EQ(net_parse_addr("*:80", &a), 0);
    ASSERT_EQ(net_parse_addr(":80", &a), 0);
    ASSERT_EQ(net_parse_addr("localhost:80", &a), 0);
    ASSERT_TRUE(net_parse_addr("127.0.0.1:80x", &a) < 0);
    ASSERT_TRUE(net_parse_addr("127.0.0.1:65536", &a) < 0);
    ASSERT_TRUE(net_parse_addr("127.0.0.1", &a) < 0);
    ASSERT_TRUE(net_parse_addr("::1:80", &a) < 0);
    ASSERT_TRUE(net_parse_addr("[::1]80", &a) < 0);
    ASSERT_TRUE(net_parse_addr("example.com:80", &a) < 0);
    char out[64];
    net_parse_addr("[::1]:443", &a);
    net_format_addr((struct sockaddr *)&a.ss, out, sizeof(out));
    ASSERT_STREQ(out, "[::1]:443");
}

static void test_cidrs(void)
{
    struct net_cidr c;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    ASSERT_EQ(net_parse_cidr("10.1.0.0/16", &c), 0);
    inet_pton(AF_INET, "10.1.255.3", &sin.sin_addr);
    ASSERT_TRUE(net_cidr_match(&c, (struct sockaddr *)&sin));
    inet_pton(AF_INET, "10.2.0.1", &sin.sin_addr);
    ASSERT_TRUE(!net_cidr_match(&c, (struct sockaddr *)&sin));
    /* IPv4-mapped IPv6 clients match IPv4 networks. */
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr);
    ASSERT_TRUE(net_cidr_match(&c, (struct sockaddr *)&sin6));
    ASSERT_EQ(net_parse_cidr("2001:db8::/33", &c), 0);
    inet_pton(AF_INET6, "2001:db8:7fff::1", &sin6.sin6_addr);
    ASSERT_TRUE(net_cidr_match(&c, (struct sockaddr *)&sin6));
    inet_pton(AF_INET6, "2001:db8:8000::1", &sin6.sin6_addr);
    ASSERT_TRUE(!net_cidr_match(&c, (struct sockaddr *)&sin6));
    ASSERT_EQ(net_parse_cidr("0.0.0.0/0", &c), 0);
    ASSERT_TRUE(net_cidr_match(&c, (struct sockaddr *)&sin));
    ASSERT_TRUE(net_parse_cidr("10.0.0.0/33", &c) < 0);
    ASSERT_TRUE(net_parse_cidr("::/129", &c) < 0);
    ASSERT_TRUE(net_parse_cidr("10.0.0.0/", &c) < 0);
    ASSERT_TRUE(net_parse_cidr("10.0.0/8", &c) < 0);
}

int main(void)
{
    test_addrs();
    test_cidrs();
    TEST_MAIN_END();
}

/* bench/_sfu_floor.c: the all-C floor of an SRTP packet forwarder, for ``bench.sfu``.
 *
 * Not the SFU and not shipped: a measuring stick.  It does the least an SRTP forwarder must do
 * per packet, with nothing in Python: receive SRTP on one UDP socket (recvmmsg, every queued
 * datagram per wake-up), unprotect once with libsrtp, and for every subscriber copy the packet,
 * rewrite sequence number and SSRC, protect it with that subscriber's own session and send it.
 * No ICE, DTLS, RTCP, slots or statistics.  Its CPU per outgoing packet, set beside Janus's in
 * the same run, says how far under Janus any forwarder can go on this machine: what is left is
 * the kernel's UDP work and SRTP.
 *
 * Usage: _sfu_floor MODE HOST:PORT...   (MODE: sendto | connected | sendmmsg)
 *   sendto     one socket for all, sendto() per outgoing packet (what the SFU's C sender does)
 *   connected  one connect()ed socket per subscriber, send() per outgoing packet
 *   sendmmsg   one connect()ed socket per subscriber, one sendmmsg() per subscriber per wake-up
 * It binds 127.0.0.1:0, prints the port on stdout, and runs until its standard input closes.
 * Fixed test keys (AEAD_AES_256_GCM, key bytes 0..43, as bench/_sfu_reference.py): loopback only.
 *
 * Build: cc -O2 -o _sfu_floor _sfu_floor.c -lsrtp2   (Debian: libsrtp2-dev, Janus's libsrtp)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <srtp2/srtp.h>

#define MAX_SUBS 64
#define BATCH 64
#define PACKET 1500
#define ROOM (PACKET + SRTP_MAX_TRAILER_LEN)

enum mode { SENDTO, CONNECTED, SENDMMSG };

static unsigned char key[44];
static srtp_t inbound, outbound[MAX_SUBS];
static struct sockaddr_in subs[MAX_SUBS];
static int sub_fd[MAX_SUBS];
static unsigned short seq[MAX_SUBS][256];  /* per (subscriber, source SSRC's low byte) */
static unsigned char in_buf[BATCH][ROOM];
static unsigned char out_buf[MAX_SUBS][BATCH][ROOM];
static int out_len[MAX_SUBS][BATCH];

static void die(const char *what) { perror(what); exit(1); }

static srtp_t session(srtp_ssrc_type_t type)
{
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtp);
    srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtcp);
    policy.ssrc.type = type;
    policy.key = key;
    policy.window_size = 1024;
    policy.allow_repeat_tx = 1;
    srtp_t s;
    if (srtp_create(&s, &policy) != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed\n");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s sendto|connected|sendmmsg HOST:PORT...\n", argv[0]);
        return 2;
    }
    enum mode mode = !strcmp(argv[1], "sendto") ? SENDTO : !strcmp(argv[1], "connected") ? CONNECTED
                   : !strcmp(argv[1], "sendmmsg") ? SENDMMSG : -1;
    if ((int)mode < 0) {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    int n = argc - 2;
    if (n > MAX_SUBS) {
        fprintf(stderr, "at most %d subscribers\n", MAX_SUBS);
        return 2;
    }
    for (int i = 0; i < 44; i++)
        key[i] = (unsigned char)i;
    if (srtp_init() != srtp_err_status_ok)
        return 1;
    inbound = session(ssrc_any_inbound);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0)
        die("bind");
    socklen_t melen = sizeof(me);
    getsockname(fd, (struct sockaddr *)&me, &melen);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));

    for (int i = 0; i < n; i++) {
        char host[64];
        int port;
        if (sscanf(argv[i + 2], "%63[^:]:%d", host, &port) != 2)
            die("address");
        subs[i].sin_family = AF_INET;
        subs[i].sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &subs[i].sin_addr) != 1)
            die("address");
        outbound[i] = session(ssrc_any_outbound);
        sub_fd[i] = fd;
        if (mode != SENDTO) {
            sub_fd[i] = socket(AF_INET, SOCK_DGRAM, 0);
            struct sockaddr_in any = me;
            any.sin_port = 0;
            if (sub_fd[i] < 0 || bind(sub_fd[i], (struct sockaddr *)&any, sizeof(any)) < 0 ||
                connect(sub_fd[i], (struct sockaddr *)&subs[i], sizeof(subs[i])) < 0)
                die("connect");
        }
    }
    printf("%d\n", ntohs(me.sin_port));
    fflush(stdout);

    struct mmsghdr in_msgs[BATCH];
    struct iovec in_iov[BATCH];
    struct mmsghdr out_msgs[BATCH];
    struct iovec out_iov[BATCH];
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (fds[1].revents) {
            char c;
            if (read(0, &c, 1) <= 0)
                return 0;
        }
        if (!(fds[0].revents & POLLIN))
            continue;
        for (int k = 0; k < BATCH; k++) {
            in_iov[k].iov_base = in_buf[k];
            in_iov[k].iov_len = PACKET;
            memset(&in_msgs[k].msg_hdr, 0, sizeof(in_msgs[k].msg_hdr));
            in_msgs[k].msg_hdr.msg_iov = &in_iov[k];
            in_msgs[k].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, in_msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0)
            continue;
        int ready = 0;
        for (int k = 0; k < got; k++) {
            int len = (int)in_msgs[k].msg_len;
            if (len < 12 || srtp_unprotect(inbound, in_buf[k], &len) != srtp_err_status_ok)
                continue;
            unsigned int ssrc = ntohl(*(unsigned int *)(in_buf[k] + 8));
            for (int i = 0; i < n; i++) {
                unsigned char *p = out_buf[i][ready];
                memcpy(p, in_buf[k], (size_t)len);
                unsigned short s = seq[i][ssrc & 0xff]++;
                *(unsigned short *)(p + 2) = htons(s);
                *(unsigned int *)(p + 8) = htonl(ssrc ^ (unsigned int)(i + 1));
                int olen = len;
                if (srtp_protect(outbound[i], p, &olen) != srtp_err_status_ok) {
                    out_len[i][ready] = -1;
                    continue;
                }
                out_len[i][ready] = olen;
                if (mode == SENDTO)
                    sendto(fd, p, (size_t)olen, MSG_DONTWAIT, (struct sockaddr *)&subs[i], sizeof(subs[i]));
                else if (mode == CONNECTED)
                    send(sub_fd[i], p, (size_t)olen, MSG_DONTWAIT);
            }
            ready++;
        }
        if (mode == SENDMMSG) {
            for (int i = 0; i < n; i++) {
                int m = 0;
                for (int k = 0; k < ready; k++) {
                    if (out_len[i][k] < 0)
                        continue;
                    out_iov[m].iov_base = out_buf[i][k];
                    out_iov[m].iov_len = (size_t)out_len[i][k];
                    memset(&out_msgs[m].msg_hdr, 0, sizeof(out_msgs[m].msg_hdr));
                    out_msgs[m].msg_hdr.msg_iov = &out_iov[m];
                    out_msgs[m].msg_hdr.msg_iovlen = 1;
                    m++;
                }
                if (m)
                    sendmmsg(sub_fd[i], out_msgs, (unsigned int)m, MSG_DONTWAIT);
            }
        }
    }
}

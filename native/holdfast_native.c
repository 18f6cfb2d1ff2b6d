/*
 * holdfast_native: the two things Node cannot do by itself.
 *   openBound(family, kind, ifname[, source[, noDelay]]) -> fd
 *                                           a non-blocking socket bound to a device
 *                                           (SO_BINDTODEVICE on Linux, IP_BOUND_IF on macOS),
 *                                           and, if `source` is given, to that address (port 0):
 *                                           Node can adopt an fd (dgram bind({fd}), listen({fd}))
 *                                           but cannot bind one it adopted; a stream
 *                                           socket's bind reserves its port where one is
 *                                           free (bind_stream_source says why)
 *                                           kind 2: an MPTCP stream socket (IPPROTO_MPTCP);
 *                                           where the kernel has none, socket() fails
 *                                           (EPROTONOSUPPORT, ENOPROTOOPT, EINVAL) and the
 *                                           caller falls back to kind 0
 *                                           noDelay true (a stream socket the dialer will
 *                                           connect): TCP_NODELAY, set before the connect (what
 *                                           Node's setNoDelay would set after it)
 *   keepAlive(fd, secs)                     SO_KEEPALIVE on a connected stream socket, with
 *                                           TCP_KEEPIDLE secs, TCP_KEEPINTVL 1 and TCP_KEEPCNT 10
 *                                           (the dialer's, once its flow has lived a second)
 *   mptcpSubflows(fd) -> [{local, remote}] | null
 *                                           the subflows of a connected MPTCP socket
 *                                           (MPTCP_SUBFLOW_ADDRS); null for plain TCP or an
 *                                           MPTCP socket that fell back to TCP
 *   routeSource(family, ip) -> string       the source address the kernel picks for ip
 *                                           (a throwaway connected UDP socket, as Dante's getoutaddr)
 * Errors are thrown as Error with .code = "E..." (the errno name) and .syscall.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/mptcp.h>
#endif
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef SOL_MPTCP
#define SOL_MPTCP 284
#endif

#include "errno_name.h"

static napi_value throw_errno(napi_env env, int e, const char *syscall) {
  napi_value msg, code, err, sys;
  char text[160];
  snprintf(text, sizeof text, "%s: %s", syscall, strerror(e));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, hf_errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, err, "syscall", sys);
  napi_value en;
  napi_create_int32(env, -e, &en);
  napi_set_named_property(env, err, "errno", en);
  napi_throw(env, err);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *what) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
  return NULL;
}

static int get_family(napi_env env, napi_value v, int *af) {
  int32_t f = 0;
  if (napi_get_value_int32(env, v, &f) != napi_ok) return -1;
  if (f == 4) *af = AF_INET;
  else if (f == 6) *af = AF_INET6;
  else return -1;
  return 0;
}

/* Bind fd to `src` (an IP, "%zone" ignored; IPv6 link-local gets ifname's scope), port 0.
   Returns 0, an errno, or -1 if src is not an address of the family. */
static int bind_source(int fd, int af, const char *src_in, const char *ifname) {
  char src[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  snprintf(src, sizeof src, "%s", src_in);
  char *pct = strchr(src, '%');
  if (pct) *pct = 0;
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof ss);
  if (af == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    s->sin_family = AF_INET;
    if (inet_pton(AF_INET, src, &s->sin_addr) != 1) return -1;
    sl = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    s->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, src, &s->sin6_addr) != 1) return -1;
    if (IN6_IS_ADDR_LINKLOCAL(&s->sin6_addr)) s->sin6_scope_id = if_nametoindex(ifname);
    sl = sizeof *s;
  }
  return bind(fd, (struct sockaddr *)&ss, sl) == 0 ? 0 : errno;
}

/* Until when (CLOCK_MONOTONIC seconds) a stream socket's bind skips straight to the fallback
   below: the last port-0 bind found no free port. Only the main thread calls openBound. */
static time_t ports_short_until = 0;

/* A stream socket's source bind, port 0. The port is picked, and reserved, by bind() itself:
   the kernel matches a socket bound to a device (SO_BINDTODEVICE) only in lookups on that
   device, and an unbound socket's connect() looks on none, so with the port left to connect()
   (IP_BIND_ADDRESS_NO_PORT) another program's connect() to the same server from the same
   address could take a live pinned socket's port: two connections with one 4-tuple, the pinned
   one reset or stalled in retransmissions (seen on loopback: 1411 of 20,000 plain connects to a
   server took a port one of 1000 pinned sockets to it held). A reserved port is skipped by every
   autobind. Where no port is free on the address (the local range used up, TIME_WAIT included,
   which a reserving bind cannot share), fall back to leaving the port to connect(), which only
   needs the 4-tuple to be new: the dial goes ahead, without the reservation. */
static int bind_stream_source(int fd, int af, const char *src, const char *ifname) {
#if defined(IP_BIND_ADDRESS_NO_PORT)
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (now.tv_sec >= ports_short_until) {
    int e = bind_source(fd, af, src, ifname);
    if (e != EADDRINUSE) return e;
    ports_short_until = now.tv_sec + 2; /* spare the next dials a scan of the whole range */
  }
  int one = 1;
  (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
  return bind_source(fd, af, src, ifname);
}

/* SO_KEEPALIVE with the first probe after `secs` idle, then one a second, ten unanswered end the
   connection: what libuv >= 1.49 (Node 22, 24) sets with the idle, so a dead peer is found alike
   on every Node (Node 20's libuv left the kernel's 75 s x 9). Failures are ignored, as Node's
   setKeepAlive ignores them (an MPTCP socket on an older kernel may not take every option). */
static void set_keepalive(int fd, int secs) {
  int one = 1, intvl = 1, cnt = 10;
  (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#if defined(TCP_KEEPIDLE)
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof secs);
#elif defined(TCP_KEEPALIVE)
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPALIVE, &secs, sizeof secs);
#endif
#if defined(TCP_KEEPINTVL)
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
#endif
#if defined(TCP_KEEPCNT)
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

/* openBound(family: 4|6, kind: 0 tcp | 1 udp | 2 mptcp, ifname: string, source?: string | null,
             noDelay?: boolean) -> fd */
static napi_value open_bound(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return throw_type(env, "openBound(family, kind, ifname[, source[, noDelay]])");
  int af;
  if (get_family(env, argv[0], &af) != 0) return throw_type(env, "family must be 4 or 6");
  int32_t kind = 0;
  if (napi_get_value_int32(env, argv[1], &kind) != napi_ok || kind < 0 || kind > 2)
    return throw_type(env, "kind must be 0 (tcp), 1 (udp) or 2 (mptcp)");
  char ifname[IF_NAMESIZE + 1];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[2], ifname, sizeof ifname, &len) != napi_ok || len == 0 ||
      len >= IF_NAMESIZE)
    return throw_type(env, "ifname must be an interface name");

  int type = kind == 1 ? SOCK_DGRAM : SOCK_STREAM;
  int proto = kind == 2 ? IPPROTO_MPTCP : 0;
#ifndef __linux__
  if (kind == 2) return throw_errno(env, EPROTONOSUPPORT, "socket");
#endif
#ifdef SOCK_NONBLOCK
  int fd = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
#else
  int fd = socket(af, type, proto);
  if (fd >= 0) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
#endif
  if (fd < 0) return throw_errno(env, errno, "socket");

#if defined(SO_BINDTODEVICE)
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)len + 1) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt(SO_BINDTODEVICE)");
  }
#elif defined(IP_BOUND_IF)
  {
    unsigned int idx = if_nametoindex(ifname);
    if (idx == 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "if_nametoindex");
    }
    int rc = af == AF_INET ? setsockopt(fd, IPPROTO_IP, IP_BOUND_IF, &idx, sizeof idx)
                           : setsockopt(fd, IPPROTO_IPV6, IPV6_BOUND_IF, &idx, sizeof idx);
    if (rc != 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "setsockopt(IP_BOUND_IF)");
    }
  }
#else
  close(fd);
  return throw_errno(env, ENOPROTOOPT, "bind to device");
#endif
  if (argc >= 4) {
    napi_valuetype t;
    if (napi_typeof(env, argv[3], &t) == napi_ok && t == napi_string) {
      char src[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
      size_t slen = 0;
      if (napi_get_value_string_utf8(env, argv[3], src, sizeof src, &slen) != napi_ok || slen == 0 ||
          slen >= sizeof src - 1) {
        close(fd);
        return throw_type(env, "source must be an IP address");
      }
      int e = kind == 1 ? bind_source(fd, af, src, ifname) : bind_stream_source(fd, af, src, ifname);
      if (e != 0) {
        close(fd);
        return e < 0 ? throw_type(env, "source must be an IP address of the family") : throw_errno(env, e, "bind");
      }
    }
  }
  if (argc >= 5 && kind != 1) {
    bool no_delay = false;
    if (napi_get_value_bool(env, argv[4], &no_delay) == napi_ok && no_delay) {
      /* as Node's setNoDelay: a failure is ignored (the connection works without) */
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* routeSource(family: 4|6, ip: string) -> source address string */
static napi_value route_source(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "routeSource(family, ip)");
  int af;
  if (get_family(env, argv[0], &af) != 0) return throw_type(env, "family must be 4 or 6");
  /* an address and a zone ("fe80::1%eth0"): room for the longest of each, and a longer string is
     refused, never cut short (napi would truncate it silently to fit) */
  char ip[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &len) != napi_ok || len == 0)
    return throw_type(env, "ip must be an address");
  if (len >= sizeof ip) return throw_type(env, "ip too long for an address with a zone");
  if (napi_get_value_string_utf8(env, argv[1], ip, sizeof ip, &len) != napi_ok) return throw_type(env, "ip must be an address");

  struct sockaddr_storage dst;
  socklen_t dlen;
  memset(&dst, 0, sizeof dst);
  if (af == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&dst;
    s->sin_family = AF_INET;
    s->sin_port = htons(9);
    if (inet_pton(AF_INET, ip, &s->sin_addr) != 1) return throw_type(env, "not an IPv4 address");
    dlen = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&dst;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(9);
    char *pct = strchr(ip, '%');
    if (pct) {
      *pct = 0;
      s->sin6_scope_id = if_nametoindex(pct + 1);
      if (s->sin6_scope_id == 0) return throw_errno(env, errno ? errno : ENXIO, "if_nametoindex");
    }
    if (inet_pton(AF_INET6, ip, &s->sin6_addr) != 1) return throw_type(env, "not an IPv6 address");
    dlen = sizeof *s;
  }
  int fd = socket(af, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&dst, dlen) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "connect");
  }
  struct sockaddr_storage src;
  socklen_t slen = sizeof src;
  if (getsockname(fd, (struct sockaddr *)&src, &slen) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "getsockname");
  }
  close(fd);
  char out[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  if (af == AF_INET) {
    inet_ntop(AF_INET, &((struct sockaddr_in *)&src)->sin_addr, out, sizeof out);
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;
    inet_ntop(AF_INET6, &s6->sin6_addr, out, sizeof out);
    if (s6->sin6_scope_id != 0) {
      char name[IF_NAMESIZE];
      if (if_indextoname(s6->sin6_scope_id, name) != NULL) {
        size_t n = strlen(out);
        snprintf(out + n, sizeof out - n, "%%%s", name);
      }
    }
  }
  napi_value v;
  napi_create_string_utf8(env, out, NAPI_AUTO_LENGTH, &v);
  return v;
}

/* The subflows of MPTCP socket fd as [{ local, remote }], or null (plain TCP, fallen back, not
   Linux). Also used by relay.c for offloaded tunnels. */
napi_value hf_mptcp_subflows_of(napi_env env, int fd) {
  napi_value out;
#if defined(__linux__) && defined(MPTCP_SUBFLOW_ADDRS)
  /* room for 8 subflows: the header, then one mptcp_subflow_addrs each */
  enum { MAX_SUB = 8 };
  union {
    struct mptcp_subflow_data d;
    char raw[sizeof(struct mptcp_subflow_data) + MAX_SUB * sizeof(struct mptcp_subflow_addrs)];
  } buf;
  memset(&buf, 0, sizeof buf);
  buf.d.size_subflow_data = sizeof(struct mptcp_subflow_data);
  buf.d.size_user = sizeof(struct mptcp_subflow_addrs);
  socklen_t len = sizeof buf;
  if (getsockopt(fd, SOL_MPTCP, MPTCP_SUBFLOW_ADDRS, &buf, &len) != 0) {
    /* plain TCP, or MPTCP fallen back to TCP (the option reaches TCP, which refuses it) */
    napi_get_null(env, &out);
    return out;
  }
  uint32_t n = buf.d.num_subflows;
  uint32_t stride = buf.d.size_user ? buf.d.size_user : sizeof(struct mptcp_subflow_addrs);
  uint32_t room = (len > sizeof(struct mptcp_subflow_data)) ? (len - sizeof(struct mptcp_subflow_data)) / stride : 0;
  if (n > room) n = room;
  napi_create_array_with_length(env, n, &out);
  for (uint32_t i = 0; i < n; i++) {
    const struct mptcp_subflow_addrs *a =
        (const struct mptcp_subflow_addrs *)(buf.raw + sizeof(struct mptcp_subflow_data) + i * stride);
    char text[2][INET6_ADDRSTRLEN];
    const struct sockaddr *sas[2] = {&a->sa_local, &a->sa_remote};
    for (int k = 0; k < 2; k++) {
      text[k][0] = 0;
      if (sas[k]->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sas[k])->sin_addr, text[k], sizeof text[k]);
      else if (sas[k]->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sas[k])->sin6_addr, text[k], sizeof text[k]);
    }
    napi_value o, l, r;
    napi_create_object(env, &o);
    napi_create_string_utf8(env, text[0], NAPI_AUTO_LENGTH, &l);
    napi_create_string_utf8(env, text[1], NAPI_AUTO_LENGTH, &r);
    napi_set_named_property(env, o, "local", l);
    napi_set_named_property(env, o, "remote", r);
    napi_set_element(env, out, i, o);
  }
#else
  (void)fd;
  napi_get_null(env, &out);
#endif
  return out;
}

/* mptcpSubflows(fd) -> [{ local, remote }] | null */
static napi_value mptcp_subflows(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return throw_type(env, "mptcpSubflows(fd)");
  return hf_mptcp_subflows_of(env, fd);
}

/* keepAlive(fd, secs): set_keepalive on a connected stream socket (the dialer's, once its flow
   has lived a while: bench/README "twelfth pass"); secs >= 1 */
static napi_value keep_alive(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1, secs = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_value_int32(env, argv[1], &secs) != napi_ok || secs < 1)
    return throw_type(env, "keepAlive(fd, secs >= 1)");
  set_keepalive(fd, secs);
  return NULL;
}

/* closeFd(fd): for an fd that was never handed to a net.Socket */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return throw_type(env, "closeFd(fd)");
  close(fd);
  return NULL;
}

void relay_register(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"openBound", NULL, open_bound, NULL, NULL, NULL, napi_default, NULL},
      {"routeSource", NULL, route_source, NULL, NULL, NULL, napi_default, NULL},
      {"mptcpSubflows", NULL, mptcp_subflows, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL},
      {"keepAlive", NULL, keep_alive, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  relay_register(env, exports); /* native/relay.c: the offloaded splice relay (Linux) */
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

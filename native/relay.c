/*
 * relay.c: the offloaded relay (Linux). A tunnel that has moved bulk bytes leaves the JS relay
 * (src/relay.ts) and is relayed here, zero-copy: splice(2) from one socket into a pipe and from
 * the pipe into the other socket, one pipe per direction, on one thread with its own epoll.
 *
 * JS API (registered by relay_register, called from the addon's init):
 *   relayInit(onDone, pipeSize)     once per env; onDone(id, reason, bytesUp, bytesDown) is
 *                                   called on the JS thread when a tunnel ends; reason is "done"
 *                                   (both directions ended cleanly), "closed" (relayClose) or the
 *                                   errno name of the first error ("ECONNRESET", "EPIPE", ...)
 *   relayStart(fdA, fdB, pendAB, pendBA, flags) -> id
 *                                   dup()s both connected sockets (the caller keeps and closes its
 *                                   own fds), writes pendAB to B and pendBA to A first (Buffers or
 *                                   null: bytes JS had read but not forwarded), then relays.
 *                                   flags: 1 = A->B already ended (FIN passed on), 2 = B->A too.
 *                                   Direction A->B is "up" (A is the client), B->A is "down".
 *   relayClose(id, reset) -> bool   end now: reset (SO_LINGER 0) or close; false if unknown
 *   relayBytes(id, dir) -> number   bytes written to the far side so far (dir 0 up, 1 down); -1 if unknown
 *   relayIdleMs(id) -> number       ms since a byte last moved either way; -1 if unknown
 *   relayInfo() -> { tunnels, started, pipeSize, pipePages }
 *                                   live tunnels, tunnels taken so far, the pipe size last
 *                                   granted, pages of enlarged pipes held
 *
 * Threads: the JS thread creates a tunnel (dup, pipes) and queues a command (eventfd); the relay
 * thread owns the tunnel's relay state until it ends, then posts it back through a thread-safe
 * function; the JS thread reports it and frees it. Counters and last activity are atomics, so
 * the JS thread may read them at any time. A tunnel is freed when the JS map and every queued
 * command have dropped it (refs). The thread-safe function is referenced only while tunnels
 * live, so the relay never keeps the process alive by itself.
 */
#define _GNU_SOURCE
#include <node_api.h>

void relay_register(napi_env env, napi_value exports);

#ifndef __linux__
void relay_register(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
}
#else

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAP_BUCKETS 4096u
/* splice rounds per direction per wakeup, so one busy tunnel cannot starve the others */
#define PUMP_BUDGET 16
#define MAX_EVENTS 128

enum { CMD_START, CMD_CLOSE, CMD_RESET, CMD_STOP };

typedef struct {
  int src, dst;   /* indexes into tunnel.fd */
  int pr, pw;     /* the pipe: read end, write end */
  size_t in_pipe; /* bytes in the pipe */
  char *pend;     /* bytes from JS, written before anything else */
  size_t pend_len, pend_off;
  int eof, done;
  _Atomic uint64_t bytes;
} dir_t;

typedef struct tunnel {
  uint32_t id;
  atomic_int refs;
  int fd[2];
  uint32_t reg[2]; /* epoll events registered per fd; 0 = not registered */
  dir_t d[2];
  size_t pipe_cap;
  long pipe_pages; /* pages of enlarged pipes, counted in relay_t.pipe_pages */
  int finished; /* relay thread only */
  const char *reason;
  _Atomic int64_t last_ms;
  struct tunnel *map_next;             /* JS thread: the id map */
  struct tunnel *live_prev, *live_next; /* relay thread: live tunnels */
  struct tunnel *done_next;            /* relay thread: ended in this batch */
} tunnel_t;

typedef struct cmd {
  int op;
  tunnel_t *t;
  struct cmd *next;
} cmd_t;

typedef struct {
  napi_threadsafe_function tsfn;
  int pipe_size;
  int epfd, evfd;
  pthread_t thread;
  int running;
  pthread_mutex_t mu;
  cmd_t *q_head, *q_tail;
  cmd_t stop_cmd;
  /* JS thread */
  tunnel_t *map[MAP_BUCKETS];
  uint32_t next_id;
  uint32_t live;
  double started; /* tunnels taken since relayInit */
  int refd;
  int last_pipe_size;
  /* pages held by enlarged pipes, and how many this process may hold (see open_pipe) */
  _Atomic long pipe_pages;
  long pipe_budget;
  /* relay thread (and the cleanup, after the thread stopped) */
  tunnel_t *live_head;
} relay_t;

static long pipe_budget_pages(void);

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *errno_name(int e) {
  switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNABORTED: return "ECONNABORTED";
    case ENOTCONN: return "ENOTCONN";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ENETDOWN: return "ENETDOWN";
    case EHOSTDOWN: return "EHOSTDOWN";
    case ENETRESET: return "ENETRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOMEM: return "ENOMEM";
    case ENOBUFS: return "ENOBUFS";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EPROTO: return "EPROTO";
    default: return "EUNKNOWN";
  }
}

/* ---- tunnels ---- */

static void tunnel_close_fds(tunnel_t *t, int reset) {
  for (int i = 0; i < 2; i++) {
    if (t->fd[i] < 0) continue;
    if (reset) {
      struct linger l = {1, 0};
      (void)setsockopt(t->fd[i], SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(t->fd[i]);
    t->fd[i] = -1;
  }
  for (int k = 0; k < 2; k++) {
    dir_t *d = &t->d[k];
    if (d->pr >= 0) close(d->pr);
    if (d->pw >= 0) close(d->pw);
    d->pr = d->pw = -1;
    free(d->pend);
    d->pend = NULL;
  }
}

static void tunnel_unref(tunnel_t *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) free(t);
}

static void map_add(relay_t *r, tunnel_t *t) {
  uint32_t b = t->id % MAP_BUCKETS;
  t->map_next = r->map[b];
  r->map[b] = t;
}

static tunnel_t *map_find(relay_t *r, uint32_t id) {
  for (tunnel_t *t = r->map[id % MAP_BUCKETS]; t; t = t->map_next)
    if (t->id == id) return t;
  return NULL;
}

static void map_remove(relay_t *r, tunnel_t *t) {
  tunnel_t **p = &r->map[t->id % MAP_BUCKETS];
  while (*p && *p != t) p = &(*p)->map_next;
  if (*p) *p = t->map_next;
}

/* ---- the relay thread ---- */

static void finish(relay_t *r, tunnel_t *t, const char *reason, int reset, tunnel_t **done) {
  t->finished = 1;
  t->reason = reason;
  for (int i = 0; i < 2; i++) {
    /* explicitly: epoll forgets an fd only when every fd of its file is closed */
    if (t->reg[i]) {
      struct epoll_event ev = {0};
      (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, t->fd[i], &ev);
      t->reg[i] = 0;
    }
  }
  /* under the lock: relayMptcpSubflows reads t->fd on the JS thread */
  pthread_mutex_lock(&r->mu);
  tunnel_close_fds(t, reset);
  pthread_mutex_unlock(&r->mu);
  atomic_fetch_sub(&r->pipe_pages, t->pipe_pages);
  t->pipe_pages = 0;
  if (t->live_prev) t->live_prev->live_next = t->live_next;
  else r->live_head = t->live_next;
  if (t->live_next) t->live_next->live_prev = t->live_prev;
  t->live_prev = t->live_next = NULL;
  t->done_next = *done;
  *done = t;
}

/* Move what can be moved in one direction now. Returns 0 or an errno. */
static int pump_dir(tunnel_t *t, dir_t *d, int *moved) {
  if (d->done) return 0;
  const int src = t->fd[d->src], dst = t->fd[d->dst];
  for (int round = 0; round < PUMP_BUDGET; round++) {
    while (d->pend) {
      ssize_t n = send(dst, d->pend + d->pend_off, d->pend_len - d->pend_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        d->pend_off += (size_t)n;
        atomic_fetch_add_explicit(&d->bytes, (uint64_t)n, memory_order_relaxed);
        *moved = 1;
        if (d->pend_off == d->pend_len) {
          free(d->pend);
          d->pend = NULL;
        }
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0;
      } else {
        return n < 0 ? errno : EIO;
      }
    }
    while (d->in_pipe > 0) {
      ssize_t n = splice(d->pr, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->in_pipe -= (size_t)n;
        atomic_fetch_add_explicit(&d->bytes, (uint64_t)n, memory_order_relaxed);
        *moved = 1;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0;
      } else {
        return n < 0 ? errno : EIO;
      }
    }
    /* the pipe is empty here, so EAGAIN below can only mean the source has nothing */
    if (d->eof) break;
    ssize_t n = splice(src, NULL, d->pw, NULL, t->pipe_cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->in_pipe = (size_t)n;
      *moved = 1;
    } else if (n == 0) {
      d->eof = 1;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return 0;
    } else {
      return errno;
    }
  }
  if (d->eof && d->in_pipe == 0 && !d->pend) {
    /* the source ended and everything reached the destination: pass the FIN on */
    if (shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN) return errno;
    d->done = 1;
  }
  return 0;
}

/* Level-triggered interest, recomputed after each pump: EPOLLIN on a source whose pipe is empty
   and that has not ended; EPOLLOUT on a destination that has bytes waiting. An fd with nothing
   to wait for stays registered one-shot, so an error or hang-up on it is still seen once. */
static int update_interest(relay_t *r, tunnel_t *t) {
  for (int side = 0; side < 2; side++) {
    const dir_t *in = &t->d[side], *out = &t->d[1 - side];
    uint32_t want = 0;
    if (!in->done && !in->eof && in->in_pipe == 0 && !in->pend) want |= EPOLLIN;
    if (!out->done && (out->in_pipe > 0 || out->pend)) want |= EPOLLOUT;
    if (want == 0) {
      /* armed, or fired and disabled: either way leave it until there is something to wait for */
      if (t->reg[side] == EPOLLONESHOT) continue;
      want = EPOLLONESHOT;
    }
    if (want == t->reg[side]) continue;
    struct epoll_event ev = {.events = want, .data.ptr = (void *)((uintptr_t)t | (uintptr_t)side)};
    if (epoll_ctl(r->epfd, t->reg[side] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, t->fd[side], &ev) != 0) return errno;
    t->reg[side] = want;
  }
  return 0;
}

static void pump(relay_t *r, tunnel_t *t, tunnel_t **done) {
  int moved = 0;
  for (int k = 0; k < 2; k++) {
    int e = pump_dir(t, &t->d[k], &moved);
    if (e) {
      finish(r, t, errno_name(e), 1, done);
      return;
    }
  }
  if (moved) atomic_store_explicit(&t->last_ms, now_ms(), memory_order_relaxed);
  if (t->d[0].done && t->d[1].done) {
    finish(r, t, "done", 0, done);
    return;
  }
  int e = update_interest(r, t);
  if (e) finish(r, t, errno_name(e), 1, done);
}

static int run_commands(relay_t *r, tunnel_t **done) {
  pthread_mutex_lock(&r->mu);
  cmd_t *c = r->q_head;
  r->q_head = r->q_tail = NULL;
  pthread_mutex_unlock(&r->mu);
  int stop = 0;
  while (c) {
    cmd_t *next = c->next;
    tunnel_t *t = c->t;
    switch (c->op) {
      case CMD_START:
        t->live_next = r->live_head;
        if (r->live_head) r->live_head->live_prev = t;
        r->live_head = t;
        pump(r, t, done);
        break;
      case CMD_CLOSE:
      case CMD_RESET:
        if (!t->finished) finish(r, t, "closed", c->op == CMD_RESET, done);
        tunnel_unref(t);
        break;
      case CMD_STOP:
        stop = 1;
        break;
    }
    if (c->op != CMD_STOP) free(c);
    c = next;
  }
  return stop;
}

static void *relay_main(void *arg) {
  relay_t *r = arg;
  struct epoll_event ev[MAX_EVENTS];
  int stop = 0;
  while (!stop) {
    int n = epoll_wait(r->epfd, ev, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    tunnel_t *done = NULL;
    for (int i = 0; i < n; i++) {
      if (ev[i].data.ptr == NULL) {
        uint64_t v;
        (void)!read(r->evfd, &v, sizeof v);
        stop |= run_commands(r, &done);
        continue;
      }
      uintptr_t p = (uintptr_t)ev[i].data.ptr;
      tunnel_t *t = (tunnel_t *)(p & ~(uintptr_t)1);
      int side = (int)(p & 1);
      if (t->finished) continue; /* ended earlier in this batch; freed only after the post below */
      if (ev[i].events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(t->fd[side], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
          finish(r, t, errno_name(err), 1, &done);
          continue;
        }
      }
      pump(r, t, &done);
    }
    /* post after the batch: the JS thread may free a posted tunnel at once */
    while (done) {
      tunnel_t *next = done->done_next;
      if (napi_call_threadsafe_function(r->tsfn, done, napi_tsfn_nonblocking) != napi_ok) {
        /* closing (the env is going away): the tunnel stays in the JS map, freed by nobody */
      }
      done = next;
    }
  }
  return NULL;
}

/* ---- JS thread ---- */

static void push_cmd(relay_t *r, cmd_t *c) {
  c->next = NULL;
  pthread_mutex_lock(&r->mu);
  if (r->q_tail) r->q_tail->next = c;
  else r->q_head = c;
  r->q_tail = c;
  pthread_mutex_unlock(&r->mu);
  uint64_t one = 1;
  (void)!write(r->evfd, &one, sizeof one);
}

/* Stop the thread and close what it still relays. Safe to repeat. */
static void relay_stop(relay_t *r) {
  if (r->running) {
    r->stop_cmd.op = CMD_STOP;
    push_cmd(r, &r->stop_cmd);
    pthread_join(r->thread, NULL);
    r->running = 0;
    for (tunnel_t *t = r->live_head; t; t = t->live_next) tunnel_close_fds(t, 0);
    r->live_head = NULL;
  }
  if (r->epfd >= 0) close(r->epfd);
  if (r->evfd >= 0) close(r->evfd);
  r->epfd = r->evfd = -1;
}

static void on_env_cleanup(void *arg) { relay_stop(arg); }

static void on_tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  relay_stop(data);
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  relay_t *r = context;
  tunnel_t *t = data;
  if (env == NULL) return; /* torn down: nothing to report to */
  map_remove(r, t);
  if (r->live > 0 && --r->live == 0 && r->refd) {
    napi_unref_threadsafe_function(env, r->tsfn);
    r->refd = 0;
  }
  napi_value argv[4], undef;
  napi_create_uint32(env, t->id, &argv[0]);
  napi_create_string_utf8(env, t->reason ? t->reason : "EUNKNOWN", NAPI_AUTO_LENGTH, &argv[1]);
  napi_create_double(env, (double)atomic_load(&t->d[0].bytes), &argv[2]);
  napi_create_double(env, (double)atomic_load(&t->d[1].bytes), &argv[3]);
  napi_get_undefined(env, &undef);
  tunnel_unref(t);
  napi_call_function(env, undef, cb, 4, argv, NULL);
}

static napi_value throw_code(napi_env env, int e, const char *what) {
  napi_value msg, code, err;
  char text[160];
  snprintf(text, sizeof text, "%s: %s", what, strerror(e));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  napi_throw(env, err);
  return NULL;
}

static relay_t *relay_of(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data = NULL;
  napi_get_cb_info(env, info, argc, argv, NULL, &data);
  return data;
}

/* relayInit(onDone, pipeSize) */
static napi_value relay_init(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  relay_t *r = relay_of(env, info, &argc, argv);
  napi_valuetype vt;
  if (argc < 1 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayInit(onDone, pipeSize)");
    return NULL;
  }
  if (r->tsfn) {
    napi_throw_error(env, "ERR_INVALID_STATE", "relayInit: already initialised");
    return NULL;
  }
  int32_t ps = 0;
  if (argc >= 2) napi_get_value_int32(env, argv[1], &ps);
  r->pipe_size = ps > 0 ? ps : 0;
  r->pipe_budget = pipe_budget_pages();
  napi_value name;
  napi_create_string_utf8(env, "holdfast relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, r, on_tsfn_finalize, r, call_js, &r->tsfn) !=
      napi_ok) {
    r->tsfn = NULL;
    napi_throw_error(env, "ERR_RELAY", "relayInit: cannot create the thread-safe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, r->tsfn);
  /* after the tsfn's own: cleanup hooks run last-in first-out, so the thread stops first */
  napi_add_env_cleanup_hook(env, on_env_cleanup, r);
  return NULL;
}

static int ensure_thread(relay_t *r) {
  if (r->running) return 0;
  if (r->epfd < 0) {
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) return errno;
  }
  if (r->evfd < 0) {
    r->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->evfd < 0) return errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) != 0) {
      int e = errno;
      close(r->evfd);
      r->evfd = -1;
      return e;
    }
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  int e = pthread_create(&r->thread, &attr, relay_main, r);
  pthread_attr_destroy(&attr);
  if (e) return e;
  r->running = 1;
  return 0;
}

static int copy_pending(napi_env env, napi_value v, dir_t *d) {
  napi_valuetype vt;
  if (napi_typeof(env, v, &vt) != napi_ok || vt == napi_null || vt == napi_undefined) return 0;
  bool isbuf = false;
  if (napi_is_buffer(env, v, &isbuf) != napi_ok || !isbuf) return EINVAL;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return EINVAL;
  if (len == 0) return 0;
  d->pend = malloc(len);
  if (!d->pend) return ENOMEM;
  memcpy(d->pend, data, len);
  d->pend_len = len;
  return 0;
}

/*
 * Every pipe of an unprivileged user counts against fs.pipe-user-pages-soft (16384 pages by
 * default); past it, the kernel refuses F_SETPIPE_SZ and makes every new pipe of that user, in
 * any process, 2 pages. So an unprivileged holdfast enlarges pipes only within a quarter of that
 * limit (beyond, the default 16 pages), and takes no tunnel at all once the kernel hands it a
 * shrunken pipe (the limit is reached): such a tunnel stays on the JS relay.
 */
static long pipe_budget_pages(void) {
  if (geteuid() == 0) return -1; /* root: CAP_SYS_RESOURCE, no soft limit */
  long soft = 16384;
  FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "r");
  if (f) {
    if (fscanf(f, "%ld", &soft) != 1) soft = 16384;
    fclose(f);
  }
  return soft <= 0 ? -1 : soft / 4;
}

static int open_pipe(relay_t *r, tunnel_t *t, dir_t *d) {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return errno;
  d->pr = p[0];
  d->pw = p[1];
  const long page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
  int sz = fcntl(d->pw, F_GETPIPE_SZ);
  if (sz > 0 && sz < 16 * page) return ENOBUFS; /* the user is past pipe-user-pages-soft */
  if (r->pipe_size > sz) {
    long extra = (r->pipe_size - (sz > 0 ? sz : 0)) / page;
    if (r->pipe_budget < 0 || atomic_load(&r->pipe_pages) + extra <= r->pipe_budget) {
      if (fcntl(d->pw, F_SETPIPE_SZ, r->pipe_size) >= 0) { /* fine if refused */
        atomic_fetch_add(&r->pipe_pages, extra);
        t->pipe_pages += extra;
      }
    }
  }
  sz = fcntl(d->pw, F_GETPIPE_SZ);
  if (sz > 0) {
    if (t->pipe_cap == 0 || (size_t)sz < t->pipe_cap) t->pipe_cap = (size_t)sz;
    r->last_pipe_size = sz;
  }
  return 0;
}

static int is_stream_socket(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

/* relayStart(fdA, fdB, pendAB, pendBA, flags) -> id */
static napi_value relay_start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  relay_t *r = relay_of(env, info, &argc, argv);
  int32_t fa = -1, fb = -1, flags = 0;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fa) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fb) != napi_ok || napi_get_value_int32(env, argv[4], &flags) != napi_ok ||
      fa < 0 || fb < 0 || fa == fb) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayStart(fdA, fdB, pendAB, pendBA, flags)");
    return NULL;
  }
  if (!r->tsfn) {
    napi_throw_error(env, "ERR_INVALID_STATE", "relayStart: call relayInit first");
    return NULL;
  }
  if (!is_stream_socket(fa) || !is_stream_socket(fb)) return throw_code(env, EINVAL, "relayStart: not a TCP socket");
  int e = ensure_thread(r);
  if (e) return throw_code(env, e, "relayStart: relay thread");

  tunnel_t *t = calloc(1, sizeof *t);
  cmd_t *c = calloc(1, sizeof *c);
  if (!t || !c) {
    free(t);
    free(c);
    return throw_code(env, ENOMEM, "relayStart");
  }
  t->fd[0] = t->fd[1] = -1;
  for (int k = 0; k < 2; k++) {
    t->d[k].src = k;
    t->d[k].dst = 1 - k;
    t->d[k].pr = t->d[k].pw = -1;
  }
  const char *what = "dup";
  if ((t->fd[0] = fcntl(fa, F_DUPFD_CLOEXEC, 3)) < 0 || (t->fd[1] = fcntl(fb, F_DUPFD_CLOEXEC, 3)) < 0) {
    e = errno;
  } else {
    what = "pipe";
    e = open_pipe(r, t, &t->d[0]);
    if (!e) e = open_pipe(r, t, &t->d[1]);
    if (!e && t->pipe_cap == 0) t->pipe_cap = 65536;
    if (!e) {
      what = "pending bytes";
      e = copy_pending(env, argv[2], &t->d[0]);
      if (!e) e = copy_pending(env, argv[3], &t->d[1]);
    }
  }
  if (e) {
    tunnel_close_fds(t, 0);
    atomic_fetch_sub(&r->pipe_pages, t->pipe_pages);
    free(t);
    free(c);
    return throw_code(env, e, what);
  }
  for (int i = 0; i < 2; i++) {
    int fl = fcntl(t->fd[i], F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) (void)fcntl(t->fd[i], F_SETFL, fl | O_NONBLOCK);
  }
  if (flags & 1) t->d[0].eof = t->d[0].done = 1;
  if (flags & 2) t->d[1].eof = t->d[1].done = 1;
  if (++r->next_id == 0) r->next_id = 1;
  while (map_find(r, r->next_id)) ++r->next_id;
  t->id = r->next_id;
  atomic_init(&t->refs, 1); /* the map's; dropped when the end is reported */
  atomic_init(&t->last_ms, now_ms());
  map_add(r, t);
  r->started++;
  if (r->live++ == 0 && !r->refd) {
    napi_ref_threadsafe_function(env, r->tsfn);
    r->refd = 1;
  }
  c->op = CMD_START;
  c->t = t;
  push_cmd(r, c);
  napi_value out;
  napi_create_uint32(env, t->id, &out);
  return out;
}

static int get_id(napi_env env, napi_value v, uint32_t *id) {
  return napi_get_value_uint32(env, v, id) == napi_ok ? 0 : -1;
}

/* relayClose(id, reset) -> bool */
static napi_value relay_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  relay_t *r = relay_of(env, info, &argc, argv);
  uint32_t id;
  bool reset = false;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayClose(id, reset)");
    return NULL;
  }
  if (argc >= 2) napi_get_value_bool(env, argv[1], &reset);
  tunnel_t *t = map_find(r, id);
  cmd_t *c = t ? calloc(1, sizeof *c) : NULL;
  if (c) {
    atomic_fetch_add(&t->refs, 1);
    c->op = reset ? CMD_RESET : CMD_CLOSE;
    c->t = t;
    push_cmd(r, c);
  }
  napi_value out;
  napi_get_boolean(env, c != NULL, &out);
  return out;
}

/* relayBytes(id, dir) -> number */
static napi_value relay_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  relay_t *r = relay_of(env, info, &argc, argv);
  uint32_t id = 0, dir = 0;
  if (argc < 2 || get_id(env, argv[0], &id) != 0 || napi_get_value_uint32(env, argv[1], &dir) != napi_ok || dir > 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayBytes(id, dir)");
    return NULL;
  }
  tunnel_t *t = map_find(r, id);
  napi_value out;
  napi_create_double(env, t ? (double)atomic_load_explicit(&t->d[dir].bytes, memory_order_relaxed) : -1, &out);
  return out;
}

/* relayIdleMs(id) -> number */
static napi_value relay_idle_ms(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  relay_t *r = relay_of(env, info, &argc, argv);
  uint32_t id = 0;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayIdleMs(id)");
    return NULL;
  }
  tunnel_t *t = map_find(r, id);
  napi_value out;
  napi_create_double(env, t ? (double)(now_ms() - atomic_load_explicit(&t->last_ms, memory_order_relaxed)) : -1, &out);
  return out;
}

napi_value hf_mptcp_subflows_of(napi_env env, int fd); /* holdfast_native.c */

/* relayMptcpSubflows(id) -> [{ local, remote }] | null: the upstream (fd B) of a live tunnel */
static napi_value relay_mptcp_subflows(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  relay_t *r = relay_of(env, info, &argc, argv);
  uint32_t id = 0;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "relayMptcpSubflows(id)");
    return NULL;
  }
  napi_value out;
  /* the relay thread closes a finished tunnel's fds under r->mu, so fd[1] is this tunnel's */
  pthread_mutex_lock(&r->mu);
  tunnel_t *t = map_find(r, id);
  int fd = t ? t->fd[1] : -1;
  if (fd >= 0) out = hf_mptcp_subflows_of(env, fd);
  else napi_get_null(env, &out);
  pthread_mutex_unlock(&r->mu);
  return out;
}

/* relayInfo() -> { tunnels, started, pipeSize, pipePages } */
static napi_value relay_info(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value none[1];
  relay_t *r = relay_of(env, info, &argc, none);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_uint32(env, r->live, &v);
  napi_set_named_property(env, out, "tunnels", v);
  napi_create_int32(env, r->last_pipe_size, &v);
  napi_set_named_property(env, out, "pipeSize", v);
  napi_create_int64(env, atomic_load(&r->pipe_pages), &v);
  napi_set_named_property(env, out, "pipePages", v);
  napi_create_double(env, r->started, &v);
  napi_set_named_property(env, out, "started", v);
  return out;
}

void relay_register(napi_env env, napi_value exports) {
  relay_t *r = calloc(1, sizeof *r);
  if (!r) return; /* no offload: the JS relay does everything */
  r->epfd = r->evfd = -1;
  pthread_mutex_init(&r->mu, NULL);
  /* one relay per env, freed never: it lives as long as the env (a few hundred bytes) */
  napi_property_descriptor props[] = {
      {"relayInit", NULL, relay_init, NULL, NULL, NULL, napi_default, r},
      {"relayStart", NULL, relay_start, NULL, NULL, NULL, napi_default, r},
      {"relayClose", NULL, relay_close, NULL, NULL, NULL, napi_default, r},
      {"relayBytes", NULL, relay_bytes, NULL, NULL, NULL, napi_default, r},
      {"relayIdleMs", NULL, relay_idle_ms, NULL, NULL, NULL, napi_default, r},
      {"relayInfo", NULL, relay_info, NULL, NULL, NULL, napi_default, r},
      {"relayMptcpSubflows", NULL, relay_mptcp_subflows, NULL, NULL, NULL, napi_default, r},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

#endif

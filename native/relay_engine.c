/* relay_engine.c: the offloaded relay's engine (Linux); see relay_engine.h. */
#define _GNU_SOURCE
#ifdef __linux__
#include "relay_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "errno_name.h"

static int open_pipe(relay_t *r, tunnel_t *t, dir_t *d);
static void push_cmd(relay_t *r, cmd_t *c);

/* ---- tunnels ---- */

static void tunnel_close_fds(tunnel_t *t, int reset) {
  for (int i = 0; i < 2; i++) {
    if (t->fd[i] < 0) continue;
    /* a bounded tunnel's A is its owner's, and its B is only closed, as JS would have */
    if (reset && !t->keep_a) {
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

void relay_tunnel_unref(tunnel_t *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) free(t);
}

static void map_add(relay_t *r, tunnel_t *t) {
  uint32_t b = t->id % MAP_BUCKETS;
  t->map_next = r->map[b];
  r->map[b] = t;
}

tunnel_t *relay_map_find(relay_t *r, uint32_t id) {
  for (tunnel_t *t = r->map[id % MAP_BUCKETS]; t; t = t->map_next)
    if (t->id == id) return t;
  return NULL;
}

void relay_map_remove(relay_t *r, tunnel_t *t) {
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
  /* under the lock: relayMptcpSubflows (relay.c) reads t->fd on the JS thread */
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

/* A bounded direction's source ended before its limit (an errno no socket call returns here). */
#define SHORT_BODY ENODATA

/* Move what can be moved in one direction now. Returns 0 or an errno, and in *side the socket
   that failed (its index in t->fd). */
static int pump_dir(tunnel_t *t, dir_t *d, int *moved, int *side) {
  if (d->done) return 0;
  const int src = t->fd[d->src], dst = t->fd[d->dst];
  *side = d->dst; /* the writes below fail on the destination */
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
      /* may raise SIGPIPE (no MSG_NOSIGNAL for splice): Node ignores it, see relay_engine.h */
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
    size_t want = t->pipe_cap;
    if (d->limit) {
      /* never read past the body: what follows on the connection is not this direction's */
      uint64_t sent = atomic_load_explicit(&d->bytes, memory_order_relaxed);
      if (sent >= d->limit) {
        d->done = 1;
        return 0;
      }
      if (d->limit - sent < want) want = (size_t)(d->limit - sent);
    }
    ssize_t n = splice(src, NULL, d->pw, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->in_pipe = (size_t)n;
      *moved = 1;
    } else if (n == 0) {
      *side = d->src;
      if (d->limit) return SHORT_BODY;
      d->eof = 1;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return 0;
    } else {
      *side = d->src;
      return errno;
    }
  }
  if (d->limit) {
    if (d->in_pipe == 0 && !d->pend && atomic_load_explicit(&d->bytes, memory_order_relaxed) >= d->limit) d->done = 1;
    return 0;
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
    int side = -1;
    int e = pump_dir(t, &t->d[k], &moved, &side);
    if (e) {
      t->err_side = side;
      finish(r, t, hf_errno_name(e), 1, done);
      return;
    }
  }
  if (moved) atomic_store_explicit(&t->last_ms, relay_now_ms(), memory_order_relaxed);
  if (t->d[0].done && t->d[1].done) {
    finish(r, t, "done", 0, done);
    return;
  }
  int e = update_interest(r, t);
  if (e) finish(r, t, hf_errno_name(e), 1, done);
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
        relay_tunnel_unref(t);
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
          t->err_side = side;
          finish(r, t, hf_errno_name(err), 1, &done);
          continue;
        }
      }
      pump(r, t, &done);
    }
    /* post after the batch: the JS thread may free a posted tunnel at once */
    while (done) {
      tunnel_t *next = done->done_next;
      if (r->post(r, done) != 0) {
        /* closing (the env is going away): the tunnel stays in the id map, freed by nobody */
      }
      done = next;
    }
  }
  return NULL;
}

/* ---- the JS thread ---- */

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
void relay_engine_stop(relay_t *r) {
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

int relay_engine_ensure_thread(relay_t *r) {
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


/*
 * Every pipe of an unprivileged user counts against fs.pipe-user-pages-soft (16384 pages by
 * default); past it, the kernel refuses F_SETPIPE_SZ and makes every new pipe of that user, in
 * any process, 2 pages. So an unprivileged holdfast enlarges pipes only within a quarter of that
 * limit (beyond, the default 16 pages), and takes no tunnel at all once the kernel hands it a
 * shrunken pipe (the limit is reached): such a tunnel stays on the JS relay.
 */
long relay_pipe_budget_pages(void) {
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

int relay_is_stream_socket(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

int64_t relay_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void relay_engine_init(relay_t *r) {
  r->epfd = r->evfd = -1;
  pthread_mutex_init(&r->mu, NULL);
}

int relay_tunnel_open(relay_t *r, int fa, int fb, tunnel_t **out, const char **what) {
  *what = "relayStart";
  tunnel_t *t = calloc(1, sizeof *t);
  if (!t) return ENOMEM;
  t->fd[0] = t->fd[1] = -1;
  t->err_side = -1;
  for (int k = 0; k < 2; k++) {
    t->d[k].src = k;
    t->d[k].dst = 1 - k;
    t->d[k].pr = t->d[k].pw = -1;
  }
  int e;
  *what = "dup";
  if ((t->fd[0] = fcntl(fa, F_DUPFD_CLOEXEC, 3)) < 0 || (t->fd[1] = fcntl(fb, F_DUPFD_CLOEXEC, 3)) < 0) {
    e = errno;
  } else {
    *what = "pipe";
    e = open_pipe(r, t, &t->d[0]);
    if (!e) e = open_pipe(r, t, &t->d[1]);
    if (!e && t->pipe_cap == 0) t->pipe_cap = 65536;
  }
  if (e) {
    relay_tunnel_discard(r, t);
    return e;
  }
  *out = t;
  return 0;
}

void relay_tunnel_discard(relay_t *r, tunnel_t *t) {
  tunnel_close_fds(t, 0);
  atomic_fetch_sub(&r->pipe_pages, t->pipe_pages);
  free(t);
}

uint32_t relay_tunnel_start(relay_t *r, tunnel_t *t, cmd_t *c, int flags, uint64_t limit) {
  for (int i = 0; i < 2; i++) {
    int fl = fcntl(t->fd[i], F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) (void)fcntl(t->fd[i], F_SETFL, fl | O_NONBLOCK);
  }
  if (flags & 1) t->d[0].eof = t->d[0].done = 1;
  if (flags & 2) t->d[1].eof = t->d[1].done = 1;
  if (flags & 4) {
    t->keep_a = 1;
    t->d[1].limit = limit;
  }
  if (++r->next_id == 0) r->next_id = 1;
  while (relay_map_find(r, r->next_id)) ++r->next_id;
  t->id = r->next_id;
  atomic_init(&t->refs, 1); /* the map's; dropped when the end is reported */
  atomic_init(&t->last_ms, relay_now_ms());
  map_add(r, t);
  c->op = CMD_START;
  c->t = t;
  push_cmd(r, c);
  return t->id;
}

int relay_tunnel_close(relay_t *r, uint32_t id, int reset) {
  tunnel_t *t = relay_map_find(r, id);
  cmd_t *c = t ? calloc(1, sizeof *c) : NULL;
  if (!c) return 0;
  atomic_fetch_add(&t->refs, 1);
  c->op = reset ? CMD_RESET : CMD_CLOSE;
  c->t = t;
  push_cmd(r, c);
  return 1;
}

#endif

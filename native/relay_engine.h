/*
 * relay_engine: the offloaded relay's engine (Linux), without N-API. A tunnel that has moved bulk
 * bytes leaves the JS relay (src/relay.ts) and is relayed here, zero-copy: splice(2) from one
 * socket into a pipe and from the pipe into the other socket, one pipe per direction, on one
 * thread with its own epoll. relay.c is its N-API binding (the JS API is described there).
 *
 * Threads: the JS thread creates a tunnel (dup, pipes: relay_tunnel_open) and queues a command
 * (eventfd); the relay thread owns the tunnel's relay state until it ends, then hands it to
 * relay_t.post; the JS thread reports it and frees it. Counters and last activity are atomics, so
 * the JS thread may read them at any time. A tunnel is freed when the id map and every queued
 * command have dropped it (refs).
 *
 * SIGPIPE: writes to a socket go through send(MSG_NOSIGNAL), but splice(2) into a socket whose
 * peer has gone raises SIGPIPE as well as returning EPIPE. Node ignores SIGPIPE for the whole
 * process (it sets SIG_IGN at startup), and the engine relies on that: the signal is discarded and
 * EPIPE ends the tunnel as an ordinary reason.
 */
#ifndef HOLDFAST_RELAY_ENGINE_H
#define HOLDFAST_RELAY_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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
  /* bounded (forwarded body): end the direction after this many bytes, without a FIN; 0 = none */
  uint64_t limit;
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
  /* a bounded tunnel: fd A stays its owner's (no shutdown); no SO_LINGER on either side */
  int keep_a;
  /* the side whose socket failed (0 = A, 1 = B), -1 if none or unknown */
  int err_side;
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

typedef struct relay relay_t;

struct relay {
  /* hands a tunnel that ended to the JS thread (the binding's thread-safe function); called on
     the relay thread after each batch; returns 0, or -1 if it could not (the env is going away) */
  int (*post)(relay_t *r, tunnel_t *t);
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
};

/* A relay with no thread yet (epoll and eventfd are made with the first tunnel). */
void relay_engine_init(relay_t *r);
/* Stop the thread and close what it still relays. Safe to repeat. */
void relay_engine_stop(relay_t *r);
/* Start the relay thread if it is not running. Returns 0 or an errno. */
int relay_engine_ensure_thread(relay_t *r);
/* How many pages of enlarged pipes this process may hold (-1: no limit). */
long relay_pipe_budget_pages(void);
/* Is fd a stream socket? */
int relay_is_stream_socket(int fd);
int64_t relay_now_ms(void);

/* A tunnel over dups of fa and fb with its two pipes, not yet relayed. Returns 0 or an errno,
   and in *what the step that failed ("dup", "pipe"). */
int relay_tunnel_open(relay_t *r, int fa, int fb, tunnel_t **out, const char **what);
/* Give back a tunnel that relay_tunnel_open made but that is not started. */
void relay_tunnel_discard(relay_t *r, tunnel_t *t);
/* Relay it: an id, the id map, and CMD_START through `c` (the caller allocated it). flags: 1 =
   A->B already ended, 2 = B->A too, 4 = bounded: B->A ends after `limit` bytes (pending ones
   included) with no FIN, and A is never shut down nor reset (its owner goes on using it; A->B
   must be ended). Returns the id. */
uint32_t relay_tunnel_start(relay_t *r, tunnel_t *t, cmd_t *c, int flags, uint64_t limit);
/* Queue an end for tunnel `id` (reset: SO_LINGER 0). Returns 1 if queued, 0 if the id is unknown
   (its end was reported already) or there is no memory for the command. */
int relay_tunnel_close(relay_t *r, uint32_t id, int reset);
tunnel_t *relay_map_find(relay_t *r, uint32_t id);
void relay_map_remove(relay_t *r, tunnel_t *t);
void relay_tunnel_unref(tunnel_t *t);

#endif

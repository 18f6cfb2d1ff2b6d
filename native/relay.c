/*
 * relay.c: the N-API binding of the offloaded relay (Linux). The engine (the relay thread,
 * splice(2), the tunnels) is relay_engine.c; this file is the JS API over it, and the thread-safe
 * function that reports a tunnel's end on the JS thread.
 *
 * JS API (registered by relay_register, called from the addon's init):
 *   relayInit(onDone, pipeSize)     once per env; onDone(id, reason, bytesUp, bytesDown, side) is
 *                                   called on the JS thread when a tunnel ends; reason is "done"
 *                                   (both directions ended cleanly), "closed" (relayClose) or the
 *                                   errno name of the first error ("ECONNRESET", "EPIPE", ...;
 *                                   "ENODATA": a bounded direction's source ended short); side is
 *                                   the socket that failed (0 = A, 1 = B) or -1
 *   relayStart(fdA, fdB, pendAB, pendBA, flags[, limit]) -> id
 *                                   dup()s both connected sockets (the caller keeps and closes its
 *                                   own fds), writes pendAB to B and pendBA to A first (Buffers or
 *                                   null: bytes JS had read but not forwarded), then relays.
 *                                   flags: 1 = A->B already ended (FIN passed on), 2 = B->A too,
 *                                   4 = bounded (with flag 1): B->A ends after `limit` bytes
 *                                   (pendBA included) with no FIN, and A is left as it was (a
 *                                   forwarded response body: the client's connection goes on).
 *                                   Direction A->B is "up" (A is the client), B->A is "down".
 *   relayClose(id, reset) -> bool   end now: reset (SO_LINGER 0) or close; false if unknown
 *   relayBytes(id, dir) -> number   bytes written to the far side so far (dir 0 up, 1 down); -1 if unknown
 *   relayIdleMs(id) -> number       ms since a byte last moved either way; -1 if unknown
 *   relayInfo() -> { tunnels, started, pipeSize, pipePages }
 *                                   live tunnels, tunnels taken so far, the pipe size last
 *                                   granted, pages of enlarged pipes held
 *   relayMptcpSubflows(id) -> [{local, remote}] | null
 *                                   the subflows of a live tunnel's upstream (fd B) if it
 *                                   is MPTCP; null for TCP or an unknown id
 *
 * Every napi_* status is checked: a call that fails throws (or, where a JS exception is already
 * pending, returns) instead of going on with an unset value. The thread-safe function is
 * referenced only while tunnels live, so the relay never keeps the process alive by itself.
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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errno_name.h"
#include "relay_engine.h"

/* The engine and what only the binding knows of. `engine` first: a relay_t * is a binding_t *. */
typedef struct {
  relay_t engine;
  napi_threadsafe_function tsfn;
} binding_t;

/* Throw for a failed napi call unless an exception is pending already; returns NULL. */
static napi_value napi_failed(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
  napi_throw_error(env, "ERR_RELAY", what);
  return NULL;
}

#define NAPI_OK(env, call, what) \
  do { \
    if ((call) != napi_ok) return napi_failed((env), (what)); \
  } while (0)

static napi_value throw_code(napi_env env, int e, const char *what) {
  napi_value msg, code, err;
  char text[160];
  snprintf(text, sizeof text, "%s: %s", what, strerror(e));
  NAPI_OK(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg), what);
  NAPI_OK(env, napi_create_string_utf8(env, hf_errno_name(e), NAPI_AUTO_LENGTH, &code), what);
  NAPI_OK(env, napi_create_error(env, code, msg, &err), what);
  napi_throw(env, err);
  return NULL;
}

static napi_value throw_args(napi_env env, const char *usage) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
  return NULL;
}

static void on_env_cleanup(void *arg) { relay_engine_stop(arg); }

static void on_tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  relay_engine_stop(data);
}

/* The relay thread hands an ended tunnel over (after each batch). */
static int post(relay_t *r, tunnel_t *t) {
  return napi_call_threadsafe_function(((binding_t *)r)->tsfn, t, napi_tsfn_nonblocking) == napi_ok ? 0 : -1;
}

/* On the JS thread: onDone(id, reason, bytesUp, bytesDown), then the tunnel is freed. */
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  binding_t *b = context;
  relay_t *r = &b->engine;
  tunnel_t *t = data;
  if (env == NULL) return; /* torn down: nothing to report to */
  relay_map_remove(r, t);
  if (r->live > 0 && --r->live == 0 && r->refd) {
    (void)napi_unref_threadsafe_function(env, b->tsfn);
    r->refd = 0;
  }
  napi_value argv[5], undef;
  bool ok = napi_create_uint32(env, t->id, &argv[0]) == napi_ok &&
            napi_create_string_utf8(env, t->reason ? t->reason : "EUNKNOWN", NAPI_AUTO_LENGTH, &argv[1]) == napi_ok &&
            napi_create_double(env, (double)atomic_load(&t->d[0].bytes), &argv[2]) == napi_ok &&
            napi_create_double(env, (double)atomic_load(&t->d[1].bytes), &argv[3]) == napi_ok &&
            napi_create_int32(env, t->err_side, &argv[4]) == napi_ok &&
            napi_get_undefined(env, &undef) == napi_ok;
  relay_tunnel_unref(t);
  /* an exception thrown by onDone is left to Node (uncaught, like any callback's) */
  if (ok) (void)napi_call_function(env, undef, cb, 5, argv, NULL);
}

/* The binding of a call, and its arguments; NULL (with an exception) if napi failed. */
static binding_t *binding_of(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, NULL, &data) != napi_ok || data == NULL) {
    napi_failed(env, "napi_get_cb_info");
    return NULL;
  }
  return data;
}

/* relayInit(onDone, pipeSize) */
static napi_value relay_init(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  relay_t *r = &b->engine;
  napi_valuetype vt;
  if (argc < 1 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_function) return throw_args(env, "relayInit(onDone, pipeSize)");
  if (b->tsfn) {
    napi_throw_error(env, "ERR_INVALID_STATE", "relayInit: already initialised");
    return NULL;
  }
  int32_t ps = 0;
  if (argc >= 2 && napi_get_value_int32(env, argv[1], &ps) != napi_ok) return throw_args(env, "relayInit(onDone, pipeSize): pipeSize is a number");
  r->pipe_size = ps > 0 ? ps : 0;
  r->pipe_budget = relay_pipe_budget_pages();
  napi_value name;
  NAPI_OK(env, napi_create_string_utf8(env, "holdfast relay", NAPI_AUTO_LENGTH, &name), "relayInit");
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, r, on_tsfn_finalize, b, call_js, &b->tsfn) != napi_ok) {
    b->tsfn = NULL;
    napi_throw_error(env, "ERR_RELAY", "relayInit: cannot create the thread-safe function");
    return NULL;
  }
  NAPI_OK(env, napi_unref_threadsafe_function(env, b->tsfn), "relayInit: unref");
  /* after the tsfn's own: cleanup hooks run last-in first-out, so the thread stops first */
  NAPI_OK(env, napi_add_env_cleanup_hook(env, on_env_cleanup, r), "relayInit: cleanup hook");
  return NULL;
}

static int copy_pending(napi_env env, napi_value v, dir_t *d) {
  napi_valuetype vt;
  if (napi_typeof(env, v, &vt) != napi_ok) return EINVAL;
  if (vt == napi_null || vt == napi_undefined) return 0;
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

/* relayStart(fdA, fdB, pendAB, pendBA, flags[, limit]) -> id */
static napi_value relay_start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  relay_t *r = &b->engine;
  int32_t fa = -1, fb = -1, flags = 0;
  double limit = 0;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fa) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fb) != napi_ok || napi_get_value_int32(env, argv[4], &flags) != napi_ok ||
      fa < 0 || fb < 0 || fa == fb) {
    return throw_args(env, "relayStart(fdA, fdB, pendAB, pendBA, flags[, limit])");
  }
  if (flags & 4) {
    /* a bounded tunnel relays one way only, and at least a byte */
    if (argc < 6 || napi_get_value_double(env, argv[5], &limit) != napi_ok || !(limit >= 1) || limit > 9007199254740991.0 ||
        !(flags & 1) || (flags & 2)) {
      return throw_args(env, "relayStart(fdA, fdB, null, pendBA, 1 | 4, limit): limit is a positive integer");
    }
  }
  if (!b->tsfn) {
    napi_throw_error(env, "ERR_INVALID_STATE", "relayStart: call relayInit first");
    return NULL;
  }
  if (!relay_is_stream_socket(fa) || !relay_is_stream_socket(fb)) return throw_code(env, EINVAL, "relayStart: not a TCP socket");
  int e = relay_engine_ensure_thread(r);
  if (e) return throw_code(env, e, "relayStart: relay thread");
  cmd_t *c = calloc(1, sizeof *c);
  if (!c) return throw_code(env, ENOMEM, "relayStart");
  tunnel_t *t = NULL;
  const char *what = "relayStart";
  e = relay_tunnel_open(r, fa, fb, &t, &what);
  if (!e) {
    what = "pending bytes";
    e = copy_pending(env, argv[2], &t->d[0]);
    if (!e) e = copy_pending(env, argv[3], &t->d[1]);
    if (e) relay_tunnel_discard(r, t);
  }
  if (e) {
    free(c);
    return throw_code(env, e, what);
  }
  napi_value out;
  /* made before the start, so a failure here leaves nothing running */
  if (napi_create_uint32(env, 0, &out) != napi_ok) {
    relay_tunnel_discard(r, t);
    free(c);
    return napi_failed(env, "relayStart");
  }
  if (r->live == 0 && !r->refd) {
    if (napi_ref_threadsafe_function(env, b->tsfn) != napi_ok) {
      relay_tunnel_discard(r, t);
      free(c);
      return napi_failed(env, "relayStart: ref");
    }
    r->refd = 1;
  }
  r->live++;
  r->started++;
  uint32_t id = relay_tunnel_start(r, t, c, flags, (uint64_t)limit);
  NAPI_OK(env, napi_create_uint32(env, id, &out), "relayStart");
  return out;
}

static int get_id(napi_env env, napi_value v, uint32_t *id) {
  return napi_get_value_uint32(env, v, id) == napi_ok ? 0 : -1;
}

/* relayClose(id, reset) -> bool */
static napi_value relay_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  uint32_t id;
  bool reset = false;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) return throw_args(env, "relayClose(id, reset)");
  if (argc >= 2 && napi_get_value_bool(env, argv[1], &reset) != napi_ok) return throw_args(env, "relayClose(id, reset): reset is a boolean");
  napi_value out;
  NAPI_OK(env, napi_get_boolean(env, relay_tunnel_close(&b->engine, id, reset) != 0, &out), "relayClose");
  return out;
}

/* relayBytes(id, dir) -> number */
static napi_value relay_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  uint32_t id = 0, dir = 0;
  if (argc < 2 || get_id(env, argv[0], &id) != 0 || napi_get_value_uint32(env, argv[1], &dir) != napi_ok || dir > 1) {
    return throw_args(env, "relayBytes(id, dir)");
  }
  tunnel_t *t = relay_map_find(&b->engine, id);
  napi_value out;
  NAPI_OK(env, napi_create_double(env, t ? (double)atomic_load_explicit(&t->d[dir].bytes, memory_order_relaxed) : -1, &out), "relayBytes");
  return out;
}

/* relayIdleMs(id) -> number */
static napi_value relay_idle_ms(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  uint32_t id = 0;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) return throw_args(env, "relayIdleMs(id)");
  tunnel_t *t = relay_map_find(&b->engine, id);
  napi_value out;
  double idle = t ? (double)(relay_now_ms() - atomic_load_explicit(&t->last_ms, memory_order_relaxed)) : -1;
  NAPI_OK(env, napi_create_double(env, idle, &out), "relayIdleMs");
  return out;
}

napi_value hf_mptcp_subflows_of(napi_env env, int fd); /* holdfast_native.c */

/* relayMptcpSubflows(id) -> [{ local, remote }] | null: the upstream (fd B) of a live tunnel */
static napi_value relay_mptcp_subflows(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  binding_t *b = binding_of(env, info, &argc, argv);
  if (!b) return NULL;
  uint32_t id = 0;
  if (argc < 1 || get_id(env, argv[0], &id) != 0) return throw_args(env, "relayMptcpSubflows(id)");
  relay_t *r = &b->engine;
  napi_value out;
  /* the relay thread closes a finished tunnel's fds under r->mu, so fd[1] is still this tunnel's */
  pthread_mutex_lock(&r->mu);
  tunnel_t *t = relay_map_find(r, id);
  int fd = t ? t->fd[1] : -1;
  if (fd >= 0) out = hf_mptcp_subflows_of(env, fd);
  else if (napi_get_null(env, &out) != napi_ok) out = NULL;
  pthread_mutex_unlock(&r->mu);
  return out;
}

/* relayInfo() -> { tunnels, started, pipeSize, pipePages } */
static napi_value relay_info(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value none[1];
  binding_t *b = binding_of(env, info, &argc, none);
  if (!b) return NULL;
  relay_t *r = &b->engine;
  napi_value out, v;
  NAPI_OK(env, napi_create_object(env, &out), "relayInfo");
  NAPI_OK(env, napi_create_uint32(env, r->live, &v), "relayInfo");
  NAPI_OK(env, napi_set_named_property(env, out, "tunnels", v), "relayInfo");
  NAPI_OK(env, napi_create_int32(env, r->last_pipe_size, &v), "relayInfo");
  NAPI_OK(env, napi_set_named_property(env, out, "pipeSize", v), "relayInfo");
  NAPI_OK(env, napi_create_int64(env, atomic_load(&r->pipe_pages), &v), "relayInfo");
  NAPI_OK(env, napi_set_named_property(env, out, "pipePages", v), "relayInfo");
  NAPI_OK(env, napi_create_double(env, r->started, &v), "relayInfo");
  NAPI_OK(env, napi_set_named_property(env, out, "started", v), "relayInfo");
  return out;
}

void relay_register(napi_env env, napi_value exports) {
  binding_t *b = calloc(1, sizeof *b);
  if (!b) return; /* no offload: the JS relay does everything */
  relay_engine_init(&b->engine);
  b->engine.post = post;
  /* one relay per env, freed never: it lives as long as the env (a few hundred bytes) */
  napi_property_descriptor props[] = {
      {"relayInit", NULL, relay_init, NULL, NULL, NULL, napi_default, b},
      {"relayStart", NULL, relay_start, NULL, NULL, NULL, napi_default, b},
      {"relayClose", NULL, relay_close, NULL, NULL, NULL, napi_default, b},
      {"relayBytes", NULL, relay_bytes, NULL, NULL, NULL, napi_default, b},
      {"relayIdleMs", NULL, relay_idle_ms, NULL, NULL, NULL, napi_default, b},
      {"relayInfo", NULL, relay_info, NULL, NULL, NULL, napi_default, b},
      {"relayMptcpSubflows", NULL, relay_mptcp_subflows, NULL, NULL, NULL, napi_default, b},
  };
  /* a failure leaves the relay functions undefined: holdfast then keeps every tunnel on the JS relay */
  (void)napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

#endif

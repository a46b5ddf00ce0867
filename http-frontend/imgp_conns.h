/*  imgp_conns — the frontend's count of open connections: per client
    address, for the per-address limit, and in all, against the worker
    pool.

    Why: civetweb gives each open connection a worker thread for as long
    as it stays open. Thousands of threads keep idle and slow clients from
    shutting others out, but one address could still open them all; so an
    address over --conn-per-ip is refused (503 + Retry-After, closed), and
    when the pool runs low, responses say "Connection: close" so busy
    keep-alive clients give their workers back.

    Two counts: every open connection, from the moment civetweb hands it a
    worker (init_connection) until it closes it (connection_close), for
    the pool; and per address, from its first request head, the first
    moment civetweb 1.15 tells its address (mg_get_request_info is NULL in
    init_connection). A connection that never completes a head is in the
    first count only: the frontend gives it a short head deadline while the
    pool is crowded (imgp_http).

    Memory: one small entry per address with open connections, so the
    table is bounded by the open connections, which civetweb bounds.

    Never: refuse a connection it did not count, or forget one it did.
*/
#ifndef IMGP_CONNS_H_INCLUDED
#define IMGP_CONNS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _imgp_conns_t imgp_conns_t;

//  Create a counter for a pool of `workers` threads. `per_address` is the
//  most connections one address may hold open, 0 for no limit. Returns
//  NULL when out of memory.
imgp_conns_t *imgp_conns_new (int workers, int per_address);

//  Destroy; safe on NULL and twice.
void imgp_conns_destroy (imgp_conns_t **self_p);

//  Count a connection that a worker took (its address is not known yet).
void imgp_conns_accept (imgp_conns_t *self);

//  Uncount a connection taken with imgp_conns_accept.
void imgp_conns_release (imgp_conns_t *self);

//  Count the connection of a first request head from `address` (text, e.g.
//  "127.0.0.1"). Returns
//  0, or -1 when the address already holds its limit: the connection is
//  counted all the same, and is to be refused and closed. Either way the
//  caller calls imgp_conns_close for it once.
int imgp_conns_open (imgp_conns_t *self, const char *address);

//  Uncount a connection from `address`.
void imgp_conns_close (imgp_conns_t *self, const char *address);

//  True when so few workers are free (under an eighth of the pool, at
//  least 2) that keep-alive connections should be closed after their
//  response.
bool imgp_conns_crowded (imgp_conns_t *self);

#endif

/*  imgp_peers — the resizers on the broker's jobs link, keyed by routing
    id (which is the resizer's worker name), with the credit each has and
    the rule that picks who gets the next job.

    Why its own module: fair dispatch is a question about this data alone
    (who is live, who has credit, who has a working slot free), so it is
    kept apart from sockets and files and tested with plain numbers. The
    broker tells it what happened (READY, a message heard, a JOB sent, a
    job given back) and asks it who is next, who went silent.

    Credit is the ZeroMQ Guide's credit-based flow control: a resizer says
    how many JOBs it can take (READY sets it), each JOB sent takes one,
    each result it sends gives one back. A resizer is never sent a job it
    did not ask for, so no job waits in a pipe behind a busy resizer.

    Ownership: the table owns its peer records; a returned imgp_peer_t * is
    borrowed and valid until that peer is removed. Callers may change the
    plain fields (host, address, counts); the rule reads them. Never reads
    a socket or a clock: callers pass the time in.
*/
#ifndef IMGP_PEERS_H_INCLUDED
#define IMGP_PEERS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"

//  One resizer as the broker knows it.
typedef struct {
    char name [IMGP_WORKER_MAX + 1];        //  routing id = worker name
    char host [IMGP_HOST_MAX + 1];          //  READY's host, "" unknown
    char address [IMGP_ADDRESS_MAX + 1];    //  libzmq's Peer-Address, "" unknown
    int slots;                              //  working slots (READY); 0 before one
    int free_slots;                         //  free working slots, its latest word
    int credit;                             //  JOBs it may be sent now
    int held;                               //  jobs sent to it and not yet given back
    int64_t held_bytes;                     //  the originals' bytes of those jobs
    int64_t done;                           //  DONE taken from it since it joined
    int64_t failed;                         //  FAILED taken from it since it joined
    int64_t last_heard;                     //  monotonic ms of its latest message
    int64_t last_sent;                      //  monotonic ms of the latest JOB to it
    bool warned;                            //  worker_mismatch logged for it
    bool key_warned;                        //  key_mismatch logged for it
} imgp_peer_t;

typedef struct _imgp_peers_t imgp_peers_t;

//  Create an empty table. Never NULL (aborts on OOM, like czmq).
imgp_peers_t *imgp_peers_new (void);

//  Destroy the table and its records; safe on NULL and twice.
void imgp_peers_destroy (imgp_peers_t **self_p);

//  The peer of `name`, or NULL.
imgp_peer_t *imgp_peers_lookup (imgp_peers_t *self, const char *name);

//  A message came from `name` at monotonic `now`: its record, made with no
//  credit and no slots when it is new (*joined set true then).
imgp_peer_t *imgp_peers_heard (imgp_peers_t *self, const char *name, int64_t now,
                               bool *joined);

//  A READY: the peer works `slots` jobs at once and can take `credit` JOBs
//  now. Credit is SET, not added: the resizer counts what it holds.
void imgp_peers_ready (imgp_peer_t *peer, int slots, int credit);

//  A JOB with an original of `bytes` left for `peer` at `now`: one credit
//  fewer, one job more held.
void imgp_peers_sent (imgp_peer_t *peer, int64_t now, int64_t bytes);

//  A job of `bytes` came back into `peer`'s hands without a JOB (its
//  STARTED for a job the broker had re-queued): one job more held, credit
//  untouched (the peer counted it when it said READY).
void imgp_peers_held (imgp_peer_t *peer, int64_t bytes);

//  A job of `bytes` left `peer`'s hands (it ended, or was re-queued): one
//  job fewer held. Credit is not touched: only the peer's own word (a
//  result, a READY) gives it back.
void imgp_peers_released (imgp_peer_t *peer, int64_t bytes);

//  A DONE or FAILED came from `peer`: it has room for one more JOB.
void imgp_peers_returned (imgp_peer_t *peer);

//  The peer that gets the front job, or NULL when none may. Only live
//  peers (heard within `timeout_ms` of `now`) with credit. First those
//  with a free working slot (held < slots), the most free slots first.
//  A peer whose slots are all busy gets a job ahead (prefetch) only when
//  no such peer exists, AND `queued` (jobs waiting, the front one
//  included) is at least the live peers, so with the job gone every other
//  live peer still has one waiting for the moment its slot frees, AND the
//  originals it holds come to at most `prefetch_bytes`, so the job waits
//  behind small work only, never behind a large photo while another slot
//  frees; behind any work when `queued` is at least twice the live peers
//  (a deep backlog: the job would wait that long anyway, and the busy peer
//  must not idle a round trip after each job). Otherwise the job waits in
//  the queue for the first slot that frees. Ties go to the peer sent a job longest ago, so equal peers take
//  turns.
imgp_peer_t *imgp_peers_choose (imgp_peers_t *self, int64_t now, int64_t timeout_ms,
                                size_t queued, int64_t prefetch_bytes);

//  The first peer silent for more than `timeout_ms` at `now`, or NULL.
imgp_peer_t *imgp_peers_lost (imgp_peers_t *self, int64_t now, int64_t timeout_ms);

//  Forget a peer (not its pin); unknown names are ignored.
void imgp_peers_remove (imgp_peers_t *self, const char *name);

//  Pins: each worker name is bound to the CURVE key ("" without keys) it
//  first came with, so another allowed key cannot speak in its name. A pin
//  outlives the peer's record (imgp_peers_remove keeps it) while jobs still
//  name that worker: only the caller knows when none do, and unpins.

//  The key pinned to `name` (borrowed), or NULL when none is.
const char *imgp_peers_pinned (imgp_peers_t *self, const char *name);

//  Pin `name` to `key` unless it is pinned already (the first key stays).
void imgp_peers_pin (imgp_peers_t *self, const char *name, const char *key);

//  Drop the pins of names that have no peer now and for which `in_use`
//  (called with each such name and `arg`) says no job names them.
typedef bool (imgp_peers_in_use_fn) (const char *name, void *arg);
void imgp_peers_prune (imgp_peers_t *self, imgp_peers_in_use_fn *in_use, void *arg);

//  Number of peers known.
size_t imgp_peers_size (imgp_peers_t *self);

//  Live peers and the free working slots they last reported.
void imgp_peers_live (imgp_peers_t *self, int64_t now, int64_t timeout_ms,
                      int64_t *live, int64_t *free_slots);

//  Walk the peers (in no order); NULL at the end. Do not add or remove
//  peers during a walk.
imgp_peer_t *imgp_peers_first (imgp_peers_t *self);
imgp_peer_t *imgp_peers_next (imgp_peers_t *self);

#endif

/*  imgp_waiters — the STATUS and FETCH requests the broker holds until
    their job ends or their wait_ms passes (PROTOCOL.md 6.4, "Waiting").

    Why its own module: a held request must be found two ways, by its job
    (the job ended: answer every request waiting on it) and by its deadline
    (the earliest one is due: answer it), and neither may cost a scan of
    every held request per message. Keeping that here, without sockets,
    files or clocks (callers pass the time in), keeps it testable like the
    table. Never answers anything itself and never decides whether to hold
    (the bound --max-waiters is the broker's).

    Ownership: a held request is an imgp_msg_t the caller hands over; it
    comes back, the caller's again, from _take or _expired, exactly once.
    Destroying the set frees the requests it still holds, unanswered (at
    broker shutdown nothing needs an answer).
*/
#ifndef IMGP_WAITERS_H_INCLUDED
#define IMGP_WAITERS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"

typedef struct _imgp_waiters_t imgp_waiters_t;

//  Create an empty set. Never NULL (aborts on OOM, like czmq).
imgp_waiters_t *imgp_waiters_new (void);

//  Destroy the set and the requests it holds; safe on NULL and twice.
void imgp_waiters_destroy (imgp_waiters_t **self_p);

//  Hold `*request_p` (its id names the job) until monotonic ms `deadline`.
//  Takes ownership and sets `*request_p` to NULL. O(log n).
void imgp_waiters_hold (imgp_waiters_t *self, imgp_msg_t **request_p, int64_t deadline);

//  One request held for job `id` (the caller's now), or NULL when none is
//  left. Call until NULL to take them all. O(log n).
imgp_msg_t *imgp_waiters_take (imgp_waiters_t *self, const char *id);

//  One request whose deadline is at or before monotonic ms `now`, earliest
//  first (the caller's now), or NULL. O(1) when none is due, else O(log n).
imgp_msg_t *imgp_waiters_expired (imgp_waiters_t *self, int64_t now);

//  The earliest deadline held, or -1 when none: the poll loop sleeps no
//  longer than this. O(1).
int64_t imgp_waiters_next_deadline (imgp_waiters_t *self);

//  Number of requests held. O(1).
size_t imgp_waiters_size (imgp_waiters_t *self);

#endif

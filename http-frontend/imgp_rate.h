/*  imgp_rate — request rate limits (one token bucket per key NAME or per
    client address) and log-once notes, for the frontend's worker threads.

    Why: a key holder or an address without a key gets RATE requests a
    second and BURST at once; beyond that a 429 with the RateLimit-* and
    Retry-After headers, whose values come from the verdict here. And a
    refusal that repeats on every request (a client over its connection
    limit) must be logged once per client per minute, not per request, or
    the log itself becomes the flood.

    Both tables are bounded. Each holds at most `capacity` entries, split
    into stripes with a lock each, so threads seldom wait on one another.
    When a stripe is full the entry used least recently in it is dropped
    for the new one. For buckets that is exact while the dropped bucket had
    refilled (idle for BURST/RATE seconds, the usual case); under a flood
    of more distinct clients than `capacity` within that time, the client
    seen longest ago loses its bucket early and starts again full: this
    errs on letting a request through rather than on refusing clients we
    have no room to remember. A dropped log-once note means at most one
    more log line.

    Time is passed in, in milliseconds of a monotonic clock, so tests
    never sleep. A `who` longer than IMGP_RATE_WHO_MAX bytes is cut to it
    (key NAMEs and textual IP addresses never are).

    Never: allocate or grow after imgp_rate_new, or hold a lock while
    doing anything but arithmetic on one entry.
*/
#ifndef IMGP_RATE_H_INCLUDED
#define IMGP_RATE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMGP_RATE_WHO_MAX 64    //  longest `who` told apart
#define IMGP_RATE_REASON_MAX 30 //  longest log-once `reason` told apart

//  What one imgp_rate_take decided, in the units of the response headers.
typedef struct {
    int64_t limit;              //  RateLimit-Limit: the burst
    int64_t remaining;          //  RateLimit-Remaining: whole requests left now
    int64_t reset_s;            //  RateLimit-Reset: seconds until the bucket is full
    int64_t retry_after_s;      //  Retry-After: seconds until one request is allowed
                                //  (>= 1 when limited, 0 when allowed)
} imgp_rate_verdict_t;

typedef struct _imgp_rate_t imgp_rate_t;

//  Make the tables: at most `capacity` buckets and `capacity` log-once
//  notes (about 150 bytes each, allocated now; capacity >= 1). Returns NULL
//  when out of memory.
imgp_rate_t *imgp_rate_new (size_t capacity);

//  Free the tables. Safe on NULL and twice.
void imgp_rate_destroy (imgp_rate_t **self_p);

//  Take one request from the bucket of `who`, which refills at `rate` a
//  second up to `burst` (rounded down to a whole number, at least 1); a
//  new bucket starts full. A bucket whose rate or burst changed (a key
//  file reload) keeps what it had taken, clamped to the new burst.
//  rate <= 0 is unlimited: allowed, nothing stored, the verdict all 0.
//  Returns 0 when allowed, -1 when limited; fills `verdict` (may be NULL).
int imgp_rate_take (imgp_rate_t *self, const char *who, double rate, double burst, int64_t now_ms,
                    imgp_rate_verdict_t *verdict);

//  True the first time (`reason`, `who`) is seen in `period_ms`, so the
//  caller logs then and stays quiet until the period has passed.
bool imgp_rate_once (imgp_rate_t *self, const char *reason, const char *who, int64_t period_ms,
                     int64_t now_ms);

//  Buckets held now (at most `capacity`), for tests: it shows the bound.
size_t imgp_rate_size (imgp_rate_t *self);

#endif

/*  imgp_ticker — a thread that calls one function every few milliseconds
    until it is destroyed: the clock of the frontend's housekeepers
    (imgp_watch's deadlines, imgp_mem's heap trims).

    Why: each of them needs the same small loop (a thread, a lock, a
    condition variable on the monotonic clock so a wall clock set back
    cannot stall it, a stop flag and a join); written once here.

    Never: call the function after imgp_ticker_destroy has returned, or
    hold the ticker's own lock while calling it (the function takes its
    own locks).
*/
#ifndef IMGP_TICKER_H_INCLUDED
#define IMGP_TICKER_H_INCLUDED

typedef struct _imgp_ticker_t imgp_ticker_t;

//  What the ticker calls, on its own thread, once per tick.
typedef void (imgp_ticker_fn) (void *arg);

//  Start a thread that calls fn (arg) every `interval_ms` (the first call
//  one interval after the start). `arg` is borrowed and must outlive the
//  ticker. Returns NULL when the thread cannot be started (logged, with
//  `name`, a static string).
imgp_ticker_t *imgp_ticker_new (const char *name, int interval_ms, imgp_ticker_fn *fn,
                                void *arg);

//  Stop the thread and wait for it; no call is made after this returns.
//  Safe on NULL and twice.
void imgp_ticker_destroy (imgp_ticker_t **self_p);

#endif

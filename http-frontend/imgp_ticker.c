/*  imgp_ticker — see imgp_ticker.h. The thread sleeps on a condition
    variable (monotonic clock) between calls, so destroy wakes it at once
    rather than after a tick.
*/
#include "imgp_ticker.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "imgp_log.h"

struct _imgp_ticker_t {
    pthread_mutex_t lock;       //  guards stopping
    pthread_cond_t wake;        //  ends a tick early when stopping
    bool stopping;              //  the thread must exit
    bool started;               //  the thread runs (join it)
    pthread_t thread;           //  the thread that calls fn
    int interval_ms;            //  time between calls
    imgp_ticker_fn *fn;         //  called each tick
    void *arg;                  //  for fn, borrowed
};

static void
s_tick_end (struct timespec *until, int interval_ms)
{
    clock_gettime (CLOCK_MONOTONIC, until);
    until->tv_sec += interval_ms / 1000;
    until->tv_nsec += (interval_ms % 1000) * 1000000L;
    if (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

static void *
s_ticker (void *args)
{
    imgp_ticker_t *self = args;
    pthread_mutex_lock (&self->lock);
    while (!self->stopping) {
        struct timespec until;
        s_tick_end (&until, self->interval_ms);
        pthread_cond_timedwait (&self->wake, &self->lock, &until);
        if (self->stopping)
            break;
        pthread_mutex_unlock (&self->lock);
        self->fn (self->arg);
        pthread_mutex_lock (&self->lock);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

//  The lock, and a condition variable on the monotonic clock (ticks must
//  not stretch when the wall clock is set back).
static int
s_sync_init (imgp_ticker_t *self)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init (&attr))
        return -1;
    int rc = pthread_condattr_setclock (&attr, CLOCK_MONOTONIC)
          || pthread_cond_init (&self->wake, &attr);
    pthread_condattr_destroy (&attr);
    if (rc)
        return -1;
    if (pthread_mutex_init (&self->lock, NULL)) {
        pthread_cond_destroy (&self->wake);
        return -1;
    }
    return 0;
}

imgp_ticker_t *
imgp_ticker_new (const char *name, int interval_ms, imgp_ticker_fn *fn, void *arg)
{
    assert (name && interval_ms > 0 && fn);
    imgp_ticker_t *self = calloc (1, sizeof *self);
    if (!self || s_sync_init (self)) {
        imgp_error ("event=thread_failed thread=%s reason=\"out of memory\"", name);
        free (self);
        return NULL;
    }
    self->interval_ms = interval_ms;
    self->fn = fn;
    self->arg = arg;
    self->started = pthread_create (&self->thread, NULL, s_ticker, self) == 0;
    if (!self->started) {
        imgp_error ("event=thread_failed thread=%s reason=\"cannot start it\"", name);
        imgp_ticker_destroy (&self);
    }
    return self;
}

void
imgp_ticker_destroy (imgp_ticker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_ticker_t *self = *self_p;
    if (self->started) {
        pthread_mutex_lock (&self->lock);
        self->stopping = true;
        pthread_cond_signal (&self->wake);
        pthread_mutex_unlock (&self->lock);
        pthread_join (self->thread, NULL);
    }
    pthread_cond_destroy (&self->wake);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

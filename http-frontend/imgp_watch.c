/*  imgp_watch — see imgp_watch.h.

    The watcher (an imgp_ticker) wakes every S_TICK_MS and walks the slots
    under the lock;
    with one slot per worker thread that is a few dozen comparisons, and it
    signals only threads already past their deadline, so a deadline is kept
    to within about one tick. Slots are a plain array: begin takes the
    first free one.
*/
#include "imgp_watch.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "imgp_log.h"
#include "imgp_ticker.h"

#define S_TICK_MS 50            //  how often deadlines are looked at
#define S_SIGNAL SIGURG         //  ignored by default: harmless if one is ever stray

typedef struct {
    pthread_t thread;           //  the watched thread
    int64_t deadline;           //  zclock_mono ms it may block until; 0: slot free
} s_slot_t;

struct _imgp_watch_t {
    pthread_mutex_t lock;       //  guards slots
    s_slot_t *slots;            //  one per thread that may be watched
    size_t size;                //  number of slots
    imgp_ticker_t *ticker;      //  the watcher: calls s_watch_tick
};

//  Does nothing: being caught is what makes poll() return EINTR.
static void
s_interrupt (int signal)
{
    (void) signal;
}

//  One tick of the watcher: signal every watched thread past its deadline.
static void
s_watch_tick (void *args)
{
    imgp_watch_t *self = args;
    pthread_mutex_lock (&self->lock);
    int64_t now = zclock_mono ();
    for (size_t i = 0; i < self->size; i++)
        if (self->slots [i].deadline && now > self->slots [i].deadline)
            pthread_kill (self->slots [i].thread, S_SIGNAL);
    pthread_mutex_unlock (&self->lock);
}

imgp_watch_t *
imgp_watch_new (size_t slots)
{
    assert (slots > 0);
    imgp_watch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->slots = calloc (slots, sizeof *self->slots);
    if (!self->slots || pthread_mutex_init (&self->lock, NULL)) {
        free (self->slots);
        free (self);
        return NULL;
    }
    self->size = slots;
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_interrupt;    //  no SA_RESTART: waits fail with EINTR
    sigemptyset (&action.sa_mask);
    sigaction (S_SIGNAL, &action, NULL);
    self->ticker = imgp_ticker_new ("upload_watch", S_TICK_MS, s_watch_tick, self);
    if (!self->ticker)
        imgp_watch_destroy (&self);
    return self;
}

void
imgp_watch_destroy (imgp_watch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_watch_t *self = *self_p;
    imgp_ticker_destroy (&self->ticker);
    pthread_mutex_destroy (&self->lock);
    free (self->slots);
    free (self);
    *self_p = NULL;
}

int
imgp_watch_begin (imgp_watch_t *self, int64_t deadline)
{
    assert (self && deadline > 0);
    int slot = -1;
    pthread_mutex_lock (&self->lock);
    for (size_t i = 0; i < self->size && slot < 0; i++)
        if (self->slots [i].deadline == 0) {
            self->slots [i] = (s_slot_t) { pthread_self (), deadline };
            slot = (int) i;
        }
    pthread_mutex_unlock (&self->lock);
    if (slot < 0)
        imgp_warn ("event=unwatched_upload slots=%zu", self->size);
    return slot;
}

void
imgp_watch_end (imgp_watch_t *self, int slot)
{
    assert (self && slot < (int) self->size);
    if (slot < 0)
        return;
    pthread_mutex_lock (&self->lock);
    self->slots [slot].deadline = 0;
    pthread_mutex_unlock (&self->lock);
}

/*  imgp_conns — see imgp_conns.h.

    A zhashx keyed by address text, value the count, under one mutex: two
    short critical sections per connection (not per request), so the lock
    is not worth striping at the connection rates one frontend sees.
*/
#include "imgp_conns.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

struct _imgp_conns_t {
    pthread_mutex_t lock;       //  guards everything below
    zhashx_t *by_address;       //  address -> open connections (as a pointer-sized int)
    size_t open;                //  open connections in all (accept to release)
    size_t workers;             //  size of the worker pool
    size_t per_address;         //  limit per address, 0 for none
    size_t spare;               //  free workers under which the pool is crowded
};

imgp_conns_t *
imgp_conns_new (int workers, int per_address)
{
    assert (workers > 0 && per_address >= 0);
    imgp_conns_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->by_address = zhashx_new ();
    if (!self->by_address) {
        free (self);
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    self->workers = (size_t) workers;
    self->per_address = (size_t) per_address;
    self->spare = self->workers / 8 > 2 ? self->workers / 8 : 2;
    return self;
}

void
imgp_conns_destroy (imgp_conns_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_conns_t *self = *self_p;
    zhashx_destroy (&self->by_address);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

int
imgp_conns_open (imgp_conns_t *self, const char *address)
{
    assert (self && address);
    pthread_mutex_lock (&self->lock);
    uintptr_t count = (uintptr_t) zhashx_lookup (self->by_address, address) + 1;
    zhashx_update (self->by_address, address, (void *) count);
    pthread_mutex_unlock (&self->lock);
    return self->per_address && count > self->per_address ? -1 : 0;
}

void
imgp_conns_close (imgp_conns_t *self, const char *address)
{
    assert (self && address);
    pthread_mutex_lock (&self->lock);
    uintptr_t count = (uintptr_t) zhashx_lookup (self->by_address, address);
    assert (count > 0);         //  misuse: a close without its open
    if (count > 1)
        zhashx_update (self->by_address, address, (void *) (count - 1));
    else
        zhashx_delete (self->by_address, address);
    pthread_mutex_unlock (&self->lock);
}

void
imgp_conns_accept (imgp_conns_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    self->open++;
    pthread_mutex_unlock (&self->lock);
}

void
imgp_conns_release (imgp_conns_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    assert (self->open > 0);    //  misuse: a release without its accept
    self->open--;
    pthread_mutex_unlock (&self->lock);
}

bool
imgp_conns_crowded (imgp_conns_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    bool crowded = self->open + self->spare > self->workers;
    pthread_mutex_unlock (&self->lock);
    return crowded;
}

/*  imgp_waiters — see imgp_waiters.h.

    Two indexes over the same waiters. A zhashx maps a job id to the first
    of that job's waiters, which are chained in a doubly linked list, so a
    waiter leaves its job's chain in O(1) whichever way it is taken. A
    binary min-heap orders every waiter by deadline; each waiter knows its
    slot in the heap, so one taken by its job leaves the heap in O(log n)
    instead of being found by a scan. The heap array only grows (doubling);
    the broker bounds it with --max-waiters.

    A waiter costs the request it holds (an imgp_msg_t, about 1 KB) plus
    this small record: with the default bound of 10000, about 10 MB at most.
*/
#include "imgp_waiters.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct _s_waiter_t s_waiter_t;
struct _s_waiter_t {
    imgp_msg_t *request;        //  the held request, owned
    int64_t deadline;           //  monotonic ms when it is answered anyway
    size_t slot;                //  index in the heap
    s_waiter_t *prev;           //  previous waiter of the same job, or NULL
    s_waiter_t *next;           //  next waiter of the same job, or NULL
};

struct _imgp_waiters_t {
    zhashx_t *jobs;             //  job id -> its first waiter, borrowed
    s_waiter_t **heap;          //  min-heap by deadline, owns the waiters
    size_t size;                //  waiters in the heap
    size_t capacity;            //  slots allocated in the heap
};

imgp_waiters_t *
imgp_waiters_new (void)
{
    imgp_waiters_t *self = calloc (1, sizeof *self);
    assert (self);
    self->jobs = zhashx_new ();
    assert (self->jobs);
    return self;
}

void
imgp_waiters_destroy (imgp_waiters_t **self_p)
{
    assert (self_p);
    imgp_waiters_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->size; i++) {
        imgp_msg_destroy (&self->heap [i]->request);
        free (self->heap [i]);
    }
    free (self->heap);
    zhashx_destroy (&self->jobs);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  The heap

static void
s_heap_set (imgp_waiters_t *self, size_t slot, s_waiter_t *waiter)
{
    self->heap [slot] = waiter;
    waiter->slot = slot;
}

static bool
s_earlier (imgp_waiters_t *self, size_t a, size_t b)
{
    return self->heap [a]->deadline < self->heap [b]->deadline;
}

static void
s_heap_swap (imgp_waiters_t *self, size_t a, size_t b)
{
    s_waiter_t *waiter = self->heap [a];
    s_heap_set (self, a, self->heap [b]);
    s_heap_set (self, b, waiter);
}

static void
s_sift_up (imgp_waiters_t *self, size_t slot)
{
    while (slot > 0 && s_earlier (self, slot, (slot - 1) / 2)) {
        s_heap_swap (self, slot, (slot - 1) / 2);
        slot = (slot - 1) / 2;
    }
}

static void
s_sift_down (imgp_waiters_t *self, size_t slot)
{
    while (true) {
        size_t first = slot, left = 2 * slot + 1, right = left + 1;
        if (left < self->size && s_earlier (self, left, first))
            first = left;
        if (right < self->size && s_earlier (self, right, first))
            first = right;
        if (first == slot)
            return;
        s_heap_swap (self, slot, first);
        slot = first;
    }
}

static void
s_heap_push (imgp_waiters_t *self, s_waiter_t *waiter)
{
    if (self->size == self->capacity) {
        self->capacity = self->capacity ? self->capacity * 2 : 64;
        self->heap = realloc (self->heap, self->capacity * sizeof *self->heap);
        assert (self->heap);
    }
    s_heap_set (self, self->size++, waiter);
    s_sift_up (self, waiter->slot);
}

//  Take a waiter out of the heap from any slot: the last one fills the
//  hole and moves up or down to its place.
static void
s_heap_remove (imgp_waiters_t *self, s_waiter_t *waiter)
{
    size_t slot = waiter->slot;
    assert (slot < self->size && self->heap [slot] == waiter);
    s_waiter_t *last = self->heap [--self->size];
    if (last == waiter)
        return;
    s_heap_set (self, slot, last);
    s_sift_up (self, slot);
    s_sift_down (self, last->slot);
}

//  ---------------------------------------------------------------------
//  The chains per job

static void
s_chain_add (imgp_waiters_t *self, s_waiter_t *waiter)
{
    const char *id = waiter->request->id;
    s_waiter_t *first = (s_waiter_t *) zhashx_lookup (self->jobs, id);
    waiter->next = first;
    if (first)
        first->prev = waiter;
    zhashx_update (self->jobs, id, waiter);
}

static void
s_chain_remove (imgp_waiters_t *self, s_waiter_t *waiter)
{
    if (waiter->next)
        waiter->next->prev = waiter->prev;
    if (waiter->prev)
        waiter->prev->next = waiter->next;
    else
    if (waiter->next)
        zhashx_update (self->jobs, waiter->request->id, waiter->next);
    else
        zhashx_delete (self->jobs, waiter->request->id);
}

//  Unlink a waiter from both indexes, free it, and hand back its request.
static imgp_msg_t *
s_release (imgp_waiters_t *self, s_waiter_t *waiter)
{
    s_chain_remove (self, waiter);
    s_heap_remove (self, waiter);
    imgp_msg_t *request = waiter->request;
    free (waiter);
    return request;
}

//  ---------------------------------------------------------------------

void
imgp_waiters_hold (imgp_waiters_t *self, imgp_msg_t **request_p, int64_t deadline)
{
    assert (self);
    assert (request_p && *request_p);
    assert (imgp_id_valid ((*request_p)->id));
    s_waiter_t *waiter = calloc (1, sizeof *waiter);
    assert (waiter);
    waiter->request = *request_p;
    waiter->deadline = deadline;
    *request_p = NULL;
    s_chain_add (self, waiter);
    s_heap_push (self, waiter);
}

imgp_msg_t *
imgp_waiters_take (imgp_waiters_t *self, const char *id)
{
    assert (self);
    s_waiter_t *waiter = id ? (s_waiter_t *) zhashx_lookup (self->jobs, id) : NULL;
    return waiter ? s_release (self, waiter) : NULL;
}

imgp_msg_t *
imgp_waiters_expired (imgp_waiters_t *self, int64_t now)
{
    assert (self);
    if (self->size == 0 || self->heap [0]->deadline > now)
        return NULL;
    return s_release (self, self->heap [0]);
}

int64_t
imgp_waiters_next_deadline (imgp_waiters_t *self)
{
    assert (self);
    return self->size ? self->heap [0]->deadline : -1;
}

size_t
imgp_waiters_size (imgp_waiters_t *self)
{
    assert (self);
    return self->size;
}

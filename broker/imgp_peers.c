/*  imgp_peers — see imgp_peers.h.

    A zhashx keyed by name owns the records. The choice walks every peer:
    as many as the resizer fleet, once per JOB sent, which is cheap next
    to reading the original from the spool for that JOB.
*/
#include "imgp_peers.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct _imgp_peers_t {
    zhashx_t *peers;            //  name -> imgp_peer_t, owned
    zhashx_t *pins;             //  name -> its key, a string, owned
};

static void
s_free_item (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

imgp_peers_t *
imgp_peers_new (void)
{
    imgp_peers_t *self = calloc (1, sizeof *self);
    assert (self);
    self->peers = zhashx_new ();
    assert (self->peers);
    zhashx_set_destructor (self->peers, s_free_item);
    self->pins = zhashx_new ();
    assert (self->pins);
    zhashx_set_destructor (self->pins, s_free_item);
    zhashx_set_duplicator (self->pins, (zhashx_duplicator_fn *) strdup);
    return self;
}

void
imgp_peers_destroy (imgp_peers_t **self_p)
{
    assert (self_p);
    imgp_peers_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy (&self->peers);
    zhashx_destroy (&self->pins);
    free (self);
    *self_p = NULL;
}

imgp_peer_t *
imgp_peers_lookup (imgp_peers_t *self, const char *name)
{
    assert (self);
    return name ? (imgp_peer_t *) zhashx_lookup (self->peers, name) : NULL;
}

imgp_peer_t *
imgp_peers_heard (imgp_peers_t *self, const char *name, int64_t now, bool *joined)
{
    assert (self);
    assert (name && joined);
    imgp_peer_t *peer = imgp_peers_lookup (self, name);
    *joined = peer == NULL;
    if (!peer) {
        peer = calloc (1, sizeof *peer);
        assert (peer);
        snprintf (peer->name, sizeof peer->name, "%s", name);
        int rc = zhashx_insert (self->peers, peer->name, peer);
        assert (rc == 0);
        (void) rc;
    }
    peer->last_heard = now;
    return peer;
}

void
imgp_peers_ready (imgp_peer_t *peer, int slots, int credit)
{
    assert (peer);
    peer->slots = slots;
    peer->credit = credit;
    //  Until its first heartbeat, what it can take is what it has free.
    peer->free_slots = credit < slots ? credit : slots;
}

void
imgp_peers_sent (imgp_peer_t *peer, int64_t now, int64_t bytes)
{
    assert (peer && peer->credit > 0);
    peer->credit--;
    peer->held++;
    peer->held_bytes += bytes;
    peer->last_sent = now;
}

void
imgp_peers_held (imgp_peer_t *peer, int64_t bytes)
{
    assert (peer);
    peer->held++;
    peer->held_bytes += bytes;
}

void
imgp_peers_released (imgp_peer_t *peer, int64_t bytes)
{
    assert (peer);
    if (peer->held > 0)
        peer->held--;
    peer->held_bytes = peer->held && peer->held_bytes > bytes ? peer->held_bytes - bytes : 0;
}

void
imgp_peers_returned (imgp_peer_t *peer)
{
    assert (peer);
    //  A peer cannot earn more than the protocol lets it claim, however
    //  many results it sends.
    if (peer->credit < IMGP_CREDIT_MAX)
        peer->credit++;
}

static bool
s_live (const imgp_peer_t *peer, int64_t now, int64_t timeout_ms)
{
    return now - peer->last_heard <= timeout_ms;
}

//  Is `a` a better choice than `b` (NULL: anything is)? More room first,
//  then the one that waited longest since its last JOB.
static bool
s_better (const imgp_peer_t *a, int a_room, const imgp_peer_t *b, int b_room)
{
    if (!b || a_room != b_room)
        return !b || a_room > b_room;
    return a->last_sent < b->last_sent;
}

imgp_peer_t *
imgp_peers_choose (imgp_peers_t *self, int64_t now, int64_t timeout_ms, size_t queued,
                   int64_t prefetch_bytes)
{
    assert (self);
    imgp_peer_t *best = NULL, *small = NULL, *any = NULL;
    int best_room = 0, small_room = 0, any_room = 0;
    size_t live = 0;
    for (imgp_peer_t *peer = (imgp_peer_t *) zhashx_first (self->peers); peer;
         peer = (imgp_peer_t *) zhashx_next (self->peers)) {
        if (!s_live (peer, now, timeout_ms))
            continue;
        live++;
        if (peer->credit <= 0)
            continue;
        int room = peer->slots - peer->held;
        if (room > 0 && s_better (peer, room, best, best_room)) {
            best = peer;
            best_room = room;
        }
        if (room <= 0 && s_better (peer, room, any, any_room)) {
            any = peer;
            any_room = room;
        }
        if (room <= 0 && peer->held_bytes <= prefetch_bytes
        &&  s_better (peer, room, small, small_room)) {
            small = peer;
            small_room = room;
        }
    }
    if (best)
        return best;
    //  Prefetch only when, with this job gone, every other live peer still
    //  has a queued job to take the moment its slot frees: then the job
    //  sent ahead does not leave a slot elsewhere idle. Behind small work
    //  that is enough; behind a large photo only when the backlog is twice
    //  the live peers, so the job sent ahead would have waited at least
    //  that photo's time in the queue anyway, while without it the busy
    //  peer idles a round trip after each photo (measured: 4-8 % idle).
    if (queued >= 2 * live)
        return any;
    return queued >= live ? small : NULL;
}

imgp_peer_t *
imgp_peers_lost (imgp_peers_t *self, int64_t now, int64_t timeout_ms)
{
    assert (self);
    for (imgp_peer_t *peer = (imgp_peer_t *) zhashx_first (self->peers); peer;
         peer = (imgp_peer_t *) zhashx_next (self->peers))
        if (!s_live (peer, now, timeout_ms))
            return peer;
    return NULL;
}

void
imgp_peers_remove (imgp_peers_t *self, const char *name)
{
    assert (self);
    assert (name);
    //  `name` may be the one inside the record being freed.
    char key [IMGP_WORKER_MAX + 1];
    snprintf (key, sizeof key, "%s", name);
    zhashx_delete (self->peers, key);
}

const char *
imgp_peers_pinned (imgp_peers_t *self, const char *name)
{
    assert (self);
    return name ? (const char *) zhashx_lookup (self->pins, name) : NULL;
}

void
imgp_peers_pin (imgp_peers_t *self, const char *name, const char *key)
{
    assert (self);
    assert (name && key);
    zhashx_insert (self->pins, name, (void *) key);    //  no-op when pinned
}

void
imgp_peers_prune (imgp_peers_t *self, imgp_peers_in_use_fn *in_use, void *arg)
{
    assert (self);
    assert (in_use);
    //  The names are copied first: a walk may not delete what it walks.
    zlistx_t *names = zhashx_keys (self->pins);
    assert (names);
    for (const char *name = (const char *) zlistx_first (names); name;
         name = (const char *) zlistx_next (names))
        if (!imgp_peers_lookup (self, name) && !in_use (name, arg))
            zhashx_delete (self->pins, name);
    zlistx_destroy (&names);
}

size_t
imgp_peers_size (imgp_peers_t *self)
{
    assert (self);
    return zhashx_size (self->peers);
}

void
imgp_peers_live (imgp_peers_t *self, int64_t now, int64_t timeout_ms,
                 int64_t *live, int64_t *free_slots)
{
    assert (self);
    assert (live && free_slots);
    *live = *free_slots = 0;
    for (imgp_peer_t *peer = (imgp_peer_t *) zhashx_first (self->peers); peer;
         peer = (imgp_peer_t *) zhashx_next (self->peers))
        if (s_live (peer, now, timeout_ms)) {
            (*live)++;
            *free_slots += peer->free_slots;
        }
}

imgp_peer_t *
imgp_peers_first (imgp_peers_t *self)
{
    assert (self);
    return (imgp_peer_t *) zhashx_first (self->peers);
}

imgp_peer_t *
imgp_peers_next (imgp_peers_t *self)
{
    assert (self);
    return (imgp_peer_t *) zhashx_next (self->peers);
}

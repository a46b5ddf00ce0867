/*  imgp_rate — see imgp_rate.h.

    One table type serves both uses: a fixed array of stripes, each a
    mutex, a chained hash of node indices and an LRU list over a node pool
    allocated at the start. A stripe hands out nodes until its share of the
    capacity is used, then recycles its least recently used node. The
    stripe is chosen by a seeded hash (FNV-1a, then a mixer), so a client
    cannot aim distinct strings at one stripe without knowing the seed.
    Each node holds one number, its `mark`: a bucket's theoretical arrival
    time, or when a log-once note last said yes.

    Buckets use GCRA, the token bucket written as one time: each request
    pushes the bucket's theoretical arrival time (TAT) on by 1000/RATE ms;
    a request is allowed while TAT, after the push, is at most BURST
    intervals ahead of now. A TAT in the past is a full bucket. One number,
    no refill loop, no drift from adding fractions of tokens.
*/
#include "imgp_rate.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define S_STRIPES 64                //  locks per table, at most
#define S_KEY_MAX (IMGP_RATE_REASON_MAX + 1 + IMGP_RATE_WHO_MAX)
#define S_NONE UINT32_MAX           //  no node
#define S_EPSILON 1e-6              //  ms of rounding forgiven (1000/3 is not exact)

typedef struct {
    char key [S_KEY_MAX + 1];   //  who, or reason + '\x1f' + who
    double mark;                //  bucket: TAT in ms; note: ms it last said yes
    uint64_t hash;              //  hash of key, to unlink it when recycled
    uint32_t chain;             //  next node in the same hash chain
    uint32_t newer;             //  LRU neighbour used more recently
    uint32_t older;             //  LRU neighbour used less recently
} s_node_t;

typedef struct {
    alignas (64) pthread_mutex_t lock;  //  guards the stripe; own cache line
    uint32_t *heads;            //  hash chains, mask + 1 of them
    uint32_t mask;              //  chains - 1 (a power of two - 1)
    s_node_t *nodes;            //  node pool
    uint32_t capacity;          //  nodes in the pool
    uint32_t used;              //  nodes handed out so far; all of them once full
    uint32_t newest;            //  head of the LRU list
    uint32_t oldest;            //  tail of the LRU list, recycled first
} s_stripe_t;

typedef struct {
    s_stripe_t *stripes;        //  the stripes
    uint32_t count;             //  stripes in use
    uint64_t seed;              //  hash seed, random per table
} s_table_t;

struct _imgp_rate_t {
    s_table_t buckets;          //  token buckets by who
    s_table_t notes;            //  log-once notes by reason and who
};

//  --------------------------------------------------------------------------
//  The striped LRU table

static uint64_t
s_hash (uint64_t seed, const char *key)
{
    uint64_t hash = 14695981039346656037ULL ^ seed;
    for (; *key; key++)
        hash = (hash ^ (unsigned char) *key) * 1099511628211ULL;
    //  splitmix64's finaliser: FNV's low bits alone spread short keys badly.
    hash = (hash ^ (hash >> 30)) * 0xbf58476d1ce4e5b9ULL;
    hash = (hash ^ (hash >> 27)) * 0x94d049bb133111ebULL;
    return hash ^ (hash >> 31);
}

static int
s_stripe_init (s_stripe_t *stripe, uint32_t capacity)
{
    uint32_t chains = 1;
    while (chains < capacity)
        chains *= 2;
    stripe->mask = chains - 1;
    stripe->capacity = capacity;
    stripe->newest = stripe->oldest = S_NONE;
    stripe->heads = malloc (chains * sizeof (uint32_t));
    //  Not calloc: a node is filled when it is handed out, and calloc
    //  clears the pool, which made every page of it resident at start
    //  (11 MB for the frontend's two tables of 65536). Untouched, a page
    //  costs nothing until a client needs a node on it.
    stripe->nodes = malloc ((size_t) capacity * sizeof (s_node_t));
    if (!stripe->heads || !stripe->nodes)
        return -1;
    memset (stripe->heads, 0xFF, chains * sizeof (uint32_t));   //  all S_NONE
    return pthread_mutex_init (&stripe->lock, NULL) == 0 ? 0 : -1;
}

static void
s_table_destroy (s_table_t *table)
{
    for (uint32_t i = 0; table->stripes && i < table->count; i++) {
        free (table->stripes [i].heads);
        free (table->stripes [i].nodes);
        pthread_mutex_destroy (&table->stripes [i].lock);
    }
    free (table->stripes);
    table->stripes = NULL;
}

static int
s_table_init (s_table_t *table, size_t capacity)
{
    assert (capacity >= 1 && capacity <= UINT32_MAX / 2);
    table->count = capacity < S_STRIPES ? (uint32_t) capacity : S_STRIPES;
    size_t bytes = table->count * sizeof (s_stripe_t);
    table->stripes = aligned_alloc (alignof (s_stripe_t), bytes);
    if (!table->stripes)
        return -1;
    memset (table->stripes, 0, bytes);
    if (getrandom (&table->seed, sizeof table->seed, 0) != sizeof table->seed)
        table->seed = (uint64_t) (uintptr_t) table;     //  unlikely; still varies
    //  The capacity shared out exactly: the first stripes take one more.
    for (uint32_t i = 0; i < table->count; i++) {
        uint32_t share = (uint32_t) (capacity / table->count + (i < capacity % table->count));
        if (s_stripe_init (&table->stripes [i], share) == -1) {
            table->count = i + 1;
            s_table_destroy (table);
            return -1;
        }
    }
    return 0;
}

static void
s_lru_unlink (s_stripe_t *stripe, uint32_t index)
{
    s_node_t *node = &stripe->nodes [index];
    if (node->newer != S_NONE)
        stripe->nodes [node->newer].older = node->older;
    else
        stripe->newest = node->older;
    if (node->older != S_NONE)
        stripe->nodes [node->older].newer = node->newer;
    else
        stripe->oldest = node->newer;
}

static void
s_lru_push (s_stripe_t *stripe, uint32_t index)
{
    s_node_t *node = &stripe->nodes [index];
    node->newer = S_NONE;
    node->older = stripe->newest;
    if (stripe->newest != S_NONE)
        stripe->nodes [stripe->newest].newer = index;
    stripe->newest = index;
    if (stripe->oldest == S_NONE)
        stripe->oldest = index;
}

static void
s_chain_unlink (s_stripe_t *stripe, uint32_t index)
{
    uint32_t *link = &stripe->heads [stripe->nodes [index].hash & stripe->mask];
    while (*link != index)
        link = &stripe->nodes [*link].chain;
    *link = stripe->nodes [index].chain;
}

//  A node for a key not in the stripe: a new one while the pool lasts,
//  else the least recently used one, taken out of its chain and list.
static uint32_t
s_stripe_take_node (s_stripe_t *stripe)
{
    if (stripe->used < stripe->capacity)
        return stripe->used++;
    uint32_t index = stripe->oldest;
    s_chain_unlink (stripe, index);
    s_lru_unlink (stripe, index);
    return index;
}

//  The node of `key`, made most recently used; *fresh tells whether it was
//  just made (its mark is then meaningless). Called with the lock held.
static s_node_t *
s_stripe_get (s_stripe_t *stripe, const char *key, uint64_t hash, bool *fresh)
{
    uint32_t *head = &stripe->heads [hash & stripe->mask];
    uint32_t index = *head;
    while (index != S_NONE
           && (stripe->nodes [index].hash != hash || strcmp (stripe->nodes [index].key, key)))
        index = stripe->nodes [index].chain;
    *fresh = index == S_NONE;
    if (*fresh) {
        index = s_stripe_take_node (stripe);
        s_node_t *node = &stripe->nodes [index];
        strcpy (node->key, key);
        node->hash = hash;
        node->chain = *head;
        *head = index;
    }
    else
        s_lru_unlink (stripe, index);
    s_lru_push (stripe, index);
    return &stripe->nodes [index];
}

//  Lock the stripe of `key` and return its node; unlock with s_unlock.
static s_node_t *
s_lock (s_table_t *table, const char *key, s_stripe_t **stripe_p, bool *fresh)
{
    uint64_t hash = s_hash (table->seed, key);
    s_stripe_t *stripe = &table->stripes [(hash >> 32) % table->count];
    pthread_mutex_lock (&stripe->lock);
    *stripe_p = stripe;
    return s_stripe_get (stripe, key, hash, fresh);
}

static void
s_unlock (s_stripe_t *stripe)
{
    pthread_mutex_unlock (&stripe->lock);
}

//  --------------------------------------------------------------------------
//  GCRA

//  Take one request from the bucket whose TAT is *tat; -1 when limited.
static int
s_bucket_take (double *tat, double rate, double burst, double now, imgp_rate_verdict_t *verdict)
{
    double interval = 1000.0 / rate;        //  ms one request earns back in
    double window = burst * interval;       //  how far ahead of now TAT may go
    *tat = fmax (*tat, now);                //  in the past: the bucket is full
    *tat = fmin (*tat, now + window);       //  burst lowered by a reload
    bool allowed = *tat + interval <= now + window + S_EPSILON;
    if (allowed)
        *tat += interval;
    verdict->limit = (int64_t) burst;
    verdict->remaining = (int64_t) fmax (0, floor ((now + window - *tat) / interval + S_EPSILON));
    verdict->reset_s = (int64_t) ceil ((*tat - now) / 1000 - S_EPSILON);
    verdict->retry_after_s
        = allowed ? 0 : (int64_t) fmax (1, ceil ((*tat + interval - window - now) / 1000));
    return allowed ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Public API

imgp_rate_t *
imgp_rate_new (size_t capacity)
{
    imgp_rate_t *self = calloc (1, sizeof (imgp_rate_t));
    if (!self)
        return NULL;
    if (s_table_init (&self->buckets, capacity) == -1
        || s_table_init (&self->notes, capacity) == -1)
        imgp_rate_destroy (&self);
    return self;
}

void
imgp_rate_destroy (imgp_rate_t **self_p)
{
    if (self_p && *self_p) {
        imgp_rate_t *self = *self_p;
        s_table_destroy (&self->buckets);
        s_table_destroy (&self->notes);
        free (self);
        *self_p = NULL;
    }
}

int
imgp_rate_take (imgp_rate_t *self, const char *who, double rate, double burst, int64_t now_ms,
                imgp_rate_verdict_t *verdict)
{
    assert (self && who);
    imgp_rate_verdict_t unused;
    if (!verdict)
        verdict = &unused;
    memset (verdict, 0, sizeof *verdict);
    if (!(rate > 0))
        return 0;               //  unlimited (and NaN is not a limit)
    char key [S_KEY_MAX + 1];
    snprintf (key, sizeof key, "%.*s", IMGP_RATE_WHO_MAX, who);

    s_stripe_t *stripe;
    bool fresh;
    s_node_t *node = s_lock (&self->buckets, key, &stripe, &fresh);
    if (fresh)
        node->mark = (double) now_ms;
    int rc = s_bucket_take (&node->mark, rate, fmax (1, floor (burst)), (double) now_ms, verdict);
    s_unlock (stripe);
    return rc;
}

bool
imgp_rate_once (imgp_rate_t *self, const char *reason, const char *who, int64_t period_ms,
                int64_t now_ms)
{
    assert (self && reason && who);
    char key [S_KEY_MAX + 1];
    snprintf (key, sizeof key, "%.*s\x1f%.*s", IMGP_RATE_REASON_MAX, reason, IMGP_RATE_WHO_MAX,
              who);

    s_stripe_t *stripe;
    bool fresh;
    s_node_t *node = s_lock (&self->notes, key, &stripe, &fresh);
    bool say = fresh || (double) now_ms - node->mark >= (double) period_ms;
    if (say)
        node->mark = (double) now_ms;
    s_unlock (stripe);
    return say;
}

size_t
imgp_rate_size (imgp_rate_t *self)
{
    assert (self);
    size_t size = 0;
    for (uint32_t i = 0; i < self->buckets.count; i++) {
        s_stripe_t *stripe = &self->buckets.stripes [i];
        pthread_mutex_lock (&stripe->lock);
        size += stripe->used;
        pthread_mutex_unlock (&stripe->lock);
    }
    return size;
}

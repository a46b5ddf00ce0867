/*  imgp_table — see imgp_table.h.

    A zhashx keyed by id owns the records; three zlistx lists (FIFO,
    in flight, finished) hold borrowed pointers, and each record remembers
    its node handle, so every phase change is O(1). The scans (overdue jobs,
    jobs of a lost worker, credit) walk only the in-flight list or the
    workers, which are as small as the resizer fleet: fine at 100 ms ticks.
    The finished list is in finish order, so eviction and the TTL sweep
    only ever look at its head.
*/
#include "imgp_table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

//  A record plus its place in the lists. `job` must stay the first member:
//  the public imgp_job_t * and the entry are the same address.
typedef struct {
    imgp_job_t job;             //  the public record
    void *handle;               //  node in the list of its phase
} s_entry_t;

typedef struct {
    char name [IMGP_WORKER_MAX + 1];    //  worker name from its heartbeats
    int slots;                          //  free slots, latest knowledge
    int64_t last_seen;                  //  monotonic ms of last heartbeat
} s_worker_t;

struct _imgp_table_t {
    zhashx_t *jobs;             //  id -> s_entry_t, owned
    zlistx_t *queue;            //  FIFO of QUEUED entries, borrowed
    zlistx_t *inflight;         //  DISPATCHED and RUNNING entries, borrowed
    zlistx_t *finished;         //  FINISHED entries in finish order, borrowed
    zhashx_t *workers;          //  name -> s_worker_t, owned
    size_t unstarted;           //  DISPATCHED entries (they use credit)
};

static void
s_free_item (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

imgp_table_t *
imgp_table_new (void)
{
    imgp_table_t *self = calloc (1, sizeof *self);
    assert (self);
    self->jobs = zhashx_new ();
    self->queue = zlistx_new ();
    self->inflight = zlistx_new ();
    self->finished = zlistx_new ();
    self->workers = zhashx_new ();
    assert (self->jobs && self->queue && self->inflight && self->finished && self->workers);
    zhashx_set_destructor (self->jobs, s_free_item);
    zhashx_set_destructor (self->workers, s_free_item);
    return self;
}

void
imgp_table_destroy (imgp_table_t **self_p)
{
    assert (self_p);
    imgp_table_t *self = *self_p;
    if (!self)
        return;
    zlistx_destroy (&self->queue);
    zlistx_destroy (&self->inflight);
    zlistx_destroy (&self->finished);
    zhashx_destroy (&self->jobs);
    zhashx_destroy (&self->workers);
    free (self);
    *self_p = NULL;
}

static zlistx_t *
s_list_of (imgp_table_t *self, imgp_phase_t phase)
{
    switch (phase) {
        case IMGP_PHASE_QUEUED:     return self->queue;
        case IMGP_PHASE_FINISHED:   return self->finished;
        default:                    return self->inflight;
    }
}

//  Take an entry out of the list of its phase, keeping the counter right.
static void
s_detach (imgp_table_t *self, s_entry_t *entry)
{
    zlistx_detach (s_list_of (self, entry->job.phase), entry->handle);
    entry->handle = NULL;
    if (entry->job.phase == IMGP_PHASE_DISPATCHED)
        self->unstarted--;
}

//  Put a detached entry into a phase, at the front or back of its list.
static void
s_attach (imgp_table_t *self, s_entry_t *entry, imgp_phase_t phase, bool front)
{
    zlistx_t *list = s_list_of (self, phase);
    entry->job.phase = phase;
    entry->handle = front ? zlistx_add_start (list, entry)
                          : zlistx_add_end (list, entry);
    assert (entry->handle);
    if (phase == IMGP_PHASE_DISPATCHED)
        self->unstarted++;
}

imgp_job_t *
imgp_table_insert (imgp_table_t *self, const imgp_job_t *record)
{
    assert (self);
    assert (record);
    assert (imgp_id_valid (record->id));
    if (zhashx_lookup (self->jobs, record->id))
        return NULL;

    s_entry_t *entry = calloc (1, sizeof *entry);
    assert (entry);
    entry->job = *record;
    imgp_job_t *job = &entry->job;
    job->dispatched_at = 0;
    job->started_at = 0;
    int rc = zhashx_insert (self->jobs, job->id, entry);
    assert (rc == 0);           //  the lookup above said the id is new
    (void) rc;

    if (job->state == IMGP_STATE_DONE || job->state == IMGP_STATE_FAILED)
        s_attach (self, entry, IMGP_PHASE_FINISHED, false);
    else {
        job->state = IMGP_STATE_QUEUED;
        job->worker [0] = '\0';
        s_attach (self, entry, IMGP_PHASE_QUEUED, false);
    }
    return job;
}

imgp_job_t *
imgp_table_lookup (imgp_table_t *self, const char *id)
{
    assert (self);
    if (!id)
        return NULL;
    s_entry_t *entry = (s_entry_t *) zhashx_lookup (self->jobs, id);
    return entry ? &entry->job : NULL;
}

void
imgp_table_remove (imgp_table_t *self, imgp_job_t **job_p)
{
    assert (self);
    assert (job_p && *job_p);
    s_entry_t *entry = (s_entry_t *) *job_p;
    s_detach (self, entry);
    //  The key lives in the record we are about to free: copy it first.
    char id [IMGP_ID_LEN + 1];
    memcpy (id, entry->job.id, sizeof id);
    zhashx_delete (self->jobs, id);
    *job_p = NULL;
}

size_t
imgp_table_size (imgp_table_t *self)
{
    assert (self);
    return zhashx_size (self->jobs);
}

size_t
imgp_table_queued (imgp_table_t *self)
{
    assert (self);
    return zlistx_size (self->queue);
}

size_t
imgp_table_unstarted (imgp_table_t *self)
{
    assert (self);
    return self->unstarted;
}

size_t
imgp_table_inflight (imgp_table_t *self)
{
    assert (self);
    return zlistx_size (self->inflight);
}

imgp_job_t *
imgp_table_next (imgp_table_t *self)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zlistx_first (self->queue);
    return entry ? &entry->job : NULL;
}

void
imgp_table_dispatched (imgp_table_t *self, imgp_job_t *job, int64_t now)
{
    assert (self);
    assert (job && job->phase == IMGP_PHASE_QUEUED);
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->attempts++;
    job->dispatched_at = now;
    job->started_at = 0;
    job->worker [0] = '\0';
    s_attach (self, entry, IMGP_PHASE_DISPATCHED, false);
}

void
imgp_table_started (imgp_table_t *self, imgp_job_t *job, const char *worker, int64_t now)
{
    assert (self);
    assert (job && job->phase != IMGP_PHASE_FINISHED);
    assert (worker);
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->state = IMGP_STATE_PROCESSING;
    job->started_at = now;
    snprintf (job->worker, sizeof job->worker, "%s", worker);
    s_attach (self, entry, IMGP_PHASE_RUNNING, false);
}

void
imgp_table_requeue (imgp_table_t *self, imgp_job_t *job)
{
    assert (self);
    assert (job && (job->phase == IMGP_PHASE_DISPATCHED || job->phase == IMGP_PHASE_RUNNING));
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->state = IMGP_STATE_QUEUED;
    job->dispatched_at = 0;
    job->started_at = 0;
    job->worker [0] = '\0';
    s_attach (self, entry, IMGP_PHASE_QUEUED, true);
}

void
imgp_table_finish (imgp_table_t *self, imgp_job_t *job, imgp_state_t state)
{
    assert (self);
    assert (job && job->phase != IMGP_PHASE_FINISHED);
    assert (state == IMGP_STATE_DONE || state == IMGP_STATE_FAILED);
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->state = state;
    job->dispatched_at = 0;
    job->started_at = 0;
    s_attach (self, entry, IMGP_PHASE_FINISHED, false);
}

imgp_job_t *
imgp_table_overdue (imgp_table_t *self, int64_t now, int64_t dispatch_ms,
                    int64_t job_ms, const char **reason)
{
    assert (self);
    assert (reason);
    for (s_entry_t *entry = (s_entry_t *) zlistx_first (self->inflight); entry;
         entry = (s_entry_t *) zlistx_next (self->inflight)) {
        imgp_job_t *job = &entry->job;
        if (job->phase == IMGP_PHASE_DISPATCHED && now - job->dispatched_at > dispatch_ms) {
            *reason = "dispatch_timeout";
            return job;
        }
        if (job->phase == IMGP_PHASE_RUNNING && now - job->started_at > job_ms) {
            *reason = "job_timeout";
            return job;
        }
    }
    return NULL;
}

imgp_job_t *
imgp_table_held_by (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    for (s_entry_t *entry = (s_entry_t *) zlistx_first (self->inflight); entry;
         entry = (s_entry_t *) zlistx_next (self->inflight))
        if (entry->job.phase == IMGP_PHASE_RUNNING && streq (entry->job.worker, worker))
            return &entry->job;
    return NULL;
}

imgp_job_t *
imgp_table_oldest_finished (imgp_table_t *self)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zlistx_first (self->finished);
    return entry ? &entry->job : NULL;
}

//  The record of `worker`, made (no slots, seen `now`) when it is new.
static s_worker_t *
s_worker_get (imgp_table_t *self, const char *worker, int64_t now, bool *joined)
{
    s_worker_t *known = (s_worker_t *) zhashx_lookup (self->workers, worker);
    *joined = known == NULL;
    if (*joined) {
        known = calloc (1, sizeof *known);
        assert (known);
        snprintf (known->name, sizeof known->name, "%s", worker);
        known->last_seen = now;
        int rc = zhashx_insert (self->workers, known->name, known);
        assert (rc == 0);
        (void) rc;
    }
    return known;
}

bool
imgp_table_heartbeat (imgp_table_t *self, const char *worker, int slots, int64_t now)
{
    assert (self);
    assert (worker);
    bool joined;
    s_worker_t *known = s_worker_get (self, worker, now, &joined);
    known->slots = slots > 0 ? slots : 0;
    known->last_seen = now;
    return joined;
}

bool
imgp_table_worker_took (imgp_table_t *self, const char *worker, int64_t now)
{
    assert (self);
    assert (worker);
    bool joined;
    s_worker_t *known = s_worker_get (self, worker, now, &joined);
    if (known->slots > 0)
        known->slots--;
    return joined;
}

const char *
imgp_table_lost_worker (imgp_table_t *self, int64_t now, int64_t timeout_ms)
{
    assert (self);
    for (s_worker_t *known = (s_worker_t *) zhashx_first (self->workers); known;
         known = (s_worker_t *) zhashx_next (self->workers))
        if (now - known->last_seen > timeout_ms)
            return known->name;
    return NULL;
}

void
imgp_table_worker_remove (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    //  `worker` may be the name inside the record being freed.
    char name [IMGP_WORKER_MAX + 1];
    snprintf (name, sizeof name, "%s", worker);
    zhashx_delete (self->workers, name);
}

size_t
imgp_table_workers (imgp_table_t *self)
{
    assert (self);
    return zhashx_size (self->workers);
}

void
imgp_table_live (imgp_table_t *self, int64_t now, int64_t timeout_ms,
                 int64_t *live, int64_t *slots)
{
    assert (self);
    assert (live && slots);
    *live = *slots = 0;
    for (s_worker_t *known = (s_worker_t *) zhashx_first (self->workers); known;
         known = (s_worker_t *) zhashx_next (self->workers))
        if (now - known->last_seen <= timeout_ms) {
            (*live)++;
            *slots += known->slots;
        }
}

int
imgp_table_credit (imgp_table_t *self)
{
    assert (self);
    int64_t slots = 0;
    for (s_worker_t *known = (s_worker_t *) zhashx_first (self->workers); known;
         known = (s_worker_t *) zhashx_next (self->workers))
        slots += known->slots;
    int64_t credit = slots - (int64_t) self->unstarted;
    if (credit < 0)
        return 0;
    return credit > INT32_MAX ? INT32_MAX : (int) credit;
}

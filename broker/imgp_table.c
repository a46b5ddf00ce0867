/*  imgp_table — see imgp_table.h.

    A zhashx keyed by id owns the records; three zlistx lists (FIFO,
    in flight, finished) hold borrowed pointers, and each record remembers
    its node handle, so every phase change is O(1). The scans (overdue jobs,
    jobs of a lost worker) walk only the in-flight list, which is as small
    as the resizers' credit: fine at 100 ms ticks.
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

struct _imgp_table_t {
    zhashx_t *jobs;             //  id -> s_entry_t, owned
    zlistx_t *queue;            //  FIFO of QUEUED entries, borrowed
    zlistx_t *inflight;         //  DISPATCHED and RUNNING entries, borrowed
    zlistx_t *finished;         //  FINISHED entries in finish order, borrowed
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
    assert (self->jobs && self->queue && self->inflight && self->finished);
    zhashx_set_destructor (self->jobs, s_free_item);
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
imgp_table_dispatched (imgp_table_t *self, imgp_job_t *job, const char *worker, int64_t now)
{
    assert (self);
    assert (job && job->phase == IMGP_PHASE_QUEUED);
    assert (worker);
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->attempts++;
    job->dispatched_at = now;
    job->started_at = 0;
    snprintf (job->worker, sizeof job->worker, "%s", worker);
    s_attach (self, entry, IMGP_PHASE_DISPATCHED, false);
}

void
imgp_table_started (imgp_table_t *self, imgp_job_t *job, int64_t now)
{
    assert (self);
    assert (job && job->phase != IMGP_PHASE_FINISHED);
    s_entry_t *entry = (s_entry_t *) job;
    s_detach (self, entry);
    job->state = IMGP_STATE_PROCESSING;
    job->started_at = now;
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
        if (streq (entry->job.worker, worker))
            return &entry->job;
    return NULL;
}

imgp_job_t *
imgp_table_held_next (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    for (s_entry_t *entry = (s_entry_t *) zlistx_next (self->inflight); entry;
         entry = (s_entry_t *) zlistx_next (self->inflight))
        if (streq (entry->job.worker, worker))
            return &entry->job;
    return NULL;
}

bool
imgp_table_names (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    if (imgp_table_held_by (self, worker))
        return true;
    for (s_entry_t *entry = (s_entry_t *) zlistx_first (self->queue); entry;
         entry = (s_entry_t *) zlistx_next (self->queue))
        if (streq (entry->job.worker, worker))
            return true;
    return false;
}

imgp_job_t *
imgp_table_oldest_finished (imgp_table_t *self)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zlistx_first (self->finished);
    return entry ? &entry->job : NULL;
}

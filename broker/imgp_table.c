/*  imgp_table — see imgp_table.h.

    A zhashx keyed by id owns the records; a zlistx per phase (FIFO,
    dispatched, running, finished) holds borrowed pointers, and each record
    remembers its node handle, so every phase change is O(1). Nothing walks
    a list per message or per job, so the table is as fast at 100,000 jobs
    as at 10:
    - the dispatched list is in dispatch order and the running list in
      STARTED order (each job goes to the back with the time, which never
      goes back), so the oldest of each is at its head: the overdue check
      looks at two heads, however many jobs are in flight;
    - a record per worker name holds the jobs in its hands (a list) and
      counts the unfinished jobs that name it, so the jobs of a lost
      worker and "does any job still name it" cost what they return;
    - the finished list is in finish order, so eviction and the TTL sweep
      only ever look at its head.
*/
#include "imgp_table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

//  What the table knows about one worker name.
typedef struct {
    zlistx_t *held;             //  its DISPATCHED and RUNNING entries, borrowed
    size_t named;               //  unfinished jobs whose worker is this name
} s_worker_t;

//  A record plus its place in the lists. `job` must stay the first member:
//  the public imgp_job_t * and the entry are the same address.
typedef struct {
    imgp_job_t job;             //  the public record, owning its renditions
    void *handle;               //  node in the list of its phase
    s_worker_t *worker;         //  its worker's record while unfinished and naming
                                //  one (counted in its `named`), else NULL
    void *held_handle;          //  node in its worker's held list, in flight only
} s_entry_t;

struct _imgp_table_t {
    zhashx_t *jobs;             //  id -> s_entry_t, owned
    zlistx_t *queue;            //  FIFO of QUEUED entries, borrowed
    zlistx_t *dispatched;       //  DISPATCHED entries in dispatch order, borrowed
    zlistx_t *running;          //  RUNNING entries in STARTED order, borrowed
    zlistx_t *finished;         //  FINISHED entries in finish order, borrowed
    zhashx_t *workers;          //  worker name -> s_worker_t, owned; only names
                                //  that an unfinished job names
    s_worker_t *walk;           //  the worker of a held_by/held_next walk
};

static void
s_free_entry (void **item_p)
{
    s_entry_t *entry = (s_entry_t *) *item_p;
    if (entry) {
        imgp_job_clear (&entry->job);       //  its renditions are the table's
        free (entry);
    }
    *item_p = NULL;
}

static void
s_free_worker (void **item_p)
{
    s_worker_t *worker = (s_worker_t *) *item_p;
    if (worker) {
        zlistx_destroy (&worker->held);
        free (worker);
    }
    *item_p = NULL;
}

imgp_table_t *
imgp_table_new (void)
{
    imgp_table_t *self = calloc (1, sizeof *self);
    assert (self);
    self->jobs = zhashx_new ();
    self->queue = zlistx_new ();
    self->dispatched = zlistx_new ();
    self->running = zlistx_new ();
    self->finished = zlistx_new ();
    self->workers = zhashx_new ();
    assert (self->jobs && self->queue && self->dispatched && self->running
            && self->finished && self->workers);
    zhashx_set_destructor (self->jobs, s_free_entry);
    zhashx_set_destructor (self->workers, s_free_worker);
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
    zlistx_destroy (&self->dispatched);
    zlistx_destroy (&self->running);
    zlistx_destroy (&self->finished);
    zhashx_destroy (&self->workers);
    zhashx_destroy (&self->jobs);
    free (self);
    *self_p = NULL;
}

static zlistx_t *
s_list_of (imgp_table_t *self, imgp_phase_t phase)
{
    switch (phase) {
        case IMGP_PHASE_QUEUED:     return self->queue;
        case IMGP_PHASE_DISPATCHED: return self->dispatched;
        case IMGP_PHASE_RUNNING:    return self->running;
        default:                    return self->finished;
    }
}

static bool
s_in_flight (imgp_phase_t phase)
{
    return phase == IMGP_PHASE_DISPATCHED || phase == IMGP_PHASE_RUNNING;
}

//  The record of a worker name, made when `create` and it has none.
static s_worker_t *
s_worker (imgp_table_t *self, const char *name, bool create)
{
    s_worker_t *worker = (s_worker_t *) zhashx_lookup (self->workers, name);
    if (!worker && create) {
        worker = calloc (1, sizeof *worker);
        assert (worker);
        worker->held = zlistx_new ();
        assert (worker->held);
        int rc = zhashx_insert (self->workers, name, worker);
        assert (rc == 0);
        (void) rc;
    }
    return worker;
}

//  Forget a worker name that no unfinished job names any more.
static void
s_worker_check (imgp_table_t *self, const char *name, s_worker_t *worker)
{
    if (worker->named == 0 && zlistx_size (worker->held) == 0) {
        if (self->walk == worker)
            self->walk = NULL;
        zhashx_delete (self->workers, name);
    }
}

//  An unfinished job names its worker (from now on / no more).
//  The entry keeps its record, so the name is looked up only when it
//  starts or stops naming it, not at each phase change.
static void
s_name_add (imgp_table_t *self, s_entry_t *entry)
{
    assert (!entry->worker);
    if (entry->job.worker [0]) {
        entry->worker = s_worker (self, entry->job.worker, true);
        entry->worker->named++;
    }
}

static void
s_name_drop (imgp_table_t *self, s_entry_t *entry)
{
    s_worker_t *worker = entry->worker;
    if (worker) {
        assert (worker->named > 0 && !entry->held_handle);
        worker->named--;
        entry->worker = NULL;
        s_worker_check (self, entry->job.worker, worker);
    }
}

//  Take an entry out of the list of its phase (and its worker's hands; the
//  record stays, as the job still names it).
static void
s_detach (imgp_table_t *self, s_entry_t *entry)
{
    zlistx_detach (s_list_of (self, entry->job.phase), entry->handle);
    entry->handle = NULL;
    if (entry->held_handle) {
        zlistx_detach (entry->worker->held, entry->held_handle);
        entry->held_handle = NULL;
    }
}

//  Put a detached entry into a phase, at the front or back of its list;
//  in flight, also into its worker's hands.
static void
s_attach (imgp_table_t *self, s_entry_t *entry, imgp_phase_t phase, bool front)
{
    zlistx_t *list = s_list_of (self, phase);
    entry->job.phase = phase;
    entry->handle = front ? zlistx_add_start (list, entry)
                          : zlistx_add_end (list, entry);
    assert (entry->handle);
    if (s_in_flight (phase)) {
        assert (entry->worker);
        entry->held_handle = zlistx_add_end (entry->worker->held, entry);
        assert (entry->held_handle);
    }
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
    imgp_job_copy (&entry->job, record);
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
        s_name_add (self, entry);
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
    if (entry->job.phase != IMGP_PHASE_FINISHED)
        s_name_drop (self, entry);
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
    return zlistx_size (self->dispatched);
}

size_t
imgp_table_inflight (imgp_table_t *self)
{
    assert (self);
    return zlistx_size (self->dispatched) + zlistx_size (self->running);
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
    if (!streq (job->worker, worker)) {
        s_name_drop (self, entry);
        snprintf (job->worker, sizeof job->worker, "%s", worker);
        s_name_add (self, entry);
    }
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
    s_name_drop (self, entry);
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
    //  Each list is in the order of its time: its head is its oldest.
    s_entry_t *entry = (s_entry_t *) zlistx_first (self->dispatched);
    if (entry && now - entry->job.dispatched_at > dispatch_ms) {
        *reason = "dispatch_timeout";
        return &entry->job;
    }
    entry = (s_entry_t *) zlistx_first (self->running);
    if (entry && now - entry->job.started_at > job_ms) {
        *reason = "job_timeout";
        return &entry->job;
    }
    return NULL;
}

imgp_job_t *
imgp_table_held_by (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    self->walk = s_worker (self, worker, false);
    s_entry_t *entry = self->walk ? (s_entry_t *) zlistx_first (self->walk->held) : NULL;
    return entry ? &entry->job : NULL;
}

imgp_job_t *
imgp_table_held_next (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    s_entry_t *entry = self->walk ? (s_entry_t *) zlistx_next (self->walk->held) : NULL;
    return entry ? &entry->job : NULL;
}

bool
imgp_table_names (imgp_table_t *self, const char *worker)
{
    assert (self);
    assert (worker);
    return s_worker (self, worker, false) != NULL;
}

imgp_job_t *
imgp_table_oldest_finished (imgp_table_t *self)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zlistx_first (self->finished);
    return entry ? &entry->job : NULL;
}

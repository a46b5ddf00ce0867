/*  imgp_table — the broker's status table: every job it holds, the FIFO of
    jobs waiting for a resizer, the jobs in flight, the finished jobs waiting
    for their TTL. The resizers are imgp_peers' business.

    Why: the broker's decisions (what to dispatch next, which job is late,
    which worker went silent, what to evict) are all questions about this
    data; keeping them in one module without sockets, files or clocks makes
    them easy to test. Callers pass the current time in, from a clock that
    never goes back (the broker's monotonic ms). Every call is O(1) (the
    walks, O(what they return)), so 100,000 jobs cost no more per message
    than 10.

    Ownership: the table owns its job records (imgp_job.h), each with its
    own copy of its renditions. A returned imgp_job_t * is borrowed and
    stays valid until that job is removed; callers may change its plain
    fields (updated_at, code...) and its renditions (imgp_job_set_results,
    imgp_job_add_results), but change its phase only through the functions
    below, which keep the lists and counters right.
    Never reads a file or a socket; never decides policy (attempt limits,
    bounds) — the broker does.
*/
#ifndef IMGP_TABLE_H_INCLUDED
#define IMGP_TABLE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_job.h"

typedef struct _imgp_table_t imgp_table_t;

//  Create an empty table. Never NULL (aborts on OOM, like czmq).
imgp_table_t *imgp_table_new (void);

//  Destroy the table and every record in it (renditions too); safe on NULL
//  and twice.
void imgp_table_destroy (imgp_table_t **self_p);

//  Insert a copy of `record`, borrowed: the table's copy owns a copy of its
//  renditions, and the caller keeps (and clears) its own if it owns any.
//  Queued and processing records go to the back of the FIFO as queued,
//  keeping their worker and attempts (that worker may still finish that
//  attempt after a broker restart); done and failed records go to the back
//  of the finished list. Returns the table's record, or NULL when the id
//  is already held.
imgp_job_t *imgp_table_insert (imgp_table_t *self, const imgp_job_t *record);

//  The record for an id, or NULL.
imgp_job_t *imgp_table_lookup (imgp_table_t *self, const char *id);

//  Remove a job and free its record and renditions; `*job_p` is set to NULL.
void imgp_table_remove (imgp_table_t *self, imgp_job_t **job_p);

//  Counts: all jobs, jobs in the FIFO, jobs dispatched but not STARTED,
//  jobs dispatched and not finished (STARTED or not). O(1) each.
size_t imgp_table_size (imgp_table_t *self);
size_t imgp_table_queued (imgp_table_t *self);
size_t imgp_table_unstarted (imgp_table_t *self);
size_t imgp_table_inflight (imgp_table_t *self);

//  The job at the front of the FIFO (borrowed), or NULL when empty.
imgp_job_t *imgp_table_next (imgp_table_t *self);

//  A queued job was sent to `worker` at monotonic time `now`: it leaves the
//  FIFO, counts one more attempt, and that worker is the one whose results
//  for it count.
void imgp_table_dispatched (imgp_table_t *self, imgp_job_t *job, const char *worker,
                            int64_t now);

//  Its worker reported STARTED at `now`. Valid from any unfinished phase (a
//  late STARTED for a job already back in the FIFO takes it out again).
void imgp_table_started (imgp_table_t *self, imgp_job_t *job, int64_t now);

//  Put an in-flight job back at the FRONT of the FIFO (it waited longest).
//  Does not change attempts or worker: the next dispatch counts the next
//  one, and until then the late result of this one still counts.
void imgp_table_requeue (imgp_table_t *self, imgp_job_t *job);

//  The job ended: `state` is IMGP_STATE_DONE or IMGP_STATE_FAILED. Valid
//  from any unfinished phase; appended to the finished list, so set
//  job->updated_at to the finish time. The caller fills code/results.
void imgp_table_finish (imgp_table_t *self, imgp_job_t *job, imgp_state_t state);

//  An in-flight job past its deadline at monotonic time `now`: the one
//  dispatched longest ago, when that was more than `dispatch_ms` ago
//  without STARTED, else the one started longest ago, when more than
//  `job_ms` ago. `reason` is set to "dispatch_timeout" or "job_timeout".
//  NULL when none is late. Call it until NULL to take every late job.
imgp_job_t *imgp_table_overdue (imgp_table_t *self, int64_t now, int64_t dispatch_ms,
                                int64_t job_ms, const char **reason);

//  First in-flight job (dispatched or running) held by `worker`, or NULL;
//  held_next continues that walk (nothing may change the table between).
imgp_job_t *imgp_table_held_by (imgp_table_t *self, const char *worker);
imgp_job_t *imgp_table_held_next (imgp_table_t *self, const char *worker);

//  True when an unfinished job (queued or in flight) names `worker` as the
//  worker of its latest dispatch, whose result for it would still count.
bool imgp_table_names (imgp_table_t *self, const char *worker);

//  The finished job that finished first (eviction and TTL sweep), or NULL.
imgp_job_t *imgp_table_oldest_finished (imgp_table_t *self);

#endif

/*  imgp_job — one job's record: what the broker's table holds for a job and
    what the spool stores of it (times, attempts, error, renditions).

    Why its own module: the record is a plain value, copied by assignment
    all over the broker, except for its renditions. Almost every job has
    one; a job with several sizes, or of format=auto once variant jobs add
    WebP and AVIF, has up to IMGP_RESULTS_MAX (24). Held inline they made
    every record ~2.8 kB (280 MB of table at the default --max-jobs
    100,000) for the sake of a few jobs, so they live in an array of their
    own, sized by their count, and the functions below are the only code
    that allocates or frees it. A record costs sizeof (imgp_job_t) plus
    result_count * sizeof (imgp_result_t) (and malloc's overhead).

    Ownership (czmq style: who frees is written here):
    - an imgp_job_t value OWNS its `results` (malloc'd, `result_count`
      entries, NULL when 0) and frees them with imgp_job_clear; a record
      initialised with `= { ... }` owns none and needs no clear;
    - imgp_job_copy makes an owning copy;
    - a struct assignment (`imgp_job_t record = *job;`) makes a BORROWING
      copy: it shares the owner's array. It may change its plain fields
      (to save a changed record, say), never its renditions; it is never
      cleared and must not outlive the owner's array (the owner's next
      rendition change or its end);
    - a record passed as `const imgp_job_t *` is borrowed for the call:
      imgp_table_insert and an imgp_spool_scan callback copy what they keep;
    - a record a function fills (imgp_spool_record_decode) is the caller's,
      who clears it.
    Aborts on OOM, like czmq. Never touches a socket, file or clock.
*/
#ifndef IMGP_JOB_H_INCLUDED
#define IMGP_JOB_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"

//  Where the broker holds a job. Each phase is one list in the table.
typedef enum {
    IMGP_PHASE_QUEUED = 0,      //  in the FIFO, waiting for a resizer with credit
    IMGP_PHASE_DISPATCHED,      //  sent to its worker, no STARTED yet
    IMGP_PHASE_RUNNING,         //  a worker reported STARTED
    IMGP_PHASE_FINISHED         //  done or failed, kept until its TTL
} imgp_phase_t;

//  One job. Also the record the spool stores (times, attempts, error, results).
//  A done job holds every rendition it made (results, in the order of
//  their bytes in its OUT entry: rendition i starts at the sum of the bytes
//  before it). A job of format=auto may get more renditions later, made by
//  variant jobs: a variant job is a table entry of its own (its own id, for
//  the wire) whose `parent` names the job it works for; it is never saved
//  to the spool and its renditions are appended to its parent's.
typedef struct {
    char id [IMGP_ID_LEN + 1];              //  job id, valid (imgp_id_valid)
    imgp_state_t state;                     //  what clients see
    imgp_phase_t phase;                     //  where the broker holds it
    imgp_opts_t opts;                       //  thumbnail options
    char owner [IMGP_OWNER_MAX + 1];        //  SUBMIT's owner (API key name), "" none
    int64_t created_at;                     //  wall clock ms, when accepted
    int64_t updated_at;                     //  wall clock ms, last visible change
    int64_t bytes;                          //  size of the original
    int attempts;                           //  dispatches so far, 0..IMGP_ATTEMPTS_MAX
    char worker [IMGP_WORKER_MAX + 1];      //  worker of the latest dispatch, "" none yet
    int64_t dispatched_at;                  //  monotonic ms of last dispatch, 0 none
    int64_t started_at;                     //  monotonic ms of STARTED, 0 none
    char code [IMGP_CODE_MAX + 1];          //  failure code when failed
    char message [IMGP_MESSAGE_MAX + 1];    //  failure message when failed
    int result_count;                       //  renditions in results, 0 until done
    imgp_result_t *results;                 //  the renditions when done, owned (see
                                            //  the top); NULL when result_count is 0
    char parent [IMGP_ID_LEN + 1];          //  variant job: the job it works for; "" else
    unsigned variants_pending;              //  auto job: formats (1 << format) a variant
                                            //  job is making now; memory only
    unsigned variants_failed;               //  auto job: formats a variant job failed to
                                            //  make (not tried again); memory only
} imgp_job_t;

//  Replace the record's renditions with a copy of `count` (0..
//  IMGP_RESULTS_MAX) of `results` (borrowed; may be the record's own);
//  0 frees them. The record must own its renditions (not a borrowing copy).
void imgp_job_set_results (imgp_job_t *self, const imgp_result_t *results, int count);

//  Append a copy of `count` renditions; the total stays <= IMGP_RESULTS_MAX
//  (the caller checks). The record must own its renditions.
void imgp_job_add_results (imgp_job_t *self, const imgp_result_t *results, int count);

//  Make `dest` an owning copy of `source` (borrowed). What `dest` held
//  before is overwritten, not freed: clear it first if it owned renditions.
void imgp_job_copy (imgp_job_t *dest, const imgp_job_t *source);

//  Free the renditions the record owns: results NULL, result_count 0, the
//  other fields as they were. Safe twice and on a record that owns none.
void imgp_job_clear (imgp_job_t *self);

#endif

/*  imgp_resizer — the resizer's worker loop: PULL a JOB from the broker's
    ventilator, answer STARTED, make the thumbnail (imgp_thumb), PUSH DONE
    with the bytes or FAILED with a code and a message.

    Why: resizers are stateless and disposable; all a broker needs from one
    is its results and a steady proof of life with its free slots. That
    proof comes from a heartbeat actor with its own PUSH socket, so a long
    resize does not look like a dead worker, while a stopped (SIGSTOP) or
    wedged process does stop heartbeating. One job at a time (slots = 1):
    run one resizer per core. The receive high-water mark is 1, so at most
    one more job waits in our pipe; the broker keeps the real queue.

    On imgp_resizer_stop() (main calls it on SIGINT/SIGTERM; an embedder
    that keeps czmq's handler gets the same from zsys_interrupted), the job
    in progress is finished and its result sent, a last heartbeat
    says slots=0, and run() returns. A job still waiting in the pipe is
    dropped: the broker dispatches it again when no STARTED comes.

    Bounds: a message over imgp_msg_max_size (max_upload_bytes) is refused
    by libzmq (which also drops that connection; the jobs socket is then
    made again),
    so the broker sees no STARTED and re-dispatches until attempts run out.
    A thumbnail over max_upload_bytes (the broker's own limit) is not sent:
    the job fails with encode_error. It never decodes an image itself and
    never asserts on received bytes.
*/
#ifndef IMGP_RESIZER_H_INCLUDED
#define IMGP_RESIZER_H_INCLUDED

#include <stdint.h>

#include "imgp_msg.h"

typedef struct {
    const char *jobs;               //  endpoint of the broker's ventilator (PULL connects)
    const char *results;            //  endpoint of the broker's sink (PUSH connects)
    const char *name;               //  worker name prefix; NULL or "" for "<hostname>-<pid>"
    int64_t max_upload_bytes;       //  largest original, 1..IMGP_UPLOAD_LIMIT_MAX
    int heartbeat_ms;               //  heartbeat interval, > 0
} imgp_resizer_config_t;

typedef struct _imgp_resizer_t imgp_resizer_t;

//  Room a name prefix leaves for the random suffix ("-" and 8 hex digits).
#define IMGP_RESIZER_SUFFIX_LEN 9
#define IMGP_RESIZER_PREFIX_MAX (IMGP_WORKER_MAX - IMGP_RESIZER_SUFFIX_LEN)

//  Create a resizer from `config` (copied). Does not connect yet. The
//  worker name is the prefix (config->name, or "<hostname>-<pid>") plus a
//  random suffix, "-1f2e3d4c": a restarted container has the same hostname
//  and pid, and the broker must see the new process as a new worker, or it
//  would never count the old one lost. Returns NULL, with the reason
//  logged, when the prefix is not 1..IMGP_RESIZER_PREFIX_MAX printable
//  characters without spaces or max_upload_bytes is over
//  IMGP_UPLOAD_LIMIT_MAX. imgp_thumb_init() must have run.
imgp_resizer_t *imgp_resizer_new (const imgp_resizer_config_t *config);

//  Destroy; safe on NULL and twice. Not while run() is running.
void imgp_resizer_destroy (imgp_resizer_t **self_p);

//  Connect, start heartbeating and process jobs until interrupted or
//  stopped. The sockets live in the calling thread for the whole call.
//  Returns 0 after a clean stop, -1 when the sockets could not be set up
//  (reason logged).
int imgp_resizer_run (imgp_resizer_t *self);

//  Ask run() to return after the current job. Safe from any thread and
//  from a signal handler.
void imgp_resizer_stop (imgp_resizer_t *self);

//  Lower the CPU priority of the calling thread to `nice` (0..19; 0 leaves
//  it alone; a higher nice already set is kept) and switch it to
//  SCHED_BATCH, so a frontend on the same host answers uploads at once
//  while resizers run. On Linux both are per thread and a new thread
//  inherits them: call it in main() before any thread starts (czmq,
//  libvips), and every thread of the process has them. Logs
//  event=priority; returns 0, or -1 with a warning (the resizer still
//  works, at the old priority).
int imgp_resizer_set_priority (int nice);

//  The worker name used on the wire (borrowed).
const char *imgp_resizer_name (imgp_resizer_t *self);

//  Jobs finished so far (their DONE or FAILED made), for tests and logs.
int64_t imgp_resizer_jobs (imgp_resizer_t *self);

#endif

/*  imgp_resizer — the resizer: one connection to the broker's jobs
    endpoint (a DEALER to its ROUTER) that asks for work with READY and
    credit, takes JOBs, and answers each with STARTED, then DONE with the
    thumbnail (imgp_thumb) or FAILED with a code and a message.

    Why: resizers are stateless and disposable; all a broker needs from one
    is its results, a steady proof of life with its free slots, and how
    many jobs it may send it now (credit), all on the one connection so the
    broker knows which peer said what. READY goes on every connect, and
    again when the link thread could not run for a while (SIGSTOP): the
    broker may have counted us lost meanwhile, and kept no credit for us
    while the connection stayed up. The socket lives in a link actor,
    its own thread, so a long resize never delays a heartbeat, while a
    stopped (SIGSTOP) or wedged process does stop heartbeating. One job at
    a time (slots = 1): run one resizer per core. Capacity is slots + 1:
    one job waits ready in our inproc pipe beyond the one being worked on,
    so the resizer never idles for a round trip; the broker keeps the real
    queue, and a JOB beyond capacity (a broker over our credit) is dropped.

    An actor, like imgp_broker (malamute's shape): imgp_resizer_new
    starts it serving (worker and link threads up, the socket connecting;
    READY goes out once it is connected) and imgp_resizer_destroy stops
    it, so main() and the tests drive it the same way. On destroy (main
    calls it on SIGINT/SIGTERM) the job in progress (or the one the link
    has just said STARTED for) is finished and its result sent, a last
    heartbeat says slots=0, and the stop line `event=stopped jobs=N busy_ms=B
    waited_ms=W worker=NAME` is logged: B is the time spent on jobs, W
    the time the worker waited for a job between two jobs (waits that
    ended with a job), so W / (B + W) is its idle fraction while there was
    work; the benchmark reads it. A job still waiting in the pipe is
    dropped: the broker queues it again when it counts us lost.

    Memory: while jobs come, freed decode buffers stay with the process
    (imgp_thumb's malloc settings, which make the next decode fast); after
    2 s without a job they go back to the kernel (malloc_trim), so an idle
    resizer returns to near its idle size after a burst (event=trimmed).
    Measured 2026-12-06 with the corpus photos: idle 34 MB, 91-107 MB
    right after a burst, 36-37 MB 3 s later (without the trim: 91-98 MB
    for as long as it stays idle).

    Bounds: a message over imgp_msg_max_size (max_upload_bytes) is refused
    by libzmq, which drops that connection and does not make it again; we
    then make the socket again, so the broker sees no STARTED and
    re-dispatches until attempts run out. A thumbnail over
    max_upload_bytes (the broker's own limit) is not sent: the job fails
    with encode_error. It never decodes an image itself and never asserts
    on received bytes.
*/
#ifndef IMGP_RESIZER_H_INCLUDED
#define IMGP_RESIZER_H_INCLUDED

#include <stdint.h>

#include "imgp_msg.h"

typedef struct {
    const char *jobs;               //  endpoint of the broker's jobs ROUTER (DEALER connects)
    const char *name;               //  worker name prefix; NULL or "" for "<hostname>-<pid>"
    int64_t max_upload_bytes;       //  largest original, 1..IMGP_UPLOAD_LIMIT_MAX
    int heartbeat_ms;               //  heartbeat interval, > 0
    const char *curve_secret;       //  our CURVE _secret file, NULL for a plain link
    const char *curve_server;       //  the broker's public certificate (with curve_secret)
} imgp_resizer_config_t;

typedef struct _imgp_resizer_t imgp_resizer_t;

//  Room a name prefix leaves for the random suffix ("-" and 8 hex digits).
#define IMGP_RESIZER_SUFFIX_LEN 9
#define IMGP_RESIZER_PREFIX_MAX (IMGP_WORKER_MAX - IMGP_RESIZER_SUFFIX_LEN)

//  Create a resizer from `config` (copied) and start it serving: it
//  connects to config->jobs (libzmq retries until the broker is there),
//  says READY and takes jobs, in threads of its own. The
//  worker name is the prefix (config->name, or "<hostname>-<pid>") plus a
//  random suffix, "-1f2e3d4c": a restarted container has the same hostname
//  and pid, and the broker must see the new process as a new worker, or it
//  would never count the old one lost. Returns NULL, with the reason
//  logged, when the prefix is not 1..IMGP_RESIZER_PREFIX_MAX printable
//  characters without spaces or max_upload_bytes is over
//  IMGP_UPLOAD_LIMIT_MAX, or the CURVE key files cannot be read (both
//  or neither of curve_secret and curve_server must be set), or the
//  link could not be set up (no socket). imgp_thumb_init() must have run.
imgp_resizer_t *imgp_resizer_new (const imgp_resizer_config_t *config);

//  Stop serving: take no more jobs, finish the one in progress and send
//  its result, say slots 0, log the stop line; then free. Blocks until
//  the job in progress is done (up to the thumbnail time limit). Safe on
//  NULL and twice.
void imgp_resizer_destroy (imgp_resizer_t **self_p);

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

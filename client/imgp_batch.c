/*  imgp_batch — see imgp_batch.h.

    Threads: the caller's thread is the monitor; `parallel` workers take
    the next input from the shared stream, run it to its end (skip, or
    read, upload, wait, download, write), report it and take the next; a
    counter thread walks a directory a second time, ahead of them, for the
    bar's total; a signal thread (when config->signals) takes the signals by
    sigtimedwait, as every imgpipe program does (proto/imgp_signal.h): the
    signals are blocked in every thread of the run, so no handler ever
    interrupts a request. All shared state sits in one s_batch_t under one
    mutex; workers hold it to take an input (the walk's readdir and stat
    run there, one worker at a time, which is what a disk likes anyway), to
    mark a request or a write, and to report, never across a request, a
    file read or a write.

    The stall watchdog: civetweb 1.15 times out the response head only; a
    server that sends a head and then stalls the body, or never reads an
    upload, would block a worker forever, and its socket is out of our
    reach. So imgp_roundtrip tells, through the begin/end hooks, when each
    request started and its limit; the monitor wakes every 100 ms, and a
    request past its limit fails its file ("stalled") and is left behind:
    the thread is detached and, if its request ever returns, sees that it
    was abandoned and leaves without reporting, writing or taking an input.
    The batch goes on with the others; when none are left, the inputs not
    yet started fail too. Ctrl-C abandons the files in flight the same way
    once the grace has passed, but they count as left, not failed. The
    shared state is reference-counted, so a thread left behind may outlive
    imgp_batch_run safely; it touches nothing but its own members and the
    mutex.
*/
#include "imgp_batch.h"

#include "imgp_file.h"
#include "imgp_http_client.h"
#include "imgp_log.h"
#include "imgp_progress.h"
#include "imgp_report.h"
#include "imgp_resume.h"
#include "imgp_roundtrip.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_TICK_MS 100           //  how often the monitor looks (stalls, the bar)
#define S_COUNT_LEFT_MS 2000    //  after Ctrl-C, longest spent counting what is left
#define S_EXIT_INTERRUPTED 130  //  128 + SIGINT, as shells report it

typedef struct _s_worker_t s_worker_t;

typedef struct {
    pthread_mutex_t mutex;      //  guards every member below except config
    pthread_cond_t changed;     //  a file ended, a worker left, a write ended
    int refs;                   //  the run plus every worker thread alive
    imgp_batch_config_t config; //  copy; strings point at the copies below
    char *query;                //  owned copy of the options query
    char *outdir;               //  owned copy of OUTDIR
    imgp_inputs_t *inputs;      //  borrowed from the caller for the run
    imgp_resume_t *resume;      //  what an earlier run did (owned by the run)
    imgp_report_t *report;      //  OUTDIR/imgpipe-report.jsonl (owned by the run)
    imgp_progress_t *progress;  //  the bar or lines, and counts (owned by the run)
    bool report_broken;         //  a report line could not be written (said once)
    bool fed;                   //  the stream has no input left
    size_t in_flight;           //  inputs taken by workers and not ended
    size_t left;                //  inputs abandoned by Ctrl-C
    size_t left_uploaded;       //  of those, uploaded: kept as pending jobs
    bool stop;                  //  Ctrl-C: no new file starts
    long long stop_at;          //  when it came, monotonic ms
    bool exiting;               //  second Ctrl-C: no write starts
    int writing;                //  workers writing an output now
    bool finished;              //  the run is over: the signal and counter threads leave
    imgp_walk_t *counter;       //  a walk counting ahead of the stream (owned), or NULL
    size_t counted;             //  inputs the counter found so far
    bool counted_all;           //  it reached the end
    int live;                   //  workers running and not abandoned
    int slots;                  //  entries in workers, threads, joinable
    s_worker_t **workers;       //  per slot: the worker, NULL once gone
    pthread_t *threads;         //  per slot: its thread
    bool *joinable;             //  per slot: started, not detached
} s_batch_t;

struct _s_worker_t {
    s_batch_t *batch;           //  shared state, one reference held
    int slot;                   //  index in batch->workers
    imgp_http_client_t *http;   //  this thread's HTTP client (owned)
    char *input;                //  the input in hand (owned), NULL between files
    char *output;               //  its output path (owned)
    char *job;                  //  a job an earlier run left for it (owned), or NULL
    char id [IMGP_ID_LEN + 1];  //  its job once uploaded (or re-attached), else ""
    long long since;            //  start of the request in flight, 0 when none
    long long limit_ms;         //  how long that request may take
    bool abandoned;             //  the monitor gave up on this thread
};

static long long
s_now_ms (void)
{
    return (long long) zclock_mono ();
}

//  --------------------------------------------------------------------------
//  Shared state

static void
s_batch_free (s_batch_t *self)
{
    pthread_mutex_destroy (&self->mutex);
    pthread_cond_destroy (&self->changed);
    free (self->query);
    free (self->outdir);
    free (self->workers);
    free (self->threads);
    free (self->joinable);
    free (self);
}

static s_batch_t *
s_batch_new (const imgp_batch_config_t *config, imgp_inputs_t *inputs)
{
    s_batch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->refs = 1;
    self->config = *config;
    self->query = strdup (config->query ? config->query : "");
    self->outdir = strdup (config->outdir);
    self->config.query = self->query;
    self->config.outdir = self->outdir;
    self->config.url = NULL;            //  only the run reads it, from `config`
    self->config.resume_command = NULL; //  likewise
    self->inputs = inputs;
    //  No more threads than a manifest has lines (a walk's size is unknown).
    long long total = imgp_inputs_total (inputs);
    self->slots = total >= 1 && total < config->parallel ? (int) total : config->parallel;
    self->workers = calloc ((size_t) self->slots, sizeof (s_worker_t *));
    self->threads = calloc ((size_t) self->slots, sizeof *self->threads);
    self->joinable = calloc ((size_t) self->slots, sizeof *self->joinable);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_mutex_init (&self->mutex, NULL);
    pthread_cond_init (&self->changed, &attr);
    pthread_condattr_destroy (&attr);
    if (!self->query || !self->outdir || !self->workers || !self->threads || !self->joinable) {
        s_batch_free (self);
        return NULL;
    }
    return self;
}

//  Drop one reference; the last one frees.
static void
s_batch_unref (s_batch_t **self_p)
{
    s_batch_t *self = *self_p;
    *self_p = NULL;
    pthread_mutex_lock (&self->mutex);
    bool last = --self->refs == 0;
    pthread_mutex_unlock (&self->mutex);
    if (last)
        s_batch_free (self);
}

//  One report line; says once when the report cannot be written. Caller
//  holds the mutex.
static void
s_report_locked (s_batch_t *self, const imgp_report_line_t *line)
{
    if (imgp_report_add (self->report, line) == 0 || self->report_broken)
        return;
    self->report_broken = true;
    char text [4200];
    snprintf (text, sizeof text, "imgpipe: cannot write the report '%s'; going on without it",
              imgp_report_path (self->report));
    imgp_progress_say (self->progress, text);
}

//  An input failed. Caller holds the mutex.
static void
s_failed_locked (s_batch_t *self, const char *input, const char *id, const char *code,
                 const char *message)
{
    imgp_progress_failed (self->progress, input, code, message);
    s_report_locked (self, &(imgp_report_line_t) {
        .input = input, .id = id, .status = "failed", .code = code, .message = message });
}

//  --------------------------------------------------------------------------
//  Taking inputs

//  The inputs seen so far become the total of the bar. Caller holds the
//  mutex.
static void
s_total_locked (s_batch_t *self)
{
    long long total = imgp_inputs_total (self->inputs);
    size_t seen = imgp_inputs_seen (self->inputs);
    if (total >= 0)
        imgp_progress_total (self->progress, (size_t) total, true);
    else
        imgp_progress_total (self->progress, seen > self->counted ? seen : self->counted,
                             self->counted_all);
}

//  The next input to work on, skipping (and reporting) those with a
//  problem or made before. Returns 1 with `input` set, 0 when the stream
//  is over. Caller holds the mutex.
static int
s_next_locked (s_batch_t *self, imgp_input_t *input)
{
    while (imgp_inputs_next (self->inputs, input) == 1) {
        s_total_locked (self);
        if (input->problem)
            s_failed_locked (self, input->path, NULL, "refused", input->problem);
        else
        if (imgp_resume_done (self->resume, input->output)) {
            imgp_progress_skipped (self->progress, input->path, input->output);
            s_report_locked (self, &(imgp_report_line_t) {
                .input = input->path, .status = "skipped", .output = input->output });
        }
        else
            return 1;
    }
    self->fed = true;
    s_total_locked (self);
    return 0;
}

//  The worker's file has ended (or was left): it holds none. Caller
//  holds the mutex; the monitor reads `input` to tell who is in flight.
static void
s_drop_locked (s_worker_t *self)
{
    self->batch->in_flight--;
    free (self->input);
    free (self->output);
    free (self->job);
    self->input = self->output = self->job = NULL;
    self->id [0] = 0;
}

//  Take the next input into the worker. Returns 0, or -1 when there is
//  none for it (the stream is over, Ctrl-C, or the worker was left behind).
static int
s_take (s_worker_t *self)
{
    s_batch_t *batch = self->batch;
    int rc = -1;
    pthread_mutex_lock (&batch->mutex);
    imgp_input_t input;
    if (!self->abandoned && !batch->stop && !batch->fed && s_next_locked (batch, &input)) {
        self->input = strdup (input.path);
        self->output = strdup (input.output);
        self->job = imgp_resume_take_job (batch->resume, input.output);
        batch->in_flight++;
        rc = 0;
        if (!self->input || !self->output) {
            s_failed_locked (batch, input.path, NULL, "unreadable", "out of memory");
            s_drop_locked (self);
            rc = -1;
        }
    }
    pthread_mutex_unlock (&batch->mutex);
    return rc;
}

//  --------------------------------------------------------------------------
//  One file, in the worker's thread

//  imgp_roundtrip's watchdog hooks: the monitor sees each request.
static void
s_request_begin (void *hook, long long limit_ms)
{
    s_worker_t *self = hook;
    pthread_mutex_lock (&self->batch->mutex);
    self->since = s_now_ms ();
    self->limit_ms = limit_ms;
    pthread_mutex_unlock (&self->batch->mutex);
}

static bool
s_request_end (void *hook)
{
    s_worker_t *self = hook;
    pthread_mutex_lock (&self->batch->mutex);
    self->since = 0;
    bool wanted = !self->abandoned;
    pthread_mutex_unlock (&self->batch->mutex);
    return wanted;
}

//  Make the output's directory and write the thumbnail, unless the run
//  gave up on this worker or is exiting: a write, once started, is always
//  finished (the monitor and a second Ctrl-C wait for it).
static imgp_roundtrip_status_t
s_write (s_worker_t *self, imgp_roundtrip_result_t *result)
{
    s_batch_t *batch = self->batch;
    pthread_mutex_lock (&batch->mutex);
    bool go = !self->abandoned && !batch->exiting;
    if (go)
        batch->writing++;
    pthread_mutex_unlock (&batch->mutex);
    if (!go)
        return IMGP_ROUNDTRIP_ABANDONED;
    char dir [4096], problem [256];
    snprintf (dir, sizeof dir, "%s", self->output);
    char *slash = strrchr (dir, '/');
    if (slash && slash != dir)
        *slash = 0;
    int rc = slash ? imgp_file_mkdirs (dir, problem, sizeof problem) : 0;
    if (rc == 0)
        rc = imgp_file_write (self->output, result->thumb, result->thumb_size, problem,
                              sizeof problem);
    pthread_mutex_lock (&batch->mutex);
    batch->writing--;
    pthread_cond_broadcast (&batch->changed);
    pthread_mutex_unlock (&batch->mutex);
    if (rc != 0) {
        snprintf (result->error.code, sizeof result->error.code, "unwritable");
        snprintf (result->error.message, sizeof result->error.message, "%s: %s",
                  self->output, problem);
        return IMGP_ROUNDTRIP_FAILED;
    }
    imgp_debug ("job=%s event=written bytes=%zu path=\"%s\"", result->id, result->thumb_size,
                self->output);
    return IMGP_ROUNDTRIP_DONE;
}

//  True when the output is the input itself (a manifest that lists a
//  file of OUTDIR): writing it would destroy the original.
static bool
s_output_is_input (const s_worker_t *self)
{
    struct stat in, out;
    return stat (self->input, &in) == 0 && stat (self->output, &out) == 0
        && in.st_dev == out.st_dev && in.st_ino == out.st_ino;
}

//  The job of this worker's file is `id`: the monitor may keep it as a
//  pending job if Ctrl-C leaves it in flight.
static void
s_job_known (s_worker_t *self, const char *id)
{
    pthread_mutex_lock (&self->batch->mutex);
    memcpy (self->id, id, IMGP_ID_LEN + 1);
    pthread_mutex_unlock (&self->batch->mutex);
}

//  Wait for the job an earlier run left in flight for this file. Returns
//  DONE or the end, or FAILED with no id when the server no longer knows
//  the job (then the file is uploaded again).
static imgp_roundtrip_status_t
s_reattach (s_worker_t *self, const imgp_roundtrip_t *trip, imgp_roundtrip_result_t *result)
{
    memcpy (result->id, self->job, IMGP_ID_LEN + 1);
    s_job_known (self, result->id);
    imgp_debug ("job=%s event=reattached path=\"%s\"", result->id, self->input);
    imgp_roundtrip_status_t status = imgp_roundtrip_wait (trip, result);
    if (status == IMGP_ROUNDTRIP_FAILED && imgp_http_client_status (self->http) == 404)
        memset (result, 0, sizeof *result);
    return status;
}

//  Upload the file (read at most max_upload bytes; in memory only until
//  the upload is answered).
static imgp_roundtrip_status_t
s_upload (s_worker_t *self, const imgp_roundtrip_t *trip, imgp_roundtrip_result_t *result)
{
    char *data = NULL;
    size_t size = 0;
    if (imgp_file_read (self->input, self->batch->config.max_upload, &data, &size,
                        result->error.message, sizeof result->error.message) != 0) {
        snprintf (result->error.code, sizeof result->error.code, "unreadable");
        return IMGP_ROUNDTRIP_FAILED;
    }
    imgp_roundtrip_status_t status = imgp_roundtrip_upload (trip, data, size, result);
    free (data);
    if (status == IMGP_ROUNDTRIP_DONE) {
        s_job_known (self, result->id);
        status = imgp_roundtrip_wait (trip, result);
    }
    return status;
}

//  Read, upload, wait, download, write; or, for a job an earlier run left
//  in flight, wait, download, write.
static imgp_roundtrip_status_t
s_process (s_worker_t *self, imgp_roundtrip_result_t *result)
{
    const imgp_batch_config_t *config = &self->batch->config;
    imgp_roundtrip_t trip = {
        .http = self->http, .query = config->query, .long_poll_s = config->long_poll_s,
        .timeout_ms = config->timeout_ms, .deadline = s_now_ms () + config->wait_ms,
        .wait_s = config->wait_ms / 1000, .begin = s_request_begin, .end = s_request_end,
        .hook = self
    };
    if (s_output_is_input (self)) {
        snprintf (result->error.code, sizeof result->error.code, "refused");
        snprintf (result->error.message, sizeof result->error.message, "its thumbnail would "
                  "replace it (%s); choose another OUTDIR", self->output);
        return IMGP_ROUNDTRIP_FAILED;
    }
    imgp_roundtrip_status_t status;
    if (self->job) {
        status = s_reattach (self, &trip, result);
        if (status == IMGP_ROUNDTRIP_FAILED && !*result->id)
            status = s_upload (self, &trip, result);     //  the old job is gone
    }
    else
        status = s_upload (self, &trip, result);
    if (status == IMGP_ROUNDTRIP_DONE)
        status = imgp_roundtrip_download (&trip, result);
    if (status == IMGP_ROUNDTRIP_DONE)
        status = s_write (self, result);
    return status;
}

//  The end of the file in hand: its line and report line, unless the
//  monitor gave up on this worker (it reported the file itself).
static void
s_end (s_worker_t *self, imgp_roundtrip_status_t status, const imgp_roundtrip_result_t *result,
       long long ms)
{
    s_batch_t *batch = self->batch;
    pthread_mutex_lock (&batch->mutex);
    if (!self->abandoned) {
        if (status == IMGP_ROUNDTRIP_DONE) {
            imgp_progress_done (batch->progress, self->input, self->output, result->width,
                                result->height, ms, result->worker);
            s_report_locked (batch, &(imgp_report_line_t) {
                .input = self->input, .id = result->id, .status = "done",
                .output = self->output, .worker = result->worker });
        }
        else
            s_failed_locked (batch, self->input, result->id, result->error.code,
                             result->error.message);
        s_drop_locked (self);
        pthread_cond_broadcast (&batch->changed);
    }
    pthread_mutex_unlock (&batch->mutex);
}

//  --------------------------------------------------------------------------
//  Worker threads

//  The end of a worker thread: it frees itself and its reference.
static void
s_worker_leave (s_worker_t *self)
{
    s_batch_t *batch = self->batch;
    pthread_mutex_lock (&batch->mutex);
    if (!self->abandoned) {
        batch->workers [self->slot] = NULL;
        batch->live--;
        pthread_cond_broadcast (&batch->changed);
    }
    pthread_mutex_unlock (&batch->mutex);
    imgp_http_client_destroy (&self->http);
    free (self->input);
    free (self->output);
    free (self->job);
    free (self);
    s_batch_unref (&batch);
}

static void *
s_worker_main (void *arg)
{
    s_worker_t *self = arg;
    while (s_take (self) == 0) {
        imgp_roundtrip_result_t result;
        memset (&result, 0, sizeof result);
        long long start = s_now_ms ();
        imgp_roundtrip_status_t status = s_process (self, &result);
        if (status == IMGP_ROUNDTRIP_ABANDONED)
            break;
        s_end (self, status, &result, s_now_ms () - start);
    }
    s_worker_leave (self);
    return NULL;
}

//  Start the worker of `slot`. Returns 0, or -1 (nothing left running).
static int
s_worker_start (s_batch_t *batch, int slot, const char *url, char *error, size_t error_size)
{
    s_worker_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    self->batch = batch;
    self->slot = slot;
    self->http = imgp_http_client_new (url, error, error_size);
    if (!self->http) {
        free (self);
        return -1;
    }
    pthread_mutex_lock (&batch->mutex);
    batch->refs++;
    batch->live++;
    batch->workers [slot] = self;
    int rc = pthread_create (&batch->threads [slot], NULL, s_worker_main, self);
    if (rc == 0)
        batch->joinable [slot] = true;
    else {
        batch->refs--;
        batch->live--;
        batch->workers [slot] = NULL;
    }
    pthread_mutex_unlock (&batch->mutex);
    if (rc != 0) {
        snprintf (error, error_size, "cannot start a thread: %s", strerror (rc));
        imgp_http_client_destroy (&self->http);
        free (self);
        return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Signals: a thread that takes SIGINT/SIGTERM while the run lasts

//  The first signal stops the run gently; the second exits at once, after
//  any write in progress.
static void
s_signal_locked (s_batch_t *self, int signum)
{
    if (!self->stop) {
        self->stop = true;
        self->stop_at = s_now_ms ();
        char text [200];
        snprintf (text, sizeof text, "imgpipe: %s: stopping; %zu file%s in flight get %d s "
                  "to end (Ctrl-C again to quit at once)", signum == SIGINT ? "Ctrl-C"
                  : signum == SIGHUP ? "SIGHUP" : "SIGTERM",
                  self->in_flight, self->in_flight == 1 ? "" : "s",
                  IMGP_BATCH_STOP_GRACE_MS / 1000);
        imgp_progress_say (self->progress, text);
        pthread_cond_broadcast (&self->changed);
        return;
    }
    self->exiting = true;
    while (self->writing > 0)
        pthread_cond_wait (&self->changed, &self->mutex);
    //  The jobs in flight are kept for the resume: one small local write.
    for (int slot = 0; slot < self->slots; slot++)
        if (self->workers [slot] && self->workers [slot]->input && *self->workers [slot]->id)
            imgp_resume_pending (self->resume, self->workers [slot]->output,
                                 self->workers [slot]->id);
    char error [256];
    imgp_resume_save (self->resume, error, sizeof error);
    imgp_progress_say (self->progress, "imgpipe: interrupted again: quitting now; run the "
                       "same command again to resume");
    _exit (S_EXIT_INTERRUPTED);
}

//  The signals a run takes: Ctrl-C, a polite kill, a terminal that closed.
static void
s_signal_set (sigset_t *signals)
{
    sigemptyset (signals);
    sigaddset (signals, SIGINT);
    sigaddset (signals, SIGTERM);
    sigaddset (signals, SIGHUP);
}

static void *
s_signals_main (void *arg)
{
    s_batch_t *self = arg;
    sigset_t signals;
    s_signal_set (&signals);
    struct timespec tick = { 0, S_TICK_MS * 1000000L };
    while (true) {
        int signum = sigtimedwait (&signals, NULL, &tick);
        pthread_mutex_lock (&self->mutex);
        bool finished = self->finished;
        if (signum > 0 && !finished)
            s_signal_locked (self, signum);
        pthread_mutex_unlock (&self->mutex);
        if (finished)
            return NULL;
    }
}

//  --------------------------------------------------------------------------
//  The counter: a second walk of the tree, ahead of the workers, so the
//  bar's total and time left are right long before the stream reaches
//  the end (a stat per file: 100 000 files in well under a second on a
//  warm disk). It reports every S_COUNT_STEP files and leaves when the
//  run is over.

#define S_COUNT_STEP 256

static void *
s_counter_main (void *arg)
{
    s_batch_t *self = arg;
    const char *path, *relative;
    char problem [256];
    size_t count = 0;
    bool finished = false;
    while (!finished
       &&  imgp_walk_next (self->counter, &path, &relative, problem, sizeof problem)) {
        if (++count % S_COUNT_STEP)
            continue;
        pthread_mutex_lock (&self->mutex);
        self->counted = count;
        finished = self->finished;
        pthread_mutex_unlock (&self->mutex);
    }
    pthread_mutex_lock (&self->mutex);
    self->counted = count;
    self->counted_all = !finished;
    s_total_locked (self);
    pthread_mutex_unlock (&self->mutex);
    return NULL;
}

//  --------------------------------------------------------------------------
//  The monitor, in the caller's thread

//  Leave a worker behind: its thread is detached and never reports. Its
//  file is reported by the caller. Caller holds the mutex.
static void
s_abandon_locked (s_batch_t *self, s_worker_t *worker)
{
    worker->abandoned = true;
    self->workers [worker->slot] = NULL;
    self->live--;
    self->in_flight--;          //  its input stays its own, freed when it leaves
    pthread_detach (self->threads [worker->slot]);
    self->joinable [worker->slot] = false;
}

//  Give up on every request older than its limit. Caller holds the mutex.
static void
s_abandon_stalled_locked (s_batch_t *self, long long now)
{
    for (int slot = 0; slot < self->slots; slot++) {
        s_worker_t *worker = self->workers [slot];
        if (!worker || worker->since == 0 || now - worker->since <= worker->limit_ms)
            continue;
        char message [200];
        snprintf (message, sizeof message, "no whole answer from the server within %lld ms; "
                  "going on without this connection", worker->limit_ms);
        s_failed_locked (self, worker->input, NULL, "stalled", message);
        s_abandon_locked (self, worker);
    }
}

//  Ctrl-C's grace is over: every file in flight that is not being written
//  is left. Caller holds the mutex.
static void
s_abandon_in_flight_locked (s_batch_t *self)
{
    for (int slot = 0; slot < self->slots; slot++) {
        s_worker_t *worker = self->workers [slot];
        if (worker && worker->input) {
            if (*worker->id) {
                imgp_resume_pending (self->resume, worker->output, worker->id);
                self->left_uploaded++;
            }
            s_abandon_locked (self, worker);
            self->left++;
        }
    }
}

//  No worker is left: every input not taken fails. Caller holds the mutex.
static void
s_fail_untaken_locked (s_batch_t *self)
{
    imgp_input_t input;
    while (s_next_locked (self, &input))
        s_failed_locked (self, input.path, NULL, "not_sent",
                         "every connection to the server stalled");
}

static void
s_monitor (s_batch_t *self)
{
    pthread_mutex_lock (&self->mutex);
    while (!(self->fed || self->stop) || self->in_flight > 0) {
        if (self->live == 0 && !self->stop) {
            s_fail_untaken_locked (self);
            break;
        }
        struct timespec until;
        clock_gettime (CLOCK_MONOTONIC, &until);
        until.tv_nsec += S_TICK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait (&self->changed, &self->mutex, &until);
        long long now = s_now_ms ();
        s_abandon_stalled_locked (self, now);
        imgp_progress_tick (self->progress);
        if (self->stop && now - self->stop_at >= IMGP_BATCH_STOP_GRACE_MS && self->writing == 0)
            s_abandon_in_flight_locked (self);
    }
    pthread_mutex_unlock (&self->mutex);
}

//  After Ctrl-C: the inputs not ended, counted through the rest of the
//  stream (those made before excluded) for up to S_COUNT_LEFT_MS.
//  Returns the count; *all is false when time ran out first. No worker
//  takes inputs any more. Caller holds the mutex.
static size_t
s_count_left (s_batch_t *self, bool *all)
{
    size_t left = self->left;
    long long until = s_now_ms () + S_COUNT_LEFT_MS;
    imgp_input_t input;
    *all = true;
    while (imgp_inputs_next (self->inputs, &input) == 1) {
        if (input.problem || !imgp_resume_done (self->resume, input.output))
            left++;
        if (s_now_ms () > until) {
            *all = false;
            break;
        }
    }
    return left;
}

//  The end of an interrupted run: what is left and how to resume.
static void
s_say_left (s_batch_t *self, const char *resume_command, imgp_batch_stats_t *stats)
{
    bool all;
    stats->left = s_count_left (self, &all);
    //  A resumed run waits for the jobs left in flight instead of
    //  uploading them again, and tries the failed files again: say so.
    size_t failed = imgp_progress_failed_count (self->progress);
    char text [8400], also [160] = "";
    int also_len = 0;
    if (self->left_uploaded > 0)
        also_len = snprintf (also, sizeof also, " (%zu uploaded already: a resume waits for "
                             "their jobs)", self->left_uploaded);
    if (failed > 0)
        snprintf (also + also_len, sizeof also - (size_t) also_len,
                  " (and %zu failed, tried again)", failed);
    int len = snprintf (text, sizeof text, "interrupted: %s%zu file%s left%s",
                        all ? "" : "at least ", stats->left, stats->left == 1 ? "" : "s", also);
    if (resume_command)
        snprintf (text + len, sizeof text - (size_t) len, "; to resume, run:\n  %s",
                  resume_command);
    imgp_progress_say (self->progress, text);
}

//  --------------------------------------------------------------------------
//  The run

//  The run's own objects: resume state, report, progress. Returns 0 or -1
//  with a message.
static int
s_batch_open (s_batch_t *self, char *error, size_t error_size)
{
    self->resume = imgp_resume_new (self->outdir, self->query, error, error_size);
    if (!self->resume)
        return -1;
    self->report = imgp_report_new (self->outdir, error, error_size);
    if (!self->report)
        return -1;
    self->progress = imgp_progress_new (self->config.out, self->config.bar);
    if (!self->progress) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    if (imgp_resume_same (self->resume)) {
        char text [4200];
        snprintf (text, sizeof text, "resuming in %s: thumbnails made before with these "
                  "options are skipped", self->outdir);
        imgp_progress_say (self->progress, text);
    }
    return 0;
}

static void
s_batch_close (s_batch_t *self)
{
    imgp_resume_destroy (&self->resume);
    imgp_report_destroy (&self->report);
    imgp_progress_destroy (&self->progress);
}

//  Start the workers. Returns how many started (0: error says why).
static int
s_workers_start (s_batch_t *self, const char *url, char *error, size_t error_size)
{
    int started = 0;
    for (int slot = 0; slot < self->slots; slot++)
        if (s_worker_start (self, slot, url, error, error_size) == 0)
            started++;
        else
        if (started == 0)
            break;              //  a bad URL fails every slot alike
    return started;
}

static void
s_run (s_batch_t *self, const imgp_batch_config_t *config, imgp_batch_stats_t *stats)
{
    s_monitor (self);
    for (int slot = 0; slot < self->slots; slot++)
        if (self->joinable [slot])
            pthread_join (self->threads [slot], NULL);
    //  Under the lock: the counter thread may still read the stream's counts.
    pthread_mutex_lock (&self->mutex);
    stats->interrupted = self->stop;
    if (stats->interrupted)
        s_say_left (self, config->resume_command, stats);
    char error [4400];
    if (imgp_resume_save (self->resume, error, sizeof error) != 0) {
        char text [4500];
        snprintf (text, sizeof text, "imgpipe: cannot keep the jobs in flight: %s; a resume "
                  "uploads their files again", error);
        imgp_progress_say (self->progress, text);
    }
    pthread_mutex_unlock (&self->mutex);
    imgp_progress_summary (self->progress);
    stats->done = imgp_progress_done_count (self->progress);
    stats->skipped = imgp_progress_skipped_count (self->progress);
    stats->failed = imgp_progress_failed_count (self->progress);
    stats->elapsed_ms = imgp_progress_elapsed_ms (self->progress);
}

int
imgp_batch_run (const imgp_batch_config_t *config, imgp_inputs_t *inputs,
                imgp_batch_stats_t *stats, char *error, size_t error_size)
{
    assert (config && config->url && config->out && config->outdir && config->parallel >= 1);
    assert (inputs && stats && error);
    memset (stats, 0, sizeof *stats);
    s_batch_t *self = s_batch_new (config, inputs);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    //  Blocked before any thread starts, so every thread of the run inherits it.
    sigset_t signals, saved;
    s_signal_set (&signals);
    pthread_t signal_thread, counter_thread;
    bool signal_thread_on = false, counter_thread_on = false;
    if (config->signals)
        pthread_sigmask (SIG_BLOCK, &signals, &saved);
    int rc = s_batch_open (self, error, error_size);
    if (rc == 0 && config->signals)
        signal_thread_on = pthread_create (&signal_thread, NULL, s_signals_main, self) == 0;
    self->counter = rc == 0 ? imgp_inputs_walk_again (inputs) : NULL;
    if (self->counter)
        counter_thread_on = pthread_create (&counter_thread, NULL, s_counter_main, self) == 0;
    if (rc == 0 && s_workers_start (self, config->url, error, error_size) == 0)
        rc = -1;
    if (rc == 0)
        s_run (self, config, stats);
    pthread_mutex_lock (&self->mutex);
    self->finished = true;
    pthread_mutex_unlock (&self->mutex);
    if (signal_thread_on)
        pthread_join (signal_thread, NULL);
    if (counter_thread_on)
        pthread_join (counter_thread, NULL);
    imgp_walk_destroy (&self->counter);
    if (config->signals) {
        //  A signal that came after the signal thread left would kill the
        //  process once unblocked, after the run has ended well: drop it.
        struct timespec none = { 0, 0 };
        while (sigtimedwait (&signals, NULL, &none) > 0)
            ;
        pthread_sigmask (SIG_SETMASK, &saved, NULL);
    }
    s_batch_close (self);
    s_batch_unref (&self);
    if (rc != 0)
        return -1;
    return stats->interrupted ? 2 : stats->failed > 0 ? 1 : 0;
}

/*  imgp_batch — see imgp_batch.h.

    Threads: the caller's thread is the monitor; `parallel` workers take
    the next input from a shared index, run it to its end (read, upload,
    poll, download, write), print its line and take the next. All shared
    state sits in one s_batch_t under one mutex; workers hold it only to
    take an index, to mark a request in flight, and to print a line, never
    across a request or a file read.

    The stall watchdog: civetweb 1.15 times out the response head only; a
    server that sends a head and then stalls the body, or never reads an
    upload, would block a worker forever, and its socket is out of our
    reach. So each worker marks when its request started and how long the
    server was asked to hold it (?wait=); the monitor wakes every 250 ms,
    and a request older than timeout + its wait + 5 s fails its
    file ("stalled") and is left behind: the thread is detached and, if its
    request ever returns, sees that it was abandoned and leaves without
    printing or touching the inputs. The batch goes on with the others;
    when none are left, the files not yet started fail too. The shared
    state is reference-counted, so a thread left behind may outlive
    imgp_batch_run safely.
*/
#include "imgp_batch.h"

#include "imgp_api.h"
#include "imgp_file.h"
#include "imgp_http_client.h"
#include "imgp_id.h"
#include "imgp_log.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_STALL_GRACE_MS 5000   //  beyond the head timeout, before "stalled"
#define S_TICK_MS 250           //  how often the monitor looks for stalls
#define S_POLL_FIRST_MS 50      //  first pause between status polls not held
#define S_POLL_MAX_MS 1000      //  such pauses back off to this
#define S_REFUSED_FIRST_MS 250  //  first wait after a refused connection
#define S_REFUSED_MAX_MS 2000   //  backoff for refused connections stops here
#define S_BUSY_DEFAULT_MS 1000  //  wait after a 503/429 without Retry-After

typedef struct _s_worker_t s_worker_t;

typedef struct {
    pthread_mutex_t mutex;      //  guards every member below except config
    pthread_cond_t changed;     //  a line was printed or a worker left
    int refs;                   //  the run plus every worker thread alive
    imgp_batch_config_t config; //  copy; config.query points at query
    char *query;                //  owned copy of the options query
    imgp_inputs_t *inputs;      //  borrowed from the caller for the run
    size_t total;               //  number of inputs
    size_t next;                //  next input to take
    size_t reported;            //  inputs whose line is printed
    size_t done;                //  thumbnails written
    size_t failed;              //  inputs failed
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
    size_t index;               //  input being worked on
    long long since;            //  start of the request in flight, 0 when none
    long long held_ms;          //  the ?wait= it asked for, in ms
    bool abandoned;             //  the monitor gave up on this thread
};

typedef enum {
    S_DONE = 0,                 //  the step (or the file) succeeded
    S_FAILED,                   //  the file failed; the outcome says why
    S_ABANDONED                 //  the monitor left this thread behind
} s_result_t;

typedef struct {
    imgp_api_error_t error;     //  why the file failed
    int width;                  //  thumbnail width when done
    int height;                 //  thumbnail height when done
} s_outcome_t;

static long long
s_now_ms (void)
{
    return (long long) zclock_mono ();
}

//  --------------------------------------------------------------------------
//  Shared state

static s_batch_t *
s_batch_new (const imgp_batch_config_t *config, imgp_inputs_t *inputs, int slots)
{
    s_batch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->refs = 1;
    self->config = *config;
    self->query = strdup (config->query ? config->query : "");
    self->config.query = self->query;
    self->config.url = NULL;            //  only the run reads it, from `config`
    self->inputs = inputs;
    self->total = imgp_inputs_size (inputs);
    self->slots = slots;
    self->workers = calloc ((size_t) slots, sizeof (s_worker_t *));
    self->threads = calloc ((size_t) slots, sizeof *self->threads);
    self->joinable = calloc ((size_t) slots, sizeof *self->joinable);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_mutex_init (&self->mutex, NULL);
    pthread_cond_init (&self->changed, &attr);
    pthread_condattr_destroy (&attr);
    if (!self->query || !self->workers || !self->threads || !self->joinable) {
        free (self->query);
        free (self->workers);
        free (self->threads);
        free (self->joinable);
        pthread_mutex_destroy (&self->mutex);
        pthread_cond_destroy (&self->changed);
        free (self);
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
    if (!last)
        return;
    pthread_mutex_destroy (&self->mutex);
    pthread_cond_destroy (&self->changed);
    free (self->query);
    free (self->workers);
    free (self->threads);
    free (self->joinable);
    free (self);
}

//  Copy `text` for a one-line report: control characters become spaces.
static void
s_clean (char *dest, size_t dest_size, const char *text)
{
    snprintf (dest, dest_size, "%s", text);
    for (char *c = dest; *c; c++)
        if ((unsigned char) *c < 0x20 || *c == 0x7F)
            *c = ' ';
}

//  Print the line of one input and count it. Caller holds the mutex.
static void
s_print_locked (s_batch_t *self, size_t index, bool ok, const s_outcome_t *outcome,
                long long ms)
{
    const char *path = imgp_inputs_path (self->inputs, index);
    if (ok)
        fprintf (self->config.out, "ok %s -> %s %dx%d %lldms\n", path,
                 imgp_inputs_output (self->inputs, index), outcome->width, outcome->height, ms);
    else {
        char code [sizeof outcome->error.code], message [sizeof outcome->error.message];
        s_clean (code, sizeof code, outcome->error.code);
        s_clean (message, sizeof message, outcome->error.message);
        fprintf (self->config.out, "failed %s: %s: %s\n", path, code, message);
    }
    fflush (self->config.out);
    if (ok)
        self->done++;
    else
        self->failed++;
    self->reported++;
    pthread_cond_broadcast (&self->changed);
}

static s_result_t
s_failed (s_outcome_t *outcome, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static s_result_t
s_failed (s_outcome_t *outcome, const char *code, const char *format, ...)
{
    snprintf (outcome->error.code, sizeof outcome->error.code, "%s", code);
    va_list args;
    va_start (args, format);
    vsnprintf (outcome->error.message, sizeof outcome->error.message, format, args);
    va_end (args);
    return S_FAILED;
}

//  --------------------------------------------------------------------------
//  One file, in the worker's thread

//  One request, watched by the monitor; `held_ms` is the ?wait= it asks
//  the server to hold it, on top of the timeout. Returns S_ABANDONED when
//  the monitor gave up on this thread meanwhile.
static s_result_t
s_request (s_worker_t *self, const char *method, const char *path, const void *body,
           size_t size, long long held_ms)
{
    s_batch_t *batch = self->batch;
    imgp_http_client_set_timeout (self->http, (int) (batch->config.timeout_ms + held_ms));
    pthread_mutex_lock (&batch->mutex);
    self->since = s_now_ms ();
    self->held_ms = held_ms;
    pthread_mutex_unlock (&batch->mutex);
    imgp_http_client_request (self->http, method, path,
                              body ? "application/octet-stream" : NULL, body, size);
    pthread_mutex_lock (&batch->mutex);
    self->since = 0;
    bool abandoned = self->abandoned;
    pthread_mutex_unlock (&batch->mutex);
    return abandoned ? S_ABANDONED : S_DONE;
}

//  A request, sent again while the answer means "later": a 503 or 429
//  after its Retry-After, a refused connection (or a GET cut short) after
//  a backoff, until `deadline`. Returns S_DONE with an answer to read, or
//  the end.
static s_result_t
s_call (s_worker_t *self, const char *method, const char *path, const void *body,
        size_t size, long long held_ms, long long deadline, s_outcome_t *outcome)
{
    long long backoff = S_REFUSED_FIRST_MS;
    while (true) {
        if (s_request (self, method, path, body, size, held_ms) == S_ABANDONED)
            return S_ABANDONED;
        int status = imgp_http_client_status (self->http);
        bool resend = status == 0 && (!imgp_http_client_connected (self->http)
                                      || strcmp (method, "GET") == 0);
        long long delay;
        if (status == 503 || status == 429)
            delay = imgp_api_retry_after_ms (self->http, S_BUSY_DEFAULT_MS);
        else
        if (resend) {
            delay = backoff;
            backoff = backoff * 2 < S_REFUSED_MAX_MS ? backoff * 2 : S_REFUSED_MAX_MS;
        }
        else
        if (status == 0) {
            imgp_api_error (self->http, &outcome->error);
            return S_FAILED;
        }
        else
            return S_DONE;
        if (s_now_ms () + delay > deadline) {
            imgp_api_error_t error;
            imgp_api_error (self->http, &error);
            return s_failed (outcome, error.code, "%s (no retry left within --wait-s %lld)",
                             error.message, self->batch->config.wait_ms / 1000);
        }
        imgp_debug ("event=retry path=%s status=%d delay_ms=%lld", path, status, delay);
        zclock_sleep ((int) delay);
    }
}

//  The answer was not the one wanted: the file fails with its error.
static s_result_t
s_refused (s_worker_t *self, s_outcome_t *outcome)
{
    imgp_api_error (self->http, &outcome->error);
    return S_FAILED;
}

static s_result_t
s_upload (s_worker_t *self, const char *data, size_t size, long long deadline,
          char id [IMGP_ID_LEN + 1], s_outcome_t *outcome)
{
    const char *query = self->batch->config.query;
    char path [600];
    snprintf (path, sizeof path, "/v1/images%s%s", *query ? "?" : "", query);
    s_result_t result = s_call (self, "POST", path, data, size, 0, deadline, outcome);
    if (result != S_DONE)
        return result;
    if (imgp_http_client_status (self->http) != 202)
        return s_refused (self, outcome);
    if (imgp_api_id (self->http, id) != 0)
        return s_failed (outcome, "bad_reply", "the server accepted the upload but sent no valid id");
    imgp_debug ("job=%s event=uploaded bytes=%zu", id, size);
    return S_DONE;
}

//  Wait for the job to end: each status request asks the server to hold
//  it until then (imgp_api_poll); one that was not held is followed by a
//  pause, 50 ms doubling to 1 s, as plain polling.
static s_result_t
s_wait (s_worker_t *self, const char *id, long long deadline, s_outcome_t *outcome)
{
    char base [64], path [80];
    snprintf (base, sizeof base, "/v1/images/%s", id);
    imgp_api_poll_t poll;
    imgp_api_poll_init (&poll, self->batch->config.long_poll_s);
    long long idle_ms = S_POLL_FIRST_MS;
    while (true) {
        imgp_api_poll_path (&poll, base, deadline, path, sizeof path);
        s_result_t result = s_call (self, "GET", path, NULL, 0, imgp_api_poll_extra_ms (&poll),
                                    deadline, outcome);
        if (result != S_DONE)
            return result;
        int status = imgp_http_client_status (self->http);
        if (status == 400 && imgp_api_poll_refused (&poll, self->http))
            continue;           //  at once, with the wait this server allows
        if (status != 200)
            return s_refused (self, outcome);
        imgp_api_job_t job;
        if (imgp_api_job (self->http, &job) != 0)
            return s_failed (outcome, "bad_reply", "the server sent a status without a known state");
        if (strcmp (job.state, "done") == 0) {
            outcome->width = job.width;
            outcome->height = job.height;
            return S_DONE;
        }
        if (strcmp (job.state, "failed") == 0) {
            outcome->error = job.error;
            return S_FAILED;
        }
        long long delay = imgp_api_poll_delay (&poll, self->http, idle_ms);
        if (s_now_ms () + delay >= deadline)
            return s_failed (outcome, "timeout", "job %s still %s after --wait-s %lld", id,
                             job.state, self->batch->config.wait_ms / 1000);
        if (delay > 0) {
            zclock_sleep ((int) delay);
            idle_ms = idle_ms * 2 < S_POLL_MAX_MS ? idle_ms * 2 : S_POLL_MAX_MS;
        }
    }
}

static s_result_t
s_download (s_worker_t *self, const char *id, const char *output, long long deadline,
            s_outcome_t *outcome)
{
    char path [80];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    s_result_t result = s_call (self, "GET", path, NULL, 0, 0, deadline, outcome);
    if (result != S_DONE)
        return result;
    if (imgp_http_client_status (self->http) != 200)
        return s_refused (self, outcome);
    size_t size = 0;
    const char *body = imgp_http_client_body (self->http, &size);
    char problem [256];
    if (imgp_file_write (output, body, size, problem, sizeof problem) != 0)
        return s_failed (outcome, "unwritable", "%s: %s", output, problem);
    imgp_debug ("job=%s event=written bytes=%zu path=%s", id, size, output);
    return S_DONE;
}

//  Read, upload, wait, download, write. The input is in memory only
//  until its upload is answered.
static s_result_t
s_process (s_worker_t *self, const char *input, const char *output, s_outcome_t *outcome)
{
    const imgp_batch_config_t *config = &self->batch->config;
    long long deadline = s_now_ms () + config->wait_ms;
    char *data = NULL;
    size_t size = 0;
    char problem [256];
    if (imgp_file_read (input, config->max_upload, &data, &size, problem, sizeof problem) != 0)
        return s_failed (outcome, "unreadable", "%s", problem);
    char id [IMGP_ID_LEN + 1];
    s_result_t result = s_upload (self, data, size, deadline, id, outcome);
    free (data);
    if (result == S_DONE)
        result = s_wait (self, id, deadline, outcome);
    if (result == S_DONE)
        result = s_download (self, id, output, deadline, outcome);
    return result;
}

//  --------------------------------------------------------------------------
//  Worker threads

//  Take the next input. Returns 0, or -1 when none is left.
static int
s_take (s_worker_t *self, size_t *index)
{
    s_batch_t *batch = self->batch;
    pthread_mutex_lock (&batch->mutex);
    int rc = -1;
    if (!self->abandoned && batch->next < batch->total) {
        *index = self->index = batch->next++;
        rc = 0;
    }
    pthread_mutex_unlock (&batch->mutex);
    return rc;
}

static void
s_report (s_worker_t *self, size_t index, bool ok, const s_outcome_t *outcome, long long ms)
{
    s_batch_t *batch = self->batch;
    pthread_mutex_lock (&batch->mutex);
    if (!self->abandoned)
        s_print_locked (batch, index, ok, outcome, ms);
    pthread_mutex_unlock (&batch->mutex);
}

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
    free (self);
    s_batch_unref (&batch);
}

static void *
s_worker_main (void *arg)
{
    s_worker_t *self = arg;
    imgp_inputs_t *inputs = self->batch->inputs;
    size_t index;
    while (s_take (self, &index) == 0) {
        s_outcome_t outcome;
        memset (&outcome, 0, sizeof outcome);
        long long start = s_now_ms ();
        s_result_t result = s_process (self, imgp_inputs_path (inputs, index),
                                       imgp_inputs_output (inputs, index), &outcome);
        if (result == S_ABANDONED)
            break;
        s_report (self, index, result == S_DONE, &outcome, s_now_ms () - start);
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
//  The monitor, in the caller's thread

//  Give up on every request older than the limit. Caller holds the mutex.
static void
s_abandon_stalled_locked (s_batch_t *self, long long now)
{
    for (int slot = 0; slot < self->slots; slot++) {
        s_worker_t *worker = self->workers [slot];
        if (!worker || worker->since == 0)
            continue;
        long long limit = self->config.timeout_ms + worker->held_ms + S_STALL_GRACE_MS;
        if (now - worker->since <= limit)
            continue;
        worker->abandoned = true;
        self->workers [slot] = NULL;
        self->live--;
        pthread_detach (self->threads [slot]);
        self->joinable [slot] = false;
        s_outcome_t outcome;
        memset (&outcome, 0, sizeof outcome);
        s_failed (&outcome, "stalled", "no whole answer from the server within %lld ms; "
                  "going on without this connection", limit);
        s_print_locked (self, worker->index, false, &outcome, now - worker->since);
    }
}

//  No worker is left: every input not taken fails. Caller holds the mutex.
static void
s_fail_untaken_locked (s_batch_t *self)
{
    s_outcome_t outcome;
    memset (&outcome, 0, sizeof outcome);
    s_failed (&outcome, "not_sent", "every connection to the server stalled");
    while (self->next < self->total)
        s_print_locked (self, self->next++, false, &outcome, 0);
}

static void
s_monitor (s_batch_t *self)
{
    pthread_mutex_lock (&self->mutex);
    while (self->reported < self->total) {
        if (self->live == 0) {
            s_fail_untaken_locked (self);
            break;
        }
        struct timespec until;
        clock_gettime (CLOCK_MONOTONIC, &until);
        until.tv_nsec += S_TICK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait (&self->changed, &self->mutex, &until);
        s_abandon_stalled_locked (self, s_now_ms ());
    }
    pthread_mutex_unlock (&self->mutex);
}

int
imgp_batch_run (const imgp_batch_config_t *config, imgp_inputs_t *inputs,
                imgp_batch_stats_t *stats, char *error, size_t error_size)
{
    assert (config && config->url && config->out && config->parallel >= 1);
    assert (inputs && stats && error);
    long long start = s_now_ms ();
    size_t total = imgp_inputs_size (inputs);
    int slots = total < (size_t) config->parallel ? (int) total : config->parallel;
    s_batch_t *batch = s_batch_new (config, inputs, slots > 0 ? slots : 1);
    if (!batch) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    int started = 0;
    for (int slot = 0; slot < slots; slot++)
        if (s_worker_start (batch, slot, config->url, error, error_size) == 0)
            started++;
        else
        if (started == 0)
            break;              //  a bad URL fails every slot alike
    if (started == 0 && slots > 0) {
        s_batch_unref (&batch);
        return -1;
    }
    s_monitor (batch);
    for (int slot = 0; slot < slots; slot++)
        if (batch->joinable [slot])
            pthread_join (batch->threads [slot], NULL);

    stats->done = batch->done;
    stats->failed = batch->failed;
    stats->elapsed_ms = s_now_ms () - start;
    double seconds = (double) stats->elapsed_ms / 1000.0;
    fprintf (config->out, "%zu done, %zu failed, %.1f s, %.1f images/s\n", stats->done,
             stats->failed, seconds, seconds > 0 ? (double) stats->done / seconds : 0.0);
    fflush (config->out);
    s_batch_unref (&batch);
    return stats->failed > 0 ? 1 : 0;
}

/*  imgp_roundtrip — see imgp_roundtrip.h.

    s_call is the one place that decides whether an answer means "again,
    later": every request of every step goes through it.
*/
#include "imgp_roundtrip.h"

#include "imgp_log.h"

#include <assert.h>
#include <czmq.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_POLL_FIRST_MS 50      //  first pause between status polls not held
#define S_POLL_MAX_MS 1000      //  such pauses back off to this
#define S_RETRY_FIRST_MS 250    //  first wait after a transient failure
#define S_RETRY_MAX_MS 4000     //  that backoff stops here
#define S_BUSY_DEFAULT_MS 1000  //  wait after a 503/429 without Retry-After

static long long
s_now_ms (void)
{
    return (long long) zclock_mono ();
}

static imgp_roundtrip_status_t
s_fail (imgp_roundtrip_result_t *result, imgp_roundtrip_status_t status, const char *code,
        const char *format, ...) __attribute__ ((format (printf, 4, 5)));

static imgp_roundtrip_status_t
s_fail (imgp_roundtrip_result_t *result, imgp_roundtrip_status_t status, const char *code,
        const char *format, ...)
{
    snprintf (result->error.code, sizeof result->error.code, "%s", code);
    va_list args;
    va_start (args, format);
    vsnprintf (result->error.message, sizeof result->error.message, format, args);
    va_end (args);
    return status;
}

//  `ms` plus up to a quarter more at random. rand_r on a per-thread seed:
//  rand() is not thread-safe, and the spread is all that matters.
static long long
s_jitter (long long ms)
{
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned) (s_now_ms () ^ (long long) (size_t) &seed);
    return ms + (ms / 4 > 0 ? rand_r (&seed) % (ms / 4 + 1) : 0);
}

//  One request under the caller's watchdog. Returns false when the
//  caller gave up on it.
static bool
s_request (const imgp_roundtrip_t *self, const char *method, const char *path,
           const void *body, size_t size, long long held_ms)
{
    imgp_http_client_set_timeout (self->http, (int) (self->timeout_ms + held_ms));
    if (self->begin)
        self->begin (self->hook, self->timeout_ms + held_ms + IMGP_ROUNDTRIP_GRACE_MS);
    imgp_http_client_request (self->http, method, path,
                              body ? "application/octet-stream" : NULL, body, size);
    return self->end ? self->end (self->hook) : true;
}

//  True when the last answer is a transient failure worth another try.
static bool
s_transient (imgp_http_client_t *http)
{
    int status = imgp_http_client_status (http);
    return status == 0 || status == 500 || status == 502 || status == 504;
}

//  A request, sent again while the answer means "later" (see the header).
//  Returns DONE with an answer to read, or the end.
static imgp_roundtrip_status_t
s_call (const imgp_roundtrip_t *self, const char *method, const char *path, const void *body,
        size_t size, long long held_ms, imgp_roundtrip_result_t *result)
{
    long long backoff = S_RETRY_FIRST_MS;
    int retries = 0;
    while (true) {
        if (!s_request (self, method, path, body, size, held_ms))
            return IMGP_ROUNDTRIP_ABANDONED;
        int status = imgp_http_client_status (self->http);
        long long delay;
        if (status == 503 || status == 429)
            delay = s_jitter (imgp_api_retry_after_ms (self->http, S_BUSY_DEFAULT_MS));
        else
        if (s_transient (self->http) && retries < IMGP_ROUNDTRIP_RETRIES) {
            delay = s_jitter (backoff);
            backoff = backoff * 2 < S_RETRY_MAX_MS ? backoff * 2 : S_RETRY_MAX_MS;
            retries++;
        }
        else
        if (s_transient (self->http)) {
            imgp_api_error (self->http, &result->error);
            size_t len = strlen (result->error.message);
            snprintf (result->error.message + len, sizeof result->error.message - len,
                      " (gave up after %d retries)", retries);
            return status == 0 ? IMGP_ROUNDTRIP_UNREACHED : IMGP_ROUNDTRIP_FAILED;
        }
        else
            return IMGP_ROUNDTRIP_DONE;
        if (s_now_ms () + delay > self->deadline) {
            imgp_api_error (self->http, &result->error);
            size_t len = strlen (result->error.message);
            snprintf (result->error.message + len, sizeof result->error.message - len,
                      " (no retry left within --wait-s %lld)", self->wait_s);
            return status == 0 ? IMGP_ROUNDTRIP_UNREACHED : IMGP_ROUNDTRIP_FAILED;
        }
        imgp_debug ("event=retry path=\"%s\" status=%d delay_ms=%lld", path, status, delay);
        zclock_sleep ((int) delay);
    }
}

//  The answer was not the one wanted: the step fails with its error.
static imgp_roundtrip_status_t
s_refused (const imgp_roundtrip_t *self, imgp_roundtrip_result_t *result)
{
    imgp_api_error (self->http, &result->error);
    return IMGP_ROUNDTRIP_FAILED;
}

imgp_roundtrip_status_t
imgp_roundtrip_upload (const imgp_roundtrip_t *self, const void *data, size_t size,
                       imgp_roundtrip_result_t *result)
{
    assert (self && self->http && self->query && result);
    char path [600];
    snprintf (path, sizeof path, "/v1/images%s%s", *self->query ? "?" : "", self->query);
    imgp_roundtrip_status_t status = s_call (self, "POST", path, data, size, 0, result);
    if (status != IMGP_ROUNDTRIP_DONE)
        return status;
    if (imgp_http_client_status (self->http) != 202)
        return s_refused (self, result);
    if (imgp_api_id (self->http, result->id) != 0)
        return s_fail (result, IMGP_ROUNDTRIP_FAILED, "bad_reply",
                       "the server accepted the upload but sent no valid id");
    imgp_debug ("job=%s event=uploaded bytes=%zu", result->id, size);
    return IMGP_ROUNDTRIP_DONE;
}

//  A status answer: DONE when the job is done, FAILED when it failed,
//  -1 (as a status) while it is pending, with its state in `job`.
static int
s_job_state (const imgp_roundtrip_t *self, imgp_api_job_t *job,
             imgp_roundtrip_result_t *result)
{
    if (imgp_api_job (self->http, job) != 0)
        return s_fail (result, IMGP_ROUNDTRIP_FAILED, "bad_reply",
                       "the server sent a status without a known state");
    snprintf (result->worker, sizeof result->worker, "%s", job->worker);
    if (strcmp (job->state, "done") == 0) {
        result->width = job->width;
        result->height = job->height;
        return IMGP_ROUNDTRIP_DONE;
    }
    if (strcmp (job->state, "failed") == 0) {
        result->error = job->error;
        return IMGP_ROUNDTRIP_FAILED;
    }
    return -1;
}

imgp_roundtrip_status_t
imgp_roundtrip_wait (const imgp_roundtrip_t *self, imgp_roundtrip_result_t *result)
{
    assert (self && result && imgp_id_valid (result->id));
    char base [64], path [80];
    snprintf (base, sizeof base, "/v1/images/%s", result->id);
    imgp_api_poll_t poll;
    imgp_api_poll_init (&poll, self->long_poll_s);
    long long idle_ms = S_POLL_FIRST_MS;
    while (true) {
        imgp_api_poll_path (&poll, base, self->deadline, path, sizeof path);
        imgp_roundtrip_status_t status = s_call (self, "GET", path, NULL, 0,
                                                 imgp_api_poll_extra_ms (&poll), result);
        if (status != IMGP_ROUNDTRIP_DONE)
            return status;
        int http_status = imgp_http_client_status (self->http);
        if (http_status == 400 && imgp_api_poll_refused (&poll, self->http))
            continue;           //  at once, with the wait this server allows
        if (http_status != 200)
            return s_refused (self, result);
        imgp_api_job_t job;
        int state = s_job_state (self, &job, result);
        if (state >= 0)
            return (imgp_roundtrip_status_t) state;
        long long delay = imgp_api_poll_delay (&poll, self->http, idle_ms);
        if (s_now_ms () + delay >= self->deadline)
            return s_fail (result, IMGP_ROUNDTRIP_UNREACHED, "timeout",
                           "job %s still %s after --wait-s %lld", result->id, job.state,
                           self->wait_s);
        if (delay > 0) {
            zclock_sleep ((int) delay);
            idle_ms = idle_ms * 2 < S_POLL_MAX_MS ? idle_ms * 2 : S_POLL_MAX_MS;
        }
    }
}

imgp_roundtrip_status_t
imgp_roundtrip_download (const imgp_roundtrip_t *self, imgp_roundtrip_result_t *result)
{
    assert (self && result && imgp_id_valid (result->id));
    char path [80];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", result->id);
    imgp_roundtrip_status_t status = s_call (self, "GET", path, NULL, 0, 0, result);
    if (status != IMGP_ROUNDTRIP_DONE)
        return status;
    if (imgp_http_client_status (self->http) != 200)
        return s_refused (self, result);
    result->thumb = imgp_http_client_body (self->http, &result->thumb_size);
    imgp_debug ("job=%s event=downloaded bytes=%zu", result->id, result->thumb_size);
    return IMGP_ROUNDTRIP_DONE;
}

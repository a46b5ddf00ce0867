/*  imgp_roundtrip — one image through the cluster: upload -> wait ->
    download, the one routine `submit`, `get` and every batch worker use.

    Why: the commands used to have two of these, with different polling
    rules and watchdogs; now one routine holds the rules, under one
    deadline per image (counted from its upload, or from the start of
    `get`):
    - wait by long-poll on the status (GET /v1/images/ID?wait=S, S up to
      long_poll_s and never past the deadline; a frontend that does not
      hold requests is polled at 50 ms doubling to 1 s, or as its
      Retry-After says); the status also names the worker that made the
      thumbnail, for the batch report;
    - 503 and 429: wait as Retry-After says (1 s without one), plus up to
      a quarter more at random, so a crowd of clients told "1" does not
      come back in one burst; as often as the deadline allows;
    - transient failures (connection refused or reset, a cut answer, 500,
      502, 504): again after 250 ms doubling to 4 s, each with jitter, at
      most IMGP_ROUNDTRIP_RETRIES times per request, within the deadline.
      An upload cut after it connected is sent again too: at worst the
      cluster resizes it twice, and only the new job's result is read;
    - every request is bounded by the watchdog (below) at timeout_ms + its
      ?wait= + IMGP_ROUNDTRIP_GRACE_MS, because civetweb 1.15's client
      times out the response head only.
    Whoever gives up says why: the result's error holds a code and words
    a user can act on ("timeout: job ... still queued after --wait-s 30").

    The watchdog is the caller's, as two hooks around each request:
    `begin` gets the request's limit in ms; `end` says whether the caller
    still wants the answer (false: it gave up on this request, a stall or
    Ctrl-C, and the routine returns IMGP_ROUNDTRIP_ABANDONED at once,
    writing nothing). `imgpipe get` arms a process timer; the batch's
    monitor thread watches all its workers.

    Never: print, write a file, or keep more than the one image in memory.
*/
#ifndef IMGP_ROUNDTRIP_H_INCLUDED
#define IMGP_ROUNDTRIP_H_INCLUDED

#include "imgp_api.h"
#include "imgp_http_client.h"
#include "imgp_id.h"

#include <stdbool.h>
#include <stddef.h>

#define IMGP_ROUNDTRIP_RETRIES 4        //  transient failures retried per request
#define IMGP_ROUNDTRIP_GRACE_MS 5000    //  beyond head timeout + ?wait=, before "stalled"

typedef enum {
    IMGP_ROUNDTRIP_DONE = 0,    //  the step succeeded
    IMGP_ROUNDTRIP_FAILED,      //  refused, or the job failed: error says why
    IMGP_ROUNDTRIP_UNREACHED,   //  transport, or the deadline passed: error says why
    IMGP_ROUNDTRIP_ABANDONED    //  the watchdog's `end` gave up on a request
} imgp_roundtrip_status_t;

//  How to run one image; the caller's, borrowed for the call.
typedef struct {
    imgp_http_client_t *http;   //  this thread's client
    const char *query;          //  thumbnail options for the upload, "" for defaults
    int long_poll_s;            //  most ?wait= per status request, 0 polls
    int timeout_ms;             //  per request, for the head, beyond its ?wait=
    long long deadline;         //  monotonic ms (zclock_mono) the image must be done by
    long long wait_s;           //  the --wait-s that deadline came from, for messages
    void (*begin) (void *hook, long long limit_ms); //  a request starts (may be NULL)
    bool (*end) (void *hook);   //  it ended; false: given up (may be NULL)
    void *hook;                 //  argument of begin and end
} imgp_roundtrip_t;

//  What came of it.
typedef struct {
    char id [IMGP_ID_LEN + 1];  //  the job id, "" before the upload is taken
    int width;                  //  thumbnail size, once done
    int height;
    char worker [128];          //  resizer that made it, "" when not said
    imgp_api_error_t error;     //  why, when not done
    const char *thumb;          //  the thumbnail after download (borrowed from http)
    size_t thumb_size;          //  its bytes
} imgp_roundtrip_result_t;

//  Upload `data` (POST /v1/images?QUERY): result->id on success.
imgp_roundtrip_status_t imgp_roundtrip_upload (const imgp_roundtrip_t *self, const void *data,
                                               size_t size, imgp_roundtrip_result_t *result);

//  Wait for job result->id to end: width, height and worker when done.
imgp_roundtrip_status_t imgp_roundtrip_wait (const imgp_roundtrip_t *self,
                                             imgp_roundtrip_result_t *result);

//  Download job result->id's thumbnail into result->thumb.
imgp_roundtrip_status_t imgp_roundtrip_download (const imgp_roundtrip_t *self,
                                                 imgp_roundtrip_result_t *result);

#endif

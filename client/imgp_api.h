/*  imgp_api — what the imgpipe HTTP API's answers mean, for the client.

    Why: `submit`, `get` and `batch` read the same answers: the job id of a
    202, the state and result of a status JSON, the {"error":{code,message}}
    of a refusal, the Retry-After of a 503 or a pending thumbnail. Reading
    them in one place keeps the commands to their flow, and keeps the
    client's idea of the contract (DESIGN.md, HTTP contract v1) in one file.
    The long-poll (imgp_api_poll_*) is here for the same reason: it is how
    imgp_roundtrip (under `get` and `batch`) waits for a job, by
    asking the server to hold each request (?wait=S).

    Never: trust the server's JSON (every field is optional and checked;
    strings are copied with truncation into fixed buffers) or print.
*/
#ifndef IMGP_API_H_INCLUDED
#define IMGP_API_H_INCLUDED

#include "imgp_http_client.h"
#include "imgp_id.h"

#include <stdbool.h>
#include <stddef.h>

//  The thumbnail options of a command line as a query string, and the
//  file name extension of the thumbnails they give ("png", "jpg").
typedef struct {
    char query [512];       //  "width=80&format=webp", "" for all defaults
    const char *ext;        //  extension of the output format, static
} imgp_api_opts_t;

//  What a refused request or a failed job says.
typedef struct {
    char code [64];         //  server's error code, "http_503", "transport", ...
    char message [512];     //  words a user can act on
} imgp_api_error_t;

//  A job as the status JSON tells it.
typedef struct {
    char state [16];        //  queued, processing, done or failed
    int width;              //  result width when done, else 0
    int height;             //  result height when done, else 0
    char worker [128];      //  resizer of the latest attempt, "" when not said
    imgp_api_error_t error; //  why, when failed
} imgp_api_job_t;

//  Build the query from option values (each NULL or "" when not given)
//  and check it with the server's own validator, so a typo fails before
//  any upload. Returns 0, or -1 with a static message in *problem.
int imgp_api_opts (imgp_api_opts_t *opts, const char *width, const char *height,
                   const char *fit, const char *format, const char *quality,
                   bool enlarge, const char **problem);

//  The job id of a 202 upload answer. Returns 0, or -1 when the body holds
//  no valid id.
int imgp_api_id (imgp_http_client_t *http, char id [IMGP_ID_LEN + 1]);

//  Read the status JSON of the last answer (200 status, 202 pending
//  thumbnail). Returns 0, or -1 when it holds no known state.
int imgp_api_job (imgp_http_client_t *http, imgp_api_job_t *job);

//  The error of the last answer: its JSON error when there is one, else
//  "http_NNN" and "HTTP NNN". After a transport error: "transport" and
//  the client's error text. Returns 0 when the server sent a JSON error,
//  -1 when `error` holds one of the stand-ins.
int imgp_api_error (imgp_http_client_t *http, imgp_api_error_t *error);

//  Delay asked for by the last answer's Retry-After (delta-seconds; imgpipe
//  sends no HTTP dates), else `fallback_ms`; never under 50 ms.
long long imgp_api_retry_after_ms (imgp_http_client_t *http, long long fallback_ms);

//  Waiting for one job by long-poll: each status or thumbnail request asks
//  the frontend to hold it until the job ends (?wait=S), so a job that takes
//  a few seconds costs one or two requests, not one per second.
//  Two kinds of frontend do not hold: an old one ignores ?wait= and answers
//  at once with a pending status (so does a broker with no waiter left);
//  the caller then pauses as imgp_api_poll_delay says, never busy-looping.
//  One whose --max-wait-s is below S answers 400 bad_option "wait must be
//  whole seconds from 0 to N"; imgp_api_poll_refused lowers S to N.
typedef struct {
    int wait_s;             //  most ?wait= to ask for; lowered by a 400
    int asked_s;            //  ?wait= of the request in flight
    long long asked_at;     //  when it was sent, monotonic ms
} imgp_api_poll_t;

//  Start waiting, asking for at most `wait_s` seconds a request (0 is
//  plain polling).
void imgp_api_poll_init (imgp_api_poll_t *self, int wait_s);

//  The path of the next request: `path` with "?wait=S", S the whole
//  seconds left before `deadline` (monotonic ms) up to the most allowed.
//  Call it just before sending; the request's own timeout must exceed S.
void imgp_api_poll_path (imgp_api_poll_t *self, const char *path, long long deadline,
                         char *out, size_t out_size);

//  After a 400: true when it refused our ?wait= and a smaller one is left
//  to try (send again at once), false when the 400 is about something else.
bool imgp_api_poll_refused (imgp_api_poll_t *self, imgp_http_client_t *http);

//  After an answer that says "still pending": ms to pause before the next
//  request. 0 when the server held the request for the wait asked (it
//  long-polls, and it was the wait that ended); else the answer's
//  Retry-After, or `fallback_ms` without one.
long long imgp_api_poll_delay (imgp_api_poll_t *self, imgp_http_client_t *http,
                               long long fallback_ms);

//  Extra ms the request in flight may take beyond a plain request's
//  timeout: the wait it asked for.
long long imgp_api_poll_extra_ms (const imgp_api_poll_t *self);

#endif

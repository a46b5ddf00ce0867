/*  imgp_api — what the imgpipe HTTP API's answers mean, for the client.

    Why: `submit`, `get` and `batch` read the same answers: the job id of a
    202, the state and result of a status JSON, the {"error":{code,message}}
    of a refusal, the Retry-After of a 503 or a pending thumbnail. Reading
    them in one place keeps the commands to their flow, and keeps the
    client's idea of the contract (DESIGN.md, HTTP contract v1) in one file.

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

#endif

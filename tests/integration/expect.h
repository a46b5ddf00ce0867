/*  expect — criterion checks shared by the end-to-end suites: the error
    JSON every 4xx/5xx carries, an upload that must be accepted, a job
    that must end in a given state.

    Why: the harness knows nothing of criterion (it reports, the suites
    judge); these are the judgements more than one suite makes, written
    once so the suites agree on what "a clear error" and "accepted" mean.

    Never: wait without a deadline; every wait goes through h_job_wait.
*/
#ifndef IMGP_EXPECT_H_INCLUDED
#define IMGP_EXPECT_H_INCLUDED

#include "harness.h"

#define EXPECT_JOB_MS 60000     //  deadline for one job to end

//  The body is {"error":{"code":"...","message":"..."}} with both
//  non-empty, and the code is `want_code` unless that is NULL. `context`
//  names the request in failure messages.
void expect_error_json (const h_response_t *resp, const char *context, const char *want_code);

//  Upload and require 202 with a valid id, Location, and the documented
//  JSON (status_url, thumbnail_url, a pending or done status).
void expect_upload_ok (int port, const char *path, const void *data, size_t size,
                       const char *type, bool multipart, char id [H_ID_SIZE]);

//  Wait for the job to end and require `want` ("done" or "failed").
//  Returns the final status JSON; the caller decrefs.
json_t *expect_job_ends (int port, const char *id, const char *want);

#endif

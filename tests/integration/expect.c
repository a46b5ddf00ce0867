/*  expect — criterion checks shared by the end-to-end suites. */
#include "expect.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

void
expect_error_json (const h_response_t *resp, const char *context, const char *want_code)
{
    json_t *root = h_json (resp);
    json_t *error = json_object_get (root, "error");
    const char *code = json_string_value (json_object_get (error, "code"));
    const char *message = json_string_value (json_object_get (error, "message"));
    cr_expect (code && *code && message && *message,
               "%s: HTTP %d body is not an error JSON with code and message: %.300s",
               context, resp->status, resp->body ? resp->body : "");
    if (want_code && code)
        cr_expect_str_eq (code, want_code, "%s: error code '%s', want '%s' (%s)", context,
                          code, want_code, message ? message : "");
    json_decref (root);
}

void
expect_upload_ok (int port, const char *path, const void *data, size_t size,
                  const char *type, bool multipart, char id [H_ID_SIZE])
{
    h_response_t resp;
    int status = h_upload (port, path, data, size, type, multipart, id, &resp);
    cr_assert_eq (status, 202, "POST %s (%s, %zu bytes): want 202, got %d: %s %.300s", path,
                  multipart ? "multipart" : "raw", size, status, resp.error,
                  resp.body ? resp.body : "");
    cr_assert_eq (strlen (id), H_ID_SIZE - 1, "202 without a valid id: %.300s", resp.body);
    json_t *root = h_json (&resp);
    const char *status_url = json_string_value (json_object_get (root, "status_url"));
    const char *thumb_url = json_string_value (json_object_get (root, "thumbnail_url"));
    const char *state = h_json_status (root);
    char location [256] = "";
    h_header (&resp, "Location", location, sizeof location);
    cr_expect (status_url && strstr (status_url, id), "202 JSON lacks status_url: %s", resp.body);
    cr_expect (thumb_url && strstr (thumb_url, id), "202 JSON lacks thumbnail_url: %s", resp.body);
    cr_expect (strstr (location, id), "202 lacks a Location naming the id: '%s'", location);
    cr_expect (strcmp (state, "queued") == 0 || strcmp (state, "processing") == 0
               || strcmp (state, "done") == 0, "202 JSON has status '%s'", state);
    json_decref (root);
    h_response_free (&resp);
}

json_t *
expect_job_ends (int port, const char *id, const char *want)
{
    json_t *root = NULL;
    char why [512];
    cr_assert_eq (h_job_wait (port, id, EXPECT_JOB_MS, &root, why, sizeof why), 0, "%s", why);
    char *text = json_dumps (root, JSON_COMPACT);
    cr_assert_str_eq (h_json_status (root), want, "job %s ended %s", id, text);
    free (text);
    return root;
}

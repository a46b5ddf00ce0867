/*  imgp_api — see imgp_api.h. jansson for the JSON; every lookup is
    allowed to miss, since the body comes from a server we do not control.
*/
#include "imgp_api.h"

#include "imgp_opts.h"

#include <assert.h>
#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Append "key=value" to the query when the value was given, escaping
//  everything outside the URL-unreserved set. Values longer than the
//  query are cut; the validator then refuses them.
static void
s_query_add (char *query, size_t query_size, const char *key, const char *value)
{
    if (!value || !*value)
        return;
    size_t len = strlen (query);
    len += (size_t) snprintf (query + len, query_size - len, "%s%s=", len ? "&" : "", key);
    for (const unsigned char *c = (const unsigned char *) value; *c && len + 4 < query_size; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
        ||  strchr ("-._~", *c))
            query [len++] = (char) *c;
        else
            len += (size_t) snprintf (query + len, query_size - len, "%%%02X", *c);
    }
    query [len] = 0;
}

int
imgp_api_opts (imgp_api_opts_t *opts, const char *width, const char *height,
               const char *fit, const char *format, const char *quality,
               bool enlarge, const char **problem)
{
    opts->query [0] = 0;
    s_query_add (opts->query, sizeof opts->query, "width", width);
    s_query_add (opts->query, sizeof opts->query, "height", height);
    s_query_add (opts->query, sizeof opts->query, "fit", fit);
    s_query_add (opts->query, sizeof opts->query, "format", format);
    s_query_add (opts->query, sizeof opts->query, "quality", quality);
    if (enlarge)
        s_query_add (opts->query, sizeof opts->query, "enlarge", "true");
    imgp_opts_t parsed;
    *problem = NULL;
    if (imgp_opts_parse_query (&parsed, opts->query, problem, NULL) != 0) {
        if (!*problem)
            *problem = "bad thumbnail option";
        return -1;
    }
    static const char *exts [] = { [IMGP_FORMAT_PNG] = "png", [IMGP_FORMAT_JPEG] = "jpg",
                                   [IMGP_FORMAT_WEBP] = "webp", [IMGP_FORMAT_AVIF] = "avif",
                                   [IMGP_FORMAT_AUTO] = "img" };
    opts->ext = exts [parsed.format];
    return 0;
}

static json_t *
s_body_json (imgp_http_client_t *http)
{
    size_t size = 0;
    const char *body = imgp_http_client_body (http, &size);
    return body ? json_loadb (body, size, 0, NULL) : NULL;
}

//  Copy a JSON string member into `dest`, or `fallback` when missing.
static void
s_copy (char *dest, size_t dest_size, json_t *object, const char *key, const char *fallback)
{
    const char *value = json_string_value (json_object_get (object, key));
    snprintf (dest, dest_size, "%s", value ? value : fallback);
}

int
imgp_api_id (imgp_http_client_t *http, char id [IMGP_ID_LEN + 1])
{
    json_t *root = s_body_json (http);
    const char *value = json_string_value (json_object_get (root, "id"));
    int rc = value && imgp_id_valid (value) ? 0 : -1;
    if (rc == 0)
        memcpy (id, value, IMGP_ID_LEN + 1);
    json_decref (root);
    return rc;
}

int
imgp_api_job (imgp_http_client_t *http, imgp_api_job_t *job)
{
    memset (job, 0, sizeof *job);
    json_t *root = s_body_json (http);
    s_copy (job->state, sizeof job->state, root, "status", "");
    imgp_state_t state;
    int rc = imgp_state_parse (job->state, &state);
    json_t *result = json_object_get (root, "result");
    json_t *error = json_object_get (root, "error");
    job->width = (int) json_integer_value (json_object_get (result, "width"));
    job->height = (int) json_integer_value (json_object_get (result, "height"));
    s_copy (job->worker, sizeof job->worker, root, "worker", "");
    s_copy (job->error.code, sizeof job->error.code, error, "code", "failed");
    s_copy (job->error.message, sizeof job->error.message, error, "message",
            "the image could not be resized");
    json_decref (root);
    return rc;
}

int
imgp_api_error (imgp_http_client_t *http, imgp_api_error_t *error)
{
    int status = imgp_http_client_status (http);
    if (status == 0) {
        snprintf (error->code, sizeof error->code, "transport");
        snprintf (error->message, sizeof error->message, "%s", imgp_http_client_error (http));
        return -1;
    }
    char code [32], message [32];
    snprintf (code, sizeof code, "http_%d", status);
    snprintf (message, sizeof message, "HTTP %d", status);
    json_t *root = s_body_json (http);
    json_t *object = json_object_get (root, "error");
    int rc = json_is_object (object) ? 0 : -1;
    s_copy (error->code, sizeof error->code, object, "code", code);
    s_copy (error->message, sizeof error->message, object, "message", message);
    json_decref (root);
    return rc;
}

long long
imgp_api_retry_after_ms (imgp_http_client_t *http, long long fallback_ms)
{
    const char *value = imgp_http_client_header (http, "Retry-After");
    char *end = NULL;
    long seconds = value ? strtol (value, &end, 10) : -1;
    long long ms = fallback_ms;
    if (value && end != value && seconds >= 0 && seconds <= 3600)
        ms = seconds * 1000LL;
    return ms < 50 ? 50 : ms;
}

//  --------------------------------------------------------------------------
//  Long-poll

void
imgp_api_poll_init (imgp_api_poll_t *self, int wait_s)
{
    assert (wait_s >= 0);
    *self = (imgp_api_poll_t) { .wait_s = wait_s };
}

void
imgp_api_poll_path (imgp_api_poll_t *self, const char *path, long long deadline,
                    char *out, size_t out_size)
{
    self->asked_at = (long long) zclock_mono ();
    long long left_s = deadline > self->asked_at ? (deadline - self->asked_at) / 1000 : 0;
    self->asked_s = left_s < self->wait_s ? (int) left_s : self->wait_s;
    //  No parameter at all for 0: plain polling works with any frontend.
    if (self->asked_s > 0)
        snprintf (out, out_size, "%s?wait=%d", path, self->asked_s);
    else
        snprintf (out, out_size, "%s", path);
}

bool
imgp_api_poll_refused (imgp_api_poll_t *self, imgp_http_client_t *http)
{
    imgp_api_error_t error;
    if (self->asked_s == 0 || imgp_http_client_status (http) != 400
    ||  imgp_api_error (http, &error) != 0 || strcmp (error.code, "bad_option") != 0
    ||  strncmp (error.message, "wait ", 5) != 0)
        return false;
    //  "wait must be whole seconds from 0 to N": N is the last number.
    //  Without one, halve; either way the wait only shrinks, so this ends.
    const char *to = strrchr (error.message, ' ');
    char *end = NULL;
    long most = to ? strtol (to + 1, &end, 10) : -1;
    if (!to || end == to + 1 || *end || most < 0 || most >= self->asked_s)
        most = self->asked_s / 2;
    self->wait_s = (int) most;
    return true;
}

long long
imgp_api_poll_delay (imgp_api_poll_t *self, imgp_http_client_t *http, long long fallback_ms)
{
    //  Held for (nearly) the wait asked: the server's timer and ours may
    //  differ by a little, hence 9/10. Anything shorter means the server did
    //  not hold it (an old frontend, no waiter left): pause, as a plain
    //  poller would. asked_s 0 is plain polling, so always a pause.
    long long held_ms = (long long) zclock_mono () - self->asked_at;
    if (self->asked_s > 0 && held_ms * 10 >= self->asked_s * 9000LL)
        return 0;
    return imgp_api_retry_after_ms (http, fallback_ms);
}

long long
imgp_api_poll_extra_ms (const imgp_api_poll_t *self)
{
    return self->asked_s * 1000LL;
}

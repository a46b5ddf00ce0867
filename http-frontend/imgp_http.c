/*  imgp_http — see imgp_http.h.

    Routing is ours, not civetweb's: one handler takes every path and
    matches it against the table below using the request path as the
    client sent it (URL-decoded, but not cleaned). civetweb's own matching
    uses the cleaned path, where /v1/images/../healthz becomes /v1/healthz;
    we want such a path refused as a bad id, not quietly rerouted.

    Order of checks on every request: route, then the id in it (400 bad_id
    before anything else), then the method (405 + Allow), then the handler.
    All of them run on the head alone, so a refused upload never gets the
    "100 Continue" its client may wait for (imgp_upload sends it only once
    the body is wanted).

    Responses are written by us, head and all, not through civetweb 1.15's
    mg_response_header_* calls: once an upload has written its interim
    100, mg_write has marked the connection "data sent" and
    mg_response_header_start refuses (-3), which left a body with no status
    line; and mg_response_header_send writes each header line with its own
    send(), which with Nagle and the client's delayed ACK cost 40 ms per
    keep-alive request (tcp_nodelay is set too). Our Connection header
    repeats civetweb's own keep-alive rule (should_keep_alive). A response
    sent while the request body is still unread closes the connection
    (mg_disable_connection_keep_alive) and says so, so left-over body bytes
    are never read as the next request.
*/
#include "imgp_http.h"

#include <assert.h>
#include <civetweb.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgp_brokerc.h"
#include "imgp_id.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_opts.h"
#include "imgp_sniff.h"
#include "imgp_upload.h"
#include "imgp_watch.h"

#define S_RETRY_AFTER_S 1       //  Retry-After for 503 and pending thumbnails
#define S_WORKER_THREAD 1       //  civetweb thread_type of request workers

struct _imgp_http_t {
    struct mg_context *ctx;     //  civetweb server, NULL once stopped
    imgp_http_config_t config;  //  copy of the configuration; strings below
    char *listen;               //  owned copy of config.listen
    char *intake;               //  owned copy of config.intake
    char *status;               //  owned copy of config.status
    imgp_watch_t *watch;        //  cuts off upload reads past --upload-timeout-ms
};

typedef enum {
    S_ROUTE_NONE = 0,           //  no such resource
    S_ROUTE_BAD_ID,             //  an images path with a malformed id
    S_ROUTE_UPLOAD,             //  /v1/images, /images
    S_ROUTE_STATUS,             //  /v1/images/{id}
    S_ROUTE_THUMBNAIL,          //  /v1/images/{id}/thumbnail, /images/{id}/thumbnail
    S_ROUTE_HEALTH              //  /healthz
} s_route_t;

//  One request in flight, on the stack of its worker thread.
typedef struct {
    struct mg_connection *conn; //  civetweb connection
    imgp_http_t *server;        //  the server object
    imgp_brokerc_t *broker;     //  this thread's broker client (NULL if it failed)
    const char *method;         //  request method
    const char *path;           //  decoded, uncleaned request path
    s_route_t route;            //  what the path names
    char id [IMGP_ID_LEN + 1];  //  job id of STATUS and THUMBNAIL routes, valid
    int status;                 //  HTTP status sent, 0 until then
    bool body_read;             //  the request body was read to its end
    bool must_close;            //  civetweb could not parse it: no request can follow
    int retry_after;            //  Retry-After seconds, 0 for none
    const char *allow;          //  Allow header (405), NULL for none
    char location [64];         //  Location header, "" for none
} s_request_t;

typedef void (s_handler_fn) (s_request_t *req);

static s_handler_fn s_upload, s_status, s_thumbnail, s_health;

//  Which method each route takes, and who handles it.
static const struct {
    s_route_t route;            //  route
    const char *method;         //  the one method allowed
    s_handler_fn *handler;      //  handler for it
} s_routes [] = {
    { S_ROUTE_UPLOAD, "POST", s_upload },
    { S_ROUTE_STATUS, "GET", s_status },
    { S_ROUTE_THUMBNAIL, "GET", s_thumbnail },
    { S_ROUTE_HEALTH, "GET", s_health },
};

//  --------------------------------------------------------------------------
//  Routes

static const char *
s_after (const char *text, const char *prefix)
{
    size_t len = strlen (prefix);
    return strncmp (text, prefix, len) == 0 ? text + len : NULL;
}

//  Match a path; on the id routes, copy the validated id into `id`.
static s_route_t
s_route_parse (const char *path, char id [IMGP_ID_LEN + 1])
{
    if (strcmp (path, "/healthz") == 0)
        return S_ROUTE_HEALTH;
    if (strcmp (path, "/v1/images") == 0 || strcmp (path, "/images") == 0)
        return S_ROUTE_UPLOAD;
    const char *rest = s_after (path, "/v1/images/");
    bool v1 = rest != NULL;
    if (!rest)
        rest = s_after (path, "/images/");
    if (!rest)
        return S_ROUTE_NONE;
    size_t len = strcspn (rest, "/");
    if (len != IMGP_ID_LEN)
        return S_ROUTE_BAD_ID;
    memcpy (id, rest, len);
    id [len] = '\0';
    if (!imgp_id_valid (id))
        return S_ROUTE_BAD_ID;
    rest += len;
    if (v1 && *rest == '\0')
        return S_ROUTE_STATUS;
    if (strcmp (rest, "/thumbnail") == 0)
        return S_ROUTE_THUMBNAIL;
    return S_ROUTE_NONE;
}

//  --------------------------------------------------------------------------
//  Responses

//  True when the request may have body bytes we did not read: then the
//  connection cannot carry another request.
static bool
s_body_pending (s_request_t *req)
{
    if (req->body_read)
        return false;
    long long length = mg_get_request_info (req->conn)->content_length;
    if (length > 0 || mg_get_header (req->conn, "Transfer-Encoding"))
        return true;
    //  A POST without a length: whatever follows is not a request.
    return length < 0 && strcmp (req->method, "POST") == 0;
}

//  True when the comma-separated header `value` lists `token`, in any case.
static bool
s_has_token (const char *value, const char *token)
{
    size_t len = strlen (token);
    while (*value) {
        value += strspn (value, " \t,");
        size_t n = strcspn (value, ",");
        size_t end = n;
        while (end > 0 && (value [end - 1] == ' ' || value [end - 1] == '\t'))
            end--;
        if (end == len && strncasecmp (value, token, len) == 0)
            return true;
        value += n;
    }
    return false;
}

//  True when the connection must close after this response: a request
//  civetweb could not parse, or body bytes still unread.
static bool
s_must_close (s_request_t *req)
{
    return req->must_close || s_body_pending (req);
}

//  Keep-alive as civetweb 1.15 will act after the handler
//  (should_keep_alive: the client's Connection header, else keep-alive
//  for HTTP/1.1 only), for the Connection header of a response.
static bool
s_keep_alive (s_request_t *req)
{
    const char *asked = mg_get_header (req->conn, "Connection");
    const char *version = mg_get_request_info (req->conn)->http_version;
    return asked ? s_has_token (asked, "keep-alive") : version && strcmp (version, "1.1") == 0;
}

//  A response head, with room for a small body after it, so most
//  responses leave in one write.
typedef struct {
    char text [4096];           //  head, then maybe the body
    size_t size;                //  bytes used
} s_head_t;

static void
s_head_add (s_head_t *head, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_head_add (s_head_t *head, const char *format, ...)
{
    size_t room = sizeof head->text - head->size;
    va_list args;
    va_start (args, format);
    int n = vsnprintf (head->text + head->size, room, format, args);
    va_end (args);
    assert (n >= 0 && (size_t) n < room);   //  our own headers are short
    head->size += (size_t) n;
}

static void
s_reply (s_request_t *req, int status, const char *type, const void *body, size_t size)
{
    struct mg_connection *conn = req->conn;
    const char *version = mg_get_request_info (conn)->http_version;
    char date [64];
    time_t now = time (NULL);
    struct tm tm;
    strftime (date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r (&now, &tm));

    s_head_t head = { .size = 0 };
    //  HTTP/1.0 clients get 1.0; everyone else, even one that asked for
    //  HTTP/9.9, gets what we speak.
    bool v10 = version && strcmp (version, "1.0") == 0;
    s_head_add (&head, "HTTP/%s %d %s\r\nDate: %s\r\n", v10 ? "1.0" : "1.1", status,
                mg_get_response_code_text (conn, status), date);
    s_head_add (&head, "Content-Type: %s\r\nContent-Length: %zu\r\n", type, size);
    if (req->location [0])
        s_head_add (&head, "Location: %s\r\n", req->location);
    if (req->allow)
        s_head_add (&head, "Allow: %s\r\n", req->allow);
    if (req->retry_after > 0)
        s_head_add (&head, "Retry-After: %d\r\n", req->retry_after);
    bool close = s_must_close (req);
    if (close)
        mg_disable_connection_keep_alive (conn);
    s_head_add (&head, "Connection: %s\r\n\r\n",
                close || !s_keep_alive (req) ? "close" : "keep-alive");
    //  A HEAD response says the length of the body it does not carry.
    if (strcmp (req->method, "HEAD") == 0)
        size = 0;
    else
    if (size && size <= sizeof head.text - head.size) {
        memcpy (head.text + head.size, body, size);
        head.size += size;
        size = 0;
    }
    mg_write (conn, head.text, head.size);
    if (size)
        mg_write (conn, body, size);
    req->status = status;
}

//  Send a JSON body; takes ownership of `body` (NULL means out of memory).
static void
s_reply_json (s_request_t *req, int status, json_t *body)
{
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    json_decref (body);
    if (!text) {
        static const char oom [] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        s_reply (req, 500, "application/json", oom, strlen (oom));
        return;
    }
    s_reply (req, status, "application/json", text, strlen (text));
    free (text);
}

static void
s_reply_error (s_request_t *req, int status, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static void
s_reply_error (s_request_t *req, int status, const char *code, const char *format, ...)
{
    char message [IMGP_MESSAGE_MAX + 1];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    s_reply_json (req, status, json_pack ("{s:{s:s,s:s}}", "error", "code", code,
                                          "message", message));
}

static void
s_reply_unavailable (s_request_t *req)
{
    req->retry_after = S_RETRY_AFTER_S;
    s_reply_error (req, 503, "unavailable",
                   "the job service is not answering; try again shortly");
}

static void
s_status_url (const char *id, char *url, size_t size)
{
    snprintf (url, size, "/v1/images/%s", id);
}

//  The SUBMIT reached the broker but no answer came in time: the broker may
//  still take the job, so the client gets the id to look it up before it
//  uploads again, rather than make a second job.
static void
s_reply_unconfirmed (s_request_t *req)
{
    char status_url [64];
    s_status_url (req->id, status_url, sizeof status_url);
    req->retry_after = S_RETRY_AFTER_S;
    s_reply_json (req, 503, json_pack (
        "{s:{s:s,s:s},s:s,s:s}", "error", "code", "unavailable", "message",
        "the job service did not confirm the upload in time; the job may have been "
        "accepted: poll status_url (404 means it was not) before uploading again",
        "id", req->id, "status_url", status_url));
}

//  An ERROR from the broker, as the HTTP status that fits its code.
static void
s_reply_broker_error (s_request_t *req, imgp_msg_t *reply)
{
    static const struct {
        const char *code;       //  broker error code
        int status;             //  HTTP status for it
    } map [] = {
        { "not_found", 404 }, { "queue_full", 503 }, { "too_large", 413 },
        { "bad_request", 400 },
    };
    int status = 500;
    for (size_t i = 0; i < sizeof map / sizeof map [0]; i++)
        if (strcmp (reply->code, map [i].code) == 0)
            status = map [i].status;
    if (status == 503)
        req->retry_after = S_RETRY_AFTER_S;
    const char *message = reply->message [0] ? reply->message : "the job service failed";
    if (status == 404)
        message = "no image with this id (it may have expired)";
    s_reply_error (req, status, reply->code [0] ? reply->code : "internal", "%s", message);
}

//  A reply of a type the request does not expect: a broker bug.
static void
s_reply_unexpected (s_request_t *req, imgp_msg_t *reply)
{
    imgp_error ("job=%s event=unexpected_reply type=%s", req->id [0] ? req->id : "-",
                imgp_msg_type_name (reply->type));
    s_reply_error (req, 502, "bad_gateway", "the job service gave an unexpected answer");
}

//  --------------------------------------------------------------------------
//  JSON bodies

//  Milliseconds since the epoch as ISO 8601 UTC, "2026-11-28T04:32:52.123Z".
static void
s_iso8601 (int64_t ms, char *text, size_t size)
{
    time_t seconds = (time_t) (ms / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r (&seconds, &tm)) {
        snprintf (text, size, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf (text, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (ms % 1000));
}

static json_t *
s_status_json (imgp_msg_t *info)
{
    char created [80], updated [80];
    s_iso8601 (info->created_at, created, sizeof created);
    s_iso8601 (info->updated_at, updated, sizeof updated);
    json_t *body = json_pack ("{s:s,s:s,s:s,s:s,s:i}", "id", info->id, "status",
                              imgp_state_name (info->state), "created_at", created,
                              "updated_at", updated, "attempts", info->attempts);
    if (body && info->state == IMGP_STATE_FAILED)
        json_object_set_new (body, "error",
                             json_pack ("{s:s,s:s}", "code", info->code [0] ? info->code : "failed",
                                        "message", info->message));
    if (body && info->state == IMGP_STATE_DONE)
        json_object_set_new (body, "result",
                             json_pack ("{s:i,s:i,s:s,s:I}", "width", info->result.width,
                                        "height", info->result.height, "format",
                                        imgp_format_name (info->result.format), "bytes",
                                        (json_int_t) info->result.bytes));
    return body;
}

//  --------------------------------------------------------------------------
//  Handlers

static void
s_upload_accepted (s_request_t *req, imgp_msg_t *reply, size_t bytes, const char *format)
{
    imgp_info ("job=%s event=submitted bytes=%zu format=%s", req->id, bytes, format);
    char status_url [64], thumbnail_url [80];
    s_status_url (req->id, status_url, sizeof status_url);
    snprintf (thumbnail_url, sizeof thumbnail_url, "/v1/images/%s/thumbnail", req->id);
    snprintf (req->location, sizeof req->location, "%s", status_url);
    s_reply_json (req, 202, json_pack ("{s:s,s:s,s:s,s:s}", "id", req->id, "status",
                                       imgp_state_name (reply->state), "status_url",
                                       status_url, "thumbnail_url", thumbnail_url));
}

//  Hand a read and sniffed upload to the broker, and answer.
static void
s_submit (s_request_t *req, const imgp_opts_t *opts, imgp_upload_t *upload, const char *format)
{
    if (!req->broker) {
        //  Its client could not be made at thread start (logged then); other
        //  threads may serve the retry.
        imgp_upload_clear (upload);
        s_reply_unavailable (req);
        return;
    }
    if (imgp_id_new (req->id)) {
        imgp_upload_clear (upload);
        s_reply_error (req, 500, "internal", "no randomness for a job id on this server");
        return;
    }
    size_t bytes = upload->size;
    bool sent = false;
    imgp_msg_t *reply =
        imgp_brokerc_submit (req->broker, req->id, opts, &upload->data, bytes, &sent);
    if (!reply && sent)
        s_reply_unconfirmed (req);
    else
    if (!reply)
        s_reply_unavailable (req);
    else
    if (reply->type == IMGP_MSG_ACCEPTED)
        s_upload_accepted (req, reply, bytes, format);
    else
    if (reply->type == IMGP_MSG_ERROR) {
        imgp_info ("job=%s event=refused code=%s", req->id, reply->code);
        s_reply_broker_error (req, reply);
    }
    else
        s_reply_unexpected (req, reply);
    imgp_msg_destroy (&reply);
}

static void
s_upload (s_request_t *req)
{
    imgp_opts_t opts;
    const char *error = NULL;
    if (imgp_opts_parse_query (&opts, mg_get_request_info (req->conn)->query_string, &error)) {
        s_reply_error (req, 400, "bad_option", "%s", error ? error : "bad option");
        return;
    }
    const imgp_http_config_t *config = &req->server->config;
    imgp_upload_limits_t limits = { config->max_upload, config->upload_timeout_ms,
                                    config->head_timeout_ms, req->server->watch };
    imgp_upload_t upload;
    int rc = imgp_upload_read (req->conn, &limits, &upload);
    req->body_read = upload.consumed;
    if (rc) {
        s_reply_error (req, upload.status, upload.code, "%s", upload.message);
        return;
    }
    const char *format = imgp_sniff (upload.data, upload.size, req->server->config.sniff_allow);
    if (!format) {
        imgp_upload_clear (&upload);
        s_reply_error (req, 415, "unsupported_format", "%s", IMGP_SNIFF_REFUSED);
        return;
    }
    s_submit (req, &opts, &upload, format);
}

//  Ask the broker about the request's job; replies itself unless INFO came.
static imgp_msg_t *
s_ask (s_request_t *req, imgp_msg_t *(*ask) (imgp_brokerc_t *, const char *))
{
    imgp_msg_t *reply = req->broker ? ask (req->broker, req->id) : NULL;
    if (!reply)
        s_reply_unavailable (req);
    else
    if (reply->type == IMGP_MSG_ERROR)
        s_reply_broker_error (req, reply);
    else
    if (reply->type != IMGP_MSG_INFO)
        s_reply_unexpected (req, reply);
    else
        return reply;
    imgp_msg_destroy (&reply);
    return NULL;
}

static void
s_status (s_request_t *req)
{
    imgp_msg_t *info = s_ask (req, imgp_brokerc_status);
    if (info)
        s_reply_json (req, 200, s_status_json (info));
    imgp_msg_destroy (&info);
}

static void
s_thumbnail (s_request_t *req)
{
    imgp_msg_t *info = s_ask (req, imgp_brokerc_fetch);
    if (!info)
        return;
    if (info->state == IMGP_STATE_DONE && imgp_msg_size (info) > 0)
        s_reply (req, 200, imgp_format_mime (info->result.format), imgp_msg_data (info),
                 imgp_msg_size (info));
    else
    if (info->state == IMGP_STATE_DONE)
        s_reply_error (req, 500, "internal", "the thumbnail is missing on the job service");
    else
    if (info->state == IMGP_STATE_FAILED)
        s_reply_error (req, 422, info->code [0] ? info->code : "failed", "%s",
                       info->message [0] ? info->message : "the image could not be resized");
    else {
        req->retry_after = S_RETRY_AFTER_S;
        s_reply_json (req, 202, s_status_json (info));
    }
    imgp_msg_destroy (&info);
}

static void
s_health (s_request_t *req)
{
    imgp_msg_t *reply = req->broker ? imgp_brokerc_ping (req->broker) : NULL;
    if (reply && reply->type == IMGP_MSG_PONG)
        s_reply_json (req, 200, json_pack ("{s:s}", "status", "ok"));
    else
        s_reply_unavailable (req);
    imgp_msg_destroy (&reply);
}

//  --------------------------------------------------------------------------
//  civetweb callbacks

static void
s_dispatch (s_request_t *req)
{
    if (req->route == S_ROUTE_NONE) {
        s_reply_error (req, 404, "not_found", "no such resource");
        return;
    }
    if (req->route == S_ROUTE_BAD_ID) {
        s_reply_error (req, 400, "bad_id", "an image id is %d lowercase hex characters",
                       IMGP_ID_LEN);
        return;
    }
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes [0]; i++) {
        if (s_routes [i].route != req->route)
            continue;
        if (strcmp (req->method, s_routes [i].method) == 0)
            s_routes [i].handler (req);
        else {
            req->allow = s_routes [i].method;
            s_reply_error (req, 405, "method_not_allowed", "use %s here", s_routes [i].method);
        }
        return;
    }
}

static int
s_handle_request (struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *info = mg_get_request_info (conn);
    int64_t start = zclock_mono ();
    s_request_t req = {
        .conn = conn,
        .server = cbdata,
        .broker = mg_get_thread_pointer (conn),
        .method = info->request_method ? info->request_method : "",
        .path = info->local_uri_raw ? info->local_uri_raw
              : info->local_uri ? info->local_uri : "",
    };
    req.route = s_route_parse (req.path, req.id);
    s_dispatch (&req);
    if (imgp_log_verbose ())
        imgp_debug ("http method=%.16s path=%.200s status=%d ms=%lld", req.method, req.path,
                    req.status, (long long) (zclock_mono () - start));
    return req.status > 0 ? req.status : 500;
}

static void *
s_init_thread (const struct mg_context *ctx, int thread_type)
{
    if (thread_type != S_WORKER_THREAD)
        return NULL;
    imgp_http_t *self = mg_get_user_data (ctx);
    imgp_brokerc_t *broker =
        imgp_brokerc_new (self->intake, self->status, self->config.broker_timeout_ms,
                          (int64_t) self->config.max_upload);
    if (!broker)
        imgp_error ("cannot make a broker client for a worker thread");
    return broker;
}

static void
s_exit_thread (const struct mg_context *ctx, int thread_type, void *thread_pointer)
{
    (void) ctx;
    if (thread_type != S_WORKER_THREAD)
        return;
    imgp_brokerc_t *broker = thread_pointer;
    imgp_brokerc_destroy (&broker);
}

//  civetweb's own refusals (a request line or header it cannot parse, a
//  Content-Length that is no number, a head over its size limit) get the
//  same JSON error as ours instead of a text page, and close: after a
//  request civetweb could not parse, nothing says where the next begins.
static int
s_http_error (struct mg_connection *conn, int status, const char *errmsg)
{
    static const struct { int status; const char *code, *message; } errors [] = {
        { 400, "bad_request", "the request is malformed" },
        { 408, "request_timeout", "the request did not arrive in time" },
        { 411, "length_required", "send a Content-Length of one plain number, or a chunked "
                                  "body" },
        { 413, "too_large", "the request is too large" },
        { 414, "too_large", "the request line is too long" },
        { 417, "expectation_failed", "only Expect: 100-continue is supported" },
        { 431, "too_large", "the request headers are too large" },
        { 505, "bad_request", "use HTTP/1.1 or HTTP/1.0" },
    };
    const char *code = status >= 500 ? "internal" : "bad_request";
    const char *message = mg_get_response_code_text (conn, status);
    for (size_t i = 0; i < sizeof errors / sizeof errors [0]; i++)
        if (errors [i].status == status) {
            code = errors [i].code;
            message = errors [i].message;
        }
    //  civetweb's own words only when they say more than "Bad request".
    bool detail = errmsg && *errmsg && strcasecmp (errmsg, "Bad request") != 0;
    const char *method = mg_get_request_info (conn)->request_method;
    s_request_t req = { .conn = conn, .method = method ? method : "", .path = "",
                        .must_close = true };
    s_reply_error (&req, status, code, "%s%s%.200s", message, detail ? ": " : "",
                   detail ? errmsg : "");
    return 0;                   //  answered here
}

static int
s_log_message (const struct mg_connection *conn, const char *message)
{
    (void) conn;
    imgp_warn ("civetweb: %s", message);
    return 1;                   //  logged here; civetweb prints nothing
}

//  --------------------------------------------------------------------------
//  Life cycle

static int
s_start (imgp_http_t *self)
{
    char threads [16], timeout [16];
    snprintf (threads, sizeof threads, "%d", self->config.threads);
    snprintf (timeout, sizeof timeout, "%d", self->config.head_timeout_ms);
    const char *options [] = {
        "listening_ports", self->listen,
        "num_threads", threads,
        "request_timeout_ms", timeout,
        "enable_keep_alive", "yes",
        //  Headroom for writes that are not one segment (a 100 Continue,
        //  then the response; a large thumbnail after its head).
        "tcp_nodelay", "1",
        NULL
    };
    struct mg_callbacks callbacks;
    memset (&callbacks, 0, sizeof callbacks);
    callbacks.log_message = s_log_message;
    callbacks.init_thread = s_init_thread;
    callbacks.exit_thread = s_exit_thread;
    callbacks.http_error = s_http_error;
    self->ctx = mg_start (&callbacks, self, options);
    if (!self->ctx)
        return -1;
    mg_set_request_handler (self->ctx, "/", s_handle_request, self);
    return 0;
}

imgp_http_t *
imgp_http_new (const imgp_http_config_t *config)
{
    assert (config && config->listen && config->intake && config->status);
    assert (config->threads > 0 && config->max_upload > 0);
    assert (config->broker_timeout_ms > 0 && config->head_timeout_ms > 0);
    assert (config->upload_timeout_ms > 0);
    imgp_http_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->listen = strdup (config->listen);
    self->intake = strdup (config->intake);
    self->status = strdup (config->status);
    //  Worker threads open sockets concurrently: make czmq's context first.
    zsys_init ();
    mg_init_library (0);
    self->watch = imgp_watch_new ((size_t) config->threads);
    if (!self->listen || !self->intake || !self->status || !self->watch || s_start (self)) {
        imgp_error ("cannot start the HTTP server on '%s'", config->listen);
        imgp_http_destroy (&self);
    }
    return self;
}

void
imgp_http_destroy (imgp_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_http_t *self = *self_p;
    if (self->ctx)
        mg_stop (self->ctx);
    mg_exit_library ();
    imgp_watch_destroy (&self->watch);
    free (self->listen);
    free (self->intake);
    free (self->status);
    free (self);
    *self_p = NULL;
}

int
imgp_http_port (imgp_http_t *self)
{
    assert (self);
    struct mg_server_port ports [1];
    if (!self->ctx || mg_get_server_ports (self->ctx, 1, ports) < 1)
        return -1;
    return ports [0].port;
}

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
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgp_conns.h"
#include "imgp_id.h"
#include "imgp_link.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_opts.h"
#include "imgp_reply.h"
#include "imgp_sniff.h"
#include "imgp_upload.h"
#include "imgp_watch.h"

#define S_RETRY_AFTER_S 1       //  Retry-After for 503 and pending thumbnails
#define S_MMAP_THRESHOLD (128 * 1024)   //  allocations above go to mmap, see imgp_http_new

struct _imgp_http_t {
    struct mg_context *ctx;     //  civetweb server, NULL once stopped
    imgp_http_config_t config;  //  copy of the configuration; strings below
    char *listen;               //  owned copy of config.listen
    char *intake;               //  owned copy of config.intake
    char *status;               //  owned copy of config.status
    imgp_watch_t *watch;        //  cuts off upload reads past --upload-timeout-ms
    imgp_link_t *link;          //  the link to the broker, shared by every worker
    imgp_conns_t *conns;        //  open connections, per address and in all
};

//  What we keep about one open connection (civetweb's connection data),
//  from init_connection to connection_close, on its worker thread.
typedef struct {
    char address [48];          //  client address, as counted in conns
    bool counted;               //  counted in conns (at its first request head)
    bool refused;               //  over --conn-per-ip: answer 503 and close
} s_conn_t;

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
    s_conn_t *state;            //  the connection's own data, NULL for none
    const char *method;         //  request method
    const char *path;           //  decoded, uncleaned request path
    s_route_t route;            //  what the path names
    char id [IMGP_ID_LEN + 1];  //  job id of STATUS and THUMBNAIL routes, valid
    imgp_reply_t reply;         //  the response: its headers, and what was sent
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
//  Responses (written by imgp_reply)

static void
s_reply_unavailable (s_request_t *req)
{
    req->reply.retry_after = S_RETRY_AFTER_S;
    imgp_reply_error (&req->reply, 503, "unavailable",
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
    req->reply.retry_after = S_RETRY_AFTER_S;
    imgp_reply_json (&req->reply, 503, json_pack (
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
        req->reply.retry_after = S_RETRY_AFTER_S;
    const char *message = reply->message [0] ? reply->message : "the job service failed";
    if (status == 404)
        message = "no image with this id (it may have expired)";
    imgp_reply_error (&req->reply, status, reply->code [0] ? reply->code : "internal", "%s", message);
}

//  A reply of a type the request does not expect: a broker bug.
static void
s_reply_unexpected (s_request_t *req, imgp_msg_t *reply)
{
    imgp_error ("job=%s event=unexpected_reply type=%s", req->id [0] ? req->id : "-",
                imgp_msg_type_name (reply->type));
    imgp_reply_error (&req->reply, 502, "bad_gateway", "the job service gave an unexpected answer");
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
    snprintf (req->reply.location, sizeof req->reply.location, "%s", status_url);
    imgp_reply_json (&req->reply, 202, json_pack ("{s:s,s:s,s:s,s:s}", "id", req->id, "status",
                                       imgp_state_name (reply->state), "status_url",
                                       status_url, "thumbnail_url", thumbnail_url));
}

//  Hand a read and sniffed upload to the broker, and answer.
static void
s_submit (s_request_t *req, const imgp_opts_t *opts, imgp_upload_t *upload, const char *format)
{
    if (imgp_id_new (req->id)) {
        imgp_upload_clear (upload);
        imgp_reply_error (&req->reply, 500, "internal", "no randomness for a job id on this server");
        return;
    }
    size_t bytes = upload->size;
    bool sent = false;
    imgp_link_request_t request = {
        .type = IMGP_MSG_SUBMIT, .id = req->id, .opts = opts, .data = upload->data,
        .size = bytes,
    };
    imgp_msg_t *reply = imgp_link_call (req->server->link, &request, &sent);
    imgp_upload_clear (upload);     //  libzmq may still hold references
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
        imgp_reply_error (&req->reply, 400, "bad_option", "%s", error ? error : "bad option");
        return;
    }
    const imgp_http_config_t *config = &req->server->config;
    imgp_upload_limits_t limits = { config->max_upload, config->upload_timeout_ms,
                                    config->head_timeout_ms, req->server->watch };
    imgp_upload_t upload;
    int rc = imgp_upload_read (req->conn, &limits, &upload);
    req->reply.body_read = upload.consumed;
    if (rc) {
        imgp_reply_error (&req->reply, upload.status, upload.code, "%s", upload.message);
        return;
    }
    const char *format = imgp_sniff (upload.data, upload.size, req->server->config.sniff_allow);
    if (!format) {
        imgp_upload_clear (&upload);
        imgp_reply_error (&req->reply, 415, "unsupported_format", "%s", IMGP_SNIFF_REFUSED);
        return;
    }
    s_submit (req, &opts, &upload, format);
}

//  The request's ?wait=S in milliseconds (0 when absent), or -1 after
//  answering 400: S is whole seconds, 0..--max-wait-s.
static int
s_wait_ms (s_request_t *req)
{
    const char *query = mg_get_request_info (req->conn)->query_string;
    char text [16];
    int len = query ? mg_get_var (query, strlen (query), "wait", text, sizeof text) : -1;
    if (len == -1)
        return 0;
    int max = req->server->config.max_wait_s;
    bool digits = len > 0 && len <= 5 && text [strspn (text, "0123456789")] == '\0';
    int seconds = digits ? atoi (text) : -1;
    if (seconds < 0 || seconds > max) {
        imgp_reply_error (&req->reply, 400, "bad_option", "wait must be whole seconds from 0 to %d", max);
        return -1;
    }
    return seconds * 1000;
}

//  Ask the broker about the request's job (STATUS or FETCH), holding the
//  reply up to ?wait= until the job ends; replies itself unless INFO came.
static imgp_msg_t *
s_ask (s_request_t *req, imgp_msg_type_t type)
{
    int wait_ms = s_wait_ms (req);
    if (wait_ms < 0)
        return NULL;
    imgp_link_request_t request = { .type = type, .id = req->id, .wait_ms = wait_ms };
    imgp_msg_t *reply = imgp_link_call (req->server->link, &request, NULL);
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
    imgp_msg_t *info = s_ask (req, IMGP_MSG_STATUS);
    if (info)
        imgp_reply_json (&req->reply, 200, s_status_json (info));
    imgp_msg_destroy (&info);
}

//  True when the thumbnail's magic bytes are the format the job reports,
//  so we never serve bytes under a Content-Type they do not have.
static bool
s_thumbnail_true (imgp_msg_t *info)
{
    const char *sniffed = imgp_sniff (imgp_msg_data (info), imgp_msg_size (info), 0);
    const char *format = imgp_format_name (info->result.format);
    if (!sniffed)
        return false;
    //  The sniffer names AVIF by its container, HEIF.
    return strcmp (sniffed, format) == 0
        || (info->result.format == IMGP_FORMAT_AVIF && strcmp (sniffed, "heif") == 0);
}

static void
s_thumbnail (s_request_t *req)
{
    imgp_msg_t *info = s_ask (req, IMGP_MSG_FETCH);
    if (!info)
        return;
    if (info->state == IMGP_STATE_DONE && s_thumbnail_true (info))
        imgp_reply_send (&req->reply, 200, imgp_format_mime (info->result.format), imgp_msg_data (info),
                 imgp_msg_size (info));
    else
    if (info->state == IMGP_STATE_DONE && imgp_msg_size (info) > 0) {
        imgp_error ("job=%s event=thumbnail_mismatch format=%s bytes=%zu", req->id,
                    imgp_format_name (info->result.format), imgp_msg_size (info));
        imgp_reply_error (&req->reply, 502, "bad_gateway",
                       "the job service returned bytes that are not the thumbnail's format");
    }
    else
    if (info->state == IMGP_STATE_DONE)
        imgp_reply_error (&req->reply, 500, "internal", "the thumbnail is missing on the job service");
    else
    if (info->state == IMGP_STATE_FAILED)
        imgp_reply_error (&req->reply, 422, info->code [0] ? info->code : "failed", "%s",
                       info->message [0] ? info->message : "the image could not be resized");
    else {
        req->reply.retry_after = S_RETRY_AFTER_S;
        imgp_reply_json (&req->reply, 202, s_status_json (info));
    }
    imgp_msg_destroy (&info);
}

static void
s_health (s_request_t *req)
{
    imgp_link_request_t request = { .type = IMGP_MSG_PING, .id = "" };
    imgp_msg_t *reply = imgp_link_call (req->server->link, &request, NULL);
    if (reply && reply->type == IMGP_MSG_PONG)
        imgp_reply_json (&req->reply, 200, json_pack ("{s:s}", "status", "ok"));
    else
        s_reply_unavailable (req);
    imgp_msg_destroy (&reply);
}

//  --------------------------------------------------------------------------
//  civetweb callbacks

//  Count the request's connection at its first head; one whose address
//  holds its limit already is refused, now and for every request after.
static void
s_conn_count (s_request_t *req)
{
    s_conn_t *state = req->state;
    if (!state || state->counted)
        return;
    snprintf (state->address, sizeof state->address, "%s",
              mg_get_request_info (req->conn)->remote_addr);
    state->counted = true;
    if (imgp_conns_open (req->server->conns, state->address)) {
        state->refused = true;
        imgp_info ("event=refused reason=conn_limit client=%s limit=%d", state->address,
                   req->server->config.conn_per_ip);
    }
}

//  Over its address's connection limit: refused, whatever it asked.
static void
s_reply_refused (s_request_t *req)
{
    req->reply.must_close = true;
    req->reply.retry_after = S_RETRY_AFTER_S;
    imgp_reply_error (&req->reply, 503, "too_many_connections",
                   "too many open connections from your address (at most %d); close some "
                   "and retry", req->server->config.conn_per_ip);
}

//  A request both with a Content-Length and a Transfer-Encoding is framed
//  one way by us and maybe another by a proxy in front (RFC 9112 6.3:
//  request smuggling): refused, and its connection closed, so whatever
//  follows its body is never read as a request.
static bool
s_framing_ambiguous (s_request_t *req)
{
    return mg_get_header (req->conn, "Transfer-Encoding")
        && mg_get_header (req->conn, "Content-Length");
}

static void
s_dispatch (s_request_t *req)
{
    if (req->state && req->state->refused) {
        s_reply_refused (req);
        return;
    }
    if (s_framing_ambiguous (req)) {
        req->reply.must_close = true;
        imgp_reply_error (&req->reply, 400, "bad_request",
                       "send a Content-Length or a Transfer-Encoding, not both");
        return;
    }
    if (req->route == S_ROUTE_NONE) {
        imgp_reply_error (&req->reply, 404, "not_found", "no such resource");
        return;
    }
    if (req->route == S_ROUTE_BAD_ID) {
        imgp_reply_error (&req->reply, 400, "bad_id", "an image id is %d lowercase hex characters",
                       IMGP_ID_LEN);
        return;
    }
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes [0]; i++) {
        if (s_routes [i].route != req->route)
            continue;
        if (strcmp (req->method, s_routes [i].method) == 0)
            s_routes [i].handler (req);
        else {
            req->reply.allow = s_routes [i].method;
            imgp_reply_error (&req->reply, 405, "method_not_allowed", "use %s here", s_routes [i].method);
        }
        return;
    }
}

static int
s_handle_request (struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *info = mg_get_request_info (conn);
    int64_t start = zclock_mono ();
    imgp_http_t *self = cbdata;
    const char *method = info->request_method ? info->request_method : "";
    s_request_t req = {
        .conn = conn,
        .server = self,
        .state = mg_get_user_connection_data (conn),
        .method = method,
        .path = info->local_uri_raw ? info->local_uri_raw
              : info->local_uri ? info->local_uri : "",
        .reply = { .conn = conn, .method = method,
                   .crowded = imgp_conns_crowded (self->conns) },
    };
    req.route = s_route_parse (req.path, req.id);
    s_conn_count (&req);
    s_dispatch (&req);
    if (imgp_log_verbose ())
        imgp_debug ("http method=%.16s path=%.200s status=%d ms=%lld", req.method, req.path,
                    req.reply.status, (long long) (zclock_mono () - start));
    return req.reply.status > 0 ? req.reply.status : 500;
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
    s_request_t req = { .conn = conn, .server = mg_get_user_data (mg_get_context (conn)),
                        .state = mg_get_user_connection_data (conn),
                        .method = method ? method : "", .path = "",
                        .reply = { .conn = conn, .method = method ? method : "",
                                   .must_close = true } };
    s_conn_count (&req);
    if (req.state && req.state->refused) {
        s_reply_refused (&req);
        return 0;
    }
    imgp_reply_error (&req.reply, status, code, "%s%s%.200s", message, detail ? ": " : "",
                   detail ? errmsg : "");
    return 0;                   //  answered here
}

//  A worker takes a new connection: give it our connection data. Its
//  address is counted at its first request head, the first moment
//  civetweb 1.15 tells it (mg_get_request_info is NULL in
//  init_connection): a connection that never completes a head is not
//  counted, and is bounded by --head-timeout-ms instead.
static int
s_init_connection (const struct mg_connection *conn, void **conn_data)
{
    (void) conn;
    *conn_data = calloc (1, sizeof (s_conn_t));    //  NULL: the connection goes uncounted
    return 0;
}

static void
s_connection_close (const struct mg_connection *conn)
{
    imgp_http_t *self = mg_get_user_data (mg_get_context (conn));
    s_conn_t *state = mg_get_user_connection_data (conn);
    if (state && state->counted)
        imgp_conns_close (self->conns, state->address);
    free (state);
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
    char threads [16], timeout [16], idle [16];
    snprintf (threads, sizeof threads, "%d", self->config.threads);
    snprintf (timeout, sizeof timeout, "%d", self->config.head_timeout_ms);
    snprintf (idle, sizeof idle, "%d", self->config.keepalive_timeout_ms);
    //  One worker thread per open connection: the pool is the most
    //  connections held at once; the queue and backlog hold as many again
    //  while workers free up. request_timeout_ms is civetweb's deadline for
    //  a whole request head (and the longest silence in a body);
    //  keep_alive_timeout_ms replaces it for the next head on a kept-alive
    //  connection, so it is the idle timeout.
    const char *options [] = {
        "listening_ports", self->listen,
        "num_threads", threads,
        "connection_queue", threads,
        "listen_backlog", threads,
        "request_timeout_ms", timeout,
        "keep_alive_timeout_ms", idle,
        "enable_keep_alive", self->config.keepalive_timeout_ms > 0 ? "yes" : "no",
        //  Headroom for writes that are not one segment (a 100 Continue,
        //  then the response; a large thumbnail after its head).
        "tcp_nodelay", "1",
        NULL
    };
    struct mg_callbacks callbacks;
    memset (&callbacks, 0, sizeof callbacks);
    callbacks.log_message = s_log_message;
    callbacks.http_error = s_http_error;
    callbacks.init_connection = s_init_connection;
    callbacks.connection_close = s_connection_close;
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
    //  An upload buffer is one allocation that grows to the upload's size,
    //  made on whichever of thousands of threads took the request. glibc's
    //  dynamic mmap threshold rises to the largest block freed, so after a
    //  few 30 MB uploads they came from per-thread arenas that kept the
    //  memory (356 MB after 14 uploads). A fixed threshold keeps large
    //  blocks in mmap, given back to the system when freed.
    mallopt (M_MMAP_THRESHOLD, S_MMAP_THRESHOLD);
    self->conns = imgp_conns_new (config->threads, config->conn_per_ip);
    self->watch = imgp_watch_new ((size_t) config->threads);
    self->link = imgp_link_new (config->intake, config->status, config->broker_timeout_ms,
                                (int64_t) config->max_upload);
    if (!self->listen || !self->intake || !self->status || !self->conns || !self->watch
    ||  !self->link || s_start (self)) {
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
    imgp_link_destroy (&self->link);
    imgp_watch_destroy (&self->watch);
    imgp_conns_destroy (&self->conns);
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

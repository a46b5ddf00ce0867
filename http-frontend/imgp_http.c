/*  imgp_http — see imgp_http.h.

    Routing is ours, not civetweb's: one handler takes every path and
    matches it against the table below using the request path as the
    client sent it, URL-decoded by us, not cleaned. civetweb's own matching
    uses the cleaned path, where /v1/images/../healthz becomes /v1/healthz;
    we want such a path refused as a bad id, not quietly rerouted. And
    civetweb's decoding (decode_url, off here) decodes in place and stops
    the path at a decoded %00, so /v1/images/{id}%00/thumbnail became the
    status route: we decode, and refuse a path with a NUL or a broken
    escape.

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
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgp_conns.h"
#include "imgp_id.h"
#include "imgp_keys.h"
#include "imgp_link.h"
#include "imgp_log.h"
#include "imgp_mem.h"
#include "imgp_metrics.h"
#include "imgp_msg.h"
#include "imgp_opts.h"
#include "imgp_rate.h"
#include "imgp_reply.h"
#include "imgp_sniff.h"
#include "imgp_static.h"
#include "imgp_upload.h"
#include "imgp_watch.h"

#define S_RETRY_AFTER_S 1       //  Retry-After for 503 and pending thumbnails
#define S_RETRY_AFTER_SPOOL_S 30    //  Retry-After for 507: disk frees by TTL and compaction
#define S_TRIM_QUIET_MS 1000    //  heap given back this long after the last request (imgp_mem)
#define S_TRIM_BUSY_MS 10000    //  or this often while requests keep coming
#define S_RATE_CLIENTS 65536    //  token buckets and log-once notes held (imgp_rate)
#define S_NOTE_MS 60000         //  a refusal is logged once per client per this
#define S_PATH_MAX 2048         //  longest decoded request path routed
#define S_CLOCK_SLACK_MS 10     //  civetweb's clock and ours may round apart
#define S_CROWDED_HEAD_MS 1000  //  head deadline of a connection taken while crowded
#define S_VARIANT_WAIT_MS 10000 //  a thumbnail request waits this long, at most, for the
                                //  format its Accept prefers (format=auto) to be made

struct _imgp_http_t {
    struct mg_context *ctx;     //  civetweb server, NULL once stopped
    imgp_http_config_t config;  //  copy of the configuration; strings below
    char *listen;               //  owned copy of config.listen
    char *intake;               //  owned copy of config.intake
    char *status;               //  owned copy of config.status
    imgp_watch_t *watch;        //  cuts off upload reads past --upload-timeout-ms
    imgp_link_t *link;          //  the link to the broker, shared by every worker
    imgp_conns_t *conns;        //  open connections, per address and in all
    imgp_keys_t *keys;          //  API keys, NULL when --api-keys is not set
    imgp_rate_t *rate;          //  token buckets per key or address; log-once notes
    imgp_metrics_t *metrics;    //  the frontend's Prometheus series
    imgp_mem_t *mem;            //  gives heap memory back after bursts
};

//  What we keep about one open connection (civetweb's connection data),
//  from init_connection to connection_close, on its worker thread.
typedef struct {
    char address [48];          //  client address, as counted in conns
    bool counted;               //  counted in conns (at its first request head)
    bool refused;               //  over --conn-per-ip: answer 503 and close
    int64_t waiting_since;      //  zclock_mono when civetweb began to read the next head
    int head_limit_ms;          //  the time that head has (civetweb's, or ours when crowded)
    int slot;                   //  imgp_watch slot cutting off a slow first head, or -1
} s_conn_t;

typedef enum {
    S_ROUTE_NONE = 0,           //  no such resource
    S_ROUTE_BAD_PATH,           //  a path with a NUL, a broken escape, or too long
    S_ROUTE_BAD_ID,             //  an images path with a malformed id
    S_ROUTE_UPLOAD,             //  /v1/images, /images
    S_ROUTE_STATUS,             //  /v1/images/{id}
    S_ROUTE_THUMBNAIL,          //  /v1/images/{id}/thumbnail, /images/{id}/thumbnail
    S_ROUTE_HEALTH,             //  /healthz
    S_ROUTE_READY,              //  /readyz
    S_ROUTE_METRICS,            //  /metrics
    S_ROUTE_CLUSTER,            //  /v1/cluster
    S_ROUTE_STATIC              //  /, /v1/openapi.json: files built in (imgp_static)
} s_route_t;

//  One request in flight, on the stack of its worker thread.
typedef struct {
    imgp_http_t *server;        //  the server object
    s_conn_t *state;            //  the connection's own data, NULL for none
    char path [S_PATH_MAX];     //  decoded, uncleaned request path
    s_route_t route;            //  what the path names
    char id [IMGP_ID_LEN + 1];  //  job id of STATUS and THUMBNAIL routes, valid
    char owner [IMGP_OWNER_MAX + 1];    //  name of the client's API key, "" for none
    imgp_reply_t reply;         //  the response: its headers, and what was sent
} s_request_t;

typedef void (s_handler_fn) (s_request_t *req);

static s_handler_fn s_upload, s_status, s_thumbnail, s_health, s_ready, s_metrics, s_cluster,
                    s_static;

//  Which method each route takes, who handles it, how it is counted, and
//  whether it is open without an API key (probes and scrapes are).
static const struct {
    s_route_t route;            //  route
    const char *path;           //  path; with {id}: as documented, matched by s_route_parse
    const char *method;         //  the one method allowed (and HEAD where it is GET)
    s_handler_fn *handler;      //  handler for it
    imgp_route_t metric;        //  route label in the metrics
    bool open;                  //  served without an API key
} s_routes [] = {
    { S_ROUTE_UPLOAD, "/v1/images", "POST", s_upload, IMGP_ROUTE_UPLOAD, false },
    { S_ROUTE_UPLOAD, "/images", "POST", s_upload, IMGP_ROUTE_UPLOAD, false },
    { S_ROUTE_STATUS, "/v1/images/{id}", "GET", s_status, IMGP_ROUTE_STATUS, false },
    { S_ROUTE_THUMBNAIL, "/v1/images/{id}/thumbnail", "GET", s_thumbnail, IMGP_ROUTE_THUMBNAIL,
      false },
    { S_ROUTE_THUMBNAIL, "/images/{id}/thumbnail", "GET", s_thumbnail, IMGP_ROUTE_THUMBNAIL,
      false },
    { S_ROUTE_HEALTH, "/healthz", "GET", s_health, IMGP_ROUTE_HEALTH, true },
    { S_ROUTE_READY, "/readyz", "GET", s_ready, IMGP_ROUTE_READY, true },
    { S_ROUTE_METRICS, "/metrics", "GET", s_metrics, IMGP_ROUTE_METRICS, true },
    { S_ROUTE_CLUSTER, "/v1/cluster", "GET", s_cluster, IMGP_ROUTE_CLUSTER, false },
    //  The page asks for its key itself, and the API document is public.
    { S_ROUTE_STATIC, "/", "GET", s_static, IMGP_ROUTE_OTHER, true },
    { S_ROUTE_STATIC, "/v1/openapi.json", "GET", s_static, IMGP_ROUTE_OTHER, true },
};
#define S_ROUTES (sizeof s_routes / sizeof s_routes [0])

static void s_refusal (s_request_t *req, imgp_refusal_t reason, const char *name,
                       const char *who);

//  The client's address as civetweb wrote it (borrowed, for the request).
static const char *
s_client (s_request_t *req)
{
    return mg_get_request_info (req->reply.conn)->remote_addr;
}

//  --------------------------------------------------------------------------
//  Routes

static const char *
s_after (const char *text, const char *prefix)
{
    size_t len = strlen (prefix);
    return strncmp (text, prefix, len) == 0 ? text + len : NULL;
}

static int
s_hex (char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

//  Decode %XX escapes of `raw` into `path`. Returns 0, or -1 for a broken
//  escape, an escaped NUL, or a path that does not fit.
static int
s_path_decode (const char *raw, char *path, size_t size)
{
    size_t n = 0;
    for (; *raw; raw++) {
        int c = (unsigned char) *raw;
        if (c == '%') {
            int high = s_hex (raw [1]), low = high >= 0 ? s_hex (raw [2]) : -1;
            if (low < 0 || (c = high * 16 + low) == 0)
                return -1;
            raw += 2;
        }
        if (n + 1 >= size)
            return -1;
        path [n++] = (char) c;
    }
    path [n] = '\0';
    return 0;
}

//  Match a path; on the id routes, copy the validated id into `id`.
static s_route_t
s_route_parse (const char *path, char id [IMGP_ID_LEN + 1])
{
    for (size_t i = 0; i < S_ROUTES; i++)
        if (!strchr (s_routes [i].path, '{') && strcmp (path, s_routes [i].path) == 0)
            return s_routes [i].route;
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
    s_refusal (req, IMGP_REFUSAL_BROKER_DOWN, "broker_down", s_client (req));
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
    imgp_metrics_refusal (req->server->metrics, IMGP_REFUSAL_BROKER_DOWN);
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
        { "bad_request", 400 }, { "no_such_size", 404 }, { "spool_full", 507 },
    };
    int status = 500;
    for (size_t i = 0; i < sizeof map / sizeof map [0]; i++)
        if (strcmp (reply->code, map [i].code) == 0)
            status = map [i].status;
    if (status == 503) {
        imgp_metrics_refusal (req->server->metrics, IMGP_REFUSAL_QUEUE_FULL);
        req->reply.retry_after = S_RETRY_AFTER_S;
    }
    if (status == 507)              //  the broker's disk: room may come back (TTL, compaction)
        req->reply.retry_after = S_RETRY_AFTER_SPOOL_S;
    const char *message = reply->message [0] ? reply->message : "the job service failed";
    if (strcmp (reply->code, "not_found") == 0)
        message = "no image with this id (it may have expired)";
    imgp_reply_error (&req->reply, status, reply->code [0] ? reply->code : "internal", "%s",
                      message);
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

//  Every rendition of a done job: its size (the box asked for), what it
//  is, and the URL that serves it (a job of format=auto has several
//  formats of one size: that URL serves the one the request's Accept
//  prefers).
static json_t *
s_thumbnails_json (imgp_msg_t *info)
{
    json_t *list = json_array ();
    for (int i = 0; list && i < info->result_count; i++) {
        const imgp_result_t *r = &info->results [i];
        char size [32], url [IMGP_ID_LEN + 64];
        snprintf (size, sizeof size, "%dx%d", r->box.width, r->box.height);
        snprintf (url, sizeof url, "/v1/images/%s/thumbnail?size=%s", info->id, size);
        json_array_append_new (list, json_pack ("{s:s,s:i,s:i,s:s,s:I,s:s}", "size", size,
                                                "width", r->width, "height", r->height,
                                                "format", imgp_format_name (r->format),
                                                "bytes", (json_int_t) r->bytes, "url", url));
    }
    return list;
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
    if (body && info->state == IMGP_STATE_DONE && info->result_count > 0) {
        //  `result` is the first rendition, as before renditions, for old clients.
        const imgp_result_t *first = &info->results [0];
        json_object_set_new (body, "result",
                             json_pack ("{s:i,s:i,s:s,s:I}", "width", first->width,
                                        "height", first->height, "format",
                                        imgp_format_name (first->format), "bytes",
                                        (json_int_t) first->bytes));
        json_object_set_new (body, "thumbnails", s_thumbnails_json (info));
    }
    if (body && info->worker [0])
        json_object_set_new (body, "worker", json_string (info->worker));
    return body;
}

//  --------------------------------------------------------------------------
//  Handlers

//  One call to the broker through the link, as the request's owner; its
//  round trip is measured unless the broker was asked to hold it.
static imgp_msg_t *
s_call (s_request_t *req, imgp_link_request_t *request, bool *sent)
{
    request->owner = req->owner;
    int64_t start = zclock_usecs ();
    imgp_msg_t *reply = imgp_link_call (req->server->link, request, sent);
    if (reply && request->wait_ms == 0)
        imgp_metrics_roundtrip (req->server->metrics, (double) (zclock_usecs () - start) / 1e6);
    return reply;
}

static void
s_upload_accepted (s_request_t *req, imgp_msg_t *reply, size_t bytes, const char *format)
{
    imgp_info ("job=%s event=submitted bytes=%zu format=%s key=%s", req->id, bytes, format,
               req->owner [0] ? req->owner : "-");
    char status_url [64], thumbnail_url [80];
    s_status_url (req->id, status_url, sizeof status_url);
    snprintf (thumbnail_url, sizeof thumbnail_url, "/v1/images/%s/thumbnail", req->id);
    snprintf (req->reply.location, sizeof req->reply.location, "%s", status_url);
    imgp_reply_json (&req->reply, 202, json_pack (
        "{s:s,s:s,s:s,s:s}", "id", req->id, "status", imgp_state_name (reply->state),
        "status_url", status_url, "thumbnail_url", thumbnail_url));
}

//  Hand a read and sniffed upload to the broker, and answer.
static void
s_submit (s_request_t *req, const imgp_opts_t *opts, imgp_upload_t *upload, const char *format)
{
    if (imgp_id_new (req->id)) {
        imgp_upload_clear (upload);
        imgp_reply_error (&req->reply, 500, "internal",
                          "no randomness for a job id on this server");
        return;
    }
    size_t bytes = upload->size;
    bool sent = false;
    imgp_link_request_t request = {
        .type = IMGP_MSG_SUBMIT, .id = req->id, .opts = opts, .data = upload->data,
        .size = bytes,
    };
    imgp_msg_t *reply = s_call (req, &request, &sent);
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
    const char *query = mg_get_request_info (req->reply.conn)->query_string;
    const imgp_http_config_t *config = &req->server->config;
    imgp_upload_limits_t limits = { config->max_upload, config->upload_timeout_ms,
                                    config->head_timeout_ms, req->server->watch };
    imgp_upload_t upload;
    int rc = imgp_upload_read_opts (req->reply.conn, &limits, query, &opts, &upload);
    req->reply.body_read = upload.consumed;
    if (rc && upload.option [0]) {
        //  the option by name too, so a client can point at the field
        imgp_reply_json (&req->reply, 400,
                         json_pack ("{s:{s:s,s:s,s:s}}", "error", "code", upload.code,
                                    "message", upload.message, "option", upload.option));
        return;
    }
    if (rc) {
        if (upload.status == 413 || upload.status == 408)
            imgp_metrics_refusal (req->server->metrics, upload.status == 413
                                  ? IMGP_REFUSAL_TOO_LARGE : IMGP_REFUSAL_UPLOAD_TIMEOUT);
        imgp_reply_error (&req->reply, upload.status, upload.code, "%s", upload.message);
        return;
    }
    imgp_metrics_upload_bytes (req->server->metrics, upload.size);
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
    const char *query = mg_get_request_info (req->reply.conn)->query_string;
    char text [16];
    int len = query ? mg_get_var (query, strlen (query), "wait", text, sizeof text) : -1;
    if (len == -1)
        return 0;
    int max = req->server->config.max_wait_s;
    bool digits = len > 0 && len <= 5 && text [strspn (text, "0123456789")] == '\0';
    int seconds = digits ? atoi (text) : -1;
    if (seconds < 0 || seconds > max) {
        imgp_reply_error (&req->reply, 400, "bad_option",
                          "wait must be whole seconds from 0 to %d", max);
        return -1;
    }
    return seconds * 1000;
}

//  Ask the broker about the request's job (STATUS, or FETCH of `fetch`'s
//  rendition), holding the reply up to `wait_ms` until the job ends;
//  replies itself unless INFO came.
static imgp_msg_t *
s_ask_with (s_request_t *req, imgp_msg_type_t type, int wait_ms, const imgp_link_request_t *fetch)
{
    imgp_link_request_t request = { .type = type, .id = req->id, .wait_ms = wait_ms };
    if (fetch) {
        request.box = fetch->box;
        request.accept_count = fetch->accept_count;
        memcpy (request.accept, fetch->accept, sizeof request.accept);
    }
    imgp_msg_t *reply = s_call (req, &request, NULL);
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

//  s_ask_with, holding up to the request's ?wait=.
static imgp_msg_t *
s_ask (s_request_t *req, imgp_msg_type_t type, const imgp_link_request_t *fetch)
{
    int wait_ms = s_wait_ms (req);
    return wait_ms < 0 ? NULL : s_ask_with (req, type, wait_ms, fetch);
}

static void
s_status (s_request_t *req)
{
    imgp_msg_t *info = s_ask (req, IMGP_MSG_STATUS, NULL);
    if (info)
        imgp_reply_json (&req->reply, 200, s_status_json (info));
    imgp_msg_destroy (&info);
}

//  The rendition whose bytes a FETCH's INFO carries (`rendition`; the
//  first from a broker before renditions), NULL when it names none.
static const imgp_result_t *
s_rendition (imgp_msg_t *info)
{
    int index = info->rendition;
    return index >= 0 && index < info->result_count ? &info->results [index] : NULL;
}

//  True when the thumbnail's magic bytes are the format the rendition
//  claims, so we never serve bytes under a Content-Type they do not have.
static bool
s_thumbnail_true (imgp_msg_t *info, const imgp_result_t *rendition)
{
    const char *sniffed = imgp_sniff (imgp_msg_data (info), imgp_msg_size (info), 0);
    const char *format = imgp_format_name (rendition->format);
    if (!sniffed)
        return false;
    //  The sniffer names AVIF by its container, HEIF.
    return strcmp (sniffed, format) == 0
        || (rendition->format == IMGP_FORMAT_AVIF && strcmp (sniffed, "heif") == 0);
}

//  ?size=WxH of a thumbnail request into `box` ({0, 0} when absent: the
//  job's first size). Returns 0, or -1 after answering 400 bad_option.
static int
s_size_option (s_request_t *req, imgp_size_t *box)
{
    *box = (imgp_size_t) { 0, 0 };
    const char *query = mg_get_request_info (req->reply.conn)->query_string;
    char text [32];
    int len = query ? mg_get_var (query, strlen (query), "size", text, sizeof text) : -1;
    if (len == -1)
        return 0;
    unsigned w = 0, h = 0;
    int used = 0;
    bool digits = len > 0 && text [0] >= '1' && text [0] <= '9'
               && strspn (text, "0123456789x") == (size_t) len;
    if (!digits || sscanf (text, "%5ux%5u%n", &w, &h, &used) != 2 || used != len
    ||  w < 1 || w > IMGP_SIDE_MAX || h < 1 || h > IMGP_SIDE_MAX) {
        imgp_reply_json (&req->reply, 400, json_pack (
            "{s:{s:s,s:s,s:s}}", "error", "code", "bad_option", "message",
            "size must be WIDTHxHEIGHT, each 1..4096, e.g. size=400x300", "option", "size"));
        return -1;
    }
    *box = (imgp_size_t) { (int) w, (int) h };
    return 0;
}

//  True when an Accept header names `type` with a q above 0. Only explicit
//  types count: "*/*" and "image/*" are what every client sends, also the
//  ones that cannot show AVIF, so they get the family (JPEG or PNG).
static bool
s_accepts (const char *accept, const char *type)
{
    size_t len = strlen (type);
    for (const char *p = accept; p && *p; ) {
        p += strspn (p, " \t,");
        size_t item = strcspn (p, ",");
        size_t name = strcspn (p, ";, \t");
        if (name == len && strncasecmp (p, type, len) == 0) {
            //  q=0 means "not this one" (RFC 9110 12.4.2).
            const char *q = strstr (p, "q=");
            bool refused = q && q < p + item && strtod (q + 2, NULL) <= 0;
            return !refused;
        }
        p += item;
    }
    return false;
}

//  The formats a thumbnail request takes, best first (format=auto
//  negotiation, PROTOCOL.md 6.4): AVIF, then WebP when its Accept names
//  them, then the family. A job of a fixed format ignores the list.
static int
s_accept_formats (s_request_t *req, imgp_format_t accept [IMGP_ACCEPT_MAX])
{
    const char *header = mg_get_header (req->reply.conn, "Accept");
    int count = 0;
    if (s_accepts (header, "image/avif"))
        accept [count++] = IMGP_FORMAT_AVIF;
    if (s_accepts (header, "image/webp"))
        accept [count++] = IMGP_FORMAT_WEBP;
    accept [count++] = IMGP_FORMAT_JPEG;
    accept [count++] = IMGP_FORMAT_PNG;
    return count;
}

//  FETCH the rendition the request wants. When a better format for it is
//  being made (INFO `pending`: a format=auto job whose client prefers a
//  format not made yet, now queued), ask once more, held up to
//  S_VARIANT_WAIT_MS until it is made. *fallback says a better one is
//  still coming: that answer must not be cached.
static imgp_msg_t *
s_fetch (s_request_t *req, const imgp_link_request_t *fetch, bool *fallback)
{
    *fallback = false;
    imgp_msg_t *info = s_ask (req, IMGP_MSG_FETCH, fetch);
    if (info && info->state == IMGP_STATE_DONE && info->pending) {
        imgp_msg_destroy (&info);
        info = s_ask_with (req, IMGP_MSG_FETCH, S_VARIANT_WAIT_MS, fetch);
        *fallback = info && info->pending;
    }
    return info;
}

static void
s_thumbnail (s_request_t *req)
{
    imgp_link_request_t fetch = { .type = IMGP_MSG_FETCH };
    if (s_size_option (req, &fetch.box))
        return;
    fetch.accept_count = s_accept_formats (req, fetch.accept);
    bool fallback;
    imgp_msg_t *info = s_fetch (req, &fetch, &fallback);
    if (!info)
        return;
    //  The answer depends on Accept (format=auto): caches must key on it.
    req->reply.vary = "Accept";
    const imgp_result_t *rendition = s_rendition (info);
    if (info->state == IMGP_STATE_DONE && rendition && s_thumbnail_true (info, rendition)) {
        //  A fallback while a better format is being made must not be kept.
        imgp_reply_cache (&req->reply, rendition->etag,
                          fallback ? -1 : req->server->config.cache_max_age_s);
        imgp_reply_send (&req->reply, 200, imgp_format_mime (rendition->format),
                         imgp_msg_data (info), imgp_msg_size (info));
    }
    else
    if (info->state == IMGP_STATE_DONE && imgp_msg_size (info) > 0) {
        imgp_error ("job=%s event=thumbnail_mismatch format=%s bytes=%zu", req->id,
                    rendition ? imgp_format_name (rendition->format) : "-",
                    imgp_msg_size (info));
        imgp_reply_error (&req->reply, 502, "bad_gateway",
                          "the job service returned bytes that are not the thumbnail's format");
    }
    else
    if (info->state == IMGP_STATE_DONE)
        imgp_reply_error (&req->reply, 500, "internal",
                          "the thumbnail is missing on the job service");
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

//  A file built into the frontend (the page, the API document).
static void
s_static (s_request_t *req)
{
    const imgp_static_file_t *file = imgp_static_find (req->path);
    if (file)
        imgp_static_send (&req->reply, file);
    else
        imgp_reply_error (&req->reply, 404, "not_found", "no such resource");
}

//  PING the broker: its PONG (with its figures), or NULL when it did not
//  answer.
static imgp_msg_t *
s_ping (s_request_t *req)
{
    imgp_link_request_t request = { .type = IMGP_MSG_PING, .id = "" };
    imgp_msg_t *reply = s_call (req, &request, NULL);
    if (reply && reply->type != IMGP_MSG_PONG)
        imgp_msg_destroy (&reply);
    return reply;
}

//  A histogram of the broker's, in seconds.
static void
s_metrics_histo (imgp_metrics_out_t *out, const char *name, const char *help,
                 const imgp_histo_t *histo)
{
    double bounds [IMGP_STATS_BUCKETS];
    uint64_t counts [IMGP_STATS_BUCKETS + 1];
    for (int b = 0; b < IMGP_STATS_BUCKETS; b++)
        bounds [b] = (double) imgp_stats_bounds_ms [b] / 1000;
    for (int b = 0; b <= IMGP_STATS_BUCKETS; b++)
        counts [b] = (uint64_t) histo->counts [b];
    imgp_metrics_out_histogram (out, name, help, bounds, counts, IMGP_STATS_BUCKETS,
                                (double) histo->sum_ms / 1000);
}

//  Liveness: the broker answers.
static void
s_health (s_request_t *req)
{
    imgp_msg_t *pong = s_ping (req);
    if (pong)
        imgp_reply_json (&req->reply, 200, json_pack ("{s:s}", "status", "ok"));
    else
        s_reply_unavailable (req);
    imgp_msg_destroy (&pong);
}

//  Why the service cannot take work now, or NULL when it can: a short
//  reason (*reason_p, for machines) and a message.
static const char *
s_unready (imgp_msg_t *pong, const char **reason_p)
{
    *reason_p = pong ? pong->has_stats ? pong->stats.resizers == 0 ? "no_resizer"
              : pong->stats.queued >= pong->stats.queue_max ? "queue_full"
              : pong->stats.spool_full ? "spool_full" : NULL : "no_stats" : "broker_down";
    if (!pong)
        return "the broker is not answering";
    if (!pong->has_stats)
        return "the broker does not report its queue";
    if (pong->stats.resizers == 0)
        return "no resizer is live";
    if (pong->stats.queued >= pong->stats.queue_max)
        return "the broker's queue is full";
    if (pong->stats.spool_full)
        return "the broker's spool is full: uploads get 507";
    return NULL;
}

//  Readiness: the broker answers, its queue has room, a resizer is live,
//  its spool can take uploads. 503 + JSON error with "reason" otherwise.
static void
s_ready (s_request_t *req)
{
    imgp_msg_t *pong = s_ping (req);
    const char *reason;
    const char *message = s_unready (pong, &reason);
    if (message) {
        req->reply.retry_after = S_RETRY_AFTER_S;
        imgp_reply_json (&req->reply, 503, json_pack ("{s:{s:s,s:s,s:s}}", "error", "code",
                                                      "not_ready", "message", message,
                                                      "reason", reason));
    }
    else
        imgp_reply_json (&req->reply, 200, json_pack (
            "{s:s,s:I,s:I,s:I}", "status", "ready", "resizers",
            (json_int_t) pong->stats.resizers, "queued", (json_int_t) pong->stats.queued,
            "queue_max", (json_int_t) pong->stats.queue_max));
    imgp_msg_destroy (&pong);
}

//  The broker's CLUSTER reply: its figures and its JSON list of resizers,
//  or NULL when it did not answer. The list is the broker's own text: it
//  is parsed here all the same (bounded by IMGP_CLUSTER_MAX), and a reply
//  that is not an object with a "resizers" array counts as no answer.
static json_t *
s_cluster_list (s_request_t *req, imgp_stats_t *stats)
{
    imgp_link_request_t request = { .type = IMGP_MSG_CLUSTER, .id = "" };
    imgp_msg_t *reply = s_call (req, &request, NULL);
    json_t *list = NULL;
    if (reply && reply->type == IMGP_MSG_CLUSTER && reply->has_stats) {
        list = json_loadb ((const char *) imgp_msg_data (reply), imgp_msg_size (reply),
                           JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_array (json_object_get (list, "resizers"))) {
            json_decref (list);
            list = NULL;
        }
        *stats = reply->stats;
    }
    imgp_msg_destroy (&reply);
    return list;
}

//  The cluster as the broker sees it: every live resizer (name, host,
//  address, slots, busy, done, failed, heartbeat age, its job ids) and
//  the queue.
static void
s_cluster (s_request_t *req)
{
    imgp_stats_t stats;
    json_t *body = s_cluster_list (req, &stats);
    if (!body) {
        s_reply_unavailable (req);
        return;
    }
    json_t *figures = json_pack (
        "{s:I,s:I,s:I,s:I,s:I,s:I}", "resizers_live", (json_int_t) stats.resizers,
        "free_slots", (json_int_t) stats.slots, "queued", (json_int_t) stats.queued,
        "queue_max", (json_int_t) stats.queue_max, "in_flight", (json_int_t) stats.in_flight,
        "waiting_requests", (json_int_t) stats.waiters);
    json_object_update (body, figures);
    json_decref (figures);
    imgp_reply_json (&req->reply, 200, body);
}

//  The broker's figures as imgpipe_broker_* families.
static void
s_metrics_broker (imgp_metrics_out_t *out, imgp_msg_t *pong)
{
    imgp_metrics_out_scalar (out, "broker_up", IMGP_METRIC_GAUGE,
                             "1 when the broker answered this scrape", pong ? 1 : 0);
    if (!pong || !pong->has_stats)
        return;
    const imgp_stats_t *st = &pong->stats;
    static const struct {
        const char *name, *help;    //  family, its HELP
        imgp_metric_type_t type;    //  counter or gauge
        size_t offset;              //  of the figure in imgp_stats_t
    } figures [] = {
        { "broker_queue_depth", "jobs waiting for a resizer", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, queued) },
        { "broker_queue_max", "queued jobs beyond which uploads get 503", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, queue_max) },
        { "broker_jobs_in_flight", "jobs dispatched and not finished", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, in_flight) },
        { "broker_resizers_live", "resizers heard within the heartbeat timeout",
          IMGP_METRIC_GAUGE, offsetof (imgp_stats_t, resizers) },
        { "broker_waiters", "status requests held until their job ends", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, waiters) },
        { "broker_jobs_accepted_total", "jobs accepted", IMGP_METRIC_COUNTER,
          offsetof (imgp_stats_t, accepted) },
        { "broker_jobs_done_total", "jobs ended done", IMGP_METRIC_COUNTER,
          offsetof (imgp_stats_t, done) },
        { "broker_jobs_failed_total", "jobs ended failed", IMGP_METRIC_COUNTER,
          offsetof (imgp_stats_t, failed) },
        { "broker_jobs_retried_total", "dispatches re-queued", IMGP_METRIC_COUNTER,
          offsetof (imgp_stats_t, retried) },
        { "broker_spool_full", "1 while the spool cannot take uploads (they get 507)",
          IMGP_METRIC_GAUGE, offsetof (imgp_stats_t, spool_full) },
        { "broker_spool_bytes", "live bytes in the broker's spool", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, spool_bytes) },
        { "broker_spool_max_bytes", "--max-spool-bytes, 0 none", IMGP_METRIC_GAUGE,
          offsetof (imgp_stats_t, spool_max_bytes) },
    };
    for (size_t i = 0; i < sizeof figures / sizeof figures [0]; i++)
        imgp_metrics_out_scalar (out, figures [i].name, figures [i].type, figures [i].help,
                                 (double) *(const int64_t *) ((const char *) st
                                                              + figures [i].offset));
    s_metrics_histo (out, "broker_job_seconds", "resize time of done jobs", &st->job_ms);
    s_metrics_histo (out, "broker_queue_wait_seconds", "time from accepted to first dispatch",
                     &st->wait_ms);
}

//  Prometheus text: the frontend's series, then the broker's.
static void
s_metrics (s_request_t *req)
{
    imgp_metrics_out_t *out = imgp_metrics_out_new ();
    imgp_msg_t *pong = out ? s_ping (req) : NULL;
    char *text = NULL;
    if (out) {
        imgp_metrics_write (req->server->metrics, out);
        s_metrics_broker (out, pong);
        text = imgp_metrics_out_text (&out);
    }
    imgp_msg_destroy (&pong);
    if (text)
        imgp_reply_send (&req->reply, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                         strlen (text));
    else
        imgp_reply_error (&req->reply, 500, "internal", "out of memory");
    free (text);
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
    imgp_watch_end (req->server->watch, state->slot);     //  the head is in
    state->slot = -1;
    snprintf (state->address, sizeof state->address, "%s", s_client (req));
    state->counted = true;
    if (imgp_conns_open (req->server->conns, state->address))
        state->refused = true;
}

//  Over its address's connection limit: refused, whatever it asked.
static void
s_reply_refused (s_request_t *req)
{
    s_refusal (req, IMGP_REFUSAL_CONN_LIMIT, "conn_limit", req->state->address);
    req->reply.must_close = true;
    req->reply.retry_after = S_RETRY_AFTER_S;
    imgp_reply_error (&req->reply, 503, "too_many_connections",
                      "too many open connections from your address (at most %d); close some "
                      "and retry", req->server->config.conn_per_ip);
}

//  Log a refusal once per client and minute (the reason is counted every
//  time), so a client hammering a limit cannot flood the log.
static void
s_refusal (s_request_t *req, imgp_refusal_t reason, const char *name, const char *who)
{
    imgp_http_t *self = req->server;
    imgp_metrics_refusal (self->metrics, reason);
    if (imgp_rate_once (self->rate, name, who, S_NOTE_MS, zclock_mono ()))
        imgp_info ("event=refused reason=%s client=%s path=\"%.100s\" note=once_a_minute",
                   name, who, req->path);
}

//  Take one request from a bucket (a key's, or an address's); 429 with
//  Retry-After when it is empty. Every answer to a limited client says
//  its RateLimit-* figures. Returns 0 or -1 (answered).
static int
s_take (s_request_t *req, const char *who, double rate, double burst)
{
    imgp_rate_verdict_t verdict;
    int rc = imgp_rate_take (req->server->rate, who, rate, burst, zclock_mono (), &verdict);
    if (rate <= 0)
        return 0;               //  unlimited
    req->reply.rate_headers = true;
    req->reply.rate_limit = verdict.limit;
    req->reply.rate_remaining = verdict.remaining;
    req->reply.rate_reset = verdict.reset_s;
    if (rc == 0)
        return 0;
    s_refusal (req, IMGP_REFUSAL_RATE_LIMITED, "rate_limited", who);
    req->reply.retry_after = (int) verdict.retry_after_s;
    imgp_reply_error (&req->reply, 429, "rate_limited",
                      "too many requests: at most %lld at once, then %g a second; retry in "
                      "%lld s", (long long) verdict.limit, rate,
                      (long long) verdict.retry_after_s);
    return -1;
}

//  With --api-keys: the request must carry a known key (its name becomes
//  the request's owner), within the key's rate. Without keys: within
//  --rate-per-ip for its address, when set. Returns 0 to go on, or -1
//  when a 401 or 429 was sent. Keys are never logged, only names.
static int
s_guard (s_request_t *req)
{
    imgp_http_t *self = req->server;
    if (!self->keys) {
        double rate = self->config.rate_per_ip;
        return s_take (req, s_client (req), rate, 2 * rate);
    }
    char buffer [IMGP_KEYS_KEY_MAX + 1];
    const char *presented = imgp_keys_presented (mg_get_header (req->reply.conn, "Authorization"),
                                                 mg_get_header (req->reply.conn, "X-API-Key"),
                                                 buffer, sizeof buffer);
    imgp_key_info_t key;
    int known = presented ? imgp_keys_check (self->keys, presented, &key) : -1;
    explicit_bzero (buffer, sizeof buffer);     //  no copy of a key outlives the check
    if (known != 0) {
        s_refusal (req, IMGP_REFUSAL_UNAUTHORIZED, "unauthorized", s_client (req));
        req->reply.authenticate = "Bearer realm=\"imgpipe\"";
        imgp_reply_error (&req->reply, 401, "unauthorized",
                          presented ? "the API key is not valid"
                          : "send an API key: Authorization: Bearer KEY, or X-API-Key");
        return -1;
    }
    snprintf (req->owner, sizeof req->owner, "%s", key.name);
    return s_take (req, key.name, key.rate, key.burst);
}

//  A request both with a Content-Length and a Transfer-Encoding is framed
//  one way by us and maybe another by a proxy in front (RFC 9112 6.3:
//  request smuggling): refused, and its connection closed, so whatever
//  follows its body is never read as a request.
static bool
s_framing_ambiguous (s_request_t *req)
{
    return mg_get_header (req->reply.conn, "Transfer-Encoding")
        && mg_get_header (req->reply.conn, "Content-Length");
}

//  True when `method` may be used on a route taking `route_method`: HEAD
//  wherever GET is (RFC 9110 9.3.2; imgp_reply sends the head only).
static bool
s_method_allowed (const char *method, const char *route_method)
{
    return strcmp (method, route_method) == 0
        || (strcmp (method, "HEAD") == 0 && strcmp (route_method, "GET") == 0);
}

//  The Allow header of a route taking `route_method`.
static const char *
s_allow (const char *route_method)
{
    return strcmp (route_method, "GET") == 0 ? "GET, HEAD" : route_method;
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
    if (req->route == S_ROUTE_BAD_PATH) {
        imgp_reply_error (&req->reply, 400, "bad_request",
                          "the path has a NUL, a broken %%-escape, or is over %d bytes",
                          S_PATH_MAX - 1);
        return;
    }
    if (req->route == S_ROUTE_BAD_ID) {
        imgp_reply_error (&req->reply, 400, "bad_id", "an image id is %d lowercase hex characters",
                          IMGP_ID_LEN);
        return;
    }
    for (size_t i = 0; i < S_ROUTES; i++) {
        if (s_routes [i].route != req->route)
            continue;
        if (!s_routes [i].open && s_guard (req))
            return;             //  401 or 429 sent
        if (s_method_allowed (req->reply.method, s_routes [i].method))
            s_routes [i].handler (req);
        else {
            req->reply.allow = s_allow (s_routes [i].method);
            imgp_reply_error (&req->reply, 405, "method_not_allowed", "use %s here",
                              req->reply.allow);
        }
        return;
    }
}

static imgp_route_t
s_route_metric (s_route_t route)
{
    for (size_t i = 0; i < S_ROUTES; i++)
        if (s_routes [i].route == route)
            return s_routes [i].metric;
    return IMGP_ROUTE_OTHER;
}

static int
s_handle_request (struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *info = mg_get_request_info (conn);
    int64_t start = zclock_mono ();
    int64_t start_us = zclock_usecs ();
    imgp_http_t *self = cbdata;
    const char *method = info->request_method ? info->request_method : "";
    s_request_t req = {
        .server = self,
        .state = mg_get_user_connection_data (conn),
        .reply = { .conn = conn, .method = method,
                   .crowded = imgp_conns_crowded (self->conns) },
    };
    const char *raw = info->local_uri_raw ? info->local_uri_raw : "";
    req.route = s_path_decode (raw, req.path, sizeof req.path) ? S_ROUTE_BAD_PATH
              : s_route_parse (req.path, req.id);
    if (req.reply.crowded)
        imgp_metrics_refusal (self->metrics, IMGP_REFUSAL_POOL_CROWDED);
    imgp_metrics_gauge_add (self->metrics, IMGP_GAUGE_WORKERS_BUSY, 1);
    s_conn_count (&req);
    s_dispatch (&req);
    imgp_metrics_gauge_add (self->metrics, IMGP_GAUGE_WORKERS_BUSY, -1);
    imgp_metrics_request (self->metrics, s_route_metric (req.route), req.reply.status,
                          (double) (zclock_usecs () - start_us) / 1e6);
    if (req.state) {
        req.state->head_limit_ms = self->config.keepalive_timeout_ms;
        req.state->waiting_since = zclock_mono ();
    }
    if (imgp_log_verbose ())
        imgp_debug ("event=http_request method=%.16s path=\"%.200s\" status=%d ms=%lld",
                    req.reply.method, req.path, req.reply.status,
                    (long long) (zclock_mono () - start));
    imgp_mem_served (self->mem);
    return req.reply.status > 0 ? req.reply.status : 500;
}

//  True when the head being read has had all the time civetweb gives it
//  (--head-timeout-ms, or --keepalive-timeout-ms after a first request).
static bool
s_head_overdue (s_conn_t *state)
{
    if (!state)
        return false;
    return zclock_mono () - state->waiting_since + S_CLOCK_SLACK_MS >= state->head_limit_ms;
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
    //  civetweb says "Malformed message" both for a head it cannot read
    //  and for one that never completed: the clock tells them apart.
    if (status == 400 && errmsg && strcmp (errmsg, "Malformed message") == 0
    &&  s_head_overdue (mg_get_user_connection_data (conn))) {
        status = 408;
        code = "request_timeout";
        message = "the request head did not arrive in time";
        errmsg = NULL;
    }
    //  civetweb's own words only when they say more than "Bad request".
    bool detail = errmsg && *errmsg && strcasecmp (errmsg, "Bad request") != 0;
    const char *method = mg_get_request_info (conn)->request_method;
    s_request_t req = { .server = mg_get_user_data (mg_get_context (conn)),
                        .state = mg_get_user_connection_data (conn),
                        .reply = { .conn = conn, .method = method ? method : "",
                                   .must_close = true } };
    s_conn_count (&req);
    if (req.state && req.state->refused) {
        s_reply_refused (&req);
        return 0;
    }
    if (status == 408)
        s_refusal (&req, IMGP_REFUSAL_HEAD_TIMEOUT, "head_timeout", s_client (&req));
    imgp_reply_error (&req.reply, status, code, "%s%s%.200s", message, detail ? ": " : "",
                      detail ? errmsg : "");
    imgp_metrics_request (req.server->metrics, IMGP_ROUTE_OTHER, status, 0);
    imgp_mem_served (req.server->mem);
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
    imgp_http_t *self = mg_get_user_data (mg_get_context (conn));
    imgp_metrics_gauge_add (self->metrics, IMGP_GAUGE_CONNECTIONS, 1);
    s_conn_t *state = calloc (1, sizeof (s_conn_t));    //  NULL: the connection goes uncounted
    if (state) {
        imgp_conns_accept (self->conns);
        state->waiting_since = zclock_mono ();
        state->head_limit_ms = self->config.head_timeout_ms;
        state->slot = -1;
        //  A pool this full may be held by slow heads, which no address
        //  count sees yet: a new connection then gets a second for its
        //  head, not --head-timeout-ms.
        if (imgp_conns_crowded (self->conns) && S_CROWDED_HEAD_MS < state->head_limit_ms) {
            state->head_limit_ms = S_CROWDED_HEAD_MS;
            state->slot = imgp_watch_begin (self->watch,
                                            state->waiting_since + S_CROWDED_HEAD_MS);
        }
    }
    *conn_data = state;
    return 0;
}

//  A worker thread starts (civetweb calls this before it waits for its
//  first connection): civetweb has just named the thread with snprintf,
//  whose frame reached a third page of the stack that an idle worker never
//  uses again; give it back (4 kB a thread, 16 MB at 4096).
static void *
s_init_thread (const struct mg_context *ctx, int thread_type)
{
    (void) ctx;
    if (thread_type == 1)       //  a worker
        imgp_mem_stack_trim ();
    return NULL;
}

static void
s_connection_close (const struct mg_connection *conn)
{
    imgp_http_t *self = mg_get_user_data (mg_get_context (conn));
    s_conn_t *state = mg_get_user_connection_data (conn);
    if (state) {
        imgp_watch_end (self->watch, state->slot);
        if (state->counted)
            imgp_conns_close (self->conns, state->address);
        imgp_conns_release (self->conns);
    }
    free (state);
    imgp_metrics_gauge_add (self->metrics, IMGP_GAUGE_CONNECTIONS, -1);
    //  The worker goes back to waiting for a connection, a few frames deep:
    //  the stack pages the connection touched (our handlers, and civetweb's
    //  own request path, which reaches 8 pages) go back. Here, not at the
    //  end of a request: civetweb's frames after a handler reach deeper
    //  than the handler's own. One madvise per connection.
    imgp_mem_stack_trim ();
}

static int
s_log_message (const struct mg_connection *conn, const char *message)
{
    (void) conn;
    imgp_warn ("event=civetweb message=\"%s\"", message);
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
        "decode_url", "no",     //  we decode the path ourselves (top of this file)
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
    callbacks.init_thread = s_init_thread;
    self->ctx = mg_start (&callbacks, self, options);
    if (!self->ctx)
        return -1;
    mg_set_request_handler (self->ctx, "/", s_handle_request, self);
    return 0;
}

static int
s_keys_load (imgp_http_t *self)
{
    char error [256];
    self->keys = imgp_keys_new (self->config.api_keys, error, sizeof error);
    if (!self->keys) {
        imgp_error ("event=keys_failed file=\"%s\" reason=\"%s\"", self->config.api_keys, error);
        return -1;
    }
    imgp_info ("event=keys_loaded file=\"%s\" keys=%zu", self->config.api_keys,
               imgp_keys_size (self->keys));
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
    imgp_mem_tune ();           //  before the worker threads: see imgp_mem.h
    self->conns = imgp_conns_new (config->threads, config->conn_per_ip);
    self->rate = imgp_rate_new (S_RATE_CLIENTS);
    self->metrics = imgp_metrics_new ();
    if (config->api_keys && config->api_keys [0] && s_keys_load (self)) {
        imgp_http_destroy (&self);
        return NULL;
    }
    self->watch = imgp_watch_new ((size_t) config->threads);
    self->mem = imgp_mem_new (S_TRIM_QUIET_MS, S_TRIM_BUSY_MS);
    self->link = imgp_link_new_keyed (config->intake, config->status, config->broker_timeout_ms,
                                      (int64_t) config->max_upload, config->curve);
    if (!self->listen || !self->intake || !self->status || !self->conns || !self->rate
    ||  !self->metrics || !self->watch || !self->mem || !self->link || s_start (self)) {
        imgp_error ("event=start_failed listen=%s", config->listen);
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
    imgp_mem_destroy (&self->mem);
    imgp_conns_destroy (&self->conns);
    imgp_keys_destroy (&self->keys);
    imgp_rate_destroy (&self->rate);
    imgp_metrics_destroy (&self->metrics);
    free (self->listen);
    free (self->intake);
    free (self->status);
    free (self);
    *self_p = NULL;
}

const char *
imgp_http_route (size_t index, const char **method, bool *open)
{
    if (index >= S_ROUTES)
        return NULL;
    if (method)
        *method = s_routes [index].method;
    if (open)
        *open = s_routes [index].open;
    return s_routes [index].path;
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

int
imgp_http_reload (imgp_http_t *self)
{
    assert (self);
    if (!self->keys)
        return 0;               //  no key file to read again
    char error [256];
    if (imgp_keys_reload (self->keys, error, sizeof error)) {
        imgp_error ("event=keys_reload_failed file=\"%s\" reason=\"%s\" action=kept_old_keys",
                    self->config.api_keys, error);
        return -1;
    }
    imgp_info ("event=keys_reloaded file=\"%s\" keys=%zu", self->config.api_keys,
               imgp_keys_size (self->keys));
    return 0;
}

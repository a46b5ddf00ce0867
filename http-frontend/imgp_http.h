/*  imgp_http — the HTTP server of imgpipe-frontend: civetweb with the v1
    routes (DESIGN.md, "HTTP contract"), turning each request into one call
    to the broker and its reply into an HTTP response.

    Why: the frontend holds no job state, so any number of them can serve
    the same broker; it validates everything a client sends (route, id,
    options, body size, content type, magic bytes) before the broker sees
    it. Every civetweb worker thread talks to the broker through the one
    shared link (imgp_link), so thousands of threads cost two sockets.

    Never: decode or resize an image, let a client-supplied id reach the
    broker unvalidated, or answer an error in anything but JSON
    {"error":{"code":...,"message":...}}.
*/
#ifndef IMGP_HTTP_H_INCLUDED
#define IMGP_HTTP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "imgp_curve.h"

typedef struct {
    const char *listen;         //  civetweb listening_ports, e.g. "127.0.0.1:8080" (port 0: any)
    const char *intake;         //  broker intake endpoint (SUBMIT)
    const char *status;         //  broker status endpoint (STATUS, FETCH, PING)
    int threads;                //  worker threads, also the most concurrent connections
    size_t max_upload;          //  largest image accepted, bytes, <= IMGP_UPLOAD_LIMIT_MAX
    int broker_timeout_ms;      //  time one broker call may take before 503 (uploads: more)
    int head_timeout_ms;        //  a request head must arrive within this; also the
                                //  longest silence inside a body (civetweb request_timeout_ms)
    int keepalive_timeout_ms;   //  an idle keep-alive connection is closed after this
    int upload_timeout_ms;      //  time a whole upload body may take (408 beyond)
    int conn_per_ip;            //  open connections per client address, 0 = no limit
    int max_wait_s;             //  longest ?wait= a request may ask for
    const char *api_keys;       //  key file (NAME KEY [RATE [BURST]] lines), NULL = no keys
    int rate_per_ip;            //  requests/s per client address without keys, 0 = off
    unsigned sniff_allow;       //  extra formats taken at upload, IMGP_SNIFF_* bits
    imgp_curve_t *curve;        //  CURVE keys for the broker links, borrowed; NULL plain
    int cache_max_age_s;        //  Cache-Control max-age of a thumbnail, seconds
} imgp_http_config_t;

typedef struct _imgp_http_t imgp_http_t;

//  Start serving. `config` is copied. Returns NULL when civetweb cannot
//  start (port taken, bad option); the reason is logged.
imgp_http_t *imgp_http_new (const imgp_http_config_t *config);

//  Stop serving: waits for requests in flight, closes every socket. Safe on
//  NULL and twice.
void imgp_http_destroy (imgp_http_t **self_p);

//  Read the API key file again (SIGHUP). On an error the old keys stay and
//  -1 is returned (logged); 0 otherwise, also when there are no keys.
int imgp_http_reload (imgp_http_t *self);

//  Route `index` of the router (0, 1, ... until NULL): its path as
//  documented ("/v1/images/{id}/thumbnail"), the one method it takes
//  (HEAD is also taken wherever that is GET) and whether it is served
//  without an API key. For the OpenAPI walker test: every route the router
//  knows must be documented.
const char *imgp_http_route (size_t index, const char **method, bool *open);

//  The TCP port listened on (the real one when the config asked for 0).
int imgp_http_port (imgp_http_t *self);

#endif

/*  imgp_http_client — one HTTP/1.1 request and its response, over
    civetweb's client API (mg_connect_client / mg_get_response / mg_read).

    Why: the command-line client needs only "send this method, path and
    body; give me the status, a few headers and a bounded body". Keeping
    that in one small class keeps the commands (imgp_cli, imgp_batch)
    free of sockets.
    Each request opens its own connection (Connection: close): a batch
    makes several per file, but a fresh connection per request keeps each
    one independent of the last (a frontend restarted between two polls
    costs nothing), and on loopback or a LAN the extra handshake is noise
    next to a resize. One client belongs to one thread at a time.

    Never: read a response body past the configured limit (a hostile or
    broken server cannot make the client allocate without bound), or
    print anything — errors are returned as text for the caller to show.
*/
#ifndef IMGP_HTTP_CLIENT_H_INCLUDED
#define IMGP_HTTP_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _imgp_http_client_t imgp_http_client_t;

//  Create a client for a base URL "http://HOST[:PORT][/PREFIX]" (port 80 by
//  default; a prefix is put before every request path). Returns NULL with
//  a message in `error` (size `error_size`) when the URL is not usable.
imgp_http_client_t *imgp_http_client_new (const char *url, char *error, size_t error_size);

//  Destroy the client and its last response; safe on NULL and twice.
void imgp_http_client_destroy (imgp_http_client_t **self_p);

//  Time allowed for the response head, in ms (default 30000). Known limit
//  of civetweb 1.15's client: neither the connect nor the body reads have a
//  timeout (a client connection has no request_timeout), so a caller that
//  must not hang bounds the whole request itself (imgp_cli uses a
//  timer, imgp_batch a watchdog thread).
void imgp_http_client_set_timeout (imgp_http_client_t *self, int timeout_ms);

//  Largest response body accepted, in bytes (default 64 MiB).
void imgp_http_client_set_max_body (imgp_http_client_t *self, size_t max_body);

//  Send one request. `path` starts with '/' and may hold a query string;
//  `content_type` and `body` may be NULL (no body). Returns 0 when a whole
//  response arrived (any status, 4xx/5xx included), -1 on a transport
//  problem (connect, timeout, oversized or cut body); the text is then in
//  imgp_http_client_error(). A new request replaces the previous response.
int imgp_http_client_request (imgp_http_client_t *self, const char *method,
                              const char *path, const char *content_type,
                              const void *body, size_t body_size);

//  HTTP status of the last response (0 when there is none).
int imgp_http_client_status (imgp_http_client_t *self);

//  Value of a response header, case-insensitive name; NULL when absent.
//  Borrowed, valid until the next request.
const char *imgp_http_client_header (imgp_http_client_t *self, const char *name);

//  Body of the last response, NUL-terminated for convenience (the NUL is
//  not counted in `size`). Borrowed, valid until the next request; never
//  NULL after a successful request.
const char *imgp_http_client_body (imgp_http_client_t *self, size_t *size);

//  Text of the last transport error (borrowed; "" when none).
const char *imgp_http_client_error (imgp_http_client_t *self);

//  True when the last request got a connection. After a transport error
//  this tells "the server never saw it" (false: safe to send again) from
//  "the server may have acted on it" (true).
bool imgp_http_client_connected (imgp_http_client_t *self);

//  Self-test: URL parsing and error paths that need no server.
void imgp_http_client_test (bool verbose);

#endif

/*  imgp_reply — writes the frontend's HTTP responses: the head, the
    keep-alive decision, JSON bodies and JSON errors.

    Why: civetweb 1.15's own header calls cannot be used here. Once an
    upload has written its interim 100 Continue, mg_write marks the
    connection "data sent" and mg_response_header_start refuses (-3),
    which left a body without a status line; and mg_response_header_send
    writes each header line with its own send(), which with Nagle and the
    client's delayed ACK cost 40 ms per keep-alive request. So the head is
    written here, in one buffer with a small body after it, in one write.

    The Connection header repeats civetweb's own keep-alive rule
    (should_keep_alive) and tells civetweb when we close: a response sent
    while body bytes are unread, after a request civetweb could not parse,
    or while the worker pool runs low, closes the connection, so left-over
    bytes are never read as the next request and busy keep-alive clients
    give their workers back.

    An imgp_reply_t is a plain struct on the request handler's stack: the
    handler fills in the header fields it wants, then calls one send.

    Caching (RFC 9110): a handler that serves a representation which never
    changes under its URL (a thumbnail) calls imgp_reply_cache first; the
    200 then carries ETag and Cache-Control, and becomes a 304 with no body
    when the request's If-None-Match matches (weak comparison, lists, `*`;
    only for GET and HEAD, only in place of a 200, so a pending or failed
    job is never a 304). A HEAD request gets every header a GET would, and
    the GET's Content-Length, with no body.

    Never: answer an error in anything but JSON
    {"error":{"code":...,"message":...}}, or send a second response.
*/
#ifndef IMGP_REPLY_H_INCLUDED
#define IMGP_REPLY_H_INCLUDED

#include <civetweb.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMGP_REPLY_ETAG_MAX 48  //  room for a quoted 40-hex tag and a NUL

typedef struct {
    struct mg_connection *conn; //  civetweb connection
    const char *method;         //  request method, "" when civetweb could not parse it
    int status;                 //  HTTP status sent, 0 until then
    bool body_read;             //  the request body was read to its end
    bool must_close;            //  no request may follow on this connection
    bool crowded;               //  the worker pool runs low: close after this response
    int retry_after;            //  Retry-After seconds, 0 for none
    const char *allow;          //  Allow header (405), NULL for none
    const char *authenticate;   //  WWW-Authenticate header (401), NULL for none
    char location [64];         //  Location header, "" for none
    bool rate_headers;          //  send RateLimit-Limit/-Remaining/-Reset below
    int64_t rate_limit;         //  RateLimit-Limit
    int64_t rate_remaining;     //  RateLimit-Remaining
    int64_t rate_reset;         //  RateLimit-Reset, seconds
    char etag [IMGP_REPLY_ETAG_MAX];    //  ETag as sent, quoted; "" for none
    char cache_control [64];    //  Cache-Control header, "" for none
    bool cacheable;             //  imgp_reply_cache was called: a 200 may become a 304
    const char *vary;           //  Vary header (e.g. "Accept"), NULL for none
} imgp_reply_t;

//  Mark the response as a cacheable representation, before the send:
//  `etag` is the rendition's tag, lowercase hex without quotes ("" when
//  unknown: no ETag, and only If-None-Match: * can match); max_age_s >= 0
//  gives "public, max-age=N, immutable", < 0 gives "no-cache" (a fallback
//  that a later request may improve on: caches must ask again).
void imgp_reply_cache (imgp_reply_t *self, const char *etag, int max_age_s);

//  True when an If-None-Match field value matches the entity-tag `etag`
//  (quoted, as sent in ETag; may be "" for none) by the weak comparison
//  of RFC 9110 8.8.3.2: "*", or a listed tag whose opaque-tag equals
//  etag's, W/ or not. A malformed field matches nothing (the full
//  response is the safe answer).
bool imgp_reply_etag_match (const char *field, const char *etag);

//  Send a response with `size` bytes of `body` (borrowed) of MIME `type`.
//  A HEAD request gets the head only, with the body's length. After
//  imgp_reply_cache, a 200 to a GET or HEAD whose If-None-Match matches
//  goes out as 304 with no body (ETag, Cache-Control, Vary kept).
void imgp_reply_send (imgp_reply_t *self, int status, const char *type, const void *body,
                      size_t size);

//  Send a JSON body; takes ownership of `body` (NULL means out of memory:
//  a 500 goes out instead).
void imgp_reply_json (imgp_reply_t *self, int status, json_t *body);

//  Send {"error":{"code":code,"message":...}} with a printf-style message.
void imgp_reply_error (imgp_reply_t *self, int status, const char *code, const char *format,
                       ...) __attribute__ ((format (printf, 4, 5)));

#endif

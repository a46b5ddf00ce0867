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
    const char *etag;           //  ETag header value, quoted ("..."), NULL for none
    const char *cache_control;  //  Cache-Control header value, NULL for none
    char location [64];         //  Location header, "" for none
    bool rate_headers;          //  send RateLimit-Limit/-Remaining/-Reset below
    int64_t rate_limit;         //  RateLimit-Limit
    int64_t rate_remaining;     //  RateLimit-Remaining
    int64_t rate_reset;         //  RateLimit-Reset, seconds
} imgp_reply_t;

//  Send a response with `size` bytes of `body` (borrowed) of MIME `type`.
//  A HEAD request, and a 304, get the head only, with the body's length
//  (RFC 9110 8.6: a 304's Content-Length is that of the 200 it stands for).
void imgp_reply_send (imgp_reply_t *self, int status, const char *type, const void *body,
                      size_t size);

//  True when the request's If-None-Match lists `etag` (a quoted strong
//  tag) or is "*": the client's copy is current, answer 304. Compared
//  weakly (RFC 9110 13.1.2: W/"x" matches "x"), as If-None-Match must be.
bool imgp_reply_not_modified (imgp_reply_t *self, const char *etag);

//  Send a JSON body; takes ownership of `body` (NULL means out of memory:
//  a 500 goes out instead).
void imgp_reply_json (imgp_reply_t *self, int status, json_t *body);

//  Send {"error":{"code":code,"message":...}} with a printf-style message.
void imgp_reply_error (imgp_reply_t *self, int status, const char *code, const char *format,
                       ...) __attribute__ ((format (printf, 4, 5)));

#endif

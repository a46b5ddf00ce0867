/*  imgp_upload — reads the image of one POST request into memory, within
    the upload limits: a multipart/form-data body with the file in field
    `img`, or a raw body (Content-Type image/(any) or application/octet-stream,
    with a Content-Length or chunked).

    Why: civetweb limits only the request head, not the body, and its
    request_timeout_ms bounds each read, not the whole body. A declared
    Content-Length over the limit is refused before a byte is read (413 at
    once, and no "100 Continue" is sent for it), bytes are counted while
    reading because a chunked body declares no length, and the whole body
    must arrive within its own deadline (408), so a client that sends a
    byte now and then cannot hold a worker thread for hours. The bytes land
    in an imgp_buf so they can go to the broker without a copy.

    Never: read past the limit or the deadline, trust Content-Length alone,
    send "100 Continue" for a request its head already condemns, or look
    inside the image (imgp_sniff does the magic bytes; nobody here decodes).
*/
#ifndef IMGP_UPLOAD_H_INCLUDED
#define IMGP_UPLOAD_H_INCLUDED

#include <civetweb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_opts.h"
#include "imgp_watch.h"

#define IMGP_UPLOAD_OPTION_MAX 64   //  an option's name kept for the error

//  What one upload may take.
typedef struct {
    size_t max_bytes;           //  most image bytes
    int timeout_ms;             //  the whole body, counted from imgp_upload_read
    int read_timeout_ms;        //  civetweb's request_timeout_ms: a read that waited
                                //  this long without a byte was a stall, not a close
    imgp_watch_t *watch;        //  cuts off reads past timeout_ms (borrowed)
} imgp_upload_limits_t;

//  The outcome of reading an upload: the bytes, or an HTTP error.
typedef struct {
    uint8_t *data;              //  the image (an imgp_buf, caller destroys); NULL on error
    size_t size;                //  bytes in data
    int status;                 //  200, or the HTTP status of the error
                                //  (400, 408, 411, 413, 415, 417, 503)
    const char *code;           //  error code for the JSON body (static), NULL when ok
    char message [160];         //  what went wrong, in words a user can act on
    bool consumed;              //  true when the whole request body was read
    char option [IMGP_UPLOAD_OPTION_MAX + 1];   //  code bad_option: the option at fault
} imgp_upload_t;

//  Read the upload of the request on `conn` within `limits`. Checks the
//  head first (length, type, Expect); only when the request may go on and
//  the client asked with "Expect: 100-continue" does it write the interim
//  "HTTP/1.1 100 Continue" before the first read, so afterwards the final
//  response head must be written with mg_write (civetweb's header calls
//  refuse once anything was written). Fills `upload`; returns 0 when
//  upload->data holds the image, -1 when upload->status/code/message say
//  why not.
int imgp_upload_read (struct mg_connection *conn, const imgp_upload_limits_t *limits,
                      imgp_upload_t *upload);

//  imgp_upload_read with the thumbnail options: those of `query` (the URL
//  query, may be NULL) and, in a multipart body, every form field beside
//  `img` under the same names (before or after the file; each value at
//  most IMGP_FORM_VALUE_MAX bytes). An unknown, repeated (in the query
//  and a field, or twice) or bad option, or a bad combination, is status
//  400 code "bad_option" with `option` naming it; the query's own
//  mistakes are found before a body byte is read, a raw body's
//  combinations too. Fills `opts` (imgp_opts_parse_* rules) when it
//  returns 0.
int imgp_upload_read_opts (struct mg_connection *conn, const imgp_upload_limits_t *limits,
                           const char *query, imgp_opts_t *opts, imgp_upload_t *upload);

//  Release the bytes held by `upload` (safe when there are none).
void imgp_upload_clear (imgp_upload_t *upload);

#endif

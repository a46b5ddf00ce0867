/*  imgp_upload — reads the image of one POST request into memory, within
    the upload limit: a multipart/form-data body with the file in field
    `img`, or a raw body (Content-Type image/(any) or application/octet-stream,
    with a Content-Length or chunked).

    Why: civetweb limits only the request head, not the body. A declared
    Content-Length over the limit is refused before a byte is read (413 at
    once), and bytes are counted while reading, because a chunked body
    declares no length. The bytes land in an imgp_buf so they can go to the
    broker without a copy.

    Never: read past the limit, trust Content-Length alone, or look inside
    the image (imgp_sniff does the magic bytes; nobody here decodes).
*/
#ifndef IMGP_UPLOAD_H_INCLUDED
#define IMGP_UPLOAD_H_INCLUDED

#include <civetweb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  The outcome of reading an upload: the bytes, or an HTTP error.
typedef struct {
    uint8_t *data;              //  the image (an imgp_buf, caller destroys); NULL on error
    size_t size;                //  bytes in data
    int status;                 //  200, or the HTTP status of the error (400, 411, 413, 415, 503)
    const char *code;           //  error code for the JSON body (static), NULL when ok
    char message [160];         //  what went wrong, in words a user can act on
    bool consumed;              //  true when the whole request body was read
} imgp_upload_t;

//  Read the upload of the request on `conn`, at most `limit` image bytes.
//  Fills `upload`; returns 0 when upload->data holds the image, -1 when
//  upload->status/code/message say why not.
int imgp_upload_read (struct mg_connection *conn, size_t limit, imgp_upload_t *upload);

//  Release the bytes held by `upload` (safe when there are none).
void imgp_upload_clear (imgp_upload_t *upload);

#endif

/*  imgp_upload — see imgp_upload.h.

    Both body kinds feed one sink that owns a growing imgp_buf and refuses
    to grow past the limit. A multipart body may declare up to S_FORM_SLACK
    more bytes than the limit, for part headers and boundaries; the image
    field itself is held to the limit exactly. Fields other than `img` are
    skipped by civetweb (read and dropped, never stored); a second `img`
    field is skipped too.

    civetweb 1.15 quirk: after a field_get callback returns ABORT, it may
    call field_get once more with a bogus length before it stops, so once
    the sink is over its limit the callback never touches its arguments.
*/
#include "imgp_upload.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "imgp_buf.h"

#define S_FORM_SLACK 65536      //  multipart headers and boundaries around the image
#define S_READ_CHUNK 16384      //  bytes asked of mg_read at a time
#define S_FIRST_ALLOC 65536     //  first buffer when no length was declared
#define S_DRAIN_MAX 65536       //  epilogue read after the last multipart boundary

typedef enum {
    S_BODY_OTHER = 0,           //  a content type we do not take
    S_BODY_FORM,                //  multipart/form-data, image in field img
    S_BODY_RAW                  //  the body is the image
} s_body_t;

//  Where the image bytes go while they are read.
typedef struct {
    uint8_t *data;              //  imgp_buf being filled, NULL until the first byte
    size_t size;                //  bytes used
    size_t capacity;            //  bytes allocated
    size_t limit;               //  most bytes allowed
    bool too_large;             //  a byte past the limit arrived
    bool no_memory;             //  the buffer could not grow
    bool found;                 //  multipart: the img field was seen
} s_sink_t;

static int
s_fail (imgp_upload_t *upload, int status, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_fail (imgp_upload_t *upload, int status, const char *code, const char *format, ...)
{
    imgp_upload_clear (upload);
    upload->status = status;
    upload->code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (upload->message, sizeof upload->message, format, args);
    va_end (args);
    return -1;
}

static int
s_sink_reserve (s_sink_t *sink, size_t capacity)
{
    if (capacity > sink->limit)
        capacity = sink->limit;
    if (capacity <= sink->capacity)
        return 0;
    if (!sink->data)
        sink->data = imgp_buf_new (capacity);
    else
    if (imgp_buf_resize (&sink->data, capacity))
        return -1;
    if (!sink->data)
        return -1;
    sink->capacity = capacity;
    return 0;
}

static int
s_sink_append (s_sink_t *sink, const void *bytes, size_t len)
{
    if (sink->too_large || sink->no_memory)
        return -1;
    if (len > sink->limit - sink->size) {
        sink->too_large = true;
        return -1;
    }
    if (sink->size + len > sink->capacity) {
        size_t want = sink->capacity * 2;
        if (want < sink->size + len)
            want = sink->size + len;
        if (want < S_FIRST_ALLOC)
            want = S_FIRST_ALLOC;
        if (s_sink_reserve (sink, want)) {
            sink->no_memory = true;
            return -1;
        }
    }
    if (len)
        memcpy (sink->data + sink->size, bytes, len);
    sink->size += len;
    return 0;
}

static s_body_t
s_body_kind (const char *content_type)
{
    if (!content_type)
        return S_BODY_OTHER;
    while (*content_type == ' ' || *content_type == '\t')
        content_type++;
    size_t len = strcspn (content_type, "; \t");
    if (len == strlen ("multipart/form-data")
    &&  strncasecmp (content_type, "multipart/form-data", len) == 0)
        return S_BODY_FORM;
    if (len == strlen ("application/octet-stream")
    &&  strncasecmp (content_type, "application/octet-stream", len) == 0)
        return S_BODY_RAW;
    if (len > strlen ("image/") && strncasecmp (content_type, "image/", strlen ("image/")) == 0)
        return S_BODY_RAW;
    return S_BODY_OTHER;
}

//  Raw body: mg_read until the end (0), counting; chunked bodies included.
static int
s_read_raw (struct mg_connection *conn, s_sink_t *sink, imgp_upload_t *upload)
{
    long long declared = mg_get_request_info (conn)->content_length;
    if (declared > 0 && s_sink_reserve (sink, (size_t) declared))
        sink->no_memory = true;
    char chunk [S_READ_CHUNK];
    int n;
    while (!sink->no_memory && (n = mg_read (conn, chunk, sizeof chunk)) > 0)
        if (s_sink_append (sink, chunk, (size_t) n))
            return 0;           //  sink says why
    if (!sink->no_memory && n < 0)
        return s_fail (upload, 400, "bad_request", "the upload was cut short");
    upload->consumed = !sink->no_memory;
    return 0;
}

static int
s_field_found (const char *key, const char *filename, char *path, size_t pathlen,
               void *user_data)
{
    (void) filename;
    (void) path;
    (void) pathlen;
    s_sink_t *sink = user_data;
    if (sink->found || strcmp (key, "img") != 0)
        return MG_FORM_FIELD_STORAGE_SKIP;
    sink->found = true;
    return MG_FORM_FIELD_STORAGE_GET;
}

static int
s_field_get (const char *key, const char *value, size_t valuelen, void *user_data)
{
    (void) key;                 //  NULL after the first chunk of a field
    s_sink_t *sink = user_data;
    if (s_sink_append (sink, value, valuelen))
        return MG_FORM_FIELD_HANDLE_ABORT;
    return MG_FORM_FIELD_HANDLE_GET;
}

//  After the closing boundary a client may send an epilogue; read a little
//  of it so the connection can be kept alive.
static bool
s_drain (struct mg_connection *conn)
{
    char chunk [S_READ_CHUNK];
    size_t drained = 0;
    int n;
    while (drained <= S_DRAIN_MAX && (n = mg_read (conn, chunk, sizeof chunk)) > 0)
        drained += (size_t) n;
    return drained <= S_DRAIN_MAX && n == 0;
}

static int
s_read_form (struct mg_connection *conn, s_sink_t *sink, imgp_upload_t *upload)
{
    struct mg_form_data_handler handler = { s_field_found, s_field_get, NULL, sink };
    int rc = mg_handle_form_request (conn, &handler);
    if (sink->too_large || sink->no_memory)
        return 0;               //  sink says why
    if (rc < 0)
        return s_fail (upload, 400, "bad_request",
                       "malformed multipart/form-data body");
    if (!sink->found)
        return s_fail (upload, 400, "bad_request",
                       "no form field \"img\": send the image file in the field named img");
    upload->consumed = s_drain (conn);
    return 0;
}

int
imgp_upload_read (struct mg_connection *conn, size_t limit, imgp_upload_t *upload)
{
    memset (upload, 0, sizeof *upload);
    const struct mg_request_info *info = mg_get_request_info (conn);
    s_body_t kind = s_body_kind (mg_get_header (conn, "Content-Type"));
    long long declared = info->content_length;
    long long allowed = (long long) limit + (kind == S_BODY_FORM ? S_FORM_SLACK : 0);
    if (declared > allowed)
        return s_fail (upload, 413, "too_large",
                       "upload of %lld bytes is over the limit of %zu bytes", declared, limit);
    if (declared < 0 && !mg_get_header (conn, "Transfer-Encoding"))
        return s_fail (upload, 411, "length_required",
                       "send the upload with a Content-Length or chunked Transfer-Encoding");
    if (kind == S_BODY_OTHER)
        return s_fail (upload, 415, "unsupported_media_type",
                       "send multipart/form-data with the image in field img, or the raw "
                       "image with Content-Type image/* or application/octet-stream");

    s_sink_t sink = { .limit = limit };
    int rc = kind == S_BODY_FORM ? s_read_form (conn, &sink, upload)
                                 : s_read_raw (conn, &sink, upload);
    if (rc) {
        imgp_buf_destroy (&sink.data);
        return -1;              //  upload already says why
    }
    upload->data = sink.data;
    upload->size = sink.size;
    if (sink.too_large)
        return s_fail (upload, 413, "too_large",
                       "upload is over the limit of %zu bytes", limit);
    if (sink.no_memory)
        return s_fail (upload, 503, "unavailable", "out of memory for the upload, try later");
    if (sink.size == 0)
        return s_fail (upload, 400, "bad_request", "the upload is empty");
    upload->status = 200;
    return 0;
}

void
imgp_upload_clear (imgp_upload_t *upload)
{
    imgp_buf_destroy (&upload->data);
    upload->size = 0;
}

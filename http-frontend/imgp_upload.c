/*  imgp_upload — see imgp_upload.h.

    Both body kinds feed one sink that owns a growing imgp_buf and refuses
    to grow past the limit. A multipart body may declare up to S_FORM_SLACK
    more bytes than the limit, for part headers and boundaries; the image
    field itself is held to the limit exactly. A multipart body is read by
    imgp_form, not civetweb's mg_handle_form_request (see imgp_form.h for
    why): fields other than `img` are read and dropped, never stored, and a
    second `img` field is refused (400, and the connection closes).

    Copies. The image's bytes are read into the sink in place, for either
    kind of body (imgp_form_read_into for multipart), so they are copied
    once in user space: mg_read hands over what civetweb's buffer already
    holds and reads the rest straight from the socket. The sink then goes
    to the broker without a copy (imgp_buf, imgp_link).

    Deadlines. civetweb's request_timeout_ms bounds each read with no byte
    at all, and its mg_read does not return until it has every byte asked
    for (pull_all), so a client sending a byte every few seconds would hold
    a read, ours or mg_handle_form_request's, indefinitely. The whole body
    therefore runs under imgp_watch, which makes the thread's reads fail
    once the deadline has passed; bytes that arrive after it are refused
    too. A read can fail three ways, told apart by the clock:
    - past the body deadline: our watch cut it off (408);
    - after a whole read timeout with no byte: civetweb's timeout, a stall
      (408). For a Content-Length body mg_read then returns 0 short of the
      length rather than -1; for chunked and multipart bodies it is -1;
    - sooner: the client closed or sent garbage (400).
*/
#include "imgp_upload.h"

#include <assert.h>
#include <czmq.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "imgp_buf.h"
#include "imgp_form.h"
#include "imgp_watch.h"

#define S_FORM_SLACK 65536      //  multipart headers and boundaries around the image
#define S_READ_CHUNK 16384      //  bytes asked of mg_read at a time
#define S_DRAIN_CHUNK 2048      //  epilogue read at a time (on a 100 kB stack)
#define S_FIRST_ALLOC 65536     //  first buffer when no length was declared
#define S_DRAIN_MAX 65536       //  epilogue read after the last multipart boundary
#define S_CLOCK_SLACK_MS 10     //  civetweb's clock and ours may round apart
#define S_POPULATE (256 * 1024) //  buffer pages made ready at a time, ahead of the bytes

typedef enum {
    S_BODY_OTHER = 0,           //  a content type we do not take
    S_BODY_FORM,                //  multipart/form-data, image in field img
    S_BODY_RAW                  //  the body is the image
} s_body_t;

//  Where the image bytes go while they are read, and the clock they are
//  read against.
typedef struct {
    uint8_t *data;              //  imgp_buf being filled, NULL until the first byte
    size_t size;                //  bytes used
    size_t capacity;            //  bytes allocated
    size_t populated;           //  bytes of data whose pages were made ready (s_sink_populate)
    bool too_large;             //  a byte past the limit arrived
    bool no_memory;             //  the buffer could not grow
    bool overdue;               //  bytes were still coming at the body deadline
    int64_t deadline;           //  zclock_mono time the whole body must be in by
    int64_t last_bytes;         //  zclock_mono time bytes last arrived (or the start)
    const imgp_upload_limits_t *limits;     //  the limits read under
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

//  Grow the buffer to `capacity` bytes. Returns 0 or -1.
static int
s_sink_grow (s_sink_t *sink, size_t capacity)
{
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

//  Make the buffer at least `capacity` bytes, at most the limit.
static int
s_sink_reserve (s_sink_t *sink, size_t capacity)
{
    if (capacity > sink->limits->max_bytes)
        capacity = sink->limits->max_bytes;
    return capacity <= sink->capacity ? 0 : s_sink_grow (sink, capacity);
}

static bool
s_sink_failed (s_sink_t *sink)
{
    return sink->too_large || sink->no_memory || sink->overdue;
}

//  Bytes arrived: note when, and whether they came after the deadline.
//  Returns -1 once the sink takes nothing more.
static int
s_sink_arrived (s_sink_t *sink)
{
    if (s_sink_failed (sink))
        return -1;
    sink->last_bytes = zclock_mono ();
    sink->overdue = sink->last_bytes > sink->deadline;
    return sink->overdue ? -1 : 0;
}

//  True when the client has sent nothing for a whole civetweb read timeout.
static bool
s_sink_stalled (s_sink_t *sink)
{
    int64_t silent = zclock_mono () - sink->last_bytes;
    return silent + S_CLOCK_SLACK_MS >= sink->limits->read_timeout_ms;
}

//  Make the buffer's pages ready S_POPULATE bytes at a time, ahead of the
//  bytes about to land there: one madvise instead of a page fault per
//  4 kB. The buffer is fresh memory (mmap above the threshold, see
//  imgp_mem), and a fault per page was the largest part of the
//  frontend's CPU per upload: 2049 faults for 8 MB, about half of its
//  7-9 ms. Only ever a step ahead of the bytes that arrived, so memory
//  stays bounded by them, not by a declared Content-Length. A kernel
//  without MADV_POPULATE_WRITE (before 5.14) refuses it: faults as before.
static void
s_sink_populate (s_sink_t *sink, size_t want)
{
    if (want <= sink->populated)
        return;
    uintptr_t page = (uintptr_t) sysconf (_SC_PAGESIZE);
    size_t end = sink->size + S_POPULATE;
    end = end < sink->capacity ? end : sink->capacity;
    uintptr_t from = (uintptr_t) (sink->data + sink->size) & ~(page - 1);
    uintptr_t to = (uintptr_t) (sink->data + end);
#ifdef MADV_POPULATE_WRITE
    if (to > from)
        madvise ((void *) from, to - from, MADV_POPULATE_WRITE);
#endif
    sink->populated = end;
}

//  Room to read into at data + size, at most S_READ_CHUNK bytes, growing
//  the buffer when it is full (up to the limit plus one byte, so a body
//  over the limit shows). Returns the room, or 0 with the sink flagged.
static size_t
s_sink_room (s_sink_t *sink)
{
    if (sink->size == sink->capacity) {
        size_t most = sink->limits->max_bytes + 1;
        size_t grown = sink->capacity * 2 > S_FIRST_ALLOC ? sink->capacity * 2 : S_FIRST_ALLOC;
        if (grown > most)
            grown = most;
        if (grown <= sink->size)
            sink->too_large = true;
        else
        if (s_sink_grow (sink, grown))
            sink->no_memory = true;
        if (s_sink_failed (sink))
            return 0;
    }
    size_t room = sink->capacity - sink->size;
    room = room < S_READ_CHUNK ? room : S_READ_CHUNK;
    s_sink_populate (sink, sink->size + room);
    return room;
}

//  `len` bytes were read in place at data + size.
static void
s_sink_took (s_sink_t *sink, size_t len)
{
    if (s_sink_arrived (sink))
        return;
    sink->size += len;
    if (sink->size > sink->limits->max_bytes)
        sink->too_large = true;
}

//  Bytes the multipart reader passes on: read in place (into the room
//  s_form_room gave), or read elsewhere (its window) and kept through the
//  same room and limit. Returns -1 once the sink takes nothing more.
static int
s_sink_append (s_sink_t *sink, const void *bytes, size_t len)
{
    const char *at = bytes;
    if (sink->data && at == (const char *) sink->data + sink->size) {
        assert (len <= sink->capacity - sink->size);
        s_sink_took (sink, len);
        return s_sink_failed (sink) ? -1 : 0;
    }
    while (len > 0 && !s_sink_failed (sink)) {
        size_t room = s_sink_room (sink);
        size_t n = room < len ? room : len;
        if (n == 0)
            break;
        memcpy (sink->data + sink->size, at, n);
        s_sink_took (sink, n);
        at += n;
        len -= n;
    }
    return s_sink_failed (sink) ? -1 : 0;
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

static int
s_fail_overdue (imgp_upload_t *upload, s_sink_t *sink)
{
    return s_fail (upload, 408, "request_timeout",
                   "the upload took longer than %d ms; send it faster",
                   sink->limits->timeout_ms);
}

//  A read failed or came back short: say why (see the top of this file).
static int
s_fail_read (imgp_upload_t *upload, s_sink_t *sink, const char *cut_short)
{
    if (zclock_mono () > sink->deadline)
        return s_fail_overdue (upload, sink);
    if (s_sink_stalled (sink))
        return s_fail (upload, 408, "request_timeout",
                       "no upload bytes arrived for %d ms", sink->limits->read_timeout_ms);
    return s_fail (upload, 400, "bad_request", "%s", cut_short);
}

//  Raw body: mg_read until the end (0), counting; chunked bodies included.
static int
s_read_raw (struct mg_connection *conn, s_sink_t *sink, imgp_upload_t *upload)
{
    long long declared = mg_get_request_info (conn)->content_length;
    if (declared > 0 && s_sink_reserve (sink, (size_t) declared))
        sink->no_memory = true;
    //  Read straight into the upload's buffer: one copy of the body at most
    //  (civetweb's own buffer to ours), and no chunk on a 100 kB stack.
    int n = 0;
    size_t room;
    while (!s_sink_failed (sink) && (declared < 0 || (long long) sink->size < declared)
       &&  (room = s_sink_room (sink)) > 0
       &&  (n = mg_read (conn, sink->data + sink->size, room)) > 0)
        s_sink_took (sink, (size_t) n);
    if (s_sink_failed (sink))
        return 0;               //  sink says why
    bool short_read = n == 0 && declared > 0 && (long long) sink->size < declared;
    if (n < 0 || short_read)
        return s_fail_read (upload, sink, "the upload was cut short");
    upload->consumed = true;
    return 0;
}

//  Options being read from the query and the form fields beside img.
typedef struct {
    imgp_opts_t *opts;          //  where they go (the caller's)
    unsigned seen;              //  keys given so far (imgp_opts_parse_field)
    const char *error;          //  the first bad one's message (static), or NULL
    char option [IMGP_UPLOAD_OPTION_MAX + 1];   //  and its name
} s_options_t;

//  The body bytes of a multipart upload, for imgp_form: counted against
//  the limit plus S_FORM_SLACK, and against the deadlines of the sink.
typedef struct {
    struct mg_connection *conn; //  the request
    s_sink_t *sink;             //  where the img field goes, and the clock
    long long declared;         //  Content-Length, -1 for chunked
    long long read;             //  body bytes read so far
    s_options_t *options;       //  where other fields go, NULL: dropped
} s_form_reader_t;

static int
s_form_read (void *arg, char *buf, size_t size)
{
    s_form_reader_t *reader = arg;
    size_t allowed = reader->sink->limits->max_bytes + S_FORM_SLACK;
    if ((unsigned long long) reader->read >= allowed) {
        reader->sink->too_large = true;
        return -1;
    }
    if (size > allowed - (size_t) reader->read)
        size = allowed - (size_t) reader->read;
    int n = mg_read (reader->conn, buf, size);
    if (n > 0) {
        reader->read += n;
        return s_sink_arrived (reader->sink) ? -1 : n;
    }
    //  A Content-Length body that ends short was cut or stalled.
    if (n == 0 && reader->declared > 0 && reader->read < reader->declared)
        return -1;
    return n;
}

static int
s_form_data (void *arg, const char *bytes, size_t len)
{
    s_form_reader_t *reader = arg;
    return s_sink_append (reader->sink, bytes, len);
}

//  Remember the first bad option (its name copied: it may be the form's).
static void
s_option_bad (s_options_t *options, const char *error, const char *option)
{
    options->error = error ? error : "bad option";
    snprintf (options->option, sizeof options->option, "%s", option ? option : "");
}

//  The bad option as the upload's error: 400 bad_option, naming it.
static int
s_fail_option (imgp_upload_t *upload, const s_options_t *options)
{
    snprintf (upload->option, sizeof upload->option, "%s", options->option);
    //  the parser's messages are static: an unknown name is said here
    if (options->option [0] && !strstr (options->error, options->option))
        return s_fail (upload, 400, "bad_option", "%s: %s", options->option, options->error);
    return s_fail (upload, 400, "bad_option", "%s", options->error);
}

//  A form field beside img: an option, by the query's names and rules.
//  The first bad one is kept and the body read on, so that a form whose
//  image is in another field hears that first ("no form field img").
static int
s_form_field (void *arg, const char *name, const char *value)
{
    s_form_reader_t *reader = arg;
    s_options_t *options = reader->options;
    if (!options || options->error)
        return 0;               //  dropped: imgp_upload_read, or after a bad one
    const char *error = NULL, *option = NULL;
    if (!value)
        s_option_bad (options, "a form field's value is over 128 bytes: no option is that "
                      "long", name);
    else
    if (imgp_opts_parse_field (options->opts, &options->seen, name, value, &error, &option))
        s_option_bad (options, error, option);
    return 0;
}

//  Room for the image's next bytes, read there by imgp_form in place.
static char *
s_form_room (void *arg, size_t *size)
{
    s_form_reader_t *reader = arg;
    *size = s_sink_room (reader->sink);
    return *size ? (char *) reader->sink->data + reader->sink->size : NULL;
}

//  After the closing boundary a client may send an epilogue; read a little
//  of it so the connection can be kept alive. The image is complete by
//  now, so a late or stalled epilogue (a 0 that is a read timeout, or a
//  read our watch cut off) only costs the connection.
static bool
s_drain (struct mg_connection *conn, s_sink_t *sink)
{
    char chunk [S_DRAIN_CHUNK];
    size_t drained = 0;
    int n;
    while (drained <= S_DRAIN_MAX && (n = mg_read (conn, chunk, sizeof chunk)) > 0)
        drained += (size_t) n;
    return drained <= S_DRAIN_MAX && n == 0 && !s_sink_stalled (sink)
        && zclock_mono () <= sink->deadline;
}

static int
s_read_form (struct mg_connection *conn, const char *boundary, s_sink_t *sink,
             s_options_t *options, imgp_upload_t *upload)
{
    s_form_reader_t reader = { conn, sink, mg_get_request_info (conn)->content_length, 0,
                               options };
    //  The image is most of a declared body: its buffer at once, rather
    //  than grown (pages not written cost nothing).
    if (reader.declared > 0 && s_sink_reserve (sink, (size_t) reader.declared))
        sink->no_memory = true;
    char why [120] = "";
    imgp_form_result_t rc = imgp_form_read_fields (boundary, "img", s_form_read, s_form_room,
                                                   s_form_data, s_form_field, &reader, why,
                                                   sizeof why);
    if (s_sink_failed (sink))
        return 0;               //  sink says why
    if (rc == IMGP_FORM_READ_ERROR || rc == IMGP_FORM_STOPPED)
        return s_fail_read (upload, sink, "the upload was cut short");
    if (rc == IMGP_FORM_MALFORMED)
        return s_fail (upload, 400, "bad_request", "malformed multipart/form-data body: %s",
                       why);
    if (rc == IMGP_FORM_DUPLICATE)
        return s_fail (upload, 400, "bad_request",
                       "more than one form field \"img\": send one image per upload");
    if (rc == IMGP_FORM_MISSING)
        return s_fail (upload, 400, "bad_request",
                       "no form field \"img\": send the image file in the field named img");
    upload->consumed = s_drain (conn, sink);
    if (options && options->error)
        return s_fail_option (upload, options);
    return 0;
}

//  civetweb 1.15 frames the body by the first Content-Length header as
//  strtoll reads it: "12, 13" is 12, and a second header that differs is
//  ignored. A proxy in front may have framed it by another, so anything
//  but plain digits, the same in every Content-Length header, is refused.
static bool
s_length_ambiguous (struct mg_connection *conn)
{
    const struct mg_request_info *info = mg_get_request_info (conn);
    const char *first = NULL;
    for (int i = 0; i < info->num_headers; i++) {
        const char *value = info->http_headers [i].value;
        if (strcasecmp (info->http_headers [i].name, "Content-Length") != 0)
            continue;
        if (!*value || value [strspn (value, "0123456789")] || (first && strcmp (first, value)))
            return true;
        first = value;
    }
    return false;
}

//  Everything that can be refused from the head alone, before a body byte
//  is read or a 100 Continue promised. A multipart body's boundary goes
//  into `boundary` (IMGP_FORM_BOUNDARY_MAX + 1 bytes).
static int
s_check_head (struct mg_connection *conn, size_t limit, s_body_t kind, char *boundary,
              imgp_upload_t *upload)
{
    const char *expect = mg_get_header (conn, "Expect");
    if (expect && strcasecmp (expect, "100-continue") != 0)
        return s_fail (upload, 417, "expectation_failed",
                       "the only expectation met here is Expect: 100-continue");
    if (s_length_ambiguous (conn))
        return s_fail (upload, 400, "bad_request",
                       "send one Content-Length, a plain number of bytes");
    long long declared = mg_get_request_info (conn)->content_length;
    long long allowed = (long long) limit + (kind == S_BODY_FORM ? S_FORM_SLACK : 0);
    if (declared > allowed)
        return s_fail (upload, 413, "too_large",
                       "upload of %lld bytes is over the limit of %zu bytes", declared, limit);
    if (declared < 0 && !mg_get_header (conn, "Transfer-Encoding"))
        return s_fail (upload, 411, "length_required",
                       "send the upload with a Content-Length or chunked Transfer-Encoding");
    if (kind == S_BODY_FORM
    &&  imgp_form_boundary (mg_get_header (conn, "Content-Type"), boundary,
                            IMGP_FORM_BOUNDARY_MAX + 1))
        return s_fail (upload, 400, "bad_request",
                       "multipart/form-data needs a boundary parameter of 1 to %d characters "
                       "(RFC 2046)", IMGP_FORM_BOUNDARY_MAX);
    if (kind == S_BODY_OTHER)
        return s_fail (upload, 415, "unsupported_media_type",
                       "send multipart/form-data with the image in field img, or the raw "
                       "image with Content-Type image/* or application/octet-stream");
    return 0;
}

//  A client that sent "Expect: 100-continue" waits for a go-ahead before
//  the body (curl: for bodies over 1 MB, up to a second). civetweb 1.15
//  writes one only for PUT and CGI (forward_body_data), never before a
//  request handler's mg_read, so we do. HTTP/1.0 clients get none (RFC
//  7231, 5.1.1). s_check_head has refused any other expectation.
static void
s_continue (struct mg_connection *conn)
{
    static const char line [] = "HTTP/1.1 100 Continue\r\n\r\n";
    const char *expect = mg_get_header (conn, "Expect");
    const char *version = mg_get_request_info (conn)->http_version;
    if (expect && version && strcmp (version, "1.1") == 0)
        mg_write (conn, line, sizeof line - 1);
}

//  The upload; form fields beside img go to `options` (NULL: dropped).
static int
s_read (struct mg_connection *conn, const imgp_upload_limits_t *limits, s_options_t *options,
        imgp_upload_t *upload)
{
    size_t limit = limits->max_bytes;
    s_body_t kind = s_body_kind (mg_get_header (conn, "Content-Type"));
    char boundary [IMGP_FORM_BOUNDARY_MAX + 1];
    if (s_check_head (conn, limit, kind, boundary, upload))
        return -1;
    s_continue (conn);

    int64_t now = zclock_mono ();
    s_sink_t sink = { .deadline = now + limits->timeout_ms,
                      .last_bytes = now, .limits = limits };
    int slot = imgp_watch_begin (limits->watch, sink.deadline);
    int rc = kind == S_BODY_FORM ? s_read_form (conn, boundary, &sink, options, upload)
                                 : s_read_raw (conn, &sink, upload);
    imgp_watch_end (limits->watch, slot);
    if (rc) {
        imgp_buf_destroy (&sink.data);
        return -1;              //  upload already says why
    }
    upload->data = sink.data;
    upload->size = sink.size;
    if (sink.overdue)
        return s_fail_overdue (upload, &sink);
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

int
imgp_upload_read (struct mg_connection *conn, const imgp_upload_limits_t *limits,
                  imgp_upload_t *upload)
{
    assert (conn && limits && limits->watch && upload);
    memset (upload, 0, sizeof *upload);
    return s_read (conn, limits, NULL, upload);
}

int
imgp_upload_read_opts (struct mg_connection *conn, const imgp_upload_limits_t *limits,
                       const char *query, imgp_opts_t *opts, imgp_upload_t *upload)
{
    assert (conn && limits && limits->watch && opts && upload);
    memset (upload, 0, sizeof *upload);
    s_options_t options = { .opts = opts };
    imgp_opts_default (opts);
    const char *error = NULL, *option = NULL;
    bool form = s_body_kind (mg_get_header (conn, "Content-Type")) == S_BODY_FORM;
    //  A raw body adds no option: its query is judged whole before a byte.
    if (imgp_opts_parse_pairs (opts, &options.seen, query, &error, &option)
    ||  (!form && imgp_opts_parse_end (opts, options.seen, &error, &option))) {
        s_option_bad (&options, error, option);
        return s_fail_option (upload, &options);
    }
    if (s_read (conn, limits, form ? &options : NULL, upload))
        return -1;
    if (form && imgp_opts_parse_end (opts, options.seen, &error, &option)) {
        imgp_upload_clear (upload);
        s_option_bad (&options, error, option);
        return s_fail_option (upload, &options);
    }
    return 0;
}

void
imgp_upload_clear (imgp_upload_t *upload)
{
    imgp_buf_destroy (&upload->data);
    upload->size = 0;
}

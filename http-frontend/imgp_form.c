/*  imgp_form — see imgp_form.h.

    The body is read through a window of S_WINDOW bytes. A delimiter is
    CRLF "--" boundary; the body is read as if it began with a CRLF, so
    the first delimiter, which may open the body without one, needs no
    case of its own. While a part's content is searched for the next
    delimiter, all but the last (delimiter length - 1) bytes of the window
    are content for sure and are passed on; the rest wait for more bytes.

    Part headers are read line by line, at most S_HEADERS_MAX bytes per
    part; only Content-Disposition's `name` matters here.

    The wanted field's bytes need not pass through the window: given a
    room callback, once the window holds less than a delimiter the reader
    reads into the caller's own buffer (after copying the few held bytes
    there) and searches for the delimiter in place, so an upload's bytes
    are copied once, from the socket to their buffer. Only the bytes after
    the delimiter go back into the window.

    The reader lives on the heap: civetweb's worker threads have 100 kB
    stacks, and under AddressSanitizer a 16 kB window and two 8 kB lines
    on the stack overflowed one.
*/
#include "imgp_form.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_WINDOW 16384          //  bytes of the body held at once
#define S_HEADERS_MAX 8192      //  header bytes of one part
#define S_NAME_MAX 256          //  a field name we can tell apart

typedef struct {
    imgp_form_read_fn *read;    //  where body bytes come from
    imgp_form_room_fn *room;    //  where the wanted field's bytes may be read to, or NULL
    void *arg;                  //  for read, room and data
    char buf [S_WINDOW];        //  the window
    size_t start;               //  first unread byte in buf
    size_t end;                 //  one past the last byte in buf
    bool eof;                   //  read said the body ended
    bool failed;                //  read failed
    char delim [4 + IMGP_FORM_BOUNDARY_MAX + 1];    //  CRLF "--" boundary
    size_t delim_len;           //  its length
    char *error;                //  where to say what was malformed
    size_t error_size;          //  its size
    char line [S_HEADERS_MAX];  //  the part header line being read
    imgp_form_field_fn *other;  //  where other fields go, or NULL
    char value [IMGP_FORM_VALUE_MAX + 1];   //  another field's value being read
    size_t value_len;           //  its bytes so far (counted past the room too)
} s_reader_t;

static imgp_form_result_t
s_malformed (s_reader_t *r, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static imgp_form_result_t
s_malformed (s_reader_t *r, const char *format, ...)
{
    if (r->error && r->error_size) {
        va_list args;
        va_start (args, format);
        vsnprintf (r->error, r->error_size, format, args);
        va_end (args);
    }
    return IMGP_FORM_MALFORMED;
}

//  --------------------------------------------------------------------------
//  The boundary

//  RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=?" / space (not last).
static bool
s_bchar (char c)
{
    return isalnum ((unsigned char) c) || (c && strchr ("'()+_,-./:=? ", c));
}

//  Copy a parameter value (token or quoted-string) from `value` into `out`.
static int
s_param_value (const char *value, char *out, size_t size)
{
    size_t n = 0;
    if (*value == '"') {
        for (value++; *value && *value != '"'; value++) {
            if (*value == '\\' && value [1])
                value++;
            if (n + 1 >= size)
                return -1;
            out [n++] = *value;
        }
        if (*value != '"')
            return -1;
    }
    else
        for (; *value && *value != ';' && *value != ' ' && *value != '\t'; value++) {
            if (n + 1 >= size)
                return -1;
            out [n++] = *value;
        }
    out [n] = '\0';
    return 0;
}

//  The value of parameter `name` in a header value "type; a=1; b="x"", or
//  -1 when it is missing or too long.
static int
s_param (const char *header, const char *name, char *out, size_t size)
{
    size_t len = strlen (name);
    const char *p = strchr (header, ';');
    while (p) {
        p++;
        p += strspn (p, " \t");
        if (strncasecmp (p, name, len) == 0) {
            const char *eq = p + len;
            eq += strspn (eq, " \t");
            if (*eq == '=') {
                eq++;
                return s_param_value (eq + strspn (eq, " \t"), out, size);
            }
        }
        //  To the next ';' outside quotes.
        bool quoted = false;
        for (; *p && (quoted || *p != ';'); p++) {
            if (*p == '\\' && quoted && p [1])
                p++;
            else
            if (*p == '"')
                quoted = !quoted;
        }
        p = *p ? p : NULL;
    }
    return -1;
}

int
imgp_form_boundary (const char *content_type, char *boundary, size_t size)
{
    if (!content_type || !boundary || size < IMGP_FORM_BOUNDARY_MAX + 1)
        return -1;
    char value [IMGP_FORM_BOUNDARY_MAX + 2];
    if (s_param (content_type, "boundary", value, sizeof value))
        return -1;
    size_t len = strlen (value);
    if (len < 1 || len > IMGP_FORM_BOUNDARY_MAX || value [len - 1] == ' ')
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!s_bchar (value [i]))
            return -1;
    memcpy (boundary, value, len + 1);
    return 0;
}

//  --------------------------------------------------------------------------
//  The window

static size_t
s_held (s_reader_t *r)
{
    return r->end - r->start;
}

//  Read more bytes into the window, moving what is held to its front.
//  Returns false at the end of the body or on a read error.
static bool
s_fill (s_reader_t *r)
{
    if (r->eof || r->failed)
        return false;
    memmove (r->buf, r->buf + r->start, s_held (r));
    r->end -= r->start;
    r->start = 0;
    if (r->end == sizeof r->buf)
        return true;            //  full: the caller consumes first
    int n = r->read (r->arg, r->buf + r->end, sizeof r->buf - r->end);
    if (n < 0)
        r->failed = true;
    else
    if (n == 0)
        r->eof = true;
    else
        r->end += (size_t) n;
    return n > 0;
}

//  Where `text` (`len` bytes) starts in the window, or -1.
static long
s_find (s_reader_t *r, const char *text, size_t len)
{
    const char *at = memmem (r->buf + r->start, s_held (r), text, len);
    return at ? (long) (at - (r->buf + r->start)) : -1;
}

//  --------------------------------------------------------------------------
//  Parts

//  One read of the wanted field straight into the caller's room (see
//  imgp_form_room_fn), when the window holds less than a delimiter: the
//  held tail goes first, then the read, and the delimiter is searched for
//  there. Bytes after a delimiter found go back into the window (the read
//  is at most a window's size, so they fit). Returns OK with *done set when
//  the delimiter was consumed, OK without when more is to come, else
//  STOPPED, READ_ERROR or MALFORMED; NOT_DIRECT (as MISSING) when there is
//  no room for a read, so the caller reads through the window instead.
#define S_NOT_DIRECT IMGP_FORM_MISSING

static imgp_form_result_t
s_content_direct (s_reader_t *r, imgp_form_data_fn *data, bool *done)
{
    size_t held = s_held (r), room = 0;
    char *to = r->eof || r->failed ? NULL : r->room (r->arg, &room);
    if (!to || room <= held)
        return S_NOT_DIRECT;
    if (room > held + S_WINDOW)
        room = held + S_WINDOW;
    memcpy (to, r->buf + r->start, held);
    r->start = r->end = 0;
    int n = r->read (r->arg, to + held, room - held);
    if (n <= 0) {
        //  The tail back into the window, and the end as s_fill sees it.
        memcpy (r->buf, to, held);
        r->end = held;
        r->failed = n < 0;
        r->eof = n == 0;
        return r->failed ? IMGP_FORM_READ_ERROR
                         : s_malformed (r, "the body ends inside a part");
    }
    size_t total = held + (size_t) n;
    const char *at = memmem (to, total, r->delim, r->delim_len);
    size_t sure = at ? (size_t) (at - to)
                : total >= r->delim_len ? total - (r->delim_len - 1) : 0;
    if (sure && data (r->arg, to, sure))
        return IMGP_FORM_STOPPED;
    size_t rest = at ? sure + r->delim_len : sure;
    memcpy (r->buf, to + rest, total - rest);
    r->end = total - rest;
    *done = at != NULL;
    return IMGP_FORM_OK;
}

//  Pass the window's bytes up to the next delimiter to `data` (when it is
//  not NULL) and consume the delimiter. The wanted field's bytes are read
//  straight into the caller's room once the window is used up, when the
//  caller gave one. Returns OK, STOPPED, READ_ERROR or MALFORMED (the body
//  ended first).
static imgp_form_result_t
s_content (s_reader_t *r, imgp_form_data_fn *data, void *data_arg)
{
    while (true) {
        long at = s_find (r, r->delim, r->delim_len);
        size_t sure = at >= 0 ? (size_t) at
                    : s_held (r) >= r->delim_len ? s_held (r) - (r->delim_len - 1) : 0;
        if (sure && data && data (data_arg, r->buf + r->start, sure))
            return IMGP_FORM_STOPPED;
        r->start += sure;
        if (at >= 0) {
            r->start += r->delim_len;
            return IMGP_FORM_OK;
        }
        bool done = false;
        //  only the wanted field (its data gets the caller's arg) is read
        //  into the caller's room
        imgp_form_result_t rc = data && data_arg == r->arg && r->room
                              ? s_content_direct (r, data, &done) : S_NOT_DIRECT;
        if (rc != S_NOT_DIRECT) {
            if (rc != IMGP_FORM_OK || done)
                return rc;
            continue;
        }
        if (!s_fill (r))
            return r->failed ? IMGP_FORM_READ_ERROR
                             : s_malformed (r, "the body ends inside a part");
    }
}

//  The next CRLF-ended line, at most `size` - 1 bytes, NUL-terminated.
static imgp_form_result_t
s_line (s_reader_t *r, char *line, size_t size)
{
    long at;
    while ((at = s_find (r, "\r\n", 2)) < 0) {
        if (s_held (r) >= size)
            return s_malformed (r, "a part header line is too long");
        if (!s_fill (r))
            return r->failed ? IMGP_FORM_READ_ERROR
                             : s_malformed (r, "the body ends inside a part's headers");
    }
    if ((size_t) at >= size)
        return s_malformed (r, "a part header line is too long");
    memcpy (line, r->buf + r->start, (size_t) at);
    line [at] = '\0';
    r->start += (size_t) at + 2;
    return IMGP_FORM_OK;
}

//  Read a part's headers up to the empty line; `name` gets the field name
//  of its Content-Disposition.
static imgp_form_result_t
s_headers (s_reader_t *r, char *name, size_t name_size)
{
    char *line = r->line;
    size_t total = 0;
    name [0] = '\0';
    bool disposition = false;
    while (true) {
        imgp_form_result_t rc = s_line (r, line, sizeof r->line);
        if (rc != IMGP_FORM_OK)
            return rc;
        if (line [0] == '\0')
            break;
        total += strlen (line) + 2;
        if (total > S_HEADERS_MAX)
            return s_malformed (r, "a part's headers are over %d bytes", S_HEADERS_MAX);
        if (strncasecmp (line, "Content-Disposition:", 20) == 0) {
            disposition = true;
            if (s_param (line, "name", name, name_size))
                return s_malformed (r, "a part's Content-Disposition has no usable name");
        }
    }
    if (!disposition)
        return s_malformed (r, "a part has no Content-Disposition header");
    return IMGP_FORM_OK;
}

//  After a delimiter: "--" closes the body (what follows is epilogue, left
//  to the caller); otherwise transport padding and CRLF open a part.
//  Sets *closed.
static imgp_form_result_t
s_after_delimiter (s_reader_t *r, bool *closed)
{
    while (s_held (r) < 2)
        if (!s_fill (r))
            return r->failed ? IMGP_FORM_READ_ERROR
                             : s_malformed (r, "the body ends after a boundary delimiter");
    *closed = memcmp (r->buf + r->start, "--", 2) == 0;
    if (*closed)
        return IMGP_FORM_OK;
    imgp_form_result_t rc = s_line (r, r->line, sizeof r->line);
    if (rc == IMGP_FORM_OK && r->line [strspn (r->line, " \t")] != '\0')
        return s_malformed (r, "bytes after a boundary delimiter on its line");
    return rc;
}

//  Another field's bytes into r->value, counted past its room.
static int
s_collect (void *arg, const char *bytes, size_t len)
{
    s_reader_t *r = arg;
    if (r->value_len < IMGP_FORM_VALUE_MAX) {
        size_t room = IMGP_FORM_VALUE_MAX - r->value_len;
        memcpy (r->value + r->value_len, bytes, len < room ? len : room);
    }
    r->value_len += len;
    return 0;
}

//  Another field's content, whole, to r->other.
static imgp_form_result_t
s_other (s_reader_t *r, const char *name)
{
    r->value_len = 0;
    imgp_form_result_t rc = s_content (r, s_collect, r);
    if (rc != IMGP_FORM_OK)
        return rc;
    bool fits = r->value_len <= IMGP_FORM_VALUE_MAX;
    r->value [fits ? r->value_len : 0] = '\0';
    fits = fits && strlen (r->value) == r->value_len;      //  no NUL inside
    return r->other (r->arg, name, fits ? r->value : NULL) ? IMGP_FORM_STOPPED : IMGP_FORM_OK;
}

//  The body after its first delimiter: parts until the close delimiter.
static imgp_form_result_t
s_parts (s_reader_t *r, const char *field, imgp_form_data_fn *data)
{
    bool found = false;
    imgp_form_result_t rc = IMGP_FORM_OK;
    while (rc == IMGP_FORM_OK) {
        bool closed;
        rc = s_after_delimiter (r, &closed);
        if (rc != IMGP_FORM_OK || closed)
            break;
        char name [S_NAME_MAX];
        rc = s_headers (r, name, sizeof name);
        if (rc != IMGP_FORM_OK)
            break;
        bool wanted = strcmp (name, field) == 0;
        if (wanted && found)
            return IMGP_FORM_DUPLICATE;
        found |= wanted;
        if (wanted)
            rc = s_content (r, data, r->arg);
        else
        if (r->other)
            rc = s_other (r, name);
        else
            rc = s_content (r, NULL, NULL);
    }
    if (rc == IMGP_FORM_OK && !found)
        return IMGP_FORM_MISSING;
    return rc;
}

imgp_form_result_t
imgp_form_read (const char *boundary, const char *field, imgp_form_read_fn *read,
                imgp_form_data_fn *data, void *arg, char *error, size_t error_size)
{
    return imgp_form_read_into (boundary, field, read, NULL, data, arg, error, error_size);
}

imgp_form_result_t
imgp_form_read_into (const char *boundary, const char *field, imgp_form_read_fn *read,
                     imgp_form_room_fn *room, imgp_form_data_fn *data, void *arg,
                     char *error, size_t error_size)
{
    return imgp_form_read_fields (boundary, field, read, room, data, NULL, arg, error,
                                  error_size);
}

imgp_form_result_t
imgp_form_read_fields (const char *boundary, const char *field, imgp_form_read_fn *read,
                       imgp_form_room_fn *room, imgp_form_data_fn *data,
                       imgp_form_field_fn *other, void *arg, char *error, size_t error_size)
{
    //  Not calloc: the window and the line need no clearing (24 kB an upload).
    s_reader_t *r = malloc (sizeof *r);
    if (!r)
        return IMGP_FORM_STOPPED;       //  as if the sink were full: no memory
    r->read = read;
    r->room = room;
    r->other = other;
    r->arg = arg;
    r->start = r->end = 0;
    r->eof = r->failed = false;
    r->delim_len = 0;
    r->error = error;
    r->error_size = error_size;
    imgp_form_result_t rc;
    size_t len = boundary ? strlen (boundary) : 0;
    if (len < 1 || len > IMGP_FORM_BOUNDARY_MAX)
        rc = s_malformed (r, "the boundary must be 1 to %d characters", IMGP_FORM_BOUNDARY_MAX);
    else {
        r->delim_len = (size_t) snprintf (r->delim, sizeof r->delim, "\r\n--%s", boundary);
        //  The body as if it began with CRLF: its first delimiter needs none.
        memcpy (r->buf, "\r\n", 2);
        r->end = 2;
        rc = s_content (r, NULL, NULL);    //  the preamble
        if (rc == IMGP_FORM_MALFORMED)
            rc = s_malformed (r, "no boundary delimiter in the body");
        else
        if (rc == IMGP_FORM_OK)
            rc = s_parts (r, field, data);
    }
    free (r);
    return rc;
}

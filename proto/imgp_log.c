/*  imgp_log — see imgp_log.h. Lines are formatted into one buffer and
    written whole (one fputs, or one write of many lines when buffered), so
    lines from threads never interleave.

    The date and time up to the second are formatted once per second per
    thread (gmtime_r and a printf per line cost as much as the rest of
    the line); only the milliseconds are written each time.

    The JSON form walks the format and its arguments together: each
    conversion is formatted alone (snprintf with that one conversion, its
    `*` width and precision written in), so the walker knows which field
    each piece of text belongs to and whether the field is a number. It
    understands every conversion C99 printf has but %n (refused: the line
    ends there) and wide strings; log formats use a handful of them.
*/
#include "imgp_log.h"

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define S_LINE_MAX 2048             //  one line, cut beyond
#define S_BUFFER_SIZE (64 * 1024)   //  buffered lines before a write

static const char *s_program = "imgpipe";
static bool s_verbose = false;
static imgp_log_format_t s_format = IMGP_LOG_TEXT;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static bool s_buffered = false;         //  under s_lock
static char s_buffer [S_BUFFER_SIZE];   //  lines not yet written, under s_lock
static size_t s_used = 0;               //  bytes of s_buffer in use, under s_lock

void
imgp_log_init (const char *program, bool verbose)
{
    s_program = program;
    s_verbose = verbose;
}

void
imgp_log_set_format (imgp_log_format_t format)
{
    s_format = format;
}

int
imgp_log_format_parse (const char *name, imgp_log_format_t *format)
{
    assert (format);
    if (name && strcmp (name, "text") == 0)
        *format = IMGP_LOG_TEXT;
    else
    if (name && strcmp (name, "json") == 0)
        *format = IMGP_LOG_JSON;
    else
        return -1;
    return 0;
}

bool
imgp_log_verbose (void)
{
    return s_verbose;
}

//  Write the buffer out; call with s_lock held.
static void
s_flush_locked (void)
{
    if (s_used > 0) {
        fwrite (s_buffer, 1, s_used, stderr);
        fflush (stderr);
    }
    s_used = 0;
}

void
imgp_log_flush (void)
{
    pthread_mutex_lock (&s_lock);
    s_flush_locked ();
    pthread_mutex_unlock (&s_lock);
}

static void
s_flush_at_exit (void)
{
    imgp_log_flush ();
}

void
imgp_log_set_buffered (bool buffered)
{
    static bool registered = false;
    pthread_mutex_lock (&s_lock);
    if (!buffered)
        s_flush_locked ();
    s_buffered = buffered;
    if (buffered && !registered)
        registered = atexit (s_flush_at_exit) == 0;
    pthread_mutex_unlock (&s_lock);
}

//  Hand one whole line (with its newline) to stderr or the buffer.
static void
s_emit (const char *line, size_t len, imgp_log_level_t level)
{
    pthread_mutex_lock (&s_lock);
    if (!s_buffered) {
        pthread_mutex_unlock (&s_lock);
        fputs (line, stderr);
        return;
    }
    if (s_used + len > sizeof s_buffer)
        s_flush_locked ();
    memcpy (s_buffer + s_used, line, len);
    s_used += len;
    //  Trouble is written at once, with what led to it.
    if (level >= IMGP_LOG_WARN)
        s_flush_locked ();
    pthread_mutex_unlock (&s_lock);
}

//  "2026-11-28T04:32:52" for `seconds`, formatted again only when the
//  second changed since this thread's last line. Returns its length.
static size_t
s_date (time_t seconds, char *dst)
{
    static __thread time_t cached_seconds = -1;
    static __thread char cached [32];
    static __thread size_t cached_len;
    if (seconds != cached_seconds) {
        struct tm tm;
        gmtime_r (&seconds, &tm);
        int n = snprintf (cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec);
        cached_len = n > 0 && (size_t) n < sizeof cached ? (size_t) n : 0;
        cached_seconds = seconds;
    }
    memcpy (dst, cached, cached_len);
    return cached_len;
}

//  "2026-11-28T04:32:52.123Z" of now into dst (at least 32 bytes).
//  Returns its length.
static size_t
s_stamp (char *dst)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    size_t n = s_date (now.tv_sec, dst);
    long ms = now.tv_nsec / 1000000;
    dst [n++] = '.';
    dst [n++] = (char) ('0' + ms / 100);
    dst [n++] = (char) ('0' + ms / 10 % 10);
    dst [n++] = (char) ('0' + ms % 10);
    dst [n++] = 'Z';
    return n;
}

//  --------------------------------------------------------------------------
//  Text: printf's own output after a stamp, program and level.

static size_t
s_render_text (char *line, size_t size, imgp_log_level_t level, const char *format,
               va_list args)
{
    static const char *names [] = { "DEBUG", "INFO", "WARN", "ERROR" };
    size_t n = s_stamp (line);
    int rest = snprintf (line + n, size - n, " %s %s ", s_program, names [level]);
    if (rest < 0 || n + (size_t) rest >= size - 1) {
        line [n++] = '\n';
        line [n] = '\0';
        return n;
    }
    n += (size_t) rest;
    vsnprintf (line + n, size - n - 1, format, args);
    //  One line per event, whatever the message held: no newline, escape
    //  sequence or other control byte from a client reaches the terminal.
    size_t len = n + strlen (line + n);
    for (size_t i = n; i < len; i++)
        if ((unsigned char) line [i] < 0x20 || line [i] == 0x7f)
            line [i] = ' ';
    line [len] = '\n';
    line [len + 1] = '\0';
    return len + 1;
}

//  --------------------------------------------------------------------------
//  JSON: the format and its arguments walked into fields, then written.

#define S_FIELDS_MAX 32             //  fields of one line; more are dropped
#define S_KEY_MAX 32                //  longest key kept
#define S_ARENA_SIZE 4096           //  all of one line's field values
#define S_RESERVE 24                //  room kept for `","truncated":true}\n\0`

typedef struct {
    char key [S_KEY_MAX];           //  the name before '='; "text" for stray words
    size_t start;                   //  first byte of the value in the arena
    size_t len;                     //  bytes of the value
    int conversions;                //  printf conversions in the value
    bool numeric;                   //  its conversion prints a number (d, u, f...)
    bool literal;                   //  the format wrote some of the value itself
    bool quoted;                    //  the value was in quotes: always a string
    bool stray;                     //  words with no key=: kept under "text"
} s_field_t;

typedef struct {
    s_field_t field [S_FIELDS_MAX]; //  fields in the order of the format
    int count;                      //  fields used
    char arena [S_ARENA_SIZE];      //  their values, one after another
    size_t used;                    //  bytes of the arena used
    bool truncated;                 //  something did not fit
} s_fields_t;

//  Append bytes to the value being built (the last field).
static void
s_arena_put (s_fields_t *self, const char *bytes, size_t len)
{
    if (self->used + len > sizeof self->arena) {
        len = sizeof self->arena - self->used;
        self->truncated = true;
    }
    memcpy (self->arena + self->used, bytes, len);
    self->used += len;
    self->field [self->count - 1].len += len;
}

//  One conversion of `format` (at '%', not "%%") formatted alone onto the
//  value being built, its argument taken from `args`. Returns the format
//  after the conversion, or NULL for one that cannot be formatted (%n, a
//  wide string, a spec cut short): the walk stops there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static const char *
s_conversion (s_fields_t *self, const char *format, va_list *args)
{
    char spec [48];
    size_t n = 0;
    const char *p = format + 1;
    spec [n++] = '%';
    while (*p && strchr ("-+ #0", *p) && n < 8)
        spec [n++] = *p++;
    if (*p == '*') {
        int width = va_arg (*args, int);
        n += (size_t) snprintf (spec + n, sizeof spec - n, "%s%d", width < 0 ? "-" : "",
                                width < 0 ? -width : width);
        p++;
    }
    else
        while (*p >= '0' && *p <= '9' && n < 16)
            spec [n++] = *p++;
    if (*p == '.') {
        p++;
        int precision = 0;
        if (*p == '*') {
            precision = va_arg (*args, int);
            p++;
        }
        else
            for (; *p >= '0' && *p <= '9'; p++)
                if (precision < 100000)     //  more than a line holds anyway
                    precision = precision * 10 + (*p - '0');
        if (precision >= 0)     //  a negative one is as if there were none
            n += (size_t) snprintf (spec + n, sizeof spec - n, ".%d", precision);
    }
    //  Length modifier: hh h l ll j z t L.
    char length [3] = "";
    size_t ln = 0;
    while (*p && strchr ("hljztL", *p) && ln < 2)
        length [ln++] = *p++;
    length [ln] = '\0';
    char conv = *p;
    if (!conv || !strchr ("diouxXcspfFeEgGaA", conv) || (conv == 's' && ln)
    ||  n + ln + 2 > sizeof spec)
        return NULL;
    memcpy (spec + n, length, ln);
    n += ln;
    spec [n++] = conv;
    spec [n] = '\0';

    s_field_t *field = &self->field [self->count - 1];
    field->conversions++;
    field->numeric = strchr ("diufFeEgG", conv) != NULL;
    char *dst = self->arena + self->used;
    size_t room = sizeof self->arena - self->used;
    bool is_long = strcmp (length, "l") == 0;
    bool is_llong = strcmp (length, "ll") == 0;
    int written;
    if (strchr ("di", conv))
        written = is_llong ? snprintf (dst, room, spec, va_arg (*args, long long))
                : is_long ? snprintf (dst, room, spec, va_arg (*args, long))
                : *length == 'j' ? snprintf (dst, room, spec, va_arg (*args, intmax_t))
                : *length == 'z' ? snprintf (dst, room, spec, va_arg (*args, ssize_t))
                : *length == 't' ? snprintf (dst, room, spec, va_arg (*args, ptrdiff_t))
                : snprintf (dst, room, spec, va_arg (*args, int));
    else
    if (strchr ("ouxX", conv))
        written = is_llong ? snprintf (dst, room, spec, va_arg (*args, unsigned long long))
                : is_long ? snprintf (dst, room, spec, va_arg (*args, unsigned long))
                : *length == 'j' ? snprintf (dst, room, spec, va_arg (*args, uintmax_t))
                : *length == 'z' ? snprintf (dst, room, spec, va_arg (*args, size_t))
                : *length == 't' ? snprintf (dst, room, spec, va_arg (*args, ptrdiff_t))
                : snprintf (dst, room, spec, va_arg (*args, unsigned int));
    else
    if (conv == 'c')
        written = snprintf (dst, room, spec, va_arg (*args, int));
    else
    if (conv == 's')
        written = snprintf (dst, room, spec, va_arg (*args, const char *));
    else
    if (conv == 'p')
        written = snprintf (dst, room, spec, va_arg (*args, void *));
    else
        written = *length == 'L' ? snprintf (dst, room, spec, va_arg (*args, long double))
                : snprintf (dst, room, spec, va_arg (*args, double));
    if (written < 0)
        written = 0;
    if ((size_t) written >= room) {
        written = room > 0 ? (int) room - 1 : 0;
        self->truncated = true;
    }
    self->used += (size_t) written;
    field->len += (size_t) written;
    return p + 1;
}
#pragma GCC diagnostic pop

static bool
s_key_char (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '_' || c == '.' || c == '-';
}

//  Start a field at `format` (not a space). A `name=` prefix is its key;
//  without one the words are stray text, kept (joined) under "text".
//  Returns the format after the key, or NULL when no field is left.
static const char *
s_field_start (s_fields_t *self, const char *format)
{
    const char *p = format;
    while (s_key_char (*p))
        p++;
    bool keyed = *p == '=' && p > format && (size_t) (p - format) < S_KEY_MAX;
    s_field_t *last = self->count > 0 ? &self->field [self->count - 1] : NULL;
    if (!keyed && last && last->stray && last->start + last->len == self->used) {
        s_arena_put (self, " ", 1);     //  the next word of the same text
        return format;
    }
    if (self->count == S_FIELDS_MAX) {
        self->truncated = true;
        return NULL;
    }
    s_field_t *field = &self->field [self->count++];
    memset (field, 0, sizeof *field);
    field->start = self->used;
    if (!keyed) {
        strcpy (field->key, "text");
        field->stray = true;
        return format;
    }
    memcpy (field->key, format, (size_t) (p - format));
    field->key [p - format] = '\0';
    return p + 1;
}

//  Walk `format` with `args` into fields: fields are separated by spaces
//  outside quotes; quotes delimit a value and are not part of it.
static void
s_fields_parse (s_fields_t *self, const char *format, va_list args)
{
    va_list copy;
    va_copy (copy, args);
    const char *p = format;
    while (p) {
        while (*p == ' ')
            p++;
        if (!*p || !(p = s_field_start (self, p)))
            break;
        s_field_t *field = &self->field [self->count - 1];
        bool quoted = false;
        while (p && *p && (quoted || *p != ' ')) {
            if (*p == '"') {
                quoted = !quoted;
                field->quoted = true;
                p++;
            }
            else
            if (*p == '%' && p [1] != '%')
                p = s_conversion (self, p, &copy);
            else {
                s_arena_put (self, p, 1);
                field->literal = true;
                p += *p == '%' ? 2 : 1;
            }
        }
    }
    va_end (copy);
}

//  A value printed by one numeric conversion is a JSON number when it reads
//  as one: not "nan", "inf" or " 12" from a width.
static bool
s_json_number (const char *text, size_t len)
{
    if (len == 0 || len > 40)
        return false;
    size_t i = text [0] == '-' ? 1 : 0;
    if (i == len || text [i] < '0' || text [i] > '9')
        return false;
    if (text [i] == '0' && i + 1 < len && text [i + 1] >= '0' && text [i + 1] <= '9')
        return false;   //  "007": printf's %03d; JSON has no leading zeros
    for (; i < len; i++)
        if (!strchr ("0123456789.eE+-", text [i]))
            return false;
    return true;
}

typedef struct {
    char *line;                     //  the caller's buffer
    size_t len;                     //  bytes written
    size_t cap;                     //  bytes usable for fields (size - S_RESERVE)
    bool full;                      //  a piece did not fit: write no more
} s_out_t;

//  Append `len` bytes whole, or nothing (and no more after) when they do
//  not fit. Returns 0 or -1.
static int
s_out_put (s_out_t *out, const char *bytes, size_t len)
{
    if (out->full || out->len + len > out->cap) {
        out->full = true;
        return -1;
    }
    memcpy (out->line + out->len, bytes, len);
    out->len += len;
    return 0;
}

//  Bytes of a valid UTF-8 sequence at `s` (of at most `len`), 0 if not one:
//  no overlong form, no surrogate, nothing past U+10FFFF.
static size_t
s_utf8_length (const unsigned char *s, size_t len)
{
    size_t n = s [0] >= 0xf0 ? 4 : s [0] >= 0xe0 ? 3 : s [0] >= 0xc0 ? 2 : 0;
    if (n == 0 || n > len || s [0] > 0xf4 || s [0] == 0xc0 || s [0] == 0xc1)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s [i] & 0xc0) != 0x80)
            return 0;
    if ((s [0] == 0xe0 && s [1] < 0xa0) || (s [0] == 0xed && s [1] >= 0xa0)
    ||  (s [0] == 0xf0 && s [1] < 0x90) || (s [0] == 0xf4 && s [1] >= 0x90))
        return 0;
    return n;
}

//  The contents of a JSON string (no quotes), escaped; stops where the
//  line is full (the caller closes the quotes from the reserve).
static void
s_out_escaped (s_out_t *out, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *) text;
    for (size_t i = 0; i < len && !out->full; ) {
        char escape [8];
        unsigned char c = s [i];
        if (c == '"' || c == '\\') {
            escape [0] = '\\';
            escape [1] = (char) c;
            s_out_put (out, escape, 2);
            i++;
        }
        else
        if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (named)
                s_out_put (out, named, 2);
            else {
                snprintf (escape, sizeof escape, "\\u%04x", c);
                s_out_put (out, escape, 6);
            }
            i++;
        }
        else
        if (c < 0x80) {
            s_out_put (out, (const char *) s + i, 1);
            i++;
        }
        else {
            size_t n = s_utf8_length (s + i, len - i);
            if (n)
                s_out_put (out, (const char *) s + i, n);
            else
                s_out_put (out, "\\ufffd", 6);
            i += n ? n : 1;
        }
    }
}

//  `,"key":` and the value, a string or a number. A field whose key does
//  not fit is left out whole; a string cut short is closed.
static void
s_out_field (s_out_t *out, const char *key, const char *value, size_t len, bool number)
{
    char head [S_KEY_MAX * 2 + 8];
    size_t n = 0;
    head [n++] = ',';
    head [n++] = '"';
    for (const char *k = key; *k; k++) {
        if (*k == '"' || *k == '\\')    //  keys are [A-Za-z0-9_.-]; "text"
            head [n++] = '\\';
        head [n++] = *k;
    }
    head [n++] = '"';
    head [n++] = ':';
    if (!number)
        head [n++] = '"';
    if (out->len == 1)                  //  the first field: no comma
        s_out_put (out, head + 1, n - 1);
    else
        s_out_put (out, head, n);
    if (out->full)
        return;
    if (number)
        s_out_put (out, value, len);
    else {
        s_out_escaped (out, value, len);
        out->line [out->len++] = '"';   //  from the reserve when full
    }
}

static const s_field_t *
s_fields_find (const s_fields_t *self, const char *key)
{
    for (int i = 0; i < self->count; i++)
        if (strcmp (self->field [i].key, key) == 0)
            return &self->field [i];
    return NULL;
}

static size_t
s_render_json (char *line, size_t size, imgp_log_level_t level, const char *format,
               va_list args)
{
    static const char *names [] = { "debug", "info", "warn", "error" };
    //  5 kB: on the heap, not on the small stacks of the frontend's
    //  thousands of threads (a text line takes none of it).
    s_fields_t *fields = malloc (sizeof *fields);
    if (!fields)
        return s_render_text (line, size, level, format, args);
    memset (fields, 0, offsetof (s_fields_t, arena));
    fields->used = 0;
    fields->truncated = false;
    s_fields_parse (fields, format, args);

    s_out_t out = { line, 0, size - S_RESERVE, false };
    s_out_put (&out, "{", 1);
    char stamp [32];
    size_t stamp_len = s_stamp (stamp);
    s_out_field (&out, "time", stamp, stamp_len, false);
    s_out_field (&out, "level", names [level], strlen (names [level]), false);
    s_out_field (&out, "program", s_program, strlen (s_program), false);
    //  The fields every line may have come first, in this order; each is
    //  a string whatever it looks like; "job=-" is no job.
    static const char *first [] = { "event", "job", "worker" };
    const s_field_t *put [3];
    for (size_t k = 0; k < 3; k++) {
        const s_field_t *f = put [k] = s_fields_find (fields, first [k]);
        if (f && !(k > 0 && f->len == 1 && fields->arena [f->start] == '-'))
            s_out_field (&out, f->key, fields->arena + f->start, f->len, false);
    }
    for (int i = 0; i < fields->count; i++) {
        const s_field_t *f = &fields->field [i];
        if (f == put [0] || f == put [1] || f == put [2])
            continue;
        const char *value = fields->arena + f->start;
        bool number = f->numeric && f->conversions == 1 && !f->literal && !f->quoted
                   && s_json_number (value, f->len);
        s_out_field (&out, f->key, value, f->len, number);
    }
    //  The reserve holds the rest whatever happened above.
    if (fields->truncated || out.full) {
        static const char mark [] = ",\"truncated\":true";
        memcpy (line + out.len, mark, sizeof mark - 1);
        out.len += sizeof mark - 1;
    }
    free (fields);
    line [out.len++] = '}';
    line [out.len++] = '\n';
    line [out.len] = '\0';
    return out.len;
}

//  --------------------------------------------------------------------------

size_t
imgp_log_render_v (char *line, size_t size, imgp_log_level_t level, const char *format,
                   va_list args)
{
    assert (line && size >= 128 && level <= IMGP_LOG_ERROR && format);
    return s_format == IMGP_LOG_JSON ? s_render_json (line, size, level, format, args)
                                     : s_render_text (line, size, level, format, args);
}

size_t
imgp_log_render (char *line, size_t size, imgp_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    size_t len = imgp_log_render_v (line, size, level, format, args);
    va_end (args);
    return len;
}

void
imgp_log_v (imgp_log_level_t level, const char *format, va_list args)
{
    if (level == IMGP_LOG_DEBUG && !s_verbose)
        return;
    if (s_format == IMGP_LOG_TEXT) {
        char line [S_LINE_MAX];
        s_emit (line, s_render_text (line, sizeof line, level, format, args), level);
        return;
    }
    char *line = malloc (IMGP_LOG_JSON_MAX);
    if (!line) {                        //  out of memory: a text line beats none
        char text [S_LINE_MAX];
        s_emit (text, s_render_text (text, sizeof text, level, format, args), level);
        return;
    }
    s_emit (line, imgp_log_render_v (line, IMGP_LOG_JSON_MAX, level, format, args), level);
    free (line);
}

void
imgp_log (imgp_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    imgp_log_v (level, format, args);
    va_end (args);
}

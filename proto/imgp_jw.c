/*  imgp_jw — see imgp_jw.h.

    Why: the codec and the spool each had a hand-written JSON writer for
    the same forms (the spool's on vsnprintf, the costlier of the two).
    This is the codec's writer, moved here so both use it.

    Never: write past the buffer, or write anything jansson would dump
    differently (test_proto holds it to jansson's bytes).
*/
#include "imgp_jw.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

void
imgp_jw_init (imgp_jw_t *self, char *data, size_t size)
{
    assert (self);
    assert (data || size == 0);
    *self = (imgp_jw_t) { data, size, 0, false };
}

static inline void
s_put (imgp_jw_t *self, const char *text, size_t len)
{
    if (self->full || len > self->size - self->len) {
        self->full = true;
        return;
    }
    memcpy (self->data + self->len, text, len);
    self->len += len;
}

static inline void
s_put_char (imgp_jw_t *self, char c)
{
    if (self->full || self->len == self->size)
        self->full = true;
    else
        self->data [self->len++] = c;
}

//  A comma goes before a member or element, unless it is the first in its
//  object or array, or the value of the key just written.
static inline bool
s_comma_needed (const imgp_jw_t *self)
{
    if (self->len == 0)
        return false;
    char last = self->data [self->len - 1];
    return last != '{' && last != '[' && last != ':';
}

static inline void
s_separate (imgp_jw_t *self)
{
    if (s_comma_needed (self))
        s_put_char (self, ',');
}

void
imgp_jw_key (imgp_jw_t *self, const char *key)
{
    assert (self);
    assert (key);
    //  In one piece, checked once: this runs for every member.
    size_t len = strlen (key);
    bool comma = s_comma_needed (self);
    if (self->full || comma + len + 3 > self->size - self->len) {
        self->full = true;
        return;
    }
    char *p = self->data + self->len;
    if (comma)
        *p++ = ',';
    *p++ = '"';
    memcpy (p, key, len);
    p += len;
    *p++ = '"';
    *p++ = ':';
    self->len = (size_t) (p - self->data);
}

//  The member's key, or the separator of a value that goes alone.
static inline void
s_start (imgp_jw_t *self, const char *key)
{
    if (key)
        imgp_jw_key (self, key);
    else
        s_separate (self);
}

void
imgp_jw_int (imgp_jw_t *self, const char *key, int64_t value)
{
    assert (self);
    s_start (self, key);
    char digits [24];
    char *end = digits + sizeof digits, *p = end;
    uint64_t magnitude = value < 0 ? 0 - (uint64_t) value : (uint64_t) value;
    do {
        *--p = (char) ('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--p = '-';
    s_put (self, p, (size_t) (end - p));
}

void
imgp_jw_bool (imgp_jw_t *self, const char *key, bool value)
{
    assert (self);
    s_start (self, key);
    s_put (self, value ? "true" : "false", value ? 4 : 5);
}

//  True when `text` is UTF-8 that jansson reads. It asks jansson itself
//  (one allocation), so the two never disagree; only strings holding a
//  byte >= 0x80 are asked, rare in what imgpipe writes.
static bool
s_utf8 (const char *text)
{
    json_t *probe = json_string (text);
    json_decref (probe);
    return probe != NULL;
}

//  Quotes, backslashes and control characters escaped as jansson escapes
//  them; everything else (UTF-8 included) as it is, in runs. A string that
//  is not UTF-8 (a multi-byte character cut short) has its non-ASCII bytes
//  written as '?', as the codec's s_clean_text does, so that the text
//  still reads back: jansson refuses invalid UTF-8.
void
imgp_jw_string (imgp_jw_t *self, const char *key, const char *text)
{
    assert (self);
    assert (text);
    s_start (self, key);
    s_put_char (self, '"');
    int utf8 = -1;          //  unknown until a byte >= 0x80 is seen
    const char *run = text;
    for (const char *c = text; ; c++) {
        unsigned char byte = (unsigned char) *c;
        if (byte >= 0x20 && byte != '"' && byte != '\\'
        &&  (byte < 0x80 || (utf8 < 0 ? (utf8 = s_utf8 (text)) : utf8)))
            continue;
        s_put (self, run, (size_t) (c - run));
        if (!byte)
            break;
        char escape [8];
        const char *named = byte >= 0x80 ? "?" : byte == '"' ? "\\\"" : byte == '\\' ? "\\\\"
                          : byte == '\b' ? "\\b" : byte == '\f' ? "\\f" : byte == '\n' ? "\\n"
                          : byte == '\r' ? "\\r" : byte == '\t' ? "\\t" : NULL;
        if (!named) {
            snprintf (escape, sizeof escape, "\\u%04X", byte);
            named = escape;
        }
        s_put (self, named, strlen (named));
        run = c + 1;
    }
    s_put_char (self, '"');
}

void
imgp_jw_open (imgp_jw_t *self, const char *key, char bracket)
{
    assert (self);
    assert (bracket == '{' || bracket == '[');
    s_start (self, key);
    s_put_char (self, bracket);
}

void
imgp_jw_close (imgp_jw_t *self, char bracket)
{
    assert (self);
    assert (bracket == '}' || bracket == ']');
    s_put_char (self, bracket);
}

//  A box as `[W,H]`.
static void
s_put_box (imgp_jw_t *self, const char *key, imgp_size_t box)
{
    imgp_jw_open (self, key, '[');
    imgp_jw_int (self, NULL, box.width);
    imgp_jw_int (self, NULL, box.height);
    imgp_jw_close (self, ']');
}

//  How both forms begin: `{"width":W,"height":H`.
static void
s_open_box (imgp_jw_t *self, const char *key, int width, int height)
{
    imgp_jw_open (self, key, '{');
    imgp_jw_int (self, "width", width);
    imgp_jw_int (self, "height", height);
}

void
imgp_jw_opts (imgp_jw_t *self, const char *key, const imgp_opts_t *opts)
{
    assert (opts);
    s_open_box (self, key, opts->width, opts->height);
    imgp_jw_string (self, "fit", imgp_fit_name (opts->fit));
    imgp_jw_string (self, "format", imgp_format_name (opts->format));
    imgp_jw_int (self, "quality", opts->quality);
    imgp_jw_bool (self, "enlarge", opts->enlarge);
    //  The members added with renditions, only when not their default, so
    //  a job with none of them is written as before.
    if (opts->gravity != IMGP_GRAVITY_CENTRE)
        imgp_jw_string (self, "gravity", imgp_gravity_name (opts->gravity));
    if (opts->background [0] || opts->background [1] || opts->background [2]
    ||  opts->background [3]) {
        char text [10];
        imgp_opts_background_text (opts->background, text);
        imgp_jw_string (self, "background", text);
    }
    if (opts->animated)
        imgp_jw_bool (self, "animated", true);
    if (opts->size_count > 1) {
        imgp_jw_open (self, "sizes", '[');
        for (int i = 0; i < opts->size_count && i < IMGP_SIZES_MAX; i++)
            s_put_box (self, NULL, opts->sizes [i]);
        imgp_jw_close (self, ']');
    }
    imgp_jw_close (self, '}');
}

void
imgp_jw_result (imgp_jw_t *self, const char *key, const imgp_result_t *result)
{
    assert (result);
    s_open_box (self, key, result->width, result->height);
    imgp_jw_string (self, "format", imgp_format_name (result->format));
    imgp_jw_int (self, "bytes", result->bytes);
    imgp_jw_int (self, "ms", result->ms);
    if (result->box.width || result->box.height)
        s_put_box (self, "box", result->box);
    if (result->etag [0])
        imgp_jw_string (self, "etag", result->etag);
    imgp_jw_close (self, '}');
}

void
imgp_jw_results (imgp_jw_t *self, const char *key, const imgp_result_t *results, int count)
{
    assert (results || count == 0);
    imgp_jw_open (self, key, '[');
    for (int i = 0; i < count; i++)
        imgp_jw_result (self, NULL, &results [i]);
    imgp_jw_close (self, ']');
}

size_t
imgp_jw_len (const imgp_jw_t *self)
{
    assert (self);
    return self->full ? 0 : self->len;
}

/*  imgp_jw — a JSON writer into a fixed buffer, in jansson's compact bytes.

    What: the one place imgpipe writes the protocol's JSON text by hand.
    The codec (imgp_msg.c) writes wire headers with it, the broker's spool
    (imgp_spool.c) its job records, so options and results have one
    written form, the one PROTOCOL.md gives and imgp_msg_opts_from_json /
    imgp_msg_result_from_json read.

    Why by hand: jansson's json_pack + json_dumps was a quarter of a
    broker's user time per job in the codec, and the spool's vsnprintf
    writer about a quarter of its instructions per job. This writes with
    memcpy and a digit loop: no tree, no format string, no allocation.

    The bytes are those json_dumps (obj, JSON_COMPACT) makes from an object
    with the same members in the same order: no spaces; strings escaped as
    jansson does (\" \\ \b \f \n \r \t, other bytes below 0x20 as \u00XX in
    upper case; '/', DEL and UTF-8 as they are); integers in decimal.
    tests/unit/test_proto.c checks this writer's text against a jansson
    re-dump, and every header the codec writes.

    Ownership: the writer borrows the caller's buffer and owns nothing, so
    it has no _new / _destroy: it lives on the caller's stack, one per text,
    set up by imgp_jw_init. Its struct is in this header only so that it
    can; read it through the methods.

    Overflow: a put that does not fit marks the writer full and every later
    put does nothing; the bytes before it stay but the text is void. The
    caller checks once, at the end: imgp_jw_len is 0 when anything did not
    fit. Nothing is ever written past `size`. The text is not terminated:
    a caller that wants a C string leaves itself a byte and adds the NUL.

    Never: allocate, write past the buffer, or check values. Keys are the
    caller's constants and go as they are (no escaping); ranges are the
    caller's to check before writing (the codec's s_check does). A text
    string that is not UTF-8 (a multi-byte character cut short) has its
    non-ASCII bytes written as '?', so that jansson reads it back; UTF-8
    goes byte for byte.
*/
#ifndef IMGP_JW_H_INCLUDED
#define IMGP_JW_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"
#include "imgp_opts.h"

//  A text being written. Members are the module's; use the methods.
typedef struct {
    char *data;             //  the caller's buffer, borrowed
    size_t size;            //  its capacity in bytes
    size_t len;             //  bytes written so far
    bool full;              //  a put did not fit: the text is void
} imgp_jw_t;

//  Start a text in `data` (`size` bytes, borrowed until the text is done).
void imgp_jw_init (imgp_jw_t *self, char *data, size_t size);

//  Members and values. `key` is a member's name: after a comma unless first
//  in its object or array, then `"key":`. With key NULL the value goes
//  alone: an array element (comma-separated the same way) or the value of
//  a key just put with imgp_jw_key.
void imgp_jw_key (imgp_jw_t *self, const char *key);
void imgp_jw_int (imgp_jw_t *self, const char *key, int64_t value);
void imgp_jw_bool (imgp_jw_t *self, const char *key, bool value);
void imgp_jw_string (imgp_jw_t *self, const char *key, const char *text);

//  Open an object ('{') or array ('['), as a member when `key` is set;
//  imgp_jw_close writes the matching '}' or ']'.
void imgp_jw_open (imgp_jw_t *self, const char *key, char bracket);
void imgp_jw_close (imgp_jw_t *self, char bracket);

//  The protocol's forms (PROTOCOL.md), as members named `key`:
//    opts:   {"width":100,"height":100,"fit":"inside","format":"png",
//             "quality":0,"enlarge":false}
//            (+ gravity, background, animated, sizes when not their default)
//    result: {"width":100,"height":67,"format":"jpeg","bytes":1234,"ms":18}
//            (+ "box":[w,h] unless 0x0, "etag":"<hex>" unless "")
//    results: an array of `count` results
void imgp_jw_opts (imgp_jw_t *self, const char *key, const imgp_opts_t *opts);
void imgp_jw_result (imgp_jw_t *self, const char *key, const imgp_result_t *result);
void imgp_jw_results (imgp_jw_t *self, const char *key, const imgp_result_t *results,
                      int count);

//  The text's length in bytes, or 0 when something did not fit.
size_t imgp_jw_len (const imgp_jw_t *self);

#endif

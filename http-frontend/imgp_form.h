/*  imgp_form — a streaming reader of multipart/form-data bodies (RFC 7578
    over RFC 2046) that hands on the bytes of one field.

    Why: civetweb 1.15's mg_handle_form_request refuses boundaries shorter
    than 4 characters (RFC 2046 allows 1 to 70), takes everything after
    "boundary=" as the boundary (so `boundary=x; charset=utf-8` breaks, and
    a boundary that is not the first parameter is not found), skips a
    second field of the same name without a word, and after an abort may
    call back once more with a bogus length. This reader takes what the RFC
    allows and says exactly what was wrong. It never holds more than a
    small window of the body: the wanted field's bytes go to a callback as
    they arrive, other fields are read and dropped, or handed on whole
    when short (imgp_form_read_fields: options beside the file).

    Never: read past the close delimiter's line more than the window it
    already holds, trust a length from the body, or call back after a
    callback said stop.
*/
#ifndef IMGP_FORM_H_INCLUDED
#define IMGP_FORM_H_INCLUDED

#include <stddef.h>

#define IMGP_FORM_BOUNDARY_MAX 70   //  RFC 2046: 1..70 characters
#define IMGP_FORM_VALUE_MAX 128     //  longest value of another field handed on

//  Read up to `size` body bytes into `buf`: returns the count, 0 at the end
//  of the body, -1 on a read error (the caller's reader knows why).
typedef int (imgp_form_read_fn) (void *arg, char *buf, size_t size);

//  The next `len` bytes of the wanted field: returns 0 to go on, -1 to stop.
//  With imgp_form_read_into, `bytes` may lie in the room the caller gave
//  (then they were read there and need no copy).
typedef int (imgp_form_data_fn) (void *arg, const char *bytes, size_t len);

//  Where the wanted field's next bytes may be read to: room for *size
//  bytes (set it), valid until the next data call. NULL, or a room no
//  larger than a delimiter, makes the reader use its own window for them.
//  Bytes the reader writes there beyond what it then passes to data are
//  scratch.
typedef char *(imgp_form_room_fn) (void *arg, size_t *size);

//  A field other than the wanted one, whole: its name and its value as a
//  C string, or NULL when the value is over IMGP_FORM_VALUE_MAX bytes or
//  holds a NUL (only its length was counted). Returns 0 to go on, -1 to
//  stop (the read then ends IMGP_FORM_STOPPED).
typedef int (imgp_form_field_fn) (void *arg, const char *name, const char *value);

typedef enum {
    IMGP_FORM_OK = 0,           //  the close delimiter was read; the field came once
    IMGP_FORM_READ_ERROR,       //  the read callback failed
    IMGP_FORM_STOPPED,          //  the data callback said stop
    IMGP_FORM_MALFORMED,        //  not multipart as RFC 2046 frames it (error says how)
    IMGP_FORM_MISSING,          //  well formed, but without the wanted field
    IMGP_FORM_DUPLICATE         //  the wanted field came twice
} imgp_form_result_t;

//  Find the boundary parameter in a Content-Type value (any position, in
//  any case, quoted or not) and copy it into `boundary` (at least
//  IMGP_FORM_BOUNDARY_MAX + 1 bytes). Returns 0, or -1 when there is none
//  or it breaks RFC 2046's rules (length, characters, trailing space).
int imgp_form_boundary (const char *content_type, char *boundary, size_t size);

//  Read a whole multipart body with `boundary` through `read`, passing the
//  content of the field named `field` to `data`. On IMGP_FORM_MALFORMED
//  `error` (may be NULL) says what was wrong.
imgp_form_result_t imgp_form_read (const char *boundary, const char *field,
                                   imgp_form_read_fn *read, imgp_form_data_fn *data,
                                   void *arg, char *error, size_t error_size);

//  imgp_form_read, reading the wanted field's bytes straight into the
//  caller's buffer where `room` (may be NULL) offers space: one copy of
//  them, from `read` to their place, instead of two.
imgp_form_result_t imgp_form_read_into (const char *boundary, const char *field,
                                        imgp_form_read_fn *read, imgp_form_room_fn *room,
                                        imgp_form_data_fn *data, void *arg, char *error,
                                        size_t error_size);

//  imgp_form_read_into, also handing every other field to `other` (may be
//  NULL: they are dropped), in body order, before or after the wanted
//  one: small fields beside a file, such as options.
imgp_form_result_t imgp_form_read_fields (const char *boundary, const char *field,
                                          imgp_form_read_fn *read, imgp_form_room_fn *room,
                                          imgp_form_data_fn *data, imgp_form_field_fn *other,
                                          void *arg, char *error, size_t error_size);

#endif

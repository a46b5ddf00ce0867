/*  imgp_buf — a reference-counted byte buffer for upload bytes, so the
    frontend can hand an image to libzmq without copying it and still send
    it again when a SUBMIT has to be retried (Lazy Pirate).

    Why: imgp_msg_set_data() gives libzmq the bytes with a free function
    that libzmq calls once it has sent them, which may be after the REQ
    socket that sent them has been closed. A retry needs the same bytes
    again, so the buffer is freed only when the last holder (the request
    handler or a libzmq message) lets go. The counter sits in front of the
    bytes; imgp_buf_unref has the libzmq free-function signature.

    Never: resize a buffer once it has been shared (imgp_buf_ref), or free
    one with free().
*/
#ifndef IMGP_BUF_H_INCLUDED
#define IMGP_BUF_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Allocate a buffer of `size` bytes (contents undefined) with one reference.
//  Returns NULL when out of memory.
uint8_t *imgp_buf_new (size_t size);

//  Grow or shrink an unshared buffer, keeping its contents. Returns 0, or
//  -1 when out of memory (the buffer is then unchanged).
int imgp_buf_resize (uint8_t **buf_p, size_t size);

//  The size the buffer was made or last resized to.
size_t imgp_buf_size (const uint8_t *buf);

//  Take one more reference; returns `buf`.
uint8_t *imgp_buf_ref (uint8_t *buf);

//  Drop one reference, freeing the buffer with the last one. The signature
//  is libzmq's free function, to pass to imgp_msg_set_data; `hint` is unused.
void imgp_buf_unref (void *buf, void *hint);

//  Drop the caller's reference and set *buf_p to NULL; safe on NULL.
void imgp_buf_destroy (uint8_t **buf_p);

#endif

/*  imgp_magic — is this buffer really the thumbnail it claims to be?

    Why: the broker stores a resizer's DONE bytes and the frontend serves
    them with the Content-Type of the job's format. A forged or broken
    result (an HTML page, a truncated file, another format, other
    dimensions) must never be served as "image/png". So before storing,
    the broker checks the magic bytes and parses the container's header
    (PNG IHDR, JPEG SOFn, WebP VP8/VP8L/VP8X, AVIF ftyp + primary item's
    ispe) for the dimensions, and the container's end (PNG IEND, JPEG EOI,
    WebP RIFF size, AVIF top-level boxes and mdat) so a cut file is caught.

    Never: decode pixels (the broker stays cheap and libvips-free), read
    outside [data, data + size), or trust a length field before checking
    it against what is left. The bytes are hostile: every path returns -1
    with a reason, none asserts on them.
*/
#ifndef IMGP_MAGIC_H_INCLUDED
#define IMGP_MAGIC_H_INCLUDED

#include <stddef.h>

#include "imgp_opts.h"

//  Read the dimensions from the header of `data` as `format`. Returns 0
//  with *width and *height set (1..2^31-1), or -1 with `reason` (may be
//  NULL) set to a static text saying what is wrong ("png: no IEND chunk
//  (truncated?)"). `data` may be NULL when `size` is 0.
int imgp_magic_read (const void *data, size_t size, imgp_format_t format, int *width,
                     int *height, const char **reason);

//  Returns 0 when `data` is a complete `format` image whose header says
//  width x height, else -1 with `reason` (may be NULL) set to a static
//  text. The broker runs this on every DONE before storing it.
int imgp_magic_check (const void *data, size_t size, imgp_format_t format, int width, int height,
                      const char **reason);

#endif

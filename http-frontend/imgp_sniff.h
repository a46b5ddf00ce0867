/*  imgp_sniff — tells from the first bytes of an upload whether it claims
    to be one of the image formats imgpipe serves (JPEG, PNG, WebP, GIF,
    TIFF, HEIF/AVIF).

    Why: the frontend refuses non-images (SVG, PDF, HTML, text, random
    bytes) at upload with 415, before they cost a spool write and a resizer
    slot. Only magic bytes are checked: this module never decodes an image
    (invariant 5); a file that passes here can still fail in the resizer.
*/
#ifndef IMGP_SNIFF_H_INCLUDED
#define IMGP_SNIFF_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  The message a user gets for anything imgp_sniff refuses.
#define IMGP_SNIFF_REFUSED "not a supported image (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF)"

//  Name of the format the bytes start like ("jpeg", "png", "webp", "gif",
//  "tiff", "heif"), or NULL when they are not one we accept. Static string.
const char *imgp_sniff (const uint8_t *data, size_t size);

#endif

/*  imgp_sniff — tells from the first bytes of an upload whether it claims
    to be one of the image formats imgpipe serves (JPEG, PNG, WebP, GIF,
    TIFF, HEIF/AVIF), plus the extra loaders an operator turned on with
    --allow-loaders (svg, pdf, magick).

    Why: the frontend refuses non-images (SVG, PDF, HTML, text, random
    bytes) at upload with 415, before they cost a spool write and a resizer
    slot. Only magic bytes are checked: this module never decodes an image
    (invariant 5); a file that passes here can still fail in the resizer.
    The frontend reads the same --allow-loaders list (and IMGP_ALLOW_LOADERS)
    as the resizer, so one setting turns a loader on for both; the resizer's
    allow-list stays the one that decides.
*/
#ifndef IMGP_SNIFF_H_INCLUDED
#define IMGP_SNIFF_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  The message a user gets for anything imgp_sniff refuses.
#define IMGP_SNIFF_REFUSED "not a supported image (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF)"

//  Extra loaders, as bits of the `allow` argument below.
#define IMGP_SNIFF_SVG 1u       //  "<svg", or an XML prologue with "<svg" near the start
#define IMGP_SNIFF_PDF 2u       //  "%PDF-"
#define IMGP_SNIFF_MAGICK 4u    //  anything not empty: ImageMagick reads too much to sniff

//  Parse an --allow-loaders list ("svg,pdf", spaces or commas between
//  names; NULL or "" for none) into IMGP_SNIFF_* bits. The names are the
//  resizer's: the six always-on formats are accepted and add nothing.
//  Returns 0, or -1 with the unknown name logged.
int imgp_sniff_allow_parse (const char *list, unsigned *allow);

//  Name of the format the bytes start like ("jpeg", "png", "webp", "gif",
//  "tiff", "heif", and with `allow` bits "svg", "pdf", "magick"), or NULL
//  when they are not one we accept. Static string.
const char *imgp_sniff (const uint8_t *data, size_t size, unsigned allow);

#endif

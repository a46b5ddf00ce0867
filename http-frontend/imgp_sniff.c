/*  imgp_sniff — see imgp_sniff.h. A table of fixed signatures, plus the
    ISO base media file format (HEIF, AVIF), whose first box is `ftyp` with
    a major brand and a list of compatible brands: any one of the HEIF/AVIF
    brands below marks the file as ours (most files say "mif1" there).

    The extra loaders are sniffed only when allowed. SVG is text, so it is
    recognised much as libvips' svgload does: after an optional byte order
    mark and white space the file starts with '<' (the svg element, or an
    XML prologue, doctype or comment before it) and "<svg", in any case,
    comes within the first S_SVG_WINDOW bytes. Anything else that passes
    fails in the resizer, whose loader decides.
*/
#include "imgp_sniff.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "imgp_log.h"

#define S_SVG_WINDOW 1024       //  bytes in which "<svg" must appear (libvips: 1000)

typedef struct {
    size_t offset;          //  where the signature starts
    const char *magic;      //  the bytes
    size_t size;            //  how many bytes of magic
    const char *format;     //  name returned
} s_magic_t;

#define S_MAGIC(offset, text, format) { offset, text, sizeof (text) - 1, format }

static const s_magic_t s_magics [] = {
    S_MAGIC (0, "\xFF\xD8\xFF", "jpeg"),
    S_MAGIC (0, "\x89PNG\r\n\x1A\n", "png"),
    S_MAGIC (0, "GIF87a", "gif"),
    S_MAGIC (0, "GIF89a", "gif"),
    S_MAGIC (0, "II*\0", "tiff"),
    S_MAGIC (0, "MM\0*", "tiff"),
};

static const char *s_heif_brands [] = {
    "heic", "heix", "mif1", "msf1", "avif", "avis"
};

#define S_COUNT(array) (sizeof (array) / sizeof (array) [0])

static bool
s_has (const uint8_t *data, size_t size, size_t offset, const char *magic, size_t len)
{
    return size >= offset + len && memcmp (data + offset, magic, len) == 0;
}

static bool
s_is_webp (const uint8_t *data, size_t size)
{
    return s_has (data, size, 0, "RIFF", 4) && s_has (data, size, 8, "WEBP", 4);
}

static bool
s_heif_brand (const uint8_t *brand)
{
    for (size_t i = 0; i < S_COUNT (s_heif_brands); i++)
        if (memcmp (brand, s_heif_brands [i], 4) == 0)
            return true;
    return false;
}

//  ftyp box: size (4, big-endian), "ftyp", major brand (4), minor version
//  (4), compatible brands (4 each) up to the box size.
static bool
s_is_heif (const uint8_t *data, size_t size)
{
    if (!s_has (data, size, 4, "ftyp", 4) || size < 12)
        return false;
    size_t box = (size_t) data [0] << 24 | (size_t) data [1] << 16
               | (size_t) data [2] << 8 | (size_t) data [3];
    if (box > size)
        box = size;         //  only look at what we were given
    if (s_heif_brand (data + 8))
        return true;
    for (size_t at = 16; at + 4 <= box; at += 4)
        if (s_heif_brand (data + at))
            return true;
    return false;
}

//  Names --allow-loaders knows, with the bit each one adds (0: always on).
static const struct {
    const char *name;       //  loader name, as the resizer spells it
    unsigned bit;           //  IMGP_SNIFF_* bit, 0 for the always-on formats
} s_loader_names [] = {
    { "jpeg", 0 }, { "png", 0 }, { "webp", 0 }, { "gif", 0 }, { "tiff", 0 }, { "heif", 0 },
    { "svg", IMGP_SNIFF_SVG }, { "pdf", IMGP_SNIFF_PDF }, { "magick", IMGP_SNIFF_MAGICK },
};

static int
s_loader_bit (const char *name, size_t len, unsigned *bit)
{
    for (size_t i = 0; i < S_COUNT (s_loader_names); i++)
        if (strlen (s_loader_names [i].name) == len
        &&  strncasecmp (s_loader_names [i].name, name, len) == 0) {
            *bit = s_loader_names [i].bit;
            return 0;
        }
    return -1;
}

int
imgp_sniff_allow_parse (const char *list, unsigned *allow)
{
    *allow = 0;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ',' || isspace ((unsigned char) *p))
            p++;
        size_t len = strcspn (p, ", \t\r\n\v\f");
        if (len == 0)
            break;
        unsigned bit;
        if (s_loader_bit (p, len, &bit)) {
            imgp_error ("event=config_error option=allow-loaders value=\"%.*s\" reason=\"unknown "
                        "loader (known: svg, pdf, magick)\"", (int) len, p);
            return -1;
        }
        *allow |= bit;
        p += len;
    }
    return 0;
}

//  "<svg" anywhere in the first `size` bytes, in any case.
static bool
s_has_svg_tag (const uint8_t *data, size_t size)
{
    for (size_t at = 0; at + 4 <= size; at++)
        if (strncasecmp ((const char *) data + at, "<svg", 4) == 0)
            return true;
    return false;
}

static bool
s_is_svg (const uint8_t *data, size_t size)
{
    size_t at = 0;
    if (s_has (data, size, 0, "\xEF\xBB\xBF", 3))
        at = 3;                 //  UTF-8 byte order mark
    while (at < size && isspace (data [at]))
        at++;
    if (at >= size || data [at] != '<')
        return false;
    size_t window = size - at < S_SVG_WINDOW ? size - at : S_SVG_WINDOW;
    return s_has_svg_tag (data + at, window);
}

//  The image formats every frontend takes, by their magic bytes.
static const char *
s_sniff_image (const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < S_COUNT (s_magics); i++) {
        const s_magic_t *m = &s_magics [i];
        if (s_has (data, size, m->offset, m->magic, m->size))
            return m->format;
    }
    if (s_is_webp (data, size))
        return "webp";
    if (s_is_heif (data, size))
        return "heif";
    return NULL;
}

const char *
imgp_sniff (const uint8_t *data, size_t size, unsigned allow)
{
    if (!data || size == 0)
        return NULL;
    const char *format = s_sniff_image (data, size);
    if (format)
        return format;
    if ((allow & IMGP_SNIFF_SVG) && s_is_svg (data, size))
        return "svg";
    if ((allow & IMGP_SNIFF_PDF) && s_has (data, size, 0, "%PDF-", 5))
        return "pdf";
    //  ImageMagick reads hundreds of formats, most without a fixed magic:
    //  when an operator allows it, the resizer's libvips decides.
    if (allow & IMGP_SNIFF_MAGICK)
        return "magick";
    return NULL;
}

/*  imgp_sniff — see imgp_sniff.h. A table of fixed signatures, plus the
    ISO base media file format (HEIF, AVIF), whose first box is `ftyp` with
    a major brand and a list of compatible brands: any one of the HEIF/AVIF
    brands below marks the file as ours (most files say "mif1" there).
*/
#include "imgp_sniff.h"

#include <stdbool.h>
#include <string.h>

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

const char *
imgp_sniff (const uint8_t *data, size_t size)
{
    if (!data)
        return NULL;
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

/*  imgp_magic — see imgp_magic.h. One parser per container, each walking
    its structure with every length checked against the bytes left before
    it is used; none decodes pixels.

    Why strict about the end of the container too (IEND last, EOI last,
    RIFF size exact, top-level boxes filling the buffer): the bytes come
    from libvips' savers, which always write complete containers with
    nothing after them, so anything else is a cut or forged result. A
    false refusal is not harmless (the broker re-queues the job), which is
    why tests/unit/test_magic.c checks real libvips output of every format,
    with and without alpha, gray and 16-bit.

    Limits, on purpose: AVIF grids are taken at their ispe (the whole
    image's size, as the spec requires); 'clap' crops are not applied
    (libvips never writes one); an animated WebP is checked by its canvas.
*/
#include "imgp_magic.h"

#include <assert.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

//  Properties of the AVIF primary item we look at; more are ignored.
#define S_AVIF_PROPS_MAX 32

//  A bounds-checked big-endian reader over [at, end) of a buffer. A read
//  past `end` returns 0 and sets `short_read`, so a parser reads a whole
//  structure and checks once.
typedef struct {
    const uint8_t *data;    //  the whole buffer
    size_t at;              //  offset of the next byte to read
    size_t end;             //  offset one past the last readable byte
    bool short_read;        //  some read wanted bytes beyond `end`
} s_reader_t;

//  One ISO-BMFF box: its type and where its body and the box end.
typedef struct {
    char type [4];          //  four-character code, not NUL-terminated
    size_t body;            //  offset of the first byte after the header
    size_t end;             //  offset one past the box
} s_box_t;

static int
s_fail (const char **reason, const char *text)
{
    if (reason)
        *reason = text;
    return -1;
}

static uint32_t
s_be16 (const uint8_t *p)
{
    return (uint32_t) p [0] << 8 | p [1];
}

static uint32_t
s_be32 (const uint8_t *p)
{
    return (uint32_t) p [0] << 24 | (uint32_t) p [1] << 16 | (uint32_t) p [2] << 8 | p [3];
}

static uint32_t
s_le16 (const uint8_t *p)
{
    return (uint32_t) p [1] << 8 | p [0];
}

static uint32_t
s_le24 (const uint8_t *p)
{
    return (uint32_t) p [2] << 16 | (uint32_t) p [1] << 8 | p [0];
}

static uint32_t
s_le32 (const uint8_t *p)
{
    return (uint32_t) p [3] << 24 | s_le24 (p);
}

//  Reads `bytes` (1..4) big-endian, or 0 with short_read set.
static uint32_t
s_read (s_reader_t *self, size_t bytes)
{
    if (self->short_read || self->end - self->at < bytes) {
        self->short_read = true;
        return 0;
    }
    uint32_t value = 0;
    for (size_t i = 0; i < bytes; i++)
        value = value << 8 | self->data [self->at + i];
    self->at += bytes;
    return value;
}

//  Both sides in 1..INT_MAX, else a reason.
static int
s_dimensions (uint32_t w, uint32_t h, int *width, int *height, const char **reason)
{
    if (w == 0 || h == 0 || w > INT_MAX || h > INT_MAX)
        return s_fail (reason, "header dimensions out of range");
    *width = (int) w;
    *height = (int) h;
    return 0;
}

//  --------------------------------------------------------------------------
//  PNG: signature, IHDR first (length 13, CRC right), chunks to IEND, which
//  must be the last bytes, with an IDAT on the way.

static uint32_t
s_crc32 (const uint8_t *p, size_t size)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < size; i++) {
        crc ^= p [i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

//  The bit depths the PNG spec allows for each colour type.
static bool
s_png_depth_ok (uint8_t color, uint8_t depth)
{
    switch (color) {
        case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
        case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
        case 2: case 4: case 6: return depth == 8 || depth == 16;
        default: return false;
    }
}

static bool
s_png_chunk_type_ok (const uint8_t *type)
{
    for (int i = 0; i < 4; i++) {
        uint8_t c = type [i] | 0x20;       //  case bits carry flags, not meaning
        if (c < 'a' || c > 'z')
            return false;
    }
    return true;
}

static int
s_png (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    static const uint8_t signature [8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (size < sizeof signature || memcmp (p, signature, sizeof signature) != 0)
        return s_fail (reason, "png: no PNG signature");
    if (size < 8 + 12 + 13)
        return s_fail (reason, "png: truncated before the end of IHDR");
    if (s_be32 (p + 8) != 13 || memcmp (p + 12, "IHDR", 4) != 0)
        return s_fail (reason, "png: first chunk is not a 13-byte IHDR");
    if (s_crc32 (p + 12, 4 + 13) != s_be32 (p + 29))
        return s_fail (reason, "png: IHDR CRC mismatch");
    const uint8_t *ihdr = p + 16;
    if (!s_png_depth_ok (ihdr [9], ihdr [8]) || ihdr [10] != 0 || ihdr [11] != 0
        || ihdr [12] > 1)
        return s_fail (reason, "png: IHDR has an invalid depth, colour type or method");
    *w = s_be32 (ihdr);
    *h = s_be32 (ihdr + 4);

    bool idat = false;
    size_t at = 8 + 12 + 13;
    while (true) {
        if (size - at < 12)
            return s_fail (reason, "png: no IEND chunk (truncated?)");
        uint32_t length = s_be32 (p + at);
        const uint8_t *type = p + at + 4;
        if (length > size - at - 12)
            return s_fail (reason, "png: chunk runs past the end (truncated?)");
        if (!s_png_chunk_type_ok (type))
            return s_fail (reason, "png: invalid chunk type");
        at += 12 + (size_t) length;
        if (memcmp (type, "IDAT", 4) == 0)
            idat = true;
        else
        if (memcmp (type, "IEND", 4) == 0)
            break;
    }
    if (!idat)
        return s_fail (reason, "png: no IDAT chunk");
    if (at != size)
        return s_fail (reason, "png: bytes after IEND");
    return 0;
}

//  --------------------------------------------------------------------------
//  JPEG: SOI, marker segments to the first SOFn (its dimensions), on to
//  SOS, and EOI as the last two bytes.

static bool
s_jpeg_is_sof (uint8_t marker)
{
    //  C0..CF are frame headers except DHT (C4), JPG (C8) and DAC (CC).
    return marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8
        && marker != 0xcc;
}

static int
s_jpeg (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    if (size < 2 || p [0] != 0xff || p [1] != 0xd8)
        return s_fail (reason, "jpeg: no SOI marker");
    bool sof = false;
    size_t at = 2;
    while (true) {
        if (at >= size)
            return s_fail (reason, "jpeg: ends before the scan (truncated?)");
        if (p [at] != 0xff)
            return s_fail (reason, "jpeg: expected a marker");
        while (at < size && p [at] == 0xff)
            at++;                           //  fill bytes before a marker
        if (at >= size)
            return s_fail (reason, "jpeg: ends before the scan (truncated?)");
        uint8_t marker = p [at++];
        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7))
            continue;                       //  TEM, RSTn: no length
        if (marker == 0x00 || marker == 0xd8 || marker == 0xd9)
            return s_fail (reason, "jpeg: unexpected marker before the scan");
        if (marker == 0xda)
            break;                          //  SOS: entropy-coded data follows
        if (size - at < 2)
            return s_fail (reason, "jpeg: segment runs past the end (truncated?)");
        uint32_t length = s_be16 (p + at);
        if (length < 2 || length > size - at)
            return s_fail (reason, "jpeg: segment runs past the end (truncated?)");
        if (s_jpeg_is_sof (marker) && !sof) {
            //  precision, height, width, component count, 3 bytes a component
            if (length < 8 || p [at + 7] == 0 || length != 8 + 3 * (uint32_t) p [at + 7])
                return s_fail (reason, "jpeg: malformed SOF segment");
            *h = s_be16 (p + at + 3);
            *w = s_be16 (p + at + 5);
            sof = true;
        }
        at += length;
    }
    if (!sof)
        return s_fail (reason, "jpeg: no SOF marker before the scan");
    if (size - at < 2 || p [size - 2] != 0xff || p [size - 1] != 0xd9)
        return s_fail (reason, "jpeg: does not end with EOI (truncated?)");
    return 0;
}

//  --------------------------------------------------------------------------
//  WebP: RIFF/WEBP whose size is exactly the buffer, chunks inside it, the
//  first one VP8 (lossy), VP8L (lossless) or VP8X (extended, whose canvas
//  must match the image chunk that follows unless animated).

static int
s_webp_vp8 (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    if (size < 10)
        return s_fail (reason, "webp: VP8 chunk too short");
    uint32_t tag = s_le24 (p);
    if ((tag & 1) != 0 || p [3] != 0x9d || p [4] != 0x01 || p [5] != 0x2a)
        return s_fail (reason, "webp: VP8 chunk is not a key frame");
    if ((tag >> 5) > size - 10)
        return s_fail (reason, "webp: VP8 partition runs past its chunk");
    *w = s_le16 (p + 6) & 0x3fff;
    *h = s_le16 (p + 8) & 0x3fff;
    return 0;
}

static int
s_webp_vp8l (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    if (size < 5 || p [0] != 0x2f)
        return s_fail (reason, "webp: VP8L chunk has no signature");
    uint32_t bits = s_le32 (p + 1);
    if (bits >> 29 != 0)
        return s_fail (reason, "webp: VP8L version is not 0");
    *w = (bits & 0x3fff) + 1;
    *h = ((bits >> 14) & 0x3fff) + 1;
    return 0;
}

static int
s_webp (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    if (size < 12 || memcmp (p, "RIFF", 4) != 0 || memcmp (p + 8, "WEBP", 4) != 0)
        return s_fail (reason, "webp: no RIFF/WEBP header");
    uint32_t riff = s_le32 (p + 4);
    if (riff < 4 || riff > size - 8)
        return s_fail (reason, "webp: RIFF size runs past the end (truncated?)");
    if (riff != size - 8)
        return s_fail (reason, "webp: bytes after the RIFF chunk");

    bool extended = false, animated = false, image = false;
    uint32_t canvas_w = 0, canvas_h = 0;
    for (size_t at = 12; at < size;) {
        if (size - at < 8)
            return s_fail (reason, "webp: chunk header runs past the end");
        const uint8_t *fourcc = p + at;
        uint32_t length = s_le32 (p + at + 4);
        size_t room = size - at - 8;
        size_t padded = (size_t) length + (length & 1);
        if (padded > room)
            return s_fail (reason, "webp: chunk runs past the end (truncated?)");
        const uint8_t *body = p + at + 8;
        bool first = at == 12;
        at += 8 + padded;

        int rc = 1;                         //  1: not an image chunk
        uint32_t cw = 0, ch = 0;
        if (memcmp (fourcc, "VP8 ", 4) == 0)
            rc = s_webp_vp8 (body, length, &cw, &ch, reason);
        else
        if (memcmp (fourcc, "VP8L", 4) == 0)
            rc = s_webp_vp8l (body, length, &cw, &ch, reason);
        else
        if (first && memcmp (fourcc, "VP8X", 4) == 0) {
            if (length < 10)
                return s_fail (reason, "webp: VP8X chunk too short");
            extended = true;
            animated = (body [0] & 0x02) != 0;
            canvas_w = s_le24 (body + 4) + 1;
            canvas_h = s_le24 (body + 7) + 1;
        }
        else
        if (first)
            return s_fail (reason, "webp: first chunk is not VP8, VP8L or VP8X");
        else
        if (animated && memcmp (fourcc, "ANMF", 4) == 0)
            image = true;
        if (rc < 0)
            return -1;
        if (rc == 0 && !image) {
            if (extended && (cw != canvas_w || ch != canvas_h))
                return s_fail (reason, "webp: image chunk differs from the VP8X canvas");
            *w = cw;
            *h = ch;
            image = true;
        }
    }
    if (!image)
        return s_fail (reason, "webp: no image chunk");
    if (extended) {
        *w = canvas_w;
        *h = canvas_h;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  AVIF: ISO-BMFF. ftyp first with brand avif or avis; top-level boxes fill
//  the buffer exactly, one of them mdat; meta's pitm names the primary
//  item, iprp/ipma lists its properties, ipco holds them: its ispe gives
//  the size, an irot of 90 or 270 degrees swaps it.

//  Reads the box header at `at`, which must lie within [at, end).
static int
s_box (const uint8_t *p, size_t at, size_t end, s_box_t *box)
{
    if (at > end || end - at < 8)
        return -1;
    uint64_t length = s_be32 (p + at);
    size_t header = 8;
    if (length == 1) {                      //  64-bit size follows the type
        if (end - at < 16)
            return -1;
        length = (uint64_t) s_be32 (p + at + 8) << 32 | s_be32 (p + at + 12);
        header = 16;
    }
    else
    if (length == 0)                        //  to the end of the container
        length = end - at;
    if (length < header || length > end - at)
        return -1;
    memcpy (box->type, p + at + 4, 4);
    box->body = at + header;
    box->end = at + (size_t) length;
    return 0;
}

//  Finds the first child box of `type` in [at, end). Returns 0 or -1 when
//  there is none or the children do not parse.
static int
s_box_find (const uint8_t *p, size_t at, size_t end, const char *type, s_box_t *box)
{
    while (at < end) {
        if (s_box (p, at, end, box) != 0)
            return -1;
        if (memcmp (box->type, type, 4) == 0)
            return 0;
        at = box->end;
    }
    return -1;
}

static bool
s_avif_brand (const uint8_t *p, const s_box_t *ftyp)
{
    if (ftyp->end - ftyp->body < 8)
        return false;
    for (size_t at = ftyp->body; ftyp->end - at >= 4; at += at == ftyp->body ? 8 : 4)
        if (memcmp (p + at, "avif", 4) == 0 || memcmp (p + at, "avis", 4) == 0)
            return true;
    return false;
}

//  The ipco indices (1-based) associated with `item` in the ipma box at
//  [body, end). Returns how many were stored in `props`, or -1.
static int
s_avif_ipma (const uint8_t *p, size_t body, size_t end, uint32_t item,
             uint32_t props [S_AVIF_PROPS_MAX])
{
    s_reader_t r = { p, body, end, false };
    uint32_t version = s_read (&r, 1);
    uint32_t flags = s_read (&r, 3);
    uint32_t entries = s_read (&r, 4);
    int count = 0;
    for (uint32_t e = 0; e < entries && !r.short_read; e++) {
        uint32_t id = s_read (&r, version < 1 ? 2 : 4);
        uint32_t associations = s_read (&r, 1);
        for (uint32_t a = 0; a < associations && !r.short_read; a++) {
            uint32_t index = (flags & 1) ? s_read (&r, 2) & 0x7fff : s_read (&r, 1) & 0x7f;
            if (id == item && index > 0 && count < S_AVIF_PROPS_MAX)
                props [count++] = index;
        }
    }
    return r.short_read ? -1 : count;
}

static int
s_avif_meta (const uint8_t *p, const s_box_t *meta, uint32_t *w, uint32_t *h,
             const char **reason)
{
    size_t children = meta->body + 4;       //  full box: version and flags
    if (children > meta->end)
        return s_fail (reason, "avif: meta box too short");
    s_box_t pitm, iprp, ipco, ipma;
    if (s_box_find (p, children, meta->end, "pitm", &pitm) != 0)
        return s_fail (reason, "avif: no primary item (pitm)");
    s_reader_t r = { p, pitm.body, pitm.end, false };
    uint32_t version = s_read (&r, 1);
    s_read (&r, 3);                         //  flags
    uint32_t item = s_read (&r, version == 0 ? 2 : 4);
    if (r.short_read)
        return s_fail (reason, "avif: pitm box too short");
    if (s_box_find (p, children, meta->end, "iprp", &iprp) != 0
        || s_box_find (p, iprp.body, iprp.end, "ipco", &ipco) != 0
        || s_box_find (p, iprp.body, iprp.end, "ipma", &ipma) != 0)
        return s_fail (reason, "avif: no item properties (iprp/ipco/ipma)");
    uint32_t props [S_AVIF_PROPS_MAX];
    int count = s_avif_ipma (p, ipma.body, ipma.end, item, props);
    if (count < 0)
        return s_fail (reason, "avif: ipma box too short");

    bool ispe = false, swap = false;
    uint32_t index = 0;
    s_box_t prop;
    for (size_t at = ipco.body; at < ipco.end; at = prop.end) {
        if (s_box (p, at, ipco.end, &prop) != 0)
            return s_fail (reason, "avif: ipco property runs past its box");
        index++;
        bool mine = false;
        for (int i = 0; i < count; i++)
            mine = mine || props [i] == index;
        if (!mine)
            continue;
        r = (s_reader_t) { p, prop.body, prop.end, false };
        if (memcmp (prop.type, "ispe", 4) == 0) {
            s_read (&r, 4);                 //  version and flags
            *w = s_read (&r, 4);
            *h = s_read (&r, 4);
            ispe = true;
        }
        else
        if (memcmp (prop.type, "irot", 4) == 0)
            swap = (s_read (&r, 1) & 1) != 0;
        if (r.short_read)
            return s_fail (reason, "avif: property box too short");
    }
    if (!ispe)
        return s_fail (reason, "avif: primary item has no ispe property");
    if (swap) {
        uint32_t t = *w;
        *w = *h;
        *h = t;
    }
    return 0;
}

static int
s_avif (const uint8_t *p, size_t size, uint32_t *w, uint32_t *h, const char **reason)
{
    s_box_t box, meta = { { 0 }, 0, 0 };
    if (s_box (p, 0, size, &box) != 0 || memcmp (box.type, "ftyp", 4) != 0)
        return s_fail (reason, "avif: no ftyp box");
    if (!s_avif_brand (p, &box))
        return s_fail (reason, "avif: ftyp has no avif/avis brand");
    bool have_meta = false, have_mdat = false;
    for (size_t at = box.end; at < size; at = box.end) {
        if (s_box (p, at, size, &box) != 0)
            return s_fail (reason, "avif: box runs past the end (truncated?)");
        if (memcmp (box.type, "meta", 4) == 0 && !have_meta) {
            meta = box;
            have_meta = true;
        }
        else
        if (memcmp (box.type, "mdat", 4) == 0)
            have_mdat = true;
    }
    if (!have_meta)
        return s_fail (reason, "avif: no meta box");
    if (!have_mdat)
        return s_fail (reason, "avif: no mdat box (truncated?)");
    return s_avif_meta (p, &meta, w, h, reason);
}

//  --------------------------------------------------------------------------

int
imgp_magic_read (const void *data, size_t size, imgp_format_t format, int *width,
                 int *height, const char **reason)
{
    assert (width && height);
    if (!data || size == 0)
        return s_fail (reason, "empty");
    const uint8_t *p = data;
    uint32_t w = 0, h = 0;
    int rc;
    switch (format) {
        case IMGP_FORMAT_PNG: rc = s_png (p, size, &w, &h, reason); break;
        case IMGP_FORMAT_JPEG: rc = s_jpeg (p, size, &w, &h, reason); break;
        case IMGP_FORMAT_WEBP: rc = s_webp (p, size, &w, &h, reason); break;
        case IMGP_FORMAT_AVIF: rc = s_avif (p, size, &w, &h, reason); break;
        default: return s_fail (reason, "unknown format");
    }
    if (rc != 0)
        return -1;
    return s_dimensions (w, h, width, height, reason);
}

int
imgp_magic_check (const void *data, size_t size, imgp_format_t format, int width, int height,
                  const char **reason)
{
    int w, h;
    if (imgp_magic_read (data, size, format, &w, &h, reason) != 0)
        return -1;
    if (w != width || h != height)
        return s_fail (reason, "header dimensions differ from the result's width/height");
    return 0;
}

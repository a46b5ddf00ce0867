/*  test_magic — criterion suite for proto/imgp_magic: the check the broker
    runs on every thumbnail a resizer sends before storing it.

    Why real images: a false refusal makes the broker re-queue a good job,
    so every encoder setting the resizer can reach (the four formats, odd
    sizes, alpha, gray, 16-bit, palette, interlaced, lossless WebP) is made
    here with libvips, as the resizer makes it, and must pass. Then every
    way the bytes can lie must fail with a reason: each prefix of each
    image (a cut result), another format, other dimensions, an HTML page,
    bytes after the end, random bytes, hand-made hostile headers. Buffers
    are exact-size heap copies, so the ASan build sees any read past the
    end; the byte-flip sweep exists for that build.
*/
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "imgp_magic.h"

//  One encoded test image.
typedef struct {
    void *data;             //  encoded bytes, g_malloc'd by libvips
    size_t size;            //  their length
    int width;              //  pixel size it was made with
    int height;
    imgp_format_t format;   //  its container
    const char *name;       //  for failure messages
} s_image_t;

static void
s_setup (void)
{
    cr_assert_eq (VIPS_INIT ("test_magic"), 0, "vips_init: %s", vips_error_buffer ());
}

TestSuite (magic_real, .init = s_setup);
TestSuite (magic_refuse, .init = s_setup);
TestSuite (magic_hostile, .init = s_setup);

//  --------------------------------------------------------------------------
//  Helpers

//  A noise image of w x h with `bands` 8-bit bands (1 gray, 2 gray+alpha,
//  3 sRGB, 4 sRGB+alpha). Noise so the encoders write real entropy data.
static VipsImage *
s_pixels (int w, int h, int bands)
{
    VipsImage *noise = NULL, *joined = NULL, *out = NULL;
    cr_assert_eq (vips_gaussnoise (&noise, w, h, "mean", 128.0, "sigma", 40.0, NULL), 0);
    VipsImage *copies [4] = { noise, noise, noise, noise };
    cr_assert_eq (vips_bandjoin (copies, &joined, bands, NULL), 0);
    VipsInterpretation kind = bands < 3 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
    VipsImage *cast = NULL;
    cr_assert_eq (vips_cast_uchar (joined, &cast, NULL), 0);
    cr_assert_eq (vips_copy (cast, &out, "interpretation", kind, NULL), 0);
    g_object_unref (noise);
    g_object_unref (joined);
    g_object_unref (cast);
    return out;
}

//  Encode `image` as `format` with libvips' saver; extra is a saver option
//  pair or NULL ("lossless", "interlace", "palette", "bitdepth").
static s_image_t
s_encode (VipsImage *image, imgp_format_t format, const char *extra, int value, const char *name)
{
    s_image_t result = { NULL, 0, vips_image_get_width (image), vips_image_get_height (image),
                         format, name };
    int rc = -1;
    switch (format) {
        case IMGP_FORMAT_PNG:
            rc = vips_pngsave_buffer (image, &result.data, &result.size, "strip", TRUE, extra,
                                      value, NULL);
            break;
        case IMGP_FORMAT_JPEG:
            rc = vips_jpegsave_buffer (image, &result.data, &result.size, "strip", TRUE, extra,
                                       value, NULL);
            break;
        case IMGP_FORMAT_WEBP:
            rc = vips_webpsave_buffer (image, &result.data, &result.size, "strip", TRUE, extra,
                                       value, NULL);
            break;
        case IMGP_FORMAT_AVIF:
            //  as the resizer saves it (resizer/imgp_thumb.c), minimum effort
            rc = vips_heifsave_buffer (image, &result.data, &result.size, "strip", TRUE,
                                       "bitdepth", 8, "effort", 0, "compression",
                                       VIPS_FOREIGN_HEIF_COMPRESSION_AV1, extra, value, NULL);
            break;
        case IMGP_FORMAT_AUTO:      //  never a file's format
            break;
    }
    cr_assert_eq (rc, 0, "%s: save failed: %s", name, vips_error_buffer ());
    return result;
}

static s_image_t
s_make (imgp_format_t format, int w, int h, int bands, const char *extra, int value,
        const char *name)
{
    VipsImage *image = s_pixels (w, h, bands);
    s_image_t result = s_encode (image, format, extra, value, name);
    g_object_unref (image);
    return result;
}

//  An exact-size heap copy of the first `size` bytes, so ASan catches a
//  read past the end (NULL for 0 bytes).
static uint8_t *
s_copy (const void *data, size_t size)
{
    if (size == 0)
        return NULL;
    uint8_t *copy = malloc (size);
    cr_assert_not_null (copy);
    memcpy (copy, data, size);
    return copy;
}

//  Check as `format` with `w` x `h`; returns the result, and the reason
//  must be set exactly when it fails.
static int
s_check (const void *data, size_t size, imgp_format_t format, int w, int h)
{
    uint8_t *copy = s_copy (data, size);
    const char *reason = NULL;
    int rc = imgp_magic_check (copy, size, format, w, h, &reason);
    if (rc != 0)
        cr_assert (reason && *reason, "a refusal without a reason");
    free (copy);
    return rc;
}

static void
s_expect_good (const s_image_t *image)
{
    const char *reason = NULL;
    int w = 0, h = 0;
    uint8_t *copy = s_copy (image->data, image->size);
    int rc = imgp_magic_read (copy, image->size, image->format, &w, &h, &reason);
    free (copy);
    cr_assert_eq (rc, 0, "%s (%zu bytes): refused: %s", image->name, image->size,
                  reason ? reason : "(no reason)");
    cr_assert (w == image->width && h == image->height, "%s: read %dx%d, made %dx%d",
               image->name, w, h, image->width, image->height);
    cr_assert_eq (s_check (image->data, image->size, image->format, image->width,
                           image->height), 0, "%s: check refused", image->name);
}

//  Every refusal that follows from the one good image: other dimensions,
//  other formats, every prefix, bytes after the end.
static void
s_expect_refusals (const s_image_t *image)
{
    const uint8_t *p = image->data;
    imgp_format_t f = image->format;
    int w = image->width, h = image->height;
    cr_assert_neq (s_check (p, image->size, f, w + 1, h), 0, "%s: wider passed", image->name);
    cr_assert_neq (s_check (p, image->size, f, w, h + 1), 0, "%s: taller passed", image->name);
    if (w != h)
        cr_assert_neq (s_check (p, image->size, f, h, w), 0, "%s: swapped", image->name);
    cr_assert_neq (s_check (p, image->size, f, 0, 0), 0, "%s: 0x0 passed", image->name);
    cr_assert_neq (s_check (p, image->size, f, -w, -h), 0, "%s: negative", image->name);
    for (int other = IMGP_FORMAT_PNG; other <= IMGP_FORMAT_AVIF; other++)
        if (other != (int) f)
            cr_assert_neq (s_check (p, image->size, (imgp_format_t) other, w, h), 0,
                           "%s: passed as %s", image->name,
                           imgp_format_name ((imgp_format_t) other));
    for (size_t cut = 0; cut < image->size; cut++)
        cr_assert_neq (s_check (p, cut, f, w, h), 0, "%s: prefix of %zu of %zu bytes passed",
                       image->name, cut, image->size);

    static const char tail [] = "<html><script>alert(1)</script></html>";
    uint8_t *longer = malloc (image->size + sizeof tail);
    cr_assert_not_null (longer);
    memcpy (longer, p, image->size);
    memcpy (longer + image->size, tail, sizeof tail);
    cr_assert_neq (s_check (longer, image->size + sizeof tail, f, w, h), 0,
                   "%s: passed with HTML after the end", image->name);
    free (longer);
}

static void
s_free (s_image_t *image)
{
    g_free (image->data);
    image->data = NULL;
}

//  Encoder settings beyond plain 8-bit RGB that a thumbnail can come out
//  with (alpha kept, gray kept, 16-bit PNG from a 16-bit original...).
typedef struct {
    imgp_format_t format;   //  container
    int bands;              //  1 gray, 2 gray+alpha, 3 sRGB, 4 sRGB+alpha
    const char *extra;      //  saver option name, or NULL
    int value;              //  its value
    const char *name;       //  for failure messages
    bool deep;              //  16 bits a sample (a 16-bit original kept in PNG)
} s_variant_t;

static const s_variant_t s_variants [] = {
    { IMGP_FORMAT_PNG, 4, NULL, 0, "png rgba", false },
    { IMGP_FORMAT_PNG, 1, NULL, 0, "png gray", false },
    { IMGP_FORMAT_PNG, 2, NULL, 0, "png gray+alpha", false },
    { IMGP_FORMAT_PNG, 3, "palette", TRUE, "png palette", false },
    { IMGP_FORMAT_PNG, 3, "interlace", TRUE, "png interlaced", false },
    { IMGP_FORMAT_PNG, 3, NULL, 0, "png 16-bit", true },
    { IMGP_FORMAT_JPEG, 1, NULL, 0, "jpeg gray", false },
    { IMGP_FORMAT_JPEG, 3, "interlace", TRUE, "jpeg progressive", false },
    { IMGP_FORMAT_JPEG, 3, "Q", 1, "jpeg Q1", false },
    { IMGP_FORMAT_WEBP, 3, NULL, 0, "webp lossy (VP8)", false },
    { IMGP_FORMAT_WEBP, 3, "lossless", TRUE, "webp lossless (VP8L)", false },
    { IMGP_FORMAT_WEBP, 4, NULL, 0, "webp lossy alpha (VP8X)", false },
    { IMGP_FORMAT_WEBP, 4, "lossless", TRUE, "webp lossless alpha", false },
    { IMGP_FORMAT_AVIF, 4, NULL, 0, "avif alpha", false },
    { IMGP_FORMAT_AVIF, 1, NULL, 0, "avif gray", false },
    { IMGP_FORMAT_AVIF, 3, "lossless", TRUE, "avif lossless", false },
};
#define S_VARIANTS (sizeof s_variants / sizeof s_variants [0])

static s_image_t
s_make_variant (const s_variant_t *v, int w, int h)
{
    VipsImage *image = s_pixels (w, h, v->bands);
    if (v->deep) {
        VipsImage *deep = NULL;
        cr_assert_eq (vips_colourspace (image, &deep, VIPS_INTERPRETATION_RGB16, NULL), 0);
        g_object_unref (image);
        image = deep;
    }
    s_image_t result = s_encode (image, v->format, v->extra, v->value, v->name);
    g_object_unref (image);
    return result;
}

//  Sizes thumbnails take: odd, one pixel thin, and past 255 (a second
//  byte in every header field).
static const int s_sizes [][2] = { { 100, 63 }, { 1, 100 }, { 100, 1 }, { 1, 1 },
                                   { 257, 129 }, { 63, 100 } };

//  --------------------------------------------------------------------------
//  Real libvips output passes, with the dimensions it was made with

Test (magic_real, every_format_odd_sizes)
{
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++)
        for (size_t i = 0; i < sizeof s_sizes / sizeof s_sizes [0]; i++) {
            s_image_t image = s_make ((imgp_format_t) f, s_sizes [i][0], s_sizes [i][1], 3,
                                      NULL, 0, imgp_format_name ((imgp_format_t) f));
            s_expect_good (&image);
            s_free (&image);
        }
}

Test (magic_real, variants)
{
    for (size_t i = 0; i < S_VARIANTS; i++) {
        s_image_t image = s_make_variant (&s_variants [i], 100, 63);
        if (s_variants [i].deep)        //  byte 24 is IHDR's bit depth
            cr_assert_eq (((uint8_t *) image.data) [24], 16, "not a 16-bit PNG");
        s_expect_good (&image);
        s_free (&image);
    }
}

//  A real photo-like size, the largest box the protocol allows on one side.
Test (magic_real, large)
{
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++) {
        s_image_t image = s_make ((imgp_format_t) f, 1600, 1067, 3, NULL, 0,
                                  imgp_format_name ((imgp_format_t) f));
        s_expect_good (&image);
        s_free (&image);
    }
}

//  --------------------------------------------------------------------------
//  What follows from a good image must fail

Test (magic_refuse, derived_from_real_images)
{
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++) {
        s_image_t image = s_make ((imgp_format_t) f, 100, 63, 3, NULL, 0,
                                  imgp_format_name ((imgp_format_t) f));
        s_expect_refusals (&image);
        s_free (&image);
    }
    s_image_t vp8x = s_make (IMGP_FORMAT_WEBP, 31, 17, 4, NULL, 0, "webp vp8x");
    s_expect_refusals (&vp8x);
    s_free (&vp8x);
    s_image_t vp8l = s_make (IMGP_FORMAT_WEBP, 31, 17, 3, "lossless", TRUE, "webp vp8l");
    s_expect_refusals (&vp8l);
    s_free (&vp8l);
}

Test (magic_refuse, empty)
{
    const char *reason = NULL;
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++) {
        cr_assert_eq (imgp_magic_check (NULL, 0, (imgp_format_t) f, 1, 1, &reason), -1);
        cr_assert_str_eq (reason, "empty");
        cr_assert_eq (imgp_magic_check ("", 0, (imgp_format_t) f, 1, 1, NULL), -1);
    }
}

Test (magic_refuse, html_payload)
{
    static const char page [] = "<!DOCTYPE html><html><body><script>fetch('/steal?c='+document."
                                "cookie)</script></body></html>\n";
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++)
        cr_assert_neq (s_check (page, sizeof page - 1, (imgp_format_t) f, 100, 100), 0);
}

//  An HTML page behind a real signature: the header must parse too.
Test (magic_refuse, html_behind_magic)
{
    static const char *heads [] = { "\x89PNG\r\n\x1a\n", "\xff\xd8\xff\xe0",
                                    "RIFF\x40\0\0\0WEBPVP8 ", "\0\0\0\x18" "ftypavif" };
    static const char page [] = "<html><script>alert(1)</script></html>";
    for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++) {
        uint8_t buffer [128] = { 0 };
        size_t head = f == IMGP_FORMAT_AVIF ? 12 : strlen (heads [f]);
        memcpy (buffer, heads [f], head);
        memcpy (buffer + head, page, sizeof page);
        cr_assert_neq (s_check (buffer, head + sizeof page, (imgp_format_t) f, 1, 1), 0,
                       "%s", imgp_format_name ((imgp_format_t) f));
    }
}

Test (magic_refuse, random_bytes)
{
    uint32_t state = 12345;
    uint8_t buffer [4096];
    for (int round = 0; round < 2000; round++) {
        size_t size = 1 + round % sizeof buffer;
        for (size_t i = 0; i < size; i++) {
            state = state * 1103515245u + 12345u;
            buffer [i] = (uint8_t) (state >> 16);
        }
        for (int f = IMGP_FORMAT_PNG; f <= IMGP_FORMAT_AVIF; f++)
            cr_assert_neq (s_check (buffer, size, (imgp_format_t) f, 100, 63), 0);
    }
}

Test (magic_refuse, unknown_format)
{
    s_image_t image = s_make (IMGP_FORMAT_PNG, 10, 10, 3, NULL, 0, "png");
    const char *reason = NULL;
    cr_assert_eq (imgp_magic_check (image.data, image.size, (imgp_format_t) 99, 10, 10, &reason),
                  -1);
    cr_assert_str_eq (reason, "unknown format");
    s_free (&image);
}

//  --------------------------------------------------------------------------
//  Hand-made hostile headers: lengths that point past the end or wrap

static void
s_put_be32 (uint8_t *p, uint32_t value)
{
    p [0] = (uint8_t) (value >> 24);
    p [1] = (uint8_t) (value >> 16);
    p [2] = (uint8_t) (value >> 8);
    p [3] = (uint8_t) value;
}

Test (magic_hostile, png_chunk_lengths)
{
    s_image_t image = s_make (IMGP_FORMAT_PNG, 20, 10, 3, NULL, 0, "png");
    uint8_t *p = s_copy (image.data, image.size);
    static const uint32_t lengths [] = { 0xffffffffu, 0x7fffffffu, 0x80000000u, 12, 14 };
    for (size_t i = 0; i < sizeof lengths / sizeof lengths [0]; i++) {
        s_put_be32 (p + 8, lengths [i]);        //  IHDR's length
        cr_assert_neq (s_check (p, image.size, IMGP_FORMAT_PNG, 20, 10), 0);
        memcpy (p, image.data, image.size);
        s_put_be32 (p + 33, lengths [i]);       //  the chunk after IHDR
        cr_assert_neq (s_check (p, image.size, IMGP_FORMAT_PNG, 20, 10), 0);
        memcpy (p, image.data, image.size);
    }
    free (p);
    s_free (&image);
}

Test (magic_hostile, jpeg_segments)
{
    //  SOI, then an APP0 whose length is 0, 1, or past the end.
    static const uint32_t lengths [] = { 0, 1, 0xffff, 20 };
    for (size_t i = 0; i < sizeof lengths / sizeof lengths [0]; i++) {
        uint8_t bytes [] = { 0xff, 0xd8, 0xff, 0xe0, (uint8_t) (lengths [i] >> 8),
                             (uint8_t) lengths [i], 'J', 'F', 'I', 'F', 0, 0xff, 0xd9 };
        cr_assert_neq (s_check (bytes, sizeof bytes, IMGP_FORMAT_JPEG, 1, 1), 0);
    }
    //  all fill bytes; SOF with a component count that disagrees
    uint8_t fill [64];
    memset (fill, 0xff, sizeof fill);
    fill [1] = 0xd8;
    cr_assert_neq (s_check (fill, sizeof fill, IMGP_FORMAT_JPEG, 1, 1), 0);
    uint8_t sof [] = { 0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0, 1, 0, 1, 3, 1, 0x11, 0,
                       0xff, 0xda, 0, 2, 0xff, 0xd9 };
    cr_assert_neq (s_check (sof, sizeof sof, IMGP_FORMAT_JPEG, 1, 1), 0);
    sof [5] = 17;                               //  right length: parses
    cr_assert_neq (s_check (sof, sizeof sof, IMGP_FORMAT_JPEG, 1, 1), 0, "SOF past the end");
}

//  A minimal JPEG skeleton (SOI, SOF0 1x1 gray, SOS, EOI) passes: the
//  parser itself, not libjpeg's habits, is what is checked.
Test (magic_hostile, jpeg_skeleton)
{
    uint8_t bytes [] = { 0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0, 2, 0, 3, 1, 1, 0x11, 0,
                         0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0x34, 0xff, 0xd9 };
    cr_assert_eq (s_check (bytes, sizeof bytes, IMGP_FORMAT_JPEG, 3, 2), 0);
    cr_assert_neq (s_check (bytes, sizeof bytes, IMGP_FORMAT_JPEG, 2, 3), 0);
    bytes [8] = 0;                              //  height 0: defined later by DNL
    cr_assert_neq (s_check (bytes, sizeof bytes, IMGP_FORMAT_JPEG, 3, 0), 0);
}

Test (magic_hostile, webp_sizes)
{
    s_image_t image = s_make (IMGP_FORMAT_WEBP, 20, 10, 4, NULL, 0, "webp vp8x");
    uint8_t *p = s_copy (image.data, image.size);
    static const uint32_t values [] = { 0xffffffffu, 0xfffffffeu, 0x7fffffffu, 3, 0 };
    for (size_t i = 0; i < sizeof values / sizeof values [0]; i++) {
        for (size_t at = 4; at < 40 && at + 4 <= image.size; at += 4) {
            memcpy (p, image.data, image.size);
            p [at] = (uint8_t) values [i];      //  little-endian fields
            p [at + 1] = (uint8_t) (values [i] >> 8);
            p [at + 2] = (uint8_t) (values [i] >> 16);
            p [at + 3] = (uint8_t) (values [i] >> 24);
            s_check (p, image.size, IMGP_FORMAT_WEBP, 20, 10);   //  must not crash
        }
    }
    free (p);
    s_free (&image);
}

//  A growing buffer of ISO-BMFF boxes for the hand-made AVIF files.
typedef struct {
    uint8_t bytes [512];    //  the file so far
    size_t size;            //  bytes used
} s_bmff_t;

static size_t
s_bmff_open (s_bmff_t *self, const char *type)
{
    size_t start = self->size;
    memcpy (self->bytes + start + 4, type, 4);
    self->size += 8;
    return start;
}

static void
s_bmff_put (s_bmff_t *self, const void *data, size_t size)
{
    memcpy (self->bytes + self->size, data, size);
    self->size += size;
}

static void
s_bmff_close (s_bmff_t *self, size_t start)
{
    s_put_be32 (self->bytes + start, (uint32_t) (self->size - start));
}

//  ISO-BMFF boxes: a well-formed hand-made file passes, then 64-bit sizes,
//  size 0 ("to the end"), sizes below the header, an ipma that claims
//  2^32-1 entries, a missing pitm and a property index past ipco fail.
Test (magic_hostile, avif_boxes)
{
    s_bmff_t f = { { 0 }, 0 };
    size_t box = s_bmff_open (&f, "ftyp");
    s_bmff_put (&f, "avif\0\0\0\0mif1", 12);
    s_bmff_close (&f, box);
    size_t meta = s_bmff_open (&f, "meta");
    s_bmff_put (&f, "\0\0\0\0", 4);
    box = s_bmff_open (&f, "pitm");
    size_t pitm = box;
    s_bmff_put (&f, "\0\0\0\0\0\1", 6);         //  version 0, item 1
    s_bmff_close (&f, box);
    size_t iprp = s_bmff_open (&f, "iprp");
    size_t ipco = s_bmff_open (&f, "ipco");
    box = s_bmff_open (&f, "ispe");
    s_bmff_put (&f, "\0\0\0\0\0\0\0\5\0\0\0\7", 12);
    s_bmff_close (&f, box);
    s_bmff_close (&f, ipco);
    box = s_bmff_open (&f, "ipma");
    size_t entries = f.size + 4;
    s_bmff_put (&f, "\0\0\0\0\0\0\0\1\0\1\1\x81", 12);  //  item 1: property 1
    size_t association = f.size - 1;
    s_bmff_close (&f, box);
    s_bmff_close (&f, iprp);
    s_bmff_close (&f, meta);
    size_t mdat = s_bmff_open (&f, "mdat");
    s_bmff_put (&f, "xy", 2);
    s_bmff_close (&f, mdat);
    uint8_t *p = f.bytes;

    cr_assert_eq (s_check (p, f.size, IMGP_FORMAT_AVIF, 5, 7), 0, "hand-made avif refused");
    cr_assert_neq (s_check (p, f.size, IMGP_FORMAT_AVIF, 7, 5), 0);
    cr_assert_neq (s_check (p, f.size - 10, IMGP_FORMAT_AVIF, 5, 7), 0, "no mdat passed");

    s_put_be32 (p + entries, 0xffffffffu);      //  entries past the box
    cr_assert_neq (s_check (p, f.size, IMGP_FORMAT_AVIF, 5, 7), 0);
    s_put_be32 (p + entries, 1);
    p [association] = 0x82;                     //  property 2: not there
    cr_assert_neq (s_check (p, f.size, IMGP_FORMAT_AVIF, 5, 7), 0);
    p [association] = 0x81;
    memcpy (p + pitm + 4, "pitx", 4);           //  no primary item
    cr_assert_neq (s_check (p, f.size, IMGP_FORMAT_AVIF, 5, 7), 0);
    memcpy (p + pitm + 4, "pitm", 4);
    cr_assert_eq (s_check (p, f.size, IMGP_FORMAT_AVIF, 5, 7), 0);

    static const uint32_t sizes [] = { 1, 0, 7, 0xffffffffu };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes [0]; i++) {
        s_bmff_t g = f;
        s_put_be32 (g.bytes + meta, sizes [i]);
        if (sizes [i] == 1) {                   //  a 64-bit size past the end
            s_put_be32 (g.bytes + meta + 8, 0xffffffffu);
            s_put_be32 (g.bytes + meta + 12, 0xffffffffu);
        }
        cr_assert_neq (s_check (g.bytes, g.size, IMGP_FORMAT_AVIF, 5, 7), 0,
                       "meta size %u passed", sizes [i]);
    }
}

//  Every byte of each image's headers replaced by 0x00, 0xff and a bit
//  flip: whatever the answer, no read outside the buffer (the ASan build).
Test (magic_hostile, byte_flips)
{
    for (size_t i = 0; i < S_VARIANTS; i++) {
        s_image_t image = s_make_variant (&s_variants [i], 20, 10);
        size_t span = image.size < 600 ? image.size : 600;
        uint8_t *p = s_copy (image.data, image.size);
        for (size_t at = 0; at < span; at++)
            for (int how = 0; how < 3; how++) {
                uint8_t was = p [at];
                p [at] = how == 0 ? 0 : how == 1 ? 0xff : was ^ 0x80;
                int w, h;
                imgp_magic_read (p, image.size, image.format, &w, &h, NULL);
                p [at] = was;
            }
        free (p);
        s_free (&image);
    }
}

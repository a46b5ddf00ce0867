/*  test_resizer — criterion suites for resizer/: imgp_thumb (libvips
    thumbnails and every refusal) and imgp_resizer (the worker loop over
    real sockets against a fake broker).

    Fixtures are made at runtime with libvips, small and deterministic, so
    the suite passes on a fresh machine. When the shared corpus exists
    (IMGP_CORPUS, else ../shared/corpus from the repo root, where
    tests/run.sh runs us) every MANIFEST.tsv line is checked too: `ok`
    files give a thumbnail inside 100x100 that keeps the aspect within a
    pixel, `reject` files fail with the code their kind calls for.
*/
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include "imgp_curve.h"
#include "imgp_id.h"
#include "imgp_log.h"
#include "imgp_magic.h"
#include "imgp_msg.h"
#include "imgp_resizer.h"
#include "imgp_thumb.h"

#define DEFAULT_MAX_PIXELS 100000000
#define DEFAULT_TIME_LIMIT_MS 30000 //  the resizer's default, so every test runs the watch
#define RECV_TIMEOUT_MS 5000        //  a hang fails the test instead of blocking it

//  --------------------------------------------------------------------------
//  Helpers

//  Bytes owned by g_malloc, as libvips and GLib hand them out.
typedef struct {
    void *data;                     //  g_malloc'd bytes
    size_t size;                    //  length of data
} bytes_t;

static void
bytes_free (bytes_t *bytes)
{
    g_free (bytes->data);
    bytes->data = NULL;
    bytes->size = 0;
}

static void
s_init_limits (int64_t max_pixels, const char *allow, int time_limit_ms)
{
    imgp_log_init ("test_resizer", false);
    imgp_thumb_config_t config = { .max_pixels = max_pixels, .allow_loaders = allow,
                                   .vips_threads = 1, .time_limit_ms = time_limit_ms };
    cr_assert_eq (imgp_thumb_init (&config), 0);
}

static void
s_init_with (int64_t max_pixels, const char *allow)
{
    s_init_limits (max_pixels, allow, DEFAULT_TIME_LIMIT_MS);
}

static void
s_init (void)
{
    s_init_with (DEFAULT_MAX_PIXELS, NULL);
}

//  A w x h noise image with `bands` bands (1 grey, 3 RGB, 4 RGBA with the
//  given alpha), deterministic enough for sizes and codes.
static VipsImage *
s_image (int w, int h, int bands, int alpha)
{
    VipsImage *noise [3] = { NULL, NULL, NULL };
    int colour = bands >= 3 ? 3 : 1;
    for (int i = 0; i < colour; i++)
        cr_assert_eq (vips_gaussnoise (&noise [i], w, h, "mean", 128.0, "sigma", 40.0,
                                       "seed", 42 + i, NULL), 0);
    VipsImage *joined = NULL, *rgba = NULL, *cast = NULL, *out = NULL;
    cr_assert_eq (vips_bandjoin (noise, &joined, colour, NULL), 0);
    if (bands == 4)
        cr_assert_eq (vips_bandjoin_const1 (joined, &rgba, alpha, NULL), 0);
    else {
        rgba = joined;
        g_object_ref (rgba);
    }
    cr_assert_eq (vips_cast_uchar (rgba, &cast, NULL), 0);
    VipsInterpretation interp = bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
    cr_assert_eq (vips_copy (cast, &out, "interpretation", interp, NULL), 0);
    for (int i = 0; i < colour; i++)
        g_object_unref (noise [i]);
    g_object_unref (joined);
    g_object_unref (rgba);
    g_object_unref (cast);
    return out;
}

//  Encode `image` by file suffix (".png", ".jpg[Q=90]"...). Consumes image.
static bytes_t
s_encode (VipsImage *image, const char *suffix)
{
    bytes_t bytes = { NULL, 0 };
    cr_assert_eq (vips_image_write_to_buffer (image, suffix, &bytes.data, &bytes.size, NULL), 0,
                  "cannot write fixture %s: %s", suffix, vips_error_buffer ());
    g_object_unref (image);
    return bytes;
}

static bytes_t
s_fixture (int w, int h, int bands, const char *suffix)
{
    return s_encode (s_image (w, h, bands, 255), suffix);
}

static imgp_opts_t
s_opts (int w, int h, imgp_fit_t fit, imgp_format_t format)
{
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    opts.width = w;
    opts.height = h;
    opts.fit = fit;
    opts.format = format;
    return opts;
}

//  Thumbnail that must succeed; returns the result (clear it).
static imgp_thumb_result_t
s_thumb_ok (bytes_t in, const imgp_opts_t *opts)
{
    imgp_thumb_result_t result = { 0 };
    int rc = imgp_thumb_make (in.data, in.size, opts, &result);
    cr_assert_eq (rc, 0, "thumbnail failed: %s: %s", imgp_thumb_code_name (result.code),
                  result.message);
    cr_assert (result.data && result.size > 0);
    cr_assert_eq (result.code, IMGP_THUMB_OK);
    return result;
}

//  Thumbnail that must fail with `code`.
static void
s_thumb_fails (const void *data, size_t size, imgp_thumb_code_t code, const char *message_part)
{
    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = { 0 };
    int rc = imgp_thumb_make (data, size, &opts, &result);
    cr_assert_eq (rc, -1);
    cr_assert_null (result.data);
    cr_assert_eq (result.code, code, "code %s, wanted %s (%s)", imgp_thumb_code_name (result.code),
                  imgp_thumb_code_name (code), result.message);
    cr_assert (strlen (result.message) > 0);
    if (message_part)
        cr_assert (strstr (result.message, message_part), "message '%s' lacks '%s'",
                   result.message, message_part);
    cr_assert_str_empty (vips_error_buffer (), "libvips error buffer left: %s",
                         vips_error_buffer ());
    imgp_thumb_result_clear (&result);
}

//  Decode thumbnail bytes back (the caller unrefs).
static VipsImage *
s_decode (const void *data, size_t size)
{
    VipsImage *image = vips_image_new_from_buffer (data, size, "", NULL);
    cr_assert_not_null (image, "thumbnail does not decode: %s", vips_error_buffer ());
    return image;
}

//  The thumbnail decodes to w x h, 8-bit sRGB with 3 or 4 bands.
static void
s_check_output (const imgp_thumb_result_t *result, int w, int h)
{
    cr_assert_eq (result->width, w, "width %d, wanted %d", result->width, w);
    cr_assert_eq (result->height, h, "height %d, wanted %d", result->height, h);
    VipsImage *image = s_decode (result->data, result->size);
    cr_assert_eq (vips_image_get_width (image), w);
    cr_assert_eq (vips_image_get_height (image), h);
    cr_assert_eq (vips_image_get_interpretation (image), VIPS_INTERPRETATION_sRGB);
    cr_assert_eq (vips_image_get_format (image), VIPS_FORMAT_UCHAR);
    int bands = vips_image_get_bands (image);
    cr_assert (bands == 3 || bands == 4, "%d bands", bands);
    g_object_unref (image);
}

//  Make, check dimensions, clear.
static void
s_expect_size (bytes_t in, imgp_opts_t opts, int w, int h)
{
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    s_check_output (&result, w, h);
    imgp_thumb_result_clear (&result);
}


//  --------------------------------------------------------------------------
//  Thumbnails of every input format and shape

Test (thumb, every_input_format, .init = s_init)
{
    const char *suffixes [] = { ".jpg", ".png", ".webp", ".gif", ".tif", ".heic", ".avif" };
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes [0]; i++) {
        const char *suffix = suffixes [i];
        bytes_t in = strcmp (suffix, ".avif") == 0
                   ? s_encode (s_image (300, 200, 3, 255), ".heif[compression=av1]")
                   : s_fixture (300, 200, 3, suffix);
        imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
        imgp_thumb_result_t result = s_thumb_ok (in, &opts);
        cr_assert_eq (result.in_width, 300, "%s", suffix);
        cr_assert_eq (result.in_height, 200, "%s", suffix);
        cr_assert_eq (result.width, 100, "%s", suffix);
        cr_assert (abs (result.height - 67) <= 1, "%s: height %d", suffix, result.height);
        s_check_output (&result, result.width, result.height);
        imgp_thumb_result_clear (&result);
        bytes_free (&in);
    }
}

Test (thumb, one_pixel_is_not_enlarged, .init = s_init)
{
    bytes_t in = s_fixture (1, 1, 3, ".png");
    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    s_expect_size (in, opts, 1, 1);
    opts.enlarge = true;
    s_expect_size (in, opts, 100, 100);
    bytes_free (&in);
}

Test (thumb, strip_keeps_a_row, .init = s_init)
{
    bytes_t in = s_fixture (8000, 10, 3, ".png");
    s_expect_size (in, s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 100, 1);
    bytes_free (&in);
}

Test (thumb, exif_orientation_6_is_applied, .init = s_init)
{
    //  Stored portrait 60x100; orientation 6 says display it rotated: landscape.
    VipsImage *image = s_image (60, 100, 3, 255);
    vips_image_set_int (image, VIPS_META_ORIENTATION, 6);
    bytes_t in = s_encode (image, ".jpg");
    VipsImage *header = s_decode (in.data, in.size);
    cr_assert_eq (vips_image_get_orientation (header), 6, "fixture lost its EXIF orientation");
    g_object_unref (header);

    s_expect_size (in, s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 100, 60);
    bytes_free (&in);
}

Test (thumb, grey_input_gives_srgb, .init = s_init)
{
    bytes_t in = s_fixture (200, 100, 1, ".png");
    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    s_check_output (&result, 100, 50);
    VipsImage *out = s_decode (result.data, result.size);
    cr_assert_eq (vips_image_get_bands (out), 3);
    g_object_unref (out);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

Test (thumb, animated_gif_gives_first_frame, .init = s_init)
{
    //  Three 90x60 frames stacked, saved as an animation.
    VipsImage *image = s_image (90, 180, 3, 255);
    vips_image_set_int (image, VIPS_META_PAGE_HEIGHT, 60);
    vips_image_set_int (image, VIPS_META_N_PAGES, 3);
    bytes_t in = s_encode (image, ".gif");
    imgp_opts_t opts = s_opts (30, 30, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    cr_assert_eq (result.in_height, 60, "pixel check must use the first page");
    s_check_output (&result, 30, 20);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

Test (thumb, rgba_to_jpeg_is_flattened_on_white, .init = s_init)
{
    VipsImage *clear = NULL, *srgb = NULL;
    cr_assert_eq (vips_black (&clear, 40, 40, "bands", 4, NULL), 0);   //  black, alpha 0
    cr_assert_eq (vips_copy (clear, &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
    g_object_unref (clear);
    bytes_t in = s_encode (srgb, ".png");

    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_JPEG);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    VipsImage *out = s_decode (result.data, result.size);
    cr_assert_eq (vips_image_get_bands (out), 3);
    double *pixel = NULL;
    int n = 0;
    cr_assert_eq (vips_getpoint (out, &pixel, &n, 20, 20, NULL), 0);
    for (int i = 0; i < n; i++)
        cr_assert_geq (pixel [i], 250.0, "band %d is %g, not white", i, pixel [i]);
    g_free (pixel);
    g_object_unref (out);
    imgp_thumb_result_clear (&result);

    //  PNG keeps the alpha.
    opts.format = IMGP_FORMAT_PNG;
    result = s_thumb_ok (in, &opts);
    out = s_decode (result.data, result.size);
    cr_assert_eq (vips_image_get_bands (out), 4);
    g_object_unref (out);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

//  Which loader reads `result` back, e.g. "VipsForeignLoadPng".
static void
s_check_encoded_as (const imgp_thumb_result_t *result, const char *loader_prefix)
{
    const char *loader = vips_foreign_find_load_buffer (result->data, result->size);
    cr_assert_not_null (loader);
    cr_assert (g_str_has_prefix (loader, loader_prefix), "%s, wanted %s", loader, loader_prefix);
}

Test (thumb, every_output_format, .init = s_init)
{
    bytes_t in = s_fixture (300, 150, 3, ".jpg");
    struct {
        imgp_format_t format;
        const char *loader;
    } cases [] = {
        { IMGP_FORMAT_PNG, "VipsForeignLoadPng" },
        { IMGP_FORMAT_JPEG, "VipsForeignLoadJpeg" },
        { IMGP_FORMAT_WEBP, "VipsForeignLoadWebp" },
        { IMGP_FORMAT_AVIF, "VipsForeignLoadHeif" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, cases [i].format);
        imgp_thumb_result_t result = s_thumb_ok (in, &opts);
        s_check_output (&result, 100, 50);
        s_check_encoded_as (&result, cases [i].loader);
        if (cases [i].format == IMGP_FORMAT_AVIF)
            cr_assert (result.size > 12 && memcmp ((char *) result.data + 8, "avif", 4) == 0,
                       "not an AVIF brand");
        imgp_thumb_result_clear (&result);
    }
    bytes_free (&in);
}

Test (thumb, quality_changes_lossy_size, .init = s_init)
{
    bytes_t in = s_fixture (300, 300, 3, ".png");
    imgp_format_t lossy [] = { IMGP_FORMAT_JPEG, IMGP_FORMAT_WEBP, IMGP_FORMAT_AVIF };
    for (size_t i = 0; i < 3; i++) {
        imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, lossy [i]);
        opts.quality = 10;
        imgp_thumb_result_t low = s_thumb_ok (in, &opts);
        opts.quality = 95;
        imgp_thumb_result_t high = s_thumb_ok (in, &opts);
        cr_assert_lt (low.size, high.size, "%s: q10 %zu bytes, q95 %zu bytes",
                      imgp_format_name (lossy [i]), low.size, high.size);
        imgp_thumb_result_clear (&low);
        imgp_thumb_result_clear (&high);
    }
    bytes_free (&in);
}

Test (thumb, metadata_is_stripped, .init = s_init)
{
    VipsImage *image = s_image (200, 100, 3, 255);
    const char xmp [] = "<x:xmpmeta xmlns:x='adobe:ns:meta/'>secret</x:xmpmeta>";
    vips_image_set_blob_copy (image, VIPS_META_XMP_NAME, xmp, sizeof xmp);
    bytes_t in = s_encode (image, ".jpg");
    imgp_format_t formats [] = { IMGP_FORMAT_PNG, IMGP_FORMAT_JPEG, IMGP_FORMAT_WEBP,
                                 IMGP_FORMAT_AVIF };
    for (size_t i = 0; i < 4; i++) {
        imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, formats [i]);
        imgp_thumb_result_t result = s_thumb_ok (in, &opts);
        cr_assert_null (memmem (result.data, result.size, "secret", 6), "%s kept the XMP",
                        imgp_format_name (formats [i]));
        VipsImage *out = s_decode (result.data, result.size);
        cr_assert_eq (vips_image_get_typeof (out, VIPS_META_XMP_NAME), 0);
        cr_assert_eq (vips_image_get_typeof (out, VIPS_META_ICC_NAME), 0,
                      "%s kept an ICC profile", imgp_format_name (formats [i]));
        g_object_unref (out);
        imgp_thumb_result_clear (&result);
    }
    bytes_free (&in);
}

//  A w x h image of one colour, `bands` values in `value`, tagged `interp`.
static VipsImage *
s_solid (int w, int h, const double *value, int bands, VipsInterpretation interp)
{
    VipsImage *black = NULL, *lit = NULL, *out = NULL;
    double ones [4] = { 1, 1, 1, 1 };
    cr_assert_eq (vips_black (&black, w, h, "bands", bands, NULL), 0);
    cr_assert_eq (vips_linear (black, &lit, ones, (double *) value, bands, "uchar", TRUE, NULL),
                  0);
    cr_assert_eq (vips_copy (lit, &out, "interpretation", interp, NULL), 0);
    g_object_unref (black);
    g_object_unref (lit);
    return out;
}

//  The thumbnail of `in` (PNG, 16x16 box) has `want` in its middle, each
//  band within `slack`.
static void
s_expect_colour (bytes_t in, const double want [3], double slack, const char *what)
{
    imgp_opts_t opts = s_opts (16, 16, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    VipsImage *out = s_decode (result.data, result.size);
    cr_assert_eq (vips_image_get_typeof (out, VIPS_META_ICC_NAME), 0, "%s: kept a profile",
                  what);
    double *pixel = NULL;
    int n = 0;
    cr_assert_eq (vips_getpoint (out, &pixel, &n, 8, 8, NULL), 0);
    cr_assert_geq (n, 3);
    for (int i = 0; i < 3; i++)
        cr_expect (pixel [i] >= want [i] - slack && pixel [i] <= want [i] + slack,
                   "%s: band %d is %g, wanted %g", what, i, pixel [i], want [i]);
    g_free (pixel);
    g_object_unref (out);
    imgp_thumb_result_clear (&result);
}

//  No profile: the pixels are sRGB already and come out as they went in
//  (a round trip through XYZ and an sRGB profile had turned white into
//  250,253,253).
Test (thumb, colours_without_a_profile_are_kept, .init = s_init)
{
    const double colours [][3] = { { 255, 255, 255 }, { 0, 255, 0 }, { 200, 100, 50 } };
    for (size_t i = 0; i < sizeof colours / sizeof colours [0]; i++) {
        bytes_t in = s_encode (s_solid (64, 64, colours [i], 3, VIPS_INTERPRETATION_sRGB),
                               ".png");
        s_expect_colour (in, colours [i], 1, "sRGB png without a profile");
        bytes_free (&in);
    }
}

//  An embedded profile is honoured: sRGB green stored as Display P3
//  pixels (about 117,251,76) with the P3 profile comes back sRGB green.
Test (thumb, embedded_profile_is_converted_to_srgb, .init = s_init)
{
    const double green [3] = { 0, 255, 0 };
    VipsImage *srgb = s_solid (64, 64, green, 3, VIPS_INTERPRETATION_sRGB);
    VipsImage *p3 = NULL;
    cr_assert_eq (vips_icc_transform (srgb, &p3, "p3", "input_profile", "srgb", NULL), 0,
                  "%s", vips_error_buffer ());
    g_object_unref (srgb);
    cr_assert (vips_image_get_typeof (p3, VIPS_META_ICC_NAME), "fixture has no profile");
    const char *suffixes [] = { ".png", ".jpg[Q=100]" };
    for (size_t i = 0; i < 2; i++) {
        g_object_ref (p3);
        bytes_t in = s_encode (p3, suffixes [i]);
        VipsImage *header = s_decode (in.data, in.size);
        double *pixel = NULL;
        int n = 0;
        cr_assert_eq (vips_getpoint (header, &pixel, &n, 8, 8, NULL), 0);
        cr_assert_gt (pixel [0], 100, "fixture red is %g: not P3 pixels", pixel [0]);
        cr_assert (vips_image_get_typeof (header, VIPS_META_ICC_NAME), "%s lost the profile",
                   suffixes [i]);
        g_free (pixel);
        g_object_unref (header);
        s_expect_colour (in, green, 6, suffixes [i]);
        bytes_free (&in);
    }
    g_object_unref (p3);
}

//  CMYK without a profile goes through libvips' own CMYK profile: paper
//  white comes out (near) white, 3-band sRGB.
Test (thumb, cmyk_without_a_profile_gives_srgb, .init = s_init)
{
    const double paper [4] = { 0, 0, 0, 0 };
    bytes_t in = s_encode (s_solid (64, 64, paper, 4, VIPS_INTERPRETATION_CMYK), ".jpg");
    VipsImage *header = s_decode (in.data, in.size);
    cr_assert_eq (vips_image_get_interpretation (header), VIPS_INTERPRETATION_CMYK);
    cr_assert_eq (vips_image_get_typeof (header, VIPS_META_ICC_NAME), 0);
    g_object_unref (header);
    const double white [3] = { 255, 255, 255 };
    s_expect_colour (in, white, 12, "CMYK jpeg without a profile");
    imgp_opts_t opts = s_opts (16, 16, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    s_check_output (&result, 16, 16);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

Test (thumb, fit_modes, .init = s_init)
{
    bytes_t in = s_fixture (200, 100, 3, ".png");
    s_expect_size (in, s_opts (50, 50, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 50, 25);
    s_expect_size (in, s_opts (50, 50, IMGP_FIT_COVER, IMGP_FORMAT_PNG), 50, 50);
    s_expect_size (in, s_opts (50, 80, IMGP_FIT_FILL, IMGP_FORMAT_PNG), 50, 80);
    s_expect_size (in, s_opts (40, 100, IMGP_FIT_COVER, IMGP_FORMAT_PNG), 40, 100);
    bytes_free (&in);
}

Test (thumb, enlarge_only_when_asked, .init = s_init)
{
    bytes_t in = s_fixture (20, 10, 3, ".png");
    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    s_expect_size (in, opts, 20, 10);
    opts.fit = IMGP_FIT_COVER;
    s_expect_size (in, opts, 20, 10);
    opts.enlarge = true;
    s_expect_size (in, opts, 100, 100);
    opts.fit = IMGP_FIT_INSIDE;
    s_expect_size (in, opts, 100, 50);
    bytes_free (&in);
}

Test (thumb, vips_warnings_carry_the_job_id, .init = s_init)
{
    char path [] = "/tmp/test_resizer_log.XXXXXX";
    int fd = mkstemp (path);
    cr_assert_geq (fd, 0);
    fflush (stderr);
    int saved = dup (2);
    dup2 (fd, 2);
    imgp_thumb_set_job ("0123456789abcdef0123456789abcdef");
    g_log ("VIPS", G_LOG_LEVEL_WARNING, "a test warning");
    imgp_thumb_set_job (NULL);
    g_log ("VIPS", G_LOG_LEVEL_WARNING, "after the job");
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);

    gchar *text = NULL;
    cr_assert (g_file_get_contents (path, &text, NULL, NULL));
    unlink (path);
    close (fd);
    cr_assert (strstr (text, "WARN job=0123456789abcdef0123456789abcdef event=vips_log "
                             "message=\"a test warning\""), "log was: %s", text);
    cr_assert (strstr (text, "job=- event=vips_log message=\"after the job\""), "log was: %s",
               text);
    g_free (text);
}


//  --dry-run: a fixed 1x1 image in the format asked for, whatever the
//  input, that the broker's magic check takes; and off again, a real run.
Test (thumb, dry_run_gives_one_pixel_in_every_format)
{
    imgp_log_init ("test_resizer", false);
    imgp_thumb_config_t config = { .max_pixels = DEFAULT_MAX_PIXELS, .vips_threads = 1,
                                   .time_limit_ms = DEFAULT_TIME_LIMIT_MS, .dry_run = true };
    cr_assert_eq (imgp_thumb_init (&config), 0);
    const char *text = "not an image at all";
    for (int format = IMGP_FORMAT_PNG; format <= IMGP_FORMAT_AVIF; format++) {
        imgp_opts_t opts = s_opts (400, 400, IMGP_FIT_INSIDE, (imgp_format_t) format);
        imgp_thumb_result_t result = { 0 };
        cr_assert_eq (imgp_thumb_make ((const uint8_t *) text, strlen (text), &opts, &result), 0);
        cr_assert_eq (result.width, 1);
        cr_assert_eq (result.height, 1);
        const char *reason = NULL;
        cr_assert_eq (imgp_magic_check (result.data, result.size, opts.format, 1, 1, &reason), 0,
                      "%s: %s", imgp_format_name (opts.format), reason);
        imgp_thumb_result_clear (&result);
    }
    config.dry_run = false;
    cr_assert_eq (imgp_thumb_init (&config), 0);
    s_thumb_fails (text, strlen (text), IMGP_THUMB_UNSUPPORTED_FORMAT, "not an image");
}


//  --------------------------------------------------------------------------
//  Refusals

Test (reject, empty, .init = s_init)
{
    s_thumb_fails ("", 0, IMGP_THUMB_UNSUPPORTED_FORMAT, "empty");
}

Test (reject, random_bytes, .init = s_init)
{
    uint8_t noise [4096];
    uint32_t state = 42;
    for (size_t i = 0; i < sizeof noise; i++) {
        state = state * 1664525u + 1013904223u;
        noise [i] = (uint8_t) (state >> 24);
    }
    s_thumb_fails (noise, sizeof noise, IMGP_THUMB_UNSUPPORTED_FORMAT, NULL);
}

Test (reject, text_and_html, .init = s_init)
{
    const char *text = "This is not an image, just some text saved as .png\n";
    s_thumb_fails (text, strlen (text), IMGP_THUMB_UNSUPPORTED_FORMAT, "not an image");
    const char *html = "<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n";
    s_thumb_fails (html, strlen (html), IMGP_THUMB_UNSUPPORTED_FORMAT, NULL);
}

Test (reject, truncated_jpeg, .init = s_init)
{
    bytes_t in = s_fixture (400, 300, 3, ".jpg");
    s_thumb_fails (in.data, in.size / 2, IMGP_THUMB_DECODE_ERROR, NULL);
    bytes_free (&in);
}

Test (reject, corrupt_png_data, .init = s_init)
{
    bytes_t in = s_fixture (300, 300, 3, ".png");
    uint8_t *idat = memmem (in.data, in.size, "IDAT", 4);
    cr_assert_not_null (idat);
    uint8_t *middle = idat + ((uint8_t *) in.data + in.size - idat) / 2;
    for (int i = 0; i < 64; i++)
        middle [i] ^= 0x5a;
    s_thumb_fails (in.data, in.size, IMGP_THUMB_DECODE_ERROR, NULL);
    bytes_free (&in);
}

static const char s_svg [] =
    "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='100'>"
    "<rect width='200' height='100' fill='red'/></svg>";

Test (reject, svg_by_default, .init = s_init)
{
    s_thumb_fails (s_svg, strlen (s_svg), IMGP_THUMB_UNSUPPORTED_FORMAT,
                   "SVG images are not accepted");
}

Test (reject, svg_when_allowed_by_name)
{
    s_init_with (DEFAULT_MAX_PIXELS, "svg");
    bytes_t in = { g_memdup2 (s_svg, strlen (s_svg)), strlen (s_svg) };
    s_expect_size (in, s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 100, 50);
    bytes_free (&in);
    //  And off again.
    s_init_with (DEFAULT_MAX_PIXELS, "");
    s_thumb_fails (s_svg, strlen (s_svg), IMGP_THUMB_UNSUPPORTED_FORMAT,
                   "SVG images are not accepted");
}

Test (reject, unknown_loader_name_is_a_config_error)
{
    imgp_log_init ("test_resizer", false);
    imgp_thumb_config_t config = { .max_pixels = DEFAULT_MAX_PIXELS,
                                   .allow_loaders = "svg,bmpx", .vips_threads = 1 };
    cr_assert_eq (imgp_thumb_init (&config), -1);
}

Test (reject, pixel_limit_from_the_header)
{
    s_init_with (1000, NULL);
    bytes_t big = s_fixture (100, 100, 3, ".png");
    s_thumb_fails (big.data, big.size, IMGP_THUMB_TOO_MANY_PIXELS,
                   "image is 100x100 = 10000 pixels, over the limit of 1000 pixels");
    bytes_free (&big);
    bytes_t small = s_fixture (30, 30, 3, ".png");
    s_expect_size (small, s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 30, 30);
    bytes_free (&small);
}

Test (reject, jpeg_header_claiming_400_mp, .init = s_init)
{
    //  A small JPEG whose frame header is patched to claim 20000x20000.
    bytes_t in = s_fixture (64, 64, 3, ".jpg");
    uint8_t *b = in.data;
    bool patched = false;
    for (size_t i = 2; i + 9 < in.size && b [i] == 0xff;) {
        size_t len = ((size_t) b [i + 2] << 8) | b [i + 3];
        if (b [i + 1] == 0xc0 || b [i + 1] == 0xc2) {
            b [i + 5] = 20000 >> 8, b [i + 6] = 20000 & 0xff;
            b [i + 7] = 20000 >> 8, b [i + 8] = 20000 & 0xff;
            patched = true;
            break;
        }
        i += 2 + len;
    }
    cr_assert (patched);
    s_thumb_fails (in.data, in.size, IMGP_THUMB_TOO_MANY_PIXELS, "20000x20000 = 400 MP");
    bytes_free (&in);
}

Test (reject, gif_header_claiming_65535_squared, .init = s_init)
{
    const uint8_t gif [] = {
        'G', 'I', 'F', '8', '9', 'a', 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0,
        0, 0, 0, 255, 255, 255,
        0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0,
        2, 2, 0x4c, 0x01, 0x00, 0x3b
    };
    s_thumb_fails (gif, sizeof gif, IMGP_THUMB_TOO_MANY_PIXELS, "65535x65535");
}

Test (reject, gif_javascript_polyglot, .init = s_init)
{
    const char poly [] = "GIF89a/*\0\0\0\0*/=1;alert(document.domain);/*"
                         "<html><body><script>alert('x')</script></body></html>*/\n";
    imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
    imgp_thumb_result_t result = { 0 };
    cr_assert_eq (imgp_thumb_make ((const uint8_t *) poly, sizeof poly - 1, &opts, &result), -1);
    cr_assert_neq (result.code, IMGP_THUMB_OK);
    cr_assert_neq (result.code, IMGP_THUMB_INTERNAL, "%s", result.message);
    imgp_thumb_result_clear (&result);
}


//  A slow image: a flat 16-bit RGB PNG with every row Paeth-filtered. Small
//  on the wire (zlib squeezes the flat rows), but every one of its pixels
//  must be unfiltered, converted and shrunk.
static bytes_t
s_slow_png (int side)
{
    VipsImage *black = NULL, *grey = NULL, *wide = NULL, *rgb16 = NULL;
    cr_assert_eq (vips_black (&black, side, side, "bands", 3, NULL), 0);
    cr_assert_eq (vips_linear1 (black, &grey, 1.0, 30000.0, NULL), 0);
    cr_assert_eq (vips_cast_ushort (grey, &wide, NULL), 0);
    cr_assert_eq (vips_copy (wide, &rgb16, "interpretation", VIPS_INTERPRETATION_RGB16, NULL), 0);
    g_object_unref (black);
    g_object_unref (grey);
    g_object_unref (wide);
    bytes_t bytes = { NULL, 0 };
    cr_assert_eq (vips_pngsave_buffer (rgb16, &bytes.data, &bytes.size,
                                       "filter", VIPS_FOREIGN_PNG_FILTER_PAETH, NULL), 0);
    g_object_unref (rgb16);
    return bytes;
}

Test (reject, slow_image_over_the_time_limit)
{
    s_init_limits (DEFAULT_MAX_PIXELS, NULL, 1);
    bytes_t in = s_slow_png (3000);
    s_thumb_fails (in.data, in.size, IMGP_THUMB_TIMEOUT, "gave up after 1 ms");

    //  Within the limit the watch changes nothing.
    s_init_limits (DEFAULT_MAX_PIXELS, NULL, 60000);
    s_expect_size (in, s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG), 100, 100);
    bytes_free (&in);
}


//  --------------------------------------------------------------------------
//  The shared corpus, when present

//  Read the whole file; NULL when it cannot be read.
static bytes_t
s_read (const char *path)
{
    bytes_t bytes = { NULL, 0 };
    gchar *data = NULL;
    gsize size = 0;
    if (g_file_get_contents (path, &data, &size, NULL)) {
        bytes.data = data;
        bytes.size = size;
    }
    return bytes;
}

static const char *
s_corpus_dir (void)
{
    static const char *candidates [] = { "../shared/corpus", "../../shared/corpus" };
    const char *env = getenv ("IMGP_CORPUS");
    if (env && *env)
        return env;
    for (size_t i = 0; i < 2; i++) {
        char path [512];
        snprintf (path, sizeof path, "%s/MANIFEST.tsv", candidates [i]);
        if (access (path, R_OK) == 0)
            return candidates [i];
    }
    return NULL;
}

//  One MANIFEST.tsv line.
typedef struct {
    char path [256];                //  relative to the corpus
    char format [16];               //  "jpeg", "none"...
    int width;                      //  stored pixels, 0 for "-"
    int height;                     //  stored pixels, 0 for "-"
    bool ok;                        //  expect a thumbnail
} manifest_line_t;

static bool
s_parse_line (char *line, manifest_line_t *entry)
{
    char *fields [7];
    int n = 0;
    for (char *save = NULL, *f = strtok_r (line, "\t\n", &save); f && n < 7;
         f = strtok_r (NULL, "\t\n", &save))
        fields [n++] = f;
    if (n < 6 || strcmp (fields [0], "path") == 0)
        return false;
    snprintf (entry->path, sizeof entry->path, "%s", fields [0]);
    snprintf (entry->format, sizeof entry->format, "%s", fields [1]);
    entry->width = atoi (fields [2]);
    entry->height = atoi (fields [3]);
    entry->ok = strcmp (fields [5], "ok") == 0;
    return true;
}

//  The box a 100x100 inside-fit of a w x h image (as displayed) must give.
static void
s_expected_box (int w, int h, int *out_w, int *out_h)
{
    if (w <= 100 && h <= 100) {
        *out_w = w;
        *out_h = h;
        return;
    }
    double scale = w > h ? 100.0 / w : 100.0 / h;
    *out_w = (int) (w * scale + 0.5);
    *out_h = (int) (h * scale + 0.5);
    *out_w = *out_w < 1 ? 1 : *out_w;
    *out_h = *out_h < 1 ? 1 : *out_h;
}

static void
s_check_corpus_ok (const manifest_line_t *entry, bytes_t in, imgp_thumb_result_t *result)
{
    cr_expect_eq (result->code, IMGP_THUMB_OK, "%s: %s: %s", entry->path,
                  imgp_thumb_code_name (result->code), result->message);
    if (result->code != IMGP_THUMB_OK)
        return;
    //  Displayed size: EXIF orientations 5..8 swap the sides.
    VipsImage *header = s_decode (in.data, in.size);
    bool swap = vips_image_get_orientation_swap (header);
    g_object_unref (header);
    int w = swap ? entry->height : entry->width;
    int h = swap ? entry->width : entry->height;
    int want_w, want_h;
    s_expected_box (w, h, &want_w, &want_h);
    cr_expect (result->width <= 100 && result->height <= 100, "%s: %dx%d", entry->path,
               result->width, result->height);
    cr_expect (abs (result->width - want_w) <= 1 && abs (result->height - want_h) <= 1,
               "%s: %dx%d, wanted %dx%d", entry->path, result->width, result->height, want_w,
               want_h);
    VipsImage *out = s_decode (result->data, result->size);
    int bands = vips_image_get_bands (out);
    cr_expect (vips_image_get_interpretation (out) == VIPS_INTERPRETATION_sRGB
               && (bands == 3 || bands == 4), "%s: not sRGB (%d bands)", entry->path, bands);
    if (strstr (entry->path, "cmyk"))
        cr_expect_eq (bands, 3, "%s: %d bands", entry->path, bands);
    g_object_unref (out);
}

//  The code a reject file calls for.
static imgp_thumb_code_t
s_reject_code (const manifest_line_t *entry)
{
    if (strcmp (entry->format, "none") == 0 || strcmp (entry->format, "svg") == 0)
        return IMGP_THUMB_UNSUPPORTED_FORMAT;
    if ((int64_t) entry->width * entry->height > DEFAULT_MAX_PIXELS)
        return IMGP_THUMB_TOO_MANY_PIXELS;
    return IMGP_THUMB_DECODE_ERROR;
}

Test (corpus, every_manifest_file, .init = s_init, .timeout = 300)
{
    const char *dir = s_corpus_dir ();
    if (!dir)
        cr_skip_test ("no corpus (set IMGP_CORPUS or run from the repo root)");
    char path [512];
    snprintf (path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *manifest = fopen (path, "r");
    cr_assert_not_null (manifest, "%s: %s", path, strerror (errno));

    int files = 0, photos = 0;
    double photo_ms = 0, photo_max_ms = 0;
    char line [2048];
    while (fgets (line, sizeof line, manifest)) {
        manifest_line_t entry;
        if (!s_parse_line (line, &entry))
            continue;
        snprintf (path, sizeof path, "%s/%s", dir, entry.path);
        bytes_t in = s_read (path);
        cr_assert (in.data || entry.width == 0, "cannot read %s", path);
        imgp_opts_t opts = s_opts (100, 100, IMGP_FIT_INSIDE, IMGP_FORMAT_PNG);
        imgp_thumb_result_t result = { 0 };
        int64_t start = g_get_monotonic_time ();
        imgp_thumb_make (in.data ? in.data : (void *) "", in.size, &opts, &result);
        double ms = (g_get_monotonic_time () - start) / 1000.0;
        if (entry.ok)
            s_check_corpus_ok (&entry, in, &result);
        else
            cr_expect_eq (result.code, s_reject_code (&entry), "%s: %s (%s), wanted %s",
                          entry.path, imgp_thumb_code_name (result.code), result.message,
                          imgp_thumb_code_name (s_reject_code (&entry)));
        fprintf (stderr, "corpus %-48s %-18s %4dx%-4d %8.1f ms\n", entry.path,
                 imgp_thumb_code_name (result.code), result.width, result.height, ms);
        if (strncmp (entry.path, "photos/", 7) == 0) {
            photos++;
            photo_ms += ms;
            photo_max_ms = ms > photo_max_ms ? ms : photo_max_ms;
        }
        imgp_thumb_result_clear (&result);
        bytes_free (&in);
        files++;
    }
    fclose (manifest);
    cr_assert_gt (files, 0, "empty manifest");
    if (photos)
        fprintf (stderr, "corpus photos: %d, mean %.1f ms, max %.1f ms per thumbnail\n", photos,
                 photo_ms / photos, photo_max_ms);
}


//  --------------------------------------------------------------------------
//  The resizer against a fake broker on real sockets

//  The broker's side: a jobs ROUTER bound on loopback, with the broker's
//  routing options, so a send to a peer that is gone fails at once.
typedef struct {
    zsock_t *router;                //  as the broker's jobs endpoint
    char endpoint [64];             //  what the resizer connects to
    imgp_resizer_t *resizer;        //  serving, from imgp_resizer_new to _destroy
    char name [IMGP_WORKER_MAX + 1];//  its worker name, still known after destroy
    imgp_curve_t *curve;            //  CURVE server keys, NULL for a plain ROUTER
} fake_broker_t;

//  A jobs ROUTER bound to `endpoint`. A port just given up by a socket we
//  closed may still be held while libzmq reaps it: the bind is retried
//  until it works or RECV_TIMEOUT_MS pass. Returns the port.
static int
s_router_bind (fake_broker_t *broker, const char *endpoint)
{
    broker->router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (broker->router);
    cr_assert_eq (imgp_curve_apply (broker->curve, broker->router), 0);
    zsock_set_router_mandatory (broker->router, 1);
    zsock_set_router_handover (broker->router, 1);
    zsock_set_rcvtimeo (broker->router, RECV_TIMEOUT_MS);
    zsock_set_sndtimeo (broker->router, RECV_TIMEOUT_MS);
    zsock_set_linger (broker->router, 0);
    int64_t deadline = zclock_mono () + RECV_TIMEOUT_MS;
    int port;
    while ((port = zsock_bind (broker->router, "%s", endpoint)) < 0
    &&     zclock_mono () < deadline)
        zclock_sleep (10);
    cr_assert_gt (port, 0, "cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
    return port;
}

//  `name` is `prefix`, "-" and 8 random hex digits.
static void
s_assert_suffixed (const char *name, const char *prefix)
{
    size_t len = strlen (prefix);
    cr_assert_eq (strncmp (name, prefix, len), 0, "name %s lacks prefix %s", name, prefix);
    cr_assert_eq (strlen (name), len + 9, "name %s", name);
    cr_assert_eq (name [len], '-', "name %s", name);
    cr_assert_eq (strspn (name + len + 1, "0123456789abcdef"), 8, "name %s", name);
    cr_assert (imgp_msg_worker_valid (name));
}

//  Start a resizer with `config` against a ROUTER with `curve` (may be NULL).
static void
s_broker_start_with (fake_broker_t *broker, imgp_resizer_config_t *config, imgp_curve_t *curve)
{
    memset (broker, 0, sizeof *broker);
    broker->curve = curve;
    int port = s_router_bind (broker, "tcp://127.0.0.1:*");
    snprintf (broker->endpoint, sizeof broker->endpoint, "tcp://127.0.0.1:%d", port);
    config->jobs = broker->endpoint;
    config->name = "test-worker";
    broker->resizer = imgp_resizer_new (config);
    cr_assert_not_null (broker->resizer);
    s_assert_suffixed (imgp_resizer_name (broker->resizer), "test-worker");
    snprintf (broker->name, sizeof broker->name, "%s", imgp_resizer_name (broker->resizer));
}


//  Stop the resizer, close the ROUTER.
static void
s_broker_stop (fake_broker_t *broker)
{
    imgp_resizer_destroy (&broker->resizer);
    imgp_resizer_destroy (&broker->resizer);     //  safe twice
    zsock_destroy (&broker->router);
}

//  Next message from the resizer, or a failed test after RECV_TIMEOUT_MS.
//  Every one comes from the routing id the resizer named itself, and says
//  that name as its worker.
static imgp_msg_t *
s_recv (fake_broker_t *broker)
{
    imgp_msg_t *msg = imgp_msg_recv (broker->router);
    cr_assert_not_null (msg, "no message from the resizer within %d ms", RECV_TIMEOUT_MS);
    const char *name = broker->name;
    cr_assert_str_eq (imgp_msg_routing_name (msg), name);
    cr_assert_str_eq (msg->worker, name, "%s says worker %s", imgp_msg_type_name (msg->type),
                      msg->worker);
    return msg;
}

//  Next message that is not a HEARTBEAT.
static imgp_msg_t *
s_recv_result (fake_broker_t *broker)
{
    while (true) {
        imgp_msg_t *msg = s_recv (broker);
        if (msg->type != IMGP_MSG_HEARTBEAT)
            return msg;
        imgp_msg_destroy (&msg);
    }
}

//  Next message, which must be `type` (for job `id` unless NULL). A READY
//  is passed over unless it is the one wanted: a resizer whose link thread
//  was starved for a second says READY again (on a loaded machine, too).
static imgp_msg_t *
s_expect (fake_broker_t *broker, imgp_msg_type_t type, const char *id)
{
    imgp_msg_t *msg = s_recv_result (broker);
    while (msg->type == IMGP_MSG_READY && type != IMGP_MSG_READY) {
        imgp_msg_destroy (&msg);
        msg = s_recv_result (broker);
    }
    cr_assert_eq (msg->type, type, "got %s (%s %s), wanted %s", imgp_msg_type_name (msg->type),
                  msg->code, msg->message, imgp_msg_type_name (type));
    if (id)
        cr_assert_str_eq (msg->id, id, "%s for another job", imgp_msg_type_name (type));
    return msg;
}

//  READY of a new connection; returns its credit.
static int
s_expect_ready (fake_broker_t *broker)
{
    imgp_msg_t *ready = s_expect (broker, IMGP_MSG_READY, NULL);
    cr_assert_eq (ready->slots, 1);
    int credit = ready->credit;
    imgp_msg_destroy (&ready);
    return credit;
}

//  Start a resizer and take its first READY, which offers credit 2.
static void
s_broker_start (fake_broker_t *broker, int heartbeat_ms, int64_t max_upload_bytes)
{
    imgp_resizer_config_t config = {
        .max_upload_bytes = max_upload_bytes,
        .heartbeat_ms = heartbeat_ms,
    };
    s_broker_start_with (broker, &config, NULL);
    cr_assert_eq (s_expect_ready (broker), 2);
}

//  Send a JOB to the resizer; `image` bytes move into the message.
static void
s_send_job (fake_broker_t *broker, const char *id, bytes_t *image)
{
    imgp_msg_t *job = imgp_msg_new (IMGP_MSG_JOB);
    snprintf (job->id, sizeof job->id, "%s", id);
    job->attempts = 2;
    imgp_opts_default (&job->opts);
    imgp_msg_set_data (job, image->data, image->size, imgp_thumb_free);
    image->data = NULL;
    const char *name = imgp_resizer_name (broker->resizer);
    job->routing_id = zframe_new (name, strlen (name));
    cr_assert_eq (imgp_msg_send (&job, broker->router), 0, "send: %s",
                  zmq_strerror (zmq_errno ()));
}

//  A new job id into `id`, and the job sent with `image`.
static void
s_send_new_job (fake_broker_t *broker, char id [IMGP_ID_LEN + 1], bytes_t image)
{
    cr_assert_eq (imgp_id_new (id), 0);
    s_send_job (broker, id, &image);
}

//  STARTED for `id` (any job when NULL).
static void
s_expect_started (fake_broker_t *broker, const char *id)
{
    imgp_msg_t *msg = s_expect (broker, IMGP_MSG_STARTED, id);
    imgp_msg_destroy (&msg);
}

//  STARTED then DONE for `id`.
static void
s_expect_done (fake_broker_t *broker, const char *id)
{
    s_expect_started (broker, id);
    imgp_msg_t *msg = s_expect (broker, IMGP_MSG_DONE, id);
    imgp_msg_destroy (&msg);
}

//  What the resizer says after run() returned, until the ROUTER is quiet
//  for 1 s (what is in flight on loopback arrives well within that).
//  Returns the last message's type and slots; counts `type` in *count.
static imgp_msg_t *
s_drain (fake_broker_t *broker, imgp_msg_type_t type, int *count)
{
    zsock_set_rcvtimeo (broker->router, 1000);
    imgp_msg_t *last = NULL, *msg;
    while ((msg = imgp_msg_recv (broker->router))) {
        if (msg->type == type)
            (*count)++;
        imgp_msg_destroy (&last);
        last = msg;
    }
    return last;
}

Test (loop, ready_on_connect_says_slots_credit_and_host, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    imgp_resizer_config_t config = { .max_upload_bytes = 1 << 20, .heartbeat_ms = 100 };
    s_broker_start_with (&broker, &config, NULL);
    imgp_msg_t *ready = s_recv (&broker);
    cr_assert_eq (ready->type, IMGP_MSG_READY, "first message is %s",
                  imgp_msg_type_name (ready->type));
    cr_assert_eq (ready->slots, 1);
    cr_assert_eq (ready->credit, 2, "one job running and one ready beyond it");
    char host [256] = "";
    gethostname (host, sizeof host - 1);
    if (*host && strlen (host) <= IMGP_HOST_MAX && imgp_msg_host_valid (host))
        cr_assert_str_eq (ready->host, host);
    imgp_msg_destroy (&ready);

    imgp_msg_t *beat = s_recv (&broker);
    cr_assert_eq (beat->type, IMGP_MSG_HEARTBEAT, "then %s", imgp_msg_type_name (beat->type));
    cr_assert_eq (beat->slots, 1);
    imgp_msg_destroy (&beat);
    s_broker_stop (&broker);
}

Test (loop, job_gives_started_then_done, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 1 << 20);

    char id [IMGP_ID_LEN + 1];
    bytes_t image = s_fixture (300, 200, 3, ".jpg");
    int64_t sent = zclock_usecs ();
    s_send_new_job (&broker, id, image);
    imgp_msg_t *started = s_expect (&broker, IMGP_MSG_STARTED, id);
    fprintf (stderr, "JOB sent to STARTED received: %.2f ms (said by the link: idle worker)\n",
             (zclock_usecs () - sent) / 1000.0);
    cr_assert_eq (started->attempts, 2);
    imgp_msg_destroy (&started);

    imgp_msg_t *done = s_expect (&broker, IMGP_MSG_DONE, id);
    cr_assert_eq (done->attempts, 2);
    cr_assert_eq (done->results [0].width, 100);
    cr_assert (abs (done->results [0].height - 67) <= 1);
    cr_assert_eq (done->results [0].format, IMGP_FORMAT_PNG);
    cr_assert_eq ((size_t) done->results [0].bytes, imgp_msg_size (done));
    VipsImage *thumb = s_decode (imgp_msg_data (done), imgp_msg_size (done));
    cr_assert_eq (vips_image_get_width (thumb), 100);
    g_object_unref (thumb);
    imgp_msg_destroy (&done);

    //  A bad image gives FAILED, and the loop goes on.
    char bad_id [IMGP_ID_LEN + 1];
    const char text [] = "not an image at all";
    s_send_new_job (&broker, bad_id, (bytes_t) { g_memdup2 (text, sizeof text), sizeof text });
    s_expect_started (&broker, bad_id);
    imgp_msg_t *msg = s_expect (&broker, IMGP_MSG_FAILED, bad_id);
    cr_assert_str_eq (msg->code, "unsupported_format");
    cr_assert (strlen (msg->message) > 0);
    imgp_msg_destroy (&msg);

    cr_assert_eq (imgp_resizer_jobs (broker.resizer), 2);
    s_broker_stop (&broker);
}

//  stderr (where imgp_log writes) into a temporary file, until s_log_end.
typedef struct {
    char path [64];                 //  the file
    int saved;                      //  the real stderr, to put back
} log_capture_t;

static void
s_log_begin (log_capture_t *capture)
{
    snprintf (capture->path, sizeof capture->path, "/tmp/test_resizer_log.XXXXXX");
    int fd = mkstemp (capture->path);
    cr_assert_geq (fd, 0);
    fflush (stderr);
    capture->saved = dup (2);
    dup2 (fd, 2);
    close (fd);
}

//  What was logged so far (g_free it).
static gchar *
s_log_text (log_capture_t *capture)
{
    fflush (stderr);
    gchar *text = NULL;
    cr_assert (g_file_get_contents (capture->path, &text, NULL, NULL));
    return text;
}

static void
s_log_end (log_capture_t *capture)
{
    fflush (stderr);
    dup2 (capture->saved, 2);
    close (capture->saved);
    unlink (capture->path);
}

//  The stop line, which the benchmark reads: jobs, the time on them, and
//  the waits between them (a wait counts only when a job ended it). And
//  after a while without a job, freed memory goes back (event=trimmed).
Test (loop, stop_line_says_jobs_busy_and_waited, .init = s_init, .timeout = 30)
{
    log_capture_t capture;
    s_log_begin (&capture);
    fake_broker_t broker;
    s_broker_start (&broker, 100, 1 << 20);
    char id [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, id, s_fixture (300, 200, 3, ".jpg"));
    s_expect_done (&broker, id);
    zclock_sleep (300);                 //  the worker waits at least this long...
    s_send_new_job (&broker, id, s_fixture (300, 200, 3, ".jpg"));
    s_expect_done (&broker, id);        //  ...and the second job ends the wait

    gchar *text = NULL;
    int64_t deadline = zclock_mono () + 10000;
    while (!(text = s_log_text (&capture), strstr (text, "event=trimmed"))
    &&     zclock_mono () < deadline) {
        g_free (text);
        zclock_sleep (100);
    }
    cr_assert (strstr (text, "event=trimmed"), "no event=trimmed within 10 s idle");
    g_free (text);

    s_broker_stop (&broker);
    text = s_log_text (&capture);
    s_log_end (&capture);
    const char *line = strstr (text, "event=stopped ");
    cr_assert_not_null (line, "no stop line in: %s", text);
    long long jobs = -1, busy = -1, waited = -1;
    char worker [IMGP_WORKER_MAX + 1] = "";
    cr_assert_eq (sscanf (line, "event=stopped jobs=%lld busy_ms=%lld waited_ms=%lld worker=%64s",
                          &jobs, &busy, &waited, worker), 4, "stop line: %s", line);
    cr_assert_eq (jobs, 2);
    cr_assert_geq (busy, 0);
    cr_assert_geq (waited, 300, "the 300 ms between the jobs were not counted: %s", line);
    cr_assert_str_eq (worker, broker.name);
    g_free (text);
}

Test (loop, heartbeats_go_on_while_a_slow_job_runs, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 20, 32 << 20);

    //  Idle: a steady beat with one free slot.
    for (int i = 0; i < 3; i++) {
        imgp_msg_t *beat = s_recv (&broker);
        cr_assert_eq (beat->type, IMGP_MSG_HEARTBEAT);
        cr_assert_eq (beat->slots, 1);
        imgp_msg_destroy (&beat);
    }

    //  A job of ~0.2 s (every pixel of a filtered PNG is decoded): the
    //  link beats on with slots 0 while libvips works in the other thread,
    //  and with 1 again after.
    char id [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, id, s_slow_png (2000));
    s_expect_started (&broker, id);
    imgp_msg_t *msg;
    int64_t started = zclock_mono ();
    int busy_beats = 0;
    while ((msg = s_recv (&broker))->type != IMGP_MSG_DONE) {
        cr_assert (msg->type == IMGP_MSG_HEARTBEAT || msg->type == IMGP_MSG_READY, "got %s",
                   imgp_msg_type_name (msg->type));
        if (msg->type == IMGP_MSG_HEARTBEAT) {
            cr_assert_eq (msg->slots, 0, "a free slot while the job runs");
            busy_beats++;
        }
        imgp_msg_destroy (&msg);
    }
    imgp_msg_destroy (&msg);
    fprintf (stderr, "heartbeats at 20 ms while a %lld ms job ran: %d\n",
             (long long) (zclock_mono () - started), busy_beats);
    cr_assert_gt (busy_beats, 0, "no heartbeat while the job ran");
    while ((msg = s_recv (&broker))->type == IMGP_MSG_READY)
        imgp_msg_destroy (&msg);
    cr_assert_eq (msg->type, IMGP_MSG_HEARTBEAT);
    cr_assert_eq (msg->slots, 1);
    imgp_msg_destroy (&msg);

    //  Stopping says slots=0 last.
    imgp_resizer_destroy (&broker.resizer);
    int beats = 0;
    imgp_msg_t *last = s_drain (&broker, IMGP_MSG_HEARTBEAT, &beats);
    cr_assert (last && last->type == IMGP_MSG_HEARTBEAT && last->slots == 0,
               "no HEARTBEAT slots=0 on stop");
    imgp_msg_destroy (&last);
    zsock_destroy (&broker.router);
}

Test (loop, credit_bounds_the_jobs_held, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 32 << 20);

    //  Three at once to a resizer with credit 2: the slow one runs, the
    //  second waits in the resizer, the third (a broker over our credit)
    //  is dropped. Each is passed on as it arrives, long before the slow
    //  one could end.
    char slow [IMGP_ID_LEN + 1], second [IMGP_ID_LEN + 1], third [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, slow, s_slow_png (2000));
    s_send_new_job (&broker, second, s_fixture (50, 40, 3, ".png"));
    s_send_new_job (&broker, third, s_fixture (50, 40, 3, ".png"));
    s_expect_done (&broker, slow);
    s_expect_done (&broker, second);

    //  Results come in order, so the next STARTED being a new job's says
    //  the third was never taken.
    char fourth [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, fourth, s_fixture (50, 40, 3, ".png"));
    s_expect_done (&broker, fourth);
    cr_assert_eq (imgp_resizer_jobs (broker.resizer), 3);
    s_broker_stop (&broker);
}

Test (loop, a_reconnect_says_ready_again, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 32 << 20);
    char id [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, id, s_slow_png (2000));
    s_expect_started (&broker, id);
    imgp_msg_t *msg;

    //  The broker restarts on the same port while the job runs.
    zsock_destroy (&broker.router);
    s_router_bind (&broker, broker.endpoint);

    //  READY with the credit of that moment, and the job's DONE, queued
    //  meanwhile, on the new connection: credit 1 while the job is held,
    //  2 when its DONE went out first (the broker adds 1 for each DONE).
    //  (A second READY comes only from a link starved for a second.)
    bool ready = false, done = false;
    while (!ready || !done) {
        msg = s_recv_result (&broker);
        if (msg->type == IMGP_MSG_READY) {
            cr_assert_eq (msg->credit, done ? 2 : 1, "credit %d, DONE %s", msg->credit,
                          done ? "before" : "after");
            ready = true;
        }
        else {
            cr_assert_eq (msg->type, IMGP_MSG_DONE, "got %s", imgp_msg_type_name (msg->type));
            cr_assert_str_eq (msg->id, id);
            done = true;
        }
        imgp_msg_destroy (&msg);
    }
    s_send_new_job (&broker, id, s_fixture (50, 40, 3, ".png"));
    s_expect_done (&broker, id);
    s_broker_stop (&broker);
}

Test (loop, stop_finishes_the_job_in_hand, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 32 << 20);
    char slow [IMGP_ID_LEN + 1], waiting [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, slow, s_slow_png (2000));
    s_send_new_job (&broker, waiting, s_fixture (50, 40, 3, ".png"));
    s_expect_started (&broker, slow);

    //  As main does on SIGTERM: destroy returns once the job in hand has
    //  ended and its DONE gone out; the waiting one is dropped (the broker
    //  queues it again when it counts us lost); a last heartbeat says
    //  slots 0.
    imgp_resizer_destroy (&broker.resizer);
    imgp_msg_t *msg = s_expect (&broker, IMGP_MSG_DONE, slow);
    imgp_msg_destroy (&msg);
    int started = 0;
    imgp_msg_t *last = s_drain (&broker, IMGP_MSG_STARTED, &started);
    cr_assert_eq (started, 0, "the waiting job was started after the stop");
    cr_assert (last && last->type == IMGP_MSG_HEARTBEAT && last->slots == 0,
               "no HEARTBEAT slots=0 last");
    imgp_msg_destroy (&last);
    zsock_destroy (&broker.router);
}

Test (loop, oversized_messages_are_refused_and_the_link_comes_back, .init = s_init,
      .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 100000);

    //  Over imgp_msg_max_size (max-upload-bytes): libzmq drops it and the
    //  connection for good; the resizer makes its socket again and says
    //  READY on the new connection. No result is sent for the big one.
    char big_id [IMGP_ID_LEN + 1], id [IMGP_ID_LEN + 1];
    size_t over = (size_t) imgp_msg_max_size (100000) + 1;
    s_send_new_job (&broker, big_id, (bytes_t) { g_malloc0 (over), over });
    cr_assert_eq (s_expect_ready (&broker), 2, "the big job was counted as held");
    s_send_new_job (&broker, id, s_fixture (50, 40, 3, ".png"));
    s_expect_done (&broker, id);

    //  A thumbnail over the broker's limit fails here, not on the wire.
    imgp_msg_t *job = imgp_msg_new (IMGP_MSG_JOB);
    cr_assert_eq (imgp_id_new (job->id), 0);
    job->attempts = 1;
    imgp_opts_default (&job->opts);
    job->opts.width = job->opts.height = 2000;
    job->opts.enlarge = true;
    bytes_t image = s_fixture (50, 40, 3, ".png");
    imgp_msg_set_data (job, image.data, image.size, imgp_thumb_free);
    const char *name = imgp_resizer_name (broker.resizer);
    job->routing_id = zframe_new (name, strlen (name));
    cr_assert_eq (imgp_msg_send (&job, broker.router), 0);
    s_expect_started (&broker, NULL);
    imgp_msg_t *msg = s_expect (&broker, IMGP_MSG_FAILED, NULL);
    cr_assert_str_eq (msg->code, "encode_error");
    cr_assert (strstr (msg->message, "over the limit of 100000 bytes"), "%s", msg->message);
    imgp_msg_destroy (&msg);
    s_broker_stop (&broker);
}

Test (loop, a_result_made_while_the_link_is_down_goes_out_after, .init = s_init,
      .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 100000);
    char slow [IMGP_ID_LEN + 1], big [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, slow, s_slow_png (2000));
    s_expect_started (&broker, slow);

    //  An oversized JOB drops the connection for good while the slow job
    //  runs; its DONE, made before the resizer makes its socket again
    //  (1 s), waits for the new connection and goes out before READY,
    //  whose credit counts the job given back.
    size_t over = (size_t) imgp_msg_max_size (100000) + 1;
    s_send_new_job (&broker, big, (bytes_t) { g_malloc0 (over), over });
    imgp_msg_t *msg = s_expect (&broker, IMGP_MSG_DONE, slow);
    imgp_msg_destroy (&msg);
    cr_assert_eq (s_expect_ready (&broker), 2);
    s_broker_stop (&broker);
}

Test (loop, slow_job_fails_with_timeout, .timeout = 30)
{
    s_init_limits (DEFAULT_MAX_PIXELS, NULL, 1);
    fake_broker_t broker;
    s_broker_start (&broker, 100, 1 << 20);
    char id [IMGP_ID_LEN + 1];
    s_send_new_job (&broker, id, s_slow_png (2000));
    s_expect_started (&broker, id);
    imgp_msg_t *msg = s_expect (&broker, IMGP_MSG_FAILED, id);
    cr_assert_str_eq (msg->code, "timeout");
    cr_assert (strstr (msg->message, "gave up after 1 ms"), "%s", msg->message);
    imgp_msg_destroy (&msg);

    //  A stopped job leaves nothing behind: the next one, in time, is done.
    s_init_limits (DEFAULT_MAX_PIXELS, NULL, DEFAULT_TIME_LIMIT_MS);
    s_send_new_job (&broker, id, s_slow_png (2000));
    s_expect_done (&broker, id);
    s_broker_stop (&broker);
}

//  Key files for a CURVE test in a temporary directory: the broker's pair,
//  the resizer's pair, and clients/ holding the resizer's public file
//  when `allowed` (a secret never sits in the clients dir).
typedef struct {
    char dir [64];                  //  the temporary directory
    char broker [128];              //  broker's public file; +"_secret" its secret
    char resizer [128];             //  resizer's public file
    char clients [128];             //  clients dir
    char allowed [160];             //  clients/resizer when allowed, else ""
} curve_files_t;

static void
s_curve_files (curve_files_t *files, bool allowed)
{
    memset (files, 0, sizeof *files);
    snprintf (files->dir, sizeof files->dir, "/tmp/imgp-resizer-curve-XXXXXX");
    cr_assert_not_null (mkdtemp (files->dir));
    snprintf (files->broker, sizeof files->broker, "%s/broker", files->dir);
    snprintf (files->resizer, sizeof files->resizer, "%s/resizer", files->dir);
    snprintf (files->clients, sizeof files->clients, "%s/clients", files->dir);
    cr_assert_eq (mkdir (files->clients, 0700), 0);
    char error [256];
    cr_assert_eq (imgp_curve_keygen (files->broker, error, sizeof error), 0, "%s", error);
    cr_assert_eq (imgp_curve_keygen (files->resizer, error, sizeof error), 0, "%s", error);
    if (allowed) {
        snprintf (files->allowed, sizeof files->allowed, "%s/resizer", files->clients);
        zcert_t *cert = zcert_load (files->resizer);
        cr_assert_not_null (cert);
        cr_assert_eq (zcert_save_public (cert, files->allowed), 0);
        zcert_destroy (&cert);
    }
}

static void
s_curve_files_remove (curve_files_t *files)
{
    const char *paths [] = { files->broker, files->resizer, files->allowed };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++) {
        if (!*paths [i])
            continue;
        char secret [200];
        snprintf (secret, sizeof secret, "%s_secret", paths [i]);
        unlink (paths [i]);
        unlink (secret);
    }
    rmdir (files->clients);
    rmdir (files->dir);
}

//  A resizer with keys against a CURVE ROUTER with zauth, as the broker
//  runs it: READY comes over the keyed link when the resizer's key is
//  allowed, nothing when it is not (checked for 2 s: an absence has no
//  event to wait for).
static void
s_curve_link (bool allowed)
{
    curve_files_t files;
    s_curve_files (&files, allowed);
    char broker_secret [160], resizer_secret [160];
    snprintf (broker_secret, sizeof broker_secret, "%s_secret", files.broker);
    snprintf (resizer_secret, sizeof resizer_secret, "%s_secret", files.resizer);
    imgp_curve_t *server = imgp_curve_server_new (broker_secret, files.clients);
    cr_assert_not_null (server);
    imgp_resizer_config_t config = {
        .max_upload_bytes = 1 << 20, .heartbeat_ms = 100,
        .curve_secret = resizer_secret, .curve_server = files.broker,
    };
    fake_broker_t broker;
    s_broker_start_with (&broker, &config, server);
    if (allowed) {
        cr_assert_eq (s_expect_ready (&broker), 2);
        char id [IMGP_ID_LEN + 1];
        s_send_new_job (&broker, id, s_fixture (50, 40, 3, ".png"));
        s_expect_done (&broker, id);
    }
    else {
        zsock_set_rcvtimeo (broker.router, 2000);
        imgp_msg_t *msg = imgp_msg_recv (broker.router);
        cr_assert_null (msg, "a resizer with an unknown key said %s",
                        imgp_msg_type_name (msg->type));
    }
    s_broker_stop (&broker);
    imgp_curve_destroy (&server);
    s_curve_files_remove (&files);
}

Test (loop, curve_keys_carry_the_link, .init = s_init, .timeout = 30)
{
    s_curve_link (true);
}

Test (loop, an_unknown_key_gets_no_link, .init = s_init, .timeout = 30)
{
    s_curve_link (false);
}

Test (loop, curve_needs_both_readable_files, .init = s_init)
{
    imgp_resizer_config_t config = {
        .jobs = "tcp://127.0.0.1:1", .max_upload_bytes = 1000, .heartbeat_ms = 1000,
        .curve_secret = "/nonexistent/resizer_secret",
    };
    cr_assert_null (imgp_resizer_new (&config), "a secret without the broker's key");
    config.curve_secret = NULL;
    config.curve_server = "/nonexistent/broker";
    cr_assert_null (imgp_resizer_new (&config), "the broker's key without our secret");
    config.curve_secret = "/nonexistent/resizer_secret";
    cr_assert_null (imgp_resizer_new (&config), "key files that are not there");
    config.curve_secret = config.curve_server = "";
    imgp_resizer_t *plain = imgp_resizer_new (&config);
    cr_assert_not_null (plain, "empty options mean a plain link");
    imgp_resizer_destroy (&plain);
}

static imgp_resizer_config_t
s_config_named (const char *name)
{
    imgp_resizer_config_t config = {
        .jobs = "tcp://127.0.0.1:1",
        .name = name, .max_upload_bytes = 1000, .heartbeat_ms = 1000,
    };
    return config;
}

Test (loop, bad_worker_name_is_refused, .init = s_init)
{
    imgp_resizer_config_t config = s_config_named ("has space");
    cr_assert_null (imgp_resizer_new (&config));
    char prefix [IMGP_WORKER_MAX + 1];
    memset (prefix, 'p', sizeof prefix);
    prefix [IMGP_RESIZER_PREFIX_MAX + 1] = '\0';       //  no room left for the suffix
    config.name = prefix;
    cr_assert_null (imgp_resizer_new (&config));
    prefix [IMGP_RESIZER_PREFIX_MAX] = '\0';           //  just fits
    imgp_resizer_t *resizer = imgp_resizer_new (&config);
    cr_assert_not_null (resizer);
    s_assert_suffixed (imgp_resizer_name (resizer), prefix);
    cr_assert_eq (strlen (imgp_resizer_name (resizer)), IMGP_WORKER_MAX);
    imgp_resizer_destroy (&resizer);
    cr_assert_null (resizer);
}

Test (loop, names_are_unique_per_process_lifetime, .init = s_init)
{
    //  A restarted container has the same hostname and pid: the suffix
    //  makes the new process a new worker to the broker.
    imgp_resizer_config_t config = s_config_named (NULL);
    imgp_resizer_t *first = imgp_resizer_new (&config);
    imgp_resizer_t *second = imgp_resizer_new (&config);
    cr_assert (first && second);
    char host [256] = "", pid [24], prefix [IMGP_RESIZER_PREFIX_MAX + 1];
    gethostname (host, sizeof host - 1);
    snprintf (pid, sizeof pid, "-%ld", (long) getpid ());
    snprintf (prefix, sizeof prefix, "%.*s%s", (int) (sizeof prefix - 1 - strlen (pid)), host,
              pid);
    for (char *c = prefix; *c; c++)
        if (*c <= ' ' || *c >= 0x7f)
            *c = '_';
    s_assert_suffixed (imgp_resizer_name (first), prefix);
    s_assert_suffixed (imgp_resizer_name (second), prefix);
    cr_assert_str_neq (imgp_resizer_name (first), imgp_resizer_name (second));
    imgp_resizer_destroy (&first);
    imgp_resizer_destroy (&second);

    config = s_config_named ("rack7");
    first = imgp_resizer_new (&config);
    second = imgp_resizer_new (&config);
    cr_assert (first && second);
    s_assert_suffixed (imgp_resizer_name (first), "rack7");
    cr_assert_str_neq (imgp_resizer_name (first), imgp_resizer_name (second));
    imgp_resizer_destroy (&first);
    imgp_resizer_destroy (&second);
}

Test (loop, worker_names_follow_the_codec)
{
    cr_assert (imgp_msg_worker_valid ("a"));
    cr_assert (imgp_msg_worker_valid ("host-1:42/x~!"));
    char name [IMGP_WORKER_MAX + 2];
    memset (name, 'n', sizeof name);
    name [IMGP_WORKER_MAX] = '\0';
    cr_assert (imgp_msg_worker_valid (name));
    name [IMGP_WORKER_MAX] = 'n';
    name [IMGP_WORKER_MAX + 1] = '\0';
    cr_assert_not (imgp_msg_worker_valid (name), "65 characters");
    cr_assert_not (imgp_msg_worker_valid (NULL));
    cr_assert_not (imgp_msg_worker_valid (""));
    cr_assert_not (imgp_msg_worker_valid ("a b"));
    cr_assert_not (imgp_msg_worker_valid ("tab\there"));
    cr_assert_not (imgp_msg_worker_valid ("del\x7f"));
    cr_assert_not (imgp_msg_worker_valid ("caf\xc3\xa9"));
}

Test (loop, upload_limit_is_capped, .init = s_init)
{
    imgp_resizer_config_t config = s_config_named ("capped");
    config.max_upload_bytes = IMGP_UPLOAD_LIMIT_MAX + 1;
    cr_assert_null (imgp_resizer_new (&config));
    config.max_upload_bytes = IMGP_UPLOAD_LIMIT_MAX;
    imgp_resizer_t *resizer = imgp_resizer_new (&config);
    cr_assert_not_null (resizer);
    imgp_resizer_destroy (&resizer);
}

//  --------------------------------------------------------------------------
//  imgp_resizer_set_priority (each test is its own process: the priority
//  it sets ends with it)

TestSuite (priority);

//  The nice value and policy of the thread that runs it.
typedef struct {
    int nice;                   //  getpriority of the thread
    int policy;                 //  sched_getscheduler of the thread
} s_sched_t;

static void *
s_sched_of_thread (void *args)
{
    s_sched_t *sched = args;
    sched->nice = getpriority (PRIO_PROCESS, 0);
    sched->policy = sched_getscheduler (0);
    return NULL;
}

Test (priority, a_thread_made_after_inherits_nice_and_batch)
{
    imgp_log_init ("test_resizer", false);
    if (getpriority (PRIO_PROCESS, 0) != 0)
        cr_skip_test ("the test runs under nice already");
    cr_assert_eq (imgp_resizer_set_priority (10), 0);
    cr_expect_eq (getpriority (PRIO_PROCESS, 0), 10);
    cr_expect_eq (sched_getscheduler (0), SCHED_BATCH);
    pthread_t thread;
    s_sched_t sched = { -100, -1 };
    cr_assert_eq (pthread_create (&thread, NULL, s_sched_of_thread, &sched), 0);
    pthread_join (thread, NULL);
    cr_expect_eq (sched.nice, 10);
    cr_expect_eq (sched.policy, SCHED_BATCH);
}

Test (priority, zero_leaves_it_alone_and_a_lower_one_is_kept)
{
    imgp_log_init ("test_resizer", false);
    int policy = sched_getscheduler (0);
    if (getpriority (PRIO_PROCESS, 0) != 0)
        cr_skip_test ("the test runs under nice already");
    cr_assert_eq (imgp_resizer_set_priority (0), 0);
    cr_expect_eq (getpriority (PRIO_PROCESS, 0), 0);
    cr_expect_eq (sched_getscheduler (0), policy);
    cr_assert_eq (setpriority (PRIO_PROCESS, 0, 15), 0);
    cr_assert_eq (imgp_resizer_set_priority (10), 0);
    cr_expect_eq (getpriority (PRIO_PROCESS, 0), 15, "raising it back would need privileges");
}


//  --------------------------------------------------------------------------
//  Renditions: sizes from one upload, contain, cover by gravity, auto,
//  animation, ETags

//  `opts` with boxes `boxes` ("WxH,..." as the query gives them).
static imgp_opts_t
s_sized (const char *query)
{
    imgp_opts_t opts;
    const char *error = NULL;
    cr_assert_eq (imgp_opts_parse_query (&opts, query, &error, NULL), 0, "%s: %s", query,
                  error);
    return opts;
}

//  The pixel at x, y of rendition `i` of `result`, bands into `pixel` (4).
static int
s_pixel (const imgp_thumb_result_t *result, int i, int x, int y, double pixel [4])
{
    const imgp_thumb_output_t *output = &result->outputs [i];
    VipsImage *image = s_decode ((uint8_t *) result->data + output->offset, output->size);
    double *values = NULL;
    int n = 0;
    cr_assert_eq (vips_getpoint (image, &values, &n, x, y, NULL), 0);
    for (int b = 0; b < n && b < 4; b++)
        pixel [b] = values [b];
    g_free (values);
    g_object_unref (image);
    return n;
}

Test (renditions, sizes_from_one_upload, .init = s_init)
{
    bytes_t in = s_fixture (300, 200, 3, ".jpg");
    imgp_opts_t opts = s_sized ("sizes=100x100,40x40,200x50,600x600&format=webp");
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    cr_assert_eq (result.count, 4);
    int want [4][2] = { { 100, 67 }, { 40, 27 }, { 75, 50 }, { 300, 200 } };
    size_t offset = 0;
    for (int i = 0; i < 4; i++) {
        const imgp_thumb_output_t *output = &result.outputs [i];
        cr_expect_eq (output->offset, offset, "rendition %d starts where the last ended", i);
        offset += output->size;
        cr_expect (abs (output->width - want [i][0]) <= 1 && abs (output->height - want [i][1]) <= 1,
                   "box %dx%d gave %dx%d", output->box.width, output->box.height,
                   output->width, output->height);
        cr_expect_eq (output->box.width, imgp_opts_box (&opts, i).width);
        cr_expect_eq (output->format, IMGP_FORMAT_WEBP);
        VipsImage *image = s_decode ((uint8_t *) result.data + output->offset, output->size);
        cr_expect_eq (vips_image_get_width (image), output->width);
        cr_expect_eq (vips_image_get_height (image), output->height);
        g_object_unref (image);
        fprintf (stderr, "renditions: box %dx%d -> %dx%d webp, %zu bytes\n", output->box.width,
                 output->box.height, output->width, output->height, output->size);
    }
    cr_expect_eq (offset, result.size, "the data is the renditions end to end");
    cr_expect_eq (result.width, result.outputs [0].width);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

Test (renditions, contain_pads_with_the_background, .init = s_init)
{
    bytes_t in = s_fixture (200, 100, 3, ".png");
    //  opaque red: the border rows are red, the middle is the image
    imgp_opts_t opts = s_sized ("fit=contain&width=50&background=%23ff0000");
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    s_check_output (&result, 50, 50);
    double pixel [4];
    int bands = s_pixel (&result, 0, 25, 2, pixel);
    cr_expect_eq (bands, 3, "an opaque background adds no alpha");
    cr_expect (pixel [0] == 255 && pixel [1] == 0 && pixel [2] == 0, "border %g,%g,%g",
               pixel [0], pixel [1], pixel [2]);
    fprintf (stderr, "contain: 200x100 in 50x50 #ff0000: border pixel %g,%g,%g\n", pixel [0],
             pixel [1], pixel [2]);
    imgp_thumb_result_clear (&result);
    //  the default, transparent: PNG keeps it, JPEG shows white
    opts = s_sized ("fit=contain&width=50");
    result = s_thumb_ok (in, &opts);
    s_check_output (&result, 50, 50);
    cr_expect_eq (s_pixel (&result, 0, 25, 2, pixel), 4);
    cr_expect_eq (pixel [3], 0, "transparent border, alpha %g", pixel [3]);
    imgp_thumb_result_clear (&result);
    opts = s_sized ("fit=contain&width=50&format=jpeg");
    result = s_thumb_ok (in, &opts);
    s_pixel (&result, 0, 25, 2, pixel);
    cr_expect (pixel [0] >= 250 && pixel [1] >= 250 && pixel [2] >= 250,
               "jpeg border %g,%g,%g, want white", pixel [0], pixel [1], pixel [2]);
    imgp_thumb_result_clear (&result);
    //  semi-transparent blue, in several sizes at once
    opts = s_sized ("fit=contain&sizes=50x50,20x40&background=%230000ff80");
    result = s_thumb_ok (in, &opts);
    cr_assert_eq (result.count, 2);
    cr_expect_eq (result.outputs [1].width, 20);
    cr_expect_eq (result.outputs [1].height, 40);
    s_pixel (&result, 1, 10, 1, pixel);
    cr_expect (pixel [2] == 255 && pixel [3] == 128, "border %g,%g,%g,%g", pixel [0], pixel [1],
               pixel [2], pixel [3]);
    imgp_thumb_result_clear (&result);
    bytes_free (&in);
}

//  A 200x100 image, left half black, right half white (vertical: 100x200,
//  black over white).
static bytes_t
s_halves (bool vertical)
{
    VipsImage *black = NULL, *white = NULL, *joined = NULL, *srgb = NULL;
    cr_assert_eq (vips_black (&black, 100, 100, "bands", 3, NULL), 0);
    cr_assert_eq (vips_linear1 (black, &white, 1.0, 255.0, NULL), 0);
    cr_assert_eq (vips_join (black, white, &joined, vertical ? VIPS_DIRECTION_VERTICAL
                                                            : VIPS_DIRECTION_HORIZONTAL, NULL), 0);
    VipsImage *cast = NULL;
    cr_assert_eq (vips_cast_uchar (joined, &cast, NULL), 0);
    cr_assert_eq (vips_copy (cast, &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
    g_object_unref (black);
    g_object_unref (white);
    g_object_unref (joined);
    g_object_unref (cast);
    return s_encode (srgb, ".png");
}

//  The mean of rendition 0, 0 black .. 255 white.
static double
s_mean (const imgp_thumb_result_t *result)
{
    VipsImage *image = s_decode (result->data, result->outputs [0].size);
    double mean = 0;
    cr_assert_eq (vips_avg (image, &mean, NULL), 0);
    g_object_unref (image);
    return mean;
}

Test (renditions, cover_crops_by_gravity, .init = s_init)
{
    bytes_t wide = s_halves (false);        //  200x100: black | white
    struct { const char *query; double low, high; } cases [] = {
        { "fit=cover&width=50&gravity=west", 0, 1 },
        { "fit=cover&width=50&gravity=north-west", 0, 1 },
        { "fit=cover&width=50&gravity=east", 254, 255 },
        { "fit=cover&width=50&gravity=south-east", 254, 255 },
        { "fit=cover&width=50", 100, 155 },           //  centre: half and half
        { "fit=cover&width=50&gravity=north", 100, 155 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        imgp_opts_t opts = s_sized (cases [i].query);
        imgp_thumb_result_t result = s_thumb_ok (wide, &opts);
        s_check_output (&result, 50, 50);
        double mean = s_mean (&result);
        cr_expect (mean >= cases [i].low && mean <= cases [i].high, "%s: mean %g not in %g..%g",
                   cases [i].query, mean, cases [i].low, cases [i].high);
        fprintf (stderr, "cover: %s on black|white 200x100: 50x50, mean %.1f\n",
                 cases [i].query, mean);
        imgp_thumb_result_clear (&result);
    }
    bytes_t tall = s_halves (true);         //  100x200: black over white
    imgp_opts_t opts = s_sized ("fit=cover&sizes=40x40,10x20&gravity=south");
    imgp_thumb_result_t result = s_thumb_ok (tall, &opts);
    cr_assert_eq (result.count, 2);
    cr_expect_eq (result.outputs [1].width, 10);
    cr_expect_eq (result.outputs [1].height, 20);
    cr_expect_geq (s_mean (&result), 254, "south of black over white is white");
    imgp_thumb_result_clear (&result);
    //  smart crops: the box, whatever they pick
    const char *smart [] = { "fit=cover&width=60&height=30&gravity=attention",
                             "fit=cover&width=30&height=60&gravity=entropy" };
    bytes_t photo = s_fixture (300, 200, 3, ".jpg");
    for (int i = 0; i < 2; i++) {
        opts = s_sized (smart [i]);
        result = s_thumb_ok (photo, &opts);
        s_check_output (&result, opts.width, opts.height);
        imgp_thumb_result_clear (&result);
    }
    bytes_free (&photo);
    bytes_free (&tall);
    bytes_free (&wide);
}

Test (renditions, auto_is_the_family, .init = s_init)
{
    bytes_t photo = s_fixture (120, 80, 3, ".jpg");
    imgp_opts_t opts = s_sized ("format=auto&sizes=60x60,30x30");
    imgp_thumb_result_t result = s_thumb_ok (photo, &opts);
    cr_expect_eq (result.format, IMGP_FORMAT_JPEG);
    cr_expect_eq (result.outputs [1].format, IMGP_FORMAT_JPEG);
    s_check_encoded_as (&result, "VipsForeignLoadJpeg");
    imgp_thumb_result_clear (&result);
    bytes_t alpha = s_encode (s_image (120, 80, 4, 128), ".png");
    result = s_thumb_ok (alpha, &opts);
    cr_expect_eq (result.format, IMGP_FORMAT_PNG);
    s_check_encoded_as (&result, "VipsForeignLoadPng");
    imgp_thumb_result_clear (&result);
    bytes_free (&alpha);
    bytes_free (&photo);
}

//  Three 90x60 frames, saved as an animated GIF.
static bytes_t
s_animation (void)
{
    VipsImage *image = s_image (90, 180, 3, 255);
    vips_image_set_int (image, VIPS_META_PAGE_HEIGHT, 60);
    vips_image_set_int (image, VIPS_META_N_PAGES, 3);
    return s_encode (image, ".gif");
}

//  Frames in rendition 0 (decoded with every page).
static int
s_frames (const imgp_thumb_result_t *result)
{
    VipsImage *image = vips_image_new_from_buffer (result->data, result->outputs [0].size, "",
                                                   "n", -1, NULL);
    cr_assert_not_null (image);
    int page_height = vips_image_get_page_height (image);
    cr_expect_eq (page_height, result->outputs [0].height);
    int frames = vips_image_get_height (image) / page_height;
    g_object_unref (image);
    return frames;
}

Test (renditions, animated_webp_keeps_the_frames, .init = s_init)
{
    bytes_t gif = s_animation ();
    imgp_opts_t opts = s_sized ("animated=true&format=webp&sizes=30x30,45x45");
    imgp_thumb_result_t result = s_thumb_ok (gif, &opts);
    cr_expect (result.animated);
    cr_expect_eq (result.width, 30);
    cr_expect_eq (result.height, 20);
    cr_expect_eq (result.outputs [1].height, 30);
    int frames = s_frames (&result);
    cr_expect_eq (frames, 3, "%d frames", frames);
    const char *reason = NULL;
    cr_expect_eq (imgp_magic_check (result.data, result.outputs [0].size, IMGP_FORMAT_WEBP, 30, 20,
                                    &reason), 0, "the broker's check: %s", reason);
    fprintf (stderr, "animated: 3-frame 90x60 GIF, animated=true webp 30x30: %dx%d, %d frames, "
             "%zu bytes\n", result.width, result.height, frames, result.outputs [0].size);
    imgp_thumb_result_clear (&result);
    //  cover by centre cuts every frame, fill stretches every frame
    opts = s_sized ("animated=true&format=webp&fit=cover&width=30");
    result = s_thumb_ok (gif, &opts);
    cr_expect_eq (result.width, 30);
    cr_expect_eq (result.height, 30);
    cr_expect_eq (s_frames (&result), 3);
    imgp_thumb_result_clear (&result);
    opts = s_sized ("animated=true&format=webp&fit=fill&width=20&height=50");
    result = s_thumb_ok (gif, &opts);
    cr_expect_eq (result.height, 50);
    cr_expect_eq (s_frames (&result), 3);
    imgp_thumb_result_clear (&result);
    //  contain pads every frame, a compass gravity cuts every frame there
    opts = s_sized ("animated=true&format=webp&fit=contain&width=30&background=%23ff0000");
    result = s_thumb_ok (gif, &opts);
    cr_expect (result.width == 30 && result.height == 30, "%dx%d", result.width, result.height);
    cr_expect_eq (s_frames (&result), 3);
    imgp_thumb_result_clear (&result);
    opts = s_sized ("animated=true&format=webp&fit=cover&width=20&height=60&gravity=east");
    result = s_thumb_ok (gif, &opts);
    cr_expect (result.width == 20 && result.height == 60, "%dx%d", result.width, result.height);
    cr_expect_eq (s_frames (&result), 3);
    imgp_thumb_result_clear (&result);
    //  a smart crop would pick another region per frame: the first frame
    opts = s_sized ("animated=true&format=webp&fit=cover&width=30&gravity=attention");
    result = s_thumb_ok (gif, &opts);
    cr_expect_eq (s_frames (&result), 1);
    imgp_thumb_result_clear (&result);
    //  auto keeps them as WebP; without animated=true, the first frame
    opts = s_sized ("animated=true&format=auto&width=30");
    result = s_thumb_ok (gif, &opts);
    cr_expect_eq (result.format, IMGP_FORMAT_WEBP);
    cr_expect_eq (s_frames (&result), 3);
    imgp_thumb_result_clear (&result);
    opts = s_sized ("format=webp&width=30");
    result = s_thumb_ok (gif, &opts);
    cr_expect_not (result.animated);
    cr_expect_eq (s_frames (&result), 1);
    imgp_thumb_result_clear (&result);
    //  a still image with animated=true is just a still image
    bytes_t still = s_fixture (90, 60, 3, ".png");
    opts = s_sized ("animated=true&format=auto&width=30");
    result = s_thumb_ok (still, &opts);
    cr_expect_eq (result.format, IMGP_FORMAT_JPEG);
    cr_expect_not (result.animated);
    imgp_thumb_result_clear (&result);
    bytes_free (&still);
    bytes_free (&gif);
}

Test (renditions, pixel_limit_counts_every_frame_when_animated)
{
    s_init_with (90 * 60 * 2, NULL);       //  two frames' worth
    bytes_t gif = s_animation ();
    imgp_opts_t opts = s_sized ("width=30&format=webp");
    s_expect_size (gif, opts, 30, 20);
    opts = s_sized ("width=30&format=webp&animated=true");
    imgp_thumb_result_t result = { 0 };
    cr_expect_eq (imgp_thumb_make (gif.data, gif.size, &opts, &result), -1);
    cr_expect_eq (result.code, IMGP_THUMB_TOO_MANY_PIXELS);
    cr_expect (strstr (result.message, "3 frames"), "%s", result.message);
    imgp_thumb_result_clear (&result);
    bytes_free (&gif);
}

//  The ETag of rendition `i` of `in` made with `query`.
static void
s_etag_of (bytes_t in, const char *query, int i, char *etag)
{
    imgp_opts_t opts = s_sized (query);
    imgp_thumb_result_t result = s_thumb_ok (in, &opts);
    cr_assert_gt (result.count, i);
    snprintf (etag, IMGP_ETAG_LEN + 1, "%s", result.outputs [i].etag);
    cr_assert_eq (strlen (etag), IMGP_ETAG_LEN);
    for (const char *c = etag; *c; c++)
        cr_assert ((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'), "%s", etag);
    imgp_thumb_result_clear (&result);
}

Test (renditions, etag_follows_source_options_and_box, .init = s_init)
{
    bytes_t in = s_fixture (120, 80, 3, ".jpg");
    char a [IMGP_ETAG_LEN + 1], b [IMGP_ETAG_LEN + 1];
    s_etag_of (in, "width=50&format=jpeg&quality=80", 0, a);
    s_etag_of (in, "width=50&format=jpeg&quality=80", 0, b);
    cr_expect_str_eq (a, b, "same source and options, same tag");
    const char *other [] = { "width=51&format=jpeg&quality=80", "width=50&format=jpeg&quality=81",
                             "width=50&format=webp&quality=80", "width=50&format=jpeg",
                             "width=50&format=jpeg&quality=80&fit=cover",
                             "width=50&format=jpeg&quality=80&enlarge=true",
                             "width=50&format=jpeg&quality=80&fit=contain&background=%23ffffff",
                             "width=50&format=jpeg&quality=80&fit=cover&gravity=east" };
    for (size_t i = 0; i < sizeof other / sizeof other [0]; i++) {
        s_etag_of (in, other [i], 0, b);
        cr_expect_str_neq (a, b, "%s has the tag of width=50&format=jpeg&quality=80", other [i]);
    }
    s_etag_of (in, "sizes=50x50,60x60&format=jpeg&quality=80", 0, b);
    cr_expect_str_eq (a, b, "a box's tag does not depend on the other boxes");
    s_etag_of (in, "sizes=50x50,60x60&format=jpeg&quality=80", 1, b);
    cr_expect_str_neq (a, b);
    //  one source byte more (after the JPEG's end: same pixels)
    bytes_t more = { g_malloc (in.size + 1), in.size + 1 };
    memcpy (more.data, in.data, in.size);
    ((uint8_t *) more.data) [in.size] = 0;
    s_etag_of (more, "width=50&format=jpeg&quality=80", 0, b);
    cr_expect_str_neq (a, b, "another source, another tag");
    fprintf (stderr, "etag: %s for width=50 jpeg q80; another trailing byte: %s\n", a, b);
    bytes_free (&more);
    bytes_free (&in);
}

Test (renditions, dry_run_gives_one_pixel_per_box)
{
    imgp_log_init ("test_resizer", false);
    imgp_thumb_config_t config = { .max_pixels = DEFAULT_MAX_PIXELS, .vips_threads = 1,
                                   .time_limit_ms = DEFAULT_TIME_LIMIT_MS, .dry_run = true };
    cr_assert_eq (imgp_thumb_init (&config), 0);
    imgp_opts_t opts = s_sized ("sizes=10x10,20x20,30x30&format=auto");
    imgp_thumb_result_t result = { 0 };
    cr_assert_eq (imgp_thumb_make ((const uint8_t *) "x", 1, &opts, &result), 0);
    cr_assert_eq (result.count, 3);
    for (int i = 0; i < 3; i++) {
        const char *reason = NULL;
        cr_expect_eq (imgp_magic_check ((uint8_t *) result.data + result.outputs [i].offset,
                                        result.outputs [i].size, IMGP_FORMAT_JPEG, 1, 1, &reason),
                      0, "%s", reason);
        cr_expect_eq (result.outputs [i].box.width, 10 * (i + 1));
        cr_expect_eq (strlen (result.outputs [i].etag), IMGP_ETAG_LEN);
    }
    imgp_thumb_result_clear (&result);
    config.dry_run = false;
    cr_assert_eq (imgp_thumb_init (&config), 0);
}

Test (renditions, done_carries_every_rendition, .init = s_init, .timeout = 30)
{
    fake_broker_t broker;
    s_broker_start (&broker, 100, 1 << 20);
    char id [IMGP_ID_LEN + 1];
    cr_assert_eq (imgp_id_new (id), 0);
    bytes_t image = s_fixture (300, 200, 3, ".jpg");
    imgp_msg_t *job = imgp_msg_new (IMGP_MSG_JOB);
    snprintf (job->id, sizeof job->id, "%s", id);
    job->attempts = 1;
    job->opts = s_sized ("sizes=100x100,50x50&fit=cover&format=auto");
    imgp_msg_set_data (job, image.data, image.size, imgp_thumb_free);
    const char *name = imgp_resizer_name (broker.resizer);
    job->routing_id = zframe_new (name, strlen (name));
    cr_assert_eq (imgp_msg_send (&job, broker.router), 0);
    s_expect_started (&broker, id);
    imgp_msg_t *done = s_expect (&broker, IMGP_MSG_DONE, id);
    cr_assert_eq (done->result_count, 2);
    int64_t sum = 0;
    const uint8_t *data = imgp_msg_data (done);
    for (int i = 0; i < 2; i++) {
        const imgp_result_t *result = &done->results [i];
        cr_expect_eq (result->format, IMGP_FORMAT_JPEG);
        cr_expect_eq (result->width, 100 / (i + 1));
        cr_expect_eq (result->box.width, 100 / (i + 1));
        cr_expect_eq (strlen (result->etag), IMGP_ETAG_LEN);
        const char *reason = NULL;
        cr_expect_eq (imgp_magic_check (data + sum, (size_t) result->bytes, result->format,
                                        result->width, result->height, &reason), 0, "%s", reason);
        sum += result->bytes;
    }
    cr_expect_eq (sum, (int64_t) imgp_msg_size (done));
    imgp_msg_destroy (&done);
    s_broker_stop (&broker);
}

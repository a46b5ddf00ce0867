/*  imgp_thumb — see imgp_thumb.h for what and why.

    The pipeline, and why each step is where it is:

    1. vips_foreign_find_load_buffer() names the loader from the magic bytes
       only. Anything not on the allow-list stops here, before a loader runs.
       libvips' own block list (untrusted loaders, and every loader that is
       not allowed) is set too, so a loader we refused can never run by
       another path.
    2. A header-only open (sequential access: no pixels are decoded) gives
       width x height of the first page, checked against max_pixels. A PNG
       bomb or a GIF claiming 65535x65535 costs a few microseconds here and
       gigabytes after. The same header says whether the file embeds an
       ICC profile, which step 3 needs.
    3. vips_thumbnail_buffer() with the loader option string
       "fail_on=truncated" (its own "fail_on" argument does not reach the
       loader in 8.14), shrink-on-load, EXIF auto-rotate, first frame only
       (the loaders' default n=1; n=-1 for a kept animation), and sRGB out:
       - a file with an embedded profile is transformed from it to sRGB
         ("export_profile" "srgb"; without it 8.14 keeps the pixels in the
         embedded profile's space, and stripping the profile would leave
         the colours wrong);
       - a file without one is sRGB by convention (or grey, or CMYK, which
         the resize-space conversion turns into sRGB with libvips' CMYK
         profile), so no "export_profile": with it 8.14 takes every
         such image to XYZ and back through a new lcms transform. That
         cost 5.5-6 ms of the ~56 ms per corpus photo (tests/bench,
         2026-11-28) and was not even an identity: white came out
         250,253,253, the photos 2-7 levels off on average.
    4. The pixels are computed into memory, which runs the decode.
       Decoding is lazy, so truncated or corrupt data fails here, not in
       step 3; doing it before the encoder separates decode_error from
       encode_error. The thumbnail is at most IMGP_SIDE_MAX squared, so the
       copy is bounded. The whole thumbnail is one unit of libvips' work:
       one-row (or 16-row) units let the time limit act more often, but
       made every resize 2.2x slower on the corpus photos (tests/bench,
       2026-11-28), so the limit gets its say where libvips reports
       progress, and the broker's job timeout stays the outer bound.
    5. Encode with metadata stripped; JPEG has no alpha, so alpha is
       flattened onto white first.

    Renditions (several boxes, fit, gravity, background, animation): the
    source is decoded once. What libvips allows: shrink-on-load (JPEG's
    DCT scaling, WebP's, HEIF's thumbnails) happens only inside
    vips_thumbnail_buffer, for one target. So with one box whose fit
    libvips' thumbnail does itself (inside, fill, cover by centre,
    attention or entropy: its "crop" is vips_smartcrop) that call makes
    the rendition, exactly as before renditions; otherwise it decodes to
    the smallest image every box can be made from (the largest scale any
    box needs, never above the source's pixels), and each box is then
    vips_thumbnail_image of those pixels in memory: no second decode.
    Cover with a compass gravity scales to cover the box and cuts it out
    with vips_gravity; contain pads with vips_gravity and the background
    (alpha added when the background is not opaque; JPEG flattens it on
    white). An animation (animated=true, webp or auto) is loaded with
    n=-1 and made per box by vips_thumbnail_buffer, which resizes frame by
    frame (page-height), because vips_thumbnail_image would take the frame
    strip in memory for one tall image; its crop too takes the strip as
    one image, so cover decodes at the cover scale and contain fits, then
    each frame is cut or padded on its own and the strip joined again
    (s_per_frame). A smart crop (attention, entropy) would choose another
    region per frame: it gives the first frame. Each
    rendition gets an ETag: SHA-1 of the source's SHA-1, its options,
    IMGP_VERSION and vips_version_string(), so an upgrade changes tags.

    The time limit: libvips emits "eval" on an image that has progress
    reporting on (vips_image_set_progress) after each unit of work of the
    sink that computes it, and checks its kill flag there. Our handler sets
    the flag once the job's deadline has passed, so the sink (step 4, or
    the encoder's) returns -1 and the job fails with code "timeout".

    libvips reports errors into a process-wide buffer; every failure path
    turns it into the result message and clears it, so one job's errors
    never leak into the next job's message.
*/
#include "imgp_thumb.h"

#include <assert.h>
#include <ctype.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <vips/vips.h>

#include "imgp_log.h"

//  Encoder defaults of libvips 8.14, used when opts->quality is 0.
#define S_JPEG_Q_DEFAULT 75
#define S_WEBP_Q_DEFAULT 75
#define S_AVIF_Q_DEFAULT 50

//  A loader family we know by name: the prefix of its libvips class names
//  ("VipsForeignLoadJpeg" matches VipsForeignLoadJpegBuffer).
typedef struct {
    const char *name;           //  name in --allow-loaders
    const char *class_prefix;   //  libvips class, for matching and blocking
    bool always;                //  on without being named (the safe set)
    const char *label;          //  what a user calls such files, for messages
} s_loader_t;

static const s_loader_t s_loaders [] = {
    { "jpeg", "VipsForeignLoadJpeg", true, "JPEG images" },
    { "png", "VipsForeignLoadPng", true, "PNG images" },
    { "webp", "VipsForeignLoadWebp", true, "WebP images" },
    { "gif", "VipsForeignLoadNsgif", true, "GIF images" },
    { "tiff", "VipsForeignLoadTiff", true, "TIFF images" },
    { "heif", "VipsForeignLoadHeif", true, "HEIF/AVIF images" },
    { "svg", "VipsForeignLoadSvg", false, "SVG images" },
    { "pdf", "VipsForeignLoadPdf", false, "PDF documents" },
    { "magick", "VipsForeignLoadMagick", false, "Images that only ImageMagick reads" },
};
#define S_LOADERS (sizeof s_loaders / sizeof s_loaders [0])

//  Process-wide configuration, written by imgp_thumb_init only.
static int64_t s_max_pixels = 100000000;    //  pixel limit of the first page
static bool s_allowed [S_LOADERS];          //  loader families that may run

//  Job id that libvips log lines are tagged with.
static GMutex s_job_lock;                   //  guards s_job
static char s_job [IMGP_ID_LEN + 1];        //  "" when no job is running

static const char *s_code_names [] = {
    "ok", "unsupported_format", "too_many_pixels", "decode_error",
    "encode_error", "internal", "timeout"
};

static int s_time_limit_ms = 0;             //  per image; 0: none

//  --dry-run: the 1x1 image of each format, made once by imgp_thumb_init.
#define S_FORMATS (IMGP_FORMAT_AVIF + 1)
typedef struct {
    void *data;                             //  encoded image (g_malloc'd)
    size_t size;                            //  bytes in data
} s_fixed_t;
static bool s_dry_run = false;              //  every job gets a fixed image
static s_fixed_t s_fixed [S_FORMATS];       //  indexed by imgp_format_t

//  When the image being made must be given up. On the stack of
//  imgp_thumb_make; the handler runs in that thread (libvips signals from
//  the thread that runs the sink), and is disconnected before return.
typedef struct {
    gint64 at;                              //  g_get_monotonic_time () µs; 0: never
    bool passed;                            //  the handler stopped libvips
} s_deadline_t;


//  --------------------------------------------------------------------------
//  Logging: the "VIPS" GLib domain into imgp_log, tagged with the job

void
imgp_thumb_set_job (const char *id)
{
    g_mutex_lock (&s_job_lock);
    snprintf (s_job, sizeof s_job, "%s", id ? id : "");
    g_mutex_unlock (&s_job_lock);
}

static void
s_vips_log (const gchar *domain, GLogLevelFlags flags, const gchar *message, gpointer hint)
{
    (void) domain;
    (void) hint;
    imgp_log_level_t level = IMGP_LOG_DEBUG;        //  g_info, g_debug: tracing
    if (flags & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
        level = IMGP_LOG_ERROR;
    else
    if (flags & G_LOG_LEVEL_WARNING)
        level = IMGP_LOG_WARN;
    else
    if (flags & G_LOG_LEVEL_MESSAGE)
        level = IMGP_LOG_INFO;
    if (level == IMGP_LOG_DEBUG && !imgp_log_verbose ())
        return;

    char job [IMGP_ID_LEN + 1];
    g_mutex_lock (&s_job_lock);
    snprintf (job, sizeof job, "%s", *s_job ? s_job : "-");
    g_mutex_unlock (&s_job_lock);
    imgp_log (level, "job=%s event=vips_log message=\"%s\"", job, message ? message : "");
}


//  --------------------------------------------------------------------------
//  Configuration

static int
s_loader_find (const char *name, size_t len)
{
    for (size_t i = 0; i < S_LOADERS; i++)
        if (strlen (s_loaders [i].name) == len
        &&  strncasecmp (s_loaders [i].name, name, len) == 0)
            return (int) i;
    return -1;
}

//  Fill `allowed` from the always-on set plus the comma list `extra`.
static int
s_parse_allowed (const char *extra, bool allowed [S_LOADERS])
{
    for (size_t i = 0; i < S_LOADERS; i++)
        allowed [i] = s_loaders [i].always;

    const char *p = extra ? extra : "";
    while (*p) {
        while (*p == ',' || isspace ((unsigned char) *p))
            p++;
        size_t len = 0;
        while (p [len] && p [len] != ',' && !isspace ((unsigned char) p [len]))
            len++;
        if (len == 0)
            break;
        int k = s_loader_find (p, len);
        if (k < 0) {
            imgp_error ("event=config_error option=allow-loaders value=\"%.*s\" reason=\"unknown "
                        "loader (known: svg, pdf, magick)\"", (int) len, p);
            return -1;
        }
        allowed [k] = true;
        p += len;
    }
    return 0;
}

//  Block every loader, then unblock the allowed ones, so libvips itself
//  refuses what we refuse even if a path skipped our own check.
static void
s_apply_blocks (void)
{
    vips_block_untrusted_set (TRUE);
    vips_operation_block_set ("VipsForeignLoad", TRUE);
    for (size_t i = 0; i < S_LOADERS; i++)
        if (s_allowed [i])
            vips_operation_block_set (s_loaders [i].class_prefix, FALSE);
}

//  glibc's allocator, set for a process that decodes one big image after
//  another. libjpeg asks for the coefficient arrays of a progressive JPEG
//  at once and zeroes them: tens of MB a photo (a 24 MP one: ~50 MB). With
//  glibc's defaults they kept landing on fresh pages, which the kernel
//  faults in and zeroes before libjpeg zeroes them again:
//  - up to 8 arenas per core: the resizer's threads (libvips workers,
//    libzmq's, the heartbeat) spread the jobs over many heaps;
//  - a dynamic mmap threshold and a trim threshold of twice that: a
//    buffer over the threshold is mapped and unmapped per job, and free
//    memory at the top of the heap goes back to the kernel between jobs.
//  So: one arena per libvips worker thread, buffers up to 32 MB (glibc's
//  maximum threshold) from the heap, and up to 64 MB of free heap kept
//  between jobs. On the 36 corpus jobs of tests/bench (2026-11-28): page
//  faults 80-108k -> 18k, system time 0.7-1.0 s -> 0.2-0.3 s, resizer
//  time per image down 15-20%, peak RSS 230-250 MB -> 100 MB. What a job
//  frees stays with the process, bounded by the trim threshold above
//  the heap in use, until the resizer has been idle a while and calls
//  imgp_thumb_trim. Must run before those threads first allocate:
//  imgp_thumb_init comes before any socket or image.
static void
s_tune_malloc (int threads)
{
#if defined (__GLIBC__)
    mallopt (M_ARENA_MAX, threads);
    mallopt (M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt (M_TRIM_THRESHOLD, 64 * 1024 * 1024);
#else
    (void) threads;
#endif
}

static int s_dry_run_init (void);

int
imgp_thumb_init (const imgp_thumb_config_t *config)
{
    assert (config);
    assert (config->max_pixels > 0);
    assert (config->vips_threads >= 1);
    assert (config->time_limit_ms >= 0);

    s_tune_malloc (config->vips_threads);
    if (VIPS_INIT ("imgpipe-resizer")) {
        imgp_error ("event=config_error reason=vips_init message=\"%s\"",
                    vips_error_buffer ());
        vips_error_clear ();
        return -1;
    }
    bool allowed [S_LOADERS];
    if (s_parse_allowed (config->allow_loaders, allowed))
        return -1;
    memcpy (s_allowed, allowed, sizeof s_allowed);

    static bool log_routed = false;
    if (!log_routed)
        g_log_set_handler ("VIPS", G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION,
                           s_vips_log, NULL);
    log_routed = true;
    s_max_pixels = config->max_pixels;
    s_time_limit_ms = config->time_limit_ms > 0 ? config->time_limit_ms : 0;
    s_apply_blocks ();
    //  Every image is new: caching operations only holds memory.
    vips_cache_set_max (0);
    //  1 by default: the thumbnail is computed as one unit of work (step
    //  4), so a second libvips thread has only the encoder's small share to
    //  take. Measured 2026-12-06, two resizers on 2 cores side by side
    //  (one --vips-threads 1, one 2, same broker, corpus photos): jobs done
    //  286 vs 290, CPU per image the same within noise; with 2, peak RSS
    //  145-172 MB instead of 94-105, and 55-91 MB instead of 37 once idle.
    vips_concurrency_set (config->vips_threads);
    s_dry_run = config->dry_run;
    return s_dry_run ? s_dry_run_init () : 0;
}


//  --------------------------------------------------------------------------
//  Results and errors

const char *
imgp_thumb_code_name (imgp_thumb_code_t code)
{
    if ((size_t) code < sizeof s_code_names / sizeof s_code_names [0])
        return s_code_names [code];
    return "internal";
}

void
imgp_thumb_thread_done (void)
{
    vips_thread_shutdown ();
}

void
imgp_thumb_trim (void)
{
#if defined (__GLIBC__)
    malloc_trim (0);
#endif
}

void
imgp_thumb_free (void *data, void *hint)
{
    (void) hint;
    g_free (data);
}

void
imgp_thumb_result_clear (imgp_thumb_result_t *result)
{
    g_free (result->data);
    memset (result, 0, sizeof *result);
}

//  Set the failure `code` and message, clear libvips' error buffer; returns
//  -1 for the caller to pass on.
static int
s_fail (imgp_thumb_result_t *result, imgp_thumb_code_t code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (imgp_thumb_result_t *result, imgp_thumb_code_t code, const char *format, ...)
{
    result->code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (result->message, sizeof result->message, format, args);
    va_end (args);
    vips_error_clear ();
    return -1;
}

//  The first line of libvips' error buffer, trimmed, as the detail of a
//  message ("VipsJpeg: Premature end of input file"). Borrowed from `buf`.
static const char *
s_vips_reason (char *buf, size_t size)
{
    snprintf (buf, size, "%s", vips_error_buffer ());
    buf [strcspn (buf, "\r\n")] = '\0';
    //  The message goes on the wire as JSON text: printable ASCII only.
    for (char *c = buf; *c; c++)
        if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f)
            *c = '?';
    size_t len = strlen (buf);
    while (len > 0 && (isspace ((unsigned char) buf [len - 1]) || buf [len - 1] == '.'))
        buf [--len] = '\0';
    if (len == 0)
        snprintf (buf, size, "no detail from libvips");
    return buf;
}

//  Pixels in words a user reads at a glance: "400 MP", "2.5 MP", "1000 pixels".
static void
s_pixels_text (int64_t pixels, char *buf, size_t size)
{
    if (pixels >= 10000000)
        snprintf (buf, size, "%.0f MP", pixels / 1e6);
    else
    if (pixels >= 100000)
        snprintf (buf, size, "%.1f MP", pixels / 1e6);
    else
        snprintf (buf, size, "%lld pixels", (long long) pixels);
}


//  --------------------------------------------------------------------------
//  The time limit

static void
s_on_eval (VipsImage *image, VipsProgress *progress, void *user)
{
    (void) progress;
    s_deadline_t *deadline = user;
    if (g_get_monotonic_time () < deadline->at)
        return;
    deadline->passed = true;
    vips_image_set_kill (image, TRUE);
}

//  Report progress of `image` to the deadline; a fresh image only (libvips
//  turns reporting off when asked for it on an image that already has it).
static void
s_watch (VipsImage *image, s_deadline_t *deadline)
{
    if (!deadline->at)
        return;
    vips_image_set_progress (image, TRUE);
    g_signal_connect (image, "eval", G_CALLBACK (s_on_eval), deadline);
}

static void
s_unwatch (VipsImage *image, s_deadline_t *deadline)
{
    g_signal_handlers_disconnect_by_data (image, deadline);
}

static int
s_fail_timeout (imgp_thumb_result_t *result)
{
    return s_fail (result, IMGP_THUMB_TIMEOUT,
                   "resizing took too long: gave up after %d ms", s_time_limit_ms);
}


//  --------------------------------------------------------------------------
//  The pipeline steps

//  Step 1: which loader would run, and may it?
static int
s_check_loader (const uint8_t *buf, size_t len, imgp_thumb_result_t *result)
{
    if (len == 0)
        return s_fail (result, IMGP_THUMB_UNSUPPORTED_FORMAT, "the file is empty");

    const char *class_name = vips_foreign_find_load_buffer (buf, len);
    if (!class_name)
        return s_fail (result, IMGP_THUMB_UNSUPPORTED_FORMAT,
                       "not an image in a supported format "
                       "(JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF)");
    result->loader = vips_nickname_find (g_type_from_name (class_name));
    for (size_t i = 0; i < S_LOADERS; i++)
        if (g_str_has_prefix (class_name, s_loaders [i].class_prefix)) {
            if (s_allowed [i])
                return 0;
            return s_fail (result, IMGP_THUMB_UNSUPPORTED_FORMAT,
                           "%s are not accepted here (supported: JPEG, PNG, WebP, GIF, TIFF, "
                           "HEIF/AVIF)", s_loaders [i].label);
        }
    return s_fail (result, IMGP_THUMB_UNSUPPORTED_FORMAT,
                   "this image format (%s) is not accepted here (supported: JPEG, PNG, WebP, "
                   "GIF, TIFF, HEIF/AVIF)", result->loader ? result->loader : class_name);
}

//  What the header says about the source, for the pixel limit and the plan.
typedef struct {
    int width;              //  displayed width of the first page (EXIF rotation applied)
    int height;             //  displayed height of the first page
    int pages;              //  pages (frames) in the file, >= 1
    bool profiled;          //  embeds an ICC profile (see step 3)
} s_source_t;

//  Step 2: read the header only and check the pixel count: of the first
//  page, or of every frame when the frames will be decoded (`frames`).
static int
s_check_header (const uint8_t *buf, size_t len, bool frames, s_source_t *source,
                imgp_thumb_result_t *result)
{
    VipsImage *header = vips_image_new_from_buffer (buf, len, "",
                                                    "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (!header) {
        char reason [IMGP_MESSAGE_MAX];
        return s_fail (result, IMGP_THUMB_DECODE_ERROR, "the image header cannot be read: %s",
                       s_vips_reason (reason, sizeof reason));
    }

    result->in_width = vips_image_get_width (header);
    result->in_height = vips_image_get_page_height (header);
    bool swap = vips_image_get_orientation_swap (header);
    source->width = swap ? result->in_height : result->in_width;
    source->height = swap ? result->in_width : result->in_height;
    source->pages = vips_image_get_n_pages (header);
    source->profiled = vips_image_get_typeof (header, VIPS_META_ICC_NAME) != 0;
    g_object_unref (header);

    int pages = frames && source->pages > 1 ? source->pages : 1;
    int64_t pixels = (int64_t) result->in_width * result->in_height * pages;
    if (pixels <= s_max_pixels)
        return 0;
    char have [32], limit [32];
    s_pixels_text (pixels, have, sizeof have);
    s_pixels_text (s_max_pixels, limit, sizeof limit);
    if (pages > 1)
        return s_fail (result, IMGP_THUMB_TOO_MANY_PIXELS, "animation is %d frames of %dx%d = "
                       "%s, over the limit of %s", pages, result->in_width, result->in_height,
                       have, limit);
    return s_fail (result, IMGP_THUMB_TOO_MANY_PIXELS, "image is %dx%d = %s, over the limit of %s",
                   result->in_width, result->in_height, have, limit);
}

//  Copy the rows of a computed region into the memory image `a`.
static int
s_copy_rows (VipsRegion *region, void *seq, void *a, void *b, gboolean *stop)
{
    (void) seq;
    (void) b;
    (void) stop;
    VipsImage *memory = a;
    VipsRect *rect = &region->valid;
    size_t bytes = VIPS_IMAGE_SIZEOF_PEL (memory) * (size_t) rect->width;
    for (int y = rect->top; y < VIPS_RECT_BOTTOM (rect); y++)
        memcpy (VIPS_IMAGE_ADDR (memory, rect->left, y), VIPS_REGION_ADDR (region, rect->left, y),
                bytes);
    return 0;
}

//  The fields an animation needs to be saved as one (frame height,
//  per-frame delays, loop count): the only metadata kept, from `from`.
static void
s_copy_animation (VipsImage *from, VipsImage *to)
{
    int page_height = vips_image_get_page_height (from);
    if (page_height <= 0 || page_height >= vips_image_get_height (from))
        return;
    vips_image_set_int (to, VIPS_META_PAGE_HEIGHT, page_height);
    int *delay = NULL, n = 0, loop = 0;
    if (vips_image_get_typeof (from, "delay")
    &&  vips_image_get_array_int (from, "delay", &delay, &n) == 0)
        vips_image_set_array_int (to, "delay", delay, n);
    if (vips_image_get_typeof (from, "loop") && vips_image_get_int (from, "loop", &loop) == 0)
        vips_image_set_int (to, "loop", loop);
    vips_error_clear ();
}

//  Step 4: compute `image` into a new memory image, as one unit of work
//  (see the file comment for why not row by row). Returns the image, or
//  NULL with libvips' error set.
static VipsImage *
s_materialise (VipsImage *image, s_deadline_t *deadline)
{
    VipsImage *memory = vips_image_new_memory ();
    if (!memory)
        return NULL;
    vips_image_init_fields (memory, vips_image_get_width (image), vips_image_get_height (image),
                            vips_image_get_bands (image), vips_image_get_format (image),
                            vips_image_get_coding (image), vips_image_get_interpretation (image),
                            vips_image_get_xres (image), vips_image_get_yres (image));
    s_copy_animation (image, memory);
    int rc = vips_image_write_prepare (memory);
    if (rc == 0) {
        s_watch (image, deadline);
        rc = vips_sink_tile (image, vips_image_get_width (image), vips_image_get_height (image),
                             NULL, s_copy_rows, NULL, memory, NULL);
        s_unwatch (image, deadline);
    }
    if (rc)
        g_object_unref (memory);
    return rc ? NULL : memory;
}

//  How the one decode (vips_thumbnail_buffer) is asked: for a single box
//  whose fit libvips' thumbnail does itself, the rendition directly;
//  otherwise an image big enough for every box, resized per box after.
typedef struct {
    int width;              //  the box of the decode
    int height;
    VipsSize size;          //  its size mode
    VipsInteresting crop;   //  its crop (fit=cover by centre, attention, entropy)
    bool final;             //  the decode is the rendition (before contain's padding)
} s_plan_t;

//  The smallest whole number >= x > 0 (no libm for one call).
static int
s_ceil (double x)
{
    int n = (int) x;
    return n < x ? n + 1 : n;
}

static VipsSize
s_size_mode (const imgp_opts_t *opts)
{
    if (opts->fit == IMGP_FIT_FILL)
        return VIPS_SIZE_FORCE;
    return opts->enlarge ? VIPS_SIZE_BOTH : VIPS_SIZE_DOWN;
}

//  The crop libvips' thumbnail does for fit=cover, or NONE when the
//  gravity is a compass point (cropped by s_resize with vips_gravity).
static VipsInteresting
s_interesting (const imgp_opts_t *opts)
{
    if (opts->fit != IMGP_FIT_COVER)
        return VIPS_INTERESTING_NONE;
    switch (opts->gravity) {
        case IMGP_GRAVITY_CENTRE: return VIPS_INTERESTING_CENTRE;
        case IMGP_GRAVITY_ATTENTION: return VIPS_INTERESTING_ATTENTION;
        case IMGP_GRAVITY_ENTROPY: return VIPS_INTERESTING_ENTROPY;
        default: return VIPS_INTERESTING_NONE;
    }
}

static bool
s_compass_cover (const imgp_opts_t *opts)
{
    return opts->fit == IMGP_FIT_COVER && s_interesting (opts) == VIPS_INTERESTING_NONE;
}

//  The scale from the source that box `box` needs: inside and contain
//  fit, cover and fill cover the box.
static double
s_box_scale (const imgp_opts_t *opts, imgp_size_t box, int width, int height)
{
    double sx = (double) box.width / width, sy = (double) box.height / height;
    bool fits = opts->fit == IMGP_FIT_INSIDE || opts->fit == IMGP_FIT_CONTAIN;
    return fits ? (sx < sy ? sx : sy) : (sx > sy ? sx : sy);
}

//  The decode box that covers `box` (aspect kept, not past the source's
//  pixels unless enlarge), made exactly that size (FORCE: off by under a
//  pixel at most, against a short side after rounding).
static s_plan_t
s_plan_cover (const imgp_opts_t *opts, const s_source_t *source, imgp_size_t box)
{
    double scale = s_box_scale (opts, box, source->width, source->height);
    if (!opts->enlarge && scale > 1.0)
        scale = 1.0;
    int width = s_ceil (source->width * scale), height = s_ceil (source->height * scale);
    return (s_plan_t) { width > 0 ? width : 1, height > 0 ? height : 1, VIPS_SIZE_FORCE,
                        VIPS_INTERESTING_NONE, true };
}

//  The plan for `boxes` boxes from box `first` on (one decode serves them
//  all; an animation is decoded per box, `frames`, see s_render_all).
static s_plan_t
s_plan (const imgp_opts_t *opts, const s_source_t *source, int first, int boxes, bool frames)
{
    imgp_size_t box = imgp_opts_box (opts, first);
    //  libvips' thumbnail crops an animation's whole strip as one image:
    //  the frames are cut one by one after (s_per_frame)
    if (frames && opts->fit == IMGP_FIT_COVER)
        return s_plan_cover (opts, source, box);
    if (boxes == 1 && !s_compass_cover (opts))
        return (s_plan_t) { box.width, box.height, s_size_mode (opts), s_interesting (opts),
                            true };
    //  The largest scale any box needs, never above the source's own
    //  pixels (a box that enlarges grows from those, in s_resize).
    double scale = 0;
    for (int i = first; i < first + boxes; i++) {
        double need = s_box_scale (opts, imgp_opts_box (opts, i), source->width,
                                   source->height);
        scale = need > scale ? need : scale;
    }
    scale = scale < 1.0 ? scale : 1.0;
    int width = s_ceil (source->width * scale), height = s_ceil (source->height * scale);
    return (s_plan_t) { width > 0 ? width : 1, height > 0 ? height : 1, VIPS_SIZE_DOWN,
                        VIPS_INTERESTING_NONE, false };
}

//  Step 3 and 4: the decode as `plan` says, into memory; every frame when
//  `frames`. Returns the image or NULL with the result set.
static VipsImage *
s_decode (const uint8_t *buf, size_t len, const s_source_t *source, const s_plan_t *plan,
          bool frames, s_deadline_t *deadline, imgp_thumb_result_t *result)
{
    char reason [IMGP_MESSAGE_MAX];
    VipsImage *thumb = NULL;
    //  libvips does not write to buf (the prototype predates const).
    if (vips_thumbnail_buffer ((void *) buf, len, &thumb, plan->width,
                               "height", plan->height,
                               "size", plan->size,
                               "crop", plan->crop,
                               "export_profile", source->profiled ? "srgb" : NULL,
                               "option_string", frames ? "fail_on=truncated,n=-1"
                                                       : "fail_on=truncated",
                               NULL)) {
        s_fail (result, IMGP_THUMB_DECODE_ERROR, "the image cannot be decoded: %s",
                s_vips_reason (reason, sizeof reason));
        return NULL;
    }
    //  Anything not already 8-bit sRGB (grey without a profile comes out
    //  B_W, an odd input the ICC export passed through) is converted, so
    //  every output is sRGB.
    if (vips_image_get_interpretation (thumb) != VIPS_INTERPRETATION_sRGB
    ||  vips_image_get_format (thumb) != VIPS_FORMAT_UCHAR) {
        VipsImage *srgb = NULL;
        int rc = vips_colourspace (thumb, &srgb, VIPS_INTERPRETATION_sRGB, NULL);
        g_object_unref (thumb);
        thumb = srgb;
        if (rc) {
            s_fail (result, IMGP_THUMB_DECODE_ERROR, "the image colours cannot be converted to "
                    "sRGB: %s", s_vips_reason (reason, sizeof reason));
            return NULL;
        }
    }
    VipsImage *memory = s_materialise (thumb, deadline);
    g_object_unref (thumb);
    //  Computed as one unit, libvips had no point to stop at on the way: a
    //  decode that ran past the limit is over it all the same.
    if (memory && deadline->at && g_get_monotonic_time () >= deadline->at) {
        g_clear_object (&memory);
        deadline->passed = true;
    }
    if (!memory && deadline->passed)
        s_fail_timeout (result);
    else
    if (!memory)
        s_fail (result, IMGP_THUMB_DECODE_ERROR, "the image data is truncated or corrupt: %s",
                s_vips_reason (reason, sizeof reason));
    return memory;
}

static VipsCompassDirection
s_direction (imgp_gravity_t gravity)
{
    switch (gravity) {
        case IMGP_GRAVITY_NORTH: return VIPS_COMPASS_DIRECTION_NORTH;
        case IMGP_GRAVITY_NORTH_EAST: return VIPS_COMPASS_DIRECTION_NORTH_EAST;
        case IMGP_GRAVITY_EAST: return VIPS_COMPASS_DIRECTION_EAST;
        case IMGP_GRAVITY_SOUTH_EAST: return VIPS_COMPASS_DIRECTION_SOUTH_EAST;
        case IMGP_GRAVITY_SOUTH: return VIPS_COMPASS_DIRECTION_SOUTH;
        case IMGP_GRAVITY_SOUTH_WEST: return VIPS_COMPASS_DIRECTION_SOUTH_WEST;
        case IMGP_GRAVITY_WEST: return VIPS_COMPASS_DIRECTION_WEST;
        case IMGP_GRAVITY_NORTH_WEST: return VIPS_COMPASS_DIRECTION_NORTH_WEST;
        default: return VIPS_COMPASS_DIRECTION_CENTRE;
    }
}

//  fit=cover with a compass gravity: scale to cover the box (aspect kept,
//  not past the source unless enlarge), then cut the box out on that side
//  with vips_gravity (which crops when the box is smaller).
static int
s_cover_compass (VipsImage *in, VipsImage **out, const imgp_opts_t *opts, imgp_size_t box)
{
    int width = vips_image_get_width (in), height = vips_image_get_height (in);
    double scale = s_box_scale (opts, box, width, height);
    if (!opts->enlarge && scale > 1.0)
        scale = 1.0;
    int cover_w = (int) (width * scale + 0.5), cover_h = (int) (height * scale + 0.5);
    cover_w = cover_w > 0 ? cover_w : 1;
    cover_h = cover_h > 0 ? cover_h : 1;
    VipsImage *scaled = NULL;
    if (vips_thumbnail_image (in, &scaled, cover_w, "height", cover_h,
                              "size", VIPS_SIZE_FORCE, NULL))
        return -1;
    //  never larger than what there is: a small image is not padded
    int crop_w = box.width < cover_w ? box.width : cover_w;
    int crop_h = box.height < cover_h ? box.height : cover_h;
    int rc = vips_gravity (scaled, out, s_direction (opts->gravity), crop_w, crop_h,
                           "extend", VIPS_EXTEND_COPY, NULL);
    g_object_unref (scaled);
    return rc;
}

//  True when the decode is already box `box`'s rendition (the largest box,
//  often): libvips' resize at scale 1 still filters every pixel.
static bool
s_already (VipsImage *in, const imgp_opts_t *opts, imgp_size_t box)
{
    int width = vips_image_get_width (in), height = vips_image_get_height (in);
    if (opts->fit != IMGP_FIT_INSIDE && opts->fit != IMGP_FIT_CONTAIN)
        return width == box.width && height == box.height;
    bool fits = width <= box.width && height <= box.height;
    bool touches = width == box.width || height == box.height;
    return fits && (touches || !opts->enlarge);
}

//  One box from the decoded image `in` (a new reference in *out): the
//  same resize libvips' thumbnail does from a file, from pixels already
//  in memory, so no box decodes the source again.
static int
s_resize (VipsImage *in, VipsImage **out, const imgp_opts_t *opts, imgp_size_t box)
{
    if (s_already (in, opts, box)) {
        *out = in;
        g_object_ref (in);
        return 0;
    }
    if (s_compass_cover (opts))
        return s_cover_compass (in, out, opts, box);
    return vips_thumbnail_image (in, out, box.width, "height", box.height,
                                 "size", s_size_mode (opts), "crop", s_interesting (opts), NULL);
}

//  fit=contain: centre `in` on a box of its background (RGBA; an opaque
//  one on an image without alpha adds none). Returns a new reference.
static int
s_pad (VipsImage *in, VipsImage **out, const imgp_opts_t *opts, imgp_size_t box)
{
    const uint8_t *rgba = opts->background;
    bool alpha = vips_image_hasalpha (in) || rgba [3] != 255;
    VipsImage *base = in;
    g_object_ref (base);
    if (alpha && !vips_image_hasalpha (in)) {
        g_object_unref (base);
        if (vips_bandjoin_const1 (in, &base, 255.0, NULL))
            return -1;
    }
    VipsArrayDouble *background = vips_array_double_newv (alpha ? 4 : 3, (double) rgba [0],
                                                          (double) rgba [1], (double) rgba [2],
                                                          (double) rgba [3]);
    int rc = vips_gravity (base, out, VIPS_COMPASS_DIRECTION_CENTRE, box.width, box.height,
                           "extend", VIPS_EXTEND_BACKGROUND, "background", background, NULL);
    vips_area_unref (VIPS_AREA (background));
    g_object_unref (base);
    return rc;
}

//  fit=cover of an animation: the box cut out of one frame (already at
//  the cover scale, s_plan_cover) on the gravity's side.
static int
s_cover_cut (VipsImage *in, VipsImage **out, const imgp_opts_t *opts, imgp_size_t box)
{
    int width = vips_image_get_width (in), height = vips_image_get_height (in);
    return vips_gravity (in, out, s_direction (opts->gravity),
                         box.width < width ? box.width : width,
                         box.height < height ? box.height : height,
                         "extend", VIPS_EXTEND_COPY, NULL);
}

typedef int (s_frame_fn) (VipsImage *in, VipsImage **out, const imgp_opts_t *opts,
                          imgp_size_t box);

//  `fn` on every frame of an animation's strip (page-height), the frames
//  joined back into a strip of the new frame height; on a still image,
//  `fn` once. Returns 0 or -1 (libvips' error set).
static int
s_per_frame (VipsImage *in, VipsImage **out, s_frame_fn *fn, const imgp_opts_t *opts,
             imgp_size_t box)
{
    int width = vips_image_get_width (in), height = vips_image_get_height (in);
    int page_height = vips_image_get_page_height (in);
    if (page_height <= 0 || page_height >= height)
        return fn (in, out, opts, box);
    int count = height / page_height;
    VipsImage **frames = g_new0 (VipsImage *, count);
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        VipsImage *page = NULL;
        rc = vips_extract_area (in, &page, 0, i * page_height, width, page_height, NULL);
        if (rc == 0)
            rc = fn (page, &frames [i], opts, box);
        g_clear_object (&page);
    }
    VipsImage *strip = NULL;
    if (rc == 0)
        rc = vips_arrayjoin (frames, &strip, count, "across", 1, NULL);
    if (rc == 0)
        rc = vips_copy (strip, out, NULL);
    if (rc == 0)                //  a fresh image of ours: its metadata may change
        vips_image_set_int (*out, VIPS_META_PAGE_HEIGHT, vips_image_get_height (frames [0]));
    g_clear_object (&strip);
    for (int i = 0; i < count; i++)
        g_clear_object (&frames [i]);
    g_free (frames);
    return rc;
}

//  JPEG has no alpha channel: composite onto white. Returns a new reference.
static VipsImage *
s_flatten (VipsImage *image)
{
    if (!vips_image_hasalpha (image)) {
        g_object_ref (image);
        return image;
    }
    VipsArrayDouble *white = vips_array_double_newv (1, 255.0);
    VipsImage *flat = NULL;
    int rc = vips_flatten (image, &flat, "background", white, NULL);
    vips_area_unref (VIPS_AREA (white));
    return rc ? NULL : flat;
}

//  Remove every metadata item (EXIF, XMP, IPTC, ICC, comments...): the
//  savers' "strip" is not enough, 8.14.1's webpsave ignores it. Built-in
//  fields (width, height...) cannot be removed and are skipped by libvips.
//  An animation keeps what makes it one (frame height, delays, loop).
static void
s_strip_metadata (VipsImage *image)
{
    gchar **fields = vips_image_get_fields (image);
    for (gchar **f = fields; f && *f; f++)
        if (strcmp (*f, VIPS_META_PAGE_HEIGHT) && strcmp (*f, "delay") && strcmp (*f, "loop"))
            vips_image_remove (image, *f);
    g_strfreev (fields);
}

//  The encoder of `format`, into *data / *size. Returns 0 or -1.
static int
s_save (VipsImage *image, imgp_format_t format, int q, void **data, size_t *size)
{
    int rc = -1;
    switch (format) {
        case IMGP_FORMAT_PNG:
            rc = vips_pngsave_buffer (image, data, size, "strip", TRUE, NULL);
            break;
        case IMGP_FORMAT_JPEG: {
            VipsImage *flat = s_flatten (image);
            if (flat) {
                rc = vips_jpegsave_buffer (flat, data, size, "strip", TRUE,
                                           "Q", q ? q : S_JPEG_Q_DEFAULT, NULL);
                g_object_unref (flat);
            }
            break;
        }
        case IMGP_FORMAT_WEBP:
            rc = vips_webpsave_buffer (image, data, size, "strip", TRUE,
                                       "Q", q ? q : S_WEBP_Q_DEFAULT, NULL);
            break;
        case IMGP_FORMAT_AVIF:
            rc = vips_heifsave_buffer (image, data, size, "strip", TRUE,
                                       "Q", q ? q : S_AVIF_Q_DEFAULT, "bitdepth", 8,
                                       "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL);
            break;
        case IMGP_FORMAT_AUTO:      //  resolved by the caller
            break;
    }
    return rc;
}

//  Step 5: encode one rendition with metadata stripped, into *data / *size.
static int
s_encode (VipsImage *image, imgp_format_t format, int quality, s_deadline_t *deadline,
          void **data, size_t *size, imgp_thumb_result_t *result)
{
    s_strip_metadata (image);
    s_watch (image, deadline);
    int rc = s_save (image, format, quality, data, size);
    s_unwatch (image, deadline);
    if (rc == 0 && *data && *size > 0)
        return 0;

    char reason [IMGP_MESSAGE_MAX];
    g_free (*data);
    *data = NULL;
    *size = 0;
    if (deadline->passed)
        return s_fail_timeout (result);
    return s_fail (result, IMGP_THUMB_ENCODE_ERROR, "the %s encoder failed: %s",
                   imgp_format_name (format), s_vips_reason (reason, sizeof reason));
}

//  --------------------------------------------------------------------------
//  Renditions: format, ETag, and their bytes end to end

//  The format a rendition is made in: auto is the source's family (JPEG
//  for an image without alpha, a photo; PNG with alpha), or WebP when the
//  frames of an animation are kept; `frames` says they are.
static imgp_format_t
s_format (const imgp_opts_t *opts, bool alpha, bool frames)
{
    if (opts->format != IMGP_FORMAT_AUTO)
        return opts->format;
    if (frames)
        return IMGP_FORMAT_WEBP;
    return alpha ? IMGP_FORMAT_PNG : IMGP_FORMAT_JPEG;
}

//  Lowercase hex of a digest into `hex` (IMGP_ETAG_LEN + 1 bytes).
static void
s_digest_hex (zdigest_t *digest, char *hex)
{
    const byte *data = zdigest_data (digest);
    for (size_t i = 0; i < zdigest_size (digest) && 2 * i < IMGP_ETAG_LEN; i++)
        snprintf (hex + 2 * i, 3, "%02x", data [i]);
    hex [IMGP_ETAG_LEN] = '\0';
}

//  SHA-1 hex of the source bytes, once per job (about 2 ms a MB here,
//  small beside the decode).
static void
s_source_digest (const uint8_t *buf, size_t len, char *hex)
{
    zdigest_t *digest = zdigest_new ();
    if (len)
        zdigest_update (digest, buf, len);
    s_digest_hex (digest, hex);
    zdigest_destroy (&digest);
}

//  The ETag of one rendition (PROTOCOL.md 3.2): SHA-1 of the source's
//  SHA-1, the rendition's canonical options, IMGP_VERSION and libvips'
//  version, so an upgrade that may change pixels changes every tag.
static void
s_etag (const char *source_hex, const imgp_opts_t *opts, imgp_size_t box,
        imgp_format_t format, char *etag)
{
    char background [10];
    imgp_opts_background_text (opts->background, background);
    char text [512];
    int len = snprintf (text, sizeof text, "%s box=%dx%d fit=%s gravity=%s background=%s "
                        "format=%s quality=%d enlarge=%d animated=%d %s %s", source_hex,
                        box.width, box.height, imgp_fit_name (opts->fit),
                        imgp_gravity_name (opts->gravity), background,
                        imgp_format_name (format), opts->quality, opts->enlarge ? 1 : 0,
                        opts->animated ? 1 : 0, IMGP_VERSION, vips_version_string ());
    zdigest_t *digest = zdigest_new ();
    zdigest_update (digest, (const byte *) text, (size_t) len);
    s_digest_hex (digest, etag);
    zdigest_destroy (&digest);
}

//  Append a rendition's bytes (consumed) to result->data.
static void
s_append (imgp_thumb_result_t *result, void **data, size_t size)
{
    imgp_thumb_output_t *output = &result->outputs [result->count];
    output->offset = result->size;
    output->size = size;
    if (!result->data) {
        result->data = *data;          //  the first: no copy (the only one, mostly)
        *data = NULL;
    }
    else {
        result->data = g_realloc (result->data, result->size + size);
        memcpy ((uint8_t *) result->data + result->size, *data, size);
        g_free (*data);
        *data = NULL;
    }
    result->size += size;
    result->count++;
}

//  --------------------------------------------------------------------------
//  Dry run

//  The 1x1 white sRGB image encoded once per format, with the same
//  encoders (and quality defaults) real jobs use. Returns 0 or -1 (logged).
static int
s_dry_run_init (void)
{
    static const uint8_t white [3] = { 255, 255, 255 };
    VipsImage *pixel = vips_image_new_from_memory_copy (white, sizeof white, 1, 1, 3,
                                                        VIPS_FORMAT_UCHAR);
    if (!pixel)
        return -1;
    pixel->Type = VIPS_INTERPRETATION_sRGB;
    int rc = 0;
    for (int format = 0; format < S_FORMATS && rc == 0; format++) {
        void *data = NULL;
        size_t size = 0;
        rc = s_save (pixel, (imgp_format_t) format, 0, &data, &size);
        if (rc == 0 && data) {
            g_free (s_fixed [format].data);
            s_fixed [format] = (s_fixed_t) { data, size };
        }
        else {
            char reason [IMGP_MESSAGE_MAX];
            imgp_error ("event=config_error reason=dry_run_encode format=%s message=\"%s\"",
                        imgp_format_name ((imgp_format_t) format),
                        s_vips_reason (reason, sizeof reason));
            vips_error_clear ();
            g_free (data);
            rc = -1;
        }
    }
    g_object_unref (pixel);
    if (rc == 0)
        imgp_warn ("event=dry_run message=\"no image is resized: every job gets a fixed 1x1 "
                   "image (--dry-run, for benchmarks)\"");
    return rc;
}

//  A copy of the fixed image per box: the caller frees what it gets, as
//  for a real thumbnail. A few hundred bytes, so the copy costs nothing
//  measurable. Auto is the family of the white pixel: JPEG.
static int
s_dry_run_make (const imgp_opts_t *opts, imgp_thumb_result_t *result)
{
    //  The bytes made do not depend on the source, so neither do the tags
    //  (and a benchmark does not pay for hashing every upload).
    char source [IMGP_ETAG_LEN + 1];
    s_source_digest (NULL, 0, source);
    imgp_format_t format = s_format (opts, false, false);
    const s_fixed_t *fixed = &s_fixed [format];
    for (int i = 0; i < opts->size_count; i++) {
        void *data = g_memdup2 (fixed->data, fixed->size);
        imgp_thumb_output_t *output = &result->outputs [result->count];
        *output = (imgp_thumb_output_t) { 0, 0, 1, 1, format, imgp_opts_box (opts, i), "" };
        s_etag (source, opts, output->box, format, output->etag);
        s_append (result, &data, fixed->size);
    }
    result->width = 1;
    result->height = 1;
    result->format = format;
    return 0;
}

//  --------------------------------------------------------------------------
//  The renditions

//  Everything one job's renditions share.
typedef struct {
    const uint8_t *buf;                 //  the source bytes (borrowed)
    size_t len;                         //  their length
    const imgp_opts_t *opts;            //  what was asked
    s_source_t source;                  //  its header (step 2)
    char digest [IMGP_ETAG_LEN + 1];    //  SHA-1 hex of the source
    bool frames;                        //  decode every frame (animated=true, webp/auto)
    s_deadline_t deadline;              //  the time limit
} s_job_t;

//  Box `i` from the decoded `base` (or, for an animation, from its own
//  decode), padded for contain, encoded and appended to the result.
static int
s_render (s_job_t *job, VipsImage *base, const s_plan_t *plan, int i,
          imgp_thumb_result_t *result)
{
    const imgp_opts_t *opts = job->opts;
    imgp_size_t box = imgp_opts_box (opts, i);
    VipsImage *image = NULL;
    if (plan->final) {
        image = base;
        g_object_ref (image);
    }
    else
    if (s_resize (base, &image, opts, box))
        image = NULL;
    //  What libvips' thumbnail did not do: contain's padding, and the cut
    //  of an animation's frames for cover; frame by frame.
    s_frame_fn *finish = NULL;
    if (opts->fit == IMGP_FIT_CONTAIN)
        finish = s_pad;
    if (opts->fit == IMGP_FIT_COVER && job->frames)
        finish = s_cover_cut;
    if (image && finish
    &&  (vips_image_get_width (image) != box.width
      || vips_image_get_page_height (image) != box.height)) {
        VipsImage *done = NULL;
        if (s_per_frame (image, &done, finish, opts, box))
            done = NULL;
        g_object_unref (image);
        image = done;
    }
    if (!image) {
        char reason [IMGP_MESSAGE_MAX];
        return s_fail (result, IMGP_THUMB_INTERNAL, "the %dx%d rendition cannot be made: %s",
                       box.width, box.height, s_vips_reason (reason, sizeof reason));
    }
    bool frames = vips_image_get_page_height (image) < vips_image_get_height (image);
    imgp_format_t format = s_format (opts, vips_image_hasalpha (base), frames);
    imgp_thumb_output_t output = { 0, 0, vips_image_get_width (image),
                                   vips_image_get_page_height (image), format, box, "" };
    void *data = NULL;
    size_t size = 0;
    int rc = s_encode (image, format, opts->quality, &job->deadline, &data, &size, result);
    g_object_unref (image);
    if (rc)
        return -1;
    s_etag (job->digest, opts, box, format, output.etag);
    result->outputs [result->count] = output;
    result->animated = result->animated || frames;
    s_append (result, &data, size);
    return 0;
}

//  Every box from one decode; an animation is decoded once per box
//  (vips_thumbnail_image treats a frame strip in memory as one tall
//  image, so the frames are resized by libvips' thumbnail from the file).
static int
s_render_all (s_job_t *job, imgp_thumb_result_t *result)
{
    const imgp_opts_t *opts = job->opts;
    int per_decode = job->frames ? 1 : opts->size_count;
    for (int first = 0; first < opts->size_count; first += per_decode) {
        s_plan_t plan = s_plan (opts, &job->source, first, per_decode, job->frames);
        VipsImage *base = s_decode (job->buf, job->len, &job->source, &plan, job->frames,
                                    &job->deadline, result);
        if (!base)
            return -1;
        int rc = 0;
        for (int i = first; i < first + per_decode && rc == 0; i++)
            rc = s_render (job, base, &plan, i, result);
        g_object_unref (base);
        if (rc)
            return -1;
    }
    return 0;
}

//  Frames are kept only where they can be: animated=true, a format that
//  holds them (webp, or auto, which then makes webp), a gravity that is
//  the same for every frame (a smart crop, attention or entropy, would
//  pick another region per frame: the first frame), and a source with
//  more than one.
static bool
s_wants_frames (const imgp_opts_t *opts)
{
    return opts->animated
        && (opts->format == IMGP_FORMAT_WEBP || opts->format == IMGP_FORMAT_AUTO)
        && opts->gravity != IMGP_GRAVITY_ATTENTION && opts->gravity != IMGP_GRAVITY_ENTROPY;
}

int
imgp_thumb_make (const uint8_t *buf, size_t len, const imgp_opts_t *opts,
                 imgp_thumb_result_t *result)
{
    assert (buf || len == 0);
    assert (opts);
    assert (result && !result->data);

    memset (result, 0, sizeof *result);
    vips_error_clear ();
    s_job_t job = { .buf = buf, .len = len, .opts = opts };
    if (s_time_limit_ms > 0)
        job.deadline.at = g_get_monotonic_time () + (gint64) s_time_limit_ms * 1000;
    if (!imgp_opts_valid (opts))
        return s_fail (result, IMGP_THUMB_INTERNAL, "thumbnail options are out of range");
    if (s_dry_run)
        return s_dry_run_make (opts, result);
    bool frames = s_wants_frames (opts);
    if (s_check_loader (buf, len, result)
    ||  s_check_header (buf, len, frames, &job.source, result))
        return -1;
    job.frames = frames && job.source.pages > 1;
    s_source_digest (buf, len, job.digest);

    if (s_render_all (&job, result)) {
        g_free (result->data);
        result->data = NULL;
        result->size = 0;
        result->count = 0;
        return -1;
    }
    result->width = result->outputs [0].width;
    result->height = result->outputs [0].height;
    result->format = result->outputs [0].format;
    return 0;
}

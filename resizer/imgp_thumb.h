/*  imgp_thumb — one image in, its renditions out (one per requested box,
    from one decode where libvips allows): the only code in imgpipe that
    touches libvips.

    Why: the resizer must turn untrusted bytes into a thumbnail, or into an
    error a user can act on, without ever decoding something we did not mean
    to expose. Every check happens here, in this order: the loader libvips
    would pick must be on the allow-list; the header alone is read and
    width x height of the first page is compared with the pixel limit; only
    then is the image decoded (shrink-on-load, EXIF auto-rotate, sRGB,
    first frame only) with "fail_on=truncated", so truncated or corrupt
    data fails instead of giving grey rows; the pixels are materialised
    (decode errors show here, decoding is lazy) and finally encoded with
    metadata stripped (encoder errors show there).

    libvips state is process-wide, so this module is configured once per
    process with imgp_thumb_init() and runs one image at a time per thread.
    It never asserts on image bytes and never lets a libvips warning reach
    stderr unlabelled: the "VIPS" GLib log domain is routed into imgp_log,
    tagged with the job set by imgp_thumb_set_job().

    Time per job is bounded too (invariant 4): an image that takes longer
    than time_limit_ms has libvips stopped and fails with code "timeout",
    before the broker's --job-timeout-ms would dispatch it again while we
    still work on it. The limit acts where libvips reports progress: the
    thumbnail is computed as one unit (smaller units made every resize
    2.2x slower), so a job over its limit is stopped at the latest once its
    pixels are decoded, and between the strips the encoder reads; a single
    encoder call (AV1) cannot be cut short at all. The broker's job timeout
    stays the outer bound.

    Dry run (--dry-run, for measuring the broker, not libvips): init
    encodes a 1x1 image once per output format, and every make() returns a
    copy of the one the job asks for, described as 1x1, without looking
    at the input. The broker's magic check passes on it, so a benchmark
    drives the whole path of a job except the resize itself.
*/
#ifndef IMGP_THUMB_H_INCLUDED
#define IMGP_THUMB_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"
#include "imgp_opts.h"

//  Why a thumbnail could not be made. The names (imgp_thumb_code_name) are
//  the FAILED codes on the wire.
typedef enum {
    IMGP_THUMB_OK = 0,
    IMGP_THUMB_UNSUPPORTED_FORMAT,  //  not an image, or its loader is not allowed
    IMGP_THUMB_TOO_MANY_PIXELS,     //  header says width x height > max_pixels
    IMGP_THUMB_DECODE_ERROR,        //  truncated or corrupt data
    IMGP_THUMB_ENCODE_ERROR,        //  the output encoder failed
    IMGP_THUMB_INTERNAL,            //  anything else (out of memory, bug)
    IMGP_THUMB_TIMEOUT              //  over time_limit_ms; libvips was stopped
} imgp_thumb_code_t;

//  Process-wide settings, given once to imgp_thumb_init().
typedef struct {
    int64_t max_pixels;             //  largest width x height decoded, > 0
    const char *allow_loaders;      //  extra loaders, comma list of svg, pdf, magick; NULL: none
    int vips_threads;               //  libvips worker threads per image, >= 1
    int time_limit_ms;              //  time one image may take, ms; 0: no limit
    bool dry_run;                   //  no decode: every job gets a fixed 1x1 image
} imgp_thumb_config_t;

//  One rendition: where its bytes are in the result's data, and what it is.
typedef struct {
    size_t offset;                      //  first byte in imgp_thumb_result_t.data
    size_t size;                        //  its bytes
    int width;                          //  pixels (of one frame when animated)
    int height;                         //  pixels (of one frame when animated)
    imgp_format_t format;               //  the format made, never AUTO
    imgp_size_t box;                    //  the box it answers (opts' box of that index)
    char etag [IMGP_ETAG_LEN + 1];      //  SHA-1 hex of source, options, versions
} imgp_thumb_output_t;

//  The outcome of one imgp_thumb_make() call. A plain value: clear it with
//  imgp_thumb_result_clear() when `data` was not handed on.
typedef struct {
    imgp_thumb_code_t code;             //  IMGP_THUMB_OK or why not
    char message [IMGP_MESSAGE_MAX + 1];//  for the user when code != OK, else ""
    void *data;                         //  every rendition's bytes end to end, in box
                                        //  order (g_malloc'd), NULL on failure
    size_t size;                        //  bytes in data
    int width;                          //  the first rendition's pixels
    int height;                         //  the first rendition's pixels
    imgp_format_t format;               //  the first rendition's format (auto resolved)
    int count;                          //  renditions, = opts->size_count on success
    imgp_thumb_output_t outputs [IMGP_SIZES_MAX];   //  each rendition
    bool animated;                      //  frames were kept (animated=true, webp)
    int in_width;                       //  original pixels (first page, as stored), 0 if unknown
    int in_height;                      //  original pixels (first page, as stored), 0 if unknown
    const char *loader;                 //  libvips loader nickname ("jpegload_buffer"), or NULL
} imgp_thumb_result_t;

//  Start libvips (if needed) and apply `config`: block untrusted and
//  non-allowed loaders, no operation cache, `vips_threads` threads, route
//  the "VIPS" log domain into imgp_log. Also sets glibc's malloc for one
//  big decode after another (one arena per libvips thread, freed buffers
//  kept for the next job: 15-20% less time per photo), process-wide: call it
//  before the process starts other threads. May be called again to change
//  the settings (tests do), but not while an image is being made. With
//  dry_run, also encodes the 1x1 image of every format. Returns 0, or -1
//  with the reason logged (unknown loader name, libvips failed to start,
//  a dry-run image could not be encoded).
int imgp_thumb_init (const imgp_thumb_config_t *config);

//  Set the job id that libvips warnings are tagged with from now on (copied;
//  NULL or "" for none). Process-wide rather than per thread, because
//  libvips warns from its own worker threads; the resizer runs one job at a
//  time, so a single current id is exact.
void imgp_thumb_set_job (const char *id);

//  Make the renditions of `buf` (`len` bytes, borrowed, read-only) as
//  `opts` ask: one per box (imgp_opts_box), in that order, each with its
//  fit, gravity, background, format (auto: JPEG for a source without
//  alpha, PNG with; WebP when animated=true keeps frames), quality and an
//  ETag. Always fills `result` (which must not hold data: clear it first).
//  Returns 0 with result->data set, or -1 with result->code and
//  result->message set; libvips' error buffer is left empty either way.
//  In a dry run: 0 with a copy of the fixed 1x1 image in the format asked
//  (auto: JPEG) per box (in_width and in_height 0, loader NULL), whatever
//  `buf` holds.
int imgp_thumb_make (const uint8_t *buf, size_t len, const imgp_opts_t *opts,
                     imgp_thumb_result_t *result);

//  Free libvips' per-thread buffers; call from a thread that made
//  thumbnails before it exits (not needed on the main thread).
void imgp_thumb_thread_done (void);

//  Give the memory freed by past images back to the kernel (glibc's
//  malloc_trim: the top of each heap, and whole free pages inside it).
//  The malloc settings of imgp_thumb_init keep freed buffers for the next
//  image, which is what a steady stream of jobs wants; call this when the
//  stream has stopped for a while. Not while an image is being made
//  (harmless, but it would slow it).
void imgp_thumb_trim (void);

//  Free result->data (if still there) and reset the result.
void imgp_thumb_result_clear (imgp_thumb_result_t *result);

//  Frees thumbnail bytes with the libzmq free-function signature, for
//  imgp_msg_set_data (result.data, result.size, imgp_thumb_free).
void imgp_thumb_free (void *data, void *hint);

//  Wire name of a code: "unsupported_format", "too_many_pixels", ...
const char *imgp_thumb_code_name (imgp_thumb_code_t code);

#endif

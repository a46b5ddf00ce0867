/*  imgp_opts — see imgp_opts.h. Option names, the query-string parser and
    the validator every side of the wire uses.

    Why one parser: the frontend is the only place a client's text becomes
    options, and the limits here are the ones the broker re-checks on the
    wire and the resizer trusts. The parser is strict (no signs, no blanks,
    no trailing junk, no repeated or unknown keys) so a typo is an error the
    user sees, never an option silently ignored. It never allocates: keys
    and values are decoded into small stack buffers and anything longer is
    an error.
*/
#include "imgp_opts.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define S_TEXT_MAX 96           //  longest decoded key or value accepted (8 sizes
                                //  "4096x4096," are 79)

static const char *s_fit_names [] = { "inside", "cover", "fill", "contain" };
static const char *s_gravity_names [] = {
    "centre", "north", "north-east", "east", "south-east", "south", "south-west", "west",
    "north-west", "attention", "entropy"
};
static const char *s_format_names [] = { "png", "jpeg", "webp", "avif", "auto" };
static const char *s_format_mimes [] = {
    "image/png", "image/jpeg", "image/webp", "image/avif", "application/octet-stream"
};
static const char *s_state_names [] = { "queued", "processing", "done", "failed" };

#define S_COUNT(a) ((int) (sizeof (a) / sizeof ((a) [0])))

//  Index of `text` in `names`, or -1.
static int
s_lookup (const char *names [], int count, const char *text)
{
    if (!text)
        return -1;
    for (int i = 0; i < count; i++)
        if (strcmp (names [i], text) == 0)
            return i;
    return -1;
}

//  Where a NULL `error` or `option` argument is written instead.
static __thread const char *s_ignored;

//  names [i], or "unknown" out of range.
static const char *
s_name (const char *names [], int count, int i)
{
    return i >= 0 && i < count ? names [i] : "unknown";
}

void
imgp_opts_default (imgp_opts_t *opts)
{
    opts->width = IMGP_SIDE_DEFAULT;
    opts->height = IMGP_SIDE_DEFAULT;
    opts->fit = IMGP_FIT_INSIDE;
    opts->format = IMGP_FORMAT_PNG;
    opts->quality = IMGP_QUALITY_DEFAULT;
    opts->enlarge = false;
    opts->gravity = IMGP_GRAVITY_CENTRE;
    memset (opts->background, 0, sizeof opts->background);
    opts->animated = false;
    memset (opts->sizes, 0, sizeof opts->sizes);
    opts->size_count = 1;
    opts->sizes [0] = (imgp_size_t) { opts->width, opts->height };
}

imgp_size_t
imgp_opts_box (const imgp_opts_t *opts, int index)
{
    assert (index >= 0 && index < IMGP_SIZES_MAX);
    return index == 0 ? (imgp_size_t) { opts->width, opts->height } : opts->sizes [index];
}

static bool
s_side_ok (int side)
{
    return side >= 1 && side <= IMGP_SIDE_MAX;
}

static bool
s_lossy (imgp_format_t format)
{
    return format == IMGP_FORMAT_JPEG || format == IMGP_FORMAT_WEBP
        || format == IMGP_FORMAT_AVIF || format == IMGP_FORMAT_AUTO;
}

static int
s_refuse (const char **error, const char **option, const char *message, const char *name)
{
    *error = message;
    *option = name;
    return -1;
}

//  The boxes: 1..8, each side in range, the first the width x height, no
//  two the same (a repeat would make two renditions with one name).
static int
s_check_sizes (const imgp_opts_t *opts, const char **error, const char **option)
{
    if (opts->size_count < 1 || opts->size_count > IMGP_SIZES_MAX)
        return s_refuse (error, option, "sizes must list 1 to 8 boxes", "sizes");
    for (int i = 1; i < opts->size_count; i++) {
        const imgp_size_t *box = &opts->sizes [i];
        if (!s_side_ok (box->width) || !s_side_ok (box->height))
            return s_refuse (error, option,
                             "sizes must be boxes WxH with sides from 1 to 4096", "sizes");
        for (int j = 0; j < i; j++)
            if (imgp_opts_box (opts, j).width == box->width
            &&  imgp_opts_box (opts, j).height == box->height)
                return s_refuse (error, option, "sizes lists the same box twice", "sizes");
    }
    //  One box: width x height says it (code that sets opts.width alone
    //  stays right; the decoder and the parser fill sizes [0] anyway).
    if (opts->size_count > 1
    &&  (opts->sizes [0].width != opts->width || opts->sizes [0].height != opts->height))
        return s_refuse (error, option, "sizes must start with width x height", "sizes");
    return 0;
}

int
imgp_opts_check (const imgp_opts_t *opts, const char **error, const char **option)
{
    error = error ? error : &s_ignored;
    option = option ? option : &s_ignored;
    if (!s_side_ok (opts->width))
        return s_refuse (error, option, "width must be a whole number from 1 to 4096", "width");
    if (!s_side_ok (opts->height))
        return s_refuse (error, option, "height must be a whole number from 1 to 4096",
                         "height");
    if ((int) opts->fit < 0 || (int) opts->fit >= S_COUNT (s_fit_names))
        return s_refuse (error, option, "fit is unknown", "fit");
    if ((int) opts->gravity < 0 || (int) opts->gravity >= S_COUNT (s_gravity_names))
        return s_refuse (error, option, "gravity is unknown", "gravity");
    if ((int) opts->format < 0 || (int) opts->format >= S_COUNT (s_format_names))
        return s_refuse (error, option, "format is unknown", "format");
    if (opts->quality < 0 || opts->quality > 100)
        return s_refuse (error, option, "quality must be a whole number from 1 to 100",
                         "quality");
    if (opts->gravity != IMGP_GRAVITY_CENTRE && opts->fit != IMGP_FIT_COVER)
        return s_refuse (error, option, "gravity needs fit=cover", "gravity");
    bool has_background = opts->background [0] || opts->background [1]
                       || opts->background [2] || opts->background [3];
    if (has_background && opts->fit != IMGP_FIT_CONTAIN)
        return s_refuse (error, option, "background needs fit=contain", "background");
    if (opts->animated && opts->format != IMGP_FORMAT_WEBP && opts->format != IMGP_FORMAT_AUTO)
        return s_refuse (error, option, "animated needs format webp or auto", "animated");
    return s_check_sizes (opts, error, option);
}

bool
imgp_opts_valid (const imgp_opts_t *opts)
{
    return opts && imgp_opts_check (opts, NULL, NULL) == 0;
}

void
imgp_opts_background_text (const uint8_t background [4], char *text)
{
    snprintf (text, 10, "#%02x%02x%02x%02x", background [0], background [1],
              background [2], background [3]);
}

const char *
imgp_fit_name (imgp_fit_t fit)
{
    return s_name (s_fit_names, S_COUNT (s_fit_names), (int) fit);
}

int
imgp_fit_parse (const char *text, imgp_fit_t *fit)
{
    int i = s_lookup (s_fit_names, S_COUNT (s_fit_names), text);
    if (i >= 0)
        *fit = (imgp_fit_t) i;
    return i < 0 ? -1 : 0;
}

const char *
imgp_gravity_name (imgp_gravity_t gravity)
{
    return s_name (s_gravity_names, S_COUNT (s_gravity_names), (int) gravity);
}

int
imgp_gravity_parse (const char *text, imgp_gravity_t *gravity)
{
    int i = s_lookup (s_gravity_names, S_COUNT (s_gravity_names), text);
    if (i >= 0)
        *gravity = (imgp_gravity_t) i;
    return i < 0 ? -1 : 0;
}

const char *
imgp_format_name (imgp_format_t format)
{
    return s_name (s_format_names, S_COUNT (s_format_names), (int) format);
}

const char *
imgp_format_mime (imgp_format_t format)
{
    int i = (int) format;
    return i >= 0 && i < S_COUNT (s_format_mimes) ? s_format_mimes [i]
                                                  : "application/octet-stream";
}

int
imgp_format_parse (const char *text, imgp_format_t *format)
{
    int i = s_lookup (s_format_names, S_COUNT (s_format_names), text);
    if (i >= 0)
        *format = (imgp_format_t) i;
    return i < 0 ? -1 : 0;
}

const char *
imgp_state_name (imgp_state_t state)
{
    return s_name (s_state_names, S_COUNT (s_state_names), (int) state);
}

int
imgp_state_parse (const char *text, imgp_state_t *state)
{
    int i = s_lookup (s_state_names, S_COUNT (s_state_names), text);
    if (i >= 0)
        *state = (imgp_state_t) i;
    return i < 0 ? -1 : 0;
}

//  --------------------------------------------------------------------------
//  Query string parsing

//  The keys, in the order of their bit in the "seen" mask.
typedef enum {
    S_KEY_WIDTH = 0, S_KEY_HEIGHT, S_KEY_FIT, S_KEY_FORMAT, S_KEY_QUALITY,
    S_KEY_ENLARGE, S_KEY_SIZES, S_KEY_GRAVITY, S_KEY_BACKGROUND, S_KEY_ANIMATED, S_KEYS
} s_key_t;

typedef struct {
    const char *name;       //  key as it appears in the query
    const char *bad;        //  message for a bad value
    const char *twice;      //  message for a repeated key
} s_key_spec_t;

static const s_key_spec_t s_keys [S_KEYS] = {
    { "width", "width must be a whole number from 1 to 4096",
      "width is given more than once" },
    { "height", "height must be a whole number from 1 to 4096",
      "height is given more than once" },
    { "fit", "fit must be inside, cover, fill or contain",
      "fit is given more than once" },
    { "format", "format must be png, jpeg, webp, avif or auto",
      "format is given more than once" },
    { "quality", "quality must be a whole number from 1 to 100",
      "quality is given more than once" },
    { "enlarge", "enlarge must be true, false, 1 or 0",
      "enlarge is given more than once" },
    { "sizes", "sizes must be 1 to 8 boxes WxH (sides 1 to 4096) separated by commas",
      "sizes is given more than once" },
    { "gravity", "gravity must be centre, north, north-east, east, south-east, south, "
      "south-west, west, north-west, attention or entropy",
      "gravity is given more than once" },
    { "background", "background must be #rrggbb or #rrggbbaa",
      "background is given more than once" },
    { "animated", "animated must be true, false, 1 or 0",
      "animated is given more than once" },
};

#define S_UNKNOWN_KEY "unknown option; use width, height, sizes, fit, gravity, background, " \
                      "format, quality, enlarge or animated"

static int
s_hex_digit (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

//  URL-decode `len` bytes of `src` ('+' is a space, %XX a byte) into `dst`
//  (S_TEXT_MAX + 1 bytes). Returns 0, or -1 when too long, on a bad escape
//  or on a decoded NUL (which would cut the text short).
static int
s_url_decode (const char *src, size_t len, char *dst)
{
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        if (out >= S_TEXT_MAX)
            return -1;
        char c = src [i];
        if (c == '+')
            c = ' ';
        else
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = s_hex_digit (src [i + 1]);
            int lo = s_hex_digit (src [i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char) (hi * 16 + lo);
            i += 2;
        }
        dst [out++] = c;
    }
    dst [out] = '\0';
    return 0;
}

//  Strict whole number in [min, max]: digits only, no sign, no blanks.
static int
s_parse_int (const char *text, int min, int max, int *value)
{
    if (!*text || strlen (text) > 9)
        return -1;      //  nine digits cannot overflow an int
    long n = 0;
    for (const char *c = text; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        n = n * 10 + (*c - '0');
    }
    if (n < min || n > max)
        return -1;
    *value = (int) n;
    return 0;
}

static int
s_parse_bool (const char *text, bool *value)
{
    if (strcmp (text, "true") == 0 || strcmp (text, "1") == 0)
        *value = true;
    else
    if (strcmp (text, "false") == 0 || strcmp (text, "0") == 0)
        *value = false;
    else
        return -1;
    return 0;
}

//  "WxH" of `len` bytes, each side a strict whole number in range.
static int
s_parse_box (const char *text, size_t len, imgp_size_t *box)
{
    char part [S_TEXT_MAX + 1];
    if (len > S_TEXT_MAX)
        return -1;
    memcpy (part, text, len);
    part [len] = '\0';
    char *x = strchr (part, 'x');
    if (!x)
        return -1;
    *x = '\0';
    return s_parse_int (part, 1, IMGP_SIDE_MAX, &box->width)
        || s_parse_int (x + 1, 1, IMGP_SIDE_MAX, &box->height) ? -1 : 0;
}

//  "100x100,400x300": 1..8 boxes; repeats are caught by imgp_opts_check.
static int
s_parse_sizes (const char *text, imgp_opts_t *opts)
{
    int count = 0;
    const char *at = text;
    while (true) {
        const char *comma = strchr (at, ',');
        size_t len = comma ? (size_t) (comma - at) : strlen (at);
        if (count == IMGP_SIZES_MAX || s_parse_box (at, len, &opts->sizes [count]))
            return -1;
        count++;
        if (!comma)
            break;
        at = comma + 1;
    }
    opts->size_count = count;
    return 0;
}

int
imgp_opts_background_parse (const char *text, uint8_t background [4])
{
    if (*text == '#')
        text++;
    size_t len = strlen (text);
    if (len != 6 && len != 8)
        return -1;
    uint8_t rgba [4] = { 0, 0, 0, 255 };
    for (size_t i = 0; i < len; i += 2) {
        int hi = s_hex_digit (text [i]);
        int lo = s_hex_digit (text [i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        rgba [i / 2] = (uint8_t) (hi * 16 + lo);
    }
    memcpy (background, rgba, 4);
    return 0;
}

//  Parse one value into its field. Returns 0 or -1.
static int
s_parse_value (imgp_opts_t *opts, s_key_t key, const char *value)
{
    int rc = -1;
    switch (key) {
        case S_KEY_WIDTH:
            rc = s_parse_int (value, 1, IMGP_SIDE_MAX, &opts->width);
            break;
        case S_KEY_HEIGHT:
            rc = s_parse_int (value, 1, IMGP_SIDE_MAX, &opts->height);
            break;
        case S_KEY_FIT:
            rc = imgp_fit_parse (value, &opts->fit);
            break;
        case S_KEY_FORMAT:
            rc = imgp_format_parse (value, &opts->format);
            break;
        case S_KEY_QUALITY:
            rc = s_parse_int (value, 1, 100, &opts->quality);
            break;
        case S_KEY_ENLARGE:
            rc = s_parse_bool (value, &opts->enlarge);
            break;
        case S_KEY_SIZES:
            rc = s_parse_sizes (value, opts);
            break;
        case S_KEY_GRAVITY:
            rc = imgp_gravity_parse (value, &opts->gravity);
            break;
        case S_KEY_BACKGROUND:
            rc = imgp_opts_background_parse (value, opts->background);
            break;
        case S_KEY_ANIMATED:
            rc = s_parse_bool (value, &opts->animated);
            break;
        case S_KEYS:
            break;
    }
    return rc;
}

//  An unknown key, as given, for the caller's "option" (see the header).
static __thread char s_unknown [S_TEXT_MAX + 1];

int
imgp_opts_parse_field (imgp_opts_t *opts, unsigned *seen, const char *key,
                       const char *value, const char **error, const char **option)
{
    error = error ? error : &s_ignored;
    option = option ? option : &s_ignored;
    int k;
    for (k = 0; k < S_KEYS; k++)
        if (strcmp (s_keys [k].name, key) == 0)
            break;
    if (k == S_KEYS) {
        snprintf (s_unknown, sizeof s_unknown, "%s", key);
        return s_refuse (error, option, S_UNKNOWN_KEY, s_unknown);
    }
    if (*seen & (1u << k))
        return s_refuse (error, option, s_keys [k].twice, s_keys [k].name);
    *seen |= 1u << k;
    if (s_parse_value (opts, (s_key_t) k, value))
        return s_refuse (error, option, s_keys [k].bad, s_keys [k].name);
    return 0;
}

//  Parse one "key=value" pair of `len` bytes (not empty).
static int
s_parse_pair (imgp_opts_t *opts, const char *pair, size_t len,
              unsigned *seen, const char **error, const char **option)
{
    const char *eq = memchr (pair, '=', len);
    size_t key_len = eq ? (size_t) (eq - pair) : len;
    size_t value_len = eq ? len - key_len - 1 : 0;
    char key [S_TEXT_MAX + 1];
    char value [S_TEXT_MAX + 1];
    if (s_url_decode (pair, key_len, key)) {
        snprintf (s_unknown, sizeof s_unknown, "%.*s",
                  (int) (key_len < S_TEXT_MAX ? key_len : S_TEXT_MAX), pair);
        return s_refuse (error, option, S_UNKNOWN_KEY, s_unknown);
    }
    if (s_url_decode (eq ? eq + 1 : "", value_len, value))
        strcpy (value, "\x01");     //  undecodable: no key accepts it
    return imgp_opts_parse_field (opts, seen, key, value, error, option);
}

static bool
s_seen (unsigned seen, s_key_t key)
{
    return (seen & (1u << key)) != 0;
}

int
imgp_opts_parse_end (imgp_opts_t *opts, unsigned seen, const char **error,
                     const char **option)
{
    error = error ? error : &s_ignored;
    option = option ? option : &s_ignored;
    //  sizes names every box; width/height beside it would be a second say.
    if (s_seen (seen, S_KEY_SIZES) && (s_seen (seen, S_KEY_WIDTH) || s_seen (seen, S_KEY_HEIGHT)))
        return s_refuse (error, option, "sizes replaces width and height: give one or the other",
                         "sizes");
    if (s_seen (seen, S_KEY_SIZES)) {
        opts->width = opts->sizes [0].width;
        opts->height = opts->sizes [0].height;
    }
    else {
        //  One side given: the box is square.
        if (s_seen (seen, S_KEY_WIDTH) && !s_seen (seen, S_KEY_HEIGHT))
            opts->height = opts->width;
        else
        if (s_seen (seen, S_KEY_HEIGHT) && !s_seen (seen, S_KEY_WIDTH))
            opts->width = opts->height;
        opts->size_count = 1;
        opts->sizes [0] = (imgp_size_t) { opts->width, opts->height };
    }
    //  Given at all, even with its default value, an option that the fit
    //  ignores is a mistake the user should hear about.
    if (s_seen (seen, S_KEY_GRAVITY) && opts->fit != IMGP_FIT_COVER)
        return s_refuse (error, option, "gravity needs fit=cover", "gravity");
    if (s_seen (seen, S_KEY_BACKGROUND) && opts->fit != IMGP_FIT_CONTAIN)
        return s_refuse (error, option, "background needs fit=contain", "background");
    //  Checked here and not in imgp_opts_check: jobs accepted before this
    //  rule carry quality with png (the encoder ignores it), and their
    //  records must still read.
    if (opts->quality && !s_lossy (opts->format))
        return s_refuse (error, option, "quality needs format jpeg, webp, avif or auto",
                         "quality");
    return imgp_opts_check (opts, error, option);
}

int
imgp_opts_parse_pairs (imgp_opts_t *opts, unsigned *seen, const char *query,
                       const char **error, const char **option)
{
    error = error ? error : &s_ignored;
    option = option ? option : &s_ignored;
    const char *pair = query ? query : "";
    while (*pair) {
        const char *end = strchr (pair, '&');
        size_t len = end ? (size_t) (end - pair) : strlen (pair);
        if (len > 0 && s_parse_pair (opts, pair, len, seen, error, option))
            return -1;
        if (!end)
            break;
        pair = end + 1;
    }
    return 0;
}

int
imgp_opts_parse_query (imgp_opts_t *opts, const char *query, const char **error,
                       const char **option)
{
    error = error ? error : &s_ignored;
    option = option ? option : &s_ignored;
    *error = NULL;
    *option = NULL;
    imgp_opts_default (opts);
    unsigned seen = 0;
    if (imgp_opts_parse_pairs (opts, &seen, query, error, option))
        return -1;
    return imgp_opts_parse_end (opts, seen, error, option);
}

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

#include <stddef.h>
#include <string.h>

#define S_TEXT_MAX 32           //  longest decoded key or value accepted

static const char *s_fit_names [] = { "inside", "cover", "fill" };
static const char *s_format_names [] = { "png", "jpeg", "webp", "avif" };
static const char *s_format_mimes [] = {
    "image/png", "image/jpeg", "image/webp", "image/avif"
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

void
imgp_opts_default (imgp_opts_t *opts)
{
    opts->width = IMGP_SIDE_DEFAULT;
    opts->height = IMGP_SIDE_DEFAULT;
    opts->fit = IMGP_FIT_INSIDE;
    opts->format = IMGP_FORMAT_PNG;
    opts->quality = IMGP_QUALITY_DEFAULT;
    opts->enlarge = false;
}

bool
imgp_opts_valid (const imgp_opts_t *opts)
{
    return opts
        && opts->width >= 1 && opts->width <= IMGP_SIDE_MAX
        && opts->height >= 1 && opts->height <= IMGP_SIDE_MAX
        && (int) opts->fit >= 0 && (int) opts->fit < S_COUNT (s_fit_names)
        && (int) opts->format >= 0 && (int) opts->format < S_COUNT (s_format_names)
        && opts->quality >= 0 && opts->quality <= 100;
}

const char *
imgp_fit_name (imgp_fit_t fit)
{
    int i = (int) fit;
    return i >= 0 && i < S_COUNT (s_fit_names) ? s_fit_names [i] : "unknown";
}

int
imgp_fit_parse (const char *text, imgp_fit_t *fit)
{
    int i = s_lookup (s_fit_names, S_COUNT (s_fit_names), text);
    if (i < 0)
        return -1;
    *fit = (imgp_fit_t) i;
    return 0;
}

const char *
imgp_format_name (imgp_format_t format)
{
    int i = (int) format;
    return i >= 0 && i < S_COUNT (s_format_names) ? s_format_names [i] : "unknown";
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
    if (i < 0)
        return -1;
    *format = (imgp_format_t) i;
    return 0;
}

const char *
imgp_state_name (imgp_state_t state)
{
    int i = (int) state;
    return i >= 0 && i < S_COUNT (s_state_names) ? s_state_names [i] : "unknown";
}

int
imgp_state_parse (const char *text, imgp_state_t *state)
{
    int i = s_lookup (s_state_names, S_COUNT (s_state_names), text);
    if (i < 0)
        return -1;
    *state = (imgp_state_t) i;
    return 0;
}

//  --------------------------------------------------------------------------
//  Query string parsing

//  The keys, in the order of their bit in the "seen" mask.
typedef enum {
    S_KEY_WIDTH = 0, S_KEY_HEIGHT, S_KEY_FIT, S_KEY_FORMAT, S_KEY_QUALITY,
    S_KEY_ENLARGE, S_KEYS
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
    { "fit", "fit must be inside, cover or fill",
      "fit is given more than once" },
    { "format", "format must be png, jpeg, webp or avif",
      "format is given more than once" },
    { "quality", "quality must be a whole number from 1 to 100",
      "quality is given more than once" },
    { "enlarge", "enlarge must be true, false, 1 or 0",
      "enlarge is given more than once" },
};

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

//  Apply one decoded key=value. Returns 0 or -1 with *error set.
static int
s_apply (imgp_opts_t *opts, const char *key, const char *value,
         unsigned *seen, const char **error)
{
    int k;
    for (k = 0; k < S_KEYS; k++)
        if (strcmp (s_keys [k].name, key) == 0)
            break;
    if (k == S_KEYS) {
        *error = "unknown option; use width, height, fit, format, quality or enlarge";
        return -1;
    }
    if (*seen & (1u << k)) {
        *error = s_keys [k].twice;
        return -1;
    }
    *seen |= 1u << k;

    int rc = -1;
    switch ((s_key_t) k) {
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
        case S_KEYS:
            break;
    }
    if (rc)
        *error = s_keys [k].bad;
    return rc;
}

//  Parse one "key=value" pair of `len` bytes (not empty).
static int
s_parse_pair (imgp_opts_t *opts, const char *pair, size_t len,
              unsigned *seen, const char **error)
{
    const char *eq = memchr (pair, '=', len);
    size_t key_len = eq ? (size_t) (eq - pair) : len;
    size_t value_len = eq ? len - key_len - 1 : 0;
    char key [S_TEXT_MAX + 1];
    char value [S_TEXT_MAX + 1];
    if (s_url_decode (pair, key_len, key)) {
        *error = "unknown option; use width, height, fit, format, quality or enlarge";
        return -1;
    }
    if (s_url_decode (eq ? eq + 1 : "", value_len, value))
        strcpy (value, "\x01");     //  undecodable: no key accepts it
    return s_apply (opts, key, value, seen, error);
}

int
imgp_opts_parse_query (imgp_opts_t *opts, const char *query, const char **error)
{
    const char *unused;
    if (!error)
        error = &unused;
    *error = NULL;
    imgp_opts_default (opts);
    if (!query)
        return 0;

    unsigned seen = 0;
    const char *pair = query;
    while (*pair) {
        const char *end = strchr (pair, '&');
        size_t len = end ? (size_t) (end - pair) : strlen (pair);
        if (len > 0 && s_parse_pair (opts, pair, len, &seen, error))
            return -1;
        if (!end)
            break;
        pair = end + 1;
    }
    //  One side given: the box is square.
    bool has_width = seen & (1u << S_KEY_WIDTH);
    bool has_height = seen & (1u << S_KEY_HEIGHT);
    if (has_width && !has_height)
        opts->height = opts->width;
    else
    if (has_height && !has_width)
        opts->width = opts->height;
    return 0;
}

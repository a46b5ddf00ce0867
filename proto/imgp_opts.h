/*  imgp_opts — the thumbnail options of a job (box, fit, format, quality)
    and the job states, shared by frontend, broker and resizer.

    Why: options are parsed from HTTP query strings by the frontend, carried
    on the wire by proto/, stored by the broker and applied by the resizer;
    one definition with one validator keeps their limits identical. This is a
    plain value type (copied by assignment), not an object.
*/
#ifndef IMGP_OPTS_H_INCLUDED
#define IMGP_OPTS_H_INCLUDED

#include <stdbool.h>

#define IMGP_SIDE_DEFAULT 100
#define IMGP_SIDE_MAX 4096
#define IMGP_QUALITY_DEFAULT 0      //  0 means the encoder's own default

typedef enum {
    IMGP_FIT_INSIDE = 0,    //  fit inside the box, keep aspect (default)
    IMGP_FIT_COVER,         //  fill the box, keep aspect, crop the centre
    IMGP_FIT_FILL           //  exactly the box, aspect not kept
} imgp_fit_t;

typedef enum {
    IMGP_FORMAT_PNG = 0,    //  default: what the original system produced
    IMGP_FORMAT_JPEG,
    IMGP_FORMAT_WEBP,
    IMGP_FORMAT_AVIF
} imgp_format_t;

typedef enum {
    IMGP_STATE_QUEUED = 0,
    IMGP_STATE_PROCESSING,
    IMGP_STATE_DONE,
    IMGP_STATE_FAILED
} imgp_state_t;

typedef struct {
    int width;              //  box width, 1..IMGP_SIDE_MAX
    int height;             //  box height, 1..IMGP_SIDE_MAX
    imgp_fit_t fit;         //  how the image meets the box
    imgp_format_t format;   //  output format
    int quality;            //  1..100 for lossy formats, 0 = default
    bool enlarge;           //  may an image smaller than the box grow
} imgp_opts_t;

//  Defaults: 100x100, inside, png, default quality, no enlarging.
void imgp_opts_default (imgp_opts_t *opts);

//  Parse a whole URL query string ("width=200&format=webp", may be NULL or
//  empty) over the defaults, URL-decoding keys and values. Keys: width,
//  height, fit, format, quality, enlarge (true/false/1/0). When only one of
//  width/height is given the box is square. Returns 0, or -1 with `error`
//  set to a static message a user can act on ("width must be 1..4096") for
//  an unknown key, a repeated key or a bad value.
int imgp_opts_parse_query (imgp_opts_t *opts, const char *query, const char **error);

//  True when every field is in range (for values decoded off the wire).
bool imgp_opts_valid (const imgp_opts_t *opts);

//  Names and MIME types. _parse functions return 0 or -1 for unknown text.
const char *imgp_fit_name (imgp_fit_t fit);
int imgp_fit_parse (const char *text, imgp_fit_t *fit);
const char *imgp_format_name (imgp_format_t format);      //  "png"
const char *imgp_format_mime (imgp_format_t format);      //  "image/png"
int imgp_format_parse (const char *text, imgp_format_t *format);
const char *imgp_state_name (imgp_state_t state);         //  "queued"
int imgp_state_parse (const char *text, imgp_state_t *state);

#endif

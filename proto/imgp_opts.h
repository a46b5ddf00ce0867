/*  imgp_opts — the thumbnail options of a job (boxes, fit, gravity,
    background, format, quality, enlarge, animated)
    and the job states, shared by frontend, broker and resizer.

    Why: options are parsed from HTTP query strings by the frontend, carried
    on the wire by proto/, stored by the broker and applied by the resizer;
    one definition with one validator keeps their limits identical. This is a
    plain value type (copied by assignment), not an object.
*/
#ifndef IMGP_OPTS_H_INCLUDED
#define IMGP_OPTS_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#define IMGP_SIDE_DEFAULT 100
#define IMGP_SIDE_MAX 4096
#define IMGP_QUALITY_DEFAULT 0      //  0 means the encoder's own default
#define IMGP_SIZES_MAX 8            //  boxes one upload may ask for

typedef enum {
    IMGP_FIT_INSIDE = 0,    //  fit inside the box, keep aspect (default)
    IMGP_FIT_COVER,         //  fill the box, keep aspect, crop by gravity
    IMGP_FIT_FILL,          //  exactly the box, aspect not kept
    IMGP_FIT_CONTAIN        //  fit inside, then pad to the box with background
} imgp_fit_t;

//  Where fit=cover crops: a compass point, or libvips' smart crop
//  (attention: skin, saturation, edges; entropy: busiest region).
typedef enum {
    IMGP_GRAVITY_CENTRE = 0, IMGP_GRAVITY_NORTH, IMGP_GRAVITY_NORTH_EAST,
    IMGP_GRAVITY_EAST, IMGP_GRAVITY_SOUTH_EAST, IMGP_GRAVITY_SOUTH,
    IMGP_GRAVITY_SOUTH_WEST, IMGP_GRAVITY_WEST, IMGP_GRAVITY_NORTH_WEST,
    IMGP_GRAVITY_ATTENTION, IMGP_GRAVITY_ENTROPY
} imgp_gravity_t;

typedef enum {
    IMGP_FORMAT_PNG = 0,    //  default: what the original system produced
    IMGP_FORMAT_JPEG,
    IMGP_FORMAT_WEBP,
    IMGP_FORMAT_AVIF,
    IMGP_FORMAT_AUTO        //  options only, never a result: the resizer makes
                            //  the source's family (JPEG, or PNG with alpha)
} imgp_format_t;

typedef enum {
    IMGP_STATE_QUEUED = 0,
    IMGP_STATE_PROCESSING,
    IMGP_STATE_DONE,
    IMGP_STATE_FAILED
} imgp_state_t;

//  One requested box.
typedef struct {
    int width;              //  1..IMGP_SIDE_MAX
    int height;             //  1..IMGP_SIDE_MAX
} imgp_size_t;

typedef struct {
    int width;              //  the first box's width, == sizes [0].width
    int height;             //  the first box's height, == sizes [0].height
    imgp_fit_t fit;         //  how the image meets the box
    imgp_gravity_t gravity; //  fit=cover only; CENTRE otherwise
    uint8_t background [4]; //  fit=contain only: RGBA of the padding; 0,0,0,0
                            //  (transparent, white for a format without alpha)
    imgp_format_t format;   //  output format, or AUTO
    int quality;            //  1..100 for lossy formats (or auto), 0 = default
    bool enlarge;           //  may an image smaller than the box grow
    bool animated;          //  keep the frames when the format can (webp, auto)
    int size_count;         //  boxes in sizes, 1..IMGP_SIZES_MAX
    imgp_size_t sizes [IMGP_SIZES_MAX];     //  every box, sizes [0] the first,
                                            //  no two the same
} imgp_opts_t;

//  Defaults: 100x100, inside, png, default quality, no enlarging, one size.
void imgp_opts_default (imgp_opts_t *opts);

//  Parse a whole URL query string ("width=200&format=webp", may be NULL or
//  empty) over the defaults, URL-decoding keys and values. Keys: width,
//  height, sizes ("100x100,400x300"), fit, gravity, background ("#rrggbb"
//  or "#rrggbbaa", '#' optional), format, quality, enlarge and animated
//  (true/false/1/0). When only one of width/height is given the box is
//  square. Returns 0, or -1 with `error` set to a static message a user
//  can act on ("width must be 1..4096"), naming the option, and `option`
//  (may be NULL) to the option's name ("width"): for an unknown key that
//  is the key as given, in a per-thread buffer valid until this thread
//  parses again. Refused: an unknown key, a repeated key, a bad value, and
//  a bad combination (imgp_opts_check).
int imgp_opts_parse_query (imgp_opts_t *opts, const char *query, const char **error,
                           const char **option);

//  The same, one field at a time, for options that come as multipart form
//  fields as well as in the query: imgp_opts_default, then _parse_field for
//  each key=value (decoded text; `seen` starts at 0 and catches a key given
//  twice, in either place), then _parse_end for the square-box rule, sizes
//  and the combinations. Errors as imgp_opts_parse_query.
int imgp_opts_parse_field (imgp_opts_t *opts, unsigned *seen, const char *key,
                           const char *value, const char **error, const char **option);
int imgp_opts_parse_end (imgp_opts_t *opts, unsigned seen, const char **error,
                         const char **option);

//  The key=value pairs of a query string (may be NULL) through
//  imgp_opts_parse_field, without _parse_end: for a query whose options
//  form fields may add to.
int imgp_opts_parse_pairs (imgp_opts_t *opts, unsigned *seen, const char *query,
                           const char **error, const char **option);

//  Check every field's range and the combinations: gravity other than
//  centre needs fit=cover, a background needs fit=contain, animated needs
//  webp or auto, sizes 1..8 boxes, each 1..4096 a side, no two the same,
//  sizes [0] == {width, height} when more than one. (quality with png is
//  refused by the parsers only: records from before carry it.)
//  Returns 0, or -1 with a static message and the option's name.
int imgp_opts_check (const imgp_opts_t *opts, const char **error, const char **option);

//  Box `index` (0..size_count-1): width x height for 0, sizes [index] after.
//  Read boxes through this: a caller that set opts.width alone left
//  sizes [0] behind, and a single box is valid that way.
imgp_size_t imgp_opts_box (const imgp_opts_t *opts, int index);

//  True when imgp_opts_check passes (for values decoded off the wire).
bool imgp_opts_valid (const imgp_opts_t *opts);

//  "#rrggbbaa" of a background into `text` (10 bytes), and back: "#rrggbb"
//  (opaque) or "#rrggbbaa", the '#' optional; 0 or -1.
void imgp_opts_background_text (const uint8_t background [4], char *text);
int imgp_opts_background_parse (const char *text, uint8_t background [4]);

//  Names and MIME types. _parse functions return 0 or -1 for unknown text.
const char *imgp_fit_name (imgp_fit_t fit);
int imgp_fit_parse (const char *text, imgp_fit_t *fit);
const char *imgp_format_name (imgp_format_t format);      //  "png"
const char *imgp_format_mime (imgp_format_t format);      //  "image/png"
int imgp_format_parse (const char *text, imgp_format_t *format);
const char *imgp_gravity_name (imgp_gravity_t gravity);   //  "north-east"
int imgp_gravity_parse (const char *text, imgp_gravity_t *gravity);
const char *imgp_state_name (imgp_state_t state);         //  "queued"
int imgp_state_parse (const char *text, imgp_state_t *state);

#endif

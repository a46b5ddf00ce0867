/*  fuzz_opts_query — libFuzzer target for imgp_opts_parse_query, the parser
    of the query string of every upload (?width=200&format=webp...).

    Why: it turns a client's text into the options the resizer trusts, with
    URL-decoding into fixed stack buffers: exactly the code where an
    off-by-one becomes an overflow. The input is the query string (cut at
    its first NUL, as civetweb hands it over). Besides the sanitizers, the
    target checks imgp_opts.h's promises: success gives options that
    imgp_opts_valid() accepts and no error; failure gives an error text;
    and accepted options, written back as a canonical query, parse to the
    same options (so what the frontend accepted is what the resizer gets).

    Never: keep state across inputs.
*/
#include "imgp_opts.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static void
s_broken (const char *query, const char *what) __attribute__ ((noreturn));

static void
s_broken (const char *query, const char *what)
{
    fprintf (stderr, "fuzz_opts_query: %s (query \"%s\")\n", what, query);
    abort ();
}

//  Accepted options as the query a client would write for them.
static void
s_canonical (const imgp_opts_t *opts, char *query, size_t size)
{
    int n = snprintf (query, size, "width=%d&height=%d&fit=%s&format=%s&enlarge=%s",
                      opts->width, opts->height, imgp_fit_name (opts->fit),
                      imgp_format_name (opts->format), opts->enlarge ? "true" : "false");
    if (opts->quality > 0)      //  0 is "the encoder's default": not sayable
        snprintf (query + n, size - (size_t) n, "&quality=%d", opts->quality);
}

static void
s_check_reparse (const char *query, const imgp_opts_t *opts)
{
    char canonical [160];
    s_canonical (opts, canonical, sizeof canonical);
    imgp_opts_t again;
    const char *error = NULL;
    if (imgp_opts_parse_query (&again, canonical, &error, NULL) != 0)
        s_broken (query, "accepted options do not parse back from their canonical query");
    if (again.width != opts->width || again.height != opts->height || again.fit != opts->fit
    ||  again.format != opts->format || again.quality != opts->quality
    ||  again.enlarge != opts->enlarge)
        s_broken (query, "accepted options change when parsed back");
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    //  An exact-size heap copy, so ASan sees any read past the NUL.
    char *query = malloc (size + 1);
    if (!query)
        return 0;
    memcpy (query, data, size);
    query [size] = '\0';

    imgp_opts_t opts;
    const char *error = NULL;
    int rc = imgp_opts_parse_query (&opts, query, &error, NULL);
    if (rc == 0 && (error || !imgp_opts_valid (&opts)))
        s_broken (query, "accepted with an error or with options out of range");
    if (rc != 0 && (rc != -1 || !error || !*error))
        s_broken (query, "refused without a reason (or not with -1)");
    if (rc == 0)
        s_check_reparse (query, &opts);
    free (query);
    return 0;
}

/*  imgp_conf — command-line flags and environment variables for every
    imgpipe program, from one declarative table.

    Why: each program has many endpoints and limits, each settable by a flag
    (`--max-queue 500`) or an environment variable (`IMGP_MAX_QUEUE=500`);
    one table gives the parsing, the precedence (flag > environment >
    default) and the `--help` text, so the three programs cannot drift.
    Options with a NULL default and a "flag" kind are booleans (`--verbose`).
*/
#ifndef IMGP_CONF_H_INCLUDED
#define IMGP_CONF_H_INCLUDED

#include <stdbool.h>

typedef struct {
    const char *name;       //  long flag without dashes, e.g. "max-queue"
    const char *dflt;       //  default as text; NULL for a boolean flag
    const char *help;       //  one line for --help
} imgp_conf_spec_t;

typedef struct _imgp_conf_t imgp_conf_t;

//  Create a configuration for the program. `specs` ends with an entry whose
//  name is NULL and must outlive the object; --help, --version and
//  --verbose are always added. Returns NULL on allocation failure.
imgp_conf_t *imgp_conf_new (const char *program, const char *summary,
                            const imgp_conf_spec_t *specs);

void imgp_conf_destroy (imgp_conf_t **self_p);

//  Parse argv. Returns 0 to go on, 1 when --help or --version was printed
//  (exit 0), -1 on a bad flag (message printed on stderr, exit 2).
int imgp_conf_parse (imgp_conf_t *self, int argc, char **argv);

//  Positional arguments left after the flags (borrowed).
int imgp_conf_argc (imgp_conf_t *self);
char **imgp_conf_argv (imgp_conf_t *self);

//  Value of an option as text: flag, else IMGP_<NAME> from the environment,
//  else its default. Borrowed; NULL only for an unset boolean.
const char *imgp_conf_str (imgp_conf_t *self, const char *name);

//  True when a boolean flag is set (flag given, or env var "1"/"true"/"yes").
bool imgp_conf_bool (imgp_conf_t *self, const char *name);

//  Value as an integer in [min, max]. Returns 0, or -1 with a message on
//  stderr naming the option when it is not a number in range.
int imgp_conf_long (imgp_conf_t *self, const char *name, long long min,
                    long long max, long long *value);

#endif

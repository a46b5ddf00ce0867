/*  imgp_conf — command-line flags and environment variables for every
    imgpipe program, from one declarative table.

    Why: each program has many endpoints and limits, each settable by a flag
    (`--max-queue 500`) or an environment variable (`IMGP_MAX_QUEUE=500`).
    A row of the table states everything about one option once, as libvips
    states its arguments: name, type, range, default, help, and where in
    the program's config struct the value goes. From the table come the
    parsing, the precedence (flag > environment > default), the range checks
    (an error names the option), the defaults tests use and the `--help`
    text, so a program never parses a number by hand and a default is never
    written twice. Rows every program shares (broker endpoints, the upload
    limit) are macros in imgp_defaults.h.

    Rows are written with the IMGP_CONF_* macros below, which take the
    config struct type and the field: the field's C type picks the row type
    (_Generic), so a row cannot write the wrong width.
*/
#ifndef IMGP_CONF_H_INCLUDED
#define IMGP_CONF_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  What a row stores into the config struct.
typedef enum {
    IMGP_CONF_NONE = 0,     //  no destination: read with imgp_conf_str/_bool
    IMGP_CONF_STRING,       //  const char * (borrowed from argv, environ or the table)
    IMGP_CONF_BOOL,         //  bool; a flag without a value
    IMGP_CONF_INT,          //  int in [min, max]
    IMGP_CONF_INT64,        //  int64_t in [min, max]
    IMGP_CONF_SIZE          //  size_t in [min, max], min >= 0
} imgp_conf_type_t;

typedef struct {
    const char *name;       //  long flag without dashes, e.g. "max-queue"
    imgp_conf_type_t type;  //  what is stored at offset
    size_t offset;          //  offsetof the field in the program's config struct
    const char *dflt;       //  default as text; NULL for a boolean
    long long min;          //  smallest value of a number row
    long long max;          //  largest value of a number row
    const char *help;       //  one line for --help
} imgp_conf_spec_t;

//  The row type for field F of struct T, from F's C type.
#define IMGP_CONF_TYPE_OF(T, F) _Generic (((T *) 0)->F, \
    const char *: IMGP_CONF_STRING, char *: IMGP_CONF_STRING, bool: IMGP_CONF_BOOL, \
    int: IMGP_CONF_INT, int64_t: IMGP_CONF_INT64, size_t: IMGP_CONF_SIZE)

//  A text option with default DFLT (a string literal; "" for none).
#define IMGP_CONF_STR(T, F, NAME, DFLT, HELP) \
    { NAME, IMGP_CONF_TYPE_OF (T, F), offsetof (T, F), DFLT, 0, 0, HELP }

//  A whole number in [MIN, MAX] with default DFLT, an integer literal (it
//  is also shown by --help as written).
#define IMGP_CONF_NUM(T, F, NAME, DFLT, MIN, MAX, HELP) \
    { NAME, IMGP_CONF_TYPE_OF (T, F), offsetof (T, F), #DFLT, MIN, MAX, HELP }

//  A flag that takes no value, false unless given.
#define IMGP_CONF_FLAG(T, F, NAME, HELP) \
    { NAME, IMGP_CONF_TYPE_OF (T, F), offsetof (T, F), NULL, 0, 0, HELP }

//  A flag with no destination, read with imgp_conf_bool (--verbose).
#define IMGP_CONF_FLAG_ROW(NAME, HELP) { NAME, IMGP_CONF_NONE, 0, NULL, 0, 0, HELP }

//  The last row of every table.
#define IMGP_CONF_END { NULL, IMGP_CONF_NONE, 0, NULL, 0, 0, NULL }

typedef struct _imgp_conf_t imgp_conf_t;

//  Create a configuration for the program. `specs` ends with IMGP_CONF_END
//  and must outlive the object; --help, --version and --verbose are always
//  added, and --log-format (text or json). Returns NULL on allocation
//  failure.
imgp_conf_t *imgp_conf_new (const char *program, const char *summary,
                            const imgp_conf_spec_t *specs);

void imgp_conf_destroy (imgp_conf_t **self_p);

//  Parse argv. Returns 0 to go on, 1 when --help or --version was printed
//  (exit 0), -1 on a bad flag (message printed on stderr, exit 2).
int imgp_conf_parse (imgp_conf_t *self, int argc, char **argv);

//  Store every row of the table that has a destination into `config`, the
//  program's config struct: the flag, else IMGP_<NAME>, else the default.
//  Fields no row names are left alone. Returns 0, or -1 when a value is not
//  a number in its row's range (each such option named on stderr, with
//  where its value came from).
int imgp_conf_load (imgp_conf_t *self, void *config);

//  What each imgpipe program does first with its options: create the
//  configuration, parse argv, start the log (imgp_conf_log_start:
//  --verbose, --log-format), store the rows into `config`
//  (imgp_conf_load). Returns the configuration, for imgp_conf_destroy at
//  exit; or NULL, everything freed, with the exit code in *exit_code: 0
//  after --help or --version, 2 on a bad flag or value (printed), 1 when
//  out of memory.
imgp_conf_t *imgp_conf_start (const char *program, const char *summary,
                              const imgp_conf_spec_t *specs, int argc, char **argv,
                              void *config, int *exit_code);

//  Store the defaults of `specs` into `config`, as imgp_conf_load would
//  with no flags and no environment (for tests and embedders). Returns 0,
//  or -1 (printed) when a default is out of its range: a bug in the table.
int imgp_conf_defaults (const imgp_conf_spec_t *specs, void *config);

//  Start the log from the built-in options: imgp_log_init with --verbose,
//  imgp_log_set_format with --log-format (text or json; also
//  IMGP_LOG_FORMAT). Returns 0, or -1 (printed) for another format.
int imgp_conf_log_start (imgp_conf_t *self);

//  The row of a built-in option every program has (verbose, log-format,
//  help, version), or NULL: for a caller that reorders argv and must know
//  which flags take a value.
const imgp_conf_spec_t *imgp_conf_builtin (const char *name);

//  Positional arguments left after the flags (borrowed).
int imgp_conf_argc (imgp_conf_t *self);
char **imgp_conf_argv (imgp_conf_t *self);

//  Value of an option as text: flag, else IMGP_<NAME> from the environment,
//  else its default. Borrowed; NULL only for an unset boolean.
const char *imgp_conf_str (imgp_conf_t *self, const char *name);

//  True when a boolean flag is set (flag given, or env var "1"/"true"/"yes").
bool imgp_conf_bool (imgp_conf_t *self, const char *name);

#endif

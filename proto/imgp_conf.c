/*  imgp_conf — see imgp_conf.h. A linear scan of a small table: programs
    have a dozen options and read them once at start. One function turns
    text into a field (s_store), for flags, environment and defaults alike,
    so a default is checked against its range the same way a flag is.
*/
#include "imgp_conf.h"
#include "imgp_log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMGP_CONF_MAX 48

static const imgp_conf_spec_t s_builtin [] = {
    IMGP_CONF_FLAG_ROW ("verbose", "log DEBUG lines too"),
    { "log-format", IMGP_CONF_NONE, 0, "text", 0, 0,
      "log lines as text (key=value) or json (one object a line)" },
    IMGP_CONF_FLAG_ROW ("help", "print this help and exit"),
    IMGP_CONF_FLAG_ROW ("version", "print the version and exit"),
};
#define S_BUILTINS (sizeof s_builtin / sizeof s_builtin [0])
//  The last built-ins (help, version) come from the command line only.
#define S_CLI_ONLY 2

struct _imgp_conf_t {
    const char *program;                      //  name for messages
    const char *summary;                      //  what the program does, for --help
    const imgp_conf_spec_t *spec [IMGP_CONF_MAX];  //  program's options, then built-ins
    const char *value [IMGP_CONF_MAX];        //  value from argv, borrowed
    char env [IMGP_CONF_MAX][64];             //  IMGP_ environment variable names
    int count;                                //  entries used in spec
    int argc;                                 //  positional arguments left
    char **argv;                              //  positional arguments (borrowed)
};

static void
s_add (imgp_conf_t *self, const imgp_conf_spec_t *spec)
{
    assert (self->count < IMGP_CONF_MAX);   //  a bigger table: raise the limit
    int i = self->count++;
    self->spec [i] = spec;
    snprintf (self->env [i], sizeof self->env [i], "IMGP_%s", spec->name);
    for (char *c = self->env [i]; *c; c++)
        *c = *c == '-' ? '_' : (char) toupper ((unsigned char) *c);
}

imgp_conf_t *
imgp_conf_new (const char *program, const char *summary, const imgp_conf_spec_t *specs)
{
    imgp_conf_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->program = program;
    self->summary = summary;
    for (const imgp_conf_spec_t *s = specs; s && s->name; s++)
        s_add (self, s);
    for (size_t i = 0; i < S_BUILTINS; i++)
        s_add (self, &s_builtin [i]);
    return self;
}

void
imgp_conf_destroy (imgp_conf_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

static int
s_find (imgp_conf_t *self, const char *name, size_t len)
{
    for (int i = 0; i < self->count; i++)
        if (strlen (self->spec [i]->name) == len
        &&  strncmp (self->spec [i]->name, name, len) == 0)
            return i;
    return -1;
}

static void
s_help (imgp_conf_t *self)
{
    printf ("Usage: %s [OPTIONS]\n%s\n\nOptions (each also read from the environment variable shown):\n",
            self->program, self->summary);
    for (int i = 0; i < self->count; i++) {
        const imgp_conf_spec_t *s = self->spec [i];
        bool number = s->type >= IMGP_CONF_INT;
        char flag [96];
        snprintf (flag, sizeof flag, "--%s%s", s->name,
                  number ? " N" : s->dflt ? " VALUE" : "");
        printf ("  %-30s %s", flag, s->help);
        if (number)
            printf (" (%lld..%lld, default %s)", s->min, s->max, s->dflt);
        else
        if (s->dflt && *s->dflt)
            printf (" (default %s)", s->dflt);
        printf (i < self->count - S_CLI_ONLY ? "  [%s]\n" : "\n", self->env [i]);
    }
}

int
imgp_conf_parse (imgp_conf_t *self, int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "--") == 0) {
            i++;
            break;
        }
        if (strncmp (arg, "--", 2) != 0)
            break;                      //  first positional argument
        const char *name = arg + 2;
        const char *eq = strchr (name, '=');
        int k = s_find (self, name, eq ? (size_t) (eq - name) : strlen (name));
        if (k < 0) {
            fprintf (stderr, "%s: unknown option '%s' (see --help)\n", self->program, arg);
            return -1;
        }
        if (!self->spec [k]->dflt) {    //  boolean
            if (eq) {
                fprintf (stderr, "%s: option '--%s' takes no value\n", self->program, self->spec [k]->name);
                return -1;
            }
            self->value [k] = "1";
        }
        else
        if (eq)
            self->value [k] = eq + 1;
        else
        if (i + 1 < argc)
            self->value [k] = argv [++i];
        else {
            fprintf (stderr, "%s: option '%s' needs a value\n", self->program, arg);
            return -1;
        }
    }
    self->argc = argc - i;
    self->argv = argv + i;
    if (imgp_conf_bool (self, "help")) {
        s_help (self);
        return 1;
    }
    if (imgp_conf_bool (self, "version")) {
        printf ("%s %s\n", self->program, IMGP_VERSION);
        return 1;
    }
    return 0;
}

int
imgp_conf_argc (imgp_conf_t *self)
{
    return self->argc;
}

char **
imgp_conf_argv (imgp_conf_t *self)
{
    return self->argv;
}

//  Value of option k as text, and where it came from (for messages).
static const char *
s_value (imgp_conf_t *self, int k, const char **source)
{
    *source = "the command line";
    if (self->value [k])
        return self->value [k];
    //  --help and --version are for the person at the terminal only.
    const char *env = k < self->count - S_CLI_ONLY ? getenv (self->env [k]) : NULL;
    *source = self->env [k];
    if (env)
        return env;
    *source = "the default";
    return self->spec [k]->dflt;
}

//  Index of option `name`; a name not in the table is a bug in the caller.
static int
s_index (imgp_conf_t *self, const char *name)
{
    int k = s_find (self, name, strlen (name));
    if (k < 0) {
        fprintf (stderr, "%s: internal error: no option '%s'\n", self->program, name);
        abort ();
    }
    return k;
}

const char *
imgp_conf_str (imgp_conf_t *self, const char *name)
{
    const char *source;
    return s_value (self, s_index (self, name), &source);
}

static bool
s_true (const char *text)
{
    return text && (strcmp (text, "1") == 0 || strcasecmp (text, "true") == 0
                 || strcasecmp (text, "yes") == 0);
}

bool
imgp_conf_bool (imgp_conf_t *self, const char *name)
{
    return s_true (imgp_conf_str (self, name));
}

const imgp_conf_spec_t *
imgp_conf_builtin (const char *name)
{
    for (size_t i = 0; i < S_BUILTINS; i++)
        if (strcmp (s_builtin [i].name, name) == 0)
            return &s_builtin [i];
    return NULL;
}

int
imgp_conf_log_start (imgp_conf_t *self)
{
    imgp_log_format_t format;
    const char *name = imgp_conf_str (self, "log-format");
    if (imgp_log_format_parse (name, &format)) {
        const char *source;
        s_value (self, s_index (self, "log-format"), &source);
        fprintf (stderr, "%s: --log-format must be text or json, not '%s' (from %s)\n",
                 self->program, name, source);
        return -1;
    }
    imgp_log_init (self->program, imgp_conf_bool (self, "verbose"));
    imgp_log_set_format (format);
    return 0;
}

//  `text` as a whole number in [min, max]. Returns 0, or -1 with a message
//  naming the option and where its value came from.
static int
s_number (const char *program, const char *name, const char *source, const char *text,
          long long min, long long max, long long *value)
{
    char *end = NULL;
    errno = 0;
    long long v = text ? strtoll (text, &end, 10) : 0;
    if (!text || !*text || *end || errno || v < min || v > max) {
        fprintf (stderr, "%s: --%s must be a whole number from %lld to %lld, not '%s' (from %s)\n",
                 program, name, min, max, text ? text : "", source);
        return -1;
    }
    *value = v;
    return 0;
}

//  Store `text`, the value of row `spec`, into its field of `config`.
//  Returns 0, or -1 (printed) when it is not a number in range.
static int
s_store (const char *program, const imgp_conf_spec_t *spec, const char *source,
         const char *text, void *config)
{
    char *field = (char *) config + spec->offset;
    long long v = 0;
    if (spec->type >= IMGP_CONF_INT
    &&  s_number (program, spec->name, source, text, spec->min, spec->max, &v))
        return -1;
    switch (spec->type) {
        case IMGP_CONF_NONE:
            break;
        case IMGP_CONF_STRING:
            *(const char **) field = text;
            break;
        case IMGP_CONF_BOOL:
            *(bool *) field = s_true (text);
            break;
        case IMGP_CONF_INT:
            assert (spec->min >= INT_MIN && spec->max <= INT_MAX);
            *(int *) field = (int) v;
            break;
        case IMGP_CONF_INT64:
            *(int64_t *) field = v;
            break;
        case IMGP_CONF_SIZE:
            assert (spec->min >= 0);
            *(size_t *) field = (size_t) v;
            break;
    }
    return 0;
}

int
imgp_conf_load (imgp_conf_t *self, void *config)
{
    assert (self && config);
    int rc = 0;
    for (int i = 0; i < self->count - (int) S_BUILTINS; i++) {
        const char *source;
        const char *text = s_value (self, i, &source);
        if (s_store (self->program, self->spec [i], source, text, config))
            rc = -1;                    //  go on: name every bad option at once
    }
    return rc;
}

imgp_conf_t *
imgp_conf_start (const char *program, const char *summary, const imgp_conf_spec_t *specs,
                 int argc, char **argv, void *config, int *exit_code)
{
    assert (exit_code);
    imgp_conf_t *self = imgp_conf_new (program, summary, specs);
    if (!self) {
        *exit_code = 1;
        return NULL;
    }
    int rc = imgp_conf_parse (self, argc, argv);
    if (rc == 0)
        rc = imgp_conf_log_start (self);
    if (rc == 0)
        rc = imgp_conf_load (self, config);
    if (rc != 0) {
        imgp_conf_destroy (&self);
        *exit_code = rc > 0 ? 0 : 2;
    }
    return self;
}

int
imgp_conf_defaults (const imgp_conf_spec_t *specs, void *config)
{
    assert (specs && config);
    int rc = 0;
    for (const imgp_conf_spec_t *s = specs; s->name; s++)
        if (s_store ("imgp_conf", s, "the default", s->dflt, config))
            rc = -1;
    return rc;
}

/*  imgp_conf — see imgp_conf.h. A linear scan of a small table: programs
    have a dozen options and read them once at start.
*/
#include "imgp_conf.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMGP_CONF_MAX 48

static const imgp_conf_spec_t s_builtin [] = {
    { "verbose", NULL, "log DEBUG lines too" },
    { "help", NULL, "print this help and exit" },
    { "version", NULL, "print the version and exit" },
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
    if (self->count >= IMGP_CONF_MAX)
        return;
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
        char flag [96];
        snprintf (flag, sizeof flag, "--%s%s", s->name, s->dflt ? " VALUE" : "");
        printf ("  %-30s %s", flag, s->help);
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

const char *
imgp_conf_str (imgp_conf_t *self, const char *name)
{
    int k = s_find (self, name, strlen (name));
    if (k < 0) {
        fprintf (stderr, "%s: internal error: no option '%s'\n", self->program, name);
        abort ();
    }
    if (self->value [k])
        return self->value [k];
    //  --help and --version are for the person at the terminal only.
    const char *env = k < self->count - S_CLI_ONLY ? getenv (self->env [k]) : NULL;
    if (env)
        return env;
    return self->spec [k]->dflt;
}

bool
imgp_conf_bool (imgp_conf_t *self, const char *name)
{
    const char *v = imgp_conf_str (self, name);
    return v && (strcmp (v, "1") == 0 || strcasecmp (v, "true") == 0
              || strcasecmp (v, "yes") == 0);
}

int
imgp_conf_long (imgp_conf_t *self, const char *name, long long min, long long max,
                long long *value)
{
    const char *text = imgp_conf_str (self, name);
    char *end = NULL;
    errno = 0;
    long long v = text ? strtoll (text, &end, 10) : 0;
    if (!text || !*text || *end || errno || v < min || v > max) {
        fprintf (stderr, "%s: --%s must be a whole number from %lld to %lld, not '%s'\n",
                 self->program, name, min, max, text ? text : "");
        return -1;
    }
    *value = v;
    return 0;
}

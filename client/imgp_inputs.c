/*  imgp_inputs — see imgp_inputs.h.

    A growing array of (path, output) string pairs; the list is built once
    and then only read, by many batch threads at once, so it needs no
    lock. Collisions of output names are found with a czmq hash of the
    names given so far: O(1) per input, so a directory of 100 000 files
    costs no quadratic scan.
*/
#include "imgp_inputs.h"

#include <assert.h>
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_PATH_MAX 4096

typedef struct {
    char *path;                 //  path to open (owned)
    char *output;               //  output path, NULL until named (owned)
} s_entry_t;

struct _imgp_inputs_t {
    s_entry_t *entries;         //  the inputs, in order
    size_t size;                //  entries used
    size_t capacity;            //  entries allocated
};

static int
s_fail (char *error, size_t error_size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (char *error, size_t error_size, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (error, error_size, format, args);
    va_end (args);
    return -1;
}

//  `dir` + "/" + `name` into `path` (just `name` when dir is "" or name
//  is absolute). Returns 0, or -1 with a message when it does not fit.
static int
s_join (char *path, size_t path_size, const char *dir, const char *name, char *error,
        size_t error_size)
{
    bool join = *dir && name [0] != '/';
    const char *slash = join && dir [strlen (dir) - 1] != '/' ? "/" : "";
    if (snprintf (path, path_size, "%s%s%s", join ? dir : "", slash, name) >= (int) path_size)
        return s_fail (error, error_size, "path '%s' is too long", name);
    return 0;
}

//  Append a copy of `path`. Returns 0, or -1 with a message.
static int
s_append (imgp_inputs_t *self, const char *path, char *error, size_t error_size)
{
    if (self->size >= IMGP_INPUTS_MAX)
        return s_fail (error, error_size, "more than %d inputs", IMGP_INPUTS_MAX);
    if (self->size == self->capacity) {
        size_t bigger = self->capacity ? self->capacity * 2 : 64;
        s_entry_t *grown = realloc (self->entries, bigger * sizeof *grown);
        if (!grown)
            return s_fail (error, error_size, "out of memory");
        self->entries = grown;
        self->capacity = bigger;
    }
    char *copy = strdup (path);
    if (!copy)
        return s_fail (error, error_size, "out of memory");
    s_entry_t *entry = &self->entries [self->size++];
    entry->path = copy;
    entry->output = NULL;
    return 0;
}

static int
s_compare (const void *a, const void *b)
{
    return strcmp (((const s_entry_t *) a)->path, ((const s_entry_t *) b)->path);
}

//  Every regular, non-hidden file of `dir`, sorted.
static int
s_list_dir (imgp_inputs_t *self, const char *dir, char *error, size_t error_size)
{
    DIR *handle = opendir (dir);
    if (!handle)
        return s_fail (error, error_size, "cannot list '%s': %s", dir, strerror (errno));
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (errno = 0, entry = readdir (handle))) {
        if (entry->d_name [0] == '.')
            continue;
        char path [S_PATH_MAX];
        struct stat st;
        rc = s_join (path, sizeof path, dir, entry->d_name, error, error_size);
        //  stat, not d_type: a symlink to a file counts, and some file
        //  systems leave d_type unknown.
        if (rc == 0 && stat (path, &st) == 0 && S_ISREG (st.st_mode))
            rc = s_append (self, path, error, error_size);
    }
    if (rc == 0 && errno != 0)
        rc = s_fail (error, error_size, "cannot list '%s': %s", dir, strerror (errno));
    closedir (handle);
    if (rc == 0 && self->size > 1)
        qsort (self->entries, self->size, sizeof *self->entries, s_compare);
    return rc;
}

//  One manifest line, without its line end: the path in it, or NULL for a
//  line to skip. A TSV line's path is its first column.
static const char *
s_manifest_path (char *line, bool tsv)
{
    if (tsv)
        line [strcspn (line, "\t")] = 0;
    return line [0] && line [0] != '#' ? line : NULL;
}

static int
s_list_manifest (imgp_inputs_t *self, FILE *file, const char *manifest,
                 char *error, size_t error_size)
{
    //  Paths are relative to the manifest's directory: "" when it has none.
    char dir [S_PATH_MAX];
    const char *slash = strrchr (manifest, '/');
    size_t dir_len = slash ? (size_t) (slash - manifest) + 1 : 0;
    if (dir_len >= sizeof dir)
        return s_fail (error, error_size, "manifest path '%s' is too long", manifest);
    memcpy (dir, manifest, dir_len);
    dir [dir_len] = 0;

    char *line = NULL;
    size_t line_size = 0;
    ssize_t len;
    bool tsv = false;
    int rc = 0;
    for (long number = 1; rc == 0 && (len = getline (&line, &line_size, file)) >= 0; number++) {
        while (len > 0 && (line [len - 1] == '\n' || line [len - 1] == '\r'))
            line [--len] = 0;
        if (strlen (line) != (size_t) len)
            rc = s_fail (error, error_size, "%s:%ld: holds a NUL byte", manifest, number);
        else
        if (number == 1 && strchr (line, '\t'))
            tsv = true;             //  the header of a TSV
        else {
            const char *name = s_manifest_path (line, tsv);
            char path [S_PATH_MAX];
            if (name)
                rc = s_join (path, sizeof path, dir, name, error, error_size);
            if (name && rc == 0)
                rc = s_append (self, path, error, error_size);
        }
    }
    if (rc == 0 && ferror (file))
        rc = s_fail (error, error_size, "cannot read '%s': %s", manifest, strerror (errno));
    free (line);
    return rc;
}

imgp_inputs_t *
imgp_inputs_new (const char *source, char *error, size_t error_size)
{
    assert (source && error && error_size > 0);
    imgp_inputs_t *self = calloc (1, sizeof *self);
    if (!self) {
        s_fail (error, error_size, "out of memory");
        return NULL;
    }
    struct stat st;
    int rc = -1;
    if (stat (source, &st) != 0)
        s_fail (error, error_size, "cannot open '%s': %s", source, strerror (errno));
    else
    if (S_ISDIR (st.st_mode))
        rc = s_list_dir (self, source, error, error_size);
    else {
        FILE *file = fopen (source, "r");
        if (file) {
            rc = s_list_manifest (self, file, source, error, error_size);
            fclose (file);
        }
        else
            s_fail (error, error_size, "cannot open '%s': %s", source, strerror (errno));
    }
    if (rc != 0)
        imgp_inputs_destroy (&self);
    return self;
}

void
imgp_inputs_destroy (imgp_inputs_t **self_p)
{
    assert (self_p);
    imgp_inputs_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->size; i++) {
            free (self->entries [i].path);
            free (self->entries [i].output);
        }
        free (self->entries);
        free (self);
        *self_p = NULL;
    }
}

size_t
imgp_inputs_size (imgp_inputs_t *self)
{
    assert (self);
    return self->size;
}

const char *
imgp_inputs_path (imgp_inputs_t *self, size_t index)
{
    assert (self && index < self->size);
    return self->entries [index].path;
}

const char *
imgp_inputs_output (imgp_inputs_t *self, size_t index)
{
    assert (self && index < self->size);
    return self->entries [index].output;
}

//  The name part of `path` without its last extension, into `stem`.
static void
s_stem (const char *path, char *stem, size_t stem_size)
{
    const char *slash = strrchr (path, '/');
    const char *name = slash ? slash + 1 : path;
    const char *dot = strrchr (name, '.');
    size_t len = dot && dot != name ? (size_t) (dot - name) : strlen (name);
    if (len == 0)
        snprintf (stem, stem_size, "input");
    else
        snprintf (stem, stem_size, "%.*s", (int) len, name);
}

//  OUTDIR/stem.ext, or OUTDIR/stem-N.ext for the first N >= 2 not taken.
//  NULL when out of memory or when the path would not fit.
static char *
s_unique_output (zhashx_t *taken, const char *outdir, const char *stem, const char *ext)
{
    char path [S_PATH_MAX];
    const char *slash = *outdir && outdir [strlen (outdir) - 1] != '/' ? "/" : "";
    int len = snprintf (path, sizeof path, "%s%s%s.%s", outdir, slash, stem, ext);
    for (unsigned n = 2; len < (int) sizeof path && zhashx_lookup (taken, path); n++)
        len = snprintf (path, sizeof path, "%s%s%s-%u.%s", outdir, slash, stem, n, ext);
    if (len >= (int) sizeof path || zhashx_insert (taken, path, "") != 0)
        return NULL;
    return strdup (path);
}

int
imgp_inputs_set_outputs (imgp_inputs_t *self, const char *outdir, const char *ext)
{
    assert (self && outdir && ext);
    zhashx_t *taken = zhashx_new ();
    if (!taken)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < self->size; i++) {
        char stem [256];
        s_stem (self->entries [i].path, stem, sizeof stem);
        free (self->entries [i].output);
        self->entries [i].output = s_unique_output (taken, outdir, stem, ext);
        rc = self->entries [i].output ? 0 : -1;
    }
    zhashx_destroy (&taken);
    return rc;
}

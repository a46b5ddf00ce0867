/*  imgp_inputs — see imgp_inputs.h.

    Two sources behind one stream: an imgp_walk for a directory, an open
    FILE read line by line for a manifest. The outputs given so far sit in
    a czmq hash to keep them unique: O(1) per input. For a walk the hash is
    emptied whenever the directory changes (its files come together), so
    it holds one directory's names; a manifest may list one output's
    inputs far apart, so its hash holds the run's.
*/
#include "imgp_inputs.h"

#include "imgp_walk.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_PATH_MAX 4096

struct _imgp_inputs_t {
    imgp_walk_t *walk;          //  the tree walked, or NULL for a manifest
    char *root;                 //  its root (owned), for imgp_inputs_walk_again
    FILE *manifest;             //  the manifest being read, or NULL
    char *manifest_name;        //  its path, for messages (owned)
    char dir [S_PATH_MAX];      //  manifest paths are relative to this, "" for cwd
    bool tsv;                   //  the manifest is a TSV (header skipped)
    long line_number;           //  manifest line last read
    char *line;                 //  getline's buffer (owned)
    size_t line_size;           //  its size
    long long total;            //  inputs in all, -1 while unknown
    size_t seen;                //  inputs handed out
    char *outdir;               //  where outputs go (owned)
    char *ext;                  //  their extension (owned)
    zhashx_t *taken;            //  outputs given (walk: in the current directory)
    char taken_dir [S_PATH_MAX];    //  walk: the directory `taken` is about
    char path [S_PATH_MAX];     //  the input handed out
    char output [S_PATH_MAX];   //  its output
    char problem [S_PATH_MAX + 200];    //  its problem
};

//  --------------------------------------------------------------------------
//  Output names

//  `relative` without a leading '/', "." parts or empty parts, into `out`.
//  Returns 0, or -1 with a reason.
static int
s_normalize (const char *relative, char *out, size_t out_size, const char **problem)
{
    size_t len = 0;
    const char *part = relative;
    while (*part) {
        size_t part_len = strcspn (part, "/");
        if (part_len == 2 && part [0] == '.' && part [1] == '.') {
            *problem = "a '..' in the path would put its thumbnail outside OUTDIR";
            return -1;
        }
        if (part_len > 0 && !(part_len == 1 && part [0] == '.')) {
            if (len + part_len + 2 > out_size) {
                *problem = "path too long";
                return -1;
            }
            if (len)
                out [len++] = '/';
            memcpy (out + len, part, part_len);
            len += part_len;
        }
        part += part_len;
        while (*part == '/')
            part++;
    }
    out [len] = 0;
    if (len == 0) {
        *problem = "no file name";
        return -1;
    }
    return 0;
}

//  OUTDIR/relative without its last extension, into `base`.
static int
s_base (const char *outdir, const char *relative, char *base, size_t base_size,
        const char **problem)
{
    char clean [S_PATH_MAX];
    if (s_normalize (relative, clean, sizeof clean, problem) != 0)
        return -1;
    const char *slash = strrchr (clean, '/');
    const char *name = slash ? slash + 1 : clean;
    char *dot = strrchr (name, '.');
    if (dot && dot != name)
        *dot = 0;               //  "a.tar.gz" -> "a.tar"; ".profile" stays
    const char *sep = *outdir && outdir [strlen (outdir) - 1] != '/' ? "/" : "";
    if (snprintf (base, base_size, "%s%s%s", outdir, sep, clean) >= (int) base_size) {
        *problem = "path too long";
        return -1;
    }
    return 0;
}

int
imgp_inputs_output_path (const char *outdir, const char *relative, const char *ext,
                         char *output, size_t output_size, const char **problem)
{
    assert (outdir && relative && ext && output && problem);
    char base [S_PATH_MAX];
    if (s_base (outdir, relative, base, sizeof base, problem) != 0)
        return -1;
    if (snprintf (output, output_size, "%s.%s", base, ext) >= (int) output_size) {
        *problem = "path too long";
        return -1;
    }
    return 0;
}

//  The output of `relative`: its mirrored path, or with "-N" for the
//  first N >= 2 not taken. Returns 0, or -1 with a reason.
static int
s_name_output (imgp_inputs_t *self, const char *relative, const char **problem)
{
    char base [S_PATH_MAX];
    if (s_base (self->outdir, relative, base, sizeof base, problem) != 0)
        return -1;
    if (self->walk) {
        //  A new directory: the names of the last one cannot collide.
        const char *slash = strrchr (base, '/');
        size_t dir_len = slash ? (size_t) (slash - base) : 0;
        if (strlen (self->taken_dir) != dir_len || strncmp (self->taken_dir, base, dir_len)) {
            zhashx_purge (self->taken);
            snprintf (self->taken_dir, sizeof self->taken_dir, "%.*s", (int) dir_len, base);
        }
    }
    int len = snprintf (self->output, sizeof self->output, "%s.%s", base, self->ext);
    for (unsigned n = 2; len < (int) sizeof self->output
                         && zhashx_lookup (self->taken, self->output); n++)
        len = snprintf (self->output, sizeof self->output, "%s-%u.%s", base, n, self->ext);
    if (len >= (int) sizeof self->output) {
        *problem = "path too long";
        return -1;
    }
    if (zhashx_insert (self->taken, self->output, "") != 0) {
        *problem = "out of memory";
        return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Manifests

//  One manifest line, without its line end: the path in it, or NULL for a
//  line to skip. A TSV line's path is its first column.
static const char *
s_manifest_path (char *line, bool tsv)
{
    if (tsv)
        line [strcspn (line, "\t")] = 0;
    return line [0] && line [0] != '#' ? line : NULL;
}

//  Read the next manifest line into self->line. Returns its length, or -1
//  at the end (or on a read error: self->problem then says so).
static ssize_t
s_manifest_line (imgp_inputs_t *self)
{
    ssize_t len = getline (&self->line, &self->line_size, self->manifest);
    if (len < 0) {
        if (ferror (self->manifest))
            snprintf (self->problem, sizeof self->problem, "cannot read '%s': %s",
                      self->manifest_name, strerror (errno));
        return -1;
    }
    self->line_number++;
    while (len > 0 && (self->line [len - 1] == '\n' || self->line [len - 1] == '\r'))
        self->line [--len] = 0;
    return len;
}

//  The next path of the manifest, into self->path (relative: the name as
//  listed). Returns 1, 0 at the end, or -1 for a line with a problem.
static int
s_manifest_next (imgp_inputs_t *self, const char **relative)
{
    while (true) {
        self->problem [0] = 0;
        ssize_t len = s_manifest_line (self);
        if (len < 0)
            return self->problem [0] ? -1 : 0;
        *relative = self->line;
        if (strlen (self->line) != (size_t) len) {
            snprintf (self->problem, sizeof self->problem, "%s:%ld: holds a NUL byte",
                      self->manifest_name, self->line_number);
            return -1;
        }
        if (self->line_number == 1 && strchr (self->line, '\t')) {
            self->tsv = true;           //  the header of a TSV
            continue;
        }
        const char *name = s_manifest_path (self->line, self->tsv);
        if (!name)
            continue;
        bool join = *self->dir && name [0] != '/';
        if (snprintf (self->path, sizeof self->path, "%s%s", join ? self->dir : "", name)
            >= (int) sizeof self->path) {
            snprintf (self->problem, sizeof self->problem, "%s:%ld: path too long",
                      self->manifest_name, self->line_number);
            return -1;
        }
        return 1;
    }
}

//  Count the manifest's paths (the total of the progress bar), then
//  rewind. Returns 0, or -1 with a message in self->problem.
static int
s_manifest_count (imgp_inputs_t *self)
{
    long long count = 0;
    const char *relative;
    int rc;
    while ((rc = s_manifest_next (self, &relative)) != 0)
        count++;                //  a line with a problem is reported too
    if (ferror (self->manifest))
        return -1;
    rewind (self->manifest);
    self->line_number = 0;
    self->tsv = false;
    self->total = count;
    return 0;
}

static int
s_manifest_open (imgp_inputs_t *self, const char *source, char *error, size_t error_size)
{
    self->manifest = fopen (source, "r");
    self->manifest_name = strdup (source);
    if (!self->manifest || !self->manifest_name) {
        snprintf (error, error_size, "cannot open '%s': %s", source, strerror (errno));
        return -1;
    }
    //  Paths are relative to the manifest's directory: "" when it has none.
    const char *slash = strrchr (source, '/');
    size_t dir_len = slash ? (size_t) (slash - source) + 1 : 0;
    if (dir_len >= sizeof self->dir) {
        snprintf (error, error_size, "manifest path '%s' is too long", source);
        return -1;
    }
    memcpy (self->dir, source, dir_len);
    self->dir [dir_len] = 0;
    if (s_manifest_count (self) != 0) {
        snprintf (error, error_size, "%s", self->problem);
        return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  The stream

imgp_inputs_t *
imgp_inputs_new (const char *source, const char *outdir, const char *ext, char *error,
                 size_t error_size)
{
    assert (source && outdir && ext && error && error_size > 0);
    imgp_inputs_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    self->total = -1;
    self->outdir = strdup (outdir);
    self->ext = strdup (ext);
    self->taken = zhashx_new ();
    struct stat st;
    int rc = -1;
    if (!self->outdir || !self->ext || !self->taken)
        snprintf (error, error_size, "out of memory");
    else
    if (stat (source, &st) != 0)
        snprintf (error, error_size, "cannot open '%s': %s", source, strerror (errno));
    else
    if (S_ISDIR (st.st_mode)) {
        self->walk = imgp_walk_new (source, error, error_size);
        self->root = self->walk ? strdup (source) : NULL;
        if (self->walk && !self->root)
            snprintf (error, error_size, "out of memory");
        if (self->root) {
            imgp_walk_exclude (self->walk, outdir);
            rc = 0;
        }
    }
    else
        rc = s_manifest_open (self, source, error, error_size);
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
        imgp_walk_destroy (&self->walk);
        free (self->root);
        if (self->manifest)
            fclose (self->manifest);
        free (self->manifest_name);
        free (self->line);
        free (self->outdir);
        free (self->ext);
        zhashx_destroy (&self->taken);
        free (self);
        *self_p = NULL;
    }
}

//  The next path of the walk. Returns 1, 0 at the end, -1 for a refusal.
static int
s_walk_next (imgp_inputs_t *self, const char **relative)
{
    const char *path;
    imgp_walk_event_t event = imgp_walk_next (self->walk, &path, relative, self->problem,
                                              sizeof self->problem);
    if (event == IMGP_WALK_END)
        return 0;
    snprintf (self->path, sizeof self->path, "%s", path);
    return event == IMGP_WALK_FILE ? 1 : -1;
}

int
imgp_inputs_next (imgp_inputs_t *self, imgp_input_t *input)
{
    assert (self && input);
    const char *relative = NULL;
    int rc = self->walk ? s_walk_next (self, &relative) : s_manifest_next (self, &relative);
    if (rc == 0) {
        if (self->total < 0)
            self->total = (long long) self->seen;
        return 0;
    }
    *input = (imgp_input_t) { .path = self->path, .relative = relative };
    const char *problem = NULL;
    if (rc < 0)
        input->problem = self->problem;
    else
    if (s_name_output (self, relative, &problem) != 0) {
        snprintf (self->problem, sizeof self->problem, "%s", problem);
        input->problem = self->problem;
    }
    else
        input->output = self->output;
    self->seen++;
    return 1;
}

imgp_walk_t *
imgp_inputs_walk_again (imgp_inputs_t *self)
{
    assert (self);
    char error [256];
    imgp_walk_t *walk = self->walk ? imgp_walk_new (self->root, error, sizeof error) : NULL;
    if (walk)
        imgp_walk_exclude (walk, self->outdir);
    return walk;
}

long long
imgp_inputs_total (imgp_inputs_t *self)
{
    assert (self);
    return self->total;
}

size_t
imgp_inputs_seen (imgp_inputs_t *self)
{
    assert (self);
    return self->seen;
}

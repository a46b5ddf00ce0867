/*  imgp_resume — see imgp_resume.h.

    The state file is text: "imgpipe-batch-state 1", "options QUERY", then
    one "pending ID OUTPUT" line per job left in flight by Ctrl-C. It is
    written through imgp_file_write (a temporary file and a rename), so a
    crash leaves the old state or the new, never half; a rewrite that only
    changes the pending lines puts the old mtime back (utimensat), since
    the mtime is what outputs are compared with.
*/
#include "imgp_resume.h"

#include "imgp_file.h"
#include "imgp_id.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_MAGIC "imgpipe-batch-state 1\n"
#define S_STATE_MAX (4 * 1024 * 1024)   //  far beyond --parallel pending lines

struct _imgp_resume_t {
    char path [4096];           //  OUTDIR/.imgpipe-batch.state
    char *options;              //  the options of this run (owned)
    bool same;                  //  the state held these options already
    struct timespec since;      //  mtime of the state file
    zhashx_t *pending;          //  output -> job id left in flight (owned strings)
    bool dirty;                 //  pending differs from the file
};

//  Read the pending lines after the header. Lines that do not parse are
//  dropped: at worst that file is uploaded again.
static void
s_parse_pending (imgp_resume_t *self, char *text)
{
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n")) {
        char id [IMGP_ID_LEN + 1];
        if (strncmp (line, "pending ", 8) != 0 || strlen (line) < 8 + IMGP_ID_LEN + 2
        ||  line [8 + IMGP_ID_LEN] != ' ')
            continue;
        memcpy (id, line + 8, IMGP_ID_LEN);
        id [IMGP_ID_LEN] = 0;
        if (imgp_id_valid (id))
            zhashx_update (self->pending, line + 8 + IMGP_ID_LEN + 1, strdup (id));
    }
}

//  Read the state file: same options? and its pending jobs.
static void
s_load (imgp_resume_t *self)
{
    char *data = NULL, problem [256];
    size_t size = 0;
    if (imgp_file_read (self->path, S_STATE_MAX, &data, &size, problem, sizeof problem) != 0)
        return;
    char header [1200];
    int len = snprintf (header, sizeof header, S_MAGIC "options %s\n", self->options);
    self->same = len < (int) sizeof header && size >= (size_t) len
              && memcmp (data, header, (size_t) len) == 0;
    char *rest = self->same ? malloc (size - (size_t) len + 1) : NULL;
    if (rest) {
        memcpy (rest, data + len, size - (size_t) len);
        rest [size - (size_t) len] = 0;
        s_parse_pending (self, rest);
        self->dirty = zhashx_size (self->pending) > 0;
    }
    free (rest);
    free (data);
}

//  Write the state file: header, options, pending lines.
static int
s_write (imgp_resume_t *self, char *error, size_t error_size)
{
    size_t capacity = strlen (self->options) + 64;
    for (const char *id = zhashx_first (self->pending); id; id = zhashx_next (self->pending))
        capacity += strlen (zhashx_cursor (self->pending)) + IMGP_ID_LEN + 16;
    char *text = malloc (capacity);
    if (!text) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    size_t len = (size_t) snprintf (text, capacity, S_MAGIC "options %s\n", self->options);
    for (const char *id = zhashx_first (self->pending); id; id = zhashx_next (self->pending)) {
        const char *output = zhashx_cursor (self->pending);
        if (!strchr (output, '\n'))     //  one a line: such a name cannot be kept
            len += (size_t) snprintf (text + len, capacity - len, "pending %s %s\n", id, output);
    }
    char problem [256];
    int rc = imgp_file_write (self->path, text, len, problem, sizeof problem);
    free (text);
    if (rc != 0)
        snprintf (error, error_size, "'%s': %s", self->path, problem);
    return rc;
}

imgp_resume_t *
imgp_resume_new (const char *outdir, const char *options, char *error, size_t error_size)
{
    assert (outdir && options && error);
    imgp_resume_t *self = calloc (1, sizeof *self);
    if (self) {
        self->options = strdup (options);
        self->pending = zhashx_new ();
    }
    if (!self || !self->options || !self->pending) {
        snprintf (error, error_size, "out of memory");
        imgp_resume_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->pending, (zhashx_destructor_fn *) zstr_free);
    snprintf (self->path, sizeof self->path, "%s/%s", outdir, IMGP_RESUME_FILE);
    s_load (self);
    struct stat st;
    if (!self->same && s_write (self, error, error_size) != 0) {
        imgp_resume_destroy (&self);
        return NULL;
    }
    if (stat (self->path, &st) != 0) {
        snprintf (error, error_size, "'%s': %s", self->path, strerror (errno));
        imgp_resume_destroy (&self);
        return NULL;
    }
    self->since = st.st_mtim;
    return self;
}

void
imgp_resume_destroy (imgp_resume_t **self_p)
{
    assert (self_p);
    imgp_resume_t *self = *self_p;
    if (self) {
        free (self->options);
        zhashx_destroy (&self->pending);
        free (self);
        *self_p = NULL;
    }
}

bool
imgp_resume_same (imgp_resume_t *self)
{
    assert (self);
    return self->same;
}

bool
imgp_resume_done (imgp_resume_t *self, const char *output)
{
    assert (self && output);
    struct stat st;
    if (stat (output, &st) != 0 || !S_ISREG (st.st_mode))
        return false;
    if (st.st_mtim.tv_sec != self->since.tv_sec)
        return st.st_mtim.tv_sec > self->since.tv_sec;
    return st.st_mtim.tv_nsec >= self->since.tv_nsec;
}

char *
imgp_resume_take_job (imgp_resume_t *self, const char *output)
{
    assert (self && output);
    const char *stored = zhashx_lookup (self->pending, output);
    char *id = stored ? strdup (stored) : NULL;
    if (stored) {
        zhashx_delete (self->pending, output);
        self->dirty = true;
    }
    return id;
}

void
imgp_resume_pending (imgp_resume_t *self, const char *output, const char *id)
{
    assert (self && output && id && imgp_id_valid (id));
    char *copy = strdup (id);
    if (copy) {
        zhashx_update (self->pending, output, copy);
        self->dirty = true;
    }
}

int
imgp_resume_save (imgp_resume_t *self, char *error, size_t error_size)
{
    assert (self && error);
    if (!self->dirty)
        return 0;
    if (s_write (self, error, error_size) != 0)
        return -1;
    //  Outputs are compared with the mtime: keep the one the run began with.
    struct timespec times [2] = { self->since, self->since };
    if (utimensat (AT_FDCWD, self->path, times, 0) != 0) {
        snprintf (error, error_size, "'%s': %s", self->path, strerror (errno));
        return -1;
    }
    self->dirty = false;
    return 0;
}

/*  imgp_resume — see imgp_resume.h.

    The state file is two text lines, "imgpipe-batch-state 1" and
    "options QUERY", written through imgp_file_write (a temporary file and
    a rename), so a crash leaves the old state or the new, never half.
*/
#include "imgp_resume.h"

#include "imgp_file.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_MAGIC "imgpipe-batch-state 1\n"

struct _imgp_resume_t {
    bool same;                  //  the state held these options already
    struct timespec since;      //  mtime of the state file
};

//  True when the file at `path` holds exactly `text`.
static bool
s_holds (const char *path, const char *text)
{
    char *data = NULL, problem [256];
    size_t size = 0;
    if (imgp_file_read (path, 4096, &data, &size, problem, sizeof problem) != 0)
        return false;
    bool same = size == strlen (text) && memcmp (data, text, size) == 0;
    free (data);
    return same;
}

imgp_resume_t *
imgp_resume_new (const char *outdir, const char *options, char *error, size_t error_size)
{
    assert (outdir && options && error);
    imgp_resume_t *self = calloc (1, sizeof *self);
    char path [4096], text [1024];
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    snprintf (path, sizeof path, "%s/%s", outdir, IMGP_RESUME_FILE);
    snprintf (text, sizeof text, S_MAGIC "options %s\n", options);
    self->same = s_holds (path, text);
    char problem [256];
    struct stat st;
    if (!self->same && imgp_file_write (path, text, strlen (text), problem, sizeof problem) != 0)
        snprintf (error, error_size, "'%s': %s", path, problem);
    else
    if (stat (path, &st) != 0)
        snprintf (error, error_size, "'%s': %s", path, strerror (errno));
    else {
        self->since = st.st_mtim;
        return self;
    }
    free (self);
    return NULL;
}

void
imgp_resume_destroy (imgp_resume_t **self_p)
{
    assert (self_p);
    free (*self_p);
    *self_p = NULL;
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

/*  imgp_report — see imgp_report.h. jansson writes the JSON, so any byte
    in a file name or a server's message comes out escaped.
*/
#include "imgp_report.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _imgp_report_t {
    FILE *file;                 //  the report, open for writing
    char path [4096];           //  its path
};

imgp_report_t *
imgp_report_new (const char *outdir, char *error, size_t error_size)
{
    assert (outdir && error);
    imgp_report_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    snprintf (self->path, sizeof self->path, "%s/%s", outdir, IMGP_REPORT_FILE);
    self->file = fopen (self->path, "w");
    if (!self->file) {
        snprintf (error, error_size, "cannot write '%s': %s", self->path, strerror (errno));
        free (self);
        return NULL;
    }
    return self;
}

void
imgp_report_destroy (imgp_report_t **self_p)
{
    assert (self_p);
    imgp_report_t *self = *self_p;
    if (self) {
        fclose (self->file);
        free (self);
        *self_p = NULL;
    }
}

//  Set `key` to `value` when there is one. A name that is not UTF-8
//  (file names are bytes) gets '?' for each byte outside ASCII, so the
//  line stays valid JSON and still says which file.
static void
s_set (json_t *object, const char *key, const char *value)
{
    if (!value || !*value)
        return;
    json_t *string = json_string (value);
    if (!string) {
        char ascii [4096];
        snprintf (ascii, sizeof ascii, "%s", value);
        for (char *c = ascii; *c; c++)
            if ((unsigned char) *c >= 0x80)
                *c = '?';
        string = json_string (ascii);
    }
    json_object_set_new (object, key, string);
}

int
imgp_report_add (imgp_report_t *self, const imgp_report_line_t *line)
{
    assert (self && line && line->input && line->status);
    json_t *object = json_object ();
    s_set (object, "input", line->input);
    s_set (object, "id", line->id);
    s_set (object, "status", line->status);
    s_set (object, "output", line->output);
    if (line->code && *line->code) {
        json_t *error = json_object ();
        s_set (error, "code", line->code);
        s_set (error, "message", line->message);
        json_object_set_new (object, "error", error);
    }
    s_set (object, "worker", line->worker);
    char *text = json_dumps (object, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref (object);
    int rc = text && fprintf (self->file, "%s\n", text) > 0 && fflush (self->file) == 0 ? 0 : -1;
    free (text);
    return rc;
}

const char *
imgp_report_path (imgp_report_t *self)
{
    assert (self);
    return self->path;
}

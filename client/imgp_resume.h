/*  imgp_resume — which inputs a batch run may skip because an earlier run
    made their thumbnails already, with the same options.

    Why: a batch over a big tree is interrupted (Ctrl-C, a reboot, a lost
    link) and run again; redoing the files already done wastes the
    cluster, but skipping a thumbnail made with other options (another
    width, another format) would leave a wrong one. So OUTDIR keeps a small
    state file, OUTDIR/.imgpipe-batch.state, holding the options of the run
    that wrote it:
    - same options: an output that exists and was written since the state
      file (its mtime at or after the state file's) is done: skipped;
    - other options, or no state file: the state file is written anew
      before any upload, and only outputs written after it count, so every
      input is redone, and a redo that is itself interrupted resumes
      correctly (an output of the old options is older than the new state).
    Comparing the two mtimes compares times the same file system gave, so
    the client's clock does not matter. Known limit: on a file system with
    coarse timestamps (1 s), an old output written in the same second the
    options changed would count as new.

    Jobs left in flight by Ctrl-C (uploaded, their thumbnail not written)
    are kept in the state file too ("pending ID OUTPUT"), so the next run
    with the same options waits for those jobs instead of uploading their
    files again (a job the server no longer knows is uploaded anew).

    Never: delete or rewrite outputs (a redo overwrites them one by one,
    atomically), or trust a state file it cannot parse (it is replaced).
*/
#ifndef IMGP_RESUME_H_INCLUDED
#define IMGP_RESUME_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define IMGP_RESUME_FILE ".imgpipe-batch.state"

typedef struct _imgp_resume_t imgp_resume_t;

//  Read OUTDIR's state file, and write it anew when it is missing or holds
//  other `options` (the thumbnail options as a query, "" for defaults).
//  OUTDIR must exist. Returns NULL with a message when the state file
//  cannot be written or read.
imgp_resume_t *imgp_resume_new (const char *outdir, const char *options, char *error,
                                size_t error_size);

//  Destroy; safe on NULL and twice.
void imgp_resume_destroy (imgp_resume_t **self_p);

//  True when the state file held these options already: this run resumes.
bool imgp_resume_same (imgp_resume_t *self);

//  True when `output` exists as a file written since the state file: its
//  input can be skipped.
bool imgp_resume_done (imgp_resume_t *self, const char *output);

//  The job an earlier run left in flight for `output`, or NULL; it is
//  forgotten here (the caller frees the id). Not thread-safe: the batch
//  calls it under its lock.
char *imgp_resume_take_job (imgp_resume_t *self, const char *output);

//  Remember job `id`, uploaded for `output` and left in flight.
void imgp_resume_pending (imgp_resume_t *self, const char *output, const char *id);

//  Write the pending jobs into the state file when they changed, keeping
//  its mtime. Returns 0, or -1 with a message.
int imgp_resume_save (imgp_resume_t *self, char *error, size_t error_size);

#endif

/*  imgp_report — the batch run's report: OUTDIR/imgpipe-report.jsonl, one
    JSON object a line for every input, in the order they ended:
        {"input":"photos/a.jpg","id":"3f...","status":"done",
         "output":"out/a.png","worker":"r1-4242"}
        {"input":"photos/b.jpg","status":"skipped","output":"out/b.png"}
        {"input":"bad/t.png","id":"9c...","status":"failed",
         "error":{"code":"unsupported_format","message":"..."}}
    "id" is there once the upload was taken, "worker" when the status named
    one (frontends that predate the cluster view do not).

    Why: a summary on a terminal is gone when the window closes; a batch
    over thousands of files needs a record a script can read (jq, grep)
    to find what failed and why, and which resizer made what.

    Never: be written by two threads at once (the batch holds its lock),
    or leave a line half written when the run ends: each line is flushed
    whole.
*/
#ifndef IMGP_REPORT_H_INCLUDED
#define IMGP_REPORT_H_INCLUDED

#include <stddef.h>

#define IMGP_REPORT_FILE "imgpipe-report.jsonl"

typedef struct _imgp_report_t imgp_report_t;

//  One line of the report; NULL or "" members are left out.
typedef struct {
    const char *input;          //  the input's path
    const char *id;             //  job id, once uploaded
    const char *status;         //  "done", "skipped" or "failed"
    const char *output;         //  thumbnail path (done, skipped)
    const char *code;           //  error code (failed)
    const char *message;        //  error message (failed)
    const char *worker;         //  resizer that made it
} imgp_report_line_t;

//  Start OUTDIR/imgpipe-report.jsonl anew (a run's report covers every
//  input of the run, skipped ones too). NULL with a message when it
//  cannot be written.
imgp_report_t *imgp_report_new (const char *outdir, char *error, size_t error_size);

//  Close the report; safe on NULL and twice.
void imgp_report_destroy (imgp_report_t **self_p);

//  Append one line. Returns 0, or -1 when it could not be written (the
//  disk is full): the caller says so once.
int imgp_report_add (imgp_report_t *self, const imgp_report_line_t *line);

//  The report's path (borrowed).
const char *imgp_report_path (imgp_report_t *self);

#endif

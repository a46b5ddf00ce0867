/*  imgp_batch — `imgpipe batch`: thumbnails for a whole tree or manifest
    of files, several in flight at once, over the HTTP API, resumable.

    Why: the cluster is built to resize many images at once; a client that
    uploads one file, waits, and uploads the next leaves it idle, and a
    run over an archive must survive being stopped. A batch keeps up to
    `parallel` files in flight (one thread each, each with its own
    connection), takes its inputs from a stream (imgp_inputs: a directory
    walk or a manifest, never the whole list in memory), and, like
    vipsthumbnail, keeps going when a file fails and says which.
    Per input, in the worker that takes it:
    - skipped when OUTDIR holds its thumbnail made with the same options
      (imgp_resume); refused when its output would be the input itself;
    - else read (at most max_upload bytes), uploaded, waited for and
      downloaded by imgp_roundtrip, under one deadline of `wait_ms` from
      its upload, and written under OUTDIR through a temporary file and a
      rename (imgp_file), its directory made when missing;
    - reported: a line or the bar (imgp_progress) and a line of
      OUTDIR/imgpipe-report.jsonl (imgp_report). For a directory, a second
      walk counts the inputs ahead of the workers, for the bar's total.
    Ctrl-C (SIGINT, SIGTERM, or SIGHUP when the terminal goes away; when
    config->signals): no new file starts;
    the files in flight get IMGP_BATCH_STOP_GRACE_MS to end, then are
    abandoned (their jobs stay on the server, nothing is written); a file
    being written is always finished, so no output is ever partial. Then
    the run says how many files are left and how to resume. A second
    Ctrl-C exits at once (exit 130), after waiting only for a write in
    progress, which is a local file and takes milliseconds.

    Never: hold more than one input file in memory per thread, write a
    partial output, or hang on a server that stops answering: a request
    that takes longer than its limit (imgp_roundtrip) fails its file
    ("stalled") and its thread is left behind (civetweb 1.15 cannot time
    out a body read), so the batch goes on with one thread fewer.
*/
#ifndef IMGP_BATCH_H_INCLUDED
#define IMGP_BATCH_H_INCLUDED

#include "imgp_inputs.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define IMGP_BATCH_STOP_GRACE_MS 2000   //  after Ctrl-C, for files in flight to end

typedef struct {
    const char *url;            //  base URL of a frontend, "http://host:port"
    const char *query;          //  thumbnail options as a query, "" for defaults
    const char *outdir;         //  OUTDIR: thumbnails, state file and report (must exist)
    int parallel;               //  files in flight at most, >= 1
    long long wait_ms;          //  per file, from upload start to thumbnail
    int long_poll_s;            //  most ?wait= per status request, 0 polls
    int timeout_ms;             //  per HTTP request, for the response head,
                                //  beyond the ?wait= it asks for
    size_t max_upload;          //  largest input file read, in bytes
    FILE *out;                  //  where progress and summary go
    bool bar;                   //  a progress bar (out is a terminal), not lines
    bool signals;               //  take SIGINT and SIGTERM for the run
    const char *resume_command; //  printed after an interruption; NULL: none
} imgp_batch_config_t;

typedef struct {
    size_t done;                //  thumbnails written
    size_t skipped;             //  inputs whose thumbnail was there already
    size_t failed;              //  inputs that failed, for any reason
    size_t left;                //  inputs not ended when the run was interrupted
    bool interrupted;           //  Ctrl-C stopped the run
    long long elapsed_ms;       //  wall time of the whole run
} imgp_batch_stats_t;

//  Run the batch over `inputs`. Shows progress and the summary on
//  config->out; fills `stats`. Returns 0 when every input was done or
//  skipped, 1 when any failed, 2 when interrupted, -1 when the batch could
//  not start (a message is in `error`: bad URL, OUTDIR unwritable, no
//  threads).
int imgp_batch_run (const imgp_batch_config_t *config, imgp_inputs_t *inputs,
                    imgp_batch_stats_t *stats, char *error, size_t error_size);

#endif

/*  imgp_batch — `imgpipe batch`: thumbnails for a whole list of files,
    several in flight at once, over the HTTP API.

    Why: the cluster is built to resize many images at once; a client that
    uploads one file, waits, and uploads the next leaves it idle. A batch
    keeps up to `parallel` files in flight (one thread each, each with its
    own connection), and, like vipsthumbnail, keeps going when a file fails
    and says which. One line per file on `out`, in the order they finish:
        ok photos/a.jpg -> out/a.png 100x63 412ms
        failed bad/text.png: unsupported_format: not a supported image ...
    and one summary line at the end:
        39 done, 2 failed, 6.3 s, 6.2 images/s

    Per file: read it (at most max_upload bytes), upload it, wait for its
    status by long-poll (GET /v1/images/{id}?wait=S, S up to long_poll_s,
    so a job costs one status request or two, however long it takes; a
    frontend that does not hold requests is polled at 50 ms doubling to
    1 s), download the thumbnail, write it through a temporary file. A 503
    (or 429) is retried after its Retry-After, a connection refused after
    a short backoff, both only while the retry still falls within the
    file's `wait_ms` (counted from the start of its upload); then the file
    fails with the server's last answer.

    Never: hold more than one input file in memory per thread, retry an
    upload the server may already have taken (only one that never
    connected), or hang on a server that stops answering: a request that
    takes longer than `timeout_ms` + its ?wait= + 5 s fails its file and
    its thread is left behind (civetweb 1.15 cannot time out a body read),
    so the batch goes on with one thread fewer.
*/
#ifndef IMGP_BATCH_H_INCLUDED
#define IMGP_BATCH_H_INCLUDED

#include "imgp_inputs.h"

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *url;            //  base URL of a frontend, "http://host:port"
    const char *query;          //  thumbnail options as a query, "" for defaults
    int parallel;               //  files in flight at most, >= 1
    long long wait_ms;          //  per file, from upload start to thumbnail
    int long_poll_s;            //  most ?wait= per status request, 0 polls
    int timeout_ms;             //  per HTTP request, for the response head,
                                //  beyond the ?wait= it asks for
    size_t max_upload;          //  largest input file read, in bytes
    FILE *out;                  //  where the result lines go
} imgp_batch_config_t;

typedef struct {
    size_t done;                //  thumbnails written
    size_t failed;              //  files that failed, for any reason
    long long elapsed_ms;       //  wall time of the whole run
} imgp_batch_stats_t;

//  Run the batch over `inputs`, whose outputs must be named
//  (imgp_inputs_set_outputs). Prints one line per input and the summary
//  line on config->out; fills `stats`. Returns 0 when every file was done,
//  1 when any failed, -1 when the batch could not start (a message is in
//  `error`: bad URL, out of memory, no threads).
int imgp_batch_run (const imgp_batch_config_t *config, imgp_inputs_t *inputs,
                    imgp_batch_stats_t *stats, char *error, size_t error_size);

#endif

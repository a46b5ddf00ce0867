/*  imgp_progress — what a batch run shows while it runs, and its summary.

    Why: a run over thousands of files must say how far it is without
    flooding a terminal, and must still give a log one line per file.
    - On a terminal (the caller asks when out is a tty): one bar, redrawn
      in place at most every 100 ms,
        [#########...........] 427/1530  412 done  3 failed  12 skipped  18.2 images/s  1:01 left
      files ended of the total, the total followed by '+' while a
      directory walk is still counting;
      a failed file also gets its line, above the bar, so no reason is
      lost when the bar moves on.
    - Otherwise one plain line per file, in the order they end:
        ok photos/a.jpg -> out/a.png 100x63 412ms r1-4242
        skipped photos/b.jpg -> out/b.png (made before with these options)
        failed bad/text.png: unsupported_format: not a supported image
    - At the end, the summary:
        1038 done, 12 skipped, 2 failed, 41.3 s, 25.1 images/s
        failed: 2 unsupported_format
          bad/text.png: unsupported_format: not a supported image
      listing the first IMGP_PROGRESS_LISTED failures (the report has all).

    Never: be called by two threads at once (the batch holds its lock), or
    hold more than the counts, a count per error code and the first few
    failures.
*/
#ifndef IMGP_PROGRESS_H_INCLUDED
#define IMGP_PROGRESS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define IMGP_PROGRESS_LISTED 10

typedef struct _imgp_progress_t imgp_progress_t;

//  Show progress on `out` (borrowed): a bar when `bar`, else lines.
imgp_progress_t *imgp_progress_new (FILE *out, bool bar);

//  Destroy; safe on NULL and twice.
void imgp_progress_destroy (imgp_progress_t **self_p);

//  The inputs known so far, and whether that is all of them.
void imgp_progress_total (imgp_progress_t *self, size_t total, bool final);

//  One file's end.
void imgp_progress_done (imgp_progress_t *self, const char *input, const char *output,
                         int width, int height, long long ms, const char *worker);
void imgp_progress_skipped (imgp_progress_t *self, const char *input, const char *output);
void imgp_progress_failed (imgp_progress_t *self, const char *input, const char *code,
                           const char *message);

//  Redraw the bar when it is due (time moves the rate and the time left).
void imgp_progress_tick (imgp_progress_t *self);

//  Say something on a line of its own (the bar is cleared first).
void imgp_progress_say (imgp_progress_t *self, const char *text);

//  Draw the bar a last time (it stays) and print the summary.
void imgp_progress_summary (imgp_progress_t *self);

//  Counts so far.
size_t imgp_progress_done_count (imgp_progress_t *self);
size_t imgp_progress_skipped_count (imgp_progress_t *self);
size_t imgp_progress_failed_count (imgp_progress_t *self);
long long imgp_progress_elapsed_ms (imgp_progress_t *self);

#endif

/*  imgp_inputs — the files a batch run works through, one at a time, and
    where each one's thumbnail goes.

    Why: `imgpipe batch` takes a directory tree or a manifest; turning
    either into a stream of (input, output) pairs whose outputs mirror the
    inputs' places and cannot collide is a concern of its own, testable
    without a server. A stream, not a list: the batch's workers take the
    next input when they are free, so a run over 100 000 files starts at
    once and holds one directory's names at a time (imgp_walk).
    - A directory: every regular file below it, recursively, as imgp_walk
      hands them out (hidden names skipped, link loops refused, OUTDIR
      itself skipped when it lies inside). Total unknown until the end.
    - A manifest: one path per line; blank lines and lines starting with
      '#' are skipped; CR before LF is dropped. When the first line holds a
      tab, the file is a TSV with a header line (like the test corpus'
      MANIFEST.tsv): the header is skipped and column 1 is the path.
      Relative paths are relative to the manifest's directory. The lines
      are counted first (one quick read), so the total is known.
    - Output of "sub/photo.jpg" (its path below the directory, or as the
      manifest lists it): OUTDIR/sub/photo.EXT. A leading '/' and "."
      parts are dropped; a ".." part is refused (it would write outside
      OUTDIR). When two inputs would share one output, the later gets
      "-2", "-3"... (photo-2.EXT). A walk checks that within each
      directory (its files come together); a manifest over the whole run.

    Never: open or check the input files themselves (a missing one is that
    file's failure, reported when the batch reaches it, not the stream's),
    or print: problems come back as text.
*/
#ifndef IMGP_INPUTS_H_INCLUDED
#define IMGP_INPUTS_H_INCLUDED

#include "imgp_walk.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct _imgp_inputs_t imgp_inputs_t;

//  One input; every string borrowed until the next imgp_inputs_next.
typedef struct {
    const char *path;           //  path to open
    const char *relative;       //  its place below the input, as mirrored
    const char *output;         //  where its thumbnail goes; NULL with a problem
    const char *problem;        //  why it cannot be worked on, else NULL
} imgp_input_t;

//  Open the inputs named by `source`, a directory or a manifest file,
//  with their outputs under `outdir` with extension `ext` ("png").
//  Returns NULL with a message in `error` when it cannot be read.
imgp_inputs_t *imgp_inputs_new (const char *source, const char *outdir, const char *ext,
                                char *error, size_t error_size);

//  Destroy the stream; safe on NULL and twice.
void imgp_inputs_destroy (imgp_inputs_t **self_p);

//  The next input into `input`. Returns 1, or 0 at the end. An input that
//  cannot be worked on (a refused directory, a ".." path, a line too long,
//  a read error of the manifest) comes as one with `problem` set, so the
//  caller can report it like a failed file.
int imgp_inputs_next (imgp_inputs_t *self, imgp_input_t *input);

//  A second walker over the same tree (same root, OUTDIR excluded), so a
//  caller can count the inputs ahead of the stream; NULL for a manifest
//  (its total is known) or when the tree cannot be read again. The
//  caller destroys it.
imgp_walk_t *imgp_inputs_walk_again (imgp_inputs_t *self);

//  Number of inputs, when known (a manifest), else -1 until the end.
long long imgp_inputs_total (imgp_inputs_t *self);

//  Inputs handed out so far.
size_t imgp_inputs_seen (imgp_inputs_t *self);

//  The output path of `relative` under `outdir` with extension `ext`,
//  before any "-N" suffix: "out" + "sub/a.jpg" + "png" -> "out/sub/a.png".
//  Returns 0, or -1 with a static reason in *problem (a ".." part, too
//  long).
int imgp_inputs_output_path (const char *outdir, const char *relative, const char *ext,
                             char *output, size_t output_size, const char **problem);

#endif

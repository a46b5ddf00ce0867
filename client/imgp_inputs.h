/*  imgp_inputs — the files a batch run works through, and where each
    one's thumbnail goes.

    Why: `imgpipe batch` takes a directory or a manifest; turning either
    into one list of paths (and of output names that cannot collide) is a
    concern of its own, testable without a server.
    - A directory: every regular file in it, not recursive, sorted by name;
      hidden files (".name") are skipped, like a shell glob would.
    - A manifest: one path per line; blank lines and lines starting with
      '#' are skipped; CR before LF is dropped. When the first line holds a
      tab, the file is a TSV with a header line (like the test corpus'
      MANIFEST.tsv): the header is skipped and column 1 is the path.
      Relative paths are relative to the manifest's directory.
    - Output for "a/b/photo.jpg": OUTDIR/photo.EXT. When two inputs would
      share one name, the later ones get "-2", "-3"... (photo-2.EXT), so no
      thumbnail overwrites another from the same run.

    Never: open or check the listed files themselves (a missing one is that
    file's failure, reported when the batch reaches it, not the list's), or
    hold more than IMGP_INPUTS_MAX entries.
*/
#ifndef IMGP_INPUTS_H_INCLUDED
#define IMGP_INPUTS_H_INCLUDED

#include <stddef.h>

#define IMGP_INPUTS_MAX 1000000

typedef struct _imgp_inputs_t imgp_inputs_t;

//  List the inputs named by `source`, a directory or a manifest file.
//  Returns NULL with a message in `error` when it cannot be read, or
//  holds a line that cannot be a path.
imgp_inputs_t *imgp_inputs_new (const char *source, char *error, size_t error_size);

//  Destroy the list; safe on NULL and twice.
void imgp_inputs_destroy (imgp_inputs_t **self_p);

//  Number of inputs.
size_t imgp_inputs_size (imgp_inputs_t *self);

//  Path to open for input `index` (borrowed).
const char *imgp_inputs_path (imgp_inputs_t *self, size_t index);

//  Name every input's output: OUTDIR/<name without extension>.<ext>, made
//  unique over the list. Returns 0, or -1 when out of memory or when
//  OUTDIR is too long for a path.
int imgp_inputs_set_outputs (imgp_inputs_t *self, const char *outdir, const char *ext);

//  Output path of input `index` (borrowed); NULL before set_outputs.
const char *imgp_inputs_output (imgp_inputs_t *self, size_t index);

#endif

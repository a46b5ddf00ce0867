/*  imgp_walk — a directory tree, one file at a time: the input of
    `imgpipe batch DIR`.

    Why: a batch over a photo archive may see 100 000 files; listing them
    all before the first upload costs memory and time to first result. The
    walker reads one directory when it gets there and hands its files out
    one by one (in name order, each directory's files before its
    subdirectories, so the files of one directory come together), then
    goes down. What it holds is the names of the directories on the
    current path, never the tree.
    - Hidden names (".name") are skipped, files and directories alike.
    - Symbolic links are followed (to a file: an input; to a directory: a
      subtree), but a directory that is one of its own ancestors (a link
      back up: a loop) is refused with a message and not entered.
    - A directory that cannot be read is refused with a message, and the
      walk goes on.
    - One directory may be excluded (the batch's OUTDIR when it lies
      inside the input), found by device and inode, not by name.
    - Dangling links and special files (sockets, fifos) are not inputs.

    Never: hold more than the current path's directory listings, follow a
    link loop, or print: refusals come back as text for the caller.
*/
#ifndef IMGP_WALK_H_INCLUDED
#define IMGP_WALK_H_INCLUDED

#include <stddef.h>

typedef struct _imgp_walk_t imgp_walk_t;

//  What imgp_walk_next found.
typedef enum {
    IMGP_WALK_END = 0,          //  the walk is over
    IMGP_WALK_FILE = 1,         //  a file: path and relative path set
    IMGP_WALK_REFUSED = 2       //  a directory not entered: path and problem set
} imgp_walk_event_t;

//  Start walking `root`, a directory. Returns NULL with a message in
//  `error` when it cannot be read.
imgp_walk_t *imgp_walk_new (const char *root, char *error, size_t error_size);

//  Destroy the walker; safe on NULL and twice.
void imgp_walk_destroy (imgp_walk_t **self_p);

//  Do not enter directory `path` (compared by device and inode; a path
//  that does not exist yet is ignored). Call before the first next.
void imgp_walk_exclude (imgp_walk_t *self, const char *path);

//  The next file or refusal. `path` is root-joined ("root/sub/a.jpg"),
//  `relative` is the same below root ("sub/a.jpg"); both are borrowed
//  until the next call. On IMGP_WALK_REFUSED, `problem` holds why
//  ("symlink loop: 'root/sub/up' leads back to 'root'").
imgp_walk_event_t imgp_walk_next (imgp_walk_t *self, const char **path,
                                  const char **relative, char *problem,
                                  size_t problem_size);

//  Directories the walker holds open at once (the depth of the current
//  path), for tests of its footprint.
size_t imgp_walk_depth (imgp_walk_t *self);

#endif

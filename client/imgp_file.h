/*  imgp_file — read an input file whole, write an output file atomically,
    make an output directory.

    Why: `submit` and `batch` both upload whole files and `get` and `batch`
    both write thumbnails; one bounded reader and one temp-file-and-rename
    writer keep the limits and the "never a partial OUT" rule in one place.

    Never: read more than the limit given (a huge file or an endless pipe
    cannot make the client allocate without bound), leave a partial or
    temporary file behind, or print: errors come back as text, without the
    path, for the caller to show next to the name it knows.
*/
#ifndef IMGP_FILE_H_INCLUDED
#define IMGP_FILE_H_INCLUDED

#include <stddef.h>

//  Read the whole of `path` ('-' is standard input) into a new buffer of
//  at most `max` bytes; the caller frees *data. Returns 0, or -1 with a
//  message in `error` ("cannot open: No such file or directory").
int imgp_file_read (const char *path, size_t max, char **data, size_t *size,
                    char *error, size_t error_size);

//  Write `size` bytes to `path` ('-' is standard output) through a
//  temporary file in the same directory and a rename, so `path` holds the
//  old content or the whole new one, never a part. Safe from several
//  threads at once for different paths. Returns 0, or -1 with a message.
int imgp_file_write (const char *path, const void *data, size_t size,
                     char *error, size_t error_size);

//  Make directory `path` and any missing parents (like mkdir -p). Returns
//  0 when it exists as a directory afterwards, or -1 with a message.
int imgp_file_mkdirs (const char *path, char *error, size_t error_size);

#endif

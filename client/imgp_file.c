/*  imgp_file — see imgp_file.h.

    The reader sizes its buffer from fstat when it can (one allocation for
    a regular file) and grows by doubling otherwise (pipes, stdin). The
    writer's temporary name carries the pid and the thread's own counter
    value, so two threads writing different outputs in one directory, or
    two imgpipe processes, never share a temporary file.
*/
#include "imgp_file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_CHUNK 65536

static int
s_fail (char *error, size_t error_size, const char *what, int err)
{
    snprintf (error, error_size, "%s: %s", what, strerror (err));
    return -1;
}

//  Read `file` to its end into a buffer that starts at `capacity` bytes.
static int
s_read_all (FILE *file, size_t capacity, size_t max, char **data, size_t *size,
            char *error, size_t error_size)
{
    size_t used = 0;
    char *buffer = malloc (capacity);
    if (!buffer)
        return s_fail (error, error_size, "cannot read", ENOMEM);
    while (true) {
        if (used == capacity) {
            //  One byte past the limit must be seen to tell "too big".
            size_t bigger = capacity < max / 2 ? capacity * 2 : max + 1;
            char *grown = bigger > capacity ? realloc (buffer, bigger) : NULL;
            if (!grown) {
                free (buffer);
                if (bigger > capacity)
                    return s_fail (error, error_size, "cannot read", ENOMEM);
                snprintf (error, error_size, "larger than the limit of %zu bytes", max);
                return -1;
            }
            buffer = grown;
            capacity = bigger;
        }
        size_t n = fread (buffer + used, 1, capacity - used, file);
        used += n;
        if (n == 0)
            break;
    }
    if (ferror (file)) {
        int err = errno;
        free (buffer);
        return s_fail (error, error_size, "cannot read", err);
    }
    if (used > max) {
        free (buffer);
        snprintf (error, error_size, "larger than the limit of %zu bytes", max);
        return -1;
    }
    *data = buffer;
    *size = used;
    return 0;
}

int
imgp_file_read (const char *path, size_t max, char **data, size_t *size,
                char *error, size_t error_size)
{
    bool is_stdin = strcmp (path, "-") == 0;
    FILE *file = is_stdin ? stdin : fopen (path, "rb");
    if (!file)
        return s_fail (error, error_size, "cannot open", errno);
    size_t capacity = S_CHUNK;
    struct stat st;
    int rc = 0;
    if (fstat (fileno (file), &st) == 0 && S_ISREG (st.st_mode)) {
        if ((unsigned long long) st.st_size > max) {
            snprintf (error, error_size, "%lld bytes, over the limit of %zu bytes",
                      (long long) st.st_size, max);
            rc = -1;
        }
        //  +1 so a file that grew since fstat is noticed without a copy.
        capacity = (size_t) st.st_size + 1;
    }
    else
    if (!is_stdin && fstat (fileno (file), &st) == 0 && S_ISDIR (st.st_mode)) {
        snprintf (error, error_size, "is a directory");
        rc = -1;
    }
    if (rc == 0)
        rc = s_read_all (file, capacity, max, data, size, error, error_size);
    if (!is_stdin)
        fclose (file);
    return rc;
}

int
imgp_file_write (const char *path, const void *data, size_t size,
                 char *error, size_t error_size)
{
    if (strcmp (path, "-") == 0) {
        if (fwrite (data, 1, size, stdout) == size && fflush (stdout) == 0)
            return 0;
        return s_fail (error, error_size, "cannot write to standard output", errno);
    }
    //  Hidden (".a.png.tmpPID.N" beside "a.png"): a temporary that a
    //  SIGKILL leaves behind is neither taken for an output nor walked
    //  by a batch over that directory.
    static atomic_uint s_serial;
    char tmp [4096];
    const char *slash = strrchr (path, '/');
    int dir_len = slash ? (int) (slash - path) + 1 : 0;
    if (snprintf (tmp, sizeof tmp, "%.*s.%s.tmp%ld.%u", dir_len, path, path + dir_len,
                  (long) getpid (), atomic_fetch_add (&s_serial, 1)) >= (int) sizeof tmp) {
        snprintf (error, error_size, "output path too long");
        return -1;
    }
    FILE *file = fopen (tmp, "wb");
    int rc = file ? 0 : -1;
    int err = errno;
    if (file && fwrite (data, 1, size, file) != size) {
        rc = -1;
        err = errno;
    }
    if (file && fclose (file) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc == 0 && rename (tmp, path) != 0) {
        rc = -1;
        err = errno;
    }
    if (rc != 0) {
        unlink (tmp);
        return s_fail (error, error_size, "cannot write", err);
    }
    return 0;
}

int
imgp_file_mkdirs (const char *path, char *error, size_t error_size)
{
    char partial [4096];
    size_t len = strlen (path);
    if (len == 0 || len >= sizeof partial) {
        snprintf (error, error_size, "unusable directory name");
        return -1;
    }
    memcpy (partial, path, len + 1);
    //  Make each prefix ending before a '/', then the whole path.
    for (size_t i = 1; i <= len; i++) {
        if (partial [i] != '/' && partial [i] != 0)
            continue;
        char keep = partial [i];
        partial [i] = 0;
        if (mkdir (partial, 0777) != 0 && errno != EEXIST)
            return s_fail (error, error_size, "cannot make directory", errno);
        partial [i] = keep;
    }
    struct stat st;
    if (stat (path, &st) != 0)
        return s_fail (error, error_size, "cannot make directory", errno);
    if (!S_ISDIR (st.st_mode)) {
        snprintf (error, error_size, "exists and is not a directory");
        return -1;
    }
    return 0;
}

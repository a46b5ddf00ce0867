/*  vips_baseline — the yardstick for tests/bench/bench.sh: thumbnails the
    given files with plain vips_thumbnail_buffer + PNG save in N processes
    (one job per process at a time, libvips concurrency 1), the way a
    hand-written script would, and prints images per second.

    Usage: vips_baseline PROCESSES FILE...
*/
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

static int
s_thumbnail (const char *path)
{
    gchar *buf = NULL;
    gsize len = 0;
    if (!g_file_get_contents (path, &buf, &len, NULL))
        return -1;
    VipsImage *out = NULL;
    void *png = NULL;
    size_t png_len = 0;
    int rc = vips_thumbnail_buffer (buf, len, &out, 100, "height", 100, "size",
                                    VIPS_SIZE_DOWN, NULL);
    if (rc == 0)
        rc = vips_pngsave_buffer (out, &png, &png_len, "strip", TRUE, NULL);
    g_clear_object (&out);
    g_free (png);
    g_free (buf);
    return rc;
}

int
main (int argc, char **argv)
{
    if (argc < 3) {
        fprintf (stderr, "usage: %s PROCESSES FILE...\n", argv [0]);
        return 2;
    }
    int procs = atoi (argv [1]);
    int files = argc - 2;
    struct timespec t0, t1;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    for (int p = 0; p < procs; p++) {
        if (fork () == 0) {
            if (VIPS_INIT (argv [0]))
                _exit (1);
            vips_concurrency_set (1);
            vips_cache_set_max (0);
            int bad = 0;
            for (int i = p; i < files; i += procs)
                bad += s_thumbnail (argv [2 + i]) != 0;
            _exit (bad ? 1 : 0);
        }
    }
    int failed = 0, status;
    while (wait (&status) > 0)
        failed += !WIFEXITED (status) || WEXITSTATUS (status) != 0;
    clock_gettime (CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf ("%d %.3f %.2f\n", files, s, files / s);
    return failed ? 1 : 0;
}

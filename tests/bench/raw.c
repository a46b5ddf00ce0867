/*  imgpipe-bench-raw — the limit the pipeline is measured against: libvips
    alone, in one process, one thread per core, every file already in
    memory, vips_thumbnail_buffer + save in a tight loop (issue 10, point 1).

    Usage: imgpipe-bench-raw [--threads N] [--jobs N] [--width W] [--height H]
                             [--format png|jpeg] [--quality Q] [--same-malloc]
                             FILE...

    The files are read once, then thumbnailed in turn (repeated) until
    --jobs thumbnails are made; each thread takes the next job from a shared
    counter, one job at a time with libvips concurrency 1, the way the
    resizers run (one resizer per core, --vips-threads 1). The thumbnail is
    made the way the resizer makes it (resizer/imgp_thumb.c: shrink on load,
    fail_on=truncated, metadata stripped; JPEG at the given quality) minus
    the checks around it (allow-list, pixel limit, ICC export), which cost
    the resizer well under a millisecond a photo.

    --same-malloc makes the resizer's mallopt calls (s_tune_malloc in
    resizer/imgp_thumb.c: one arena per libvips thread, 32 MB mmap
    threshold, 64 MB trim threshold). A resizer has one arena for its one
    libvips thread; here N threads share one process, so the arena count is
    N: the same one arena per concurrent job.

    Prints one JSON object on stdout: jobs, threads, settings, wall seconds,
    images/s, CPU seconds per image (getrusage over the loop only, not the
    file reads) and peak RSS. A tool that reports: it asserts nothing about
    time. Exit status 1 when any thumbnail failed.
*/
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

#include "bench_proc.h"

typedef struct {
    char *data;                         //  the file's bytes (g_free)
    gsize len;                          //  their length
} s_file_t;

typedef struct {
    int threads;                        //  worker threads, one job each at a time
    long jobs;                          //  thumbnails to make in all
    int width;                          //  thumbnail box
    int height;
    bool jpeg;                          //  JPEG at `quality`, else PNG
    int quality;                        //  JPEG quality
    bool same_malloc;                   //  the resizer's mallopt settings
    s_file_t *files;                    //  the inputs, in memory
    int nfiles;
    atomic_long next;                   //  next job number to take
    atomic_long failed;                 //  thumbnails that failed
    atomic_llong out_bytes;             //  encoded bytes made
} s_bench_t;

//  libvips' warnings ("unknown EXIF resolution unit") are noise here; the
//  resizer routes them into its log.
static void
s_vips_log (const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data)
{
    (void) domain;
    (void) level;
    (void) message;
    (void) data;
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

//  One thumbnail of one in-memory file. Returns 0 or -1.
static int
s_thumbnail (s_bench_t *self, const s_file_t *file)
{
    VipsImage *thumb = NULL;
    void *out = NULL;
    size_t out_len = 0;
    int rc = vips_thumbnail_buffer (file->data, file->len, &thumb, self->width,
                                    "height", self->height, "size", VIPS_SIZE_DOWN,
                                    "option_string", "fail_on=truncated", NULL);
    if (rc == 0 && self->jpeg)
        rc = vips_jpegsave_buffer (thumb, &out, &out_len, "strip", TRUE,
                                   "Q", self->quality, NULL);
    else
    if (rc == 0)
        rc = vips_pngsave_buffer (thumb, &out, &out_len, "strip", TRUE, NULL);
    g_clear_object (&thumb);
    g_free (out);
    if (rc == 0)
        atomic_fetch_add (&self->out_bytes, (long long) out_len);
    else
        vips_error_clear ();
    return rc;
}

static void *
s_worker (void *arg)
{
    s_bench_t *self = arg;
    for (;;) {
        long job = atomic_fetch_add (&self->next, 1);
        if (job >= self->jobs)
            break;
        if (s_thumbnail (self, &self->files [job % self->nfiles]))
            atomic_fetch_add (&self->failed, 1);
    }
    vips_thread_shutdown ();
    return NULL;
}

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: imgpipe-bench-raw [--threads N] [--jobs N] [--width W] [--height H]\n"
                  "         [--format png|jpeg] [--quality Q] [--same-malloc] FILE...\n");
}

//  Parses the flags into self. Returns the index of the first file, or -1.
static int
s_parse (s_bench_t *self, int argc, char **argv)
{
    static const struct option options [] = {
        { "threads", required_argument, NULL, 't' },
        { "jobs", required_argument, NULL, 'j' },
        { "width", required_argument, NULL, 'w' },
        { "height", required_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "quality", required_argument, NULL, 'q' },
        { "same-malloc", no_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'H' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (c) {
            case 't': self->threads = atoi (optarg); break;
            case 'j': self->jobs = atol (optarg); break;
            case 'w': self->width = atoi (optarg); break;
            case 'h': self->height = atoi (optarg); break;
            case 'f':
                if (strcmp (optarg, "png") && strcmp (optarg, "jpeg"))
                    return -1;
                self->jpeg = strcmp (optarg, "jpeg") == 0;
                break;
            case 'q': self->quality = atoi (optarg); break;
            case 'm': self->same_malloc = true; break;
            case 'H': s_usage (stdout); exit (0);
            default: return -1;
        }
    }
    if (self->threads < 1 || self->jobs < 1 || self->width < 1 || self->height < 1
    ||  self->quality < 1 || self->quality > 100 || optind >= argc)
        return -1;
    return optind;
}

int
main (int argc, char **argv)
{
    s_bench_t self = { .threads = (int) sysconf (_SC_NPROCESSORS_ONLN), .jobs = 200,
                       .width = 100, .height = 100, .quality = 80 };
    int first = s_parse (&self, argc, argv);
    if (first < 0) {
        s_usage (stderr);
        return 2;
    }
    //  Before libvips starts its threads, as the resizer does it.
    if (self.same_malloc) {
        mallopt (M_ARENA_MAX, self.threads);
        mallopt (M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        mallopt (M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    }
    if (VIPS_INIT (argv [0])) {
        fprintf (stderr, "imgpipe-bench-raw: libvips did not start: %s\n", vips_error_buffer ());
        return 1;
    }
    g_log_set_handler ("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                       s_vips_log, NULL);
    vips_concurrency_set (1);
    vips_cache_set_max (0);

    self.nfiles = argc - first;
    self.files = calloc ((size_t) self.nfiles, sizeof *self.files);
    long long in_bytes = 0;
    for (int i = 0; i < self.nfiles; i++) {
        if (!g_file_get_contents (argv [first + i], &self.files [i].data, &self.files [i].len,
                                  NULL)) {
            fprintf (stderr, "imgpipe-bench-raw: cannot read %s\n", argv [first + i]);
            return 1;
        }
        in_bytes += (long long) self.files [i].len;
    }

    pthread_t *tids = calloc ((size_t) self.threads, sizeof *tids);
    double cpu0 = bench_self_cpu_s (), t0 = s_now ();
    for (int i = 0; i < self.threads; i++)
        pthread_create (&tids [i], NULL, s_worker, &self);
    for (int i = 0; i < self.threads; i++)
        pthread_join (tids [i], NULL);
    double wall = s_now () - t0, cpu = bench_self_cpu_s () - cpu0;

    printf ("{\"jobs\": %ld, \"files\": %d, \"input_bytes\": %lld, \"threads\": %d, "
            "\"width\": %d, \"height\": %d, \"format\": \"%s\", \"quality\": %d, "
            "\"malloc\": \"%s\", \"failed\": %ld, \"wall_s\": %.3f, \"images_per_s\": %.2f, "
            "\"cpu_s\": %.3f, \"cpu_ms_per_image\": %.1f, \"output_bytes\": %lld, "
            "\"peak_rss_mb\": %.1f}\n",
            self.jobs, self.nfiles, in_bytes, self.threads, self.width, self.height,
            self.jpeg ? "jpeg" : "png", self.jpeg ? self.quality : 0,
            self.same_malloc ? "resizer" : "glibc", atomic_load (&self.failed), wall,
            (double) self.jobs / wall, cpu, cpu * 1000 / (double) self.jobs,
            (long long) atomic_load (&self.out_bytes), (double) bench_self_peak_kb () / 1024);
    for (int i = 0; i < self.nfiles; i++)
        g_free (self.files [i].data);
    free (self.files);
    free (tids);
    vips_shutdown ();
    return atomic_load (&self.failed) ? 1 : 0;
}

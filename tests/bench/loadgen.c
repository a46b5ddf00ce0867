/*  imgpipe-bench-load — the pipeline run of tests/bench/run.sh (issue 10,
    points 2-4 and 6): a client that keeps a fixed number of jobs in flight
    through a running frontend, and the accounting of every process while it
    does.

    Usage: imgpipe-bench-load --url http://HOST:PORT [--concurrency C]
             [--jobs N] [--width W] [--height H] [--format png|jpeg]
             [--quality Q] [--wait-s S] [--deadline-s S] [--after-s S]
             [--watch NAME=PID]... FILE...

    Each of C slots runs one job after another, as a client would: upload
    the raw bytes (POST /v1/images?width=..&height=..&format=..[&quality=..],
    Content-Type: image/jpeg), then GET /v1/images/{id}?wait=S until the
    status is final, then GET its thumbnail. The files are read once and
    sent from memory, in turn, until N jobs were uploaded. One thread drives
    every slot through one libcurl multi handle, connections kept alive.

    Measured: the upload's 202 latency (p50/p90/p99/max), images/s from the
    first upload to the last job seen done, and for every --watch process
    its CPU seconds over that same window (utime + stime from /proc/PID/stat),
    its RSS before the first upload (idle), its peak (VmRSS sampled every
    100 ms) and its RSS --after-s seconds after the last job; and the load
    generator's own CPU (getrusage).

    Prints one JSON object on stdout. A tool that reports: nothing about
    time is asserted. It never waits without a deadline: each request has a
    timeout and the whole run --deadline-s; past it the run stops and says
    so ("complete": false, exit status 1).
*/
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"

#define S_WATCH_MAX 64                  //  processes watched
#define S_BODY_MAX (1 << 20)            //  response bytes kept (JSON); more are counted only
#define S_SAMPLE_US 100000              //  RSS sampling period

typedef enum { S_IDLE, S_UPLOAD, S_STATUS, S_THUMB } s_phase_t;

typedef struct {
    char *data;                         //  the file's bytes
    size_t len;                         //  their length
} s_file_t;

typedef struct {
    char name [32];                     //  role: broker, resizer, frontend...
    int pid;                            //  its process
    double cpu0;                        //  CPU seconds at the first upload
    double cpu1;                        //  ...at the last done
    long rss_idle_kb;                   //  VmRSS before the first upload
    long rss_peak_kb;                   //  highest VmRSS sampled during the run
    long rss_after_kb;                  //  VmRSS --after-s after the last done
} s_watch_t;

typedef struct {
    CURL *easy;                         //  this slot's handle, reused (keep-alive)
    s_phase_t phase;                    //  what the handle is doing
    char id [64];                       //  the job's id, from the 202
    char *body;                         //  response bytes kept (JSON answers)
    size_t body_len;                    //  bytes in body
    size_t got;                         //  response bytes received in all
    int64_t job_start_us;               //  the job's upload started
} s_slot_t;

typedef struct {
    const char *url;                    //  frontend base URL
    int concurrency;                    //  jobs in flight
    long jobs;                          //  jobs to run
    int width, height;                  //  thumbnail box
    const char *format;                 //  png or jpeg
    int quality;                        //  1..100
    int wait_s;                         //  ?wait= of the status request
    int deadline_s;                     //  the whole run
    int after_s;                        //  RSS sample this long after the run
    s_file_t *files;                    //  inputs, in memory
    int nfiles;
    s_watch_t watch [S_WATCH_MAX];      //  processes accounted for
    int nwatch;
    //  The run's results
    long uploaded;                      //  uploads started
    long accepted;                      //  202 answers
    long done;                          //  jobs seen done
    long failed;                        //  jobs seen failed
    long errors;                        //  any other answer or transport failure
    long thumbs;                        //  thumbnails downloaded
    long long thumb_bytes;              //  their bytes
    long status_requests;               //  GET /v1/images/{id}?wait= sent
    int64_t *lat_us;                    //  202 latencies
    long nlat;
    int64_t *job_us;                    //  upload start to thumbnail downloaded, per job
    long njob;
    int64_t t_first_us;                 //  first upload started
    int64_t t_done_us;                  //  last job seen done (or failed)
    int64_t t_end_us;                   //  last slot idle
    int64_t next_sample_us;             //  next RSS sample
    bool complete;                      //  every job ended before the deadline
} s_run_t;

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

//  --------------------------------------------------------------------------
//  /proc readings

static void
s_sample_rss (s_run_t *run)
{
    for (int i = 0; i < run->nwatch; i++) {
        long kb = bench_proc_rss_kb (run->watch [i].pid);
        if (kb > run->watch [i].rss_peak_kb)
            run->watch [i].rss_peak_kb = kb;
    }
    run->next_sample_us = s_now_us () + S_SAMPLE_US;
}

//  --------------------------------------------------------------------------
//  Requests

static size_t
s_on_body (char *ptr, size_t size, size_t nmemb, void *userdata)
{
    s_slot_t *slot = userdata;
    size_t len = size * nmemb;
    slot->got += len;
    if (slot->phase != S_THUMB && slot->body_len + len < S_BODY_MAX) {
        memcpy (slot->body + slot->body_len, ptr, len);
        slot->body_len += len;
        slot->body [slot->body_len] = 0;
    }
    return len;
}

//  Sets up the slot's handle for a GET of url; the multi adds it.
static void
s_get (s_slot_t *slot, const char *url, s_phase_t phase, long timeout_ms)
{
    curl_easy_reset (slot->easy);
    curl_easy_setopt (slot->easy, CURLOPT_URL, url);
    curl_easy_setopt (slot->easy, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt (slot->easy, CURLOPT_WRITEDATA, slot);
    curl_easy_setopt (slot->easy, CURLOPT_PRIVATE, slot);
    curl_easy_setopt (slot->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt (slot->easy, CURLOPT_NOSIGNAL, 1L);
    slot->phase = phase;
    slot->body [0] = 0;
    slot->body_len = 0;
    slot->got = 0;
}

static struct curl_slist *s_upload_headers;    //  Content-Type, no Expect

//  Starts the next upload on an idle slot, if any job is left.
static void
s_start_upload (s_run_t *run, CURLM *multi, s_slot_t *slot)
{
    if (run->uploaded >= run->jobs)
        return;
    const s_file_t *file = &run->files [run->uploaded % run->nfiles];
    char url [512];
    int n = snprintf (url, sizeof url, "%s/v1/images?width=%d&height=%d&format=%s", run->url,
                      run->width, run->height, run->format);
    //  PNG has no quality, and the frontend refuses one given with it
    if (strcmp (run->format, "png") != 0)
        snprintf (url + n, sizeof url - (size_t) n, "&quality=%d", run->quality);
    s_get (slot, url, S_UPLOAD, 60000);
    //  Sent from our buffer, no copy; no "Expect: 100-continue" round trip.
    curl_easy_setopt (slot->easy, CURLOPT_POSTFIELDS, file->data);
    curl_easy_setopt (slot->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) file->len);
    curl_easy_setopt (slot->easy, CURLOPT_HTTPHEADER, s_upload_headers);
    slot->job_start_us = s_now_us ();
    if (run->uploaded == 0)
        run->t_first_us = slot->job_start_us;
    run->uploaded++;
    curl_multi_add_handle (multi, slot->easy);
}

static void
s_start_status (s_run_t *run, CURLM *multi, s_slot_t *slot)
{
    char url [512];
    snprintf (url, sizeof url, "%s/v1/images/%s?wait=%d", run->url, slot->id, run->wait_s);
    s_get (slot, url, S_STATUS, (run->wait_s + 10) * 1000L);
    run->status_requests++;
    curl_multi_add_handle (multi, slot->easy);
}

static void
s_start_thumb (s_run_t *run, CURLM *multi, s_slot_t *slot)
{
    char url [512];
    snprintf (url, sizeof url, "%s/v1/images/%s/thumbnail", run->url, slot->id);
    s_get (slot, url, S_THUMB, 30000);
    curl_multi_add_handle (multi, slot->easy);
}

//  The JSON string member `key` of the slot's body, or NULL (borrowed from root).
static const char *
s_json_str (json_t *root, const char *key)
{
    return json_string_value (json_object_get (root, key));
}

static void
s_after_upload (s_run_t *run, CURLM *multi, s_slot_t *slot, CURLcode res, long code)
{
    curl_off_t us = 0;
    curl_easy_getinfo (slot->easy, CURLINFO_TOTAL_TIME_T, &us);
    json_t *root = res == CURLE_OK && code == 202 ? json_loads (slot->body, 0, NULL) : NULL;
    const char *id = s_json_str (root, "id");
    if (!id || strlen (id) >= sizeof slot->id) {
        run->errors++;
        slot->phase = S_IDLE;
    }
    else {
        run->accepted++;
        run->lat_us [run->nlat++] = (int64_t) us;
        snprintf (slot->id, sizeof slot->id, "%s", id);
        s_start_status (run, multi, slot);
    }
    json_decref (root);
}

static void
s_after_status (s_run_t *run, CURLM *multi, s_slot_t *slot, CURLcode res, long code)
{
    json_t *root = res == CURLE_OK && code == 200 ? json_loads (slot->body, 0, NULL) : NULL;
    const char *status = s_json_str (root, "status");
    if (!status) {
        run->errors++;
        slot->phase = S_IDLE;
    }
    else
    if (strcmp (status, "done") == 0) {
        run->done++;
        run->t_done_us = s_now_us ();
        s_start_thumb (run, multi, slot);
    }
    else
    if (strcmp (status, "failed") == 0) {
        run->failed++;
        run->t_done_us = s_now_us ();
        slot->phase = S_IDLE;
    }
    else
        s_start_status (run, multi, slot);      //  still queued or processing
    json_decref (root);
}

static void
s_after_thumb (s_run_t *run, s_slot_t *slot, CURLcode res, long code)
{
    if (res == CURLE_OK && code == 200 && slot->got > 0) {
        run->thumbs++;
        run->thumb_bytes += (long long) slot->got;
        run->job_us [run->njob++] = s_now_us () - slot->job_start_us;
    }
    else
        run->errors++;
    slot->phase = S_IDLE;
}

//  One finished transfer: move its slot to the job's next request.
static void
s_finished (s_run_t *run, CURLM *multi, CURL *easy, CURLcode res)
{
    s_slot_t *slot = NULL;
    long code = 0;
    curl_easy_getinfo (easy, CURLINFO_PRIVATE, (char **) &slot);
    curl_easy_getinfo (easy, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle (multi, easy);
    switch (slot->phase) {
        case S_UPLOAD: s_after_upload (run, multi, slot, res, code); break;
        case S_STATUS: s_after_status (run, multi, slot, res, code); break;
        case S_THUMB: s_after_thumb (run, slot, res, code); break;
        case S_IDLE: break;
    }
    if (slot->phase == S_IDLE)
        s_start_upload (run, multi, slot);
}

//  --------------------------------------------------------------------------
//  The run

static void
s_run (s_run_t *run)
{
    CURLM *multi = curl_multi_init ();
    curl_multi_setopt (multi, CURLMOPT_MAXCONNECTS, (long) run->concurrency * 2);
    s_slot_t *slots = calloc ((size_t) run->concurrency, sizeof *slots);
    for (int i = 0; i < run->concurrency; i++) {
        slots [i].easy = curl_easy_init ();
        slots [i].body = malloc (S_BODY_MAX);
    }
    for (int i = 0; i < run->nwatch; i++) {
        run->watch [i].rss_idle_kb = bench_proc_rss_kb (run->watch [i].pid);
        run->watch [i].cpu0 = bench_proc_cpu_s (run->watch [i].pid);
    }
    s_sample_rss (run);
    int64_t deadline = s_now_us () + (int64_t) run->deadline_s * 1000000;
    for (int i = 0; i < run->concurrency; i++)
        s_start_upload (run, multi, &slots [i]);

    int running = 1;
    while (running > 0 && s_now_us () < deadline) {
        curl_multi_perform (multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read (multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                s_finished (run, multi, msg->easy_handle, msg->data.result);
        curl_multi_perform (multi, &running);
        if (s_now_us () >= run->next_sample_us)
            s_sample_rss (run);
        if (running > 0)
            curl_multi_poll (multi, NULL, 0, 20, NULL);
    }
    run->t_end_us = s_now_us ();
    run->complete = running == 0 && run->uploaded == run->jobs;
    if (!run->t_done_us)
        run->t_done_us = run->t_end_us;
    for (int i = 0; i < run->nwatch; i++)
        run->watch [i].cpu1 = bench_proc_cpu_s (run->watch [i].pid);
    s_sample_rss (run);

    for (int i = 0; i < run->concurrency; i++) {
        curl_multi_remove_handle (multi, slots [i].easy);
        curl_easy_cleanup (slots [i].easy);
        free (slots [i].body);
    }
    free (slots);
    curl_multi_cleanup (multi);
}

//  After the run: RSS --after-s later (the processes idle again).
static void
s_after (s_run_t *run)
{
    int64_t until = s_now_us () + (int64_t) run->after_s * 1000000;
    while (s_now_us () < until)
        usleep (S_SAMPLE_US);
    for (int i = 0; i < run->nwatch; i++)
        run->watch [i].rss_after_kb = bench_proc_rss_kb (run->watch [i].pid);
}

//  --------------------------------------------------------------------------
//  Report

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

//  Nearest-rank percentile q of sorted samples, in ms; null without samples.
static json_t *
s_pct_ms (const int64_t *v, long n, double q)
{
    if (n == 0)
        return json_null ();
    long rank = (long) (q * (double) n + 0.999999);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return json_real ((double) v [rank - 1] / 1000.0);
}

static json_t *
s_latency_json (int64_t *v, long n)
{
    qsort (v, (size_t) n, sizeof *v, s_cmp_i64);
    return json_pack ("{s:I, s:o, s:o, s:o, s:o}", "n", (json_int_t) n,
                      "p50_ms", s_pct_ms (v, n, 0.50), "p90_ms", s_pct_ms (v, n, 0.90),
                      "p99_ms", s_pct_ms (v, n, 0.99), "max_ms", s_pct_ms (v, n, 1.0));
}

static json_t *
s_report (s_run_t *run, double self_cpu_s)
{
    double secs = (double) (run->t_done_us - run->t_first_us) / 1e6;
    long images = run->done ? run->done : 1;
    json_t *procs = json_array ();
    for (int i = 0; i < run->nwatch; i++) {
        s_watch_t *w = &run->watch [i];
        double cpu = w->cpu0 >= 0 && w->cpu1 >= 0 ? w->cpu1 - w->cpu0 : -1;
        json_array_append_new (procs, json_pack (
            "{s:s, s:i, s:f, s:f, s:f, s:f, s:f}", "name", w->name, "pid", w->pid,
            "cpu_s", cpu, "cpu_ms_per_image", cpu * 1000 / (double) images,
            "rss_idle_mb", (double) w->rss_idle_kb / 1024,
            "rss_peak_mb", (double) w->rss_peak_kb / 1024,
            "rss_after_mb", (double) w->rss_after_kb / 1024));
    }
    json_array_append_new (procs, json_pack (
        "{s:s, s:i, s:f, s:f, s:f}", "name", "loadgen", "pid", (int) getpid (),
        "cpu_s", self_cpu_s, "cpu_ms_per_image", self_cpu_s * 1000 / (double) images,
        "rss_peak_mb", (double) bench_self_peak_kb () / 1024));
    return json_pack (
        "{s:b, s:I, s:i, s:i, s:i, s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, "
        "s:f, s:f, s:o, s:o, s:o, s:i}",
        "complete", run->complete, "jobs", (json_int_t) run->jobs,
        "concurrency", run->concurrency, "width", run->width, "height", run->height,
        "format", run->format, "quality", run->quality, "files", run->nfiles,
        "uploaded", (json_int_t) run->uploaded, "accepted", (json_int_t) run->accepted,
        "done", (json_int_t) run->done, "failed", (json_int_t) run->failed,
        "errors", (json_int_t) run->errors, "thumbnails", (json_int_t) run->thumbs,
        "status_requests", (json_int_t) run->status_requests,
        "wall_s", secs, "images_per_s", (double) run->done / secs,
        "thumb_bytes_mean", run->thumbs ? (double) run->thumb_bytes / (double) run->thumbs : 0.0,
        "upload_202", s_latency_json (run->lat_us, run->nlat),
        "job_latency", s_latency_json (run->job_us, run->njob),
        "processes", procs, "after_s", run->after_s);
}

//  --------------------------------------------------------------------------
//  Flags and files

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: imgpipe-bench-load --url http://HOST:PORT [--concurrency C] [--jobs N]\n"
        "         [--width W] [--height H] [--format png|jpeg] [--quality Q] [--wait-s S]\n"
        "         [--deadline-s S] [--after-s S] [--watch NAME=PID]... FILE...\n");
}

static int
s_add_watch (s_run_t *run, const char *arg)
{
    const char *eq = strchr (arg, '=');
    if (!eq || eq == arg || (size_t) (eq - arg) >= sizeof run->watch [0].name
    ||  run->nwatch == S_WATCH_MAX || atoi (eq + 1) <= 0)
        return -1;
    s_watch_t *w = &run->watch [run->nwatch++];
    snprintf (w->name, sizeof w->name, "%.*s", (int) (eq - arg), arg);
    w->pid = atoi (eq + 1);
    return 0;
}

static int
s_parse (s_run_t *run, int argc, char **argv)
{
    static const struct option options [] = {
        { "url", required_argument, NULL, 'u' },
        { "concurrency", required_argument, NULL, 'c' },
        { "jobs", required_argument, NULL, 'n' },
        { "width", required_argument, NULL, 'w' },
        { "height", required_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "quality", required_argument, NULL, 'q' },
        { "wait-s", required_argument, NULL, 'W' },
        { "deadline-s", required_argument, NULL, 'd' },
        { "after-s", required_argument, NULL, 'a' },
        { "watch", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'H' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (c) {
            case 'u': run->url = optarg; break;
            case 'c': run->concurrency = atoi (optarg); break;
            case 'n': run->jobs = atol (optarg); break;
            case 'w': run->width = atoi (optarg); break;
            case 'h': run->height = atoi (optarg); break;
            case 'f': run->format = optarg; break;
            case 'q': run->quality = atoi (optarg); break;
            case 'W': run->wait_s = atoi (optarg); break;
            case 'd': run->deadline_s = atoi (optarg); break;
            case 'a': run->after_s = atoi (optarg); break;
            case 'p': if (s_add_watch (run, optarg)) return -1; break;
            case 'H': s_usage (stdout); exit (0);
            default: return -1;
        }
    }
    if (!run->url || run->concurrency < 1 || run->jobs < 1 || run->width < 1
    ||  run->height < 1 || run->quality < 1 || run->quality > 100 || run->wait_s < 0
    ||  run->deadline_s < 1 || run->after_s < 0 || optind >= argc)
        return -1;
    return optind;
}

static int
s_read_file (const char *path, s_file_t *file)
{
    FILE *in = fopen (path, "rb");
    if (!in)
        return -1;
    fseek (in, 0, SEEK_END);
    long len = ftell (in);
    fseek (in, 0, SEEK_SET);
    file->data = len > 0 ? malloc ((size_t) len) : NULL;
    file->len = file->data ? fread (file->data, 1, (size_t) len, in) : 0;
    fclose (in);
    return file->len == (size_t) len && len > 0 ? 0 : -1;
}

int
main (int argc, char **argv)
{
    s_run_t run = { .concurrency = 8, .jobs = 200, .width = 100, .height = 100,
                    .format = "png", .quality = 80, .wait_s = 10, .deadline_s = 600,
                    .after_s = 30 };
    int first = s_parse (&run, argc, argv);
    if (first < 0) {
        s_usage (stderr);
        return 2;
    }
    run.nfiles = argc - first;
    run.files = calloc ((size_t) run.nfiles, sizeof *run.files);
    for (int i = 0; i < run.nfiles; i++)
        if (s_read_file (argv [first + i], &run.files [i])) {
            fprintf (stderr, "imgpipe-bench-load: cannot read %s\n", argv [first + i]);
            return 1;
        }
    run.lat_us = calloc ((size_t) run.jobs, sizeof *run.lat_us);
    run.job_us = calloc ((size_t) run.jobs, sizeof *run.job_us);
    curl_global_init (CURL_GLOBAL_DEFAULT);
    s_upload_headers = curl_slist_append (NULL, "Content-Type: image/jpeg");
    s_upload_headers = curl_slist_append (s_upload_headers, "Expect:");

    double cpu0 = bench_self_cpu_s ();
    s_run (&run);
    double self_cpu = bench_self_cpu_s () - cpu0;
    s_after (&run);

    json_t *report = s_report (&run, self_cpu);
    json_dumpf (report, stdout, JSON_COMPACT);
    putchar ('\n');
    json_decref (report);
    curl_slist_free_all (s_upload_headers);
    curl_global_cleanup ();
    for (int i = 0; i < run.nfiles; i++)
        free (run.files [i].data);
    free (run.files);
    free (run.lat_us);
    free (run.job_us);
    return run.complete ? 0 : 1;
}

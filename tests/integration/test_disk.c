/*  test_disk — the broker's disk running out, for real: the spool on a
    small tmpfs that the test fills up, with the real broker, resizers and
    frontend on loopback.

    Why: "202 means on disk" and "nothing accepted is lost" meet the disk
    at its worst when it is full. The issue found uploads answered 500
    without Retry-After while /healthz said 200, and accepted, correctly
    resized jobs reported failed (final to the API) because their results
    could not be stored, done again only after a restart. This suite shows
    instead: uploads get 507 spool_full + Retry-After, /readyz 503 with
    reason spool_full, /healthz 200; jobs whose results could not be stored
    stay unfinished and end done once room is freed, and a broker killed
    and restarted keeps them done. Also through the real frontend:
    --max-spool-bytes (507, nothing accepted harmed), a thumbnail damaged on
    disk (422 spool_damaged, logged once, the other job served), and the
    --ttl-s sweep while running (404, spool empty). Each test prints what
    it observed on one "disk <test>:" line.

    The spool needs a filesystem of a few MB: the test process enters a
    mount namespace of its own (unshare) and mounts a tmpfs there, which
    the processes it starts inherit. Where it may not mount (not root, no
    CAP_SYS_ADMIN) the test is skipped, and says so.

    Never: sleep as an assertion. Every wait polls a condition against a
    deadline.
*/
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_JOB_MS 60000              //  deadline for one job to end
#define S_JOBS 5                    //  jobs accepted before the disk fills
#define S_TMPFS "size=8m"           //  the spool's filesystem

static h_cluster_t *s_cluster;
static char s_mount [256];          //  the tmpfs, "" when not mounted

static void
s_teardown (void)
{
    h_cluster_destroy (&s_cluster);
    if (s_mount [0]) {
        umount2 (s_mount, MNT_DETACH);
        rmdir (s_mount);
    }
}

//  Mount a small tmpfs in a mount namespace of this process's own (its
//  children inherit it); skip the test when that is not allowed here.
static void
s_mount_small (void)
{
    snprintf (s_mount, sizeof s_mount, "/tmp/imgp-disk-XXXXXX");
    cr_assert_not_null (mkdtemp (s_mount));
    if (unshare (CLONE_NEWNS) || mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)
    ||  mount ("tmpfs", s_mount, "tmpfs", 0, S_TMPFS)) {
        int error = errno;
        rmdir (s_mount);
        s_mount [0] = 0;
        cr_skip_test ("cannot mount a small tmpfs here (%s): needs root", strerror (error));
    }
}

//  Fill the filesystem of `dir` with a file `path` until no byte more fits.
//  Returns the bytes written.
static long long
s_fill (const char *path)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq (fd, 0, "%s: %s", path, strerror (errno));
    static char chunk [65536];
    memset (chunk, 0x5a, sizeof chunk);
    long long total = 0;
    for (size_t size = sizeof chunk; size >= 1; size /= 2) {
        ssize_t n;
        while ((n = write (fd, chunk, size)) > 0)
            total += n;
        cr_assert (n < 0 && (errno == ENOSPC || errno == EFBIG), "%s", strerror (errno));
    }
    close (fd);
    return total;
}

//  Upload a JPEG for a 300x300 thumbnail (`small`: 32x32); the HTTP
//  status (and the id on 202).
static int
s_upload_as (const void *image, size_t size, bool small, char id [H_ID_SIZE],
             h_response_t *resp)
{
    return h_upload (s_cluster->http_ports [0], small ? "/v1/images?width=32&height=32"
                     : "/v1/images?width=300&height=300", image, size, "image/jpeg", false,
                     id, resp);
}

static int
s_upload (const void *image, size_t size, char id [H_ID_SIZE], h_response_t *resp)
{
    return s_upload_as (image, size, false, id, resp);
}

//  /readyz: the status, and the error's "reason" into `reason` ("" none).
static int
s_readyz (char *reason, size_t reason_size)
{
    h_response_t resp = { 0 };
    reason [0] = 0;
    h_http (s_cluster->http_ports [0], "GET", "/readyz", NULL, NULL, 0, &resp, 5000);
    json_t *body = h_json (&resp);
    const char *text = json_string_value (json_object_get (json_object_get (body, "error"),
                                                           "reason"));
    snprintf (reason, reason_size, "%s", text ? text : "");
    json_decref (body);
    int status = resp.status;
    h_response_free (&resp);
    return status;
}

typedef struct {
    char reason [64];               //  /readyz's reason when it last answered
} s_readyz_wait_t;

static bool
s_readyz_says_full (void *arg)
{
    s_readyz_wait_t *wait = arg;
    return s_readyz (wait->reason, sizeof wait->reason) == 503
        && strcmp (wait->reason, "spool_full") == 0;
}

static bool
s_readyz_ok (void *arg)
{
    s_readyz_wait_t *wait = arg;
    return s_readyz (wait->reason, sizeof wait->reason) == 200;
}

//  GET the job's status: its "status" into `state`.
static void
s_state (const char *id, char *state, size_t size)
{
    char path [256];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    h_response_t resp = { 0 };
    h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 5000);
    cr_assert_eq (resp.status, 200, "GET %s: %d %s", path, resp.status,
                  resp.body ? resp.body : resp.error);
    json_t *body = h_json (&resp);
    snprintf (state, size, "%s", h_json_status (body));
    json_decref (body);
    h_response_free (&resp);
}

//  The JSON error's code of a response must be `want`.
static void
s_expect_code (h_response_t *resp, const char *want)
{
    json_t *body = h_json (resp);
    const char *code = json_string_value (json_object_get (json_object_get (body, "error"),
                                                           "code"));
    cr_assert_str_eq (code ? code : "(none)", want, "%s", resp->body ? resp->body : "");
    json_decref (body);
}

//  Wait until the job ended, and it must be done.
static void
s_wait_done (const char *id)
{
    json_t *status = NULL;
    char why [256];
    cr_assert_eq (h_job_wait (s_cluster->http_ports [0], id, S_JOB_MS, &status, why,
                              sizeof why), 0, "job %s: %s", id, why);
    cr_assert_str_eq (h_json_status (status), "done", "job %s ended %s", id,
                      h_json_status (status));
    json_decref (status);
}

//  Every job done, each thumbnail downloadable and a fit of the source.
static void
s_expect_all_done (char ids [S_JOBS][H_ID_SIZE], int w, int h)
{
    for (int i = 0; i < S_JOBS; i++) {
        char why [256];
        s_wait_done (ids [i]);
        char path [128];
        snprintf (path, sizeof path, "/v1/images/%s/thumbnail", ids [i]);
        h_response_t resp = { 0 };
        h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 10000);
        cr_assert_eq (resp.status, 200, "thumbnail %d: %d", i, resp.status);
        cr_assert_eq (h_check_thumb (resp.body, resp.body_size, w, h, 300, 300, NULL, NULL,
                                     why, sizeof why), 0, "thumbnail %d: %s", i, why);
        h_response_free (&resp);
    }
}

//  A cluster with `resizers` resizers, one frontend, and one broker flag
//  (`flag` NULL: none) with its value.
static void
s_start (int resizers, const char *flag, const char *value)
{
    h_cluster_opts_t opts = { .resizers = resizers, .frontends = 1,
                              .broker_extra = { flag, value, NULL },
                              .resizer_extra = { "--heartbeat-ms", "250", NULL } };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

//  A 640 x 480 photo-like JPEG (malloc'd), its size in *size.
static void *
s_photo (size_t *size)
{
    void *image = h_make_image ("jpeg", 640, 480, false, size);
    cr_assert_not_null (image);
    return image;
}

TestSuite (disk, .fini = s_teardown, .timeout = 240);

Test (disk, full_spool_507_readyz_then_every_accepted_job_ends_done)
{
    s_mount_small ();
    char spool [300], filler [300];
    snprintf (spool, sizeof spool, "%s/spool", s_mount);
    snprintf (filler, sizeof filler, "%s/filler", s_mount);
    cr_assert_eq (mkdir (spool, 0755), 0);
    //  No resizer yet: the jobs wait in the queue while the disk fills.
    s_start (0, "--data-dir", spool);
    snprintf (s_cluster->data_dir, sizeof s_cluster->data_dir, "%s", spool);

    int w = 640, h = 480;
    size_t size;
    void *image = s_photo (&size);
    char ids [S_JOBS][H_ID_SIZE];
    for (int i = 0; i < S_JOBS; i++)
        cr_assert_eq (s_upload (image, size, ids [i], NULL), 202, "upload %d", i);

    long long filled = s_fill (filler);
    h_response_t resp = { 0 };
    char id [H_ID_SIZE];
    int status = s_upload (image, size, id, &resp);
    cr_assert_eq (status, 507, "upload on a full disk: %d %s", status,
                  resp.body ? resp.body : resp.error);
    char retry_after [32];
    cr_assert_eq (h_header (&resp, "Retry-After", retry_after, sizeof retry_after), 0,
                  "507 without Retry-After");
    s_expect_code (&resp, "spool_full");
    h_response_free (&resp);
    cr_assert_eq (h_healthz (s_cluster->http_ports [0], 5000), 200, "liveness stays 200");

    //  A resizer now: it resizes every job, and no result can be stored.
    cr_assert_geq (h_cluster_add_resizer (s_cluster, 20000), 0);
    s_readyz_wait_t wait = { "" };
    cr_assert (h_wait_until (s_readyz_says_full, &wait, 10000),
               "/readyz did not say spool_full (reason \"%s\")", wait.reason);
    h_response_t metrics = { 0 };
    h_http (s_cluster->http_ports [0], "GET", "/metrics", NULL, NULL, 0, &metrics, 5000);
    cr_assert (metrics.body && strstr (metrics.body, "imgpipe_broker_spool_full 1"),
               "/metrics does not say the spool is full");
    h_response_free (&metrics);
    long long waited = h_wait_log (&s_cluster->broker, "event=store_failed", 1, S_JOB_MS);
    cr_assert_geq (waited, 0, "no result failed to be stored");
    for (int i = 0; i < S_JOBS; i++) {
        char state [32];
        s_state (ids [i], state, sizeof state);
        cr_assert (strcmp (state, "queued") == 0 || strcmp (state, "processing") == 0,
                   "job %d is %s while its result cannot be stored", i, state);
    }
    //  Dispatch waits for room: no resizer redoes work that cannot be kept.
    int dispatched = h_log_count (s_cluster->broker.log, "event=dispatched");
    int resumed = h_log_count (s_cluster->broker.log, "event=store_resumed");
    cr_assert_eq (resumed, 0, "dispatch resumed while the disk is full");
    cr_assert_leq (dispatched, S_JOBS, "%d dispatches for %d jobs on a full disk",
                   dispatched, S_JOBS);

    cr_assert_eq (unlink (filler), 0);
    s_expect_all_done (ids, w, h);
    int failures = h_log_count (s_cluster->broker.log, "event=store_failed");
    cr_assert (h_wait_until (s_readyz_ok, &wait, 10000), "/readyz stays 503 (%s)",
               wait.reason);
    cr_assert_eq (s_upload (image, size, id, NULL), 202, "uploads go again");
    cr_assert_geq (h_spool_count (s_cluster, ".out"), S_JOBS, "thumbnails in the spool");

    //  kill -9 and a restart on the same spool: every job still done.
    cr_assert_eq (h_proc_signal (&s_cluster->broker, SIGKILL, 5000), 0);
    cr_assert_eq (h_cluster_broker_start (s_cluster), 0);
    cr_assert_geq (h_wait_status (s_cluster->http_ports [0], "/healthz", 200, 20000), 0);
    s_expect_all_done (ids, w, h);
    int records = h_spool_count (s_cluster, ".json");
    cr_assert_eq (h_log_count (s_cluster->broker.log, "event=failed"), 0,
                  "a job failed for the broker's own disk");

    fprintf (stderr, "disk full_spool: tmpfs %s, filler %lld bytes; %d jobs accepted before, "
             "upload on the full disk 507 spool_full Retry-After %s, /readyz 503 spool_full, "
             "/healthz 200; first store failure after %lld ms, %d store failures, %d "
             "dispatches while full; after the filler was removed all %d done with "
             "thumbnails, /readyz 200, upload 202; after kill -9 + restart all %d done, "
             "spool records %d\n", S_TMPFS, filled, S_JOBS, retry_after, waited, failures,
             dispatched, S_JOBS, S_JOBS, records);
    free (image);
    h_cluster_pass (s_cluster);
}

//  --max-spool-bytes: uploads beyond it get 507 while the disk has room;
//  what was accepted is done, and once the originals are gone (done jobs
//  drop them) uploads are taken again.
Test (disk, max_spool_bytes_gives_507_and_harms_nothing_accepted)
{
    s_start (0, "--max-spool-bytes", "800000");
    size_t size;
    void *image = s_photo (&size);
    cr_assert_lt (size, 800000);
    char ids [S_JOBS][H_ID_SIZE];
    int accepted = 0, refused = 0;
    h_response_t resp = { 0 };
    for (int i = 0; i < 2 * S_JOBS && accepted < S_JOBS; i++) {
        char id [H_ID_SIZE];
        h_response_free (&resp);
        int status = s_upload_as (image, size, true, id, &resp);
        if (status == 202)
            memcpy (ids [accepted++], id, H_ID_SIZE);
        else {
            cr_assert_eq (status, 507, "upload %d: %d", i, status);
            refused++;
            break;
        }
    }
    cr_assert_gt (refused, 0, "%d uploads of %zu bytes fit in 800000", accepted, size);
    char retry_after [32];
    cr_assert_eq (h_header (&resp, "Retry-After", retry_after, sizeof retry_after), 0);
    s_expect_code (&resp, "spool_full");
    h_response_free (&resp);
    cr_assert_geq (h_cluster_add_resizer (s_cluster, 20000), 0);
    for (int i = 0; i < accepted; i++)
        s_wait_done (ids [i]);
    char id [H_ID_SIZE];
    cr_assert_eq (s_upload_as (image, size, true, id, NULL), 202,
                  "room again once originals went");
    fprintf (stderr, "disk max_spool_bytes: limit 800000, upload %zu bytes: %d accepted, "
             "the next 507 (Retry-After %s); all %d done; then an upload 202\n", size,
             accepted, retry_after, accepted);
    free (image);
    h_cluster_pass (s_cluster);
}

//  Flip one byte in the middle of the first copy of `needle` in the
//  spool's log segments, as a bad sector would. Returns 0 when found.
static int
s_flip_in_log (const char *data_dir, const void *needle, size_t size)
{
    char log [400];
    snprintf (log, sizeof log, "%s/log", data_dir);
    int found = -1;
    for (int seq = 1; seq < 64 && found; seq++) {
        char path [512];
        snprintf (path, sizeof path, "%s/%020d.seg", log, seq);
        size_t len;
        char *bytes = h_read_file (path, &len);
        char *at = bytes ? memmem (bytes, len, needle, size) : NULL;
        if (at) {
            int fd = open (path, O_WRONLY);
            off_t offset = (off_t) (at - bytes) + (off_t) size / 2;
            char byte = (char) (bytes [offset] ^ 0x5a);
            found = fd >= 0 && pwrite (fd, &byte, 1, offset) == 1 ? 0 : -1;
            if (fd >= 0)
                close (fd);
        }
        free (bytes);
    }
    return found;
}

//  A thumbnail whose bytes changed on the broker's disk: its download is
//  422 with code spool_damaged (not 404 "may have expired", not 500), the
//  status says failed spool_damaged, logged once; the other job is served.
Test (disk, a_damaged_thumbnail_is_422_spool_damaged_and_harms_no_other_job)
{
    s_start (1, NULL, NULL);
    size_t size;
    void *image = s_photo (&size);
    char ids [2][H_ID_SIZE];
    h_response_t thumbs [2] = { { 0 } };
    for (int i = 0; i < 2; i++) {
        cr_assert_eq (s_upload (image, size, ids [i], NULL), 202);
        char path [128];
        s_wait_done (ids [i]);
        snprintf (path, sizeof path, "/v1/images/%s/thumbnail", ids [i]);
        h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &thumbs [i], 10000);
        cr_assert_eq (thumbs [i].status, 200);
    }
    //  64 bytes from the middle of the first thumbnail: found only there.
    cr_assert_gt (thumbs [0].body_size, 256);
    cr_assert_eq (s_flip_in_log (s_cluster->data_dir, thumbs [0].body + thumbs [0].body_size / 2,
                                 64), 0, "the thumbnail's bytes are not in the log");

    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", ids [0]);
    int statuses [2];
    for (int round = 0; round < 2; round++) {
        h_response_t resp = { 0 };
        h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 10000);
        statuses [round] = resp.status;
        cr_assert_eq (resp.status, 422, "round %d: %d %s", round, resp.status,
                      resp.body ? resp.body : resp.error);
        s_expect_code (&resp, "spool_damaged");
        h_response_free (&resp);
    }
    char state [32];
    s_state (ids [0], state, sizeof state);
    cr_assert_str_eq (state, "failed");
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", ids [1]);
    h_response_t other = { 0 };
    h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &other, 10000);
    cr_assert_eq (other.status, 200);
    cr_assert_eq (other.body_size, thumbs [1].body_size);
    cr_assert_eq (memcmp (other.body, thumbs [1].body, other.body_size), 0);
    int logged = h_log_count (s_cluster->broker.log, "event=spool_damaged");
    cr_assert_eq (logged, 1, "spool_damaged logged %d times", logged);
    fprintf (stderr, "disk damaged_thumbnail: one byte flipped in a %zu-byte thumbnail on disk: "
             "GET thumbnail %d then %d, code spool_damaged, status failed, logged %d time(s); "
             "the other job's thumbnail (%zu bytes) served byte for byte\n",
             thumbs [0].body_size, statuses [0], statuses [1], logged, other.body_size);
    h_response_free (&other);
    for (int i = 0; i < 2; i++)
        h_response_free (&thumbs [i]);
    free (image);
    h_cluster_pass (s_cluster);
}

typedef struct {
    const char *id;                 //  the job
} s_gone_t;

static bool
s_job_gone (void *arg)
{
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s", ((s_gone_t *) arg)->id);
    h_response_t resp = { 0 };
    h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 5000);
    int status = resp.status;
    h_response_free (&resp);
    return status == 404;
}

//  --ttl-s while running: a done job leaves the table (404) and the spool
//  (record, thumbnail) once its TTL passed, without a restart.
Test (disk, ttl_sweep_deletes_finished_jobs_while_running)
{
    s_start (1, "--ttl-s", "1");
    size_t size;
    void *image = s_photo (&size);
    char id [H_ID_SIZE];
    cr_assert_eq (s_upload_as (image, size, true, id, NULL), 202);
    s_wait_done (id);
    cr_assert_eq (h_spool_count (s_cluster, ".json"), 1);
    cr_assert_eq (h_spool_count (s_cluster, ".out"), 1);
    cr_assert_eq (h_spool_count (s_cluster, ".in"), 0, "the done job's original is gone");
    long long start = h_now_ms ();
    s_gone_t gone = { id };
    cr_assert (h_wait_until (s_job_gone, &gone, 10000), "the job is still there after 10 s");
    long long took = h_now_ms () - start;
    cr_assert_eq (h_spool_count (s_cluster, ""), 0, "the spool still holds the job");
    cr_assert_eq (h_log_count (s_cluster->broker.log, "event=expired"), 1);
    fprintf (stderr, "disk ttl: --ttl-s 1: done job 404 %lld ms after done was seen, spool "
             "entries 0, one event=expired line\n", took);
    free (image);
    h_cluster_pass (s_cluster);
}

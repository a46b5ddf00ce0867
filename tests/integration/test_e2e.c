/*  test_e2e — end-to-end suite: the real broker, resizers, frontends and
    command-line client as processes on loopback ports, driven over HTTP.

    Why: unit suites test modules; only this suite shows that a user's
    upload becomes a correct thumbnail through every process, that the
    invariants of DESIGN.md hold between processes (202 means any frontend
    knows the id; uploads are accepted while every resizer is busy), that
    every corpus file ends as its manifest says, that every program
    stops cleanly on SIGTERM, and that resizers run at a lower priority.
    Bad input has its own suite, test_badinput.

    Never: sleep as an assertion. Every wait polls a condition against a
    deadline, and each test has a criterion timeout as a last resort.
*/
#include "expect.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_JOB_MS EXPECT_JOB_MS
#define S_ID_LEN (H_ID_SIZE - 1)

static h_cluster_t *s_cluster;

static void
s_start (int resizers, int frontends, const char *extra0, const char *extra1)
{
    h_cluster_opts_t opts = { .resizers = resizers, .frontends = frontends,
                              .frontend_extra = { extra0, extra1, NULL } };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void s_setup_one (void) { s_start (2, 1, NULL, NULL); }
static void s_setup_two (void) { s_start (2, 2, NULL, NULL); }
static void s_teardown (void) { h_cluster_destroy (&s_cluster); }

static int
s_port (int i)
{
    return s_cluster->http_ports [i];
}

//  ---------------------------------------------------------------------------
//  Helpers shared by the tests

//  GET thumbnail on `route` ("/v1/images" or "/images"), require 200.
static void
s_download (int port, const char *route, const char *id, h_response_t *resp)
{
    char path [128];
    snprintf (path, sizeof path, "%s/%s/thumbnail", route, id);
    int rc = h_http (port, "GET", path, NULL, NULL, 0, resp, 10000);
    cr_assert (rc == 0 && resp->status == 200, "GET %s: %d %s %.300s", path, resp->status,
               resp->error, resp->body ? resp->body : "");
}

static void
s_expect_content_type (const h_response_t *resp, const char *want)
{
    char type [128] = "";
    h_header (resp, "Content-Type", type, sizeof type);
    cr_expect (strncmp (type, want, strlen (want)) == 0, "Content-Type '%s', want '%s'",
               type, want);
}

//  Upload a small PNG on frontend `upload` and wait until frontend
//  `poll` says it is done.
static void
s_one_job (int upload, int poll)
{
    size_t size = 0;
    void *png = h_make_image ("png", 200, 100, false, &size);
    cr_assert_not_null (png);
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (upload), "/v1/images", png, size, "image/png", false, id);
    json_decref (expect_job_ends (s_port (poll), id, "done"));
    free (png);
}

//  Full round trip of a fixture with default options: status JSON fields,
//  Content-Type, thumbnail size and the result metadata agree.
static void
s_round_trip (const void *data, size_t size, const char *type, bool multipart,
              int src_w, int src_h)
{
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (0), "/v1/images", data, size, type, multipart, id);
    json_t *status = expect_job_ends (s_port (0), id, "done");
    cr_expect (json_is_string (json_object_get (status, "created_at")), "no created_at");
    cr_expect (json_is_string (json_object_get (status, "updated_at")), "no updated_at");
    cr_expect (json_integer_value (json_object_get (status, "attempts")) >= 1, "attempts < 1");
    cr_expect_str_eq (json_string_value (json_object_get (status, "id")), id);
    json_t *result = json_object_get (status, "result");

    h_response_t resp;
    s_download (s_port (0), "/v1/images", id, &resp);
    s_expect_content_type (&resp, "image/png");
    int w = 0, h = 0;
    char why [512];
    cr_expect_eq (h_check_thumb (resp.body, resp.body_size, src_w, src_h, 100, 100, &w, &h,
                                 why, sizeof why), 0, "%s (%s %s)", why, type,
                  multipart ? "multipart" : "raw");
    cr_expect_eq (json_integer_value (json_object_get (result, "width")), w, "result.width");
    cr_expect_eq (json_integer_value (json_object_get (result, "height")), h, "result.height");
    cr_expect_str_eq (json_string_value (json_object_get (result, "format")), "png");
    cr_expect_eq ((size_t) json_integer_value (json_object_get (result, "bytes")),
                  resp.body_size, "result.bytes");
    h_response_free (&resp);
    json_decref (status);
}

//  ---------------------------------------------------------------------------
//  1. Uploads, multipart and raw, and thumbnail options

Test (e2e_upload, fixtures_raw_and_multipart, .init = s_setup_one, .fini = s_teardown,
      .timeout = 120)
{
    struct { const char *format, *type; int w, h; bool alpha, multipart; } fixtures [] = {
        { "jpeg", "image/jpeg", 320, 240, false, false },
        { "jpeg", "image/jpeg", 320, 240, false, true },
        { "png", "image/png", 200, 120, true, true },
        { "png", "application/octet-stream", 200, 120, true, false },
        { "gif", "application/octet-stream", 150, 300, false, false },
        { "gif", "image/gif", 150, 300, false, true },
    };
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures [0]; i++) {
        size_t size = 0;
        void *data = h_make_image (fixtures [i].format, fixtures [i].w, fixtures [i].h,
                                   fixtures [i].alpha, &size);
        cr_assert_not_null (data);
        s_round_trip (data, size, fixtures [i].type, fixtures [i].multipart,
                      fixtures [i].w, fixtures [i].h);
        free (data);
    }
    h_cluster_pass (s_cluster);
}

Test (e2e_upload, options, .init = s_setup_one, .fini = s_teardown, .timeout = 120)
{
    struct {
        const char *query;          //  thumbnail options
        int src_w, src_h;           //  generated PNG input
        int want_w, want_h;         //  exact size expected, 0 = fit check
        const char *type;           //  Content-Type expected
        const char *loader;         //  libvips loader of the output
    } cases [] = {
        { "format=webp", 400, 300, 0, 0, "image/webp", "Webp" },
        { "format=jpeg&quality=60", 400, 300, 0, 0, "image/jpeg", "Jpeg" },
        { "format=avif", 400, 300, 0, 0, "image/avif", "Heif" },
        { "format=png", 400, 300, 0, 0, "image/png", "Png" },
        { "fit=cover&width=50&height=30", 400, 300, 50, 30, "image/png", "Png" },
        { "fit=cover&width=50&height=30", 90, 200, 50, 30, "image/png", "Png" },
        { "fit=fill&width=40&height=40", 400, 300, 40, 40, "image/png", "Png" },
        { "width=200&height=50", 400, 300, 67, 50, "image/png", "Png" },
        { "width=64&height=64&enlarge=true", 32, 16, 64, 32, "image/png", "Png" },
        { "", 1, 1, 1, 1, "image/png", "Png" },
        { "", 1000, 5, 100, 1, "image/png", "Png" },
        { "", 60, 40, 60, 40, "image/png", "Png" },
    };
    size_t n = sizeof cases / sizeof cases [0];
    char ids [16][H_ID_SIZE];
    //  Submit all first so the two resizers work in parallel.
    for (size_t i = 0; i < n; i++) {
        size_t size = 0;
        void *data = h_make_image ("png", cases [i].src_w, cases [i].src_h, false, &size);
        cr_assert_not_null (data);
        char path [256];
        snprintf (path, sizeof path, "/v1/images%s%s", *cases [i].query ? "?" : "",
                  cases [i].query);
        expect_upload_ok (s_port (0), path, data, size, "image/png", false, ids [i]);
        free (data);
    }
    for (size_t i = 0; i < n; i++) {
        json_decref (expect_job_ends (s_port (0), ids [i], "done"));
        h_response_t resp;
        s_download (s_port (0), "/v1/images", ids [i], &resp);
        s_expect_content_type (&resp, cases [i].type);
        int w = 0, h = 0;
        char loader [128] = "", why [512];
        cr_assert_eq (h_decode (resp.body, resp.body_size, &w, &h, loader, sizeof loader,
                                why, sizeof why), 0, "%s: %s", cases [i].query, why);
        cr_expect (strstr (loader, cases [i].loader), "%s: output decoded by %s",
                   cases [i].query, loader);
        if (cases [i].want_w)
            cr_expect (abs (w - cases [i].want_w) <= (strstr (cases [i].query, "fit=") ? 0 : 1)
                    && abs (h - cases [i].want_h) <= (strstr (cases [i].query, "fit=") ? 0 : 1),
                       "'%s' on %dx%d gave %dx%d, want %dx%d", cases [i].query,
                       cases [i].src_w, cases [i].src_h, w, h, cases [i].want_w, cases [i].want_h);
        else
            cr_expect_eq (h_check_thumb (resp.body, resp.body_size, cases [i].src_w,
                                         cases [i].src_h, 100, 100, NULL, NULL, why,
                                         sizeof why), 0, "%s: %s", cases [i].query, why);
        h_response_free (&resp);
    }
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  2. Legacy routes of the original system

Test (e2e_legacy, post_images_get_thumbnail, .init = s_setup_one, .fini = s_teardown,
      .timeout = 90)
{
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 300, 200, false, &size);
    cr_assert_not_null (jpeg);
    for (int multipart = 0; multipart < 2; multipart++) {
        char id [H_ID_SIZE];
        expect_upload_ok (s_port (0), "/images", jpeg, size, "image/jpeg", multipart, id);
        //  Poll the legacy thumbnail route itself until it gives the image.
        char path [128];
        snprintf (path, sizeof path, "/images/%s/thumbnail", id);
        long long deadline = h_now_ms () + S_JOB_MS;
        h_response_t resp = { 0 };
        while (true) {
            int rc = h_http (s_port (0), "GET", path, NULL, NULL, 0, &resp, 10000);
            cr_assert (rc == 0 && (resp.status == 200 || resp.status == 202),
                       "GET %s: %d %s", path, resp.status, resp.error);
            if (resp.status == 200 || h_now_ms () > deadline)
                break;
            char retry [32] = "";
            cr_expect_eq (h_header (&resp, "Retry-After", retry, sizeof retry), 0,
                          "202 from %s without Retry-After", path);
            h_response_free (&resp);
            usleep (25000);         //  poll interval, not an assertion
        }
        cr_assert_eq (resp.status, 200, "legacy thumbnail not ready within %d ms", S_JOB_MS);
        s_expect_content_type (&resp, "image/png");
        char why [512];
        cr_expect_eq (h_check_thumb (resp.body, resp.body_size, 300, 200, 100, 100, NULL, NULL,
                                     why, sizeof why), 0, "%s", why);
        h_response_free (&resp);
    }
    free (jpeg);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  3. Invariant 1: after 202 every frontend knows the id at once

Test (e2e_consistency, immediate_get_on_both_frontends, .init = s_setup_two,
      .fini = s_teardown, .timeout = 120)
{
    enum { UPLOADS = 50 };
    size_t size = 0;
    void *png = h_make_image ("png", 120, 80, false, &size);
    cr_assert_not_null (png);
    char ids [UPLOADS][H_ID_SIZE];
    int not_found = 0;
    for (int i = 0; i < UPLOADS; i++) {
        int mine = i % 2, other = 1 - mine;
        expect_upload_ok (s_port (mine), "/v1/images", png, size, "image/png", i % 4 < 2, ids [i]);
        char status_path [128], thumb_path [128];
        snprintf (status_path, sizeof status_path, "/v1/images/%.32s", ids [i]);
        snprintf (thumb_path, sizeof thumb_path, "/v1/images/%.32s/thumbnail", ids [i]);
        struct { int fe; const char *path; } gets [] = {
            { other, status_path }, { mine, status_path }, { other, thumb_path } };
        for (int k = 0; k < 3; k++) {
            h_response_t resp;
            int rc = h_http (s_port (gets [k].fe), "GET", gets [k].path, NULL, NULL, 0,
                             &resp, 10000);
            bool good = rc == 0 && (resp.status == 200 || (k == 2 && resp.status == 202));
            not_found += rc == 0 && resp.status == 404;
            cr_expect (good, "upload %d on frontend %d, GET %s on frontend %d: %d %s %.200s", i,
                       mine, gets [k].path, gets [k].fe, resp.status, resp.error,
                       resp.body ? resp.body : "");
            h_response_free (&resp);
        }
    }
    cr_expect_eq (not_found, 0, "%d immediate GETs answered 404", not_found);
    for (int i = 0; i < UPLOADS; i++)
        json_decref (expect_job_ends (s_port (i % 2), ids [i], "done"));
    free (png);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  4. Uploads are accepted while every resizer is busy (stopped)

Test (e2e_backpressure, accepts_while_resizers_stopped, .init = s_setup_one,
      .fini = s_teardown, .timeout = 120)
{
    enum { UPLOADS = 20 };
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_assert_eq (h_pause (s_cluster->resizer [i].pid), 0, "cannot SIGSTOP resizer %d", i);
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 640, 480, false, &size);
    cr_assert_not_null (jpeg);
    char ids [UPLOADS][H_ID_SIZE];
    long long slowest = 0;
    for (int i = 0; i < UPLOADS; i++) {
        long long t0 = h_now_ms ();
        expect_upload_ok (s_port (0), "/v1/images", jpeg, size, "image/jpeg", false, ids [i]);
        slowest = h_now_ms () - t0 > slowest ? h_now_ms () - t0 : slowest;
    }
    //  Nothing can progress while both resizers are stopped.
    for (int i = 0; i < UPLOADS; i++) {
        char path [128];
        snprintf (path, sizeof path, "/v1/images/%.32s", ids [i]);
        h_response_t resp;
        int rc = h_http (s_port (0), "GET", path, NULL, NULL, 0, &resp, 10000);
        json_t *root = rc == 0 ? h_json (&resp) : NULL;
        cr_expect (rc == 0 && resp.status == 200 && strcmp (h_json_status (root), "queued") == 0,
                   "upload %d while resizers are stopped: %d %.200s", i, resp.status,
                   resp.body ? resp.body : resp.error);
        json_decref (root);
        h_response_free (&resp);
    }
    long long resumed = h_now_ms ();
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_assert_eq (h_resume (s_cluster->resizer [i].pid), 0);
    for (int i = 0; i < UPLOADS; i++)
        json_decref (expect_job_ends (s_port (0), ids [i], "done"));
    fprintf (stderr, "e2e backpressure: %d uploads accepted with every resizer stopped "
             "(slowest upload %lld ms); all done %lld ms after SIGCONT\n", UPLOADS, slowest,
             h_now_ms () - resumed);
    free (jpeg);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  5. The corpus, when present

typedef struct {
    char path [256];                //  relative to the corpus dir
    int width, height;              //  stored pixels (before EXIF rotation)
    bool ok;                        //  expect ok (else reject)
} s_entry_t;

static int
s_read_manifest (const char *dir, s_entry_t *entries, int max)
{
    char file [512];
    snprintf (file, sizeof file, "%s/MANIFEST.tsv", dir);
    FILE *manifest = fopen (file, "r");
    if (!manifest)
        return -1;
    char line [2048];
    int n = 0;
    while (n < max && fgets (line, sizeof line, manifest)) {
        char *fields [7] = { 0 };
        char *save = NULL;
        int k = 0;
        for (char *f = strtok_r (line, "\t\n", &save); f && k < 7; f = strtok_r (NULL, "\t\n", &save))
            fields [k++] = f;
        if (k < 6 || strcmp (fields [0], "path") == 0)
            continue;
        snprintf (entries [n].path, sizeof entries [n].path, "%s", fields [0]);
        entries [n].width = atoi (fields [2]);
        entries [n].height = atoi (fields [3]);
        entries [n].ok = strcmp (fields [5], "ok") == 0;
        n++;
    }
    fclose (manifest);
    return n;
}

//  An `ok` file: done, a PNG inside 100x100 of the displayed aspect,
//  landscape when EXIF says the stored pixels are sideways.
static bool
s_corpus_ok (const s_entry_t *e, const void *data, size_t size, char *outcome, size_t osize)
{
    char id [H_ID_SIZE];
    h_response_t resp;
    int status = h_upload (s_port (0), "/v1/images", data, size, "application/octet-stream",
                           false, id, &resp);
    if (status != 202) {
        snprintf (outcome, osize, "upload refused: %d %s %.200s", status, resp.error,
                  resp.body ? resp.body : "");
        h_response_free (&resp);
        return false;
    }
    h_response_free (&resp);
    json_t *final = NULL;
    char why [512];
    if (h_job_wait (s_port (0), id, S_JOB_MS, &final, why, sizeof why) != 0
    ||  strcmp (h_json_status (final), "done") != 0) {
        char *text = final ? json_dumps (final, JSON_COMPACT) : NULL;
        snprintf (outcome, osize, "not done: %s", text ? text : why);
        free (text);
        json_decref (final);
        return false;
    }
    json_decref (final);
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    if (h_http (s_port (0), "GET", path, NULL, NULL, 0, &resp, 10000) != 0 || resp.status != 200) {
        snprintf (outcome, osize, "download: %d %s", resp.status, resp.error);
        h_response_free (&resp);
        return false;
    }
    int src_w = e->width, src_h = e->height, orientation = 1, w = 0, h = 0, sw, sh;
    if (h_image_info (data, size, &sw, &sh, &orientation) == 0 && orientation >= 5)
        src_w = e->height, src_h = e->width;
    bool good = h_check_thumb (resp.body, resp.body_size, src_w, src_h, 100, 100, &w, &h,
                               why, sizeof why) == 0;
    if (good && orientation == 6 && w <= h) {
        snprintf (why, sizeof why, "EXIF orientation 6 but the thumbnail %dx%d is not landscape",
                  w, h);
        good = false;
    }
    if (good)
        snprintf (outcome, osize, "done %dx%d%s", w, h,
                  orientation > 1 ? " (EXIF orientation applied)" : "");
    else
        snprintf (outcome, osize, "bad thumbnail: %s", why);
    h_response_free (&resp);
    return good;
}

//  A `reject` file: refused at upload with a 4xx error JSON, or failed
//  with a message.
static bool
s_corpus_reject (const void *data, size_t size, char *outcome, size_t osize)
{
    char id [H_ID_SIZE];
    h_response_t resp;
    int status = h_upload (s_port (0), "/v1/images", data, size, "application/octet-stream",
                           false, id, &resp);
    json_t *root = h_json (&resp);
    h_response_free (&resp);
    bool good = false;
    if (status >= 400 && status < 500) {
        json_t *error = json_object_get (root, "error");
        const char *code = json_string_value (json_object_get (error, "code"));
        const char *message = json_string_value (json_object_get (error, "message"));
        good = code && message && *message;
        snprintf (outcome, osize, "refused %d %s: %s", status, code ? code : "?",
                  message ? message : "(no error JSON)");
    }
    else
    if (status == 202) {
        json_t *final = NULL;
        char why [512];
        if (h_job_wait (s_port (0), id, S_JOB_MS, &final, why, sizeof why) != 0)
            snprintf (outcome, osize, "%s", why);
        else {
            json_t *error = json_object_get (final, "error");
            const char *code = json_string_value (json_object_get (error, "code"));
            const char *message = json_string_value (json_object_get (error, "message"));
            good = strcmp (h_json_status (final), "failed") == 0 && message && *message;
            snprintf (outcome, osize, "%s %s: %s", h_json_status (final), code ? code : "?",
                      message ? message : "(no message)");
        }
        json_decref (final);
    }
    else
        snprintf (outcome, osize, "upload answered %d", status);
    json_decref (root);
    return good;
}

static const char *
s_corpus_dir (void)
{
    const char *dir = getenv ("IMGP_CORPUS");
    return dir && *dir ? dir : IMGP_SOURCE_DIR "/../shared/corpus";
}

Test (e2e_corpus, every_file_in_the_manifest, .fini = s_teardown, .timeout = 900)
{
    const char *dir = s_corpus_dir ();
    static s_entry_t entries [256];
    int n = s_read_manifest (dir, entries, 256);
    if (n <= 0)
        cr_skip_test ("no corpus at %s (set IMGP_CORPUS): corpus checks NOT run", dir);
    s_start (2, 1, NULL, NULL);
    int failures = 0;
    long long total_ms = 0, slowest = 0;
    int done_count = 0;
    for (int i = 0; i < n; i++) {
        char file [4400], outcome [700];
        snprintf (file, sizeof file, "%.4096s/%.255s", dir, entries [i].path);
        size_t size = 0;
        void *data = h_read_file (file, &size);
        if (!data) {
            cr_expect_fail ("cannot read %s", file);
            failures++;
            continue;
        }
        long long t0 = h_now_ms ();
        bool good = entries [i].ok ? s_corpus_ok (&entries [i], data, size, outcome, sizeof outcome)
                                   : s_corpus_reject (data, size, outcome, sizeof outcome);
        long long ms = h_now_ms () - t0;
        if (entries [i].ok && good) {
            total_ms += ms;
            done_count++;
            slowest = ms > slowest ? ms : slowest;
        }
        fprintf (stderr, "corpus %-46s %-6s %s %6lld ms  %s\n", entries [i].path,
                 entries [i].ok ? "ok" : "reject", good ? "PASS" : "FAIL", ms, outcome);
        cr_expect (good, "%s (expect %s): %s", entries [i].path,
                   entries [i].ok ? "ok" : "reject", outcome);
        failures += good ? 0 : 1;
        free (data);
    }
    fprintf (stderr, "corpus: %d files, %d failures; %d done, upload-to-done mean %lld ms, "
             "slowest %lld ms (one at a time)\n", n, failures, done_count,
             done_count ? total_ms / done_count : 0, slowest);

    //  Throughput: every ok file at once, both resizers busy.
    char ids [256][H_ID_SIZE];
    int submitted = 0;
    long long t0 = h_now_ms ();
    for (int i = 0; i < n; i++) {
        if (!entries [i].ok)
            continue;
        char file [4400];
        snprintf (file, sizeof file, "%.4096s/%.255s", dir, entries [i].path);
        size_t size = 0;
        void *data = h_read_file (file, &size);
        if (data && h_upload (s_port (0), "/v1/images", data, size, "application/octet-stream",
                              false, ids [submitted], NULL) == 202)
            submitted++;
        free (data);
    }
    int batch_done = 0;
    for (int i = 0; i < submitted; i++) {
        json_t *final = NULL;
        char why [512];
        if (h_job_wait (s_port (0), ids [i], S_JOB_MS * 3, &final, why, sizeof why) == 0
        &&  strcmp (h_json_status (final), "done") == 0)
            batch_done++;
        json_decref (final);
    }
    long long batch_ms = h_now_ms () - t0;
    fprintf (stderr, "corpus batch: %d of %d ok files done in %lld ms (%.1f images/s, "
             "2 resizers)\n", batch_done, submitted, batch_ms,
             batch_ms ? batch_done * 1000.0 / batch_ms : 0.0);
    cr_expect_eq (batch_done, submitted, "batch: only %d of %d done", batch_done, submitted);

    //  The system still serves a good upload afterwards.
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 320, 240, false, &size);
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (0), "/v1/images", jpeg, size, "image/jpeg", false, id);
    json_decref (expect_job_ends (s_port (0), id, "done"));
    free (jpeg);
    cr_assert_eq (failures, 0, "%d corpus files did not meet their manifest line", failures);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  6. The command-line client

//  Run the client, stdout to `out`, stderr to `err`; exit status or -1.
static int
s_run_client (char *const argv [], const char *out, const char *err)
{
    pid_t pid = h_spawn (argv, err, out);
    cr_assert (pid > 0, "cannot start %s", argv [0]);
    int status = 0;
    if (h_wait_exit (pid, 60000, &status) != 0) {
        h_stop (pid, 1000);
        return -1;
    }
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

Test (e2e_cli, submit_status_get, .init = s_setup_one, .fini = s_teardown, .timeout = 120)
{
    char input [400], out [400], err [400], thumb [400];
    snprintf (input, sizeof input, "%s/input.jpg", s_cluster->dir);
    snprintf (out, sizeof out, "%s/cli.out", s_cluster->dir);
    snprintf (err, sizeof err, "%s/cli.err", s_cluster->dir);
    snprintf (thumb, sizeof thumb, "%s/thumb.webp", s_cluster->dir);
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 400, 250, false, &size);
    cr_assert_not_null (jpeg);
    FILE *file = fopen (input, "wb");
    cr_assert (file && fwrite (jpeg, 1, size, file) == size && fclose (file) == 0);

    char *url = (char *) h_cluster_url (s_cluster, 0);
    char *submit [] = { H_CLIENT_BIN, "--url", url, "submit", input, "--format", "webp",
                        "--width", "80", NULL };
    cr_assert_eq (s_run_client (submit, out, err), 0, "imgpipe submit failed (see %s)", err);
    size_t id_size = 0;
    char *id = h_read_file (out, &id_size);
    cr_assert (id && id_size == S_ID_LEN + 1 && id [S_ID_LEN] == '\n',
               "submit printed '%s', want an id and a newline", id ? id : "");
    id [S_ID_LEN] = 0;

    char *get [] = { H_CLIENT_BIN, "--url", url, "get", id, "-o", thumb, "--wait-s", "30", NULL };
    cr_assert_eq (s_run_client (get, out, err), 0, "imgpipe get failed (see %s)", err);
    size_t thumb_size = 0;
    void *bytes = h_read_file (thumb, &thumb_size);
    cr_assert_not_null (bytes, "imgpipe get wrote no %s", thumb);
    int w = 0, h = 0;
    char loader [128] = "", why [512];
    cr_assert_eq (h_decode (bytes, thumb_size, &w, &h, loader, sizeof loader, why,
                            sizeof why), 0, "%s", why);
    cr_expect (strstr (loader, "Webp") && w == 80 && h == 50, "got %s %dx%d, want webp 80x50",
               loader, w, h);
    free (bytes);

    //  status, with the URL from the environment this time.
    setenv ("IMGP_URL", url, 1);
    char *status [] = { H_CLIENT_BIN, "status", id, NULL };
    cr_assert_eq (s_run_client (status, out, err), 0, "imgpipe status failed (see %s)", err);
    size_t json_size = 0;
    char *json = h_read_file (out, &json_size);
    json_t *root = json ? json_loads (json, 0, NULL) : NULL;
    cr_expect_str_eq (h_json_status (root), "done", "imgpipe status printed: %s", json);
    json_decref (root);
    free (json);

    //  A failed job: get exits non-zero with the server's message.
    FILE *cut = fopen (input, "wb");
    cr_assert (cut && fwrite (jpeg, 1, size / 2, cut) == size / 2 && fclose (cut) == 0);
    char *submit_cut [] = { H_CLIENT_BIN, "submit", input, NULL };
    cr_assert_eq (s_run_client (submit_cut, out, err), 0);
    free (id);
    id = h_read_file (out, &id_size);
    cr_assert (id && id_size == S_ID_LEN + 1);
    id [S_ID_LEN] = 0;
    char *get_cut [] = { H_CLIENT_BIN, "get", id, "-o", thumb, "--wait-s", "30", NULL };
    unlink (err);
    cr_expect_eq (s_run_client (get_cut, out, err), 1, "get of a failed job should exit 1");
    size_t err_size = 0;
    char *text = h_read_file (err, &err_size);
    cr_expect (text && strstr (text, "failed") && err_size > 20,
               "stderr of get on a failed job: '%s'", text ? text : "");
    fprintf (stderr, "e2e cli: failed job -> %s", text ? text : "(nothing)\n");
    free (text);

    //  Refused upload and bad usage.
    FILE *txt = fopen (input, "wb");
    cr_assert (txt && fputs ("hello, not an image\n", txt) >= 0 && fclose (txt) == 0);
    char *submit_txt [] = { H_CLIENT_BIN, "submit", input, NULL };
    cr_expect_eq (s_run_client (submit_txt, out, err), 1, "text upload should exit 1");
    char *usage [] = { H_CLIENT_BIN, "get", "not-an-id", "-o", thumb, NULL };
    cr_expect_eq (s_run_client (usage, out, err), 2, "bad id should exit 2");
    char *version [] = { H_CLIENT_BIN, "--version", NULL };
    cr_expect_eq (s_run_client (version, out, err), 0, "--version should exit 0");
    unsetenv ("IMGP_URL");
    free (id);
    free (jpeg);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  7. Every program exits 0 on SIGTERM

Test (e2e_shutdown, sigterm_exits_zero, .init = s_setup_two, .fini = s_teardown,
      .timeout = 90)
{
    s_one_job (1, 0);
    char report [2048];
    long long t0 = h_now_ms ();
    int bad = h_cluster_stop_all (s_cluster, 10000, report, sizeof report);
    fprintf (stderr, "e2e shutdown: %lld ms: %s\n", h_now_ms () - t0, report);
    cr_assert_eq (bad, 0, "%d processes did not exit 0 within 10 s on SIGTERM: %s", bad, report);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  8. Resizers run at a lower CPU priority, every thread of them

//  Nice value and scheduling policy of thread `tid` of `pid`, from
//  /proc/PID/task/TID/stat (fields 19 and 41). Returns 0 or -1.
static int
s_thread_sched (pid_t pid, const char *tid, int *nice, int *policy)
{
    char path [300], line [1024];
    snprintf (path, sizeof path, "/proc/%d/task/%s/stat", (int) pid, tid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    char *text = fgets (line, sizeof line, file);
    fclose (file);
    char *field = text ? strrchr (text, ')') : NULL;     //  the name may hold spaces
    if (!field)
        return -1;
    //  Field 3 (state) follows ") "; field N is token N - 3.
    int n = 3;
    for (char *tok = strtok (field + 1, " "); tok; tok = strtok (NULL, " "), n++) {
        if (n == 19)
            *nice = atoi (tok);
        if (n == 41) {
            *policy = atoi (tok);
            return 0;
        }
    }
    return -1;
}

//  Check every thread of `pid` has `nice` and `policy`; how many it has.
static int
s_expect_threads (pid_t pid, const char *name, int nice, int policy)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/task", (int) pid);
    DIR *dir = opendir (path);
    cr_assert_not_null (dir, "%s: %s", path, strerror (errno));
    int threads = 0;
    for (struct dirent *entry; (entry = readdir (dir)) != NULL;) {
        int got_nice = -100, got_policy = -1;
        if (entry->d_name [0] == '.' || s_thread_sched (pid, entry->d_name, &got_nice,
                                                         &got_policy) != 0)
            continue;
        threads++;
        cr_expect (got_nice == nice && got_policy == policy,
                   "%s thread %s: nice %d policy %d, want nice %d policy %d", name,
                   entry->d_name, got_nice, got_policy, nice, policy);
    }
    closedir (dir);
    return threads;
}

Test (e2e_priority, resizers_are_nice_10_batch_in_every_thread, .init = s_setup_one,
      .fini = s_teardown, .timeout = 60)
{
    s_one_job (0, 0);                   //  so libvips has made its worker threads
    errno = 0;
    int own = getpriority (PRIO_PROCESS, 0);
    cr_assert_eq (errno, 0);
    int want = own > 10 ? own : 10;     //  a resizer only ever lowers its priority
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_expect_geq (s_expect_threads (s_cluster->resizer [i].pid, "resizer", want,
                                         SCHED_BATCH), 3, "a resizer has czmq's and libvips' threads too");
    //  The frontend and broker keep the priority they were started with.
    s_expect_threads (s_cluster->frontend [0].pid, "frontend", own, sched_getscheduler (0));
    s_expect_threads (s_cluster->broker.pid, "broker", own, sched_getscheduler (0));
    h_cluster_pass (s_cluster);
}

/*  test_badinput — bad input end to end: every kind of upload, image and
    id that issue 3 lists, sent to the real broker, resizers and frontend
    on loopback, each answered with the right status and a JSON error
    that says what was wrong, and none of it harming the next good job.

    Why: the unit suites show each module refusing its share; only the
    real processes show the refusal happens where it should (413 before
    the body, 415 before a job exists, too_many_pixels before decoding),
    that a lying or stalled client frees its thread, and that the resizer
    still blocks a loader when a frontend lets the file through.

    Never: sleep as an assertion; every wait has a deadline. Requests an
    honest client cannot send go through h_raw_send.
*/
#include "expect.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <vips/vips.h>

#define S_SMALL_LIMIT "2000000"     //  --max-upload-bytes of the upload tests
#define S_STALL_TIMEOUT "1000"      //  --head-timeout-ms of the stall tests
#define S_HTTP_MS 20000             //  deadline of one exchange
#define S_HEAD 512                  //  room for a request head

static h_cluster_t *s_cluster;

static void
s_start (const h_cluster_opts_t *opts)
{
    s_cluster = h_cluster_new (opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void
s_setup_small_uploads (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 1, .frontends = 1,
        .frontend_extra = { "--max-upload-bytes", S_SMALL_LIMIT, NULL } });
}

//  Two HTTP threads and a short read timeout: a stalled client holding a
//  thread would be seen at once, and the stall ends within seconds.
static void
s_setup_two_threads (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 1, .frontends = 1,
        .frontend_extra = { "--threads", "2", "--head-timeout-ms", S_STALL_TIMEOUT,
                            "--max-upload-bytes", S_SMALL_LIMIT, NULL } });
}

static void
s_setup_default (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 2, .frontends = 1 });
}

//  The frontend lets SVG, PDF and ImageMagick files through; the resizers
//  keep their default allow-list, so they must refuse them.
static void
s_setup_frontend_allows_all (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 1, .frontends = 1,
        .frontend_extra = { "--allow-loaders", "svg,pdf,magick", NULL } });
}

//  An operator turned SVG on by name, on both sides.
static void
s_setup_svg_allowed (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 1, .frontends = 1,
        .frontend_extra = { "--allow-loaders", "svg", NULL },
        .resizer_extra = { "--allow-loaders", "svg", NULL } });
}

static void
s_setup_small_pixel_limit (void)
{
    s_start (&(h_cluster_opts_t) { .resizers = 1, .frontends = 1,
        .resizer_extra = { "--max-pixels", "1000000", NULL } });
}

static void s_teardown (void) { h_cluster_destroy (&s_cluster); }

static int
s_port (void)
{
    return s_cluster->http_ports [0];
}

//  ---------------------------------------------------------------------------
//  Helpers

//  Jobs the broker holds: one record per job in the spool.
static int
s_jobs (void)
{
    return h_spool_count (s_cluster, ".json");
}

//  The head of a POST /v1/images of `type`, with the length headers
//  (or others) that `format` makes, into head[S_HEAD].
static const char *
s_head (char *head, const char *type, const char *format, ...)
{
    int used = snprintf (head, S_HEAD, "POST /v1/images HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: %s\r\n", type);
    va_list args;
    va_start (args, format);
    used += vsnprintf (head + used, S_HEAD - (size_t) used, format, args);
    va_end (args);
    snprintf (head + used, S_HEAD - (size_t) used, "\r\n");
    return head;
}

//  Upload and require `want` with an error JSON of `code` (NULL: any).
static void
s_upload_refused (const char *what, const char *path, const void *data, size_t size,
                  const char *type, bool multipart, int want, const char *code)
{
    char context [160];
    snprintf (context, sizeof context, "%s (%s)", what, multipart ? "multipart" : "raw");
    h_response_t resp;
    int status = h_upload (s_port (), path, data, size, type, multipart, NULL, &resp);
    cr_expect_eq (status, want, "%s: want %d, got %d %s %.300s", context, want, status,
                  resp.error, resp.body ? resp.body : "");
    if (status)
        expect_error_json (&resp, context, code);
    h_response_free (&resp);
}

//  A request from `head` and `body` as given; require `want` with an
//  error JSON of `code`.
static void
s_raw_refused (const char *what, const char *head, const void *body, size_t size, int want,
               const char *code)
{
    h_response_t resp;
    int fd = h_raw_send (s_port (), head, body, size, &resp, S_HTTP_MS);
    cr_assert (fd >= 0, "%s: %s", what, resp.error);
    int rc = h_raw_response (fd, &resp, S_HTTP_MS);
    cr_expect (rc == 0 && resp.status == want, "%s: want %d, got %d %s %.300s", what, want,
               resp.status, resp.error, resp.body ? resp.body : "");
    if (rc == 0)
        expect_error_json (&resp, what, code);
    fprintf (stderr, "badinput: %s -> %d %.200s\n", what, resp.status,
             resp.body ? resp.body : resp.error);
    h_response_free (&resp);
}

//  The system still serves: a good upload ends done.
static void
s_still_serving (void)
{
    size_t size = 0;
    void *png = h_make_image ("png", 64, 48, false, &size);
    cr_assert_not_null (png);
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (), "/v1/images", png, size, "image/png", false, id);
    json_decref (expect_job_ends (s_port (), id, "done"));
    free (png);
}

//  Upload that is accepted and must end failed with `code`; returns the
//  error message (static buffer) for the caller to check or print.
static const char *
s_ends_failed (const char *what, const void *data, size_t size, const char *code)
{
    static char message [512];
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (), "/v1/images", data, size, "application/octet-stream", false,
                      id);
    json_t *final = expect_job_ends (s_port (), id, "failed");
    json_t *error = json_object_get (final, "error");
    const char *got = json_string_value (json_object_get (error, "code"));
    const char *text = json_string_value (json_object_get (error, "message"));
    cr_expect (got && strcmp (got, code) == 0, "%s: failed with code %s, want %s", what,
               got ? got : "(none)", code);
    snprintf (message, sizeof message, "%s", text ? text : "");
    cr_expect (*message, "%s: failed without a message", what);
    json_decref (final);

    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    h_response_t resp;
    cr_assert_eq (h_http (s_port (), "GET", path, NULL, NULL, 0, &resp, S_HTTP_MS), 0);
    cr_expect_eq (resp.status, 422, "%s: thumbnail of a failed job: %d", what, resp.status);
    expect_error_json (&resp, what, code);
    h_response_free (&resp);
    fprintf (stderr, "badinput: %s -> failed %s: %s\n", what, code, message);
    return message;
}

//  Encode a libvips image by suffix (".png[palette]"); malloc'd bytes.
//  Consumes the image.
static void *
s_encode (VipsImage *image, const char *suffix, size_t *size)
{
    void *buf = NULL;
    int rc = image ? vips_image_write_to_buffer (image, suffix, &buf, size, NULL) : -1;
    cr_assert_eq (rc, 0, "cannot make a %s fixture: %s", suffix, vips_error_buffer ());
    g_object_unref (image);
    void *copy = malloc (*size);
    cr_assert_not_null (copy);
    memcpy (copy, buf, *size);
    g_free (buf);
    return copy;
}

//  The harness' noise image (RGB, or RGBA), decoded back for conversions.
static VipsImage *
s_noise (int w, int h, bool alpha)
{
    size_t size = 0;
    void *png = h_make_image ("png", w, h, alpha, &size);
    cr_assert_not_null (png);
    VipsImage *image = vips_image_new_from_buffer (png, size, "", NULL);
    cr_assert_not_null (image, "%s", vips_error_buffer ());
    VipsImage *copy = NULL;
    cr_assert_eq (vips_copy_file (image, &copy, NULL), 0);     //  own the pixels
    g_object_unref (image);
    free (png);
    return copy;
}

//  `image` in another colour space (consumes it).
static VipsImage *
s_colourspace (VipsImage *image, VipsInterpretation space)
{
    VipsImage *out = NULL;
    cr_assert_eq (vips_colourspace (image, &out, space, NULL), 0, "%s", vips_error_buffer ());
    g_object_unref (image);
    return out;
}

//  ---------------------------------------------------------------------------
//  1. Uploads

Test (badinput_upload, empty_missing_or_wrong_field, .init = s_setup_small_uploads,
      .fini = s_teardown, .timeout = 60)
{
    size_t size = 0;
    void *png = h_make_image ("png", 40, 30, false, &size);
    cr_assert_not_null (png);
    s_upload_refused ("empty raw body", "/v1/images", "", 0, "image/png", false, 400,
                      "bad_request");
    s_upload_refused ("empty img field", "/v1/images", "", 0, "image/png", true, 400,
                      "bad_request");

    size_t form_size = 0;
    char type [128];
    const char *fields [] = { "image", "file", "IMG", "" };
    for (size_t i = 0; i < sizeof fields / sizeof fields [0]; i++) {
        char *form = h_multipart (fields [i], "photo.png", "image/png", png, size, &form_size,
                                  type, sizeof type);
        char what [64];
        snprintf (what, sizeof what, "field '%s' instead of img", fields [i]);
        s_upload_refused (what, "/v1/images", form, form_size, type, false, 400, "bad_request");
        free (form);
    }
    //  A form with only a text field: no img at all.
    char *form = h_multipart ("comment", "", "text/plain", "hello", 5, &form_size, type,
                              sizeof type);
    s_upload_refused ("form without an img field", "/v1/images", form, form_size, type, false,
                      400, "bad_request");
    free (form);
    cr_expect_eq (s_jobs (), 0, "a refused upload became a job");
    s_still_serving ();
    free (png);
    h_cluster_pass (s_cluster);
}

Test (badinput_upload, non_images_and_disguised_files, .init = s_setup_small_uploads,
      .fini = s_teardown, .timeout = 60)
{
    char noise [4096];
    for (size_t i = 0; i < sizeof noise; i++)
        noise [i] = (char) ((i * 2654435761u) >> 13);
    const char html [] = "<!DOCTYPE html><html><script>alert(1)</script></html>";
    const char text [] = "just some words, not an image\n";
    const char php [] = "<?php system($_GET['c']); ?>";
    struct { const char *what, *data; size_t size; const char *type; } files [] = {
        { "text as text/plain", text, sizeof text - 1, "text/plain" },
        { "text as image/jpeg", text, sizeof text - 1, "image/jpeg" },
        { "html as image/png", html, sizeof html - 1, "image/png" },
        { "php as image/gif", php, sizeof php - 1, "image/gif" },
        { "random bytes", noise, sizeof noise, "application/octet-stream" },
    };
    for (size_t i = 0; i < sizeof files / sizeof files [0]; i++)
        for (int multipart = 0; multipart < 2; multipart++)
            s_upload_refused (files [i].what, "/v1/images", files [i].data, files [i].size,
                              files [i].type, multipart, 415, NULL);
    //  A body type that is no image at all is refused before sniffing.
    s_upload_refused ("application/json body", "/v1/images", "{}", 2, "application/json",
                      false, 415, "unsupported_media_type");
    cr_expect_eq (s_jobs (), 0, "a refused upload became a job");
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

Test (badinput_upload, truncated_files_end_failed, .init = s_setup_default,
      .fini = s_teardown, .timeout = 120)
{
    const char *formats [] = { "jpeg", "png", "gif", "webp" };
    for (size_t i = 0; i < sizeof formats / sizeof formats [0]; i++) {
        size_t size = 0;
        void *image = h_make_image (formats [i], 640, 480, false, &size);
        cr_assert_not_null (image);
        char what [64];
        snprintf (what, sizeof what, "%s cut to half of %zu bytes", formats [i], size);
        s_ends_failed (what, image, size / 2, "decode_error");
        free (image);
    }
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

Test (badinput_upload, over_the_limit_refused_before_the_body, .init = s_setup_small_uploads,
      .fini = s_teardown, .timeout = 60)
{
    //  Only the head is sent: the 413 must come without waiting for any
    //  of the 10 GB it announces.
    char head [S_HEAD];
    s_head (head, "image/jpeg", "Content-Length: 10000000000\r\n");
    s_raw_refused ("head announcing 10 GB, no body", head, NULL, 0, 413, "too_large");
    s_head (head, "multipart/form-data; boundary=b", "Content-Length: %d\r\n",
            atoi (S_SMALL_LIMIT) + 70000);
    s_raw_refused ("multipart head over the limit, no body", head, NULL, 0, 413, "too_large");

    //  Whole bodies over the limit, with a length and counted (chunked).
    size_t big_size = 3000000;
    char *big = calloc (1, big_size);
    cr_assert_not_null (big);
    memcpy (big, "\xff\xd8\xff\xe0", 4);
    for (int multipart = 0; multipart < 2; multipart++)
        s_upload_refused ("3 MB over a 2 MB limit", "/v1/images", big, big_size, "image/jpeg",
                          multipart, 413, "too_large");
    //  Chunked: no length to check first, so the bytes are counted.
    size_t chunked_size = big_size + 64;
    char *chunked = malloc (chunked_size);
    cr_assert_not_null (chunked);
    int prefix = snprintf (chunked, chunked_size, "%zx\r\n", big_size);
    memcpy (chunked + prefix, big, big_size);
    size_t used = (size_t) prefix + big_size;
    used += (size_t) snprintf (chunked + used, chunked_size - used, "\r\n0\r\n\r\n");
    s_raw_refused ("chunked 3 MB over a 2 MB limit",
                   s_head (head, "image/jpeg", "Transfer-Encoding: chunked\r\n"), chunked, used,
                   413, "too_large");
    free (chunked);
    free (big);
    cr_expect_eq (s_jobs (), 0, "an upload over the limit became a job");
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

//  A Content-Length that lies. Shorter than the body: the server can only
//  take the declared bytes (a cut image, which fails in the resizer); the
//  rest must not become a request or a job of its own. Longer than the
//  body: the server waits for bytes that never come, then gives up. Not a
//  number, negative, or twice with two values: refused.
Test (badinput_upload, lying_content_length, .init = s_setup_two_threads,
      .fini = s_teardown, .timeout = 120)
{
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 320, 240, false, &size);
    cr_assert_not_null (jpeg);
    char head [S_HEAD];

    //  Shorter: half the JPEG is the job, the other half follows on a
    //  kept-alive connection as garbage. The job failing (not done) shows
    //  only the declared bytes were taken.
    s_head (head, "image/jpeg", "Content-Length: %zu\r\n", size / 2);
    h_response_t resp;
    int fd = h_raw_send (s_port (), head, jpeg, size, &resp, S_HTTP_MS);
    cr_assert (fd >= 0, "%s", resp.error);
    cr_assert_eq (h_raw_response (fd, &resp, S_HTTP_MS), 0, "%s", resp.error);
    cr_assert_eq (resp.status, 202, "half of the declared body: %d %.300s", resp.status,
                  resp.body ? resp.body : "");
    json_t *root = h_json (&resp);
    const char *given = json_string_value (json_object_get (root, "id"));
    cr_assert (given && strlen (given) == H_ID_SIZE - 1, "202 without an id: %s", resp.body);
    char id [H_ID_SIZE];
    memcpy (id, given, H_ID_SIZE);
    json_decref (root);
    h_response_free (&resp);
    json_decref (expect_job_ends (s_port (), id, "failed"));

    //  Longer: a body half the declared size, then silence.
    s_head (head, "image/jpeg", "Content-Length: %zu\r\n", size * 2);
    s_raw_refused ("Content-Length twice the body", head, jpeg, size, 408, "request_timeout");

    struct { const char *length; int want; const char *code; } lies [] = {
        { "abc", 411, "length_required" }, { "-5", 411, "length_required" },
        { "12, 13", 400, "bad_request" }, { "+20", 400, "bad_request" },
        { "99999999999999999999999", 413, "too_large" },
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies [0]; i++) {
        s_head (head, "image/jpeg", "Content-Length: %s\r\n", lies [i].length);
        char what [96];
        snprintf (what, sizeof what, "Content-Length: %s", lies [i].length);
        s_raw_refused (what, head, jpeg, size, lies [i].want, lies [i].code);
    }
    s_head (head, "image/jpeg", "Content-Length: %zu\r\nContent-Length: %zu\r\n", size,
            size / 2);
    s_raw_refused ("two Content-Length headers that differ", head, jpeg, size, 400,
                   "bad_request");
    cr_expect_eq (s_jobs (), 1, "a lying upload became a job");
    s_still_serving ();
    free (jpeg);
    h_cluster_pass (s_cluster);
}

//  Both HTTP threads held by clients that send part of a body and stall:
//  the read timeout must end both, free the threads for the next client,
//  and leave no job behind.
Test (badinput_upload, stalled_uploads_free_their_threads, .init = s_setup_two_threads,
      .fini = s_teardown, .timeout = 120)
{
    size_t size = 0;
    void *png = h_make_image ("png", 200, 150, false, &size);
    cr_assert_not_null (png);
    char head [S_HEAD];
    s_head (head, "image/png", "Content-Length: %zu\r\n", size);
    size_t form_size = 0;
    char type [128];
    char *form = h_multipart ("img", "a.png", "image/png", png, size, &form_size, type,
                              sizeof type);
    char form_head [S_HEAD];
    s_head (form_head, type, "Content-Length: %zu\r\n", form_size);
    h_response_t stalled [2];
    int fds [2] = {
        h_raw_send (s_port (), head, png, size / 3, &stalled [0], S_HTTP_MS),
        h_raw_send (s_port (), form_head, form, form_size / 3, &stalled [1], S_HTTP_MS)
    };
    cr_assert (fds [0] >= 0 && fds [1] >= 0, "cannot start the stalled uploads");
    long long start = h_now_ms ();

    //  A third client, while both threads are held: served once they
    //  are freed.
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (), "/v1/images", png, size, "image/png", false, id);
    long long served = h_now_ms () - start;
    for (int i = 0; i < 2; i++) {
        int rc = h_raw_response (fds [i], &stalled [i], S_HTTP_MS);
        cr_expect (rc == 0 && stalled [i].status == 408, "stalled %s upload: want 408, got %d %s",
                   i ? "multipart" : "raw", stalled [i].status, stalled [i].error);
        if (rc == 0)
            expect_error_json (&stalled [i], "stalled upload", "request_timeout");
        fprintf (stderr, "badinput: stalled %s upload -> %d %s%.200s\n", i ? "multipart" : "raw",
                 stalled [i].status, stalled [i].error, stalled [i].body ? stalled [i].body : "");
        h_response_free (&stalled [i]);
    }
    json_decref (expect_job_ends (s_port (), id, "done"));
    cr_expect_eq (s_jobs (), 1, "a stalled upload became a job");
    fprintf (stderr, "badinput: with both threads stalled (read timeout %s ms) the third "
             "upload got its 202 after %lld ms\n", S_STALL_TIMEOUT, served);
    free (form);
    free (png);
    h_cluster_pass (s_cluster);
}

Test (badinput_upload, bad_option_values, .init = s_setup_small_uploads, .fini = s_teardown,
      .timeout = 60)
{
    size_t size = 0;
    void *png = h_make_image ("png", 40, 30, false, &size);
    cr_assert_not_null (png);
    struct { const char *query, *names; } bad [] = {
        { "width=-1", "width" }, { "width=99999", "width" }, { "width=0", "width" },
        { "width=abc", "width" }, { "width=", "width" }, { "width=1e3", "width" },
        { "height=-1", "height" }, { "format=bmp", "format" }, { "format=PNG%00", "format" },
        { "quality=abc", "quality" }, { "quality=101", "quality" }, { "quality=0", "quality" },
        { "fit=stretch", "fit" }, { "enlarge=maybe", "enlarge" }, { "colour=red", "unknown option" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char path [160];
        snprintf (path, sizeof path, "/v1/images?%s", bad [i].query);
        h_response_t resp;
        int status = h_upload (s_port (), path, png, size, "image/png", false, NULL, &resp);
        cr_expect_eq (status, 400, "POST %s: want 400, got %d %s", path, status, resp.error);
        expect_error_json (&resp, path, "bad_option");
        json_t *root = h_json (&resp);
        const char *message = json_string_value (
            json_object_get (json_object_get (root, "error"), "message"));
        cr_expect (message && strstr (message, bad [i].names),
                   "POST %s: the message does not name '%s': %s", path, bad [i].names,
                   message ? message : "(none)");
        json_decref (root);
        h_response_free (&resp);
    }
    cr_expect_eq (s_jobs (), 0, "an upload with a bad option became a job");
    s_still_serving ();
    free (png);
    h_cluster_pass (s_cluster);
}

//  Requests civetweb itself refuses before our handler runs: the same
//  JSON errors, and the connection closed.
Test (badinput_upload, malformed_requests, .init = s_setup_small_uploads, .fini = s_teardown,
      .timeout = 60)
{
    char big [20000];
    memset (big, 'a', sizeof big - 1);
    big [sizeof big - 1] = 0;
    char huge_head [sizeof big + 128];
    snprintf (huge_head, sizeof huge_head, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n",
              big);
    char head [S_HEAD];
    struct { const char *what, *head; int want; const char *code; } bad [] = {
        { "a request line that is no request", "GARBAGE\r\n\r\n", 400, "bad_request" },
        { "HTTP/9.9", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 505, "bad_request" },
        //  civetweb 1.15 cannot tell a head over its limit from a broken one.
        { "a 20 kB header", huge_head, 400, "bad_request" },
        { "Expect: 200-ok", s_head (head, "image/png", "Content-Length: 10\r\n"
                                   "Expect: 200-ok\r\n"), 417, "expectation_failed" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        s_raw_refused (bad [i].what, bad [i].head, NULL, 0, bad [i].want, bad [i].code);
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  2. Images

//  A decoded thumbnail: 8-bit sRGB with `bands`, inside 100x100.
static void
s_expect_thumb (const char *what, const char *id, int src_w, int src_h, int bands)
{
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    h_response_t resp;
    cr_assert_eq (h_http (s_port (), "GET", path, NULL, NULL, 0, &resp, S_HTTP_MS), 0);
    cr_assert_eq (resp.status, 200, "%s: thumbnail %d", what, resp.status);
    char why [256];
    int w = 0, h = 0;
    cr_expect_eq (h_check_thumb (resp.body, resp.body_size, src_w, src_h, 100, 100, &w, &h,
                                 why, sizeof why), 0, "%s: %s", what, why);
    VipsImage *thumb = vips_image_new_from_buffer (resp.body, resp.body_size, "", NULL);
    cr_assert_not_null (thumb, "%s: %s", what, vips_error_buffer ());
    cr_expect_eq (vips_image_get_format (thumb), VIPS_FORMAT_UCHAR, "%s: not 8-bit", what);
    cr_expect_eq (vips_image_get_interpretation (thumb), VIPS_INTERPRETATION_sRGB,
                  "%s: interpretation %d, not sRGB", what, vips_image_get_interpretation (thumb));
    cr_expect_eq (vips_image_get_bands (thumb), bands, "%s: %d bands, want %d", what,
                  vips_image_get_bands (thumb), bands);
    fprintf (stderr, "badinput: %s -> done %dx%d, %d bands\n", what, w, h,
             vips_image_get_bands (thumb));
    g_object_unref (thumb);
    h_response_free (&resp);
}

Test (badinput_images, colour_spaces_depths_and_alpha, .init = s_setup_default,
      .fini = s_teardown, .timeout = 120)
{
    h_vips_init ();
    struct { const char *what; VipsImage *image; const char *suffix; int bands; } shapes [] = {
        { "CMYK JPEG", s_colourspace (s_noise (300, 200, false), VIPS_INTERPRETATION_CMYK),
          ".jpg", 3 },
        { "16-bit RGB PNG", s_colourspace (s_noise (300, 200, false), VIPS_INTERPRETATION_RGB16),
          ".png", 3 },
        { "16-bit RGBA PNG", s_colourspace (s_noise (300, 200, true), VIPS_INTERPRETATION_RGB16),
          ".png", 4 },
        { "palette PNG", s_noise (300, 200, false), ".png[palette]", 3 },
        { "grey JPEG", s_colourspace (s_noise (300, 200, false), VIPS_INTERPRETATION_B_W),
          ".jpg", 3 },
        { "grey + alpha PNG", s_colourspace (s_noise (300, 200, true), VIPS_INTERPRETATION_B_W),
          ".png", 4 },
        { "RGBA PNG", s_noise (300, 200, true), ".png", 4 },
        { "16-bit grey TIFF", s_colourspace (s_noise (300, 200, false),
                                             VIPS_INTERPRETATION_GREY16), ".tif", 3 },
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes [0]; i++) {
        size_t size = 0;
        void *data = s_encode (shapes [i].image, shapes [i].suffix, &size);
        char id [H_ID_SIZE];
        expect_upload_ok (s_port (), "/v1/images", data, size, "application/octet-stream",
                          false, id);
        json_decref (expect_job_ends (s_port (), id, "done"));
        s_expect_thumb (shapes [i].what, id, 300, 200, shapes [i].bands);
        free (data);
    }
    h_cluster_pass (s_cluster);
}

//  Three flat frames, red, green, blue: the thumbnail is the first frame
//  (one frame high, red), whatever the output format.
Test (badinput_images, animated_gif_gives_its_first_frame, .init = s_setup_default,
      .fini = s_teardown, .timeout = 120)
{
    h_vips_init ();
    VipsImage *frames [3] = { NULL, NULL, NULL }, *strip = NULL, *black = NULL;
    const double colours [3][3] = { { 220, 20, 20 }, { 20, 220, 20 }, { 20, 20, 220 } };
    const double zero [3] = { 0, 0, 0 };
    cr_assert_eq (vips_black (&black, 90, 60, "bands", 3, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq (vips_linear (black, &frames [i], zero, colours [i], 3,
                                   "uchar", TRUE, NULL), 0);
    cr_assert_eq (vips_arrayjoin (frames, &strip, 3, "across", 1, NULL), 0);
    g_object_unref (black);
    for (int i = 0; i < 3; i++)
        g_object_unref (frames [i]);
    VipsImage *animation = NULL;
    cr_assert_eq (vips_copy (strip, &animation, "interpretation", VIPS_INTERPRETATION_sRGB,
                             NULL), 0);
    g_object_unref (strip);
    vips_image_set_int (animation, VIPS_META_PAGE_HEIGHT, 60);
    vips_image_set_int (animation, VIPS_META_N_PAGES, 3);
    size_t size = 0;
    void *gif = s_encode (animation, ".gif", &size);

    const char *formats [] = { "png", "webp", "jpeg" };
    for (size_t i = 0; i < sizeof formats / sizeof formats [0]; i++) {
        char path [64], id [H_ID_SIZE];
        snprintf (path, sizeof path, "/v1/images?format=%s", formats [i]);
        expect_upload_ok (s_port (), path, gif, size, "image/gif", false, id);
        json_decref (expect_job_ends (s_port (), id, "done"));
        snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
        h_response_t resp;
        cr_assert_eq (h_http (s_port (), "GET", path, NULL, NULL, 0, &resp, S_HTTP_MS), 0);
        VipsImage *thumb = vips_image_new_from_buffer (resp.body, resp.body_size, "", NULL);
        cr_assert_not_null (thumb, "%s thumbnail: %s", formats [i], vips_error_buffer ());
        double *pixel = NULL;
        int n = 0;
        cr_assert_eq (vips_getpoint (thumb, &pixel, &n, 45, 30, NULL), 0);
        cr_expect (vips_image_get_width (thumb) == 90 && vips_image_get_height (thumb) == 60
                   && vips_image_get_n_pages (thumb) == 1,
                   "%s: %dx%d in %d pages, want one 90x60 frame", formats [i],
                   vips_image_get_width (thumb), vips_image_get_height (thumb),
                   vips_image_get_n_pages (thumb));
        cr_expect (n >= 3 && pixel [0] > 180 && pixel [1] < 60 && pixel [2] < 60,
                   "%s: centre pixel %.0f,%.0f,%.0f is not the first frame's red", formats [i],
                   pixel [0], pixel [1], pixel [2]);
        fprintf (stderr, "badinput: 3-frame GIF to %s -> %dx%d, centre %.0f,%.0f,%.0f\n",
                 formats [i], vips_image_get_width (thumb), vips_image_get_height (thumb),
                 pixel [0], pixel [1], pixel [2]);
        g_free (pixel);
        g_object_unref (thumb);
        h_response_free (&resp);
    }
    free (gif);
    h_cluster_pass (s_cluster);
}

//  A JPEG whose frame header is patched to claim 20000x20000.
static void *
s_jpeg_claiming_20000_squared (size_t *size)
{
    uint8_t *b = h_make_image ("jpeg", 64, 64, false, size);
    cr_assert_not_null (b);
    for (size_t i = 2; i + 9 < *size && b [i] == 0xff; i += 2 + ((b [i + 2] << 8) | b [i + 3]))
        if (b [i + 1] == 0xc0 || b [i + 1] == 0xc2) {
            b [i + 5] = b [i + 7] = 20000 >> 8;
            b [i + 6] = b [i + 8] = 20000 & 0xff;
            return b;
        }
    cr_assert_fail ("no frame header in the JPEG fixture");
    return NULL;
}

//  Decompression bombs: small files whose headers declare more pixels
//  than --max-pixels (default 100 MP), refused from the header.
Test (badinput_images, bombs_refused_from_the_header, .init = s_setup_default,
      .fini = s_teardown, .timeout = 120)
{
    h_vips_init ();
    VipsImage *black = NULL;
    cr_assert_eq (vips_black (&black, 12000, 10000, NULL), 0);
    size_t png_size = 0;
    void *png = s_encode (black, ".png[compression=9]", &png_size);
    const uint8_t gif [] = {
        'G', 'I', 'F', '8', '9', 'a', 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0,
        0, 0, 0, 255, 255, 255,
        0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0,
        2, 2, 0x4c, 0x01, 0x00, 0x3b
    };
    size_t jpeg_size = 0;
    void *jpeg = s_jpeg_claiming_20000_squared (&jpeg_size);
    struct { const char *what, *dims; const void *data; size_t size; } bombs [] = {
        { "12000x10000 PNG", "12000x10000", png, png_size },
        { "GIF claiming 65535x65535", "65535x65535", gif, sizeof gif },
        { "JPEG claiming 20000x20000", "20000x20000", jpeg, jpeg_size },
    };
    for (size_t i = 0; i < sizeof bombs / sizeof bombs [0]; i++) {
        char what [96];
        snprintf (what, sizeof what, "%s (%zu bytes)", bombs [i].what, bombs [i].size);
        const char *message = s_ends_failed (what, bombs [i].data, bombs [i].size,
                                             "too_many_pixels");
        cr_expect (strstr (message, bombs [i].dims), "%s: message does not give %s: %s",
                   what, bombs [i].dims, message);
    }
    free (png);
    free (jpeg);
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

//  --max-pixels is the limit: at it done, one row over it refused.
Test (badinput_images, max_pixels_is_the_limit, .init = s_setup_small_pixel_limit,
      .fini = s_teardown, .timeout = 60)
{
    size_t size = 0;
    void *at = h_make_image ("png", 1000, 1000, false, &size);
    cr_assert_not_null (at);
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (), "/v1/images", at, size, "image/png", false, id);
    json_decref (expect_job_ends (s_port (), id, "done"));
    void *over = h_make_image ("png", 1000, 1001, false, &size);
    cr_assert_not_null (over);
    s_ends_failed ("1000x1001 PNG with --max-pixels 1000000", over, size, "too_many_pixels");
    free (at);
    free (over);
    h_cluster_pass (s_cluster);
}

//  Files only libvips' blocked loaders would open.
typedef struct {
    const char *what;
    void *data;
    size_t size;
} s_blocked_t;

#define S_BLOCKED 6

static const char s_svg [] = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
    "width=\"120\" height=\"80\"><rect width=\"120\" height=\"80\" fill=\"#c33\"/></svg>\n";
static const char s_pdf [] = "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    "2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 120 80]>>endobj\n"
    "trailer<</Root 1 0 R>>\n%%EOF\n";

static void
s_blocked_files (s_blocked_t *files)
{
    h_vips_init ();
    files [0] = (s_blocked_t) { "SVG", strdup (s_svg), sizeof s_svg - 1 };
    files [1] = (s_blocked_t) { "PDF", strdup (s_pdf), sizeof s_pdf - 1 };
    const char *suffixes [] = { ".bmp", ".ppm", ".hdr", ".jp2" };
    const char *names [] = { "BMP (ImageMagick)", "PPM", "Radiance HDR", "JPEG 2000" };
    for (int i = 0; i < 4; i++) {
        files [2 + i].what = names [i];
        files [2 + i].data = s_encode (s_noise (40, 30, false), suffixes [i], &files [2 + i].size);
    }
}

static void
s_blocked_free (s_blocked_t *files)
{
    for (int i = 0; i < S_BLOCKED; i++)
        free (files [i].data);
}

Test (badinput_images, blocked_loaders_refused_at_upload, .init = s_setup_default,
      .fini = s_teardown, .timeout = 60)
{
    s_blocked_t files [S_BLOCKED];
    s_blocked_files (files);
    for (int i = 0; i < S_BLOCKED; i++)
        for (int multipart = 0; multipart < 2; multipart++)
            s_upload_refused (files [i].what, "/v1/images", files [i].data, files [i].size,
                              "application/octet-stream", multipart, 415, "unsupported_format");
    cr_expect_eq (s_jobs (), 0, "a blocked format became a job");
    s_blocked_free (files);
    h_cluster_pass (s_cluster);
}

//  Defence in depth: with a frontend that lets every format through, the
//  resizers' own allow-list still refuses what their operator did not
//  turn on.
Test (badinput_images, resizers_block_what_a_frontend_lets_through,
      .init = s_setup_frontend_allows_all, .fini = s_teardown, .timeout = 120)
{
    s_blocked_t files [S_BLOCKED];
    s_blocked_files (files);
    for (int i = 0; i < S_BLOCKED; i++)
        s_ends_failed (files [i].what, files [i].data, files [i].size, "unsupported_format");
    s_blocked_free (files);
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

//  Turned on by name: SVG works, everything else stays refused.
Test (badinput_images, svg_only_when_allowed_by_name, .init = s_setup_svg_allowed,
      .fini = s_teardown, .timeout = 120)
{
    s_blocked_t files [S_BLOCKED];
    s_blocked_files (files);
    char id [H_ID_SIZE];
    expect_upload_ok (s_port (), "/v1/images", files [0].data, files [0].size, "image/svg+xml",
                      false, id);
    json_decref (expect_job_ends (s_port (), id, "done"));
    s_expect_thumb ("SVG with --allow-loaders svg", id, 120, 80, 4);
    for (int i = 1; i < S_BLOCKED; i++)
        s_upload_refused (files [i].what, "/v1/images", files [i].data, files [i].size,
                          "application/octet-stream", false, 415, "unsupported_format");
    s_blocked_free (files);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  3. Ids

//  A file where a path-traversal id would land if an id ever reached a
//  path unchecked: beside the data directory, with a spool-like name.
static void
s_plant (const char *dir, const char *name, char *path, size_t path_size, struct stat *st)
{
    snprintf (path, path_size, "%s/%s", dir, name);
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fputs ("SECRET-OUTSIDE-THE-SPOOL\n", file);
    fclose (file);
    cr_assert_eq (stat (path, st), 0);
}

Test (badinput_ids, malformed_traversal_and_unknown, .init = s_setup_default,
      .fini = s_teardown, .timeout = 60)
{
    char secret [600], secret_out [600];
    struct stat before, before_out, after;
    s_plant (s_cluster->dir, "secret.json", secret, sizeof secret, &before);
    s_plant (s_cluster->dir, "secret.out", secret_out, sizeof secret_out, &before_out);
    char long_id [1200];
    memset (long_id, 'a', sizeof long_id - 1);
    long_id [sizeof long_id - 1] = 0;
    const char *ids [] = {
        "not-an-id", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0", long_id, "../secret", "..%2F..%2Fsecret",
        "%2e%2e%2f%2e%2e%2fsecret", "%2e%2e", "..", ".", "0123456789abcdef%00123456789abcdef",
        "0123456789abcdef0123456789abcde%66", "../../../../etc/passwd", "%2E%2E%5Csecret",
    };
    const char *forms [] = { "/v1/images/%s", "/v1/images/%s/thumbnail", "/images/%s/thumbnail" };
    int probes = 0;
    for (size_t i = 0; i < sizeof ids / sizeof ids [0]; i++)
        for (size_t f = 0; f < sizeof forms / sizeof forms [0]; f++) {
            char path [1400];
            snprintf (path, sizeof path, forms [f], ids [i]);
            h_response_t resp;
            int rc = h_http (s_port (), "GET", path, NULL, NULL, 0, &resp, S_HTTP_MS);
            cr_expect (rc == 0 && (resp.status == 400 || resp.status == 404),
                       "GET %.80s: want 400 or 404, got %d %s", path, resp.status, resp.error);
            if (rc == 0) {
                expect_error_json (&resp, path, NULL);
                cr_expect (!memmem (resp.body, resp.body_size, "SECRET", 6),
                           "GET %.80s: answered with the planted file", path);
            }
            h_response_free (&resp);
            probes++;
        }
    //  A well-formed id nobody uploaded: 404 on every route.
    for (size_t f = 0; f < sizeof forms / sizeof forms [0]; f++) {
        char path [128];
        snprintf (path, sizeof path, forms [f], "0123456789abcdef0123456789abcdef");
        h_response_t resp;
        cr_assert_eq (h_http (s_port (), "GET", path, NULL, NULL, 0, &resp, S_HTTP_MS), 0);
        cr_expect_eq (resp.status, 404, "GET %s: want 404, got %d", path, resp.status);
        expect_error_json (&resp, path, "not_found");
        h_response_free (&resp);
    }
    //  Nothing outside the data directory was touched.
    cr_assert_eq (stat (secret, &after), 0, "the planted file is gone");
    cr_expect (after.st_mtime == before.st_mtime && after.st_size == before.st_size);
    cr_assert_eq (stat (secret_out, &after), 0, "the planted .out file is gone");
    cr_expect (after.st_mtime == before_out.st_mtime && after.st_size == before_out.st_size);
    cr_expect_eq (h_log_count (s_cluster->broker.log, "secret"), 0,
                  "a traversal id reached the broker");
    fprintf (stderr, "badinput: %d malformed-id probes, all 400/404, planted files untouched\n",
             probes);
    s_still_serving ();
    h_cluster_pass (s_cluster);
}

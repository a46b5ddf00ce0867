/*  test_renditions — several sizes from one upload, and format=auto,
    through the real programs: broker, resizers and frontend on loopback.

    What a client sees: the status JSON lists every thumbnail (size, its
    pixels, format, bytes and URL); each URL serves that size with the
    right dimensions; an unknown size is 404 no_such_size and a malformed
    one 400 naming the option; a format=auto job answers in the format the
    request's Accept prefers (AVIF, then WebP, then the family: JPEG for a
    photo, PNG with alpha), made on first request and kept, with
    Vary: Accept; and a broker killed with SIGKILL after the jobs were done
    still serves every rendition, the variants included, byte for byte.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "harness.h"

#define S_HTTP_MS 30000         //  one thumbnail request (may wait for a variant: 10 s)

static h_cluster_t *s_cluster;

static void
s_setup (void)
{
    h_cluster_opts_t opts = { .resizers = 2, .frontends = 1 };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void s_teardown (void) { h_cluster_destroy (&s_cluster); }

static int
s_port (void)
{
    return s_cluster->http_ports [0];
}

//  GET `path` with extra `headers` (may be NULL); require `want`.
static void
s_get (const char *path, const char *headers, int want, h_response_t *resp)
{
    int rc = h_http_with (s_port (), "GET", path, headers, NULL, NULL, 0, resp, S_HTTP_MS);
    cr_assert (rc == 0 && resp->status == want, "GET %s [%s]: %d (want %d) %s %.300s", path,
               headers ? headers : "", resp->status, want, resp->error,
               resp->body ? resp->body : "");
}

static void
s_expect_header (const h_response_t *resp, const char *name, const char *want,
                 const char *context)
{
    char value [256] = "";
    h_header (resp, name, value, sizeof value);
    cr_expect (strncmp (value, want, strlen (want)) == 0, "%s: %s '%s', want '%s'", context,
               name, value, want);
}

//  Upload a w x h image of `format` with `query`; wait until done.
static json_t *
s_job (const char *format, int w, int h, bool alpha, const char *query, char id [H_ID_SIZE])
{
    size_t size = 0;
    void *data = h_make_image (format, w, h, alpha, &size);
    cr_assert_not_null (data);
    char path [256], type [32];
    snprintf (path, sizeof path, "/v1/images?%s", query);
    snprintf (type, sizeof type, "image/%s", format);
    expect_upload_ok (s_port (), path, data, size, type, false, id);
    free (data);
    return expect_job_ends (s_port (), id, "done");
}

//  The thumbnails list of a status JSON, with `count` entries.
static json_t *
s_thumbnails (json_t *status, size_t count)
{
    json_t *list = json_object_get (status, "thumbnails");
    cr_assert (json_is_array (list), "no thumbnails list: %s",
               json_dumps (status, JSON_COMPACT));
    cr_assert_eq (json_array_size (list), count, "thumbnails: %s",
                  json_dumps (list, JSON_COMPACT));
    return list;
}

static const char *
s_str (json_t *obj, const char *key)
{
    const char *value = json_string_value (json_object_get (obj, key));
    return value ? value : "";
}

static long long
s_int (json_t *obj, const char *key)
{
    return json_integer_value (json_object_get (obj, key));
}

//  ---------------------------------------------------------------------------

Test (renditions, sizes_listed_and_each_downloadable, .init = s_setup, .fini = s_teardown,
      .timeout = 120)
{
    static const struct { int w, h; } boxes [] = { { 400, 300 }, { 100, 100 }, { 64, 32 } };
    char id [H_ID_SIZE];
    json_t *status = s_job ("jpeg", 800, 600, false, "sizes=400x300,100x100,64x32", id);
    json_t *list = s_thumbnails (status, 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *item = json_array_get (list, i);
        char size [32], url [128];
        snprintf (size, sizeof size, "%dx%d", boxes [i].w, boxes [i].h);
        snprintf (url, sizeof url, "/v1/images/%s/thumbnail?size=%s", id, size);
        cr_expect_str_eq (s_str (item, "size"), size);
        cr_expect_str_eq (s_str (item, "url"), url);
        cr_expect_str_eq (s_str (item, "format"), "png");

        h_response_t resp;
        s_get (url, NULL, 200, &resp);
        s_expect_header (&resp, "Content-Type", "image/png", url);
        int w = 0, h = 0;
        char why [512];
        cr_expect_eq (h_check_thumb (resp.body, resp.body_size, 800, 600, boxes [i].w,
                                     boxes [i].h, &w, &h, why, sizeof why), 0, "%s: %s", url,
                      why);
        cr_expect_eq (s_int (item, "width"), w, "%s width", url);
        cr_expect_eq (s_int (item, "height"), h, "%s height", url);
        cr_expect_eq ((size_t) s_int (item, "bytes"), resp.body_size, "%s bytes", url);
        fprintf (stderr, "renditions sizes: %s -> %dx%d png, %zu bytes\n", size, w, h,
                 resp.body_size);
        h_response_free (&resp);
    }
    //  `result` is the first size, for clients from before sizes.
    json_t *result = json_object_get (status, "result");
    cr_expect_eq (s_int (result, "width"), s_int (json_array_get (list, 0), "width"));
    cr_expect_eq (s_int (result, "bytes"), s_int (json_array_get (list, 0), "bytes"));

    //  No ?size: the first size.
    char path [128];
    h_response_t resp;
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    s_get (path, NULL, 200, &resp);
    cr_expect_eq ((size_t) s_int (json_array_get (list, 0), "bytes"), resp.body_size);
    h_response_free (&resp);

    //  A size the job was not asked for, and sizes that do not parse.
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail?size=50x50", id);
    s_get (path, NULL, 404, &resp);
    expect_error_json (&resp, path, "no_such_size");
    h_response_free (&resp);
    static const char *bad [] = { "400", "400x", "x300", "0x10", "4097x10", "40x30x2", "ax3",
                                  "-4x3", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        snprintf (path, sizeof path, "/v1/images/%s/thumbnail?size=%s", id, bad [i]);
        s_get (path, NULL, 400, &resp);
        expect_error_json (&resp, path, "bad_option");
        json_t *body = h_json (&resp);
        cr_expect_str_eq (s_str (json_object_get (body, "error"), "option"), "size", "%s", path);
        json_decref (body);
        h_response_free (&resp);
    }
    json_decref (status);
    h_cluster_pass (s_cluster);
}

//  GET the thumbnail of `size` with `accept`; require `want` as its type
//  and a thumbnail of a src_w x src_h image in that box. Its ETag goes to
//  `etag` (may be NULL; 64 bytes).
static void
s_expect_auto_etag (const char *id, const char *size, const char *accept, const char *want,
                    int src_w, int src_h, int box_w, int box_h, char *etag)
{
    char path [128], headers [160];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail?size=%s", id, size);
    snprintf (headers, sizeof headers, "Accept: %s\r\n", accept);
    h_response_t resp;
    long long start = h_now_ms ();
    s_get (path, headers, 200, &resp);
    char type [64] = "", cache [96] = "";
    h_header (&resp, "Content-Type", type, sizeof type);
    h_header (&resp, "Cache-Control", cache, sizeof cache);
    fprintf (stderr, "renditions auto: %s Accept '%s' -> %s, %zu bytes, %lld ms, "
             "Cache-Control '%s'\n", size, accept, type, resp.body_size, h_now_ms () - start,
             cache);
    char context [256];
    snprintf (context, sizeof context, "%s Accept: %s", path, accept);
    s_expect_header (&resp, "Content-Type", want, context);
    s_expect_header (&resp, "Vary", "Accept", context);
    char why [512];
    cr_expect_eq (h_check_thumb (resp.body, resp.body_size, src_w, src_h, box_w, box_h, NULL,
                                 NULL, why, sizeof why), 0, "%s: %s", context, why);
    if (etag && h_header (&resp, "ETag", etag, 64))
        etag [0] = '\0';
    h_response_free (&resp);
}

static void
s_expect_auto (const char *id, const char *size, const char *accept, const char *want,
               int src_w, int src_h, int box_w, int box_h)
{
    s_expect_auto_etag (id, size, accept, want, src_w, src_h, box_w, box_h, NULL);
}

Test (renditions, auto_negotiates_from_accept, .init = s_setup, .fini = s_teardown,
      .timeout = 180)
{
    char photo [H_ID_SIZE], alpha [H_ID_SIZE];
    json_decref (s_job ("jpeg", 640, 480, false, "format=auto&sizes=200x200,100x50", photo));
    json_decref (s_job ("png", 300, 200, true, "format=auto", alpha));

    //  No AVIF or WebP named: the family.
    char jpeg_tag [64], webp_tag [64], small_tag [64];
    s_expect_auto_etag (photo, "200x200", "*/*", "image/jpeg", 640, 480, 200, 200, jpeg_tag);
    s_expect_auto (photo, "200x200", "image/*", "image/jpeg", 640, 480, 200, 200);
    s_expect_auto (alpha, "100x100", "*/*", "image/png", 300, 200, 100, 100);
    //  Made on first request (the request waits for it), then kept.
    s_expect_auto_etag (photo, "200x200", "image/webp,*/*", "image/webp", 640, 480, 200, 200,
                        webp_tag);
    s_expect_auto_etag (photo, "100x50", "image/webp,*/*", "image/webp", 640, 480, 100, 50,
                        small_tag);
    //  Each rendition has a tag of its own (format, size).
    cr_expect (jpeg_tag [0] == '"' && strcmp (jpeg_tag, webp_tag) && strcmp (webp_tag, small_tag),
               "ETags %s %s %s", jpeg_tag, webp_tag, small_tag);
    s_expect_auto (photo, "200x200", "image/avif,image/webp,*/*", "image/avif", 640, 480,
                   200, 200);
    s_expect_auto (photo, "200x200", "image/avif;q=0,image/webp,*/*", "image/webp", 640, 480,
                   200, 200);
    s_expect_auto (alpha, "100x100", "image/avif,image/webp,image/apng,*/*;q=0.8",
                   "image/avif", 300, 200, 100, 100);
    s_expect_auto (photo, "200x200", "*/*", "image/jpeg", 640, 480, 200, 200);

    //  One variant job per format, whatever the number of requests and sizes.
    char log [600];
    snprintf (log, sizeof log, "%s", s_cluster->broker.log);
    char needle [96];
    snprintf (needle, sizeof needle, "job=%s event=variant_queued", photo);
    cr_expect_eq (h_log_count (log, needle), 2, "variant jobs of the photo");
    snprintf (needle, sizeof needle, "job=%s event=variant_done", photo);
    cr_expect_eq (h_log_count (log, needle), 2, "variants of the photo made");

    //  The status lists what was made: 2 sizes x (jpeg, webp, avif).
    h_response_t resp;
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s", photo);
    s_get (path, NULL, 200, &resp);
    json_t *status = h_json (&resp);
    json_t *list = s_thumbnails (status, 6);
    int formats [3] = { 0 };
    for (size_t i = 0; i < json_array_size (list); i++) {
        const char *format = s_str (json_array_get (list, i), "format");
        formats [0] += strcmp (format, "jpeg") == 0;
        formats [1] += strcmp (format, "webp") == 0;
        formats [2] += strcmp (format, "avif") == 0;
    }
    cr_expect (formats [0] == 2 && formats [1] == 2 && formats [2] == 2,
               "jpeg %d webp %d avif %d", formats [0], formats [1], formats [2]);
    json_decref (status);
    h_response_free (&resp);
    h_cluster_pass (s_cluster);
}

//  The bytes of a thumbnail (malloc'd), its size in *size.
static char *
s_bytes (const char *id, const char *size, const char *accept, size_t *out_size)
{
    char path [128], headers [160];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail?size=%s", id, size);
    snprintf (headers, sizeof headers, "Accept: %s\r\n", accept);
    h_response_t resp;
    s_get (path, headers, 200, &resp);
    char *copy = malloc (resp.body_size + 1);
    cr_assert_not_null (copy);
    memcpy (copy, resp.body, resp.body_size);
    *out_size = resp.body_size;
    h_response_free (&resp);
    return copy;
}

Test (renditions, kill9_after_done_keeps_every_rendition, .init = s_setup,
      .fini = s_teardown, .timeout = 180)
{
    static const struct { const char *size, *accept; } asks [] = {
        { "300x200", "*/*" }, { "120x120", "*/*" }, { "40x40", "*/*" },
        { "120x120", "image/webp,*/*" }, { "40x40", "image/webp,*/*" },
    };
    enum { ASKS = sizeof asks / sizeof asks [0] };
    char id [H_ID_SIZE];
    json_decref (s_job ("jpeg", 900, 600, false, "format=auto&sizes=300x200,120x120,40x40", id));
    char *before [ASKS];
    size_t sizes [ASKS];
    for (int i = 0; i < ASKS; i++)
        before [i] = s_bytes (id, asks [i].size, asks [i].accept, &sizes [i]);

    cr_assert_eq (h_proc_signal (&s_cluster->broker, SIGKILL, 10000), 0);
    cr_assert_eq (h_cluster_broker_start (s_cluster), 0);
    cr_assert (h_wait_status (s_port (), "/healthz", 200, 30000) >= 0, "broker back");

    for (int i = 0; i < ASKS; i++) {
        size_t size;
        char *after = s_bytes (id, asks [i].size, asks [i].accept, &size);
        cr_expect (size == sizes [i] && memcmp (after, before [i], size) == 0,
                   "%s %s: %zu bytes before the kill, %zu after", asks [i].size,
                   asks [i].accept, sizes [i], size);
        fprintf (stderr, "renditions kill9: %s Accept '%s': %zu bytes before, %zu after, %s\n",
                 asks [i].size, asks [i].accept, sizes [i], size,
                 size == sizes [i] && memcmp (after, before [i], size) == 0 ? "same" : "DIFFER");
        free (after);
        free (before [i]);
    }
    //  The WebP renditions came from the spool, not from a new variant job.
    char needle [96];
    snprintf (needle, sizeof needle, "job=%s event=variant_queued", id);
    cr_expect_eq (h_log_count (s_cluster->broker.log, needle), 1, "variant jobs");
    h_response_t resp;
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    s_get (path, NULL, 200, &resp);
    json_t *status = h_json (&resp);
    s_thumbnails (status, 6);
    json_decref (status);
    h_response_free (&resp);
    h_cluster_pass (s_cluster);
}

//  A variant not made within the frontend's wait (10 s; the resizers are
//  stopped) gets the family, marked no-cache so no cache keeps it; once
//  the resizers run again the variant is made and served.
Test (renditions, auto_falls_back_uncached_while_the_variant_is_not_made, .init = s_setup,
      .fini = s_teardown, .timeout = 180)
{
    char id [H_ID_SIZE];
    json_decref (s_job ("jpeg", 640, 480, false, "format=auto", id));
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_assert_eq (h_pause (s_cluster->resizer [i].pid), 0);
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    h_response_t resp;
    long long start = h_now_ms ();
    s_get (path, "Accept: image/webp,*/*\r\n", 200, &resp);
    long long waited = h_now_ms () - start;
    s_expect_header (&resp, "Content-Type", "image/jpeg", "fallback");
    s_expect_header (&resp, "Cache-Control", "no-cache", "fallback");
    s_expect_header (&resp, "Vary", "Accept", "fallback");
    fprintf (stderr, "renditions fallback: Accept webp with the resizers stopped -> jpeg "
             "no-cache after %lld ms\n", waited);
    h_response_free (&resp);
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_assert_eq (h_resume (s_cluster->resizer [i].pid), 0);
    start = h_now_ms ();
    s_expect_auto (id, "100x100", "image/webp,*/*", "image/webp", 640, 480, 100, 100);
    fprintf (stderr, "renditions fallback: resizers resumed -> webp after %lld ms\n",
             h_now_ms () - start);
    h_cluster_pass (s_cluster);
}

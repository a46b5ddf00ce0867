/*  test_options — the thumbnail options through the real frontend: the
    query and the same names as multipart form fields beside the image,
    every refusal naming its option, and jobs made with the new options
    (sizes, contain, cover by gravity, auto, animated) ending done with
    the right first rendition.

    Why: test_proto checks the parser and test_resizer the pixels; only
    the real processes show that what a client sends (a query, or form
    fields before or after the file) reaches the resizer, and that a
    mistake is a 400 that names the option before anything is queued.

    Never: sleep as an assertion; every wait has a deadline.
*/
#include "expect.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_JOB_MS EXPECT_JOB_MS
#define S_BOUNDARY "imgp-options-7d3f"

static h_cluster_t *s_cluster;

static void
s_setup (void)
{
    h_cluster_opts_t opts = { .resizers = 1, .frontends = 1 };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void s_teardown (void) { h_cluster_destroy (&s_cluster); }

static int
s_port (void)
{
    return s_cluster->http_ports [0];
}

//  Append a text field to a multipart body being built.
static size_t
s_field (char *body, size_t at, size_t size, const char *name, const char *value)
{
    int n = snprintf (body + at, size - at, "--" S_BOUNDARY "\r\nContent-Disposition: form-data; "
                      "name=\"%s\"\r\n\r\n%s\r\n", name, value);
    cr_assert (n > 0 && (size_t) n < size - at);
    return at + (size_t) n;
}

//  A multipart body: `before` fields ("name", "value" pairs, NULL-ended),
//  the image in field img, then `after` fields. Returns malloc'd bytes.
static char *
s_form (const char **before, const void *image, size_t image_size, const char **after,
        size_t *size)
{
    size_t room = image_size + 8192;
    char *body = malloc (room);
    cr_assert_not_null (body);
    size_t at = 0;
    for (const char **f = before; f && *f; f += 2)
        at = s_field (body, at, room, f [0], f [1]);
    at += (size_t) snprintf (body + at, room - at, "--" S_BOUNDARY "\r\nContent-Disposition: "
                             "form-data; name=\"img\"; filename=\"a.png\"\r\nContent-Type: "
                             "image/png\r\n\r\n");
    memcpy (body + at, image, image_size);
    at += image_size;
    at += (size_t) snprintf (body + at, room - at, "\r\n");
    for (const char **f = after; f && *f; f += 2)
        at = s_field (body, at, room, f [0], f [1]);
    at += (size_t) snprintf (body + at, room - at, "--" S_BOUNDARY "--\r\n");
    *size = at;
    return body;
}

//  POST the form to `path`; returns the status, the response in `resp`.
static int
s_post_form (const char *path, const char **before, const void *image, size_t image_size,
             const char **after, h_response_t *resp)
{
    size_t size = 0;
    char *body = s_form (before, image, image_size, after, &size);
    int rc = h_http (s_port (), "POST", path, "multipart/form-data; boundary=" S_BOUNDARY,
                     body, size, resp, 10000);
    free (body);
    cr_assert_eq (rc, 0, "POST %s: %s", path, resp->error);
    return resp->status;
}

//  The job id of a 202, into `id`.
static void
s_accepted (const h_response_t *resp, const char *what, char id [H_ID_SIZE])
{
    cr_assert_eq (resp->status, 202, "%s: %d %.300s", what, resp->status,
                  resp->body ? resp->body : "");
    json_t *root = h_json (resp);
    const char *text = json_string_value (json_object_get (root, "id"));
    cr_assert_not_null (text, "%s: no id", what);
    snprintf (id, H_ID_SIZE, "%s", text);
    json_decref (root);
}

//  Wait for `id` done and download its thumbnail into `resp` (200).
static void
s_done_thumbnail (const char *id, h_response_t *resp)
{
    char why [160] = "";
    json_t *status = NULL;
    cr_assert_eq (h_job_wait (s_port (), id, S_JOB_MS, &status, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq (h_json_status (status), "done", "job %s: %s", id,
                      json_dumps (status, JSON_COMPACT));
    json_decref (status);
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    cr_assert_eq (h_http (s_port (), "GET", path, NULL, NULL, 0, resp, 10000), 0);
    cr_assert_eq (resp->status, 200, "GET %s: %d", path, resp->status);
}

//  s_done_thumbnail, then decode it: its size and libvips loader name.
static void
s_done_decoded (const char *id, h_response_t *resp, int *w, int *h, char loader [64])
{
    s_done_thumbnail (id, resp);
    char why [160];
    cr_assert_eq (h_decode (resp->body, resp->body_size, w, h, loader, 64, why, sizeof why), 0,
                  "job %s: %s", id, why);
}

//  The 400 names `option` in "option" and in the message.
static void
s_expect_named (const h_response_t *resp, const char *what, const char *option)
{
    cr_expect_eq (resp->status, 400, "%s: %d %.300s", what, resp->status,
                  resp->body ? resp->body : "");
    expect_error_json (resp, what, "bad_option");
    json_t *root = h_json (resp);
    json_t *error = json_object_get (root, "error");
    const char *named = json_string_value (json_object_get (error, "option"));
    const char *message = json_string_value (json_object_get (error, "message"));
    cr_expect (named && strcmp (named, option) == 0, "%s: option \"%s\", want \"%s\"", what,
               named ? named : "(none)", option);
    cr_expect (message && strstr (message, option), "%s: message \"%s\" does not name %s",
               what, message ? message : "(none)", option);
    fprintf (stderr, "options: %s -> 400 option=%s message=\"%s\"\n", what,
             named ? named : "-", message ? message : "-");
    json_decref (root);
}

//  ---------------------------------------------------------------------------

Test (options, form_fields_before_and_after_the_file, .init = s_setup, .fini = s_teardown,
      .timeout = 60)
{
    size_t size = 0;
    void *png = h_make_image ("png", 200, 100, false, &size);
    cr_assert_not_null (png);
    //  contain 60x60 on red, fields on both sides of the file
    const char *before [] = { "fit", "contain", "width", "60", NULL };
    const char *after [] = { "background", "#ff0000", NULL };
    h_response_t resp;
    s_post_form ("/v1/images", before, png, size, after, &resp);
    char id [H_ID_SIZE];
    s_accepted (&resp, "form fields", id);
    h_response_free (&resp);
    int w = 0, h = 0;
    char loader [64];
    s_done_decoded (id, &resp, &w, &h, loader);
    cr_expect (w == 60 && h == 60, "contain 60x60 gave %dx%d", w, h);
    fprintf (stderr, "options: form fit=contain width=60 (before img) background=#ff0000 "
             "(after): %dx%d %s\n", w, h, loader);
    h_response_free (&resp);

    //  query and fields together: fit in the query, gravity as a field
    const char *gravity [] = { "gravity", "east", "height", "40", NULL };
    s_post_form ("/v1/images?fit=cover&width=40&format=webp", gravity, png, size, NULL, &resp);
    s_accepted (&resp, "query + fields", id);
    h_response_free (&resp);
    s_done_decoded (id, &resp, &w, &h, loader);
    cr_expect (w == 40 && h == 40 && strstr (loader, "Webp"), "cover 40x40 webp gave %dx%d %s",
               w, h, loader);
    h_response_free (&resp);
    free (png);
    h_cluster_pass (s_cluster);
}

Test (options, every_mistake_names_its_option, .init = s_setup, .fini = s_teardown,
      .timeout = 60)
{
    size_t size = 0;
    void *png = h_make_image ("png", 40, 30, false, &size);
    cr_assert_not_null (png);
    struct { const char *query; const char *option; } queries [] = {
        { "gravity=north", "gravity" }, { "fit=cover&gravity=up", "gravity" },
        { "background=%23ffffff", "background" }, { "fit=contain&background=red", "background" },
        { "sizes=10x10,10x10", "sizes" }, { "sizes=1x1,2x2,3x3,4x4,5x5,6x6,7x7,8x8,9x9", "sizes" },
        { "sizes=10x10&width=5", "sizes" }, { "quality=80", "quality" },
        { "animated=true&format=png", "animated" }, { "format=gif", "format" },
        { "fit=crop", "fit" }, { "colour=red", "colour" },
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries [0]; i++) {
        char path [160];
        snprintf (path, sizeof path, "/v1/images?%s", queries [i].query);
        h_response_t resp;
        h_upload (s_port (), path, png, size, "image/png", false, NULL, &resp);
        s_expect_named (&resp, path, queries [i].option);
        h_response_free (&resp);
    }
    //  form fields: unknown, bad, repeated (twice, and in query and form),
    //  a bad combination, a value too long to be an option
    char long_value [200];
    memset (long_value, '1', sizeof long_value - 1);
    long_value [sizeof long_value - 1] = '\0';
    struct { const char *path; const char *before [5]; const char *after [3];
             const char *option; } forms [] = {
        { "/v1/images", { "colour", "red", NULL }, { NULL }, "colour" },
        { "/v1/images", { NULL }, { "thumb", "yes", NULL }, "thumb" },
        { "/v1/images", { "width", "0", NULL }, { NULL }, "width" },
        { "/v1/images", { "fit", "cover", "fit", "fill" }, { NULL }, "fit" },
        { "/v1/images?width=20", { NULL }, { "width", "30", NULL }, "width" },
        { "/v1/images?fit=inside", { NULL }, { "gravity", "north", NULL }, "gravity" },
        { "/v1/images", { "format", "png", NULL }, { "quality", "50", NULL }, "quality" },
        { "/v1/images", { "sizes", long_value, NULL }, { NULL }, "sizes" },
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms [0]; i++) {
        h_response_t resp;
        char what [200];
        snprintf (what, sizeof what, "form %zu (%s, %s=%s)", i, forms [i].path,
                  forms [i].before [0] ? forms [i].before [0] : forms [i].after [0],
                  forms [i].before [0] ? "..." : "...");
        s_post_form (forms [i].path, forms [i].before, png, size, forms [i].after, &resp);
        s_expect_named (&resp, what, forms [i].option);
        h_response_free (&resp);
    }
    //  nothing was queued, and the frontend still serves
    h_response_t resp;
    const char *fine [] = { "format", "webp", "quality", "70", NULL };
    s_post_form ("/v1/images", fine, png, size, NULL, &resp);
    char id [H_ID_SIZE];
    s_accepted (&resp, "a good form after the bad ones", id);
    h_response_free (&resp);
    cr_expect_eq (h_log_count (s_cluster->broker.log, "event=accepted"), 1,
                  "only the good upload became a job");
    free (png);
    h_cluster_pass (s_cluster);
}

Test (options, new_options_end_done, .init = s_setup, .fini = s_teardown, .timeout = 90)
{
    size_t size = 0;
    void *jpeg = h_make_image ("jpeg", 300, 200, false, &size);
    cr_assert_not_null (jpeg);
    struct { const char *query; int w, h; const char *loader; } cases [] = {
        { "sizes=100x100,40x40&format=webp", 100, 67, "Webp" },
        { "fit=cover&width=50&gravity=attention", 50, 50, "Png" },
        { "fit=cover&width=50&height=20&gravity=south-west&format=jpeg", 50, 20, "Jpeg" },
        { "fit=contain&width=80&background=%2300ff0080", 80, 80, "Png" },
        { "format=auto&width=64", 64, 43, "Jpeg" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char path [160], id [H_ID_SIZE];
        snprintf (path, sizeof path, "/v1/images?%s", cases [i].query);
        h_response_t resp;
        int status = h_upload (s_port (), path, jpeg, size, "image/jpeg", false, id, &resp);
        cr_assert_eq (status, 202, "POST %s: %d %.200s", path, status,
                      resp.body ? resp.body : "");
        h_response_free (&resp);
        s_done_thumbnail (id, &resp);
        int w = 0, h = 0;
        char loader [64], why [160];
        cr_assert_eq (h_decode (resp.body, resp.body_size, &w, &h, loader, sizeof loader, why,
                                sizeof why), 0, "%s: %s", path, why);
        cr_expect (abs (w - cases [i].w) <= 1 && abs (h - cases [i].h) <= 1
                   && strstr (loader, cases [i].loader), "%s: %dx%d %s, want %dx%d %s", path,
                   w, h, loader, cases [i].w, cases [i].h, cases [i].loader);
        fprintf (stderr, "options: %s -> done, first rendition %dx%d %s, %zu bytes\n", path, w,
                 h, loader, resp.body_size);
        h_response_free (&resp);
    }
    free (jpeg);
    h_cluster_pass (s_cluster);
}

//  animated=true: an animated GIF through the real processes comes back as
//  an animated WebP with every frame; without it, one frame (test_badinput).
Test (options, animated_keeps_every_frame, .init = s_setup, .fini = s_teardown, .timeout = 90)
{
    size_t size = 0;
    void *gif = h_make_animation (3, 90, 60, &size);
    cr_assert_not_null (gif);
    cr_assert_eq (h_frames (gif, size), 3, "the fixture is not a 3-frame animation");
    char id [H_ID_SIZE];
    h_response_t resp;
    int status = h_upload (s_port (), "/v1/images?animated=true&format=webp&width=30", gif,
                           size, "image/gif", false, id, &resp);
    cr_assert_eq (status, 202, "POST: %d %.200s", status, resp.body ? resp.body : "");
    h_response_free (&resp);
    int w = 0, h = 0;
    char loader [64];
    s_done_decoded (id, &resp, &w, &h, loader);
    int frames = h_frames (resp.body, resp.body_size);
    cr_expect (strstr (loader, "Webp"), "loader %s, want WebP", loader);
    cr_expect_eq (frames, 3, "%d frames, want 3", frames);
    cr_expect (w == 30 && h == 20, "first frame %dx%d, want 30x20", w, h);
    fprintf (stderr, "options: 3-frame 90x60 GIF, animated=true&format=webp&width=30 -> %s "
             "%dx%d, %d frames, %zu bytes\n", loader, w, h, frames, resp.body_size);
    h_response_free (&resp);
    free (gif);
    h_cluster_pass (s_cluster);
}

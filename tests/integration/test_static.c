/*  test_static — the files built into the frontend (imgp_static): the
    upload page at `/` and the API document at `/v1/openapi.json`, served
    by the real imgpipe-frontend with API keys on.

    Why: the page must load before anyone has typed a key (it asks for
    one), must be the bytes of http-frontend/static/ as built, and must be
    revalidated, not re-downloaded: ETag + Cache-Control: no-cache, 304 for
    a tag the client holds, HEAD with the length and no body. Only the
    real server shows what goes on the wire after the head.

    Never: sleep as an assertion. The cluster has no resizer: no job runs.
*/
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_HTTP_MS 20000             //  deadline of one exchange
#define S_KEY "sTaTiCkEy0123456789abcdefGHIJKLM"

static h_cluster_t *s_cluster;
static char s_keys_dir [64];        //  temp dir of the key file
static char s_keys_path [128];      //  the key file

static void
s_setup (void)
{
    snprintf (s_keys_dir, sizeof s_keys_dir, "/tmp/imgp-static-XXXXXX");
    cr_assert_not_null (mkdtemp (s_keys_dir));
    snprintf (s_keys_path, sizeof s_keys_path, "%s/keys", s_keys_dir);
    FILE *file = fopen (s_keys_path, "w");
    cr_assert_not_null (file);
    fputs ("page " S_KEY "\n", file);
    cr_assert_eq (fclose (file), 0);
    s_cluster = h_cluster_new (&(h_cluster_opts_t) { .resizers = 0, .frontends = 1,
        .frontend_extra = { "--api-keys", s_keys_path, NULL } });
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void
s_teardown (void)
{
    h_cluster_destroy (&s_cluster);
    unlink (s_keys_path);
    rmdir (s_keys_dir);
}

TestSuite (static_files, .init = s_setup, .fini = s_teardown, .timeout = 60);

static int
s_port (void)
{
    return s_cluster->http_ports [0];
}

//  The bytes of a file of the source tree (malloc'd), and their size.
static char *
s_source_file (const char *path, size_t *size)
{
    char full [512];
    snprintf (full, sizeof full, "%s/%s", IMGP_SOURCE_DIR, path);
    FILE *file = fopen (full, "rb");
    cr_assert_not_null (file, "cannot read %s", full);
    char *data = malloc (1 << 20);
    cr_assert_not_null (data);
    *size = fread (data, 1, 1 << 20, file);
    fclose (file);
    return data;
}

static void
s_get (const char *method, const char *path, const char *headers, h_response_t *resp)
{
    int rc = h_http_with (s_port (), method, path, headers, NULL, NULL, 0, resp, S_HTTP_MS);
    cr_assert_eq (rc, 0, "%s %s: %s", method, path, resp->error);
}

//  Send a request and read all the server sends until it closes: the
//  whole wire, so a body that should not be there shows. Returns it
//  (malloc'd, NUL-terminated).
static char *
s_wire (const char *request)
{
    int fd = h_conn_open (s_port (), NULL);
    cr_assert_geq (fd, 0);
    cr_assert_eq (h_conn_send (fd, request, strlen (request), S_HTTP_MS), 0);
    char *data = NULL;
    size_t size = 0;
    cr_assert_eq (h_conn_wait_close (fd, S_HTTP_MS, &data, &size), 0,
                  "the server did not close after Connection: close");
    close (fd);
    cr_assert_not_null (data);
    return data;
}

//  The value of header `name` in a raw head ("" when absent), into value.
static void
s_wire_header (const char *wire, const char *name, char *value, size_t size)
{
    h_response_t probe = { .head = (char *) wire };
    if (h_header (&probe, name, value, size) != 0)
        *value = '\0';
}

//  A served file: 200, its type, the bytes of the source tree, a quoted
//  40-hex ETag, Cache-Control: no-cache; and no API key needed.
static void
s_check_served (const char *path, const char *source, const char *type, char etag [64])
{
    size_t size;
    char *want = s_source_file (source, &size);
    h_response_t resp;
    s_get ("GET", path, NULL, &resp);
    cr_assert_eq (resp.status, 200, "GET %s without a key: %d %s", path, resp.status, resp.body);
    char value [128];
    cr_assert_eq (h_header (&resp, "Content-Type", value, sizeof value), 0);
    cr_assert_str_eq (value, type);
    cr_assert_eq (h_header (&resp, "Cache-Control", value, sizeof value), 0);
    cr_assert_str_eq (value, "no-cache");
    cr_assert_eq (h_header (&resp, "ETag", etag, 64), 0);
    cr_assert_eq (strlen (etag), 42, "ETag %s", etag);
    cr_assert (etag [0] == '"' && etag [41] == '"'
               && strspn (etag + 1, "0123456789abcdef") == 40, "ETag %s", etag);
    cr_assert_eq (resp.body_size, size, "%s: %zu bytes served, %zu in the tree", path,
                  resp.body_size, size);
    cr_assert (memcmp (resp.body, want, size) == 0, "%s: not the bytes of %s", path, source);
    h_response_free (&resp);
    free (want);
}

Test (static_files, page_and_api_document_served_without_a_key)
{
    char page_tag [64], api_tag [64];
    s_check_served ("/", "http-frontend/static/index.html", "text/html; charset=utf-8",
                    page_tag);
    s_check_served ("/v1/openapi.json", "http-frontend/static/openapi.json",
                    "application/json", api_tag);
    cr_assert_str_neq (page_tag, api_tag);
    //  The document is JSON, an OpenAPI 3.x one.
    h_response_t resp;
    s_get ("GET", "/v1/openapi.json", NULL, &resp);
    json_t *doc = h_json (&resp);
    cr_assert_not_null (doc, "openapi.json is not JSON");
    const char *version = json_string_value (json_object_get (doc, "openapi"));
    cr_assert (version && strncmp (version, "3.", 2) == 0);
    json_decref (doc);
    h_response_free (&resp);
    //  The API itself still wants a key: only the files are open.
    s_get ("GET", "/v1/cluster", NULL, &resp);
    cr_assert_eq (resp.status, 401);
    h_response_free (&resp);
    h_cluster_pass (s_cluster);
}

Test (static_files, head_gives_the_length_and_no_body)
{
    size_t size;
    free (s_source_file ("http-frontend/static/index.html", &size));
    char *wire = s_wire ("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    cr_assert (strncmp (wire, "HTTP/1.1 200 ", 13) == 0, "%s", wire);
    char value [64];
    s_wire_header (wire, "Content-Length", value, sizeof value);
    cr_assert_eq (strtoull (value, NULL, 10), size, "Content-Length %s", value);
    s_wire_header (wire, "ETag", value, sizeof value);
    cr_assert_eq (strlen (value), 42);
    const char *end = strstr (wire, "\r\n\r\n");
    cr_assert (end && end [4] == '\0', "bytes after the head of a HEAD response: %s", wire);
    free (wire);
    h_cluster_pass (s_cluster);
}

Test (static_files, if_none_match_gives_304_without_a_body)
{
    h_response_t resp;
    s_get ("GET", "/", NULL, &resp);
    char etag [64];
    cr_assert_eq (h_header (&resp, "ETag", etag, sizeof etag), 0);
    h_response_free (&resp);
    //  The tag itself, its weak form, in a list, and "*": the copy is current.
    char lists [4][200];
    snprintf (lists [0], sizeof lists [0], "%s", etag);
    snprintf (lists [1], sizeof lists [1], "W/%s", etag);
    snprintf (lists [2], sizeof lists [2], "\"0123\", %s ,W/\"x\"", etag);
    snprintf (lists [3], sizeof lists [3], "*");
    for (int i = 0; i < 4; i++) {
        char request [1024];
        snprintf (request, sizeof request, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  "If-None-Match: %s\r\n\r\n", lists [i]);
        char *wire = s_wire (request);
        cr_assert (strncmp (wire, "HTTP/1.1 304 ", 13) == 0, "If-None-Match: %s: %.80s",
                   lists [i], wire);
        char value [64];
        s_wire_header (wire, "ETag", value, sizeof value);
        cr_assert_str_eq (value, etag);
        s_wire_header (wire, "Cache-Control", value, sizeof value);
        cr_assert_str_eq (value, "no-cache");
        const char *end = strstr (wire, "\r\n\r\n");
        cr_assert (end && end [4] == '\0', "a body after a 304: %s", wire);
        free (wire);
    }
    //  Another tag, or one that differs only at its end: the whole page.
    char stale [64];
    snprintf (stale, sizeof stale, "%s", etag);
    stale [40] = stale [40] == '0' ? '1' : '0';
    char header [128];
    snprintf (header, sizeof header, "If-None-Match: %s\r\n", stale);
    const char *others [] = { "If-None-Match: \"0123\"\r\n", header };
    for (int i = 0; i < 2; i++) {
        s_get ("GET", "/", others [i], &resp);
        cr_assert_eq (resp.status, 200, "%s", others [i]);
        cr_assert_gt (resp.body_size, 0);
        h_response_free (&resp);
    }
    h_cluster_pass (s_cluster);
}

Test (static_files, only_get_and_head_and_only_the_files_listed)
{
    h_response_t resp;
    s_get ("POST", "/", NULL, &resp);
    cr_assert_eq (resp.status, 405);
    char value [64];
    cr_assert_eq (h_header (&resp, "Allow", value, sizeof value), 0);
    cr_assert_str_eq (value, "GET, HEAD");
    h_response_free (&resp);
    //  No lookup by file name: the files exist only at their routes.
    const char *paths [] = { "/index.html", "/static/index.html", "/openapi.json",
                             "/v1/openapi.json/", "/v1/", "//" };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++) {
        s_get ("GET", paths [i], NULL, &resp);
        cr_assert_eq (resp.status, 404, "GET %s: %d", paths [i], resp.status);
        h_response_free (&resp);
    }
    h_cluster_pass (s_cluster);
}

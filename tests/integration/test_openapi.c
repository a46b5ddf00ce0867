/*  test_openapi — walks the OpenAPI document the frontend serves
    (GET /v1/openapi.json, from http-frontend/static/openapi.json) against
    the real processes: a broker, a resizer and a frontend with API keys.

    Why: a document that drifts from the server misleads every generated
    client. Two checks keep them together:
    - the router and the document list the same routes: every route of
      imgp_http_route (the frontend's own table, linked from its library)
      is documented with its method, HEAD beside every GET, and the same
      key requirement (`security: []` for the open routes), and every
      documented operation is a route;
    - every documented operation answers as documented: a list of calls
      below (the one place that knows how to make each answer happen)
      covers each operation's success and at least one of its documented
      errors; each answer's status must be documented for the operation,
      its Content-Type one of the documented media types, a JSON body must
      satisfy the documented schema (a small JSON Schema subset checked
      here: type, enum, pattern, minimum, maximum, required, properties,
      items, $ref; any other structural keyword fails the test, so the
      document stays within what is checked), and headers documented with
      `required: true` must be there. Every GET is repeated as HEAD: same
      status, same headers, no body, the GET's Content-Length.

    Documented but not walked (each needs a fault of its own, tested in its
    own suite): 408 and 411 (test_frontdoor), 413 (test_frontend), 500, 502
    (test_frontend's fake broker).

    Never: accept an answer the document does not describe, or sleep as an
    assertion (every wait has a deadline).
*/
#include "harness.h"
#include "imgp_http.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_KEY "walker-key-0123456789abcdef"     //  unlimited
#define S_SLOW_KEY "walker-slow-0123456789abcdef"   //  burst 1, then 1 per 100 s
#define S_UNKNOWN_ID "0123456789abcdef0123456789abcdef"
#define S_TIMEOUT_MS 30000
#define S_DOC_FILE IMGP_SOURCE_DIR "/http-frontend/static/openapi.json"

static h_cluster_t *s_cluster;
static char s_dir [64];             //  temp dir of the key file
static json_t *s_doc;               //  the served document
static json_t *s_seen;              //  "get /v1/images/{id}" -> {"200": n, ...}
static const char *s_sizes_id;      //  a job of two sizes and format=auto
static json_t *s_unwalked;          //  what this build does not do yet (logged)

//  ---------------------------------------------------------------------------
//  The cluster

static void
s_setup (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/imgp-openapi-XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    char keys [128];
    snprintf (keys, sizeof keys, "%s/keys.txt", s_dir);
    FILE *file = fopen (keys, "w");
    cr_assert_not_null (file);
    fprintf (file, "walker %s\nslow %s 0.01 1\n", S_KEY, S_SLOW_KEY);
    fclose (file);
    static char keys_flag [128];
    snprintf (keys_flag, sizeof keys_flag, "%s", keys);
    h_cluster_opts_t opts = { .resizers = 1, .frontends = 1,
                              .frontend_extra = { "--api-keys", keys_flag, NULL } };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
    s_seen = json_object ();
    s_unwalked = json_array ();
}

static void
s_teardown (void)
{
    h_cluster_destroy (&s_cluster);
    json_decref (s_doc);
    s_doc = NULL;
    json_decref (s_seen);
    s_seen = NULL;
    json_decref (s_unwalked);
    s_unwalked = NULL;
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    if (s_dir [0] && system (command) != 0)
        cr_log_warn ("could not remove %s", s_dir);
}

static int
s_port (void)
{
    return s_cluster->http_ports [0];
}

//  ---------------------------------------------------------------------------
//  The document

//  Follow "$ref": "#/a/b" (local references only) to the node it names.
static json_t *
s_deref (json_t *node)
{
    for (int hops = 0; hops < 8 && json_is_string (json_object_get (node, "$ref")); hops++) {
        const char *ref = json_string_value (json_object_get (node, "$ref"));
        cr_assert (strncmp (ref, "#/", 2) == 0, "only local $ref is walked: %s", ref);
        json_t *at = s_doc;
        char *copy = strdup (ref + 2), *save = NULL;
        for (char *part = strtok_r (copy, "/", &save); part && at;
             part = strtok_r (NULL, "/", &save))
            at = json_object_get (at, part);
        free (copy);
        cr_assert_not_null (at, "$ref %s names nothing", ref);
        node = at;
    }
    return node;
}

static json_t *
s_operation (const char *doc_path, const char *method)
{
    char lower [16];
    size_t i = 0;
    for (; method [i] && i < sizeof lower - 1; i++)
        lower [i] = (char) tolower ((unsigned char) method [i]);
    lower [i] = 0;
    return json_object_get (json_object_get (json_object_get (s_doc, "paths"), doc_path), lower);
}

//  The served document: 200 application/json, the file in the tree byte
//  for byte (the build embeds the current file), an OpenAPI 3.1 object.
static void
s_doc_load (void)
{
    h_response_t resp;
    cr_assert_eq (h_http (s_port (), "GET", "/v1/openapi.json", NULL, NULL, 0, &resp,
                          S_TIMEOUT_MS), 0, "%s", resp.error);
    cr_assert_eq (resp.status, 200, "GET /v1/openapi.json: %d %.200s", resp.status, resp.body);
    size_t size = 0;
    char *file = h_read_file (S_DOC_FILE, &size);
    cr_assert_not_null (file, "cannot read %s", S_DOC_FILE);
    cr_assert (size == resp.body_size && memcmp (file, resp.body, size) == 0,
               "the served document (%zu bytes) is not %s (%zu bytes): rebuild?",
               resp.body_size, S_DOC_FILE, size);
    free (file);
    json_error_t error;
    s_doc = json_loadb (resp.body, resp.body_size, JSON_REJECT_DUPLICATES, &error);
    cr_assert_not_null (s_doc, "not JSON: %s at line %d", error.text, error.line);
    const char *version = json_string_value (json_object_get (s_doc, "openapi"));
    cr_assert (version && strncmp (version, "3.1.", 4) == 0, "openapi: %s", version);
    cr_assert (json_is_object (json_object_get (s_doc, "paths")));
    h_response_free (&resp);
}

//  ---------------------------------------------------------------------------
//  A JSON Schema subset

static bool
s_keyword_known (const char *key)
{
    static const char *known [] = {
        "type", "enum", "pattern", "minimum", "maximum", "required", "properties", "items",
        "$ref", "description", "example", "examples", "format", "contentMediaType", "default",
        "title",
    };
    for (size_t i = 0; i < sizeof known / sizeof known [0]; i++)
        if (strcmp (key, known [i]) == 0)
            return true;
    return false;
}

static bool
s_type_is (json_t *value, const char *type)
{
    return strcmp (type, "object") == 0 ? json_is_object (value)
         : strcmp (type, "array") == 0 ? json_is_array (value)
         : strcmp (type, "string") == 0 ? json_is_string (value)
         : strcmp (type, "integer") == 0 ? json_is_integer (value)
         : strcmp (type, "number") == 0 ? json_is_number (value)
         : strcmp (type, "boolean") == 0 ? json_is_boolean (value)
         : strcmp (type, "null") == 0 ? json_is_null (value) : false;
}

static bool
s_type_ok (json_t *type, json_t *value)
{
    if (json_is_string (type))
        return s_type_is (value, json_string_value (type));
    size_t i;
    json_t *one;
    json_array_foreach (type, i, one)
        if (s_type_is (value, json_string_value (one)))
            return true;
    return false;
}

static bool
s_enum_ok (json_t *values, json_t *value)
{
    size_t i;
    json_t *one;
    json_array_foreach (values, i, one)
        if (json_equal (one, value))
            return true;
    return false;
}

static bool
s_pattern_ok (const char *pattern, const char *text)
{
    regex_t re;
    cr_assert_eq (regcomp (&re, pattern, REG_EXTENDED | REG_NOSUB), 0,
                  "the document's pattern %s is no POSIX ERE", pattern);
    bool ok = regexec (&re, text, 0, NULL, 0) == 0;
    regfree (&re);
    return ok;
}

static int s_check (json_t *schema, json_t *value, const char *at, char *why, size_t size);

//  Say in `why` that the value at `at` is not what the schema says; -1.
static int
s_refuse (const char *at, json_t *value, const char *what, char *why, size_t size)
{
    char *text = json_dumps (value, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf (why, size, "%s: %.80s %s", at, text ? text : "?", what);
    free (text);
    return -1;
}

static int
s_check_members (json_t *schema, json_t *value, const char *at, char *why, size_t size)
{
    size_t i;
    json_t *one;
    json_array_foreach (json_object_get (schema, "required"), i, one)
        if (!json_object_get (value, json_string_value (one))) {
            snprintf (why, size, "%s: required member '%s' missing", at,
                      json_string_value (one));
            return -1;
        }
    const char *key;
    json_t *sub;
    json_object_foreach (json_object_get (schema, "properties"), key, sub) {
        json_t *member = json_object_get (value, key);
        char where [256];
        snprintf (where, sizeof where, "%s.%s", at, key);
        if (member && s_check (sub, member, where, why, size))
            return -1;
    }
    return 0;
}

//  0 when `value` satisfies `schema`, or -1 with the first reason in `why`.
static int
s_check (json_t *schema, json_t *value, const char *at, char *why, size_t size)
{
    schema = s_deref (schema);
    const char *key;
    json_t *sub;
    json_object_foreach (schema, key, sub)
        cr_assert (s_keyword_known (key), "%s: the walker does not check keyword '%s'", at, key);
    json_t *type = json_object_get (schema, "type");
    if (type && !s_type_ok (type, value))
        return s_refuse (at, value, "is not of the documented type", why, size);
    json_t *values = json_object_get (schema, "enum");
    if (values && !s_enum_ok (values, value))
        return s_refuse (at, value, "is not in the documented enum", why, size);
    const char *pattern = json_string_value (json_object_get (schema, "pattern"));
    if (pattern && json_is_string (value) && !s_pattern_ok (pattern, json_string_value (value))) {
        snprintf (why, size, "%s: '%.80s' does not match %s", at, json_string_value (value),
                  pattern);
        return -1;
    }
    json_t *min = json_object_get (schema, "minimum"), *max = json_object_get (schema, "maximum");
    if (json_is_number (value)
    &&  ((min && json_number_value (value) < json_number_value (min))
      || (max && json_number_value (value) > json_number_value (max)))) {
        snprintf (why, size, "%s: %g out of the documented range", at, json_number_value (value));
        return -1;
    }
    if (json_is_object (value) && s_check_members (schema, value, at, why, size))
        return -1;
    json_t *items = json_object_get (schema, "items");
    size_t i;
    json_t *one;
    if (items && json_is_array (value))
        json_array_foreach (value, i, one) {
            char where [256];
            snprintf (where, sizeof where, "%s[%zu]", at, i);
            if (s_check (items, one, where, why, size))
                return -1;
        }
    return 0;
}

//  ---------------------------------------------------------------------------
//  Calls

//  A HEAD request: the harness reader would wait for the body the
//  Content-Length announces, so read the head until the server closes.
static int
s_head_request (const char *path, const char *headers, h_response_t *resp)
{
    char head [2048];
    snprintf (head, sizeof head, "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
              "%s\r\n", path, headers ? headers : "");
    int fd = h_raw_send (s_port (), head, NULL, 0, resp, S_TIMEOUT_MS);
    if (fd < 0)
        return -1;
    char buf [16384];
    size_t used = 0;
    long long deadline = h_now_ms () + S_TIMEOUT_MS;
    while (used < sizeof buf - 1 && h_now_ms () < deadline) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll (&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv (fd, buf + used, sizeof buf - 1 - used, 0);
        if (n <= 0)
            break;
        used += (size_t) n;
    }
    close (fd);
    buf [used] = 0;
    char *end = strstr (buf, "\r\n\r\n");
    if (!end || sscanf (buf, "HTTP/1.%*d %d", &resp->status) != 1)
        return h_response_fail (resp, "no HEAD response head (%zu bytes)", used);
    resp->head = strndup (buf, (size_t) (end - buf) + 2);
    resp->body_size = used - (size_t) (end + 4 - buf);
    resp->body = strdup (end + 4);
    return 0;
}

typedef struct {
    const char *method;         //  GET, POST (a GET is repeated as HEAD)
    const char *doc;            //  the documented path, "/v1/images/{id}"
    const char *path;           //  the request path and query
    const char *key;            //  API key sent, NULL for none
    const char *headers;        //  more header lines ("Name: v\r\n"), NULL for none
    const char *type;           //  Content-Type of the body, NULL for none
    const void *body;           //  request body
    size_t size;                //  its length
    int want;                   //  the status this call must get
    bool no_head;               //  no HEAD twin (a rate limit would see it)
} s_call_t;

static void
s_seen_add (const char *method, const char *doc, int status)
{
    char op [256], code [8];
    snprintf (op, sizeof op, "%s %s", method, doc);
    for (char *c = op; *c != ' '; c++)
        *c = (char) tolower ((unsigned char) *c);
    snprintf (code, sizeof code, "%d", status);
    json_t *codes = json_object_get (s_seen, op);
    if (!codes)
        json_object_set_new (s_seen, op, codes = json_object ());
    json_object_set_new (codes, code, json_integer (
        json_integer_value (json_object_get (codes, code)) + 1));
}

static bool
s_type_matches (const char *documented, const char *sent)
{
    if (strcasecmp (documented, sent) == 0)
        return true;
    //  A documented type without parameters matches any parameters.
    size_t len = strcspn (sent, ";");
    return !strchr (documented, ';') && strlen (documented) == len
        && strncasecmp (documented, sent, len) == 0;
}

//  The answer `resp` to `call` (as `method`) is what the document says.
static void
s_conforms (const s_call_t *call, const char *method, h_response_t *resp)
{
    json_t *op = s_operation (call->doc, method);
    cr_assert_not_null (op, "%s %s is not documented", method, call->doc);
    char code [8];
    snprintf (code, sizeof code, "%d", resp->status);
    json_t *documented = s_deref (json_object_get (json_object_get (op, "responses"), code));
    cr_assert_not_null (documented, "%s %s answered %d, not documented for %s %s: %.300s",
                        method, call->path, resp->status, method, call->doc, resp->body);
    const char *name;
    json_t *header;
    json_object_foreach (json_object_get (documented, "headers"), name, header) {
        char value [512];
        if (json_is_true (json_object_get (s_deref (header), "required")))
            cr_assert_eq (h_header (resp, name, value, sizeof value), 0,
                          "%s %s %d: no %s header", method, call->path, resp->status, name);
    }
    json_t *content = json_object_get (documented, "content");
    if (strcmp (method, "HEAD") == 0 || !content) {
        cr_assert_eq (resp->body_size, 0, "%s %s %d: a body where none is documented",
                      method, call->path, resp->status);
        return;
    }
    char type [256] = "";
    h_header (resp, "Content-Type", type, sizeof type);
    const char *media;
    json_t *entry, *schema = NULL;
    json_object_foreach (content, media, entry)
        if (s_type_matches (media, type))
            schema = json_object_get (entry, "schema");
    cr_assert_not_null (schema, "%s %s %d: Content-Type '%s' not documented", method,
                        call->path, resp->status, type);
    if (!s_type_matches ("application/json", type))
        return;
    json_t *body = h_json (resp);
    cr_assert_not_null (body, "%s %s %d: not JSON", method, call->path, resp->status);
    char why [512];
    cr_assert_eq (s_check (schema, body, "body", why, sizeof why), 0, "%s %s %d: %s\n%.400s",
                  method, call->path, resp->status, why, resp->body);
    json_decref (body);
}

//  The HEAD answer has the headers the GET had, with the same values.
static void
s_same_headers (const h_response_t *get, const h_response_t *head, const char *path)
{
    const char *names [] = { "Content-Type", "ETag", "Cache-Control", "Vary", "Retry-After",
                             "Location", "WWW-Authenticate" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char want [256] = "", got [256] = "";
        if (h_header (get, names [i], want, sizeof want) != 0)
            continue;
        h_header (head, names [i], got, sizeof got);
        cr_assert_str_eq (got, want, "HEAD %s: %s", path, names [i]);
    }
}

//  Make `call`, check its answer against the document and its HEAD twin;
//  the GET's response is left in *out when `out` is not NULL.
static void
s_call (const s_call_t *call, h_response_t *out)
{
    char headers [1024] = "";
    if (call->key)
        snprintf (headers, sizeof headers, "Authorization: Bearer %s\r\n", call->key);
    if (call->headers)
        snprintf (headers + strlen (headers), sizeof headers - strlen (headers), "%s",
                  call->headers);
    h_response_t resp;
    cr_assert_eq (h_http_with (s_port (), call->method, call->path, headers, call->type,
                               call->body, call->size, &resp, S_TIMEOUT_MS), 0,
                  "%s %s: %s", call->method, call->path, resp.error);
    cr_assert_eq (resp.status, call->want, "%s %s: %d, want %d: %.300s", call->method,
                  call->path, resp.status, call->want, resp.body);
    s_conforms (call, call->method, &resp);
    s_seen_add (call->method, call->doc, resp.status);
    if (strcmp (call->method, "GET") == 0 && !call->no_head) {
        h_response_t head;
        cr_assert_eq (s_head_request (call->path, headers, &head), 0, "HEAD %s: %s",
                      call->path, head.error);
        cr_assert_eq (head.status, resp.status, "HEAD %s: %d, GET %d", call->path,
                      head.status, resp.status);
        s_conforms (call, "HEAD", &head);
        s_seen_add ("HEAD", call->doc, head.status);
        char get_length [32] = "", head_length [32] = "";
        h_header (&resp, "Content-Length", get_length, sizeof get_length);
        h_header (&head, "Content-Length", head_length, sizeof head_length);
        //  These bodies carry counters and ages that move between the two.
        bool moving = strcmp (call->doc, "/metrics") == 0 || strcmp (call->doc, "/v1/cluster") == 0
                   || strcmp (call->doc, "/readyz") == 0;
        if (resp.status != 304 && !moving)
            cr_assert_str_eq (head_length, get_length, "HEAD %s: Content-Length", call->path);
        s_same_headers (&resp, &head, call->path);
        h_response_free (&head);
    }
    if (out)
        *out = resp;
    else
        h_response_free (&resp);
}

//  ---------------------------------------------------------------------------
//  1. The router and the document list the same routes

//  True when the operation needs a key: its own `security`, else the
//  document's; an empty list (or an empty requirement) means open.
static bool
s_keyed (json_t *op)
{
    json_t *security = json_object_get (op, "security");
    if (!security)
        security = json_object_get (s_doc, "security");
    size_t i;
    json_t *one;
    json_array_foreach (security, i, one)
        if (json_object_size (one) == 0)
            return false;
    return json_array_size (security) > 0;
}

static bool
s_router_has (const char *path, const char *method)
{
    const char *route_method;
    const char *route;
    for (size_t i = 0; (route = imgp_http_route (i, &route_method, NULL)); i++)
        if (strcmp (route, path) == 0
        &&  (strcasecmp (route_method, method) == 0
          || (strcasecmp (method, "head") == 0 && strcmp (route_method, "GET") == 0)))
            return true;
    return false;
}

Test (openapi, router_and_document_list_the_same_routes, .init = s_setup, .fini = s_teardown,
      .timeout = 120)
{
    s_doc_load ();
    const char *path, *method;
    bool open;
    size_t routes = 0;
    for (size_t i = 0; (path = imgp_http_route (i, &method, &open)); i++, routes++) {
        json_t *op = s_operation (path, method);
        cr_assert_not_null (op, "the router takes %s %s; the document does not say so",
                            method, path);
        cr_assert_eq (s_keyed (op), !open, "%s %s: the router %s a key, the document %s",
                      method, path, open ? "needs no" : "needs", s_keyed (op) ? "does" : "not");
        if (strcmp (method, "GET") == 0)
            cr_assert_not_null (s_operation (path, "HEAD"), "HEAD %s is not documented", path);
    }
    cr_assert_geq (routes, 9, "the router lists %zu routes", routes);
    json_t *item;
    size_t operations = 0;
    json_object_foreach (json_object_get (s_doc, "paths"), path, item) {
        json_t *op;
        json_object_foreach (item, method, op) {
            if (strcmp (method, "parameters") == 0 || strcmp (method, "summary") == 0
            ||  strcmp (method, "description") == 0)
                continue;
            cr_assert (s_router_has (path, method), "documented %s %s: the router has no "
                       "such route", method, path);
            operations++;
        }
    }
    cr_log_info ("router: %zu routes; document: %zu operations, all matched", routes,
                 operations);
    h_cluster_pass (s_cluster);
}

//  ---------------------------------------------------------------------------
//  2. Every documented operation answers as documented

//  Poll the job with the key until it is `want` (done or failed).
static void
s_wait_final (const char *id, const char *want)
{
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s?wait=5", id);
    long long deadline = h_now_ms () + 90000;
    char state [32] = "";
    while (h_now_ms () < deadline) {
        h_response_t resp;
        if (h_http_with (s_port (), "GET", path, "Authorization: Bearer " S_KEY "\r\n", NULL,
                         NULL, 0, &resp, S_TIMEOUT_MS) == 0 && resp.status == 200) {
            json_t *json = h_json (&resp);
            snprintf (state, sizeof state, "%s", h_json_status (json));
            bool final = strcmp (state, "done") == 0 || strcmp (state, "failed") == 0;
            json_decref (json);
            h_response_free (&resp);
            if (final)
                break;
            continue;
        }
        h_response_free (&resp);
    }
    cr_assert_str_eq (state, want, "job %s: %s, want %s", id, state, want);
}

//  POST an image; returns its id (static buffer per slot).
static const char *
s_upload (const char *doc, const char *path, const void *data, size_t size, bool multipart,
          int slot)
{
    static char ids [6][H_ID_SIZE];
    char type [128] = "image/png";
    size_t form_size = size;
    char *form = multipart ? h_multipart ("img", "a.png", "image/png", data, size, &form_size,
                                          type, sizeof type) : NULL;
    h_response_t resp;
    s_call (&(s_call_t) { .method = "POST", .doc = doc, .path = path, .key = S_KEY,
                          .type = type, .body = form ? form : data, .size = form_size,
                          .want = 202 }, &resp);
    json_t *json = h_json (&resp);
    snprintf (ids [slot], sizeof ids [slot], "%s",
              json_string_value (json_object_get (json, "id")));
    json_decref (json);
    h_response_free (&resp);
    free (form);
    return ids [slot];
}

//  A documented path with {id} replaced (static buffer per slot).
static const char *
s_path (const char *format, const char *id, int slot)
{
    static char paths [8][256];
    snprintf (paths [slot], sizeof paths [slot], format, id);
    return paths [slot];
}

//  Calls that need no job: the page, the document, probes, the cluster,
//  and the rate limit (the slow key: a burst of one).
static void
s_walk_service (void)
{
    h_response_t resp;
    const char *statics [] = { "/", "/v1/openapi.json" };
    for (size_t i = 0; i < 2; i++) {
        s_call (&(s_call_t) { .method = "GET", .doc = statics [i], .path = statics [i],
                              .want = 200 }, &resp);
        char etag [128], headers [200];
        cr_assert_eq (h_header (&resp, "ETag", etag, sizeof etag), 0, "%s: no ETag", statics [i]);
        snprintf (headers, sizeof headers, "If-None-Match: %s\r\n", etag);
        s_call (&(s_call_t) { .method = "GET", .doc = statics [i], .path = statics [i],
                              .headers = headers, .want = 304 }, NULL);
        h_response_free (&resp);
    }
    s_call (&(s_call_t) { .method = "GET", .doc = "/healthz", .path = "/healthz", .want = 200 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/readyz", .path = "/readyz", .want = 200 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/metrics", .path = "/metrics", .want = 200 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/cluster", .path = "/v1/cluster",
                          .key = S_KEY, .want = 200 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/cluster", .path = "/v1/cluster",
                          .want = 401 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/cluster", .path = "/v1/cluster",
                          .key = S_SLOW_KEY, .want = 200, .no_head = true }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/cluster", .path = "/v1/cluster",
                          .key = S_SLOW_KEY, .want = 429, .no_head = true }, NULL);
}

//  True when the JSON error in `resp` has `member` (in "error") == `want`.
static bool
s_error_member_is (h_response_t *resp, const char *member, const char *want)
{
    json_t *json = h_json (resp);
    const char *value = json_string_value (
        json_object_get (json_object_get (json, "error"), member));
    bool is = value && strcmp (value, want) == 0;
    json_decref (json);
    return is;
}

//  A multipart body: the text field `name`=`value`, then the image in `img`.
static char *
s_form_with_field (const char *name, const char *value, const void *png, size_t size,
                   size_t *body_size)
{
    char head [512];
    int n = snprintf (head, sizeof head,
                      "--walkerBoundary\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n"
                      "%s\r\n--walkerBoundary\r\nContent-Disposition: form-data; name=\"img\"; "
                      "filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n", name, value);
    const char *tail = "\r\n--walkerBoundary--\r\n";
    *body_size = (size_t) n + size + strlen (tail);
    char *body = malloc (*body_size);
    cr_assert_not_null (body);
    memcpy (body, head, (size_t) n);
    memcpy (body + n, png, size);
    memcpy (body + (size_t) n + size, tail, strlen (tail));
    return body;
}

//  Options as multipart fields: a bad one is 400 naming it. Walked when
//  the build reads option fields (a frontend that does not ignores them).
static void
s_walk_form_options (const void *png, size_t size)
{
    size_t body_size;
    char *body = s_form_with_field ("gravity", "north", png, size, &body_size);
    h_response_t resp;
    cr_assert_eq (h_http_with (s_port (), "POST", "/v1/images", "Authorization: Bearer " S_KEY
                               "\r\n", "multipart/form-data; boundary=walkerBoundary", body,
                               body_size, &resp, S_TIMEOUT_MS), 0, "%s", resp.error);
    int status = resp.status;
    h_response_free (&resp);
    if (status == 202)
        json_array_append_new (s_unwalked, json_string ("options as multipart fields"));
    else {
        s_call (&(s_call_t) { .method = "POST", .doc = "/v1/images", .path = "/v1/images",
                              .key = S_KEY, .type = "multipart/form-data; boundary=walkerBoundary",
                              .body = body, .size = body_size, .want = 400 }, &resp);
        cr_assert (s_error_member_is (&resp, "option", "gravity"), "form field: %s", resp.body);
        h_response_free (&resp);
    }
    free (body);
    body = s_form_with_field ("width", "60", png, size, &body_size);
    s_call (&(s_call_t) { .method = "POST", .doc = "/v1/images", .path = "/v1/images",
                          .key = S_KEY, .type = "multipart/form-data; boundary=walkerBoundary",
                          .body = body, .size = body_size, .want = 202 }, NULL);
    free (body);
}

//  Uploads on both routes: accepted, a bad option, not an image, no key.
//  Returns the id of a job that ends done; *failed_id one that ends failed.
static const char *
s_walk_uploads (const char **failed_id)
{
    size_t size = 0;
    void *png = h_make_image ("png", 200, 100, false, &size);
    cr_assert_not_null (png);
    const char *id = s_upload ("/v1/images", "/v1/images?width=60&height=40", png, size, true, 0);
    s_upload ("/images", "/images", png, size, false, 1);
    //  Half a PNG: accepted (its magic is right), then failed by the resizer.
    *failed_id = s_upload ("/v1/images", "/v1/images", png, size / 2, false, 2);
    const char *routes [] = { "/v1/images", "/images" };
    //  The options of the contract are taken (their effect is test_e2e's).
    s_sizes_id = s_upload ("/v1/images", "/v1/images?fit=cover&gravity=attention&format=auto"
                           "&quality=80&sizes=100x100,40x30", png, size, true, 3);
    s_upload ("/v1/images", "/v1/images?fit=contain&background=%23ff000080&format=webp"
              "&animated=true", png, size, false, 4);
    for (size_t i = 0; i < 2; i++) {
        //  A bad option, alone or in combination: 400 naming it.
        const char *bad [][2] = { { "width=0", "width" }, { "gravity=north", "gravity" } };
        for (size_t b = 0; b < 2; b++) {
            char path [64];
            snprintf (path, sizeof path, "%s?%s", routes [i], bad [b][0]);
            h_response_t resp;
            s_call (&(s_call_t) { .method = "POST", .doc = routes [i], .path = path,
                                  .key = S_KEY, .type = "image/png", .body = png, .size = size,
                                  .want = 400 }, &resp);
            cr_assert (s_error_member_is (&resp, "option", bad [b][1]), "%s: %s", path,
                       resp.body);
            h_response_free (&resp);
        }
        s_call (&(s_call_t) { .method = "POST", .doc = routes [i], .path = routes [i],
                              .key = S_KEY, .type = "image/png", .body = "not an image at all",
                              .size = 19, .want = 415 }, NULL);
        s_call (&(s_call_t) { .method = "POST", .doc = routes [i], .path = routes [i],
                              .type = "image/png", .body = png, .size = size, .want = 401 },
                NULL);
    }
    s_walk_form_options (png, size);
    free (png);
    return id;
}

//  Status and thumbnails of a done job, a failed one, unknown and bad ids.
static void
s_walk_jobs (const char *id, const char *failed_id)
{
    s_wait_final (id, "done");
    s_wait_final (failed_id, "failed");
    const char *status = "/v1/images/{id}";
    s_call (&(s_call_t) { .method = "GET", .doc = status, .path = s_path ("/v1/images/%s", id, 0),
                          .key = S_KEY, .want = 200 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = status, .path = "/v1/images/xyz",
                          .key = S_KEY, .want = 400 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = status,
                          .path = s_path ("/v1/images/%s", S_UNKNOWN_ID, 0), .key = S_KEY,
                          .want = 404 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = status, .path = s_path ("/v1/images/%s", id, 0),
                          .want = 401 }, NULL);
    const char *thumbs [] = { "/v1/images/{id}/thumbnail", "/images/{id}/thumbnail" };
    const char *formats [] = { "/v1/images/%s/thumbnail", "/images/%s/thumbnail" };
    for (size_t i = 0; i < 2; i++) {
        h_response_t resp;
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], id, 1), .key = S_KEY, .want = 200 },
                &resp);
        //  The resizer's tag: 40 lowercase hex characters, quoted.
        char etag [128] = "", headers [200];
        h_header (&resp, "ETag", etag, sizeof etag);
        cr_assert (strlen (etag) == 42 && etag [0] == '"' && etag [41] == '"'
                   && strspn (etag + 1, "0123456789abcdef") == 40, "ETag '%s'", etag);
        snprintf (headers, sizeof headers, "If-None-Match: \"x\", %s\r\n", etag);
        h_response_free (&resp);
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], id, 1), .key = S_KEY,
                              .headers = headers, .want = 304 }, NULL);
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], failed_id, 1), .key = S_KEY,
                              .want = 422 }, NULL);
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], S_UNKNOWN_ID, 1), .key = S_KEY,
                              .want = 404 }, NULL);
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], "xyz", 1), .key = S_KEY,
                              .want = 400 }, NULL);
        s_call (&(s_call_t) { .method = "GET", .doc = thumbs [i],
                              .path = s_path (formats [i], id, 1), .want = 401 }, NULL);
    }
}

//  A GET of a thumbnail with `headers`; returns its Content-Type (static).
static const char *
s_thumbnail_type (const char *path, const char *headers, int want)
{
    static char type [128];
    h_response_t resp;
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}/thumbnail", .path = path,
                          .key = S_KEY, .headers = headers, .want = want }, &resp);
    type [0] = 0;
    h_header (&resp, "Content-Type", type, sizeof type);
    h_response_free (&resp);
    return type;
}

//  Several sizes: each listed in the status is served at its url; a size
//  the job was not asked for is 404, a malformed one 400. Walked when the
//  status lists `thumbnails` (the renditions stream is in this build).
static void
s_walk_sizes (void)
{
    s_wait_final (s_sizes_id, "done");
    h_response_t resp;
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}",
                          .path = s_path ("/v1/images/%s", s_sizes_id, 0), .key = S_KEY,
                          .want = 200 }, &resp);
    json_t *status = h_json (&resp);
    h_response_free (&resp);
    json_t *list = json_object_get (status, "thumbnails");
    if (!list) {
        json_array_append_new (s_unwalked, json_string ("?size= and the thumbnails list"));
        json_decref (status);
        return;
    }
    cr_assert_geq (json_array_size (list), 2, "two sizes asked for");
    size_t i;
    json_t *one;
    json_array_foreach (list, i, one) {
        const char *url = json_string_value (json_object_get (one, "url"));
        cr_assert (url && strstr (url, s_sizes_id), "thumbnails[%zu].url", i);
        s_thumbnail_type (url, NULL, 200);
    }
    json_decref (status);
    s_thumbnail_type (s_path ("/v1/images/%s/thumbnail?size=9x9", s_sizes_id, 3), NULL, 404);
    s_thumbnail_type (s_path ("/v1/images/%s/thumbnail?size=big", s_sizes_id, 3), NULL, 400);
}

//  format=auto: the format follows Accept, and the answer says Vary:
//  Accept. Walked when the thumbnail route says Vary.
static void
s_walk_auto (void)
{
    const char *path = s_path ("/v1/images/%s/thumbnail", s_sizes_id, 4);
    h_response_t resp;
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}/thumbnail", .path = path,
                          .key = S_KEY, .headers = "Accept: */*\r\n", .want = 200 }, &resp);
    char vary [64] = "", type [128] = "";
    h_header (&resp, "Vary", vary, sizeof vary);
    h_header (&resp, "Content-Type", type, sizeof type);
    h_response_free (&resp);
    if (strcasecmp (vary, "Accept") != 0) {
        json_array_append_new (s_unwalked, json_string ("format=auto by Accept, Vary: Accept"));
        return;
    }
    cr_assert_str_eq (type, "image/jpeg", "*/* gets the family: JPEG for a photo without alpha");
    cr_assert_str_eq (s_thumbnail_type (path, "Accept: image/webp,*/*\r\n", 200), "image/webp");
}

//  A thumbnail asked for while no resizer runs: 202, the status, Retry-After.
static void
s_walk_pending (void)
{
    cr_assert_eq (h_pause (s_cluster->resizer [0].pid), 0);
    size_t size = 0;
    void *png = h_make_image ("png", 50, 50, false, &size);
    const char *id = s_upload ("/v1/images", "/v1/images", png, size, false, 5);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}/thumbnail",
                          .path = s_path ("/v1/images/%s/thumbnail", id, 2), .key = S_KEY,
                          .want = 202 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/images/{id}/thumbnail",
                          .path = s_path ("/images/%s/thumbnail", id, 2), .key = S_KEY,
                          .want = 202 }, NULL);
    cr_assert_eq (h_resume (s_cluster->resizer [0].pid), 0);
    free (png);
}

//  A small PNG uploaded on both upload routes gets `want`.
static void
s_upload_both (int want)
{
    size_t size = 0;
    void *png = h_make_image ("png", 50, 50, false, &size);
    const char *routes [] = { "/v1/images", "/images" };
    for (size_t i = 0; i < 2; i++)
        s_call (&(s_call_t) { .method = "POST", .doc = routes [i], .path = routes [i],
                              .key = S_KEY, .type = "image/png", .body = png, .size = size,
                              .want = want }, NULL);
    free (png);
}

//  With the broker gone, every route that asks it answers 503.
static void
s_walk_broker_down (const char *id)
{
    cr_assert_eq (h_proc_signal (&s_cluster->broker, SIGKILL, 10000), 0);
    s_call (&(s_call_t) { .method = "GET", .doc = "/healthz", .path = "/healthz", .want = 503 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/readyz", .path = "/readyz", .want = 503 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/cluster", .path = "/v1/cluster",
                          .key = S_KEY, .want = 503 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}",
                          .path = s_path ("/v1/images/%s", id, 0), .key = S_KEY, .want = 503 },
            NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/v1/images/{id}/thumbnail",
                          .path = s_path ("/v1/images/%s/thumbnail", id, 1), .key = S_KEY,
                          .want = 503 }, NULL);
    s_call (&(s_call_t) { .method = "GET", .doc = "/images/{id}/thumbnail",
                          .path = s_path ("/images/%s/thumbnail", id, 1), .key = S_KEY,
                          .want = 503 }, NULL);
    s_upload_both (503);
}

//  True when /readyz gives `arg` as its reason.
static bool
s_ready_reason_is (void *arg)
{
    h_response_t resp;
    if (h_http (s_port (), "GET", "/readyz", NULL, NULL, 0, &resp, S_TIMEOUT_MS) != 0)
        return false;
    bool is = s_error_member_is (&resp, "reason", arg);
    h_response_free (&resp);
    return is;
}

//  The broker back with --max-spool-bytes 1: its spool already holds more,
//  so uploads get 507 and /readyz says spool_full (once the resizer is
//  back: until then it says no_resizer, the first reason it checks).
static void
s_walk_spool_full (void)
{
    s_cluster->opts.broker_extra [0] = "--max-spool-bytes";
    s_cluster->opts.broker_extra [1] = "1";
    s_cluster->opts.broker_extra [2] = NULL;
    cr_assert_eq (h_cluster_broker_start (s_cluster), 0);
    cr_assert_geq (h_wait_status (s_port (), "/healthz", 200, 20000), 0, "the broker is not back");
    s_upload_both (507);
    cr_assert (h_wait_until (s_ready_reason_is, "spool_full", 20000),
               "/readyz never said spool_full");
    h_response_t resp;
    s_call (&(s_call_t) { .method = "GET", .doc = "/readyz", .path = "/readyz", .want = 503 },
            &resp);
    cr_assert (s_error_member_is (&resp, "reason", "spool_full"), "readyz: %s", resp.body);
    h_response_free (&resp);
}

//  Every documented operation was seen answering a 2xx or 3xx, and one of
//  its documented errors when it documents any.
static void
s_coverage (void)
{
    const char *path, *method;
    json_t *item, *op;
    json_object_foreach (json_object_get (s_doc, "paths"), path, item)
        json_object_foreach (item, method, op) {
            char key [256];
            snprintf (key, sizeof key, "%s %s", method, path);
            json_t *codes = json_object_get (s_seen, key);
            bool success = false, error = false, documents_error = false;
            const char *code;
            json_t *value;
            json_object_foreach (codes, code, value) {
                success = success || code [0] == '2' || code [0] == '3';
                error = error || code [0] == '4' || code [0] == '5';
            }
            json_object_foreach (json_object_get (op, "responses"), code, value)
                documents_error = documents_error || code [0] == '4' || code [0] == '5';
            cr_assert (success, "%s: no success answer was walked", key);
            cr_assert (error || !documents_error, "%s: none of its documented errors was walked",
                       key);
        }
    char *seen = json_dumps (s_seen, JSON_SORT_KEYS | JSON_COMPACT);
    cr_log_info ("walked (operation: status -> calls): %s", seen);
    free (seen);
    char *unwalked = json_dumps (s_unwalked, JSON_COMPACT);
    if (json_array_size (s_unwalked))
        cr_log_warn ("documented, not in this build, not walked: %s", unwalked);
    free (unwalked);
}

Test (openapi, every_operation_answers_as_documented, .init = s_setup, .fini = s_teardown,
      .timeout = 300)
{
    h_vips_init ();
    s_doc_load ();
    s_walk_service ();
    const char *failed_id = NULL;
    const char *id = s_walk_uploads (&failed_id);
    s_walk_jobs (id, failed_id);
    s_walk_sizes ();
    s_walk_auto ();
    s_walk_pending ();
    s_walk_broker_down (id);
    s_walk_spool_full ();
    s_coverage ();
    h_cluster_pass (s_cluster);
}

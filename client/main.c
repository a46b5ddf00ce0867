/*  imgpipe — the command-line client of the imgpipe HTTP API.

    Why: a user (or a script) should be able to upload an image, ask how it
    is doing and fetch its thumbnail without writing HTTP by hand:
        imgpipe submit photo.jpg --width 200 --format webp   -> prints the id
        imgpipe status ID                                    -> prints JSON
        imgpipe get ID -o thumb.webp --wait-s 30             -> writes the file
    This file parses flags (proto/imgp_conf) and runs one command over
    imgp_http_client; it holds no HTTP or socket code of its own.

    Never: write a partial thumbnail to OUT (it is written to a temporary
    name and renamed), or retry a request that the server refused for a
    reason a retry cannot fix.
*/
#include "imgp_conf.h"
#include "imgp_http_client.h"
#include "imgp_id.h"
#include "imgp_log.h"
#include "imgp_opts.h"

#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

//  Exit codes, also listed in --help.
enum {
    S_EXIT_OK = 0,          //  the command did what was asked
    S_EXIT_REFUSED = 1,     //  the server refused, or the job failed
    S_EXIT_USAGE = 2,       //  bad flags or arguments
    S_EXIT_TRANSPORT = 3    //  server unreachable, or --wait-s passed
};

#define S_UPLOAD_MAX ((size_t) 256 * 1024 * 1024)
#define S_QUERY_MAX 512

//  --timeout-ms, read once in s_run; the watchdog below needs it.
static long long s_timeout_ms = 30000;

static const imgp_conf_spec_t s_specs [] = {
    { "url", "http://127.0.0.1:8080", "base URL of an imgpipe frontend" },
    { "width", "", "submit: box width in pixels (server default 100)" },
    { "height", "", "submit: box height in pixels (server default 100)" },
    { "fit", "", "submit: inside, cover or fill (server default inside)" },
    { "format", "", "submit: png, jpeg, webp or avif (server default png)" },
    { "quality", "", "submit: 1..100 for lossy formats" },
    { "enlarge", NULL, "submit: let images smaller than the box grow" },
    { "output", "", "get: file to write the thumbnail to, '-' for stdout (also -o)" },
    { "wait-s", "30", "get: seconds to wait for the thumbnail" },
    { "timeout-ms", "30000", "time to wait for each HTTP response" },
    { NULL, NULL, NULL }
};

static const char *s_summary =
    "imgpipe [OPTIONS] COMMAND ARGS — command-line client of the imgpipe HTTP API.\n"
    "\n"
    "Commands:\n"
    "  submit FILE      upload FILE ('-' reads stdin) and print the job id\n"
    "  status ID        print the job's status as JSON\n"
    "  get ID -o OUT    wait for the thumbnail (honouring Retry-After) and write it\n"
    "\n"
    "Options may come before or after the command.\n"
    "Exit status: 0 done, 1 refused by the server or the job failed, 2 bad usage,\n"
    "3 server unreachable or --wait-s passed.";

static const imgp_conf_spec_t *
s_spec_find (const char *name, size_t len)
{
    for (const imgp_conf_spec_t *s = s_specs; s->name; s++)
        if (strlen (s->name) == len && strncmp (s->name, name, len) == 0)
            return s;
    return NULL;
}

//  imgp_conf stops at the first positional argument; commands read better
//  with their options after them ("get ID -o OUT"). Rewrite argv as
//  [program, options..., "--", positionals...], mapping -o to --output.
//  Returns a new array (caller frees) or NULL with a message printed.
static char **
s_permute (int argc, char **argv, int *new_argc)
{
    char **out = calloc ((size_t) argc * 2 + 2, sizeof *out);
    char **positional = calloc ((size_t) argc + 1, sizeof *positional);
    if (!out || !positional) {
        fprintf (stderr, "imgpipe: out of memory\n");
        free (out);
        free (positional);
        return NULL;
    }
    int n = 0, p = 0;
    out [n++] = argv [0];
    for (int i = 1; i < argc; i++) {
        char *arg = argv [i];
        if (strcmp (arg, "--") == 0) {
            while (++i < argc)
                positional [p++] = argv [i];
            break;
        }
        const char *problem = NULL;
        if (strcmp (arg, "-o") == 0 || strncmp (arg, "--", 2) == 0) {
            bool short_o = arg [1] == 'o';
            const char *name = short_o ? "output" : arg + 2;
            const imgp_conf_spec_t *spec = s_spec_find (name, strlen (name));
            out [n++] = short_o ? "--output" : arg;
            if (spec && spec->dflt) {       //  "--width 50": value follows
                if (i + 1 < argc)
                    out [n++] = argv [++i];
                else
                    problem = "needs a value";
            }
        }
        else
        if (arg [0] == '-' && arg [1] != 0)
            problem = "is unknown (see --help)";
        else
            positional [p++] = arg;
        if (problem) {
            fprintf (stderr, "imgpipe: option '%s' %s\n", arg, problem);
            free (out);
            free (positional);
            return NULL;
        }
    }
    out [n++] = "--";
    for (int i = 0; i < p; i++)
        out [n++] = positional [i];
    free (positional);
    *new_argc = n;
    return out;
}

static long long
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_sleep_ms (long long ms)
{
    struct timespec ts = { (time_t) (ms / 1000), (long) (ms % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) != 0 && errno == EINTR)
        ;
}

//  civetweb 1.15's client has a timeout for the response head only: once
//  the head is in, mg_read waits for the body forever (a client
//  connection carries no request_timeout). A stalled server must not hang
//  a script, so every request runs under a process timer that ends the
//  run with S_EXIT_TRANSPORT. Only async-signal-safe calls in the handler.
static void
s_watchdog_fired (int signum)
{
    (void) signum;
    static const char text [] = "imgpipe: the server did not send a whole response in time\n";
    ssize_t ignored = write (STDERR_FILENO, text, sizeof text - 1);
    (void) ignored;
    _exit (S_EXIT_TRANSPORT);
}

static void
s_watchdog_set (long long ms)
{
    struct itimerval timer = { { 0, 0 }, { (time_t) (ms / 1000), (suseconds_t) (ms % 1000) * 1000 } };
    setitimer (ITIMER_REAL, &timer, NULL);
}

//  One request under the watchdog: the head timeout plus a second of
//  grace, so civetweb's own (clearer) timeout message wins when it can.
static int
s_request (imgp_http_client_t *http, const char *method, const char *path,
           const char *content_type, const void *body, size_t body_size)
{
    s_watchdog_set (s_timeout_ms + 1000);
    int rc = imgp_http_client_request (http, method, path, content_type, body, body_size);
    s_watchdog_set (0);
    return rc;
}

//  Print what the server said about a refused request: its JSON error
//  {"error":{"code","message"}} when there is one, else the raw status.
static int
s_report_refusal (imgp_http_client_t *http, const char *what)
{
    size_t size = 0;
    const char *body = imgp_http_client_body (http, &size);
    json_t *root = body ? json_loadb (body, size, 0, NULL) : NULL;
    json_t *error = json_object_get (root, "error");
    const char *code = json_string_value (json_object_get (error, "code"));
    const char *message = json_string_value (json_object_get (error, "message"));
    if (code || message)
        fprintf (stderr, "imgpipe: %s: HTTP %d %s: %s\n", what, imgp_http_client_status (http),
                 code ? code : "error", message ? message : "(no message)");
    else
        fprintf (stderr, "imgpipe: %s: HTTP %d\n", what, imgp_http_client_status (http));
    const char *retry = imgp_http_client_header (http, "Retry-After");
    if (retry)
        fprintf (stderr, "imgpipe: the server asks to retry after %s s\n", retry);
    json_decref (root);
    return S_EXIT_REFUSED;
}

static int
s_report_transport (imgp_http_client_t *http)
{
    fprintf (stderr, "imgpipe: %s\n", imgp_http_client_error (http));
    return S_EXIT_TRANSPORT;
}

//  Read a whole file ('-' = stdin) into a new buffer, at most S_UPLOAD_MAX.
static int
s_read_file (const char *path, char **data, size_t *size)
{
    FILE *file = strcmp (path, "-") == 0 ? stdin : fopen (path, "rb");
    if (!file) {
        fprintf (stderr, "imgpipe: cannot open '%s': %s\n", path, strerror (errno));
        return -1;
    }
    size_t capacity = 65536, used = 0;
    char *buffer = malloc (capacity);
    int rc = buffer ? 0 : -1;
    while (rc == 0) {
        if (used == capacity) {
            char *grown = capacity < S_UPLOAD_MAX ? realloc (buffer, capacity * 2) : NULL;
            if (!grown) {
                fprintf (stderr, "imgpipe: '%s' is larger than %zu bytes\n", path, S_UPLOAD_MAX);
                rc = -1;
                break;
            }
            buffer = grown;
            capacity *= 2;
        }
        size_t n = fread (buffer + used, 1, capacity - used, file);
        used += n;
        if (n == 0) {
            if (ferror (file)) {
                fprintf (stderr, "imgpipe: cannot read '%s': %s\n", path, strerror (errno));
                rc = -1;
            }
            break;
        }
    }
    if (file != stdin)
        fclose (file);
    if (rc != 0) {
        free (buffer);
        return -1;
    }
    *data = buffer;
    *size = used;
    return 0;
}

//  Append "key=value" to the query when the option was given, escaping
//  everything outside the URL-unreserved set.
static void
s_query_add (char *query, size_t query_size, const char *key, const char *value)
{
    if (!value || !*value)
        return;
    size_t len = strlen (query);
    len += (size_t) snprintf (query + len, query_size - len, "%s%s=", len ? "&" : "", key);
    for (const unsigned char *c = (const unsigned char *) value; *c && len + 4 < query_size; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
        ||  strchr ("-._~", *c))
            query [len++] = (char) *c;
        else
            len += (size_t) snprintf (query + len, query_size - len, "%%%02X", *c);
    }
    query [len] = 0;
}

//  Build the submit query from the flags and check it with the same
//  validator the server uses, so a typo fails before any upload.
static int
s_submit_query (imgp_conf_t *conf, char *query, size_t query_size)
{
    const char *keys [] = { "width", "height", "fit", "format", "quality", NULL };
    query [0] = 0;
    for (int i = 0; keys [i]; i++)
        s_query_add (query, query_size, keys [i], imgp_conf_str (conf, keys [i]));
    if (imgp_conf_bool (conf, "enlarge"))
        s_query_add (query, query_size, "enlarge", "true");
    imgp_opts_t opts;
    const char *error = NULL;
    if (imgp_opts_parse_query (&opts, query, &error) != 0) {
        fprintf (stderr, "imgpipe: %s\n", error ? error : "bad thumbnail option");
        return -1;
    }
    return 0;
}

static int
s_cmd_submit (imgp_http_client_t *http, imgp_conf_t *conf, int argc, char **argv)
{
    if (argc != 1) {
        fprintf (stderr, "imgpipe: usage: imgpipe submit FILE [--width N ...]\n");
        return S_EXIT_USAGE;
    }
    char query [S_QUERY_MAX];
    if (s_submit_query (conf, query, sizeof query) != 0)
        return S_EXIT_USAGE;
    char *data = NULL;
    size_t size = 0;
    if (s_read_file (argv [0], &data, &size) != 0)
        return S_EXIT_USAGE;

    char path [S_QUERY_MAX + 16];
    snprintf (path, sizeof path, "/v1/images%s%s", *query ? "?" : "", query);
    int rc = s_request (http, "POST", path, "application/octet-stream",
                                       data, size);
    free (data);
    if (rc != 0)
        return s_report_transport (http);
    if (imgp_http_client_status (http) != 202)
        return s_report_refusal (http, "upload refused");

    json_t *root = json_loads (imgp_http_client_body (http, NULL), 0, NULL);
    const char *id = json_string_value (json_object_get (root, "id"));
    int exit_code = S_EXIT_OK;
    if (id && imgp_id_valid (id))
        printf ("%s\n", id);
    else {
        fprintf (stderr, "imgpipe: the server accepted the upload but sent no valid id\n");
        exit_code = S_EXIT_REFUSED;
    }
    json_decref (root);
    return exit_code;
}

//  Check the single ID argument of status/get.
static const char *
s_id_arg (int argc, char **argv, const char *usage)
{
    if (argc != 1) {
        fprintf (stderr, "imgpipe: usage: %s\n", usage);
        return NULL;
    }
    if (!imgp_id_valid (argv [0])) {
        fprintf (stderr, "imgpipe: '%s' is not a job id (32 lowercase hex characters)\n",
                 argv [0]);
        return NULL;
    }
    return argv [0];
}

static int
s_cmd_status (imgp_http_client_t *http, int argc, char **argv)
{
    const char *id = s_id_arg (argc, argv, "imgpipe status ID");
    if (!id)
        return S_EXIT_USAGE;
    char path [64];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    if (s_request (http, "GET", path, NULL, NULL, 0) != 0)
        return s_report_transport (http);
    if (imgp_http_client_status (http) != 200)
        return s_report_refusal (http, "status refused");
    size_t size = 0;
    const char *body = imgp_http_client_body (http, &size);
    fwrite (body, 1, size, stdout);
    if (size == 0 || body [size - 1] != '\n')
        putchar ('\n');
    return S_EXIT_OK;
}

//  Write the thumbnail to `out` through a temporary file and a rename, so
//  OUT never holds a partial image.
static int
s_write_output (const char *out, const char *data, size_t size)
{
    if (strcmp (out, "-") == 0)
        return fwrite (data, 1, size, stdout) == size && fflush (stdout) == 0 ? 0 : -1;
    char tmp [4096];
    if (snprintf (tmp, sizeof tmp, "%s.tmp%ld", out, (long) getpid ()) >= (int) sizeof tmp) {
        fprintf (stderr, "imgpipe: output path too long\n");
        return -1;
    }
    FILE *file = fopen (tmp, "wb");
    int rc = file ? 0 : -1;
    if (file && fwrite (data, 1, size, file) != size)
        rc = -1;
    if (file && fclose (file) != 0)
        rc = -1;
    if (rc == 0 && rename (tmp, out) != 0)
        rc = -1;
    if (rc != 0) {
        fprintf (stderr, "imgpipe: cannot write '%s': %s\n", out, strerror (errno));
        unlink (tmp);
    }
    return rc;
}

//  Delay asked for by Retry-After (delta-seconds; HTTP dates not used by
//  imgpipe), else half a second; never under 50 ms.
static long long
s_retry_after_ms (imgp_http_client_t *http)
{
    const char *value = imgp_http_client_header (http, "Retry-After");
    char *end = NULL;
    long seconds = value ? strtol (value, &end, 10) : -1;
    if (!value || end == value || seconds < 0 || seconds > 3600)
        return 500;
    return seconds == 0 ? 50 : seconds * 1000;
}

//  Pending job: the state from the 202 status JSON, for messages.
static void
s_pending_state (imgp_http_client_t *http, char *state, size_t state_size)
{
    json_t *root = json_loads (imgp_http_client_body (http, NULL), 0, NULL);
    const char *value = json_string_value (json_object_get (root, "status"));
    snprintf (state, state_size, "%s", value ? value : "pending");
    json_decref (root);
}

static int
s_cmd_get (imgp_http_client_t *http, imgp_conf_t *conf, int argc, char **argv)
{
    const char *id = s_id_arg (argc, argv, "imgpipe get ID -o OUT [--wait-s N]");
    const char *out = imgp_conf_str (conf, "output");
    long long wait_s = 0;
    if (!id || imgp_conf_long (conf, "wait-s", 0, 86400, &wait_s) != 0)
        return S_EXIT_USAGE;
    if (!out || !*out) {
        fprintf (stderr, "imgpipe: get needs -o OUT (or --output OUT)\n");
        return S_EXIT_USAGE;
    }
    char path [64];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    char state [32] = "pending";
    long long deadline = s_now_ms () + wait_s * 1000;
    while (true) {
        if (s_request (http, "GET", path, NULL, NULL, 0) != 0)
            return s_report_transport (http);
        int status = imgp_http_client_status (http);
        if (status == 200) {
            size_t size = 0;
            const char *body = imgp_http_client_body (http, &size);
            imgp_debug ("job=%s event=downloaded bytes=%zu type=%s", id, size,
                        imgp_http_client_header (http, "Content-Type"));
            return s_write_output (out, body, size) == 0 ? S_EXIT_OK : S_EXIT_REFUSED;
        }
        if (status == 422)
            return s_report_refusal (http, "job failed");
        if (status != 202 && status != 503)
            return s_report_refusal (http, "download refused");
        if (status == 202)
            s_pending_state (http, state, sizeof state);
        long long now = s_now_ms ();
        if (now >= deadline)
            break;
        long long delay = s_retry_after_ms (http);
        s_sleep_ms (delay < deadline - now ? delay : deadline - now);
    }
    fprintf (stderr, "imgpipe: job %s is still %s after %lld s\n", id, state, wait_s);
    return S_EXIT_TRANSPORT;
}

static int
s_run (imgp_conf_t *conf, int argc, char **argv)
{
    if (argc < 1) {
        fprintf (stderr, "imgpipe: no command given (submit, status or get; see --help)\n");
        return S_EXIT_USAGE;
    }
    if (imgp_conf_long (conf, "timeout-ms", 1, 3600000, &s_timeout_ms) != 0)
        return S_EXIT_USAGE;
    char error [256];
    imgp_http_client_t *http = imgp_http_client_new (imgp_conf_str (conf, "url"), error,
                                                     sizeof error);
    if (!http) {
        fprintf (stderr, "imgpipe: %s\n", error);
        return S_EXIT_USAGE;
    }
    imgp_http_client_set_timeout (http, (int) s_timeout_ms);
    const char *command = argv [0];
    int exit_code;
    if (strcmp (command, "submit") == 0)
        exit_code = s_cmd_submit (http, conf, argc - 1, argv + 1);
    else
    if (strcmp (command, "status") == 0)
        exit_code = s_cmd_status (http, argc - 1, argv + 1);
    else
    if (strcmp (command, "get") == 0)
        exit_code = s_cmd_get (http, conf, argc - 1, argv + 1);
    else {
        fprintf (stderr, "imgpipe: unknown command '%s' (submit, status or get)\n", command);
        exit_code = S_EXIT_USAGE;
    }
    imgp_http_client_destroy (&http);
    return exit_code;
}

int
main (int argc, char **argv)
{
    //  A server that answers early and closes must not kill us mid-upload.
    signal (SIGPIPE, SIG_IGN);
    signal (SIGALRM, s_watchdog_fired);
    int conf_argc = 0;
    char **conf_argv = s_permute (argc, argv, &conf_argc);
    if (!conf_argv)
        return S_EXIT_USAGE;
    imgp_conf_t *conf = imgp_conf_new ("imgpipe", s_summary, s_specs);
    if (!conf) {
        free (conf_argv);
        return S_EXIT_USAGE;
    }
    int exit_code = S_EXIT_USAGE;
    int rc = imgp_conf_parse (conf, conf_argc, conf_argv);
    if (rc == 1)
        exit_code = S_EXIT_OK;
    else
    if (rc == 0) {
        imgp_log_init ("imgpipe", imgp_conf_bool (conf, "verbose"));
        exit_code = s_run (conf, imgp_conf_argc (conf), imgp_conf_argv (conf));
    }
    imgp_conf_destroy (&conf);
    free (conf_argv);
    return exit_code;
}

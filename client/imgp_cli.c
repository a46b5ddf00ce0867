/*  imgp_cli — see imgp_cli.h.

    submit, get and every batch worker go through imgp_roundtrip (one
    upload -> wait -> download routine, one deadline, one retry rule).
    Single commands (submit, status, get) make one request at a time and
    run each under a process timer armed by the routine's watchdog hooks
    with the routine's limit: civetweb 1.15's client has a timeout for the
    response head only (a client connection carries no request_timeout),
    so a stalled body would otherwise hang a script. The timer ends the
    run with exit 3. `batch` has threads, so it cannot use a process
    timer; imgp_batch's monitor is its watchdog, on the same limits.
*/
#include "imgp_cli.h"

#include "imgp_api.h"
#include "imgp_batch.h"
#include "imgp_curve.h"
#include "imgp_file.h"
#include "imgp_http_client.h"
#include "imgp_id.h"
#include "imgp_inputs.h"
#include "imgp_log.h"
#include "imgp_roundtrip.h"

#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define S_UPLOAD_MAX ((size_t) 256 * 1024 * 1024)
//  Most --long-poll-s taken. Frontends allow up to 30 s today
//  (--max-wait-s); a larger ask is lowered by the frontend's 400.
#define S_LONG_POLL_MAX_S 300

//  Every option of every command, so one table fills it (imgp_conf_load).
typedef struct {
    const char *url;            //  base URL of the frontend
    const char *width;          //  thumbnail options as text, "" = server default
    const char *height;
    const char *fit;
    const char *format;
    const char *quality;
    bool enlarge;               //  let small images grow
    const char *output;         //  get: file; batch: directory
    int64_t wait_s;             //  seconds to wait for each thumbnail
    int long_poll_s;            //  longest ?wait= asked of the frontend, 0 to poll
    int parallel;               //  batch: files in flight
    int timeout_ms;             //  per HTTP response
} s_config_t;

const imgp_conf_spec_t imgp_cli_specs [] = {
    IMGP_CONF_STR (s_config_t, url, "url", "http://127.0.0.1:8080",
                   "base URL of an imgpipe frontend"),
    IMGP_CONF_STR (s_config_t, width, "width", "",
                   "submit, batch: box width in pixels (server default 100)"),
    IMGP_CONF_STR (s_config_t, height, "height", "",
                   "submit, batch: box height in pixels (server default 100)"),
    IMGP_CONF_STR (s_config_t, fit, "fit", "",
                   "submit, batch: inside, cover, fill or contain (server default inside)"),
    IMGP_CONF_STR (s_config_t, format, "format", "",
                   "submit, batch: png, jpeg, webp, avif or auto (server default png)"),
    IMGP_CONF_STR (s_config_t, quality, "quality", "", "submit, batch: 1..100 for lossy formats"),
    IMGP_CONF_FLAG (s_config_t, enlarge, "enlarge",
                    "submit, batch: let images smaller than the box grow"),
    IMGP_CONF_STR (s_config_t, output, "output", "",
                   "get: file for the thumbnail, '-' for stdout; batch: directory (also -o)"),
    IMGP_CONF_NUM (s_config_t, wait_s, "wait-s", 30, 0, 86400,
                   "get, batch: seconds to wait for each thumbnail"),
    IMGP_CONF_NUM (s_config_t, long_poll_s, "long-poll-s", 25, 0, S_LONG_POLL_MAX_S,
                   "get, batch: longest the server is asked to hold one request (?wait=), "
                   "0 to poll"),
    IMGP_CONF_NUM (s_config_t, parallel, "parallel", 8, 1, 256,
                   "batch: files in flight at once"),
    IMGP_CONF_NUM (s_config_t, timeout_ms, "timeout-ms", 30000, 1, 3600000,
                   "time to wait for each HTTP response, beyond its ?wait="),
    IMGP_CONF_END
};

const char imgp_cli_summary [] =
    "imgpipe [OPTIONS] COMMAND ARGS — command-line client of the imgpipe HTTP API.\n"
    "\n"
    "Commands:\n"
    "  keygen PATH      write a CURVE key pair for the links between hosts: PATH\n"
    "                   (public, for the broker's --curve-clients or the others'\n"
    "                   --curve-server) and PATH_secret (mode 0600, --curve-secret)\n"
    "  submit FILE      upload FILE ('-' reads stdin) and print the job id\n"
    "  status ID        print the job's status as JSON\n"
    "  get ID -o OUT    wait for the thumbnail and write it: each request asks the\n"
    "                   server to hold it until the job ends (?wait=, up to\n"
    "                   --long-poll-s), all within --wait-s; a server that does\n"
    "                   not hold requests is polled as its Retry-After says\n"
    "  batch DIR|MANIFEST -o OUTDIR\n"
    "                   thumbnails of every file below DIR (recursive; hidden\n"
    "                   names skipped, symlink loops refused) or listed in\n"
    "                   MANIFEST (one path a line, or column 1 of a TSV with a\n"
    "                   header line; relative to its directory), --parallel at a\n"
    "                   time, into OUTDIR mirroring each file's place (a/b.jpg ->\n"
    "                   OUTDIR/a/b.png). Run it again to resume: files whose\n"
    "                   thumbnail OUTDIR holds, made with the same options, are\n"
    "                   skipped (OUTDIR/.imgpipe-batch.state). A bar on a\n"
    "                   terminal, else 'ok FILE -> OUT WxH Nms WORKER' or\n"
    "                   'failed FILE: CODE: MESSAGE' per file; a summary, and\n"
    "                   OUTDIR/imgpipe-report.jsonl (a JSON line per file). Keeps\n"
    "                   going when a file fails; Ctrl-C stops cleanly and prints\n"
    "                   the command to resume; waits for each job as get does\n"
    "\n"
    "Options may come before or after the command.\n"
    "Exit status: 0 done, 1 refused by the server or a job failed (batch: any\n"
    "file failed), 2 bad usage, 3 server unreachable or --wait-s passed,\n"
    "130 batch stopped by Ctrl-C.";

//  --timeout-ms, set by s_client; the watchdog needs it.
static long long s_timeout_ms;

//  --------------------------------------------------------------------------
//  Arguments

static const imgp_conf_spec_t *
s_spec_find (const char *name)
{
    for (const imgp_conf_spec_t *s = imgp_cli_specs; s->name; s++)
        if (strcmp (s->name, name) == 0)
            return s;
    return imgp_conf_builtin (name);    //  --log-format json
}

char **
imgp_cli_argv (int argc, char **argv, int *new_argc)
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
            const imgp_conf_spec_t *spec = s_spec_find (short_o ? "output" : arg + 2);
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

//  The thumbnail options of the command line. Returns 0, or -1 with a
//  message printed.
static int
s_opts (const s_config_t *config, imgp_api_opts_t *opts)
{
    const char *problem = NULL;
    if (imgp_api_opts (opts, config->width, config->height, config->fit, config->format,
                       config->quality, config->enlarge, &problem) == 0)
        return 0;
    fprintf (stderr, "imgpipe: %s\n", problem);
    return -1;
}

//  The options into `config`. Returns 0, or -1 with the bad ones named.
static int
s_load (imgp_conf_t *conf, s_config_t *config)
{
    *config = (s_config_t) { 0 };
    return imgp_conf_load (conf, config);
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

//  An HTTP client for --url, or NULL with a message. Each request sets
//  its own timeout (s_request), from --timeout-ms kept here.
static imgp_http_client_t *
s_client (const s_config_t *config)
{
    s_timeout_ms = config->timeout_ms;
    char error [256];
    imgp_http_client_t *http = imgp_http_client_new (config->url, error, sizeof error);
    if (!http)
        fprintf (stderr, "imgpipe: %s\n", error);
    return http;
}

//  --------------------------------------------------------------------------
//  One request at a time

//  Only async-signal-safe calls in the handler.
static void
s_watchdog_fired (int signum)
{
    (void) signum;
    static const char text [] = "imgpipe: the server did not send a whole response in time\n";
    ssize_t ignored = write (STDERR_FILENO, text, sizeof text - 1);
    (void) ignored;
    _exit (IMGP_CLI_EXIT_TRANSPORT);
}

static void
s_watchdog_set (long long ms)
{
    struct itimerval timer = { { 0, 0 }, { (time_t) (ms / 1000), (suseconds_t) (ms % 1000) * 1000 } };
    setitimer (ITIMER_REAL, &timer, NULL);
}

//  One request under the watchdog: the head timeout (--timeout-ms plus
//  `extra_ms`, the ?wait= it asks for) plus a second of grace, so
//  civetweb's own (clearer) timeout message wins when it can.
static int
s_request (imgp_http_client_t *http, const char *method, const char *path,
           const void *body, size_t body_size, long long extra_ms)
{
    imgp_http_client_set_timeout (http, (int) (s_timeout_ms + extra_ms));
    signal (SIGALRM, s_watchdog_fired);
    s_watchdog_set (s_timeout_ms + extra_ms + 1000);
    int rc = imgp_http_client_request (http, method, path,
                                       body ? "application/octet-stream" : NULL, body, body_size);
    s_watchdog_set (0);
    return rc;
}

//  imgp_roundtrip's watchdog hooks for single commands: the process
//  timer, armed with the routine's limit for each request.
static void
s_watch_begin (void *hook, long long limit_ms)
{
    (void) hook;
    signal (SIGALRM, s_watchdog_fired);
    s_watchdog_set (limit_ms);
}

static bool
s_watch_end (void *hook)
{
    (void) hook;
    s_watchdog_set (0);
    return true;
}

//  A roundtrip for a single command, its deadline `wait_s` from now.
static imgp_roundtrip_t
s_trip (imgp_http_client_t *http, const char *query, const s_config_t *config)
{
    return (imgp_roundtrip_t) {
        .http = http, .query = query, .long_poll_s = config->long_poll_s,
        .timeout_ms = config->timeout_ms, .deadline = zclock_mono () + config->wait_s * 1000,
        .wait_s = config->wait_s, .begin = s_watch_begin, .end = s_watch_end
    };
}

//  Print why a roundtrip step did not succeed; the exit code.
static int
s_trip_failed (imgp_roundtrip_status_t status, const imgp_roundtrip_result_t *result,
               const char *what)
{
    fprintf (stderr, "imgpipe: %s: %s: %s\n", what, result->error.code, result->error.message);
    return status == IMGP_ROUNDTRIP_UNREACHED ? IMGP_CLI_EXIT_TRANSPORT : IMGP_CLI_EXIT_REFUSED;
}

//  Print what the server said about a refused request.
static int
s_report_refusal (imgp_http_client_t *http, const char *what)
{
    imgp_api_error_t error;
    int status = imgp_http_client_status (http);
    if (imgp_api_error (http, &error) == 0)
        fprintf (stderr, "imgpipe: %s: HTTP %d %s: %s\n", what, status, error.code,
                 error.message);
    else
        fprintf (stderr, "imgpipe: %s: HTTP %d\n", what, status);
    const char *retry = imgp_http_client_header (http, "Retry-After");
    if (retry)
        fprintf (stderr, "imgpipe: the server asks to retry after %s s\n", retry);
    return IMGP_CLI_EXIT_REFUSED;
}

static int
s_report_transport (imgp_http_client_t *http)
{
    fprintf (stderr, "imgpipe: %s\n", imgp_http_client_error (http));
    return IMGP_CLI_EXIT_TRANSPORT;
}

//  Upload `data` and print the id of the job.
static int
s_submit (imgp_http_client_t *http, const char *query, const s_config_t *config,
          const char *data, size_t size)
{
    imgp_roundtrip_t trip = s_trip (http, query, config);
    imgp_roundtrip_result_t result = { .id = "" };
    imgp_roundtrip_status_t status = imgp_roundtrip_upload (&trip, data, size, &result);
    if (status != IMGP_ROUNDTRIP_DONE)
        return s_trip_failed (status, &result, "upload refused");
    printf ("%s\n", result.id);
    return IMGP_CLI_EXIT_OK;
}

int
imgp_cli_submit (imgp_conf_t *conf, int argc, char **argv)
{
    if (argc != 1) {
        fprintf (stderr, "imgpipe: usage: imgpipe submit FILE [--width N ...]\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    s_config_t config;
    imgp_api_opts_t opts;
    if (s_load (conf, &config) != 0 || s_opts (&config, &opts) != 0)
        return IMGP_CLI_EXIT_USAGE;
    imgp_http_client_t *http = s_client (&config);
    if (!http)
        return IMGP_CLI_EXIT_USAGE;
    char *data = NULL;
    size_t size = 0;
    char problem [256];
    int exit_code = IMGP_CLI_EXIT_USAGE;
    if (imgp_file_read (argv [0], S_UPLOAD_MAX, &data, &size, problem, sizeof problem) != 0)
        fprintf (stderr, "imgpipe: '%s': %s\n", argv [0], problem);
    else
        exit_code = s_submit (http, opts.query, &config, data, size);
    free (data);
    imgp_http_client_destroy (&http);
    return exit_code;
}

int
imgp_cli_status (imgp_conf_t *conf, int argc, char **argv)
{
    const char *id = s_id_arg (argc, argv, "imgpipe status ID");
    s_config_t config;
    imgp_http_client_t *http = id && s_load (conf, &config) == 0 ? s_client (&config) : NULL;
    if (!http)
        return IMGP_CLI_EXIT_USAGE;
    char path [64];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    int exit_code = IMGP_CLI_EXIT_OK;
    if (s_request (http, "GET", path, NULL, 0, 0) != 0)
        exit_code = s_report_transport (http);
    else
    if (imgp_http_client_status (http) != 200)
        exit_code = s_report_refusal (http, "status refused");
    else {
        size_t size = 0;
        const char *body = imgp_http_client_body (http, &size);
        fwrite (body, 1, size, stdout);
        if (size == 0 || body [size - 1] != '\n')
            putchar ('\n');
    }
    imgp_http_client_destroy (&http);
    return exit_code;
}

int
imgp_cli_keygen (imgp_conf_t *conf, int argc, char **argv)
{
    (void) conf;
    if (argc != 1) {
        fprintf (stderr, "imgpipe: usage: imgpipe keygen PATH\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    char error [512];
    if (imgp_curve_keygen (argv [0], error, sizeof error) != 0) {
        fprintf (stderr, "imgpipe: keygen: %s\n", error);
        return IMGP_CLI_EXIT_REFUSED;
    }
    //  Only file names: the secret key is never printed.
    printf ("public key: %s (hand this file out)\nsecret key: %s_secret (keep it here, mode 0600)\n",
            argv [0], argv [0]);
    return IMGP_CLI_EXIT_OK;
}

//  Wait for job `id` and download its thumbnail (imgp_roundtrip, within
//  --wait-s from now), then write it to `out`.
static int
s_get (imgp_http_client_t *http, const char *id, const char *out, const s_config_t *config)
{
    imgp_roundtrip_t trip = s_trip (http, "", config);
    imgp_roundtrip_result_t result;
    memset (&result, 0, sizeof result);
    memcpy (result.id, id, IMGP_ID_LEN + 1);
    imgp_roundtrip_status_t status = imgp_roundtrip_wait (&trip, &result);
    //  A status that says "failed" is the job's end; any other refusal
    //  (404 for an unknown id) is the request's.
    const char *what = status != IMGP_ROUNDTRIP_FAILED ? "job not done"
                     : imgp_http_client_status (http) == 200 ? "job failed" : "status refused";
    if (status != IMGP_ROUNDTRIP_DONE)
        return s_trip_failed (status, &result, what);
    status = imgp_roundtrip_download (&trip, &result);
    if (status != IMGP_ROUNDTRIP_DONE)
        return s_trip_failed (status, &result, "download refused");
    char problem [256];
    if (imgp_file_write (out, result.thumb, result.thumb_size, problem, sizeof problem) == 0)
        return IMGP_CLI_EXIT_OK;
    fprintf (stderr, "imgpipe: '%s': %s\n", out, problem);
    return IMGP_CLI_EXIT_REFUSED;
}

int
imgp_cli_get (imgp_conf_t *conf, int argc, char **argv)
{
    const char *id = s_id_arg (argc, argv, "imgpipe get ID -o OUT [--wait-s N]");
    s_config_t config;
    if (!id || s_load (conf, &config) != 0)
        return IMGP_CLI_EXIT_USAGE;
    const char *out = config.output;
    if (!*out) {
        fprintf (stderr, "imgpipe: get needs -o OUT (or --output OUT)\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    imgp_http_client_t *http = s_client (&config);
    if (!http)
        return IMGP_CLI_EXIT_USAGE;
    int exit_code = s_get (http, id, out, &config);
    imgp_http_client_destroy (&http);
    return exit_code;
}

//  --------------------------------------------------------------------------
//  Batch

//  Append `arg` to `out` quoted for a POSIX shell when it needs it.
static void
s_shell_quote (char *out, size_t out_size, const char *arg)
{
    size_t len = strlen (out);
    bool plain = *arg && strspn (arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789-_./=:,+@%") == strlen (arg);
    const char *sep = len ? " " : "";
    if (plain) {
        snprintf (out + len, out_size - len, "%s%s", sep, arg);
        return;
    }
    len += (size_t) snprintf (out + len, out_size - len, "%s'", sep);
    for (const char *c = arg; *c && len + 6 < out_size; c++)
        len += (size_t) snprintf (out + len, out_size - len, *c == '\'' ? "'\\''" : "%c", *c);
    snprintf (out + len, out_size - len, "'");
}

//  The command line this process was started with, quoted for a shell, so
//  an interrupted batch can say exactly how to resume. From
//  /proc/self/cmdline: main() keeps no argv, and the words as typed are
//  what the user knows. NULL when it cannot be read (not Linux).
static char *
s_command_line (void)
{
    char *data = NULL, problem [256];
    size_t size = 0;
    if (imgp_file_read ("/proc/self/cmdline", 65536, &data, &size, problem, sizeof problem) != 0)
        return NULL;
    size_t out_size = size * 4 + 16;
    char *out = calloc (1, out_size);
    for (size_t at = 0; out && at < size; at += strlen (data + at) + 1)
        s_shell_quote (out, out_size, data + at);
    free (data);
    return out;
}

//  Read and check the flags of batch into `config`. Returns 0, or -1 with
//  a message printed.
static int
s_batch_config (const s_config_t *options, imgp_api_opts_t *opts, imgp_batch_config_t *config)
{
    if (s_opts (options, opts) != 0)
        return -1;
    //  Checks --url before any file is read.
    imgp_http_client_t *http = s_client (options);
    if (!http)
        return -1;
    imgp_http_client_destroy (&http);
    *config = (imgp_batch_config_t) {
        .url = options->url,
        .query = opts->query,
        .outdir = options->output,
        .parallel = options->parallel,
        .wait_ms = options->wait_s * 1000,
        .long_poll_s = options->long_poll_s,
        .timeout_ms = options->timeout_ms,
        .max_upload = S_UPLOAD_MAX,
        .out = stdout,
        .bar = isatty (STDOUT_FILENO),
        .signals = true
    };
    return 0;
}

//  The inputs of `source` with their outputs in `outdir`, which is made
//  when missing. NULL with a message printed.
static imgp_inputs_t *
s_batch_inputs (const char *source, const char *outdir, const char *ext)
{
    char error [512];
    struct stat st;
    if (stat (source, &st) != 0) {
        fprintf (stderr, "imgpipe: cannot open '%s': %s\n", source, strerror (errno));
        return NULL;
    }
    if (imgp_file_mkdirs (outdir, error, sizeof error) != 0) {
        fprintf (stderr, "imgpipe: '%s': %s\n", outdir, error);
        return NULL;
    }
    struct stat out_st;
    if (stat (outdir, &out_st) == 0 && out_st.st_dev == st.st_dev && out_st.st_ino == st.st_ino) {
        fprintf (stderr, "imgpipe: OUTDIR '%s' is the input directory: thumbnails would "
                         "replace originals; give another -o\n", outdir);
        return NULL;
    }
    imgp_inputs_t *inputs = imgp_inputs_new (source, outdir, ext, error, sizeof error);
    if (!inputs)
        fprintf (stderr, "imgpipe: %s\n", error);
    return inputs;
}

int
imgp_cli_batch (imgp_conf_t *conf, int argc, char **argv)
{
    s_config_t options;
    if (s_load (conf, &options) != 0)
        return IMGP_CLI_EXIT_USAGE;
    const char *outdir = options.output;
    if (argc != 1) {
        fprintf (stderr, "imgpipe: usage: imgpipe batch DIR|MANIFEST -o OUTDIR "
                         "[--parallel N] [--wait-s N] [--width N ...]\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    if (!*outdir || strcmp (outdir, "-") == 0) {
        fprintf (stderr, "imgpipe: batch needs -o OUTDIR, a directory for the thumbnails\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    imgp_api_opts_t opts;
    imgp_batch_config_t config;
    if (s_batch_config (&options, &opts, &config) != 0)
        return IMGP_CLI_EXIT_USAGE;
    imgp_inputs_t *inputs = s_batch_inputs (argv [0], outdir, opts.ext);
    if (!inputs)
        return IMGP_CLI_EXIT_USAGE;
    char *command = s_command_line ();
    config.resume_command = command;
    imgp_batch_stats_t stats;
    char error [512];
    int rc = imgp_batch_run (&config, inputs, &stats, error, sizeof error);
    if (rc < 0)
        fprintf (stderr, "imgpipe: %s\n", error);
    else
    if (stats.done + stats.skipped + stats.failed == 0 && !stats.interrupted)
        fprintf (stderr, "imgpipe: no input files in '%s'\n", argv [0]);
    free (command);
    imgp_inputs_destroy (&inputs);
    return rc < 0 ? IMGP_CLI_EXIT_USAGE : rc == 0 ? IMGP_CLI_EXIT_OK
         : rc == 2 ? IMGP_CLI_EXIT_INTERRUPTED : IMGP_CLI_EXIT_REFUSED;
}

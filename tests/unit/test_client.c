/*  test_client — unit tests of client/: the HTTP client's self-test, the
    batch input list (directory, plain manifest, TSV manifest, output
    names), file I/O, option and argument handling of the commands, and
    the batch run itself against an in-process stub of the HTTP API.

    The stub is a civetweb server on a loopback port (port 0, read back)
    that answers by the content of the uploaded file: "ok" is accepted and
    done at once, "busy" gets 503 + Retry-After twice first, "slow" stays
    queued for a few polls, "fail" ends failed, "refuse" gets 415, "stall"
    is accepted but its thumbnail download stops mid-body until the test
    releases it, "later" is done 2 s after it is first seen. The stub holds
    a status or thumbnail request of "later" for its ?wait= as a frontend
    does (up to its --max-wait-s, 400 bad_option beyond), or ignores ?wait=
    as an old frontend would, and counts the requests, so a test can tell
    a long-poll from a polling loop without timing anything. No broker,
    resizer or real frontend is involved.

    Never: depend on a port number, a network beyond 127.0.0.1, or files
    outside a temporary directory (the corpus manifest test skips itself
    when ../shared/corpus is not there).
*/
#include <arpa/inet.h>
#include <civetweb.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <czmq.h>

#include "imgp_api.h"
#include "imgp_batch.h"
#include "imgp_cli.h"
#include "imgp_conf.h"
#include "imgp_file.h"
#include "imgp_http_client.h"
#include "imgp_inputs.h"

#define ID_OK "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ID_SLOW "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define ID_FAIL "ffffffffffffffffffffffffffffffff"
#define ID_STALL "55555555555555555555555555555555"
#define ID_LATER "cccccccccccccccccccccccccccccccc"
#define LATER_MS 2000           //  "later" is done this long after first seen
#define THUMB "THUMBNAIL-BYTES"

//  --------------------------------------------------------------------------
//  Helpers

static char s_dir [256];

static void
s_tmpdir (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/imgp-test-client-XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_cleanup (void)
{
    char command [400];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    cr_expect_eq (system (command), 0);
}

//  Write `text` to s_dir/name; returns the full path (static buffer).
static const char *
s_write (const char *name, const char *text)
{
    static char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    FILE *file = fopen (path, "wb");
    cr_assert_not_null (file, "cannot write %s", path);
    fputs (text, file);
    fclose (file);
    return path;
}

static imgp_inputs_t *
s_inputs (const char *source)
{
    char error [512] = "";
    imgp_inputs_t *inputs = imgp_inputs_new (source, error, sizeof error);
    cr_assert_not_null (inputs, "imgp_inputs_new (%s): %s", source, error);
    return inputs;
}

static bool
s_exists (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0;
}

//  --------------------------------------------------------------------------
//  imgp_http_client

Test (http_client, self_test)
{
    imgp_http_client_test (false);
}

//  --------------------------------------------------------------------------
//  imgp_inputs: listing

Test (inputs, directory_lists_regular_files_sorted_skipping_hidden, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_write ("b.png", "b");
    s_write ("a.jpg", "a");
    s_write ("c", "c");
    s_write (".hidden.jpg", "h");
    char sub [400], link [400], dangling [400];
    snprintf (sub, sizeof sub, "%s/subdir", s_dir);
    cr_assert_eq (mkdir (sub, 0700), 0);
    s_write ("subdir/deep.jpg", "d");
    snprintf (link, sizeof link, "%s/link.jpg", s_dir);
    cr_assert_eq (symlink ("a.jpg", link), 0);
    snprintf (dangling, sizeof dangling, "%s/dangling.jpg", s_dir);
    cr_assert_eq (symlink ("nowhere.jpg", dangling), 0);

    imgp_inputs_t *inputs = s_inputs (s_dir);
    const char *want [] = { "a.jpg", "b.png", "c", "link.jpg" };
    cr_assert_eq (imgp_inputs_size (inputs), 4);
    for (size_t i = 0; i < 4; i++) {
        char path [512];
        snprintf (path, sizeof path, "%s/%s", s_dir, want [i]);
        cr_expect_str_eq (imgp_inputs_path (inputs, i), path);
        cr_expect_null (imgp_inputs_output (inputs, i));
    }
    imgp_inputs_destroy (&inputs);
    imgp_inputs_destroy (&inputs);
    cr_assert_null (inputs);
}

Test (inputs, empty_directory_is_an_empty_list, .init = s_tmpdir, .fini = s_cleanup)
{
    imgp_inputs_t *inputs = s_inputs (s_dir);
    cr_expect_eq (imgp_inputs_size (inputs), 0);
    imgp_inputs_destroy (&inputs);
}

Test (inputs, plain_manifest_is_relative_to_its_directory, .init = s_tmpdir,
      .fini = s_cleanup)
{
    const char *manifest = s_write ("list.txt",
        "photos/a.jpg\n"
        "\n"
        "# a comment\n"
        "b.png\r\n"
        "/abs/c.gif\n"
        "with space.jpg\n"
        "last-without-newline.jpg");
    imgp_inputs_t *inputs = s_inputs (manifest);
    cr_assert_eq (imgp_inputs_size (inputs), 5);
    char path [512];
    snprintf (path, sizeof path, "%s/photos/a.jpg", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 0), path);
    snprintf (path, sizeof path, "%s/b.png", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 1), path);
    cr_expect_str_eq (imgp_inputs_path (inputs, 2), "/abs/c.gif");
    snprintf (path, sizeof path, "%s/with space.jpg", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 3), path);
    snprintf (path, sizeof path, "%s/last-without-newline.jpg", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 4), path);
    imgp_inputs_destroy (&inputs);
}

Test (inputs, manifest_in_the_current_directory_keeps_paths_as_listed, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_write ("list.txt", "x/a.jpg\nb.jpg\n");
    char cwd [512];
    cr_assert_not_null (getcwd (cwd, sizeof cwd));
    cr_assert_eq (chdir (s_dir), 0);
    imgp_inputs_t *inputs = s_inputs ("list.txt");
    cr_assert_eq (chdir (cwd), 0);
    cr_assert_eq (imgp_inputs_size (inputs), 2);
    cr_expect_str_eq (imgp_inputs_path (inputs, 0), "x/a.jpg");
    cr_expect_str_eq (imgp_inputs_path (inputs, 1), "b.jpg");
    imgp_inputs_destroy (&inputs);
}

Test (inputs, tsv_manifest_skips_its_header_and_takes_column_one, .init = s_tmpdir,
      .fini = s_cleanup)
{
    const char *manifest = s_write ("MANIFEST.tsv",
        "path\tformat\twidth\texpect\n"
        "photos/p01.jpg\tjpeg\t1280\tok\n"
        "\n"
        "bad/empty.jpg\tnone\t-\treject\n");
    imgp_inputs_t *inputs = s_inputs (manifest);
    cr_assert_eq (imgp_inputs_size (inputs), 2);
    char path [512];
    snprintf (path, sizeof path, "%s/photos/p01.jpg", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 0), path);
    snprintf (path, sizeof path, "%s/bad/empty.jpg", s_dir);
    cr_expect_str_eq (imgp_inputs_path (inputs, 1), path);
    imgp_inputs_destroy (&inputs);
}

//  The corpus manifest: in $IMGP_CORPUS, as for the other suites, else
//  ../shared/corpus/MANIFEST.tsv beside the checkout, found from this
//  program's path (BUILD/tests/test_client, BUILD inside the checkout).
static void
s_corpus_manifest (char *path, size_t path_size)
{
    const char *corpus = getenv ("IMGP_CORPUS");
    if (corpus && *corpus) {
        snprintf (path, path_size, "%s/MANIFEST.tsv", corpus);
        return;
    }
    char exe [400];
    ssize_t len = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    exe [len > 0 ? len : 0] = 0;
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr (exe, '/');
        if (slash)
            *slash = 0;
    }
    snprintf (path, path_size, "%s/../shared/corpus/MANIFEST.tsv", exe);
}

Test (inputs, corpus_manifest_lists_every_file)
{
    char manifest [512];
    s_corpus_manifest (manifest, sizeof manifest);
    if (!s_exists (manifest))
        cr_skip_test ("no corpus at %s", manifest);
    imgp_inputs_t *inputs = s_inputs (manifest);
    cr_expect_eq (imgp_inputs_size (inputs), 41);
    for (size_t i = 0; i < imgp_inputs_size (inputs); i++)
        cr_expect (s_exists (imgp_inputs_path (inputs, i)), "listed but missing: %s",
                   imgp_inputs_path (inputs, i));
    imgp_inputs_destroy (&inputs);
}

Test (inputs, unreadable_sources_are_refused_with_a_message, .init = s_tmpdir,
      .fini = s_cleanup)
{
    char error [512] = "";
    char path [400];
    snprintf (path, sizeof path, "%s/missing", s_dir);
    cr_expect_null (imgp_inputs_new (path, error, sizeof error));
    cr_expect (strstr (error, "cannot open") && strstr (error, "missing"), "%s", error);

    static const char nul [] = "a.jpg\nb\0c.jpg\n";
    snprintf (path, sizeof path, "%s/nul.txt", s_dir);
    FILE *file = fopen (path, "wb");
    cr_assert (file && fwrite (nul, 1, sizeof nul - 1, file) == sizeof nul - 1);
    fclose (file);
    error [0] = 0;
    cr_expect_null (imgp_inputs_new (path, error, sizeof error));
    cr_expect (strstr (error, ":2: holds a NUL byte"), "%s", error);
}

//  --------------------------------------------------------------------------
//  imgp_inputs: output names

Test (inputs, outputs_drop_the_extension_and_never_collide, .init = s_tmpdir,
      .fini = s_cleanup)
{
    const char *manifest = s_write ("list.txt",
        "one/photo.jpg\n"
        "two/photo.png\n"
        "photo-2.gif\n"
        "archive.tar.gz\n"
        ".profile\n"
        "noext\n"
        "one/photo.jpg\n");
    imgp_inputs_t *inputs = s_inputs (manifest);
    cr_assert_eq (imgp_inputs_set_outputs (inputs, "/out/", "webp"), 0);
    const char *want [] = { "/out/photo.webp", "/out/photo-2.webp", "/out/photo-2-2.webp",
                            "/out/archive.tar.webp", "/out/.profile.webp", "/out/noext.webp",
                            "/out/photo-3.webp" };
    cr_assert_eq (imgp_inputs_size (inputs), 7);
    for (size_t i = 0; i < 7; i++)
        cr_expect_str_eq (imgp_inputs_output (inputs, i), want [i]);
    //  Naming again replaces, and an OUTDIR without '/' gets one.
    cr_assert_eq (imgp_inputs_set_outputs (inputs, "out", "png"), 0);
    cr_expect_str_eq (imgp_inputs_output (inputs, 0), "out/photo.png");
    imgp_inputs_destroy (&inputs);
}

Test (inputs, output_paths_too_long_are_refused, .init = s_tmpdir, .fini = s_cleanup)
{
    imgp_inputs_t *inputs = s_inputs (s_write ("list.txt", "a.jpg\n"));
    char outdir [5000];
    memset (outdir, 'd', sizeof outdir - 1);
    outdir [sizeof outdir - 1] = 0;
    cr_expect_eq (imgp_inputs_set_outputs (inputs, outdir, "png"), -1);
    imgp_inputs_destroy (&inputs);
}

//  --------------------------------------------------------------------------
//  imgp_file

Test (file, read_is_bounded_and_write_leaves_no_temporary, .init = s_tmpdir,
      .fini = s_cleanup)
{
    const char *path = s_write ("ten.bin", "0123456789");
    char *data = NULL;
    size_t size = 0;
    char error [256];
    cr_assert_eq (imgp_file_read (path, 10, &data, &size, error, sizeof error), 0);
    cr_expect (size == 10 && memcmp (data, "0123456789", 10) == 0);
    free (data);
    cr_expect_eq (imgp_file_read (path, 9, &data, &size, error, sizeof error), -1);
    cr_expect (strstr (error, "over the limit of 9 bytes"), "%s", error);
    cr_expect_eq (imgp_file_read (s_dir, 100, &data, &size, error, sizeof error), -1);
    cr_expect_str_eq (error, "is a directory");

    char out [400];
    snprintf (out, sizeof out, "%s/made/deeper", s_dir);
    cr_assert_eq (imgp_file_mkdirs (out, error, sizeof error), 0, "%s", error);
    cr_assert_eq (imgp_file_mkdirs (out, error, sizeof error), 0, "again: %s", error);
    cr_expect_eq (imgp_file_mkdirs (path, error, sizeof error), -1, "a file is no directory");
    strcat (out, "/thumb.png");
    cr_assert_eq (imgp_file_write (out, "PNG", 3, error, sizeof error), 0, "%s", error);
    cr_assert_eq (imgp_file_read (out, 100, &data, &size, error, sizeof error), 0);
    cr_expect (size == 3 && memcmp (data, "PNG", 3) == 0);
    free (data);
    char command [600];
    snprintf (command, sizeof command, "test $(ls -A '%s/made/deeper' | wc -l) -eq 1", s_dir);
    cr_expect_eq (system (command), 0, "a temporary file was left behind");
    snprintf (out, sizeof out, "%s/nodir/thumb.png", s_dir);
    cr_expect_eq (imgp_file_write (out, "PNG", 3, error, sizeof error), -1);
    cr_expect (strstr (error, "cannot write"), "%s", error);
}

//  --------------------------------------------------------------------------
//  imgp_api: thumbnail options

Test (api, options_become_an_escaped_checked_query)
{
    imgp_api_opts_t opts;
    const char *problem = NULL;
    cr_assert_eq (imgp_api_opts (&opts, NULL, "", NULL, NULL, NULL, false, &problem), 0);
    cr_expect_str_eq (opts.query, "");
    cr_expect_str_eq (opts.ext, "png");
    cr_assert_eq (imgp_api_opts (&opts, "80", "60", "cover", "jpeg", "75", true, &problem), 0);
    cr_expect_str_eq (opts.query, "width=80&height=60&fit=cover&format=jpeg&quality=75&enlarge=true");
    cr_expect_str_eq (opts.ext, "jpg");
    cr_assert_eq (imgp_api_opts (&opts, NULL, NULL, NULL, "avif", NULL, false, &problem), 0);
    cr_expect_str_eq (opts.ext, "avif");
    cr_expect_eq (imgp_api_opts (&opts, "0", NULL, NULL, NULL, NULL, false, &problem), -1);
    cr_expect_not_null (problem);
    cr_expect_eq (imgp_api_opts (&opts, NULL, NULL, NULL, "gif", NULL, false, &problem), -1);
    //  A value that tries to add a parameter is escaped, then refused.
    cr_expect_eq (imgp_api_opts (&opts, "1&format=gif", NULL, NULL, NULL, NULL, false,
                                 &problem), -1);
    cr_expect (strstr (opts.query, "1%26format%3Dgif"), "%s", opts.query);
}

//  --------------------------------------------------------------------------
//  imgp_cli: argument handling

//  Permute and parse `args` (NULL-terminated, program name first) into a
//  configuration; the command's own arguments come back in argc/argv.
typedef struct {
    char **permuted;            //  from imgp_cli_argv
    imgp_conf_t *conf;          //  parsed flags
    int argc;                   //  positional arguments
    char **argv;                //  positional arguments (command first)
} s_cmdline_t;

static void
s_cmdline (s_cmdline_t *cmd, char **args)
{
    int argc = 0;
    while (args [argc])
        argc++;
    int permuted_argc = 0;
    cmd->permuted = imgp_cli_argv (argc, args, &permuted_argc);
    cr_assert_not_null (cmd->permuted);
    cmd->conf = imgp_conf_new ("imgpipe", imgp_cli_summary, imgp_cli_specs);
    cr_assert_eq (imgp_conf_parse (cmd->conf, permuted_argc, cmd->permuted), 0);
    cmd->argc = imgp_conf_argc (cmd->conf);
    cmd->argv = imgp_conf_argv (cmd->conf);
}

static void
s_cmdline_free (s_cmdline_t *cmd)
{
    imgp_conf_destroy (&cmd->conf);
    free (cmd->permuted);
}

Test (cli, options_may_follow_the_command)
{
    char *args [] = { "imgpipe", "get", "ID", "-o", "out.png", "--wait-s", "5",
                      "--width=50", "--enlarge", "--", "-not-an-option", NULL };
    s_cmdline_t cmd;
    s_cmdline (&cmd, args);
    cr_assert_eq (cmd.argc, 3);
    cr_expect_str_eq (cmd.argv [0], "get");
    cr_expect_str_eq (cmd.argv [1], "ID");
    cr_expect_str_eq (cmd.argv [2], "-not-an-option");
    cr_expect_str_eq (imgp_conf_str (cmd.conf, "output"), "out.png");
    cr_expect_str_eq (imgp_conf_str (cmd.conf, "wait-s"), "5");
    cr_expect_str_eq (imgp_conf_str (cmd.conf, "width"), "50");
    cr_expect (imgp_conf_bool (cmd.conf, "enlarge"));
    s_cmdline_free (&cmd);
}

Test (cli, a_missing_value_or_unknown_short_option_is_refused)
{
    int n = 0;
    char *missing [] = { "imgpipe", "batch", "dir", "--parallel" };
    cr_expect_null (imgp_cli_argv (4, missing, &n));
    char *short_opt [] = { "imgpipe", "batch", "dir", "-p", "4" };
    cr_expect_null (imgp_cli_argv (5, short_opt, &n));
    char *dash [] = { "imgpipe", "submit", "-" };
    char **permuted = imgp_cli_argv (3, dash, &n);
    cr_assert_not_null (permuted, "'-' (stdin) is a positional argument");
    cr_expect (n == 4 && strcmp (permuted [3], "-") == 0);
    free (permuted);
}

//  Run a command line through its imgp_cli command; its exit code.
static int
s_run (char **args)
{
    s_cmdline_t cmd;
    s_cmdline (&cmd, args);
    cr_assert_geq (cmd.argc, 1);
    int (*run) (imgp_conf_t *, int, char **) =
        strcmp (cmd.argv [0], "submit") == 0 ? imgp_cli_submit
      : strcmp (cmd.argv [0], "status") == 0 ? imgp_cli_status
      : strcmp (cmd.argv [0], "get") == 0 ? imgp_cli_get : imgp_cli_batch;
    int exit_code = run (cmd.conf, cmd.argc - 1, cmd.argv + 1);
    s_cmdline_free (&cmd);
    return exit_code;
}

Test (cli, bad_usage_exits_2_before_any_request, .init = s_tmpdir, .fini = s_cleanup)
{
    char outdir [400], missing [400];
    snprintf (outdir, sizeof outdir, "%s/out", s_dir);
    snprintf (missing, sizeof missing, "%s/missing", s_dir);
    s_write ("a.jpg", "a");
    //  The URL is a closed port: reaching it would exit 1 or 3, not 2.
    char *url = "--url=http://127.0.0.1:1";
    char *cases [][12] = {
        { "imgpipe", url, "batch", NULL },
        { "imgpipe", url, "batch", s_dir, NULL },
        { "imgpipe", url, "batch", s_dir, "-o", "-", NULL },
        { "imgpipe", url, "batch", s_dir, s_dir, "-o", outdir, NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--parallel", "0", NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--parallel", "257", NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--wait-s", "-1", NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--long-poll-s", "-1", NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--format", "gif", NULL },
        { "imgpipe", url, "batch", s_dir, "-o", outdir, "--width", "5000", NULL },
        { "imgpipe", url, "batch", missing, "-o", outdir, NULL },
        { "imgpipe", "--url=ftp://x", "batch", s_dir, "-o", outdir, NULL },
        { "imgpipe", url, "submit", NULL },
        { "imgpipe", url, "submit", missing, NULL },
        { "imgpipe", url, "status", "not-an-id", NULL },
        { "imgpipe", url, "get", ID_OK, NULL },
        { "imgpipe", url, "get", "ABC", "-o", outdir, NULL },
        { "imgpipe", url, "get", ID_OK, "-o", outdir, "--long-poll-s", "x", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        cr_expect_eq (s_run (cases [i]), IMGP_CLI_EXIT_USAGE, "case %zu (%s %s) should exit 2",
                      i, cases [i][2], cases [i][3] ? cases [i][3] : "");
    cr_expect_not (s_exists (outdir), "OUTDIR made although the arguments were bad");
}

Test (cli, unreachable_server_exits_3_for_single_commands)
{
    char *status [] = { "imgpipe", "--url=http://127.0.0.1:1", "status", ID_OK, NULL };
    cr_expect_eq (s_run (status), IMGP_CLI_EXIT_TRANSPORT);
}

//  --------------------------------------------------------------------------
//  imgp_batch against a stub of the HTTP API

static struct mg_context *s_stub;
static int s_stub_port;
static atomic_int s_busy_left;          //  503s still to give to "busy" uploads
static atomic_int s_slow_polls;         //  status polls of the "slow" job
static atomic_bool s_release;           //  the stalled download may end
static atomic_llong s_later_at;         //  when "later" is done, 0 until first seen
static atomic_bool s_ignore_wait;       //  act as an old frontend: no ?wait=
static atomic_int s_max_wait;           //  the stub's --max-wait-s
static atomic_int s_later_status;       //  status requests of "later"
static atomic_int s_later_thumbs;       //  thumbnail requests of "later"
static atomic_int s_wait_refused;       //  400s for a ?wait= over s_max_wait
static atomic_int s_wait_last;          //  the last ?wait= asked, -1 for none

static int
s_reply (struct mg_connection *conn, int status, const char *type, const char *extra,
         const char *body)
{
    mg_printf (conn, "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s", status, type, strlen (body), extra, body);
    return status;
}

static int
s_reply_json (struct mg_connection *conn, int status, const char *json)
{
    return s_reply (conn, status, "application/json", "", json);
}

static int
s_stub_upload (struct mg_connection *conn)
{
    char body [64] = "";
    int size = 0, n;
    while ((n = mg_read (conn, body + size, sizeof body - 1 - (size_t) size)) > 0)
        size += n;
    body [size] = 0;
    const char *id = strncmp (body, "ok", 2) == 0 ? ID_OK
                   : strncmp (body, "slow", 4) == 0 ? ID_SLOW
                   : strncmp (body, "later", 5) == 0 ? ID_LATER
                   : strncmp (body, "fail", 4) == 0 ? ID_FAIL
                   : strncmp (body, "stall", 5) == 0 ? ID_STALL : NULL;
    if (strncmp (body, "busy", 4) == 0) {
        if (atomic_fetch_sub (&s_busy_left, 1) > 0)
            return s_reply (conn, 503, "application/json", "Retry-After: 0\r\n",
                            "{\"error\":{\"code\":\"queue_full\",\"message\":\"busy\"}}");
        id = ID_OK;
    }
    if (!id)
        return s_reply_json (conn, 415, "{\"error\":{\"code\":\"unsupported_format\","
                                        "\"message\":\"not a supported image\"}}");
    char json [200];
    snprintf (json, sizeof json, "{\"id\":\"%s\",\"status\":\"queued\"}", id);
    return s_reply_json (conn, 202, json);
}

//  True when "later" is done; the first call starts its clock.
static bool
s_later_done (void)
{
    long long none = 0;
    atomic_compare_exchange_strong (&s_later_at, &none, (long long) zclock_mono () + LATER_MS);
    return zclock_mono () >= atomic_load (&s_later_at);
}

//  A request of "later": hold it for its ?wait= while the job is pending,
//  as a frontend does. Returns false after answering 400 for a wait over
//  the stub's --max-wait-s.
static bool
s_later_hold (struct mg_connection *conn)
{
    const char *query = mg_get_request_info (conn)->query_string;
    char text [16];
    int len = query ? mg_get_var (query, strlen (query), "wait", text, sizeof text) : -1;
    int wait_s = len > 0 ? atoi (text) : -1;
    atomic_store (&s_wait_last, wait_s);
    if (wait_s < 0 || atomic_load (&s_ignore_wait))
        return true;
    if (wait_s > atomic_load (&s_max_wait)) {
        atomic_fetch_add (&s_wait_refused, 1);
        char json [160];
        snprintf (json, sizeof json, "{\"error\":{\"code\":\"bad_option\",\"message\":"
                  "\"wait must be whole seconds from 0 to %d\"}}", atomic_load (&s_max_wait));
        s_reply_json (conn, 400, json);
        return false;
    }
    long long until = (long long) zclock_mono () + wait_s * 1000LL;
    while (!s_later_done () && zclock_mono () < until)
        usleep (10000);
    return true;
}

static int
s_stub_status (struct mg_connection *conn, const char *id)
{
    if (strcmp (id, ID_LATER) == 0) {
        atomic_fetch_add (&s_later_status, 1);
        if (!s_later_hold (conn))
            return 400;
        if (!s_later_done ())
            return s_reply_json (conn, 200, "{\"status\":\"processing\"}");
    }
    if (strcmp (id, ID_FAIL) == 0)
        return s_reply_json (conn, 200, "{\"status\":\"failed\",\"error\":{\"code\":"
                                        "\"decode_error\",\"message\":\"bad\\ndata\"}}");
    if (strcmp (id, ID_SLOW) == 0 && atomic_fetch_add (&s_slow_polls, 1) < 3)
        return s_reply_json (conn, 200, "{\"status\":\"processing\"}");
    return s_reply_json (conn, 200, "{\"status\":\"done\",\"result\":{\"width\":10,"
                                    "\"height\":20,\"format\":\"png\",\"bytes\":15}}");
}

static int
s_stub_thumbnail (struct mg_connection *conn, const char *id)
{
    if (strcmp (id, ID_LATER) == 0) {
        atomic_fetch_add (&s_later_thumbs, 1);
        if (!s_later_hold (conn))
            return 400;
        if (!s_later_done ())
            return s_reply (conn, 202, "application/json", "Retry-After: 1\r\n",
                            "{\"status\":\"processing\"}");
    }
    if (strcmp (id, ID_STALL) != 0)
        return s_reply (conn, 200, "image/png", "", THUMB);
    //  A head, part of the body, then nothing until released.
    mg_printf (conn, "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100\r\n"
                     "Connection: close\r\n\r\nPART");
    for (int i = 0; i < 3000 && !atomic_load (&s_release); i++)
        usleep (10000);
    return 200;
}

static int
s_stub_handler (struct mg_connection *conn, void *data)
{
    (void) data;
    const struct mg_request_info *info = mg_get_request_info (conn);
    const char *uri = info->local_uri;
    if (strcmp (info->request_method, "POST") == 0 && strcmp (uri, "/v1/images") == 0)
        return s_stub_upload (conn);
    char id [33] = "";
    if (sscanf (uri, "/v1/images/%32[0-9a-f]", id) == 1 && strlen (uri) == 11 + 32)
        return s_stub_status (conn, id);
    if (sscanf (uri, "/v1/images/%32[0-9a-f]/thumbnail", id) == 1)
        return s_stub_thumbnail (conn, id);
    return s_reply_json (conn, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no\"}}");
}

static void
s_stub_start (void)
{
    s_tmpdir ();
    atomic_store (&s_busy_left, 2);
    atomic_store (&s_slow_polls, 0);
    atomic_store (&s_release, false);
    atomic_store (&s_later_at, 0);
    atomic_store (&s_ignore_wait, false);
    atomic_store (&s_max_wait, 30);
    atomic_store (&s_later_status, 0);
    atomic_store (&s_later_thumbs, 0);
    atomic_store (&s_wait_refused, 0);
    atomic_store (&s_wait_last, -1);
    mg_init_library (0);
    const char *options [] = { "listening_ports", "127.0.0.1:0", "num_threads", "8", NULL };
    s_stub = mg_start (NULL, NULL, options);
    cr_assert_not_null (s_stub);
    mg_set_request_handler (s_stub, "/v1/images", s_stub_handler, NULL);
    struct mg_server_port ports [1];
    cr_assert_geq (mg_get_server_ports (s_stub, 1, ports), 1);
    s_stub_port = ports [0].port;
}

static void
s_stub_stop (void)
{
    atomic_store (&s_release, true);
    mg_stop (s_stub);
    mg_exit_library ();
    s_cleanup ();
}

typedef struct {
    int rc;                     //  imgp_batch_run's return
    imgp_batch_stats_t stats;   //  its counts
    char text [8192];           //  everything it printed
} s_run_t;

//  Run a batch over the manifest s_dir/list.txt into s_dir/out, asking
//  the server to hold status requests up to `long_poll_s`.
static void
s_batch (s_run_t *run, const char *url, int parallel, long long wait_ms, int long_poll_s,
         int timeout_ms)
{
    char manifest [400], outdir [400], error [256] = "";
    snprintf (manifest, sizeof manifest, "%s/list.txt", s_dir);
    snprintf (outdir, sizeof outdir, "%s/out", s_dir);
    cr_assert_eq (imgp_file_mkdirs (outdir, error, sizeof error), 0, "%s", error);
    imgp_inputs_t *inputs = s_inputs (manifest);
    cr_assert_eq (imgp_inputs_set_outputs (inputs, outdir, "png"), 0);
    FILE *out = tmpfile ();
    cr_assert_not_null (out);
    imgp_batch_config_t config = {
        .url = url, .query = "width=10", .parallel = parallel, .wait_ms = wait_ms,
        .long_poll_s = long_poll_s, .timeout_ms = timeout_ms, .max_upload = 1024, .out = out
    };
    run->rc = imgp_batch_run (&config, inputs, &run->stats, error, sizeof error);
    cr_assert_geq (run->rc, 0, "imgp_batch_run: %s", error);
    rewind (out);
    size_t size = fread (run->text, 1, sizeof run->text - 1, out);
    run->text [size] = 0;
    fclose (out);
    imgp_inputs_destroy (&inputs);
}

//  s_batch against the stub, its output logged.
static void
s_batch_stub (s_run_t *run, int parallel, long long wait_ms, int long_poll_s, int timeout_ms)
{
    char url [64];
    snprintf (url, sizeof url, "http://127.0.0.1:%d", s_stub_port);
    s_batch (run, url, parallel, wait_ms, long_poll_s, timeout_ms);
    cr_log_info ("%s", run->text);
}

//  True when the run printed `line` as a whole line.
static bool
s_printed (s_run_t *run, const char *line)
{
    size_t len = strlen (line);
    for (const char *at = strstr (run->text, line); at; at = strstr (at + 1, line))
        if ((at == run->text || at [-1] == '\n') && at [len] == '\n')
            return true;
    return false;
}

static void
s_expect_line (s_run_t *run, const char *format, const char *file)
{
    char line [1024];
    snprintf (line, sizeof line, format, s_dir, file, s_dir, file);
    cr_expect (s_printed (run, line), "no line '%s' in:\n%s", line, run->text);
}

//  The file at `path` holds the stub's thumbnail.
static void
s_expect_thumb (const char *path)
{
    char *data = NULL, error [256];
    size_t size = 0;
    cr_expect_eq (imgp_file_read (path, 100, &data, &size, error, sizeof error), 0, "%s: %s",
                  path, error);
    cr_expect (data && size == strlen (THUMB) && memcmp (data, THUMB, size) == 0);
    free (data);
}

//  The run printed that `name`.jpg was done, and its thumbnail is there.
static void
s_expect_done (s_run_t *run, const char *name)
{
    char line [600], thumb [400];
    snprintf (line, sizeof line, "ok %s/%s.jpg -> %s/out/%s.png 10x20 ", s_dir, name, s_dir,
              name);
    cr_expect (strstr (run->text, line), "no '%s' in:\n%s", line, run->text);
    snprintf (thumb, sizeof thumb, "%s/out/%s.png", s_dir, name);
    s_expect_thumb (thumb);
}

Test (batch, keeps_going_past_failures_and_retries_busy_uploads, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    s_write ("ok1.jpg", "ok 1");
    s_write ("ok2.jpg", "ok 2");
    s_write ("busy.jpg", "busy");
    s_write ("slow.jpg", "slow");
    s_write ("fail.jpg", "fail");
    s_write ("refuse.jpg", "refuse");
    char big_text [2000];
    memset (big_text, '.', sizeof big_text - 1);
    big_text [sizeof big_text - 1] = 0;
    memcpy (big_text, "ok", 2);
    s_write ("big.jpg", big_text);      //  over the 1 KiB limit of this run
    s_write ("list.txt", "ok1.jpg\nbusy.jpg\nfail.jpg\nmissing.jpg\nslow.jpg\nrefuse.jpg\n"
             "big.jpg\nok2.jpg\n");
    s_run_t run;
    s_batch_stub (&run, 3, 20000, 25, 5000);

    cr_expect_eq (run.rc, 1, "a failed file makes the run return 1");
    cr_expect_eq (run.stats.done, 4);
    cr_expect_eq (run.stats.failed, 4);
    cr_expect_eq (atomic_load (&s_busy_left), -1, "busy was not sent three times");
    cr_expect_geq (atomic_load (&s_slow_polls), 4, "slow was not polled until done");
    const char *done [] = { "ok1", "ok2", "busy", "slow" };
    for (size_t i = 0; i < 4; i++)
        s_expect_done (&run, done [i]);
    s_expect_line (&run, "failed %s/%s: decode_error: bad data", "fail.jpg");
    s_expect_line (&run, "failed %s/%s: unsupported_format: not a supported image",
                   "refuse.jpg");
    s_expect_line (&run, "failed %s/%s: unreadable: cannot open: No such file or directory",
                   "missing.jpg");
    struct stat st;
    char big [400], line [600];
    snprintf (big, sizeof big, "%s/big.jpg", s_dir);
    cr_assert_eq (stat (big, &st), 0);
    snprintf (line, sizeof line, "failed %s: unreadable: %lld bytes, over the limit of 1024 bytes",
              big, (long long) st.st_size);
    cr_expect (s_printed (&run, line), "no line '%s' in:\n%s", line, run.text);
    cr_expect (strstr (run.text, "\n4 done, 4 failed, "), "no summary in:\n%s", run.text);
    char command [600];
    snprintf (command, sizeof command, "test $(ls -A '%s/out' | wc -l) -eq 4", s_dir);
    cr_expect_eq (system (command), 0, "OUTDIR holds more than the 4 thumbnails");
}

Test (batch, a_stalled_download_fails_its_file_and_the_run_goes_on, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    s_write ("ok1.jpg", "ok 1");
    s_write ("stall.jpg", "stall");
    s_write ("ok2.jpg", "ok 2");
    s_write ("list.txt", "ok1.jpg\nstall.jpg\nok2.jpg\n");
    s_run_t run;
    //  One worker: once it is left behind, the file it never took fails too.
    s_batch_stub (&run, 1, 20000, 25, 300);
    cr_expect_eq (run.rc, 1);
    cr_expect_eq (run.stats.done, 1);
    cr_expect_eq (run.stats.failed, 2);
    cr_expect (run.stats.elapsed_ms >= 5300 && run.stats.elapsed_ms < 20000,
               "elapsed %lld ms", run.stats.elapsed_ms);
    s_expect_line (&run, "failed %s/%s: stalled: no whole answer from the server within "
                   "5300 ms; going on without this connection", "stall.jpg");
    s_expect_line (&run, "failed %s/%s: not_sent: every connection to the server stalled",
                   "ok2.jpg");
    char thumb [400];
    snprintf (thumb, sizeof thumb, "%s/out/stall.png", s_dir);
    cr_expect_not (s_exists (thumb));
}

Test (batch, an_unreachable_server_fails_each_file_within_its_wait, .init = s_tmpdir,
      .fini = s_cleanup, .timeout = 30)
{
    s_write ("a.jpg", "ok");
    s_write ("b.jpg", "ok");
    s_write ("list.txt", "a.jpg\nb.jpg\n");
    //  A bound socket that never listens: connections are refused.
    int sock = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    cr_assert_eq (bind (sock, (struct sockaddr *) &addr, sizeof addr), 0);
    cr_assert_eq (getsockname (sock, (struct sockaddr *) &addr, &len), 0);
    char url [64];
    snprintf (url, sizeof url, "http://127.0.0.1:%d", ntohs (addr.sin_port));
    s_run_t run;
    s_batch (&run, url, 8, 1000, 25, 1000);
    close (sock);
    cr_expect_eq (run.rc, 1);
    cr_expect_eq (run.stats.failed, 2);
    cr_expect_lt (run.stats.elapsed_ms, 5000, "retries were not bounded by the wait");
    cr_expect (strstr (run.text, "a.jpg: transport: cannot connect"), "%s", run.text);
    cr_expect (strstr (run.text, "\n0 done, 2 failed, "), "%s", run.text);
}

Test (batch, an_empty_list_prints_only_the_summary, .init = s_tmpdir, .fini = s_cleanup)
{
    s_write ("list.txt", "# nothing\n");
    s_run_t run;
    s_batch (&run, "http://127.0.0.1:1", 8, 1000, 25, 1000);
    cr_expect_eq (run.rc, 0);
    cr_expect (strncmp (run.text, "0 done, 0 failed, ", 18) == 0, "%s", run.text);
}

//  --------------------------------------------------------------------------
//  Long-poll: a job that ends ~2 s after it is first asked about. Polling
//  once a second would take 3 or more requests; each answer here is
//  counted at the stub, never timed.

Test (batch, waits_for_a_status_by_long_poll, .init = s_stub_start, .fini = s_stub_stop,
      .timeout = 60)
{
    s_write ("later.jpg", "later");
    s_write ("ok.jpg", "ok");
    s_write ("list.txt", "later.jpg\nok.jpg\n");
    s_run_t run;
    s_batch_stub (&run, 2, 20000, 25, 5000);
    cr_expect_eq (run.rc, 0);
    cr_expect_eq (run.stats.done, 2);
    s_expect_done (&run, "later");
    cr_log_info ("later: %d status, %d thumbnail requests", atomic_load (&s_later_status),
                 atomic_load (&s_later_thumbs));
    cr_expect_leq (atomic_load (&s_later_status), 2, "%d status requests for one job",
                   atomic_load (&s_later_status));
    cr_expect_eq (atomic_load (&s_later_thumbs), 1);
    cr_expect_eq (atomic_load (&s_wait_last), -1, "the download asked for a ?wait=");
}

//  Run `imgpipe get ID_LATER` against the stub with `extra` options (up to
//  two, NULL-padded); its exit code. The thumbnail goes to s_dir/later.png.
static int
s_get_later (const char *extra1, const char *extra2)
{
    char url [64], out [400];
    snprintf (url, sizeof url, "--url=http://127.0.0.1:%d", s_stub_port);
    snprintf (out, sizeof out, "%s/later.png", s_dir);
    char *args [] = { "imgpipe", url, "get", ID_LATER, "-o", out, "--wait-s", "20",
                      (char *) extra1, (char *) extra2, NULL };
    int exit_code = s_run (args);
    cr_log_info ("get %s %s: exit %d, %d thumbnail requests, %d refused, last ?wait=%d",
                 extra1 ? extra1 : "", extra2 ? extra2 : "", exit_code,
                 atomic_load (&s_later_thumbs), atomic_load (&s_wait_refused),
                 atomic_load (&s_wait_last));
    if (exit_code == IMGP_CLI_EXIT_OK)
        s_expect_thumb (out);
    return exit_code;
}

Test (cli, get_waits_by_long_poll, .init = s_stub_start, .fini = s_stub_stop, .timeout = 60)
{
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    cr_expect_leq (atomic_load (&s_later_thumbs), 2, "%d thumbnail requests for one job",
                   atomic_load (&s_later_thumbs));
    cr_expect_eq (atomic_load (&s_later_status), 0);
    cr_expect_eq (atomic_load (&s_wait_last), 20, "asked ?wait=%d, want all of --wait-s 20",
                  atomic_load (&s_wait_last));
}

Test (cli, get_lowers_its_wait_to_what_the_frontend_allows, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    atomic_store (&s_max_wait, 1);
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    cr_expect_eq (atomic_load (&s_wait_refused), 1, "the 400 did not teach the client");
    cr_expect_eq (atomic_load (&s_wait_last), 1);
    //  The refused one, then 1 s holds until the job ends at 2 s.
    cr_expect_leq (atomic_load (&s_later_thumbs), 5, "%d thumbnail requests",
                   atomic_load (&s_later_thumbs));
}

Test (cli, get_backs_off_when_the_frontend_does_not_hold, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    //  An old frontend answers at once with 202 + Retry-After: 1; the client
    //  must pause as told, not ask again at once.
    atomic_store (&s_ignore_wait, true);
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    int asked = atomic_load (&s_later_thumbs);
    cr_expect (asked >= 2 && asked <= 5, "%d thumbnail requests in ~2 s", asked);
}

Test (cli, get_with_long_poll_off_sends_no_wait, .init = s_stub_start, .fini = s_stub_stop,
      .timeout = 60)
{
    cr_assert_eq (s_get_later ("--long-poll-s", "0"), IMGP_CLI_EXIT_OK);
    cr_expect_eq (atomic_load (&s_wait_last), -1);
    cr_expect_geq (atomic_load (&s_later_thumbs), 2);
}

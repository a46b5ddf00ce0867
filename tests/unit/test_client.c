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
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <czmq.h>

#include "imgp_api.h"
#include "imgp_batch.h"
#include "imgp_cli.h"
#include "imgp_conf.h"
#include "imgp_file.h"
#include "imgp_http_client.h"
#include "imgp_inputs.h"
#include "imgp_progress.h"
#include "imgp_report.h"
#include "imgp_resume.h"
#include "imgp_roundtrip.h"
#include "imgp_walk.h"

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
//  The full path of s_dir/name (static buffer).
static const char *
s_path_of (const char *name)
{
    static char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    return path;
}

static const char *
s_write (const char *name, const char *text)
{
    const char *path = s_path_of (name);
    FILE *file = fopen (path, "wb");
    cr_assert_not_null (file, "cannot write %s", path);
    fputs (text, file);
    fclose (file);
    return path;
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
//  imgp_walk: a tree, one file at a time

//  Make directory s_dir/name.
static void
s_mkdir (const char *name)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    cr_assert_eq (mkdir (path, 0700), 0, "mkdir %s", path);
}

//  Symlink s_dir/name -> target.
static void
s_symlink (const char *target, const char *name)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    cr_assert_eq (symlink (target, path), 0, "symlink %s", path);
}

//  Make a tree in s_dir from `spec`, entries separated by spaces: "dir/"
//  a directory, "name->target" a symbolic link, anything else a file.
static void
s_tree (const char *spec)
{
    char copy [2000];
    snprintf (copy, sizeof copy, "%s", spec);
    for (char *entry = strtok (copy, " "); entry; entry = strtok (NULL, " ")) {
        char *arrow = strstr (entry, "->");
        size_t len = strlen (entry);
        if (arrow) {
            *arrow = 0;
            s_symlink (arrow + 2, entry);
        }
        else
        if (entry [len - 1] == '/')
            s_mkdir (entry);
        else
            s_write (entry, entry);
    }
}

//  Walk s_dir to its end: the relative paths of its files joined by
//  spaces into `files`, its refusals by newlines into `refused`.
static void
s_walk_all (char *files, size_t files_size, char *refused, size_t refused_size)
{
    char error [512] = "";
    imgp_walk_t *walk = imgp_walk_new (s_dir, error, sizeof error);
    cr_assert_not_null (walk, "%s", error);
    files [0] = refused [0] = 0;
    const char *path, *relative;
    char problem [512];
    imgp_walk_event_t event;
    while ((event = imgp_walk_next (walk, &path, &relative, problem, sizeof problem))) {
        char *into = event == IMGP_WALK_FILE ? files : refused;
        size_t size = event == IMGP_WALK_FILE ? files_size : refused_size;
        size_t len = strlen (into);
        snprintf (into + len, size - len, "%s%s", len ? (into == files ? " " : "\n") : "",
                  event == IMGP_WALK_FILE ? relative : problem);
        if (event == IMGP_WALK_FILE) {
            char want [600];
            snprintf (want, sizeof want, "%s/%s", s_dir, relative);
            cr_expect_str_eq (path, want);
        }
    }
    imgp_walk_destroy (&walk);
    imgp_walk_destroy (&walk);
    cr_assert_null (walk);
}

//  Make the tree of `spec` (s_tree), walk it, and expect `files` and
//  `refused` (s_walk_all).
static void
s_expect_walk (const char *spec, const char *files, const char *refused)
{
    s_tree (spec);
    char got_files [2000], got_refused [2000];
    s_walk_all (got_files, sizeof got_files, got_refused, sizeof got_refused);
    cr_expect_str_eq (got_files, files);
    cr_expect_str_eq (got_refused, refused);
}

Test (walk, recurses_in_name_order_files_before_subdirectories, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_expect_walk ("b.png a.jpg sub/ sub/deep.jpg sub/deeper/ sub/deeper/z.jpg a-dir/ "
                   "a-dir/x.gif empty/ sub/c",
                   "a.jpg b.png a-dir/x.gif sub/c sub/deep.jpg sub/deeper/z.jpg", "");
}

Test (walk, skips_hidden_names_dangling_links_and_follows_good_links, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_expect_walk ("a.jpg .hidden.jpg .git/ .git/inside.jpg real/ real/r.jpg link.jpg->a.jpg "
                   "dangling.jpg->nowhere.jpg linked->real",
                   "a.jpg link.jpg linked/r.jpg real/r.jpg", "");
}

Test (walk, refuses_a_symlink_loop_with_a_message_and_goes_on, .init = s_tmpdir,
      .fini = s_cleanup)
{
    //  a/b/up leads to a, an ancestor; self to the root itself.
    char want [2000];
    snprintf (want, sizeof want, "symlink loop: '%s/a/b/up' leads back to '%s/a'; not entered\n"
              "symlink loop: '%s/self' leads back to '%s'; not entered", s_dir, s_dir, s_dir,
              s_dir);
    s_expect_walk ("a/ a/b/ a/b/f.jpg a/b/up->.. self->. z.jpg", "z.jpg a/b/f.jpg", want);
}

Test (walk, streams_reading_each_directory_only_when_it_gets_there, .init = s_tmpdir,
      .fini = s_cleanup)
{
    //  100 directories of 100 files: the walker must never hold more than
    //  the current path's listings (depth 2 here), and a file made after
    //  the walk began, in a directory not yet entered, is seen, so nothing
    //  was listed ahead. (100 000 files, measured by hand: see the commit.)
    char command [600];
    snprintf (command, sizeof command, "cd '%s' && for d in $(seq -w 1 100); do mkdir d$d && "
              "(cd d$d && seq -w 1 100 | sed 's/$/.jpg/' | xargs touch); done", s_dir);
    cr_assert_eq (system (command), 0);
    char error [512] = "", problem [512];
    imgp_walk_t *walk = imgp_walk_new (s_dir, error, sizeof error);
    cr_assert_not_null (walk, "%s", error);
    const char *path, *relative;
    cr_assert_eq (imgp_walk_next (walk, &path, &relative, problem, sizeof problem),
                  IMGP_WALK_FILE);
    cr_expect_str_eq (relative, "d001/001.jpg");
    s_write ("d100/late.jpg", "l");
    size_t count = 1, deepest = 0;
    bool late = false;
    while (imgp_walk_next (walk, &path, &relative, problem, sizeof problem) == IMGP_WALK_FILE) {
        count++;
        late |= strcmp (relative, "d100/late.jpg") == 0;
        size_t depth = imgp_walk_depth (walk);
        deepest = depth > deepest ? depth : deepest;
    }
    cr_expect_eq (count, 10001);
    cr_expect (late, "a directory made during the walk was not seen");
    cr_expect_eq (deepest, 2, "held %zu levels", deepest);
    imgp_walk_destroy (&walk);
}

Test (walk, an_unreadable_root_is_refused, .init = s_tmpdir, .fini = s_cleanup)
{
    char error [512] = "", path [512];
    snprintf (path, sizeof path, "%s/missing", s_dir);
    cr_expect_null (imgp_walk_new (path, error, sizeof error));
    cr_expect (strstr (error, "cannot open") && strstr (error, "missing"), "%s", error);
}

//  --------------------------------------------------------------------------
//  imgp_inputs: the stream of (input, output)

typedef struct {
    size_t count;               //  inputs read
    char path [64][600];        //  their paths
    char output [64][600];      //  their outputs, "" with a problem
    char problem [64][600];     //  their problems, ""
} s_list_t;

//  Read every input of `source` (outputs under /out, ext png) into `list`;
//  the total it announced before the first input, into *total.
static void
s_list (const char *source, s_list_t *list, long long *total)
{
    char error [512] = "";
    imgp_inputs_t *inputs = imgp_inputs_new (source, "/out", "png", error, sizeof error);
    cr_assert_not_null (inputs, "imgp_inputs_new (%s): %s", source, error);
    if (total)
        *total = imgp_inputs_total (inputs);
    memset (list, 0, sizeof *list);
    imgp_input_t input;
    while (imgp_inputs_next (inputs, &input) == 1) {
        cr_assert_lt (list->count, 64);
        snprintf (list->path [list->count], 600, "%s", input.path);
        snprintf (list->output [list->count], 600, "%s", input.output ? input.output : "");
        snprintf (list->problem [list->count], 600, "%s", input.problem ? input.problem : "");
        cr_expect ((input.output == NULL) != (input.problem == NULL));
        list->count++;
    }
    cr_expect_eq (imgp_inputs_total (inputs), (long long) list->count);
    cr_expect_eq (imgp_inputs_seen (inputs), list->count);
    imgp_inputs_destroy (&inputs);
    imgp_inputs_destroy (&inputs);
}

Test (inputs, a_directory_mirrors_its_tree_under_outdir, .init = s_tmpdir, .fini = s_cleanup)
{
    s_tree ("sub/ sub/a.jpg top.webp archive.tar.gz noext");
    s_list_t list;
    long long total;
    s_list (s_dir, &list, &total);
    cr_expect_eq (total, -1, "a walk's total is unknown until its end");
    cr_assert_eq (list.count, 4);
    const char *want [] = { "/out/archive.tar.png", "/out/noext.png", "/out/top.png",
                            "/out/sub/a.png" };
    for (size_t i = 0; i < 4; i++)
        cr_expect_str_eq (list.output [i], want [i]);
}

Test (inputs, outputs_that_would_collide_get_a_number, .init = s_tmpdir, .fini = s_cleanup)
{
    s_tree ("a.jpg a.png a-2.gif sub/ sub/a.jpg");     //  sub/: another directory
    s_list_t list;
    s_list (s_dir, &list, NULL);
    cr_assert_eq (list.count, 4);
    //  Sorted: a-2.gif, a.jpg, a.png, sub/a.jpg
    const char *want [] = { "/out/a-2.png", "/out/a.png", "/out/a-3.png", "/out/sub/a.png" };
    for (size_t i = 0; i < 4; i++)
        cr_expect_str_eq (list.output [i], want [i]);
}

Test (inputs, a_walk_skips_outdir_inside_it_and_reports_loops, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_tree ("a.jpg out/ out/a.png loop->.");
    char error [512] = "", outdir [512];
    snprintf (outdir, sizeof outdir, "%s/out", s_dir);
    imgp_inputs_t *inputs = imgp_inputs_new (s_dir, outdir, "png", error, sizeof error);
    cr_assert_not_null (inputs, "%s", error);
    imgp_input_t input;
    cr_assert_eq (imgp_inputs_next (inputs, &input), 1);
    cr_expect (strstr (input.path, "/a.jpg") && input.output && !input.problem);
    cr_assert_eq (imgp_inputs_next (inputs, &input), 1);
    cr_expect (strstr (input.path, "/loop") && !input.output && input.problem);
    cr_expect (strstr (input.problem, "symlink loop"), "%s", input.problem);
    cr_expect_eq (imgp_inputs_next (inputs, &input), 0);
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
        "./with space.jpg\n"
        "../outside.jpg\n"
        "last-without-newline.jpg");
    s_list_t list;
    long long total;
    s_list (manifest, &list, &total);
    cr_expect_eq (total, 6, "a manifest's total is known before the first input");
    cr_assert_eq (list.count, 6);
    const char *paths [] = { "%s/photos/a.jpg", "%s/b.png", "/abs/c.gif", "%s/./with space.jpg",
                             "%s/../outside.jpg", "%s/last-without-newline.jpg" };
    const char *outputs [] = { "/out/photos/a.png", "/out/b.png", "/out/abs/c.png",
                               "/out/with space.png", "", "/out/last-without-newline.png" };
    for (size_t i = 0; i < 6; i++) {
        char path [600];
        snprintf (path, sizeof path, paths [i], s_dir);
        cr_expect_str_eq (list.path [i], path);
        cr_expect_str_eq (list.output [i], outputs [i]);
    }
    cr_expect (strstr (list.problem [4], "outside OUTDIR"), "%s", list.problem [4]);
}

Test (inputs, manifest_in_the_current_directory_keeps_paths_as_listed, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_write ("list.txt", "x/a.jpg\nb.jpg\n");
    char cwd [512];
    cr_assert_not_null (getcwd (cwd, sizeof cwd));
    cr_assert_eq (chdir (s_dir), 0);
    s_list_t list;
    s_list ("list.txt", &list, NULL);
    cr_assert_eq (chdir (cwd), 0);
    cr_assert_eq (list.count, 2);
    cr_expect_str_eq (list.path [0], "x/a.jpg");
    cr_expect_str_eq (list.path [1], "b.jpg");
}

Test (inputs, tsv_manifest_skips_its_header_and_takes_column_one, .init = s_tmpdir,
      .fini = s_cleanup)
{
    const char *manifest = s_write ("MANIFEST.tsv",
        "path\tformat\twidth\texpect\n"
        "photos/p01.jpg\tjpeg\t1280\tok\n"
        "\n"
        "bad/empty.jpg\tnone\t-\treject\n");
    s_list_t list;
    long long total;
    s_list (manifest, &list, &total);
    cr_expect_eq (total, 2);
    cr_assert_eq (list.count, 2);
    char path [512];
    snprintf (path, sizeof path, "%s/photos/p01.jpg", s_dir);
    cr_expect_str_eq (list.path [0], path);
    cr_expect_str_eq (list.output [1], "/out/bad/empty.png");
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
    s_list_t list;
    s_list (manifest, &list, NULL);
    cr_expect_eq (list.count, 41);
    for (size_t i = 0; i < list.count; i++)
        cr_expect (s_exists (list.path [i]), "listed but missing: %s", list.path [i]);
}

Test (inputs, unreadable_sources_are_refused_with_a_message, .init = s_tmpdir,
      .fini = s_cleanup)
{
    char error [512] = "";
    char path [400];
    snprintf (path, sizeof path, "%s/missing", s_dir);
    cr_expect_null (imgp_inputs_new (path, "/out", "png", error, sizeof error));
    cr_expect (strstr (error, "cannot open") && strstr (error, "missing"), "%s", error);

    //  A NUL in a line is that line's problem, reported like a failed file.
    static const char nul [] = "a.jpg\nb\0c.jpg\n";
    snprintf (path, sizeof path, "%s/nul.txt", s_dir);
    FILE *file = fopen (path, "wb");
    cr_assert (file && fwrite (nul, 1, sizeof nul - 1, file) == sizeof nul - 1);
    fclose (file);
    s_list_t list;
    s_list (path, &list, NULL);
    cr_assert_eq (list.count, 2);
    cr_expect (strstr (list.problem [1], ":2: holds a NUL byte"), "%s", list.problem [1]);
}

Test (inputs, output_path_mapping)
{
    char out [4200];
    const char *problem = NULL;
    struct { const char *outdir, *relative, *ext, *want; } cases [] = {
        { "out", "sub/a.jpg", "png", "out/sub/a.png" },
        { "out/", "a.JPG", "webp", "out/a.webp" },
        { "/o", "/abs/x/y.tif", "jpg", "/o/abs/x/y.jpg" },
        { "o", "./a/./b//c.gif", "avif", "o/a/b/c.avif" },
        { "o", "a.tar.gz", "png", "o/a.tar.png" },
        { "o", "d.x/.profile", "png", "o/d.x/.profile.png" },
        { "o", "noext", "png", "o/noext.png" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        cr_assert_eq (imgp_inputs_output_path (cases [i].outdir, cases [i].relative,
                                               cases [i].ext, out, sizeof out, &problem), 0,
                      "%s: %s", cases [i].relative, problem);
        cr_expect_str_eq (out, cases [i].want);
    }
    cr_expect_eq (imgp_inputs_output_path ("o", "a/../../b.jpg", "png", out, sizeof out,
                                           &problem), -1);
    cr_expect_eq (imgp_inputs_output_path ("o", "/", "png", out, sizeof out, &problem), -1);
    char outdir [5000];
    memset (outdir, 'd', sizeof outdir - 1);
    outdir [sizeof outdir - 1] = 0;
    cr_expect_eq (imgp_inputs_output_path (outdir, "a.jpg", "png", out, sizeof out,
                                           &problem), -1);
    cr_expect_str_eq (problem, "path too long");
}

//  s_dir/name holds exactly `want`. (imgp_file_read's buffer has no NUL.)
static void
s_expect_file (const char *name, const char *want)
{
    char *data = NULL, error [256];
    size_t size = 0;
    cr_assert_eq (imgp_file_read (s_path_of (name), 65536, &data, &size, error, sizeof error),
                  0, "%s: %s", name, error);
    cr_expect (size == strlen (want) && memcmp (data, want, size) == 0,
               "%s holds '%.*s', want '%s'", name, (int) size, data, want);
    free (data);
}

//  --------------------------------------------------------------------------
//  imgp_resume: what a re-run may skip

//  Set the mtime of s_dir/name `seconds` from now.
static void
s_age (const char *name, int seconds)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    struct timespec times [2];
    clock_gettime (CLOCK_REALTIME, &times [0]);
    times [0].tv_sec += seconds;
    times [1] = times [0];
    cr_assert_eq (utimensat (AT_FDCWD, path, times, 0), 0);
}

static imgp_resume_t *
s_resume (const char *options)
{
    char error [512] = "";
    imgp_resume_t *resume = imgp_resume_new (s_dir, options, error, sizeof error);
    cr_assert_not_null (resume, "%s", error);
    return resume;
}

//  s_dir/name would be skipped.
static bool
s_done (imgp_resume_t *resume, const char *name)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    return imgp_resume_done (resume, path);
}

//  Write s_dir/name, its mtime `seconds` from now.
static void
s_write_aged (const char *name, int seconds)
{
    s_write (name, name);
    s_age (name, seconds);
}

Test (resume, same_options_skip_outputs_made_since_the_state, .init = s_tmpdir,
      .fini = s_cleanup)
{
    s_write_aged ("before.png", -100);      //  by something else, before any run
    imgp_resume_t *resume = s_resume ("width=80");
    cr_expect_not (imgp_resume_same (resume), "no state file yet: a first run");
    cr_expect_not (s_done (resume, "before.png"), "an output older than the state");
    imgp_resume_destroy (&resume);
    imgp_resume_destroy (&resume);

    s_write_aged ("made.png", 1);
    resume = s_resume ("width=80");
    cr_expect (imgp_resume_same (resume));
    cr_expect (s_done (resume, "made.png"));
    cr_expect_not (s_done (resume, "missing.png"));
    cr_expect_not (s_done (resume, ""), "a directory is no output");
    imgp_resume_destroy (&resume);
}

Test (resume, other_options_redo_everything_even_after_an_interrupted_redo,
      .init = s_tmpdir, .fini = s_cleanup)
{
    imgp_resume_destroy ((imgp_resume_t *[]) { s_resume ("width=80") });
    s_write_aged ("a.png", -50);
    s_write_aged ("b.png", -50);
    s_age (IMGP_RESUME_FILE, -100);
    imgp_resume_t *resume = s_resume ("width=120");
    cr_expect_not (imgp_resume_same (resume));
    cr_expect_not (s_done (resume, "a.png"));
    cr_expect_not (s_done (resume, "b.png"));
    imgp_resume_destroy (&resume);
    //  The redo wrote a.png, then was interrupted: b.png is of the old options.
    s_write_aged ("a.png", 1);
    resume = s_resume ("width=120");
    cr_expect (imgp_resume_same (resume));
    cr_expect (s_done (resume, "a.png"));
    cr_expect_not (s_done (resume, "b.png"), "an output of the old options was skipped");
    imgp_resume_destroy (&resume);
    s_expect_file (IMGP_RESUME_FILE, "imgpipe-batch-state 1\noptions width=120\n");
}

Test (resume, jobs_left_in_flight_are_kept_without_moving_the_state_mtime, .init = s_tmpdir,
      .fini = s_cleanup)
{
    imgp_resume_t *resume = s_resume ("width=80");
    s_write_aged ("made.png", 1);
    struct stat before, after;
    cr_assert_eq (stat (s_path_of (IMGP_RESUME_FILE), &before), 0);
    imgp_resume_pending (resume, "out/a b.png", ID_OK);
    imgp_resume_pending (resume, "out/c.png", ID_FAIL);
    char error [512] = "";
    cr_assert_eq (imgp_resume_save (resume, error, sizeof error), 0, "%s", error);
    cr_assert_eq (stat (s_path_of (IMGP_RESUME_FILE), &after), 0);
    cr_expect (after.st_mtim.tv_sec == before.st_mtim.tv_sec
               && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec, "the state's mtime moved");
    imgp_resume_destroy (&resume);

    //  The next run with the same options takes each job once; an output
    //  made since is still done.
    resume = s_resume ("width=80");
    cr_expect (imgp_resume_same (resume));
    cr_expect (s_done (resume, "made.png"));
    char *id = imgp_resume_take_job (resume, "out/a b.png");
    cr_expect_str_eq (id ? id : "", ID_OK);
    free (id);
    cr_expect_null (imgp_resume_take_job (resume, "out/a b.png"));
    cr_expect_null (imgp_resume_take_job (resume, "out/missing.png"));
    cr_assert_eq (imgp_resume_save (resume, error, sizeof error), 0, "%s", error);
    imgp_resume_destroy (&resume);
    s_expect_file (IMGP_RESUME_FILE, "imgpipe-batch-state 1\noptions width=80\n"
                   "pending " ID_FAIL " out/c.png\n");

    //  Other options: no job of the old ones is taken.
    resume = s_resume ("width=120");
    cr_expect_null (imgp_resume_take_job (resume, "out/c.png"));
    imgp_resume_destroy (&resume);
}

//  --------------------------------------------------------------------------
//  imgp_report

Test (report, one_json_object_a_line_with_what_is_known, .init = s_tmpdir, .fini = s_cleanup)
{
    char error [512] = "";
    imgp_report_t *report = imgp_report_new (s_dir, error, sizeof error);
    cr_assert_not_null (report, "%s", error);
    cr_expect_eq (imgp_report_add (report, &(imgp_report_line_t) {
        .input = "in/a.jpg", .id = ID_OK, .status = "done", .output = "out/a.png",
        .worker = "r1-42" }), 0);
    cr_expect_eq (imgp_report_add (report, &(imgp_report_line_t) {
        .input = "in/b.jpg", .status = "skipped", .output = "out/b.png", .worker = "" }), 0);
    cr_expect_eq (imgp_report_add (report, &(imgp_report_line_t) {
        .input = "in/\"q\"\n\xff.png", .id = ID_FAIL, .status = "failed",
        .code = "unsupported_format", .message = "not an image" }), 0);
    imgp_report_destroy (&report);
    imgp_report_destroy (&report);
    s_expect_file (IMGP_REPORT_FILE,
        "{\"input\":\"in/a.jpg\",\"id\":\"" ID_OK "\",\"status\":\"done\","
        "\"output\":\"out/a.png\",\"worker\":\"r1-42\"}\n"
        "{\"input\":\"in/b.jpg\",\"status\":\"skipped\",\"output\":\"out/b.png\"}\n"
        "{\"input\":\"in/\\\"q\\\"\\n?.png\",\"id\":\"" ID_FAIL "\",\"status\":\"failed\","
        "\"error\":{\"code\":\"unsupported_format\",\"message\":\"not an image\"}}\n");
}

//  --------------------------------------------------------------------------
//  imgp_progress

//  Everything a progress object printed to its tmpfile, in `text`.
static void
s_progress_text (FILE *out, char *text, size_t size)
{
    rewind (out);
    size_t len = fread (text, 1, size - 1, out);
    text [len] = 0;
    fclose (out);
}

Test (progress, lines_without_a_terminal)
{
    FILE *out = tmpfile ();
    imgp_progress_t *progress = imgp_progress_new (out, false);
    imgp_progress_total (progress, 3, true);
    imgp_progress_done (progress, "in/a.jpg", "out/a.png", 10, 20, 5, "r1-7");
    imgp_progress_skipped (progress, "in/b.jpg", "out/b.png");
    imgp_progress_failed (progress, "in/c.jpg", "decode_error", "bad\ndata");
    imgp_progress_summary (progress);
    cr_expect_eq (imgp_progress_done_count (progress), 1);
    cr_expect_eq (imgp_progress_skipped_count (progress), 1);
    cr_expect_eq (imgp_progress_failed_count (progress), 1);
    imgp_progress_destroy (&progress);
    imgp_progress_destroy (&progress);
    char text [2000];
    s_progress_text (out, text, sizeof text);
    cr_expect (strstr (text, "ok in/a.jpg -> out/a.png 10x20 5ms r1-7\n"
                             "skipped in/b.jpg -> out/b.png (made before with these options)\n"
                             "failed in/c.jpg: decode_error: bad data\n"
                             "1 done, 1 skipped, 1 failed, ") == text, "%s", text);
    cr_expect (strstr (text, "\nfailed: 1 decode_error\n  in/c.jpg: decode_error: bad data\n"),
               "%s", text);
    cr_expect_null (strchr (text, '\r'), "a bar without a terminal");
}

Test (progress, a_bar_on_a_terminal_with_failures_above_it)
{
    FILE *out = tmpfile ();
    imgp_progress_t *progress = imgp_progress_new (out, true);
    imgp_progress_total (progress, 4, false);     //  a walk still counting
    imgp_progress_done (progress, "in/a.jpg", "out/a.png", 10, 20, 5, "");
    imgp_progress_failed (progress, "in/c.jpg", "decode_error", "bad");
    imgp_progress_total (progress, 4, true);
    imgp_progress_done (progress, "in/d.jpg", "out/d.png", 10, 20, 5, "");
    imgp_progress_skipped (progress, "in/e.jpg", "out/e.png");
    imgp_progress_summary (progress);
    imgp_progress_destroy (&progress);
    char text [2000];
    s_progress_text (out, text, sizeof text);
    cr_expect (strstr (text, "\r\033[K[#####...............] 1/4+  1 done  0 failed  0 skipped"),
               "no first bar in: %s", text);
    cr_expect (strstr (text, "\r\033[Kfailed in/c.jpg: decode_error: bad\n"),
               "the failure is not on a line of its own: %s", text);
    cr_expect (strstr (text, "\r\033[K[####################] 4/4  2 done  1 failed  1 skipped"),
               "no last bar in: %s", text);
    cr_expect_null (strstr (text, "ok in/"), "a line per file on a terminal: %s", text);
    cr_expect (strstr (text, "\n2 done, 1 skipped, 1 failed, "), "%s", text);
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
        { "imgpipe", url, "batch", s_dir, "-o", s_dir, NULL },
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
static atomic_int s_flaky_left;         //  500s still to give to "flaky" uploads
static atomic_int s_broken_seen;        //  uploads of "broken" (always 502)
static atomic_int s_slow_polls;         //  status polls of the "slow" job
static atomic_bool s_release;           //  the stalled download may end
static atomic_llong s_later_at;         //  when "later" is done, 0 until first seen
static atomic_bool s_ignore_wait;       //  act as an old frontend: no ?wait=
static atomic_int s_max_wait;           //  the stub's --max-wait-s
static atomic_int s_later_status;       //  status requests of "later"
static atomic_int s_later_thumbs;       //  thumbnail requests of "later"
static atomic_int s_wait_refused;       //  400s for a ?wait= over s_max_wait
static atomic_int s_wait_last;          //  the last ?wait= of a status request, -1 for none
static atomic_int s_thumb_wait;         //  the last ?wait= of a thumbnail request, -1 for none

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
    if (strncmp (body, "flaky", 5) == 0) {
        if (atomic_fetch_sub (&s_flaky_left, 1) > 0)
            return s_reply_json (conn, 500, "{\"error\":{\"code\":\"internal\","
                                            "\"message\":\"oops\"}}");
        id = ID_OK;
    }
    if (strncmp (body, "broken", 6) == 0) {
        atomic_fetch_add (&s_broken_seen, 1);
        return s_reply_json (conn, 502, "{\"error\":{\"code\":\"bad_gateway\","
                                        "\"message\":\"upstream\"}}");
    }
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
s_later_hold (struct mg_connection *conn, atomic_int *last)
{
    const char *query = mg_get_request_info (conn)->query_string;
    char text [16];
    int len = query ? mg_get_var (query, strlen (query), "wait", text, sizeof text) : -1;
    int wait_s = len > 0 ? atoi (text) : -1;
    atomic_store (last, wait_s);
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
        if (!s_later_hold (conn, &s_wait_last))
            return 400;
        if (!s_later_done ())
            return s_reply (conn, 200, "application/json", "Retry-After: 1\r\n",
                            "{\"status\":\"processing\"}");
    }
    if (strcmp (id, ID_FAIL) == 0)
        return s_reply_json (conn, 200, "{\"status\":\"failed\",\"error\":{\"code\":"
                                        "\"decode_error\",\"message\":\"bad\\ndata\"}}");
    if (strcmp (id, ID_SLOW) == 0 && atomic_fetch_add (&s_slow_polls, 1) < 3)
        return s_reply_json (conn, 200, "{\"status\":\"processing\"}");
    return s_reply_json (conn, 200, "{\"status\":\"done\",\"result\":{\"width\":10,"
                                    "\"height\":20,\"format\":\"png\",\"bytes\":15},"
                                    "\"worker\":\"stub-r1\"}");
}

static int
s_stub_thumbnail (struct mg_connection *conn, const char *id)
{
    if (strcmp (id, ID_LATER) == 0) {
        atomic_fetch_add (&s_later_thumbs, 1);
        if (!s_later_hold (conn, &s_thumb_wait))
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
    atomic_store (&s_flaky_left, 2);
    atomic_store (&s_broken_seen, 0);
    atomic_store (&s_slow_polls, 0);
    atomic_store (&s_release, false);
    atomic_store (&s_later_at, 0);
    atomic_store (&s_ignore_wait, false);
    atomic_store (&s_max_wait, 30);
    atomic_store (&s_later_status, 0);
    atomic_store (&s_later_thumbs, 0);
    atomic_store (&s_wait_refused, 0);
    atomic_store (&s_wait_last, -1);
    atomic_store (&s_thumb_wait, -1);
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
    imgp_inputs_t *inputs = imgp_inputs_new (manifest, outdir, "png", error, sizeof error);
    cr_assert_not_null (inputs, "%s", error);
    FILE *out = tmpfile ();
    cr_assert_not_null (out);
    imgp_batch_config_t config = {
        .url = url, .query = "width=10", .outdir = outdir, .parallel = parallel,
        .wait_ms = wait_ms, .long_poll_s = long_poll_s, .timeout_ms = timeout_ms,
        .max_upload = 1024, .out = out, .resume_command = "imgpipe batch again"
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
    const char *at = strstr (run->text, line);
    cr_expect (at, "no '%s' in:\n%s", line, run->text);
    const char *worker = at ? strstr (at, "ms stub-r1\n") : NULL;
    cr_expect (worker && worker < strchr (at, '\n'), "no worker on '%s'", line);
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
    cr_expect (strstr (run.text, "\n4 done, 0 skipped, 4 failed, "), "no summary in:\n%s",
               run.text);
    cr_expect (strstr (run.text, "\nfailed: "), "no failures in the summary:\n%s", run.text);
    char command [600];
    snprintf (command, sizeof command, "test $(ls -A '%s/out' | grep -vc '^\\.imgpipe-batch.state$"
              "\\|^imgpipe-report.jsonl$') -eq 4", s_dir);
    cr_expect_eq (system (command), 0, "OUTDIR holds more than the 4 thumbnails");
    snprintf (command, sizeof command, "test $(grep -c '\"status\":\"failed\"' "
              "'%s/out/imgpipe-report.jsonl') -eq 4", s_dir);
    cr_expect_eq (system (command), 0, "the report does not list the 4 failures");
    snprintf (command, sizeof command, "test $(grep -c '\"status\":\"done\",.*"
              "\"worker\":\"stub-r1\"}$' '%s/out/imgpipe-report.jsonl') -eq 4", s_dir);
    cr_expect_eq (system (command), 0, "the report does not name the worker of the 4 done");
}

//  Write the files of `spec` ("name=content name=content") into s_dir and
//  list them, in that order, in s_dir/list.txt.
static void
s_manifest (const char *spec)
{
    char copy [1000], list [1000] = "";
    snprintf (copy, sizeof copy, "%s", spec);
    for (char *entry = strtok (copy, " "); entry; entry = strtok (NULL, " ")) {
        char *equals = strchr (entry, '=');
        cr_assert_not_null (equals);
        *equals = 0;
        s_write (entry, equals + 1);
        size_t len = strlen (list);
        snprintf (list + len, sizeof list - len, "%s\n", entry);
    }
    s_write ("list.txt", list);
}

Test (batch, never_writes_a_thumbnail_over_its_input, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    //  A manifest in OUTDIR that lists a file of OUTDIR with the output's
    //  extension: its output is itself.
    s_manifest ("keep.png=ok");
    char url [64], list [400];
    snprintf (url, sizeof url, "--url=http://127.0.0.1:%d", s_stub_port);
    snprintf (list, sizeof list, "%s/list.txt", s_dir);
    char *args [] = { "imgpipe", url, "batch", list, "-o", s_dir, NULL };
    cr_expect_eq (s_run (args), IMGP_CLI_EXIT_REFUSED);
    s_expect_file ("keep.png", "ok");       //  not overwritten
    char command [600];
    snprintf (command, sizeof command, "grep -q 'would replace it' '%s/imgpipe-report.jsonl'",
              s_dir);
    cr_expect_eq (system (command), 0, "the report does not say why");
}

Test (batch, transient_failures_are_retried_a_bounded_number_of_times, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    s_manifest ("flaky.jpg=flaky broken.jpg=broken");
    s_run_t run;
    s_batch_stub (&run, 2, 20000, 25, 5000);
    cr_expect_eq (run.rc, 1);
    s_expect_done (&run, "flaky");
    cr_expect_eq (atomic_load (&s_flaky_left), -1, "flaky was not sent three times");
    cr_expect_eq (atomic_load (&s_broken_seen), 1 + IMGP_ROUNDTRIP_RETRIES);
    s_expect_line (&run, "failed %s/%s: bad_gateway: upstream (gave up after 4 retries)",
                   "broken.jpg");
}

Test (batch, a_stalled_download_fails_its_file_and_the_run_goes_on, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    s_manifest ("ok1.jpg=ok1 stall.jpg=stall ok2.jpg=ok2");
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
    cr_expect (strstr (run.text, "\n0 done, 0 skipped, 2 failed, "), "%s", run.text);
}

Test (batch, an_empty_list_prints_only_the_summary, .init = s_tmpdir, .fini = s_cleanup)
{
    s_write ("list.txt", "# nothing\n");
    s_run_t run;
    s_batch (&run, "http://127.0.0.1:1", 8, 1000, 25, 1000);
    cr_expect_eq (run.rc, 0);
    cr_expect (strncmp (run.text, "0 done, 0 skipped, 0 failed, ", 29) == 0, "%s", run.text);
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
    cr_expect_eq (atomic_load (&s_thumb_wait), -1, "the download asked for a ?wait=");
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
    cr_log_info ("get %s %s: exit %d, %d status and %d thumbnail requests, %d refused, "
                 "last ?wait=%d", extra1 ? extra1 : "", extra2 ? extra2 : "", exit_code,
                 atomic_load (&s_later_status), atomic_load (&s_later_thumbs), atomic_load (&s_wait_refused),
                 atomic_load (&s_wait_last));
    if (exit_code == IMGP_CLI_EXIT_OK)
        s_expect_thumb (out);
    return exit_code;
}

Test (cli, get_waits_by_long_poll, .init = s_stub_start, .fini = s_stub_stop, .timeout = 60)
{
    //  get waits as batch does (imgp_roundtrip): status by long-poll, then
    //  one download.
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    cr_expect_leq (atomic_load (&s_later_status), 2, "%d status requests for one job",
                   atomic_load (&s_later_status));
    cr_expect_eq (atomic_load (&s_later_thumbs), 1);
    cr_expect_eq (atomic_load (&s_thumb_wait), -1);
    cr_expect_geq (atomic_load (&s_wait_last), 18, "asked ?wait=%d, want (nearly) all of "
                   "--wait-s 20", atomic_load (&s_wait_last));
}

Test (cli, get_lowers_its_wait_to_what_the_frontend_allows, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    atomic_store (&s_max_wait, 1);
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    cr_expect_eq (atomic_load (&s_wait_refused), 1, "the 400 did not teach the client");
    cr_expect_eq (atomic_load (&s_wait_last), 1);
    //  The refused one, then 1 s holds until the job ends at 2 s.
    cr_expect_leq (atomic_load (&s_later_status), 5, "%d status requests",
                   atomic_load (&s_later_status));
}

Test (cli, get_backs_off_when_the_frontend_does_not_hold, .init = s_stub_start,
      .fini = s_stub_stop, .timeout = 60)
{
    //  An old frontend answers at once with a pending status + Retry-After:
    //  1; the client must pause as told, not ask again at once.
    atomic_store (&s_ignore_wait, true);
    cr_assert_eq (s_get_later (NULL, NULL), IMGP_CLI_EXIT_OK);
    int asked = atomic_load (&s_later_status);
    cr_expect (asked >= 2 && asked <= 5, "%d status requests in ~2 s", asked);
}

Test (cli, get_with_long_poll_off_sends_no_wait, .init = s_stub_start, .fini = s_stub_stop,
      .timeout = 60)
{
    cr_assert_eq (s_get_later ("--long-poll-s", "0"), IMGP_CLI_EXIT_OK);
    cr_expect_eq (atomic_load (&s_wait_last), -1);
    cr_expect_geq (atomic_load (&s_later_status), 2);
}

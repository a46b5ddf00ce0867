/*  test_batch — `imgpipe batch` against a real cluster: the broker,
    resizers and a frontend as processes on loopback, the client as a
    process too, over a tree of real images made by libvips.

    Why: the unit suite (test_client) runs the batch against a stub; only
    real processes show that a tree comes out mirrored and whole, that a
    re-run uploads nothing, that other options redo everything, that a
    file that is not an image fails with the server's reason, and that
    Ctrl-C leaves no partial file and prints a command that finishes the
    rest.

    Never: sleep as an assertion or time anything: every wait polls a
    condition (a line in the client's output, the process's exit) against
    a deadline.
*/
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_RUN_MS 120000         //  longest a batch of this suite may take
#define S_EXIT_INTERRUPTED 130  //  imgpipe batch after Ctrl-C

static h_cluster_t *s_cluster;

static void
s_setup (void)
{
    h_vips_init ();
    h_cluster_opts_t opts = { .resizers = 2, .frontends = 1 };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");
}

static void
s_teardown (void)
{
    h_cluster_destroy (&s_cluster);
}

//  s_cluster->dir + "/" + name, in a static buffer per call site's `slot`.
static const char *
s_path (int slot, const char *name)
{
    static char paths [8][600];
    snprintf (paths [slot], sizeof paths [slot], "%s/%s", s_cluster->dir, name);
    return paths [slot];
}

//  Write `size` bytes to tree/`name` under the cluster's dir, making its
//  directories.
static void
s_put (const char *name, const void *data, size_t size)
{
    char path [600], command [700];
    snprintf (path, sizeof path, "%s/tree/%s", s_cluster->dir, name);
    snprintf (command, sizeof command, "mkdir -p \"$(dirname '%s')\"", path);
    cr_assert_eq (system (command), 0);
    FILE *file = fopen (path, "wb");
    cr_assert (file && fwrite (data, 1, size, file) == size && fclose (file) == 0, "%s", path);
}

//  A w x h image of `format` at tree/`name`.
static void
s_image (const char *name, const char *format, int w, int h)
{
    size_t size = 0;
    void *data = h_make_image (format, w, h, false, &size);
    cr_assert_not_null (data);
    s_put (name, data, size);
    free (data);
}

//  The tree of most tests: three formats, three levels, hidden entries.
//  Its images are 400 x 200, so a --width W thumbnail is W x W/2.
static const char *s_tree_inputs [] = { "a.jpg", "sub/b.png", "sub/deeper/c.webp",
                                        "sub/deeper/d.jpg", NULL };
static const char *s_tree_outputs [] = { "a.png", "sub/b.png", "sub/deeper/c.png",
                                         "sub/deeper/d.png", NULL };

static void
s_make_tree (void)
{
    s_image ("a.jpg", "jpeg", 400, 200);
    s_image ("sub/b.png", "png", 400, 200);
    s_image ("sub/deeper/c.webp", "webp", 400, 200);
    s_image ("sub/deeper/d.jpg", "jpeg", 400, 200);
    s_image (".hidden.jpg", "jpeg", 400, 200);
    s_image (".cache/e.jpg", "jpeg", 400, 200);
}

//  A run of the client: its exit code and what it printed.
typedef struct {
    int exit_code;              //  -1 when it did not exit by itself
    char *out;                  //  its stdout (owned)
    char *err;                  //  its stderr (owned)
} s_run_t;

static void
s_run_free (s_run_t *run)
{
    free (run->out);
    free (run->err);
}

//  Wait for a started client and read what it printed.
static void
s_run_wait (pid_t pid, s_run_t *run)
{
    int status = 0;
    run->exit_code = -1;
    if (h_wait_exit (pid, S_RUN_MS, &status) != 0)
        h_stop (pid, 1000);
    else
    if (WIFEXITED (status))
        run->exit_code = WEXITSTATUS (status);
    size_t size = 0;
    run->out = h_read_file (s_path (0, "batch.out"), &size);
    run->err = h_read_file (s_path (0, "batch.err"), &size);
    cr_log_info ("imgpipe batch exit %d\n%s%s", run->exit_code, run->out ? run->out : "",
                 run->err ? run->err : "");
}

//  Start `imgpipe batch tree -o out` with `extra` options (NULL-ended).
static pid_t
s_batch_start (const char *const extra [])
{
    char *argv [24] = { H_CLIENT_BIN, "--url", (char *) h_cluster_url (s_cluster, 0),
                        "batch", (char *) s_path (1, "tree"), "-o", (char *) s_path (2, "out") };
    int argc = 7;
    for (int i = 0; extra && extra [i] && argc < 23; i++)
        argv [argc++] = (char *) extra [i];
    argv [argc] = NULL;
    unlink (s_path (0, "batch.err"));
    pid_t pid = h_spawn (argv, s_path (3, "batch.err"), s_path (4, "batch.out"));
    cr_assert (pid > 0, "cannot start %s", H_CLIENT_BIN);
    return pid;
}

static void
s_batch (s_run_t *run, const char *const extra [])
{
    s_run_wait (s_batch_start (extra), run);
}

//  The summary's first line: "D done, S skipped, F failed, ..."
static void
s_expect_summary (const s_run_t *run, int done, int skipped, int failed)
{
    char want [120];
    snprintf (want, sizeof want, "%d done, %d skipped, %d failed, ", done, skipped, failed);
    cr_expect (run->out && strstr (run->out, want), "no '%s' in:\n%s", want,
               run->out ? run->out : "");
}

//  out/`name` is a thumbnail of a 400 x 200 image `width` wide: a whole,
//  decodable PNG.
static void
s_expect_thumb (const char *name, int width)
{
    char path [700], why [512] = "";
    snprintf (path, sizeof path, "%s/out/%s", s_cluster->dir, name);
    size_t size = 0;
    void *data = h_read_file (path, &size);
    cr_assert_not_null (data, "no thumbnail %s", path);
    int w = 0, h = 0;
    cr_expect_eq (h_check_thumb (data, size, 400, 200, width, width, &w, &h, why, sizeof why),
                  0, "%s: %s", path, why);
    cr_expect_eq (w, width, "%s is %dx%d, want %d wide", path, w, h, width);
    free (data);
}

//  The report's lines, parsed. Returns how many; `lines` gets new
//  references (caller decrefs).
static int
s_report (json_t **lines, int most)
{
    size_t size = 0;
    char *text = h_read_file (s_path (0, "out/imgpipe-report.jsonl"), &size);
    cr_assert_not_null (text, "no report");
    int count = 0;
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n")) {
        cr_assert_lt (count, most);
        lines [count] = json_loads (line, 0, NULL);
        cr_assert_not_null (lines [count], "not JSON: %s", line);
        count++;
    }
    free (text);
    return count;
}

//  The report line of input tree/`name`, or NULL.
static json_t *
s_report_line (json_t **lines, int count, const char *name)
{
    char input [700];
    snprintf (input, sizeof input, "%s/tree/%s", s_cluster->dir, name);
    for (int i = 0; i < count; i++)
        if (strcmp (json_string_value (json_object_get (lines [i], "input")), input) == 0)
            return lines [i];
    return NULL;
}

static const char *
s_member (json_t *line, const char *key)
{
    const char *value = json_string_value (json_object_get (line, key));
    return value ? value : "";
}

//  A done line names the worker the job's status names, when the
//  frontend says it (the status JSON's "worker" is newer than some
//  frontends: then the line has none either).
static void
s_expect_worker (json_t *line)
{
    char path [80];
    snprintf (path, sizeof path, "/v1/images/%s", s_member (line, "id"));
    h_response_t resp = { 0 };
    cr_assert_eq (h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 10000),
                  0, "GET %s: %s", path, resp.error);
    json_t *status = h_json (&resp);
    cr_expect_str_eq (s_member (line, "worker"), s_member (status, "worker"));
    json_decref (status);
    h_response_free (&resp);
}

//  Every report line is for one of the tree's inputs with `status`; done
//  and skipped name their output, done ones their job id.
static void
s_expect_report (const char *status)
{
    json_t *lines [64];
    int count = s_report (lines, 64);
    int inputs = 0;
    while (s_tree_inputs [inputs])
        inputs++;
    cr_expect_eq (count, inputs, "%d report lines for %d inputs", count, inputs);
    for (int i = 0; s_tree_inputs [i]; i++) {
        json_t *line = s_report_line (lines, count, s_tree_inputs [i]);
        cr_assert_not_null (line, "no report line for %s", s_tree_inputs [i]);
        cr_expect_str_eq (s_member (line, "status"), status);
        char output [700];
        snprintf (output, sizeof output, "%s/out/%s", s_cluster->dir, s_tree_outputs [i]);
        cr_expect_str_eq (s_member (line, "output"), output);
        if (strcmp (status, "done") == 0) {
            cr_expect_eq (strlen (s_member (line, "id")), 32, "no job id for %s",
                          s_tree_inputs [i]);
            s_expect_worker (line);
        }
    }
    for (int i = 0; i < count; i++)
        json_decref (lines [i]);
}

//  out holds exactly the tree's outputs, the state file and the report:
//  no temporary, partial or hidden input's file.
static int
s_count_files (const char *dir, const char *relative, char *unexpected, size_t size)
{
    char path [900];
    snprintf (path, sizeof path, "%s%s%s", dir, *relative ? "/" : "", relative);
    DIR *handle = opendir (path);
    cr_assert_not_null (handle, "%s", path);
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir (handle))) {
        if (strcmp (entry->d_name, ".") == 0 || strcmp (entry->d_name, "..") == 0)
            continue;
        char child [900];
        snprintf (child, sizeof child, "%s%s%s", relative, *relative ? "/" : "", entry->d_name);
        struct stat st;
        char full [2000];
        snprintf (full, sizeof full, "%s/%s", dir, child);
        cr_assert_eq (stat (full, &st), 0);
        if (S_ISDIR (st.st_mode)) {
            count += s_count_files (dir, child, unexpected, size);
            continue;
        }
        bool known = strcmp (child, ".imgpipe-batch.state") == 0
                  || strcmp (child, "imgpipe-report.jsonl") == 0;
        for (int i = 0; !known && s_tree_outputs [i]; i++)
            known = strcmp (child, s_tree_outputs [i]) == 0;
        if (!known) {
            size_t len = strlen (unexpected);
            snprintf (unexpected + len, size - len, " %s", child);
        }
        count++;
    }
    closedir (handle);
    return count;
}

static void
s_expect_only_outputs (void)
{
    char unexpected [2000] = "";
    s_count_files (s_path (0, "out"), "", unexpected, sizeof unexpected);
    cr_expect_str_eq (unexpected, "", "unexpected files in out:%s", unexpected);
}

//  ---------------------------------------------------------------------------

Test (batch, a_tree_comes_out_mirrored_and_a_rerun_skips_it_all, .init = s_setup,
      .fini = s_teardown, .timeout = 300)
{
    s_make_tree ();
    s_run_t run;
    s_batch (&run, (const char *[]) { "--width", "64", "--parallel", "3", NULL });
    cr_assert_eq (run.exit_code, 0);
    s_expect_summary (&run, 4, 0, 0);
    for (int i = 0; s_tree_outputs [i]; i++)
        s_expect_thumb (s_tree_outputs [i], 64);
    s_expect_only_outputs ();
    s_expect_report ("done");
    s_run_free (&run);

    //  The same command again: nothing is uploaded, all is skipped.
    int before = h_log_count (s_cluster->frontend [0].log, "event=submitted");
    cr_assert_geq (before, 4, "the first run's uploads are not in the log: nothing to compare");
    s_batch (&run, (const char *[]) { "--width", "64", "--parallel", "3", NULL });
    cr_assert_eq (run.exit_code, 0);
    s_expect_summary (&run, 0, 4, 0);
    s_expect_report ("skipped");
    int after = h_log_count (s_cluster->frontend [0].log, "event=submitted");
    cr_expect_eq (after, before, "the re-run uploaded %d files", after - before);
    s_run_free (&run);

    //  Other options: everything is made again.
    s_batch (&run, (const char *[]) { "--width", "32", NULL });
    cr_assert_eq (run.exit_code, 0);
    s_expect_summary (&run, 4, 0, 0);
    for (int i = 0; s_tree_outputs [i]; i++)
        s_expect_thumb (s_tree_outputs [i], 32);
    s_expect_report ("done");
    s_expect_only_outputs ();
    s_run_free (&run);
    h_cluster_pass (s_cluster);
}

Test (batch, a_file_that_is_no_image_fails_with_its_reason, .init = s_setup,
      .fini = s_teardown, .timeout = 300)
{
    s_image ("good.jpg", "jpeg", 400, 200);
    static const char text [] = "hello, I am not an image\n";
    s_put ("notes/bad.jpg", text, sizeof text - 1);
    s_run_t run;
    s_batch (&run, (const char *[]) { "--width", "64", NULL });
    cr_expect_eq (run.exit_code, 1, "a failed file must make the exit code non-zero");
    s_expect_summary (&run, 1, 0, 1);
    char line [900];
    snprintf (line, sizeof line, "failed %s/tree/notes/bad.jpg: unsupported_format: ",
              s_cluster->dir);
    cr_expect (run.out && strstr (run.out, line), "no '%s' in:\n%s", line, run.out);
    cr_expect (run.out && strstr (run.out, "\nfailed: 1 unsupported_format\n"),
               "the summary does not count the reason:\n%s", run.out);
    s_expect_thumb ("good.png", 64);
    struct stat st;
    cr_expect_neq (stat (s_path (0, "out/notes/bad.png"), &st), 0, "a failed file has output");
    json_t *lines [8];
    int count = s_report (lines, 8);
    json_t *bad = s_report_line (lines, count, "notes/bad.jpg");
    cr_assert_not_null (bad);
    cr_expect_str_eq (s_member (bad, "status"), "failed");
    json_t *error = json_object_get (bad, "error");
    cr_expect_str_eq (s_member (error, "code"), "unsupported_format");
    cr_expect (strlen (s_member (error, "message")) > 10);
    cr_expect_str_eq (s_member (bad, "output"), "");
    for (int i = 0; i < count; i++)
        json_decref (lines [i]);
    s_run_free (&run);
    h_cluster_pass (s_cluster);
}

//  How many lines of the running batch's stdout start with "ok ".
static bool
s_some_done (void *arg)
{
    return h_log_count (s_path (5, "batch.out"), "ok ") >= *(int *) arg;
}

#define S_MANY 40

//  Enough files that Ctrl-C lands mid-run: S_MANY small images in 4
//  directories. Starts the batch, waits for 3 files done, sends SIGINT.
static pid_t
s_interrupt_many (void)
{
    for (int i = 0; i < S_MANY; i++) {
        char name [64];
        snprintf (name, sizeof name, "dir%d/img%02d.jpg", i % 4, i);
        s_image (name, "jpeg", 400, 200);
    }
    pid_t pid = s_batch_start ((const char *[]) { "--width", "48", "--parallel", "2", NULL });
    int want = 3;
    cr_assert (h_wait_until (s_some_done, &want, 60000), "no file done within 60 s");
    cr_assert_eq (kill (pid, SIGINT), 0);
    return pid;
}

//  No partial file: no temporary left in OUTDIR.
static void
s_expect_no_temporary (void)
{
    char find [800];
    snprintf (find, sizeof find, "test -z \"$(find '%s' -name '*.tmp*')\"", s_path (0, "out"));
    cr_expect_eq (system (find), 0, "a temporary file was left behind");
}

static int
s_expect_whole_outputs (void)
{
    s_expect_no_temporary ();
    int outputs = 0;
    for (int i = 0; i < S_MANY; i++) {
        char name [64], path [700];
        snprintf (name, sizeof name, "dir%d/img%02d.png", i % 4, i);
        snprintf (path, sizeof path, "%s/out/%s", s_cluster->dir, name);
        struct stat st;
        if (stat (path, &st) == 0) {
            s_expect_thumb (name, 48);
            outputs++;
        }
    }
    return outputs;
}

Test (batch, ctrl_c_leaves_no_partial_file_and_the_printed_command_resumes,
      .init = s_setup, .fini = s_teardown, .timeout = 300)
{
    pid_t pid = s_interrupt_many ();
    s_run_t run;
    s_run_wait (pid, &run);
    cr_assert_eq (run.exit_code, S_EXIT_INTERRUPTED, "exit %d after Ctrl-C", run.exit_code);
    const char *marker = "to resume, run:\n  ";
    const char *at = run.out ? strstr (run.out, marker) : NULL;
    cr_assert_not_null (at, "no resume command in:\n%s", run.out);
    int left = 0;
    cr_assert (strstr (run.out, "interrupted: ") &&
               sscanf (strstr (run.out, "interrupted: "), "interrupted: %d file", &left) == 1);
    //  Files left in flight after their upload: the resume waits for their
    //  jobs instead of uploading them again.
    int uploaded = 0;
    const char *kept = strstr (run.out, " uploaded already: a resume waits");
    if (kept) {
        while (kept > run.out && kept [-1] != '(')
            kept--;
        uploaded = atoi (kept);
    }
    int submitted = h_log_count (s_cluster->frontend [0].log, "event=submitted");
    char command [2000];
    snprintf (command, sizeof command, "%.*s", (int) strcspn (at + strlen (marker), "\n"),
              at + strlen (marker));
    int done_first = 0;
    for (const char *line = run.out; (line = strstr (line, "ok ")); line++)
        done_first++;
    cr_expect (left > 0 && done_first + left == S_MANY, "%d done + %d left != %d", done_first,
               left, S_MANY);
    s_run_free (&run);
    int outputs = s_expect_whole_outputs ();
    cr_expect_eq (outputs, done_first, "%d outputs for %d files done", outputs, done_first);

    //  The printed command, as a user would paste it, finishes the rest.
    char *argv [] = { "/bin/sh", "-c", command, NULL };
    pid = h_spawn (argv, s_path (3, "batch.err"), s_path (4, "batch.out"));
    cr_assert (pid > 0);
    s_run_wait (pid, &run);
    cr_assert_eq (run.exit_code, 0, "the resume command '%s' exit %d", command, run.exit_code);
    s_expect_summary (&run, left, done_first, 0);
    cr_expect_eq (s_expect_whole_outputs (), S_MANY);
    int resubmitted = h_log_count (s_cluster->frontend [0].log, "event=submitted") - submitted;
    cr_log_info ("left %d, of them uploaded %d; the resume uploaded %d", left, uploaded,
                 resubmitted);
    cr_expect_eq (resubmitted, left - uploaded, "the resume uploaded %d of %d left (%d had "
                  "jobs already)", resubmitted, left, uploaded);
    s_run_free (&run);
    h_cluster_pass (s_cluster);
}

//  Quick files, then `slow` ones that keep a resizer busy for seconds
//  each (flat 7000 x 7000 PNGs), under tree/a and tree/b.
static void
s_make_slow_tree (int quick, int slow)
{
    for (int i = 0; i < quick; i++) {
        char name [64];
        snprintf (name, sizeof name, "a/quick%d.jpg", i);
        s_image (name, "jpeg", 400, 200);
    }
    size_t size = 0;
    void *data = h_make_flat_png (7000, 7000, &size);
    cr_assert_not_null (data);
    for (int i = 0; i < slow; i++) {
        char name [64];
        snprintf (name, sizeof name, "b/slow%d.png", i);
        s_put (name, data, size);
    }
    free (data);
}

//  Stop (SIGSTOP) or continue every resizer of the cluster: while they
//  are stopped no job in flight can end, whatever the machine's speed.
static void
s_pause_resizers (bool pause)
{
    for (int i = 0; i < s_cluster->resizers; i++)
        cr_assert_eq (pause ? h_pause (s_cluster->resizer [i].pid)
                            : h_resume (s_cluster->resizer [i].pid), 0);
}

Test (batch, jobs_left_in_flight_are_waited_for_not_uploaded_again, .init = s_setup,
      .fini = s_teardown, .timeout = 300)
{
    //  Four slow files in flight when Ctrl-C comes: two on the resizers,
    //  two queued. The resizers are stopped (SIGSTOP) before it, so no job
    //  can end within the 2 s grace, however fast the machine: they are
    //  left uploaded, and the resume must wait for those jobs.
    s_make_slow_tree (2, 4);
    pid_t pid = s_batch_start ((const char *[]) { "--width", "48", "--parallel", "4", NULL });
    int want = 2;
    cr_assert (h_wait_until (s_some_done, &want, 60000), "no file done within 60 s");
    s_pause_resizers (true);
    cr_assert_eq (kill (pid, SIGINT), 0);
    s_run_t run;
    s_run_wait (pid, &run);
    s_pause_resizers (false);
    cr_assert_eq (run.exit_code, S_EXIT_INTERRUPTED);
    const char *line = run.out ? strstr (run.out, "interrupted: ") : NULL;
    int left = 0, uploaded = 0;
    const char *kept = line ? strstr (line, " left (") : NULL;
    cr_assert (kept && sscanf (line, "interrupted: %d file", &left) == 1
               && sscanf (kept, " left (%d uploaded already", &uploaded) == 1,
               "no jobs kept in:\n%s", run.out);
    cr_expect (uploaded > 0 && uploaded <= left);
    s_run_free (&run);
    int submitted = h_log_count (s_cluster->frontend [0].log, "event=submitted");
    s_batch (&run, (const char *[]) { "--width", "48", "--parallel", "4", NULL });
    cr_assert_eq (run.exit_code, 0);
    s_expect_summary (&run, left, 6 - left, 0);
    int resubmitted = h_log_count (s_cluster->frontend [0].log, "event=submitted") - submitted;
    cr_expect_eq (resubmitted, left - uploaded, "the resume uploaded %d of %d left, %d of which "
                  "had jobs", resubmitted, left, uploaded);
    s_expect_no_temporary ();
    s_run_free (&run);
    h_cluster_pass (s_cluster);
}

static bool
s_stopping (void *arg)
{
    (void) arg;
    return h_log_count (s_path (5, "batch.out"), "stopping;") > 0;
}

Test (batch, a_second_ctrl_c_quits_at_once_leaving_no_partial_file, .init = s_setup,
      .fini = s_teardown, .timeout = 300)
{
    //  Three quick files, then slow ones: the second Ctrl-C must come while
    //  files are still in flight, within the first one's grace, so the
    //  resizers are stopped first (none can end meanwhile).
    s_make_slow_tree (3, 4);
    pid_t pid = s_batch_start ((const char *[]) { "--width", "48", "--parallel", "2", NULL });
    int want = 3;
    cr_assert (h_wait_until (s_some_done, &want, 60000), "no file done within 60 s");
    s_pause_resizers (true);
    cr_assert_eq (kill (pid, SIGINT), 0);
    //  Signals of one kind merge while pending: the second only after the
    //  first was taken.
    cr_assert (h_wait_until (s_stopping, NULL, 10000), "the first Ctrl-C was not taken");
    cr_assert_eq (kill (pid, SIGINT), 0);
    s_run_t run;
    s_run_wait (pid, &run);
    cr_expect_eq (run.exit_code, S_EXIT_INTERRUPTED);
    cr_expect (run.out && strstr (run.out, "interrupted again: quitting now"), "%s", run.out);
    s_pause_resizers (false);
    s_expect_no_temporary ();
    s_run_free (&run);
    h_cluster_pass (s_cluster);
}

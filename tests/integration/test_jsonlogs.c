/*  test_jsonlogs — a whole cluster with --log-format json: broker,
    resizer, frontend (with --verbose, so its per-request DEBUG lines too)
    and the client, on loopback, through the real frontend.

    What it shows: every line every program wrote is one JSON object with
    time, level, program and event; one job can be followed across the
    processes by its "job" key alone (frontend submitted -> broker
    accepted, dispatched, started, done -> resizer started, resized ->
    client downloaded), numbers are numbers and sizes like "640x480" are
    strings; a failed job's reason (text from libvips, with spaces and
    colons) arrives whole in "message".

    The harness waits for a resizer's text "event=ready", so the cluster
    starts with none and the test starts its JSON resizer itself.
*/
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "expect.h"
#include "harness.h"

#define S_READY_MS 20000            //  deadline for the resizer's ready line
#define S_STOP_MS 10000             //  deadline for every process to stop

static h_cluster_t *s_cluster;
static h_proc_t s_resizer;          //  ours, logging JSON

static void
s_setup (void)
{
    h_vips_init ();
    h_cluster_opts_t opts = {
        .resizers = 0, .frontends = 1,
        .broker_extra = { "--log-format", "json", NULL },
        .frontend_extra = { "--log-format", "json", "--verbose", NULL },
    };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the cluster did not start (logs above)");

    char jobs [64];
    snprintf (jobs, sizeof jobs, "tcp://127.0.0.1:%d", s_cluster->broker_ports [2]);
    snprintf (s_resizer.name, sizeof s_resizer.name, "resizer-json");
    snprintf (s_resizer.log, sizeof s_resizer.log, "%s/resizer-json.log", s_cluster->dir);
    char *argv [] = { H_RESIZER_BIN, "--jobs", jobs, "--log-format", "json", "--nice", "0",
                      "--name", "json", NULL };
    s_resizer.pid = h_spawn (argv, s_resizer.log, NULL);
    cr_assert_gt (s_resizer.pid, 0);
    cr_assert_geq (h_wait_log (&s_resizer, "\"event\":\"ready\"", 1, S_READY_MS), 0,
                   "the JSON resizer logged no ready line (%s)", s_resizer.log);
}

static void
s_teardown (void)
{
    if (s_resizer.pid > 0)
        h_stop (s_resizer.pid, S_STOP_MS);
    s_resizer.pid = 0;
    h_cluster_destroy (&s_cluster);
}

//  The lines of a log, each parsed; every one must be a JSON object with
//  the envelope. Returns a JSON array of them (caller decrefs).
static json_t *
s_read_log (const char *path)
{
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file, "no log %s", path);
    json_t *lines = json_array ();
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    int number = 0;
    while ((len = getline (&line, &size, file)) > 0) {
        number++;
        json_error_t error;
        json_t *o = json_loadb (line, (size_t) len, JSON_REJECT_DUPLICATES, &error);
        cr_expect (json_is_object (o), "%s:%d is not a JSON object (%s): %s", path, number,
                   error.text, line);
        if (!json_is_object (o)) {
            json_decref (o);
            continue;
        }
        const char *keys [] = { "time", "level", "program", "event" };
        for (size_t k = 0; k < 4; k++)
            cr_expect (json_is_string (json_object_get (o, keys [k])), "%s:%d has no %s: %s",
                       path, number, keys [k], line);
        json_array_append_new (lines, o);
    }
    free (line);
    fclose (file);
    cr_expect_gt (json_array_size (lines), 0, "%s is empty", path);
    return lines;
}

//  The first line of `lines` with this event (and job, unless NULL).
static json_t *
s_find (json_t *lines, const char *event, const char *job)
{
    size_t i;
    json_t *o;
    json_array_foreach (lines, i, o) {
        const char *e = json_string_value (json_object_get (o, "event"));
        const char *j = json_string_value (json_object_get (o, "job"));
        if (e && strcmp (e, event) == 0 && (!job || (j && strcmp (j, job) == 0)))
            return o;
    }
    return NULL;
}

//  Line `event` of `job` is in `lines`, from `program`; returns it.
static json_t *
s_expect_event (json_t *lines, const char *program, const char *event, const char *job)
{
    json_t *o = s_find (lines, event, job);
    cr_assert_not_null (o, "%s logged no event %s for job %s", program, event, job);
    cr_expect_str_eq (json_string_value (json_object_get (o, "program")), program);
    return o;
}

static void
s_expect_integer (json_t *o, const char *key)
{
    cr_expect (json_is_integer (json_object_get (o, key)), "%s is not a JSON integer in %s",
               key, json_dumps (o, JSON_COMPACT));
}

Test (jsonlogs, a_job_is_followed_by_its_id_through_every_program, .init = s_setup,
      .fini = s_teardown, .timeout = 180)
{
    int port = s_cluster->http_ports [0];
    size_t size;
    void *png = h_make_image ("png", 640, 480, false, &size);
    cr_assert_not_null (png);
    char id [H_ID_SIZE], bad_id [H_ID_SIZE];
    cr_assert_eq (h_upload (port, "/v1/images?width=64&height=64", png, size, "image/png",
                            true, id, NULL), 202);
    //  A PNG cut in half: its head passes the frontend, libvips fails on it.
    cr_assert_eq (h_upload (port, "/v1/images?width=64", png, size / 2, "image/png", true,
                            bad_id, NULL), 202);
    free (png);
    json_decref (expect_job_ends (port, id, "done"));
    json_decref (expect_job_ends (port, bad_id, "failed"));

    //  The client, verbose: its DEBUG lines are JSON too.
    char out [600], err [600];
    snprintf (out, sizeof out, "%s/thumb.png", s_cluster->dir);
    snprintf (err, sizeof err, "%s/client.log", s_cluster->dir);
    char *argv [] = { H_CLIENT_BIN, "--url", (char *) h_cluster_url (s_cluster, 0),
                      "--log-format", "json", "--verbose", "get", id, "-o", out, NULL };
    pid_t pid = h_spawn (argv, err, NULL);
    cr_assert_gt (pid, 0);
    int status = -1;
    cr_assert_eq (h_wait_exit (pid, 60000, &status), 0, "the client did not end");
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 0, "client status %d (%s)",
               status, err);

    //  Stop everything, so every buffered line is out.
    char report [512];
    h_stop (s_resizer.pid, S_STOP_MS);
    s_resizer.pid = 0;
    cr_expect_eq (h_cluster_stop_all (s_cluster, S_STOP_MS, report, sizeof report), 0, "%s",
                  report);

    json_t *broker = s_read_log (s_cluster->broker.log);
    json_t *frontend = s_read_log (s_cluster->frontend [0].log);
    json_t *resizer = s_read_log (s_resizer.log);
    json_t *client = s_read_log (err);

    json_t *o = s_expect_event (frontend, "imgpipe-frontend", "submitted", id);
    s_expect_integer (o, "bytes");
    o = s_expect_event (frontend, "imgpipe-frontend", "http_request", NULL);
    s_expect_integer (o, "status");
    cr_expect (json_is_string (json_object_get (o, "path")));
    s_expect_event (broker, "imgpipe-broker", "accepted", id);
    s_expect_event (broker, "imgpipe-broker", "dispatched", id);
    o = s_expect_event (broker, "imgpipe-broker", "done", id);
    const char *worker = json_string_value (json_object_get (o, "worker"));
    cr_expect (worker && strncmp (worker, "json-", 5) == 0, "done by worker %s",
               worker ? worker : "(none)");
    s_expect_integer (o, "ms");
    s_expect_integer (o, "bytes");
    s_expect_integer (o, "attempt");
    o = s_expect_event (resizer, "imgpipe-resizer", "resized", id);
    cr_expect_str_eq (json_string_value (json_object_get (o, "in")), "640x480");
    s_expect_event (client, "imgpipe", "downloaded", id);

    o = s_expect_event (resizer, "imgpipe-resizer", "failed", bad_id);
    const char *message = json_string_value (json_object_get (o, "message"));
    cr_expect (message && strchr (message, ' '), "the reason whole, spaces and all: %s",
               message ? message : "(none)");
    s_expect_event (broker, "imgpipe-broker", "failed", bad_id);

    json_decref (broker);
    json_decref (frontend);
    json_decref (resizer);
    json_decref (client);
    h_cluster_pass (s_cluster);
}

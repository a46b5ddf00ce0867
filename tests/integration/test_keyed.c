/*  test_keyed — the real broker, resizers and frontends on loopback with
    CURVE keys made by `imgpipe keygen`, and the peers the keys keep out.

    Why: issue 9 found a rogue process posing as a resizer receiving
    uploads and answering them. These tests are that attack, done to the
    real programs: a resizer whose key the broker does not hold, and plain
    (keyless) ZeroMQ peers on the jobs endpoint, get no job and decide
    none, while the keyed resizer and frontend do the work end to end. And
    the broker will not bind beyond loopback without keys unless told
    --insecure.

    (Named test_keyed, not test_curve: unit and integration suites are
    built into the same tests/ directory, and tests/unit/test_curve.c holds
    the unit suite of proto/imgp_curve.)

    Never: sleep as an assertion. "Nothing arrived" is asserted only after
    an event that proves the peer was refused (the broker's refusal line,
    the rogue's own reconnects, a plain peer's monitor).
*/
#include "harness.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgp_msg.h"

#define S_JOB_MS 60000              //  deadline for one job to end
#define S_LOG_MS 20000              //  deadline for a log line to appear
#define S_BROKER_FLAGS "--heartbeat-timeout-ms", "1500", "--dispatch-timeout-ms", "3000"
#define S_REFUSED_JOBS_UNKNOWN "event=refused reason=unknown_key socket=jobs"

static h_cluster_t *s_cluster;
static char s_keys [64];            //  temp dir: key files and clients/

//  ---------------------------------------------------------------------------
//  Keys

//  s_keys/NAME (a public file; NAME_secret is its secret) in a buffer of
//  `slot` (0..7), so up to eight paths can be borrowed by the cluster.
static const char *
s_key (const char *name, int slot)
{
    static char paths [8][128];
    snprintf (paths [slot], sizeof paths [slot], "%s/%s", s_keys, name);
    return paths [slot];
}

//  Run a program to its end within 10 s; returns its exit code.
static int
s_run (char *const argv [], const char *log)
{
    pid_t pid = h_spawn (argv, log, NULL);
    cr_assert_gt (pid, 0, "cannot start %s", argv [0]);
    int status = 0;
    cr_assert_eq (h_wait_exit (pid, 10000, &status), 0, "%s did not end", argv [0]);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

//  `imgpipe keygen s_keys/NAME`, as an operator makes a key.
static void
s_keygen (const char *name)
{
    char path [128], log [128];
    snprintf (path, sizeof path, "%s/%s", s_keys, name);
    snprintf (log, sizeof log, "%s/keygen.log", s_keys);
    char *argv [] = { H_CLIENT_BIN, "keygen", path, NULL };
    cr_assert_eq (s_run (argv, log), 0, "imgpipe keygen %s failed (see %s)", path, log);
}

//  Hand key NAME to the broker: its public file into clients/.
static void
s_allow (const char *name)
{
    char from [256], to [256];
    snprintf (from, sizeof from, "%s/%s", s_keys, name);
    snprintf (to, sizeof to, "%s/clients/%s", s_keys, name);
    size_t size = 0;
    void *data = h_read_file (from, &size);
    cr_assert_not_null (data, "%s", from);
    FILE *file = fopen (to, "w");
    cr_assert_not_null (file, "%s", to);
    cr_assert_eq (fwrite (data, 1, size, file), size, "%s", to);
    cr_assert_eq (fclose (file), 0, "%s", to);
    free (data);
}

static void
s_setup (void)
{
    snprintf (s_keys, sizeof s_keys, "/tmp/imgp-keyed-XXXXXX");
    cr_assert_not_null (mkdtemp (s_keys));
    char clients [128];
    snprintf (clients, sizeof clients, "%s/clients", s_keys);
    cr_assert_eq (mkdir (clients, 0700), 0);
    s_keygen ("broker");
    s_keygen ("resizer");
    s_keygen ("frontend");
    s_keygen ("rogue");
    s_allow ("resizer");
    s_allow ("frontend");
}

//  Tests without a cluster call this last: the key dir is then removed.
static bool s_passed;

static void
s_teardown (void)
{
    bool passed = s_passed || (s_cluster && s_cluster->ok);
    h_cluster_destroy (&s_cluster);
    if (passed) {
        char command [128];
        snprintf (command, sizeof command, "rm -rf '%s'", s_keys);
        cr_expect_eq (system (command), 0);
    }
}

TestSuite (keyed, .init = s_setup, .fini = s_teardown, .timeout = 120);

//  A keyed cluster: broker, `resizers` resizers and one frontend, all with
//  their keys; fast broker deadlines as in test_faults.
static void
s_start (int resizers)
{
    h_cluster_opts_t opts = {
        .resizers = resizers, .frontends = 1,
        .broker_extra = { S_BROKER_FLAGS, "--curve-secret", s_key ("broker_secret", 0),
                          "--curve-clients", s_key ("clients", 1), NULL },
        .resizer_extra = { "--heartbeat-ms", "250", "--curve-secret",
                           s_key ("resizer_secret", 2), "--curve-server", s_key ("broker", 3),
                           NULL },
        .frontend_extra = { "--curve-secret", s_key ("frontend_secret", 4), "--curve-server",
                            s_key ("broker", 5), NULL } };
    s_cluster = h_cluster_new (&opts);
    cr_assert_not_null (s_cluster, "the keyed cluster did not start (logs above)");
}

//  ---------------------------------------------------------------------------
//  Jobs

typedef struct {
    void *data;                     //  a PNG
    size_t size;                    //  its bytes
    int w, h;                       //  its pixels
} s_image_t;

static const s_image_t *
s_image (void)
{
    static s_image_t image = { NULL, 0, 320, 240 };
    if (!image.data)
        image.data = h_make_image ("png", image.w, image.h, false, &image.size);
    cr_assert_not_null (image.data);
    return &image;
}

static void
s_upload (char id [H_ID_SIZE])
{
    const s_image_t *image = s_image ();
    h_response_t resp;
    int status = h_upload (s_cluster->http_ports [0], "/v1/images", image->data, image->size,
                           "image/png", false, id, &resp);
    cr_assert_eq (status, 202, "upload: %d %s %.300s", status, resp.error,
                  resp.body ? resp.body : "");
    h_response_free (&resp);
}

//  The job's status now ("queued", "processing", "done", "failed").
static void
s_status_now (const char *id, char *status, size_t size)
{
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    h_response_t resp;
    cr_assert (h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 5000) == 0
               && resp.status == 200, "GET %s: %d %s", path, resp.status, resp.error);
    json_t *root = h_json (&resp);
    snprintf (status, size, "%s", h_json_status (root));
    json_decref (root);
    h_response_free (&resp);
}

//  The job ends done, its thumbnail a real fit of the image, made in one
//  attempt (nobody else decided it first).
static void
s_expect_done (const char *id)
{
    json_t *root = NULL;
    char why [512];
    cr_assert_eq (h_job_wait (s_cluster->http_ports [0], id, S_JOB_MS, &root, why, sizeof why),
                  0, "%s", why);
    char *text = json_dumps (root, JSON_COMPACT);
    cr_assert_str_eq (h_json_status (root), "done", "job %s ended %s", id, text);
    cr_expect_eq (json_integer_value (json_object_get (root, "attempts")), 1, "%s", text);
    free (text);
    json_decref (root);

    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s/thumbnail", id);
    h_response_t resp;
    cr_assert (h_http (s_cluster->http_ports [0], "GET", path, NULL, NULL, 0, &resp, 10000) == 0
               && resp.status == 200, "GET %s: %d %s", path, resp.status, resp.error);
    const s_image_t *image = s_image ();
    cr_expect_eq (h_check_thumb (resp.body, resp.body_size, image->w, image->h, 100, 100,
                                 NULL, NULL, why, sizeof why), 0, "job %s: %s", id, why);
    h_response_free (&resp);
}

//  Wait for `count` of `needle` in the broker's log.
static void
s_broker_logs (const char *needle, int count)
{
    cr_assert_geq (h_wait_log (&s_cluster->broker, needle, count, S_LOG_MS), 0,
                   "the broker did not log '%s' %d time(s) (log: %s)", needle, count,
                   s_cluster->broker.log);
}

//  ---------------------------------------------------------------------------
//  A plain ZeroMQ peer on the jobs endpoint, as the rogue program

//  A DEALER without keys, with a monitor of its connection's handshake.
typedef struct {
    zsock_t *dealer;                //  the peer
    zsock_t *events;                //  PAIR on libzmq's monitor of dealer
} s_plain_t;

//  Connect a plain peer NAME that says READY with credit, as a resizer would.
static void
s_plain_start (s_plain_t *self, const char *name)
{
    self->dealer = zsock_new (ZMQ_DEALER);
    self->events = zsock_new (ZMQ_PAIR);
    cr_assert (self->dealer && self->events);
    zsock_set_identity (self->dealer, name);
    zsock_set_linger (self->dealer, 0);
    char monitor [64];
    snprintf (monitor, sizeof monitor, "inproc://keyed-plain-%s", name);
    cr_assert_eq (zmq_socket_monitor (zsock_resolve (self->dealer), monitor,
                                      ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED
                                      | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL), 0);
    cr_assert_eq (zsock_connect (self->events, "%s", monitor), 0);
    cr_assert_eq (zsock_connect (self->dealer, "tcp://127.0.0.1:%d",
                                 s_cluster->broker_ports [2]), 0);
    imgp_msg_t *ready = imgp_msg_new (IMGP_MSG_READY);
    snprintf (ready->worker, sizeof ready->worker, "%s", name);
    ready->slots = 1;
    ready->credit = 2;
    cr_assert_eq (imgp_msg_send (&ready, self->dealer), 0);
}

//  Wait until the peer's connection ended without a handshake: the broker
//  refused it (libzmq does not try again). Whether the broker logs it is a
//  race of the TCP teardown (a reset can beat the greeting it reads), so
//  the peer's own monitor is the proof.
static void
s_plain_refused (s_plain_t *self)
{
    zsock_set_rcvtimeo (self->events, S_LOG_MS);
    uint16_t event = 0;
    zmsg_t *msg = zmsg_recv (self->events);
    cr_assert_not_null (msg, "the plain peer's connection neither ended nor succeeded");
    zframe_t *first = zmsg_first (msg);
    if (first && zframe_size (first) == 6)
        memcpy (&event, zframe_data (first), sizeof event);
    zmsg_destroy (&msg);
    cr_assert_neq (event, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, "a plain peer got through");
}

static void
s_plain_end (s_plain_t *self)
{
    zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->events);
    zsock_destroy (&self->dealer);
}

//  ---------------------------------------------------------------------------
//  Tests

Test (keyed, allowed_resizer_and_frontend_do_the_work)
{
    s_start (1);
    char id [H_ID_SIZE];
    s_upload (id);
    s_expect_done (id);
    cr_expect_eq (h_log_count (s_cluster->broker.log, "event=refused"), 0,
                  "the broker refused one of its own (log: %s)", s_cluster->broker.log);
    cr_expect_geq (h_log_count (s_cluster->frontend [0].log, "curve=on"), 1);
    h_cluster_pass (s_cluster);
}

Test (keyed, unknown_key_gets_no_job_and_is_logged_once)
{
    s_start (0);
    char id [H_ID_SIZE];
    s_upload (id);

    //  A resizer with a key of its own making, never handed to the broker.
    char jobs [64], log [300];
    snprintf (jobs, sizeof jobs, "tcp://127.0.0.1:%d", s_cluster->broker_ports [2]);
    snprintf (log, sizeof log, "%s/rogue.log", s_cluster->dir);
    char *argv [] = { H_RESIZER_BIN, "--jobs", jobs, "--name", "rogue", "--curve-secret",
                      (char *) s_key ("rogue_secret", 6), "--curve-server",
                      (char *) s_key ("broker", 7), "--verbose", NULL };
    h_proc_t rogue = { .pid = h_spawn (argv, log, NULL) };
    snprintf (rogue.log, sizeof rogue.log, "%s", log);
    cr_assert_gt (rogue.pid, 0);

    //  Refused, and refused again as it keeps making its socket anew: the
    //  broker says so once (once a minute per socket).
    s_broker_logs (S_REFUSED_JOBS_UNKNOWN, 1);
    cr_assert_geq (h_wait_log (&rogue, "event=refused_by_server", 1, S_LOG_MS), 0,
                   "the rogue was not told (log: %s)", log);
    cr_assert_geq (h_wait_log (&rogue, "event=jobs_reconnect", 3, S_LOG_MS), 0,
                   "the rogue did not try again (log: %s)", log);
    cr_expect_eq (h_log_count (s_cluster->broker.log, S_REFUSED_JOBS_UNKNOWN), 1,
                  "one line for many refusals (log: %s)", s_cluster->broker.log);

    //  It got nothing: the job waits, unseen by it.
    char status [32];
    s_status_now (id, status, sizeof status);
    cr_expect_str_eq (status, "queued");
    cr_expect_eq (h_log_count (log, id), 0, "the rogue saw job %s", id);
    cr_expect_eq (h_log_count (log, "event=started"), 0);

    //  An allowed resizer that joins takes it and finishes it.
    cr_assert_geq (h_cluster_add_resizer (s_cluster, 20000), 0);
    s_expect_done (id);
    h_stop (rogue.pid, 5000);
    h_cluster_pass (s_cluster);
}

Test (keyed, plain_peer_on_jobs_receives_no_message)
{
    s_start (0);
    char id [H_ID_SIZE];
    s_upload (id);
    s_plain_t plain;
    s_plain_start (&plain, "plain-1");
    s_plain_refused (&plain);
    //  Refused at the handshake: nothing was sent to it, and nothing ever
    //  will be (libzmq does not retry a refused connection).
    cr_assert_not (zsock_events (plain.dealer) & ZMQ_POLLIN,
                   "the plain peer received a message");
    char status [32];
    s_status_now (id, status, sizeof status);
    cr_expect_str_eq (status, "queued");
    s_plain_end (&plain);

    cr_assert_geq (h_cluster_add_resizer (s_cluster, 20000), 0);
    s_expect_done (id);
    h_cluster_pass (s_cluster);
}

Test (keyed, plain_peer_cannot_decide_a_job)
{
    s_start (0);
    char id [H_ID_SIZE];
    s_upload (id);
    //  It claims the job failed, then that it finished it with a page of
    //  HTML, as the rogue did.
    s_plain_t plain;
    s_plain_start (&plain, "plain-2");
    imgp_msg_t *failed = imgp_msg_new (IMGP_MSG_FAILED);
    snprintf (failed->id, sizeof failed->id, "%s", id);
    snprintf (failed->worker, sizeof failed->worker, "plain-2");
    failed->attempts = 1;
    snprintf (failed->code, sizeof failed->code, "internal");
    snprintf (failed->message, sizeof failed->message, "forged");
    cr_assert_eq (imgp_msg_send (&failed, plain.dealer), 0);
    s_plain_refused (&plain);

    char status [32];
    s_status_now (id, status, sizeof status);
    cr_expect_str_eq (status, "queued", "a plain peer decided job %s", id);
    cr_expect_eq (h_log_count (s_cluster->broker.log, "forged"), 0);
    s_plain_end (&plain);

    //  The real resizer makes the real thumbnail, in the first attempt.
    cr_assert_geq (h_cluster_add_resizer (s_cluster, 20000), 0);
    s_expect_done (id);
    h_cluster_pass (s_cluster);
}

Test (keyed, plain_frontend_is_refused_and_says_why)
{
    s_start (1);
    //  A second frontend without keys, on a port of the kernel's choice.
    char intake [64], status [64], log [300];
    snprintf (intake, sizeof intake, "tcp://127.0.0.1:%d", s_cluster->broker_ports [0]);
    snprintf (status, sizeof status, "tcp://127.0.0.1:%d", s_cluster->broker_ports [1]);
    snprintf (log, sizeof log, "%s/plain-frontend.log", s_cluster->dir);
    char *argv [] = { H_FRONTEND_BIN, "--listen", "127.0.0.1:0", "--intake", intake,
                      "--status", status, "--threads", "16", "--broker-timeout-ms", "500",
                      NULL };
    h_proc_t plain = { .pid = h_spawn (argv, log, NULL) };
    snprintf (plain.log, sizeof plain.log, "%s", log);
    cr_assert_gt (plain.pid, 0);
    cr_assert_geq (h_wait_log (&plain, "event=listening", 1, S_LOG_MS), 0);
    cr_assert_geq (h_wait_log (&plain, "event=refused_by_server", 1, S_LOG_MS), 0,
                   "the plain frontend did not say it was refused (log: %s)", log);

    size_t size = 0;
    char *text = h_read_file (log, &size);
    cr_assert_not_null (text);
    const char *port_at = strstr (text, " port=");
    cr_assert_not_null (port_at);
    int port = atoi (port_at + 6);
    free (text);
    const s_image_t *image = s_image ();
    char id [H_ID_SIZE];
    int code = h_upload (port, "/v1/images", image->data, image->size, "image/png", false, id,
                         NULL);
    cr_expect_eq (code, 503, "a keyless frontend got %d from a keyed broker", code);
    h_stop (plain.pid, 5000);
    h_cluster_pass (s_cluster);
}

Test (keyed, keygen_makes_a_private_secret_and_never_overwrites)
{
    struct stat st;
    cr_assert_eq (stat (s_key ("broker_secret", 0), &st), 0);
    cr_expect_eq (st.st_mode & 0777, 0600);
    cr_assert_eq (stat (s_key ("broker", 0), &st), 0);
    cr_expect_eq (st.st_mode & 0777, 0644);
    size_t before_size = 0, after_size = 0;
    char *before = h_read_file (s_key ("broker_secret", 0), &before_size);

    char log [128];
    snprintf (log, sizeof log, "%s/again.log", s_keys);
    char *argv [] = { H_CLIENT_BIN, "keygen", (char *) s_key ("broker", 1), NULL };
    cr_expect_eq (s_run (argv, log), 1, "a second keygen on the same path did not fail");
    cr_expect_eq (h_log_count (log, "not overwritten"), 1, "(log: %s)", log);
    char *after = h_read_file (s_key ("broker_secret", 0), &after_size);
    cr_assert (before && after && before_size == after_size
               && memcmp (before, after, before_size) == 0, "the secret file changed");
    //  keygen printed file names, never the key (the first run's output is
    //  in keygen.log).
    const char *key = strstr (before, "secret-key = \"");
    cr_assert_not_null (key);
    char secret [41];
    snprintf (secret, sizeof secret, "%.40s", key + strlen ("secret-key = \""));
    snprintf (log, sizeof log, "%s/keygen.log", s_keys);
    cr_expect_geq (h_log_count (log, "public key: "), 1, "(log: %s)", log);
    cr_expect_eq (h_log_count (log, secret), 0, "keygen printed a secret key");
    free (before);
    free (after);
    s_passed = true;
}

//  The broker alone, with `extra` flags; its log in s_keys.
static pid_t
s_broker_alone (const char *jobs, bool insecure, const char *log)
{
    char data [128];
    snprintf (data, sizeof data, "%s/data", s_keys);
    char *argv [16] = { H_BROKER_BIN, "--intake", "tcp://127.0.0.1:*", "--status",
                        "tcp://127.0.0.1:*", "--jobs", (char *) jobs, "--data-dir", data,
                        insecure ? "--insecure" : NULL, NULL };
    pid_t pid = h_spawn (argv, log, NULL);
    cr_assert_gt (pid, 0);
    return pid;
}

Test (keyed, broker_will_not_bind_beyond_loopback_without_keys)
{
    char log [128];
    snprintf (log, sizeof log, "%s/open.log", s_keys);
    pid_t pid = s_broker_alone ("tcp://0.0.0.0:*", false, log);
    int status = 0;
    cr_assert_eq (h_wait_exit (pid, 10000, &status), 0, "the broker bound 0.0.0.0 without keys");
    //  2: a configuration refusal, which supervisors do not restart.
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 2, "exit status %d", status);
    //  One line that says why and what to do.
    cr_expect_eq (h_log_count (log, "event=bind_refused socket=jobs"), 1, "(log: %s)", log);
    cr_expect_eq (h_log_count (log, "no CURVE keys: give --curve-secret and --curve-clients, "
                                    "or --insecure"), 1, "(log: %s)", log);

    snprintf (log, sizeof log, "%s/insecure.log", s_keys);
    pid = s_broker_alone ("tcp://0.0.0.0:*", true, log);
    h_proc_t broker = { .pid = pid };
    snprintf (broker.log, sizeof broker.log, "%s", log);
    cr_assert_geq (h_wait_log (&broker, "event=started", 1, S_LOG_MS), 0,
                   "--insecure did not let it bind (log: %s)", log);
    cr_expect_geq (h_stop (pid, 10000), 0, "the broker did not stop on SIGTERM");
    s_passed = true;
}

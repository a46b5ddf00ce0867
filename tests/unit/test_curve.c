/*  test_curve — criterion suite for proto/imgp_curve: key files, the
    loopback rule behind --insecure, CURVE sockets over real tcp, and the
    frontend's link (http-frontend/imgp_link) with keys.

    Why: the keys are what stops a stranger on the network from posing as
    a resizer, so the tests check the refusals, not only the happy path: a
    key not in the clients directory and a plain socket both get nothing,
    and the refusal is seen by the server's watch. Each test runs in its
    own process (criterion's default), so each has its own zauth. Waits
    are on a condition with a deadline, never a sleep.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgp_curve.h"
#include "imgp_link.h"
#include "imgp_log.h"
#include "imgp_msg.h"

//  How long a test waits for what must happen.
#define S_DEADLINE_MS 5000

static char s_dir [64];

static void
s_setup (void)
{
    imgp_log_init ("test_curve", false);
    snprintf (s_dir, sizeof s_dir, "/tmp/test_curve.XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    cr_assert_eq (system (command), 0);
}

TestSuite (keygen, .init = s_setup, .fini = s_teardown);
TestSuite (endpoint);
TestSuite (sockets, .init = s_setup, .fini = s_teardown, .timeout = 30);

//  --------------------------------------------------------------------------
//  Helpers

//  s_dir/NAME written into buf; returns buf.
static const char *
s_path (char *buf, size_t size, const char *name)
{
    snprintf (buf, size, "%s/%s", s_dir, name);
    return buf;
}

//  Make key pair s_dir/NAME (+ _secret); asserts it worked.
static void
s_keygen (const char *name)
{
    char path [256], error [256];
    s_path (path, sizeof path, name);
    cr_assert_eq (imgp_curve_keygen (path, error, sizeof error), 0, "%s", error);
}

static mode_t
s_mode (const char *path)
{
    struct stat st;
    cr_assert_eq (stat (path, &st), 0, "%s: %s", path, strerror (errno));
    return st.st_mode & 07777;
}

//  The whole of a small file, NUL-terminated (caller frees).
static char *
s_slurp (const char *path)
{
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file, "%s", path);
    char *text = calloc (1, 4096);
    cr_assert_not_null (text);
    size_t got = fread (text, 1, 4095, file);
    fclose (file);
    text [got] = 0;
    return text;
}

//  A broker-like server: keys "broker", clients dir s_dir/clients.
static imgp_curve_t *
s_server (void)
{
    char secret [256], clients [256];
    s_keygen ("broker");
    s_path (clients, sizeof clients, "clients");
    cr_assert_eq (mkdir (clients, 0700), 0);
    return imgp_curve_server_new (s_path (secret, sizeof secret, "broker_secret"), clients);
}

//  Hand out key NAME: copy its public file into the clients dir.
static void
s_allow (const char *name)
{
    char from [256], to [300];
    s_path (from, sizeof from, name);
    snprintf (to, sizeof to, "%s/clients/%s.key", s_dir, name);
    char *text = s_slurp (from);
    FILE *file = fopen (to, "w");
    cr_assert_not_null (file, "%s: %s", to, strerror (errno));
    size_t len = strlen (text);
    cr_assert_eq (fwrite (text, 1, len, file), len, "%s", to);
    cr_assert_eq (fclose (file), 0, "%s", to);
    free (text);
}

//  A client with key pair NAME that trusts the public file s_dir/TRUSTS
//  as the broker's; with `allowed` its public file goes into the clients
//  dir, as an operator hands it out.
static imgp_curve_t *
s_client (const char *name, bool allowed, const char *trusts)
{
    char secret [300], server [256];
    s_keygen (name);
    if (allowed)
        s_allow (name);
    snprintf (secret, sizeof secret, "%s/%s_secret", s_dir, name);
    imgp_curve_t *client = imgp_curve_client_new (secret, s_path (server, sizeof server, trusts));
    cr_assert_not_null (client);
    return client;
}

//  A ROUTER bound on loopback as the broker binds its jobs endpoint, made
//  a CURVE server by `curve` (NULL: plain) and watched. *port gets its port.
static zsock_t *
s_router (imgp_curve_t *curve, int *port)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    zsock_set_router_mandatory (router, 1);
    zsock_set_linger (router, 0);
    cr_assert_eq (imgp_curve_apply (curve, router), 0);
    cr_assert_eq (imgp_curve_watch (curve, router, "jobs"), 0);
    *port = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (*port, 0);
    return router;
}

//  A DEALER with routing id `id`, watched, connected to the router's port.
static zsock_t *
s_dealer (imgp_curve_t *curve, const char *id, int port)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (dealer);
    zsock_set_identity (dealer, id);
    zsock_set_linger (dealer, 0);
    cr_assert_eq (imgp_curve_apply (curve, dealer), 0);
    cr_assert_eq (imgp_curve_watch (curve, dealer, "jobs"), 0);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    return dealer;
}

//  A plain DEALER (no keys) with routing id `id`, connected to the
//  router's port, and in *events a PAIR on its monitor: how its handshake
//  ended. A plain peer's refusal is not always seen by the server: both
//  sides fail at the greeting, and a TCP reset may beat the bytes the
//  server would read, so the peer's own side is the proof.
static zsock_t *
s_plain_dealer (const char *id, int port, zsock_t **events)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    *events = zsock_new (ZMQ_PAIR);
    cr_assert (dealer && *events);
    zsock_set_identity (dealer, id);
    zsock_set_linger (dealer, 0);
    char monitor [64];
    snprintf (monitor, sizeof monitor, "inproc://test-curve-plain-%s", id);
    cr_assert_eq (zmq_socket_monitor (zsock_resolve (dealer), monitor,
                                      ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED
                                      | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL), 0);
    cr_assert_eq (zsock_connect (*events, "%s", monitor), 0);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    return dealer;
}

//  Wait until `count` refusals were seen by `curve`, or the deadline.
static bool
s_wait_refusals (imgp_curve_t *curve, size_t count)
{
    int64_t deadline = zclock_mono () + S_DEADLINE_MS;
    while (imgp_curve_refusals (curve) < count && zclock_mono () < deadline)
        zclock_sleep (10);          //  polling a counter, with a deadline
    return imgp_curve_refusals (curve) >= count;
}

//  True when the router can send to peer `id` (ROUTER_MANDATORY: a peer
//  that never completed its handshake is unknown, EHOSTUNREACH).
static bool
s_router_reaches (zsock_t *router, const char *id)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, id);
    zmsg_addstr (msg, "job");
    int rc = zmsg_send (&msg, router);
    zmsg_destroy (&msg);
    return rc == 0;
}

//  A server with a bound ROUTER and one client's DEALER, as the broker's
//  jobs endpoint and a resizer.
typedef struct {
    imgp_curve_t *server;           //  broker keys, clients dir s_dir/clients
    imgp_curve_t *client;           //  the peer's keys; NULL for a plain peer
    zsock_t *router;                //  the server's ROUTER, bound, watched
    zsock_t *dealer;                //  the peer's DEALER, routing id = its name
    zsock_t *events;                //  plain peer: its monitor (s_plain_dealer)
    int port;                       //  the router's port
} s_rig_t;

//  Start the server, then peer NAME with keys (allowed or not, trusting
//  the public file TRUSTS), or a plain peer when `trusts` is NULL.
static void
s_rig_start (s_rig_t *rig, const char *name, bool allowed, const char *trusts)
{
    memset (rig, 0, sizeof *rig);
    rig->server = s_server ();
    cr_assert_not_null (rig->server);
    if (trusts)
        rig->client = s_client (name, allowed, trusts);
    rig->router = s_router (rig->server, &rig->port);
    rig->dealer = trusts ? s_dealer (rig->client, name, rig->port)
                         : s_plain_dealer (name, rig->port, &rig->events);
    zsock_set_rcvtimeo (rig->router, S_DEADLINE_MS);
    zsock_set_rcvtimeo (rig->dealer, S_DEADLINE_MS);
}

static void
s_rig_end (s_rig_t *rig)
{
    if (rig->events)
        zmq_socket_monitor (zsock_resolve (rig->dealer), NULL, 0);
    zsock_destroy (&rig->events);
    zsock_destroy (&rig->dealer);
    zsock_destroy (&rig->router);
    imgp_curve_destroy (&rig->client);
    imgp_curve_destroy (&rig->server);
}

//  The peer NAME sent "ready": assert it was refused and got nothing. The
//  server's watch saw the refusal (for a plain peer: its own monitor saw
//  its connection end); the router does not know the peer
//  (ROUTER_MANDATORY: EHOSTUNREACH), and read nothing from it.
static void
s_assert_refused (s_rig_t *rig, const char *name)
{
    if (rig->events) {
        //  A plain peer: its connection ended, without a handshake.
        zsock_set_rcvtimeo (rig->events, S_DEADLINE_MS);
        zmsg_t *event = zmsg_recv (rig->events);
        cr_assert_not_null (event, "the plain peer's connection did not end");
        uint16_t number = 0;
        memcpy (&number, zframe_data (zmsg_first (event)), sizeof number);
        zmsg_destroy (&event);
        cr_assert_neq (number, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, "a plain peer got through");
    }
    else
        cr_assert (s_wait_refusals (rig->server, 1), "the server saw no refusal");
    cr_assert_not (s_router_reaches (rig->router, name));
    cr_assert_eq (zmq_errno (), EHOSTUNREACH);
    zsock_set_rcvtimeo (rig->router, 0);
    zmsg_t *msg = zmsg_recv (rig->router);
    cr_assert_null (msg, "the server read a message from a refused peer");
}

//  The router receives "ready" from peer NAME.
static void
s_assert_ready_from (s_rig_t *rig, const char *name)
{
    char *id = NULL, *text = NULL;
    cr_assert_eq (zstr_recvx (rig->router, &id, &text, NULL), 2);
    cr_assert_str_eq (id, name);
    cr_assert_str_eq (text, "ready");
    zstr_free (&id);
    zstr_free (&text);
}

//  --------------------------------------------------------------------------
//  Key files

Test (keygen, writes_public_and_secret_files_with_their_modes)
{
    char path [256], secret [300];
    s_keygen ("r1");
    s_path (path, sizeof path, "r1");
    snprintf (secret, sizeof secret, "%s_secret", path);
    cr_assert_eq (s_mode (path), 0644);
    cr_assert_eq (s_mode (secret), 0600);

    char *public_text = s_slurp (path);
    char *secret_text = s_slurp (secret);
    cr_assert_not_null (strstr (public_text, "public-key"));
    cr_assert_null (strstr (public_text, "secret-key"), "the public file holds no secret");
    cr_assert_not_null (strstr (secret_text, "secret-key"));
    free (public_text);
    free (secret_text);

    //  czmq reads them back: the same public key, the secret only from _secret.
    zcert_t *from_public = zcert_load (path);
    zcert_t *from_secret = zcert_load (secret);
    cr_assert (from_public && from_secret);
    cr_assert_str_eq (zcert_public_txt (from_public), zcert_public_txt (from_secret));
    zcert_destroy (&from_public);
    zcert_destroy (&from_secret);
}

Test (keygen, secret_is_0600_whatever_the_umask)
{
    mode_t old = umask (0);
    s_keygen ("open");
    umask (old);
    char path [256];
    cr_assert_eq (s_mode (s_path (path, sizeof path, "open_secret")), 0600);
}

Test (keygen, refuses_to_overwrite_and_says_why)
{
    char path [256], error [256];
    s_keygen ("r1");
    s_path (path, sizeof path, "r1");
    char *before = s_slurp (path);
    cr_assert_eq (imgp_curve_keygen (path, error, sizeof error), -1);
    cr_assert_not_null (strstr (error, "not overwritten"), "%s", error);
    char *after = s_slurp (path);
    cr_assert_str_eq (before, after);
    free (before);
    free (after);
}

Test (keygen, existing_secret_alone_blocks_and_leaves_nothing)
{
    char path [256], secret [300], error [256];
    s_path (path, sizeof path, "half");
    snprintf (secret, sizeof secret, "%s_secret", path);
    FILE *file = fopen (secret, "w");
    cr_assert_not_null (file);
    fputs ("someone's secret\n", file);
    fclose (file);
    cr_assert_eq (imgp_curve_keygen (path, error, sizeof error), -1);
    cr_assert_not_null (strstr (error, secret), "%s", error);
    cr_assert_eq (access (path, F_OK), -1, "no public file left behind");
    char *text = s_slurp (secret);
    cr_assert_str_eq (text, "someone's secret\n");
    free (text);
}

Test (keygen, bad_directory_is_an_error)
{
    char error [256];
    cr_assert_eq (imgp_curve_keygen ("/nonexistent-dir/k", error, sizeof error), -1);
    cr_assert_not_null (strstr (error, "/nonexistent-dir/k"), "%s", error);
    cr_assert_eq (imgp_curve_keygen ("", error, sizeof error), -1);
}

Test (keygen, loading_wants_the_secret_file_and_a_directory)
{
    char path [256], clients [256];
    s_keygen ("b");
    s_path (path, sizeof path, "b");
    s_path (clients, sizeof clients, "clients");
    cr_assert_eq (mkdir (clients, 0700), 0);
    //  The public file where the secret is expected: refused, not a zero key.
    cr_assert_null (imgp_curve_server_new (path, clients));
    cr_assert_null (imgp_curve_client_new (path, path));
    char secret [300];
    snprintf (secret, sizeof secret, "%s_secret", path);
    cr_assert_null (imgp_curve_server_new (secret, "/nonexistent-dir"));
    cr_assert_null (imgp_curve_client_new (secret, "/nonexistent-dir/b"));
    imgp_curve_t *client = imgp_curve_client_new (secret, path);
    cr_assert_not_null (client);
    imgp_curve_destroy (&client);
    imgp_curve_destroy (&client);
    cr_assert_null (client);
}

//  --------------------------------------------------------------------------
//  The loopback rule

Test (endpoint, local_table)
{
    static const struct {
        const char *endpoint;
        bool local;
    } cases [] = {
        { "tcp://127.0.0.1:5573", true },
        { "tcp://127.0.0.1:*", true },
        { "tcp://127.1.2.3:5573", true },
        { "tcp://localhost:5573", true },
        { "tcp://[::1]:5573", true },
        { "ipc:///run/imgpipe/jobs", true },
        { "inproc://jobs", true },
        { "tcp://*:5573", false },
        { "tcp://0.0.0.0:5573", false },
        { "tcp://0.0.0.0:*", false },
        { "tcp://10.0.0.3:5573", false },
        { "tcp://128.0.0.1:5573", false },
        { "tcp://127.0.0.1.evil:5573", false },
        { "tcp://localhost.example.com:5573", false },
        { "tcp://eth0:5573", false },
        { "tcp://[::]:5573", false },
        { "tcp://127.0.0.1", false },
        { "udp://127.0.0.1:5573", false },
        { "tcp://", false },
        { "", false },
        { NULL, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        cr_expect_eq (imgp_curve_endpoint_local (cases [i].endpoint), cases [i].local,
                      "%s", cases [i].endpoint ? cases [i].endpoint : "(null)");
}

Test (endpoint, null_self_is_a_plain_socket)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_eq (imgp_curve_apply (NULL, sock), 0);
    cr_assert_eq (imgp_curve_watch (NULL, sock, "x"), 0);
    cr_assert_eq (imgp_curve_refusals (NULL), 0);
    cr_assert_eq (zsock_mechanism (sock), ZMQ_NULL);
    imgp_curve_t *none = NULL;
    imgp_curve_destroy (&none);
    zsock_destroy (&sock);
}

//  --------------------------------------------------------------------------
//  CURVE over tcp

Test (sockets, allowed_client_exchanges_messages)
{
    s_rig_t rig;
    s_rig_start (&rig, "r1", true, "broker");
    cr_assert_eq (zsock_mechanism (rig.router), ZMQ_CURVE);
    cr_assert_eq (zstr_send (rig.dealer, "ready"), 0);
    s_assert_ready_from (&rig, "r1");
    cr_assert (s_router_reaches (rig.router, "r1"));
    char *text = zstr_recv (rig.dealer);
    cr_assert_str_eq (text, "job");
    zstr_free (&text);
    cr_assert_eq (imgp_curve_refusals (rig.server), 0);
    s_rig_end (&rig);
}

Test (sockets, server_sees_which_key_sent_a_message)
{
    s_rig_t rig;
    s_rig_start (&rig, "resizer-h2", true, "broker");
    cr_assert_eq (zstr_send (rig.dealer, "ready"), 0);
    zmsg_t *msg = zmsg_recv (rig.router);
    cr_assert_not_null (msg);
    zframe_t *frame = zmsg_last (msg);
    //  zauth's reply: the peer's public key as User-Id, and its
    //  certificate's metadata (from the clients dir) as properties.
    char path [256];
    zcert_t *cert = zcert_load (s_path (path, sizeof path, "resizer-h2"));
    cr_assert_not_null (cert);
    const char *user = zframe_meta (frame, "User-Id");
    const char *name = zframe_meta (frame, IMGP_CURVE_KEY_NAME);
    cr_assert (user && name, "no User-Id or key-name on the message");
    cr_expect_str_eq (user, zcert_public_txt (cert));
    cr_expect_str_eq (name, "resizer-h2");
    zcert_destroy (&cert);
    zmsg_destroy (&msg);
    s_rig_end (&rig);
}

Test (sockets, unknown_key_gets_nothing_and_is_seen)
{
    s_rig_t rig;
    s_rig_start (&rig, "rogue", false, "broker");
    zstr_send (rig.dealer, "ready");
    s_assert_refused (&rig, "rogue");
    //  The client's own watch saw the server's ERROR.
    cr_assert (s_wait_refusals (rig.client, 1), "the client was not told");
    s_rig_end (&rig);
}

Test (sockets, key_added_to_the_directory_later_gets_in)
{
    s_rig_t rig;
    s_rig_start (&rig, "late", false, "broker");
    cr_assert (s_wait_refusals (rig.server, 1));

    //  The operator hands the key out; libzmq does not retry a refused
    //  connection, so the client connects again (a restarted resizer).
    s_allow ("late");
    zsock_destroy (&rig.dealer);
    rig.dealer = s_dealer (rig.client, "late", rig.port);
    zstr_send (rig.dealer, "ready");
    s_assert_ready_from (&rig, "late");
    s_rig_end (&rig);
}

Test (sockets, plain_client_gets_nothing)
{
    s_rig_t rig;
    s_rig_start (&rig, "plain", false, NULL);
    zstr_send (rig.dealer, "ready");
    s_assert_refused (&rig, "plain");
    s_rig_end (&rig);
}

Test (sockets, client_with_a_wrong_server_key_gets_nothing)
{
    //  An allowed client that trusts another "broker" key.
    s_keygen ("impostor");
    s_rig_t rig;
    s_rig_start (&rig, "r1", true, "impostor");
    zstr_send (rig.dealer, "ready");
    s_assert_refused (&rig, "r1");
    s_rig_end (&rig);
}

//  Lines of `path` that contain `text`.
static int
s_count_lines (const char *path, const char *text)
{
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file);
    char line [1024];
    int count = 0;
    while (fgets (line, sizeof line, file))
        if (strstr (line, text))
            count++;
    fclose (file);
    return count;
}

Test (sockets, refusals_are_logged_once_a_minute_per_socket)
{
    //  The log goes to stderr: send it to a file this test reads.
    char log [256];
    s_path (log, sizeof log, "log");
    int fd = open (log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq (fd, 0);
    int saved = dup (STDERR_FILENO);
    cr_assert_eq (dup2 (fd, STDERR_FILENO), STDERR_FILENO);
    close (fd);

    s_rig_t rig;
    s_rig_start (&rig, "rogue", false, "broker");
    //  Three refused connections (a resizer restarted in a loop).
    for (size_t i = 1; i <= 3; i++) {
        cr_assert (s_wait_refusals (rig.server, i));
        if (i < 3) {
            zsock_destroy (&rig.dealer);
            rig.dealer = s_dealer (rig.client, "rogue", rig.port);
        }
    }
    //  A socket with its own monitor hands its events in: same limit, by name.
    cr_assert (imgp_curve_event (rig.server, "status", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400));
    cr_assert (imgp_curve_event (rig.server, "status", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400));
    cr_assert_not (imgp_curve_event (rig.server, "status", ZMQ_EVENT_CONNECTED, 7));
    cr_assert_not (imgp_curve_event (NULL, "status", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400));
    cr_assert_eq (imgp_curve_refusals (rig.server), 5);
    s_rig_end (&rig);
    dup2 (saved, STDERR_FILENO);
    close (saved);

    cr_assert_eq (s_count_lines (log, "event=refused reason=unknown_key socket=jobs"), 1);
    cr_assert_eq (s_count_lines (log, "event=refused reason=unknown_key socket=status"), 1);
    cr_assert_eq (s_count_lines (log, "secret"), 0, "nothing about secrets in the log");
}

//  --------------------------------------------------------------------------
//  The frontend's link to the broker, keyed

//  A broker that answers every request on its ROUTER (an ERROR reply does:
//  the link hands back whatever answers the tag), until `stop`.
typedef struct {
    zsock_t *router;                //  owned by the thread while it runs
    atomic_bool stop;               //  set by the test to end the thread
} s_answerer_t;

static void *
s_answer (void *args)
{
    s_answerer_t *self = args;
    zsock_set_rcvtimeo (self->router, 50);
    while (!atomic_load (&self->stop)) {
        imgp_msg_t *request = imgp_msg_recv (self->router);
        if (!request)
            continue;
        imgp_msg_t *reply = imgp_msg_error_new (request, "unknown", "an answer");
        imgp_msg_send (&reply, self->router);
        imgp_msg_destroy (&request);
    }
    return NULL;
}

//  A PING over the link; true when anything answered.
static bool
s_ping (imgp_link_t *link)
{
    imgp_link_request_t request = { .type = IMGP_MSG_PING, .id = "" };
    imgp_msg_t *reply = imgp_link_call (link, &request, NULL);
    bool answered = reply != NULL;
    imgp_msg_destroy (&reply);
    return answered;
}

//  A rig whose router answers, and a frontend link to it.
typedef struct {
    s_rig_t rig;                    //  server keys and router; rig.client: the link's keys
    s_answerer_t answerer;          //  the router's answering thread
    pthread_t thread;               //  that thread
    imgp_link_t *link;              //  the frontend's link to the router
} s_linked_t;

//  Start it: the link's key pair is "frontend", allowed or not; without
//  `keyed` the link is plain.
static void
s_linked_start (s_linked_t *self, bool allowed, bool keyed)
{
    s_rig_start (&self->rig, "frontend", allowed, "broker");
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", self->rig.port);
    self->answerer.router = self->rig.router;
    atomic_init (&self->answerer.stop, false);
    cr_assert_eq (pthread_create (&self->thread, NULL, s_answer, &self->answerer), 0);
    self->link = imgp_link_new_keyed (endpoint, endpoint, 500, 1 << 20,
                                      keyed ? self->rig.client : NULL);
    cr_assert_not_null (self->link);
}

static void
s_linked_end (s_linked_t *self)
{
    imgp_link_destroy (&self->link);
    atomic_store (&self->answerer.stop, true);
    pthread_join (self->thread, NULL);
    s_rig_end (&self->rig);
}

Test (sockets, keyed_link_is_answered)
{
    s_linked_t linked;
    s_linked_start (&linked, true, true);
    cr_assert (s_ping (linked.link));
    s_linked_end (&linked);
}

Test (sockets, plain_link_to_a_keyed_broker_is_not_answered)
{
    s_linked_t linked;
    s_linked_start (&linked, true, false);
    cr_assert_not (s_ping (linked.link));
    s_linked_end (&linked);
}

Test (sockets, refused_link_gets_in_once_its_key_is_allowed, .timeout = 60)
{
    s_linked_t linked;
    s_linked_start (&linked, false, true);
    cr_assert_not (s_ping (linked.link));
    cr_assert (s_wait_refusals (linked.rig.client, 1), "the link's refusal was not seen");

    //  The operator allows the key; the link makes its sockets again by
    //  itself (every S_REOPEN_MS, 5 s) and is then answered.
    s_allow ("frontend");
    int64_t deadline = zclock_mono () + 20000;
    bool answered = false;
    while (!answered && zclock_mono () < deadline)
        answered = s_ping (linked.link);    //  each call waits up to its own budget
    cr_assert (answered, "the link did not come back after its key was allowed");
    s_linked_end (&linked);
}

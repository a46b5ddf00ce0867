/*  imgpipe-bench-capacity — how many jobs one broker routes (issue 10,
    point 5): one point of the broker-capacity table of tests/bench/run.sh.

    Usage: imgpipe-bench-capacity --broker BIN --resizer BIN --dir DIR
             [--resizers K] [--clients C] [--jobs N] [--payload BYTES]
             [--window W] [--deadline-s S]

    Starts a real broker (fresh loopback ports, spool in DIR/spool, log in
    DIR/broker.log) and K real resizers with --dry-run (each answers a job
    at once with a fixed 1x1 thumbnail, no libvips work), waits until the
    broker counts K live resizers, then C intake clients — DEALER sockets
    speaking the real codec of proto/, as a frontend's link does — submit N
    jobs in all, each keeping W submissions awaiting their ACCEPTED. The
    payload is a 1x1 PNG (67 bytes), or BYTES bytes (starting with that
    PNG's signature) for the MB/s figures.

    Measured from the first SUBMIT until the broker reports N jobs done
    (its PONG stats, asked every 10 ms on the status endpoint): jobs/s,
    payload MB/s (original bytes in, once each), and CPU seconds of the
    broker, of the resizers and of this process over that window
    (/proc/PID/stat, getrusage), as % of one core.

    Prints one JSON object on stdout. A tool that reports: it asserts
    nothing about time. Every wait has a deadline (--deadline-s for the
    whole point); past it, the point says "complete": false, exit status 1.
    Every process it started is stopped (SIGTERM, then SIGKILL after 5 s).
*/
#include <czmq.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "bench_proc.h"
#include "imgp_id.h"
#include "imgp_msg.h"
#include "imgp_opts.h"

#define S_RESIZERS_MAX 256              //  --resizers
#define S_CLIENTS_MAX 64                //  --clients

//  A 1x1 greyscale PNG: the tiny job's original.
static const unsigned char s_png1 [] = {
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 1, 0, 0, 0, 1, 8, 0,
    0, 0, 0, 58, 126, 155, 85, 0, 0, 0, 10, 73, 68, 65, 84, 120, 156, 99, 96, 0, 0, 0, 2, 0, 1,
    72, 175, 164, 113, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130
};

typedef struct {
    const char *broker_bin;             //  imgpipe-broker
    const char *resizer_bin;            //  imgpipe-resizer (with --dry-run)
    const char *dir;                    //  work directory: spool and logs
    int resizers;                       //  K
    int clients;                        //  C
    long jobs;                          //  N
    long payload;                       //  bytes per job, 0 = the 1x1 PNG
    int window;                         //  W: submissions awaiting ACCEPTED per client
    int deadline_s;                     //  the whole point
    char intake [64];                   //  broker endpoints
    char status [64];
    char jobs_ep [64];
    unsigned char *payload_buf;         //  the payload (NULL: s_png1)
    size_t payload_len;
    int64_t deadline;                   //  zclock_mono() of the deadline
    atomic_long accepted;               //  ACCEPTED replies
    atomic_long refused;                //  any other reply
    atomic_long lost;                   //  submissions without a reply by the deadline
    atomic_int stop;                    //  clients give up
    atomic_int finished;                //  clients that ended
} s_cap_t;

//  --------------------------------------------------------------------------
//  Processes

//  A free loopback TCP port below the kernel's ephemeral range, so that no
//  outgoing connection takes it between this check and the broker's bind
//  (a port the kernel hands out for bind(0) is one it may also hand out to
//  a connect). Returns the port or -1.
static int
s_free_port (void)
{
    int low = 32768;
    FILE *range = fopen ("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (range) {
        if (fscanf (range, "%d", &low) != 1 || low <= 10000)
            low = 32768;
        fclose (range);
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        int port = 10000 + (int) (random () % (low - 10000));
        int fd = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                                  .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        int rc = fd >= 0 ? bind (fd, (struct sockaddr *) &sa, sizeof sa) : -1;
        if (fd >= 0)
            close (fd);
        if (rc == 0)
            return port;
    }
    return -1;
}

//  fork + exec argv with stderr (and stdout) appended to log. Returns the pid or -1.
static pid_t
s_spawn (char *const argv [], const char *log)
{
    pid_t pid = fork ();
    if (pid == 0) {
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
            close (fd);
        }
        execv (argv [0], argv);
        _exit (127);
    }
    return pid;
}

//  SIGTERM every pid, then SIGKILL what is left after 5 s; reaps them all.
static void
s_stop_all (pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids [i] > 0)
            kill (pids [i], SIGTERM);
    int64_t until = zclock_mono () + 5000;
    int left = n;
    while (left > 0 && zclock_mono () < until) {
        left = 0;
        for (int i = 0; i < n; i++)
            if (pids [i] > 0 && waitpid (pids [i], NULL, WNOHANG) == 0)
                left++;
            else
                pids [i] = 0;
        if (left)
            zclock_sleep (20);
    }
    for (int i = 0; i < n; i++)
        if (pids [i] > 0) {
            kill (pids [i], SIGKILL);
            waitpid (pids [i], NULL, 0);
        }
}

//  --------------------------------------------------------------------------
//  The broker's figures, over its status endpoint

//  PING the broker; fills stats. Returns 0, or -1 without a PONG in 1 s.
static int
s_broker_stats (zsock_t *status, imgp_stats_t *stats)
{
    imgp_msg_t *ping = imgp_msg_new (IMGP_MSG_PING);
    if (imgp_msg_send (&ping, status))
        return -1;
    imgp_msg_t *pong = imgp_msg_recv (status);
    int rc = pong && pong->type == IMGP_MSG_PONG && pong->has_stats ? 0 : -1;
    if (rc == 0)
        *stats = pong->stats;
    imgp_msg_destroy (&pong);
    return rc;
}

//  --------------------------------------------------------------------------
//  Intake clients

static void
s_no_free (void *buf, void *hint)
{
    (void) buf;
    (void) hint;
}

static int
s_submit (s_cap_t *self, zsock_t *sock, int64_t tag)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_SUBMIT);
    imgp_id_new (msg->id);
    imgp_opts_default (&msg->opts);
    msg->tag = tag;
    //  The payload is shared by every submission and outlives the sends.
    if (self->payload_buf)
        imgp_msg_set_data (msg, self->payload_buf, self->payload_len, s_no_free);
    else
        imgp_msg_set_data (msg, (void *) s_png1, sizeof s_png1, s_no_free);
    return imgp_msg_send (&msg, sock);
}

typedef struct {
    s_cap_t *cap;                       //  the point
    long quota;                         //  jobs this client submits
} s_client_arg_t;

static void *
s_client (void *arg)
{
    s_client_arg_t *ca = arg;
    s_cap_t *self = ca->cap;
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    zsock_set_sndhwm (sock, 0);
    zsock_set_rcvhwm (sock, 0);
    zsock_set_sndtimeo (sock, 1000);
    zsock_set_rcvtimeo (sock, 100);
    zsock_connect (sock, "%s", self->intake);
    long sent = 0, replies = 0;
    while (replies < ca->quota && !atomic_load (&self->stop)
    &&     zclock_mono () < self->deadline) {
        while (sent < ca->quota && sent - replies < self->window
        &&     s_submit (self, sock, sent + 1) == 0)
            sent++;
        imgp_msg_t *reply = imgp_msg_recv (sock);
        if (!reply)
            continue;                   //  timeout: the loop checks the deadline
        replies++;
        if (reply->type == IMGP_MSG_ACCEPTED)
            atomic_fetch_add (&self->accepted, 1);
        else
            atomic_fetch_add (&self->refused, 1);
        imgp_msg_destroy (&reply);
    }
    atomic_fetch_add (&self->lost, sent - replies);
    zsock_destroy (&sock);
    atomic_fetch_add (&self->finished, 1);
    return NULL;
}

//  --------------------------------------------------------------------------
//  One point

static pid_t
s_start_broker (s_cap_t *self)
{
    char data [4096], log [4096];
    snprintf (data, sizeof data, "%s/spool", self->dir);
    snprintf (log, sizeof log, "%s/broker.log", self->dir);
    char *argv [] = { (char *) self->broker_bin, "--data-dir", data,
                      "--intake", self->intake, "--status", self->status,
                      "--jobs", self->jobs_ep, "--max-queue", "10000000",
                      "--max-jobs", "100000000", NULL };
    return s_spawn (argv, log);
}

static pid_t
s_start_resizer (s_cap_t *self, int n)
{
    char log [4096], name [32];
    snprintf (log, sizeof log, "%s/resizers.log", self->dir);
    snprintf (name, sizeof name, "cap%d", n);
    char *argv [] = { (char *) self->resizer_bin, "--dry-run", "--jobs", self->jobs_ep,
                      "--name", name, NULL };
    return s_spawn (argv, log);
}

//  Waits until the broker counts `resizers` live ones. Returns 0 or -1.
static int
s_wait_resizers (s_cap_t *self, zsock_t *status, int resizers)
{
    int64_t until = zclock_mono () + 30000;
    if (until > self->deadline)
        until = self->deadline;
    imgp_stats_t stats;
    while (zclock_mono () < until) {
        if (s_broker_stats (status, &stats) == 0 && stats.resizers >= resizers)
            return 0;
        zclock_sleep (50);
    }
    return -1;
}

//  Runs the clients until the broker has N jobs done; fills the window.
static void
s_measure (s_cap_t *self, zsock_t *status, pid_t broker, pid_t *resizers, json_t *out)
{
    double broker0 = bench_proc_cpu_s (broker), self0 = bench_self_cpu_s (), res0 = 0;
    for (int i = 0; i < self->resizers; i++)
        res0 += bench_proc_cpu_s (resizers [i]);
    pthread_t tids [S_CLIENTS_MAX];
    s_client_arg_t args [S_CLIENTS_MAX];
    int64_t t0 = zclock_usecs ();
    for (int i = 0; i < self->clients; i++) {
        args [i] = (s_client_arg_t) { self, self->jobs / self->clients
                                      + (i < self->jobs % self->clients) };
        pthread_create (&tids [i], NULL, s_client, &args [i]);
    }
    imgp_stats_t stats = { 0 };
    while (zclock_mono () < self->deadline) {
        //  A refused submission (queue_full...) never ends: it is not waited for.
        long expected = self->jobs - atomic_load (&self->refused);
        if (s_broker_stats (status, &stats) == 0 && stats.done + stats.failed >= expected)
            break;
        zclock_sleep (10);
    }
    int64_t t1 = zclock_usecs ();
    double broker_cpu = bench_proc_cpu_s (broker) - broker0, res_cpu = -res0;
    for (int i = 0; i < self->resizers; i++)
        res_cpu += bench_proc_cpu_s (resizers [i]);
    //  The last ACCEPTEDs may still be on their way: a short grace, then stop.
    int64_t grace = zclock_mono () + 2000;
    while (atomic_load (&self->finished) < self->clients && zclock_mono () < grace)
        zclock_sleep (10);
    atomic_store (&self->stop, 1);
    for (int i = 0; i < self->clients; i++)
        pthread_join (tids [i], NULL);
    double self_cpu = bench_self_cpu_s () - self0;
    double secs = (double) (t1 - t0) / 1e6;
    long bytes = self->payload_buf ? self->payload : (long) sizeof s_png1;
    json_object_set_new (out, "complete", json_boolean (stats.done + stats.failed
                                                      + atomic_load (&self->refused) >= self->jobs));
    json_object_set_new (out, "done", json_integer (stats.done));
    json_object_set_new (out, "failed", json_integer (stats.failed));
    json_object_set_new (out, "accepted", json_integer (atomic_load (&self->accepted)));
    json_object_set_new (out, "refused", json_integer (atomic_load (&self->refused)));
    json_object_set_new (out, "lost", json_integer (atomic_load (&self->lost)));
    json_object_set_new (out, "wall_s", json_real (secs));
    json_object_set_new (out, "jobs_per_s", json_real ((double) stats.done / secs));
    json_object_set_new (out, "mb_per_s", json_real ((double) stats.done * (double) bytes
                                                     / secs / 1e6));
    json_object_set_new (out, "broker_cpu_pct", json_real (100 * broker_cpu / secs));
    json_object_set_new (out, "broker_cpu_us_per_job",
                         json_real (stats.done ? broker_cpu * 1e6 / (double) stats.done : 0));
    json_object_set_new (out, "resizers_cpu_pct", json_real (100 * res_cpu / secs));
    json_object_set_new (out, "clients_cpu_pct", json_real (100 * self_cpu / secs));
}

static int
s_point (s_cap_t *self, json_t *out)
{
    int ports [3];
    for (int i = 0; i < 3; i++) {
        if ((ports [i] = s_free_port ()) < 0)
            return -1;
        if ((i > 0 && ports [i] == ports [0]) || (i > 1 && ports [i] == ports [1]))
            i--;                        //  the same port twice: pick again
    }
    snprintf (self->intake, sizeof self->intake, "tcp://127.0.0.1:%d", ports [0]);
    snprintf (self->status, sizeof self->status, "tcp://127.0.0.1:%d", ports [1]);
    snprintf (self->jobs_ep, sizeof self->jobs_ep, "tcp://127.0.0.1:%d", ports [2]);
    pid_t pids [1 + S_RESIZERS_MAX] = { 0 };
    pids [0] = s_start_broker (self);
    for (int i = 0; i < self->resizers; i++)
        pids [1 + i] = s_start_resizer (self, i);
    zsock_t *status = zsock_new (ZMQ_DEALER);
    zsock_set_rcvtimeo (status, 1000);
    zsock_set_sndtimeo (status, 1000);
    zsock_connect (status, "%s", self->status);
    int rc = s_wait_resizers (self, status, self->resizers);
    if (rc == 0)
        s_measure (self, status, pids [0], pids + 1, out);
    else
        fprintf (stderr, "imgpipe-bench-capacity: the broker did not see %d resizers in 30 s "
                 "(logs in %s)\n", self->resizers, self->dir);
    zsock_destroy (&status);
    s_stop_all (pids, 1 + self->resizers);
    return rc;
}

//  --------------------------------------------------------------------------
//  Flags

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: imgpipe-bench-capacity --broker BIN --resizer BIN --dir DIR [--resizers K]\n"
        "         [--clients C] [--jobs N] [--payload BYTES] [--window W] [--deadline-s S]\n");
}

static int
s_parse (s_cap_t *self, int argc, char **argv)
{
    static const struct option options [] = {
        { "broker", required_argument, NULL, 'b' },
        { "resizer", required_argument, NULL, 'r' },
        { "dir", required_argument, NULL, 'd' },
        { "resizers", required_argument, NULL, 'k' },
        { "clients", required_argument, NULL, 'c' },
        { "jobs", required_argument, NULL, 'n' },
        { "payload", required_argument, NULL, 'p' },
        { "window", required_argument, NULL, 'w' },
        { "deadline-s", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'H' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (c) {
            case 'b': self->broker_bin = optarg; break;
            case 'r': self->resizer_bin = optarg; break;
            case 'd': self->dir = optarg; break;
            case 'k': self->resizers = atoi (optarg); break;
            case 'c': self->clients = atoi (optarg); break;
            case 'n': self->jobs = atol (optarg); break;
            case 'p': self->payload = atol (optarg); break;
            case 'w': self->window = atoi (optarg); break;
            case 't': self->deadline_s = atoi (optarg); break;
            case 'H': s_usage (stdout); exit (0);
            default: return -1;
        }
    }
    if (!self->broker_bin || !self->resizer_bin || !self->dir || optind != argc
    ||  self->resizers < 1 || self->resizers > S_RESIZERS_MAX || self->clients < 1
    ||  self->clients > S_CLIENTS_MAX || self->jobs < self->clients || self->payload < 0
    ||  self->window < 1 || self->deadline_s < 1)
        return -1;
    return 0;
}

int
main (int argc, char **argv)
{
    s_cap_t self = { .resizers = 4, .clients = 4, .jobs = 10000, .window = 256,
                     .deadline_s = 120 };
    if (s_parse (&self, argc, argv)) {
        s_usage (stderr);
        return 2;
    }
    zsys_init ();
    zsys_set_max_sockets (0);
    srandom ((unsigned) getpid () ^ (unsigned) time (NULL));
    zsys_set_linger (0);
    if (self.payload > 0) {
        self.payload_len = (size_t) self.payload;
        self.payload_buf = malloc (self.payload_len);
        memset (self.payload_buf, 0x5a, self.payload_len);
        memcpy (self.payload_buf, s_png1,
                self.payload_len < sizeof s_png1 ? self.payload_len : sizeof s_png1);
    }
    self.deadline = zclock_mono () + (int64_t) self.deadline_s * 1000;
    json_t *out = json_pack ("{s:i, s:i, s:I, s:I, s:i}", "resizers", self.resizers,
                             "clients", self.clients, "jobs", (json_int_t) self.jobs,
                             "payload_bytes",
                             (json_int_t) (self.payload ? self.payload : (long) sizeof s_png1),
                             "window", self.window);
    int rc = s_point (&self, out);
    json_dumpf (out, stdout, JSON_COMPACT);
    putchar ('\n');
    bool complete = json_is_true (json_object_get (out, "complete"));
    json_decref (out);
    free (self.payload_buf);
    return rc == 0 && complete ? 0 : 1;
}

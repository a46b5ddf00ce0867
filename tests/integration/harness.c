/*  harness — see harness.h. Test-only code: clarity over speed, and every
    blocking call bounded by a deadline so a hung program fails a test
    instead of hanging the suite.
*/
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "imgp_spool.h"

#define S_POLL_MS 25
#define S_MAX_CHILDREN 64
#define S_MAX_RESPONSE ((size_t) 128 * 1024 * 1024)
#define S_STOP_MS 8000

//  -------------------------------------------------------------------------
//  Time and polling

long long
h_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_nap_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool
h_wait_until (bool (*cond) (void *arg), void *arg, int deadline_ms)
{
    long long deadline = h_now_ms () + deadline_ms;
    while (true) {
        if (cond (arg))
            return true;
        if (h_now_ms () >= deadline)
            return false;
        s_nap_ms (S_POLL_MS);
    }
}

//  -------------------------------------------------------------------------
//  Processes. Every child is remembered until reaped, so an atexit handler
//  can kill what a failed test left behind.

static pid_t s_children [S_MAX_CHILDREN];

static void
s_forget (pid_t pid)
{
    for (int i = 0; i < S_MAX_CHILDREN; i++)
        if (s_children [i] == pid)
            s_children [i] = 0;
}

static void
s_kill_children (void)
{
    for (int i = 0; i < S_MAX_CHILDREN; i++)
        if (s_children [i] > 0) {
            kill (s_children [i], SIGCONT);
            kill (s_children [i], SIGKILL);
            waitpid (s_children [i], NULL, 0);
            s_children [i] = 0;
        }
}

static void
s_remember (pid_t pid)
{
    static bool registered = false;
    if (!registered) {
        atexit (s_kill_children);
        registered = true;
    }
    for (int i = 0; i < S_MAX_CHILDREN; i++)
        if (s_children [i] == 0) {
            s_children [i] = pid;
            return;
        }
    fprintf (stderr, "harness: more than %d children; pid %d not tracked\n",
             S_MAX_CHILDREN, (int) pid);
}

//  In the child, between fork and exec: only async-signal-safe calls.
static void
s_child_exec (char *const argv [], const char *log_path, const char *out_path, pid_t parent)
{
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (getppid () != parent)
        _exit (127);
    int in = open ("/dev/null", O_RDONLY);
    int err = open (log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int out = out_path ? open (out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : err;
    if (in < 0 || err < 0 || out < 0)
        _exit (127);
    dup2 (in, STDIN_FILENO);
    dup2 (out, STDOUT_FILENO);
    dup2 (err, STDERR_FILENO);
    //  Default dispositions and mask: the test runner may have changed them.
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
    signal (SIGPIPE, SIG_DFL);
    signal (SIGTERM, SIG_DFL);
    signal (SIGINT, SIG_DFL);
    execv (argv [0], argv);
    _exit (127);
}

pid_t
h_spawn (char *const argv [], const char *log_path, const char *out_path)
{
    fflush (NULL);
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid < 0)
        return -1;
    if (pid == 0)
        s_child_exec (argv, log_path, out_path, parent);
    s_remember (pid);
    return pid;
}

int
h_wait_exit (pid_t pid, int deadline_ms, int *status)
{
    long long deadline = h_now_ms () + deadline_ms;
    while (true) {
        int st = 0;
        pid_t rc = waitpid (pid, &st, WNOHANG);
        if (rc == pid) {
            s_forget (pid);
            if (status)
                *status = st;
            return 0;
        }
        if (rc < 0) {               //  not our child (already reaped)
            s_forget (pid);
            return -1;
        }
        if (h_now_ms () >= deadline)
            return -1;
        s_nap_ms (10);
    }
}

int
h_stop (pid_t pid, int deadline_ms)
{
    if (pid <= 0)
        return -1;
    kill (pid, SIGCONT);
    kill (pid, SIGTERM);
    int status = 0;
    if (h_wait_exit (pid, deadline_ms, &status) == 0)
        return status;
    kill (pid, SIGKILL);
    h_wait_exit (pid, 5000, NULL);
    return -1;
}

int
h_pause (pid_t pid)
{
    if (kill (pid, SIGSTOP) != 0)
        return -1;
    int status = 0;
    long long deadline = h_now_ms () + 5000;
    while (h_now_ms () < deadline) {
        pid_t rc = waitpid (pid, &status, WUNTRACED | WNOHANG);
        if (rc == pid && WIFSTOPPED (status))
            return 0;
        if (rc == pid || rc < 0)
            return -1;              //  it exited instead
        s_nap_ms (5);
    }
    return -1;
}

int
h_resume (pid_t pid)
{
    return kill (pid, SIGCONT);
}

//  -------------------------------------------------------------------------
//  Cluster

//  Find `count` distinct free loopback ports: bind them all to port 0 at
//  once (so the kernel cannot hand out one twice), read them, close them.
static int
s_free_ports (int *ports, int count)
{
    int fds [16];
    int rc = 0, opened = 0;
    for (; opened < count && rc == 0; opened++) {
        fds [opened] = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = { .sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        socklen_t len = sizeof addr;
        if (fds [opened] < 0
        ||  bind (fds [opened], (struct sockaddr *) &addr, sizeof addr) != 0
        ||  getsockname (fds [opened], (struct sockaddr *) &addr, &len) != 0)
            rc = -1;
        else
            ports [opened] = ntohs (addr.sin_port);
    }
    for (int i = 0; i < opened; i++)
        if (fds [i] >= 0)
            close (fds [i]);
    return rc;
}

static void
s_endpoint (char *buf, size_t size, int port)
{
    snprintf (buf, size, "tcp://127.0.0.1:%d", port);
}

//  Append the `extra` flags (NULL-terminated, or `max` of them) to an
//  argv [24] that holds `argc` arguments, and terminate it.
static void
s_add_args (char **argv, int argc, const char *const *extra, int max)
{
    for (int k = 0; k < max && extra [k] && argc < 23; k++)
        argv [argc++] = (char *) extra [k];
    argv [argc] = NULL;
}

static int
s_proc_start (h_cluster_t *self, h_proc_t *proc, const char *name, char **argv)
{
    snprintf (proc->log, sizeof proc->log, "%s/%s.log", self->dir, name);
    if (proc->name != name)
        snprintf (proc->name, sizeof proc->name, "%s", name);
    proc->pid = h_spawn (argv, proc->log, NULL);
    return proc->pid > 0 ? 0 : -1;
}

static int
s_start_broker (h_cluster_t *self)
{
    char ep [H_BROKER_PORTS][64];
    for (int i = 0; i < H_BROKER_PORTS; i++)
        s_endpoint (ep [i], sizeof ep [i], self->broker_ports [i]);
    char *argv [24] = { H_BROKER_BIN, "--intake", ep [0], "--status", ep [1],
                        "--jobs", ep [2], "--data-dir", self->data_dir, "--verbose" };
    s_add_args (argv, 10, self->opts.broker_extra, 12);
    return s_proc_start (self, &self->broker, "broker", argv);
}

static int
s_start_resizer (h_cluster_t *self, int i)
{
    char jobs [64], name [32];
    s_endpoint (jobs, sizeof jobs, self->broker_ports [2]);
    snprintf (name, sizeof name, "resizer%d", i);
    char *argv [24] = { H_RESIZER_BIN, "--jobs", jobs, "--verbose" };
    s_add_args (argv, 4, self->opts.resizer_extra, 8);
    return s_proc_start (self, &self->resizer [i], name, argv);
}

static int
s_start_frontend (h_cluster_t *self, int i, const h_cluster_opts_t *opts)
{
    char intake [64], status [64], listen [64], name [32];
    s_endpoint (intake, sizeof intake, self->broker_ports [0]);
    s_endpoint (status, sizeof status, self->broker_ports [1]);
    snprintf (listen, sizeof listen, "127.0.0.1:%d", self->http_ports [i]);
    snprintf (name, sizeof name, "frontend%d", i);
    //  64 threads, not the default 4096: the suites need few connections,
    //  and under AddressSanitizer each thread costs far more than its
    //  16 kB. The default is exercised by tests/load (deploy/run.sh) and
    //  by suites that pass their own --threads after this one.
    char *argv [24] = { H_FRONTEND_BIN, "--listen", listen, "--intake", intake,
                        "--status", status, "--threads", "64", "--verbose" };
    s_add_args (argv, 10, opts->frontend_extra, 8);
    return s_proc_start (self, &self->frontend [i], name, argv);
}

//  True when a process has exited; it is reaped and its status kept.
static bool
s_proc_dead (h_proc_t *proc)
{
    if (proc->pid <= 0)
        return true;
    int status = 0;
    if (waitpid (proc->pid, &status, WNOHANG) == proc->pid) {
        s_forget (proc->pid);
        proc->pid = 0;
        proc->exit_status = status;
        return true;
    }
    return false;
}

typedef struct {
    h_cluster_t *cluster;           //  the cluster coming up
    const char *problem;            //  why it cannot come up, if known
} s_ready_t;

static bool
s_cluster_ready (void *arg)
{
    s_ready_t *ready = arg;
    h_cluster_t *self = ready->cluster;
    h_proc_t *all [1 + H_MAX_RESIZERS + H_MAX_FRONTENDS];
    int n = 0;
    all [n++] = &self->broker;
    for (int i = 0; i < self->resizers; i++)
        all [n++] = &self->resizer [i];
    for (int i = 0; i < self->frontends; i++)
        all [n++] = &self->frontend [i];
    for (int i = 0; i < n; i++)
        if (s_proc_dead (all [i])) {
            ready->problem = all [i]->name;
            return true;            //  stop waiting: it will not come up
        }
    //  Resizers have no network face; their "event=ready" log line (the
    //  BRIEF's log format) says they finished starting. Without this a
    //  test could signal a resizer still loading libvips.
    for (int i = 0; i < self->resizers; i++) {
        size_t size = 0;
        char *log = h_read_file (self->resizer [i].log, &size);
        bool ready = log && strstr (log, "event=ready");
        free (log);
        if (!ready)
            return false;
    }
    for (int i = 0; i < self->frontends; i++) {
        h_response_t resp;
        int rc = h_http (self->http_ports [i], "GET", "/healthz", NULL, NULL, 0, &resp, 1000);
        bool up = rc == 0 && resp.status == 200;
        h_response_free (&resp);
        if (!up)
            return false;
    }
    return true;
}

h_cluster_t *
h_cluster_new (const h_cluster_opts_t *opts)
{
    h_cluster_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->opts = *opts;
    self->resizers = opts->resizers < H_MAX_RESIZERS ? opts->resizers : H_MAX_RESIZERS;
    self->frontends = opts->frontends < H_MAX_FRONTENDS ? opts->frontends : H_MAX_FRONTENDS;
    snprintf (self->dir, sizeof self->dir, "/tmp/imgp-e2e-XXXXXX");
    int ports [H_BROKER_PORTS + H_MAX_FRONTENDS];
    if (!mkdtemp (self->dir) || s_free_ports (ports, H_BROKER_PORTS + self->frontends) != 0) {
        fprintf (stderr, "harness: cannot make a temp dir or find free ports: %s\n",
                 strerror (errno));
        free (self);
        return NULL;
    }
    memcpy (self->broker_ports, ports, sizeof self->broker_ports);
    memcpy (self->http_ports, ports + H_BROKER_PORTS, sizeof (int) * (size_t) self->frontends);
    snprintf (self->data_dir, sizeof self->data_dir, "%s/data", self->dir);
    mkdir (self->data_dir, 0755);

    int rc = s_start_broker (self);
    for (int i = 0; rc == 0 && i < self->resizers; i++)
        rc = s_start_resizer (self, i);
    for (int i = 0; rc == 0 && i < self->frontends; i++)
        rc = s_start_frontend (self, i, opts);
    s_ready_t ready = { self, NULL };
    if (rc == 0 && (!h_wait_until (s_cluster_ready, &ready, 20000) || ready.problem)) {
        fprintf (stderr, "harness: cluster in %s did not come up: %s\n", self->dir,
                 ready.problem ? "a process exited early"
                 : "no 200 from /healthz or no resizer 'event=ready' log line in 20 s");
        if (ready.problem)
            fprintf (stderr, "harness: %s exited early\n", ready.problem);
        rc = -1;
    }
    if (rc != 0) {
        h_cluster_destroy (&self);
        return NULL;
    }
    return self;
}

//  Every process of the cluster, for loops.
static int
s_procs (h_cluster_t *self, h_proc_t **all)
{
    int n = 0;
    for (int i = 0; i < self->frontends; i++)
        all [n++] = &self->frontend [i];
    for (int i = 0; i < self->resizers; i++)
        all [n++] = &self->resizer [i];
    all [n++] = &self->broker;
    return n;
}

int
h_cluster_stop_all (h_cluster_t *self, int deadline_ms, char *report, size_t report_size)
{
    h_proc_t *all [1 + H_MAX_RESIZERS + H_MAX_FRONTENDS];
    int n = s_procs (self, all);
    for (int i = 0; i < n; i++)
        if (all [i]->pid > 0) {
            kill (all [i]->pid, SIGCONT);
            kill (all [i]->pid, SIGTERM);
        }
    long long deadline = h_now_ms () + deadline_ms;
    int bad = 0;
    size_t used = 0;
    if (report_size)
        report [0] = 0;
    for (int i = 0; i < n; i++) {
        h_proc_t *p = all [i];
        long long left = deadline - h_now_ms ();
        long long started = h_now_ms ();
        int status = p->exit_status;
        bool exited = p->pid <= 0
                   || h_wait_exit (p->pid, left > 0 ? (int) left : 0, &status) == 0;
        if (!exited) {
            kill (p->pid, SIGKILL);
            h_wait_exit (p->pid, 5000, NULL);
        }
        p->pid = 0;
        p->exit_status = status;
        bool clean = exited && WIFEXITED (status) && WEXITSTATUS (status) == 0;
        bad += clean ? 0 : 1;
        if (used < report_size)
            used += (size_t) snprintf (report + used, report_size - used,
                "%s: %s (%s %d) after %lld ms; ", p->name,
                !exited ? "did not exit, killed" : clean ? "exit 0" : "unclean exit",
                exited && WIFSIGNALED (status) ? "signal" : "status",
                exited ? (WIFSIGNALED (status) ? WTERMSIG (status) : WEXITSTATUS (status)) : -1,
                h_now_ms () - started);
    }
    return bad;
}

void
h_cluster_dump_logs (h_cluster_t *self, int lines)
{
    h_proc_t *all [1 + H_MAX_RESIZERS + H_MAX_FRONTENDS];
    int n = s_procs (self, all);
    for (int i = 0; i < n; i++) {
        size_t size = 0;
        char *text = h_read_file (all [i]->log, &size);
        if (!text)
            continue;
        const char *start = text + size;
        for (int k = 0; k <= lines && start > text; ) {
            start--;
            if (*start == '\n')
                k++;
        }
        fprintf (stderr, "----- %s (%s), last %d lines -----\n%s\n", all [i]->name,
                 all [i]->log, lines, start);
        free (text);
    }
}

static int
s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove (path);
}

void
h_cluster_destroy (h_cluster_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    h_cluster_t *self = *self_p;
    char report [1024];
    h_cluster_stop_all (self, S_STOP_MS, report, sizeof report);
    bool keep = getenv ("IMGP_E2E_KEEP") != NULL;
    if (!self->ok) {
        h_cluster_dump_logs (self, 25);
        fprintf (stderr, "harness: test did not pass; logs kept in %s (stop: %s)\n",
                 self->dir, report);
        keep = true;
    }
    if (!keep)
        nftw (self->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free (self);
    *self_p = NULL;
}

void
h_cluster_pass (h_cluster_t *self)
{
    if (self)
        self->ok = true;
}

const char *
h_cluster_url (h_cluster_t *self, int i)
{
    static char urls [H_MAX_FRONTENDS][64];
    snprintf (urls [i], sizeof urls [i], "http://127.0.0.1:%d", self->http_ports [i]);
    return urls [i];
}

//  -------------------------------------------------------------------------
//  Faults

int
h_proc_signal (h_proc_t *proc, int sig, int deadline_ms)
{
    if (proc->pid <= 0 || kill (proc->pid, sig) != 0)
        return -1;
    if (sig == SIGSTOP || sig == SIGCONT)
        return 0;
    int status = 0;
    if (h_wait_exit (proc->pid, deadline_ms, &status) != 0)
        return -1;
    proc->pid = 0;
    proc->exit_status = status;
    return 0;
}

bool
h_proc_alive (h_proc_t *proc)
{
    return !s_proc_dead (proc);
}

typedef struct {
    h_proc_t *proc;                 //  the process and its log
    const char *needle;             //  text
    int count;                      //  at least this many occurrences
} s_log_wait_t;

static bool
s_logged_or_gone (void *arg)
{
    s_log_wait_t *wait = arg;
    return h_log_count (wait->proc->log, wait->needle) >= wait->count
        || s_proc_dead (wait->proc);
}

long long
h_wait_log (h_proc_t *proc, const char *needle, int count, int deadline_ms)
{
    long long t0 = h_now_ms ();
    s_log_wait_t wait = { proc, needle, count };
    h_wait_until (s_logged_or_gone, &wait, deadline_ms);
    return h_log_count (proc->log, needle) >= count ? h_now_ms () - t0 : -1;
}

int
h_cluster_broker_start (h_cluster_t *self)
{
    if (self->broker.pid > 0)
        return -1;                  //  one broker per cluster
    return s_start_broker (self);
}

static bool
s_resizer_ready (void *arg)
{
    h_proc_t *proc = arg;
    return s_proc_dead (proc) || h_log_count (proc->log, "event=ready") > 0;
}

int
h_cluster_add_resizer (h_cluster_t *self, int deadline_ms)
{
    int i = self->resizers;
    if (i >= H_MAX_RESIZERS || s_start_resizer (self, i) != 0)
        return -1;
    self->resizers++;
    h_proc_t *proc = &self->resizer [i];
    if (!h_wait_until (s_resizer_ready, proc, deadline_ms) || proc->pid <= 0)
        return -1;
    return i;
}

int
h_resizer_worker (const h_proc_t *resizer, char *name, size_t name_size)
{
    size_t size = 0;
    char *log = h_read_file (resizer->log, &size);
    const char *ready = log ? strstr (log, "event=ready worker=") : NULL;
    int rc = -1;
    if (ready) {
        ready += strlen ("event=ready worker=");
        snprintf (name, name_size, "%.*s", (int) strcspn (ready, " \r\n"), ready);
        rc = *name ? 0 : -1;
    }
    free (log);
    return rc;
}

int
h_healthz (int port, int timeout_ms)
{
    h_response_t resp;
    int status = h_http (port, "GET", "/healthz", NULL, NULL, 0, &resp, timeout_ms) == 0
               ? resp.status : 0;
    h_response_free (&resp);
    return status;
}

int
h_spool_count (h_cluster_t *self, const char *suffix)
{
    if (strcmp (suffix, ".tmp") == 0)
        return 0;
    imgp_spool_t *view = imgp_spool_new_readonly (self->data_dir);
    if (!view)
        return -1;
    size_t count = 0;
    if (strcmp (suffix, ".json") == 0 || !suffix [0])
        count += imgp_spool_count (view, IMGP_SPOOL_JSON);
    if (strcmp (suffix, ".in") == 0 || !suffix [0])
        count += imgp_spool_count (view, IMGP_SPOOL_IN);
    if (strcmp (suffix, ".out") == 0 || !suffix [0])
        count += imgp_spool_count (view, IMGP_SPOOL_OUT);
    imgp_spool_destroy (&view);
    return (int) count;
}

//  -------------------------------------------------------------------------
//  Logs and /proc

int
h_log_count (const char *path, const char *needle)
{
    size_t size = 0;
    char *text = h_read_file (path, &size);
    int count = 0;
    for (const char *at = text; at && (at = strstr (at, needle)); at += strlen (needle))
        count++;
    free (text);
    return count;
}

long
h_rss_kb (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    long kb = -1;
    while (file && fgets (line, sizeof line, file))
        if (sscanf (line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (file)
        fclose (file);
    return kb;
}

//  -------------------------------------------------------------------------
//  HTTP

int
h_response_fail (h_response_t *resp, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (resp->error, sizeof resp->error, format, args);
    va_end (args);
    return -1;
}

//  A non-blocking socket connecting to 127.0.0.1:port, bound first to the
//  source address `from` when it is not NULL (any of 127/8 on Linux).
static int
s_connect_from (int port, const char *from)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (from) {
        struct sockaddr_in source = { .sin_family = AF_INET };
        if (inet_pton (AF_INET, from, &source.sin_addr) != 1
        ||  bind (fd, (struct sockaddr *) &source, sizeof source) != 0) {
            close (fd);
            return -1;
        }
    }
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                                .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        close (fd);
        return -1;
    }
    return fd;
}

static int
s_connect (int port)
{
    return s_connect_from (port, NULL);
}

//  Remaining ms until deadline, at least 0.
static int
s_left (long long deadline)
{
    long long left = deadline - h_now_ms ();
    return left > 0 ? (int) left : 0;
}

//  Send head then body, but stop sending as soon as the server answers
//  (an early 413/415): its answer matters more than the rest of our body.
static int
s_send_request (int fd, const char *head, size_t head_size, const void *body,
                size_t body_size, long long deadline, h_response_t *resp)
{
    const char *parts [2] = { head, body };
    size_t sizes [2] = { head_size, body_size };
    for (int k = 0; k < 2; k++) {
        size_t sent = 0;
        while (sent < sizes [k]) {
            struct pollfd pfd = { fd, POLLOUT | POLLIN, 0 };
            int rc = poll (&pfd, 1, s_left (deadline));
            if (rc == 0)
                return h_response_fail (resp, "timeout while sending the request");
            if (rc < 0 && errno != EINTR)
                return h_response_fail (resp, "poll: %s", strerror (errno));
            if (pfd.revents & POLLIN)
                return 0;           //  early answer: go read it
            if (pfd.revents & (POLLERR | POLLHUP))
                return h_response_fail (resp, "connection refused or reset while sending");
            if (!(pfd.revents & POLLOUT))
                continue;
            ssize_t n = send (fd, parts [k] + sent, sizes [k] - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return errno == EPIPE || errno == ECONNRESET ? 0
                     : h_response_fail (resp, "send: %s", strerror (errno));
            if (n > 0)
                sent += (size_t) n;
        }
    }
    return 0;
}

//  True once `buf` holds a whole response: the head plus Content-Length
//  bytes, or a chunked body up to its last chunk. Without either, only
//  the server's close ends it. Reading by length matters when the server
//  answered early (a 400 before the body was sent): it may wait for the
//  rest of our body before closing, and we must not wait for its close.
static bool
s_response_complete (const char *buf, size_t used)
{
    const char *split = strstr (buf, "\r\n\r\n");
    if (!split)
        return false;
    size_t head = (size_t) (split - buf) + 4;
    h_response_t probe = { .head = strndup (buf, head - 2) };
    char value [64];
    bool complete = false;
    if (h_header (&probe, "Transfer-Encoding", value, sizeof value) == 0
    &&  strcasestr (value, "chunked"))
        complete = used >= head + 5 && memcmp (buf + used - 5, "0\r\n\r\n", 5) == 0;
    else
    if (h_header (&probe, "Content-Length", value, sizeof value) == 0)
        complete = used >= head + strtoull (value, NULL, 10);
    free (probe.head);
    return complete;
}

//  Double a receive buffer of *capacity bytes (+1 for a NUL), up to
//  S_MAX_RESPONSE. Returns 0, or -1 with the buffer unchanged.
static int
s_grow (char **buf, size_t *capacity)
{
    char *grown = *capacity < S_MAX_RESPONSE ? realloc (*buf, *capacity * 2 + 1) : NULL;
    if (!grown)
        return -1;
    *buf = grown;
    *capacity *= 2;
    return 0;
}

//  Read until the response is complete or the server closes.
static int
s_recv_all (int fd, long long deadline, char **data, size_t *size, h_response_t *resp)
{
    size_t capacity = 65536, used = 0;
    char *buf = malloc (capacity + 1);
    while (buf) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int rc = poll (&pfd, 1, s_left (deadline));
        if (rc == 0) {
            free (buf);
            return h_response_fail (resp, "timeout while reading the response (%zu bytes in)", used);
        }
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (used == capacity && s_grow (&buf, &capacity) != 0)
            break;
        ssize_t n = recv (fd, buf + used, capacity - used, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET && used > 0))
            break;
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            free (buf);
            return h_response_fail (resp, "recv: %s", strerror (errno));
        }
        if (n > 0) {
            used += (size_t) n;
            buf [used] = 0;
            if (s_response_complete (buf, used))
                break;
        }
    }
    if (!buf)
        return h_response_fail (resp, "out of memory");
    buf [used] = 0;
    *data = buf;
    *size = used;
    return 0;
}

//  Decode a chunked body in place. Returns the decoded size or -1.
static long
s_dechunk (char *body, size_t size)
{
    size_t in = 0, out = 0;
    while (in < size) {
        char *end = NULL;
        unsigned long chunk = strtoul (body + in, &end, 16);
        char *line_end = strstr (body + in, "\r\n");
        if (!line_end || end == body + in)
            return -1;
        in = (size_t) (line_end - body) + 2;
        if (chunk == 0)
            return (long) out;
        if (in + chunk + 2 > size)
            return -1;
        memmove (body + out, body + in, chunk);
        out += chunk;
        in += chunk + 2;
    }
    return -1;
}

//  Split raw bytes into status, head and body.
static int
s_parse_response (char *raw, size_t size, h_response_t *resp)
{
    char *split = strstr (raw, "\r\n\r\n");
    int major = 0, minor = 0, status = 0;
    if (!split || sscanf (raw, "HTTP/%d.%d %d", &major, &minor, &status) != 3)
        return h_response_fail (resp, "malformed response (%zu bytes)", size);
    size_t head_size = (size_t) (split - raw) + 2;
    resp->head = strndup (raw, head_size);
    size_t body_size = size - head_size - 2;
    resp->body = malloc (body_size + 1);
    if (!resp->head || !resp->body)
        return h_response_fail (resp, "out of memory");
    memcpy (resp->body, split + 4, body_size);
    resp->body_size = body_size;
    char value [64];
    if (h_header (resp, "Transfer-Encoding", value, sizeof value) == 0
    &&  strcasestr (value, "chunked")) {
        long decoded = s_dechunk (resp->body, body_size);
        if (decoded < 0)
            return h_response_fail (resp, "malformed chunked body");
        resp->body_size = (size_t) decoded;
    }
    else
    if (h_header (resp, "Content-Length", value, sizeof value) == 0) {
        size_t length = strtoull (value, NULL, 10);
        if (length > resp->body_size)
            return h_response_fail (resp, "body cut short: %zu of %zu bytes", resp->body_size, length);
        resp->body_size = length;
    }
    resp->body [resp->body_size] = 0;
    resp->status = status;
    return 0;
}

int
h_raw_send (int port, const char *head, const void *body, size_t body_size,
            h_response_t *resp, int timeout_ms)
{
    memset (resp, 0, sizeof *resp);
    int fd = s_connect (port);
    if (fd < 0)
        return h_response_fail (resp, "cannot connect to port %d", port);
    if (s_send_request (fd, head, strlen (head), body, body ? body_size : 0,
                        h_now_ms () + timeout_ms, resp) != 0) {
        close (fd);
        return -1;
    }
    return fd;
}

int
h_raw_response (int fd, h_response_t *resp, int timeout_ms)
{
    int rc = h_conn_response (fd, resp, timeout_ms);
    close (fd);
    return rc;
}

int
h_conn_response (int fd, h_response_t *resp, int timeout_ms)
{
    memset (resp, 0, sizeof *resp);
    char *raw = NULL;
    size_t raw_size = 0;
    int rc = s_recv_all (fd, h_now_ms () + timeout_ms, &raw, &raw_size, resp);
    if (rc == 0)
        rc = raw_size ? s_parse_response (raw, raw_size, resp)
                      : h_response_fail (resp, "closed without a response");
    free (raw);
    if (rc != 0) {
        char keep [sizeof resp->error];
        memcpy (keep, resp->error, sizeof keep);
        h_response_free (resp);
        memcpy (resp->error, keep, sizeof keep);
    }
    return rc;
}

int
h_http (int port, const char *method, const char *path, const char *content_type,
        const void *body, size_t body_size, h_response_t *resp, int timeout_ms)
{
    return h_http_with (port, method, path, NULL, content_type, body, body_size, resp,
                        timeout_ms);
}

int
h_http_with (int port, const char *method, const char *path, const char *headers,
             const char *content_type, const void *body, size_t body_size,
             h_response_t *resp, int timeout_ms)
{
    long long deadline = h_now_ms () + timeout_ms;
    char head [4096];
    int head_size = snprintf (head, sizeof head,
        "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s", method, path,
        port, headers ? headers : "");
    if (body || content_type)
        head_size += snprintf (head + head_size, sizeof head - (size_t) head_size,
            "Content-Type: %s\r\nContent-Length: %zu\r\n",
            content_type ? content_type : "application/octet-stream", body_size);
    snprintf (head + head_size, sizeof head - (size_t) head_size, "\r\n");
    int fd = h_raw_send (port, head, body, body_size, resp, timeout_ms);
    return fd < 0 ? -1 : h_raw_response (fd, resp, s_left (deadline));
}

int
h_conn_open (int port, const char *from)
{
    return s_connect_from (port, from);
}

int
h_conn_send (int fd, const void *data, size_t size, int timeout_ms)
{
    long long deadline = h_now_ms () + timeout_ms;
    size_t sent = 0;
    while (sent < size) {
        struct pollfd pfd = { fd, POLLOUT, 0 };
        int rc = poll (&pfd, 1, s_left (deadline));
        if (rc == 0 || (rc < 0 && errno != EINTR))
            return -1;
        if (pfd.revents & (POLLERR | POLLHUP))
            return -1;
        if (!(pfd.revents & POLLOUT))
            continue;
        ssize_t n = send (fd, (const char *) data + sent, size - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (n > 0)
            sent += (size_t) n;
    }
    return 0;
}

bool
h_conn_readable (int fd, int ms)
{
    struct pollfd pfd = { fd, POLLIN, 0 };
    int rc;
    while ((rc = poll (&pfd, 1, ms)) < 0 && errno == EINTR)
        ;
    return rc > 0;
}

int
h_conn_wait_close (int fd, int timeout_ms, char **data, size_t *size)
{
    long long deadline = h_now_ms () + timeout_ms;
    size_t capacity = 4096, used = 0;
    char *buf = malloc (capacity + 1);
    int rc = -1;
    while (buf) {
        if (!h_conn_readable (fd, s_left (deadline)))
            break;                  //  deadline: still open
        if (used == capacity && s_grow (&buf, &capacity) != 0)
            break;
        ssize_t n = recv (fd, buf + used, capacity - used, 0);
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE))) {
            rc = 0;                 //  closed by the server
            break;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (n > 0)
            used += (size_t) n;
    }
    if (buf)
        buf [used] = 0;
    if (data)
        *data = buf;
    else
        free (buf);
    if (size)
        *size = used;
    return rc;
}

typedef struct {
    int port;                       //  frontend port
    const char *path;               //  GET path
    int want;                       //  status to wait for
} s_status_wait_t;

static bool
s_status_is (void *arg)
{
    s_status_wait_t *wait = arg;
    h_response_t resp;
    int rc = h_http (wait->port, "GET", wait->path, NULL, NULL, 0, &resp, 2000);
    bool is = rc == 0 && resp.status == wait->want;
    h_response_free (&resp);
    return is;
}

long long
h_wait_status (int port, const char *path, int want, int deadline_ms)
{
    long long t0 = h_now_ms ();
    s_status_wait_t wait = { port, path, want };
    return h_wait_until (s_status_is, &wait, deadline_ms) ? h_now_ms () - t0 : -1;
}

int
h_header (const h_response_t *resp, const char *name, char *value, size_t value_size)
{
    if (!resp->head)
        return -1;
    size_t len = strlen (name);
    for (const char *line = strstr (resp->head, "\r\n"); line && line [2];
         line = strstr (line + 2, "\r\n")) {
        const char *start = line + 2;
        if (strncasecmp (start, name, len) == 0 && start [len] == ':') {
            const char *v = start + len + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vlen = strcspn (v, "\r\n");
            snprintf (value, value_size, "%.*s", (int) vlen, v);
            return 0;
        }
    }
    return -1;
}

json_t *
h_json (const h_response_t *resp)
{
    return resp->body ? json_loadb (resp->body, resp->body_size, 0, NULL) : NULL;
}

void
h_response_free (h_response_t *resp)
{
    free (resp->head);
    free (resp->body);
    memset (resp, 0, sizeof *resp);
}

char *
h_multipart (const char *field, const char *filename, const char *file_type,
             const void *data, size_t data_size, size_t *size,
             char *content_type, size_t content_type_size)
{
    const char *boundary = "imgpE2EbOuNdArY7d3f";
    char head [512];
    int head_size = snprintf (head, sizeof head,
        "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
        "Content-Type: %s\r\n\r\n", boundary, field, filename, file_type);
    char tail [128];
    int tail_size = snprintf (tail, sizeof tail, "\r\n--%s--\r\n", boundary);
    char *body = malloc ((size_t) head_size + data_size + (size_t) tail_size);
    if (!body)
        return NULL;
    memcpy (body, head, (size_t) head_size);
    memcpy (body + head_size, data, data_size);
    memcpy (body + head_size + data_size, tail, (size_t) tail_size);
    *size = (size_t) head_size + data_size + (size_t) tail_size;
    snprintf (content_type, content_type_size, "multipart/form-data; boundary=%s", boundary);
    return body;
}

//  -------------------------------------------------------------------------
//  Jobs

int
h_upload (int port, const char *path, const void *data, size_t size,
          const char *content_type, bool multipart, char id [H_ID_SIZE],
          h_response_t *resp)
{
    h_response_t own = { 0 };
    h_response_t *r = resp ? resp : &own;
    char type [128];
    char *form = NULL;
    if (multipart) {
        form = h_multipart ("img", "upload.bin", content_type ? content_type
                            : "application/octet-stream", data, size, &size, type, sizeof type);
        data = form;
        content_type = type;
    }
    int rc = h_http (port, "POST", path, content_type, data, size, r, 30000);
    free (form);
    int status = rc == 0 ? r->status : 0;
    if (id)
        id [0] = 0;
    if (status == 202 && id) {
        json_t *root = h_json (r);
        const char *value = json_string_value (json_object_get (root, "id"));
        if (value && strlen (value) == H_ID_SIZE - 1)
            memcpy (id, value, H_ID_SIZE);
        json_decref (root);
    }
    if (!resp)
        h_response_free (&own);
    return status;
}

const char *
h_json_status (json_t *status_json)
{
    const char *value = json_string_value (json_object_get (status_json, "status"));
    return value ? value : "";
}

int
h_job_wait (int port, const char *id, int deadline_ms, json_t **status_json,
            char *why, size_t why_size)
{
    long long deadline = h_now_ms () + deadline_ms;
    char path [128];
    snprintf (path, sizeof path, "/v1/images/%s", id);
    char last [32] = "none";
    while (true) {
        h_response_t resp;
        int rc = h_http (port, "GET", path, NULL, NULL, 0, &resp, 10000);
        if (rc != 0 || resp.status != 200) {
            snprintf (why, why_size, "GET %s: %s", path,
                      rc != 0 ? resp.error : resp.status == 404 ? "404 (unknown id)" : "not 200");
            if (rc == 0)
                snprintf (why + strlen (why), why_size - strlen (why), " status %d body %.200s",
                          resp.status, resp.body);
            h_response_free (&resp);
            return -1;
        }
        json_t *root = h_json (&resp);
        h_response_free (&resp);
        const char *state = h_json_status (root);
        snprintf (last, sizeof last, "%s", state);
        if (strcmp (state, "done") == 0 || strcmp (state, "failed") == 0) {
            if (status_json)
                *status_json = root;
            else
                json_decref (root);
            return 0;
        }
        json_decref (root);
        if (h_now_ms () >= deadline) {
            snprintf (why, why_size, "job %s still '%s' after %d ms", id, last, deadline_ms);
            return -1;
        }
        s_nap_ms (S_POLL_MS);
    }
}

//  -------------------------------------------------------------------------
//  Images

static void
s_vips_quiet (const char *domain, GLogLevelFlags level, const char *message, void *data)
{
    (void) domain;
    (void) level;
    (void) message;
    (void) data;
}

void
h_vips_init (void)
{
    static bool done = false;
    if (!done) {
        if (VIPS_INIT ("test_e2e") != 0)
            fprintf (stderr, "harness: vips init failed: %s\n", vips_error_buffer ());
        vips_cache_set_max (0);
        //  Warnings about the thumbnails we decode ("ignoring nclx
        //  profile") are noise here; decode errors are checked by code.
        g_log_set_handler ("VIPS", G_LOG_LEVEL_WARNING, s_vips_quiet, NULL);
        done = true;
    }
}


//  The end of making a fixture: a libvips buffer (rc 0) handed back as
//  malloc memory, so callers free() it; or NULL, with libvips' reason
//  printed.
static void *
s_encoded (int rc, void *buf, size_t len, const char *what, size_t *size)
{
    if (rc != 0 || !buf) {
        fprintf (stderr, "harness: cannot make a %s: %s\n", what, vips_error_buffer ());
        vips_error_clear ();
        g_free (buf);
        return NULL;
    }
    void *copy = malloc (len);
    if (copy)
        memcpy (copy, buf, len);
    g_free (buf);
    *size = len;
    return copy;
}

void *
h_make_image (const char *format, int w, int h, bool alpha, size_t *size)
{
    h_vips_init ();
    VipsObject *scope = VIPS_OBJECT (vips_image_new ());
    VipsImage **t = (VipsImage **) vips_object_local_array (scope, 6);
    void *buf = NULL;
    size_t len = 0;
    //  Band 0,1: x and y ramps; band 2: noise. Then an alpha band.
    int rc = vips_xyz (&t [0], w, h, NULL)
          || vips_gaussnoise (&t [1], w, h, "mean", 128.0, "sigma", 50.0, NULL)
          || vips_bandjoin2 (t [0], t [1], &t [2], NULL)
          || vips_cast_uchar (t [2], &t [3], NULL);
    VipsImage *img = t [3];
    if (rc == 0 && alpha) {
        rc = vips_bandjoin_const1 (t [3], &t [4], 200.0, NULL);
        img = t [4];
    }
    if (rc == 0)
        img->Type = VIPS_INTERPRETATION_sRGB;
    if (rc == 0 && strcmp (format, "jpeg") == 0)
        rc = vips_jpegsave_buffer (img, &buf, &len, "Q", 90, NULL);
    else
    if (rc == 0 && strcmp (format, "png") == 0)
        rc = vips_pngsave_buffer (img, &buf, &len, NULL);
    else
    if (rc == 0 && strcmp (format, "gif") == 0)
        rc = vips_gifsave_buffer (img, &buf, &len, NULL);
    else
    if (rc == 0 && strcmp (format, "webp") == 0)
        rc = vips_webpsave_buffer (img, &buf, &len, NULL);
    else
        rc = -1;
    g_object_unref (scope);
    return s_encoded (rc, buf, len, format, size);
}

void *
h_make_animation (int frames, int w, int h, size_t *size)
{
    h_vips_init ();
    VipsObject *scope = VIPS_OBJECT (vips_image_new ());
    VipsImage **t = (VipsImage **) vips_object_local_array (scope, 3);
    void *buf = NULL;
    size_t len = 0;
    //  Rows of frame k are all k * 60: a ramp down the strip, cut in frames.
    double scale [] = { 60.0 / h }, offset [] = { 0 };
    int rc = vips_xyz (&t [0], w, h * frames, NULL)
          || vips_extract_band (t [0], &t [1], 1, NULL)
          || vips_linear (t [1], &t [2], scale, offset, 1, "uchar", TRUE, NULL);
    if (rc == 0) {
        vips_image_set_int (t [2], VIPS_META_PAGE_HEIGHT, h);
        vips_image_set_int (t [2], VIPS_META_N_PAGES, frames);
        rc = vips_gifsave_buffer (t [2], &buf, &len, NULL);
    }
    g_object_unref (scope);
    return s_encoded (rc, buf, len, "animated gif", size);
}

int
h_frames (const void *data, size_t size)
{
    h_vips_init ();
    VipsImage *img = vips_image_new_from_buffer (data, size, "", "n", -1, NULL);
    if (!img) {
        vips_error_clear ();
        return -1;
    }
    int frames = vips_image_get_height (img) / vips_image_get_page_height (img);
    g_object_unref (img);
    return frames;
}

void *
h_make_flat_png (int w, int h, size_t *size)
{
    h_vips_init ();
    VipsObject *scope = VIPS_OBJECT (vips_image_new ());
    VipsImage **t = (VipsImage **) vips_object_local_array (scope, 3);
    void *buf = NULL;
    size_t len = 0;
    double ones [] = { 1, 1, 1, 1 }, colour [] = { 10000, 30000, 50000, 65535 };
    int rc = vips_black (&t [0], w, h, "bands", 4, NULL)
          || vips_linear (t [0], &t [1], ones, colour, 4, NULL)
          || vips_cast_ushort (t [1], &t [2], NULL);
    if (rc == 0) {
        t [2]->Type = VIPS_INTERPRETATION_RGB16;
        rc = vips_pngsave_buffer (t [2], &buf, &len, "bitdepth", 16, "compression", 9,
                                  "filter", VIPS_FOREIGN_PNG_FILTER_PAETH, NULL);
    }
    g_object_unref (scope);
    return s_encoded (rc, buf, len, "flat png", size);
}

int
h_image_info (const void *data, size_t size, int *w, int *h, int *orientation)
{
    h_vips_init ();
    VipsImage *img = vips_image_new_from_buffer (data, size, "", "access",
                                                 VIPS_ACCESS_SEQUENTIAL, NULL);
    if (!img) {
        vips_error_clear ();
        return -1;
    }
    *w = vips_image_get_width (img);
    *h = vips_image_get_height (img);
    int o = 1;
    if (vips_image_get_typeof (img, VIPS_META_ORIENTATION)
    &&  vips_image_get_int (img, VIPS_META_ORIENTATION, &o) != 0)
        o = 1;
    *orientation = o;
    g_object_unref (img);
    return 0;
}

int
h_decode (const void *data, size_t size, int *w, int *h, char *loader,
          size_t loader_size, char *why, size_t why_size)
{
    h_vips_init ();
    const char *name = vips_foreign_find_load_buffer (data, size);
    if (!name) {
        snprintf (why, why_size, "no libvips loader recognises the %zu bytes", size);
        vips_error_clear ();
        return -1;
    }
    if (loader)
        snprintf (loader, loader_size, "%s", name);
    VipsImage *img = vips_image_new_from_buffer (data, size, "", "fail_on",
                                                 VIPS_FAIL_ON_WARNING, NULL);
    double avg = 0;
    int rc = img && vips_avg (img, &avg, NULL) == 0 ? 0 : -1;
    if (rc != 0)
        snprintf (why, why_size, "cannot decode the %zu bytes (%s): %s", size, name,
                  vips_error_buffer ());
    else {
        *w = vips_image_get_width (img);
        *h = vips_image_get_height (img);
    }
    if (img)
        g_object_unref (img);
    vips_error_clear ();
    return rc;
}

//  Expected side: exact fit, rounded, never 0.
static int
s_fit_side (int side, double scale)
{
    int v = (int) (side * scale + 0.5);
    return v < 1 ? 1 : v;
}

int
h_check_thumb (const void *data, size_t size, int src_w, int src_h, int box_w,
               int box_h, int *out_w, int *out_h, char *why, size_t why_size)
{
    int w = 0, h = 0;
    if (h_decode (data, size, &w, &h, NULL, 0, why, why_size) != 0)
        return -1;
    if (out_w)
        *out_w = w;
    if (out_h)
        *out_h = h;
    double scale = (double) box_w / src_w;
    if ((double) box_h / src_h < scale)
        scale = (double) box_h / src_h;
    if (scale > 1.0)
        scale = 1.0;
    int want_w = s_fit_side (src_w, scale), want_h = s_fit_side (src_h, scale);
    if (w < 1 || h < 1 || w > box_w || h > box_h || abs (w - want_w) > 1 || abs (h - want_h) > 1) {
        snprintf (why, why_size, "thumbnail is %dx%d; a %dx%d image inside %dx%d "
                  "should give %dx%d (+-1 px)", w, h, src_w, src_h, box_w, box_h,
                  want_w, want_h);
        return -1;
    }
    return 0;
}

void *
h_read_file (const char *path, size_t *size)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat (fileno (file), &st) == 0 && (buf = malloc ((size_t) st.st_size + 1))) {
        *size = fread (buf, 1, (size_t) st.st_size, file);
        buf [*size] = 0;
    }
    fclose (file);
    return buf;
}

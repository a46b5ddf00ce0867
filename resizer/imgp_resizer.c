/*  imgp_resizer — see imgp_resizer.h for what and why.

    Threads, each with its own sockets:
    - the caller of imgp_resizer_run() owns the PULL (jobs) and the PUSH
      (STARTED, DONE, FAILED) sockets and runs one job at a time;
    - the heartbeat actor owns a second PUSH to the same results endpoint
      and sends HEARTBEAT(worker, slots) every heartbeat_ms, and at once
      when the job thread tells it, over the actor pipe, that the free
      slots changed. Its socket never blocks (send timeout 0, small
      high-water mark): a heartbeat that cannot go out now is stale anyway;
    - libzmq's socket monitor reports DISCONNECTED on the jobs socket to a
      PAIR that the job thread polls with the jobs socket (see s_open_jobs
      for why, and for why not czmq's zmonitor actor).

    Signals: the job thread polls the stop flags every S_POLL_MS, and never
    makes sockets again once stopping.

    The two PUSH sockets are separate connections, so the broker may see a
    HEARTBEAT and a STARTED in either order; credit-based dispatch in the
    broker tolerates that (at worst one job waits in our pipe, rcvhwm 1).
*/
#include "imgp_resizer.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "imgp_id.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_thumb.h"

#define S_SLOTS 1                   //  jobs run at once by one resizer
#define S_POLL_MS 100               //  how often the job loop looks at the stop flag
#define S_RESULTS_LINGER_MS 1000    //  time to flush the last result on exit
#define S_RESULTS_SNDTIMEO_MS 5000  //  longest wait when the results pipe is full
#define S_BEAT_LINGER_MS 200        //  time to flush the last heartbeat on exit
#define S_BEAT_SNDHWM 4             //  queued heartbeats kept while the broker is away

struct _imgp_resizer_t {
    char *jobs;                     //  ventilator endpoint
    char *results;                  //  sink endpoint
    char name [IMGP_WORKER_MAX + 1];//  worker name on the wire
    int max_msg_size;               //  largest message accepted on PULL
    int heartbeat_ms;               //  heartbeat interval
    atomic_bool stop;               //  set by imgp_resizer_stop
    atomic_llong jobs_done;         //  results sent (DONE or FAILED)
    int64_t max_result_size;        //  largest thumbnail sent (the broker's limit)
    //  Valid only inside imgp_resizer_run:
    zsock_t *pull;                  //  JOBs in
    zsock_t *events;                //  DISCONNECTED events of pull, from libzmq's monitor
    unsigned opens;                 //  jobs sockets made so far, names the monitor endpoint
    zpoller_t *poller;              //  pull and events
    zsock_t *push;                  //  STARTED / DONE / FAILED out
    zactor_t *heartbeat;            //  heartbeat actor
};

//  What the heartbeat actor needs, copied before the actor signals ready.
typedef struct {
    const char *endpoint;           //  results endpoint
    const char *name;               //  worker name
    int interval_ms;                //  heartbeat interval
} s_beat_args_t;


//  --------------------------------------------------------------------------
//  Heartbeat actor

static void
s_beat_send (zsock_t *push, const char *name, int slots)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    snprintf (msg->worker, sizeof msg->worker, "%s", name);
    msg->slots = slots;
    if (imgp_msg_send (&msg, push) == 0)
        imgp_debug ("event=heartbeat worker=%s slots=%d", name, slots);
    else
        imgp_debug ("event=heartbeat_dropped worker=%s slots=%d reason=%s", name, slots,
                    zmq_strerror (zmq_errno ()));
}

static zsock_t *
s_beat_socket (const char *endpoint)
{
    zsock_t *push = zsock_new (ZMQ_PUSH);
    if (!push)
        return NULL;
    zsock_set_linger (push, S_BEAT_LINGER_MS);
    zsock_set_sndtimeo (push, 0);
    zsock_set_sndhwm (push, S_BEAT_SNDHWM);
    if (zsock_connect (push, "%s", endpoint)) {
        imgp_error ("event=connect_failed endpoint=%s socket=heartbeat", endpoint);
        zsock_destroy (&push);
    }
    return push;
}

//  Commands on the pipe: "SLOTS" n (send now), "$TERM" (exit).
static void
s_beat_actor (zsock_t *pipe, void *args)
{
    s_beat_args_t beat = *(s_beat_args_t *) args;
    char name [IMGP_WORKER_MAX + 1];
    snprintf (name, sizeof name, "%s", beat.name);
    zsock_t *push = s_beat_socket (beat.endpoint);
    zpoller_t *poller = push ? zpoller_new (pipe, NULL) : NULL;
    zsock_signal (pipe, poller ? 0 : 1);
    if (!poller) {
        zsock_destroy (&push);
        return;
    }
    //  Only $TERM ends the actor: a signal is the job thread's business.
    zpoller_set_nonstop (poller, true);

    int slots = S_SLOTS;
    int64_t next = 0;
    while (true) {
        int64_t now = zclock_mono ();
        if (now >= next) {
            s_beat_send (push, name, slots);
            next = now + beat.interval_ms;
        }
        if (!zpoller_wait (poller, (int) (next - now)))
            continue;
        zmsg_t *command = zmsg_recv (pipe);
        char *verb = command ? zmsg_popstr (command) : NULL;
        bool term = !verb || streq (verb, "$TERM");
        if (verb && streq (verb, "SLOTS")) {
            char *value = zmsg_popstr (command);
            slots = value ? atoi (value) : 0;
            zstr_free (&value);
            next = 0;
        }
        zstr_free (&verb);
        zmsg_destroy (&command);
        if (term)
            break;
    }
    zpoller_destroy (&poller);
    zsock_destroy (&push);
}

static void
s_set_slots (imgp_resizer_t *self, int slots)
{
    char text [16];
    snprintf (text, sizeof text, "%d", slots);
    zstr_sendx (self->heartbeat, "SLOTS", text, NULL);
}


//  --------------------------------------------------------------------------
//  Construction

//  Default name prefix: "<hostname>-<pid>", cut to fit, and every
//  character a worker name may not hold replaced by '_'.
static void
s_default_prefix (char *prefix, size_t size)
{
    char host [256] = "";
    if (gethostname (host, sizeof host - 1) != 0 || !*host)
        snprintf (host, sizeof host, "resizer");
    char pid [24];
    snprintf (pid, sizeof pid, "-%ld", (long) getpid ());
    size_t room = size - 1 - strlen (pid);
    snprintf (prefix, size, "%.*s%s", (int) room, host, pid);
    for (char *c = prefix; *c; c++) {
        char one [2] = { *c, '\0' };
        if (!imgp_msg_worker_valid (one))
            *c = '_';
    }
}

//  The worker name: the prefix, "-", 8 random hex digits. Returns 0 or -1.
static int
s_make_name (imgp_resizer_t *self, const char *prefix)
{
    char random [IMGP_ID_LEN + 1];
    if (imgp_id_new (random)) {
        imgp_error ("event=config_error message=no randomness for the worker name");
        return -1;
    }
    snprintf (self->name, sizeof self->name, "%s-%.*s", prefix,
              IMGP_RESIZER_SUFFIX_LEN - 1, random);
    return imgp_msg_worker_valid (self->name) ? 0 : -1;
}

//  The configuration a resizer cannot run with, logged. Returns 0 or -1.
static int
s_check_config (const imgp_resizer_config_t *config)
{
    const char *prefix = config->name;
    if (prefix && *prefix
    &&  (strlen (prefix) > IMGP_RESIZER_PREFIX_MAX || !imgp_msg_worker_valid (prefix))) {
        imgp_error ("event=config_error message=worker name must be 1..%d printable "
                    "characters without spaces (a random suffix makes it unique)",
                    IMGP_RESIZER_PREFIX_MAX);
        return -1;
    }
    if (config->max_upload_bytes > IMGP_UPLOAD_LIMIT_MAX) {
        imgp_error ("event=config_error message=max-upload-bytes is over the limit of %lld",
                    (long long) IMGP_UPLOAD_LIMIT_MAX);
        return -1;
    }
    return 0;
}

imgp_resizer_t *
imgp_resizer_new (const imgp_resizer_config_t *config)
{
    assert (config && config->jobs && config->results);
    assert (config->heartbeat_ms > 0 && config->max_upload_bytes > 0);
    if (s_check_config (config))
        return NULL;
    imgp_resizer_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->jobs = strdup (config->jobs);
    self->results = strdup (config->results);
    char prefix [IMGP_RESIZER_PREFIX_MAX + 1];
    if (config->name && *config->name)
        snprintf (prefix, sizeof prefix, "%s", config->name);
    else
        s_default_prefix (prefix, sizeof prefix);
    if (!self->jobs || !self->results || s_make_name (self, prefix)) {
        imgp_resizer_destroy (&self);
        return NULL;
    }
    self->max_msg_size = imgp_msg_max_size (config->max_upload_bytes);
    self->max_result_size = config->max_upload_bytes;
    self->heartbeat_ms = config->heartbeat_ms;
    atomic_init (&self->stop, false);
    atomic_init (&self->jobs_done, 0);
    return self;
}

void
imgp_resizer_destroy (imgp_resizer_t **self_p)
{
    if (self_p && *self_p) {
        imgp_resizer_t *self = *self_p;
        free (self->jobs);
        free (self->results);
        free (self);
        *self_p = NULL;
    }
}

const char *
imgp_resizer_name (imgp_resizer_t *self)
{
    return self->name;
}

int64_t
imgp_resizer_jobs (imgp_resizer_t *self)
{
    return atomic_load (&self->jobs_done);
}

void
imgp_resizer_stop (imgp_resizer_t *self)
{
    atomic_store (&self->stop, true);
}

int
imgp_resizer_set_priority (int nice)
{
    assert (nice >= 0 && nice <= 19);
    if (nice == 0)
        return 0;
    //  Lower only: a resizer started under nice 15 stays at 15 (raising it
    //  back would need CAP_SYS_NICE, and the operator meant it).
    errno = 0;
    int current = getpriority (PRIO_PROCESS, 0);
    if (errno == 0 && current > nice)
        nice = current;
    struct sched_param param = { .sched_priority = 0 };
    if (setpriority (PRIO_PROCESS, 0, nice) != 0
    ||  sched_setscheduler (0, SCHED_BATCH, &param) != 0) {
        imgp_warn ("event=priority_failed nice=%d reason=\"%s\"", nice, strerror (errno));
        return -1;
    }
    imgp_info ("event=priority nice=%d policy=batch", nice);
    return 0;
}


//  --------------------------------------------------------------------------
//  One job

static bool
s_stopping (imgp_resizer_t *self)
{
    return zsys_interrupted || atomic_load (&self->stop);
}

//  A result message for `job` of `type`, with the fields every result has.
static imgp_msg_t *
s_result_new (imgp_resizer_t *self, imgp_msg_t *job, imgp_msg_type_t type)
{
    imgp_msg_t *msg = imgp_msg_new (type);
    memcpy (msg->id, job->id, sizeof msg->id);
    snprintf (msg->worker, sizeof msg->worker, "%s", self->name);
    msg->attempts = job->attempts;
    return msg;
}

static void
s_send (imgp_resizer_t *self, imgp_msg_t **msg_p)
{
    char id [IMGP_ID_LEN + 1];
    memcpy (id, (*msg_p)->id, sizeof id);
    const char *type = imgp_msg_type_name ((*msg_p)->type);
    if (imgp_msg_send (msg_p, self->push) != 0)
        imgp_error ("job=%s event=send_failed type=%s reason=%s", id, type,
                    zmq_strerror (zmq_errno ()));
}

//  DONE with the thumbnail bytes, handed to libzmq without a copy.
static void
s_send_done (imgp_resizer_t *self, imgp_msg_t *job, imgp_thumb_result_t *thumb, int64_t ms)
{
    imgp_msg_t *msg = s_result_new (self, job, IMGP_MSG_DONE);
    msg->result.width = thumb->width;
    msg->result.height = thumb->height;
    msg->result.format = job->opts.format;
    msg->result.bytes = (int64_t) thumb->size;
    msg->result.ms = ms;
    imgp_msg_set_data (msg, thumb->data, thumb->size, imgp_thumb_free);
    thumb->data = NULL;
    s_send (self, &msg);
}

static void
s_send_failed (imgp_resizer_t *self, imgp_msg_t *job, imgp_thumb_result_t *thumb)
{
    imgp_msg_t *msg = s_result_new (self, job, IMGP_MSG_FAILED);
    snprintf (msg->code, sizeof msg->code, "%s", imgp_thumb_code_name (thumb->code));
    snprintf (msg->message, sizeof msg->message, "%s", thumb->message);
    s_send (self, &msg);
}

//  The broker refuses messages over its upload limit (and drops the
//  connection that sent one), so a thumbnail that large fails here instead.
static int
s_check_result_size (imgp_resizer_t *self, imgp_thumb_result_t *thumb)
{
    if ((int64_t) thumb->size <= self->max_result_size)
        return 0;
    size_t size = thumb->size;
    imgp_thumb_result_clear (thumb);
    thumb->code = IMGP_THUMB_ENCODE_ERROR;
    snprintf (thumb->message, sizeof thumb->message,
              "the thumbnail is %zu bytes, over the limit of %lld bytes: ask for a smaller "
              "size or a lossy format", size, (long long) self->max_result_size);
    return -1;
}

static void
s_handle_job (imgp_resizer_t *self, imgp_msg_t **job_p)
{
    imgp_msg_t *job = *job_p;
    s_set_slots (self, 0);
    imgp_msg_t *started = s_result_new (self, job, IMGP_MSG_STARTED);
    s_send (self, &started);
    imgp_info ("job=%s event=started attempt=%d worker=%s", job->id, job->attempts, self->name);

    imgp_thumb_set_job (job->id);
    imgp_thumb_result_t thumb = { 0 };
    int64_t start = zclock_mono ();
    int rc = imgp_thumb_make (imgp_msg_data (job), imgp_msg_size (job), &job->opts, &thumb);
    int64_t ms = zclock_mono () - start;
    imgp_thumb_set_job (NULL);
    if (rc == 0)
        rc = s_check_result_size (self, &thumb);

    atomic_fetch_add (&self->jobs_done, 1);
    if (rc == 0) {
        imgp_info ("job=%s event=resized ms=%lld in=%dx%d out=%dx%d bytes=%zu format=%s",
                   job->id, (long long) ms, thumb.in_width, thumb.in_height, thumb.width,
                   thumb.height, thumb.size, imgp_format_name (job->opts.format));
        s_send_done (self, job, &thumb, ms);
    }
    else {
        imgp_info ("job=%s event=failed code=%s ms=%lld message=%s", job->id,
                   imgp_thumb_code_name (thumb.code), (long long) ms, thumb.message);
        s_send_failed (self, job, &thumb);
    }
    imgp_thumb_result_clear (&thumb);
    imgp_msg_destroy (job_p);
    if (!s_stopping (self))
        s_set_slots (self, S_SLOTS);    //  when stopping, the last word is slots=0
}

static void
s_handle (imgp_resizer_t *self, imgp_msg_t **msg_p)
{
    if ((*msg_p)->type == IMGP_MSG_JOB)
        s_handle_job (self, msg_p);
    else {
        imgp_warn ("event=dropped type=%s reason=\"not a JOB on the jobs socket\"",
                   imgp_msg_type_name ((*msg_p)->type));
        imgp_msg_destroy (msg_p);
    }
}


//  --------------------------------------------------------------------------
//  The loop

static int
s_connect (zsock_t *sock, const char *endpoint, const char *what)
{
    if (zsock_connect (sock, "%s", endpoint) == 0)
        return 0;
    imgp_error ("event=connect_failed endpoint=%s socket=%s", endpoint, what);
    return -1;
}

//  The jobs socket, watched by a monitor: libzmq drops a connection that
//  brought a message over maxmsgsize and, that being a protocol error,
//  never reconnects it. On DISCONNECTED we make the socket again (after a
//  broker restart that is harmless: the new socket connects as the old one
//  would have). The monitor is libzmq's own, read here in the job thread,
//  not czmq's zmonitor actor: czmq 4.2.1's zmonitor ends by itself on
//  SIGTERM (its exit handshake on the pipe looked like an event, so we
//  made a new one), and a zmonitor started after the signal aborts in
//  zframe_recv(NULL): its interrupted poller returns NULL, which equals
//  its sink until START is handled. Returns 0 or -1 (logged).
static int
s_open_jobs (imgp_resizer_t *self)
{
    self->pull = zsock_new (ZMQ_PULL);
    self->events = zsock_new (ZMQ_PAIR);
    if (!self->pull || !self->events) {
        imgp_error ("event=socket_failed socket=jobs reason=%s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    zsock_set_rcvhwm (self->pull, 1);
    zsock_set_maxmsgsize (self->pull, self->max_msg_size);
    zsock_set_linger (self->pull, 0);
    //  A fresh endpoint each time: the old one may still be bound while
    //  libzmq reaps the socket we just closed.
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://imgp-resizer-jobs-%p-%u", (void *) self,
              ++self->opens);
    if (zmq_socket_monitor (zsock_resolve (self->pull), endpoint, ZMQ_EVENT_DISCONNECTED)
    ||  zsock_connect (self->events, "%s", endpoint)) {
        imgp_error ("event=monitor_failed socket=jobs reason=%s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    if (s_connect (self->pull, self->jobs, "jobs"))
        return -1;
    self->poller = zpoller_new (self->pull, self->events, NULL);
    if (!self->poller) {
        imgp_error ("event=poller_failed socket=jobs");
        return -1;
    }
    return 0;
}

static void
s_close_jobs (imgp_resizer_t *self)
{
    zpoller_destroy (&self->poller);
    if (self->pull)
        zmq_socket_monitor (zsock_resolve (self->pull), NULL, 0);
    zsock_destroy (&self->events);
    zsock_destroy (&self->pull);
}

//  The monitor tells only DISCONNECTED, so the event (number and value,
//  then the endpoint) is not parsed: it is read to empty the pipe.
static int
s_reopen_jobs (imgp_resizer_t *self)
{
    zmsg_t *event = zmsg_recv (self->events);
    zmsg_destroy (&event);
    bool stopping = s_stopping (self);
    imgp_warn ("event=jobs_disconnected endpoint=%s action=%s", self->jobs,
               stopping ? "none" : "reconnect");
    if (stopping)
        return 0;                       //  the loop ends; nothing to reconnect for
    s_close_jobs (self);
    return s_open_jobs (self);
}

//  A new actor with SIGINT and SIGTERM blocked in this thread: zactor_new
//  waits for the actor's handshake, and a signal cutting that wait short
//  leaves the handshake in the pipe, so zactor_destroy would take it for
//  the actor's exit and not wait. The actor thread inherits the mask: it
//  ends on $TERM only, so a signal has no business there.
static zactor_t *
s_actor_new (zactor_fn *actor, void *args)
{
    sigset_t signals, saved;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, &saved);
    zactor_t *self = zactor_new (actor, args);
    pthread_sigmask (SIG_SETMASK, &saved, NULL);
    return self;
}

//  Make the sockets and the heartbeat actor. Returns 0 or -1 (logged).
static int
s_open (imgp_resizer_t *self)
{
    if (s_open_jobs (self))
        return -1;
    self->push = zsock_new (ZMQ_PUSH);
    if (!self->push) {
        imgp_error ("event=socket_failed socket=results reason=%s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    zsock_set_linger (self->push, S_RESULTS_LINGER_MS);
    zsock_set_sndtimeo (self->push, S_RESULTS_SNDTIMEO_MS);
    if (s_connect (self->push, self->results, "results"))
        return -1;

    s_beat_args_t args = { self->results, self->name, self->heartbeat_ms };
    self->heartbeat = s_actor_new (s_beat_actor, &args);
    if (!self->heartbeat) {
        imgp_error ("event=actor_failed actor=heartbeat");
        return -1;
    }
    //  zactor_new does not report an actor that failed to start; then its
    //  pipe has no peer, and a blocking SLOTS would hang us for good.
    zsock_set_sndtimeo (self->heartbeat, 0);
    return 0;
}

static void
s_close (imgp_resizer_t *self)
{
    if (self->heartbeat)
        s_set_slots (self, 0);          //  a last word: take nothing more
    zactor_destroy (&self->heartbeat);
    s_close_jobs (self);
    zsock_destroy (&self->push);
}

//  Jobs until stopped, or until the jobs socket cannot be made again.
static int
s_loop (imgp_resizer_t *self)
{
    int rc = 0;
    while (rc == 0 && !s_stopping (self)) {
        void *which = zpoller_wait (self->poller, S_POLL_MS);
        if (which == self->pull) {
            imgp_msg_t *msg = imgp_msg_recv (self->pull);
            if (msg)
                s_handle (self, &msg);  //  NULL: malformed (logged) or interrupted
        }
        else
        if (which == self->events)
            rc = s_reopen_jobs (self);
        //  else timeout, or interrupted: the loop condition looks
    }
    return rc;
}

int
imgp_resizer_run (imgp_resizer_t *self)
{
    assert (self);
    int rc = 0;
    //  Stopped before we started (a signal while libvips loaded): connect
    //  nothing, so the broker never counts us.
    if (!s_stopping (self)) {
        rc = s_open (self);
        if (rc == 0) {
            imgp_info ("event=ready worker=%s jobs=%s results=%s", self->name, self->jobs,
                       self->results);
            rc = s_loop (self);
        }
    }
    s_close (self);
    imgp_thumb_thread_done ();
    imgp_info ("event=stopped worker=%s jobs=%lld", self->name,
               (long long) imgp_resizer_jobs (self));
    return rc;
}

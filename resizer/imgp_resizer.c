/*  imgp_resizer — see imgp_resizer.h for what and why.

    Threads, each with its own sockets:
    - the link actor owns the DEALER to the broker's jobs endpoint and the
      PAIR that libzmq's socket monitor reports on. It says READY at every
      connect (slots, and credit = capacity minus jobs held), HEARTBEAT
      every heartbeat_ms, passes JOBs on to the worker over an inproc PAIR
      and the worker's STARTED / DONE / FAILED back out on the DEALER (for
      a JOB to an idle worker it says STARTED itself, at once). Between
      the two threads messages move as pointers (s_pipe_send), and image
      bytes are never copied. It counts jobs held (passed on, not answered
      yet) and running (STARTED, not answered yet): all READY and
      HEARTBEAT say comes from those two. Its socket
      never blocks (send timeout 0): a heartbeat must not wait behind
      anything, and results queue in libzmq's pipe across a reconnect (in
      our outbox while there is no pipe: see s_link_send);
    - the worker actor, started by imgp_resizer_new, starts the link, reads
      JOBs from its end of the pipe, one at a time, and runs libvips on
      them. It times its jobs and the waits between them for the stop line,
      and gives freed memory back after S_TRIM_IDLE_MS without a job.

    Stopping: imgp_resizer_destroy raises the stop flag, then sends the
    worker $TERM. The link reads the flag to say slots 0 and credit 0 from
    then on, to drop any further JOB, and never to make its socket again;
    the worker sees $TERM once its job is done. The link ends on its own
    $TERM only, which the worker sends (zactor_destroy) after its last
    result, so that result goes out first, then a HEARTBEAT with slots 0.
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
#include <time.h>
#include <unistd.h>

#include "imgp_curve.h"
#include "imgp_id.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_thumb.h"

#define S_SLOTS 1                   //  jobs run at once by one resizer
#define S_CAPACITY (S_SLOTS + 1)    //  jobs held at most: one ready beyond those running
#define S_TRIM_IDLE_MS 2000         //  idle this long after a job: give freed memory back
#define S_ANNOUNCED_MS 1000         //  wait for a STARTED job still in the pipe's send
#define S_LINGER_MS 1000            //  time to flush the last result on exit
#define S_ZMTP_IVL_MS 1000          //  ZMTP heartbeat interval on the link
#define S_ZMTP_TIMEOUT_MS 3000      //  a silent broker connection is dropped after this
#define S_REVIVE_MS 1000            //  a drop libzmq does not retry within this is for good
#define S_REFUSED_LOG_MS 60000      //  a refused handshake is logged once a minute
#define S_STALL_BEATS 3             //  heartbeats missed before we say READY again...
#define S_STALL_MIN_MS 1000         //  ...and never for a stall shorter than this
#define S_OUTBOX_MAX (2 * S_CAPACITY) //  a STARTED and a result for each job held

struct _imgp_resizer_t {
    char *jobs;                     //  the broker's jobs endpoint
    char name [IMGP_WORKER_MAX + 1];//  worker name on the wire, also our routing id
    char host [IMGP_HOST_MAX + 1];  //  our host name for READY, "" when unknown
    int max_msg_size;               //  largest message accepted from the broker
    int heartbeat_ms;               //  heartbeat interval
    int64_t max_result_size;        //  largest thumbnail sent (the broker's limit)
    imgp_curve_t *curve;            //  CURVE client keys, NULL for a plain link
    atomic_bool stop;               //  set by imgp_resizer_destroy: take no more jobs
    atomic_bool announced;          //  the link said STARTED for the job at the pipe's head
    atomic_llong jobs_done;         //  results made (DONE or FAILED)
    zactor_t *worker;               //  the worker actor, serving from new to destroy
};

static bool
s_stopping (imgp_resizer_t *self)
{
    return atomic_load (&self->stop);
}

//  Between our two threads a message moves as a pointer (czmq's "p"
//  picture), not through the codec: both ends are this file, the codec
//  already checked a JOB when it came off the wire and checks each result
//  when it goes out, and encoding and decoding twice more per hop was the
//  largest part of a --dry-run job's CPU (jansson ~20% in perf). The
//  receiver owns what it gets. Destroys *msg_p either way, like
//  imgp_msg_send; returns 0 or -1.
static int
s_pipe_send (zsock_t *pipe, imgp_msg_t **msg_p)
{
    if (zsock_send (pipe, "p", *msg_p) == 0) {
        *msg_p = NULL;
        return 0;
    }
    imgp_msg_destroy (msg_p);
    return -1;
}

//  The next message on the pipe (ours), or NULL when interrupted.
static imgp_msg_t *
s_pipe_recv (zsock_t *pipe)
{
    void *msg = NULL;
    return zsock_recv (pipe, "p", &msg) == 0 ? (imgp_msg_t *) msg : NULL;
}

//  Destroys what waits in the pipe, at exit: pointers are not freed by
//  closing the socket.
static void
s_pipe_drain (zsock_t *pipe)
{
    while (pipe && (zsock_events (pipe) & ZMQ_POLLIN)) {
        imgp_msg_t *msg = s_pipe_recv (pipe);
        imgp_msg_destroy (&msg);
    }
}


//  --------------------------------------------------------------------------
//  The link actor: the one connection to the broker

//  The link's state, all in its own thread.
typedef struct {
    imgp_resizer_t *resizer;        //  configuration and stop flag (read only)
    zsock_t *command;               //  actor pipe: $TERM
    zsock_t *work;                  //  our end of the job pipe to the worker (owned)
    zsock_t *dealer;                //  to the broker's jobs ROUTER; NULL between sockets
    zsock_t *events;                //  libzmq's monitor of dealer
    bool connected;                 //  a connection is up (monitor said CONNECTED)
    int64_t revive_at;              //  when to make the dealer again, 0 = no need
    int64_t next_beat;              //  when the next HEARTBEAT is due
    int64_t last_tick;              //  when the timers last ran, to see a stall
    int held;                       //  JOBs passed to the worker and not answered yet
    int running;                    //  JOBs STARTED and not answered yet
    char early [IMGP_ID_LEN + 1];   //  job we said STARTED for, before the worker did
    zlist_t *outbox;                //  results made while no connection could take them
    bool refused;                   //  the broker refused this dealer's handshake
    int64_t refused_at;             //  when a refused handshake was last logged
    int refused_since;              //  refusals not logged since then
} s_link_t;

//  What the link actor needs from the worker; rc is set before the actor signals.
typedef struct {
    imgp_resizer_t *resizer;        //  configuration
    zsock_t *work;                  //  the link's end of the job pipe, handed over
    int rc;                         //  0 when the link is up, -1 when not (logged)
} s_link_args_t;

//  Send on the dealer. A dealer whose connection libzmq dropped for good
//  has no pipe and takes nothing until we make it again (S_REVIVE_MS):
//  a STARTED, DONE or FAILED made meanwhile waits in the outbox, and goes
//  out at the next connect, before READY (whose credit counts it given
//  back). A HEARTBEAT then is stale anyway.
static void
s_link_send (s_link_t *self, imgp_msg_t **msg_p)
{
    bool result = (*msg_p)->type != IMGP_MSG_HEARTBEAT && (*msg_p)->type != IMGP_MSG_READY;
    bool room = self->dealer && (zsock_events (self->dealer) & ZMQ_POLLOUT);
    if (result && !room && zlist_size (self->outbox) < S_OUTBOX_MAX) {
        zlist_append (self->outbox, *msg_p);
        *msg_p = NULL;
        return;
    }
    char id [IMGP_ID_LEN + 1];
    memcpy (id, (*msg_p)->id, sizeof id);
    const char *type = imgp_msg_type_name ((*msg_p)->type);
    if (!self->dealer || imgp_msg_send (msg_p, self->dealer) != 0) {
        imgp_error ("job=%s event=send_failed type=%s reason=\"%s\"", *id ? id : "-", type,
                    self->dealer ? zmq_strerror (zmq_errno ()) : "no connection");
        imgp_msg_destroy (msg_p);
    }
}

//  Free working slots now, as HEARTBEAT says them.
static int
s_link_free_slots (s_link_t *self)
{
    if (s_stopping (self->resizer))
        return 0;
    return self->running < S_SLOTS ? S_SLOTS - self->running : 0;
}

static void
s_link_beat (s_link_t *self, int slots)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    snprintf (msg->worker, sizeof msg->worker, "%s", self->resizer->name);
    msg->slots = slots;
    s_link_send (self, &msg);
    imgp_debug ("event=heartbeat worker=%s slots=%d", self->resizer->name, slots);
}

//  READY on every connect: the broker sets our credit to what we can take
//  now, so a job lost with an old connection is not counted against us.
//  `why` is for the log: "connect" or "stall".
static void
s_link_ready (s_link_t *self, const char *why)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_READY);
    snprintf (msg->worker, sizeof msg->worker, "%s", self->resizer->name);
    snprintf (msg->host, sizeof msg->host, "%s", self->resizer->host);
    msg->slots = S_SLOTS;
    //  held never passes S_CAPACITY: s_link_from_broker drops a JOB beyond it
    msg->credit = s_stopping (self->resizer) ? 0 : S_CAPACITY - self->held;
    imgp_info ("event=credit_offered credit=%d held=%d after=%s", msg->credit, self->held,
               why);
    s_link_send (self, &msg);
}

//  The dealer and its monitor. libzmq drops a connection that brought a
//  message over maxmsgsize (or failed its handshake) and, that being a
//  protocol error, never makes it again; every other drop it retries by
//  itself, keeping what we queued. So a DISCONNECTED not followed by
//  CONNECT_RETRIED within S_REVIVE_MS means the dealer must be made again.
//  The monitor is libzmq's own, read here, not czmq's zmonitor actor:
//  czmq 4.2.1's zmonitor ends by itself on SIGTERM (its exit handshake on
//  the pipe looked like an event), and one started after the signal
//  aborts in zframe_recv(NULL). Returns 0 or -1 (logged).
static int
s_link_open (s_link_t *self)
{
    imgp_resizer_t *resizer = self->resizer;
    self->dealer = zsock_new (ZMQ_DEALER);
    self->events = zsock_new (ZMQ_PAIR);
    if (!self->dealer || !self->events) {
        imgp_error ("event=socket_failed socket=jobs reason=\"%s\"", zmq_strerror (zmq_errno ()));
        return -1;
    }
    void *dealer = zsock_resolve (self->dealer);
    zmq_setsockopt (dealer, ZMQ_ROUTING_ID, resizer->name, strlen (resizer->name));
    zsock_set_heartbeat_ivl (self->dealer, S_ZMTP_IVL_MS);
    zsock_set_heartbeat_timeout (self->dealer, S_ZMTP_TIMEOUT_MS);
    zsock_set_maxmsgsize (self->dealer, resizer->max_msg_size);
    zsock_set_linger (self->dealer, S_LINGER_MS);
    zsock_set_sndtimeo (self->dealer, 0);
    if (imgp_curve_apply (resizer->curve, self->dealer))
        return -1;
    //  A fresh endpoint each time, process-wide: the old one may still be
    //  bound while libzmq reaps the socket we just closed, ours or that of
    //  a resizer destroyed just before us.
    static atomic_uint monitors;
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://imgp-resizer-link-%u",
              atomic_fetch_add (&monitors, 1));
    int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED
               | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (zmq_socket_monitor (dealer, endpoint, events)
    ||  zsock_connect (self->events, "%s", endpoint)) {
        imgp_error ("event=monitor_failed socket=jobs reason=\"%s\"", zmq_strerror (zmq_errno ()));
        return -1;
    }
    if (zsock_connect (self->dealer, "%s", resizer->jobs)) {
        imgp_error ("event=connect_failed endpoint=%s socket=jobs", resizer->jobs);
        return -1;
    }
    self->connected = false;
    self->revive_at = 0;
    return 0;
}

static void
s_link_close (s_link_t *self)
{
    if (self->dealer)
        zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->events);
    zsock_destroy (&self->dealer);
    self->connected = false;
}

//  Make the dealer again; a failure is retried S_REVIVE_MS later.
static void
s_link_revive (s_link_t *self)
{
    //  After a refusal (logged once a minute) this happens every second.
    imgp_log (self->refused ? IMGP_LOG_DEBUG : IMGP_LOG_WARN,
              "event=jobs_reconnect endpoint=%s reason=\"the connection was dropped for "
              "good (a message over max-upload-bytes, or a refused handshake)\"",
              self->resizer->jobs);
    self->refused = false;
    s_link_close (self);
    if (s_link_open (self)) {
        s_link_close (self);
        self->revive_at = zclock_mono () + S_REVIVE_MS;
    }
}

//  A handshake the broker refused (unknown key, or keys on one side only):
//  logged once a minute with how many were not, as we retry every second.
static void
s_link_refused (s_link_t *self, int event)
{
    self->refused = true;
    int64_t now = zclock_mono ();
    if (self->refused_at && now - self->refused_at < S_REFUSED_LOG_MS) {
        self->refused_since++;
        return;
    }
    imgp_warn ("event=refused_by_server endpoint=%s reason=%s not_logged=%d",
               self->resizer->jobs,
               event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "unknown_key" : "bad_handshake",
               self->refused_since);
    self->refused_at = now;
    self->refused_since = 0;
}

//  One monitor event: the number is the first 2 bytes of its first frame
//  (libzmq's own, in process, but still checked for size).
static void
s_link_event (s_link_t *self)
{
    zmsg_t *msg = zmsg_recv (self->events);
    zframe_t *first = msg ? zmsg_first (msg) : NULL;
    uint16_t event = 0;
    if (first && zframe_size (first) >= sizeof event)
        memcpy (&event, zframe_data (first), sizeof event);
    zmsg_destroy (&msg);
    if (event == ZMQ_EVENT_CONNECTED) {
        self->connected = true;
        self->revive_at = 0;
        //  Each once: a message the dealer has no room for yet goes back
        //  into the outbox, and popping it again would spin here.
        for (size_t queued = zlist_size (self->outbox); queued > 0; queued--) {
            imgp_msg_t *msg = zlist_pop (self->outbox);
            s_link_send (self, &msg);
        }
        imgp_info ("event=connected endpoint=%s", self->resizer->jobs);
        s_link_ready (self, "connect");
    }
    else
    if (event == ZMQ_EVENT_DISCONNECTED) {
        self->connected = false;
        self->revive_at = s_stopping (self->resizer) ? 0 : zclock_mono () + S_REVIVE_MS;
        imgp_log (self->refused ? IMGP_LOG_DEBUG : IMGP_LOG_WARN,
                  "event=jobs_disconnected endpoint=%s", self->resizer->jobs);
    }
    else
    if (event == ZMQ_EVENT_CONNECT_RETRIED)
        self->revive_at = 0;            //  libzmq is on it, and keeps what we queued
    else
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        s_link_refused (self, event);
}

//  A STARTED, DONE or FAILED from the worker, out to the broker.
static void
s_link_from_worker (s_link_t *self)
{
    imgp_msg_t *msg = s_pipe_recv (self->work);
    if (!msg)
        return;
    if (msg->type == IMGP_MSG_STARTED && streq (msg->id, self->early)) {
        self->early [0] = '\0';         //  said already, by s_link_start_early
        imgp_msg_destroy (&msg);
        return;
    }
    if (msg->type == IMGP_MSG_STARTED)
        self->running++;
    else {
        if (self->running > 0)
            self->running--;
        if (self->held > 0)
            self->held--;
        if (streq (msg->id, self->early))
            self->early [0] = '\0';     //  the worker knew, and said no STARTED
    }
    s_link_send (self, &msg);
}

//  STARTED for a JOB just passed to an idle worker, said here rather than
//  after the worker woke up: the broker's wait for a job's start is the
//  fairness it measures, and on a busy machine every thread of ours that
//  must wake (at nice 10, SCHED_BATCH: no wakeup preemption) adds to it.
//  The worker, told by the announced flag, sends none of its own for that
//  job (one it sends anyway, after a stop, is dropped here).
static void
s_link_start_early (s_link_t *self, const char *id, int attempts)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_STARTED);
    memcpy (msg->id, id, sizeof msg->id);
    snprintf (msg->worker, sizeof msg->worker, "%s", self->resizer->name);
    msg->attempts = attempts;
    memcpy (self->early, id, sizeof self->early);
    self->running++;
    s_link_send (self, &msg);
}

//  A JOB from the broker, on to the worker: at most S_CAPACITY wait there,
//  whatever the broker does, so our memory is bounded by our credit.
static void
s_link_from_broker (s_link_t *self)
{
    imgp_msg_t *msg = imgp_msg_recv (self->dealer);
    if (!msg)
        return;                         //  malformed (logged by the codec)
    const char *reason = NULL;
    if (msg->type != IMGP_MSG_JOB)
        reason = "not a JOB";
    else
    if (s_stopping (self->resizer))
        reason = "stopping";
    else
    if (self->held >= S_CAPACITY)
        reason = "over our credit";
    if (reason) {
        imgp_warn ("job=%s event=dropped type=%s held=%d reason=\"%s\"",
                   msg->id [0] ? msg->id : "-", imgp_msg_type_name (msg->type), self->held,
                   reason);
        imgp_msg_destroy (&msg);
        return;
    }
    char id [IMGP_ID_LEN + 1];
    memcpy (id, msg->id, sizeof id);
    int attempts = msg->attempts;
    bool idle = self->held == 0;        //  the worker waits on the pipe
    //  Said before the send, so the worker never sees the job without it:
    //  a worker told to stop still does the job we say STARTED for.
    if (idle)
        atomic_store (&self->resizer->announced, true);
    if (s_pipe_send (self->work, &msg) == 0) {
        self->held++;
        if (idle)
            s_link_start_early (self, id, attempts);
    }
    else {
        if (idle)
            atomic_store (&self->resizer->announced, false);
        imgp_error ("job=%s event=dropped reason=\"the worker pipe refused it: %s\"", id,
                    zmq_strerror (zmq_errno ()));
    }
}

//  A link that could not run for S_STALL_BEATS heartbeats and at least
//  S_STALL_MIN_MS (SIGSTOP, a starved machine) may have been counted lost
//  by the broker, which keeps
//  no credit for a peer it lost; its TCP connection may well be up still
//  (the broker's ZMTP timeout comes later), so no reconnect would say
//  READY. We say it now. Should the broker not have counted us lost, it
//  may have a JOB on the way that this READY does not count: we then hold
//  one beyond capacity and drop it (logged), and the broker's dispatch
//  timeout sends it again.
static void
s_link_check_stall (s_link_t *self, int64_t now)
{
    int64_t gap = now - self->last_tick;
    self->last_tick = now;
    int64_t stall = (int64_t) S_STALL_BEATS * self->resizer->heartbeat_ms;
    if (!self->connected || gap <= stall || gap <= S_STALL_MIN_MS)
        return;
    imgp_warn ("event=stalled ms=%lld action=ready", (long long) gap);
    s_link_ready (self, "stall");
}

//  Heartbeat due, dealer to make again. Returns ms until the next timer.
static long
s_link_timers (s_link_t *self)
{
    int64_t now = zclock_mono ();
    s_link_check_stall (self, now);
    if (now >= self->next_beat) {
        if (self->connected)            //  none queued for a broker that is away
            s_link_beat (self, s_link_free_slots (self));
        self->next_beat = now + self->resizer->heartbeat_ms;
    }
    if (self->revive_at && now >= self->revive_at && !s_stopping (self->resizer))
        s_link_revive (self);
    int64_t next = self->next_beat;
    if (self->revive_at && self->revive_at < next)
        next = self->revive_at;
    return next > now ? (long) (next - now) : 0;
}

//  $TERM (from zactor_destroy) ends the link; nothing else is sent to it.
static bool
s_link_command (s_link_t *self)
{
    char *command = zstr_recv (self->command);
    bool term = !command || streq (command, "$TERM");
    zstr_free (&command);
    return term;
}

//  The results the worker sent before $TERM go out first, then a last word:
//  slots 0, take nothing more.
static void
s_link_finish (s_link_t *self)
{
    while (zsock_events (self->work) & ZMQ_POLLIN)
        s_link_from_worker (self);
    if (self->dealer && self->connected)    //  none for a broker that is away
        s_link_beat (self, 0);
}

static void
s_link_loop (s_link_t *self)
{
    self->last_tick = zclock_mono ();
    self->next_beat = self->last_tick + self->resizer->heartbeat_ms;
    while (true) {
        long timeout = s_link_timers (self);
        zmq_pollitem_t items [4] = {
            { zsock_resolve (self->command), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->work), 0, ZMQ_POLLIN, 0 },
        };
        int count = 2;
        if (self->dealer) {
            items [count++] = (zmq_pollitem_t) { zsock_resolve (self->events), 0, ZMQ_POLLIN, 0 };
            items [count++] = (zmq_pollitem_t) { zsock_resolve (self->dealer), 0, ZMQ_POLLIN, 0 };
        }
        if (zmq_poll (items, count, timeout) == -1) {
            if (errno == EINTR)
                continue;
            imgp_error ("event=poll_failed socket=jobs reason=\"%s\"", zmq_strerror (errno));
            break;
        }
        if ((items [0].revents & ZMQ_POLLIN) && s_link_command (self))
            break;
        if (items [1].revents & ZMQ_POLLIN)
            s_link_from_worker (self);
        if (count > 2 && (items [3].revents & ZMQ_POLLIN))
            s_link_from_broker (self);
        if (count > 2 && (items [2].revents & ZMQ_POLLIN))
            s_link_event (self);        //  last: it may make the dealer again
    }
    s_link_finish (self);
}

static void
s_link_actor (zsock_t *pipe, void *argument)
{
    s_link_args_t *args = argument;
    s_link_t self = { .resizer = args->resizer, .command = pipe, .work = args->work,
                      .outbox = zlist_new () };
    args->work = NULL;                  //  ours now
    int rc = self.outbox ? s_link_open (&self) : -1;
    args->rc = rc;
    zsock_signal (pipe, 0);             //  args is not ours to touch after this
    if (rc == 0)
        s_link_loop (&self);
    s_link_close (&self);
    s_pipe_drain (self.work);
    zsock_destroy (&self.work);
    imgp_msg_t *msg;
    while (self.outbox && (msg = zlist_pop (self.outbox))) {
        imgp_warn ("job=%s event=result_lost type=%s reason=\"no connection to the broker at "
                   "exit\"", msg->id, imgp_msg_type_name (msg->type));
        imgp_msg_destroy (&msg);
    }
    zlist_destroy (&self.outbox);
}


//  --------------------------------------------------------------------------
//  One job, in the worker

//  The worker actor's state, all in its own thread (the one libvips runs in).
typedef struct {
    imgp_resizer_t *resizer;        //  configuration, stop flag, job count
    zsock_t *command;               //  actor pipe: $TERM from imgp_resizer_destroy
    zsock_t *pipe;                  //  our end of the job pipe to the link (PAIR)
    zactor_t *link;                 //  the link actor, which owns the broker connection
    int64_t busy_us;                //  time on jobs, from taking one to its result sent
    int64_t waited_us;              //  time idle between jobs, waits that ended with a job
    int64_t idle_since;             //  when the last job ended (µs); 0 before the first
    int64_t trim_at;                //  when to give freed memory back (ms); 0: not due
} s_worker_t;

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

//  To the link, which sends it to the broker.
static void
s_send (s_worker_t *self, imgp_msg_t **msg_p)
{
    char id [IMGP_ID_LEN + 1];
    memcpy (id, (*msg_p)->id, sizeof id);
    const char *type = imgp_msg_type_name ((*msg_p)->type);
    if (s_pipe_send (self->pipe, msg_p) != 0)
        imgp_error ("job=%s event=send_failed type=%s reason=\"%s\"", id, type,
                    zmq_strerror (zmq_errno ()));
}

//  DONE with one result per rendition and their bytes end to end in one
//  frame, handed to libzmq without a copy.
static void
s_send_done (s_worker_t *self, imgp_msg_t *job, imgp_thumb_result_t *thumb, int64_t ms)
{
    imgp_msg_t *msg = s_result_new (self->resizer, job, IMGP_MSG_DONE);
    msg->result_count = thumb->count;
    for (int i = 0; i < thumb->count; i++) {
        const imgp_thumb_output_t *output = &thumb->outputs [i];
        imgp_result_t *result = &msg->results [i];
        *result = (imgp_result_t) { output->width, output->height, output->format,
                                    (int64_t) output->size, ms, output->box, "" };
        memcpy (result->etag, output->etag, sizeof result->etag);
    }
    imgp_msg_set_data (msg, thumb->data, thumb->size, imgp_thumb_free);
    thumb->data = NULL;
    s_send (self, &msg);
}

static void
s_send_failed (s_worker_t *self, imgp_msg_t *job, imgp_thumb_result_t *thumb)
{
    imgp_msg_t *msg = s_result_new (self->resizer, job, IMGP_MSG_FAILED);
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

//  `said`: the link has said STARTED for this job already (it came to us
//  idle), so ours would only be dropped.
static void
s_handle_job (s_worker_t *self, imgp_msg_t **job_p, bool said)
{
    imgp_resizer_t *resizer = self->resizer;
    imgp_msg_t *job = *job_p;
    if (!said) {
        imgp_msg_t *started = s_result_new (resizer, job, IMGP_MSG_STARTED);
        s_send (self, &started);
    }
    imgp_info ("job=%s event=started attempt=%d worker=%s", job->id, job->attempts,
               resizer->name);

    imgp_thumb_set_job (job->id);
    imgp_thumb_result_t thumb = { 0 };
    int64_t start = zclock_mono ();
    int rc = imgp_thumb_make (imgp_msg_data (job), imgp_msg_size (job), &job->opts, &thumb);
    int64_t ms = zclock_mono () - start;
    imgp_thumb_set_job (NULL);
    if (rc == 0)
        rc = s_check_result_size (resizer, &thumb);

    atomic_fetch_add (&resizer->jobs_done, 1);
    if (rc == 0) {
        imgp_info ("job=%s event=resized ms=%lld in=%dx%d out=%dx%d bytes=%zu format=%s "
                   "renditions=%d animated=%s", job->id, (long long) ms, thumb.in_width,
                   thumb.in_height, thumb.width, thumb.height, thumb.size,
                   imgp_format_name (thumb.format), thumb.count,
                   thumb.animated ? "true" : "false");
        s_send_done (self, job, &thumb, ms);
    }
    else {
        imgp_info ("job=%s event=failed code=%s ms=%lld message=\"%s\"", job->id,
                   imgp_thumb_code_name (thumb.code), (long long) ms, thumb.message);
        s_send_failed (self, job, &thumb);
    }
    imgp_thumb_result_clear (&thumb);
    imgp_msg_destroy (job_p);
}


//  --------------------------------------------------------------------------
//  The worker actor

//  Resident memory of this process in MB, for the log; -1 when unknown.
static long
s_rss_mb (void)
{
    long pages = -1, resident = -1;
    FILE *statm = fopen ("/proc/self/statm", "r");
    if (statm) {
        if (fscanf (statm, "%ld %ld", &pages, &resident) != 2)
            resident = -1;
        fclose (statm);
    }
    return resident < 0 ? -1 : resident * sysconf (_SC_PAGESIZE) / (1024 * 1024);
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

//  The job pipe and the link actor. Returns 0 or -1 (logged).
static int
s_worker_open (s_worker_t *self)
{
    zsock_t *backend = NULL;
    self->pipe = zsys_create_pipe (&backend);
    if (!self->pipe) {
        imgp_error ("event=socket_failed socket=pipe reason=\"%s\"", zmq_strerror (zmq_errno ()));
        return -1;
    }
    s_link_args_t args = { self->resizer, backend, -1 };
    self->link = s_actor_new (s_link_actor, &args);
    zsock_destroy (&args.work);         //  still ours only when the actor never ran
    if (!self->link || args.rc) {
        imgp_error ("event=actor_failed actor=link");
        return -1;
    }
    return 0;
}

//  The link goes last: it sends what the worker queued, then slots 0. A
//  job still in the pipe is dropped with it.
static void
s_worker_close (s_worker_t *self)
{
    zactor_destroy (&self->link);
    s_pipe_drain (self->pipe);
    zsock_destroy (&self->pipe);
}

//  One job from the pipe, timed: a wait counts only when it ended with a
//  job, and only after a first job (the wait for the first is start-up,
//  not idleness), so waited / (busy + waited) is the idle fraction while
//  there was work.
static void
s_worker_job (s_worker_t *self)
{
    imgp_msg_t *job = s_pipe_recv (self->pipe);
    bool said = atomic_exchange (&self->resizer->announced, false);
    if (!job)
        return;
    int64_t start = zclock_usecs ();
    if (self->idle_since)
        self->waited_us += start - self->idle_since;
    s_handle_job (self, &job, said);
    int64_t end = zclock_usecs ();
    self->busy_us += end - start;
    self->idle_since = end;
    self->trim_at = zclock_mono () + S_TRIM_IDLE_MS;
}

//  Idle for S_TRIM_IDLE_MS after a job: what libvips and libjpeg freed
//  goes back to the kernel. While jobs come, glibc keeps it (the trim
//  threshold in imgp_thumb), which is what makes the next decode fast; a
//  resizer left idle after a burst should not keep hundreds of MB it no
//  longer uses. The next job after a trim pays the page faults once.
static void
s_worker_idle (s_worker_t *self)
{
    if (!self->trim_at || zclock_mono () < self->trim_at)
        return;
    self->trim_at = 0;
    long before = s_rss_mb ();
    int64_t start = zclock_usecs ();
    imgp_thumb_trim ();
    imgp_info ("event=trimmed ms=%lld rss_mb=%ld rss_before_mb=%ld",
               (long long) (zclock_usecs () - start) / 1000, s_rss_mb (), before);
}

//  Poll timeout: until the trim is due, or for ever.
static long
s_worker_timeout (s_worker_t *self)
{
    if (!self->trim_at)
        return -1;
    int64_t left = self->trim_at - zclock_mono ();
    return left > 0 ? (long) left : 0;
}

//  Stopping, and a job waits in the pipe (or is on its way) that the link
//  said STARTED for, as it came to us idle: that one is ours to finish, as
//  the broker was told. Any other waiting job is left, to be dropped.
static void
s_worker_finish (s_worker_t *self)
{
    if (!atomic_exchange (&self->resizer->announced, false))
        return;
    zmq_pollitem_t item = { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, S_ANNOUNCED_MS) == 1)
        s_worker_job (self);
}

//  Jobs until $TERM. imgp_resizer_destroy sets the stop flag before it
//  sends $TERM, so a job that is ready when the flag is up is not taken,
//  unless the link said STARTED for it (s_worker_finish).
static void
s_worker_loop (s_worker_t *self)
{
    while (true) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (self->command), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 },
        };
        if (zmq_poll (items, 2, s_worker_timeout (self)) == -1) {
            if (errno == EINTR)
                continue;
            imgp_error ("event=poll_failed socket=pipe reason=\"%s\"", zmq_strerror (errno));
            break;
        }
        if ((items [0].revents & ZMQ_POLLIN) || s_stopping (self->resizer)) {
            s_worker_finish (self);
            break;
        }
        if (items [1].revents & ZMQ_POLLIN)
            s_worker_job (self);
        else
            s_worker_idle (self);
    }
}

//  Waits for $TERM, after a start that failed.
static void
s_worker_wait_term (zsock_t *pipe)
{
    char *command = zstr_recv (pipe);
    zstr_free (&command);
}

static void
s_worker_actor (zsock_t *pipe, void *argument)
{
    s_worker_t self = { .resizer = argument, .command = pipe };
    imgp_resizer_t *resizer = self.resizer;
    zsock_signal (pipe, 0);             //  zactor_new handshake
    int rc = s_worker_open (&self);
    zsock_signal (pipe, rc ? 1 : 0);    //  imgp_resizer_new waits for this one
    if (rc == 0) {
        imgp_info ("event=ready worker=%s jobs=%s", resizer->name, resizer->jobs);
        s_worker_loop (&self);
    }
    s_worker_close (&self);
    imgp_thumb_thread_done ();
    if (rc) {
        s_worker_wait_term (pipe);
        return;
    }
    //  The benchmark reads this line: keep its first fields and their order.
    imgp_info ("event=stopped jobs=%lld busy_ms=%lld waited_ms=%lld worker=%s",
               (long long) atomic_load (&resizer->jobs_done),
               (long long) self.busy_us / 1000, (long long) self.waited_us / 1000,
               resizer->name);
}


//  --------------------------------------------------------------------------
//  The caller's side: construction, the actor's start and stop

//  Our host name, cut to `size` - 1 and every character a worker name may
//  not hold replaced by '_' (READY's host follows the same rule); "" when
//  the system has none.
static void
s_host_name (char *host, size_t size)
{
    char name [256] = "";
    if (gethostname (name, sizeof name - 1) != 0)
        name [0] = '\0';
    snprintf (host, size, "%s", name);
    for (char *c = host; *c; c++) {
        char one [2] = { *c, '\0' };
        if (!imgp_msg_worker_valid (one))
            *c = '_';
    }
}

//  Default name prefix: "<hostname>-<pid>", the host cut to fit.
static void
s_default_prefix (char *prefix, size_t size)
{
    char host [256];
    s_host_name (host, sizeof host);
    if (!*host)
        snprintf (host, sizeof host, "resizer");
    char pid [24];
    snprintf (pid, sizeof pid, "-%ld", (long) getpid ());
    size_t room = size - 1 - strlen (pid);
    snprintf (prefix, size, "%.*s%s", (int) room, host, pid);
}

//  The worker name: the prefix, "-", 8 random hex digits. Returns 0 or -1.
static int
s_make_name (imgp_resizer_t *self, const char *prefix)
{
    char random [IMGP_ID_LEN + 1];
    if (imgp_id_new (random)) {
        imgp_error ("event=config_error message=\"no randomness for the worker name\"");
        return -1;
    }
    snprintf (self->name, sizeof self->name, "%s-%.*s", prefix,
              IMGP_RESIZER_SUFFIX_LEN - 1, random);
    return imgp_msg_worker_valid (self->name) ? 0 : -1;
}

static bool
s_set (const char *option)
{
    return option && *option;
}

//  The configuration a resizer cannot run with, logged. Returns 0 or -1.
static int
s_check_config (const imgp_resizer_config_t *config)
{
    const char *prefix = config->name;
    if (s_set (prefix)
    &&  (strlen (prefix) > IMGP_RESIZER_PREFIX_MAX || !imgp_msg_worker_valid (prefix))) {
        imgp_error ("event=config_error option=name message=\"worker name must be 1..%d printable "
                    "characters without spaces (a random suffix makes it unique)\"",
                    IMGP_RESIZER_PREFIX_MAX);
        return -1;
    }
    if (config->max_upload_bytes > IMGP_UPLOAD_LIMIT_MAX) {
        imgp_error ("event=config_error option=max-upload-bytes limit=%lld",
                    (long long) IMGP_UPLOAD_LIMIT_MAX);
        return -1;
    }
    if (!s_set (config->curve_secret) != !s_set (config->curve_server)) {
        imgp_error ("event=config_error message=\"CURVE needs both --curve-secret (our "
                    "_secret file) and --curve-server (the broker's public certificate)\"");
        return -1;
    }
    return 0;
}

//  Start the worker actor (it starts the link) and wait for its word on
//  the link: 1 when it could not be set up. SIGINT and SIGTERM are
//  blocked meanwhile, for the reason s_actor_new gives. Returns 0 or -1.
static int
s_start (imgp_resizer_t *self)
{
    sigset_t signals, saved;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, &saved);
    self->worker = s_actor_new (s_worker_actor, self);
    int rc = self->worker && zsock_wait (self->worker) == 0 ? 0 : -1;
    pthread_sigmask (SIG_SETMASK, &saved, NULL);
    return rc;
}

imgp_resizer_t *
imgp_resizer_new (const imgp_resizer_config_t *config)
{
    assert (config && config->jobs);
    assert (config->heartbeat_ms > 0 && config->max_upload_bytes > 0);
    if (s_check_config (config))
        return NULL;
    imgp_resizer_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->jobs = strdup (config->jobs);
    char prefix [IMGP_RESIZER_PREFIX_MAX + 1];
    if (config->name && *config->name)
        snprintf (prefix, sizeof prefix, "%s", config->name);
    else
        s_default_prefix (prefix, sizeof prefix);
    if (s_set (config->curve_secret))
        self->curve = imgp_curve_client_new (config->curve_secret, config->curve_server);
    if (!self->jobs || s_make_name (self, prefix)
    ||  (s_set (config->curve_secret) && !self->curve)) {
        imgp_resizer_destroy (&self);
        return NULL;
    }
    self->max_msg_size = imgp_msg_max_size (config->max_upload_bytes);
    self->max_result_size = config->max_upload_bytes;
    self->heartbeat_ms = config->heartbeat_ms;
    s_host_name (self->host, sizeof self->host);
    atomic_init (&self->stop, false);
    atomic_init (&self->announced, false);
    atomic_init (&self->jobs_done, 0);
    if (s_start (self)) {
        imgp_resizer_destroy (&self);
        return NULL;
    }
    return self;
}

void
imgp_resizer_destroy (imgp_resizer_t **self_p)
{
    if (self_p && *self_p) {
        imgp_resizer_t *self = *self_p;
        //  The link says slots 0 and takes no JOB from here on; the
        //  worker ends its job, the link sends the result and a last
        //  HEARTBEAT, and zactor_destroy returns when both threads are done.
        atomic_store (&self->stop, true);
        zactor_destroy (&self->worker);
        free (self->jobs);
        imgp_curve_destroy (&self->curve);
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

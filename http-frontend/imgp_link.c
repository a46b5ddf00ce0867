/*  imgp_link — see imgp_link.h.

    A call, in time:
    - the worker puts its call in the table (a hash on the tag, plus a
      list of every call) and on the send queue, wakes the link thread
      through an eventfd, and waits on its own condition variable until a
      reply, a failure, or its deadline: --broker-timeout-ms, plus the
      transfer time of a SUBMIT's bytes at IMGP_LINK_UPLOAD_RATE, plus the
      wait_ms of a held STATUS or FETCH;
    - the link thread builds the message under the lock (the call lives on
      the worker's stack and may leave the table once the lock is let go),
      sends it without the lock, and notes the outcome by tag;
    - a reply is matched by tag and handed over; one whose call is gone
      (its worker gave up) is dropped;
    - a call whose reply is late is sent again after a slice: a third of
      --broker-timeout-ms plus its transfer time (a held request: plus what
      is left of its wait), or all that is left when less than half a slice
      would remain, so a large upload is sent once and waited for;
    - a send that no connected broker takes is tried again each tick, for
      S_CONNECT_WAIT_MS from its first refusal, then the call fails (having
      sent nothing, unless an earlier try was taken);
    - when a socket reports CONNECTED (libzmq's monitor), every call on it
      still waiting is due at once: a broker restarted under a held wait
      hears it again, with what is left of the wait.
    Timers are checked on a tick of S_TICK_MS by one walk of the list of
    calls, not per message: at most a few thousand calls (one per worker
    thread), walked 40 times a second only while any is waiting.
*/
#include "imgp_link.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "imgp_buf.h"
#include "imgp_curve.h"
#include "imgp_log.h"

#define S_SLICES 3              //  reply waits per call, for small requests
#define S_SLICE_MIN_MS 100      //  shortest reply wait worth a try
#define S_CONNECT_WAIT_MS 250   //  longest wait for a connected broker to take a send
#define S_TICK_MS 25            //  timer granularity while calls are waiting
#define S_BUCKETS 1024          //  tag hash buckets (calls <= worker threads)
#define S_HWM 100000            //  socket high-water marks: calls are bounded by threads
#define S_BATCH 256             //  messages taken from a socket per pass
#define S_QUEUED_UPLOADS 8      //  uploads' worth of bytes libzmq may hold, see s_queued
#define S_QUEUED_MIN (256u << 20)   //  and at least this many
#define S_HEARTBEAT_IVL_MS 1000 //  ZMTP PING to the broker this often
#define S_HEARTBEAT_TIMEOUT_MS 3000 //  no traffic this long: the connection is dropped
#define S_REOPEN_MS 5000        //  a socket the broker refused is made again after this

enum { S_INTAKE, S_STATUS, S_ENDPOINTS };

//  Socket names in log lines, by endpoint.
static const char *s_end_names [S_ENDPOINTS] = { "intake", "status" };

typedef struct s_call_t s_call_t;

//  One request in flight. Lives on its worker's stack; in the table from
//  imgp_link_call's start to its end, and touched by the link thread only
//  under the lock.
struct s_call_t {
    const imgp_link_request_t *request; //  what to send, borrowed from the worker
    int endpoint;               //  S_INTAKE or S_STATUS
    int64_t tag;                //  unique among calls, echoed by the broker
    int64_t start;              //  zclock_mono() at the call's start
    int64_t wait_until;         //  when a held request's wait ends (start for others)
    int64_t slice;              //  reply wait per try, before a held request's wait
    int64_t deadline;           //  when the worker gives up
    int64_t next_try;           //  when the link thread sends it (again); 0 = queued now
    int64_t refused_since;      //  first send of this try no broker took, 0 for none
    bool queued;                //  on the send queue
    bool sent;                  //  a connected broker took it at least once
    bool failed;                //  given up by the link: nothing was sent
    imgp_msg_t *reply;          //  the reply, owned until the worker takes it
    pthread_cond_t wake;        //  the worker sleeps on it
    s_call_t *hash_next;        //  next in its tag bucket
    s_call_t *prev, *next;      //  list of every call
    s_call_t *queue_next;       //  next on the send queue
};

typedef struct {
    char *endpoint;             //  where the socket connects
    int max_msg;                //  largest reply taken (maxmsgsize)
    zsock_t *sock;              //  DEALER
    zsock_t *events;            //  PAIR reading libzmq's monitor of sock
    unsigned opens;             //  sockets made so far, names the monitor endpoint
    int64_t reopen_at;          //  dropped for good: make sock again then; 0 no
    bool handshaken;            //  this sock completed a handshake once
    bool told;                  //  a refusal was logged (by us or imgp_curve)
} s_endpoint_t;

struct _imgp_link_t {
    s_endpoint_t ends [S_ENDPOINTS];    //  intake and status
    imgp_curve_t *curve;        //  CURVE keys for both sockets, borrowed; NULL plain
    size_t queued_max;          //  bytes of SUBMITs libzmq may hold before new ones fail
    int timeout_ms;             //  budget of one call before transfer and wait time
    int wakefd;                 //  eventfd: a call was queued, or stop
    pthread_t thread;           //  the link thread
    bool started;               //  thread was started (join at destroy)
    pthread_mutex_t lock;       //  guards everything below
    bool stopping;              //  destroy has begun: no new calls
    int64_t next_tag;           //  last tag given out
    size_t count;               //  calls in the table
    s_call_t *buckets [S_BUCKETS];  //  calls by tag
    s_call_t *all;              //  list of every call
    s_call_t *queue_head;       //  calls to send now, oldest first
    s_call_t *queue_tail;       //  last on the send queue
};

//  --------------------------------------------------------------------------
//  The table (callers hold the lock)

static s_call_t **
s_bucket (imgp_link_t *self, int64_t tag)
{
    return &self->buckets [(uint64_t) tag % S_BUCKETS];
}

static s_call_t *
s_find (imgp_link_t *self, int64_t tag)
{
    s_call_t *call = *s_bucket (self, tag);
    while (call && call->tag != tag)
        call = call->hash_next;
    return call;
}

static void
s_enqueue (imgp_link_t *self, s_call_t *call)
{
    if (call->queued)
        return;
    call->queued = true;
    call->queue_next = NULL;
    if (self->queue_tail)
        self->queue_tail->queue_next = call;
    else
        self->queue_head = call;
    self->queue_tail = call;
}

static void
s_insert (imgp_link_t *self, s_call_t *call)
{
    call->tag = ++self->next_tag;
    s_call_t **bucket = s_bucket (self, call->tag);
    call->hash_next = *bucket;
    *bucket = call;
    call->prev = NULL;
    call->next = self->all;
    if (self->all)
        self->all->prev = call;
    self->all = call;
    self->count++;
    s_enqueue (self, call);
}

static void
s_dequeue (imgp_link_t *self, s_call_t *call)
{
    if (!call->queued)
        return;
    s_call_t **link = &self->queue_head;
    s_call_t *before = NULL;
    while (*link != call) {
        before = *link;
        link = &(*link)->queue_next;
    }
    *link = call->queue_next;
    if (self->queue_tail == call)
        self->queue_tail = before;
    call->queued = false;
}

static void
s_remove (imgp_link_t *self, s_call_t *call)
{
    s_call_t **link = s_bucket (self, call->tag);
    while (*link != call)
        link = &(*link)->hash_next;
    *link = call->hash_next;
    if (call->prev)
        call->prev->next = call->next;
    else
        self->all = call->next;
    if (call->next)
        call->next->prev = call->prev;
    s_dequeue (self, call);
    self->count--;
}

//  --------------------------------------------------------------------------
//  Timing of one call

static int64_t
s_transfer_ms (const imgp_link_request_t *request)
{
    return (int64_t) (request->size / (IMGP_LINK_UPLOAD_RATE / 1000));
}

static void
s_call_init (imgp_link_t *self, s_call_t *call, const imgp_link_request_t *request)
{
    memset (call, 0, sizeof *call);
    call->request = request;
    call->endpoint = request->type == IMGP_MSG_SUBMIT ? S_INTAKE : S_STATUS;
    call->start = zclock_mono ();
    int64_t transfer = s_transfer_ms (request);
    call->slice = self->timeout_ms / S_SLICES + transfer;
    if (call->slice < S_SLICE_MIN_MS)
        call->slice = S_SLICE_MIN_MS;
    call->wait_until = call->start + request->wait_ms;
    call->deadline = call->start + self->timeout_ms + transfer + request->wait_ms;
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&call->wake, &attr);
    pthread_condattr_destroy (&attr);
}

//  When to send a call again after a try now: after what is left of its
//  wait and a slice, or at the deadline when less than half a slice would
//  remain after that (too short a try to be worth a resend).
static int64_t
s_next_try (s_call_t *call, int64_t now)
{
    int64_t wait = call->wait_until > now ? call->wait_until - now : 0;
    int64_t after = now + wait + call->slice;
    return call->deadline - after < call->slice / 2 ? call->deadline : after;
}

//  --------------------------------------------------------------------------
//  Upload bytes held by libzmq
//
//  A SUBMIT's bytes stay in libzmq until they are written to the broker,
//  also after its worker gave up. A broker that stops reading (SIGSTOP, a
//  hung host) keeps its TCP connection, and while a large message is being
//  written libzmq sends no heartbeat, so nothing drops it: every upload
//  after that would stay queued (seen: 21 -> 218 MB over 24 uploads of
//  8 MB). So the bytes handed to libzmq are counted, released by the free
//  function libzmq calls, and a SUBMIT that would go over the link's cap
//  waits for room, tick by tick, within its budget: backpressure from a
//  slow broker (a burst of 500 uploads of 1.2 MB is 590 MB at once), a
//  503 from a stopped one, memory bounded either way. One counter per process
//  (libzmq's free function gets no context of ours): a process has one
//  link outside the tests.

static atomic_size_t s_queued;

static void
s_queued_release (void *buf, void *hint)
{
    atomic_fetch_sub (&s_queued, imgp_buf_size (buf));
    imgp_buf_unref (buf, hint);
}

//  --------------------------------------------------------------------------
//  The link thread

//  The message for a call's next try (lock held): a fresh message each
//  time, whose image bytes are one more reference to the worker's buffer.
static imgp_msg_t *
s_message (s_call_t *call, int64_t now)
{
    const imgp_link_request_t *request = call->request;
    imgp_msg_t *msg = imgp_msg_new (request->type);
    snprintf (msg->id, sizeof msg->id, "%s", request->id ? request->id : "");
    msg->tag = call->tag;
    if (request->opts)
        msg->opts = *request->opts;
    msg->box = request->box;
    msg->accept_count = request->accept_count;
    memcpy (msg->accept, request->accept, sizeof msg->accept);
    if (request->owner)
        snprintf (msg->owner, sizeof msg->owner, "%s", request->owner);
    if (request->wait_ms > 0 && call->wait_until > now)
        msg->wait_ms = (int) (call->wait_until - now);
    if (request->data) {
        atomic_fetch_add (&s_queued, imgp_buf_size (request->data));
        imgp_msg_set_data (msg, imgp_buf_ref (request->data), request->size, s_queued_release);
    }
    return msg;
}

//  Note the outcome of a send (lock held); the call may be gone.
static void
s_sent (imgp_link_t *self, int64_t tag, bool ok, int64_t now)
{
    s_call_t *call = s_find (self, tag);
    if (!call)
        return;
    if (ok) {
        call->sent = true;
        call->refused_since = 0;
        call->next_try = s_next_try (call, now);
        return;
    }
    //  Counted from this try's first refusal, not the call's start: a
    //  socket reports CONNECTED a moment before it takes messages, and a
    //  held request sent again then must not fail for its age.
    if (!call->refused_since)
        call->refused_since = now;
    if (now - call->refused_since >= S_CONNECT_WAIT_MS || now >= call->deadline) {
        call->failed = true;    //  no broker took it: answer now, not at the deadline
        pthread_cond_signal (&call->wake);
    }
    else
        call->next_try = now + S_TICK_MS;
}

//  True when libzmq may take the call's upload bytes now (lock held).
static bool
s_room (imgp_link_t *self, s_call_t *call)
{
    const imgp_link_request_t *request = call->request;
    return !request->data
        || atomic_load (&s_queued) + imgp_buf_size (request->data) <= self->queued_max;
}

//  Send every queued call. Messages are built under the lock, sent
//  without it, and their outcomes noted under it again.
static void
s_send_queued (imgp_link_t *self)
{
    imgp_msg_t *msgs [S_BATCH];
    int ends [S_BATCH];
    int64_t tags [S_BATCH];
    size_t n;
    do {
        int64_t now = zclock_mono ();
        pthread_mutex_lock (&self->lock);
        for (n = 0; n < S_BATCH && self->queue_head; ) {
            s_call_t *call = self->queue_head;
            s_dequeue (self, call);
            if (!s_room (self, call)) {
                call->next_try = now + S_TICK_MS;   //  no room: try again next tick
                continue;
            }
            msgs [n] = s_message (call, now);
            ends [n] = call->endpoint;
            tags [n++] = call->tag;
        }
        pthread_mutex_unlock (&self->lock);
        bool ok [S_BATCH];
        for (size_t i = 0; i < n; i++) {
            zsock_t *sock = self->ends [ends [i]].sock;     //  none while made again
            ok [i] = sock && imgp_msg_send (&msgs [i], sock) == 0;
            imgp_msg_destroy (&msgs [i]);
        }
        now = zclock_mono ();
        pthread_mutex_lock (&self->lock);
        for (size_t i = 0; i < n; i++)
            s_sent (self, tags [i], ok [i], now);
        pthread_mutex_unlock (&self->lock);
    } while (n == S_BATCH);
}

//  Queue every call whose next try is due, or, with `endpoint` >= 0, every
//  call on that endpoint that was sent and still waits (it reconnected).
static void
s_queue_due (imgp_link_t *self, int endpoint)
{
    int64_t now = zclock_mono ();
    pthread_mutex_lock (&self->lock);
    for (s_call_t *call = self->all; call; call = call->next) {
        if (call->reply || call->failed || call->queued)
            continue;
        bool due = endpoint < 0 ? call->next_try <= now
                                : call->endpoint == endpoint && call->sent;
        if (due)
            s_enqueue (self, call);
    }
    pthread_mutex_unlock (&self->lock);
}

//  A reply belongs to its call when it names the same job (PONG and some
//  ERRORs name none).
static void
s_deliver (imgp_link_t *self, imgp_msg_t *reply)
{
    pthread_mutex_lock (&self->lock);
    s_call_t *call = reply->tag ? s_find (self, reply->tag) : NULL;
    bool matches = call && !call->reply
                && (reply->id [0] == '\0' || strcmp (reply->id, call->request->id) == 0);
    if (matches) {
        call->reply = reply;
        reply = NULL;
        pthread_cond_signal (&call->wake);
    }
    pthread_mutex_unlock (&self->lock);
    if (reply)                  //  its worker gave up, or a reply to nothing we sent
        imgp_debug ("job=%s event=broker_reply_dropped tag=%lld type=%s",
                    reply->id [0] ? reply->id : "-", (long long) reply->tag,
                    imgp_msg_type_name (reply->type));
    imgp_msg_destroy (&reply);
}

static void
s_receive (imgp_link_t *self, s_endpoint_t *end)
{
    for (int i = 0; i < S_BATCH && (zsock_events (end->sock) & ZMQ_POLLIN); i++) {
        imgp_msg_t *reply = imgp_msg_recv (end->sock);     //  malformed: logged, NULL
        if (reply)
            s_deliver (self, reply);
    }
}

//  An event of a socket's monitor. libzmq retries a dropped connection by
//  itself (CONNECT_RETRIED follows the DISCONNECTED), except one that
//  failed its handshake: the broker refused our keys, or we came without
//  any. The failure itself is not always reported (a TCP reset can beat
//  the greeting), so a DISCONNECTED that no retry follows within
//  S_REOPEN_MS is the rule: the socket is then made again, and a key the
//  broker allows later is taken without a restart of ours. CONNECTED
//  (a broker, maybe restarted, is there) makes every call on it due now.
static void
s_monitor_event (imgp_link_t *self, int endpoint)
{
    s_endpoint_t *end = &self->ends [endpoint];
    zmsg_t *msg = zmsg_recv (end->events);
    zframe_t *head = msg ? zmsg_first (msg) : NULL;
    uint16_t event = 0;
    uint32_t value = 0;
    if (head && zframe_size (head) == 6) {
        memcpy (&event, zframe_data (head), 2);
        memcpy (&value, zframe_data (head) + 2, 4);
    }
    zmsg_destroy (&msg);
    if (imgp_curve_event (self->curve, s_end_names [endpoint], event, value))
        end->told = true;           //  logged, once a minute
    else
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        end->handshaken = true;
    else
    if (event == ZMQ_EVENT_DISCONNECTED && !end->reopen_at)
        end->reopen_at = zclock_mono () + S_REOPEN_MS;
    else
    if (event == ZMQ_EVENT_CONNECT_RETRIED)
        end->reopen_at = 0;         //  libzmq is on it
    else
    if (event == ZMQ_EVENT_CONNECTED) {
        end->reopen_at = 0;
        imgp_info ("event=broker_connected endpoint=%s", end->endpoint);
        s_queue_due (self, endpoint);
    }
}

static int s_endpoint_connect (imgp_link_t *self, s_endpoint_t *end);
static void s_endpoint_disconnect (s_endpoint_t *end);

//  A socket libzmq gave up on is made again. One that never got through a
//  handshake was refused: said once, unless imgp_curve said it already.
static void
s_reopen (imgp_link_t *self, s_endpoint_t *end, int64_t now)
{
    if (!end->handshaken && !end->told)
        imgp_warn ("event=refused_by_server socket=%s endpoint=%s note=\"the broker ends our "
                   "connections before their handshake: it wants CURVE keys, or others than "
                   "ours (--curve-secret, --curve-server)\"", s_end_names [end - self->ends],
                   end->endpoint);
    end->told = end->told || !end->handshaken;
    imgp_debug ("event=broker_reconnect endpoint=%s reason=dropped_for_good", end->endpoint);
    s_endpoint_disconnect (end);
    end->reopen_at = 0;
    end->handshaken = false;
    if (s_endpoint_connect (self, end)) {      //  logged; try again later
        s_endpoint_disconnect (end);
        end->reopen_at = now + S_REOPEN_MS;
    }
}

static bool
s_waiting (imgp_link_t *self)
{
    pthread_mutex_lock (&self->lock);
    bool any = self->count > 0;
    pthread_mutex_unlock (&self->lock);
    return any;
}

static bool
s_stopping (imgp_link_t *self)
{
    pthread_mutex_lock (&self->lock);
    bool stopping = self->stopping;
    pthread_mutex_unlock (&self->lock);
    return stopping;
}

//  Make the sockets refused by the broker again, when their time has come.
//  Returns the milliseconds until the next one is due, -1 for none.
static long
s_reopen_due (imgp_link_t *self)
{
    long next = -1;
    int64_t now = zclock_mono ();
    for (int i = S_INTAKE; i < S_ENDPOINTS; i++) {
        s_endpoint_t *end = &self->ends [i];
        if (end->reopen_at && now >= end->reopen_at)
            s_reopen (self, end, now);
        if (end->reopen_at && (next < 0 || end->reopen_at - now < next))
            next = (long) (end->reopen_at - now);
    }
    return next;
}

//  A poll item for `sock`; one that polls nothing when there is none.
static zmq_pollitem_t
s_poll_item (zsock_t *sock)
{
    zmq_pollitem_t item = { NULL, -1, 0, 0 };
    if (sock) {
        item.socket = zsock_resolve (sock);
        item.events = ZMQ_POLLIN;
    }
    return item;
}

static void *
s_run (void *args)
{
    imgp_link_t *self = args;
    int64_t next_tick = zclock_mono () + S_TICK_MS;
    while (!s_stopping (self)) {
        long reopen = s_reopen_due (self);
        //  Built each pass: a refused socket is made again (s_reopen_due),
        //  and is missing while that fails.
        zmq_pollitem_t items [] = {
            { NULL, self->wakefd, ZMQ_POLLIN, 0 },
            s_poll_item (self->ends [S_INTAKE].sock),
            s_poll_item (self->ends [S_STATUS].sock),
            s_poll_item (self->ends [S_INTAKE].events),
            s_poll_item (self->ends [S_STATUS].events),
        };
        int64_t now = zclock_mono ();
        long timeout = s_waiting (self) ? (next_tick > now ? next_tick - now : 0) : -1;
        if (reopen >= 0 && (timeout < 0 || reopen < timeout))
            timeout = reopen;
        if (zmq_poll (items, 5, timeout) == -1 && zmq_errno () != EINTR)
            break;
        if (items [0].revents & ZMQ_POLLIN) {
            uint64_t count;
            if (read (self->wakefd, &count, sizeof count) < 0)
                imgp_debug ("event=link_wake_read_failed");
        }
        for (int i = S_INTAKE; i < S_ENDPOINTS; i++) {
            if (self->ends [i].sock)
                s_receive (self, &self->ends [i]);
            if (items [3 + i].revents & ZMQ_POLLIN)
                s_monitor_event (self, i);
        }
        if (zclock_mono () >= next_tick) {
            s_queue_due (self, -1);
            next_tick = zclock_mono () + S_TICK_MS;
        }
        s_send_queued (self);
    }
    return NULL;
}

//  --------------------------------------------------------------------------
//  Life cycle

//  Make the DEALER of `end` (keys from self->curve) and its monitor, and
//  connect. Returns 0, or -1 (logged) with what was made left for
//  s_endpoint_disconnect.
static int
s_endpoint_connect (imgp_link_t *self, s_endpoint_t *end)
{
    end->sock = zsock_new (ZMQ_DEALER);
    end->events = zsock_new (ZMQ_PAIR);
    if (!end->sock || !end->events)
        return -1;
    zsock_set_linger (end->sock, 0);
    zsock_set_immediate (end->sock, 1);
    zsock_set_sndtimeo (end->sock, 0);
    zsock_set_sndhwm (end->sock, S_HWM);
    zsock_set_rcvhwm (end->sock, S_HWM);
    zsock_set_maxmsgsize (end->sock, end->max_msg);
    //  ZMTP heartbeats: a broker that stops (SIGSTOP, a hung host, a cut
    //  without RST) keeps its TCP connection, and every request sent to it
    //  would wait in the pipe, uploads included, holding their memory.
    //  libzmq drops a peer silent this long, and what was queued for it.
    zsock_set_heartbeat_ivl (end->sock, S_HEARTBEAT_IVL_MS);
    zsock_set_heartbeat_timeout (end->sock, S_HEARTBEAT_TIMEOUT_MS);
    if (imgp_curve_apply (self->curve, end->sock))
        return -1;
    //  A fresh monitor endpoint each time: the old one may still be bound
    //  while libzmq reaps a socket made again.
    char monitor [80];
    snprintf (monitor, sizeof monitor, "inproc://imgp-link-%p-%d-%u", (void *) self,
              (int) (end - self->ends), end->opens++);
    int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED
               | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | IMGP_CURVE_EVENTS;
    if (zmq_socket_monitor (zsock_resolve (end->sock), monitor, events)
    ||  zsock_connect (end->events, "%s", monitor)) {
        imgp_error ("event=monitor_failed endpoint=%s reason=\"%s\"", end->endpoint,
                    zmq_strerror (zmq_errno ()));
        return -1;
    }
    if (zsock_connect (end->sock, "%s", end->endpoint)) {
        imgp_error ("event=connect_failed endpoint=%s", end->endpoint);
        return -1;
    }
    return 0;
}

static void
s_endpoint_disconnect (s_endpoint_t *end)
{
    if (end->sock)
        zmq_socket_monitor (zsock_resolve (end->sock), NULL, 0);
    zsock_destroy (&end->events);
    zsock_destroy (&end->sock);
}

static int
s_endpoint_open (imgp_link_t *self, s_endpoint_t *end, const char *endpoint, int max_msg)
{
    end->endpoint = strdup (endpoint);
    end->max_msg = max_msg;
    return end->endpoint ? s_endpoint_connect (self, end) : -1;
}

static void
s_endpoint_close (s_endpoint_t *end)
{
    s_endpoint_disconnect (end);
    free (end->endpoint);
    end->endpoint = NULL;
}

imgp_link_t *
imgp_link_new (const char *intake, const char *status, int timeout_ms, int64_t max_image)
{
    return imgp_link_new_keyed (intake, status, timeout_ms, max_image, NULL);
}

imgp_link_t *
imgp_link_new_keyed (const char *intake, const char *status, int timeout_ms,
                     int64_t max_image, imgp_curve_t *curve)
{
    if (!intake || !status || timeout_ms <= 0
    ||  max_image <= 0 || max_image > IMGP_UPLOAD_LIMIT_MAX)
        return NULL;
    imgp_link_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = timeout_ms;
    self->curve = curve;
    self->queued_max = S_QUEUED_UPLOADS * (size_t) max_image;
    if (self->queued_max < S_QUEUED_MIN)
        self->queued_max = S_QUEUED_MIN;
    pthread_mutex_init (&self->lock, NULL);
    self->wakefd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    //  Intake replies are headers only; status replies carry thumbnails
    //  and the CLUSTER list.
    int64_t status_data = max_image > IMGP_CLUSTER_MAX ? max_image : IMGP_CLUSTER_MAX;
    if (self->wakefd < 0
    ||  s_endpoint_open (self, &self->ends [S_INTAKE], intake, imgp_msg_max_size (0))
    ||  s_endpoint_open (self, &self->ends [S_STATUS], status,
                         imgp_msg_max_size (status_data))
    ||  pthread_create (&self->thread, NULL, s_run, self)) {
        imgp_error ("event=link_failed intake=%s status=%s", intake, status);
        imgp_link_destroy (&self);
        return NULL;
    }
    self->started = true;
    return self;
}

static void
s_wake (imgp_link_t *self)
{
    uint64_t one = 1;
    if (write (self->wakefd, &one, sizeof one) < 0)
        imgp_debug ("event=link_wake_failed");     //  EAGAIN: a wake is pending anyway
}

void
imgp_link_destroy (imgp_link_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_link_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stopping = true;
    for (s_call_t *call = self->all; call; call = call->next)
        pthread_cond_signal (&call->wake);
    pthread_mutex_unlock (&self->lock);
    if (self->started) {
        s_wake (self);
        pthread_join (self->thread, NULL);
    }
    assert (self->count == 0);      //  misuse: a call outlived the server
    for (int i = 0; i < S_ENDPOINTS; i++)
        s_endpoint_close (&self->ends [i]);
    if (self->wakefd >= 0)
        close (self->wakefd);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

static void
s_log_unanswered (imgp_link_t *self, s_call_t *call)
{
    const imgp_link_request_t *request = call->request;
    const char *id = request->id && request->id [0] ? request->id : "-";
    const char *type = imgp_msg_type_name (request->type);
    long long ms = (long long) (zclock_mono () - call->start);
    const char *endpoint = self->ends [call->endpoint].endpoint;
    if (call->sent)
        imgp_warn ("job=%s event=broker_silent type=%s ms=%lld endpoint=%s", id, type, ms,
                   endpoint);
    else
        imgp_warn ("job=%s event=broker_unreachable type=%s ms=%lld endpoint=%s", id, type, ms,
                   endpoint);
}

imgp_msg_t *
imgp_link_call (imgp_link_t *self, const imgp_link_request_t *request, bool *sent)
{
    assert (self && request && request->id);
    assert (request->wait_ms >= 0 && request->wait_ms <= IMGP_WAIT_MAX_MS);
    s_call_t call;
    s_call_init (self, &call, request);
    pthread_mutex_lock (&self->lock);
    if (!self->stopping) {
        s_insert (self, &call);
        pthread_mutex_unlock (&self->lock);
        s_wake (self);
        pthread_mutex_lock (&self->lock);
        struct timespec until = { (time_t) (call.deadline / 1000),
                                  (long) (call.deadline % 1000) * 1000000 };
        while (!call.reply && !call.failed && !self->stopping
           &&  pthread_cond_timedwait (&call.wake, &self->lock, &until) != ETIMEDOUT)
            ;
        s_remove (self, &call);
    }
    pthread_mutex_unlock (&self->lock);
    pthread_cond_destroy (&call.wake);
    if (sent)
        *sent = call.sent;
    if (!call.reply)
        s_log_unanswered (self, &call);
    return call.reply;
}

size_t
imgp_link_pending (imgp_link_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    size_t count = self->count;
    pthread_mutex_unlock (&self->lock);
    return count;
}

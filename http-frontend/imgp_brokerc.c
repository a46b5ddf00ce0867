/*  imgp_brokerc — see imgp_brokerc.h.

    One call, in time:
    - send, waiting at most S_CONNECT_WAIT_MS for a connected broker. With
      ZMQ_IMMEDIATE a REQ socket holds a send while it has no finished
      connection; a broker that is down or not yet back gets us no further
      than that, and the call fails at once: the request never left, so no
      job can exist and the thread is free again in a fraction of a second.
      The wait also covers the connect of a socket just reopened (below),
      a few ms on a LAN.
    - wait for the reply for one slice: a third of --broker-timeout-ms plus
      the transfer time of the request's bytes at IMGP_BROKERC_UPLOAD_RATE.
      On silence, Lazy Pirate: close, reopen, send again, while the budget
      (--broker-timeout-ms plus the transfer time) lasts. A try that would
      leave less than half a slice behind takes the rest of the budget
      instead, so a large upload is sent once and waited for, not resent
      every few hundred ms (32 MiB: one try of 1.5 + 3.4 s), while a small
      request still gets three tries.
    Each try sends a fresh message whose image bytes are one more reference
    to the same imgp_buf, so a retry of a 32 MiB upload copies nothing.
*/
#include "imgp_brokerc.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgp_buf.h"
#include "imgp_log.h"

#define S_SLICES 3              //  reply waits per call, for small requests
#define S_SLICE_MIN_MS 100      //  shortest reply wait worth a try
#define S_CONNECT_WAIT_MS 250   //  longest wait for a connected broker to take a send

typedef struct {
    char *endpoint;             //  where the socket connects
    zsock_t *sock;              //  REQ socket; NULL until (re)opened
    int max_msg;                //  ZMQ_MAXMSGSIZE for replies
} s_link_t;

struct _imgp_brokerc_t {
    s_link_t intake;            //  SUBMIT
    s_link_t status;            //  STATUS, FETCH, PING
    int timeout_ms;             //  budget of one call before transfer time, milliseconds
};

//  What to send: one of these is turned into a new message for each try.
typedef struct {
    imgp_msg_type_t type;       //  SUBMIT, STATUS, FETCH or PING
    const char *id;             //  job id, or "" for PING
    const imgp_opts_t *opts;    //  SUBMIT only
    uint8_t *data;              //  SUBMIT only: imgp_buf, borrowed
    size_t size;                //  bytes in data
    bool sent;                  //  out: some try handed it to a connected broker
} s_request_t;

static int
s_link_open (s_link_t *link)
{
    link->sock = zsock_new (ZMQ_REQ);
    if (!link->sock)
        return -1;
    zsock_set_linger (link->sock, 0);
    zsock_set_immediate (link->sock, 1);
    zsock_set_maxmsgsize (link->sock, link->max_msg);
    if (zsock_connect (link->sock, "%s", link->endpoint)) {
        imgp_error ("cannot connect to broker endpoint '%s'", link->endpoint);
        zsock_destroy (&link->sock);
        return -1;
    }
    return 0;
}

static int
s_link_init (s_link_t *link, const char *endpoint, int max_msg)
{
    link->endpoint = strdup (endpoint);
    link->max_msg = max_msg;
    if (!link->endpoint)
        return -1;
    s_link_open (link);         //  a failure here is retried per call
    return 0;
}

static void
s_link_close (s_link_t *link)
{
    zsock_destroy (&link->sock);
    free (link->endpoint);
    link->endpoint = NULL;
}

imgp_brokerc_t *
imgp_brokerc_new (const char *intake, const char *status, int timeout_ms, int64_t max_image)
{
    if (!intake || !status || timeout_ms <= 0
    ||  max_image <= 0 || max_image > IMGP_UPLOAD_LIMIT_MAX)
        return NULL;
    imgp_brokerc_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = timeout_ms;
    //  Intake replies are headers only; status replies carry thumbnails.
    if (s_link_init (&self->intake, intake, imgp_msg_max_size (0))
    ||  s_link_init (&self->status, status, imgp_msg_max_size (max_image))) {
        imgp_brokerc_destroy (&self);
        return NULL;
    }
    return self;
}

void
imgp_brokerc_destroy (imgp_brokerc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_brokerc_t *self = *self_p;
    s_link_close (&self->intake);
    s_link_close (&self->status);
    free (self);
    *self_p = NULL;
}

static imgp_msg_t *
s_message (const s_request_t *request)
{
    imgp_msg_t *msg = imgp_msg_new (request->type);
    snprintf (msg->id, sizeof msg->id, "%s", request->id);
    if (request->opts)
        msg->opts = *request->opts;
    if (request->data)
        imgp_msg_set_data (msg, imgp_buf_ref (request->data), request->size,
                           imgp_buf_unref);
    return msg;
}

//  A reply belongs to the request when it names the same job (PONG and
//  some ERRORs name none).
static bool
s_matches (const imgp_msg_t *reply, const s_request_t *request)
{
    return reply->id [0] == '\0' || strcmp (reply->id, request->id) == 0;
}

//  Hand the request to a connected broker, waiting at most `wait_ms` for
//  one. Returns 0 or -1 (not sent).
static int
s_send (s_link_t *link, s_request_t *request, int64_t wait_ms)
{
    zsock_set_sndtimeo (link->sock, (int) wait_ms);
    imgp_msg_t *msg = s_message (request);
    if (imgp_msg_send (&msg, link->sock) == 0) {
        request->sent = true;
        return 0;
    }
    //  EAGAIN: nothing left and the REQ socket may send again; anything
    //  else may have left it mid-message, so it is made anew.
    if (zmq_errno () != EAGAIN)
        zsock_destroy (&link->sock);
    return -1;
}

//  The reply to the request just sent, or NULL after `wait_ms`.
static imgp_msg_t *
s_receive (s_link_t *link, const s_request_t *request, int64_t wait_ms)
{
    zsock_set_rcvtimeo (link->sock, (int) wait_ms);
    imgp_msg_t *reply = imgp_msg_recv (link->sock);
    if (reply && !s_matches (reply, request)) {
        imgp_warn ("job=%s event=broker_reply_mismatch got=%s", request->id, reply->id);
        imgp_msg_destroy (&reply);
    }
    return reply;
}

//  Milliseconds the request's bytes take at the assumed upload rate.
static int64_t
s_transfer_ms (const s_request_t *request)
{
    return (int64_t) (request->size / (IMGP_BROKERC_UPLOAD_RATE / 1000));
}

//  How long to wait for a reply now: a slice, or all that is left when
//  less than half a slice would remain after this one (too short a try to
//  be worth a resend; "half" absorbs the few ms each reconnect costs).
static int64_t
s_reply_wait (int64_t slice, int64_t left)
{
    return left - slice < slice / 2 ? left : slice;
}

static void
s_log_unanswered (s_link_t *link, const s_request_t *request, int tries, int64_t ms)
{
    const char *id = request->id [0] ? request->id : "-";
    const char *type = imgp_msg_type_name (request->type);
    if (request->sent)
        imgp_warn ("job=%s event=broker_silent type=%s tries=%d ms=%lld endpoint=%s", id,
                   type, tries, (long long) ms, link->endpoint);
    else
        imgp_warn ("job=%s event=broker_unreachable type=%s ms=%lld endpoint=%s", id, type,
                   (long long) ms, link->endpoint);
}

static imgp_msg_t *
s_request (imgp_brokerc_t *self, s_link_t *link, s_request_t *request)
{
    int64_t start = zclock_mono ();
    int64_t transfer = s_transfer_ms (request);
    int64_t deadline = start + self->timeout_ms + transfer;
    int64_t slice = self->timeout_ms / S_SLICES + transfer;
    if (slice < S_SLICE_MIN_MS)
        slice = S_SLICE_MIN_MS;
    int tries = 0;
    for (int64_t left = deadline - start; left > 0; left = deadline - zclock_mono ()) {
        if (!link->sock && s_link_open (link))
            break;
        tries++;
        if (s_send (link, request, left < S_CONNECT_WAIT_MS ? left : S_CONNECT_WAIT_MS))
            break;              //  no broker there: answer now, not at the deadline
        int64_t after_send = deadline - zclock_mono ();
        imgp_msg_t *reply =
            s_receive (link, request, after_send > 0 ? s_reply_wait (slice, after_send) : 0);
        if (reply)
            return reply;
        //  Lazy Pirate: a REQ socket that missed its reply can never send
        //  again; close it (linger 0 drops what it held) and open another.
        zsock_destroy (&link->sock);
        imgp_debug ("job=%s event=broker_retry type=%s try=%d endpoint=%s",
                    request->id [0] ? request->id : "-",
                    imgp_msg_type_name (request->type), tries, link->endpoint);
    }
    s_log_unanswered (link, request, tries, zclock_mono () - start);
    return NULL;
}

imgp_msg_t *
imgp_brokerc_submit (imgp_brokerc_t *self, const char *id, const imgp_opts_t *opts,
                     uint8_t **data_p, size_t size, bool *sent)
{
    assert (self && id && opts && data_p && *data_p);
    s_request_t request = { IMGP_MSG_SUBMIT, id, opts, *data_p, size, false };
    imgp_msg_t *reply = s_request (self, &self->intake, &request);
    imgp_buf_destroy (data_p);  //  libzmq may still hold references
    if (sent)
        *sent = request.sent;
    return reply;
}

imgp_msg_t *
imgp_brokerc_status (imgp_brokerc_t *self, const char *id)
{
    assert (self && id);
    s_request_t request = { IMGP_MSG_STATUS, id, NULL, NULL, 0, false };
    return s_request (self, &self->status, &request);
}

imgp_msg_t *
imgp_brokerc_fetch (imgp_brokerc_t *self, const char *id)
{
    assert (self && id);
    s_request_t request = { IMGP_MSG_FETCH, id, NULL, NULL, 0, false };
    return s_request (self, &self->status, &request);
}

imgp_msg_t *
imgp_brokerc_ping (imgp_brokerc_t *self)
{
    assert (self);
    s_request_t request = { IMGP_MSG_PING, "", NULL, NULL, 0, false };
    return s_request (self, &self->status, &request);
}

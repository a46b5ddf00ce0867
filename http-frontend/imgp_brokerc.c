/*  imgp_brokerc — see imgp_brokerc.h.

    The budget of one call is split into S_SLICES waits for a reply, so a
    broker that restarted (and lost the request with its connection) is
    asked again in time. A send may block for the rest of the budget: with
    ZMQ_IMMEDIATE a REQ socket that has no live connection holds the send
    until the broker is there, which is exactly the wait we want, bounded.
    Each try sends a fresh message whose image bytes are one more reference
    to the same imgp_buf, so a retry of a 32 MiB upload copies nothing.
*/
#include "imgp_brokerc.h"

#include <assert.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgp_buf.h"
#include "imgp_log.h"

#define S_SLICES 3              //  reply waits per call
#define S_SLICE_MIN_MS 100      //  shortest reply wait worth a try
#define S_INTAKE_MAX_MSG 65536  //  intake replies are small headers

typedef struct {
    char *endpoint;             //  where the socket connects
    zsock_t *sock;              //  REQ socket; NULL until (re)opened
    int64_t max_msg;            //  ZMQ_MAXMSGSIZE for replies
} s_link_t;

struct _imgp_brokerc_t {
    s_link_t intake;            //  SUBMIT
    s_link_t status;            //  STATUS, FETCH, PING
    int timeout_ms;             //  budget of one call, milliseconds
};

//  What to send: one of these is turned into a new message for each try.
typedef struct {
    imgp_msg_type_t type;       //  SUBMIT, STATUS, FETCH or PING
    const char *id;             //  job id, or "" for PING
    const imgp_opts_t *opts;    //  SUBMIT only
    uint8_t *data;              //  SUBMIT only: imgp_buf, borrowed
    size_t size;                //  bytes in data
} s_request_t;

static int
s_link_open (s_link_t *link)
{
    link->sock = zsock_new (ZMQ_REQ);
    if (!link->sock)
        return -1;
    zsock_set_linger (link->sock, 0);
    zsock_set_immediate (link->sock, 1);
    zsock_set_maxmsgsize (link->sock, (int) link->max_msg);
    if (zsock_connect (link->sock, "%s", link->endpoint)) {
        imgp_error ("cannot connect to broker endpoint '%s'", link->endpoint);
        zsock_destroy (&link->sock);
        return -1;
    }
    return 0;
}

static int
s_link_init (s_link_t *link, const char *endpoint, int64_t max_msg)
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
imgp_brokerc_new (const char *intake, const char *status, int timeout_ms, int64_t max_msg)
{
    if (!intake || !status || timeout_ms <= 0 || max_msg <= 0 || max_msg > INT_MAX)
        return NULL;
    imgp_brokerc_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = timeout_ms;
    if (s_link_init (&self->intake, intake, S_INTAKE_MAX_MSG)
    ||  s_link_init (&self->status, status, max_msg)) {
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

//  One try: send, then wait up to `wait_ms` for the reply.
static imgp_msg_t *
s_try (s_link_t *link, const s_request_t *request, int64_t left_ms, int64_t wait_ms)
{
    zsock_set_sndtimeo (link->sock, (int) left_ms);
    zsock_set_rcvtimeo (link->sock, (int) wait_ms);
    imgp_msg_t *msg = s_message (request);
    if (imgp_msg_send (&msg, link->sock))
        return NULL;
    imgp_msg_t *reply = imgp_msg_recv (link->sock);
    if (reply && !s_matches (reply, request)) {
        imgp_warn ("job=%s event=broker_reply_mismatch got=%s", request->id, reply->id);
        imgp_msg_destroy (&reply);
    }
    return reply;
}

static imgp_msg_t *
s_request (imgp_brokerc_t *self, s_link_t *link, const s_request_t *request)
{
    int64_t start = zclock_mono ();
    int64_t deadline = start + self->timeout_ms;
    int64_t slice = self->timeout_ms / S_SLICES;
    if (slice < S_SLICE_MIN_MS)
        slice = S_SLICE_MIN_MS;
    int tries = 0;
    for (int64_t left = self->timeout_ms; left > 0; left = deadline - zclock_mono ()) {
        if (!link->sock && s_link_open (link))
            break;
        tries++;
        imgp_msg_t *reply = s_try (link, request, left, left < slice ? left : slice);
        if (reply)
            return reply;
        //  Lazy Pirate: a REQ socket that missed its reply can never send
        //  again; close it (linger 0 drops what it held) and open another.
        zsock_destroy (&link->sock);
        imgp_debug ("job=%s event=broker_retry type=%s try=%d endpoint=%s",
                    request->id [0] ? request->id : "-",
                    imgp_msg_type_name (request->type), tries, link->endpoint);
    }
    imgp_warn ("job=%s event=broker_unreachable type=%s tries=%d ms=%lld endpoint=%s",
               request->id [0] ? request->id : "-", imgp_msg_type_name (request->type),
               tries, (long long) (zclock_mono () - start), link->endpoint);
    return NULL;
}

imgp_msg_t *
imgp_brokerc_submit (imgp_brokerc_t *self, const char *id, const imgp_opts_t *opts,
                     uint8_t **data_p, size_t size)
{
    assert (self && id && opts && data_p && *data_p);
    s_request_t request = { IMGP_MSG_SUBMIT, id, opts, *data_p, size };
    imgp_msg_t *reply = s_request (self, &self->intake, &request);
    imgp_buf_destroy (data_p);  //  libzmq may still hold references
    return reply;
}

imgp_msg_t *
imgp_brokerc_status (imgp_brokerc_t *self, const char *id)
{
    assert (self && id);
    s_request_t request = { IMGP_MSG_STATUS, id, NULL, NULL, 0 };
    return s_request (self, &self->status, &request);
}

imgp_msg_t *
imgp_brokerc_fetch (imgp_brokerc_t *self, const char *id)
{
    assert (self && id);
    s_request_t request = { IMGP_MSG_FETCH, id, NULL, NULL, 0 };
    return s_request (self, &self->status, &request);
}

imgp_msg_t *
imgp_brokerc_ping (imgp_brokerc_t *self)
{
    assert (self);
    s_request_t request = { IMGP_MSG_PING, "", NULL, NULL, 0 };
    return s_request (self, &self->status, &request);
}

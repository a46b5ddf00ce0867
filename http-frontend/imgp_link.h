/*  imgp_link — the frontend's one link to the broker, shared by every HTTP
    worker thread: a DEALER socket to the broker's intake (SUBMIT) and one
    to its status service (STATUS, FETCH, CLUSTER, PING), owned by the link's own
    thread.

    Why: the frontend runs thousands of civetweb worker threads, one per
    open connection, so that idle, slow or busy clients cannot shut others
    out. A ZeroMQ socket belongs to one thread, and czmq caps a process at
    1024 sockets: a REQ socket (or two) per worker thread stops near 500
    threads, and a long-poll (`?wait=`) would pin a socket per waiter.
    Here a worker hands its request to the link and sleeps on a condition
    variable; the link thread sends it with a `tag`, and the broker's reply,
    which carries the tag back (PROTOCOL.md 2.1), wakes that worker. Any
    number of requests can be outstanding on the two sockets.

    Reliability replaces Lazy Pirate (PROTOCOL.md 5.3): a DEALER never gets
    stuck, so a request whose reply is late is simply sent again, with the
    same tag; every request is safe to repeat (a SUBMIT names its id). When
    a socket (re)connects — a restarted broker — every request still waiting
    on that endpoint is sent again at once, so a held `wait_ms` request
    survives a broker restart. With ZMQ_IMMEDIATE a send goes only to a
    connected broker; when none takes it within S_CONNECT_WAIT_MS the call
    fails at once, having sent nothing.

    Never: let a worker touch a socket, hold the lock while sending, or
    block a call past its budget.
*/
#ifndef IMGP_LINK_H_INCLUDED
#define IMGP_LINK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_curve.h"
#include "imgp_msg.h"

typedef struct _imgp_link_t imgp_link_t;

//  Upload rate assumed from the frontend to the broker, bytes per second
//  (10 MB/s): a SUBMIT of N bytes gets N / rate more time for its reply.
#define IMGP_LINK_UPLOAD_RATE 10000000

//  One request, as a worker describes it. Borrowed by the link for the
//  length of imgp_link_call.
typedef struct {
    imgp_msg_type_t type;       //  SUBMIT, STATUS, FETCH, CLUSTER or PING
    const char *id;             //  job id, "" for PING
    const imgp_opts_t *opts;    //  SUBMIT only, else NULL
    const char *owner;          //  API key name of the client, NULL or "" for none
    uint8_t *data;              //  SUBMIT only: an imgp_buf; the link takes its own references
    size_t size;                //  bytes in data
    int wait_ms;                //  STATUS, FETCH: let the broker hold the reply until the
                                //  job ends, up to this (0..IMGP_WAIT_MAX_MS)
    imgp_size_t box;            //  FETCH: the size wanted, {0, 0}: the job's first
    int accept_count;           //  FETCH: formats in accept, 0 for none
    imgp_format_t accept [IMGP_ACCEPT_MAX]; //  FETCH: formats the client takes, best first
} imgp_link_request_t;

//  Start the link: its thread and two DEALER sockets that connect to
//  `intake` and `status` and stay connected. `timeout_ms` is the budget of
//  one call (a SUBMIT gets its transfer time more, a wait its wait_ms more);
//  `max_image` is the largest thumbnail a FETCH reply may carry (at most
//  IMGP_UPLOAD_LIMIT_MAX). Returns NULL on bad arguments or when the thread
//  or sockets cannot be made (logged).
imgp_link_t *imgp_link_new (const char *intake, const char *status, int timeout_ms,
                            int64_t max_image);

//  imgp_link_new with CURVE keys on both sockets (imgp_curve_apply; NULL:
//  plain, as imgp_link_new). `curve` is borrowed and must outlive the link.
//  A connection the broker refuses at the handshake (our key not allowed,
//  the broker's key not the one we hold, or keys on one side only) is
//  logged (by `curve`, once a minute, when libzmq says why; else once by
//  the link) and its socket made again 5 s later, so a key allowed later
//  is taken without a restart. libzmq would never retry it.
imgp_link_t *imgp_link_new_keyed (const char *intake, const char *status, int timeout_ms,
                                  int64_t max_image, imgp_curve_t *curve);

//  Stop the thread and close the sockets; calls still waiting get NULL.
//  Safe on NULL and twice. Call it once no thread is inside imgp_link_call.
void imgp_link_destroy (imgp_link_t **self_p);

//  Send a request and wait for its reply, from any thread. Returns the
//  reply (the caller destroys it), or NULL when the broker did not answer
//  within the budget. Then `*sent` (may be NULL) says whether the request
//  reached a connected broker at least once: if so a SUBMIT may still be
//  taken after we gave up, and the caller should tell its client the id.
imgp_msg_t *imgp_link_call (imgp_link_t *self, const imgp_link_request_t *request,
                            bool *sent);

//  Requests waiting for a reply now (for metrics).
size_t imgp_link_pending (imgp_link_t *self);

#endif

/*  imgp_brokerc — the frontend's client of the broker, for one thread: a
    REQ socket to the broker's intake (SUBMIT) and one to its status service
    (STATUS, FETCH, PING).

    Why: a civetweb worker thread must own its ZeroMQ sockets (one socket,
    one thread), and a REQ socket whose reply never comes is stuck for good.
    Each call follows the Lazy Pirate pattern: send, wait a slice of the
    time budget for the reply, and on silence close the socket, open a new
    one and send again, until the budget is spent. A retried SUBMIT is safe
    because the frontend made the id: the broker answers ACCEPTED again for
    an id it already holds.

    Time: the budget of a call is --broker-timeout-ms, plus for a SUBMIT
    the time its bytes take at an assumed IMGP_BROKERC_UPLOAD_RATE, since
    libzmq's send returns before the bytes leave and a 32 MiB upload over a
    slow link may need seconds before the broker can answer. Sockets set
    ZMQ_IMMEDIATE, so a send waits only for a connected broker; when none
    is there within a short wait the call fails at once rather than hold
    the thread for the whole budget. Linger 0, so closing never blocks.

    Never: share an object between threads, or block past the budget.
*/
#ifndef IMGP_BROKERC_H_INCLUDED
#define IMGP_BROKERC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_msg.h"

typedef struct _imgp_brokerc_t imgp_brokerc_t;

//  Upload rate assumed from the frontend to the broker, bytes per second
//  (10 MB/s): a SUBMIT of N bytes gets N / rate more time for its reply.
#define IMGP_BROKERC_UPLOAD_RATE 10000000

//  Create a client for the broker's intake and status endpoints. The
//  sockets connect at once (and again whenever a reply is late).
//  `timeout_ms` is the time one call may take (SUBMITs get more, above);
//  `max_image` is the largest thumbnail a FETCH reply may carry, at most
//  IMGP_UPLOAD_LIMIT_MAX: replies are capped with imgp_msg_max_size().
//  Returns NULL on bad arguments.
imgp_brokerc_t *imgp_brokerc_new (const char *intake, const char *status,
                                  int timeout_ms, int64_t max_image);

//  Destroy, closing the sockets; safe on NULL and twice.
void imgp_brokerc_destroy (imgp_brokerc_t **self_p);

//  SUBMIT a job. Takes the caller's reference to `*data_p` (an imgp_buf,
//  see imgp_buf.h), which is sent without a copy, and sets *data_p to NULL.
//  Returns the reply (ACCEPTED or ERROR; the caller destroys it), or NULL
//  when the broker did not answer in time. Then `*sent` (may be NULL) says
//  whether the SUBMIT went to a connected broker at least once: if so the
//  broker may still take the job after we gave up, and the caller should
//  tell its client the id to check.
imgp_msg_t *imgp_brokerc_submit (imgp_brokerc_t *self, const char *id,
                                 const imgp_opts_t *opts, uint8_t **data_p,
                                 size_t size, bool *sent);

//  STATUS of a job: INFO or ERROR (not_found), or NULL if no answer.
imgp_msg_t *imgp_brokerc_status (imgp_brokerc_t *self, const char *id);

//  FETCH a job: INFO (with the thumbnail as data when done) or ERROR, or
//  NULL if no answer.
imgp_msg_t *imgp_brokerc_fetch (imgp_brokerc_t *self, const char *id);

//  PING the broker's status service: PONG, or NULL if no answer.
imgp_msg_t *imgp_brokerc_ping (imgp_brokerc_t *self);

#endif

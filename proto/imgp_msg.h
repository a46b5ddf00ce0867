/*  imgp_msg — every message imgpipe sends over ZeroMQ, and the one codec
    that turns them into frames and back. proto/PROTOCOL.md is the spec.

    Why: nothing else in the tree builds or parses wire bytes. A message is
    a typed record; frame 0 is a small JSON header that always carries the
    protocol version "v" and the "type"; image bytes, when the type has
    them, travel as frame 1, never inside JSON, and are handed to libzmq
    without copies. Decoding validates every field and returns NULL for
    anything malformed (unknown version or type, bad id, out-of-range
    option, extra frames): bytes from a socket never cause an assert.

    Ownership: imgp_msg_send() consumes the message; a received message is
    the caller's to destroy. On a ROUTER socket, imgp_msg_recv() keeps the
    peer's envelope in the message and imgp_msg_send() of a reply made by
    imgp_msg_reply_new() routes it back to that peer.
*/
#ifndef IMGP_MSG_H_INCLUDED
#define IMGP_MSG_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_id.h"
#include "imgp_opts.h"

#define IMGP_PROTO_VERSION 1
#define IMGP_WORKER_MAX 64          //  resizer name, printable ASCII
#define IMGP_CODE_MAX 32            //  error code, [a-z_]
#define IMGP_MESSAGE_MAX 256        //  error message, UTF-8 text
#define IMGP_HEADER_MAX 8192        //  largest JSON header frame accepted (an INFO
                                    //  with 24 results is up to ~4.2 kB)
#define IMGP_OWNER_MAX 64           //  owner (API key name), [A-Za-z0-9_.-]
#define IMGP_WAIT_MAX_MS 60000      //  longest wait_ms of a STATUS or FETCH
#define IMGP_TAG_MAX 9007199254740991LL //  2^53 - 1: exact in every JSON reader
#define IMGP_STATS_BUCKETS 12       //  bounded buckets of a histogram (+Inf is extra)
#define IMGP_HOST_MAX 64            //  resizer host name, printable ASCII
#define IMGP_ADDRESS_MAX 63         //  a peer's IP address as libzmq gives it
#define IMGP_KEY_MAX 40             //  a CURVE public key in Z85, as zauth gives it
#define IMGP_CREDIT_MAX 1000        //  READY credit
#define IMGP_SLOTS_MAX 1000         //  READY/HEARTBEAT slots
#define IMGP_CLUSTER_MAX (1 << 20)  //  CLUSTER reply's JSON data frame, bytes
#define IMGP_ATTEMPTS_MAX 1000      //  attempts field (JOB..FAILED, INFO); so also
                                    //  the most --max-attempts and a record may say
#define IMGP_RESULT_SIDE_MAX 65535  //  result width and height
#define IMGP_RESULTS_MAX 24         //  renditions of a job: 8 sizes x (asked or
                                    //  family format, webp, avif)
#define IMGP_ACCEPT_MAX 4           //  formats a FETCH's `accept` lists, at most
#define IMGP_ETAG_LEN 40            //  a rendition's ETag: SHA-1, lowercase hex

typedef enum {
    //  frontend (REQ) -> broker intake (ROUTER)
    IMGP_MSG_SUBMIT = 1,    //  id, opts, data = original image
    IMGP_MSG_ACCEPTED,      //  reply: id, state; the job is spooled and known
    //  frontend (REQ) -> broker status (ROUTER)
    IMGP_MSG_STATUS,        //  id
    IMGP_MSG_FETCH,         //  id; like STATUS, but INFO carries the thumbnail
    IMGP_MSG_INFO,          //  reply: id, state, created_at, updated_at, attempts,
                            //  code+message when failed, results when done, worker,
                            //  data = thumbnail (FETCH of a done job only)
    IMGP_MSG_PING,          //  liveness (either REQ socket)
    IMGP_MSG_PONG,          //  reply to PING
    IMGP_MSG_ERROR,         //  reply to anything: code, message
    //  broker ventilator (ROUTER) -> resizer (DEALER)
    IMGP_MSG_JOB,           //  id, attempts (this attempt, 1-based), opts, data = original
    //  resizer (DEALER) -> broker ventilator (ROUTER)
    IMGP_MSG_HEARTBEAT,     //  worker, slots (free working slots now)
    IMGP_MSG_STARTED,       //  id, worker, attempts
    IMGP_MSG_DONE,          //  id, worker, attempts, results (1..8), data = the
                            //  renditions' bytes concatenated in that order
    IMGP_MSG_FAILED,        //  id, worker, attempts, code, message
    IMGP_MSG_READY,         //  worker, slots, credit, host (optional); on every connect
    //  frontend -> broker status (ROUTER), and the reply of the same name
    IMGP_MSG_CLUSTER,       //  request: nothing; reply: stats, data = cluster JSON
} imgp_msg_type_t;

//  Upper bounds (ms) of the histogram buckets in PONG stats; a last bucket
//  holds everything above the highest (Prometheus "+Inf").
extern const int64_t imgp_stats_bounds_ms [IMGP_STATS_BUCKETS];

//  A histogram of milliseconds: counts per bucket (not cumulative) and sum.
typedef struct {
    int64_t counts [IMGP_STATS_BUCKETS + 1];    //  per bucket, last is above every bound
    int64_t sum_ms;                             //  sum of every observation
} imgp_histo_t;

//  The broker's figures, carried by PONG (for /readyz, /metrics, /v1/cluster).
typedef struct {
    int64_t queued;         //  jobs waiting for a resizer
    int64_t queue_max;      //  --max-queue: queued beyond it get queue_full
    int64_t in_flight;      //  jobs dispatched, not yet finished
    int64_t resizers;       //  live resizers (heard within the heartbeat timeout)
    int64_t slots;          //  free job slots the live resizers reported
    int64_t waiters;        //  STATUS/FETCH requests held with wait_ms
    int64_t accepted;       //  jobs accepted since start
    int64_t done;           //  jobs ended done since start
    int64_t failed;         //  jobs ended failed since start
    int64_t retried;        //  dispatches re-queued (resizer lost, timeout) since start
    int64_t spool_full;     //  1: the spool cannot take writes now (uploads get spool_full)
    int64_t spool_bytes;    //  live bytes in the spool
    int64_t spool_max_bytes;//  --max-spool-bytes, 0 none; uploads beyond it get spool_full
    imgp_histo_t job_ms;    //  resize time of done jobs, as the resizers reported
    imgp_histo_t wait_ms;   //  time from accepted to first dispatch
} imgp_stats_t;

//  Add one observation to a histogram.
void imgp_histo_add (imgp_histo_t *histo, int64_t ms);

//  Metadata of one finished rendition (a size in a format).
typedef struct {
    int width;              //  pixels
    int height;             //  pixels
    imgp_format_t format;   //  encoded format, never AUTO
    int64_t bytes;          //  encoded size
    int64_t ms;             //  resize time on the resizer, milliseconds
    imgp_size_t box;        //  the requested box it answers; 0x0 = the job's
                            //  first size (a record from before sizes)
    char etag [IMGP_ETAG_LEN + 1];  //  lowercase hex, "" when unknown
} imgp_result_t;

//  The JSON forms of options and results, as the headers carry them and
//  as the broker's spool stores them, so both write and read one form:
//    opts:   {"width":100,"height":100,"fit":"inside","format":"png",
//             "quality":0,"enlarge":false}
//            then, each only when not its default: "gravity":"north",
//            "background":"#rrggbbaa", "animated":true,
//            "sizes":[[100,100],[400,300]] (when more than one box)
//    result: {"width":100,"height":67,"format":"jpeg","bytes":1234,"ms":18}
//            then "box":[100,100] unless 0x0, "etag":"<hex>" unless ""
//  _to_json returns a new reference (the caller's), NULL on OOM; it does
//  not check ranges (the encoder does). imgp_jw_opts / imgp_jw_result
//  (imgp_jw.h) write the same bytes without a tree, for the codec and the
//  spool. _from_json reads a JSON object
//  (borrowed) and checks every field's type and range, as the decoder
//  does: 0, or -1 with the reason in `error` (may be NULL), e.g.
//  "opts.width 0 is not in 1..4096". _results_from_json reads an array of
//  results (0..max of them) into `results`, their number into `count`.
json_t *imgp_msg_opts_to_json (const imgp_opts_t *opts);
int imgp_msg_opts_from_json (json_t *obj, imgp_opts_t *opts, char *error, size_t size);
json_t *imgp_msg_result_to_json (const imgp_result_t *result);
int imgp_msg_result_from_json (json_t *obj, imgp_result_t *result, char *error,
                               size_t size);
int imgp_msg_results_from_json (json_t *array, imgp_result_t *results, int max, int *count,
                                char *error, size_t size);

//  The message record. Fields a type does not use are zero/empty and are
//  neither encoded nor read for it.
typedef struct {
    imgp_msg_type_t type;
    char id [IMGP_ID_LEN + 1];          //  job id; "" when the type has none
    imgp_opts_t opts;                   //  SUBMIT, JOB
    imgp_state_t state;                 //  ACCEPTED, INFO
    int64_t created_at;                 //  INFO: ms since the Unix epoch
    int64_t updated_at;                 //  INFO: ms since the Unix epoch
    int attempts;                       //  INFO: so far; JOB/STARTED/DONE/FAILED: this one
    int slots;                          //  HEARTBEAT: free, 0..1000; READY: all, 1..1000
    int credit;                         //  READY: JOBs it can take now, 0..1000
    char worker [IMGP_WORKER_MAX + 1];  //  HEARTBEAT..READY; INFO: "" or who did it
    char host [IMGP_HOST_MAX + 1];      //  READY: "" or the resizer's host name
    char code [IMGP_CODE_MAX + 1];      //  ERROR, FAILED, INFO when failed
    char message [IMGP_MESSAGE_MAX + 1];//  ERROR, FAILED, INFO when failed
    int result_count;                   //  DONE: 1..IMGP_SIZES_MAX; INFO: 0..RESULTS_MAX
    imgp_result_t results [IMGP_RESULTS_MAX];   //  DONE, INFO when done
    int64_t tag;                        //  any: 0 or 1..IMGP_TAG_MAX, echoed in replies
    char owner [IMGP_OWNER_MAX + 1];    //  SUBMIT, STATUS, FETCH: "" or the key name
    int wait_ms;                        //  STATUS, FETCH: 0, or hold until finished
    imgp_size_t box;                    //  FETCH: the size wanted; 0x0: the job's first
    int accept_count;                   //  FETCH: formats in accept, 0..IMGP_ACCEPT_MAX
    imgp_format_t accept [IMGP_ACCEPT_MAX]; //  FETCH: formats the client takes, best first
    int rendition;                      //  INFO of a FETCH: index in results of the data
    bool pending;                       //  INFO of a FETCH: a format earlier in its accept
                                        //  is being made (a variant job, PROTOCOL.md 6.4)
    bool has_stats;                     //  PONG: stats present (the broker's always are);
                                        //  CLUSTER: set in a reply, never in a request
    imgp_stats_t stats;                 //  PONG, CLUSTER reply, when has_stats
    //  Private: the image bytes and the ROUTER envelope. Use the functions.
    zframe_t *data_frame;               //  received bytes, owned
    void *data_buf;                     //  outgoing bytes, owned until sent
    size_t data_len;                    //  length of data_buf
    void (*data_free) (void *buf, void *hint);  //  frees data_buf (libzmq style)
    zframe_t *routing_id;               //  ROUTER peer identity, owned
    char routing_text [IMGP_WORKER_MAX + 1];    //  routing id as a name, when asked
    zframe_t *sender;                   //  ROUTER: the received delimiter, owned; its
                                        //  connection properties are the sender's
} imgp_msg_t;

//  Create an empty message of a type. Never NULL (aborts on OOM, like czmq).
imgp_msg_t *imgp_msg_new (imgp_msg_type_t type);

//  Create a reply to `request`: same envelope (routing id), id and tag.
imgp_msg_t *imgp_msg_reply_new (imgp_msg_t *request, imgp_msg_type_t type);

//  Create an ERROR reply to `request` with a code and printf-style message.
imgp_msg_t *imgp_msg_error_new (imgp_msg_t *request, const char *code,
                                const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Destroy; safe on NULL and twice.
void imgp_msg_destroy (imgp_msg_t **self_p);

//  Attach image bytes. Takes ownership of `buf`, which is freed with
//  `free_fn(buf, hint)` (NULL means free()) once libzmq has sent it: no copy.
void imgp_msg_set_data (imgp_msg_t *self, void *buf, size_t len,
                        void (*free_fn) (void *buf, void *hint));

//  Attach a received frame as the image bytes (takes ownership), to forward
//  bytes without copying them.
void imgp_msg_set_frame (imgp_msg_t *self, zframe_t **frame_p);

//  The data bytes (an image, or CLUSTER's JSON; borrowed) and their
//  length; NULL / 0 when none.
const uint8_t *imgp_msg_data (imgp_msg_t *self);
size_t imgp_msg_size (imgp_msg_t *self);

//  Encode into frames (header, then data if any). The data moves into the
//  zmsg without a copy only for frames; a data_buf is copied here, so the
//  send path uses imgp_msg_send instead. For tests and the fuzzer.
//  Returns NULL (logged at ERROR) when a field is invalid for the type:
//  the codec never emits a message its own decoder would drop.
zmsg_t *imgp_msg_encode (imgp_msg_t *self);

//  Decode the frames of one message (without ROUTER envelope). Destroys
//  *zmsg_p. Returns NULL for anything malformed, with the reason in
//  `error` (may be NULL) for logging.
imgp_msg_t *imgp_msg_decode (zmsg_t **zmsg_p, char *error, size_t error_size);

//  Send on any socket (a zsock_t * or a raw libzmq socket via zsock_resolve);
//  on a ROUTER the envelope goes first (on a DEALER the empty delimiter).
//  Destroys *self_p, data included. Returns 0 or -1 (peer gone, timeout,
//  interrupted; EINVAL when the message is invalid or a ROUTER reply has
//  no routing id).
int imgp_msg_send (imgp_msg_t **self_p, void *sock);

//  Receive one whole message. On a ROUTER socket the envelope is kept.
//  Returns NULL when interrupted or on timeout (zmq_errno tells), or when
//  the message was malformed: it is then logged at WARN and dropped, and
//  errno is EPROTO.
imgp_msg_t *imgp_msg_recv (void *sock);

//  The routing id of a message received on a ROUTER, as text (borrowed,
//  valid until the message is destroyed), "" when it has none. Routing ids
//  that are not printable names (libzmq's generated ones) come back as ""
//  so a caller never logs or compares binary bytes as a name.
const char *imgp_msg_routing_name (imgp_msg_t *self);

//  Copy into `dst` the IP address of the peer that sent a message received
//  on a ROUTER (libzmq's "Peer-Address" property; no port), "" when libzmq
//  gives none (ipc, inproc, a message not received). Returns `dst`.
char *imgp_msg_peer_address (imgp_msg_t *self, char *dst, size_t size);

//  Copy into `dst` the CURVE public key (Z85, 40 characters) of the peer
//  that sent a message received on a ROUTER: libzmq's "User-Id" property,
//  which zauth sets to the key it let in. "" when there is none (no keys,
//  ipc, inproc, a message not received), so without keys every sender
//  has the same key, "". Cut to fit `size` (9: the 8-character start, a
//  fingerprint fit for logs; never log a key whole). Returns `dst`. Who
//  a peer is, for the broker's check that a worker name stays with one
//  key.
char *imgp_msg_peer_key (imgp_msg_t *self, char *dst, size_t size);

//  The largest --max-upload-bytes any program accepts (1 GiB), so the
//  socket limit below always fits libzmq's int option.
#define IMGP_UPLOAD_LIMIT_MAX (1LL << 30)

//  ZMQ_MAXMSGSIZE for a socket that receives images of up to `max_image`
//  bytes: the image plus room for the header frame and envelope. Every
//  program sizes its sockets with this one rule, so their limits agree.
int imgp_msg_max_size (int64_t max_image);

//  Name of a type ("SUBMIT"), for logs.
const char *imgp_msg_type_name (imgp_msg_type_t type);

//  True when `name` may travel as an `owner`: 1..IMGP_OWNER_MAX characters
//  of [A-Za-z0-9_.-] (the API key names of the frontend's key file).
bool imgp_msg_owner_valid (const char *name);

//  True when `name` may travel as a `worker`: 1..IMGP_WORKER_MAX characters
//  0x21..0x7E (printable ASCII, no space). The codec checks received and
//  sent names with the same rule, so a resizer that checks its name here at
//  start never has a result refused for it.
bool imgp_msg_worker_valid (const char *name);

//  True when `code` may travel as an error code: 1..IMGP_CODE_MAX
//  characters of [a-z_].
bool imgp_msg_code_valid (const char *code);

//  True when `name` may travel as a READY's `host`: the same rule as a
//  worker name (1..IMGP_HOST_MAX characters 0x21..0x7E).
bool imgp_msg_host_valid (const char *name);

#endif

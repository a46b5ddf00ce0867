/*  imgp_msg — see imgp_msg.h and proto/PROTOCOL.md, the normative spec.

    Why: this is the only code in imgpipe that touches wire bytes. A message
    is frame 0, a compact JSON header {"v":1,"type":"...",...} holding only
    the fields its type uses, then frame 1 with image bytes for the types
    that carry them. One validator (s_check) serves both directions: the
    decoder refuses a malformed message and the encoder refuses to send one,
    so a bug in a sender shows up where it is made, not as a silent drop at
    the receiver.

    Never: assert or crash on bytes from a socket, copy image bytes on the
    send path, or accept a field outside its range.
*/
#include "imgp_msg.h"
#include "imgp_jw.h"
#include "imgp_log.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Fields of the JSON header; a type's spec lists the ones it uses.
enum {
    F_ID = 1 << 0,          //  "id", required
    F_ID_OPT = 1 << 1,      //  "id", optional (ERROR replies)
    F_OPTS = 1 << 2,        //  "opts" object
    F_STATE = 1 << 3,       //  "state"
    F_TIMES = 1 << 4,       //  "created_at", "updated_at"
    F_ATTEMPTS = 1 << 5,    //  "attempts"
    F_SLOTS = 1 << 6,       //  "slots"
    F_WORKER = 1 << 7,      //  "worker"
    F_ERROR = 1 << 8,       //  "code", "message"
    F_RESULT = 1 << 9,      //  "results" array (an old "result" object is read too)
    F_BY_STATE = 1 << 10,   //  INFO: error when failed, result when done
    F_OWNER = 1 << 11,      //  "owner", optional
    F_WAIT = 1 << 12,       //  "wait_ms", optional
    F_STATS = 1 << 13,      //  "stats" object, optional
    F_CREDIT = 1 << 14,     //  "credit"
    F_HOST = 1 << 15,       //  "host", optional
    F_WORKER_OPT = 1 << 16, //  "worker", optional (INFO)
    F_WANT = 1 << 17,       //  FETCH: "box", "accept", optional
    F_RENDITION = 1 << 18   //  INFO: "rendition", "pending", optional
};

//  "tag" is optional on every type: a requester's number for its request,
//  echoed in the reply, so one DEALER socket can carry many requests.

const int64_t imgp_stats_bounds_ms [IMGP_STATS_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000
};

void
imgp_histo_add (imgp_histo_t *histo, int64_t ms)
{
    int i = 0;
    while (i < IMGP_STATS_BUCKETS && ms > imgp_stats_bounds_ms [i])
        i++;
    histo->counts [i]++;
    histo->sum_ms += ms > 0 ? ms : 0;
}

//  Does a type carry frame 1?
typedef enum {
    S_DATA_NONE = 0,        //  never
    S_DATA_REQUIRED,        //  always, not empty
    S_DATA_OPTIONAL,        //  INFO: only with state "done"
    S_DATA_WITH_STATS       //  CLUSTER: in the reply (stats), not in the request
} s_data_t;

typedef struct {
    const char *wire;       //  "type" value on the wire, lowercase
    const char *name;       //  name in logs, uppercase
    unsigned fields;        //  F_* bits of the fields it uses
    s_data_t data;          //  whether frame 1 is present
    int min_attempts;       //  0 for INFO (so far), 1 for a worker's attempt
} s_type_spec_t;

//  Indexed by imgp_msg_type_t; entry 0 is unused.
static const s_type_spec_t s_types [] = {
    [IMGP_MSG_SUBMIT] = { "submit", "SUBMIT", F_ID | F_OPTS | F_OWNER, S_DATA_REQUIRED, 0 },
    [IMGP_MSG_ACCEPTED] = { "accepted", "ACCEPTED", F_ID | F_STATE, S_DATA_NONE, 0 },
    [IMGP_MSG_STATUS] = { "status", "STATUS", F_ID | F_OWNER | F_WAIT, S_DATA_NONE, 0 },
    [IMGP_MSG_FETCH] = { "fetch", "FETCH", F_ID | F_OWNER | F_WAIT | F_WANT, S_DATA_NONE, 0 },
    [IMGP_MSG_INFO] = { "info", "INFO",
        F_ID | F_STATE | F_TIMES | F_ATTEMPTS | F_BY_STATE | F_WORKER_OPT | F_RENDITION,
        S_DATA_OPTIONAL, 0 },
    [IMGP_MSG_PING] = { "ping", "PING", 0, S_DATA_NONE, 0 },
    [IMGP_MSG_PONG] = { "pong", "PONG", F_STATS, S_DATA_NONE, 0 },
    [IMGP_MSG_ERROR] = { "error", "ERROR", F_ID_OPT | F_ERROR, S_DATA_NONE, 0 },
    [IMGP_MSG_JOB] = { "job", "JOB", F_ID | F_ATTEMPTS | F_OPTS, S_DATA_REQUIRED, 1 },
    [IMGP_MSG_HEARTBEAT] = { "heartbeat", "HEARTBEAT", F_WORKER | F_SLOTS, S_DATA_NONE, 0 },
    [IMGP_MSG_STARTED] = { "started", "STARTED", F_ID | F_WORKER | F_ATTEMPTS, S_DATA_NONE, 1 },
    [IMGP_MSG_DONE] = { "done", "DONE",
        F_ID | F_WORKER | F_ATTEMPTS | F_RESULT, S_DATA_REQUIRED, 1 },
    [IMGP_MSG_FAILED] = { "failed", "FAILED",
        F_ID | F_WORKER | F_ATTEMPTS | F_ERROR, S_DATA_NONE, 1 },
    [IMGP_MSG_READY] = { "ready", "READY",
        F_WORKER | F_SLOTS | F_CREDIT | F_HOST, S_DATA_NONE, 0 },
    [IMGP_MSG_CLUSTER] = { "cluster", "CLUSTER", F_STATS, S_DATA_WITH_STATS, 0 },
};
#define S_TYPES ((int) (sizeof s_types / sizeof s_types [0]))

static const s_type_spec_t *
s_type_spec (imgp_msg_type_t type)
{
    int i = (int) type;
    return i > 0 && i < S_TYPES && s_types [i].wire ? &s_types [i] : NULL;
}

//  The fields a message uses, with INFO's state-dependent ones resolved.
static unsigned
s_fields (const imgp_msg_t *self, const s_type_spec_t *spec)
{
    unsigned fields = spec->fields;
    if (fields & F_BY_STATE) {
        if (self->state == IMGP_STATE_FAILED)
            fields |= F_ERROR;
        if (self->state == IMGP_STATE_DONE)
            fields |= F_RESULT;
    }
    return fields;
}

//  Copy `text` into `dst` replacing anything but printable ASCII with '?',
//  so a reason quoting outside bytes is safe to log.
static void
s_printable (char *dst, size_t size, const char *text)
{
    size_t i = 0;
    for (; text [i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char) text [i];
        dst [i] = c >= 0x20 && c < 0x7f ? (char) c : '?';
    }
    dst [i] = '\0';
}

static int
s_fail (char *error, size_t size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Record why a message is refused; returns -1 for `return s_fail (...)`.
static int
s_fail (char *error, size_t size, const char *format, ...)
{
    if (error && size > 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (error, size, format, args);
        va_end (args);
    }
    return -1;
}

//  --------------------------------------------------------------------------
//  Life cycle and data

static void
s_free_buf (void *buf, void *hint)
{
    (void) hint;
    free (buf);
}

//  Drop any attached image bytes.
static void
s_data_clear (imgp_msg_t *self)
{
    if (self->data_buf) {
        void (*free_fn) (void *, void *) = self->data_free ? self->data_free : s_free_buf;
        free_fn (self->data_buf, NULL);
    }
    self->data_buf = NULL;
    self->data_len = 0;
    self->data_free = NULL;
    zframe_destroy (&self->data_frame);
}

imgp_msg_t *
imgp_msg_new (imgp_msg_type_t type)
{
    imgp_msg_t *self = calloc (1, sizeof *self);
    if (!self)
        abort ();
    self->type = type;
    imgp_opts_default (&self->opts);
    return self;
}

imgp_msg_t *
imgp_msg_reply_new (imgp_msg_t *request, imgp_msg_type_t type)
{
    imgp_msg_t *self = imgp_msg_new (type);
    if (request) {
        memcpy (self->id, request->id, sizeof self->id);
        self->id [IMGP_ID_LEN] = '\0';
        self->tag = request->tag;
        if (request->routing_id)
            self->routing_id = zframe_dup (request->routing_id);
    }
    return self;
}

imgp_msg_t *
imgp_msg_error_new (imgp_msg_t *request, const char *code, const char *format, ...)
{
    imgp_msg_t *self = imgp_msg_reply_new (request, IMGP_MSG_ERROR);
    snprintf (self->code, sizeof self->code, "%s", code ? code : "internal");
    va_list args;
    va_start (args, format);
    vsnprintf (self->message, sizeof self->message, format, args);
    va_end (args);
    return self;
}

void
imgp_msg_destroy (imgp_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_msg_t *self = *self_p;
    s_data_clear (self);
    zframe_destroy (&self->routing_id);
    zframe_destroy (&self->sender);
    free (self);
    *self_p = NULL;
}

void
imgp_msg_set_data (imgp_msg_t *self, void *buf, size_t len,
                   void (*free_fn) (void *buf, void *hint))
{
    s_data_clear (self);
    self->data_buf = buf;
    self->data_len = buf ? len : 0;
    self->data_free = free_fn;
}

void
imgp_msg_set_frame (imgp_msg_t *self, zframe_t **frame_p)
{
    s_data_clear (self);
    if (frame_p) {
        self->data_frame = *frame_p;
        *frame_p = NULL;
    }
}

const uint8_t *
imgp_msg_data (imgp_msg_t *self)
{
    if (self->data_frame)
        return zframe_data (self->data_frame);
    return self->data_buf;
}

size_t
imgp_msg_size (imgp_msg_t *self)
{
    if (self->data_frame)
        return zframe_size (self->data_frame);
    return self->data_buf ? self->data_len : 0;
}

const char *
imgp_msg_type_name (imgp_msg_type_t type)
{
    const s_type_spec_t *spec = s_type_spec (type);
    return spec ? spec->name : "UNKNOWN";
}

//  --------------------------------------------------------------------------
//  Validation: the one set of ranges, for both directions

static int
s_check_opts (const imgp_opts_t *opts, char *error, size_t size)
{
    if (opts->width < 1 || opts->width > IMGP_SIDE_MAX)
        return s_fail (error, size, "opts.width %d is not in 1..%d", opts->width, IMGP_SIDE_MAX);
    if (opts->height < 1 || opts->height > IMGP_SIDE_MAX)
        return s_fail (error, size, "opts.height %d is not in 1..%d", opts->height, IMGP_SIDE_MAX);
    if (opts->quality < 0 || opts->quality > 100)
        return s_fail (error, size, "opts.quality %d is not in 0..100", opts->quality);
    const char *problem = NULL, *option = NULL;
    if (imgp_opts_check (opts, &problem, &option))
        return s_fail (error, size, "opts.%s: %s", option, problem);
    return 0;
}

//  The characters a text field may hold.
typedef enum {
    S_TEXT_CODE,            //  [a-z_]: error codes
    S_TEXT_NAME,            //  printable ASCII without spaces: worker names
    S_TEXT_OWNER            //  [A-Za-z0-9_.-]: owners (API key names)
} s_text_t;

static bool
s_text_char_ok (s_text_t kind, unsigned char c)
{
    switch (kind) {
        case S_TEXT_CODE:
            return (c >= 'a' && c <= 'z') || c == '_';
        case S_TEXT_NAME:
            return c > 0x20 && c < 0x7f;
        case S_TEXT_OWNER:
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                || c == '_' || c == '.' || c == '-';
    }
    return false;
}

static int
s_check_text (const char *field, const char *text, size_t max, s_text_t kind,
              char *error, size_t size)
{
    static const char *rule [] = {
        [S_TEXT_CODE] = "[a-z_]",
        [S_TEXT_NAME] = "printable ASCII without spaces",
        [S_TEXT_OWNER] = "[A-Za-z0-9_.-]",
    };
    size_t len = strlen (text);
    if (len > max || len == 0)
        return s_fail (error, size, "%s must be 1..%zu characters", field, max);
    for (size_t i = 0; i < len; i++)
        if (!s_text_char_ok (kind, (unsigned char) text [i]))
            return s_fail (error, size, "%s must be %s", field, rule [kind]);
    return 0;
}

static int
s_check_result (const imgp_result_t *result, char *error, size_t size)
{
    if (result->width < 1 || result->width > IMGP_RESULT_SIDE_MAX
    ||  result->height < 1 || result->height > IMGP_RESULT_SIDE_MAX)
        return s_fail (error, size, "result size %dx%d is not in 1..%d",
                       result->width, result->height, IMGP_RESULT_SIDE_MAX);
    if ((int) result->format < IMGP_FORMAT_PNG || (int) result->format > IMGP_FORMAT_AVIF)
        return s_fail (error, size, "result.format is unknown");
    //  No rendition is larger than the largest frame any program takes, so
    //  the sum of a DONE's 8 (or an INFO's 24) stays far from a wrap.
    if (result->bytes < 1 || result->bytes > IMGP_UPLOAD_LIMIT_MAX || result->ms < 0)
        return s_fail (error, size, "result.bytes must be 1..%lld and result.ms >= 0",
                       (long long) IMGP_UPLOAD_LIMIT_MAX);
    bool no_box = result->box.width == 0 && result->box.height == 0;
    if (!no_box && (result->box.width < 1 || result->box.width > IMGP_SIDE_MAX
                 || result->box.height < 1 || result->box.height > IMGP_SIDE_MAX))
        return s_fail (error, size, "result.box %dx%d is not in 1..%d", result->box.width,
                       result->box.height, IMGP_SIDE_MAX);
    size_t etag_len = strnlen (result->etag, sizeof result->etag);
    if (etag_len != 0 && etag_len != IMGP_ETAG_LEN)
        return s_fail (error, size, "result.etag must be %d lowercase hex characters",
                       IMGP_ETAG_LEN);
    for (size_t i = 0; i < etag_len; i++)
        if (!((result->etag [i] >= '0' && result->etag [i] <= '9')
           || (result->etag [i] >= 'a' && result->etag [i] <= 'f')))
            return s_fail (error, size, "result.etag must be %d lowercase hex characters",
                           IMGP_ETAG_LEN);
    return 0;
}

//  DONE carries one result per size asked (1..8), INFO every rendition
//  the broker holds (0..24); the data frame of a DONE is their bytes
//  end to end, so the sizes must add up to it.
static int
s_check_results (const imgp_msg_t *self, char *error, size_t size)
{
    bool done = self->type == IMGP_MSG_DONE;
    int min = done ? 1 : 0, max = done ? IMGP_SIZES_MAX : IMGP_RESULTS_MAX;
    if (self->result_count < min || self->result_count > max)
        return s_fail (error, size, "results has %d entries, not %d..%d", self->result_count,
                       min, max);
    for (int i = 0; i < self->result_count; i++)
        if (s_check_result (&self->results [i], error, size))
            return -1;
    return 0;
}

static int
s_check_message (const char *message, char *error, size_t size)
{
    for (const unsigned char *c = (const unsigned char *) message; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return s_fail (error, size, "message has control characters");
    return 0;
}

//  The fields other than id, opts and the error text.
static int
s_check_numbers (const imgp_msg_t *self, const s_type_spec_t *spec,
                 unsigned fields, char *error, size_t size)
{
    if ((fields & F_STATE)
    &&  ((int) self->state < IMGP_STATE_QUEUED || (int) self->state > IMGP_STATE_FAILED))
        return s_fail (error, size, "state is unknown");
    if ((fields & F_TIMES) && (self->created_at < 0 || self->updated_at < 0))
        return s_fail (error, size, "created_at and updated_at must be >= 0");
    if ((fields & F_ATTEMPTS)
    &&  (self->attempts < spec->min_attempts || self->attempts > IMGP_ATTEMPTS_MAX))
        return s_fail (error, size, "attempts %d is not in %d..%d", self->attempts,
                       spec->min_attempts, IMGP_ATTEMPTS_MAX);
    //  HEARTBEAT counts free slots (0 when all are busy); READY counts
    //  them all, and a resizer with none could never take a job.
    int min_slots = self->type == IMGP_MSG_READY ? 1 : 0;
    if ((fields & F_SLOTS) && (self->slots < min_slots || self->slots > IMGP_SLOTS_MAX))
        return s_fail (error, size, "slots %d is not in %d..%d", self->slots, min_slots,
                       IMGP_SLOTS_MAX);
    if ((fields & F_CREDIT) && (self->credit < 0 || self->credit > IMGP_CREDIT_MAX))
        return s_fail (error, size, "credit %d is not in 0..%d", self->credit, IMGP_CREDIT_MAX);
    return 0;
}

//  CLUSTER's data: a JSON object of at most IMGP_CLUSTER_MAX bytes, so a
//  frontend can hand it on as it is.
static int
s_check_json_data (imgp_msg_t *self, char *error, size_t size)
{
    size_t len = imgp_msg_size (self);
    if (len > IMGP_CLUSTER_MAX)
        return s_fail (error, size, "data of %zu bytes is over %d", len, IMGP_CLUSTER_MAX);
    json_t *root = json_loadb ((const char *) imgp_msg_data (self), len,
                               JSON_REJECT_DUPLICATES, NULL);
    bool ok = json_is_object (root);
    json_decref (root);
    if (!ok)
        return s_fail (error, size, "data is not a JSON object");
    return 0;
}

static int
s_check_data (imgp_msg_t *self, const s_type_spec_t *spec, bool has_data,
              char *error, size_t size)
{
    size_t len = imgp_msg_size (self);
    if (spec->data == S_DATA_NONE && has_data)
        return s_fail (error, size, "%s carries no data frame", spec->name);
    if (spec->data == S_DATA_REQUIRED && !has_data)
        return s_fail (error, size, "%s is missing its data frame", spec->name);
    if (spec->data == S_DATA_OPTIONAL && has_data && self->state != IMGP_STATE_DONE)
        return s_fail (error, size, "%s carries data only when done", spec->name);
    if (has_data && len == 0)
        return s_fail (error, size, "%s has an empty data frame", spec->name);
    if (spec->data == S_DATA_WITH_STATS && has_data != self->has_stats)
        return s_fail (error, size, "%s carries data and stats in a reply, neither in a request",
                       spec->name);
    if (self->type == IMGP_MSG_DONE) {
        //  Each is 1..IMGP_UPLOAD_LIMIT_MAX and there are at most 8, so
        //  the sum cannot wrap; stopping once it passes the frame keeps
        //  that true whatever the bounds become.
        int64_t sum = 0;
        for (int i = 0; i < self->result_count && sum <= (int64_t) len; i++)
            sum += self->results [i].bytes;
        if (sum != (int64_t) len)
            return s_fail (error, size, "results' bytes add up to %lld, data is %zu bytes",
                           (long long) sum, len);
    }
    if (spec->data == S_DATA_WITH_STATS && has_data)
        return s_check_json_data (self, error, size);
    return 0;
}

//  A member of imgp_stats_t, by wire name, for the codec's loops.
typedef struct {
    const char *name;       //  key in the "stats" object
    size_t offset;          //  offsetof in imgp_stats_t
} s_stats_key_t;

//  The integer fields of imgp_stats_t.
static const s_stats_key_t s_stats_fields [] = {
    { "queued", offsetof (imgp_stats_t, queued) },
    { "queue_max", offsetof (imgp_stats_t, queue_max) },
    { "in_flight", offsetof (imgp_stats_t, in_flight) },
    { "resizers", offsetof (imgp_stats_t, resizers) },
    { "slots", offsetof (imgp_stats_t, slots) },
    { "waiters", offsetof (imgp_stats_t, waiters) },
    { "accepted", offsetof (imgp_stats_t, accepted) },
    { "done", offsetof (imgp_stats_t, done) },
    { "failed", offsetof (imgp_stats_t, failed) },
    { "retried", offsetof (imgp_stats_t, retried) },
    //  From here on optional on decode (added later; an older broker's PONG
    //  lacks them and reads as 0), always sent.
    { "spool_full", offsetof (imgp_stats_t, spool_full) },
    { "spool_bytes", offsetof (imgp_stats_t, spool_bytes) },
    { "spool_max_bytes", offsetof (imgp_stats_t, spool_max_bytes) },
};
#define S_STATS_FIELDS (sizeof s_stats_fields / sizeof s_stats_fields [0])
#define S_STATS_REQUIRED 10         //  the first fields, required on decode

//  The histograms of imgp_stats_t.
static const s_stats_key_t s_stats_histos [] = {
    { "job_ms", offsetof (imgp_stats_t, job_ms) },
    { "wait_ms", offsetof (imgp_stats_t, wait_ms) },
};
#define S_STATS_HISTOS (sizeof s_stats_histos / sizeof s_stats_histos [0])

static int64_t *
s_stats_field (imgp_stats_t *stats, size_t i)
{
    return (int64_t *) ((char *) stats + s_stats_fields [i].offset);
}

static imgp_histo_t *
s_stats_histo (imgp_stats_t *stats, size_t i)
{
    return (imgp_histo_t *) ((char *) stats + s_stats_histos [i].offset);
}

//  Every figure is a count: none may be negative.
static int
s_check_stats (imgp_stats_t *stats, char *error, size_t size)
{
    for (size_t i = 0; i < S_STATS_FIELDS; i++)
        if (*s_stats_field (stats, i) < 0)
            return s_fail (error, size, "stats.%s is negative", s_stats_fields [i].name);
    for (size_t i = 0; i < S_STATS_HISTOS; i++) {
        imgp_histo_t *histo = s_stats_histo (stats, i);
        for (int b = 0; b <= IMGP_STATS_BUCKETS; b++)
            if (histo->counts [b] < 0)
                return s_fail (error, size, "stats.%s has a negative count",
                               s_stats_histos [i].name);
        if (histo->sum_ms < 0)
            return s_fail (error, size, "stats.%s has a negative sum", s_stats_histos [i].name);
    }
    return 0;
}

//  What a FETCH wants (PROTOCOL.md 6.4): a box of the job's sizes (0x0:
//  its first), and the formats its client takes (never auto: a format
//  one can be served in).
static int
s_check_want (const imgp_msg_t *self, char *error, size_t size)
{
    bool no_box = self->box.width == 0 && self->box.height == 0;
    if (!no_box && (self->box.width < 1 || self->box.width > IMGP_SIDE_MAX
                 || self->box.height < 1 || self->box.height > IMGP_SIDE_MAX))
        return s_fail (error, size, "box %dx%d is not in 1..%d", self->box.width,
                       self->box.height, IMGP_SIDE_MAX);
    if (self->accept_count < 0 || self->accept_count > IMGP_ACCEPT_MAX)
        return s_fail (error, size, "accept has %d formats, not 0..%d", self->accept_count,
                       IMGP_ACCEPT_MAX);
    for (int i = 0; i < self->accept_count; i++)
        if ((int) self->accept [i] < IMGP_FORMAT_PNG || (int) self->accept [i] > IMGP_FORMAT_AVIF)
            return s_fail (error, size, "accept has an unknown format");
    return 0;
}

//  The optional fields: tag on every type, owner and wait_ms where used.
static int
s_check_optional (imgp_msg_t *self, unsigned fields, char *error, size_t size)
{
    if (self->tag < 0 || self->tag > IMGP_TAG_MAX)
        return s_fail (error, size, "tag is not in 0..2^53-1");
    if ((fields & F_OWNER) && self->owner [0]
    &&  s_check_text ("owner", self->owner, IMGP_OWNER_MAX, S_TEXT_OWNER, error, size))
        return -1;
    if ((fields & F_WAIT) && (self->wait_ms < 0 || self->wait_ms > IMGP_WAIT_MAX_MS))
        return s_fail (error, size, "wait_ms %d is not in 0..%d", self->wait_ms,
                       IMGP_WAIT_MAX_MS);
    if ((fields & F_STATS) && self->has_stats && s_check_stats (&self->stats, error, size))
        return -1;
    if ((fields & F_HOST) && self->host [0]
    &&  s_check_text ("host", self->host, IMGP_HOST_MAX, S_TEXT_NAME, error, size))
        return -1;
    if ((fields & F_WORKER_OPT) && self->worker [0]
    &&  s_check_text ("worker", self->worker, IMGP_WORKER_MAX, S_TEXT_NAME, error, size))
        return -1;
    if ((fields & F_WANT) && s_check_want (self, error, size))
        return -1;
    //  An index of the results sent (0 also when there are none: absent).
    if ((fields & F_RENDITION)
    &&  (self->rendition < 0 || (self->rendition > 0 && self->rendition >= self->result_count)))
        return s_fail (error, size, "rendition %d is not an index of results", self->rendition);
    return 0;
}

//  Validate every field a message's type uses, and its data. `has_data`
//  says whether frame 1 is (to be) present.
static int
s_check (imgp_msg_t *self, bool has_data, char *error, size_t size)
{
    const s_type_spec_t *spec = s_type_spec (self->type);
    if (!spec)
        return s_fail (error, size, "unknown message type %d", (int) self->type);
    unsigned fields = s_fields (self, spec);
    if ((fields & F_ID) && !imgp_id_valid (self->id))
        return s_fail (error, size, "id must be %d lowercase hex characters", IMGP_ID_LEN);
    if ((fields & F_ID_OPT) && self->id [0] && !imgp_id_valid (self->id))
        return s_fail (error, size, "id must be %d lowercase hex characters", IMGP_ID_LEN);
    if ((fields & F_OPTS) && s_check_opts (&self->opts, error, size))
        return -1;
    if (s_check_numbers (self, spec, fields, error, size))
        return -1;
    if ((fields & F_WORKER)
    &&  s_check_text ("worker", self->worker, IMGP_WORKER_MAX, S_TEXT_NAME, error, size))
        return -1;
    if ((fields & F_ERROR)
    &&  (s_check_text ("code", self->code, IMGP_CODE_MAX, S_TEXT_CODE, error, size)
      || s_check_message (self->message, error, size)))
        return -1;
    if ((fields & F_RESULT) && s_check_results (self, error, size))
        return -1;
    if (s_check_optional (self, fields, error, size))
        return -1;
    return s_check_data (self, spec, has_data, error, size);
}

//  --------------------------------------------------------------------------
//  Encoding

//  Make the error text safe to send, in place: control characters become
//  spaces; if it still is not UTF-8 (a multi-byte character cut by
//  truncation, a libvips message in another charset), non-ASCII bytes
//  become '?'. So a resizer can pass any error text and it arrives.
static void
s_clean_text (char *text)
{
    for (unsigned char *c = (unsigned char *) text; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            *c = ' ';
    json_t *probe = json_string (text);    //  NULL when not valid UTF-8
    if (!probe)
        for (unsigned char *c = (unsigned char *) text; *c; c++)
            if (*c >= 0x80)
                *c = '?';
    json_decref (probe);
}

json_t *
imgp_msg_opts_to_json (const imgp_opts_t *opts)
{
    json_t *obj = json_pack ("{s:i, s:i, s:s, s:s, s:i, s:b}",
                             "width", opts->width, "height", opts->height,
                             "fit", imgp_fit_name (opts->fit),
                             "format", imgp_format_name (opts->format),
                             "quality", opts->quality, "enlarge", opts->enlarge);
    if (!obj)
        return NULL;
    //  the new members only when not their default, as imgp_jw_opts writes
    if (opts->gravity != IMGP_GRAVITY_CENTRE)
        json_object_set_new (obj, "gravity", json_string (imgp_gravity_name (opts->gravity)));
    if (opts->background [0] || opts->background [1] || opts->background [2]
    ||  opts->background [3]) {
        char text [10];
        imgp_opts_background_text (opts->background, text);
        json_object_set_new (obj, "background", json_string (text));
    }
    if (opts->animated)
        json_object_set_new (obj, "animated", json_true ());
    if (opts->size_count > 1) {
        json_t *sizes = json_array ();
        for (int i = 0; i < opts->size_count && i < IMGP_SIZES_MAX; i++)
            json_array_append_new (sizes, json_pack ("[i,i]", opts->sizes [i].width,
                                                     opts->sizes [i].height));
        json_object_set_new (obj, "sizes", sizes);
    }
    return obj;
}

json_t *
imgp_msg_result_to_json (const imgp_result_t *result)
{
    json_t *obj = json_pack ("{s:i, s:i, s:s, s:I, s:I}",
                             "width", result->width, "height", result->height,
                             "format", imgp_format_name (result->format),
                             "bytes", (json_int_t) result->bytes,
                             "ms", (json_int_t) result->ms);
    if (obj && (result->box.width || result->box.height))
        json_object_set_new (obj, "box", json_pack ("[i,i]", result->box.width,
                                                    result->box.height));
    if (obj && result->etag [0])
        json_object_set_new (obj, "etag", json_string (result->etag));
    return obj;
}

//  The header is written straight into a buffer by imgp_jw, in the bytes
//  jansson's json_dumps(JSON_COMPACT) made from a tree of the same fields
//  (the encoder before this one; tests/unit/test_proto.c checks every
//  header it writes against a jansson re-dump): fields in the order below.
//  No tree, no allocation: the jansson encoder was a quarter of a broker's
//  user time per job.

static void
s_put_histo (imgp_jw_t *out, const char *key, const imgp_histo_t *histo)
{
    imgp_jw_open (out, key, '{');
    imgp_jw_open (out, "counts", '[');
    for (int b = 0; b <= IMGP_STATS_BUCKETS; b++)
        imgp_jw_int (out, NULL, histo->counts [b]);
    imgp_jw_close (out, ']');
    imgp_jw_int (out, "sum", histo->sum_ms);
    imgp_jw_close (out, '}');
}

static void
s_put_stats (imgp_jw_t *out, imgp_stats_t *stats)
{
    imgp_jw_open (out, "stats", '{');
    for (size_t i = 0; i < S_STATS_FIELDS; i++)
        imgp_jw_int (out, s_stats_fields [i].name, *s_stats_field (stats, i));
    for (size_t i = 0; i < S_STATS_HISTOS; i++)
        s_put_histo (out, s_stats_histos [i].name, s_stats_histo (stats, i));
    imgp_jw_close (out, '}');
}

//  The optional fields, each only when set.
static void
s_put_optional (imgp_jw_t *out, imgp_msg_t *self, unsigned fields)
{
    if (self->tag)
        imgp_jw_int (out, "tag", self->tag);
    if ((fields & F_OWNER) && self->owner [0])
        imgp_jw_string (out, "owner", self->owner);
    if ((fields & F_WAIT) && self->wait_ms)
        imgp_jw_int (out, "wait_ms", self->wait_ms);
    if ((fields & F_STATS) && self->has_stats)
        s_put_stats (out, &self->stats);
    if ((fields & F_HOST) && self->host [0])
        imgp_jw_string (out, "host", self->host);
    if ((fields & F_WORKER_OPT) && self->worker [0])
        imgp_jw_string (out, "worker", self->worker);
    if ((fields & F_WANT) && (self->box.width || self->box.height)) {
        imgp_jw_open (out, "box", '[');
        imgp_jw_int (out, NULL, self->box.width);
        imgp_jw_int (out, NULL, self->box.height);
        imgp_jw_close (out, ']');
    }
    if ((fields & F_WANT) && self->accept_count) {
        imgp_jw_open (out, "accept", '[');
        for (int i = 0; i < self->accept_count; i++)
            imgp_jw_string (out, NULL, imgp_format_name (self->accept [i]));
        imgp_jw_close (out, ']');
    }
    if ((fields & F_RENDITION) && self->rendition)
        imgp_jw_int (out, "rendition", self->rendition);
    if ((fields & F_RENDITION) && self->pending)
        imgp_jw_bool (out, "pending", true);
}

static void
s_put_fields (imgp_jw_t *out, imgp_msg_t *self, const s_type_spec_t *spec)
{
    unsigned fields = s_fields (self, spec);
    imgp_jw_open (out, NULL, '{');
    imgp_jw_int (out, "v", IMGP_PROTO_VERSION);
    imgp_jw_string (out, "type", spec->wire);
    if ((fields & F_ID) || ((fields & F_ID_OPT) && self->id [0]))
        imgp_jw_string (out, "id", self->id);
    if (fields & F_OPTS)
        imgp_jw_opts (out, "opts", &self->opts);
    if (fields & F_STATE)
        imgp_jw_string (out, "state", imgp_state_name (self->state));
    if (fields & F_TIMES) {
        imgp_jw_int (out, "created_at", self->created_at);
        imgp_jw_int (out, "updated_at", self->updated_at);
    }
    if (fields & F_ATTEMPTS)
        imgp_jw_int (out, "attempts", self->attempts);
    if (fields & F_SLOTS)
        imgp_jw_int (out, "slots", self->slots);
    if (fields & F_CREDIT)
        imgp_jw_int (out, "credit", self->credit);
    if (fields & F_WORKER)
        imgp_jw_string (out, "worker", self->worker);
    if (fields & F_ERROR) {
        imgp_jw_string (out, "code", self->code);
        imgp_jw_string (out, "message", self->message);
    }
    if (fields & F_RESULT)
        imgp_jw_results (out, "results", self->results, self->result_count);
    s_put_optional (out, self, fields);
    imgp_jw_close (out, '}');
}

//  The largest header written: what a receiver takes (a longer one would
//  be dropped there, so it is refused here). The largest valid headers (an
//  INFO with every text field escaped, a PONG with its stats) are under
//  half of it.
#define S_HEADER_ROOM IMGP_HEADER_MAX

//  Write the JSON header into `buf` (S_HEADER_ROOM bytes). Returns its
//  length, or 0 when the message is invalid: a sender's bug, logged here.
static size_t
s_header_write (imgp_msg_t *self, char *buf)
{
    const s_type_spec_t *spec = s_type_spec (self->type);
    bool has_data = self->data_frame || self->data_buf;
    if (self->type == IMGP_MSG_DONE && self->result_count == 1)
        self->results [0].bytes = (int64_t) imgp_msg_size (self);  //  the codec knows it
    if (self->message [0])
        s_clean_text (self->message);
    char error [160];
    if (s_check (self, has_data, error, sizeof error) == 0) {
        imgp_jw_t out;
        imgp_jw_init (&out, buf, S_HEADER_ROOM);
        s_put_fields (&out, self, spec);
        size_t len = imgp_jw_len (&out);
        if (len)
            return len;
        snprintf (error, sizeof error, "header over %d bytes", S_HEADER_ROOM);
    }
    imgp_error ("job=%s event=refused_to_send type=%s reason=\"%s\"",
                self->id [0] ? self->id : "-", imgp_msg_type_name (self->type), error);
    return 0;
}

zmsg_t *
imgp_msg_encode (imgp_msg_t *self)
{
    char text [S_HEADER_ROOM];
    size_t len = s_header_write (self, text);
    if (!len)
        return NULL;
    zmsg_t *zmsg = zmsg_new ();
    zmsg_addmem (zmsg, text, len);
    if (self->data_frame)
        zmsg_append (zmsg, &self->data_frame);
    else
    if (self->data_buf)
        zmsg_addmem (zmsg, self->data_buf, self->data_len);
    return zmsg;
}

//  --------------------------------------------------------------------------
//  Decoding
//
//  A header is read into a small tree of s_node_t (text slices, numbers,
//  members) and the fields are read from that. The tree comes from a
//  parser here that allocates nothing, for the headers every peer writes:
//  plain ASCII strings without escapes, integers, true/false/null, objects
//  and arrays a few levels deep, no repeated key. Anything else (an escape,
//  UTF-8, a real number, a repeated key, a syntax error, more members than
//  S_FAST_NODES) it declines, and jansson parses the header as it always
//  did (its errors, its rules), its tree then copied into nodes. So the
//  parser never refuses what jansson took, nor takes what it refused: it
//  only ever says "yes, these values" for the texts jansson reads to the
//  same values. Parsing with jansson was a third of a broker's user time.

#define S_FAST_NODES 128            //  nodes on the stack (8 KiB): a DONE of 8 results
                                    //  fits; more (a big INFO): jansson
#define S_FAST_DEPTH 8              //  nesting the fast parser takes; deeper: jansson

typedef enum {
    S_NULL, S_FALSE, S_TRUE, S_INT, S_REAL, S_STRING, S_OBJECT, S_ARRAY
} s_kind_t;

typedef struct s_node_t s_node_t;
struct s_node_t {
    s_kind_t kind;          //  what the value is
    const char *key;        //  member name in its object (not NUL-ended), else NULL
    size_t key_len;         //  its length
    const char *text;       //  S_STRING: the bytes (not NUL-ended; may hold NULs)
    size_t len;             //  their length
    int64_t integer;        //  S_INT: the value
    s_node_t *child;        //  S_OBJECT, S_ARRAY: first member
    s_node_t *next;         //  next member of the same parent
};

typedef struct {
    s_node_t *nodes;        //  the pool
    size_t size;            //  its capacity
    size_t used;            //  nodes handed out
} s_pool_t;

static s_node_t *
s_node_new (s_pool_t *pool, s_kind_t kind)
{
    if (pool->used == pool->size)
        return NULL;
    s_node_t *node = &pool->nodes [pool->used++];
    memset (node, 0, sizeof *node);
    node->kind = kind;
    return node;
}

//  The member `key` of an object, or NULL.
static const s_node_t *
s_find (const s_node_t *obj, const char *key)
{
    if (!obj || obj->kind != S_OBJECT)
        return NULL;
    size_t key_len = strlen (key);
    for (const s_node_t *member = obj->child; member; member = member->next)
        if (member->key_len == key_len && memcmp (member->key, key, key_len) == 0)
            return member;
    return NULL;
}

static bool
s_is (const s_node_t *node, s_kind_t kind)
{
    return node && node->kind == kind;
}

//  The fast parser: a value at *at (< end), or NULL to decline.
static s_node_t *s_fast_value (s_pool_t *pool, const char **at, const char *end, int depth);

static void
s_fast_space (const char **at, const char *end)
{
    while (*at < end && (**at == ' ' || **at == '\t' || **at == '\n' || **at == '\r'))
        (*at)++;
}

//  A string of printable ASCII without escapes, at the opening quote.
static bool
s_fast_string (const char **at, const char *end, const char **text, size_t *len)
{
    const char *p = *at + 1;
    *text = p;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char) *p;
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return false;
        p++;
    }
    if (p == end)
        return false;
    *len = (size_t) (p - *text);
    *at = p + 1;
    return true;
}

//  An integer of at most 18 digits (no overflow), not the start of a real.
static bool
s_fast_integer (const char **at, const char *end, int64_t *value)
{
    const char *p = *at;
    bool negative = p < end && *p == '-';
    if (negative)
        p++;
    const char *digits = p;
    int64_t n = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 18)
        n = n * 10 + (*p++ - '0');
    size_t count = (size_t) (p - digits);
    if (count == 0 || (count > 1 && *digits == '0'))
        return false;
    //  a 19th digit, a fraction or an exponent: jansson's to read
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return false;
    *value = negative ? -n : n;
    *at = p;
    return true;
}

static bool
s_fast_literal (const char **at, const char *end, const char *word)
{
    size_t len = strlen (word);
    if ((size_t) (end - *at) < len || memcmp (*at, word, len) != 0)
        return false;
    *at += len;
    return true;
}

//  The members of an object or array, at the opening bracket.
static s_node_t *
s_fast_members (s_pool_t *pool, const char **at, const char *end, int depth, bool object)
{
    s_node_t *node = s_node_new (pool, object ? S_OBJECT : S_ARRAY);
    char close = object ? '}' : ']';
    (*at)++;
    s_fast_space (at, end);
    if (!node || *at == end)
        return NULL;
    if (**at == close) {
        (*at)++;
        return node;
    }
    s_node_t *last = NULL;
    while (true) {
        const char *key = NULL;
        size_t key_len = 0;
        if (object) {
            if (**at != '"' || !s_fast_string (at, end, &key, &key_len))
                return NULL;
            //  A repeated key: jansson's to refuse (JSON_REJECT_DUPLICATES).
            for (s_node_t *member = node->child; member; member = member->next)
                if (member->key_len == key_len && memcmp (member->key, key, key_len) == 0)
                    return NULL;
            s_fast_space (at, end);
            if (*at == end || **at != ':')
                return NULL;
            (*at)++;
        }
        s_node_t *value = s_fast_value (pool, at, end, depth + 1);
        if (!value)
            return NULL;
        value->key = key;
        value->key_len = key_len;
        if (last)
            last->next = value;
        else
            node->child = value;
        last = value;
        s_fast_space (at, end);
        if (*at == end)
            return NULL;
        if (**at == close) {
            (*at)++;
            return node;
        }
        if (**at != ',')
            return NULL;
        (*at)++;
        s_fast_space (at, end);
        if (*at == end)
            return NULL;
    }
}

static s_node_t *
s_fast_value (s_pool_t *pool, const char **at, const char *end, int depth)
{
    s_fast_space (at, end);
    if (*at == end || depth > S_FAST_DEPTH)
        return NULL;
    char c = **at;
    if (c == '{' || c == '[')
        return s_fast_members (pool, at, end, depth, c == '{');
    s_node_t *node = NULL;
    if (c == '"') {
        node = s_node_new (pool, S_STRING);
        if (node && !s_fast_string (at, end, &node->text, &node->len))
            return NULL;
    }
    else
    if (c == '-' || (c >= '0' && c <= '9')) {
        node = s_node_new (pool, S_INT);
        if (node && !s_fast_integer (at, end, &node->integer))
            return NULL;
    }
    else
    if (s_fast_literal (at, end, "true"))
        node = s_node_new (pool, S_TRUE);
    else
    if (s_fast_literal (at, end, "false"))
        node = s_node_new (pool, S_FALSE);
    else
    if (s_fast_literal (at, end, "null"))
        node = s_node_new (pool, S_NULL);
    return node;
}

//  The header's root object, or NULL when the parser declines it.
static s_node_t *
s_fast_parse (s_pool_t *pool, const char *text, size_t len)
{
    const char *at = text, *end = text + len;
    s_fast_space (&at, end);
    if (at == end || *at != '{')
        return NULL;
    s_node_t *root = s_fast_value (pool, &at, end, 0);
    s_fast_space (&at, end);
    return root && at == end ? root : NULL;
}

//  Nodes a jansson value needs.
static size_t
s_json_count (json_t *value)
{
    size_t count = 1;
    const char *key;
    json_t *member;
    size_t index;
    if (json_is_object (value))
        json_object_foreach (value, key, member)
            count += s_json_count (member);
    if (json_is_array (value))
        json_array_foreach (value, index, member)
            count += s_json_count (member);
    return count;
}

//  A jansson value as nodes, in a pool s_json_count sized (the texts are
//  the tree's: keep it until the nodes are read).
static s_node_t *
s_json_copy (s_pool_t *pool, json_t *value)
{
    s_kind_t kind = json_is_object (value) ? S_OBJECT : json_is_array (value) ? S_ARRAY
                  : json_is_string (value) ? S_STRING : json_is_integer (value) ? S_INT
                  : json_is_real (value) ? S_REAL : json_is_true (value) ? S_TRUE
                  : json_is_false (value) ? S_FALSE : S_NULL;
    s_node_t *node = s_node_new (pool, kind);
    assert (node);
    if (kind == S_STRING) {
        node->text = json_string_value (value);
        node->len = json_string_length (value);
    }
    node->integer = kind == S_INT ? (int64_t) json_integer_value (value) : 0;
    s_node_t **tail = &node->child;
    const char *key;
    json_t *member;
    size_t index;
    if (kind == S_OBJECT)
        json_object_foreach (value, key, member) {
            *tail = s_json_copy (pool, member);
            (*tail)->key = key;
            (*tail)->key_len = strlen (key);
            tail = &(*tail)->next;
        }
    if (kind == S_ARRAY)
        json_array_foreach (value, index, member) {
            *tail = s_json_copy (pool, member);
            tail = &(*tail)->next;
        }
    return node;
}

//  A heap pool holding `value` as nodes; free pool->nodes after.
static s_node_t *
s_json_nodes (s_pool_t *pool, json_t *value)
{
    pool->size = s_json_count (value);
    pool->used = 0;
    pool->nodes = malloc (pool->size * sizeof *pool->nodes);
    if (!pool->nodes)
        abort ();           //  like czmq: out of memory is not recoverable here
    return s_json_copy (pool, value);
}

static const s_node_t *
s_get (const s_node_t *obj, const char *key, char *error, size_t size)
{
    const s_node_t *value = s_find (obj, key);
    if (!value)
        s_fail (error, size, "missing field \"%s\"", key);
    return value;
}

static int
s_get_str (const s_node_t *obj, const char *key, char *dst, size_t cap,
           char *error, size_t size)
{
    const s_node_t *value = s_get (obj, key, error, size);
    if (!value)
        return -1;
    if (!s_is (value, S_STRING))
        return s_fail (error, size, "field \"%s\" is not a string", key);
    if (value->len >= cap)
        return s_fail (error, size, "field \"%s\" is longer than %zu bytes", key, cap - 1);
    if (memchr (value->text, '\0', value->len))
        return s_fail (error, size, "field \"%s\" contains a NUL", key);
    memcpy (dst, value->text, value->len);
    dst [value->len] = '\0';
    return 0;
}

static int
s_get_int64 (const s_node_t *obj, const char *key, int64_t *dst, char *error, size_t size)
{
    const s_node_t *value = s_get (obj, key, error, size);
    if (!value)
        return -1;
    if (!s_is (value, S_INT))
        return s_fail (error, size, "field \"%s\" is not an integer", key);
    *dst = value->integer;
    return 0;
}

//  An integer that fits an int; its real range is checked by s_check.
static int
s_get_int (const s_node_t *obj, const char *key, int *dst, char *error, size_t size)
{
    int64_t value = 0;
    if (s_get_int64 (obj, key, &value, error, size))
        return -1;
    if (value < INT_MIN || value > INT_MAX)
        return s_fail (error, size, "field \"%s\" is out of range", key);
    *dst = (int) value;
    return 0;
}

//  A name field ("fit": "cover") parsed with `parse`.
static int
s_get_name (const s_node_t *obj, const char *key, int (*parse) (const char *, int *),
            int *dst, char *error, size_t size)
{
    char text [16];
    if (s_get_str (obj, key, text, sizeof text, error, size))
        return -1;
    if (parse (text, dst))
        return s_fail (error, size, "field \"%s\" has an unknown value", key);
    return 0;
}

//  Adapters so one s_get_name serves the three enums.
static int
s_parse_fit (const char *text, int *value)
{
    imgp_fit_t fit = IMGP_FIT_INSIDE;
    int rc = imgp_fit_parse (text, &fit);
    *value = (int) fit;
    return rc;
}

static int
s_parse_format (const char *text, int *value)
{
    imgp_format_t format = IMGP_FORMAT_PNG;
    int rc = imgp_format_parse (text, &format);
    *value = (int) format;
    return rc;
}

static int
s_parse_state (const char *text, int *value)
{
    imgp_state_t state = IMGP_STATE_QUEUED;
    int rc = imgp_state_parse (text, &state);
    *value = (int) state;
    return rc;
}

static const s_node_t *
s_get_object (const s_node_t *obj, const char *key, char *error, size_t size)
{
    const s_node_t *value = s_get (obj, key, error, size);
    if (value && !s_is (value, S_OBJECT)) {
        s_fail (error, size, "field \"%s\" is not an object", key);
        return NULL;
    }
    return value;
}

static int
s_parse_gravity (const char *text, int *value)
{
    imgp_gravity_t gravity = IMGP_GRAVITY_CENTRE;
    int rc = imgp_gravity_parse (text, &gravity);
    *value = (int) gravity;
    return rc;
}

//  An optional boolean member; absent leaves *dst.
static int
s_get_bool_opt (const s_node_t *obj, const char *key, bool *dst, char *error, size_t size)
{
    const s_node_t *value = s_find (obj, key);
    if (!value)
        return 0;
    if (!s_is (value, S_TRUE) && !s_is (value, S_FALSE))
        return s_fail (error, size, "field \"%s\" is not a boolean", key);
    *dst = s_is (value, S_TRUE);
    return 0;
}

//  [w,h] as a box; sides are range-checked by the callers' checks.
static int
s_read_box (const s_node_t *node, const char *key, imgp_size_t *box, char *error,
            size_t size)
{
    const s_node_t *w = s_is (node, S_ARRAY) ? node->child : NULL;
    const s_node_t *h = w ? w->next : NULL;
    if (!s_is (w, S_INT) || !s_is (h, S_INT) || h->next
    ||  w->integer < 0 || w->integer > INT_MAX || h->integer < 0 || h->integer > INT_MAX)
        return s_fail (error, size, "field \"%s\" is not [width,height]", key);
    box->width = (int) w->integer;
    box->height = (int) h->integer;
    return 0;
}

//  "sizes": [[w,h],...], 1..8 of them.
static int
s_read_sizes (const s_node_t *node, imgp_opts_t *opts, char *error, size_t size)
{
    if (!s_is (node, S_ARRAY))
        return s_fail (error, size, "field \"sizes\" is not an array");
    int count = 0;
    for (const s_node_t *item = node->child; item; item = item->next) {
        if (count == IMGP_SIZES_MAX)
            return s_fail (error, size, "field \"sizes\" has more than %d boxes",
                           IMGP_SIZES_MAX);
        if (s_read_box (item, "sizes", &opts->sizes [count], error, size))
            return -1;
        count++;
    }
    if (count == 0)
        return s_fail (error, size, "field \"sizes\" is empty");
    opts->size_count = count;
    return 0;
}

//  The members added with sizes and renditions: optional, so an old
//  record or an old peer's message reads as before (one box, centre, no
//  background, first frame: the defaults s_opts_read starts from).
static int
s_opts_read_new (const s_node_t *obj, imgp_opts_t *opts, char *error, size_t size)
{
    opts->sizes [0] = (imgp_size_t) { opts->width, opts->height };
    int gravity = 0;
    if (s_find (obj, "gravity")
    &&  s_get_name (obj, "gravity", s_parse_gravity, &gravity, error, size))
        return -1;
    opts->gravity = (imgp_gravity_t) gravity;
    if (s_find (obj, "background")) {
        char text [16];
        if (s_get_str (obj, "background", text, sizeof text, error, size))
            return -1;
        if (text [0] != '#' || strlen (text) != 9
        ||  imgp_opts_background_parse (text, opts->background))
            return s_fail (error, size, "field \"background\" is not \"#rrggbbaa\"");
    }
    if (s_get_bool_opt (obj, "animated", &opts->animated, error, size))
        return -1;
    const s_node_t *sizes = s_find (obj, "sizes");
    if (!sizes)
        return 0;
    if (s_read_sizes (sizes, opts, error, size))
        return -1;
    //  The encoder writes "sizes" only for two boxes or more, width x height
    //  first; one box that is not width x height would come back changed.
    if (opts->sizes [0].width != opts->width || opts->sizes [0].height != opts->height)
        return s_fail (error, size, "field \"sizes\" does not start with [width,height]");
    return 0;
}

static int
s_opts_read (const s_node_t *obj, imgp_opts_t *opts, char *error, size_t size)
{
    if (!s_is (obj, S_OBJECT))
        return s_fail (error, size, "opts is not an object");
    int fit, format;
    imgp_opts_default (opts);       //  the optional members start at their default
    if (s_get_int (obj, "width", &opts->width, error, size)
    ||  s_get_int (obj, "height", &opts->height, error, size)
    ||  s_get_name (obj, "fit", s_parse_fit, &fit, error, size)
    ||  s_get_name (obj, "format", s_parse_format, &format, error, size)
    ||  s_get_int (obj, "quality", &opts->quality, error, size))
        return -1;
    opts->fit = (imgp_fit_t) fit;
    opts->format = (imgp_format_t) format;
    const s_node_t *enlarge = s_get (obj, "enlarge", error, size);
    if (!enlarge)
        return -1;
    if (!s_is (enlarge, S_TRUE) && !s_is (enlarge, S_FALSE))
        return s_fail (error, size, "field \"enlarge\" is not a boolean");
    opts->enlarge = s_is (enlarge, S_TRUE);
    if (s_opts_read_new (obj, opts, error, size))
        return -1;
    return s_check_opts (opts, error, size);
}

static int
s_result_read (const s_node_t *obj, imgp_result_t *result, char *error, size_t size)
{
    if (!s_is (obj, S_OBJECT))
        return s_fail (error, size, "result is not an object");
    int format;
    if (s_get_int (obj, "width", &result->width, error, size)
    ||  s_get_int (obj, "height", &result->height, error, size)
    ||  s_get_name (obj, "format", s_parse_format, &format, error, size)
    ||  s_get_int64 (obj, "bytes", &result->bytes, error, size)
    ||  s_get_int64 (obj, "ms", &result->ms, error, size))
        return -1;
    result->format = (imgp_format_t) format;
    result->box = (imgp_size_t) { 0, 0 };
    result->etag [0] = '\0';
    const s_node_t *box = s_find (obj, "box");
    if (box && s_read_box (box, "box", &result->box, error, size))
        return -1;
    if (s_find (obj, "etag")
    &&  s_get_str (obj, "etag", result->etag, sizeof result->etag, error, size))
        return -1;
    return s_check_result (result, error, size);
}

//  An array of results, 0..max of them.
static int
s_results_read (const s_node_t *array, imgp_result_t *results, int max, int *count,
                char *error, size_t size)
{
    if (!s_is (array, S_ARRAY))
        return s_fail (error, size, "results is not an array");
    int n = 0;
    for (const s_node_t *item = array->child; item; item = item->next) {
        if (n == max)
            return s_fail (error, size, "results has more than %d entries", max);
        if (s_result_read (item, &results [n], error, size))
            return -1;
        n++;
    }
    *count = n;
    return 0;
}

int
imgp_msg_opts_from_json (json_t *obj, imgp_opts_t *opts, char *error, size_t size)
{
    if (!json_is_object (obj))
        return s_fail (error, size, "opts is not an object");
    s_pool_t pool;
    int rc = s_opts_read (s_json_nodes (&pool, obj), opts, error, size);
    free (pool.nodes);
    return rc;
}

int
imgp_msg_result_from_json (json_t *obj, imgp_result_t *result, char *error, size_t size)
{
    if (!json_is_object (obj))
        return s_fail (error, size, "result is not an object");
    s_pool_t pool;
    int rc = s_result_read (s_json_nodes (&pool, obj), result, error, size);
    free (pool.nodes);
    return rc;
}

int
imgp_msg_results_from_json (json_t *array, imgp_result_t *results, int max, int *count,
                            char *error, size_t size)
{
    if (!json_is_array (array))
        return s_fail (error, size, "results is not an array");
    s_pool_t pool;
    int rc = s_results_read (s_json_nodes (&pool, array), results, max, count, error, size);
    free (pool.nodes);
    return rc;
}

static int
s_read_opts (const s_node_t *root, imgp_opts_t *opts, char *error, size_t size)
{
    const s_node_t *obj = s_get_object (root, "opts", error, size);
    return obj ? s_opts_read (obj, opts, error, size) : -1;
}

//  "results", or the single "result" of a peer from before renditions.
static int
s_read_results (const s_node_t *root, imgp_msg_t *self, char *error, size_t size)
{
    const s_node_t *array = s_find (root, "results");
    if (array)
        return s_results_read (array, self->results, IMGP_RESULTS_MAX, &self->result_count,
                               error, size);
    const s_node_t *obj = s_get_object (root, "result", error, size);
    if (!obj || s_result_read (obj, &self->results [0], error, size))
        return -1;
    self->result_count = 1;
    return 0;
}

static int
s_read_histo (const s_node_t *obj, const char *key, imgp_histo_t *histo, char *error,
              size_t size)
{
    const s_node_t *value = s_get_object (obj, key, error, size);
    if (!value)
        return -1;
    const s_node_t *counts = s_find (value, "counts");
    size_t count = 0;
    for (const s_node_t *item = counts ? counts->child : NULL; item; item = item->next)
        count++;
    if (!s_is (counts, S_ARRAY) || count != IMGP_STATS_BUCKETS + 1)
        return s_fail (error, size, "stats.%s.counts is not an array of %d integers", key,
                       IMGP_STATS_BUCKETS + 1);
    int b = 0;
    for (const s_node_t *item = counts->child; item; item = item->next, b++) {
        if (!s_is (item, S_INT))
            return s_fail (error, size, "stats.%s.counts has a non-integer", key);
        histo->counts [b] = item->integer;
    }
    return s_get_int64 (value, "sum", &histo->sum_ms, error, size);
}

static int
s_read_stats (const s_node_t *root, imgp_stats_t *stats, char *error, size_t size)
{
    const s_node_t *obj = s_get_object (root, "stats", error, size);
    if (!obj)
        return -1;
    for (size_t i = 0; i < S_STATS_FIELDS; i++)
        if ((i < S_STATS_REQUIRED || s_find (obj, s_stats_fields [i].name))
        &&  s_get_int64 (obj, s_stats_fields [i].name, s_stats_field (stats, i), error, size))
            return -1;
    for (size_t i = 0; i < S_STATS_HISTOS; i++)
        if (s_read_histo (obj, s_stats_histos [i].name, s_stats_histo (stats, i), error, size))
            return -1;
    return 0;
}

//  FETCH's "box" and "accept", each when present.
static int
s_read_want (const s_node_t *root, imgp_msg_t *self, char *error, size_t size)
{
    const s_node_t *box = s_find (root, "box");
    if (box && s_read_box (box, "box", &self->box, error, size))
        return -1;
    const s_node_t *accept = s_find (root, "accept");
    if (!accept)
        return 0;
    if (!s_is (accept, S_ARRAY))
        return s_fail (error, size, "field \"accept\" is not an array");
    int count = 0;
    for (const s_node_t *item = accept->child; item; item = item->next) {
        char text [16];
        imgp_format_t format;
        if (count == IMGP_ACCEPT_MAX)
            return s_fail (error, size, "field \"accept\" has more than %d formats",
                           IMGP_ACCEPT_MAX);
        if (!s_is (item, S_STRING) || item->len >= sizeof text)
            return s_fail (error, size, "field \"accept\" holds a non-format");
        memcpy (text, item->text, item->len);
        text [item->len] = '\0';
        if (strlen (text) != item->len || imgp_format_parse (text, &format)
        ||  format == IMGP_FORMAT_AUTO)
            return s_fail (error, size, "field \"accept\" holds an unknown format");
        self->accept [count++] = format;
    }
    self->accept_count = count;
    return 0;
}

//  The optional fields, each read only when present.
static int
s_read_optional (const s_node_t *root, imgp_msg_t *self, unsigned fields, char *error,
                 size_t size)
{
    if (s_find (root, "tag") && s_get_int64 (root, "tag", &self->tag, error, size))
        return -1;
    if ((fields & F_OWNER) && s_find (root, "owner")
    &&  s_get_str (root, "owner", self->owner, sizeof self->owner, error, size))
        return -1;
    if ((fields & F_WAIT) && s_find (root, "wait_ms")
    &&  s_get_int (root, "wait_ms", &self->wait_ms, error, size))
        return -1;
    if ((fields & F_STATS) && s_find (root, "stats")) {
        if (s_read_stats (root, &self->stats, error, size))
            return -1;
        self->has_stats = true;
    }
    //  present means named: "" would read back the same as absent
    if ((fields & F_HOST) && s_find (root, "host")
    &&  (s_get_str (root, "host", self->host, sizeof self->host, error, size)
      || !self->host [0]))
        return s_fail (error, size, "field \"host\" is not a host name");
    if ((fields & F_WORKER_OPT) && s_find (root, "worker")
    &&  (s_get_str (root, "worker", self->worker, sizeof self->worker, error, size)
      || !self->worker [0]))
        return s_fail (error, size, "field \"worker\" is not a worker name");
    if ((fields & F_WANT) && s_read_want (root, self, error, size))
        return -1;
    if ((fields & F_RENDITION) && s_find (root, "rendition")
    &&  s_get_int (root, "rendition", &self->rendition, error, size))
        return -1;
    if ((fields & F_RENDITION) && s_get_bool_opt (root, "pending", &self->pending, error, size))
        return -1;
    return 0;
}

//  Read the fields a type uses from the header into `self`. INFO's state
//  is read first, since it decides which other fields are present.
static int
s_read_fields (const s_node_t *root, imgp_msg_t *self, const s_type_spec_t *spec,
               char *error, size_t size)
{
    int state = 0;
    if ((spec->fields & F_STATE)
    &&  s_get_name (root, "state", s_parse_state, &state, error, size))
        return -1;
    self->state = (imgp_state_t) state;
    unsigned fields = s_fields (self, spec);
    bool want_id = (fields & F_ID) || ((fields & F_ID_OPT) && s_find (root, "id"));
    if ((want_id && s_get_str (root, "id", self->id, sizeof self->id, error, size))
    ||  ((fields & F_OPTS) && s_read_opts (root, &self->opts, error, size))
    ||  ((fields & F_TIMES)
      && (s_get_int64 (root, "created_at", &self->created_at, error, size)
       || s_get_int64 (root, "updated_at", &self->updated_at, error, size)))
    ||  ((fields & F_ATTEMPTS) && s_get_int (root, "attempts", &self->attempts, error, size))
    ||  ((fields & F_SLOTS) && s_get_int (root, "slots", &self->slots, error, size))
    ||  ((fields & F_CREDIT) && s_get_int (root, "credit", &self->credit, error, size))
    ||  ((fields & F_WORKER)
      && s_get_str (root, "worker", self->worker, sizeof self->worker, error, size))
    ||  ((fields & F_ERROR)
      && (s_get_str (root, "code", self->code, sizeof self->code, error, size)
       || s_get_str (root, "message", self->message, sizeof self->message, error, size)))
    ||  ((fields & F_RESULT) && s_read_results (root, self, error, size))
    ||  s_read_optional (root, self, fields, error, size))
        return -1;
    return 0;
}

//  The type named by a header's "type" string, compared as a C string (up
//  to a NUL, as jansson's strcmp did); 0 when unknown.
static int
s_type_index (const s_node_t *type)
{
    size_t len = strnlen (type->text, type->len);
    for (int i = 1; i < S_TYPES; i++)
        if (s_types [i].wire && strlen (s_types [i].wire) == len
        &&  memcmp (s_types [i].wire, type->text, len) == 0)
            return i;
    return 0;
}

//  A message from the header's tree, or NULL with the reason.
static imgp_msg_t *
s_decode_tree (const s_node_t *root, char *error, size_t size)
{
    imgp_msg_t *self = NULL;
    const s_node_t *version = s_find (root, "v");
    const s_node_t *type = s_find (root, "type");
    if (!s_is (root, S_OBJECT))
        s_fail (error, size, "header is not a JSON object");
    else
    if (!s_is (version, S_INT))
        s_fail (error, size, "header has no integer protocol version \"v\"");
    else
    if (version->integer != IMGP_PROTO_VERSION)
        s_fail (error, size, "unsupported protocol version %lld", (long long) version->integer);
    else
    if (!s_is (type, S_STRING))
        s_fail (error, size, "header has no string \"type\"");
    else {
        int i = s_type_index (type);
        if (i == 0) {
            char name [33];
            size_t len = strnlen (type->text, type->len);
            memcpy (name, type->text, len < 32 ? len : 32);
            name [len < 32 ? len : 32] = '\0';
            s_printable (name, sizeof name, name);
            s_fail (error, size, "unknown message type \"%s\"", name);
        }
        else {
            self = imgp_msg_new ((imgp_msg_type_t) i);
            if (s_read_fields (root, self, &s_types [i], error, size))
                imgp_msg_destroy (&self);
        }
    }
    return self;
}

//  Parse the header frame into a new message (without data), or NULL.
static imgp_msg_t *
s_decode_header (zframe_t *frame, char *error, size_t size)
{
    size_t len = zframe_size (frame);
    if (len == 0 || len > IMGP_HEADER_MAX) {
        s_fail (error, size, "header frame of %zu bytes is not in 1..%d", len, IMGP_HEADER_MAX);
        return NULL;
    }
    const char *text = (const char *) zframe_data (frame);
    s_node_t nodes [S_FAST_NODES];
    s_pool_t pool = { nodes, S_FAST_NODES, 0 };
    const s_node_t *root = s_fast_parse (&pool, text, len);
    json_t *json = NULL;
    if (!root) {
        json_error_t jerr;
        json = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json) {
            char reason [sizeof jerr.text];
            s_printable (reason, sizeof reason, jerr.text);
            s_fail (error, size, "header is not JSON: %s", reason);
            return NULL;
        }
        root = s_json_nodes (&pool, json);
    }
    imgp_msg_t *self = s_decode_tree (root, error, size);
    if (json) {
        free (pool.nodes);
        json_decref (json);
    }
    return self;
}

//  Decode a message of `frames` frames (after any envelope): the header
//  and the data frame (NULL when none) are taken, whatever the outcome.
static imgp_msg_t *
s_decode_frames (zframe_t **header_p, zframe_t **data_p, size_t frames, char *error,
                 size_t size)
{
    imgp_msg_t *self = NULL;
    if (frames == 0)
        s_fail (error, size, "empty message");
    else
    if (frames > 2)
        s_fail (error, size, "%zu frames, at most 2 allowed", frames);
    else {
        self = s_decode_header (*header_p, error, size);
        if (self) {
            self->data_frame = *data_p;         //  NULL when none
            *data_p = NULL;
            if (s_check (self, self->data_frame != NULL, error, size))
                imgp_msg_destroy (&self);
        }
    }
    zframe_destroy (header_p);
    zframe_destroy (data_p);
    return self;
}

imgp_msg_t *
imgp_msg_decode (zmsg_t **zmsg_p, char *error, size_t error_size)
{
    char unused [8];
    if (!error) {
        error = unused;
        error_size = sizeof unused;
    }
    error [0] = '\0';
    zmsg_t *zmsg = zmsg_p ? *zmsg_p : NULL;
    if (zmsg_p)
        *zmsg_p = NULL;
    size_t frames = zmsg ? zmsg_size (zmsg) : 0;
    zframe_t *header = frames == 1 || frames == 2 ? zmsg_pop (zmsg) : NULL;
    zframe_t *data = frames == 2 ? zmsg_pop (zmsg) : NULL;
    imgp_msg_t *self = s_decode_frames (&header, &data, frames, error, error_size);
    zmsg_destroy (&zmsg);
    return self;
}

//  --------------------------------------------------------------------------
//  Sockets

static int
s_socket_type (void *handle)
{
    int type = -1;
    size_t size = sizeof type;
    if (zmq_getsockopt (handle, ZMQ_TYPE, &type, &size))
        return -1;
    return type;
}

//  Send the image bytes of a message as the last frame, without copying.
static int
s_send_data (imgp_msg_t *self, void *handle)
{
    if (self->data_frame)
        return zframe_send (&self->data_frame, handle, 0);
    zmq_msg_t msg;
    void (*free_fn) (void *, void *) = self->data_free ? self->data_free : s_free_buf;
    if (zmq_msg_init_data (&msg, self->data_buf, self->data_len, free_fn, NULL))
        return -1;      //  data_buf still ours: freed by destroy
    self->data_buf = NULL;          //  libzmq owns the bytes now
    self->data_len = 0;
    if (zmq_msg_send (&msg, handle, 0) == -1) {
        int saved = errno;
        zmq_msg_close (&msg);       //  frees the bytes through free_fn
        errno = saved;
        return -1;
    }
    return 0;
}

//  Send the frames that precede the header: routing id and delimiter on a
//  ROUTER, the delimiter alone on a DEALER (as REQ would).
static int
s_send_envelope (imgp_msg_t *self, void *handle, int type)
{
    if (type == ZMQ_ROUTER) {
        if (!self->routing_id) {
            imgp_error ("job=%s event=refused_to_send type=%s reason=\"no routing id on a ROUTER\"",
                        self->id [0] ? self->id : "-", imgp_msg_type_name (self->type));
            errno = EINVAL;
            return -1;
        }
        if (zframe_send (&self->routing_id, handle, ZFRAME_MORE))
            return -1;
    }
    if (type == ZMQ_ROUTER || type == ZMQ_DEALER)
        if (zmq_send (handle, "", 0, ZMQ_SNDMORE) == -1)
            return -1;
    return 0;
}

int
imgp_msg_send (imgp_msg_t **self_p, void *sock)
{
    if (!self_p || !*self_p)
        return -1;
    imgp_msg_t *self = *self_p;
    int rc = -1;
    void *handle = sock ? zsock_resolve (sock) : NULL;
    int type = handle ? s_socket_type (handle) : -1;
    char text [S_HEADER_ROOM];
    size_t len = type >= 0 ? s_header_write (self, text) : 0;
    if (len && s_send_envelope (self, handle, type) == 0) {
        bool has_data = self->data_frame || self->data_buf;
        int flags = has_data ? ZMQ_SNDMORE : 0;
        if (zmq_send (handle, text, len, flags) == (int) len)
            rc = has_data ? s_send_data (self, handle) : 0;
    }
    if (!len && type < 0)
        errno = ENOTSOCK;
    else
    if (!len)
        errno = EINVAL;
    int saved = errno;
    imgp_msg_destroy (self_p);
    errno = saved;
    return rc;
}

//  The frames of one received message, kept in order up to S_PARTS_MAX
//  (the most a valid one has: routing id, delimiter, header, data, and
//  one more to tell "too many"); the rest are received, counted, freed.
#define S_PARTS_MAX 5

typedef struct {
    zframe_t *frames [S_PARTS_MAX];     //  the first frames, owned
    size_t count;                       //  frames received, all of them
    size_t next;                        //  the first frame not taken yet
} s_parts_t;

static void
s_parts_destroy (s_parts_t *parts)
{
    for (size_t i = 0; i < S_PARTS_MAX; i++)
        zframe_destroy (&parts->frames [i]);
}

//  Take the next frame (the caller's), NULL when none is left.
static zframe_t *
s_parts_take (s_parts_t *parts)
{
    zframe_t *frame = NULL;
    if (parts->next < parts->count && parts->next < S_PARTS_MAX) {
        frame = parts->frames [parts->next];
        parts->frames [parts->next] = NULL;
    }
    if (parts->next < parts->count)
        parts->next++;
    return frame;
}

//  Receive every frame of one message, frame by frame: no zmsg and no
//  list nodes (czmq's zmsg_recv made a dozen allocations a message).
//  Returns 0, or -1 when nothing came (interrupted, timeout: errno says).
static int
s_parts_recv (s_parts_t *parts, void *handle)
{
    memset (parts, 0, sizeof *parts);
    bool more = true;
    while (more) {
        zframe_t *frame = zframe_recv (handle);
        if (!frame) {
            int saved = errno;
            s_parts_destroy (parts);
            errno = saved;
            return -1;
        }
        more = zframe_more (frame);
        if (parts->count < S_PARTS_MAX)
            parts->frames [parts->count] = frame;
        else
            zframe_destroy (&frame);
        parts->count++;
    }
    return 0;
}

//  Strip the envelope a ROUTER (routing id, empty delimiter) or a DEALER
//  (empty delimiter) receives before the message. A ROUTER's delimiter is
//  handed back in *sender_p: it carries the connection's properties, read
//  only when asked (imgp_msg_peer_address, imgp_msg_peer_key), not on
//  every message. Returns 0 or -1.
static int
s_recv_envelope (s_parts_t *parts, int type, zframe_t **routing_id_p, zframe_t **sender_p,
                 char *error, size_t size)
{
    if (type == ZMQ_ROUTER) {
        *routing_id_p = s_parts_take (parts);
        if (!*routing_id_p || zframe_size (*routing_id_p) == 0)
            return s_fail (error, size, "no routing id");
    }
    if (type == ZMQ_ROUTER || type == ZMQ_DEALER) {
        zframe_t *delimiter = s_parts_take (parts);
        //  The frames that came over the wire carry the connection's
        //  properties; the routing id a ROUTER makes up may not (libzmq
        //  drops them when the message was looked at by a poll first).
        bool ok = delimiter && zframe_size (delimiter) == 0;
        if (ok && type == ZMQ_ROUTER)
            *sender_p = delimiter;
        else
            zframe_destroy (&delimiter);
        if (!ok)
            return s_fail (error, size, "envelope has no empty delimiter frame");
    }
    return 0;
}

imgp_msg_t *
imgp_msg_recv (void *sock)
{
    void *handle = sock ? zsock_resolve (sock) : NULL;
    int type = handle ? s_socket_type (handle) : -1;
    if (type < 0) {
        errno = ENOTSOCK;
        return NULL;
    }
    s_parts_t parts;
    if (s_parts_recv (&parts, handle))
        return NULL;            //  interrupted or timed out; errno says
    char error [256] = "";
    zframe_t *routing_id = NULL, *sender = NULL;
    imgp_msg_t *self = NULL;
    if (s_recv_envelope (&parts, type, &routing_id, &sender, error, sizeof error) == 0) {
        size_t frames = parts.count - parts.next;
        zframe_t *header = frames == 1 || frames == 2 ? s_parts_take (&parts) : NULL;
        zframe_t *data = frames == 2 ? s_parts_take (&parts) : NULL;
        self = s_decode_frames (&header, &data, frames, error, sizeof error);
    }
    s_parts_destroy (&parts);
    if (!self) {
        zframe_destroy (&sender);
        zframe_destroy (&routing_id);
        imgp_warn ("event=malformed_dropped reason=\"%s\"", error);
        errno = EPROTO;
        return NULL;
    }
    self->routing_id = routing_id;
    self->sender = sender;
    return self;
}

bool
imgp_msg_owner_valid (const char *name)
{
    return name && s_check_text ("owner", name, IMGP_OWNER_MAX, S_TEXT_OWNER, NULL, 0) == 0;
}

bool
imgp_msg_worker_valid (const char *name)
{
    return name && s_check_text ("worker", name, IMGP_WORKER_MAX, S_TEXT_NAME, NULL, 0) == 0;
}

bool
imgp_msg_code_valid (const char *code)
{
    return code && s_check_text ("code", code, IMGP_CODE_MAX, S_TEXT_CODE, NULL, 0) == 0;
}

bool
imgp_msg_host_valid (const char *name)
{
    return name && s_check_text ("host", name, IMGP_HOST_MAX, S_TEXT_NAME, NULL, 0) == 0;
}

const char *
imgp_msg_routing_name (imgp_msg_t *self)
{
    if (!self->routing_text [0] && self->routing_id) {
        size_t len = zframe_size (self->routing_id);
        char name [IMGP_WORKER_MAX + 1];
        if (len > 0 && len <= IMGP_WORKER_MAX) {
            memcpy (name, zframe_data (self->routing_id), len);
            name [len] = '\0';
            //  a NUL inside makes strlen shorter than len: not a name
            if (strlen (name) == len && imgp_msg_worker_valid (name))
                memcpy (self->routing_text, name, len + 1);
        }
    }
    return self->routing_text;
}

//  Copy property `property` of the connection `self` came on into `dst`,
//  cut to fit `size`; "" when it has none or the value is over `max` (the
//  codec hands out whole values only).
static char *
s_sender_meta (imgp_msg_t *self, const char *property, size_t max, char *dst, size_t size)
{
    assert (dst && size > 0);
    const char *value = self->sender ? zframe_meta (self->sender, property) : NULL;
    if (!value || strlen (value) > max)
        value = "";
    snprintf (dst, size, "%s", value);
    return dst;
}

char *
imgp_msg_peer_address (imgp_msg_t *self, char *dst, size_t size)
{
    return s_sender_meta (self, "Peer-Address", IMGP_ADDRESS_MAX, dst, size);
}

char *
imgp_msg_peer_key (imgp_msg_t *self, char *dst, size_t size)
{
    return s_sender_meta (self, "User-Id", IMGP_KEY_MAX, dst, size);
}

int
imgp_msg_max_size (int64_t max_image)
{
    assert (max_image >= 0 && max_image <= IMGP_UPLOAD_LIMIT_MAX);
    return (int) max_image + IMGP_HEADER_MAX + 1024;
}

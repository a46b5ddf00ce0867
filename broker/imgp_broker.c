/*  imgp_broker — see imgp_broker.h.

    One thread owns everything: the three sockets, the status table, the
    resizer peers and the spool. A zmq_poll loop (fair across sockets, unlike zpoller's first-
    ready) serves messages in small batches and runs the housekeeping tick
    every config.tick_ms: lost workers, late jobs, TTL. Dispatch runs after
    every pass, so a heartbeat or a finished job starts the next job at once.

    Decisions worth knowing:
    - ACCEPTED is sent only after the original and the record are appended
      to the spool's log and the job is in the table (invariant 1). The
      ACCEPTEDs of a loop pass wait for its end (s_end_pass): one
      imgp_spool_sync for them all (with --fsync an fdatasync: group
      commit), then they go. A repeated SUBMIT of a held id is answered
      ACCEPTED again (also at the end of the pass) without touching the
      spool (idempotent).
    - The jobs link is the Guide's credit-based ventilator (a ROUTER; each
      resizer a DEALER whose routing id is its worker name). A READY sets
      a peer's credit, each JOB takes one, each DONE/FAILED gives one back;
      imgp_peers picks the peer (a free working slot first). A send never
      waits (sndtimeo 0); ROUTER_MANDATORY makes a send to a peer that is
      gone fail (EHOSTUNREACH) instead of vanishing: that peer's credit is
      dropped and the job stays at the front for the next peer.
    - A job's worker is set at dispatch and saved before the JOB leaves.
      STARTED/DONE/FAILED count only from that peer (routing id), for that
      attempt, while the job is unfinished; every resizer message's
      `worker` must equal its routing id. A result for a job that is
      queued (re-queued after a timeout, or reloaded after a restart) still
      counts when it is that worker's, for that attempt: the thumbnail is
      real. First result wins.
    - DONE's bytes must be the image they claim (imgp_magic_check) before
      they are stored; otherwise the job is re-queued at once.
    - attempts counts dispatches. A re-queue (dispatch timeout, job timeout,
      lost worker) of a job that used all --max-attempts fails it with
      attempts_exhausted. Resizer FAILED results are final.
    - The record is written at intake, before each JOB leaves (with the
      new attempt count, PROTOCOL.md 6.2), at a re-queue and when the job
      ends. So a restarted broker knows every attempt: the STARTED and the
      result of an attempt made before the restart still match, and
      --max-attempts holds across restarts. A STARTED is not written: a
      restart re-queues a processing job anyway, so that write would only
      store a state nobody reads. A job costs as many writes as when the
      STARTED was written and the dispatch was not (with both, a broker-
      bound benchmark dispatched about 20% fewer jobs per second). With
      --fsync the dispatch record is synced at the end of the pass, after
      its JOB left: a power cut in between grants that job one attempt
      more (kill -9 does not: the write is in the page cache).
    - One job never stalls the queue: a job the broker cannot dispatch (its
      original unreadable, a JOB the codec refuses, its attempts used up
      before a restart) ends failed, and dispatch goes on with the next.
    - A job ends only once its final record is stored (s_finish; for DONE
      the thumbnail and the record in one write): the table follows the
      disk, so the API and the disk never disagree, with or without a
      restart. When that write fails (a full disk) the job goes back to
      the queue, its attempt given back, and dispatch pauses until the
      disk has room again (s_store_failed, s_check_store): a full disk
      never fails a job; --max-store-retries bounds a disk that says it
      has room and still fails (then failed spool_full). The original is
      let go after the final record (in the log, that record retires it;
      with --keep-originals it stays until the TTL). A record that says
      queued/processing without an original (a spool from an older
      broker, or changed by hand) reloads as failed, code internal;
      spool_damaged when the spool found its bytes failed their checksum.
    - Intake refuses with spool_full (HTTP 507) when the spool cannot
      write the upload or it would pass --max-spool-bytes of live bytes.
    - Other record writes that fail (dispatch, re-queue) are logged by the
      spool and otherwise ignored: the states they write are unfinished
      either way, and a stale record only costs a restart an attempt more
      or less.
    - A job's owner is set by its SUBMIT and never changes; STATUS/FETCH of
      another owner is answered as an unknown id (PROTOCOL.md 6.4).
    - A STATUS/FETCH with wait_ms on an unfinished job is held in
      imgp_waiters (a chain per job, a heap by deadline). It is woken in
      s_wake, called from s_finish (every way a job ends goes through it,
      and only an unfinished job is held on, so none is left when a
      finished one is forgotten); a woken FETCH gets the thumbnail from the
      DONE in hand, not read back from the spool once per waiter. Its
      deadline bounds the poll timeout, so an expired wait is answered on
      time, not at the next tick. Held requests are memory only: a restart
      drops them and the requester asks again.
    - Renditions: a DONE carries one per size, stored as ONE OUT entry (the
      bytes end to end, in results[] order) with the final record; a FETCH
      names its box and, for format=auto, the formats its client takes, and
      gets INFO with every result and one rendition's bytes (a copy of that
      slice when there are several). A format an auto job's client prefers
      and the job has not made is made by a variant job: an ordinary table
      entry (own id, parent's options in that format, parent's original)
      that is never written to the spool; its renditions are appended to
      the parent's results and OUT in one write (s_variant_end). So a
      restart forgets a variant in the making, never one that was made.
    - PONG stats: counters and histograms are bumped where things happen
      (O(1)); the gauges are read from the table when a PING comes.
*/
#include "imgp_broker.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "imgp_curve.h"
#include "imgp_defaults.h"
#include "imgp_log.h"
#include "imgp_magic.h"
#include "imgp_msg.h"
#include "imgp_peers.h"
#include "imgp_spool.h"
#include "imgp_table.h"
#include "imgp_waiters.h"

#define S_FRONTEND_HWM 100000       //  replies and requests queued per frontend link
#define S_SOCKETS 3
#define S_BATCH_JOBS 1024           //  resizer messages per loop pass, at most
#define S_BATCH_STATUS 256          //  status requests per loop pass, at most
#define S_BATCH_INTAKE 16           //  SUBMITs per slice of a pass (see s_serve_pass)
#define S_INTAKE_SLICES 4           //  slices of SUBMITs per pass, at most
#define S_PIPE_EVERY 8              //  busy passes between looks at the pipe
#define S_TICK_MS 100               //  housekeeping period when config has 0
#define S_LINGER_MS 1000
#define S_PEER_HEARTBEAT_MS 1000    //  ZMTP heartbeat interval on the jobs link
#define S_PREFETCH_BYTES (64 * 1024)    //  a job goes ahead only behind originals this small
#define S_JOBS_HWM 8                    //  JOBs queued towards one resizer, at most
#define S_WARN_EVERY_MS 60000       //  a refusal from a nameless peer, logged this often
#define S_STRINGS 6                 //  config strings the handle keeps copies of
#define S_STORE_SLACK (256 << 10)   //  room beyond a result that failed before dispatch resumes

static const char *s_socket_names [S_SOCKETS] = { "intake", "status", "jobs" };

//  The caller's handle: the actor plus the copies of the config strings.
struct _imgp_broker_t {
    zactor_t *actor;                    //  the server thread
    imgp_broker_config_t config;        //  limits; strings point into `strings`
    char *strings [S_STRINGS];          //  owned copies: 3 endpoints, data_dir, 2 key paths
    char *endpoints [S_SOCKETS];        //  real bound endpoints, from the actor
};

//  The actor's state, owned by the actor thread.
typedef struct {
    zsock_t *pipe;                      //  commands from the caller
    const imgp_broker_config_t *config; //  borrowed from imgp_broker_t
    zsock_t *sockets [S_SOCKETS];       //  by imgp_broker_socket_t
    char *endpoints [S_SOCKETS];        //  resolved endpoints, owned
    imgp_spool_t *spool;                //  the on-disk truth
    imgp_table_t *table;                //  the in-memory index
    imgp_peers_t *peers;                //  resizers on the jobs link, by routing id
    imgp_curve_t *curve;                //  CURVE server keys and zauth, NULL: plain
    int64_t nameless_warned;            //  monotonic ms a nameless peer was last logged
    int64_t orphan_warned;              //  monotonic ms a key_mismatch without a peer was logged
    imgp_waiters_t *waiters;            //  STATUS/FETCH held until their job ends
    zlistx_t *accepted;                 //  ACCEPTED replies held until the pass's spool sync
    imgp_stats_t stats;                 //  counters and histograms; PONG adds the gauges
    zhashx_t *store_failures;           //  id -> times its final record could not be stored
    bool store_blocked;                 //  a final record could not be stored: no dispatch
    uint64_t store_need;                //  ... until the disk has room for this many bytes
    int64_t next_tick;                  //  monotonic ms of next housekeeping
    bool terminated;                    //  $TERM received
} s_server_t;

typedef void (s_handler_fn) (s_server_t *self, imgp_msg_t *msg);

#define S_CONFIG imgp_broker_config_t

const imgp_conf_spec_t imgp_broker_specs [] = {
    IMGP_CONF_INTAKE (S_CONFIG, intake),
    IMGP_CONF_STATUS (S_CONFIG, status),
    IMGP_CONF_JOBS (S_CONFIG, jobs),
    IMGP_CONF_STR (S_CONFIG, data_dir, "data-dir", "./imgpipe-data",
                   "spool directory for originals, thumbnails and job records"),
    IMGP_CONF_NUM (S_CONFIG, max_queue, "max-queue", 1000, 1, 10000000,
                   "queued jobs before new ones get queue_full"),
    IMGP_CONF_NUM (S_CONFIG, max_jobs, "max-jobs", 100000, 1, 100000000,
                   "jobs held in the status table (finished ones evicted first)"),
    IMGP_CONF_MAX_UPLOAD_BYTES (S_CONFIG, max_upload_bytes),
    IMGP_CONF_NUM (S_CONFIG, max_attempts, "max-attempts", 3, 1, IMGP_ATTEMPTS_MAX,
                   "dispatches of a job before attempts_exhausted"),
    IMGP_CONF_NUM (S_CONFIG, dispatch_timeout_ms, "dispatch-timeout-ms", 10000, 10, 86400000,
                   "re-queue a job not STARTED this long after dispatch"),
    IMGP_CONF_NUM (S_CONFIG, heartbeat_timeout_ms, "heartbeat-timeout-ms", 3000, 10, 86400000,
                   "a resizer silent this long is lost; its jobs re-queued"),
    IMGP_CONF_NUM (S_CONFIG, job_timeout_ms, "job-timeout-ms", 60000, 10, 86400000,
                   "re-queue a job running longer than this"),
    IMGP_CONF_NUM (S_CONFIG, ttl_s, "ttl-s", 86400, 1, 3650LL * 86400,
                   "seconds finished jobs and thumbnails are kept"),
    IMGP_CONF_NUM (S_CONFIG, max_spool_bytes, "max-spool-bytes", 0, 0, INT64_MAX,
                   "live bytes in the spool beyond which uploads get 507 spool_full "
                   "(0: only the disk's size)"),
    IMGP_CONF_NUM (S_CONFIG, max_store_retries, "max-store-retries", 10, 1, 1000000,
                   "a job whose result could not be stored this many times, while the disk "
                   "said it had room, ends failed spool_full (a full disk pauses dispatch "
                   "instead)"),
    IMGP_CONF_FLAG (S_CONFIG, keep_originals, "keep-originals",
                    "keep a done job's original until its TTL (default: deleted once its "
                    "thumbnails are stored)"),
    IMGP_CONF_FLAG (S_CONFIG, fsync, "fsync",
                    "fdatasync the spool log once per loop pass, before that pass's ACCEPTED "
                    "replies go (survives power loss; slower)"),
    IMGP_CONF_NUM (S_CONFIG, max_waiters, "max-waiters", 10000, 0, 10000000,
                   "STATUS/FETCH requests held for wait_ms; beyond it, answered at once"),
    IMGP_CONF_STR (S_CONFIG, curve_secret, "curve-secret", "",
                   "the broker's CURVE certificate (the _secret file of imgpipe keygen); "
                   "with it every endpoint is a CURVE server"),
    IMGP_CONF_STR (S_CONFIG, curve_clients, "curve-clients", "",
                   "directory of the public certificates allowed to connect (with "
                   "--curve-secret)"),
    IMGP_CONF_FLAG (S_CONFIG, insecure, "insecure",
                    "allow binding beyond loopback without CURVE keys"),
    IMGP_CONF_END
};

//  =====================================================================
//  Replies and records

static void
s_reply (s_server_t *self, imgp_broker_socket_t which, imgp_msg_t **reply_p)
{
    imgp_msg_type_t type = (*reply_p)->type;
    char id [IMGP_ID_LEN + 1];
    snprintf (id, sizeof id, "%s", (*reply_p)->id [0] ? (*reply_p)->id : "-");
    if (imgp_msg_send (reply_p, self->sockets [which]))
        imgp_warn ("job=%s event=reply_failed type=%s socket=%s error=\"%s\"", id,
                   imgp_msg_type_name (type), s_socket_names [which], zmq_strerror (errno));
}

//  An ACCEPTED waits for the end of the pass (s_end_pass), when the
//  pass's spool writes have been synced: ACCEPTED means on disk.
static void
s_accept (s_server_t *self, imgp_msg_t **reply_p)
{
    zlistx_add_end (self->accepted, *reply_p);
    *reply_p = NULL;
}

//  The end of a loop pass: the pass's spool writes made durable (with
//  --fsync one fdatasync for them all: group commit), then its ACCEPTED
//  replies sent. When the sync fails the
//  submitters get ERROR internal instead (their jobs stay: on disk or not,
//  nobody was told they are).
static void
s_end_pass (s_server_t *self)
{
    bool synced = imgp_spool_sync (self->spool) == 0;
    imgp_msg_t *reply;
    while ((reply = zlistx_detach (self->accepted, NULL))) {
        if (!synced) {
            imgp_msg_t *error = imgp_msg_error_new (reply, "internal",
                                                    "the broker could not store the job");
            imgp_msg_destroy (&reply);
            reply = error;
        }
        s_reply (self, IMGP_BROKER_INTAKE, &reply);
    }
}

//  Save the job's record. Returns 0, or -1 (the spool logged why).
static int
s_persist (s_server_t *self, const imgp_job_t *job)
{
    if (job->parent [0])
        return 0;           //  a variant job lives in memory only (s_variant_new)
    return imgp_spool_save (self->spool, job);
}

static void
s_touch (imgp_job_t *job)
{
    job->updated_at = zclock_time ();
}

static imgp_msg_t *
s_info_new (imgp_msg_t *request, imgp_job_t *job)
{
    imgp_msg_t *info = imgp_msg_reply_new (request, IMGP_MSG_INFO);
    info->state = job->state;
    info->created_at = job->created_at;
    info->updated_at = job->updated_at;
    info->attempts = job->attempts;
    memcpy (info->worker, job->worker, sizeof info->worker);
    if (job->state == IMGP_STATE_FAILED) {
        memcpy (info->code, job->code, sizeof info->code);
        memcpy (info->message, job->message, sizeof info->message);
    }
    if (job->state == IMGP_STATE_DONE) {
        info->result_count = job->result_count;
        memcpy (info->results, job->results, job->result_count * sizeof info->results [0]);
    }
    return info;
}

//  A done job whose thumbnail failed its checksum when read back ends
//  failed spool_damaged: the client learns what happened (not "not found"
//  or a 500 on every try), and as a failed job's thumbnail is never read
//  again, that is logged once. Returns the job as the table holds it now.
//  When this record cannot be saved the disk still says done: a restart
//  reads the damaged thumbnail again and decides the same.
static imgp_job_t *
s_thumbnail_damaged (s_server_t *self, imgp_job_t *job)
{
    imgp_job_t record = *job;           //  borrowing copy (imgp_job.h)...
    record.results = NULL;              //  ...without the renditions: they go with
    record.result_count = 0;            //  the job below, and a failed job has none
    record.state = IMGP_STATE_FAILED;
    record.updated_at = zclock_time ();
    snprintf (record.code, sizeof record.code, "spool_damaged");
    snprintf (record.message, sizeof record.message, "the thumbnail was damaged on the "
              "broker's disk (checksum); upload the image again");
    if (imgp_spool_save (self->spool, &record))
        imgp_warn ("job=%s event=record_not_saved state=failed code=spool_damaged", job->id);
    imgp_table_remove (self->table, &job);
    job = imgp_table_insert (self->table, &record);
    assert (job);
    self->stats.failed++;
    imgp_info ("job=%s event=failed code=spool_damaged attempt=%d", job->id, job->attempts);
    return job;
}

//  ---------------------------------------------------------------------
//  Renditions (PROTOCOL.md 6.4): a done job holds one rendition per size,
//  and a job of format=auto more formats per size as its variant jobs
//  make them. Their bytes are one OUT entry, the renditions concatenated
//  in results[] order. A FETCH names the size it wants (`box`, default the
//  first) and, for an auto job, the formats its client accepts in order of
//  preference (`accept`).

//  The box a FETCH asks for: its `box`, or the job's first size.
static imgp_size_t
s_wanted_box (const imgp_job_t *job, const imgp_msg_t *request)
{
    if (request->box.width > 0)
        return request->box;
    return (imgp_size_t) { job->opts.width, job->opts.height };
}

//  True when the job was asked for that box (one of its sizes).
static bool
s_has_size (const imgp_job_t *job, imgp_size_t box)
{
    for (int i = 0; i < job->opts.size_count; i++)
        if (job->opts.sizes [i].width == box.width && job->opts.sizes [i].height == box.height)
            return true;
    return false;
}

//  Index of the rendition of `box` in `format`, -1 when none.
static int
s_rendition (const imgp_job_t *job, imgp_size_t box, imgp_format_t format)
{
    for (int i = 0; i < job->result_count; i++) {
        const imgp_result_t *r = &job->results [i];
        if (r->box.width == box.width && r->box.height == box.height && r->format == format)
            return i;
    }
    return -1;
}

//  A format a variant job can add to an auto job: the family (JPEG or
//  PNG) is what the job itself made.
static bool
s_variant_format (imgp_format_t format)
{
    return format == IMGP_FORMAT_WEBP || format == IMGP_FORMAT_AVIF;
}

//  The rendition a FETCH of a done job gets: -1 when the job has no such
//  size. For an auto job, the first format of the request's `accept` list
//  that is made; *better (may be NULL) is set to a format earlier in that
//  list that a variant job could still make (IMGP_FORMAT_AUTO when none),
//  the format the client would rather have. Any other job has one format:
//  that one, whatever the list says (the client asked for it at upload).
static int
s_choose (const imgp_job_t *job, const imgp_msg_t *request, imgp_format_t *better)
{
    if (better)
        *better = IMGP_FORMAT_AUTO;
    imgp_size_t box = s_wanted_box (job, request);
    int fallback = -1;          //  the box's first rendition: the family
    for (int i = 0; i < job->result_count && fallback < 0; i++)
        if (job->results [i].box.width == box.width && job->results [i].box.height == box.height)
            fallback = i;
    if (fallback < 0 || job->opts.format != IMGP_FORMAT_AUTO)
        return fallback;
    for (int a = 0; a < request->accept_count; a++) {
        imgp_format_t format = request->accept [a];
        int index = s_rendition (job, box, format);
        if (index >= 0)
            return index;
        unsigned bit = 1u << format;
        if (better && *better == IMGP_FORMAT_AUTO && s_variant_format (format)
        &&  !(job->variants_failed & bit))
            *better = format;
    }
    return fallback;
}

//  INFO of a done job with the chosen rendition's bytes, read from the
//  spool (`out` NULL) or taken from `out` (the DONE in hand); ERROR
//  no_such_size for a size the job was not asked for, internal when the
//  spool cannot give the bytes.
static imgp_msg_t *
s_thumbnail_new (s_server_t *self, imgp_msg_t *request, imgp_job_t *job,
                 const uint8_t *out, size_t out_size)
{
    imgp_format_t better;
    int index = s_choose (job, request, &better);
    if (index < 0) {
        imgp_size_t box = s_wanted_box (job, request);
        return imgp_msg_error_new (request, "no_such_size", "the job has no %dx%d thumbnail",
                                   box.width, box.height);
    }
    int64_t offset = 0;
    for (int i = 0; i < index; i++)
        offset += job->results [i].bytes;
    int64_t length = job->results [index].bytes;

    void *data = NULL;
    size_t size = 0;
    if (!out) {
        if (imgp_spool_get (self->spool, job->id, IMGP_SPOOL_OUT, &data, &size) || size == 0) {
            bool damaged = size == 0 && errno == EBADMSG;
            imgp_spool_release (data, NULL);
            if (damaged)
                return s_info_new (request, s_thumbnail_damaged (self, job));
            return imgp_msg_error_new (request, "internal",
                                       "the thumbnail is missing from the spool");
        }
        out = data;
        out_size = size;
    }
    if (length < 1 || offset + length > (int64_t) out_size) {
        imgp_error ("job=%s event=rendition_missing index=%d offset=%lld bytes=%lld out=%zu",
                    job->id, index, (long long) offset, (long long) length, out_size);
        imgp_spool_release (data, NULL);
        return imgp_msg_error_new (request, "internal", "the thumbnail is missing from the spool");
    }
    imgp_msg_t *info = s_info_new (request, job);
    info->rendition = index;
    info->pending = better != IMGP_FORMAT_AUTO && (job->variants_pending & (1u << better));
    if (data && offset == 0 && (size_t) length == size)
        imgp_msg_set_data (info, data, size, imgp_spool_release);     //  sent without a copy
    else {
        //  One rendition of several: a copy of its bytes (thumbnails are small).
        void *slice = malloc ((size_t) length);
        assert (slice);
        memcpy (slice, out + offset, (size_t) length);
        imgp_msg_set_data (info, slice, (size_t) length, NULL);
        imgp_spool_release (data, NULL);
    }
    return info;
}

//  Answer a STATUS or FETCH about `job`, at once or after it was held:
//  INFO (with the chosen rendition for a FETCH of a done job), or ERROR
//  not_found when `job` is NULL (unknown, or another owner's), or
//  no_such_size for a FETCH of a size the job was not asked for.
static void
s_answer (s_server_t *self, imgp_msg_t *request, imgp_job_t *job)
{
    imgp_msg_t *reply;
    if (!job)
        reply = imgp_msg_error_new (request, "not_found", "no job with this id");
    else
    if (request->type == IMGP_MSG_FETCH && !s_has_size (job, s_wanted_box (job, request))) {
        imgp_size_t box = s_wanted_box (job, request);
        reply = imgp_msg_error_new (request, "no_such_size", "the job has no %dx%d thumbnail",
                                    box.width, box.height);
    }
    else
    if (request->type == IMGP_MSG_FETCH && job->state == IMGP_STATE_DONE)
        reply = s_thumbnail_new (self, request, job, NULL, 0);
    else
        reply = s_info_new (request, job);
    s_reply (self, IMGP_BROKER_STATUS, &reply);
}

static int s_want_variant (s_server_t *self, imgp_msg_t *msg, imgp_job_t *job);

//  Answer every request held on `job`, which just ended: the one place
//  held requests are woken. `done` is the resizer's DONE when the job ended
//  done (NULL when it failed): a FETCH gets its rendition from the bytes
//  in hand instead of a read of the spool per waiter.
static void
s_wake (s_server_t *self, imgp_job_t *job, imgp_msg_t *done)
{
    assert ((job->state == IMGP_STATE_DONE) == (done != NULL));
    imgp_msg_t *request;
    while ((request = imgp_waiters_take (self->waiters, job->id))) {
        imgp_msg_t *reply;
        if (done && request->type == IMGP_MSG_FETCH) {
            //  One that prefers a format the auto job has not made gets it
            //  queued now (and says pending), as a FETCH that came later would.
            s_want_variant (self, request, job);
            reply = s_thumbnail_new (self, request, job, imgp_msg_data (done),
                                     imgp_msg_size (done));
        }
        else
            reply = s_info_new (request, job);
        s_reply (self, IMGP_BROKER_STATUS, &reply);
        imgp_msg_destroy (&request);
    }
}

//  Count a job that ended, for PONG.
static void
s_count_finish (s_server_t *self, imgp_job_t *job)
{
    if (job->state == IMGP_STATE_DONE) {
        self->stats.done++;
        imgp_histo_add (&self->stats.job_ms, job->results [0].ms);
    }
    else
        self->stats.failed++;
}

//  The job leaves its worker's hands (it ends or is re-queued): that peer
//  holds one job fewer. Only a job in flight counted as held.
static void
s_release (s_server_t *self, imgp_job_t *job)
{
    if (job->phase != IMGP_PHASE_DISPATCHED && job->phase != IMGP_PHASE_RUNNING)
        return;
    imgp_peer_t *peer = imgp_peers_lookup (self->peers, job->worker);
    if (peer)
        imgp_peers_released (peer, job->bytes);
}

static void s_variant_end (s_server_t *self, imgp_job_t *job, imgp_state_t state,
                           imgp_msg_t *done);

//  How often `id`'s final record could not be stored.
static int
s_store_failures (s_server_t *self, const char *id)
{
    return (int) (intptr_t) zhashx_lookup (self->store_failures, id);
}

//  The final record of `job` could not be stored: the job stays unfinished
//  in the table as on disk (the API and the disk never disagree), back in
//  the queue, and dispatch pauses until the disk has room for
//  what failed (s_on_tick), so resizers do not redo work that cannot be
//  stored. A job in flight gets its attempt back (a resizer ended it; the
//  broker's disk failed); one failed at dispatch (still queued) does not,
//  as no resizer spent that attempt and giving it back would send the
//  job beyond --max-attempts. s_dispatch_one ends the job failed
//  spool_full after --max-store-retries (the disk said it had room each
//  time).
static void
s_store_failed (s_server_t *self, imgp_job_t *job, imgp_state_t state, size_t bytes)
{
    int failures = s_store_failures (self, job->id) + 1;
    zhashx_update (self->store_failures, job->id, (void *) (intptr_t) failures);
    if (job->phase == IMGP_PHASE_DISPATCHED || job->phase == IMGP_PHASE_RUNNING) {
        s_release (self, job);
        imgp_table_requeue (self->table, job);
        if (job->attempts > 0)
            job->attempts--;
    }
    self->store_blocked = true;
    if (bytes > self->store_need)
        self->store_need = bytes;
    imgp_warn ("job=%s event=store_failed state=%s bytes=%zu failures=%d max=%d action=requeue "
               "error=\"%s\"", job->id, imgp_state_name (state), bytes, failures,
               self->config->max_store_retries, strerror (errno));
}

//  The job ends done or failed: its final record (for DONE with the
//  thumbnail, in one write: both or neither) is stored first, then the
//  table says so and the original goes (the record retired it on disk).
//  When that store fails the job stays unfinished (s_store_failed) and -1
//  is returned. Every way a job ends comes through here, so here its
//  waiters wake; `done` is the DONE that ended it, NULL when it failed.
//  A variant job (format=auto) ends in s_variant_end instead: it has no
//  record of its own, its renditions go to its parent's.
static int
s_finish (s_server_t *self, imgp_job_t *job, imgp_state_t state, imgp_msg_t *done)
{
    if (job->parent [0]) {
        s_variant_end (self, job, state, done);     //  its renditions go to its parent
        return 0;
    }
    imgp_job_t record = *job;           //  borrowing copy (imgp_job.h), only saved
    record.state = state;
    record.updated_at = zclock_time ();
    int rc = done ? imgp_spool_save_with (self->spool, &record, IMGP_SPOOL_OUT,
                                          imgp_msg_data (done), imgp_msg_size (done))
                  : imgp_spool_save (self->spool, &record);
    if (rc) {
        s_store_failed (self, job, state, done ? imgp_msg_size (done) : 1024);
        return -1;
    }
    zhashx_delete (self->store_failures, job->id);
    job->updated_at = record.updated_at;
    s_release (self, job);
    imgp_table_finish (self->table, job, state);
    s_count_finish (self, job);
    imgp_spool_drop_original (self->spool, job->id);
    s_wake (self, job, done);
    return 0;
}

//  Add a done variant job's renditions to its parent: results appended,
//  OUT rewritten as the old bytes plus the new (one entry, the order of
//  results[]), the parent's record saved with it in one write. -1 when
//  they cannot be added (no room, the parent's OUT unreadable), -2 when
//  the write failed (the broker's disk: worth another try later); the
//  parent is left as it was either way.
static int
s_variant_add (s_server_t *self, imgp_job_t *parent, const imgp_job_t *variant,
               imgp_msg_t *done)
{
    if (parent->result_count + variant->result_count > IMGP_RESULTS_MAX)
        return -1;
    void *old = NULL;
    size_t old_size = 0;
    if (imgp_spool_get (self->spool, parent->id, IMGP_SPOOL_OUT, &old, &old_size)) {
        imgp_spool_release (old, NULL);
        return -1;
    }
    size_t size = old_size + imgp_msg_size (done);
    uint8_t *out = malloc (size);
    assert (out);
    memcpy (out, old, old_size);
    memcpy (out + old_size, imgp_msg_data (done), imgp_msg_size (done));
    imgp_spool_release (old, NULL);

    //  An owning copy with the new renditions: the parent changes only
    //  once they are on disk.
    imgp_job_t record;
    imgp_job_copy (&record, parent);
    imgp_job_add_results (&record, variant->results, variant->result_count);
    int rc = imgp_spool_save_with (self->spool, &record, IMGP_SPOOL_OUT, out, size);
    free (out);
    if (rc == 0)
        imgp_job_set_results (parent, record.results, record.result_count);
    imgp_job_clear (&record);
    return rc ? -2 : 0;
}

//  The variant's renditions join its done parent's (s_variant_add), or the
//  parent remembers the format as failed; see s_variant_end below.
static void
s_variant_join (s_server_t *self, imgp_job_t *parent, imgp_job_t *job, imgp_state_t state,
                imgp_msg_t *done)
{
    unsigned bit = 1u << job->opts.format;
    parent->variants_pending &= ~bit;
    int rc = state == IMGP_STATE_DONE ? s_variant_add (self, parent, job, done) : -1;
    if (rc == 0)
        imgp_info ("job=%s event=variant_done variant=%s format=%s renditions=%d", parent->id,
                   job->id, imgp_format_name (job->opts.format), parent->result_count);
    else
    if (rc == -2)
        imgp_warn ("job=%s event=variant_not_stored variant=%s format=%s action=ask_again",
                   parent->id, job->id, imgp_format_name (job->opts.format));
    else {
        parent->variants_failed |= bit;
        imgp_warn ("job=%s event=variant_failed variant=%s format=%s code=%s", parent->id,
                   job->id, imgp_format_name (job->opts.format),
                   state == IMGP_STATE_DONE ? "internal" : job->code);
    }
}

//  A variant job ended (s_finish sends it here): its renditions join its
//  parent's, or the parent remembers that format as failed (never tried
//  again: a client then gets the family) — unless only the broker's disk
//  failed to store them: then the next FETCH that wants it asks again, as
//  a job's result is never failed for the broker's own disk. Either way
//  the requests held on the parent for it are answered now, with the best
//  rendition there is.
//  The variant stays in the table as a finished job (for the logs' sake
//  and so that late results of it are duplicates) until TTL or eviction;
//  it was never on disk.
static void
s_variant_end (s_server_t *self, imgp_job_t *job, imgp_state_t state, imgp_msg_t *done)
{
    s_touch (job);
    s_release (self, job);
    imgp_table_finish (self->table, job, state);
    //  Not counted in PONG's done/failed: those count accepted jobs.
    //  A parent failed meanwhile (spool_damaged) or gone (TTL, eviction)
    //  takes nothing, but its held requests are answered now all the same
    //  (failed, not_found) rather than at the end of their wait.
    imgp_job_t *parent = imgp_table_lookup (self->table, job->parent);
    if (parent && parent->state == IMGP_STATE_DONE)
        s_variant_join (self, parent, job, state, done);
    //  Answering may find the parent's OUT damaged and replace its table
    //  entry (s_thumbnail_damaged): hold the id, look the job up per request.
    char id [IMGP_ID_LEN + 1];
    memcpy (id, job->parent, sizeof id);
    imgp_msg_t *request;
    while ((request = imgp_waiters_take (self->waiters, id))) {
        s_answer (self, request, imgp_table_lookup (self->table, id));
        imgp_msg_destroy (&request);
    }
}

static void
s_fail (s_server_t *self, imgp_job_t *job, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static void
s_fail (s_server_t *self, imgp_job_t *job, const char *code, const char *format, ...)
{
    snprintf (job->code, sizeof job->code, "%s", code);
    va_list args;
    va_start (args, format);
    vsnprintf (job->message, sizeof job->message, format, args);
    va_end (args);
    if (s_finish (self, job, IMGP_STATE_FAILED, NULL) == 0)
        imgp_info ("job=%s event=failed code=%s attempt=%d message=\"%s\"",
                   job->id, job->code, job->attempts, job->message);
}

//  Forget a finished job: spool entries and table entry. The entry goes even
//  when the spool's DELETE cannot be written (logged by the spool), so the sweep and
//  eviction loops always move on; a record left behind is reloaded and
//  swept again after a restart.
static void
s_forget (s_server_t *self, imgp_job_t **job_p, const char *event)
{
    imgp_info ("job=%s event=%s state=%s", (*job_p)->id, event,
               imgp_state_name ((*job_p)->state));
    zhashx_delete (self->store_failures, (*job_p)->id);
    imgp_spool_delete (self->spool, (*job_p)->id);
    imgp_table_remove (self->table, job_p);
}

//  Fail a job that used its last attempt, saying why the last one ended.
static void
s_exhausted (s_server_t *self, imgp_job_t *job, const char *reason)
{
    const char *what = "no resizer finished the job in";
    if (streq (reason, "dispatch_timeout"))
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the last one was not "
                "started within %lld ms", what, job->attempts,
                (long long) self->config->dispatch_timeout_ms);
    else
    if (streq (reason, "job_timeout"))
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the last one timed out "
                "after %lld ms", what, job->attempts, (long long) self->config->job_timeout_ms);
    else
    if (streq (reason, "restart"))
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the broker restarted "
                "during the last one", what, job->attempts);
    else
    if (streq (reason, "bad_image"))
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the last resizer (%s) "
                "sent bytes that are not the image it claimed", what, job->attempts,
                job->worker);
    else
    if (streq (reason, "bad_result"))
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the last resizer (%s) "
                "sent results that are not the sizes or format the job asked for", what,
                job->attempts, job->worker);
    else
        s_fail (self, job, "attempts_exhausted", "%s %d attempts; the last resizer (%s) "
                "stopped answering", what, job->attempts, job->worker);
}

//  Take a job out of flight again; fail it when it used its last attempt.
static void
s_requeue (s_server_t *self, imgp_job_t *job, const char *reason)
{
    if (job->attempts >= self->config->max_attempts) {
        s_exhausted (self, job, reason);
        return;
    }
    bool was_visible = job->state != IMGP_STATE_QUEUED;
    s_release (self, job);
    imgp_table_requeue (self->table, job);
    self->stats.retried++;
    if (was_visible)
        s_touch (job);
    s_persist (self, job);
    imgp_info ("job=%s event=requeued reason=%s attempt=%d", job->id, reason, job->attempts);
}

//  =====================================================================
//  Intake and status: SUBMIT, STATUS, FETCH, PING

//  The broker's figures for PONG and CLUSTER: the counters kept as things
//  happen, and the gauges read now (O(1) each, but the live resizers: a
//  walk over the fleet, as the choice of a peer does on every dispatch).
static void
s_stats (s_server_t *self, imgp_stats_t *stats)
{
    *stats = self->stats;
    stats->queued = (int64_t) imgp_table_queued (self->table);
    stats->queue_max = (int64_t) self->config->max_queue;
    stats->in_flight = (int64_t) imgp_table_inflight (self->table);
    stats->waiters = (int64_t) imgp_waiters_size (self->waiters);
    imgp_peers_live (self->peers, zclock_mono (), self->config->heartbeat_timeout_ms,
                     &stats->resizers, &stats->slots);
    stats->spool_bytes = (int64_t) imgp_spool_live_bytes (self->spool);
    stats->spool_max_bytes = (int64_t) self->config->max_spool_bytes;
    //  Full also while results wait for room (dispatch paused): the
    //  service is not ready even if a small upload would still fit.
    stats->spool_full = imgp_spool_full (self->spool) || self->store_blocked
                     || (stats->spool_max_bytes && stats->spool_bytes >= stats->spool_max_bytes);
}

static void
s_on_ping (s_server_t *self, imgp_msg_t *msg, imgp_broker_socket_t which)
{
    imgp_msg_t *pong = imgp_msg_reply_new (msg, IMGP_MSG_PONG);
    pong->has_stats = true;
    s_stats (self, &pong->stats);
    s_reply (self, which, &pong);
}

//  Make room in a full table by evicting the job that finished first.
static int
s_make_room (s_server_t *self)
{
    if (imgp_table_size (self->table) < self->config->max_jobs)
        return 0;
    imgp_job_t *oldest = imgp_table_oldest_finished (self->table);
    if (!oldest)
        return -1;
    s_forget (self, &oldest, "evicted");
    return 0;
}

//  Refuse a SUBMIT we cannot take; returns the ERROR, or NULL when it may go on.
static imgp_msg_t *
s_submit_refusal (s_server_t *self, imgp_msg_t *msg)
{
    size_t size = imgp_msg_size (msg);
    if (size == 0 || !imgp_opts_valid (&msg->opts))
        return imgp_msg_error_new (msg, "bad_request", "the job has no image or bad options");
    if (size > self->config->max_upload_bytes)
        return imgp_msg_error_new (msg, "too_large", "the image is %zu bytes; the limit is %zu",
                                   size, self->config->max_upload_bytes);
    if (imgp_table_queued (self->table) >= self->config->max_queue)
        return imgp_msg_error_new (msg, "queue_full", "%zu jobs are queued; retry later",
                                   imgp_table_queued (self->table));
    size_t max = self->config->max_spool_bytes;
    uint64_t live = max ? imgp_spool_live_bytes (self->spool) : 0;
    if (max && live + size > max)
        return imgp_msg_error_new (msg, "spool_full", "the broker's spool holds %llu bytes; "
                                   "its limit is %zu; retry later", (unsigned long long) live,
                                   max);
    if (s_make_room (self))
        return imgp_msg_error_new (msg, "queue_full",
                                   "the status table holds %zu unfinished jobs; retry later",
                                   imgp_table_size (self->table));
    return NULL;
}

//  A SUBMIT for an id already held. A retry (PROTOCOL.md 5.2) gets ACCEPTED
//  with the job's state. One from another owner is no retry (a retry repeats
//  its request): it gets bad_request, without the job's state, and the job
//  keeps its owner.
static void
s_on_resubmit (s_server_t *self, imgp_msg_t *msg, imgp_job_t *job)
{
    imgp_msg_t *reply;
    if (streq (job->owner, msg->owner)) {
        imgp_debug ("job=%s event=duplicate_submit state=%s", job->id, imgp_state_name (job->state));
        reply = imgp_msg_reply_new (msg, IMGP_MSG_ACCEPTED);
        reply->state = job->state;
        s_accept (self, &reply);        //  its first SUBMIT may be in this pass
        return;
    }
    else {
        imgp_warn ("job=%s event=refused code=bad_request reason=\"held for another owner\"",
                   job->id);
        reply = imgp_msg_error_new (msg, "bad_request",
                                    "this id names another job; a retry must repeat its SUBMIT");
    }
    s_reply (self, IMGP_BROKER_INTAKE, &reply);
}

static void
s_on_submit (s_server_t *self, imgp_msg_t *msg)
{
    imgp_job_t *job = imgp_table_lookup (self->table, msg->id);
    if (job) {
        s_on_resubmit (self, msg, job);
        return;
    }
    imgp_msg_t *reply = s_submit_refusal (self, msg);
    if (reply) {
        imgp_info ("job=%s event=refused code=%s bytes=%zu", msg->id, reply->code, imgp_msg_size (msg));
        s_reply (self, IMGP_BROKER_INTAKE, &reply);
        return;
    }
    imgp_job_t record = { .state = IMGP_STATE_QUEUED, .opts = msg->opts };
    memcpy (record.id, msg->id, sizeof record.id);
    memcpy (record.owner, msg->owner, sizeof record.owner);
    record.created_at = record.updated_at = zclock_time ();
    record.bytes = (int64_t) imgp_msg_size (msg);

    //  Original, then the record (the commit point), in one write.
    if (imgp_spool_save_with (self->spool, &record, IMGP_SPOOL_IN, imgp_msg_data (msg),
                              imgp_msg_size (msg))) {
        //  The disk (full, over quota, failing): the client may retry
        //  later (507); nothing else is touched, no job exists.
        reply = errno == EOVERFLOW
              ? imgp_msg_error_new (msg, "internal", "the broker could not store the job")
              : imgp_msg_error_new (msg, "spool_full", "the broker's disk cannot take the "
                                    "image now (%s); retry later", strerror (errno));
        imgp_info ("job=%s event=refused code=%s bytes=%zu", msg->id, reply->code,
                   imgp_msg_size (msg));
        s_reply (self, IMGP_BROKER_INTAKE, &reply);
        return;
    }
    job = imgp_table_insert (self->table, &record);
    assert (job);               //  the lookup above said the id is new
    self->stats.accepted++;
    imgp_info ("job=%s event=accepted bytes=%zu", job->id, imgp_msg_size (msg));
    reply = imgp_msg_reply_new (msg, IMGP_MSG_ACCEPTED);
    reply->state = job->state;
    s_accept (self, &reply);
}

//  The job a STATUS or FETCH may see: held, and submitted by the same owner
//  ("" is an owner too). Another owner's job is NULL, like an unknown id,
//  so a key cannot learn whether another key's job exists.
static imgp_job_t *
s_owned_job (s_server_t *self, imgp_msg_t *msg)
{
    imgp_job_t *job = imgp_table_lookup (self->table, msg->id);
    return job && streq (job->owner, msg->owner) ? job : NULL;
}

//  Hold a STATUS or FETCH with wait_ms until its unfinished job ends or the
//  wait passes (`variant`: until the variant job its done job waits for
//  ends). Returns -1 when it is to be answered now: nothing to wait for, or
//  --max-waiters requests are held already.
static int
s_hold (s_server_t *self, imgp_msg_t *msg, imgp_job_t *job, bool variant)
{
    if (!job || msg->wait_ms <= 0 || (job->phase == IMGP_PHASE_FINISHED && !variant))
        return -1;
    if (imgp_waiters_size (self->waiters) >= self->config->max_waiters) {
        imgp_debug ("job=%s event=wait_refused waiters=%zu", job->id,
                    imgp_waiters_size (self->waiters));
        return -1;
    }
    //  A copy keeps what the answer needs (envelope, id, tag, type, box,
    //  accept). The owner was checked here, and a job's owner never changes.
    imgp_msg_t *held = imgp_msg_reply_new (msg, msg->type);
    held->box = msg->box;                   //  and what a FETCH wants
    held->accept_count = msg->accept_count;
    memcpy (held->accept, msg->accept, sizeof held->accept);
    imgp_waiters_hold (self->waiters, &held, zclock_mono () + msg->wait_ms);
    return 0;
}

//  Queue a variant job making `format` for every size of the done auto job
//  `parent`, unless one is at work already. The variant is an ordinary job
//  to dispatch (attempts, timeouts, re-dispatch), with the parent's options
//  in that format, but memory only: no record, no original of its own (it
//  reads the parent's, which an auto job keeps), and its renditions go to
//  the parent (s_variant_end). A restart forgets it; the next FETCH that
//  wants the format queues it again. Returns 0 when one is at work.
static int
s_variant_new (s_server_t *self, imgp_job_t *parent, imgp_format_t format)
{
    unsigned bit = 1u << format;
    if (parent->variants_pending & bit)
        return 0;
    if (!imgp_spool_has (self->spool, parent->id, IMGP_SPOOL_IN)) {
        parent->variants_failed |= bit;
        imgp_warn ("job=%s event=variant_failed format=%s code=internal "
                   "reason=original_gone", parent->id, imgp_format_name (format));
        return -1;
    }
    imgp_job_t record = { .state = IMGP_STATE_QUEUED, .opts = parent->opts };
    record.opts.format = format;
    //  Frames are kept where the format can hold them (WebP), as auto does.
    record.opts.animated = parent->opts.animated && format == IMGP_FORMAT_WEBP;
    if (imgp_id_new (record.id))
        return -1;
    memcpy (record.parent, parent->id, sizeof record.parent);
    memcpy (record.owner, parent->owner, sizeof record.owner);
    record.created_at = record.updated_at = zclock_time ();
    record.bytes = parent->bytes;
    //  Not bound by --max-jobs or --max-queue: at most two a parent, and
    //  making room could evict the parent itself.
    imgp_job_t *job = imgp_table_insert (self->table, &record);
    if (!job)
        return -1;
    parent->variants_pending |= bit;
    imgp_info ("job=%s event=variant_queued variant=%s format=%s", parent->id, job->id,
               imgp_format_name (format));
    return 0;
}

//  A FETCH of a done auto job whose client would rather have a format not
//  made yet: queue its variant job. Returns 0 when one is at work for it.
static int
s_want_variant (s_server_t *self, imgp_msg_t *msg, imgp_job_t *job)
{
    if (!job || msg->type != IMGP_MSG_FETCH || job->state != IMGP_STATE_DONE
    ||  job->opts.format != IMGP_FORMAT_AUTO || !s_has_size (job, s_wanted_box (job, msg)))
        return -1;
    imgp_format_t better;
    if (s_choose (job, msg, &better) < 0 || better == IMGP_FORMAT_AUTO)
        return -1;
    return s_variant_new (self, job, better);
}

//  s_want_variant, and hold the FETCH for that variant when it asked to
//  wait (else it is answered now with the best there is, INFO `pending`).
//  Returns 0 when held.
static int
s_hold_variant (s_server_t *self, imgp_msg_t *msg, imgp_job_t *job)
{
    if (s_want_variant (self, msg, job))
        return -1;
    return s_hold (self, msg, job, true);
}

//  STATUS or FETCH.
static void
s_on_query (s_server_t *self, imgp_msg_t *msg)
{
    imgp_job_t *job = s_owned_job (self, msg);
    //  A size the job does not have is answered at once, done or not.
    bool sized = !job || msg->type != IMGP_MSG_FETCH || s_has_size (job, s_wanted_box (job, msg));
    if (sized && s_hold_variant (self, msg, job) == 0)
        return;
    if (!sized || s_hold (self, msg, job, false))
        s_answer (self, msg, job);
}

static void
s_refuse_type (s_server_t *self, imgp_msg_t *msg, imgp_broker_socket_t which)
{
    imgp_warn ("job=%s event=wrong_socket type=%s socket=%s", msg->id [0] ? msg->id : "-",
               imgp_msg_type_name (msg->type), s_socket_names [which]);
    imgp_msg_t *reply = imgp_msg_error_new (msg, "bad_request", "%s is not served on the %s socket",
                                            imgp_msg_type_name (msg->type), s_socket_names [which]);
    s_reply (self, which, &reply);
}

static void
s_on_intake (s_server_t *self, imgp_msg_t *msg)
{
    if (msg->type == IMGP_MSG_SUBMIT)
        s_on_submit (self, msg);
    else
    if (msg->type == IMGP_MSG_PING)
        s_on_ping (self, msg, IMGP_BROKER_INTAKE);
    else
        s_refuse_type (self, msg, IMGP_BROKER_INTAKE);
}

//  One resizer of the CLUSTER view, with the ids of the jobs it holds.
static json_t *
s_peer_json (s_server_t *self, imgp_peer_t *peer, int64_t now)
{
    json_t *jobs = json_array ();
    for (imgp_job_t *job = imgp_table_held_by (self->table, peer->name); job;
         job = imgp_table_held_next (self->table, peer->name))
        json_array_append_new (jobs, json_string (job->id));
    int busy = peer->held < peer->slots ? peer->held : peer->slots;
    return json_pack ("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:o}",
                      "name", peer->name, "host", peer->host, "address", peer->address,
                      "slots", peer->slots, "busy", busy, "held", peer->held,
                      "credit", peer->credit, "done", (json_int_t) peer->done,
                      "failed", (json_int_t) peer->failed,
                      "heartbeat_age_ms", (json_int_t) (now - peer->last_heard), "jobs", jobs);
}

//  Append `len` bytes to a malloc'd text of *used bytes (room for a NUL
//  kept); -1 when out of memory (the text is freed then).
static int
s_append (char **text, size_t *used, size_t *room, const char *data, size_t len)
{
    if (*used + len + 1 > *room) {
        size_t grown = (*used + len + 1) * 2;
        char *bigger = realloc (*text, grown);
        if (!bigger) {
            free (*text);
            *text = NULL;
            return -1;
        }
        *text = bigger;
        *room = grown;
    }
    memcpy (*text + *used, data, len);
    *used += len;
    (*text) [*used] = '\0';
    return 0;
}

//  The CLUSTER view as compact JSON (the caller frees it): every live
//  resizer, cut with "truncated": true before it passes IMGP_CLUSTER_MAX.
//  Each resizer's object is dumped once and the wrapper written around
//  them, in the bytes jansson makes of the whole (an array's items are
//  their own compact dumps, comma-separated), so a view of thousands of
//  resizers is not serialised twice.
static char *
s_cluster_json (s_server_t *self, size_t *len_p)
{
    int64_t now = zclock_mono ();
    char *text = NULL;
    size_t used = 0, room = 0;
    int rc = s_append (&text, &used, &room, "{\"resizers\":[", 13);
    bool first = true, truncated = false;
    for (imgp_peer_t *peer = imgp_peers_first (self->peers); peer && rc == 0;
         peer = imgp_peers_next (self->peers)) {
        if (now - peer->last_heard > self->config->heartbeat_timeout_ms)
            continue;               //  silent: lost at the next tick
        json_t *entry = s_peer_json (self, peer, now);
        char *item = json_dumps (entry, JSON_COMPACT);
        json_decref (entry);
        size_t len = item ? strlen (item) : 0;
        //  room for this item, its comma and the closing "],"truncated":true}"
        if (!item || used + len + 1 + 20 > IMGP_CLUSTER_MAX) {
            free (item);
            truncated = true;
            break;
        }
        rc = (first ? 0 : s_append (&text, &used, &room, ",", 1))
          || s_append (&text, &used, &room, item, len);
        first = false;
        free (item);
    }
    const char *close = truncated ? "],\"truncated\":true}" : "]}";
    if (rc == 0)
        rc = s_append (&text, &used, &room, close, strlen (close));
    *len_p = rc == 0 ? used : 0;
    return rc == 0 ? text : NULL;
}

static void
s_on_cluster (s_server_t *self, imgp_msg_t *msg)
{
    size_t len;
    char *text = s_cluster_json (self, &len);
    imgp_msg_t *reply;
    if (text) {
        reply = imgp_msg_reply_new (msg, IMGP_MSG_CLUSTER);
        reply->has_stats = true;
        s_stats (self, &reply->stats);
        imgp_msg_set_data (reply, text, len, NULL);
    }
    else
        reply = imgp_msg_error_new (msg, "internal", "the cluster view could not be made");
    s_reply (self, IMGP_BROKER_STATUS, &reply);
}

static void
s_on_status_socket (s_server_t *self, imgp_msg_t *msg)
{
    if (msg->type == IMGP_MSG_STATUS || msg->type == IMGP_MSG_FETCH)
        s_on_query (self, msg);
    else
    if (msg->type == IMGP_MSG_CLUSTER && !msg->has_stats)
        s_on_cluster (self, msg);
    else
    if (msg->type == IMGP_MSG_PING)
        s_on_ping (self, msg, IMGP_BROKER_STATUS);
    else
        s_refuse_type (self, msg, IMGP_BROKER_STATUS);
}

//  =====================================================================
//  The jobs link: READY, HEARTBEAT, STARTED, DONE, FAILED from resizers

//  Log a message refused because its `worker` is not the routing id of the
//  connection it came on: once per known peer, once a minute for the rest
//  (a peer without a name has a new routing id on every connection).
static void
s_refuse_mismatch (s_server_t *self, imgp_msg_t *msg, const char *name)
{
    imgp_peer_t *peer = imgp_peers_lookup (self->peers, name);
    int64_t now = zclock_mono ();
    if (peer ? peer->warned
             : self->nameless_warned && now - self->nameless_warned < S_WARN_EVERY_MS)
        return;
    if (peer)
        peer->warned = true;
    else
        self->nameless_warned = now;
    char address [IMGP_ADDRESS_MAX + 1];
    imgp_warn ("event=refused reason=worker_mismatch routing_id=%s worker=%s type=%s "
               "address=%s", name [0] ? name : "-", msg->worker, imgp_msg_type_name (msg->type),
               imgp_msg_peer_address (msg, address, sizeof address));
}

//  Refuse a message under a worker name pinned to another key: another
//  resizer's allowed key, speaking in its name. With ROUTER_HANDOVER its
//  connection has taken that routing id from the real one, so a JOB sent
//  to the name now would reach it: the peer's credit goes to 0 until the
//  real one says READY again (from its next connection). Its jobs stay
//  held; their results count from the pinned key only. Logged once per
//  peer with the refused key's first 8 characters, never the whole key.
static void
s_refuse_key (s_server_t *self, imgp_msg_t *msg, const char *name, const char *key)
{
    imgp_peer_t *peer = imgp_peers_lookup (self->peers, name);
    int64_t now = zclock_mono ();
    bool quiet = peer ? peer->key_warned
                      : self->orphan_warned && now - self->orphan_warned < S_WARN_EVERY_MS;
    if (peer) {
        peer->credit = 0;
        peer->key_warned = true;
    }
    else
    if (!quiet)
        self->orphan_warned = now;
    if (quiet)
        return;
    char address [IMGP_ADDRESS_MAX + 1];
    imgp_warn ("event=refused reason=key_mismatch worker=%s type=%s key=%.8s address=%s",
               name, imgp_msg_type_name (msg->type), key [0] ? key : "-",
               imgp_msg_peer_address (msg, address, sizeof address));
}

static void
s_on_ready (imgp_peer_t *peer, imgp_msg_t *msg)
{
    imgp_peers_ready (peer, msg->slots, msg->credit);
    snprintf (peer->host, sizeof peer->host, "%s", msg->host);
    imgp_msg_peer_address (msg, peer->address, sizeof peer->address);
    imgp_info ("worker=%s event=ready slots=%d credit=%d host=%s address=%s", peer->name,
               peer->slots, peer->credit, peer->host [0] ? peer->host : "-",
               peer->address [0] ? peer->address : "-");
}

//  The job a STARTED, DONE or FAILED from `peer` is about, or NULL when it
//  must be dropped: unknown or finished (first result wins), dispatched to
//  another peer (refused, logged), or for another attempt than the latest
//  (stale: the job was dispatched again since).
static imgp_job_t *
s_result_job (s_server_t *self, imgp_peer_t *peer, imgp_msg_t *msg)
{
    imgp_job_t *job = imgp_table_lookup (self->table, msg->id);
    if (!job || job->phase == IMGP_PHASE_FINISHED) {
        imgp_debug ("job=%s event=duplicate_result type=%s worker=%s attempt=%d", msg->id,
                    imgp_msg_type_name (msg->type), peer->name, msg->attempts);
        return NULL;
    }
    if (!streq (job->worker, peer->name)) {
        imgp_warn ("job=%s event=result_refused reason=not_dispatched_here type=%s worker=%s "
                   "dispatched_to=%s", job->id, imgp_msg_type_name (msg->type), peer->name,
                   job->worker [0] ? job->worker : "-");
        return NULL;
    }
    if (msg->attempts != job->attempts) {
        imgp_debug ("job=%s event=stale_result type=%s worker=%s attempt=%d current=%d",
                    job->id, imgp_msg_type_name (msg->type), peer->name, msg->attempts,
                    job->attempts);
        return NULL;
    }
    return job;
}

static void
s_on_started (s_server_t *self, imgp_peer_t *peer, imgp_msg_t *msg)
{
    imgp_job_t *job = s_result_job (self, peer, msg);
    if (!job)
        return;
    //  A job back in the queue (reloaded after a restart, or re-queued by
    //  a timeout) is in that peer's hands again.
    if (job->phase == IMGP_PHASE_QUEUED)
        imgp_peers_held (peer, job->bytes);
    imgp_table_started (self->table, job, zclock_mono ());
    s_touch (job);
    imgp_info ("job=%s event=started worker=%s attempt=%d", job->id, job->worker, job->attempts);
}

//  Are DONE's bytes the image its result claims? Checked before they are
//  stored, so a forged or broken result is never served.
static int
s_check_image (imgp_job_t *job, imgp_msg_t *msg)
{
    const char *reason = NULL;
    const uint8_t *data = imgp_msg_data (msg);
    int i = 0;
    //  one rendition after the other; the codec checked that they add up
    for (; i < msg->result_count; i++) {
        const imgp_result_t *result = &msg->results [i];
        if (imgp_magic_check (data, (size_t) result->bytes, result->format, result->width,
                              result->height, &reason))
            break;
        data += result->bytes;
    }
    if (i == msg->result_count)
        return 0;
    imgp_warn ("job=%s event=result_refused reason=bad_image worker=%s attempt=%d "
               "detail=\"%s\"", job->id, msg->worker, msg->attempts,
               reason ? reason : "-");
    return -1;
}

//  The format a job's renditions must have: the one asked for, or for an
//  auto job the family (JPEG or PNG, the resizer's choice by alpha). A
//  variant job asks for its own format (s_variant_new).
static bool
s_format_fits (const imgp_job_t *job, imgp_format_t format)
{
    if (job->opts.format == IMGP_FORMAT_AUTO)
        return format == IMGP_FORMAT_JPEG || format == IMGP_FORMAT_PNG;
    return format == job->opts.format;
}

//  Does DONE answer what the job asked: one rendition per size, in the
//  order of opts.sizes (a resizer from before sizes names no box), each in
//  the job's format? Else the broker would say done for thumbnails no
//  client can get, or serve a format nobody asked for.
static int
s_check_results (imgp_job_t *job, imgp_msg_t *msg)
{
    char detail [96] = "";
    if (msg->result_count != job->opts.size_count)
        snprintf (detail, sizeof detail, "%d results for %d sizes", msg->result_count,
                  job->opts.size_count);
    for (int i = 0; !detail [0] && i < msg->result_count; i++) {
        const imgp_result_t *result = &msg->results [i];
        imgp_size_t want = job->opts.sizes [i];
        bool no_box = result->box.width == 0 && result->box.height == 0;
        if (!no_box && (result->box.width != want.width || result->box.height != want.height))
            snprintf (detail, sizeof detail, "result %d is for %dx%d, not %dx%d", i,
                      result->box.width, result->box.height, want.width, want.height);
        else
        if (!s_format_fits (job, result->format))
            snprintf (detail, sizeof detail, "result %d is %s, the job asked %s", i,
                      imgp_format_name (result->format), imgp_format_name (job->opts.format));
    }
    if (!detail [0])
        return 0;
    imgp_warn ("job=%s event=result_refused reason=bad_result worker=%s attempt=%d "
               "detail=\"%s\"", job->id, msg->worker, msg->attempts, detail);
    return -1;
}

static void
s_on_done (s_server_t *self, imgp_peer_t *peer, imgp_msg_t *msg)
{
    imgp_job_t *job = s_result_job (self, peer, msg);
    if (!job)
        return;
    //  A variant's DONE passes here too before s_variant_add adds it.
    if (s_check_results (job, msg)) {
        s_requeue (self, job, "bad_result");
        return;
    }
    if (s_check_image (job, msg)) {
        s_requeue (self, job, "bad_image");
        return;
    }
    peer->done++;
    //  The codec checked that the renditions' bytes add up to the frame.
    imgp_job_set_results (job, msg->results, msg->result_count);
    //  DONE's results are in the order of the job's sizes (checked above);
    //  a resizer from before sizes names no box.
    for (int i = 0; i < job->result_count; i++)
        if (job->results [i].box.width == 0)
            job->results [i].box = job->opts.sizes [i];
    //  The thumbnails and the final record are stored together (s_finish);
    //  when they cannot be, the job waits in the queue for room.
    if (s_finish (self, job, IMGP_STATE_DONE, msg))
        return;
    imgp_info ("job=%s event=done worker=%s ms=%lld bytes=%zu renditions=%d attempt=%d",
               job->id, job->worker, (long long) job->results [0].ms, imgp_msg_size (msg),
               job->result_count, msg->attempts);
}

static void
s_on_failed (s_server_t *self, imgp_peer_t *peer, imgp_msg_t *msg)
{
    imgp_job_t *job = s_result_job (self, peer, msg);
    if (!job)
        return;
    peer->failed++;
    s_fail (self, job, msg->code, "%s", msg->message);
}

static bool
s_from_resizer (imgp_msg_type_t type)
{
    return type == IMGP_MSG_READY || type == IMGP_MSG_HEARTBEAT || type == IMGP_MSG_STARTED
        || type == IMGP_MSG_DONE || type == IMGP_MSG_FAILED;
}

static void
s_on_jobs (s_server_t *self, imgp_msg_t *msg)
{
    const char *name = imgp_msg_routing_name (msg);
    if (!s_from_resizer (msg->type)) {
        //  No reply: a resizer link carries no requests.
        imgp_warn ("job=%s event=wrong_socket type=%s socket=jobs worker=%s",
                   msg->id [0] ? msg->id : "-", imgp_msg_type_name (msg->type),
                   name [0] ? name : "-");
        return;
    }
    if (!name [0] || !streq (name, msg->worker)) {
        s_refuse_mismatch (self, msg, name);
        return;
    }
    //  The name stays with the key it came with first ("" without keys).
    char key [IMGP_KEY_MAX + 1];
    imgp_msg_peer_key (msg, key, sizeof key);
    const char *pinned = imgp_peers_pinned (self->peers, name);
    if (pinned && !streq (pinned, key)) {
        s_refuse_key (self, msg, name, key);
        return;
    }
    imgp_peers_pin (self->peers, name, key);
    bool joined;
    imgp_peer_t *peer = imgp_peers_heard (self->peers, name, zclock_mono (), &joined);
    if (joined) {
        imgp_msg_peer_address (msg, peer->address, sizeof peer->address);
        imgp_info ("worker=%s event=joined by=%s address=%s", name,
                   imgp_msg_type_name (msg->type), peer->address [0] ? peer->address : "-");
    }
    //  Whatever becomes of the job, a result means the resizer let it go.
    if (msg->type == IMGP_MSG_DONE || msg->type == IMGP_MSG_FAILED)
        imgp_peers_returned (peer);
    switch (msg->type) {
        case IMGP_MSG_READY: s_on_ready (peer, msg); break;
        case IMGP_MSG_HEARTBEAT: peer->free_slots = msg->slots; break;
        case IMGP_MSG_STARTED: s_on_started (self, peer, msg); break;
        case IMGP_MSG_DONE: s_on_done (self, peer, msg); break;
        default: s_on_failed (self, peer, msg); break;
    }
}

//  =====================================================================
//  Dispatch and housekeeping

//  The JOB message for the next attempt of a queued job, with its original
//  read from the spool; NULL when the original cannot be read (logged).
static imgp_msg_t *
s_job_new (s_server_t *self, imgp_job_t *job)
{
    void *data = NULL;
    size_t size = 0;
    //  A variant job works on its parent's original.
    const char *source = job->parent [0] ? job->parent : job->id;
    if (imgp_spool_get (self->spool, source, IMGP_SPOOL_IN, &data, &size) || size == 0) {
        int error = size == 0 && data ? EIO : errno;
        imgp_spool_release (data, NULL);
        errno = error;
        return NULL;
    }
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_JOB);
    memcpy (msg->id, job->id, sizeof msg->id);
    msg->attempts = job->attempts + 1;
    msg->opts = job->opts;
    //  The spool's copy in memory (or one read back), shared, not copied.
    imgp_msg_set_data (msg, data, size, imgp_spool_release);
    return msg;
}

//  Send the front job to `peer`. When that peer could not take it (gone:
//  EHOSTUNREACH, or its pipe full) the job stays at the front, no attempt
//  counted, and the peer gets no job until it gives credit again. Else it
//  left, or it cannot be dispatched at all and ended failed, so it never
//  blocks the jobs behind it.
static void
s_dispatch_one (s_server_t *self, imgp_job_t *job, imgp_peer_t *peer)
{
    //  Store failures first: a job that keeps failing here with its
    //  attempts used up would otherwise never reach spool_full.
    int failures = s_store_failures (self, job->id);
    if (failures >= self->config->max_store_retries) {
        s_fail (self, job, "spool_full", "the broker could not store the result %d times "
                "although its disk reported room", failures);
        return;
    }
    //  Only a reload brings a job here with its attempts used up: the
    //  broker stopped while its last attempt was out.
    if (job->attempts >= self->config->max_attempts) {
        s_exhausted (self, job, "restart");
        return;
    }
    imgp_msg_t *msg = s_job_new (self, job);
    if (!msg && errno == EBADMSG) {
        s_fail (self, job, "spool_damaged", "the original was damaged on the broker's disk "
                "(checksum); upload the image again");
        return;
    }
    if (!msg) {
        s_fail (self, job, "internal", "the original could not be read from the spool");
        return;
    }
    msg->routing_id = zframe_new (peer->name, strlen (peer->name));
    //  The attempt and its worker are on disk before the JOB leaves (a
    //  failed save is logged by the spool, and the job goes anyway: see the
    //  top). A send that fails below leaves the record one attempt ahead
    //  until the next write: a restart in between grants one attempt
    //  fewer, never more.
    imgp_job_t record = *job;           //  borrowing copy (imgp_job.h), only saved
    record.attempts = msg->attempts;
    snprintf (record.worker, sizeof record.worker, "%s", peer->name);
    s_persist (self, &record);
    size_t size = imgp_msg_size (msg);
    if (imgp_msg_send (&msg, self->sockets [IMGP_BROKER_JOBS])) {
        if (errno == EHOSTUNREACH || errno == EAGAIN || errno == EINTR) {
            imgp_info ("job=%s event=dispatch_deferred worker=%s error=\"%s\"", job->id,
                       peer->name, zmq_strerror (errno));
            peer->credit = 0;
            return;
        }
        //  The codec refused the JOB (it logged why), or libzmq did.
        s_fail (self, job, "internal", "the broker could not send the job to a resizer: %s",
                zmq_strerror (errno));
        return;
    }
    int64_t now = zclock_mono ();
    imgp_peers_sent (peer, now, job->bytes);
    imgp_table_dispatched (self->table, job, peer->name, now);
    if (job->attempts == 1)
        imgp_histo_add (&self->stats.wait_ms, zclock_time () - job->created_at);
    imgp_info ("job=%s event=dispatched worker=%s attempt=%d bytes=%zu", job->id, peer->name,
               job->attempts, size);
}

//  Send queued jobs while a peer may take one (imgp_peers_choose has the
//  rule). Each failed send zeroes one peer's credit, so this ends.
static void
s_dispatch (s_server_t *self)
{
    imgp_job_t *job;
    //  While a final record could not be stored, nothing leaves: its
    //  result would not be stored either (s_store_failed).
    while (!self->store_blocked && (job = imgp_table_next (self->table))) {
        imgp_peer_t *peer = imgp_peers_choose (self->peers, zclock_mono (),
                                               self->config->heartbeat_timeout_ms,
                                               imgp_table_queued (self->table),
                                               S_PREFETCH_BYTES);
        if (!peer)
            return;
        s_dispatch_one (self, job, peer);
    }
}

static void
s_check_workers (s_server_t *self, int64_t now)
{
    imgp_peer_t *lost;
    while ((lost = imgp_peers_lost (self->peers, now, self->config->heartbeat_timeout_ms))) {
        imgp_warn ("worker=%s event=lost silent_ms=%lld jobs=%d", lost->name,
                   (long long) self->config->heartbeat_timeout_ms, lost->held);
        imgp_job_t *job;
        while ((job = imgp_table_held_by (self->table, lost->name)))
            s_requeue (self, job, "worker_lost");
        imgp_peers_remove (self->peers, lost->name);
    }
}

static bool
s_name_in_use (const char *name, void *arg)
{
    return imgp_table_names (((s_server_t *) arg)->table, name);
}

static void
s_check_jobs (s_server_t *self, int64_t now)
{
    const char *reason;
    imgp_job_t *job;
    while ((job = imgp_table_overdue (self->table, now, self->config->dispatch_timeout_ms,
                                      self->config->job_timeout_ms, &reason)))
        s_requeue (self, job, reason);
}

static void
s_sweep (s_server_t *self)
{
    int64_t cutoff = zclock_time () - self->config->ttl_s * 1000;
    imgp_job_t *job;
    while ((job = imgp_table_oldest_finished (self->table)) && job->updated_at <= cutoff)
        s_forget (self, &job, "expired");
}

//  Answer the held requests whose wait has passed, with the job as it is
//  now: still unfinished, as one that ends wakes its requests (a lookup
//  that finds none would answer not_found all the same).
static void
s_expire (s_server_t *self, int64_t now)
{
    imgp_msg_t *request;
    while ((request = imgp_waiters_expired (self->waiters, now))) {
        s_answer (self, request, imgp_table_lookup (self->table, request->id));
        imgp_msg_destroy (&request);
    }
}

//  Dispatch paused by a result that could not be stored goes on once the
//  disk has room for it again (housekeeping may just have freed some).
static void
s_check_store (s_server_t *self)
{
    if (!self->store_blocked)
        return;
    uint64_t room = imgp_spool_room (self->spool);
    if (room < self->store_need + S_STORE_SLACK)
        return;
    imgp_info ("event=store_resumed room=%llu need=%llu", (unsigned long long) room,
               (unsigned long long) self->store_need);
    self->store_blocked = false;
    self->store_need = 0;
}

static void
s_on_tick (s_server_t *self)
{
    int64_t now = zclock_mono ();
    s_check_workers (self, now);
    //  A lost resizer's name stays pinned to its key while jobs name it
    //  (their late results still count), then is free for any key.
    imgp_peers_prune (self->peers, s_name_in_use, self);
    s_check_jobs (self, now);
    s_sweep (self);
    imgp_spool_maintain (self->spool);
    s_check_store (self);
    self->next_tick = now + self->config->tick_ms;
}

//  =====================================================================
//  Start-up: spool reload and sockets

//  Reload order: unfinished jobs by creation (FIFO), finished by finish time.
static int64_t
s_record_key (const imgp_job_t *record)
{
    bool finished = record->state == IMGP_STATE_DONE || record->state == IMGP_STATE_FAILED;
    return finished ? record->updated_at : record->created_at;
}

static int
s_record_compare (const void *item1, const void *item2)
{
    int64_t a = s_record_key (item1), b = s_record_key (item2);
    return a < b ? -1 : a > b;
}

//  The scan lends each record for the call: the list keeps owning copies.
static int
s_collect (const imgp_job_t *record, void *arg)
{
    imgp_job_t *copy = malloc (sizeof *copy);
    assert (copy);
    imgp_job_copy (copy, record);
    zlistx_add_end ((zlistx_t *) arg, copy);
    return 0;
}

static void
s_free_record (void **item_p)
{
    imgp_job_t *record = (imgp_job_t *) *item_p;
    if (record) {
        imgp_job_clear (record);
        free (record);
    }
    *item_p = NULL;
}

//  A reloaded record that its files cannot serve ends failed, saying what
//  was lost: a done job's thumbnail, or an unfinished job's original. In
//  the second case a thumbnail found beside it cannot be served either: the
//  record lacks its metadata (size, format) and the broker never decodes an
//  image to learn it. Runs before the sort, so a job failed here is sorted
//  by its new finish time. A failed save is logged by the spool; the next
//  start makes the same decision.
static void
s_restore_check (s_server_t *self, imgp_job_t *record)
{
    const char *lost = NULL;
    if (record->state == IMGP_STATE_DONE) {
        if (!imgp_spool_has (self->spool, record->id, IMGP_SPOOL_OUT))
            lost = "the thumbnail was lost from the spool";
    }
    else
    if (record->state != IMGP_STATE_FAILED
    &&  !imgp_spool_has (self->spool, record->id, IMGP_SPOOL_IN))
        lost = imgp_spool_has (self->spool, record->id, IMGP_SPOOL_OUT)
             ? "the original was lost from the spool before the result was recorded; "
               "upload the image again"
             : "the original was lost from the spool; upload the image again";
    if (!lost)
        return;
    //  Lost because its bytes failed their checksum at replay: say so.
    bool damaged = imgp_spool_damaged (self->spool, record->id);
    if (damaged)
        lost = record->state == IMGP_STATE_DONE
             ? "the thumbnail was damaged on the broker's disk (checksum); upload the "
               "image again"
             : "the original was damaged on the broker's disk (checksum); upload the "
               "image again";
    if (record->state != IMGP_STATE_DONE)
        record->updated_at = zclock_time ();
    record->state = IMGP_STATE_FAILED;
    snprintf (record->code, sizeof record->code, damaged ? "spool_damaged" : "internal");
    snprintf (record->message, sizeof record->message, "%s", lost);
    s_persist (self, record);
    imgp_warn ("job=%s event=failed code=%s reason=reload message=\"%s\"",
               record->id, record->code, lost);
}

static void
s_restore (s_server_t *self, imgp_job_t *record)
{
    imgp_job_t *job = imgp_table_insert (self->table, record);
    assert (job);                   //  the spool names each id once
    if (job->phase == IMGP_PHASE_FINISHED)
        imgp_spool_drop_original (self->spool, job->id);
}

static int
s_recover (s_server_t *self)
{
    zlistx_t *records = zlistx_new ();
    assert (records);
    zlistx_set_destructor (records, s_free_record);
    zlistx_set_comparator (records, s_record_compare);
    int rc = imgp_spool_scan (self->spool, s_collect, records);
    if (rc >= 0) {
        imgp_job_t *record;
        for (record = zlistx_first (records); record; record = zlistx_next (records))
            s_restore_check (self, record);
        zlistx_sort (records);
        for (record = zlistx_first (records); record; record = zlistx_next (records))
            s_restore (self, record);
        imgp_info ("event=recovered jobs=%zu queued=%zu dir=\"%s\"", imgp_table_size (self->table),
                   imgp_table_queued (self->table), self->config->data_dir);
    }
    zlistx_destroy (&records);
    return rc < 0 ? -1 : 0;
}

static int
s_bind (s_server_t *self, imgp_broker_socket_t which, int type, const char *endpoint)
{
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return -1;
    self->sockets [which] = sock;
    zsock_set_linger (sock, S_LINGER_MS);
    zsock_set_sndtimeo (sock, 0);           //  the loop never blocks on a send
    zsock_set_rcvtimeo (sock, 0);           //  nor on a receive: s_drain reads to EAGAIN
    if (imgp_curve_apply (self->curve, sock)
    ||  imgp_curve_watch (self->curve, sock, s_socket_names [which]))
        return -1;
    if (which == IMGP_BROKER_INTAKE || which == IMGP_BROKER_JOBS)
        zsock_set_maxmsgsize (sock, imgp_msg_max_size (self->config->max_upload_bytes));
    if (which == IMGP_BROKER_STATUS)
        zsock_set_maxmsgsize (sock, imgp_msg_max_size (0));
    if (which == IMGP_BROKER_INTAKE || which == IMGP_BROKER_STATUS) {
        //  One frontend sends every request of its thousands of HTTP
        //  workers over one DEALER: a ROUTER drops replies beyond its
        //  per-peer high-water mark (1000 by default) without a word.
        zsock_set_sndhwm (sock, S_FRONTEND_HWM);
        zsock_set_rcvhwm (sock, S_FRONTEND_HWM);
    }
    if (which == IMGP_BROKER_JOBS) {
        //  A send to a peer that is gone fails (EHOSTUNREACH) instead of
        //  being dropped in silence, so its job stays queued; a resizer
        //  that reconnects takes its name (routing id) back at once.
        zsock_set_router_mandatory (sock, 1);
        zsock_set_router_handover (sock, 1);
        //  Each JOB queued towards a resizer holds its original in our
        //  memory. An honest resizer reads at once and asks for 2; one that
        //  claims credit and never reads fills its pipe, and the send that
        //  finds it full (EAGAIN) takes its credit away.
        zsock_set_sndhwm (sock, S_JOBS_HWM);
        //  ZMTP heartbeats drop the pipe of a resizer whose host vanished,
        //  so sends to it fail before our own heartbeat timeout.
        zsock_set_heartbeat_ivl (sock, S_PEER_HEARTBEAT_MS);
        zsock_set_heartbeat_timeout (sock, (int) self->config->heartbeat_timeout_ms);
    }
    if (zsock_bind (sock, "%s", endpoint) == -1) {
        imgp_error ("event=bind_failed socket=%s endpoint=%s error=\"%s\"",
                    s_socket_names [which], endpoint, zmq_strerror (zmq_errno ()));
        return -1;
    }
    self->endpoints [which] = zsock_last_endpoint (sock);
    return self->endpoints [which] ? 0 : -1;
}

static void
s_server_destroy (s_server_t **self_p)
{
    s_server_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < S_SOCKETS; i++) {
        zsock_destroy (&self->sockets [i]);
        zstr_free (&self->endpoints [i]);
    }
    imgp_waiters_destroy (&self->waiters);    //  nobody needs an answer now
    zhashx_destroy (&self->store_failures);
    zlistx_destroy (&self->accepted);         //  none held: each pass sends them
    imgp_table_destroy (&self->table);
    imgp_peers_destroy (&self->peers);
    imgp_curve_destroy (&self->curve);
    imgp_spool_destroy (&self->spool);
    free (self);
    *self_p = NULL;
}

//  The CURVE keys, when configured: both files or neither.
static int
s_curve_new (s_server_t *self)
{
    const char *secret = self->config->curve_secret;
    const char *clients = self->config->curve_clients;
    if (!secret || !secret [0] || !clients || !clients [0])
        return 0;               //  imgp_broker_config_check took "both or neither"
    self->curve = imgp_curve_server_new (secret, clients);
    return self->curve ? 0 : -1;
}

static void
s_msg_destructor (void **item_p)
{
    imgp_msg_destroy ((imgp_msg_t **) item_p);
}

static s_server_t *
s_server_new (zsock_t *pipe, const imgp_broker_config_t *config)
{
    s_server_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->pipe = pipe;
    self->config = config;
    self->table = imgp_table_new ();
    self->peers = imgp_peers_new ();
    self->waiters = imgp_waiters_new ();
    self->accepted = zlistx_new ();
    self->store_failures = zhashx_new ();
    assert (self->accepted && self->store_failures);
    zlistx_set_destructor (self->accepted, s_msg_destructor);
    self->spool = imgp_spool_new_keeping (config->data_dir, config->fsync,
                                          config->keep_originals);
    if (!self->spool || s_curve_new (self) || s_recover (self)
    ||  s_bind (self, IMGP_BROKER_INTAKE, ZMQ_ROUTER, config->intake)
    ||  s_bind (self, IMGP_BROKER_STATUS, ZMQ_ROUTER, config->status)
    ||  s_bind (self, IMGP_BROKER_JOBS, ZMQ_ROUTER, config->jobs)) {
        s_server_destroy (&self);
        return NULL;
    }
    self->next_tick = zclock_mono () + config->tick_ms;
    return self;
}

//  =====================================================================
//  The actor

static void
s_on_pipe (s_server_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command)
        return;                     //  interrupted
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
        imgp_warn ("event=unknown_command command=%s", command);
    zstr_free (&command);
}

//  Serve the messages waiting on a socket until it has none (EAGAIN: the
//  sockets have a receive timeout of 0) or `batch` were taken. Not
//  ZMQ_EVENTS before each receive: libzmq answers it with a poll(2) of its
//  mailbox (and a getpid), one system call per message, where receiving
//  until EAGAIN makes one per drain. Malformed messages were logged and
//  dropped by imgp_msg_recv (NULL, EPROTO). Returns true when the batch
//  ran out first: more may be waiting.
static bool
s_drain (s_server_t *self, imgp_broker_socket_t which, s_handler_fn *handler, int batch)
{
    zsock_t *sock = self->sockets [which];
    for (int i = 0; i < batch; i++) {
        imgp_msg_t *msg = imgp_msg_recv (sock);
        if (!msg && errno != EPROTO)
            return false;           //  drained (or interrupted: the poll tells)
        if (msg)
            handler (self, msg);
        imgp_msg_destroy (&msg);
    }
    return true;
}

//  How long the loop may sleep: until the next tick or the earliest
//  deadline of a held request, whichever comes first, so a wait ends on
//  time rather than at the tick after.
static long
s_poll_timeout (s_server_t *self)
{
    int64_t until = self->next_tick;
    int64_t deadline = imgp_waiters_next_deadline (self->waiters);
    if (deadline >= 0 && deadline < until)
        until = deadline;
    int64_t wait = until - zclock_mono ();
    return wait > 0 ? (long) wait : 0;
}

//  One pass over the sockets, each drained up to its batch. Results and
//  heartbeats are taken and dispatch runs before each slice of SUBMITs,
//  so the jobs they free leave at once: a stream of uploads cannot starve
//  the resizers (the DESIGN's "intake starves dispatch"). Returns true
//  when a socket may have more.
static bool
s_serve_pass (s_server_t *self)
{
    bool more = false, intake_more = true;
    for (int slice = 0; slice < S_INTAKE_SLICES && intake_more; slice++) {
        more |= s_drain (self, IMGP_BROKER_JOBS, s_on_jobs, S_BATCH_JOBS);
        s_dispatch (self);
        intake_more = s_drain (self, IMGP_BROKER_INTAKE, s_on_intake, S_BATCH_INTAKE);
    }
    more |= intake_more;
    more |= s_drain (self, IMGP_BROKER_STATUS, s_on_status_socket, S_BATCH_STATUS);
    return more;
}

//  The loop sleeps in zmq_poll only when a pass found every socket empty;
//  while work keeps coming it goes pass after pass without a poll (a
//  receive that finds nothing costs less than a poll of four sockets).
static void
s_server_run (s_server_t *self)
{
    zmq_pollitem_t items [] = {
        { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->sockets [IMGP_BROKER_INTAKE]), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->sockets [IMGP_BROKER_STATUS]), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->sockets [IMGP_BROKER_JOBS]), 0, ZMQ_POLLIN, 0 },
    };
    bool more = true;
    unsigned passes = 0;
    while (!self->terminated) {
        if (!more) {
            imgp_log_flush ();      //  a buffered log (main.c) waits no longer than a pass
            int rc = zmq_poll (items, 4, s_poll_timeout (self));
            if (rc == -1 && zmq_errno () != EINTR) {
                imgp_error ("event=poll_failed error=\"%s\"", zmq_strerror (zmq_errno ()));
                break;              //  context terminated: nothing more we can do
            }
        }
        //  The pipe ($TERM) is in the poll, and looked at every few busy
        //  passes (each look is a system call), so a broker under a steady
        //  load still stops when told.
        if (((++passes % S_PIPE_EVERY) == 0 || !more)
        &&  (zsock_events (self->pipe) & ZMQ_POLLIN))
            s_on_pipe (self);
        more = s_serve_pass (self);
        if (zclock_mono () >= self->next_tick)
            s_on_tick (self);
        s_expire (self, zclock_mono ());
        s_dispatch (self);
        s_end_pass (self);
    }
}

//  Startup failed: still obey the actor contract and wait for $TERM.
static void
s_wait_term (zsock_t *pipe)
{
    while (true) {
        char *command = zstr_recv (pipe);
        bool term = !command || streq (command, "$TERM");
        zstr_free (&command);
        if (term)
            return;
    }
}

static void
s_actor (zsock_t *pipe, void *args)
{
    imgp_broker_t *owner = (imgp_broker_t *) args;
    zsock_signal (pipe, 0);         //  zactor_new handshake
    s_server_t *self = s_server_new (pipe, &owner->config);
    zsock_signal (pipe, self ? 0 : 1);
    if (!self) {
        s_wait_term (pipe);
        return;
    }
    zstr_sendx (pipe, self->endpoints [0], self->endpoints [1], self->endpoints [2], NULL);
    s_server_run (self);
    s_server_destroy (&self);
}

//  =====================================================================
//  The caller's side

static const char *
s_keep (imgp_broker_t *self, int slot, const char *text)
{
    self->strings [slot] = strdup (text ? text : "");
    assert (self->strings [slot]);
    return self->strings [slot];
}

int
imgp_broker_config_check (const imgp_broker_config_t *config)
{
    assert (config);
    const char *secret = config->curve_secret, *clients = config->curve_clients;
    bool has_secret = secret && secret [0], has_clients = clients && clients [0];
    if (has_secret != has_clients) {
        imgp_error ("event=start_failed reason=\"--curve-secret and --curve-clients go "
                    "together: give both or neither\"");
        return -1;
    }
    const char *endpoints [S_SOCKETS] = { config->intake, config->status, config->jobs };
    for (int which = 0; which < S_SOCKETS; which++)
        if (!has_secret && !config->insecure && !imgp_curve_endpoint_local (endpoints [which])) {
            imgp_error ("event=bind_refused socket=%s endpoint=%s reason=\"not a loopback "
                        "address and no CURVE keys: give --curve-secret and --curve-clients, "
                        "or --insecure\"", s_socket_names [which], endpoints [which]);
            return -1;
        }
    return 0;
}

imgp_broker_t *
imgp_broker_new (const imgp_broker_config_t *config)
{
    assert (config);
    //  A JOB carries at most this many attempts (PROTOCOL.md 3.2).
    assert (config->max_attempts >= 1 && config->max_attempts <= IMGP_ATTEMPTS_MAX);
    assert (config->tick_ms >= 0);
    if (imgp_broker_config_check (config))
        return NULL;
    imgp_broker_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    if (self->config.tick_ms == 0)
        self->config.tick_ms = S_TICK_MS;
    self->config.intake = s_keep (self, 0, config->intake);
    self->config.status = s_keep (self, 1, config->status);
    self->config.jobs = s_keep (self, 2, config->jobs);
    self->config.data_dir = s_keep (self, 3, config->data_dir);
    self->config.curve_secret = s_keep (self, 4, config->curve_secret);
    self->config.curve_clients = s_keep (self, 5, config->curve_clients);

    self->actor = zactor_new (s_actor, self);
    if (!self->actor || zsock_wait (self->actor) != 0
    ||  zstr_recvx (self->actor, &self->endpoints [0], &self->endpoints [1],
                    &self->endpoints [2], NULL) != S_SOCKETS) {
        imgp_broker_destroy (&self);
        return NULL;
    }
    return self;
}

void
imgp_broker_destroy (imgp_broker_t **self_p)
{
    assert (self_p);
    imgp_broker_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy (&self->actor);
    for (int i = 0; i < S_SOCKETS; i++)
        zstr_free (&self->endpoints [i]);
    for (int i = 0; i < S_STRINGS; i++)
        free (self->strings [i]);
    free (self);
    *self_p = NULL;
}

const char *
imgp_broker_endpoint (imgp_broker_t *self, imgp_broker_socket_t which)
{
    assert (self);
    assert (which < S_SOCKETS);
    return self->endpoints [which];
}

/*  imgp_spool — the broker's spool: what it has acknowledged, on disk, so a
    restart loses nothing.

    Layout: an append-only log, DIR/log/SEQ.seg (SEQ: 20 decimal digits,
    in write order), a segment rolled at about 64 MiB. Each entry is a fixed
    56-byte header and its payload; the header (integers little-endian):
        0..3   magic "IMP2"         16..19  CRC-32C of the payload
        4      type                 20..23  CRC-32C of the header (these 4
        5..7   zero                         bytes taken as zero)
        8..15  payload length       24..55  job id
    Types: 1 RECORD (the job record, JSON), 2 IN (the original), 3 OUT (the
    thumbnail), 4 DELETE (the id's entries written before the position it
    names are forgotten; see imgp_spool.c). The format is this one
    only: no other was ever released.
    An entry is written with one writev at once, so once a put/save/delete
    returned, kill -9 loses nothing; against power loss, --fsync makes
    imgp_spool_sync fdatasync the log (the broker calls it once per loop
    pass, before it sends that pass's ACCEPTED replies: group commit).

    Replay at open: segments in order; an id's last RECORD wins; a DELETE
    forgets what was written before its position. The RECORD is the commit
    point: an IN or OUT without one is debris of a crash. An original is
    live while its job's last record is unfinished, so the final record
    retires it on disk
    (the broker's "final record before the original goes"). Only the last
    segment written (new entries always go to a segment made at open) can
    end in a write cut short: a torn entry at its end (header or payload
    short, a final payload that does not match, zeros) is cut off and
    logged (spool_torn_tail). Anything else that does not check is damage,
    logged (spool_damaged) and kept on disk (that segment is never
    compacted): an entry whose header CRC holds but payload CRC does not is
    skipped by its length; a header that does not hold (a flipped length or
    magic) is skipped by scanning forward for the next good header (magic
    and header CRC). So damage costs the entries it hit, not the rest of
    the segment. A job that an entry with a bad payload CRC names (its
    id is in the header, which holds) is marked damaged (imgp_spool_damaged):
    when none of its records is left it gets a failed record, code
    spool_damaged, so an accepted job never turns into "not found". What
    is read back at runtime is checked against its CRC as well
    (imgp_spool_get). A record that does not decode is set aside as
    DIR/corrupt/ID.json (with ID.in) and logged.

    Disk stays bounded by live data: a segment with nothing live is
    unlinked (an append that fails on a full disk starts a new head, so
    the old one's dead entries can go and intake resumes without a
    restart), and a closed segment whose live bytes fall under a quarter is
    compacted (live entries appended again, then it is unlinked), in
    steps of at most 16,384 entries or 8 MiB per imgp_spool_maintain, so the
    broker's loop never stalls on it. Memory: an index (id -> where its
    record, original and thumbnail are) and the originals of unfinished
    jobs up to a bound (256 MiB), so dispatch reads no disk; beyond it an
    original is read back with pread, as a thumbnail always is.

    An older broker's layout (DIR/jobs/ID.json, ID.in, ID.out) is imported
    once at open, synced, and then removed, so an upgrade loses no job.

    Why its own module: the invariant "ACCEPTED means on disk" rests on
    these few functions. Ids were validated by callers (asserted here); the
    log never names a file after an id. Never decodes images.
*/
#ifndef IMGP_SPOOL_H_INCLUDED
#define IMGP_SPOOL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_table.h"

typedef enum {
    IMGP_SPOOL_IN = 0,          //  the original
    IMGP_SPOOL_OUT,             //  the thumbnail
    IMGP_SPOOL_JSON             //  the job record
} imgp_spool_kind_t;

typedef struct _imgp_spool_t imgp_spool_t;

//  Called by imgp_spool_scan for each valid record, borrowed for the call
//  with its renditions (imgp_job_copy what you keep; never clear it).
//  Return 0 to go on, -1 to stop the scan.
typedef int (imgp_spool_record_fn) (const imgp_job_t *record, void *arg);

//  Open the spool under `dir` (creating DIR and DIR/log when missing),
//  replay the log, import an old DIR/jobs. `fsync`: imgp_spool_sync
//  fdatasyncs (durable against power loss). Returns NULL, with an error
//  logged, on failure.
imgp_spool_t *imgp_spool_new (const char *dir, bool fsync);

//  imgp_spool_new, where a done job keeps its original on disk (until the
//  job is deleted) when `keep_originals` (--keep-originals) or its format
//  is auto; otherwise its final record retires it. The final record says
//  which ("keep_original":true), so replay decides the same whatever the
//  flag of a later start.
imgp_spool_t *imgp_spool_new_keeping (const char *dir, bool fsync, bool keep_originals);

//  Replay the log under `dir` without changing anything (no cut, no
//  import, no new segment): for counting and reading in tools and tests,
//  also while a broker writes it (its last entry may look torn: ignored).
//  Writes fail. NULL when DIR/log cannot be read.
imgp_spool_t *imgp_spool_new_readonly (const char *dir);

//  Close the log (files stay); safe on NULL and twice. Buffers handed out
//  by imgp_spool_get stay valid until released.
void imgp_spool_destroy (imgp_spool_t **self_p);

//  Append the original (IN) or thumbnail (OUT) of `id`, replacing any
//  before. An original is also kept in memory while there is room.
//  Returns 0, or -1 with an error logged.
int imgp_spool_put (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                    const void *data, size_t size);

//  The bytes of `id`'s original, thumbnail or record text (NUL-terminated),
//  into *data_p, which the caller releases with imgp_spool_release: it is
//  libzmq's free_fn, so imgp_msg_set_data (msg, data, size,
//  imgp_spool_release) sends it without a copy (an original kept in memory
//  is shared, not copied). What is read from disk is checked against its
//  CRC: a mismatch logs spool_damaged once and fails with errno EBADMSG.
//  Returns 0, or -1 with an error logged (missing included).
int imgp_spool_get (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                    void **data_p, size_t *size_p);

//  Release a buffer from imgp_spool_get; any thread (libzmq's I/O thread
//  calls it after a send). `hint` is unused.
void imgp_spool_release (void *data, void *hint);

//  True when the spool holds that artefact of `id`.
bool imgp_spool_has (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind);

//  Append the record: the commit point of a job. A finished record (done,
//  failed) retires the job's original. Returns 0, or -1 with an error logged.
int imgp_spool_save (imgp_spool_t *self, const imgp_job_t *record);

//  Append the original (IN) or thumbnail (OUT) of the record's job and
//  then the record, with one writev (both or neither): a job's acceptance
//  in one write. `kind` JSON (data NULL) is imgp_spool_save. Returns 0, or
//  -1 with an error logged.
int imgp_spool_save_with (imgp_spool_t *self, const imgp_job_t *record,
                          imgp_spool_kind_t kind, const void *data, size_t size);

//  Let go of `id`'s original in memory and in the index. On disk only the
//  job's final record retires it, so call this after that record was saved
//  (or for an original that never got a record). Returns 0.
int imgp_spool_drop_original (imgp_spool_t *self, const char *id);

//  Forget a job: append a DELETE, drop it from the index. A job not held is
//  no error. Returns 0, or -1 (logged) when the DELETE was not written: a
//  restart then reloads the job.
int imgp_spool_delete (imgp_spool_t *self, const char *id);

//  Make what was appended durable: fdatasync when opened with `fsync` and
//  something was written since the last call, else nothing. Returns 0, or
//  -1 with an error logged.
int imgp_spool_sync (imgp_spool_t *self);

//  Housekeeping, one step of it per call (the broker calls it on its
//  housekeeping tick, every 100 ms): unlink segments with nothing live,
//  compact sparse ones within a budget, give the memory of a burst of
//  originals back (malloc_trim). Does nothing on a read-only view.
void imgp_spool_maintain (imgp_spool_t *self);

//  Call `fn` for each job record the spool holds (any order). Returns the
//  number of records passed to `fn`.
int imgp_spool_scan (imgp_spool_t *self, imgp_spool_record_fn *fn, void *arg);

//  How many live records (JSON), originals (IN) or thumbnails (OUT) the
//  spool holds.
size_t imgp_spool_count (imgp_spool_t *self, imgp_spool_kind_t kind);

//  Bytes of originals kept in memory at most (default 256 MiB); 0 keeps none.
void imgp_spool_set_memory (imgp_spool_t *self, size_t bytes);

//  True after an append failed (ENOSPC, EDQUOT, EIO...), until an append
//  works or imgp_spool_maintain finds the filesystem has room again for
//  the write that failed (at most 1 MiB of it is asked for): /readyz says
//  spool_full meanwhile.
bool imgp_spool_full (imgp_spool_t *self);

//  Bytes free for us on the spool's filesystem now (statvfs f_bavail),
//  UINT64_MAX when it cannot tell.
uint64_t imgp_spool_room (imgp_spool_t *self);

//  Bytes the index points at: records, originals of unfinished (or kept)
//  jobs, thumbnails, with their entry headers. The disk holds more until
//  housekeeping reclaims dead entries (at most a quarter of each closed
//  segment stays dead, plus the head segment, up to 64 MiB).
uint64_t imgp_spool_live_bytes (imgp_spool_t *self);

//  True when an entry of `id` failed its checksum: at replay (the entry
//  was skipped) or when read back (imgp_spool_get then failed, errno
//  EBADMSG). Cleared when the job is deleted.
bool imgp_spool_damaged (imgp_spool_t *self, const char *id);

//  Tests only, process-wide: make saves of `id`'s record (JSON), saves
//  with its thumbnail (OUT, imgp_spool_save_with) or reads of its original
//  (IN) fail as on a full or broken disk. NULL `id` clears `kind`.
void imgp_spool_fault (const char *id, imgp_spool_kind_t kind);

//  The record as JSON text (caller frees) and back (-1 when it does not
//  parse or a value is out of range): exposed for tests. A record without
//  "owner" (from a broker before owners) decodes with owner "". Decode
//  overwrites *record without freeing what it held; on 0 the record owns
//  its renditions (the caller clears it: imgp_job_clear), on -1 nothing.
char *imgp_spool_record_encode (const imgp_job_t *record);
int imgp_spool_record_decode (const char *text, imgp_job_t *record);

#endif

/*  imgp_spool — see imgp_spool.h.

    Why a log and not a file per artefact: on ext4 every created file pays
    for choosing an inode (measured: 48 % of the broker's time went to
    openat(O_CREAT), 14 % to rename; 600-2,500 tiny jobs/s). Appending to
    one open file costs a writev per entry.

    Bookkeeping: each segment counts its bytes and its live bytes (entries
    the index points at). An entry stops being live when a later one
    replaces it, when its job is deleted, or (an original) when its job's
    final record is saved. DELETEs are not counted live: a segment of only
    DELETEs goes through compaction, which keeps a DELETE only while an
    older segment may still hold entries of its id.

    A DELETE is positional. Its payload (three 64-bit little-endian
    numbers) names the first segment its job wrote to and the position
    (segment, offset) where the DELETE was first written; replay forgets
    only the id's entries written before that position. Compaction copies
    a DELETE byte for byte, position included, so the copy never needs the
    live entries of a job that took the same id since to follow it: no
    crash or failed write between two writes of a compaction can make
    replay forget an accepted job. (The first version appended the DELETE
    again and then moved the new job's entries behind it, one write each.)
    Why positions compare: a segment's number only grows, an entry of the
    old job is older than the DELETE, and one of the new job is newer, and
    compaction only moves an entry to the head, so that stays true.
*/
#include "imgp_spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>
#if defined (__x86_64__)
#include <nmmintrin.h>
#endif

#include "imgp_jw.h"
#include "imgp_log.h"

#define S_RECORD_VERSION 1
#define S_RECORD_MAX 65536              //  a record is < 2 KB; refuse anything huge
#define S_RECORD_TEXT 8192              //  room to write one: strings escaped 6x fit
#define S_SEGMENT_MAX (64ULL << 20)     //  roll the head segment beyond this
#define S_MEMORY_MAX (256ULL << 20)     //  originals kept in memory, bytes
#define S_ENTRY_MAX ((1ULL << 30) + (1ULL << 20))  //  a payload: the largest upload + slack
#define S_READ_BUF (64 << 10)           //  replay and compaction read segments in chunks
#define S_COMPACT_BYTES (8ULL << 20)    //  live bytes moved per maintain, about
#define S_COMPACT_ENTRIES 16384         //  entries compaction reads per maintain, at most
#define S_BATCH_BYTES (1 << 20)         //  compaction writes entries in batches this big
#define S_TRIM_BYTES (64 << 10)         //  malloc_trim after a burst of originals this big
#define S_HEADER 56                     //  bytes of an entry header
#define S_MAGIC 0x32504d49u             //  "IMP2" little-endian
#define S_PROBE_SLACK (64 << 10)        //  room beyond a failed write before appends retry
#define S_PROBE_NEED_MAX (1 << 20)      //  ... of which at most this much is asked
#define S_DELETE_SIZE 24                //  a DELETE's payload: first seq, before seq, before offset

typedef enum {
    S_RECORD = 1, S_IN = 2, S_OUT = 3, S_DELETE = 4
} s_type_t;

//  One segment file of the log.
typedef struct {
    uint64_t seq;               //  its number, the order of replay
    int fd;                     //  open for pread (and writes, the head)
    uint64_t size;              //  bytes of whole entries
    uint64_t live;              //  bytes of entries the index points at
    size_t deletes;             //  DELETE entries in it
    bool damaged;               //  not read to its end: kept, never compacted
} s_segment_t;

//  Where an entry is: its segment (NULL: none), header offset, payload size.
typedef struct {
    s_segment_t *segment;       //  borrowed from the segment list
    uint64_t offset;            //  of the entry's header
    uint64_t size;              //  of its payload
    uint32_t crc;               //  CRC-32C of its payload, checked when read back
} s_loc_t;

//  A buffer handed out by imgp_spool_get: refcounted, so a kept original
//  goes to many JOB sends (and libzmq's I/O thread) without a copy.
typedef struct {
    atomic_int refs;            //  holders: the index and each get
    size_t size;                //  of data
    max_align_t align_;         //  data starts aligned
    unsigned char data [];      //  the bytes (+1 NUL)
} s_blob_t;

//  What the index knows of one id.
typedef struct {
    s_loc_t record;             //  latest RECORD
    s_loc_t in;                 //  original, while live
    s_loc_t out;                //  thumbnail
    bool finished;              //  latest record is done or failed
    bool keep;                  //  its original outlives a finished record (s_keeps)
    uint64_t first_seq;         //  first segment this job wrote to
    s_blob_t *original;         //  kept in memory, or NULL
} s_entry_t;

struct _imgp_spool_t {
    char *dir;                  //  DIR, as given
    char *log_dir;              //  DIR/log
    bool fsync;                 //  imgp_spool_sync fdatasyncs
    bool readonly;              //  replay only: no writes, no cuts
    zlistx_t *segments;         //  s_segment_t, by seq; the last one is the head
    zhashx_t *index;            //  id -> s_entry_t
    size_t memory;              //  bytes of originals kept now
    size_t memory_max;          //  ... at most
    size_t memory_peak;         //  ... at most since the last malloc_trim
    bool dirty;                 //  appended since the last sync
    s_segment_t *compacting;    //  the segment being compacted, in steps, or NULL
    uint64_t cursor;            //  ... the offset of its next entry
    uint64_t compact_from;      //  ... the head's seq when it began (what to sync)
    int compact_moved;          //  ... entries moved so far
    int64_t compact_started;    //  ... usecs when it began
    bool keep_originals;        //  every done job keeps its original (--keep-originals)
    bool full;                  //  the last append failed; cleared by one that works
    uint64_t need;              //  ... bytes it wanted (the probe waits for that room)
    zhashx_t *damaged;          //  ids whose entries failed a checksum (replay or read)
};

//  Tests: [IN] original reads, [OUT] thumbnail writes, [JSON] record saves.
static char s_fault [3][IMGP_ID_LEN + 1];

//  The record's JSON text (with its form, at the end of this file).
static size_t s_record_write (const imgp_job_t *r, bool keep, char *buf, size_t size);
static int s_record_decode (const char *text, imgp_job_t *r, bool *keep_p);
//  Has a full spool room again? (beside imgp_spool_full)
static void s_probe (imgp_spool_t *self);

//  =====================================================================
//  Small helpers

//  A path into `path`; the length was checked once in s_open.
static void
s_pathf (char path [PATH_MAX], const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_pathf (char path [PATH_MAX], const char *format, ...)
{
    va_list args;
    va_start (args, format);
    int n = vsnprintf (path, PATH_MAX, format, args);
    va_end (args);
    assert (n > 0 && n < PATH_MAX);
    (void) n;
}

static int
s_mkdir (const char *path)
{
    if (mkdir (path, 0750) == 0 || errno == EEXIST)
        return 0;
    imgp_error ("event=spool_error op=mkdir path=\"%s\" error=\"%s\"", path, strerror (errno));
    return -1;
}

static void
s_fsync_dir (const char *path)
{
    int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync (fd))
        imgp_warn ("event=spool_error op=fsync path=\"%s\" error=\"%s\"", path, strerror (errno));
    if (fd >= 0)
        close (fd);
}

static void
s_put_le (unsigned char *p, uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p [i] = (unsigned char) (value >> (8 * i));
}

static uint64_t
s_get_le (const unsigned char *p, int bytes)
{
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; i--)
        value = (value << 8) | p [i];
    return value;
}

static int
s_pread_all (int fd, void *buf, size_t size, uint64_t offset)
{
    char *p = buf;
    while (size > 0) {
        ssize_t n = pread (fd, p, size, (off_t) offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;        //  shorter than the index says
            return -1;
        }
        p += n;
        offset += (uint64_t) n;
        size -= (size_t) n;
    }
    return 0;
}

static s_blob_t *
s_blob_new (size_t size)
{
    s_blob_t *blob = malloc (sizeof *blob + size + 1);
    if (!blob)
        return NULL;
    atomic_init (&blob->refs, 1);
    blob->size = size;
    blob->data [size] = 0;
    return blob;
}

static void
s_blob_unref (s_blob_t **blob_p)
{
    s_blob_t *blob = *blob_p;
    if (blob && atomic_fetch_sub (&blob->refs, 1) == 1)
        free (blob);
    *blob_p = NULL;
}

void
imgp_spool_release (void *data, void *hint)
{
    (void) hint;
    if (!data)
        return;
    s_blob_t *blob = (s_blob_t *) ((unsigned char *) data - offsetof (s_blob_t, data));
    s_blob_unref (&blob);
}

//  =====================================================================
//  CRC-32C (Castagnoli) of entries: the SSE 4.2 instruction where there is
//  one (zlib's crc32 was a quarter of the broker's CPU with 1 MiB
//  originals), a table elsewhere; both give the same sums.

static uint32_t s_crc_table [256];      //  for the software CRC-32C
static bool s_crc_hw;                   //  the CPU has the crc32 instruction
static pthread_once_t s_crc_once = PTHREAD_ONCE_INIT;

#if defined (__x86_64__)
__attribute__ ((target ("sse4.2")))
static uint32_t
s_crc_hw_update (uint32_t crc, const unsigned char *data, size_t size)
{
    uint64_t wide = crc;
    for (; size >= 8; data += 8, size -= 8) {
        uint64_t word;
        memcpy (&word, data, 8);
        wide = _mm_crc32_u64 (wide, word);
    }
    crc = (uint32_t) wide;
    for (; size > 0; data++, size--)
        crc = _mm_crc32_u8 (crc, *data);
    return crc;
}
#endif

static uint32_t
s_crc_sw_update (uint32_t crc, const unsigned char *data, size_t size)
{
    for (; size > 0; data++, size--)
        crc = s_crc_table [(crc ^ *data) & 0xff] ^ (crc >> 8);
    return crc;
}

static void
s_crc_init (void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (crc & 1 ? 0x82f63b78u : 0);
        s_crc_table [i] = crc;
    }
    //  The check value of CRC-32C, by both ways: a build that got either
    //  wrong would write logs no other machine reads.
    const unsigned char *check = (const unsigned char *) "123456789";
    assert (~s_crc_sw_update (~0u, check, 9) == 0xe3069283u);
#if defined (__x86_64__)
    s_crc_hw = __builtin_cpu_supports ("sse4.2");
    assert (!s_crc_hw || ~s_crc_hw_update (~0u, check, 9) == 0xe3069283u);
#endif
}

//  The CRC-32C of `size` bytes, going on from `crc` (0 to start).
static uint32_t
s_crc (uint32_t crc, const void *data, size_t size)
{
    pthread_once (&s_crc_once, s_crc_init);
#if defined (__x86_64__)
    if (s_crc_hw)
        return ~s_crc_hw_update (~crc, data, size);
#endif
    return ~s_crc_sw_update (~crc, data, size);
}

//  The header's own CRC-32C: of its 56 bytes with bytes 20..23 (where it
//  goes) taken as zero. It covers the payload's CRC (bytes 16..19).
static uint32_t
s_header_crc (const unsigned char header [S_HEADER])
{
    static const unsigned char zero [4];
    uint32_t crc = s_crc (0, header, 20);
    crc = s_crc (crc, zero, 4);
    return s_crc (crc, header + 24, S_HEADER - 24);
}

//  =====================================================================
//  Entries and locations

static void
s_loc_kill (s_loc_t *loc)
{
    if (loc->segment)
        loc->segment->live -= S_HEADER + loc->size;
    loc->segment = NULL;
}

static void
s_forget_original (imgp_spool_t *self, s_entry_t *entry)
{
    s_loc_kill (&entry->in);
    if (entry->original) {
        self->memory -= entry->original->size;
        s_blob_unref (&entry->original);
    }
}

//  Does a finished job keep its original on disk? A done job keeps it
//  with --keep-originals, or when more can be made of it later (format
//  auto: a format asked for later is made from it); a failed job never.
//  The record says so ("keep_original":true), so replay, a read-only view
//  and a later start without the flag decide the same: a kept original
//  stays until its job is deleted.
static bool
s_keeps (imgp_spool_t *self, const imgp_job_t *record)
{
    if (record->state == IMGP_STATE_FAILED)
        return false;
    return self->keep_originals || record->opts.format == IMGP_FORMAT_AUTO;
}

//  A job finished: its original leaves memory, and the disk unless kept.
static void
s_retire_original (imgp_spool_t *self, s_entry_t *entry)
{
    if (!entry->keep) {
        s_forget_original (self, entry);
        return;
    }
    if (entry->original) {
        self->memory -= entry->original->size;
        s_blob_unref (&entry->original);
    }
}

static void
s_entry_destroy (void **item_p)
{
    s_entry_t *entry = *item_p;
    if (entry) {
        s_loc_kill (&entry->record);
        s_loc_kill (&entry->in);
        s_loc_kill (&entry->out);
        s_blob_unref (&entry->original);
        free (entry);
    }
    *item_p = NULL;
}

static s_entry_t *
s_entry_require (imgp_spool_t *self, const char *id, uint64_t seq)
{
    s_entry_t *entry = zhashx_lookup (self->index, id);
    if (!entry) {
        entry = calloc (1, sizeof *entry);
        assert (entry);
        entry->first_seq = seq;
        zhashx_insert (self->index, id, entry);
    }
    return entry;
}

//  Forget an entry, and the memory its original holds.
static void
s_entry_remove (imgp_spool_t *self, const char *id)
{
    s_entry_t *entry = zhashx_lookup (self->index, id);
    if (!entry)
        return;
    if (entry->original)
        self->memory -= entry->original->size;
    zhashx_delete (self->index, id);
}

static s_loc_t *
s_entry_loc (s_entry_t *entry, s_type_t type)
{
    return type == S_RECORD ? &entry->record : type == S_IN ? &entry->in : &entry->out;
}

//  =====================================================================
//  Segments

static void
s_segment_path (imgp_spool_t *self, uint64_t seq, char path [PATH_MAX])
{
    s_pathf (path, "%s/%020llu.seg", self->log_dir, (unsigned long long) seq);
}

static void
s_segment_destroy (void **item_p)
{
    s_segment_t *segment = *item_p;
    if (segment) {
        if (segment->fd >= 0)
            close (segment->fd);
        free (segment);
    }
    *item_p = NULL;
}

static s_segment_t *
s_head (imgp_spool_t *self)
{
    return zlistx_last (self->segments);
}

//  Start a new head segment after the last one.
static int
s_roll (imgp_spool_t *self)
{
    s_segment_t *head = s_head (self);
    if (head && self->fsync && self->dirty && fdatasync (head->fd))
        imgp_error ("event=spool_error op=sync segment=%llu error=\"%s\"",
                    (unsigned long long) head->seq, strerror (errno));
    s_segment_t *segment = calloc (1, sizeof *segment);
    assert (segment);
    segment->seq = head ? head->seq + 1 : 1;
    char path [PATH_MAX];
    s_segment_path (self, segment->seq, path);
    segment->fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (segment->fd < 0) {
        imgp_error ("event=spool_error op=create path=\"%s\" error=\"%s\"", path, strerror (errno));
        free (segment);
        return -1;
    }
    if (self->fsync)
        s_fsync_dir (self->log_dir);
    zlistx_add_end (self->segments, segment);
    return 0;
}

//  Write `total` bytes of `iov` (at most 4 pieces) at the end of the head,
//  with one pwritev unless it comes back short. A write that fails is cut
//  off again, so the next entry follows a whole one. Returns 0 or -1.
static int
s_write_head (s_segment_t *head, const struct iovec *iov, int pieces, size_t total)
{
    assert (pieces <= 4);
    size_t done = 0;
    while (done < total) {
        //  Skip what a short write already wrote.
        struct iovec rest [4];
        int count = 0;
        size_t skip = done;
        for (int i = 0; i < pieces; i++) {
            if (skip >= iov [i].iov_len) {
                skip -= iov [i].iov_len;
                continue;
            }
            rest [count].iov_base = (char *) iov [i].iov_base + skip;
            rest [count++].iov_len = iov [i].iov_len - skip;
            skip = 0;
        }
        ssize_t n = pwritev (head->fd, rest, count, (off_t) (head->size + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : EIO;
            if (ftruncate (head->fd, (off_t) head->size))
                imgp_error ("event=spool_error op=truncate what=failed_write error=\"%s\"",
                            strerror (errno));
            errno = saved;
            return -1;
        }
        done += (size_t) n;
    }
    return 0;
}

//  After a write to the head failed: on a full disk (or quota, or EIO)
//  start a new head. Dead entries are reclaimed only in closed segments
//  (unlinked or compacted), so without this a head full of dead originals
//  would refuse every append until a restart; with it, housekeeping frees
//  the old head and intake works again. An empty head is kept (no segment
//  per failed write). The spool is full (imgp_spool_full) until an append
//  works or the probe (imgp_spool_maintain) sees room for `size` bytes.
//  errno is kept for the caller.
static void
s_write_failed (imgp_spool_t *self, uint64_t size)
{
    int error = errno;
    s_segment_t *head = s_head (self);
    bool roll = (error == ENOSPC || error == EDQUOT || error == EIO) && head->size > 0;
    if (!self->full || roll)
        imgp_warn ("event=spool_full segment=%llu need=%llu error=\"%s\" action=%s",
                   (unsigned long long) head->seq, (unsigned long long) size,
                   strerror (error), roll ? "roll" : "none");
    self->full = true;
    self->need = size;
    if (roll)
        s_roll (self);
    errno = error;
}

//  One entry to append: its type and payload (borrowed).
typedef struct {
    s_type_t type;              //  RECORD, IN, OUT or DELETE
    const void *payload;        //  its bytes
    size_t size;                //  ... how many
} s_piece_t;

//  Append entries of `id` (at most 2) to the head with one writev;
//  locs [i] says where entry i went. Returns 0 or -1 (nothing appended).
static int
s_append_n (imgp_spool_t *self, const char *id, const s_piece_t *pieces, int count,
            s_loc_t *locs)
{
    assert (count >= 1 && count <= 2);
    if (self->readonly) {
        errno = EROFS;
        return -1;
    }
    s_segment_t *head = s_head (self);
    if (head->size >= S_SEGMENT_MAX) {
        if (s_roll (self))
            return -1;
        head = s_head (self);
    }
    unsigned char headers [2][S_HEADER];
    struct iovec iov [4];
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        unsigned char *header = headers [i];
        memset (header, 0, S_HEADER);
        s_put_le (header, S_MAGIC, 4);
        header [4] = (unsigned char) pieces [i].type;
        s_put_le (header + 8, pieces [i].size, 8);
        memcpy (header + 24, id, IMGP_ID_LEN);
        uint32_t crc = s_crc (0, pieces [i].payload, pieces [i].size);
        s_put_le (header + 16, crc, 4);
        s_put_le (header + 20, s_header_crc (header), 4);
        iov [2 * i] = (struct iovec) { header, S_HEADER };
        iov [2 * i + 1] = (struct iovec) { (void *) pieces [i].payload, pieces [i].size };
        locs [i] = (s_loc_t) { head, head->size + total, pieces [i].size, crc };
        total += S_HEADER + pieces [i].size;
    }
    if (s_write_head (head, iov, 2 * count, total)) {
        s_write_failed (self, total);
        return -1;
    }
    head->size += total;
    head->live += total;
    self->dirty = true;
    self->full = false;
    return 0;
}

static int
s_append (imgp_spool_t *self, s_type_t type, const char *id, const void *payload,
          size_t size, s_loc_t *loc_p)
{
    s_piece_t piece = { type, payload, size };
    return s_append_n (self, id, &piece, 1, loc_p);
}

//  Reads a segment front to back in chunks, so replaying or compacting a
//  segment of small entries costs a read per S_READ_BUF, not one per entry.
typedef struct {
    s_segment_t *segment;       //  what it reads
    uint64_t end;               //  bytes of the segment to read
    unsigned char *buf;         //  S_READ_BUF bytes
    uint64_t start;             //  segment offset of buf [0]
    size_t len;                 //  bytes valid in buf
} s_reader_t;

static void
s_reader_init (s_reader_t *reader, s_segment_t *segment, uint64_t end, unsigned char *buf)
{
    *reader = (s_reader_t) { segment, end, buf, 0, 0 };
}

//  Bytes [offset, offset + size) of the segment, borrowed until the next
//  call; NULL when `size` is beyond the buffer (read those with pread) or
//  on a read error. The caller checked that they are within `end`.
static const unsigned char *
s_reader_get (s_reader_t *reader, uint64_t offset, size_t size)
{
    if (offset >= reader->start && offset + size <= reader->start + reader->len)
        return reader->buf + (offset - reader->start);
    if (size > S_READ_BUF) {
        errno = EFBIG;
        return NULL;
    }
    uint64_t left = reader->end - offset;
    size_t want = left < S_READ_BUF ? (size_t) left : S_READ_BUF;
    if (s_pread_all (reader->segment->fd, reader->buf, want, offset))
        return NULL;
    reader->start = offset;
    reader->len = want;
    return reader->buf;
}

//  Is this a header we wrote: magic, its own CRC, fields in range? Then
//  its type, payload size and id are trusted.
static bool
s_header_parse (const unsigned char header [S_HEADER], s_type_t *type_p, uint64_t *size_p,
                char id [IMGP_ID_LEN + 1])
{
    if (s_get_le (header, 4) != S_MAGIC || s_get_le (header + 20, 4) != s_header_crc (header))
        return false;
    s_type_t type = header [4];
    uint64_t size = s_get_le (header + 8, 8);
    memcpy (id, header + 24, IMGP_ID_LEN);
    id [IMGP_ID_LEN] = 0;
    if (type < S_RECORD || type > S_DELETE || header [5] || header [6] || header [7]
    ||  size > S_ENTRY_MAX || !imgp_id_valid (id))
        return false;
    *type_p = type;
    *size_p = size;
    return true;
}

//  Read the entry header at `offset` into `header`. Returns 0 when it is
//  good and its entry ends within the reader's end, else -1.
static int
s_header_read (s_reader_t *reader, uint64_t offset, unsigned char header [S_HEADER],
               s_type_t *type_p, uint64_t *size_p, char id [IMGP_ID_LEN + 1])
{
    if (reader->end - offset < S_HEADER)
        return -1;
    const unsigned char *bytes = s_reader_get (reader, offset, S_HEADER);
    if (!bytes)
        return -1;
    memcpy (header, bytes, S_HEADER);
    if (!s_header_parse (header, type_p, size_p, id))
        return -1;
    return reader->end - offset - S_HEADER < *size_p ? -1 : 0;
}

//  Does the entry's payload match its CRC? A payload beyond the reader's
//  buffer is read in chunks of its own.
static bool
s_crc_ok (s_reader_t *reader, uint64_t offset, const unsigned char header [S_HEADER],
          uint64_t size)
{
    const unsigned char *payload = size <= S_READ_BUF
                                 ? s_reader_get (reader, offset + S_HEADER, size) : NULL;
    if (payload)
        return s_crc (0, payload, size) == s_get_le (header + 16, 4);
    unsigned char chunk [65536];
    uint32_t crc = 0;
    uint64_t at = offset + S_HEADER, left = size;
    while (left > 0) {
        size_t n = left < sizeof chunk ? (size_t) left : sizeof chunk;
        if (s_pread_all (reader->segment->fd, chunk, n, at))
            return false;
        crc = s_crc (crc, chunk, n);
        at += n;
        left -= n;
    }
    return crc == s_get_le (header + 16, 4);
}

//  True when the segment holds only zero bytes from `offset` to `end`: a
//  write the disk never got (power loss), not damage.
static bool
s_zero_from (s_segment_t *segment, uint64_t offset, uint64_t end)
{
    unsigned char chunk [65536];
    while (offset < end) {
        size_t n = end - offset < sizeof chunk ? (size_t) (end - offset) : sizeof chunk;
        if (s_pread_all (segment->fd, chunk, n, offset))
            return false;
        for (size_t i = 0; i < n; i++)
            if (chunk [i])
                return false;
        offset += n;
    }
    return true;
}

//  What replay makes of the bytes at an offset. Only the last segment
//  written (the head when the broker stopped) can end in a write cut short;
//  the header's own CRC tells a damaged length or magic from such a tear.
typedef enum {
    S_WHOLE,            //  an entry, both CRCs good
    S_TORN,             //  the last segment's end, cut short by a crash: cut off
    S_SKIP,             //  a good header, a bad payload: skipped by its length
    S_DAMAGED           //  no header to trust here: resync at the next good one
} s_class_t;

//  Classify the bytes at `offset`: S_TORN only in the `last` segment, for
//  an entry that runs past its end (a good header, or fewer bytes than a
//  header), a final entry whose payload does not match (power loss), or
//  zeros to the end; any other bad header is S_DAMAGED, a bad payload
//  under a good header S_SKIP.
static s_class_t
s_classify (s_reader_t *reader, uint64_t offset, bool last, s_type_t *type_p,
            uint64_t *size_p, uint32_t *crc_p, char id [IMGP_ID_LEN + 1])
{
    uint64_t left = reader->end - offset;
    if (left < S_HEADER)
        return last ? S_TORN : S_DAMAGED;
    const unsigned char *bytes = s_reader_get (reader, offset, S_HEADER);
    unsigned char header [S_HEADER];
    if (!bytes || !s_header_parse (memcpy (header, bytes, S_HEADER), type_p, size_p, id))
        return last && bytes && s_zero_from (reader->segment, offset, reader->end)
             ? S_TORN : S_DAMAGED;
    if (*size_p > left - S_HEADER)
        return last ? S_TORN : S_DAMAGED;
    *crc_p = (uint32_t) s_get_le (header + 16, 4);
    if (!s_crc_ok (reader, offset, header, *size_p))
        return last && *size_p == left - S_HEADER ? S_TORN : S_SKIP;
    return S_WHOLE;
}

//  The offset of the next good header after `offset`, or the end.
static uint64_t
s_resync (s_reader_t *reader, uint64_t offset)
{
    for (uint64_t at = offset + 1; at + S_HEADER <= reader->end; at++) {
        const unsigned char *bytes = s_reader_get (reader, at, S_HEADER);
        s_type_t type;
        uint64_t size;
        char id [IMGP_ID_LEN + 1];
        if (!bytes)
            break;
        if (s_get_le (bytes, 4) == S_MAGIC && s_header_parse (bytes, &type, &size, id))
            return at;
    }
    return reader->end;
}

//  Remember that an entry of `id` failed its checksum, so the broker can
//  tell the job's owner (spool_damaged) instead of "not found".
static void
s_mark_damaged (imgp_spool_t *self, const char *id)
{
    if (!zhashx_lookup (self->damaged, id))
        zhashx_insert (self->damaged, id, (void *) 1);
}

//  A DELETE read at replay: forget the id's entries written before its
//  position, keep those of a job that took the id since.
static void
s_replay_delete (imgp_spool_t *self, s_segment_t *segment, const char *id,
                 const unsigned char *payload)
{
    segment->deletes++;
    zhashx_delete (self->damaged, id);          //  what it hit was before: forgotten too
    s_entry_t *entry = zhashx_lookup (self->index, id);
    if (!entry)
        return;
    uint64_t seq = s_get_le (payload + 8, 8), offset = s_get_le (payload + 16, 8);
    bool left = false;
    for (s_type_t type = S_RECORD; type <= S_OUT; type++) {
        s_loc_t *loc = s_entry_loc (entry, type);
        if (loc->segment && (loc->segment->seq < seq
                         ||  (loc->segment->seq == seq && loc->offset < offset)))
            s_loc_kill (loc);
        left |= loc->segment != NULL;
    }
    if (!left)
        s_entry_remove (self, id);
}

//  Apply one whole entry read at replay.
static void
s_replay_entry (imgp_spool_t *self, s_reader_t *reader, s_type_t type, const char *id,
                uint64_t offset, uint64_t size, uint32_t crc)
{
    if (type == S_DELETE) {
        s_segment_t *segment = reader->segment;
        const unsigned char *payload = size == S_DELETE_SIZE
                                     ? s_reader_get (reader, offset + S_HEADER, size) : NULL;
        if (payload)
            s_replay_delete (self, segment, id, payload);
        else
            imgp_error ("job=%s event=spool_damaged segment=%llu offset=%llu reason=\"a "
                        "DELETE that cannot be read; ignored\"", id,
                        (unsigned long long) segment->seq, (unsigned long long) offset);
        return;
    }
    s_segment_t *segment = reader->segment;
    s_entry_t *entry = s_entry_require (self, id, segment->seq);
    s_loc_t *loc = s_entry_loc (entry, type);
    s_loc_kill (loc);
    *loc = (s_loc_t) { segment, offset, size, crc };
    segment->live += S_HEADER + size;
}

//  Replay one segment: whole entries into the index; in the `last` segment
//  a torn tail cut off; damage logged, kept on disk (the segment is never
//  compacted) and stepped over, by the entry's length when its header
//  holds, else by a scan for the next good header.
static void
s_replay_segment (imgp_spool_t *self, s_segment_t *segment, bool last, unsigned char *buf)
{
    struct stat st;
    uint64_t end = fstat (segment->fd, &st) == 0 ? (uint64_t) st.st_size : 0;
    uint64_t offset = 0;
    //  A read-only view beside a writer reports nothing: the writer does.
    imgp_log_level_t alarm = self->readonly ? IMGP_LOG_DEBUG : IMGP_LOG_ERROR;
    s_reader_t reader;
    s_reader_init (&reader, segment, end, buf);
    while (offset < end) {
        s_type_t type = 0;
        uint64_t size = 0;
        uint32_t crc = 0;
        char id [IMGP_ID_LEN + 1];
        s_class_t class = s_classify (&reader, offset, last, &type, &size, &crc, id);
        if (class == S_TORN) {
            if (self->readonly)
                break;              //  maybe a write in progress: leave it
            imgp_warn ("event=spool_torn_tail segment=%llu offset=%llu cut=%llu",
                       (unsigned long long) segment->seq, (unsigned long long) offset,
                       (unsigned long long) (end - offset));
            if (ftruncate (segment->fd, (off_t) offset))
                imgp_error ("event=spool_error op=truncate segment=%llu error=\"%s\"",
                            (unsigned long long) segment->seq, strerror (errno));
            end = offset;
            break;
        }
        if (class == S_SKIP) {
            imgp_log (alarm, "job=%s event=spool_damaged segment=%llu offset=%llu skipped=%llu "
                      "reason=\"payload checksum; entry skipped, kept\"", id,
                      (unsigned long long) segment->seq, (unsigned long long) offset,
                      (unsigned long long) (S_HEADER + size));
            segment->damaged = true;
            if (type != S_DELETE)
                s_mark_damaged (self, id);
            offset += S_HEADER + size;
            continue;
        }
        if (class == S_DAMAGED) {
            uint64_t next = s_resync (&reader, offset);
            imgp_log (alarm, "event=spool_damaged segment=%llu offset=%llu skipped=%llu "
                      "reason=\"no good entry header; bytes up to the next one skipped, "
                      "kept\"", (unsigned long long) segment->seq,
                      (unsigned long long) offset, (unsigned long long) (next - offset));
            segment->damaged = true;
            offset = next;
            continue;
        }
        s_replay_entry (self, &reader, type, id, offset, size, crc);
        offset += S_HEADER + size;
    }
    segment->size = end;
}

static int
s_compare_seq (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

//  The segment numbers in DIR/log, sorted, into *seqs_p (caller frees).
//  Returns how many, or -1 when the directory cannot be read to its end.
static int
s_list_segments (imgp_spool_t *self, uint64_t **seqs_p)
{
    *seqs_p = NULL;
    DIR *dir = opendir (self->log_dir);
    if (!dir)
        return self->readonly && errno == ENOENT ? 0 : -1;
    size_t count = 0, room = 0;
    uint64_t *seqs = NULL;
    struct dirent *entry;
    while ((errno = 0, entry = readdir (dir))) {
        const char *name = entry->d_name;
        if (strlen (name) != 24 || strcmp (name + 20, ".seg")
        ||  strspn (name, "0123456789") != 20)
            continue;               //  not ours: leave it alone
        if (count == room) {
            room = room ? room * 2 : 64;
            seqs = realloc (seqs, room * sizeof *seqs);
            assert (seqs);
        }
        seqs [count++] = strtoull (name, NULL, 10);
    }
    int error = errno;
    closedir (dir);
    if (error) {
        free (seqs);
        errno = error;
        return -1;
    }
    if (count)
        qsort (seqs, count, sizeof *seqs, s_compare_seq);
    *seqs_p = seqs;
    return (int) count;
}

static s_segment_t *
s_segment_add (imgp_spool_t *self, uint64_t seq, int fd)
{
    s_segment_t *segment = calloc (1, sizeof *segment);
    assert (segment);
    segment->seq = seq;
    segment->fd = fd;
    zlistx_add_end (self->segments, segment);
    return segment;
}

//  Open and replay every segment, oldest first. A segment that cannot be
//  opened fails the start (rather than lose its jobs), except in a
//  read-only view, where a broker may have just compacted it away.
static int
s_load (imgp_spool_t *self)
{
    uint64_t *seqs;
    int count = s_list_segments (self, &seqs);
    if (count < 0) {
        imgp_error ("event=spool_error op=list path=\"%s\" error=\"%s\"", self->log_dir,
                    strerror (errno));
        return -1;
    }
    //  The last segment with bytes in it is the one the broker wrote last:
    //  the only one a crash can leave torn (each start writes a new one).
    int last = count - 1;
    for (; last > 0; last--) {
        char path [PATH_MAX];
        struct stat st;
        s_segment_path (self, seqs [last], path);
        if (stat (path, &st) || st.st_size > 0)
            break;
    }
    unsigned char *buf = malloc (S_READ_BUF);
    assert (buf);
    for (int i = 0; i < count; i++) {
        char path [PATH_MAX];
        s_segment_path (self, seqs [i], path);
        int fd = open (path, (self->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0 && self->readonly && errno == ENOENT)
            continue;
        if (fd < 0) {
            imgp_error ("event=spool_error op=open path=\"%s\" error=\"%s\"", path,
                        strerror (errno));
            free (seqs);
            free (buf);
            return -1;
        }
        //  A read-only view beside a writer takes any tear for a write
        //  in progress, wherever it is.
        s_replay_segment (self, s_segment_add (self, seqs [i], fd),
                          self->readonly || i == last, buf);
    }
    free (seqs);
    free (buf);
    return 0;
}

//  The text of an entry's latest record, NUL-terminated, into *text_p
//  (caller frees). Returns 0 or -1.
static int
s_record_text (s_entry_t *entry, char **text_p)
{
    *text_p = NULL;
    s_loc_t *loc = &entry->record;
    if (!loc->segment || loc->size > S_RECORD_MAX) {
        errno = loc->segment ? EFBIG : ENOENT;
        return -1;
    }
    char *text = malloc (loc->size + 1);
    if (!text || s_pread_all (loc->segment->fd, text, loc->size, loc->offset + S_HEADER)) {
        free (text);
        return -1;
    }
    if (s_crc (0, text, loc->size) != loc->crc) {
        free (text);
        errno = EBADMSG;
        return -1;
    }
    text [loc->size] = 0;
    *text_p = text;
    return 0;
}

//  Decode an entry's latest record. Returns 0, the record then owning its
//  renditions (caller clears), or -1 when it cannot be read or decoded, the
//  record owning nothing (*text_p holds what was read, if anything; caller
//  frees).
static int
s_record_load (s_entry_t *entry, const char *id, imgp_job_t *record, char **text_p)
{
    if (s_record_text (entry, text_p))
        return -1;
    bool keep = false;
    if (strlen (*text_p) != entry->record.size
    ||  s_record_decode (*text_p, record, &keep))
        return -1;
    if (!streq (record->id, id)) {
        imgp_job_clear (record);
        return -1;
    }
    entry->keep = keep;
    return 0;
}

static int
s_write_file (const char *path, const void *data, size_t size)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    ssize_t n = write (fd, data, size);
    int rc = (n < 0 || (size_t) n != size) ? -1 : 0;
    return close (fd) || rc ? -1 : 0;
}

//  A record that does not decode: its text (and original) are copied to
//  DIR/corrupt/ for a human, and the job is deleted from the log.
static void
s_set_aside (imgp_spool_t *self, const char *id, s_entry_t *entry, const char *text)
{
    char corrupt [PATH_MAX], path [PATH_MAX];
    s_pathf (corrupt, "%s/corrupt", self->dir);
    s_pathf (path, "%s/%s.json", corrupt, id);
    if (self->readonly) {
        //  Moves nothing: the writer's start reports and moves it.
        imgp_debug ("job=%s event=spool_corrupt action=skipped reason=\"read-only view\"", id);
        s_entry_remove (self, id);
        return;
    }
    imgp_error ("job=%s event=spool_corrupt moved_to=\"%s\"", id, path);
    if (s_mkdir (corrupt) == 0 && text && s_write_file (path, text, strlen (text)))
        imgp_error ("job=%s event=spool_error op=write path=\"%s\" error=\"%s\"", id, path,
                    strerror (errno));
    void *data;
    size_t size;
    if (entry->in.segment && imgp_spool_get (self, id, IMGP_SPOOL_IN, &data, &size) == 0) {
        s_pathf (path, "%s/%s.in", corrupt, id);
        if (s_write_file (path, data, size))
            imgp_error ("job=%s event=spool_error op=write path=\"%s\" error=\"%s\"", id,
                        path, strerror (errno));
        imgp_spool_release (data, NULL);
    }
    imgp_spool_delete (self, id);
}

//  A job whose every record failed its checksum at replay, but whose
//  original or thumbnail is whole: it was accepted (a record existed), so
//  it gets a failed record, code spool_damaged, rather than vanish into
//  "not found". Its options and owner were in the lost record: the new
//  one has the defaults and no owner (with API keys its owner then gets
//  404, as before).
static void
s_save_damaged (imgp_spool_t *self, const char *id)
{
    imgp_job_t record = { .state = IMGP_STATE_FAILED };
    snprintf (record.id, sizeof record.id, "%s", id);
    imgp_opts_default (&record.opts);
    record.created_at = record.updated_at = zclock_time ();
    snprintf (record.code, sizeof record.code, "spool_damaged");
    snprintf (record.message, sizeof record.message, "the job's record was damaged on the "
              "broker's disk (checksum); upload the image again");
    imgp_warn ("job=%s event=spool_damaged what=record action=failed", id);
    imgp_spool_save (self, &record);
}

//  After replay: entries without a record are debris (an original whose
//  record never came); a finished record retires its original; a record
//  that does not decode is set aside.
static void
s_settle (imgp_spool_t *self)
{
    zlistx_t *ids = zhashx_keys (self->index);
    assert (ids);
    for (const char *id = zlistx_first (ids); id; id = zlistx_next (ids)) {
        s_entry_t *entry = zhashx_lookup (self->index, id);
        if (!entry->record.segment && !self->readonly && zhashx_lookup (self->damaged, id)) {
            s_save_damaged (self, id);
            continue;
        }
        if (!entry->record.segment) {
            imgp_debug ("job=%s event=spool_cleanup reason=\"no record\"", id);
            s_entry_remove (self, id);
            continue;
        }
        imgp_job_t record;
        char *text = NULL;
        if (s_record_load (entry, id, &record, &text) == 0) {
            entry->finished = record.state == IMGP_STATE_DONE
                           || record.state == IMGP_STATE_FAILED;
            if (entry->finished && !entry->keep)
                s_loc_kill (&entry->in);
            imgp_job_clear (&record);
        }
        else
            s_set_aside (self, id, entry, text);
        free (text);
    }
    zlistx_destroy (&ids);
    //  A job whose only live entry (its record: a failed job) was damaged.
    ids = zhashx_keys (self->damaged);
    assert (ids);
    for (const char *id = zlistx_first (ids); id && !self->readonly; id = zlistx_next (ids))
        if (!zhashx_lookup (self->index, id))
            s_save_damaged (self, id);
    zlistx_destroy (&ids);
}

//  =====================================================================
//  Import of the old layout (DIR/jobs/ID.json, ID.in, ID.out)

//  Read a whole file by path into a malloc'd buffer (+1 NUL), at most
//  `limit` bytes.
static int
s_read_path (const char *path, size_t limit, void **data_p, size_t *size_p)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    char *buf = NULL;
    if (fstat (fd, &st))
        goto err;
    if (!S_ISREG (st.st_mode) || (uint64_t) st.st_size > limit) {
        errno = S_ISREG (st.st_mode) ? EFBIG : EINVAL;
        goto err;
    }
    size_t size = (size_t) st.st_size;
    buf = malloc (size + 1);
    if (!buf || s_pread_all (fd, buf, size, 0))
        goto err;
    buf [size] = '\0';
    close (fd);
    *data_p = buf;
    *size_p = size;
    return 0;
err:;
    int saved = errno;
    free (buf);
    close (fd);
    errno = saved;
    return -1;
}

//  Move an old file aside into DIR/corrupt/ (a record that does not decode).
static void
s_import_aside (imgp_spool_t *self, const char *jobs, const char *id, const char *ext)
{
    char from [PATH_MAX], to [PATH_MAX];
    s_pathf (from, "%s/%s%s", jobs, id, ext);
    s_pathf (to, "%s/corrupt/%s%s", self->dir, id, ext);
    if (rename (from, to) && errno != ENOENT)
        imgp_error ("job=%s event=spool_error op=move path=\"%s\" to=\"%s\" error=\"%s\"", id,
                    from, to, strerror (errno));
}

//  Import one old job. Returns 1 imported, 0 set aside, -1 a write failed.
static int
s_import_job (imgp_spool_t *self, const char *jobs, const char *id)
{
    char path [PATH_MAX];
    s_pathf (path, "%s/%s.json", jobs, id);
    void *text = NULL, *data = NULL;
    size_t size = 0;
    imgp_job_t record;
    int rc = -1;
    if (s_read_path (path, S_RECORD_MAX, &text, &size) == 0 && strlen (text) == size)
        rc = imgp_spool_record_decode (text, &record);
    if (rc == 0 && !streq (record.id, id)) {
        imgp_job_clear (&record);
        rc = -1;
    }
    if (rc) {
        free (text);
        char corrupt [PATH_MAX];
        s_pathf (corrupt, "%s/corrupt", self->dir);
        imgp_error ("job=%s event=spool_corrupt file=\"%s\" moved_to=\"%s/\"", id, path, corrupt);
        if (s_mkdir (corrupt) == 0) {
            s_import_aside (self, jobs, id, ".json");
            s_import_aside (self, jobs, id, ".in");
        }
        return 0;
    }
    free (text);
    bool finished = record.state == IMGP_STATE_DONE || record.state == IMGP_STATE_FAILED;
    const char *exts [2] = { ".in", ".out" };
    for (int kind = IMGP_SPOOL_IN; kind <= IMGP_SPOOL_OUT && rc == 0; kind++) {
        if (kind == IMGP_SPOOL_IN && finished)
            continue;
        s_pathf (path, "%s/%s%s", jobs, id, exts [kind]);
        if (s_read_path (path, SIZE_MAX - 1, &data, &size) == 0)
            rc = imgp_spool_put (self, id, kind, data, size);
        free (data);
        data = NULL;
    }
    if (rc == 0)
        rc = imgp_spool_save (self, &record);
    imgp_job_clear (&record);
    return rc ? -1 : 1;
}

//  Does an old file name belong to a job (ID.anything)?
static bool
s_old_name (const char *name, char id [IMGP_ID_LEN + 1])
{
    if (strlen (name) <= IMGP_ID_LEN || name [IMGP_ID_LEN] != '.')
        return false;
    memcpy (id, name, IMGP_ID_LEN);
    id [IMGP_ID_LEN] = 0;
    return imgp_id_valid (id);
}

//  Import DIR/jobs once: every record with its files into the log, the
//  log synced, then the old files removed. A crash half-way imports again
//  at the next start (the later entries win). A write that fails fails
//  the start, with the old files kept.
static int
s_import (imgp_spool_t *self)
{
    char jobs [PATH_MAX];
    s_pathf (jobs, "%s/jobs", self->dir);
    DIR *dir = opendir (jobs);
    if (!dir)
        return errno == ENOENT ? 0 : (imgp_error ("event=spool_error op=list path=\"%s\" "
                                                  "error=\"%s\"", jobs, strerror (errno)), -1);
    zlistx_t *names = zlistx_new ();
    assert (names);
    zlistx_set_destructor (names, (zlistx_destructor_fn *) zstr_free);
    struct dirent *entry;
    while ((errno = 0, entry = readdir (dir)))
        zlistx_add_end (names, strdup (entry->d_name));
    int error = errno;
    closedir (dir);
    int imported = 0, aside = 0, rc = error ? -1 : 0;
    char id [IMGP_ID_LEN + 1];
    for (const char *name = zlistx_first (names); name && rc == 0; name = zlistx_next (names))
        if (s_old_name (name, id) && streq (name + IMGP_ID_LEN, ".json")) {
            int got = s_import_job (self, jobs, id);
            imported += got == 1;
            aside += got == 0;
            rc = got < 0 ? -1 : 0;
        }
    //  The log holds the jobs durably before their old files go.
    if (rc == 0 && self->dirty) {
        rc = fdatasync (s_head (self)->fd);
        s_fsync_dir (self->log_dir);
    }
    if (rc) {
        imgp_error ("event=spool_import_failed path=\"%s\" error=\"%s\" action=kept", jobs,
                    strerror (error ? error : errno));
        zlistx_destroy (&names);
        return -1;
    }
    self->dirty = false;
    for (const char *name = zlistx_first (names); name; name = zlistx_next (names)) {
        if (!s_old_name (name, id))
            continue;               //  not ours: leave it alone
        char path [PATH_MAX];
        s_pathf (path, "%s/%s", jobs, name);
        if (unlink (path) && errno != ENOENT)
            imgp_warn ("job=%s event=spool_error op=delete path=\"%s\" error=\"%s\"", id, path,
                       strerror (errno));
    }
    zlistx_destroy (&names);
    if (rmdir (jobs))
        imgp_warn ("event=spool_error op=rmdir path=\"%s\" error=\"%s\"", jobs, strerror (errno));
    imgp_info ("event=spool_imported jobs=%d set_aside=%d from=\"%s\"", imported, aside, jobs);
    return 0;
}

//  =====================================================================
//  Open and close

static imgp_spool_t *
s_open (const char *dir, bool fsync, bool readonly, bool keep_originals)
{
    assert (dir);
    imgp_spool_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->fsync = fsync;
    self->readonly = readonly;
    self->keep_originals = keep_originals;
    self->memory_max = S_MEMORY_MAX;
    self->segments = zlistx_new ();
    self->index = zhashx_new ();
    self->damaged = zhashx_new ();
    assert (self->segments && self->index && self->damaged);
    zlistx_set_destructor (self->segments, s_segment_destroy);
    zhashx_set_destructor (self->index, s_entry_destroy);
    self->dir = strdup (dir);
    if (!self->dir || asprintf (&self->log_dir, "%s/log", dir) < 0) {
        self->log_dir = NULL;
        goto err;
    }
    //  The longest path is an old DIR/jobs/ID.ext (a name <= 255 bytes).
    if (strlen (dir) + 300 >= PATH_MAX) {
        imgp_error ("event=config_error reason=path_too_long path=\"%s\"", dir);
        goto err;
    }
    if (!readonly && (s_mkdir (dir) || s_mkdir (self->log_dir)))
        goto err;
    if (s_load (self) || (!readonly && s_roll (self)))
        goto err;
    s_settle (self);
    if (!readonly && s_import (self))
        goto err;
    return self;
err:
    imgp_spool_destroy (&self);
    return NULL;
}

imgp_spool_t *
imgp_spool_new (const char *dir, bool fsync)
{
    return imgp_spool_new_keeping (dir, fsync, false);
}

imgp_spool_t *
imgp_spool_new_keeping (const char *dir, bool fsync, bool keep_originals)
{
    imgp_spool_t *self = s_open (dir, fsync, false, keep_originals);
    if (self)
        imgp_spool_maintain (self);     //  drop what the replay found dead
    return self;
}

imgp_spool_t *
imgp_spool_new_readonly (const char *dir)
{
    return s_open (dir, false, true, false);
}

void
imgp_spool_destroy (imgp_spool_t **self_p)
{
    assert (self_p);
    imgp_spool_t *self = *self_p;
    if (!self)
        return;
    if (self->segments && !self->readonly && s_head (self))
        imgp_spool_sync (self);
    zhashx_destroy (&self->index);      //  before the segments its entries point at
    zhashx_destroy (&self->damaged);
    zlistx_destroy (&self->segments);
    free (self->dir);
    free (self->log_dir);
    free (self);
    *self_p = NULL;
}

//  =====================================================================
//  Reads and writes

static pthread_mutex_t s_fault_lock = PTHREAD_MUTEX_INITIALIZER;

void
imgp_spool_fault (const char *id, imgp_spool_kind_t kind)
{
    assert (kind <= IMGP_SPOOL_JSON);
    pthread_mutex_lock (&s_fault_lock);
    snprintf (s_fault [kind], IMGP_ID_LEN + 1, "%s", id ? id : "");
    pthread_mutex_unlock (&s_fault_lock);
}

static bool
s_faulty (const char *id, imgp_spool_kind_t kind)
{
    pthread_mutex_lock (&s_fault_lock);
    bool faulty = streq (s_fault [kind], id);
    pthread_mutex_unlock (&s_fault_lock);
    return faulty;
}

static const char *s_kind_names [] = { "original", "thumbnail", "record" };

//  An original or thumbnail was appended at *loc: the index points there,
//  and an original of an unfinished job is kept in memory while there is
//  room.
static void
s_index_artefact (imgp_spool_t *self, s_entry_t *entry, imgp_spool_kind_t kind,
                  const s_loc_t *loc, const void *data)
{
    if (kind == IMGP_SPOOL_OUT) {
        s_loc_kill (&entry->out);
        entry->out = *loc;
        return;
    }
    s_forget_original (self, entry);
    entry->in = *loc;
    size_t size = loc->size;
    if (entry->finished && !entry->keep)
        s_loc_kill (&entry->in);        //  dead on arrival, as replay will say
    else
    if (entry->finished)
        ;                               //  kept on disk only, for what is asked later
    else
    if (self->memory + size <= self->memory_max && (entry->original = s_blob_new (size))) {
        memcpy (entry->original->data, data, size);
        self->memory += size;
        if (self->memory > self->memory_peak)
            self->memory_peak = self->memory;
    }
}

int
imgp_spool_put (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                const void *data, size_t size)
{
    assert (self);
    assert (imgp_id_valid (id));
    assert (kind == IMGP_SPOOL_IN || kind == IMGP_SPOOL_OUT);
    assert (data || size == 0);
    s_loc_t loc;
    if (s_append (self, kind == IMGP_SPOOL_IN ? S_IN : S_OUT, id, data, size, &loc)) {
        imgp_error ("job=%s event=spool_error op=write what=%s error=\"%s\"", id,
                    s_kind_names [kind], strerror (errno));
        return -1;
    }
    s_index_artefact (self, s_entry_require (self, id, loc.segment->seq), kind, &loc, data);
    return 0;
}

int
imgp_spool_get (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                void **data_p, size_t *size_p)
{
    assert (self);
    assert (imgp_id_valid (id));
    assert (data_p && size_p);
    assert (kind <= IMGP_SPOOL_JSON);
    s_entry_t *entry = zhashx_lookup (self->index, id);
    s_loc_t *loc = !entry ? NULL : kind == IMGP_SPOOL_IN ? &entry->in
                 : kind == IMGP_SPOOL_OUT ? &entry->out : &entry->record;
    s_blob_t *blob = NULL;
    if (kind == IMGP_SPOOL_IN && s_faulty (id, kind))
        errno = EIO;
    else
    if (!loc || !loc->segment)
        errno = ENOENT;
    else
    if (kind == IMGP_SPOOL_IN && entry->original) {
        blob = entry->original;
        atomic_fetch_add (&blob->refs, 1);
    }
    else
    if ((blob = s_blob_new (loc->size))
    &&  s_pread_all (loc->segment->fd, blob->data, loc->size, loc->offset + S_HEADER))
        s_blob_unref (&blob);
    else
    if (blob && s_crc (0, blob->data, blob->size) != loc->crc) {
        //  Read back from disk, so checked: the bytes changed since they
        //  were written (a bad sector, a hand edit). The caller fails the
        //  job once (spool_damaged); nothing else is touched.
        s_blob_unref (&blob);
        s_mark_damaged (self, id);
        imgp_error ("job=%s event=spool_damaged what=%s segment=%llu offset=%llu "
                    "reason=\"payload checksum\"", id, s_kind_names [kind],
                    (unsigned long long) loc->segment->seq, (unsigned long long) loc->offset);
        errno = EBADMSG;
        return -1;
    }
    if (!blob) {
        imgp_error ("job=%s event=spool_error op=read what=%s error=\"%s\"", id,
                    s_kind_names [kind], strerror (errno));
        return -1;
    }
    *data_p = blob->data;
    *size_p = blob->size;
    return 0;
}

bool
imgp_spool_has (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind)
{
    assert (self);
    assert (imgp_id_valid (id));
    s_entry_t *entry = zhashx_lookup (self->index, id);
    return entry && (kind == IMGP_SPOOL_IN ? entry->in.segment
                   : kind == IMGP_SPOOL_OUT ? entry->out.segment : entry->record.segment);
}

int
imgp_spool_save (imgp_spool_t *self, const imgp_job_t *record)
{
    return imgp_spool_save_with (self, record, IMGP_SPOOL_JSON, NULL, 0);
}

int
imgp_spool_save_with (imgp_spool_t *self, const imgp_job_t *record, imgp_spool_kind_t kind,
                      const void *data, size_t size)
{
    assert (self);
    assert (record);
    assert (imgp_id_valid (record->id));
    assert (kind == IMGP_SPOOL_JSON || data || size == 0);
    char text [S_RECORD_TEXT];
    size_t len = s_faulty (record->id, IMGP_SPOOL_JSON)
              || (kind == IMGP_SPOOL_OUT && s_faulty (record->id, IMGP_SPOOL_OUT))
               ? (errno = ENOSPC, 0)
               : s_record_write (record, s_keeps (self, record), text, sizeof text);
    if (!len && errno == ENOSPC) {
        self->full = true;              //  as a full disk would: the probe clears it
        self->need = 1;
    }
    if (!len && errno != ENOSPC)
        errno = EOVERFLOW;
    s_piece_t pieces [2];
    int count = 0;
    if (kind != IMGP_SPOOL_JSON)
        pieces [count++] = (s_piece_t) { kind == IMGP_SPOOL_IN ? S_IN : S_OUT, data, size };
    pieces [count++] = (s_piece_t) { S_RECORD, text, len };
    s_loc_t locs [2];
    if (!len || s_append_n (self, record->id, pieces, count, locs)) {
        int error = errno;              //  the broker answers by it (spool_full or internal)
        imgp_error ("job=%s event=spool_error op=write what=record error=\"%s\"", record->id,
                    strerror (error));
        errno = error;
        return -1;
    }
    s_entry_t *entry = s_entry_require (self, record->id, locs [0].segment->seq);
    entry->finished = record->state == IMGP_STATE_DONE || record->state == IMGP_STATE_FAILED;
    entry->keep = s_keeps (self, record);     //  as the record says (keep_original)
    if (kind != IMGP_SPOOL_JSON)
        s_index_artefact (self, entry, kind, &locs [0], data);
    s_loc_kill (&entry->record);
    entry->record = locs [count - 1];
    if (entry->finished)
        s_retire_original (self, entry);
    return 0;
}

int
imgp_spool_drop_original (imgp_spool_t *self, const char *id)
{
    assert (self);
    assert (imgp_id_valid (id));
    s_entry_t *entry = zhashx_lookup (self->index, id);
    if (entry && entry->keep && entry->record.segment)
        s_retire_original (self, entry);        //  memory only: the disk copy stays
    else
    if (entry) {
        s_forget_original (self, entry);
        if (!entry->record.segment && !entry->out.segment)
            s_entry_remove (self, id);
    }
    return 0;
}

int
imgp_spool_delete (imgp_spool_t *self, const char *id)
{
    assert (self);
    assert (imgp_id_valid (id));
    s_entry_t *entry = zhashx_lookup (self->index, id);
    if (!entry)
        return 0;
    //  Everything of this id was written before the head's end now; a
    //  roll in the append only moves the DELETE further on.
    s_segment_t *head = s_head (self);
    unsigned char payload [S_DELETE_SIZE];
    s_put_le (payload, entry->first_seq, 8);
    s_put_le (payload + 8, head ? head->seq : 0, 8);
    s_put_le (payload + 16, head ? head->size : 0, 8);
    s_loc_t loc;
    int rc = s_append (self, S_DELETE, id, payload, sizeof payload, &loc);
    if (rc == 0) {
        loc.segment->live -= S_HEADER + sizeof payload;
        loc.segment->deletes++;
    }
    else
        imgp_error ("job=%s event=spool_error op=delete error=\"%s\"", id, strerror (errno));
    s_entry_remove (self, id);
    zhashx_delete (self->damaged, id);
    return rc;
}

int
imgp_spool_sync (imgp_spool_t *self)
{
    assert (self);
    if (!self->fsync || !self->dirty || self->readonly)
        return 0;
    if (fdatasync (s_head (self)->fd)) {
        imgp_error ("event=spool_error op=sync error=\"%s\"", strerror (errno));
        return -1;
    }
    self->dirty = false;
    return 0;
}

//  =====================================================================
//  Housekeeping: unlink dead segments, compact sparse ones

//  Unlink a segment nothing points at. One that cannot be deleted is kept
//  and left alone from then on (marked damaged). Returns 0 or -1.
static int
s_segment_unlink (imgp_spool_t *self, s_segment_t *segment)
{
    char path [PATH_MAX];
    s_segment_path (self, segment->seq, path);
    if (unlink (path) && errno != ENOENT) {
        imgp_warn ("event=spool_error op=delete path=\"%s\" error=\"%s\" action=kept", path,
                   strerror (errno));
        segment->damaged = true;
        return -1;
    }
    imgp_debug ("event=spool_segment_removed segment=%llu", (unsigned long long) segment->seq);
    if (segment == self->compacting)
        self->compacting = NULL;        //  it died before its compaction ended
    void *handle = zlistx_find (self->segments, segment);
    assert (handle);
    zlistx_delete (self->segments, handle);
    return 0;
}

//  Append an entry again at the head; its location follows. `payload` is
//  its bytes when the caller has them, else NULL (read here). Returns 0 or -1.
static int
s_move (imgp_spool_t *self, const char *id, s_type_t type, s_loc_t *loc,
        const void *payload)
{
    void *buf = payload ? NULL : malloc (loc->size + 1);
    if (buf && s_pread_all (loc->segment->fd, buf, loc->size, loc->offset + S_HEADER) == 0)
        payload = buf;
    s_loc_t moved;
    int rc = payload ? s_append (self, type, id, payload, loc->size, &moved) : -1;
    free (buf);
    if (rc == 0) {
        s_loc_kill (loc);
        *loc = moved;
    }
    return rc;
}

//  Must a DELETE from `segment` be kept? While a segment other than it may
//  hold entries it forgets: one from the job's first segment to the one it
//  was first written to.
static bool
s_delete_needed (imgp_spool_t *self, const s_segment_t *segment, const unsigned char *payload)
{
    uint64_t first_seq = s_get_le (payload, 8), before_seq = s_get_le (payload + 8, 8);
    for (s_segment_t *other = zlistx_first (self->segments); other;
         other = zlistx_next (self->segments))
        if (other != segment && other->seq >= first_seq && other->seq <= before_seq)
            return true;
    return false;
}

//  fdatasync the segments from `seq` on (what a compaction wrote to).
static int
s_sync_since (imgp_spool_t *self, uint64_t seq)
{
    for (s_segment_t *segment = zlistx_first (self->segments); segment;
         segment = zlistx_next (self->segments))
        if (segment->seq >= seq && fdatasync (segment->fd)) {
            imgp_error ("event=spool_error op=sync segment=%llu error=\"%s\"",
                        (unsigned long long) segment->seq, strerror (errno));
            return -1;
        }
    self->dirty = false;            //  the head is among them
    return 0;
}

//  Entries a compaction copies byte for byte (header and crc as they are)
//  to the head, one write per S_BATCH_BYTES instead of one per entry:
//  measured, a segment of 44,000 live tiny jobs took 1 s to compact with
//  a write per entry.
typedef struct {
    unsigned char *bytes;       //  S_BATCH_BYTES of whole entries
    size_t len;                 //  bytes in it
    s_loc_t **locs;             //  where each entry in it is now, to move
    size_t *at;                 //  ... and its offset in bytes
    size_t count;               //  entries in it
    size_t deletes;             //  DELETEs among them (no loc: not live)
    size_t delete_bytes;        //  ... their bytes
} s_batch_t;

#define S_BATCH_ENTRIES (S_BATCH_BYTES / S_HEADER)

static int
s_batch_init (s_batch_t *batch)
{
    batch->bytes = malloc (S_BATCH_BYTES);
    batch->locs = malloc (S_BATCH_ENTRIES * sizeof *batch->locs);
    batch->at = malloc (S_BATCH_ENTRIES * sizeof *batch->at);
    batch->len = batch->count = batch->deletes = batch->delete_bytes = 0;
    return batch->bytes && batch->locs && batch->at ? 0 : -1;
}

static void
s_batch_free (s_batch_t *batch)
{
    free (batch->bytes);
    free (batch->locs);
    free (batch->at);
}

//  Write the batch at the end of the head and point its entries there.
static int
s_batch_flush (imgp_spool_t *self, s_batch_t *batch)
{
    if (batch->len == 0)
        return 0;
    s_segment_t *head = s_head (self);
    if (head->size >= S_SEGMENT_MAX && s_roll (self))
        return -1;
    head = s_head (self);
    struct iovec iov = { batch->bytes, batch->len };
    if (s_write_head (head, &iov, 1, batch->len)) {
        s_write_failed (self, batch->len);
        return -1;
    }
    for (size_t i = 0; i < batch->count; i++) {
        s_loc_t *loc = batch->locs [i];
        if (!loc)
            continue;               //  a DELETE
        s_loc_kill (loc);
        *loc = (s_loc_t) { head, head->size + batch->at [i], loc->size, loc->crc };
    }
    head->size += batch->len;
    head->live += batch->len - batch->delete_bytes;
    head->deletes += batch->deletes;
    self->dirty = true;
    batch->len = batch->count = batch->deletes = batch->delete_bytes = 0;
    return 0;
}

//  Move one live entry at `offset` (`loc` points at it), or a DELETE to
//  keep (`loc` NULL), into the batch when it fits, else on its own.
static int
s_batch_move (imgp_spool_t *self, s_batch_t *batch, s_reader_t *reader, const char *id,
              s_type_t type, uint64_t offset, uint64_t size, s_loc_t *loc)
{
    size_t whole = S_HEADER + size;
    const unsigned char *bytes = whole <= S_READ_BUF
                               ? s_reader_get (reader, offset, whole) : NULL;
    if (!bytes && !loc)
        return -1;                  //  a DELETE is small: this is a read error
    if (!bytes)
        return s_batch_flush (self, batch) ? -1 : s_move (self, id, type, loc, NULL);
    if (batch->len + whole > S_BATCH_BYTES && s_batch_flush (self, batch))
        return -1;
    memcpy (batch->bytes + batch->len, bytes, whole);
    batch->locs [batch->count] = loc;
    batch->at [batch->count++] = batch->len;
    batch->len += whole;
    if (!loc) {
        batch->deletes++;
        batch->delete_bytes += whole;
    }
    return 0;
}

//  One step of the compaction of self->compacting: append its live entries
//  again, from self->cursor on, reading at most *entries_p entries and
//  moving about *bytes_p bytes (both counted down), so the loop never
//  pauses long (measured: 1 s for a 64 MiB segment of tiny jobs in one go).
//  At its end the segment is unlinked. Dead payloads are skipped unread.
//  Returns 1 when the compaction ended, 0 when the budget ran out first,
//  -1 when it stopped (the segment stays) on a write error or an entry it
//  cannot read.
static int
s_compact_step (imgp_spool_t *self, size_t *entries_p, uint64_t *bytes_p, unsigned char *buf)
{
    s_segment_t *segment = self->compacting;
    s_reader_t reader;
    s_reader_init (&reader, segment, segment->size, buf);
    uint64_t offset = self->cursor;
    s_batch_t batch;
    int rc = s_batch_init (&batch);
    while (offset < segment->size && rc == 0 && *entries_p > 0 && *bytes_p > 0) {
        unsigned char header [S_HEADER];
        s_type_t type;
        uint64_t size;
        char id [IMGP_ID_LEN + 1];
        if (s_header_read (&reader, offset, header, &type, &size, id)) {
            imgp_error ("event=spool_damaged segment=%llu offset=%llu reason=\"unreadable "
                        "at compaction; kept\"", (unsigned long long) segment->seq,
                        (unsigned long long) offset);
            segment->damaged = true;
            rc = -1;
            break;
        }
        (*entries_p)--;
        if (type == S_DELETE) {
            //  Rare (a deleted job, an older segment still there): copied
            //  as it is, position and all (see the top of this file).
            const unsigned char *payload = size == S_DELETE_SIZE
                                         ? s_reader_get (&reader, offset + S_HEADER, size) : NULL;
            rc = payload ? 0 : -1;
            if (rc == 0 && s_delete_needed (self, segment, payload))
                rc = s_batch_move (self, &batch, &reader, id, type, offset, size, NULL);
        }
        else {
            s_entry_t *entry = zhashx_lookup (self->index, id);
            s_loc_t *loc = entry ? s_entry_loc (entry, type) : NULL;
            if (loc && loc->segment == segment && loc->offset == offset) {
                rc = s_batch_move (self, &batch, &reader, id, type, offset, size, loc);
                *bytes_p -= S_HEADER + size < *bytes_p ? S_HEADER + size : *bytes_p;
                self->compact_moved++;
            }
        }
        offset += S_HEADER + size;
    }
    if (rc == 0)
        rc = s_batch_flush (self, &batch);
    s_batch_free (&batch);
    self->cursor = offset;
    if (rc) {
        if (!segment->damaged)
            imgp_error ("event=spool_error op=compact segment=%llu error=\"%s\"",
                        (unsigned long long) segment->seq, strerror (errno));
        self->compacting = NULL;
        return -1;
    }
    if (offset < segment->size) {
#ifdef SYNC_FILE_RANGE_WRITE
        //  Start writing what moved, so the sync at the end waits less.
        if (self->fsync)
            sync_file_range (s_head (self)->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
        return 0;
    }
    self->compacting = NULL;
    if (segment->live != 0) {
        //  The books are wrong: keep the segment rather than lose a job.
        imgp_error ("event=spool_error op=compact segment=%llu error=\"%llu live bytes "
                    "left; kept\"", (unsigned long long) segment->seq,
                    (unsigned long long) segment->live);
        segment->damaged = true;
        return -1;
    }
    //  With --fsync, what moved is durable before the old copy goes: a
    //  power cut must not take a thumbnail that was safe for hours. Without
    //  it nothing is promised against power loss, and kill -9 keeps the
    //  page cache: no sync, so the loop never waits on the disk here
    //  (measured with one: 51 fdatasyncs in 13 s, up to 74 ms each).
    if (self->fsync && s_sync_since (self, self->compact_from))
        return -1;
    imgp_info ("event=spool_compacted segment=%llu bytes=%llu moved=%d ms=%.1f",
               (unsigned long long) segment->seq, (unsigned long long) segment->size,
               self->compact_moved, (zclock_usecs () - self->compact_started) / 1000.0);
    return s_segment_unlink (self, segment) ? -1 : 1;
}

//  A closed segment less than a quarter live, or NULL.
static s_segment_t *
s_sparse_segment (imgp_spool_t *self)
{
    s_segment_t *head = s_head (self);
    for (s_segment_t *segment = zlistx_first (self->segments); segment;
         segment = zlistx_next (self->segments))
        if (segment != head && !segment->damaged && segment->live * 4 < segment->size)
            return segment;
    return NULL;
}

//  A closed segment with nothing live and no DELETE to keep, or NULL.
static s_segment_t *
s_dead_segment (imgp_spool_t *self)
{
    s_segment_t *head = s_head (self);
    for (s_segment_t *segment = zlistx_first (self->segments); segment;
         segment = zlistx_next (self->segments))
        if (segment != head && !segment->damaged && segment->live == 0 && segment->deletes == 0)
            return segment;
    return NULL;
}

//  Originals kept in memory come and go with the queue; a burst leaves
//  their pages free in the heap, among the small allocations that stay.
//  Give them back to the system when the last of them is gone (the queue
//  ran dry), so the trim's own cost (measured: 195 ms after a burst of
//  220,000 tiny originals) falls when there is no work waiting.
static void
s_trim (imgp_spool_t *self)
{
    if (self->memory > 0 || self->memory_peak < S_TRIM_BYTES)
        return;
#ifdef __GLIBC__
    malloc_trim (0);
#endif
    self->memory_peak = self->memory;
}

void
imgp_spool_maintain (imgp_spool_t *self)
{
    assert (self);
    if (self->readonly)
        return;
    s_segment_t *segment;
    while ((segment = s_dead_segment (self)))
        s_segment_unlink (self, segment);
    //  Compaction costs the entries it reads and the bytes it moves: a
    //  budget per call keeps the loop's pauses short, and is enough to keep
    //  up with segments of big originals that die in seconds.
    size_t entries = S_COMPACT_ENTRIES;
    uint64_t bytes = S_COMPACT_BYTES;
    unsigned char *buf = NULL;
    while (entries > 0 && bytes > 0) {
        if (!self->compacting) {
            if (!(self->compacting = s_sparse_segment (self)))
                break;
            self->cursor = 0;
            self->compact_from = s_head (self)->seq;
            self->compact_moved = 0;
            self->compact_started = zclock_usecs ();
        }
        if ((!buf && !(buf = malloc (S_READ_BUF)))
        ||  s_compact_step (self, &entries, &bytes, buf) < 0)
            break;
    }
    free (buf);
    s_trim (self);
    s_probe (self);
}

//  =====================================================================
//  Reading it all

int
imgp_spool_scan (imgp_spool_t *self, imgp_spool_record_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    int count = 0;
    zlistx_t *ids = zhashx_keys (self->index);
    assert (ids);
    for (const char *id = zlistx_first (ids); id; id = zlistx_next (ids)) {
        s_entry_t *entry = zhashx_lookup (self->index, id);
        imgp_job_t record;
        char *text = NULL;
        int rc = entry->record.segment ? s_record_load (entry, id, &record, &text) : 1;
        free (text);
        if (rc < 0)
            imgp_error ("job=%s event=spool_error op=read what=record error=\"%s\"", id,
                        strerror (errno));
        if (rc)
            continue;
        rc = fn (&record, arg);     //  borrowed for the call: fn copies what it keeps
        imgp_job_clear (&record);
        if (rc)
            break;
        count++;
    }
    zlistx_destroy (&ids);
    return count;
}

size_t
imgp_spool_count (imgp_spool_t *self, imgp_spool_kind_t kind)
{
    assert (self);
    size_t count = 0;
    for (s_entry_t *entry = zhashx_first (self->index); entry; entry = zhashx_next (self->index))
        count += (kind == IMGP_SPOOL_IN ? entry->in.segment
                : kind == IMGP_SPOOL_OUT ? entry->out.segment : entry->record.segment) != NULL;
    return count;
}

void
imgp_spool_set_memory (imgp_spool_t *self, size_t bytes)
{
    assert (self);
    self->memory_max = bytes;
}

bool
imgp_spool_full (imgp_spool_t *self)
{
    assert (self);
    return self->full;
}

uint64_t
imgp_spool_live_bytes (imgp_spool_t *self)
{
    assert (self);
    uint64_t live = 0;
    for (s_segment_t *segment = zlistx_first (self->segments); segment;
         segment = zlistx_next (self->segments))
        live += segment->live;
    return live;
}

bool
imgp_spool_damaged (imgp_spool_t *self, const char *id)
{
    assert (self);
    assert (imgp_id_valid (id));
    return zhashx_lookup (self->damaged, id) != NULL;
}

uint64_t
imgp_spool_room (imgp_spool_t *self)
{
    assert (self);
    struct statvfs st;
    if (statvfs (self->log_dir, &st))
        return UINT64_MAX;              //  unknown: let the writes tell
    return (uint64_t) st.f_bavail * st.f_frsize;
}

//  While full: has the filesystem room again for the write that failed
//  (and a little more; at most S_PROBE_NEED_MAX is asked, so one huge
//  upload that failed does not hold the flag while smaller ones fit)? Then
//  the flag clears; an append that fails sets it again at once. Without
//  this probe a spool that refused one upload would say "full" until the
//  next upload came, and /readyz would keep the uploads away.
static void
s_probe (imgp_spool_t *self)
{
    if (!self->full)
        return;
    uint64_t room = imgp_spool_room (self);
    uint64_t need = self->need < S_PROBE_NEED_MAX ? self->need : S_PROBE_NEED_MAX;
    if (room >= need + S_PROBE_SLACK) {
        imgp_info ("event=spool_room room=%llu need=%llu", (unsigned long long) room,
                   (unsigned long long) self->need);
        self->full = false;
    }
}

//  =====================================================================
//  Record <-> JSON. Options and result take the wire's JSON forms, written
//  by imgp_jw and read by imgp_msg_opts_from_json and kin: one form, one
//  set of range checks.

//  Records are written by hand, with the codec's writer (imgp_jw):
//  jansson's json_pack and json_dumps took about 10 us a record, three
//  records a job (a third of the broker's time per tiny job), and the
//  vsnprintf writer that replaced them was still 23 % of the broker's
//  instructions per job (imgp_jw: 4,500 instructions a record, against
//  12,900). The text is the one jansson writes, byte for byte; opts and
//  result are the wire's forms (imgp_jw_opts, imgp_jw_result), and records
//  are read back with jansson and those forms' readers.

//  The record as JSON text into `buf`, NUL-terminated; its length, or 0
//  when it does not fit.
static size_t
s_record_write (const imgp_job_t *r, bool keep, char *buf, size_t size)
{
    assert (size > 0);
    imgp_jw_t out;
    imgp_jw_init (&out, buf, size - 1);     //  a byte for the NUL
    imgp_jw_open (&out, NULL, '{');
    imgp_jw_int (&out, "v", S_RECORD_VERSION);
    imgp_jw_string (&out, "id", r->id);
    imgp_jw_string (&out, "state", imgp_state_name (r->state));
    imgp_jw_opts (&out, "opts", &r->opts);
    imgp_jw_int (&out, "created_at", r->created_at);
    imgp_jw_int (&out, "updated_at", r->updated_at);
    imgp_jw_int (&out, "bytes", r->bytes);
    imgp_jw_int (&out, "attempts", r->attempts);
    imgp_jw_string (&out, "worker", r->worker);
    imgp_jw_string (&out, "owner", r->owner);
    if (r->state == IMGP_STATE_FAILED) {
        imgp_jw_open (&out, "error", '{');
        imgp_jw_string (&out, "code", r->code);
        imgp_jw_string (&out, "message", r->message);
        imgp_jw_close (&out, '}');
    }
    if (r->state == IMGP_STATE_DONE) {
        //  Every rendition, in the order of their bytes in OUT.
        imgp_jw_open (&out, "results", '[');
        for (int i = 0; i < r->result_count; i++)
            imgp_jw_result (&out, NULL, &r->results [i]);
        imgp_jw_close (&out, ']');
    }
    if (keep)                           //  the original outlives the job's end (s_keeps)
        imgp_jw_bool (&out, "keep_original", true);
    imgp_jw_close (&out, '}');
    size_t len = imgp_jw_len (&out);
    buf [len] = 0;
    return len;
}

char *
imgp_spool_record_encode (const imgp_job_t *r)
{
    assert (r);
    char buf [S_RECORD_TEXT];
    size_t len = s_record_write (r, false, buf, sizeof buf);
    return len ? strdup (buf) : NULL;
}

//  Copy a JSON string into a fixed field; -1 when it does not fit.
static int
s_copy (char *dest, size_t size, const char *text)
{
    if (!text || strlen (text) >= size)
        return -1;
    memcpy (dest, text, strlen (text) + 1);
    return 0;
}

//  The renditions of a done record: "results" (1..IMGP_RESULTS_MAX), or
//  the single "result" a broker before renditions wrote, as results[0].
//  A rendition without a box (written before sizes) gets the job's first.
//  Decoded into the stack first, so the record's array is sized by the
//  count it turns out to have (zeroed, like the rest of the record).
static int
s_decode_results (json_t *results, json_t *result, imgp_job_t *r)
{
    imgp_result_t decoded [IMGP_RESULTS_MAX];
    memset (decoded, 0, sizeof decoded);
    int count = 0;
    int rc;
    if (!results && result) {
        count = 1;
        rc = imgp_msg_result_from_json (result, &decoded [0], NULL, 0);
    }
    else
        rc = imgp_msg_results_from_json (results, decoded, IMGP_RESULTS_MAX, &count, NULL, 0);
    if (rc || count < 1)
        return -1;
    for (int i = 0; i < count; i++)
        if (decoded [i].box.width == 0)
            decoded [i].box = (imgp_size_t) { r->opts.width, r->opts.height };
    imgp_job_set_results (r, decoded, count);
    return 0;
}

//  The error of a failed record, the results of a done one, in the ranges
//  INFO can carry (PROTOCOL.md 3.2). The broker writes nothing else, so a
//  record outside them was damaged; refusing it here (set aside by the
//  replay) keeps a bad record from making its job's INFO unsendable.
static int
s_decode_outcome (json_t *error, json_t *results, json_t *result, imgp_job_t *r)
{
    if (r->state == IMGP_STATE_FAILED) {
        const char *code, *message;
        if (!error || json_unpack (error, "{s:s, s:s}", "code", &code, "message", &message)
        ||  !imgp_msg_code_valid (code)
        ||  s_copy (r->code, sizeof r->code, code)
        ||  s_copy (r->message, sizeof r->message, message))
            return -1;
    }
    if (r->state == IMGP_STATE_DONE && s_decode_results (results, result, r))
        return -1;
    return 0;
}

static bool
s_record_in_range (const imgp_job_t *r)
{
    return r->created_at >= 0 && r->updated_at >= 0 && r->bytes >= 0
        && r->attempts >= 0 && r->attempts <= IMGP_ATTEMPTS_MAX
        && (!r->owner [0] || imgp_msg_owner_valid (r->owner));
}

int
imgp_spool_record_decode (const char *text, imgp_job_t *r)
{
    return s_record_decode (text, r, NULL);
}

//  imgp_spool_record_decode, and whether the record keeps its job's
//  original past its end (*keep_p, when not NULL).
static int
s_record_decode (const char *text, imgp_job_t *r, bool *keep_p)
{
    assert (text);
    assert (r);
    memset (r, 0, sizeof *r);
    json_t *root = json_loads (text, 0, NULL);
    if (!root)
        return -1;
    int version;
    //  Records written before owners existed have none: they load as "".
    const char *id, *state, *worker, *owner = "";
    json_int_t created_at, updated_at, bytes;
    json_t *opts = NULL, *error = NULL, *result = NULL, *results = NULL;
    int rc = json_unpack (root,
        "{s:i, s:s, s:s, s:o, s:I, s:I, s:I, s:i, s:s, s?s, s?o, s?o, s?o}",
        "v", &version, "id", &id, "state", &state, "opts", &opts,
        "created_at", &created_at, "updated_at", &updated_at,
        "bytes", &bytes, "attempts", &r->attempts, "worker", &worker,
        "owner", &owner, "error", &error, "result", &result, "results", &results);
    if (rc == 0) {
        r->created_at = created_at;
        r->updated_at = updated_at;
        r->bytes = bytes;
        if (version != S_RECORD_VERSION
        ||  !imgp_id_valid (id) || s_copy (r->id, sizeof r->id, id)
        ||  imgp_state_parse (state, &r->state)
        ||  imgp_msg_opts_from_json (opts, &r->opts, NULL, 0)
        ||  s_copy (r->worker, sizeof r->worker, worker)
        ||  s_copy (r->owner, sizeof r->owner, owner)
        ||  s_decode_outcome (error, results, result, r)
        ||  !s_record_in_range (r))
            rc = -1;
    }
    if (rc)
        imgp_job_clear (r);             //  a record refused owns nothing
    if (keep_p)
        *keep_p = json_is_true (json_object_get (root, "keep_original"));
    json_decref (root);
    return rc;
}

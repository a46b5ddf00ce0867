/*  imgp_spool — see imgp_spool.h.

    Plain POSIX files, one per artefact, named by job id: the simplest
    layout that makes "written or not" atomic (rename) and recovery a
    directory scan. A million jobs in one directory is fine on ext4/xfs
    (hashed directories); the table bound (--max-jobs) caps it anyway.
*/
#include "imgp_spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgp_log.h"

#define S_RECORD_VERSION 1
#define S_RECORD_MAX 65536          //  a record is < 2 KB; refuse anything huge

struct _imgp_spool_t {
    char *jobs_dir;             //  DIR/jobs, where every file lives
    bool fsync;                 //  fsync files and directory on writes
};

static const char *s_ext [] = { ".in", ".out", ".json" };

static int
s_mkdir (const char *path)
{
    if (mkdir (path, 0750) == 0 || errno == EEXIST)
        return 0;
    imgp_error ("spool: cannot create directory %s: %s", path, strerror (errno));
    return -1;
}

imgp_spool_t *
imgp_spool_new (const char *dir, bool fsync)
{
    assert (dir);
    imgp_spool_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->fsync = fsync;
    if (asprintf (&self->jobs_dir, "%s/jobs", dir) < 0) {
        self->jobs_dir = NULL;
        goto err;
    }
    //  Every path is jobs_dir/ID.ext[.suffix]; refuse a dir too long for them.
    if (strlen (self->jobs_dir) + 1 + IMGP_ID_LEN + strlen (".json.corrupt") >= PATH_MAX) {
        imgp_error ("spool: directory name too long: %s", dir);
        goto err;
    }
    if (s_mkdir (dir) || s_mkdir (self->jobs_dir))
        goto err;
    return self;
err:
    imgp_spool_destroy (&self);
    return NULL;
}

void
imgp_spool_destroy (imgp_spool_t **self_p)
{
    assert (self_p);
    imgp_spool_t *self = *self_p;
    if (!self)
        return;
    free (self->jobs_dir);
    free (self);
    *self_p = NULL;
}

//  DIR/jobs/ID.ext[suffix] into `path`. Ids come from callers that
//  validated them; an invalid one here is a bug, not bad input.
static void
s_path (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
        const char *suffix, char path [PATH_MAX])
{
    assert (imgp_id_valid (id));
    assert (kind <= IMGP_SPOOL_JSON);
    int n = snprintf (path, PATH_MAX, "%s/%s%s%s", self->jobs_dir, id, s_ext [kind], suffix);
    assert (n > 0 && n < PATH_MAX);     //  checked once in imgp_spool_new
    (void) n;
}

static int
s_write_all (int fd, const void *data, size_t size)
{
    const char *p = data;
    while (size > 0) {
        ssize_t n = write (fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        size -= (size_t) n;
    }
    return 0;
}

static void
s_fsync_dir (imgp_spool_t *self)
{
    int fd = open (self->jobs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync (fd))
        imgp_warn ("spool: cannot fsync %s: %s", self->jobs_dir, strerror (errno));
    if (fd >= 0)
        close (fd);
}

//  Write `path`.tmp, optionally fsync, rename over `path`.
static int
s_write_atomic (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                const void *data, size_t size)
{
    char path [PATH_MAX], tmp [PATH_MAX];
    s_path (self, id, kind, "", path);
    s_path (self, id, kind, ".tmp", tmp);

    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        goto err;
    if (s_write_all (fd, data, size) || (self->fsync && fsync (fd))) {
        int saved = errno;
        close (fd);
        errno = saved;
        goto err;
    }
    if (close (fd) || rename (tmp, path))
        goto err;
    if (self->fsync)
        s_fsync_dir (self);
    return 0;
err:
    imgp_error ("job=%s event=spool_error op=write file=%s error=\"%s\"",
                id, tmp, strerror (errno));
    unlink (tmp);
    return -1;
}

int
imgp_spool_put (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                const void *data, size_t size)
{
    assert (self);
    assert (kind == IMGP_SPOOL_IN || kind == IMGP_SPOOL_OUT);
    assert (data || size == 0);
    return s_write_atomic (self, id, kind, data, size);
}

//  Read a whole file by path into a malloc'd buffer, at most `limit` bytes.
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
    buf = malloc (size + 1);    //  +1: never malloc(0), and room for a NUL
    if (!buf)
        goto err;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read (fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;    //  file shrank under us
            goto err;
        }
        got += (size_t) n;
    }
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

int
imgp_spool_get (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                void **data_p, size_t *size_p)
{
    assert (self);
    assert (data_p && size_p);
    char path [PATH_MAX];
    s_path (self, id, kind, "", path);
    if (s_read_path (path, SIZE_MAX - 1, data_p, size_p) == 0)
        return 0;
    imgp_error ("job=%s event=spool_error op=read file=%s error=\"%s\"",
                id, path, strerror (errno));
    return -1;
}

bool
imgp_spool_has (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind)
{
    assert (self);
    char path [PATH_MAX];
    s_path (self, id, kind, "", path);
    return access (path, F_OK) == 0;
}

int
imgp_spool_save (imgp_spool_t *self, const imgp_job_t *record)
{
    assert (self);
    assert (record);
    char *text = imgp_spool_record_encode (record);
    if (!text) {
        imgp_error ("job=%s event=spool_error op=encode error=\"out of memory\"", record->id);
        return -1;
    }
    int rc = s_write_atomic (self, record->id, IMGP_SPOOL_JSON, text, strlen (text));
    free (text);
    return rc;
}

int
imgp_spool_drop (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind)
{
    assert (self);
    char path [PATH_MAX];
    s_path (self, id, kind, "", path);
    if (unlink (path) == 0 || errno == ENOENT)
        return 0;
    imgp_error ("job=%s event=spool_error op=delete file=%s error=\"%s\"",
                id, path, strerror (errno));
    return -1;
}

int
imgp_spool_delete (imgp_spool_t *self, const char *id)
{
    assert (self);
    int rc = imgp_spool_drop (self, id, IMGP_SPOOL_JSON);
    rc |= imgp_spool_drop (self, id, IMGP_SPOOL_IN);
    rc |= imgp_spool_drop (self, id, IMGP_SPOOL_OUT);
    return rc ? -1 : 0;
}

//  ---------------------------------------------------------------------
//  Record <-> JSON

char *
imgp_spool_record_encode (const imgp_job_t *r)
{
    assert (r);
    json_t *root = json_pack (
        "{s:i, s:s, s:s, s:{s:i, s:i, s:s, s:s, s:i, s:b},"
        " s:I, s:I, s:I, s:i, s:s, s:s}",
        "v", S_RECORD_VERSION,
        "id", r->id,
        "state", imgp_state_name (r->state),
        "opts",
            "width", r->opts.width, "height", r->opts.height,
            "fit", imgp_fit_name (r->opts.fit),
            "format", imgp_format_name (r->opts.format),
            "quality", r->opts.quality, "enlarge", r->opts.enlarge,
        "created_at", (json_int_t) r->created_at,
        "updated_at", (json_int_t) r->updated_at,
        "bytes", (json_int_t) r->bytes,
        "attempts", r->attempts,
        "worker", r->worker,
        "owner", r->owner);
    if (!root)
        return NULL;
    int rc = 0;
    if (r->state == IMGP_STATE_FAILED)
        rc = json_object_set_new (root, "error", json_pack ("{s:s, s:s}",
                "code", r->code, "message", r->message));
    if (r->state == IMGP_STATE_DONE)
        rc = json_object_set_new (root, "result", json_pack ("{s:i, s:i, s:s, s:I, s:I}",
                "width", r->result.width, "height", r->result.height,
                "format", imgp_format_name (r->result.format),
                "bytes", (json_int_t) r->result.bytes,
                "ms", (json_int_t) r->result.ms));
    char *text = rc ? NULL : json_dumps (root, JSON_COMPACT);
    json_decref (root);
    return text;
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

static int
s_decode_outcome (json_t *error, json_t *result, imgp_job_t *r)
{
    if (r->state == IMGP_STATE_FAILED) {
        const char *code, *message;
        if (!error || json_unpack (error, "{s:s, s:s}", "code", &code, "message", &message)
        ||  s_copy (r->code, sizeof r->code, code)
        ||  s_copy (r->message, sizeof r->message, message))
            return -1;
    }
    if (r->state == IMGP_STATE_DONE) {
        const char *format;
        json_int_t bytes, ms;
        if (!result || json_unpack (result, "{s:i, s:i, s:s, s:I, s:I}",
                                    "width", &r->result.width, "height", &r->result.height,
                                    "format", &format, "bytes", &bytes, "ms", &ms)
        ||  imgp_format_parse (format, &r->result.format))
            return -1;
        r->result.bytes = bytes;
        r->result.ms = ms;
    }
    return 0;
}

//  The ranges INFO can carry (PROTOCOL.md 3.2). The broker writes nothing
//  else, so a record outside them was damaged; refusing it here (set aside
//  by the scan) keeps a bad record from making its job's INFO unsendable.
static bool
s_record_in_range (const imgp_job_t *r)
{
    if (r->created_at < 0 || r->updated_at < 0 || r->bytes < 0
    ||  r->attempts < 0 || r->attempts > IMGP_ATTEMPTS_MAX
    ||  (r->owner [0] && !imgp_msg_owner_valid (r->owner)))
        return false;
    if (r->state == IMGP_STATE_FAILED) {
        if (!r->code [0])
            return false;
        for (const char *c = r->code; *c; c++)
            if ((*c < 'a' || *c > 'z') && *c != '_')
                return false;
    }
    if (r->state == IMGP_STATE_DONE)
        return r->result.width >= 1 && r->result.width <= 65535
            && r->result.height >= 1 && r->result.height <= 65535
            && r->result.bytes >= 1 && r->result.ms >= 0;
    return true;
}

int
imgp_spool_record_decode (const char *text, imgp_job_t *r)
{
    assert (text);
    assert (r);
    memset (r, 0, sizeof *r);
    json_t *root = json_loads (text, 0, NULL);
    if (!root)
        return -1;
    int version, enlarge;
    //  Records written before owners existed have none: they load as "".
    const char *id, *state, *fit, *format, *worker, *owner = "";
    json_int_t created_at, updated_at, bytes;
    json_t *error = NULL, *result = NULL;
    int rc = json_unpack (root,
        "{s:i, s:s, s:s, s:{s:i, s:i, s:s, s:s, s:i, s:b},"
        " s:I, s:I, s:I, s:i, s:s, s?s, s?o, s?o}",
        "v", &version, "id", &id, "state", &state,
        "opts",
            "width", &r->opts.width, "height", &r->opts.height,
            "fit", &fit, "format", &format,
            "quality", &r->opts.quality, "enlarge", &enlarge,
        "created_at", &created_at, "updated_at", &updated_at,
        "bytes", &bytes, "attempts", &r->attempts, "worker", &worker,
        "owner", &owner, "error", &error, "result", &result);
    if (rc == 0) {
        r->opts.enlarge = enlarge != 0;
        r->created_at = created_at;
        r->updated_at = updated_at;
        r->bytes = bytes;
        if (version != S_RECORD_VERSION
        ||  !imgp_id_valid (id) || s_copy (r->id, sizeof r->id, id)
        ||  imgp_state_parse (state, &r->state)
        ||  imgp_fit_parse (fit, &r->opts.fit)
        ||  imgp_format_parse (format, &r->opts.format)
        ||  !imgp_opts_valid (&r->opts)
        ||  s_copy (r->worker, sizeof r->worker, worker)
        ||  s_copy (r->owner, sizeof r->owner, owner)
        ||  s_decode_outcome (error, result, r)
        ||  !s_record_in_range (r))
            rc = -1;
    }
    json_decref (root);
    return rc;
}

//  ---------------------------------------------------------------------
//  Start-up scan

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t n = strlen (text), m = strlen (suffix);
    return n >= m && streq (text + n - m, suffix);
}

//  A .json file: hand a valid record to `fn`, set an invalid one aside.
//  Returns 1 when a record was passed, 0 when set aside, -1 when fn stops.
static int
s_scan_record (imgp_spool_t *self, const char *id, imgp_spool_record_fn *fn, void *arg)
{
    char path [PATH_MAX];
    s_path (self, id, IMGP_SPOOL_JSON, "", path);
    void *text = NULL;
    size_t size = 0;
    imgp_job_t record;
    if (s_read_path (path, S_RECORD_MAX, &text, &size) == 0
    &&  strlen (text) == size
    &&  imgp_spool_record_decode (text, &record) == 0
    &&  streq (record.id, id)) {
        free (text);
        return fn (&record, arg) == 0 ? 1 : -1;
    }
    free (text);
    char aside [PATH_MAX];
    s_path (self, id, IMGP_SPOOL_JSON, ".corrupt", aside);
    imgp_error ("job=%s event=spool_corrupt file=%s moved_to=%s", id, path, aside);
    if (rename (path, aside))
        imgp_error ("spool: cannot rename %s: %s", path, strerror (errno));
    return 0;
}

//  Debris: a .tmp from an interrupted write, or a .in/.out whose record
//  never committed (or was deleted first). Records set aside keep theirs.
static void
s_scan_debris (imgp_spool_t *self, const char *name, const char *id)
{
    bool debris = s_ends_with (name, ".tmp");
    if (!debris && (s_ends_with (name, ".in") || s_ends_with (name, ".out"))) {
        char aside [PATH_MAX];
        s_path (self, id, IMGP_SPOOL_JSON, ".corrupt", aside);
        debris = !imgp_spool_has (self, id, IMGP_SPOOL_JSON) && access (aside, F_OK) != 0;
    }
    if (!debris)
        return;
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", self->jobs_dir, name);
    imgp_info ("job=%s event=spool_cleanup file=%s", id, name);
    if (unlink (path) && errno != ENOENT)
        imgp_warn ("spool: cannot delete %s: %s", path, strerror (errno));
}

int
imgp_spool_scan (imgp_spool_t *self, imgp_spool_record_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    //  Two passes: records first, so the debris pass can tell a .in whose
    //  record is corrupt (kept) from one that never had a record (deleted).
    int count = 0;
    for (int pass = 0; pass < 2; pass++) {
        DIR *dir = opendir (self->jobs_dir);
        if (!dir) {
            imgp_error ("spool: cannot read %s: %s", self->jobs_dir, strerror (errno));
            return -1;
        }
        struct dirent *entry;
        while ((errno = 0, entry = readdir (dir))) {
            const char *name = entry->d_name;
            char id [IMGP_ID_LEN + 1];
            if (strlen (name) <= IMGP_ID_LEN || name [IMGP_ID_LEN] != '.')
                continue;           //  not ours: leave it alone
            memcpy (id, name, IMGP_ID_LEN);
            id [IMGP_ID_LEN] = '\0';
            if (!imgp_id_valid (id))
                continue;
            if (pass == 1)
                s_scan_debris (self, name, id);
            else
            if (streq (name + IMGP_ID_LEN, ".json")) {
                int rc = s_scan_record (self, id, fn, arg);
                if (rc < 0) {
                    closedir (dir);
                    return count;
                }
                count += rc;
            }
        }
        //  A directory that cannot be read to the end would reload only
        //  some jobs: refuse to start rather than lose the others.
        int error = errno;
        closedir (dir);
        if (error) {
            imgp_error ("spool: cannot read %s: %s", self->jobs_dir, strerror (error));
            return -1;
        }
    }
    return count;
}

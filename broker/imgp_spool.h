/*  imgp_spool — the broker's spool directory: what it has acknowledged, on
    disk, so a restart loses nothing.

    Layout: DIR/jobs/ID.in (original), ID.out (thumbnail), ID.json (the job
    record). Every file is written to ID.ext.tmp and renamed into place
    (optionally fsynced), so a reader sees a whole file or none. The .json
    is the commit point: it is written after the .in, and a .in or .out
    without a .json is debris from a crash, deleted by imgp_spool_scan.

    Why its own module: the broker's invariant "ACCEPTED means on disk"
    rests on these few functions. Paths are built only from ids that passed
    imgp_id_valid (asserted: callers validate ids from the wire first), so a
    client can never name a file. Never decodes images; never keeps state
    beyond the directory path.
*/
#ifndef IMGP_SPOOL_H_INCLUDED
#define IMGP_SPOOL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "imgp_table.h"

typedef enum {
    IMGP_SPOOL_IN = 0,          //  ID.in, the original
    IMGP_SPOOL_OUT,             //  ID.out, the thumbnail
    IMGP_SPOOL_JSON             //  ID.json, the record
} imgp_spool_kind_t;

typedef struct _imgp_spool_t imgp_spool_t;

//  Called by imgp_spool_scan for each valid record (borrowed for the call).
//  Return 0 to go on, -1 to stop the scan.
typedef int (imgp_spool_record_fn) (const imgp_job_t *record, void *arg);

//  Open the spool under `dir`, creating DIR and DIR/jobs when missing.
//  `fsync`: fsync files and the directory on every write (durable against
//  power loss, slower). Returns NULL, with an error logged, on failure.
imgp_spool_t *imgp_spool_new (const char *dir, bool fsync);

//  Destroy the handle (files stay); safe on NULL and twice.
void imgp_spool_destroy (imgp_spool_t **self_p);

//  Write ID.in or ID.out atomically. Returns 0, or -1 with an error logged.
int imgp_spool_put (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                    const void *data, size_t size);

//  Read a whole file into a malloc'd buffer the caller owns (to hand to
//  imgp_msg_set_data without a copy). Returns 0, or -1 with an error logged
//  (a missing file included).
int imgp_spool_get (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind,
                    void **data_p, size_t *size_p);

//  True when the file exists.
bool imgp_spool_has (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind);

//  Write the record as ID.json atomically: the commit point of a job.
//  Returns 0, or -1 with an error logged.
int imgp_spool_save (imgp_spool_t *self, const imgp_job_t *record);

//  Delete one file; a missing file is not an error. Returns 0 or -1.
int imgp_spool_drop (imgp_spool_t *self, const char *id, imgp_spool_kind_t kind);

//  Delete a job's files, the record first (so a crash half-way leaves only
//  debris that the next scan removes). Returns 0 or -1.
int imgp_spool_delete (imgp_spool_t *self, const char *id);

//  Scan the spool at start: delete *.tmp, call `fn` for each valid record,
//  delete .in/.out files that have no record, and set aside records that do
//  not parse or hold a value out of range (renamed ID.json.corrupt,
//  logged). Returns the number of records passed to `fn`, or -1 when the
//  directory cannot be read (to its end).
int imgp_spool_scan (imgp_spool_t *self, imgp_spool_record_fn *fn, void *arg);

//  The record as JSON text (caller frees) and back (-1 when it does not
//  parse or a value is out of range): exposed for tests. A record without
//  "owner" (from a broker before owners) decodes with owner "".
char *imgp_spool_record_encode (const imgp_job_t *record);
int imgp_spool_record_decode (const char *text, imgp_job_t *record);

#endif

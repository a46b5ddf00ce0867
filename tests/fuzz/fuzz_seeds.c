/*  fuzz_seeds — writes the seed corpus of fuzz_msg_decode: one valid
    encoded message of every type (INFO in each state, ERROR with and
    without an id), framed as fuzz_frames.h says, one file per message.

    Why: a fuzzer that starts from valid messages reaches the field checks
    at once instead of spending its time rediscovering JSON. The messages
    are built with the codec itself, so the seeds follow any change of the
    wire format; tests/run.sh runs this before each fuzzing run, and the
    copies in corpus/fuzz_msg_decode/ are its output (regenerate them with
    `build-fuzz/tests/fuzz/fuzz_seeds tests/fuzz/corpus/fuzz_msg_decode`).

    Usage: fuzz_seeds DIR. Exit 0, or 1 when a message cannot be encoded
    or written.
*/
#include "fuzz_frames.h"
#include "imgp_log.h"
#include "imgp_msg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_ID "0123456789abcdef0123456789abcdef"

//  Attach a few image-like bytes (a PNG signature) as the data frame.
static void
s_add_data (imgp_msg_t *msg)
{
    static const uint8_t png [] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13 };
    uint8_t *copy = malloc (sizeof png);
    if (!copy)
        abort ();
    memcpy (copy, png, sizeof png);
    imgp_msg_set_data (msg, copy, sizeof png, NULL);
}

//  A message of `type` with the fields it uses filled in plausibly.
static imgp_msg_t *
s_message (imgp_msg_type_t type, imgp_state_t state, bool with_id)
{
    imgp_msg_t *msg = imgp_msg_new (type);
    if (with_id)
        strcpy (msg->id, S_ID);
    msg->opts.width = 200;
    msg->opts.height = 150;
    msg->opts.fit = IMGP_FIT_COVER;
    msg->opts.format = IMGP_FORMAT_WEBP;
    msg->opts.quality = 80;
    msg->opts.gravity = IMGP_GRAVITY_NORTH;
    msg->opts.animated = true;
    msg->opts.size_count = 2;
    msg->opts.sizes [0] = (imgp_size_t) { 200, 150 };
    msg->opts.sizes [1] = (imgp_size_t) { 50, 50 };
    msg->state = state;
    msg->created_at = 1700000000000;
    msg->updated_at = 1700000001234;
    msg->attempts = 1;
    msg->slots = 1;
    msg->credit = 2;
    strcpy (msg->worker, "host-1.4242");
    if (type == IMGP_MSG_READY)
        strcpy (msg->host, "host-1");
    strcpy (msg->code, "decode_error");
    strcpy (msg->message, "VipsJpeg: premature end of JPEG file");
    msg->result_count = 1;
    msg->results [0] = (imgp_result_t) { .width = 100, .height = 75, .format = IMGP_FORMAT_WEBP,
                                    .bytes = 12, .ms = 7, .box = { 200, 150 } };
    memset (msg->results [0].etag, 'e', IMGP_ETAG_LEN);
    bool data = type == IMGP_MSG_SUBMIT || type == IMGP_MSG_JOB || type == IMGP_MSG_DONE
             || (type == IMGP_MSG_INFO && state == IMGP_STATE_DONE);
    if (data)
        s_add_data (msg);
    return msg;
}

static int
s_write (const char *dir, const char *name, imgp_msg_t *msg)
{
    zmsg_t *zmsg = imgp_msg_encode (msg);
    imgp_msg_destroy (&msg);
    char path [1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    int rc = zmsg ? fuzz_frames_write (zmsg, path) : -1;
    zmsg_destroy (&zmsg);
    if (rc)
        fprintf (stderr, "fuzz_seeds: cannot write %s\n", path);
    return rc;
}

int
main (int argc, char *argv [])
{
    if (argc != 2) {
        fprintf (stderr, "usage: fuzz_seeds DIR\n");
        return 1;
    }
    imgp_log_init ("fuzz_seeds", false);
    const char *dir = argv [1];
    int rc = 0;
    for (int type = IMGP_MSG_SUBMIT; type <= IMGP_MSG_CLUSTER; type++) {
        char name [64];
        snprintf (name, sizeof name, "%s", imgp_msg_type_name ((imgp_msg_type_t) type));
        for (char *c = name; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
        if (type == IMGP_MSG_INFO)
            for (int state = IMGP_STATE_QUEUED; state <= IMGP_STATE_FAILED; state++) {
                char info [64];
                snprintf (info, sizeof info, "info-%s", imgp_state_name ((imgp_state_t) state));
                rc |= s_write (dir, info, s_message (IMGP_MSG_INFO, (imgp_state_t) state, true));
            }
        else
            rc |= s_write (dir, name, s_message ((imgp_msg_type_t) type, IMGP_STATE_QUEUED, true));
    }
    rc |= s_write (dir, "error-no-id", s_message (IMGP_MSG_ERROR, IMGP_STATE_QUEUED, false));
    imgp_msg_t *cluster = s_message (IMGP_MSG_CLUSTER, IMGP_STATE_QUEUED, false);
    cluster->has_stats = true;
    const char *json = "{\"resizers\":[{\"name\":\"host-1.4242\",\"jobs\":[\"" S_ID "\"]}]}";
    imgp_msg_set_data (cluster, strdup (json), strlen (json), NULL);
    rc |= s_write (dir, "cluster-reply", cluster);
    return rc ? 1 : 0;
}

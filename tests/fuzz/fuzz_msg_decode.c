/*  fuzz_msg_decode — libFuzzer target for imgp_msg_decode, the decoder of
    every message that arrives on an imgpipe socket.

    Why: this is the code that reads bytes from any peer that can reach the
    broker's ports; DESIGN.md invariant 3 says a malformed message is
    dropped with a reason and harms nothing. The input is split into frames
    by fuzz_frames.h. Beyond "no crash, no leak, no UB" (the sanitizers)
    the target checks two promises of imgp_msg.h:
      - a refused message always comes with a reason (callers log it);
      - a message the decoder accepts re-encodes (the codec never emits what
        it would refuse, so it must not refuse what it accepted), and
        decoding that again gives the same fields and the same data bytes.
    A broken promise aborts, which libFuzzer reports as a crash.

    Never: free or keep anything across inputs; each input is independent.
*/
#include "fuzz_frames.h"
#include "imgp_log.h"
#include "imgp_msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
s_broken (const char *format, ...) __attribute__ ((format (printf, 1, 2), noreturn));

//  A promise of the codec does not hold: say which, then crash.
static void
s_broken (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    fprintf (stderr, "fuzz_msg_decode: ");
    vfprintf (stderr, format, args);
    fprintf (stderr, "\n");
    va_end (args);
    abort ();
}

static bool
s_same_result (const imgp_result_t *a, const imgp_result_t *b)
{
    return a->width == b->width && a->height == b->height && a->format == b->format
        && a->bytes == b->bytes && a->ms == b->ms && a->box.width == b->box.width
        && a->box.height == b->box.height && strcmp (a->etag, b->etag) == 0;
}

static bool
s_same_opts (const imgp_opts_t *a, const imgp_opts_t *b)
{
    return a->width == b->width && a->height == b->height && a->fit == b->fit
        && a->format == b->format && a->quality == b->quality && a->enlarge == b->enlarge
        && a->gravity == b->gravity && memcmp (a->background, b->background, 4) == 0
        && a->animated == b->animated && a->size_count == b->size_count
        && memcmp (a->sizes, b->sizes, sizeof a->sizes) == 0;
}

//  The public fields of two messages are equal (fields a type does not use
//  are zero or default on both sides, so they compare equal too).
static bool
s_same_results (const imgp_msg_t *a, const imgp_msg_t *b)
{
    if (a->result_count != b->result_count)
        return false;
    for (int i = 0; i < a->result_count; i++)
        if (!s_same_result (&a->results [i], &b->results [i]))
            return false;
    return true;
}

static bool
s_same_fields (const imgp_msg_t *a, const imgp_msg_t *b)
{
    return a->type == b->type && strcmp (a->id, b->id) == 0
        && s_same_opts (&a->opts, &b->opts) && a->state == b->state
        && a->created_at == b->created_at && a->updated_at == b->updated_at
        && a->attempts == b->attempts && a->slots == b->slots
        && strcmp (a->worker, b->worker) == 0 && strcmp (a->code, b->code) == 0
        && strcmp (a->message, b->message) == 0 && s_same_results (a, b);
}

//  Encode a decoded message and decode it again; both must succeed and
//  give the same message. Destroys *msg_p.
static void
s_check_round_trip (imgp_msg_t **msg_p)
{
    imgp_msg_t *msg = *msg_p;
    //  Encoding moves the data frame into the zmsg: keep a copy to compare.
    size_t size = imgp_msg_size (msg);
    uint8_t *data = size ? malloc (size) : NULL;
    if (size)
        memcpy (data, imgp_msg_data (msg), size);

    zmsg_t *zmsg = imgp_msg_encode (msg);
    if (!zmsg)
        s_broken ("the encoder refuses a %s the decoder accepted",
                  imgp_msg_type_name (msg->type));
    char error [256] = "";
    imgp_msg_t *again = imgp_msg_decode (&zmsg, error, sizeof error);
    if (!again)
        s_broken ("a re-encoded %s does not decode: %s", imgp_msg_type_name (msg->type), error);
    if (!s_same_fields (msg, again))
        s_broken ("a %s changed in a round trip", imgp_msg_type_name (msg->type));
    if (imgp_msg_size (again) != size || (size && memcmp (imgp_msg_data (again), data, size)))
        s_broken ("the data of a %s changed in a round trip", imgp_msg_type_name (msg->type));
    free (data);
    imgp_msg_destroy (&again);
    imgp_msg_destroy (msg_p);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    imgp_log_init ("fuzz_msg_decode", false);
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    zmsg_t *zmsg = fuzz_frames_split (data, size);
    char error [256] = "";
    imgp_msg_t *msg = imgp_msg_decode (&zmsg, error, sizeof error);
    if (zmsg)
        s_broken ("imgp_msg_decode did not consume the zmsg");
    if (!msg && error [0] == '\0')
        s_broken ("a message was refused without a reason");
    if (msg)
        s_check_round_trip (&msg);
    return 0;
}

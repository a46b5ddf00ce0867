/*  test_proto — criterion suite for proto/: ids, options, and the message
    codec (round trip of every type, real sockets, malformed input).

    Why: proto/ is the only code that reads bytes from the network, so it is
    tested hardest: every message type must survive encode -> decode, and
    every way a frame can be wrong must give NULL with a reason, never a
    crash. Each test runs in its own process (criterion's default), so a
    crash fails one test only (and an environment variable a test sets
    stays in that test). imgp_conf, the typed option table every program
    reads its configuration with, is tested here too.
*/
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgp_conf.h"
#include "imgp_curve.h"
#include "imgp_defaults.h"
#include "imgp_id.h"
#include "imgp_jw.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_opts.h"

static void
s_setup (void)
{
    imgp_log_init ("test_proto", false);
}

TestSuite (id, .init = s_setup);
TestSuite (opts, .init = s_setup);
TestSuite (codec, .init = s_setup);
TestSuite (malformed, .init = s_setup);
TestSuite (sockets, .init = s_setup, .timeout = 20);
TestSuite (conf, .init = s_setup);
TestSuite (jw, .init = s_setup);

//  --------------------------------------------------------------------------
//  Helpers

static const char *S_ID = "0123456789abcdef0123456789abcdef";

//  A malloc'd buffer of `len` pattern bytes.
static uint8_t *
s_bytes (size_t len, uint8_t seed)
{
    uint8_t *buf = malloc (len);
    cr_assert_not_null (buf);
    for (size_t i = 0; i < len; i++)
        buf [i] = (uint8_t) (seed + i * 7);
    return buf;
}

//  Builders for the messages the tests make most, all about job S_ID. Each
//  sets only the fields its arguments name; a test sets the rest itself,
//  so what a test checks stays in the test.

//  A new message of `type` for job S_ID.
static imgp_msg_t *
s_msg_new (imgp_msg_type_t type)
{
    imgp_msg_t *msg = imgp_msg_new (type);
    strcpy (msg->id, S_ID);
    return msg;
}

//  A resizer's report (STARTED, DONE or FAILED) on attempt `attempts`.
static imgp_msg_t *
s_report_new (imgp_msg_type_t type, const char *worker, int attempts)
{
    imgp_msg_t *msg = s_msg_new (type);
    strcpy (msg->worker, worker);
    msg->attempts = attempts;
    return msg;
}

static imgp_msg_t *
s_failed_new (const char *worker, int attempts, const char *code, const char *message)
{
    imgp_msg_t *msg = s_report_new (IMGP_MSG_FAILED, worker, attempts);
    strcpy (msg->code, code);
    strcpy (msg->message, message);
    return msg;
}

//  A JOB carrying `size` bytes of s_bytes (size, seed), freed by `free_fn`
//  (NULL: free) once sent.
static imgp_msg_t *
s_job_new (int attempts, size_t size, uint8_t seed, void (*free_fn) (void *, void *))
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_JOB);
    msg->attempts = attempts;
    imgp_msg_set_data (msg, s_bytes (size, seed), size, free_fn);
    return msg;
}

//  Encode and decode a message; destroys `msg`, returns the decoded one.
//  The codec writes headers by hand, in the bytes jansson's compact dump
//  made before: a header must be its own jansson re-dump (key order kept,
//  the same escapes, no spaces), so the wire stays byte-compatible.
static void
s_assert_canonical (zframe_t *header)
{
    char *text = zframe_strdup (header);
    json_error_t jerr;
    json_t *root = json_loads (text, 0, &jerr);
    cr_assert_not_null (root, "header is not JSON: %s: %s", jerr.text, text);
    char *again = json_dumps (root, JSON_COMPACT);
    cr_assert_str_eq (text, again, "header differs from jansson's dump");
    free (again);
    json_decref (root);
    free (text);
}

static imgp_msg_t *
s_round_trip (imgp_msg_t *msg)
{
    zmsg_t *zmsg = imgp_msg_encode (msg);
    cr_assert_not_null (zmsg, "encode refused a valid %s", imgp_msg_type_name (msg->type));
    s_assert_canonical (zmsg_first (zmsg));
    imgp_msg_destroy (&msg);
    char error [256] = "";
    imgp_msg_t *back = imgp_msg_decode (&zmsg, error, sizeof error);
    cr_assert_null (zmsg, "decode must consume the zmsg");
    cr_assert_not_null (back, "decode failed: %s", error);
    return back;
}

//  Decode a header (and optional data frame); returns the message or NULL
//  with the reason in `error`.
static imgp_msg_t *
s_decode_header (const char *json, size_t json_len, const char *data,
                 char *error, size_t size)
{
    zmsg_t *zmsg = zmsg_new ();
    zmsg_addmem (zmsg, json, json_len);
    if (data)
        zmsg_addmem (zmsg, data, strlen (data));
    return imgp_msg_decode (&zmsg, error, size);
}

//  Expect the JSON header (plus optional data) to be refused; returns the
//  reason given (static buffer), for a test that checks its words.
static const char *
s_expect_bad (const char *json, const char *data)
{
    static char error [256];
    error [0] = '\0';
    imgp_msg_t *msg = s_decode_header (json, strlen (json), data, error, sizeof error);
    cr_expect_null (msg, "accepted malformed header: %s", json);
    cr_expect_neq (error [0], '\0', "no reason given for: %s", json);
    imgp_msg_destroy (&msg);
    return error;
}

//  Expect the JSON header (plus optional data) to be accepted.
static imgp_msg_t *
s_expect_good (const char *json, const char *data)
{
    char error [256] = "";
    imgp_msg_t *msg = s_decode_header (json, strlen (json), data, error, sizeof error);
    cr_expect_not_null (msg, "refused valid header: %s (%s)", json, error);
    return msg;
}

//  Expect every header of a table to be refused.
#define S_EXPECT_BAD_EACH(table) \
    for (size_t i_ = 0; i_ < sizeof (table) / sizeof (table) [0]; i_++) \
        s_expect_bad ((table) [i_], NULL)

//  The JSON header a message encodes to, as a string the caller frees.
static char *
s_header_of (imgp_msg_t *msg)
{
    zmsg_t *zmsg = imgp_msg_encode (msg);
    cr_assert_not_null (zmsg);
    zframe_t *header = zmsg_first (zmsg);
    s_assert_canonical (header);
    char *text = zframe_strdup (header);
    zmsg_destroy (&zmsg);
    return text;
}

//  --------------------------------------------------------------------------
//  Ids

Test (id, new_ids_are_valid_and_distinct)
{
    enum { COUNT = 2000 };
    zhashx_t *seen = zhashx_new ();
    for (int i = 0; i < COUNT; i++) {
        char id [IMGP_ID_LEN + 1];
        cr_assert_eq (imgp_id_new (id), 0);
        cr_assert_eq (strlen (id), IMGP_ID_LEN);
        cr_assert (imgp_id_valid (id), "invalid new id %s", id);
        cr_assert_eq (zhashx_insert (seen, id, (void *) 1), 0, "duplicate id %s", id);
    }
    zhashx_destroy (&seen);
}

Test (id, validation)
{
    cr_expect (imgp_id_valid (S_ID));
    cr_expect (imgp_id_valid ("ffffffffffffffffffffffffffffffff"));
    cr_expect_not (imgp_id_valid (NULL));
    cr_expect_not (imgp_id_valid (""));
    cr_expect_not (imgp_id_valid ("0123456789abcdef0123456789abcde"));     //  31
    cr_expect_not (imgp_id_valid ("0123456789abcdef0123456789abcdef0"));   //  33
    cr_expect_not (imgp_id_valid ("0123456789ABCDEF0123456789abcdef"));    //  upper
    cr_expect_not (imgp_id_valid ("0123456789abcdeg0123456789abcdef"));    //  'g'
    cr_expect_not (imgp_id_valid ("../../../../../../../etc/passwd.."));
    cr_expect_not (imgp_id_valid ("0123456789abcdef 123456789abcdef"));
    cr_expect_not (imgp_id_valid ("0123456789abcdef0123456789abcde\n"));
}

//  --------------------------------------------------------------------------
//  Options

static void
s_expect_opts (const char *query, int width, int height)
{
    imgp_opts_t opts;
    const char *error = "unset";
    cr_expect_eq (imgp_opts_parse_query (&opts, query, &error, NULL), 0,
                  "query \"%s\" refused: %s", query ? query : "(null)", error);
    cr_expect_null (error);
    cr_expect_eq (opts.width, width, "query \"%s\" width %d", query, opts.width);
    cr_expect_eq (opts.height, height, "query \"%s\" height %d", query, opts.height);
}

static const char *
s_opts_error (const char *query)
{
    imgp_opts_t opts;
    const char *error = NULL;
    cr_expect_eq (imgp_opts_parse_query (&opts, query, &error, NULL), -1,
                  "query \"%s\" accepted", query);
    cr_expect_not_null (error, "query \"%s\" gave no message", query);
    return error ? error : "";
}

Test (opts, defaults)
{
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    cr_expect_eq (opts.width, 100);
    cr_expect_eq (opts.height, 100);
    cr_expect_eq (opts.fit, IMGP_FIT_INSIDE);
    cr_expect_eq (opts.format, IMGP_FORMAT_PNG);
    cr_expect_eq (opts.quality, 0);
    cr_expect_not (opts.enlarge);
    cr_expect (imgp_opts_valid (&opts));
}

Test (opts, empty_queries_give_defaults)
{
    s_expect_opts (NULL, 100, 100);
    s_expect_opts ("", 100, 100);
    s_expect_opts ("&", 100, 100);
    s_expect_opts ("&&&", 100, 100);
}

Test (opts, all_keys)
{
    imgp_opts_t opts;
    const char *error = NULL;
    cr_assert_eq (imgp_opts_parse_query (&opts,
        "width=300&height=200&fit=cover&format=webp&quality=80&enlarge=true", &error, NULL), 0);
    cr_expect_eq (opts.width, 300);
    cr_expect_eq (opts.height, 200);
    cr_expect_eq (opts.fit, IMGP_FIT_COVER);
    cr_expect_eq (opts.format, IMGP_FORMAT_WEBP);
    cr_expect_eq (opts.quality, 80);
    cr_expect (opts.enlarge);
    cr_assert_eq (imgp_opts_parse_query (&opts, "fit=fill&format=avif&enlarge=0", &error, NULL), 0);
    cr_expect_eq (opts.fit, IMGP_FIT_FILL);
    cr_expect_eq (opts.format, IMGP_FORMAT_AVIF);
    cr_expect_not (opts.enlarge);
    cr_assert_eq (imgp_opts_parse_query (&opts, "format=jpeg&enlarge=1&fit=inside", &error, NULL), 0);
    cr_expect_eq (opts.format, IMGP_FORMAT_JPEG);
    cr_expect (opts.enlarge);
}

Test (opts, square_box_rule)
{
    s_expect_opts ("width=200", 200, 200);
    s_expect_opts ("height=50", 50, 50);
    s_expect_opts ("width=200&height=50", 200, 50);
    s_expect_opts ("height=50&width=200", 200, 50);
    s_expect_opts ("format=jpeg", 100, 100);
    s_expect_opts ("&width=1&&height=4096&", 1, 4096);
}

Test (opts, url_decoding)
{
    s_expect_opts ("wid%74h=%32%30%30", 200, 200);
    imgp_opts_t opts;
    const char *error = NULL;
    cr_expect_eq (imgp_opts_parse_query (&opts, "format=%70ng&fit=%63over", &error, NULL), 0);
    cr_expect_eq (opts.fit, IMGP_FIT_COVER);
    cr_expect_eq (imgp_opts_parse_query (&opts, "format=%4A%50%45%47", &error, NULL), -1,
                  "values are case-sensitive");
}

Test (opts, bad_values)
{
    const char *width = "width must be a whole number from 1 to 4096";
    cr_expect_str_eq (s_opts_error ("width=-1"), width);
    cr_expect_str_eq (s_opts_error ("width=99999"), width);
    cr_expect_str_eq (s_opts_error ("width=0"), width);
    cr_expect_str_eq (s_opts_error ("width=4097"), width);
    cr_expect_str_eq (s_opts_error ("width="), width);
    cr_expect_str_eq (s_opts_error ("width"), width);
    cr_expect_str_eq (s_opts_error ("width=12a"), width);
    cr_expect_str_eq (s_opts_error ("width=+5"), width);
    cr_expect_str_eq (s_opts_error ("width=%2B5"), width);
    cr_expect_str_eq (s_opts_error ("width=5%20"), width);
    cr_expect_str_eq (s_opts_error ("width=1.5"), width);
    cr_expect_str_eq (s_opts_error ("width=99999999999999999999"), width);
    cr_expect_str_eq (s_opts_error ("height=0"),
                      "height must be a whole number from 1 to 4096");
    cr_expect_str_eq (s_opts_error ("format=bmp"), "format must be png, jpeg, webp, avif or auto");
    cr_expect_str_eq (s_opts_error ("format=%2e%2e"), "format must be png, jpeg, webp, avif or auto");
    cr_expect_str_eq (s_opts_error ("quality=abc"),
                      "quality must be a whole number from 1 to 100");
    cr_expect_str_eq (s_opts_error ("quality=0"),
                      "quality must be a whole number from 1 to 100");
    cr_expect_str_eq (s_opts_error ("quality=101"),
                      "quality must be a whole number from 1 to 100");
    cr_expect_str_eq (s_opts_error ("fit=crop"), "fit must be inside, cover, fill or contain");
    cr_expect_str_eq (s_opts_error ("enlarge=yes"), "enlarge must be true, false, 1 or 0");
}

Test (opts, bad_keys_and_escapes)
{
    const char *unknown = s_opts_error ("colour=red");
    cr_expect (strstr (unknown, "unknown option"), "got \"%s\"", unknown);
    s_opts_error ("=5");
    s_opts_error ("Width=5");
    s_opts_error ("%2e%2e=1");
    s_opts_error ("width=%zz");
    s_opts_error ("width=%");
    s_opts_error ("width=%3");
    s_opts_error ("width=1%00");
    s_opts_error ("wi%00dth=1");
    s_opts_error ("width=100000000000000000000000000000000000000000000000000000000000000");
}

Test (opts, repeated_key)
{
    cr_expect_str_eq (s_opts_error ("width=1&width=2"), "width is given more than once");
    cr_expect_str_eq (s_opts_error ("format=png&format=png"), "format is given more than once");
    cr_expect_str_eq (s_opts_error ("width=1&wid%74h=1"), "width is given more than once");
}

Test (opts, valid)
{
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    cr_expect_not (imgp_opts_valid (NULL));
    opts.width = 0;
    cr_expect_not (imgp_opts_valid (&opts));
    opts.width = IMGP_SIDE_MAX + 1;
    cr_expect_not (imgp_opts_valid (&opts));
    imgp_opts_default (&opts);
    opts.height = -3;
    cr_expect_not (imgp_opts_valid (&opts));
    imgp_opts_default (&opts);
    opts.quality = 101;
    cr_expect_not (imgp_opts_valid (&opts));
    imgp_opts_default (&opts);
    opts.fit = (imgp_fit_t) 7;
    cr_expect_not (imgp_opts_valid (&opts));
    imgp_opts_default (&opts);
    opts.format = (imgp_format_t) -1;
    cr_expect_not (imgp_opts_valid (&opts));
}

Test (opts, names_and_mime)
{
    const char *formats [] = { "png", "jpeg", "webp", "avif" };
    const char *mimes [] = { "image/png", "image/jpeg", "image/webp", "image/avif" };
    for (int i = 0; i < 4; i++) {
        imgp_format_t format;
        cr_expect_str_eq (imgp_format_name ((imgp_format_t) i), formats [i]);
        cr_expect_str_eq (imgp_format_mime ((imgp_format_t) i), mimes [i]);
        cr_expect_eq (imgp_format_parse (formats [i], &format), 0);
        cr_expect_eq ((int) format, i);
    }
    const char *states [] = { "queued", "processing", "done", "failed" };
    for (int i = 0; i < 4; i++) {
        imgp_state_t state;
        cr_expect_str_eq (imgp_state_name ((imgp_state_t) i), states [i]);
        cr_expect_eq (imgp_state_parse (states [i], &state), 0);
        cr_expect_eq ((int) state, i);
    }
    const char *fits [] = { "inside", "cover", "fill" };
    for (int i = 0; i < 3; i++) {
        imgp_fit_t fit;
        cr_expect_str_eq (imgp_fit_name ((imgp_fit_t) i), fits [i]);
        cr_expect_eq (imgp_fit_parse (fits [i], &fit), 0);
        cr_expect_eq ((int) fit, i);
    }
    imgp_format_t format;
    imgp_state_t state;
    imgp_fit_t fit;
    cr_expect_eq (imgp_format_parse ("bmp", &format), -1);
    cr_expect_eq (imgp_format_parse ("PNG", &format), -1);
    cr_expect_eq (imgp_format_parse (NULL, &format), -1);
    cr_expect_eq (imgp_state_parse ("running", &state), -1);
    cr_expect_eq (imgp_fit_parse ("", &fit), -1);
    cr_expect_str_eq (imgp_format_name ((imgp_format_t) 9), "unknown");
    cr_expect_str_eq (imgp_state_name ((imgp_state_t) -1), "unknown");
    cr_expect_str_eq (imgp_fit_name ((imgp_fit_t) 4), "unknown");
}

//  --------------------------------------------------------------------------
//  Codec: round trip of every type

static void
s_set_opts (imgp_opts_t *opts)
{
    opts->width = 320;
    opts->height = 240;
    opts->fit = IMGP_FIT_COVER;
    opts->format = IMGP_FORMAT_WEBP;
    opts->quality = 75;
    opts->enlarge = true;
}

static void
s_expect_opts_set (const imgp_opts_t *opts)
{
    cr_expect_eq (opts->width, 320);
    cr_expect_eq (opts->height, 240);
    cr_expect_eq (opts->fit, IMGP_FIT_COVER);
    cr_expect_eq (opts->format, IMGP_FORMAT_WEBP);
    cr_expect_eq (opts->quality, 75);
    cr_expect (opts->enlarge);
}

static void
s_expect_data (imgp_msg_t *msg, size_t len, uint8_t seed)
{
    cr_assert_eq (imgp_msg_size (msg), len);
    uint8_t *expected = s_bytes (len, seed);
    cr_expect_eq (memcmp (imgp_msg_data (msg), expected, len), 0, "data differs");
    free (expected);
}

Test (codec, submit)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_SUBMIT);
    s_set_opts (&msg->opts);
    imgp_msg_set_data (msg, s_bytes (5000, 3), 5000, NULL);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_SUBMIT);
    cr_expect_str_eq (back->id, S_ID);
    s_expect_opts_set (&back->opts);
    s_expect_data (back, 5000, 3);
    imgp_msg_destroy (&back);
    cr_expect_null (back);
    imgp_msg_destroy (&back);       //  twice is safe
}

Test (codec, accepted)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_ACCEPTED);
    msg->state = IMGP_STATE_QUEUED;
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_ACCEPTED);
    cr_expect_str_eq (back->id, S_ID);
    cr_expect_eq (back->state, IMGP_STATE_QUEUED);
    cr_expect_null (imgp_msg_data (back));
    cr_expect_eq (imgp_msg_size (back), 0);
    imgp_msg_destroy (&back);
}

Test (codec, status_and_fetch)
{
    imgp_msg_type_t types [] = { IMGP_MSG_STATUS, IMGP_MSG_FETCH };
    for (int i = 0; i < 2; i++) {
        imgp_msg_t *msg = s_msg_new (types [i]);
        imgp_msg_t *back = s_round_trip (msg);
        cr_expect_eq (back->type, types [i]);
        cr_expect_str_eq (back->id, S_ID);
        imgp_msg_destroy (&back);
    }
}

Test (codec, tag_owner_and_wait)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_FETCH);
    msg->tag = IMGP_TAG_MAX;
    msg->wait_ms = IMGP_WAIT_MAX_MS;
    snprintf (msg->owner, sizeof msg->owner, "team-a.prod_2");
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->tag, IMGP_TAG_MAX);
    cr_expect_eq (back->wait_ms, IMGP_WAIT_MAX_MS);
    cr_expect_str_eq (back->owner, "team-a.prod_2");
    //  a reply carries the request's tag back, not its owner or wait
    imgp_msg_t *info = imgp_msg_reply_new (back, IMGP_MSG_ERROR);
    snprintf (info->code, sizeof info->code, "not_found");
    imgp_msg_destroy (&back);
    cr_expect_str_eq (info->owner, "");     //  ERROR has no owner on the wire: check here
    cr_expect_eq (info->wait_ms, 0);
    back = s_round_trip (info);
    cr_expect_eq (back->tag, IMGP_TAG_MAX);
    imgp_msg_destroy (&back);
    //  unset, none of them is on the wire
    msg = s_msg_new (IMGP_MSG_STATUS);
    char *header = s_header_of (msg);
    cr_expect_null (strstr (header, "tag"), "%s", header);
    cr_expect_null (strstr (header, "owner"), "%s", header);
    cr_expect_null (strstr (header, "wait_ms"), "%s", header);
    free (header);
    imgp_msg_destroy (&msg);
}

Test (codec, pong_stats)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_PONG);
    msg->has_stats = true;
    msg->stats.queued = 7;
    msg->stats.queue_max = 1000;
    msg->stats.resizers = 2;
    msg->stats.retried = 3;
    imgp_histo_add (&msg->stats.job_ms, 4);
    imgp_histo_add (&msg->stats.job_ms, 80);
    imgp_histo_add (&msg->stats.job_ms, 999999);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect (back->has_stats);
    cr_expect_eq (back->stats.queued, 7);
    cr_expect_eq (back->stats.queue_max, 1000);
    cr_expect_eq (back->stats.resizers, 2);
    cr_expect_eq (back->stats.retried, 3);
    cr_expect_eq (back->stats.job_ms.counts [0], 1);      //  <= 5
    cr_expect_eq (back->stats.job_ms.counts [4], 1);      //  <= 100
    cr_expect_eq (back->stats.job_ms.counts [IMGP_STATS_BUCKETS], 1);
    cr_expect_eq (back->stats.job_ms.sum_ms, 4 + 80 + 999999);
    imgp_msg_destroy (&back);
}

#define S_ID_TEXT "0123456789abcdef0123456789abcdef"     //  S_ID, for literals

//  The decoder reads the usual headers without jansson and declines the
//  rest to it (proto/imgp_msg.c): both paths must read the same values.
//  A member jansson alone reads (a real number, an escape) sends a header
//  down its path; the message must come out the same as from the plain one.
Test (codec, fast_and_jansson_paths_agree)
{
    const char *headers [] = {
        "{\"v\":1,\"type\":\"submit\",\"id\":\"" "0123456789abcdef0123456789abcdef" "\","
        "\"opts\":{\"width\":300,\"height\":20,\"fit\":\"cover\",\"format\":\"webp\","
        "\"quality\":80,\"enlarge\":true},\"tag\":77,\"owner\":\"key-1\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":0,\"worker\":\"w\\\"1\"}",
        "{ \"v\" : 1 , \"type\" : \"ready\", \"worker\":\"w1\",\"slots\":2,"
        "\"credit\":3,\"host\":\"h\",\"extra\":[1,{\"a\":null},false] }",
        "{\"v\":1,\"type\":\"pong\",\"stats\":{\"queued\":1,\"queue_max\":2,"
        "\"in_flight\":3,\"resizers\":4,\"slots\":5,\"waiters\":6,\"accepted\":7,"
        "\"done\":8,\"failed\":9,\"retried\":10,\"job_ms\":{\"counts\":[1,2,3,4,5,6,7,"
        "8,9,10,11,12,13],\"sum\":14},\"wait_ms\":{\"counts\":[0,0,0,0,0,0,0,0,0,0,0,0,"
        "-1],\"sum\":0}}}",
        "{\"v\":1,\"type\":\"ping\",\"tag\":999999999999999999}",
        "{\"v\":1,\"type\":\"ping\",\"tag\":9999999999999999999}",
        "{\"v\":1,\"type\":\"ping\",\"tag\":-0,\"x\":01}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers [0]; i++) {
        char error [256] = "";
        imgp_msg_t *plain = s_decode_header (headers [i], strlen (headers [i]), NULL, error,
                                             sizeof error);
        char other [2048];
        snprintf (other, sizeof other, "{\"zz\":0.5,%s", headers [i] + 1);
        char error2 [256] = "";
        imgp_msg_t *slow = s_decode_header (other, strlen (other), NULL, error2,
                                            sizeof error2);
        cr_assert_eq (plain == NULL, slow == NULL, "%s: %s / %s", headers [i], error, error2);
        cr_expect_str_eq (error, error2);
        if (plain) {
            char *a = s_header_of (plain), *b = s_header_of (slow);
            cr_expect_str_eq (a, b);
            free (a);
            free (b);
        }
        imgp_msg_destroy (&plain);
        imgp_msg_destroy (&slow);
    }
}


Test (malformed, tag_owner_wait_stats)
{
    const char *bad [] = {
        "{\"v\":1,\"type\":\"status\",\"id\":\"" S_ID_TEXT "\",\"tag\":-1}",
        "{\"v\":1,\"type\":\"status\",\"id\":\"" S_ID_TEXT "\",\"tag\":9007199254740992}",
        "{\"v\":1,\"type\":\"status\",\"id\":\"" S_ID_TEXT "\",\"tag\":\"1\"}",
        "{\"v\":1,\"type\":\"status\",\"id\":\"" S_ID_TEXT "\",\"owner\":\"a b\"}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"" S_ID_TEXT "\",\"wait_ms\":60001}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"" S_ID_TEXT "\",\"wait_ms\":-5}",
        "{\"v\":1,\"type\":\"pong\",\"stats\":{}}",
    };
    S_EXPECT_BAD_EACH (bad);
    imgp_msg_t *msg = s_expect_good (
        "{\"v\":1,\"type\":\"status\",\"id\":\"" S_ID_TEXT "\",\"tag\":12,"
        "\"owner\":\"k1\",\"wait_ms\":100}", NULL);
    cr_expect_eq (msg->tag, 12);
    imgp_msg_destroy (&msg);
}

Test (codec, info_queued)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_PROCESSING;
    msg->created_at = 1764300000123LL;
    msg->updated_at = 1764300000456LL;
    msg->attempts = 2;
    char *header = s_header_of (msg);
    cr_expect_null (strstr (header, "result"), "no result unless done: %s", header);
    cr_expect_null (strstr (header, "code"), "no code unless failed: %s", header);
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->state, IMGP_STATE_PROCESSING);
    cr_expect_eq (back->created_at, 1764300000123LL);
    cr_expect_eq (back->updated_at, 1764300000456LL);
    cr_expect_eq (back->attempts, 2);
    imgp_msg_destroy (&back);
}

Test (codec, info_done_with_thumbnail)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_DONE;
    msg->attempts = 1;
    msg->result_count = 1;
    msg->results [0] = (imgp_result_t) { 100, 67, IMGP_FORMAT_JPEG, 1234, 18, { 0, 0 }, "" };
    imgp_msg_set_data (msg, s_bytes (1234, 9), 1234, NULL);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->state, IMGP_STATE_DONE);
    cr_expect_eq (back->results [0].width, 100);
    cr_expect_eq (back->results [0].height, 67);
    cr_expect_eq (back->results [0].format, IMGP_FORMAT_JPEG);
    cr_expect_eq (back->results [0].bytes, 1234);
    cr_expect_eq (back->results [0].ms, 18);
    s_expect_data (back, 1234, 9);
    imgp_msg_destroy (&back);

    //  STATUS of a done job: INFO without the bytes.
    msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_DONE;
    msg->result_count = 1;
    msg->results [0] = (imgp_result_t) { 1, 1, IMGP_FORMAT_PNG, 70, 0, { 0, 0 }, "" };
    back = s_round_trip (msg);
    cr_expect_eq (imgp_msg_size (back), 0);
    cr_expect_eq (back->results [0].bytes, 70);
    imgp_msg_destroy (&back);
}

Test (codec, info_failed)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_FAILED;
    msg->attempts = 3;
    strcpy (msg->code, "attempts_exhausted");
    strcpy (msg->message, "no resizer reported within 60000 ms, 3 times");
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->state, IMGP_STATE_FAILED);
    cr_expect_str_eq (back->code, "attempts_exhausted");
    cr_expect_str_eq (back->message, "no resizer reported within 60000 ms, 3 times");
    imgp_msg_destroy (&back);
}

//  The exported JSON forms: the exact text, a round trip, and every
//  refusal the decoder makes (the spool reads its records with them).
Test (codec, opts_and_result_json_forms)
{
    imgp_opts_t opts, back;
    memset (&opts, 0, sizeof opts);     //  padding too, for memcmp
    memset (&back, 0, sizeof back);
    imgp_opts_default (&opts);
    opts.fit = IMGP_FIT_COVER;
    opts.quality = 80;
    json_t *obj = imgp_msg_opts_to_json (&opts);
    char *text = json_dumps (obj, JSON_COMPACT);
    cr_expect_str_eq (text, "{\"width\":100,\"height\":100,\"fit\":\"cover\","
                      "\"format\":\"png\",\"quality\":80,\"enlarge\":false}");
    free (text);
    char error [128];
    cr_expect_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), 0, "%s", error);
    cr_expect_eq (memcmp (&back, &opts, sizeof opts), 0);
    json_object_set_new (obj, "width", json_integer (0));
    cr_expect_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), -1);
    cr_expect_str_eq (error, "opts.width 0 is not in 1..4096");
    json_object_del (obj, "width");
    cr_expect_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), -1);
    json_decref (obj);
    cr_expect_eq (imgp_msg_opts_from_json (NULL, &back, NULL, 0), -1);

    imgp_result_t result = { 100, 67, IMGP_FORMAT_JPEG, 1234, 18, { 0, 0 }, "" }, got;
    obj = imgp_msg_result_to_json (&result);
    text = json_dumps (obj, JSON_COMPACT);
    cr_expect_str_eq (text, "{\"width\":100,\"height\":67,\"format\":\"jpeg\","
                      "\"bytes\":1234,\"ms\":18}");
    free (text);
    cr_expect_eq (imgp_msg_result_from_json (obj, &got, error, sizeof error), 0, "%s", error);
    cr_expect (got.width == 100 && got.height == 67 && got.format == IMGP_FORMAT_JPEG
               && got.bytes == 1234 && got.ms == 18);
    json_object_set_new (obj, "height", json_integer (IMGP_RESULT_SIDE_MAX + 1));
    cr_expect_eq (imgp_msg_result_from_json (obj, &got, error, sizeof error), -1);
    json_object_set_new (obj, "height", json_integer (1));
    json_object_set_new (obj, "format", json_string ("gif"));
    cr_expect_eq (imgp_msg_result_from_json (obj, &got, error, sizeof error), -1);
    json_decref (obj);

    cr_expect (imgp_msg_code_valid ("attempts_exhausted"));
    cr_expect_not (imgp_msg_code_valid (""));
    cr_expect_not (imgp_msg_code_valid ("Bad"));
    cr_expect_not (imgp_msg_code_valid (NULL));
    cr_expect_eq (IMGP_ATTEMPTS_MAX, 1000);
}

//  Text fields with every character jansson escapes, and UTF-8, written
//  as jansson writes them (s_assert_canonical) and read back the same.
Test (codec, escapes_as_jansson)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_ERROR);
    strcpy (msg->code, "internal");
    strcpy (msg->message, "a \"quoted\" back\\slash / sl\xc3\xa9sh \xe2\x80\xa8 end");
    char *header = s_header_of (msg);
    cr_expect (strstr (header, "\"message\":\"a \\\"quoted\\\" back\\\\slash / sl\xc3\xa9sh"),
               "%s", header);
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_str_eq (back->message,
                      "a \"quoted\" back\\slash / sl\xc3\xa9sh \xe2\x80\xa8 end");
    imgp_msg_destroy (&back);
    msg = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    strcpy (msg->worker, "w\"\\{}[],:");
    msg->slots = 1;
    msg->tag = IMGP_TAG_MAX;
    back = s_round_trip (msg);
    cr_expect_str_eq (back->worker, "w\"\\{}[],:");
    cr_expect_eq (back->tag, IMGP_TAG_MAX);
    imgp_msg_destroy (&back);
}

//  imgp_jw, the one hand-written JSON writer (headers here, the spool's
//  records): a text with every kind of member, the opts and result forms,
//  and strings holding every byte jansson escapes, is its own jansson
//  compact re-dump, and the forms read back with the codec's readers.
static size_t
s_jw_sample (char *buf, size_t size, const char *text)
{
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    opts.fit = IMGP_FIT_COVER;
    opts.enlarge = true;
    imgp_result_t result = { 100, 67, IMGP_FORMAT_WEBP, INT64_MAX, 0, { 0, 0 }, "" };
    imgp_jw_t out;
    imgp_jw_init (&out, buf, size);
    imgp_jw_open (&out, NULL, '{');
    imgp_jw_int (&out, "min", INT64_MIN);
    imgp_jw_int (&out, "zero", 0);
    imgp_jw_string (&out, "text", text);
    imgp_jw_string (&out, "empty", "");
    imgp_jw_bool (&out, "no", false);
    imgp_jw_opts (&out, "opts", &opts);
    imgp_jw_open (&out, "list", '[');
    for (int i = -1; i < 3; i++)
        imgp_jw_int (&out, NULL, i);
    imgp_jw_string (&out, NULL, "x");
    imgp_jw_open (&out, NULL, '{');
    imgp_jw_close (&out, '}');
    imgp_jw_close (&out, ']');
    imgp_jw_key (&out, "after_key");
    imgp_jw_bool (&out, NULL, true);
    imgp_jw_result (&out, "result", &result);
    imgp_jw_close (&out, '}');
    return imgp_jw_len (&out);
}

Test (jw, text_is_jansson_compact_dump)
{
    char text [256], *p = text;
    for (int c = 1; c < 0x20; c++)
        *p++ = (char) c;
    strcpy (p, "\"/\\\x7f caf\xc3\xa9 \xe2\x80\xa8 end");
    char buf [1024];
    size_t len = s_jw_sample (buf, sizeof buf, text);
    cr_assert_gt (len, 0);
    buf [len] = 0;
    json_error_t jerr;
    json_t *root = json_loads (buf, 0, &jerr);
    cr_assert_not_null (root, "not JSON: %s: %s", jerr.text, buf);
    char *again = json_dumps (root, JSON_COMPACT);
    cr_expect_str_eq (buf, again);
    free (again);
    cr_expect_str_eq (json_string_value (json_object_get (root, "text")), text);
    cr_expect_eq (json_integer_value (json_object_get (root, "min")), INT64_MIN);
    imgp_opts_t opts;
    cr_expect_eq (imgp_msg_opts_from_json (json_object_get (root, "opts"), &opts, NULL, 0), 0);
    cr_expect (opts.fit == IMGP_FIT_COVER && opts.enlarge);
    //  The forms are the ones imgp_msg_*_to_json build, byte for byte.
    json_t *form = imgp_msg_opts_to_json (&opts);
    char *want = json_dumps (form, JSON_COMPACT);
    char *got = json_dumps (json_object_get (root, "opts"), JSON_COMPACT);
    cr_expect_str_eq (got, want);
    free (want);
    free (got);
    json_decref (form);
    cr_expect (strstr (buf, ",\"list\":[-1,0,1,2,\"x\",{}],\"after_key\":true,"), "%s", buf);
    cr_expect (strstr (buf, "\"result\":{\"width\":100,\"height\":67,\"format\":\"webp\","
                       "\"bytes\":9223372036854775807,\"ms\":0}}"), "%s", buf);
    json_decref (root);
}

//  Overflow: at every size short of the text, the length is 0 and not a
//  byte is written past the buffer; at the text's size, the whole text.
Test (jw, overflow_is_sticky_and_bounded)
{
    char full [1024];
    size_t len = s_jw_sample (full, sizeof full, "a \"b\" \x01");
    cr_assert_gt (len, 0);
    char buf [1024 + 16];
    for (size_t size = 0; size < len; size++) {
        memset (buf, '#', sizeof buf);
        cr_assert_eq (s_jw_sample (buf, size, "a \"b\" \x01"), 0, "size %zu", size);
        for (size_t i = size; i < sizeof buf; i++)
            cr_assert_eq (buf [i], '#', "size %zu: byte %zu written", size, i);
    }
    memset (buf, '#', sizeof buf);
    cr_assert_eq (s_jw_sample (buf, len, "a \"b\" \x01"), len);
    cr_assert_eq (memcmp (buf, full, len), 0);
    cr_assert_eq (buf [len], '#');
    //  A put after an overflow writes nothing, even when it would fit.
    memset (buf, '#', sizeof buf);
    imgp_jw_t out;
    imgp_jw_init (&out, buf, 4);
    imgp_jw_string (&out, NULL, "toolong");
    imgp_jw_close (&out, '}');
    cr_expect_eq (imgp_jw_len (&out), 0);
    cr_expect_eq (buf [0], '"');
    cr_expect_eq (buf [1], '#');
}

//  A string that is not UTF-8 goes with '?' for its non-ASCII bytes (so
//  jansson reads it back); UTF-8 goes as it is.
Test (jw, text_not_utf8_is_written_readable)
{
    char buf [128];
    imgp_jw_t out;
    imgp_jw_init (&out, buf, sizeof buf - 1);
    imgp_jw_open (&out, NULL, '[');
    imgp_jw_string (&out, NULL, "caf\xc3\xa9 cut: caf\xc3 \"q\"");
    imgp_jw_string (&out, NULL, "caf\xc3\xa9");
    imgp_jw_close (&out, ']');
    size_t len = imgp_jw_len (&out);
    cr_assert_gt (len, 0);
    buf [len] = 0;
    cr_expect_str_eq (buf, "[\"caf?? cut: caf? \\\"q\\\"\",\"caf\xc3\xa9\"]");
    json_t *root = json_loads (buf, 0, NULL);
    cr_expect_not_null (root, "%s", buf);
    json_decref (root);
}

Test (codec, ping_pong_exact_header)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_PING);
    char *header = s_header_of (msg);
    cr_expect_str_eq (header, "{\"v\":1,\"type\":\"ping\"}");
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_PING);
    imgp_msg_t *pong = imgp_msg_reply_new (back, IMGP_MSG_PONG);
    imgp_msg_destroy (&back);
    back = s_round_trip (pong);
    cr_expect_eq (back->type, IMGP_MSG_PONG);
    imgp_msg_destroy (&back);
}

Test (codec, error_with_and_without_id)
{
    imgp_msg_t *request = s_msg_new (IMGP_MSG_STATUS);
    imgp_msg_t *msg = imgp_msg_error_new (request, "not_found", "no job %s", request->id);
    imgp_msg_destroy (&request);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_ERROR);
    cr_expect_str_eq (back->id, S_ID);
    cr_expect_str_eq (back->code, "not_found");
    cr_expect_str_eq (back->message, "no job 0123456789abcdef0123456789abcdef");
    imgp_msg_destroy (&back);

    msg = imgp_msg_error_new (NULL, "queue_full", "the queue holds %d jobs; retry later", 1000);
    char *header = s_header_of (msg);
    cr_expect_null (strstr (header, "\"id\""), "no id: %s", header);
    free (header);
    back = s_round_trip (msg);
    cr_expect_str_eq (back->id, "");
    cr_expect_str_eq (back->code, "queue_full");
    imgp_msg_destroy (&back);
}

Test (codec, error_message_is_truncated_and_cleaned)
{
    char long_text [600];
    memset (long_text, 'x', sizeof long_text - 1);
    long_text [sizeof long_text - 1] = '\0';
    imgp_msg_t *msg = imgp_msg_error_new (NULL, "internal", "%s", long_text);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (strlen (back->message), IMGP_MESSAGE_MAX);
    imgp_msg_destroy (&back);

    //  libvips-style text: newlines, a tab and a multi-byte character cut
    //  in half still arrive, as one clean line.
    back = s_round_trip (s_failed_new ("host-1:4242", 1, "decode_error",
                                       "VipsJpeg: premature end\nof file\t\xc3"));
    cr_expect_str_eq (back->message, "VipsJpeg: premature end of file ?");
    imgp_msg_destroy (&back);

    back = s_round_trip (s_failed_new ("w", 1, "decode_error", "caf\xc3\xa9 ok"));
    cr_expect_str_eq (back->message, "caf\xc3\xa9 ok", "valid UTF-8 kept");
    imgp_msg_destroy (&back);
}

Test (codec, job)
{
    imgp_msg_t *msg = s_job_new (2, 70000, 1, NULL);
    s_set_opts (&msg->opts);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_JOB);
    cr_expect_eq (back->attempts, 2);
    s_expect_opts_set (&back->opts);
    s_expect_data (back, 70000, 1);
    imgp_msg_destroy (&back);
}

Test (codec, heartbeat_and_started)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    strcpy (msg->worker, "resizer-host.example:12345");
    msg->slots = 0;
    char *header = s_header_of (msg);
    cr_expect_str_eq (header,
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":0,\"worker\":\"resizer-host.example:12345\"}");
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_HEARTBEAT);
    cr_expect_str_eq (back->worker, "resizer-host.example:12345");
    cr_expect_eq (back->slots, 0);
    imgp_msg_destroy (&back);

    back = s_round_trip (s_report_new (IMGP_MSG_STARTED, "w1", 1));
    cr_expect_eq (back->type, IMGP_MSG_STARTED);
    cr_expect_str_eq (back->id, S_ID);
    cr_expect_str_eq (back->worker, "w1");
    cr_expect_eq (back->attempts, 1);
    imgp_msg_destroy (&back);
}

Test (codec, done_forwards_frame_and_sets_bytes)
{
    imgp_msg_t *msg = s_report_new (IMGP_MSG_DONE, "w1", 1);
    msg->result_count = 1;
    msg->results [0] = (imgp_result_t) { 100, 1, IMGP_FORMAT_PNG, 0, 42, { 0, 0 }, "" };
    uint8_t *bytes = s_bytes (333, 5);
    zframe_t *frame = zframe_new (bytes, 333);
    free (bytes);
    imgp_msg_set_frame (msg, &frame);
    cr_expect_null (frame, "set_frame takes ownership");
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_DONE);
    cr_expect_eq (back->results [0].width, 100);
    cr_expect_eq (back->results [0].height, 1);
    cr_expect_eq (back->results [0].bytes, 333, "bytes filled in by the codec");
    cr_expect_eq (back->results [0].ms, 42);
    s_expect_data (back, 333, 5);
    imgp_msg_destroy (&back);
}

Test (codec, failed)
{
    imgp_msg_t *msg = s_failed_new ("w1", 3, "too_many_pixels",
                                    "image is 20000x20000 pixels, the limit is 100000000");
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_FAILED);
    cr_expect_eq (back->attempts, 3);
    cr_expect_str_eq (back->code, "too_many_pixels");
    cr_expect_str_eq (back->message, "image is 20000x20000 pixels, the limit is 100000000");
    imgp_msg_destroy (&back);
}

Test (codec, type_names)
{
    cr_expect_str_eq (imgp_msg_type_name (IMGP_MSG_SUBMIT), "SUBMIT");
    cr_expect_str_eq (imgp_msg_type_name (IMGP_MSG_FAILED), "FAILED");
    cr_expect_str_eq (imgp_msg_type_name ((imgp_msg_type_t) 0), "UNKNOWN");
    cr_expect_str_eq (imgp_msg_type_name ((imgp_msg_type_t) 99), "UNKNOWN");
}

Test (codec, reply_copies_id_and_envelope)
{
    imgp_msg_t *request = s_msg_new (IMGP_MSG_SUBMIT);
    request->routing_id = zframe_new ("\x00\x01\x02\x03\x04", 5);
    imgp_msg_t *reply = imgp_msg_reply_new (request, IMGP_MSG_ACCEPTED);
    cr_expect_str_eq (reply->id, S_ID);
    cr_assert_not_null (reply->routing_id);
    cr_expect (zframe_eq (reply->routing_id, request->routing_id));
    cr_expect_neq (reply->routing_id, request->routing_id, "a copy, not shared");
    imgp_msg_destroy (&request);
    imgp_msg_destroy (&reply);
}

Test (codec, set_data_replaces_and_frees)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_SUBMIT);
    imgp_msg_set_data (msg, s_bytes (10, 0), 10, NULL);
    imgp_msg_set_data (msg, s_bytes (20, 0), 20, NULL);     //  first one freed
    cr_expect_eq (imgp_msg_size (msg), 20);
    zframe_t *frame = zframe_new ("abc", 3);
    imgp_msg_set_frame (msg, &frame);
    cr_expect_eq (imgp_msg_size (msg), 3);
    cr_expect_eq (memcmp (imgp_msg_data (msg), "abc", 3), 0);
    imgp_msg_destroy (&msg);
}

Test (codec, encode_refuses_invalid)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_SUBMIT);
    cr_expect_null (imgp_msg_encode (msg), "SUBMIT without data");
    imgp_msg_set_data (msg, s_bytes (10, 0), 10, NULL);
    strcpy (msg->id, "nope");
    cr_expect_null (imgp_msg_encode (msg), "bad id");
    strcpy (msg->id, S_ID);
    msg->opts.width = 5000;
    cr_expect_null (imgp_msg_encode (msg), "width out of range");
    imgp_msg_destroy (&msg);

    msg = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    strcpy (msg->worker, "has space");
    cr_expect_null (imgp_msg_encode (msg), "worker with a space");
    imgp_msg_destroy (&msg);

    msg = imgp_msg_new (IMGP_MSG_ERROR);
    strcpy (msg->code, "Not-Found");
    cr_expect_null (imgp_msg_encode (msg), "code outside [a-z_]");
    imgp_msg_destroy (&msg);

    msg = s_msg_new (IMGP_MSG_STATUS);
    imgp_msg_set_data (msg, s_bytes (10, 0), 10, NULL);
    cr_expect_null (imgp_msg_encode (msg), "STATUS with data");
    imgp_msg_destroy (&msg);

    msg = imgp_msg_new ((imgp_msg_type_t) 42);
    cr_expect_null (imgp_msg_encode (msg), "unknown type");
    imgp_msg_destroy (&msg);
}

Test (codec, unknown_keys_are_ignored)
{
    imgp_msg_t *msg = s_expect_good (
        "{\"v\":1,\"type\":\"status\",\"id\":\"0123456789abcdef0123456789abcdef\","
        "\"trace\":{\"a\":[1,2,3]},\"priority\":7}", NULL);
    if (msg)
        cr_expect_str_eq (msg->id, S_ID);
    imgp_msg_destroy (&msg);
    //  Fields another type would use are ignored too.
    msg = s_expect_good ("{\"v\":1,\"type\":\"ping\",\"id\":\"bogus\",\"slots\":-5}", NULL);
    imgp_msg_destroy (&msg);
}

//  --------------------------------------------------------------------------
//  Malformed input: every case must give NULL and a reason

#define SUBMIT_HEAD "{\"v\":1,\"type\":\"submit\",\"id\":\"0123456789abcdef0123456789abcdef\","
#define GOOD_OPTS "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"inside\",\"format\":\"png\"," \
                  "\"quality\":0,\"enlarge\":false}"

Test (malformed, frames)
{
    char error [256] = "";
    zmsg_t *zmsg = NULL;
    cr_expect_null (imgp_msg_decode (&zmsg, error, sizeof error));
    cr_expect_str_eq (error, "empty message");
    cr_expect_null (imgp_msg_decode (NULL, NULL, 0));

    zmsg = zmsg_new ();
    cr_expect_null (imgp_msg_decode (&zmsg, error, sizeof error), "no frames");
    cr_expect_null (zmsg);

    zmsg = zmsg_new ();
    zmsg_addmem (zmsg, "", 0);
    cr_expect_null (imgp_msg_decode (&zmsg, error, sizeof error), "empty header");

    //  extra frame
    zmsg = zmsg_new ();
    zmsg_addstr (zmsg, SUBMIT_HEAD GOOD_OPTS "}");
    zmsg_addstr (zmsg, "image");
    zmsg_addstr (zmsg, "extra");
    cr_expect_null (imgp_msg_decode (&zmsg, error, sizeof error), "three frames");

    //  a data frame where the type has none
    s_expect_bad ("{\"v\":1,\"type\":\"ping\"}", "data");
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"0123456789abcdef0123456789abcdef\"}", "x");
}

Test (malformed, missing_or_empty_data)
{
    const char *reason = s_expect_bad (SUBMIT_HEAD GOOD_OPTS "}", NULL);
    cr_expect (strstr (reason, "missing its data frame"), "got: %s", reason);
    s_expect_bad (SUBMIT_HEAD GOOD_OPTS "}", "");       //  empty data frame
    imgp_msg_t *msg = s_expect_good (SUBMIT_HEAD GOOD_OPTS "}", "imagebytes");
    imgp_msg_destroy (&msg);

    //  INFO may carry data only when done
    s_expect_bad ("{\"v\":1,\"type\":\"info\",\"id\":\"0123456789abcdef0123456789abcdef\","
                  "\"state\":\"queued\",\"created_at\":1,\"updated_at\":2,\"attempts\":0}", "x");
    //  JOB / DONE require data
    s_expect_bad ("{\"v\":1,\"type\":\"job\",\"id\":\"0123456789abcdef0123456789abcdef\","
                  "\"attempts\":1," GOOD_OPTS "}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"0123456789abcdef0123456789abcdef\","
                  "\"worker\":\"w\",\"attempts\":1,\"result\":{\"width\":1,\"height\":1,"
                  "\"format\":\"png\",\"bytes\":4,\"ms\":0}}", NULL);
    //  DONE whose result.bytes does not match its data
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"0123456789abcdef0123456789abcdef\","
                  "\"worker\":\"w\",\"attempts\":1,\"result\":{\"width\":1,\"height\":1,"
                  "\"format\":\"png\",\"bytes\":5,\"ms\":0}}", "abcd");
    msg = s_expect_good ("{\"v\":1,\"type\":\"done\",\"id\":\"0123456789abcdef0123456789abcdef\","
                         "\"worker\":\"w\",\"attempts\":1,\"result\":{\"width\":1,\"height\":1,"
                         "\"format\":\"png\",\"bytes\":4,\"ms\":0}}", "abcd");
    imgp_msg_destroy (&msg);
}

Test (malformed, not_json)
{
    s_expect_bad ("hello", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"ping\"", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"ping\"} trailing", NULL);
    s_expect_bad ("[1,\"ping\"]", NULL);
    s_expect_bad ("\"ping\"", NULL);
    s_expect_bad ("42", NULL);
    s_expect_bad ("null", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"ping\",\"v\":1}", NULL);     //  duplicate key
    s_expect_bad ("{\"v\":1,\"type\":\"ping\",\"x\":99999999999999999999999}", NULL);
    s_expect_bad ("\xff\xfe{}", NULL);
    //  embedded NUL in the frame
    char error [256] = "";
    imgp_msg_t *msg = s_decode_header ("{\"v\":1,\0\"type\":\"ping\"}", 23, NULL,
                                       error, sizeof error);
    cr_expect_null (msg);
    imgp_msg_destroy (&msg);
}

Test (malformed, version)
{
    cr_expect_str_eq (s_expect_bad ("{\"v\":2,\"type\":\"ping\"}", NULL),
                      "unsupported protocol version 2");
    s_expect_bad ("{\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":0,\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":-1,\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":\"1\",\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":1.0,\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":null,\"type\":\"ping\"}", NULL);
    s_expect_bad ("{\"v\":true,\"type\":\"ping\"}", NULL);
}

Test (malformed, type)
{
    cr_expect_str_eq (s_expect_bad ("{\"v\":1,\"type\":\"reboot\"}", NULL),
                      "unknown message type \"reboot\"");
    s_expect_bad ("{\"v\":1}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"PING\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":1}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":null}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"ping\\u0000\"}", NULL);
    //  control characters in an unknown type never reach the log verbatim
    const char *reason = s_expect_bad ("{\"v\":1,\"type\":\"x\\u001b[31m\\n\"}", NULL);
    for (const char *c = reason; *c; c++)
        cr_expect (*c >= 0x20 && *c < 0x7f, "unprintable byte in reason: %s", reason);
}

Test (malformed, bad_id)
{
    s_expect_bad ("{\"v\":1,\"type\":\"status\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"0123456789abcdef\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"0123456789ABCDEF0123456789ABCDEF\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"../../../../../../../etc/passwd..\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"../etc/passwd\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"0123456789abcdef0123456789abcdef0\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":\"0123456789abcdef\\u00000123456789abcde\"}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":12345}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"status\",\"id\":null}", NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"error\",\"id\":\"bad\",\"code\":\"internal\",\"message\":\"\"}",
                  NULL);
}

Test (malformed, opts)
{
    const char *cases [] = {
        "\"opts\":{\"width\":0,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":4097,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":-1,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":99999,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"crop\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"inside\",\"format\":\"bmp\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":101,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":-5,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":1}",
        "\"opts\":{\"width\":10.5,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":\"10\",\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":4294967306,\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"height\":10,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":{\"width\":10,\"height\":10,\"fit\":0,\"format\":\"png\",\"quality\":0,\"enlarge\":false}",
        "\"opts\":[10,10]",
        "\"opts\":null",
        "\"nopts\":{}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char json [512];
        snprintf (json, sizeof json, "%s%s}", SUBMIT_HEAD, cases [i]);
        s_expect_bad (json, "imagebytes");
    }
}

Test (malformed, wrong_types_and_ranges)
{
    const char *info = "{\"v\":1,\"type\":\"info\",\"id\":\"0123456789abcdef0123456789abcdef\",";
    const char *tails [] = {
        "\"state\":\"running\",\"created_at\":1,\"updated_at\":2,\"attempts\":0}",
        "\"state\":2,\"created_at\":1,\"updated_at\":2,\"attempts\":0}",
        "\"state\":\"queued\",\"created_at\":-1,\"updated_at\":2,\"attempts\":0}",
        "\"state\":\"queued\",\"created_at\":\"1\",\"updated_at\":2,\"attempts\":0}",
        "\"state\":\"queued\",\"created_at\":1,\"attempts\":0}",
        "\"state\":\"queued\",\"created_at\":1,\"updated_at\":2,\"attempts\":-1}",
        "\"state\":\"queued\",\"created_at\":1,\"updated_at\":2,\"attempts\":1001}",
        "\"state\":\"queued\",\"created_at\":1,\"updated_at\":2,\"attempts\":true}",
        //  failed without code / with a bad code
        "\"state\":\"failed\",\"created_at\":1,\"updated_at\":2,\"attempts\":1}",
        "\"state\":\"failed\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"code\":\"Bad\",\"message\":\"\"}",
        //  done without result / with bad results
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":0,\"height\":1,\"format\":\"png\",\"bytes\":1,\"ms\":0}}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":65536,\"height\":1,\"format\":\"png\",\"bytes\":1,\"ms\":0}}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":1,\"height\":1,\"format\":\"gif\",\"bytes\":1,\"ms\":0}}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":1,\"height\":1,\"format\":\"png\",\"bytes\":0,\"ms\":0}}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":1,\"height\":1,\"format\":\"png\",\"bytes\":1,\"ms\":-1}}",
        "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":\"done\"}",
    };
    for (size_t i = 0; i < sizeof tails / sizeof tails [0]; i++) {
        char json [512];
        snprintf (json, sizeof json, "%s%s", info, tails [i]);
        s_expect_bad (json, NULL);
    }
    //  and the good ones next to them
    char json [512];
    snprintf (json, sizeof json, "%s%s", info,
              "\"state\":\"failed\",\"created_at\":0,\"updated_at\":0,\"attempts\":1000,"
              "\"code\":\"decode_error\",\"message\":\"\"}");
    imgp_msg_t *msg = s_expect_good (json, NULL);
    imgp_msg_destroy (&msg);
}

Test (malformed, worker_code_message)
{
    const char *heads [] = {
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":\"\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":\"bad\\u0007name\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":\"bad\\nname\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":\"two words\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":\"caf\\u00e9\"}",
        ("{\"v\":1,\"type\":\"heartbeat\",\"slots\":1,\"worker\":"
            "\"a234567890123456789012345678901234567890123456789012345678901234X\"}"),
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":-1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1001,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"heartbeat\",\"slots\":1}",
        "{\"v\":1,\"type\":\"started\",\"id\":\"0123456789abcdef0123456789abcdef\",\"worker\":\"w\",\"attempts\":0}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"\",\"message\":\"m\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"queue-full\",\"message\":\"m\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"abcdefghijklmnopqrstuvwxyz_abcdefg\",\"message\":\"m\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"internal\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"internal\",\"message\":\"line\\nbreak\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"internal\",\"message\":\"nul\\u0000inside\"}",
        "{\"v\":1,\"type\":\"error\",\"code\":\"internal\",\"message\":7}",
    };
    S_EXPECT_BAD_EACH (heads);

    //  a message of 257 bytes
    char json [600];
    char text [258];
    memset (text, 'm', 257);
    text [257] = '\0';
    snprintf (json, sizeof json, "{\"v\":1,\"type\":\"error\",\"code\":\"internal\",\"message\":\"%s\"}", text);
    s_expect_bad (json, NULL);
    text [256] = '\0';
    snprintf (json, sizeof json, "{\"v\":1,\"type\":\"error\",\"code\":\"internal\",\"message\":\"%s\"}", text);
    imgp_msg_t *msg = s_expect_good (json, NULL);
    imgp_msg_destroy (&msg);
    msg = s_expect_good ("{\"v\":1,\"type\":\"heartbeat\",\"slots\":1000,"
        "\"worker\":\"a234567890123456789012345678901234567890123456789012345678901234\"}", NULL);
    imgp_msg_destroy (&msg);
}

Test (malformed, huge_header)
{
    //  A valid header padded past IMGP_HEADER_MAX with an unknown key.
    size_t size = IMGP_HEADER_MAX + 100;
    char *json = malloc (size + 1);
    int n = snprintf (json, size, "{\"v\":1,\"type\":\"ping\",\"pad\":\"");
    memset (json + n, 'x', size - n - 2);
    memcpy (json + size - 2, "\"}", 3);
    const char *reason = s_expect_bad (json, NULL);
    cr_expect (strstr (reason, "header frame"), "got: %s", reason);

    //  exactly IMGP_HEADER_MAX bytes is still fine
    size = IMGP_HEADER_MAX;
    memset (json + n, 'x', size - n - 2);
    memcpy (json + size - 2, "\"}", 3);
    cr_assert_eq (strlen (json), IMGP_HEADER_MAX);
    imgp_msg_t *msg = s_expect_good (json, NULL);
    imgp_msg_destroy (&msg);

    //  deep nesting within the limit must not crash the parser
    memset (json, '[', IMGP_HEADER_MAX);
    char error [256] = "";
    msg = s_decode_header (json, IMGP_HEADER_MAX, NULL, error, sizeof error);
    cr_expect_null (msg);
    free (json);
}

Test (malformed, random_mutations_never_crash)
{
    //  Flip, drop and insert bytes of valid headers; the decoder must
    //  return a message or NULL, and a returned message must be valid.
    const char *seeds [] = {
        SUBMIT_HEAD GOOD_OPTS "}",
        ("{\"v\":1,\"type\":\"info\",\"id\":\"0123456789abcdef0123456789abcdef\",\"state\":\"done\","
            "\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"result\":{\"width\":1,"
            "\"height\":1,\"format\":\"png\",\"bytes\":4,\"ms\":0}}"),
        ("{\"v\":1,\"type\":\"failed\",\"id\":\"0123456789abcdef0123456789abcdef\","
            "\"worker\":\"w\",\"attempts\":1,\"code\":\"x\",\"message\":\"m\"}"),
    };
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        const char *base = seeds [round % 3];
        size_t len = strlen (base);
        char json [1024];
        memcpy (json, base, len);
        int edits = 1 + (int) ((seed = seed * 1103515245 + 12345) >> 16) % 4;
        for (int e = 0; e < edits && len > 1; e++) {
            seed = seed * 1103515245 + 12345;
            size_t at = (seed >> 8) % len;
            switch ((seed >> 4) % 3) {
                case 0: json [at] = (char) (seed >> 16); break;
                case 1: memmove (json + at, json + at + 1, len - at - 1); len--; break;
                default:
                    if (len + 1 < sizeof json) {
                        memmove (json + at + 1, json + at, len - at);
                        json [at] = (char) (seed >> 20);
                        len++;
                    }
            }
        }
        char error [256];
        imgp_msg_t *msg = s_decode_header (json, len, (round & 1) ? "abcd" : NULL,
                                           error, sizeof error);
        if (msg) {
            zmsg_t *again = imgp_msg_encode (msg);
            cr_assert_not_null (again, "decoded message does not re-encode");
            zmsg_destroy (&again);
        }
        imgp_msg_destroy (&msg);
    }
}

//  --------------------------------------------------------------------------
//  Sockets

static int s_freed;                 //  calls of s_count_free

static void
s_count_free (void *buf, void *hint)
{
    (void) hint;
    s_freed++;
    free (buf);
}

//  A REQ frontend submits to a ROUTER intake; the image goes zero-copy.
Test (sockets, req_router_submit_accepted_inproc)
{
    zsock_t *router = zsock_new_router ("@inproc://intake");
    zsock_t *req = zsock_new_req (">inproc://intake");
    cr_assert (router && req);
    zsock_set_rcvtimeo (router, 2000);
    zsock_set_rcvtimeo (req, 2000);

    imgp_msg_t *submit = imgp_msg_new (IMGP_MSG_SUBMIT);
    cr_assert_eq (imgp_id_new (submit->id), 0);
    char id [IMGP_ID_LEN + 1];
    strcpy (id, submit->id);
    s_set_opts (&submit->opts);
    uint8_t *buf = s_bytes (100000, 2);
    s_freed = 0;
    imgp_msg_set_data (submit, buf, 100000, s_count_free);
    cr_assert_eq (imgp_msg_send (&submit, req), 0);
    cr_expect_null (submit);

    imgp_msg_t *got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_SUBMIT);
    cr_expect_str_eq (got->id, id);
    cr_expect_not_null (got->routing_id);
    s_expect_opts_set (&got->opts);
    s_expect_data (got, 100000, 2);
    //  inproc passes the very buffer: proof that nothing copied it
    cr_expect_eq ((const void *) imgp_msg_data (got), (const void *) buf, "data was copied");
    cr_expect_eq (s_freed, 0, "freed while still in use");

    imgp_msg_t *ack = imgp_msg_reply_new (got, IMGP_MSG_ACCEPTED);
    ack->state = IMGP_STATE_QUEUED;
    imgp_msg_destroy (&got);
    cr_expect_eq (s_freed, 1, "free_fn called once the receiver let go");
    cr_assert_eq (imgp_msg_send (&ack, router), 0);

    imgp_msg_t *reply = imgp_msg_recv (req);
    cr_assert_not_null (reply);
    cr_expect_eq (reply->type, IMGP_MSG_ACCEPTED);
    cr_expect_str_eq (reply->id, id);
    cr_expect_eq (reply->state, IMGP_STATE_QUEUED);
    cr_expect_null (reply->routing_id);
    imgp_msg_destroy (&reply);

    //  and an ERROR reply on the next round
    imgp_msg_t *status = imgp_msg_new (IMGP_MSG_STATUS);
    strcpy (status->id, id);
    cr_assert_eq (imgp_msg_send (&status, req), 0);
    got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    imgp_msg_t *error = imgp_msg_error_new (got, "not_found", "no job with id %s", got->id);
    imgp_msg_destroy (&got);
    cr_assert_eq (imgp_msg_send (&error, router), 0);
    reply = imgp_msg_recv (req);
    cr_assert_not_null (reply);
    cr_expect_eq (reply->type, IMGP_MSG_ERROR);
    cr_expect_str_eq (reply->code, "not_found");
    cr_expect_str_eq (reply->id, id);
    imgp_msg_destroy (&reply);

    zsock_destroy (&req);
    zsock_destroy (&router);
}

//  --------------------------------------------------------------------------
//  READY, CLUSTER and INFO's worker (issue 9)

Test (codec, ready_exact_header_and_round_trip)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_READY);
    strcpy (msg->worker, "r1-host:77");
    msg->slots = 1;
    msg->credit = 2;
    char *header = s_header_of (msg);
    cr_expect_str_eq (header,
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":2,\"worker\":\"r1-host:77\"}");
    free (header);
    strcpy (msg->host, "node-3.example");
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->type, IMGP_MSG_READY);
    cr_expect_str_eq (back->worker, "r1-host:77");
    cr_expect_str_eq (back->host, "node-3.example");
    cr_expect_eq (back->slots, 1);
    cr_expect_eq (back->credit, 2);
    cr_expect_str_eq (imgp_msg_type_name (back->type), "READY");
    imgp_msg_destroy (&back);

    //  the edges of every range
    msg = s_expect_good ("{\"v\":1,\"type\":\"ready\",\"slots\":1000,\"credit\":0,\"worker\":\"w\","
        "\"host\":\"a234567890123456789012345678901234567890123456789012345678901234\"}", NULL);
    cr_expect_eq (msg->slots, 1000);
    cr_expect_eq (msg->credit, 0);
    imgp_msg_destroy (&msg);
    msg = s_expect_good ("{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1000,\"worker\":\"w\"}",
                         NULL);
    cr_expect_str_eq (msg->host, "");
    imgp_msg_destroy (&msg);
}

Test (malformed, ready)
{
    const char *bad [] = {
        //  out of range
        "{\"v\":1,\"type\":\"ready\",\"slots\":0,\"credit\":1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1001,\"credit\":1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":-1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1001,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":4294967297,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":\"\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":\"a b\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":\"caf\\u00e9\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":\"t\\tab\"}",
        ("{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":"
            "\"a234567890123456789012345678901234567890123456789012345678901234X\"}"),
        //  missing
        "{\"v\":1,\"type\":\"ready\",\"credit\":1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1}",
        //  wrong types
        "{\"v\":1,\"type\":\"ready\",\"slots\":\"1\",\"credit\":1,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1.5,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":true,\"worker\":\"w\"}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":7}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":null}",
        "{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\",\"host\":[\"h\"]}",
    };
    S_EXPECT_BAD_EACH (bad);
    //  READY carries no data
    s_expect_bad ("{\"v\":1,\"type\":\"ready\",\"slots\":1,\"credit\":1,\"worker\":\"w\"}", "x");
    cr_expect (imgp_msg_host_valid ("h-1.example"));
    cr_expect_not (imgp_msg_host_valid (""));
    cr_expect_not (imgp_msg_host_valid ("a b"));
    cr_expect_not (imgp_msg_host_valid (NULL));
}

Test (codec, encode_refuses_invalid_ready)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_READY);
    strcpy (msg->worker, "w");
    msg->slots = 1;
    msg->credit = 1001;
    cr_expect_null (imgp_msg_encode (msg));
    msg->credit = 1;
    strcpy (msg->host, "with space");
    cr_expect_null (imgp_msg_encode (msg));
    msg->host [0] = '\0';
    msg->slots = 0;
    cr_expect_null (imgp_msg_encode (msg));
    imgp_msg_destroy (&msg);
}

#define S_CLUSTER_JSON "{\"resizers\":[{\"name\":\"r1\",\"slots\":1,\"jobs\":[]}]}"

Test (codec, cluster_request_and_reply)
{
    imgp_msg_t *request = imgp_msg_new (IMGP_MSG_CLUSTER);
    request->tag = 5;
    char *header = s_header_of (request);
    cr_expect_str_eq (header, "{\"v\":1,\"type\":\"cluster\",\"tag\":5}");
    free (header);
    request = s_round_trip (request);
    cr_expect_eq (request->type, IMGP_MSG_CLUSTER);
    cr_expect_not (request->has_stats);
    cr_expect_eq (imgp_msg_size (request), 0);

    imgp_msg_t *reply = imgp_msg_reply_new (request, IMGP_MSG_CLUSTER);
    imgp_msg_destroy (&request);
    reply->has_stats = true;
    reply->stats.resizers = 1;
    reply->stats.queued = 3;
    imgp_msg_set_data (reply, strdup (S_CLUSTER_JSON), strlen (S_CLUSTER_JSON), NULL);
    imgp_msg_t *back = s_round_trip (reply);
    cr_expect_eq (back->type, IMGP_MSG_CLUSTER);
    cr_expect_eq (back->tag, 5);
    cr_expect (back->has_stats);
    cr_expect_eq (back->stats.resizers, 1);
    cr_expect_eq (back->stats.queued, 3);
    cr_assert_eq (imgp_msg_size (back), strlen (S_CLUSTER_JSON));
    cr_expect_eq (memcmp (imgp_msg_data (back), S_CLUSTER_JSON, strlen (S_CLUSTER_JSON)), 0);
    imgp_msg_destroy (&back);
}

//  A CLUSTER reply header with the stats of an idle broker.
static char *
s_cluster_reply_header (void)
{
    imgp_msg_t *msg = imgp_msg_new (IMGP_MSG_CLUSTER);
    msg->has_stats = true;
    imgp_msg_set_data (msg, strdup ("{}"), 2, NULL);
    char *header = s_header_of (msg);
    imgp_msg_destroy (&msg);
    return header;
}

Test (malformed, cluster)
{
    char *reply = s_cluster_reply_header ();
    //  a reply without its data, a request with data, data that is not a JSON object
    s_expect_bad (reply, NULL);
    s_expect_bad ("{\"v\":1,\"type\":\"cluster\"}", "{}");
    s_expect_bad (reply, "[1,2]");
    s_expect_bad (reply, "{\"a\":");
    s_expect_bad (reply, "{\"a\":1,\"a\":2}");
    s_expect_bad ("{\"v\":1,\"type\":\"cluster\",\"stats\":{}}", "{}");
    s_expect_bad ("{\"v\":1,\"type\":\"cluster\",\"stats\":7}", "{}");
    s_expect_bad ("{\"v\":1,\"type\":\"cluster\",\"tag\":-1}", NULL);
    imgp_msg_t *msg = s_expect_good (reply, "{\"resizers\":[]}");
    imgp_msg_destroy (&msg);

    //  at most IMGP_CLUSTER_MAX bytes of data, both ways
    size_t big = IMGP_CLUSTER_MAX + 1;
    char *json = malloc (big + 1);
    cr_assert_not_null (json);
    memset (json, ' ', big);
    json [0] = '{';
    json [big - 1] = '}';
    json [big] = '\0';
    s_expect_bad (reply, json);
    json [big - 2] = '}';          //  IMGP_CLUSTER_MAX bytes: "{ ... }" plus one space cut
    json [big - 1] = '\0';
    msg = s_expect_good (reply, json);
    imgp_msg_destroy (&msg);
    msg = imgp_msg_new (IMGP_MSG_CLUSTER);
    msg->has_stats = true;
    json [big - 1] = ' ';
    imgp_msg_set_data (msg, json, big, NULL);
    cr_expect_null (imgp_msg_encode (msg), "encoded a CLUSTER over the limit");
    imgp_msg_destroy (&msg);
    free (reply);
}

Test (codec, info_worker_is_optional)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_PROCESSING;
    msg->attempts = 1;
    char *header = s_header_of (msg);
    cr_expect_null (strstr (header, "worker"), "no worker, no field: %s", header);
    free (header);
    strcpy (msg->worker, "r2-b:9");
    header = s_header_of (msg);
    cr_expect_not_null (strstr (header, "\"worker\":\"r2-b:9\""), "%s", header);
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_str_eq (back->worker, "r2-b:9");
    imgp_msg_destroy (&back);

    const char *head = "{\"v\":1,\"type\":\"info\",\"id\":\"" S_ID_TEXT "\",\"state\":\"queued\","
                       "\"created_at\":1,\"updated_at\":2,\"attempts\":0,";
    const char *bad [] = { "\"worker\":\"\"}", "\"worker\":\"a b\"}", "\"worker\":3}",
                           "\"worker\":null}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char json [512];
        snprintf (json, sizeof json, "%s%s", head, bad [i]);
        s_expect_bad (json, NULL);
    }
}

//  A ROUTER bound to a free loopback port (in *port_p), receiving with a
//  timeout so a lost message fails the test instead of hanging it.
static zsock_t *
s_router_on_loopback (int *port_p)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    *port_p = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (*port_p, 0);
    zsock_set_rcvtimeo (router, 2000);
    return router;
}

//  With keys, a message received on a ROUTER tells the key that sent it:
//  the one zauth let in (libzmq's User-Id).
Test (sockets, router_tells_the_key_that_sent)
{
    char dir [] = "/tmp/imgp-test-proto-XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char clients [64], server [64], client [80], server_secret [96], client_secret [96];
    snprintf (clients, sizeof clients, "%s/clients", dir);
    snprintf (server, sizeof server, "%s/broker", dir);
    snprintf (client, sizeof client, "%s/w1", clients);
    snprintf (server_secret, sizeof server_secret, "%s_secret", server);
    snprintf (client_secret, sizeof client_secret, "%s_secret", client);
    cr_assert_eq (mkdir (clients, 0700), 0);
    char error [256] = "";
    cr_assert_eq (imgp_curve_keygen (server, error, sizeof error), 0, "%s", error);
    cr_assert_eq (imgp_curve_keygen (client, error, sizeof error), 0, "%s", error);
    imgp_curve_t *server_curve = imgp_curve_server_new (server_secret, clients);
    imgp_curve_t *client_curve = imgp_curve_client_new (client_secret, server);
    cr_assert (server_curve && client_curve);

    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_eq (imgp_curve_apply (server_curve, router), 0);
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (port, 0);
    zsock_set_rcvtimeo (router, 2000);
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    cr_assert_eq (imgp_curve_apply (client_curve, dealer), 0);
    zsock_set_identity (dealer, "w1");
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    imgp_msg_t *ready = imgp_msg_new (IMGP_MSG_READY);
    strcpy (ready->worker, "w1");
    ready->slots = 1;
    cr_assert_eq (imgp_msg_send (&ready, dealer), 0);
    imgp_msg_t *got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    zcert_t *cert = zcert_load (client);
    cr_assert_not_null (cert);
    char key [IMGP_KEY_MAX + 1], fingerprint [9];
    cr_expect_str_eq (imgp_msg_peer_key (got, key, sizeof key), zcert_public_txt (cert));
    imgp_msg_peer_key (got, fingerprint, sizeof fingerprint);
    cr_expect_eq (strncmp (fingerprint, zcert_public_txt (cert), 8), 0);
    cr_expect_eq (strlen (fingerprint), 8, "a short buffer gets the key's start");
    zcert_destroy (&cert);
    imgp_msg_destroy (&got);
    zsock_destroy (&dealer);
    zsock_destroy (&router);
    imgp_curve_destroy (&client_curve);
    imgp_curve_destroy (&server_curve);
    const char *files [] = { server, server_secret, client, client_secret };
    for (size_t i = 0; i < sizeof files / sizeof files [0]; i++)
        unlink (files [i]);
    rmdir (clients);
    rmdir (dir);
}

//  DEALER -> ROUTER over tcp, as a resizer talks to the broker: the routing
//  id is the worker name and the READY tells the peer's address.
Test (sockets, dealer_router_ready_names_and_address)
{
    int port;
    zsock_t *router = s_router_on_loopback (&port);
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    zsock_set_identity (dealer, "r1-host:42");
    zsock_set_rcvtimeo (dealer, 2000);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);

    imgp_msg_t *ready = imgp_msg_new (IMGP_MSG_READY);
    strcpy (ready->worker, "r1-host:42");
    ready->slots = 1;
    ready->credit = 2;
    cr_assert_eq (imgp_msg_send (&ready, dealer), 0);
    imgp_msg_t *got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_READY);
    cr_expect_str_eq (imgp_msg_routing_name (got), "r1-host:42");
    char address [IMGP_ADDRESS_MAX + 1];
    cr_expect_str_eq (imgp_msg_peer_address (got, address, sizeof address), "127.0.0.1");
    char key [IMGP_KEY_MAX + 1];
    cr_expect_str_eq (imgp_msg_peer_key (got, key, sizeof key), "", "no keys, no key");

    //  a JOB back to that peer by its name
    imgp_msg_t *job = s_job_new (1, 10, 3, NULL);
    job->routing_id = zframe_dup (got->routing_id);
    imgp_msg_destroy (&got);
    cr_assert_eq (imgp_msg_send (&job, router), 0);
    got = imgp_msg_recv (dealer);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_JOB);
    cr_expect_str_eq (imgp_msg_routing_name (got), "", "a DEALER has no routing id");
    char none [8];
    cr_expect_str_eq (imgp_msg_peer_address (got, none, sizeof none), "");
    imgp_msg_destroy (&got);
    zsock_destroy (&dealer);

    //  a peer without a name: its generated routing id is not a name
    dealer = zsock_new (ZMQ_DEALER);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    imgp_msg_t *beat = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    strcpy (beat->worker, "w");
    cr_assert_eq (imgp_msg_send (&beat, dealer), 0);
    got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    cr_expect_str_eq (imgp_msg_routing_name (got), "");
    imgp_msg_destroy (&got);
    zsock_destroy (&dealer);
    zsock_destroy (&router);
}

//  PUSH/PULL over tcp for the job and result channels, with a raw libzmq
//  socket on one side and a forwarded frame on the other.
Test (sockets, push_pull_tcp_job_and_done)
{
    zsock_t *vent = zsock_new (ZMQ_PUSH);
    cr_assert_not_null (vent);
    int port = zsock_bind (vent, "tcp://127.0.0.1:*");
    cr_assert_gt (port, 0);
    zsock_set_rcvtimeo (vent, 2000);

    //  The resizer side as a raw libzmq socket (void *).
    void *pull = zmq_socket (zsys_init (), ZMQ_PULL);
    cr_assert_not_null (pull);
    int timeout = 2000;
    zmq_setsockopt (pull, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    cr_assert_eq (zmq_connect (pull, endpoint), 0);

    imgp_msg_t *job = s_job_new (1, 300000, 4, NULL);
    cr_assert_eq (imgp_msg_send (&job, vent), 0);

    imgp_msg_t *got = imgp_msg_recv (pull);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_JOB);
    cr_expect_eq (got->attempts, 1);
    cr_expect_eq (got->opts.width, 100);
    s_expect_data (got, 300000, 4);

    //  results back: PUSH (raw) -> PULL (zsock); DONE forwards a frame
    zsock_t *sink = zsock_new (ZMQ_PULL);
    int sink_port = zsock_bind (sink, "tcp://127.0.0.1:*");
    zsock_set_rcvtimeo (sink, 2000);
    void *push = zmq_socket (zsys_init (), ZMQ_PUSH);
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", sink_port);
    cr_assert_eq (zmq_connect (push, endpoint), 0);

    imgp_msg_t *done = imgp_msg_new (IMGP_MSG_DONE);
    strcpy (done->id, got->id);
    strcpy (done->worker, "test-worker");
    done->attempts = got->attempts;
    done->result_count = 1;
    done->results [0] = (imgp_result_t) { 100, 75, IMGP_FORMAT_PNG, 0, 12, { 0, 0 }, "" };
    zframe_t *frame = zframe_new (imgp_msg_data (got), 1000);
    imgp_msg_set_frame (done, &frame);
    imgp_msg_destroy (&got);
    cr_assert_eq (imgp_msg_send (&done, push), 0);

    got = imgp_msg_recv (sink);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_DONE);
    cr_expect_str_eq (got->worker, "test-worker");
    cr_expect_eq (got->results [0].bytes, 1000);
    s_expect_data (got, 1000, 4);
    imgp_msg_destroy (&got);

    int linger = 0;
    zmq_setsockopt (push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (pull, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (push);
    zmq_close (pull);
    zsock_destroy (&sink);
    zsock_destroy (&vent);
}

//  `client` (REQ, or a DEALER) sends PING; `router` answers PONG.
static void
s_ping_pong (zsock_t *client, zsock_t *router)
{
    imgp_msg_t *ping = imgp_msg_new (IMGP_MSG_PING);
    cr_assert_eq (imgp_msg_send (&ping, client), 0);
    imgp_msg_t *got = imgp_msg_recv (router);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_PING);
    imgp_msg_t *pong = imgp_msg_reply_new (got, IMGP_MSG_PONG);
    imgp_msg_destroy (&got);
    cr_assert_eq (imgp_msg_send (&pong, router), 0);
    got = imgp_msg_recv (client);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_PONG);
    imgp_msg_destroy (&got);
}

Test (sockets, req_router_tcp_ping_pong)
{
    int port;
    zsock_t *router = s_router_on_loopback (&port);
    zsock_t *req = zsock_new (ZMQ_REQ);
    zsock_set_rcvtimeo (req, 2000);
    cr_assert_eq (zsock_connect (req, "tcp://127.0.0.1:%d", port), 0);

    s_ping_pong (req, router);
    zsock_destroy (&req);
    zsock_destroy (&router);
}

Test (sockets, malformed_is_dropped_and_next_message_works)
{
    zsock_t *router = zsock_new_router ("@inproc://drop");
    zsock_t *dealer = zsock_new_dealer (">inproc://drop");
    zsock_t *pull = zsock_new_pull ("@inproc://drop-pull");
    zsock_t *push = zsock_new_push (">inproc://drop-pull");
    zsock_set_rcvtimeo (router, 2000);
    zsock_set_rcvtimeo (pull, 2000);

    //  DEALER without the empty delimiter: bad envelope
    zstr_send (dealer, "{\"v\":1,\"type\":\"ping\"}");
    errno = 0;
    cr_expect_null (imgp_msg_recv (router));
    cr_expect_eq (errno, EPROTO);
    //  a v2 message with a proper envelope
    zstr_sendm (dealer, "");
    zstr_send (dealer, "{\"v\":2,\"type\":\"ping\"}");
    cr_expect_null (imgp_msg_recv (router));
    //  DEALER through imgp_msg_send adds the delimiter, as REQ would
    zsock_set_rcvtimeo (dealer, 2000);
    s_ping_pong (dealer, router);

    //  PULL: garbage, an extra frame, then a good heartbeat
    zstr_send (push, "not json");
    zstr_sendx (push, "{\"v\":1,\"type\":\"heartbeat\",\"worker\":\"w\",\"slots\":1}", "extra", NULL);
    imgp_msg_t *beat = imgp_msg_new (IMGP_MSG_HEARTBEAT);
    strcpy (beat->worker, "w");
    beat->slots = 1;
    cr_assert_eq (imgp_msg_send (&beat, push), 0);
    cr_expect_null (imgp_msg_recv (pull));
    cr_expect_null (imgp_msg_recv (pull));
    imgp_msg_t *got = imgp_msg_recv (pull);
    cr_assert_not_null (got);
    cr_expect_eq (got->type, IMGP_MSG_HEARTBEAT);
    cr_expect_eq (got->slots, 1);
    imgp_msg_destroy (&got);

    zsock_destroy (&push);
    zsock_destroy (&pull);
    zsock_destroy (&dealer);
    zsock_destroy (&router);
}

Test (sockets, send_failures_free_everything)
{
    zsock_t *router = zsock_new_router ("@inproc://nowhere");
    //  A reply on a ROUTER without an envelope cannot be routed.
    imgp_msg_t *pong = imgp_msg_new (IMGP_MSG_PONG);
    cr_expect_eq (imgp_msg_send (&pong, router), -1);
    cr_expect_null (pong);
    //  An invalid message is refused before anything is sent.
    zsock_t *push = zsock_new_push ("@inproc://invalid");
    s_freed = 0;
    imgp_msg_t *job = s_job_new (0, 10, 0, s_count_free);
    cr_expect_eq (imgp_msg_send (&job, push), -1);
    cr_expect_null (job);
    cr_expect_eq (s_freed, 1, "data freed on a refused send");
    //  A PUSH with no peer and a send timeout: the data is freed.
    zsock_set_sndtimeo (push, 50);
    job = s_job_new (1, 10, 0, s_count_free);
    cr_expect_eq (imgp_msg_send (&job, push), -1);
    cr_expect_eq (errno, EAGAIN);
    cr_expect_eq (s_freed, 2, "data freed on a failed send");
    //  Not a socket at all, and NULLs.
    imgp_msg_t *ping = imgp_msg_new (IMGP_MSG_PING);
    cr_expect_eq (imgp_msg_send (&ping, NULL), -1);
    cr_expect_null (ping);
    cr_expect_eq (imgp_msg_send (NULL, push), -1);
    cr_expect_null (imgp_msg_recv (NULL));
    zsock_destroy (&push);
    zsock_destroy (&router);
}

Test (sockets, recv_timeout_returns_null)
{
    zsock_t *pull = zsock_new_pull ("@inproc://quiet");
    zsock_set_rcvtimeo (pull, 50);
    errno = 0;
    cr_expect_null (imgp_msg_recv (pull));
    cr_expect_eq (errno, EAGAIN);
    zsock_destroy (&pull);
}

//  --------------------------------------------------------------------------
//  imgp_conf: typed rows

//  A config struct with a field of every row type.
typedef struct {
    const char *endpoint;       //  a shared row
    const char *name;           //  a text row
    bool fast;                  //  a flag
    int count;                  //  int
    int64_t delay_ms;           //  int64_t
    size_t upload;              //  size_t, a shared row
    int untouched;              //  no row names it
} s_conf_test_t;

static const imgp_conf_spec_t s_conf_specs [] = {
    IMGP_CONF_INTAKE (s_conf_test_t, endpoint),
    IMGP_CONF_STR (s_conf_test_t, name, "name", "anna", "a name"),
    IMGP_CONF_FLAG (s_conf_test_t, fast, "fast", "go fast"),
    IMGP_CONF_NUM (s_conf_test_t, count, "count", 7, 1, 10, "how many"),
    IMGP_CONF_NUM (s_conf_test_t, delay_ms, "delay-ms", 5000000000, 0, 10000000000LL, "how long"),
    IMGP_CONF_MAX_UPLOAD_BYTES (s_conf_test_t, upload),
    IMGP_CONF_END
};

//  Parse `args` (NULL-terminated, program name first) and load the rows
//  into `config`; imgp_conf_load's rc.
static int
s_conf_load (char **args, s_conf_test_t *config)
{
    int argc = 0;
    while (args [argc])
        argc++;
    imgp_conf_t *conf = imgp_conf_new ("test", "a test", s_conf_specs);
    cr_assert_not_null (conf);
    cr_assert_eq (imgp_conf_parse (conf, argc, args), 0);
    int rc = imgp_conf_load (conf, config);
    imgp_conf_destroy (&conf);
    return rc;
}

//  What the test wrote on `stream` so far (redirected to `redirected`),
//  in `text`.
static void
s_redirected (FILE *stream, FILE *redirected, char *text, size_t size)
{
    fflush (stream);
    size_t n = fread (text, 1, size - 1, redirected);
    text [n] = 0;
}

//  What the test wrote on stderr so far (redirected), in `text`.
static void
s_stderr (char *text, size_t size)
{
    s_redirected (stderr, cr_get_redirected_stderr (), text, size);
}

Test (conf, defaults_fill_every_row_type)
{
    s_conf_test_t config = { .untouched = 42 };
    cr_assert_eq (imgp_conf_defaults (s_conf_specs, &config), 0);
    cr_expect_str_eq (config.endpoint, "tcp://127.0.0.1:5571");
    cr_expect_str_eq (config.name, "anna");
    cr_expect_not (config.fast);
    cr_expect_eq (config.count, 7);
    cr_expect_eq (config.delay_ms, 5000000000LL);
    cr_expect_eq (config.upload, (size_t) 32 * 1024 * 1024);
    cr_expect_eq (config.untouched, 42, "a field no row names is left alone");
}

Test (conf, flag_beats_environment_beats_default)
{
    setenv ("IMGP_COUNT", "3", 1);
    setenv ("IMGP_NAME", "from-env", 1);
    setenv ("IMGP_FAST", "yes", 1);
    char *args [] = { "test", "--count", "9", "--delay-ms=0", NULL };
    s_conf_test_t config = { 0 };
    cr_assert_eq (s_conf_load (args, &config), 0);
    cr_expect_eq (config.count, 9, "the flag wins over IMGP_COUNT");
    cr_expect_str_eq (config.name, "from-env");
    cr_expect (config.fast, "IMGP_FAST=yes sets a flag");
    cr_expect_eq (config.delay_ms, 0);
    cr_expect_eq (config.upload, (size_t) 33554432, "no flag, no env: the default");
}

Test (conf, a_value_out_of_range_names_the_option, .init = cr_redirect_stderr)
{
    imgp_log_init ("test_proto", false);
    char *args [] = { "test", "--count", "11", NULL };
    s_conf_test_t config = { 0 };
    cr_expect_eq (s_conf_load (args, &config), -1);
    char text [512];
    s_stderr (text, sizeof text);
    cr_expect (strstr (text, "--count must be a whole number from 1 to 10, not '11'"), "%s", text);
    cr_expect (strstr (text, "command line"), "%s", text);
}

Test (conf, a_bad_environment_value_names_its_variable, .init = cr_redirect_stderr)
{
    imgp_log_init ("test_proto", false);
    setenv ("IMGP_MAX_UPLOAD_BYTES", "2GB", 1);
    setenv ("IMGP_DELAY_MS", "-1", 1);
    char *args [] = { "test", NULL };
    s_conf_test_t config = { 0 };
    cr_expect_eq (s_conf_load (args, &config), -1);
    char text [1024];
    s_stderr (text, sizeof text);
    cr_expect (strstr (text, "--max-upload-bytes") && strstr (text, "IMGP_MAX_UPLOAD_BYTES"),
               "%s", text);
    cr_expect (strstr (text, "--delay-ms") && strstr (text, "IMGP_DELAY_MS"),
               "every bad option is named, not only the first: %s", text);
}

Test (conf, a_default_out_of_range_is_caught, .init = cr_redirect_stderr)
{
    imgp_log_init ("test_proto", false);
    static const imgp_conf_spec_t bad [] = {
        IMGP_CONF_NUM (s_conf_test_t, count, "count", 0, 1, 10, "a default below its range"),
        IMGP_CONF_END
    };
    s_conf_test_t config = { 0 };
    cr_expect_eq (imgp_conf_defaults (bad, &config), -1);
}

Test (conf, a_flag_takes_no_value, .init = cr_redirect_stderr)
{
    imgp_log_init ("test_proto", false);
    char *args [] = { "test", "--fast=1", NULL };
    imgp_conf_t *conf = imgp_conf_new ("test", "a test", s_conf_specs);
    cr_expect_eq (imgp_conf_parse (conf, 2, args), -1);
    imgp_conf_destroy (&conf);
}

Test (conf, help_lists_each_option_with_range_default_and_variable,
      .init = cr_redirect_stdout)
{
    char *args [] = { "test", "--help", NULL };
    imgp_conf_t *conf = imgp_conf_new ("test", "a test", s_conf_specs);
    cr_expect_eq (imgp_conf_parse (conf, 2, args), 1);
    imgp_conf_destroy (&conf);
    char text [4096];
    s_redirected (stdout, cr_get_redirected_stdout (), text, sizeof text);
    cr_expect (strstr (text, "--count N"), "%s", text);
    cr_expect (strstr (text, "(1..10, default 7)  [IMGP_COUNT]"), "%s", text);
    cr_expect (strstr (text, "(default anna)  [IMGP_NAME]"), "%s", text);
    cr_expect (strstr (text, "--intake VALUE"), "%s", text);
    cr_expect (strstr (text, "--fast ") && strstr (text, "[IMGP_FAST]"), "%s", text);
}

//  --------------------------------------------------------------------------
//  Renditions: the options people know, sizes, results with box and etag

#define S_ID_TEXT "0123456789abcdef0123456789abcdef"     //  S_ID, for literals

//  Expect `query` refused naming `option`, in the option and the message.
static void
s_expect_refused (const char *query, const char *option)
{
    imgp_opts_t opts;
    const char *error = NULL, *named = NULL;
    cr_expect_eq (imgp_opts_parse_query (&opts, query, &error, &named), -1,
                  "query \"%s\" accepted", query);
    cr_expect_str_eq (named ? named : "(null)", option, "query \"%s\"", query);
    cr_expect (error && strstr (error, option), "query \"%s\": message \"%s\" does not name %s",
               query, error ? error : "(null)", option);
}

Test (renditions, new_options_parse)
{
    imgp_opts_t opts;
    const char *error = NULL, *option = NULL;
    cr_assert_eq (imgp_opts_parse_query (&opts, "sizes=100x100,400x300,64x48&fit=cover"
                                         "&gravity=north-east&format=auto&quality=70",
                                         &error, &option), 0, "%s", error);
    cr_expect_eq (opts.size_count, 3);
    cr_expect_eq (opts.width, 100);
    cr_expect_eq (opts.height, 100);
    cr_expect_eq (opts.sizes [1].width, 400);
    cr_expect_eq (opts.sizes [1].height, 300);
    cr_expect_eq (opts.sizes [2].width, 64);
    cr_expect_eq (opts.gravity, IMGP_GRAVITY_NORTH_EAST);
    cr_expect_eq (opts.format, IMGP_FORMAT_AUTO);
    cr_assert_eq (imgp_opts_parse_query (&opts, "fit=contain&background=%23ff8000&width=50",
                                         &error, &option), 0, "%s", error);
    cr_expect_eq (opts.fit, IMGP_FIT_CONTAIN);
    uint8_t orange [4] = { 0xff, 0x80, 0x00, 0xff };
    cr_expect_eq (memcmp (opts.background, orange, 4), 0, "#rrggbb is opaque");
    cr_expect_eq (opts.size_count, 1);
    cr_expect_eq (opts.sizes [0].width, 50);
    cr_expect_eq (opts.sizes [0].height, 50);
    cr_assert_eq (imgp_opts_parse_query (&opts, "fit=contain&background=0000ff80", &error,
                                         &option), 0, "%s", error);
    uint8_t blue [4] = { 0, 0, 0xff, 0x80 };
    cr_expect_eq (memcmp (opts.background, blue, 4), 0);
    cr_assert_eq (imgp_opts_parse_query (&opts, "animated=true&format=webp&fit=cover"
                                         "&gravity=attention", &error, &option), 0);
    cr_expect (opts.animated);
    cr_expect_eq (opts.gravity, IMGP_GRAVITY_ATTENTION);
    cr_assert_eq (imgp_opts_parse_query (&opts, "fit=cover&gravity=entropy", &error, &option), 0);
    cr_expect_eq (opts.gravity, IMGP_GRAVITY_ENTROPY);
    //  eight boxes of the longest text fit
    cr_assert_eq (imgp_opts_parse_query (&opts, "sizes=4096x4096,4095x4096,4094x4096,"
                                         "4093x4096,4092x4096,4091x4096,4090x4096,4089x4096",
                                         &error, &option), 0, "%s", error);
    cr_expect_eq (opts.size_count, 8);
    cr_expect_eq (imgp_opts_box (&opts, 7).width, 4089);
}

Test (renditions, every_bad_option_is_named)
{
    s_expect_refused ("sizes=", "sizes");
    s_expect_refused ("sizes=100", "sizes");
    s_expect_refused ("sizes=100x", "sizes");
    s_expect_refused ("sizes=0x10", "sizes");
    s_expect_refused ("sizes=10x4097", "sizes");
    s_expect_refused ("sizes=10x10,", "sizes");
    s_expect_refused ("sizes=10x10,,20x20", "sizes");
    s_expect_refused ("sizes=10X10", "sizes");
    s_expect_refused ("sizes=1x1,2x2,3x3,4x4,5x5,6x6,7x7,8x8,9x9", "sizes");
    s_expect_refused ("sizes=10x10,20x20,10x10", "sizes");
    s_expect_refused ("sizes=10x10&width=10", "sizes");
    s_expect_refused ("height=5&sizes=10x10", "sizes");
    s_expect_refused ("sizes=1x1&sizes=2x2", "sizes");
    s_expect_refused ("fit=contain&background=red", "background");
    s_expect_refused ("fit=contain&background=%23fff", "background");
    s_expect_refused ("fit=contain&background=%23ff00zz", "background");
    s_expect_refused ("background=%23ffffff", "background");
    s_expect_refused ("fit=cover&background=%23ffffff", "background");
    s_expect_refused ("fit=cover&gravity=up", "gravity");
    s_expect_refused ("gravity=north", "gravity");
    s_expect_refused ("fit=fill&gravity=centre", "gravity");
    s_expect_refused ("fit=contain&gravity=attention", "gravity");
    s_expect_refused ("quality=80", "quality");
    s_expect_refused ("format=png&quality=80", "quality");
    s_expect_refused ("animated=yes&format=webp", "animated");
    s_expect_refused ("animated=true", "animated");
    s_expect_refused ("animated=true&format=jpeg", "animated");
    s_expect_refused ("format=gif", "format");
    s_expect_refused ("fit=crop", "fit");
    s_expect_refused ("enlarge=2", "enlarge");
    s_expect_refused ("width=0", "width");
    s_expect_refused ("height=4097", "height");
    s_expect_refused ("fit=cover&fit=fill", "fit");
    //  an unknown key comes back as given
    imgp_opts_t opts;
    const char *error = NULL, *option = NULL;
    cr_expect_eq (imgp_opts_parse_query (&opts, "colour=red", &error, &option), -1);
    cr_expect_str_eq (option, "colour");
    cr_expect (strstr (error, "unknown option"));
    //  allowed: quality with auto, animated=false with anything
    cr_expect_eq (imgp_opts_parse_query (&opts, "format=auto&quality=50&animated=false",
                                         &error, &option), 0);
}

Test (renditions, fields_one_by_one)
{
    //  the multipart path: query keys and form fields share one "seen"
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    unsigned seen = 0;
    const char *error = NULL, *option = NULL;
    cr_assert_eq (imgp_opts_parse_field (&opts, &seen, "fit", "cover", &error, &option), 0);
    cr_assert_eq (imgp_opts_parse_field (&opts, &seen, "sizes", "30x20,60x40", &error,
                                         &option), 0);
    cr_expect_eq (imgp_opts_parse_field (&opts, &seen, "fit", "fill", &error, &option), -1);
    cr_expect_str_eq (option, "fit");
    cr_assert_eq (imgp_opts_parse_end (&opts, seen, &error, &option), 0, "%s", error);
    cr_expect_eq (opts.width, 30);
    cr_expect_eq (opts.height, 20);
    cr_expect_eq (opts.size_count, 2);
}

//  Options with every new member set, valid.
static void
s_rich_opts (imgp_opts_t *opts)
{
    imgp_opts_default (opts);
    opts->width = opts->sizes [0].width = 400;
    opts->height = opts->sizes [0].height = 300;
    opts->sizes [1] = (imgp_size_t) { 100, 100 };
    opts->sizes [2] = (imgp_size_t) { 4096, 1 };
    opts->size_count = 3;
    opts->fit = IMGP_FIT_COVER;
    opts->gravity = IMGP_GRAVITY_SOUTH_WEST;
    opts->format = IMGP_FORMAT_AUTO;
    opts->quality = 60;
    opts->animated = true;
}

Test (renditions, opts_json_round_trip_and_old_records)
{
    imgp_opts_t opts, back;
    memset (&opts, 0, sizeof opts);
    memset (&back, 0, sizeof back);
    s_rich_opts (&opts);
    json_t *obj = imgp_msg_opts_to_json (&opts);
    char *text = json_dumps (obj, JSON_COMPACT);
    cr_expect_str_eq (text, "{\"width\":400,\"height\":300,\"fit\":\"cover\",\"format\":\"auto\","
                      "\"quality\":60,\"enlarge\":false,\"gravity\":\"south-west\","
                      "\"animated\":true,\"sizes\":[[400,300],[100,100],[4096,1]]}");
    free (text);
    char error [160];
    cr_expect_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), 0, "%s", error);
    cr_expect_eq (memcmp (&back, &opts, sizeof opts), 0);
    json_decref (obj);

    //  contain with a background: the codec's writer and jansson agree
    imgp_opts_default (&opts);
    opts.fit = IMGP_FIT_CONTAIN;
    opts.background [0] = 0x12;
    opts.background [3] = 0xff;
    char buf [512];
    imgp_jw_t out;
    imgp_jw_init (&out, buf, sizeof buf);
    imgp_jw_opts (&out, NULL, &opts);
    buf [imgp_jw_len (&out)] = '\0';
    cr_expect_str_eq (buf, "{\"width\":100,\"height\":100,\"fit\":\"contain\",\"format\":\"png\","
                      "\"quality\":0,\"enlarge\":false,\"background\":\"#120000ff\"}");
    obj = json_loads (buf, 0, NULL);
    cr_assert_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), 0, "%s", error);
    cr_expect_eq (memcmp (back.background, opts.background, 4), 0);
    json_decref (obj);

    //  a record from before: six members, read as one box and defaults
    obj = json_loads ("{\"width\":320,\"height\":200,\"fit\":\"inside\",\"format\":\"png\","
                      "\"quality\":80,\"enlarge\":false}", 0, NULL);
    cr_assert_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), 0, "%s", error);
    cr_expect_eq (back.size_count, 1);
    cr_expect_eq (back.sizes [0].width, 320);
    cr_expect_eq (back.sizes [0].height, 200);
    cr_expect_eq (back.gravity, IMGP_GRAVITY_CENTRE);
    cr_expect_eq (back.quality, 80, "png with quality, as old records have it, still reads");
    json_decref (obj);

    //  refusals of the new members
    const char *bad [] = {
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"gravity\":\"north\"}",
        "{\"width\":1,\"height\":1,\"fit\":\"cover\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"gravity\":\"up\"}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"background\":\"#ffffffff\"}",
        "{\"width\":1,\"height\":1,\"fit\":\"contain\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"background\":\"#ffffff\"}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"animated\":true}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"webp\",\"quality\":0,"
        "\"enlarge\":false,\"animated\":1}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[2,2],[1,1]]}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[1,1],[1,1]]}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[1,1],[0,5]]}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[]}",
        //  one box that is not width x height (the fuzzer's: the encoder
        //  writes no sizes for one box, so it came back 200x150)
        "{\"width\":200,\"height\":150,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[460,1500]]}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[1,1],[2,2,2]]}",
        "{\"width\":1,\"height\":1,\"fit\":\"inside\",\"format\":\"png\",\"quality\":0,"
        "\"enlarge\":false,\"sizes\":[[1,1],[2,2],[3,3],[4,4],[5,5],[6,6],[7,7],[8,8],[9,9]]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        obj = json_loads (bad [i], 0, NULL);
        cr_assert_not_null (obj, "%s", bad [i]);
        cr_expect_eq (imgp_msg_opts_from_json (obj, &back, error, sizeof error), -1,
                      "accepted %s", bad [i]);
        json_decref (obj);
    }
}

//  A result of `bytes` for box `w` x `h` with a made-up etag.
static imgp_result_t
s_rendition (int w, int h, imgp_format_t format, int64_t bytes, char hex)
{
    imgp_result_t result = { w, h, format, bytes, 7, { w, h }, "" };
    memset (result.etag, hex, IMGP_ETAG_LEN);
    result.etag [IMGP_ETAG_LEN] = '\0';
    return result;
}

Test (renditions, done_carries_every_size)
{
    imgp_msg_t *msg = s_report_new (IMGP_MSG_DONE, "w-1", 1);
    msg->result_count = 3;
    msg->results [0] = s_rendition (400, 300, IMGP_FORMAT_JPEG, 1000, 'a');
    msg->results [1] = s_rendition (100, 75, IMGP_FORMAT_JPEG, 200, 'b');
    msg->results [2] = s_rendition (64, 48, IMGP_FORMAT_JPEG, 34, 'c');
    msg->results [2].box = (imgp_size_t) { 64, 64 };
    imgp_msg_set_data (msg, s_bytes (1234, 3), 1234, NULL);
    imgp_msg_t *back = s_round_trip (msg);
    cr_assert_eq (back->result_count, 3);
    cr_expect_eq (back->results [1].width, 100);
    cr_expect_eq (back->results [1].bytes, 200);
    cr_expect_eq (back->results [2].box.width, 64);
    cr_expect_eq (back->results [2].box.height, 64);
    cr_expect_eq (back->results [2].etag [0], 'c');
    cr_expect_eq (strlen (back->results [2].etag), IMGP_ETAG_LEN);
    s_expect_data (back, 1234, 3);
    imgp_msg_destroy (&back);

    //  sizes that do not add up to the frame: refused both ways
    msg = s_report_new (IMGP_MSG_DONE, "w-1", 1);
    msg->result_count = 2;
    msg->results [0] = s_rendition (10, 10, IMGP_FORMAT_PNG, 10, 'a');
    msg->results [1] = s_rendition (20, 20, IMGP_FORMAT_PNG, 10, 'b');
    imgp_msg_set_data (msg, s_bytes (21, 3), 21, NULL);
    cr_expect_null (imgp_msg_encode (msg));
    imgp_msg_destroy (&msg);
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[{\"width\":1,\"height\":1,\"format\":\"png\","
                  "\"bytes\":2,\"ms\":0},{\"width\":1,\"height\":1,\"format\":\"png\","
                  "\"bytes\":2,\"ms\":0}]}", "abc");
    //  none, nine, auto, a bad etag, a bad box
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[]}", "abc");
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[{\"width\":1,\"height\":1,\"format\":\"auto\","
                  "\"bytes\":3,\"ms\":0}]}", "abc");
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[{\"width\":1,\"height\":1,\"format\":\"png\","
                  "\"bytes\":3,\"ms\":0,\"etag\":\"ABC\"}]}", "abc");
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[{\"width\":1,\"height\":1,\"format\":\"png\","
                  "\"bytes\":3,\"ms\":0,\"box\":[0,5]}]}", "abc");
    char nine [2048];
    int n = snprintf (nine, sizeof nine, "{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\","
                      "\"attempts\":1,\"worker\":\"w\",\"results\":[");
    for (int i = 0; i < 9; i++)
        n += snprintf (nine + n, sizeof nine - (size_t) n, "%s{\"width\":1,\"height\":1,"
                       "\"format\":\"png\",\"bytes\":1,\"ms\":0}", i ? "," : "");
    snprintf (nine + n, sizeof nine - (size_t) n, "]}");
    s_expect_bad (nine, "abcdefghi");
    //  a peer from before: one "result" object
    imgp_msg_t *old = s_expect_good ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\","
                                     "\"attempts\":1,\"worker\":\"w\",\"result\":{\"width\":1,"
                                     "\"height\":1,\"format\":\"png\",\"bytes\":3,\"ms\":0}}",
                                     "abc");
    cr_assert_not_null (old);
    cr_expect_eq (old->result_count, 1);
    cr_expect_eq (old->results [0].box.width, 0, "no box: the job's first size");
    cr_expect_str_eq (old->results [0].etag, "");
    imgp_msg_destroy (&old);
}

//  REVIEW11 #1: bytes of INT64_MAX, INT64_MAX and 5 wrap to a sum of 3,
//  which once matched a 3-byte frame and let the broker read 2^63 bytes.
Test (renditions, done_bytes_that_wrap_are_refused)
{
    s_expect_bad ("{\"v\":1,\"type\":\"done\",\"id\":\"" S_ID_TEXT "\",\"attempts\":1,"
                  "\"worker\":\"w\",\"results\":[{\"width\":1,\"height\":1,\"format\":\"jpeg\","
                  "\"bytes\":9223372036854775807,\"ms\":0},{\"width\":1,\"height\":1,"
                  "\"format\":\"jpeg\",\"bytes\":9223372036854775807,\"ms\":0},"
                  "{\"width\":1,\"height\":1,\"format\":\"jpeg\",\"bytes\":5,\"ms\":0}]}",
                  "abc");
    imgp_msg_t *msg = s_report_new (IMGP_MSG_DONE, "w-1", 1);
    msg->result_count = 3;
    msg->results [0] = s_rendition (10, 10, IMGP_FORMAT_JPEG, INT64_MAX, 'a');
    msg->results [1] = s_rendition (10, 10, IMGP_FORMAT_JPEG, INT64_MAX, 'b');
    msg->results [2] = s_rendition (10, 10, IMGP_FORMAT_JPEG, 5, 'c');
    imgp_msg_set_data (msg, s_bytes (3, 3), 3, NULL);
    cr_expect_null (imgp_msg_encode (msg), "a wrapping sum is refused on encode too");
    imgp_msg_destroy (&msg);

    //  one rendition over the largest frame, in an INFO (which carries no
    //  sum to catch it) as in a DONE
    s_expect_bad ("{\"v\":1,\"type\":\"info\",\"id\":\"" S_ID_TEXT "\",\"state\":\"done\","
                  "\"created_at\":1,\"updated_at\":2,\"attempts\":1,\"results\":[{\"width\":1,"
                  "\"height\":1,\"format\":\"png\",\"bytes\":1073741825,\"ms\":0}]}", NULL);
    imgp_msg_t *ok = s_expect_good ("{\"v\":1,\"type\":\"info\",\"id\":\"" S_ID_TEXT "\","
                                    "\"state\":\"done\",\"created_at\":1,\"updated_at\":2,"
                                    "\"attempts\":1,\"results\":[{\"width\":1,\"height\":1,"
                                    "\"format\":\"png\",\"bytes\":1073741824,\"ms\":0}]}", NULL);
    cr_expect_not_null (ok, "the limit itself is fine");
    imgp_msg_destroy (&ok);
}

Test (renditions, info_with_24_results_fits_the_header)
{
    imgp_msg_t *msg = s_msg_new (IMGP_MSG_INFO);
    msg->state = IMGP_STATE_DONE;
    msg->attempts = 1000;
    msg->created_at = msg->updated_at = 9007199254740991LL;
    strcpy (msg->worker, "a-very-long-worker-name-of-sixty-four-characters-0123456789abcde");
    msg->tag = IMGP_TAG_MAX;
    msg->result_count = IMGP_RESULTS_MAX;
    for (int i = 0; i < IMGP_RESULTS_MAX; i++) {
        msg->results [i] = s_rendition (IMGP_RESULT_SIDE_MAX, IMGP_RESULT_SIDE_MAX,
                                        (imgp_format_t) (i % 4), IMGP_UPLOAD_LIMIT_MAX,
                                        'f');
        msg->results [i].ms = INT64_MAX;
        msg->results [i].box = (imgp_size_t) { 4096 - i, 4096 };
    }
    imgp_msg_set_data (msg, s_bytes (10, 1), 10, NULL);
    char *header = s_header_of (msg);
    cr_expect_lt (strlen (header), IMGP_HEADER_MAX, "%zu bytes", strlen (header));
    free (header);
    imgp_msg_t *back = s_round_trip (msg);
    cr_expect_eq (back->result_count, IMGP_RESULTS_MAX);
    cr_expect_eq (back->results [23].box.width, 4096 - 23);
    cr_expect_eq (back->results [23].bytes, IMGP_UPLOAD_LIMIT_MAX);
    imgp_msg_destroy (&back);

    //  the exported array reader, as the spool uses it
    imgp_result_t results [IMGP_RESULTS_MAX];
    int count = -1;
    json_t *array = json_loads ("[{\"width\":5,\"height\":4,\"format\":\"webp\",\"bytes\":9,"
                                "\"ms\":1,\"box\":[5,5]},{\"width\":2,\"height\":1,"
                                "\"format\":\"avif\",\"bytes\":9,\"ms\":1}]", 0, NULL);
    char error [160];
    cr_assert_eq (imgp_msg_results_from_json (array, results, IMGP_RESULTS_MAX, &count, error,
                                              sizeof error), 0, "%s", error);
    cr_expect_eq (count, 2);
    cr_expect_eq (results [0].box.height, 5);
    cr_expect_eq (results [1].format, IMGP_FORMAT_AVIF);
    cr_expect_eq (imgp_msg_results_from_json (array, results, 1, &count, error, sizeof error),
                  -1, "over max");
    json_decref (array);
    imgp_result_t one = s_rendition (3, 2, IMGP_FORMAT_PNG, 5, '0');
    json_t *obj = imgp_msg_result_to_json (&one);
    char *text = json_dumps (obj, JSON_COMPACT);
    cr_expect_str_eq (text, "{\"width\":3,\"height\":2,\"format\":\"png\",\"bytes\":5,\"ms\":7,"
                      "\"box\":[3,2],\"etag\":\"0000000000000000000000000000000000000000\"}");
    free (text);
    json_decref (obj);
}

//  FETCH names the size and the formats it wants; INFO says which
//  rendition its data is and whether a better one is being made
//  (PROTOCOL.md 6.4). Absent, they read as before: first size, any format,
//  rendition 0, nothing pending.
Test (renditions, fetch_wants_and_info_says_which)
{
    imgp_msg_t *fetch = s_msg_new (IMGP_MSG_FETCH);
    fetch->box = (imgp_size_t) { 400, 300 };
    fetch->accept_count = 3;
    fetch->accept [0] = IMGP_FORMAT_AVIF;
    fetch->accept [1] = IMGP_FORMAT_WEBP;
    fetch->accept [2] = IMGP_FORMAT_JPEG;
    char *header = s_header_of (fetch);
    cr_expect (strstr (header, "\"box\":[400,300],\"accept\":[\"avif\",\"webp\",\"jpeg\"]"),
               "%s", header);
    free (header);
    imgp_msg_t *back = s_round_trip (fetch);
    cr_expect (back->box.width == 400 && back->box.height == 300);
    cr_expect (back->accept_count == 3 && back->accept [1] == IMGP_FORMAT_WEBP);
    imgp_msg_destroy (&back);

    imgp_msg_t *info = s_msg_new (IMGP_MSG_INFO);
    info->state = IMGP_STATE_DONE;
    info->result_count = 2;
    info->results [0] = s_rendition (10, 10, IMGP_FORMAT_JPEG, 10, 'a');
    info->results [1] = s_rendition (10, 10, IMGP_FORMAT_WEBP, 10, 'b');
    info->rendition = 1;
    info->pending = true;
    imgp_msg_set_data (info, s_bytes (10, 1), 10, NULL);
    back = s_round_trip (info);
    cr_expect_eq (back->rendition, 1);
    cr_expect (back->pending);
    imgp_msg_destroy (&back);

    char error [160];
    const char *bad [] = {
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"box\":[0,5]}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"box\":[5]}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"accept\":[\"auto\"]}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"accept\":[\"gif\"]}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"accept\":\"webp\"}",
        "{\"v\":1,\"type\":\"fetch\",\"id\":\"%s\",\"accept\":[\"png\",\"png\",\"png\",\"png\",\"png\"]}",
        "{\"v\":1,\"type\":\"info\",\"id\":\"%s\",\"state\":\"queued\",\"created_at\":1,"
        "\"updated_at\":1,\"attempts\":0,\"rendition\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char json [512];
        snprintf (json, sizeof json, bad [i], "0123456789abcdef0123456789abcdef");
        imgp_msg_t *msg = s_decode_header (json, strlen (json), NULL, error, sizeof error);
        cr_expect_null (msg, "accepted %s", json);
        imgp_msg_destroy (&msg);
    }
}

/*  test_limits — unit tests of the frontend's limits: API keys (imgp_keys:
    the key file, constant-time lookup, reload, the presented key) and rate
    limits (imgp_rate: token buckets, the bound on the table, log-once).

    Key files are written to temporary files and removed after each test.
    Time is passed to imgp_rate, so nothing here sleeps.

    Never: depend on the network, the clock or the order tests run in.
*/
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgp_keys.h"
#include "imgp_rate.h"

#define KEY_ALICE "alice-key-0123456789abcdef"
#define KEY_BOB "bob#key:0123456789ABCDEF!"
#define KEY_CAROL "carol-key-0123456789abcdef"
#define KEY_DAVE "dave-key-0123456789abcdef"

//  --------------------------------------------------------------------------
//  Key files

static char s_path [64];        //  the key file of the running test

static void
s_write_file (const char *text)
{
    if (!s_path [0]) {
        strcpy (s_path, "/tmp/imgp-keys.XXXXXX");
        int fd = mkstemp (s_path);
        cr_assert (fd >= 0);
        close (fd);
    }
    //  Write beside and rename, as an operator's tools should.
    char temporary [80];
    snprintf (temporary, sizeof temporary, "%s.new", s_path);
    FILE *file = fopen (temporary, "w");
    cr_assert (file);
    fputs (text, file);
    fclose (file);
    cr_assert (rename (temporary, s_path) == 0);
}

static void
s_remove_file (void)
{
    if (s_path [0])
        unlink (s_path);
    s_path [0] = 0;
}

//  Load `text` as a key file; NULL with the reason in `error`.
static imgp_keys_t *
s_load (const char *text, char *error, size_t size)
{
    s_write_file (text);
    return imgp_keys_new (s_path, error, size);
}

static void
s_assert_found (imgp_keys_t *keys, const char *key, const char *name)
{
    imgp_key_info_t info;
    cr_assert_eq (imgp_keys_check (keys, key, &info), 0, "%s not found", name);
    cr_assert_str_eq (info.name, name);
}

TestSuite (keys, .fini = s_remove_file);

//  A table whose every stripe has room for 100 clients: tests that are not
//  about eviction must not see one (a table's stripes come from a random
//  seed, so two clients share a stripe of a small table now and then).
#define S_ROOMY 6400

Test (keys, loads_a_good_file_with_defaults)
{
    char error [256] = "";
    imgp_keys_t *keys = s_load ("# imgpipe keys\n"
                                "\n"
                                "   # indented comment\n"
                                "alice " KEY_ALICE "\n"
                                "bob\t" KEY_BOB "\t0.5\r\n"
                                "  carol   " KEY_CAROL "   2.5   \n"
                                "dave " KEY_DAVE " 10 20",
                                error, sizeof error);
    cr_assert (keys, "%s", error);
    cr_assert_eq (imgp_keys_size (keys), 4);
    imgp_key_info_t info;
    cr_assert_eq (imgp_keys_check (keys, KEY_ALICE, &info), 0);
    cr_assert_str_eq (info.name, "alice");
    cr_assert_eq (info.rate, 0);
    cr_assert_eq (info.burst, 0);
    cr_assert_eq (imgp_keys_check (keys, KEY_BOB, &info), 0);
    cr_assert_eq (info.rate, 0.5);
    cr_assert_eq (info.burst, 1, "default burst is max (1, ceil (rate))");
    cr_assert_eq (imgp_keys_check (keys, KEY_CAROL, &info), 0);
    cr_assert_eq (info.burst, 3);
    cr_assert_eq (imgp_keys_check (keys, KEY_DAVE, &info), 0);
    cr_assert_eq (info.rate, 10);
    cr_assert_eq (info.burst, 20);
    imgp_keys_destroy (&keys);
    imgp_keys_destroy (&keys);
    cr_assert_null (keys);
}

Test (keys, check_finds_only_whole_keys)
{
    char error [256];
    imgp_keys_t *keys = s_load ("alice " KEY_ALICE "\nbob " KEY_BOB "\ncarol " KEY_CAROL "\n",
                                error, sizeof error);
    cr_assert (keys, "%s", error);
    s_assert_found (keys, KEY_ALICE, "alice");
    s_assert_found (keys, KEY_BOB, "bob");
    s_assert_found (keys, KEY_CAROL, "carol");
    cr_assert_eq (imgp_keys_check (keys, NULL, NULL), -1);
    cr_assert_eq (imgp_keys_check (keys, "", NULL), -1);
    cr_assert_eq (imgp_keys_check (keys, "alice", NULL), -1);
    cr_assert_eq (imgp_keys_check (keys, "alice-key-0123456789abcde", NULL), -1, "prefix");
    cr_assert_eq (imgp_keys_check (keys, KEY_ALICE "f", NULL), -1, "longer");
    cr_assert_eq (imgp_keys_check (keys, "Alice-key-0123456789abcdef", NULL), -1, "case");
    char huge [1000];
    memset (huge, 'a', sizeof huge - 1);
    huge [sizeof huge - 1] = 0;
    cr_assert_eq (imgp_keys_check (keys, huge, NULL), -1);
    cr_assert_eq (imgp_keys_check (keys, KEY_ALICE, NULL), 0, "out may be NULL");
    imgp_keys_destroy (&keys);
}

Test (keys, longest_key_and_name_are_taken)
{
    char line [400], name [IMGP_KEYS_NAME_MAX + 1], key [IMGP_KEYS_KEY_MAX + 1];
    memset (name, 'n', IMGP_KEYS_NAME_MAX);
    name [IMGP_KEYS_NAME_MAX] = 0;
    memset (key, '~', IMGP_KEYS_KEY_MAX);
    key [IMGP_KEYS_KEY_MAX] = 0;
    snprintf (line, sizeof line, "%s %s\nshort 0123456789abcdef\n", name, key);
    char error [256];
    imgp_keys_t *keys = s_load (line, error, sizeof error);
    cr_assert (keys, "%s", error);
    s_assert_found (keys, key, name);
    s_assert_found (keys, "0123456789abcdef", "short");
    imgp_keys_destroy (&keys);
}

//  A bad line, and what must not show in the error.
typedef struct {
    char line [300];
    char secret [300];
} bad_line_t;

ParameterizedTestParameters (keys, each_bad_line_is_refused_by_number)
{
    static bad_line_t cases [] = {
        {"alice", "alice"},                                     //  no key
        {"alice " KEY_ALICE " 1 2 3", KEY_ALICE},               //  too many fields
        {"al/ice " KEY_ALICE, KEY_ALICE},                       //  bad NAME character
        {"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn " KEY_ALICE,
         KEY_ALICE},                                            //  NAME of 65
        {"alice 0123456789abcde", "0123456789abcde"},           //  KEY of 15
        {"alice 0123456789abcdef\x7f", "0123456789abcdef"},     //  KEY not printable
        {"alice 0123456789abcdef\xc3\xa9", "0123456789abcdef"}, //  KEY not ASCII
        {KEY_ALICE " alice", KEY_ALICE},                        //  fields swapped
        {"alice " KEY_ALICE " 0", KEY_ALICE},                   //  RATE 0
        {"alice " KEY_ALICE " -1", KEY_ALICE},                  //  RATE negative
        {"alice " KEY_ALICE " fast", KEY_ALICE},                //  RATE not a number
        {"alice " KEY_ALICE " 5x", KEY_ALICE},                  //  RATE with a tail
        {"alice " KEY_ALICE " nan", KEY_ALICE},                 //  RATE NaN
        {"alice " KEY_ALICE " inf", KEY_ALICE},                 //  RATE infinite
        {"alice " KEY_ALICE " 2e6", KEY_ALICE},                 //  RATE too high
        {"alice " KEY_ALICE " 1 0", KEY_ALICE},                 //  BURST 0
        {"alice " KEY_ALICE " 1 1.5", KEY_ALICE},               //  BURST not whole
        {"alice " KEY_ALICE " 1 +3", KEY_ALICE},                //  BURST with a sign
        {"alice " KEY_ALICE " 1 2000000", KEY_ALICE},           //  BURST too high
    };
    //  A KEY of 257 characters.
    static bad_line_t long_key;
    strcpy (long_key.line, "alice ");
    memset (long_key.line + 6, 'k', 257);
    memcpy (long_key.secret, long_key.line + 6, 257);
    bad_line_t *all = cr_malloc (sizeof cases + sizeof long_key);
    memcpy (all, cases, sizeof cases);
    all [sizeof cases / sizeof cases [0]] = long_key;
    return cr_make_param_array (bad_line_t, all, sizeof cases / sizeof cases [0] + 1);
}

ParameterizedTest (bad_line_t *bad, keys, each_bad_line_is_refused_by_number)
{
    char text [512], error [256] = "";
    snprintf (text, sizeof text, "# comment\nbob " KEY_BOB "\n%s\ncarol " KEY_CAROL "\n",
              bad->line);
    imgp_keys_t *keys = s_load (text, error, sizeof error);
    cr_assert_null (keys, "accepted: %s", bad->line);
    cr_assert (strstr (error, ":3: "), "no line number in '%s'", error);
    cr_assert_null (strstr (error, bad->secret), "error shows the key: '%s'", error);
    cr_assert_null (strstr (error, KEY_BOB));
}

Test (keys, duplicates_are_refused_naming_both_lines)
{
    char error [256];
    imgp_keys_t *keys
        = s_load ("alice " KEY_ALICE "\nbob " KEY_BOB "\nalice " KEY_CAROL "\n", error,
                  sizeof error);
    cr_assert_null (keys);
    cr_assert (strstr (error, ":3: same NAME as line 1"), "%s", error);

    keys = s_load ("alice " KEY_ALICE "\n#\nbob " KEY_BOB "\ncarol " KEY_BOB " 2\n", error,
                   sizeof error);
    cr_assert_null (keys);
    cr_assert (strstr (error, ":4: same KEY as line 3"), "%s", error);
    cr_assert_null (strstr (error, KEY_BOB));
}

Test (keys, empty_long_line_and_missing_files_are_refused)
{
    char error [256];
    cr_assert_null (s_load ("# only a comment\n\n", error, sizeof error));
    cr_assert (strstr (error, "no keys"), "%s", error);
    char text [1200];
    memset (text, ' ', sizeof text - 1);
    text [sizeof text - 1] = 0;
    cr_assert_null (s_load (text, error, sizeof error));
    cr_assert (strstr (error, ":1: longer than"), "%s", error);
    cr_assert_null (imgp_keys_new ("/nonexistent/keys", error, sizeof error));
    cr_assert (strstr (error, "cannot open /nonexistent/keys"), "%s", error);
    cr_assert_null (imgp_keys_new ("/nonexistent/keys", NULL, 0), "no error buffer is fine");
}

Test (keys, reload_keeps_old_set_on_error_and_takes_new_on_success)
{
    char error [256];
    imgp_keys_t *keys = s_load ("alice " KEY_ALICE "\nbob " KEY_BOB "\n", error, sizeof error);
    cr_assert (keys, "%s", error);

    s_write_file ("alice " KEY_ALICE "\nbob\n");
    cr_assert_eq (imgp_keys_reload (keys, error, sizeof error), -1);
    cr_assert (strstr (error, ":2: "), "%s", error);
    s_assert_found (keys, KEY_BOB, "bob");
    cr_assert_eq (imgp_keys_size (keys), 2);

    s_write_file ("alice " KEY_ALICE " 5\ncarol " KEY_CAROL "\n");
    cr_assert_eq (imgp_keys_reload (keys, error, sizeof error), 0, "%s", error);
    cr_assert_eq (imgp_keys_check (keys, KEY_BOB, NULL), -1, "removed key still works");
    s_assert_found (keys, KEY_CAROL, "carol");
    imgp_key_info_t info;
    cr_assert_eq (imgp_keys_check (keys, KEY_ALICE, &info), 0);
    cr_assert_eq (info.rate, 5, "changed rate not taken");

    unlink (s_path);
    cr_assert_eq (imgp_keys_reload (keys, error, sizeof error), -1);
    s_assert_found (keys, KEY_CAROL, "carol");
    imgp_keys_destroy (&keys);
}

typedef struct {
    imgp_keys_t *keys;          //  checked by every thread
    int misses;                 //  times the shared key was not found
} checker_t;

static void *
s_checker (void *args)
{
    checker_t *checker = args;
    for (int i = 0; i < 20000; i++) {
        imgp_key_info_t info;
        if (imgp_keys_check (checker->keys, KEY_ALICE, &info) != 0
            || strcmp (info.name, "alice") != 0)
            checker->misses++;
    }
    return NULL;
}

Test (keys, reload_is_safe_while_threads_check)
{
    char error [256];
    imgp_keys_t *keys = s_load ("alice " KEY_ALICE "\n", error, sizeof error);
    cr_assert (keys, "%s", error);
    enum { THREADS = 8 };
    pthread_t threads [THREADS];
    checker_t checkers [THREADS];
    for (int i = 0; i < THREADS; i++) {
        checkers [i] = (checker_t) {keys, 0};
        pthread_create (&threads [i], NULL, s_checker, &checkers [i]);
    }
    for (int i = 0; i < 100; i++) {
        s_write_file (i % 2 ? "alice " KEY_ALICE "\n" : "bob " KEY_BOB "\nalice " KEY_ALICE "\n");
        cr_assert_eq (imgp_keys_reload (keys, error, sizeof error), 0, "%s", error);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join (threads [i], NULL);
        cr_assert_eq (checkers [i].misses, 0);
    }
    imgp_keys_destroy (&keys);
}

Test (keys, presented_key_from_either_header)
{
    char buf [300];
    const char *key;
    key = imgp_keys_presented ("Bearer " KEY_ALICE, NULL, buf, sizeof buf);
    cr_assert_str_eq (key, KEY_ALICE);
    cr_assert_eq (key, buf);
    cr_assert_str_eq (imgp_keys_presented ("bEaReR\t  " KEY_ALICE "  ", NULL, buf, sizeof buf),
                      KEY_ALICE);
    cr_assert_str_eq (imgp_keys_presented ("  BEARER " KEY_ALICE, KEY_BOB, buf, sizeof buf),
                      KEY_ALICE, "Bearer wins over X-API-Key");
    cr_assert_str_eq (imgp_keys_presented (NULL, " " KEY_BOB " ", buf, sizeof buf), KEY_BOB);
    cr_assert_str_eq (imgp_keys_presented ("Basic dXNlcjpwYXNz", KEY_BOB, buf, sizeof buf),
                      KEY_BOB, "another scheme falls back to X-API-Key");
    cr_assert_str_eq (imgp_keys_presented ("Bearer   ", KEY_BOB, buf, sizeof buf), KEY_BOB);
    cr_assert_null (imgp_keys_presented ("Bearer" KEY_ALICE, NULL, buf, sizeof buf));
    cr_assert_null (imgp_keys_presented ("Basic dXNlcjpwYXNz", NULL, buf, sizeof buf));
    cr_assert_null (imgp_keys_presented (NULL, NULL, buf, sizeof buf));
    cr_assert_null (imgp_keys_presented (NULL, "   ", buf, sizeof buf));
    cr_assert_null (imgp_keys_presented ("Bearer " KEY_ALICE, NULL, buf, 10), "does not fit");
}

//  --------------------------------------------------------------------------
//  Token buckets

static imgp_rate_verdict_t
s_take (imgp_rate_t *rate, const char *who, double per_s, double burst, int64_t now, int expect)
{
    imgp_rate_verdict_t verdict;
    int rc = imgp_rate_take (rate, who, per_s, burst, now, &verdict);
    cr_assert_eq (rc, expect, "%s at %lld ms: %d, expected %d", who, (long long) now, rc, expect);
    return verdict;
}

Test (rate, burst_then_limited_then_refilled)
{
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    cr_assert (rate);
    for (int i = 0; i < 3; i++) {
        imgp_rate_verdict_t v = s_take (rate, "alice", 1, 3, 1000, 0);
        cr_assert_eq (v.limit, 3);
        cr_assert_eq (v.remaining, 2 - i);
        cr_assert_eq (v.reset_s, i + 1);
        cr_assert_eq (v.retry_after_s, 0);
    }
    imgp_rate_verdict_t v = s_take (rate, "alice", 1, 3, 1000, -1);
    cr_assert_eq (v.limit, 3);
    cr_assert_eq (v.remaining, 0);
    cr_assert_eq (v.reset_s, 3);
    cr_assert_eq (v.retry_after_s, 1);
    s_take (rate, "alice", 1, 3, 1999, -1);
    v = s_take (rate, "alice", 1, 3, 2000, 0);
    cr_assert_eq (v.remaining, 0);
    s_take (rate, "alice", 1, 3, 2000, -1);
    //  Long idle: full again, never more than the burst.
    for (int i = 0; i < 3; i++)
        s_take (rate, "alice", 1, 3, 60000, 0);
    s_take (rate, "alice", 1, 3, 60000, -1);
    imgp_rate_destroy (&rate);
    imgp_rate_destroy (&rate);
}

Test (rate, fractional_rate_and_rounding)
{
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    imgp_rate_verdict_t v = s_take (rate, "slow", 0.5, 1, 0, 0);
    cr_assert_eq (v.reset_s, 2);
    v = s_take (rate, "slow", 0.5, 1, 500, -1);
    cr_assert_eq (v.retry_after_s, 2, "1.5 s rounds up");
    v = s_take (rate, "slow", 0.5, 1, 1999, -1);
    cr_assert_eq (v.retry_after_s, 1, "never below 1 when limited");
    s_take (rate, "slow", 0.5, 1, 2000, 0);

    //  1/3 s intervals do not drift: over 99.99 s, asking every 10 ms,
    //  the burst of 3 and then one every 333.3 ms (299 of them).
    int allowed = 0;
    for (int64_t now = 0; now < 100000; now += 10)
        allowed += imgp_rate_take (rate, "thirds", 3, 3, now, NULL) == 0;
    cr_assert_eq (allowed, 302);

    //  A burst of 2.7 counts as 2.
    s_take (rate, "odd", 1, 2.7, 0, 0);
    v = s_take (rate, "odd", 1, 2.7, 0, 0);
    cr_assert_eq (v.limit, 2);
    s_take (rate, "odd", 1, 2.7, 0, -1);
    imgp_rate_destroy (&rate);
}

Test (rate, clients_are_separate_and_unlimited_is_not_stored)
{
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    s_take (rate, "10.0.0.1", 1, 1, 0, 0);
    s_take (rate, "10.0.0.1", 1, 1, 0, -1);
    s_take (rate, "10.0.0.2", 1, 1, 0, 0);
    cr_assert_eq (imgp_rate_size (rate), 2);
    imgp_rate_verdict_t v = s_take (rate, "free", 0, 0, 0, 0);
    cr_assert_eq (v.limit, 0);
    cr_assert_eq (v.retry_after_s, 0);
    cr_assert_eq (imgp_rate_size (rate), 2);
    imgp_rate_destroy (&rate);
}

Test (rate, lowered_burst_keeps_what_was_taken)
{
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    for (int i = 0; i < 5; i++)
        s_take (rate, "alice", 1, 10, 0, 0);
    imgp_rate_verdict_t v = s_take (rate, "alice", 1, 2, 0, -1);
    cr_assert_eq (v.remaining, 0);
    cr_assert_eq (v.reset_s, 2);
    s_take (rate, "alice", 1, 2, 1000, 0);
    imgp_rate_destroy (&rate);
}

Test (rate, table_stays_bounded_under_a_flood_of_addresses)
{
    enum { CAPACITY = 1000 };
    imgp_rate_t *rate = imgp_rate_new (CAPACITY);
    s_take (rate, "victim", 1, 1, 0, 0);
    char who [32];
    for (int i = 0; i < 100000; i++) {
        snprintf (who, sizeof who, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        imgp_rate_take (rate, who, 1, 1, 0, NULL);
        //  A client seen often keeps its (empty) bucket through the flood.
        if (i % 100 == 0)
            s_take (rate, "victim", 1, 1, 0, -1);
    }
    cr_assert_eq (imgp_rate_size (rate), CAPACITY);
    //  An address seen long ago was dropped and starts full.
    s_take (rate, "10.0.0.0", 1, 1, 0, 0);
    imgp_rate_destroy (&rate);

    rate = imgp_rate_new (1);
    s_take (rate, "a", 1, 1, 0, 0);
    s_take (rate, "b", 1, 1, 0, 0);
    cr_assert_eq (imgp_rate_size (rate), 1);
    imgp_rate_destroy (&rate);
}

Test (rate, long_names_are_cut_not_overrun)
{
    imgp_rate_t *rate = imgp_rate_new (10);
    char who [200];
    memset (who, 'w', sizeof who - 1);
    who [sizeof who - 1] = 0;
    s_take (rate, who, 1, 1, 0, 0);
    who [100] = 'x';            //  beyond IMGP_RATE_WHO_MAX: same bucket
    s_take (rate, who, 1, 1, 0, -1);
    cr_assert (imgp_rate_once (rate, who, who, 1000, 0));
    cr_assert_not (imgp_rate_once (rate, who, who, 1000, 0));
    imgp_rate_destroy (&rate);
}

typedef struct {
    imgp_rate_t *rate;          //  shared by every thread
    int allowed;                //  requests this thread was allowed
} taker_t;

static void *
s_taker (void *args)
{
    taker_t *taker = args;
    for (int i = 0; i < 5000; i++)
        taker->allowed += imgp_rate_take (taker->rate, "shared", 1, 1000, 0, NULL) == 0;
    return NULL;
}

Test (rate, concurrent_takes_never_exceed_the_burst)
{
    enum { THREADS = 16 };
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    pthread_t threads [THREADS];
    taker_t takers [THREADS];
    for (int i = 0; i < THREADS; i++) {
        takers [i] = (taker_t) {rate, 0};
        pthread_create (&threads [i], NULL, s_taker, &takers [i]);
    }
    int allowed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join (threads [i], NULL);
        allowed += takers [i].allowed;
    }
    cr_assert_eq (allowed, 1000);
    imgp_rate_destroy (&rate);
}

//  --------------------------------------------------------------------------
//  Log once

Test (rate, once_per_reason_and_client_per_period)
{
    imgp_rate_t *rate = imgp_rate_new (S_ROOMY);
    cr_assert (imgp_rate_once (rate, "conn_limit", "1.2.3.4", 60000, 1000));
    cr_assert_not (imgp_rate_once (rate, "conn_limit", "1.2.3.4", 60000, 1000));
    cr_assert_not (imgp_rate_once (rate, "conn_limit", "1.2.3.4", 60000, 60999));
    cr_assert (imgp_rate_once (rate, "conn_limit", "1.2.3.5", 60000, 2000), "other client");
    cr_assert (imgp_rate_once (rate, "rate_limited", "1.2.3.4", 60000, 2000), "other reason");
    cr_assert (imgp_rate_once (rate, "conn_limit", "1.2.3.4", 60000, 61000), "next period");
    cr_assert_not (imgp_rate_once (rate, "conn_limit", "1.2.3.4", 60000, 61001));
    //  Notes are not buckets.
    cr_assert_eq (imgp_rate_size (rate), 0);
    imgp_rate_destroy (&rate);
}

Test (rate, once_table_stays_bounded)
{
    imgp_rate_t *rate = imgp_rate_new (64);
    char who [32];
    int said = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf (who, sizeof who, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        said += imgp_rate_once (rate, "conn_limit", who, 60000, 0);
    }
    cr_assert_eq (said, 100000);
    //  Recent ones are still remembered.
    cr_assert_not (imgp_rate_once (rate, "conn_limit", who, 60000, 1));
    imgp_rate_destroy (&rate);
}

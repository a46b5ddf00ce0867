/*  test_frontend — unit tests of http-frontend/: the magic-byte sniffer,
    the shared upload buffer, the memory keeper (imgp_mem), and the real
    HTTP server (imgp_http) running in-process on a loopback port against
    a fake broker.

    The fake broker is a czmq actor with two ROUTER sockets (intake and
    status) that answers through imgp_msg like the real one: ACCEPTED or a
    chosen ERROR for SUBMIT, INFO for a few fixed ids, PONG for PING. The
    HTTP client is a raw socket with send and receive timeouts, so a hang
    fails the test instead of blocking; it reads a response by its
    Content-Length, not until EOF.

    Never: depend on a broker, a port number or a network beyond 127.0.0.1.
*/
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <czmq.h>
#include <jansson.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#include "imgp_buf.h"
#include "imgp_form.h"
#include "imgp_http.h"
#include "imgp_id.h"
#include "imgp_link.h"
#include "imgp_log.h"
#include "imgp_mem.h"
#include "imgp_msg.h"
#include "imgp_reply.h"
#include "imgp_sniff.h"

#define UPLOAD_LIMIT 65536
#define ID_QUEUED "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ID_PROCESSING "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define ID_DONE "dddddddddddddddddddddddddddddddd"
#define ID_FAILED "ffffffffffffffffffffffffffffffff"
#define ID_UNKNOWN "0123456789abcdef0123456789abcdef"
#define ID_BIG "9999999999999999999999999999999a"  //  done, thumbnail of UPLOAD_LIMIT bytes
#define THUMBNAIL "\x89PNG\r\n\x1A\nTHUMB"    //  a PNG's magic, then anything
#define ID_LIAR "cccccccccccccccccccccccccccccccc"  //  done, bytes that are not its format
#define THUMBNAIL_ETAG "0123456789abcdef0123456789abcdef01234567"     //  ID_DONE's rendition
#define CREATED_MS 1700000000123LL          //  2023-11-14T22:13:20.123Z
#define BOUNDARY "imgpTestBoundary42"

//  --------------------------------------------------------------------------
//  Sniffing

#define SNIFF_ALLOW(text, allow) imgp_sniff ((const uint8_t *) (text), sizeof (text) - 1, allow)
#define SNIFF(text) SNIFF_ALLOW (text, 0)
#define ALLOW_ALL (IMGP_SNIFF_SVG | IMGP_SNIFF_PDF | IMGP_SNIFF_MAGICK)

Test (sniff, accepts_each_supported_magic)
{
    cr_assert_str_eq (SNIFF ("\xFF\xD8\xFF\xE0\0\x10JFIF"), "jpeg");
    cr_assert_str_eq (SNIFF ("\x89PNG\r\n\x1A\n\0\0\0\rIHDR"), "png");
    cr_assert_str_eq (SNIFF ("GIF87a\x01\0\x01\0"), "gif");
    cr_assert_str_eq (SNIFF ("GIF89a\x01\0\x01\0"), "gif");
    cr_assert_str_eq (SNIFF ("RIFF\x24\0\0\0WEBPVP8 "), "webp");
    cr_assert_str_eq (SNIFF ("II*\0\x08\0\0\0"), "tiff");
    cr_assert_str_eq (SNIFF ("MM\0*\0\0\0\x08"), "tiff");
    cr_assert_str_eq (SNIFF ("\0\0\0\x18" "ftypheic\0\0\0\0mif1heic"), "heif");
    cr_assert_str_eq (SNIFF ("\0\0\0\x1c" "ftypavif\0\0\0\0avifmif1miaf"), "heif");
    cr_assert_str_eq (SNIFF ("\0\0\0\x14" "ftypavis\0\0\0\0avis"), "heif");
    //  Major brand unknown, HEIF brand among the compatible ones.
    cr_assert_str_eq (SNIFF ("\0\0\0\x18" "ftypmiaf\0\0\0\0miafmif1"), "heif");
}

Test (sniff, refuses_everything_else)
{
    cr_assert_null (SNIFF ("<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>"));
    cr_assert_null (SNIFF ("<svg width=\"10\" height=\"10\"></svg>"));
    cr_assert_null (SNIFF ("%PDF-1.7\n%\xE2\xE3\xCF\xD3\n"));
    cr_assert_null (SNIFF ("<!DOCTYPE html><html><body>hi</body></html>"));
    cr_assert_null (SNIFF ("hello, this is plain text\n"));
    cr_assert_null (SNIFF ("BM\x36\0\0\0\0\0\0\0\x36\0\0\0"));       //  BMP: not served
    cr_assert_null (SNIFF ("RIFF\x24\0\0\0WAVEfmt "));
    cr_assert_null (SNIFF ("\0\0\0\x18" "ftypisom\0\0\0\0isomiso2"));  //  MP4 video
    cr_assert_null (SNIFF ("\xFF\xD8"));                               //  too short
    cr_assert_null (SNIFF ("GIF90a"));
    cr_assert_null (SNIFF (""));
    cr_assert_null (imgp_sniff (NULL, 10, 0));
    uint8_t noise [256];
    for (size_t i = 0; i < sizeof noise; i++)
        noise [i] = (uint8_t) (i * 37 + 11);
    cr_assert_null (imgp_sniff (noise, sizeof noise, 0));
    //  A compatible-brand list that runs past the bytes given is not read.
    cr_assert_null (SNIFF ("\0\0\1\0" "ftypisom\0\0\0\0isom"));
}

Test (sniff, extra_loaders_only_when_allowed)
{
    static const char svg [] = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
    static const char xml [] = "\xEF\xBB\xBF  <?xml version=\"1.0\"?>\n<!-- drawn by hand -->\n"
                               "<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x.dtd\">\n"
                               "<SVG width=\"10\" height=\"10\"></SVG>";
    static const char pdf [] = "%PDF-1.7\n%\xE2\xE3\xCF\xD3\n";
    static const char bmp [] = "BM\x36\0\0\0\0\0\0\0\x36\0\0\0";
    cr_assert_null (SNIFF (svg));
    cr_assert_null (SNIFF (pdf));
    cr_assert_str_eq (SNIFF_ALLOW (svg, IMGP_SNIFF_SVG), "svg");
    cr_assert_str_eq (SNIFF_ALLOW (xml, IMGP_SNIFF_SVG), "svg");
    cr_assert_null (SNIFF_ALLOW (pdf, IMGP_SNIFF_SVG));
    cr_assert_str_eq (SNIFF_ALLOW (pdf, IMGP_SNIFF_PDF), "pdf");
    cr_assert_null (SNIFF_ALLOW (svg, IMGP_SNIFF_PDF));
    cr_assert_null (SNIFF_ALLOW (bmp, IMGP_SNIFF_SVG | IMGP_SNIFF_PDF));
    //  magick: anything not empty; the resizer decides.
    cr_assert_str_eq (SNIFF_ALLOW (bmp, IMGP_SNIFF_MAGICK), "magick");
    cr_assert_null (SNIFF_ALLOW ("", ALLOW_ALL));
    //  The six formats keep their names whatever is allowed.
    cr_assert_str_eq (SNIFF_ALLOW ("\x89PNG\r\n\x1A\n\0\0\0\rIHDR", ALLOW_ALL), "png");
    //  Text that is not SVG near the start.
    cr_assert_null (SNIFF_ALLOW ("hello <svg>", IMGP_SNIFF_SVG));
    cr_assert_null (SNIFF_ALLOW ("<html><body>no drawing here</body></html>", IMGP_SNIFF_SVG));
    char late [2048];
    memset (late, ' ', sizeof late);
    memcpy (late, "<?xml version=\"1.0\"?>", 21);
    memcpy (late + 1500, "<svg/>", 6);
    cr_assert_null (imgp_sniff ((const uint8_t *) late, sizeof late, IMGP_SNIFF_SVG));
}

Test (sniff, allow_list_uses_the_resizer_names)
{
    unsigned allow = 99;
    cr_assert_eq (imgp_sniff_allow_parse (NULL, &allow), 0);
    cr_assert_eq (allow, 0);
    cr_assert_eq (imgp_sniff_allow_parse ("", &allow), 0);
    cr_assert_eq (allow, 0);
    cr_assert_eq (imgp_sniff_allow_parse ("svg", &allow), 0);
    cr_assert_eq (allow, IMGP_SNIFF_SVG);
    cr_assert_eq (imgp_sniff_allow_parse (" PDF, svg ,,magick", &allow), 0);
    cr_assert_eq (allow, ALLOW_ALL);
    cr_assert_eq (imgp_sniff_allow_parse ("jpeg,png,webp,gif,tiff,heif", &allow), 0);
    cr_assert_eq (allow, 0, "the always-on formats add nothing");
    cr_assert_eq (imgp_sniff_allow_parse ("svg,bmpx", &allow), -1);
}

//  --------------------------------------------------------------------------
//  Shared upload buffer

Test (buf, keeps_bytes_across_resize_and_references)
{
    uint8_t *buf = imgp_buf_new (4);
    cr_assert_not_null (buf);
    memcpy (buf, "abcd", 4);
    cr_assert_eq (imgp_buf_resize (&buf, 1 << 20), 0);
    cr_assert_eq (memcmp (buf, "abcd", 4), 0);
    cr_assert_eq (imgp_buf_ref (buf), buf);
    imgp_buf_unref (buf, NULL);         //  the reference libzmq would drop
    cr_assert_eq (memcmp (buf, "abcd", 4), 0);
    imgp_buf_destroy (&buf);
    cr_assert_null (buf);
    imgp_buf_destroy (&buf);            //  twice is fine
}

//  --------------------------------------------------------------------------
//  Multipart bodies read in place (imgp_form_read_into)

#define FORM_FIELD_MAX (200 * 1000)

//  A body fed in chunks of 1..max_read bytes, a room of 1..max_room bytes
//  at a time, and where the field's bytes landed.
typedef struct {
    const char *body;           //  the whole body
    size_t size, at;            //  its size, bytes fed so far
    unsigned seed;              //  rand_r state for the chunk sizes
    size_t max_read, max_room;  //  largest read and room
    char *field;                //  the field as received
    size_t field_size;          //  bytes in it
    size_t in_place;            //  of which read straight into the room
} form_feed_t;

static int
s_feed_read (void *arg, char *buf, size_t size)
{
    form_feed_t *feed = arg;
    size_t n = 1 + (size_t) rand_r (&feed->seed) % feed->max_read;
    n = n < size ? n : size;
    n = n < feed->size - feed->at ? n : feed->size - feed->at;
    memcpy (buf, feed->body + feed->at, n);
    feed->at += n;
    return (int) n;
}

static char *
s_feed_room (void *arg, size_t *size)
{
    form_feed_t *feed = arg;
    size_t room = 1 + (size_t) rand_r (&feed->seed) % feed->max_room;
    size_t left = FORM_FIELD_MAX - feed->field_size;
    *size = room < left ? room : left;
    return feed->field + feed->field_size;
}

static int
s_feed_data (void *arg, const char *bytes, size_t len)
{
    form_feed_t *feed = arg;
    cr_assert_leq (feed->field_size + len, FORM_FIELD_MAX);
    if (bytes == feed->field + feed->field_size)
        feed->in_place += len;
    else
        memcpy (feed->field + feed->field_size, bytes, len);
    feed->field_size += len;
    return 0;
}

//  Content full of near-delimiters: CRLF, "--", and the boundary's prefixes.
static char *
s_form_content (const char *boundary, size_t size, unsigned seed)
{
    char *content = malloc (size);
    cr_assert_not_null (content);
    char near [96];
    int near_len = snprintf (near, sizeof near, "\r\n--%s", boundary);
    for (size_t i = 0; i < size; i++)
        content [i] = (char) rand_r (&seed);
    for (size_t i = 0; i + (size_t) near_len < size; i += 1 + (size_t) rand_r (&seed) % 3000) {
        size_t len = 1 + (size_t) rand_r (&seed) % ((size_t) near_len - 1);
        memcpy (content + i, near, len);
        content [i + len] = (char) (near [len] ^ 1);   //  a prefix, never the delimiter
    }
    return content;
}

Test (form, read_into_places_the_field_whatever_the_chunks)
{
    const char *boundaries [] = { "x", "imgpTestBoundary42",
        "0123456789012345678901234567890123456789012345678901234567890123456789" };
    size_t sizes [] = { 0, 1, 73, 16384, 16385, 150000 };
    size_t reads [] = { 1, 7, 16384, 100000 };
    size_t rooms [] = { 1, 80, 16384, 1000000 };
    char *field = malloc (FORM_FIELD_MAX);
    cr_assert_not_null (field);
    unsigned seed = 42;
    for (size_t b = 0; b < 3; b++)
    for (size_t z = 0; z < sizeof sizes / sizeof sizes [0]; z++) {
        char *content = s_form_content (boundaries [b], sizes [z], seed++);
        //  Another field before and after the image, and an epilogue.
        char head [512], tail [512];
        int head_len = snprintf (head, sizeof head,
            "preamble\r\n--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
            "hello\r\n--%s\r\nContent-Disposition: form-data; name=\"img\"; "
            "filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n",
            boundaries [b], boundaries [b]);
        int tail_len = snprintf (tail, sizeof tail,
            "\r\n--%s\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\n"
            "bye\r\n--%s--\r\nepilogue", boundaries [b], boundaries [b]);
        size_t size = (size_t) head_len + sizes [z] + (size_t) tail_len;
        char *body = malloc (size);
        cr_assert_not_null (body);
        memcpy (body, head, (size_t) head_len);
        memcpy (body + head_len, content, sizes [z]);
        memcpy (body + head_len + sizes [z], tail, (size_t) tail_len);
        for (size_t r = 0; r < 4; r++)
        for (size_t m = 0; m < 4; m++) {
            form_feed_t feed = { body, size, 0, seed++, reads [r], rooms [m], field, 0, 0 };
            char why [120] = "";
            imgp_form_result_t rc = imgp_form_read_into (boundaries [b], "img", s_feed_read,
                                                         s_feed_room, s_feed_data, &feed,
                                                         why, sizeof why);
            cr_assert_eq (rc, IMGP_FORM_OK, "boundary %zu size %zu read %zu room %zu: %d %s",
                          b, sizes [z], reads [r], rooms [m], rc, why);
            cr_assert_eq (feed.field_size, sizes [z], "boundary %zu size %zu read %zu room %zu",
                          b, sizes [z], reads [r], rooms [m]);
            cr_assert (memcmp (field, content, sizes [z]) == 0,
                       "boundary %zu size %zu read %zu room %zu: bytes differ", b, sizes [z],
                       reads [r], rooms [m]);
            //  Big reads into big rooms: nearly all of it read in place.
            if (reads [r] >= 16384 && rooms [m] >= 16384 && sizes [z] >= 150000)
                cr_expect_geq (feed.in_place, sizes [z] - 16384 - 80,
                               "only %zu of %zu bytes read in place", feed.in_place, sizes [z]);
        }
        free (body);
        free (content);
    }
    free (field);
}

Test (form, read_into_reports_a_body_cut_inside_the_field)
{
    const char *body = "--b\r\nContent-Disposition: form-data; name=\"img\"\r\n\r\n"
                       "0123456789abcdef0123456789\r\n--";
    char *field = malloc (FORM_FIELD_MAX);
    cr_assert_not_null (field);
    form_feed_t feed = { body, strlen (body), 0, 1, 5, 64, field, 0, 0 };
    char why [120] = "";
    imgp_form_result_t rc = imgp_form_read_into ("b", "img", s_feed_read, s_feed_room,
                                                 s_feed_data, &feed, why, sizeof why);
    cr_expect_eq (rc, IMGP_FORM_MALFORMED, "%d %s", rc, why);
    cr_expect_leq (feed.field_size, (size_t) 26);
    free (field);
}

//  --------------------------------------------------------------------------
//  Memory (imgp_mem)

#define DEEP_BYTES (64 * 1024)      //  stack a deep call touches
#define TRIM_STACK (1024 * 1024)    //  stack of the test's own thread

//  Touch DEEP_BYTES of stack below the caller and return a sum of them,
//  so the compiler keeps the array.
static __attribute__ ((noinline)) unsigned
s_deep_call (unsigned seed)
{
    volatile unsigned char deep [DEEP_BYTES];
    for (size_t i = 0; i < sizeof deep; i++)
        deep [i] = (unsigned char) (seed + i);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof deep; i += 4096)
        sum += deep [i];
    return sum;
}

//  Pages of [low, low + size) resident now.
static size_t
s_resident_pages (uintptr_t low, size_t size)
{
    size_t page = (size_t) sysconf (_SC_PAGESIZE);
    size_t pages = size / page;
    unsigned char *vec = malloc (pages);
    cr_assert_not_null (vec);
    cr_assert_eq (mincore ((void *) low, pages * page, vec), 0, "mincore: %s", strerror (errno));
    size_t resident = 0;
    for (size_t i = 0; i < pages; i++)
        resident += vec [i] & 1;
    free (vec);
    return resident;
}

typedef struct {
    size_t before;              //  stack pages resident after the deep call
    size_t after;               //  after the trim
    size_t trimmed;             //  bytes imgp_mem_stack_trim covered
    unsigned sums [2];          //  the deep call's result, before and after the trim
} trim_result_t;

static void *
s_trim_thread (void *args)
{
    trim_result_t *result = args;
    pthread_attr_t attr;
    void *addr;
    size_t size;
    cr_assert_eq (pthread_getattr_np (pthread_self (), &attr), 0);
    cr_assert_eq (pthread_attr_getstack (&attr, &addr, &size), 0);
    pthread_attr_destroy (&attr);
    result->sums [0] = s_deep_call (7);
    result->before = s_resident_pages ((uintptr_t) addr, size);
    result->trimmed = imgp_mem_stack_trim ();
    result->after = s_resident_pages ((uintptr_t) addr, size);
    //  The trimmed pages come back as fresh ones when used again.
    result->sums [1] = s_deep_call (7);
    return NULL;
}

Test (mem, stack_trim_gives_back_pages_below_the_caller)
{
    pthread_attr_t attr;
    pthread_t thread;
    trim_result_t result = { 0 };
    cr_assert_eq (pthread_attr_init (&attr), 0);
    cr_assert_eq (pthread_attr_setstacksize (&attr, TRIM_STACK), 0);
    cr_assert_eq (pthread_create (&thread, &attr, s_trim_thread, &result), 0);
    pthread_attr_destroy (&attr);
    cr_assert_eq (pthread_join (thread, NULL), 0);
    size_t deep_pages = DEEP_BYTES / (size_t) sysconf (_SC_PAGESIZE);
    cr_expect_geq (result.trimmed, (size_t) DEEP_BYTES, "trimmed %zu bytes", result.trimmed);
    cr_expect_geq (result.before, deep_pages, "%zu pages resident after the deep call",
                   result.before);
    //  Most of the deep call's pages gone (the frames above it may take a
    //  page more under a sanitizer).
    cr_expect_leq (result.after + deep_pages - 2, result.before,
                   "%zu pages resident after the trim, %zu before", result.after, result.before);
    cr_expect_eq (result.sums [0], result.sums [1], "the stack works after the trim");
}

static bool
s_trims_reach (imgp_mem_t *mem, uint64_t count, int deadline_ms)
{
    int64_t deadline = zclock_mono () + deadline_ms;
    while (imgp_mem_trims (mem) < count && zclock_mono () < deadline)
        zclock_sleep (10);
    return imgp_mem_trims (mem) >= count;
}

Test (mem, heap_is_trimmed_once_quiet_after_requests)
{
    imgp_mem_t *mem = imgp_mem_new (50, 60000);
    cr_assert_not_null (mem);
    //  Nothing served: nothing to give back.
    zclock_sleep (400);
    cr_expect_eq (imgp_mem_trims (mem), 0);
    //  Requests end, then quiet: one trim.
    for (int i = 0; i < 100; i++)
        imgp_mem_served (mem);
    cr_expect (s_trims_reach (mem, 1, 10000), "no trim within 10 s of going quiet");
    zclock_sleep (400);
    cr_expect_eq (imgp_mem_trims (mem), 1, "trims again with nothing served since");
    imgp_mem_served (mem);
    cr_expect (s_trims_reach (mem, 2, 10000), "no second trim after more requests");
    imgp_mem_destroy (&mem);
    imgp_mem_destroy (&mem);
    cr_assert_null (mem);
}

Test (mem, heap_is_trimmed_while_busy_too)
{
    //  Requests never stop: still trimmed every busy_ms.
    imgp_mem_t *mem = imgp_mem_new (60000, 200);
    cr_assert_not_null (mem);
    int64_t deadline = zclock_mono () + 10000;
    while (imgp_mem_trims (mem) < 2 && zclock_mono () < deadline) {
        imgp_mem_served (mem);
        zclock_sleep (5);
    }
    cr_expect_geq (imgp_mem_trims (mem), 2, "not trimmed while busy");
    imgp_mem_destroy (&mem);
}

//  --------------------------------------------------------------------------
//  Fake broker

typedef struct {
    pthread_mutex_t lock;       //  guards everything below
    char intake [64];           //  endpoint the frontend connects to
    char status [64];           //  endpoint the frontend connects to
    const char *submit_error;   //  answer SUBMIT with this ERROR code, NULL: ACCEPTED
    int drop_submits;           //  SUBMITs to leave unanswered first
    int submit_delay_ms;        //  wait this long before answering a SUBMIT
    int submits;                //  SUBMITs received
    char last_id [IMGP_ID_LEN + 1];     //  id of the last SUBMIT
    imgp_opts_t last_opts;      //  options of the last SUBMIT
    uint8_t *last_data;         //  copy of the bytes of the last SUBMIT
    size_t last_size;           //  their length
} fake_t;

static fake_t s_fake = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void
s_fake_record (imgp_msg_t *msg)
{
    pthread_mutex_lock (&s_fake.lock);
    s_fake.submits++;
    snprintf (s_fake.last_id, sizeof s_fake.last_id, "%s", msg->id);
    s_fake.last_opts = msg->opts;
    free (s_fake.last_data);
    s_fake.last_size = imgp_msg_size (msg);
    s_fake.last_data = malloc (s_fake.last_size + 1);
    memcpy (s_fake.last_data, imgp_msg_data (msg), s_fake.last_size);
    pthread_mutex_unlock (&s_fake.lock);
}

static imgp_msg_t *
s_fake_submit (imgp_msg_t *msg)
{
    s_fake_record (msg);
    pthread_mutex_lock (&s_fake.lock);
    bool drop = s_fake.drop_submits > 0;
    if (drop)
        s_fake.drop_submits--;
    const char *error = s_fake.submit_error;
    int delay_ms = s_fake.submit_delay_ms;
    pthread_mutex_unlock (&s_fake.lock);
    if (drop)
        return NULL;
    if (delay_ms)
        zclock_sleep (delay_ms);    //  a slow broker (spool on a slow disk)
    if (error)
        return imgp_msg_error_new (msg, error, "fake broker says %s", error);
    imgp_msg_t *reply = imgp_msg_reply_new (msg, IMGP_MSG_ACCEPTED);
    reply->state = IMGP_STATE_QUEUED;
    return reply;
}

static imgp_msg_t *
s_fake_info (imgp_msg_t *msg)
{
    imgp_state_t state;
    if (streq (msg->id, ID_QUEUED))
        state = IMGP_STATE_QUEUED;
    else
    if (streq (msg->id, ID_PROCESSING))
        state = IMGP_STATE_PROCESSING;
    else
    if (streq (msg->id, ID_DONE) || streq (msg->id, ID_BIG) || streq (msg->id, ID_LIAR))
        state = IMGP_STATE_DONE;
    else
    if (streq (msg->id, ID_FAILED))
        state = IMGP_STATE_FAILED;
    else
        return imgp_msg_error_new (msg, "not_found", "no job %s", msg->id);

    imgp_msg_t *info = imgp_msg_reply_new (msg, IMGP_MSG_INFO);
    info->state = state;
    info->created_at = CREATED_MS;
    info->updated_at = CREATED_MS + 1000;
    info->attempts = 1;
    if (state == IMGP_STATE_FAILED) {
        snprintf (info->code, sizeof info->code, "decode_error");
        snprintf (info->message, sizeof info->message, "the file is truncated");
    }
    if (state == IMGP_STATE_DONE && streq (msg->id, ID_BIG)) {
        info->result_count = 1;
        info->results [0] = (imgp_result_t) { 4096, 4096, IMGP_FORMAT_PNG, UPLOAD_LIMIT, 12,
                                              { 0, 0 }, "" };
        if (msg->type == IMGP_MSG_FETCH) {
            uint8_t *png = calloc (1, UPLOAD_LIMIT);
            memcpy (png, THUMBNAIL, 8);
            imgp_msg_set_data (info, png, UPLOAD_LIMIT, NULL);
        }
    }
    else
    if (state == IMGP_STATE_DONE && streq (msg->id, ID_LIAR)) {
        static const char html [] = "<html><script>alert(1)</script></html>";
        info->result_count = 1;
        info->results [0] = (imgp_result_t) { 100, 50, IMGP_FORMAT_PNG, sizeof html - 1, 12,
                                              { 0, 0 }, "" };
        if (msg->type == IMGP_MSG_FETCH)
            imgp_msg_set_data (info, strdup (html), sizeof html - 1, NULL);
    }
    else
    if (state == IMGP_STATE_DONE) {
        info->result_count = 1;
        info->results [0] = (imgp_result_t) { 100, 50, IMGP_FORMAT_PNG, 13, 12, { 100, 100 },
                                              THUMBNAIL_ETAG };
        if (msg->type == IMGP_MSG_FETCH)
            imgp_msg_set_data (info, strdup (THUMBNAIL), strlen (THUMBNAIL), NULL);
    }
    return info;
}

static imgp_msg_t *
s_fake_answer (imgp_msg_t *msg)
{
    switch (msg->type) {
        case IMGP_MSG_SUBMIT:
            return s_fake_submit (msg);
        case IMGP_MSG_STATUS:
        case IMGP_MSG_FETCH:
            return s_fake_info (msg);
        case IMGP_MSG_PING:
            return imgp_msg_reply_new (msg, IMGP_MSG_PONG);
        default:
            return imgp_msg_error_new (msg, "bad_request", "unexpected message");
    }
}

static void
s_fake_actor (zsock_t *pipe, void *args)
{
    (void) args;
    zsock_t *intake = zsock_new (ZMQ_ROUTER);
    zsock_t *status = zsock_new (ZMQ_ROUTER);
    int intake_port = zsock_bind (intake, "tcp://127.0.0.1:*");
    int status_port = zsock_bind (status, "tcp://127.0.0.1:*");
    snprintf (s_fake.intake, sizeof s_fake.intake, "tcp://127.0.0.1:%d", intake_port);
    snprintf (s_fake.status, sizeof s_fake.status, "tcp://127.0.0.1:%d", status_port);
    zsock_signal (pipe, 0);

    zpoller_t *poller = zpoller_new (pipe, intake, status, NULL);
    while (true) {
        zsock_t *which = zpoller_wait (poller, -1);
        if (!which || which == pipe)
            break;              //  $TERM or interrupted
        imgp_msg_t *msg = imgp_msg_recv (which);
        if (!msg)
            continue;
        imgp_msg_t *reply = s_fake_answer (msg);
        if (reply)
            imgp_msg_send (&reply, which);
        imgp_msg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&intake);
    zsock_destroy (&status);
}

//  --------------------------------------------------------------------------
//  Server fixtures

static zactor_t *s_broker;
static imgp_http_t *s_http;
static int s_port;

static imgp_http_config_t
s_config (const char *intake, const char *status)
{
    imgp_http_config_t config = {
        .listen = "127.0.0.1:0",
        .intake = intake,
        .status = status,
        .threads = 4,
        .max_upload = UPLOAD_LIMIT,
        .broker_timeout_ms = 1500,
        .head_timeout_ms = 5000,
        .keepalive_timeout_ms = 5000,
        .max_wait_s = 30,
        .upload_timeout_ms = 20000,
        .cache_max_age_s = 31536000,
    };
    return config;
}

static void
s_start_http_with (const imgp_http_config_t *config)
{
    s_http = imgp_http_new (config);
    cr_assert_not_null (s_http, "the server did not start");
    s_port = imgp_http_port (s_http);
    cr_assert_gt (s_port, 0);
}

static void
s_start_http (const char *intake, const char *status)
{
    imgp_http_config_t config = s_config (intake, status);
    s_start_http_with (&config);
}

static void
s_setup_broker (void)
{
    imgp_log_init ("test_frontend", getenv ("IMGP_TEST_VERBOSE") != NULL);
    s_broker = zactor_new (s_fake_actor, NULL);
}

static void
s_setup (void)
{
    s_setup_broker ();
    s_start_http (s_fake.intake, s_fake.status);
}

//  A frontend that takes SVG and PDF uploads (--allow-loaders svg,pdf).
static void
s_setup_extra (void)
{
    s_setup_broker ();
    imgp_http_config_t config = s_config (s_fake.intake, s_fake.status);
    config.sniff_allow = IMGP_SNIFF_SVG | IMGP_SNIFF_PDF;
    s_start_http_with (&config);
}

//  A frontend whose threads get no broker client: its upload limit is
//  over what a client accepts (main.c never lets that through).
//  A loopback port that nothing listens on: bound by a socket that never
//  listens (connections are refused) and kept until the test ends, so no
//  other test process running in parallel can bind it meanwhile.
static int s_dead_fds [2];

static int
s_dead_port (size_t slot)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    cr_assert_eq (bind (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    cr_assert_eq (getsockname (fd, (struct sockaddr *) &addr, &len), 0);
    s_dead_fds [slot] = fd;
    return ntohs (addr.sin_port);
}

static void
s_setup_down (void)
{
    imgp_log_init ("test_frontend", getenv ("IMGP_TEST_VERBOSE") != NULL);
    char intake [64], status [64];
    snprintf (intake, sizeof intake, "tcp://127.0.0.1:%d", s_dead_port (0));
    snprintf (status, sizeof status, "tcp://127.0.0.1:%d", s_dead_port (1));
    s_start_http (intake, status);
}

//  A frontend with one worker thread and short timeouts, so a thread held
//  by a slow client would show as the next request not being served.
#define SLOW_READ_MS 1000       //  --head-timeout-ms: one silent read
#define SLOW_UPLOAD_MS 5000     //  --upload-timeout-ms: the whole body

static void
s_setup_slow (void)
{
    s_setup_broker ();
    imgp_http_config_t config = s_config (s_fake.intake, s_fake.status);
    config.threads = 1;
    config.head_timeout_ms = SLOW_READ_MS;
    config.upload_timeout_ms = SLOW_UPLOAD_MS;
    s_start_http_with (&config);
}

static void
s_teardown (void)
{
    imgp_http_destroy (&s_http);
    zactor_destroy (&s_broker);
    for (size_t i = 0; i < sizeof s_dead_fds / sizeof s_dead_fds [0]; i++)
        if (s_dead_fds [i] > 0)
            close (s_dead_fds [i]);
    free (s_fake.last_data);
    s_fake.last_data = NULL;
    s_fake.submits = 0;
    s_fake.submit_delay_ms = 0;
}

TestSuite (http, .init = s_setup, .fini = s_teardown, .timeout = 30);
TestSuite (down, .init = s_setup_down, .fini = s_teardown, .timeout = 30);
TestSuite (extra, .init = s_setup_extra, .fini = s_teardown, .timeout = 30);
TestSuite (slow, .init = s_setup_slow, .fini = s_teardown, .timeout = 30);
TestSuite (link, .init = s_setup_broker, .fini = s_teardown, .timeout = 30);

//  --------------------------------------------------------------------------
//  HTTP client

typedef struct {
    int status;                 //  HTTP status, 0 when no response came
    char head [8192];           //  status line and headers
    char *body;                 //  body (NUL-terminated), owned
    size_t size;                //  body length
    int64_t ms;                 //  time from connect to the whole response
} response_t;

static void
s_response_free (response_t *response)
{
    free (response->body);
    memset (response, 0, sizeof *response);
}

//  Value of a response header (case-insensitive name), or NULL. Static buffer.
static const char *
s_header (response_t *response, const char *name)
{
    static char value [512];
    size_t len = strlen (name);
    for (const char *line = strstr (response->head, "\r\n"); line && line [2];
         line = strstr (line + 2, "\r\n")) {
        const char *start = line + 2;
        if (strncasecmp (start, name, len) == 0 && start [len] == ':') {
            start += len + 1;
            while (*start == ' ')
                start++;
            size_t n = strcspn (start, "\r\n");
            snprintf (value, sizeof value, "%.*s", (int) n, start);
            return value;
        }
    }
    return NULL;
}

static int
s_connect (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct timeval timeout = { 10, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) s_port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0, "connect failed");
    return fd;
}

static void
s_send_all (int fd, const void *data, size_t size)
{
    const char *at = data;
    while (size > 0) {
        ssize_t n = send (fd, at, size, MSG_NOSIGNAL);
        if (n <= 0)
            return;             //  the server may refuse early; its response tells
        at += n;
        size -= (size_t) n;
    }
}

//  Read one response: the head, then Content-Length bytes of body. The
//  body is kept as an offset: the buffer moves when it grows. `response`
//  is filled from empty, so callers need not clear it first.
static void
s_receive (int fd, response_t *response)
{
    memset (response, 0, sizeof *response);
    size_t cap = 1 << 16, have = 0, body = 0;
    char *data = malloc (cap + 1);
    long long length = -1;
    while (true) {
        if (body && length >= 0 && have - body >= (size_t) length)
            break;
        if (have == cap)
            data = realloc (data, (cap *= 2) + 1);
        ssize_t n = recv (fd, data + have, cap - have, 0);
        cr_assert_geq (n, 0, "no response within the receive timeout");
        if (n == 0)
            break;
        have += (size_t) n;
        data [have] = '\0';
        char *end = body ? NULL : strstr (data, "\r\n\r\n");
        if (end) {
            body = (size_t) (end - data) + 4;
            snprintf (response->head, sizeof response->head, "%.*s", (int) (end - data + 2), data);
            const char *cl = s_header (response, "Content-Length");
            length = cl ? atoll (cl) : -1;
        }
    }
    cr_assert (body > 0, "incomplete response head");
    response->size = have - body;
    response->body = malloc (response->size + 1);
    memcpy (response->body, data + body, response->size);
    response->body [response->size] = '\0';
    response->status = atoi (response->head + strlen ("HTTP/1.1 "));
    free (data);
}

//  Send `head` (without the blank line) and `body`, and read the response.
static void
s_exchange (const char *head, const void *body, size_t size, response_t *response)
{
    int64_t start = zclock_mono ();
    int fd = s_connect ();
    char *request = zsys_sprintf ("%s\r\n", head);
    s_send_all (fd, request, strlen (request));
    zstr_free (&request);
    if (size)
        s_send_all (fd, body, size);
    s_receive (fd, response);
    close (fd);
    response->ms = zclock_mono () - start;
}

static void
s_get (const char *method, const char *path, response_t *response)
{
    char head [1024];
    snprintf (head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n",
              method, path);
    s_exchange (head, NULL, 0, response);
}

static void
s_post (const char *path, const char *type, const void *body, size_t size,
        response_t *response)
{
    char head [1024];
    snprintf (head, sizeof head,
              "POST %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
              "Content-Type: %s\r\nContent-Length: %zu\r\n", path, type, size);
    s_exchange (head, body, size, response);
}

//  POST a multipart form: a text field (an option, enlarge=false: every
//  field beside img is one), then `field` holding the bytes.
static void
s_post_form (const char *path, const char *field, const void *data, size_t size,
             response_t *response)
{
    char *head = zsys_sprintf (
        "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"enlarge\"\r\n\r\nfalse\r\n"
        "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n", field);
    const char *tail = "\r\n--" BOUNDARY "--\r\n";
    size_t total = strlen (head) + size + strlen (tail);
    char *body = malloc (total);
    memcpy (body, head, strlen (head));
    memcpy (body + strlen (head), data, size);
    memcpy (body + strlen (head) + size, tail, strlen (tail));
    s_post (path, "multipart/form-data; boundary=" BOUNDARY, body, total, response);
    free (body);
    zstr_free (&head);
}

//  Bytes that start like a PNG, `size` in all.
static uint8_t *
s_fake_png (size_t size)
{
    uint8_t *data = malloc (size);
    memcpy (data, "\x89PNG\r\n\x1A\n", 8);
    for (size_t i = 8; i < size; i++)
        data [i] = (uint8_t) ((i * 7) % 251);
    return data;
}

//  POST a fake PNG of `size` bytes to /v1/images as a raw image/png body.
static void
s_post_png (size_t size, response_t *response)
{
    uint8_t *png = s_fake_png (size);
    s_post ("/v1/images", "image/png", png, size, response);
    free (png);
}

static json_t *
s_json (response_t *response)
{
    json_t *json = json_loadb (response->body, response->size, 0, NULL);
    cr_assert_not_null (json, "body is not JSON: %s", response->body);
    return json;
}

//  The response is a JSON error with this status and code.
static void
s_assert_error (response_t *response, int status, const char *code)
{
    cr_assert_eq (response->status, status, "want %d, got %d: %s", status, response->status,
                  response->body);
    cr_assert_str_eq (s_header (response, "Content-Type"), "application/json");
    json_t *json = s_json (response);
    const char *got = json_string_value (json_object_get (json_object_get (json, "error"), "code"));
    cr_assert_not_null (got, "no error.code in %s", response->body);
    cr_assert_str_eq (got, code);
    cr_assert_not_null (json_string_value (
        json_object_get (json_object_get (json, "error"), "message")));
    json_decref (json);
}

//  The helpers below make one request that must be refused, and say which
//  request it was when it is not (a loop over cases shows which case).

static void
s_assert_refused (const char *what, response_t *response, int status, const char *code)
{
    cr_assert_eq (response->status, status, "%s gave %d: %s", what, response->status,
                  response->body);
    s_assert_error (response, status, code);
    s_response_free (response);
}

//  `method` on `path` gets the JSON error `status` `code`.
static void
s_assert_get_error (const char *method, const char *path, int status, const char *code)
{
    response_t response;
    s_get (method, path, &response);
    s_assert_refused (path, &response, status, code);
}

//  POST of `body` as `type` gets the JSON error `status` `code`.
static void
s_assert_post_error (const char *path, const char *type, const void *body, size_t size,
                     int status, const char *code)
{
    response_t response;
    s_post (path, type, body, size, &response);
    s_assert_refused (path, &response, status, code);
}

//  A multipart POST of `data` in `field` gets the JSON error `status` `code`.
static void
s_assert_form_error (const char *path, const char *field, const void *data, size_t size,
                     int status, const char *code)
{
    response_t response;
    s_post_form (path, field, data, size, &response);
    s_assert_refused (path, &response, status, code);
}

static const char *
s_str (json_t *json, const char *key)
{
    const char *value = json_string_value (json_object_get (json, key));
    cr_assert_not_null (value, "no string '%s'", key);
    return value;
}

static void
s_fake_behave (const char *submit_error, int drop_submits)
{
    pthread_mutex_lock (&s_fake.lock);
    s_fake.submit_error = submit_error;
    s_fake.drop_submits = drop_submits;
    pthread_mutex_unlock (&s_fake.lock);
}

static void
s_fake_delay (int submit_delay_ms)
{
    pthread_mutex_lock (&s_fake.lock);
    s_fake.submit_delay_ms = submit_delay_ms;
    pthread_mutex_unlock (&s_fake.lock);
}

static int
s_submits (void)
{
    pthread_mutex_lock (&s_fake.lock);
    int submits = s_fake.submits;
    pthread_mutex_unlock (&s_fake.lock);
    return submits;
}

//  --------------------------------------------------------------------------
//  Uploads

//  202 with Location and the JSON body; returns the id (static buffer).
static const char *
s_assert_accepted (response_t *response)
{
    static char id [IMGP_ID_LEN + 1];
    cr_assert_eq (response->status, 202, "got %d: %s", response->status, response->body);
    json_t *json = s_json (response);
    snprintf (id, sizeof id, "%s", s_str (json, "id"));
    cr_assert (imgp_id_valid (id));
    cr_assert_str_eq (s_str (json, "status"), "queued");
    char want [128];
    snprintf (want, sizeof want, "/v1/images/%s", id);
    cr_assert_str_eq (s_str (json, "status_url"), want);
    cr_assert_str_eq (s_header (response, "Location"), want);
    snprintf (want, sizeof want, "/v1/images/%s/thumbnail", id);
    cr_assert_str_eq (s_str (json, "thumbnail_url"), want);
    json_decref (json);
    return id;
}

static void
s_assert_submitted (const char *id, const uint8_t *data, size_t size)
{
    pthread_mutex_lock (&s_fake.lock);
    cr_assert_str_eq (s_fake.last_id, id);
    cr_assert_eq (s_fake.last_size, size);
    cr_assert_eq (memcmp (s_fake.last_data, data, size), 0, "the broker got other bytes");
    pthread_mutex_unlock (&s_fake.lock);
}

Test (http, multipart_upload_is_accepted)
{
    size_t size = 20000;
    uint8_t *png = s_fake_png (size);
    response_t response;
    s_post_form ("/v1/images?width=200&format=webp", "img", png, size, &response);
    const char *id = s_assert_accepted (&response);
    s_assert_submitted (id, png, size);
    cr_assert_eq (s_fake.last_opts.width, 200);
    cr_assert_eq (s_fake.last_opts.height, 200);
    cr_assert_eq (s_fake.last_opts.format, IMGP_FORMAT_WEBP);
    s_response_free (&response);
    free (png);
}

Test (http, legacy_route_takes_uploads)
{
    uint8_t *png = s_fake_png (1000);
    response_t response;
    s_post_form ("/images", "img", png, 1000, &response);
    const char *id = s_assert_accepted (&response);
    s_assert_submitted (id, png, 1000);
    cr_assert_eq (s_fake.last_opts.width, 100);     //  defaults
    cr_assert_eq (s_fake.last_opts.format, IMGP_FORMAT_PNG);
    s_response_free (&response);
    free (png);
}

Test (http, raw_body_upload_is_accepted)
{
    uint8_t *png = s_fake_png (5000);
    response_t response;
    s_post ("/v1/images", "image/png", png, 5000, &response);
    s_assert_submitted (s_assert_accepted (&response), png, 5000);
    s_response_free (&response);

    const char jpeg [] = "\xFF\xD8\xFF\xE0 some jpeg bytes";
    s_post ("/v1/images?fit=cover&width=64&height=32", "application/octet-stream", jpeg,
            sizeof jpeg - 1, &response);
    s_assert_submitted (s_assert_accepted (&response), (const uint8_t *) jpeg, sizeof jpeg - 1);
    cr_assert_eq (s_fake.last_opts.fit, IMGP_FIT_COVER);
    cr_assert_eq (s_fake.last_opts.height, 32);
    s_response_free (&response);
    free (png);
}

//  Send `size` bytes as a chunked body in chunks of `chunk` bytes.
static void
s_post_chunked (const uint8_t *data, size_t size, size_t chunk, response_t *response)
{
    int fd = s_connect ();
    const char *head = "POST /v1/images HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                       "Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n";
    s_send_all (fd, head, strlen (head));
    for (size_t at = 0; at < size; at += chunk) {
        size_t n = size - at < chunk ? size - at : chunk;
        char line [32];
        snprintf (line, sizeof line, "%zx\r\n", n);
        s_send_all (fd, line, strlen (line));
        s_send_all (fd, data + at, n);
        s_send_all (fd, "\r\n", 2);
    }
    s_send_all (fd, "0\r\n\r\n", 5);
    s_receive (fd, response);
    close (fd);
}

Test (http, chunked_upload_is_counted_and_accepted)
{
    uint8_t *png = s_fake_png (30000);
    response_t response;
    s_post_chunked (png, 30000, 4096, &response);
    s_assert_submitted (s_assert_accepted (&response), png, 30000);
    s_response_free (&response);
    free (png);
}

Test (http, form_without_img_field_is_400)
{
    uint8_t *png = s_fake_png (1000);
    s_assert_form_error ("/v1/images", "file", png, 1000, 400, "bad_request");
    cr_assert_eq (s_submits (), 0);
    free (png);
}

Test (http, empty_upload_is_400)
{
    s_assert_post_error ("/v1/images", "image/png", "", 0, 400, "bad_request");
    s_assert_form_error ("/v1/images", "img", "", 0, 400, "bad_request");
    cr_assert_eq (s_submits (), 0);
}

Test (http, other_content_types_are_415)
{
    uint8_t *png = s_fake_png (100);
    s_assert_post_error ("/v1/images", "text/plain", png, 100, 415, "unsupported_media_type");
    s_assert_post_error ("/v1/images", "application/x-www-form-urlencoded", "img=abc", 7, 415,
                         "unsupported_media_type");
    cr_assert_eq (s_submits (), 0);
    free (png);
}

Test (http, non_images_are_415)
{
    static const char *bodies [] = {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>",
        "%PDF-1.4\n1 0 obj\n",
        "<!DOCTYPE html><html></html>",
        "just some text",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies [0]; i++) {
        size_t size = strlen (bodies [i]);
        s_assert_post_error ("/v1/images", "image/png", bodies [i], size, 415,
                             "unsupported_format");
        s_assert_form_error ("/v1/images", "img", bodies [i], size, 415, "unsupported_format");
    }
    cr_assert_eq (s_submits (), 0);
}

Test (http, declared_length_over_limit_is_413_before_the_body)
{
    response_t response;
    //  Only the head is sent: the answer must not wait for a body.
    s_exchange ("POST /v1/images HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                "Content-Length: 1000000000\r\n", NULL, 0, &response);
    s_assert_error (&response, 413, "too_large");
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    cr_log_info ("413 for a declared 1 GB upload after %lld ms", (long long) response.ms);
    cr_assert_lt (response.ms, 5000);
    s_response_free (&response);

    s_exchange ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                "Content-Type: multipart/form-data; boundary=" BOUNDARY "\r\n"
                "Content-Length: 1000000000\r\n", NULL, 0, &response);
    s_assert_error (&response, 413, "too_large");
    s_response_free (&response);
    cr_assert_eq (s_submits (), 0);
}

Test (http, counted_bytes_over_limit_are_413)
{
    uint8_t *png = s_fake_png (UPLOAD_LIMIT + 1);
    response_t response;
    s_post_chunked (png, UPLOAD_LIMIT + 1, 8192, &response);
    s_assert_error (&response, 413, "too_large");
    s_response_free (&response);
    //  Multipart may declare a little more than the limit; the image may not.
    s_assert_form_error ("/v1/images", "img", png, UPLOAD_LIMIT + 1, 413, "too_large");
    //  Exactly the limit is fine.
    s_post_form ("/v1/images", "img", png, UPLOAD_LIMIT, &response);
    s_assert_submitted (s_assert_accepted (&response), png, UPLOAD_LIMIT);
    s_response_free (&response);
    cr_assert_eq (s_submits (), 1);
    free (png);
}

Test (http, ambiguous_content_length_is_400)
{
    //  civetweb would frame these by the first number; a proxy may not.
    static const char *lengths [] = {
        "Content-Length: 12, 13\r\n",
        "Content-Length: 20\r\nContent-Length: 10\r\n",
        "Content-Length: +20\r\n",
    };
    uint8_t *png = s_fake_png (20);
    response_t response;
    for (size_t i = 0; i < sizeof lengths / sizeof lengths [0]; i++) {
        char *head = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                                   "Content-Type: image/png\r\n%s", lengths [i]);
        s_exchange (head, png, 20, &response);
        s_assert_error (&response, 400, "bad_request");
        cr_assert_str_eq (s_header (&response, "Connection"), "close");
        s_response_free (&response);
        zstr_free (&head);
    }
    //  The same length twice says one thing.
    s_exchange ("POST /v1/images HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                "Content-Length: 20\r\nContent-Length: 20\r\n", png, 20, &response);
    s_assert_submitted (s_assert_accepted (&response), png, 20);
    s_response_free (&response);
    cr_assert_eq (s_submits (), 1);
    free (png);
}

Test (http, post_without_a_length_is_411)
{
    //  The head alone: civetweb itself answers a text 400 ("Malformed
    //  message") when body bytes arrive together with a length-less head.
    response_t response;
    s_exchange ("POST /v1/images HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n",
                NULL, 0, &response);
    s_assert_error (&response, 411, "length_required");
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    s_response_free (&response);
    cr_assert_eq (s_submits (), 0);
}

Test (http, bad_options_are_400)
{
    static const char *queries [] = {
        "width=-1", "width=99999", "format=bmp", "quality=abc", "fit=stretch", "colour=red",
    };
    uint8_t *png = s_fake_png (100);
    for (size_t i = 0; i < sizeof queries / sizeof queries [0]; i++) {
        char path [128];
        snprintf (path, sizeof path, "/v1/images?%s", queries [i]);
        s_assert_post_error (path, "image/png", png, 100, 400, "bad_option");
    }
    cr_assert_eq (s_submits (), 0);
    free (png);
}

//  --------------------------------------------------------------------------
//  Ids, status, thumbnails

Test (http, malformed_ids_are_400)
{
    static const char *paths [] = {
        "/v1/images/0123456789abcdef0123456789abcdef0",          //  too long
        "/v1/images/0123456789ABCDEF0123456789ABCDEF",           //  uppercase
        "/v1/images/0123456789abcdef",                           //  too short
        "/v1/images/0123456789abcdef0123456789abcdeg",           //  not hex
        "/v1/images/../healthz",
        "/v1/images/%2e%2e/thumbnail",
        "/v1/images/%2E%2E",
        "/v1/images/",
        "/images/../../etc/passwd/thumbnail",
        "/images/0123456789ABCDEF0123456789ABCDEF/thumbnail",
        "/v1/images/0123456789abcdef0123456789abcdef0/thumbnail",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++)
        s_assert_get_error ("GET", paths [i], 400, "bad_id");
}

Test (http, unknown_id_is_404)
{
    s_assert_get_error ("GET", "/v1/images/" ID_UNKNOWN, 404, "not_found");
    s_assert_get_error ("GET", "/v1/images/" ID_UNKNOWN "/thumbnail", 404, "not_found");
}

Test (http, status_of_a_done_job)
{
    response_t response;
    s_get ("GET", "/v1/images/" ID_DONE, &response);
    cr_assert_eq (response.status, 200, "%s", response.body);
    cr_assert_str_eq (s_header (&response, "Content-Type"), "application/json");
    json_t *json = s_json (&response);
    cr_assert_str_eq (s_str (json, "id"), ID_DONE);
    cr_assert_str_eq (s_str (json, "status"), "done");
    cr_assert_str_eq (s_str (json, "created_at"), "2023-11-14T22:13:20.123Z");
    cr_assert_str_eq (s_str (json, "updated_at"), "2023-11-14T22:13:21.123Z");
    cr_assert_eq (json_integer_value (json_object_get (json, "attempts")), 1);
    cr_assert_null (json_object_get (json, "error"));
    json_t *result = json_object_get (json, "result");
    cr_assert_eq (json_integer_value (json_object_get (result, "width")), 100);
    cr_assert_eq (json_integer_value (json_object_get (result, "height")), 50);
    cr_assert_str_eq (s_str (result, "format"), "png");
    cr_assert_eq (json_integer_value (json_object_get (result, "bytes")), 13);
    json_decref (json);
    s_response_free (&response);
}

Test (http, status_of_a_failed_job)
{
    response_t response;
    s_get ("GET", "/v1/images/" ID_FAILED, &response);
    cr_assert_eq (response.status, 200);
    json_t *json = s_json (&response);
    cr_assert_str_eq (s_str (json, "status"), "failed");
    json_t *error = json_object_get (json, "error");
    cr_assert_str_eq (s_str (error, "code"), "decode_error");
    cr_assert_str_eq (s_str (error, "message"), "the file is truncated");
    cr_assert_null (json_object_get (json, "result"));
    json_decref (json);
    s_response_free (&response);
}

static void
s_assert_pending (const char *path, const char *state)
{
    response_t response;
    s_get ("GET", path, &response);
    cr_assert_eq (response.status, 202, "%s gave %d", path, response.status);
    cr_assert_str_eq (s_header (&response, "Retry-After"), "1");
    json_t *json = s_json (&response);
    cr_assert_str_eq (s_str (json, "status"), state);
    json_decref (json);
    s_response_free (&response);
}

Test (http, thumbnail_follows_the_job_state)
{
    s_assert_pending ("/v1/images/" ID_QUEUED "/thumbnail", "queued");
    s_assert_pending ("/v1/images/" ID_PROCESSING "/thumbnail", "processing");

    response_t response;
    s_get ("GET", "/v1/images/" ID_DONE "/thumbnail", &response);
    cr_assert_eq (response.status, 200);
    cr_assert_str_eq (s_header (&response, "Content-Type"), "image/png");
    cr_assert_str_eq (s_header (&response, "Content-Length"), "13");
    cr_assert_str_eq (s_header (&response, "X-Content-Type-Options"), "nosniff");
    cr_assert_str_eq (response.body, THUMBNAIL);
    s_response_free (&response);

    s_get ("GET", "/images/" ID_DONE "/thumbnail", &response);      //  legacy route
    cr_assert_eq (response.status, 200);
    cr_assert_str_eq (response.body, THUMBNAIL);
    s_response_free (&response);

    s_assert_get_error ("GET", "/v1/images/" ID_FAILED "/thumbnail", 422, "decode_error");
}

//  --------------------------------------------------------------------------
//  Methods, paths, broker answers

static void
s_assert_405 (const char *method, const char *path, const char *allow)
{
    response_t response;
    s_get (method, path, &response);
    s_assert_error (&response, 405, "method_not_allowed");
    cr_assert_str_eq (s_header (&response, "Allow"), allow);
    s_response_free (&response);
}

Test (http, wrong_method_is_405_with_allow)
{
    s_assert_405 ("GET", "/v1/images", "POST");
    s_assert_405 ("PUT", "/images", "POST");
    s_assert_405 ("DELETE", "/v1/images/" ID_DONE, "GET, HEAD");
    s_assert_405 ("POST", "/v1/images/" ID_DONE "/thumbnail", "GET, HEAD");
    s_assert_405 ("POST", "/healthz", "GET, HEAD");
    cr_assert_eq (s_submits (), 0);
}

Test (http, unknown_path_is_404_json)
{
    static const char *paths [] = {
        "/nope", "/v1", "/v1/imagesx", "/imagesx", "/healthzz",
        ("/v1/images/" ID_DONE "/other"), ("/images/" ID_DONE),     //  () for clang's
                                                                    //  -Wstring-concatenation
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++)
        s_assert_get_error ("GET", paths [i], 404, "not_found");
}

Test (http, queue_full_is_503_with_retry_after)
{
    s_fake_behave ("queue_full", 0);
    response_t response;
    s_post_png (100, &response);
    s_assert_error (&response, 503, "queue_full");
    cr_assert_not_null (s_header (&response, "Retry-After"));
    s_response_free (&response);
}

Test (http, broker_too_large_is_413)
{
    s_fake_behave ("too_large", 0);
    uint8_t *png = s_fake_png (100);
    s_assert_post_error ("/v1/images", "image/png", png, 100, 413, "too_large");
    free (png);
}

Test (http, lost_submit_is_retried_with_the_same_id)
{
    s_fake_behave (NULL, 1);
    uint8_t *png = s_fake_png (3000);
    response_t response;
    s_post ("/v1/images", "image/png", png, 3000, &response);
    const char *id = s_assert_accepted (&response);
    cr_assert_eq (s_submits (), 2, "one SUBMIT lost, one retried");
    s_assert_submitted (id, png, 3000);
    cr_log_info ("202 after a lost SUBMIT in %lld ms", (long long) response.ms);
    s_response_free (&response);
    free (png);
}

Test (http, unanswered_submit_is_503_with_the_id_to_check)
{
    //  The broker got the upload but never answered: it may hold the job,
    //  so the client is told its id instead of being left to upload again.
    s_fake_behave (NULL, 1000);
    response_t response;
    s_post_png (2000, &response);
    s_assert_error (&response, 503, "unavailable");
    cr_assert_not_null (s_header (&response, "Retry-After"));
    json_t *json = s_json (&response);
    const char *id = s_str (json, "id");
    pthread_mutex_lock (&s_fake.lock);
    cr_assert_str_eq (id, s_fake.last_id, "the id is the one the broker got");
    pthread_mutex_unlock (&s_fake.lock);
    char want [128];
    snprintf (want, sizeof want, "/v1/images/%s", id);
    cr_assert_str_eq (s_str (json, "status_url"), want);
    const char *message = json_string_value (
        json_object_get (json_object_get (json, "error"), "message"));
    cr_assert (strstr (message, "may have been accepted"), "%s", message);
    json_decref (json);
    cr_assert_geq (s_submits (), 2, "small SUBMITs are resent");
    cr_log_info ("503 for an unanswered SUBMIT after %lld ms, %d tries",
                 (long long) response.ms, s_submits ());
    cr_assert_lt (response.ms, 2000, "took %lld ms", (long long) response.ms);
    s_response_free (&response);
}

Test (http, thumbnail_bytes_not_of_its_format_are_never_served)
{
    s_assert_get_error ("GET", "/v1/images/" ID_LIAR "/thumbnail", 502, "bad_gateway");
}

Test (http, thumbnail_as_large_as_the_limit_is_served)
{
    //  The status socket's limit fits the largest thumbnail plus its header.
    response_t response;
    s_get ("GET", "/v1/images/" ID_BIG "/thumbnail", &response);
    cr_assert_eq (response.status, 200, "got %d: %.200s", response.status, response.body);
    cr_assert_eq (response.size, UPLOAD_LIMIT);
    s_response_free (&response);
}

Test (http, healthz_is_200_when_the_broker_answers)
{
    response_t response;
    s_get ("GET", "/healthz", &response);
    cr_assert_eq (response.status, 200);
    json_t *json = s_json (&response);
    cr_assert_str_eq (s_str (json, "status"), "ok");
    json_decref (json);
    s_response_free (&response);
}

Test (http, keep_alive_serves_several_requests)
{
    int fd = s_connect ();
    for (int i = 0; i < 3; i++) {
        const char *request = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
        s_send_all (fd, request, strlen (request));
        response_t response;
        s_receive (fd, &response);
        cr_assert_eq (response.status, 200);
        s_response_free (&response);
    }
    close (fd);
}

//  A HEAD response says the length of a body it does not carry: the next
//  response on the connection must start right after its head.
Test (http, head_response_carries_no_body)
{
    int fd = s_connect ();
    const char *requests = "HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
                           "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    s_send_all (fd, requests, strlen (requests));
    char text [4096];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof text - 1 && (n = recv (fd, text + have, sizeof text - 1 - have, 0)) > 0)
        have += (size_t) n;
    text [have] = 0;
    close (fd);
    const char *end = strstr (text, "\r\n\r\n");
    cr_assert_not_null (end, "no response head: %s", text);
    cr_assert (strncmp (end + 4, "HTTP/1.1 200", 12) == 0,
               "bytes between the HEAD response and the next one: %s", text);
}

//  --------------------------------------------------------------------------
//  Expect: 100-continue

//  Read an interim response, up to its blank line and not a byte more, so
//  the final response is still there for s_receive.
static void
s_receive_interim (int fd, char *head, size_t size)
{
    size_t have = 0;
    while (have < 4 || memcmp (head + have - 4, "\r\n\r\n", 4) != 0) {
        cr_assert_lt (have + 1, size, "interim response too long: %.*s", (int) have, head);
        ssize_t n = recv (fd, head + have, 1, 0);
        cr_assert_eq (n, 1, "no interim response within the receive timeout");
        have++;
    }
    head [have] = '\0';
}

//  The server closed the connection: no further response comes, only EOF
//  (or a reset), within the receive timeout.
static void
s_assert_closed (int fd)
{
    char byte;
    ssize_t n = recv (fd, &byte, 1, 0);
    cr_assert (n == 0 || (n < 0 && errno == ECONNRESET),
               "the connection stayed open (recv %zd, %s)", n, n < 0 ? strerror (errno) : "");
}

//  POST the head of an upload of `size` bytes with an Expect header
//  (100-continue: the client waits for a go-ahead before the body).
static int
s_post_expecting (const char *path, const char *type, size_t size, const char *expect)
{
    int fd = s_connect ();
    char *head = zsys_sprintf ("POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\n"
                               "Content-Length: %zu\r\nExpect: %s\r\n\r\n",
                               path, type, size, expect);
    s_send_all (fd, head, strlen (head));
    zstr_free (&head);
    return fd;
}

Test (http, expect_100_continue_is_answered_before_the_body)
{
    uint8_t *png = s_fake_png (20000);
    int fd = s_post_expecting ("/v1/images", "image/png", 20000, "100-continue");
    char interim [256];
    s_receive_interim (fd, interim, sizeof interim);
    cr_assert_str_eq (interim, "HTTP/1.1 100 Continue\r\n\r\n");

    s_send_all (fd, png, 20000);
    response_t response;
    s_receive (fd, &response);
    cr_assert (strncmp (response.head, "HTTP/1.1 202 ", 13) == 0, "head: %s", response.head);
    s_assert_submitted (s_assert_accepted (&response), png, 20000);
    cr_assert_str_eq (s_header (&response, "Connection"), "keep-alive");
    s_response_free (&response);

    //  The connection is in step: it serves the next request.
    const char *next = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    s_send_all (fd, next, strlen (next));
    s_receive (fd, &response);
    cr_assert (strncmp (response.head, "HTTP/1.1 200 ", 13) == 0, "head: %s", response.head);
    s_response_free (&response);
    close (fd);
    free (png);
}

Test (http, expect_100_continue_on_a_multipart_upload)
{
    uint8_t *png = s_fake_png (3000);
    char *part = zsys_sprintf (
        "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"img\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n");
    const char *tail = "\r\n--" BOUNDARY "--\r\n";
    size_t total = strlen (part) + 3000 + strlen (tail);
    int fd = s_post_expecting ("/v1/images", "multipart/form-data; boundary=" BOUNDARY, total,
                               "100-continue");
    char interim [256];
    s_receive_interim (fd, interim, sizeof interim);
    cr_assert_str_eq (interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s_send_all (fd, part, strlen (part));
    s_send_all (fd, png, 3000);
    s_send_all (fd, tail, strlen (tail));
    response_t response;
    s_receive (fd, &response);
    s_assert_submitted (s_assert_accepted (&response), png, 3000);
    s_response_free (&response);
    close (fd);
    zstr_free (&part);
    free (png);
}

//  Requests refused from the head alone: the answer is the error, with no
//  "100 Continue" first, and the connection closes (the body never came).
//  An expectation other than 100-continue is refused with 417.
Test (http, refused_uploads_get_no_100_continue)
{
    static const struct {
        const char *path;       //  request path
        const char *type;       //  Content-Type
        size_t size;            //  declared Content-Length
        const char *expect;     //  Expect header
        int status;             //  answer
        const char *code;       //  its error code
    } cases [] = {
        { "/v1/images", "image/png", UPLOAD_LIMIT + 1, "100-continue", 413, "too_large" },
        { "/v1/images", "image/png", 1000000000, "100-continue", 413, "too_large" },
        { "/v1/images", "text/plain", 1000, "100-continue", 415, "unsupported_media_type" },
        { "/v1/images?width=huge", "image/png", 1000, "100-continue", 400, "bad_option" },
        { "/healthz", "image/png", 1000, "100-continue", 405, "method_not_allowed" },
        { "/v1/images/" ID_DONE "/thumbnail", "image/png", 1000, "100-Continue", 405,
          "method_not_allowed" },
        { "/nope", "image/png", 1000, "100-continue", 404, "not_found" },
        { "/v1/images/nope", "image/png", 1000, "100-continue", 400, "bad_id" },
        { "/v1/images", "image/png", 1000, "something-else", 417, "expectation_failed" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int fd = s_post_expecting (cases [i].path, cases [i].type, cases [i].size,
                                   cases [i].expect);
        response_t response;
        s_receive (fd, &response);
        char status_line [32];
        snprintf (status_line, sizeof status_line, "HTTP/1.1 %d ", cases [i].status);
        cr_assert (strncmp (response.head, status_line, strlen (status_line)) == 0,
                   "%s: want %d first, got: %s", cases [i].path, cases [i].status, response.head);
        s_assert_error (&response, cases [i].status, cases [i].code);
        cr_assert_str_eq (s_header (&response, "Connection"), "close");
        s_assert_closed (fd);
        s_response_free (&response);
        close (fd);
    }
    cr_assert_eq (s_submits (), 0);
}

Test (http, http_1_0_client_gets_no_100_continue)
{
    uint8_t *png = s_fake_png (2000);
    char *head = zsys_sprintf ("POST /v1/images HTTP/1.0\r\nContent-Type: image/png\r\n"
                               "Content-Length: 2000\r\nExpect: 100-continue\r\n");
    response_t response;
    s_exchange (head, png, 2000, &response);
    cr_assert (strncmp (response.head, "HTTP/1.0 202 ", 13) == 0, "head: %s", response.head);
    s_assert_submitted (s_assert_accepted (&response), png, 2000);
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    s_response_free (&response);
    zstr_free (&head);
    free (png);
}

Test (http, error_with_an_unread_body_closes_the_connection)
{
    //  The body looks like a request: it must never be answered as one.
    const char *body = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    int fd = s_connect ();
    char *head = zsys_sprintf ("POST /nope HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                               "Content-Length: %zu\r\n\r\n%s", strlen (body), body);
    s_send_all (fd, head, strlen (head));
    response_t response;
    s_receive (fd, &response);
    s_assert_error (&response, 404, "not_found");
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    s_assert_closed (fd);
    s_response_free (&response);
    zstr_free (&head);
    close (fd);
}

//  --------------------------------------------------------------------------
//  Slow and stalled uploads: 408, and the one worker thread is free again

//  Start an upload of one kind ("raw", "chunked" or "form") that declares
//  more than it sends: the head and the first 1000 body bytes (500 of a
//  1000-byte chunk). Any further byte sent is a valid continuation.
static int
s_upload_start (const char *kind)
{
    char filler [1001];
    memset (filler, 'x', 1000);
    filler [1000] = '\0';
    char *request;
    if (streq (kind, "raw"))
        request = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                                "Content-Type: image/png\r\nContent-Length: 10000\r\n\r\n%s",
                                filler);
    else
    if (streq (kind, "chunked"))
        request = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                                "Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n"
                                "\r\n3e8\r\n%.500s", filler);
    else
        request = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                                "Content-Type: multipart/form-data; boundary=" BOUNDARY "\r\n"
                                "Content-Length: 20000\r\n\r\n--" BOUNDARY "\r\n"
                                "Content-Disposition: form-data; name=\"img\"; filename=\"a\"\r\n"
                                "Content-Type: image/png\r\n\r\n%s", filler);
    int fd = s_connect ();
    s_send_all (fd, request, strlen (request));
    zstr_free (&request);
    return fd;
}

//  The upload on `fd` was answered 408 request_timeout, with a message
//  that has `why` in it, no sooner than `min_ms` after `start`; then the
//  connection closed and the one worker thread serves a new connection.
static void
s_assert_timed_out (int fd, int64_t start, int64_t min_ms, const char *why)
{
    response_t response;
    s_receive (fd, &response);
    int64_t ms = zclock_mono () - start;
    s_assert_error (&response, 408, "request_timeout");
    cr_assert (strstr (response.body, why), "want '%s' in %s", why, response.body);
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    cr_log_info ("408 after %lld ms: %s", (long long) ms, response.body);
    cr_assert_geq (ms, min_ms, "408 came too early, after %lld ms", (long long) ms);
    s_assert_closed (fd);
    s_response_free (&response);
    close (fd);
    cr_assert_eq (s_submits (), 0);

    s_get ("GET", "/healthz", &response);
    cr_assert_eq (response.status, 200, "the worker thread is still held");
    s_response_free (&response);
}

//  The client sends part of the body, then nothing: civetweb's read
//  timeout ends it, long before the upload deadline.
static void
s_assert_stall_is_408 (const char *kind)
{
    int64_t start = zclock_mono ();
    int fd = s_upload_start (kind);
    s_assert_timed_out (fd, start, SLOW_READ_MS, "no upload bytes arrived");
}

//  The client sends a byte every 100 ms: each read is well inside
//  --head-timeout-ms, the whole body is not inside --upload-timeout-ms.
static void
s_assert_dribble_is_408 (const char *kind)
{
    int64_t start = zclock_mono ();
    int fd = s_upload_start (kind);
    struct pollfd answer = { .fd = fd, .events = POLLIN };
    while (poll (&answer, 1, 100) == 0) {
        cr_assert_lt (zclock_mono () - start, SLOW_UPLOAD_MS + 10000, "no answer in time");
        s_send_all (fd, "x", 1);
    }
    s_assert_timed_out (fd, start, SLOW_UPLOAD_MS, "the upload took longer than");
}

Test (slow, stalled_raw_body_is_408)
{
    s_assert_stall_is_408 ("raw");
}

Test (slow, stalled_chunked_body_is_408)
{
    s_assert_stall_is_408 ("chunked");
}

Test (slow, stalled_multipart_body_is_408)
{
    s_assert_stall_is_408 ("form");
}

Test (slow, dribbled_raw_body_is_408_at_the_upload_deadline)
{
    s_assert_dribble_is_408 ("raw");
}

Test (slow, dribbled_chunked_body_is_408_at_the_upload_deadline)
{
    s_assert_dribble_is_408 ("chunked");
}

Test (slow, dribbled_multipart_body_is_408_at_the_upload_deadline)
{
    s_assert_dribble_is_408 ("form");
}

Test (slow, body_cut_short_by_the_client_is_400)
{
    //  The client half-closes mid-body: gone, not slow.
    static const char *kinds [] = { "raw", "chunked", "form" };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds [0]; i++) {
        int fd = s_upload_start (kinds [i]);
        shutdown (fd, SHUT_WR);
        response_t response;
        s_receive (fd, &response);
        s_assert_error (&response, 400, "bad_request");
        cr_assert_str_eq (s_header (&response, "Connection"), "close");
        s_response_free (&response);
        close (fd);
    }
    cr_assert_eq (s_submits (), 0);
}

//  --------------------------------------------------------------------------
//  Broker down

//  With no broker connected a request cannot leave: the answer comes after
//  the short wait for a connection, not after --broker-timeout-ms.
#define FAST_503_MS 1000

Test (down, upload_is_503_with_retry_after_in_time)
{
    response_t response;
    s_post_png (1000, &response);
    s_assert_error (&response, 503, "unavailable");
    cr_assert_not_null (s_header (&response, "Retry-After"));
    cr_log_info ("503 with the broker down after %lld ms", (long long) response.ms);
    cr_assert_lt (response.ms, FAST_503_MS, "took %lld ms", (long long) response.ms);
    json_t *json = s_json (&response);
    cr_assert_null (json_object_get (json, "id"), "nothing left: no job to look up");
    json_decref (json);
    s_response_free (&response);
}

Test (down, healthz_and_status_are_503)
{
    response_t response;
    s_get ("GET", "/healthz", &response);
    s_assert_error (&response, 503, "unavailable");
    cr_assert_lt (response.ms, FAST_503_MS, "took %lld ms", (long long) response.ms);
    s_response_free (&response);
    s_get ("GET", "/v1/images/" ID_DONE, &response);
    s_assert_error (&response, 503, "unavailable");
    cr_assert_not_null (s_header (&response, "Retry-After"));
    s_response_free (&response);
    //  Ids are still checked first.
    s_assert_get_error ("GET", "/v1/images/nope", 400, "bad_id");
}

//  --------------------------------------------------------------------------
//  Extra loaders (--allow-loaders svg,pdf)

Test (extra, allowed_loaders_pass_the_sniffer)
{
    static const char svg [] = "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\" "
                               "width=\"10\" height=\"10\"/>";
    static const char pdf [] = "%PDF-1.4\n1 0 obj\n";
    response_t response;
    s_post ("/v1/images", "image/svg+xml", svg, strlen (svg), &response);
    s_assert_submitted (s_assert_accepted (&response), (const uint8_t *) svg, strlen (svg));
    s_response_free (&response);
    s_post_form ("/v1/images", "img", pdf, strlen (pdf), &response);
    s_assert_submitted (s_assert_accepted (&response), (const uint8_t *) pdf, strlen (pdf));
    s_response_free (&response);
    //  Not allowed: magick's catch-all.
    s_assert_post_error ("/v1/images", "image/png", "just some text", 14, 415,
                         "unsupported_format");
    cr_assert_eq (s_submits (), 2);
}

//  --------------------------------------------------------------------------
//  A thread without a broker client

Test (link, a_server_without_its_link_does_not_start)
{
    imgp_http_config_t config = s_config (s_fake.intake, s_fake.status);
    config.max_upload = (size_t) IMGP_UPLOAD_LIMIT_MAX + 1;    //  no link for that
    imgp_http_t *http = imgp_http_new (&config);
    cr_assert_null (http);
}

//  --------------------------------------------------------------------------
//  The broker link alone: time budgets, many calls at once

#define CLIENT_TIMEOUT_MS 300

//  SUBMIT `size` bytes with a fresh id; returns the reply (or NULL).
static imgp_msg_t *
s_client_submit (imgp_link_t *client, size_t size, bool *sent, int64_t *ms)
{
    char id [IMGP_ID_LEN + 1];
    cr_assert_eq (imgp_id_new (id), 0);
    imgp_opts_t opts;
    imgp_opts_default (&opts);
    uint8_t *data = imgp_buf_new (size);
    cr_assert_not_null (data);
    memset (data, 7, size);
    int64_t start = zclock_mono ();
    imgp_link_request_t request = {
        .type = IMGP_MSG_SUBMIT, .id = id, .opts = &opts, .data = data, .size = size
    };
    imgp_msg_t *reply = imgp_link_call (client, &request, sent);
    *ms = zclock_mono () - start;
    imgp_buf_destroy (&data);   //  the link holds its own references
    return reply;
}

Test (link, unanswered_small_submit_is_resent_then_given_up)
{
    s_fake_behave (NULL, 1000);
    imgp_link_t *client =
        imgp_link_new (s_fake.intake, s_fake.status, CLIENT_TIMEOUT_MS, UPLOAD_LIMIT);
    cr_assert_not_null (client);
    bool sent = false;
    int64_t ms;
    imgp_msg_t *reply = s_client_submit (client, 1000, &sent, &ms);
    cr_assert_null (reply, "the broker never answers");
    cr_assert (sent, "the SUBMIT did leave");
    cr_log_info ("small SUBMIT given up after %lld ms, %d tries", (long long) ms, s_submits ());
    cr_assert_geq (ms, CLIENT_TIMEOUT_MS - 20);
    cr_assert_lt (ms, CLIENT_TIMEOUT_MS + 500);
    cr_assert_geq (s_submits (), 2, "a small SUBMIT is resent within the budget");
    imgp_link_destroy (&client);
}

Test (link, large_submit_is_sent_once_and_waited_for)
{
    //  8 MB at the assumed 10 MB/s: 800 ms more than the 300 ms budget,
    //  enough for a broker that answers after 600 ms.
    s_fake_delay (2 * CLIENT_TIMEOUT_MS);
    size_t size = 8000000;
    imgp_link_t *client =
        imgp_link_new (s_fake.intake, s_fake.status, CLIENT_TIMEOUT_MS, UPLOAD_LIMIT);
    cr_assert_not_null (client);
    bool sent = false;
    int64_t ms;
    imgp_msg_t *reply = s_client_submit (client, size, &sent, &ms);
    cr_assert_not_null (reply, "no reply after %lld ms", (long long) ms);
    cr_assert_eq (reply->type, IMGP_MSG_ACCEPTED);
    cr_assert (sent);
    cr_assert_eq (s_submits (), 1, "sent once, not every %d ms", CLIENT_TIMEOUT_MS / 3);
    pthread_mutex_lock (&s_fake.lock);
    cr_assert_eq (s_fake.last_size, size);
    pthread_mutex_unlock (&s_fake.lock);
    cr_log_info ("8 MB SUBMIT answered after %lld ms", (long long) ms);
    imgp_msg_destroy (&reply);
    imgp_link_destroy (&client);
}

Test (link, no_broker_fails_fast_and_sends_nothing)
{
    char intake [64], status [64];
    snprintf (intake, sizeof intake, "tcp://127.0.0.1:%d", s_dead_port (0));
    snprintf (status, sizeof status, "tcp://127.0.0.1:%d", s_dead_port (1));
    imgp_link_t *client = imgp_link_new (intake, status, 1500, UPLOAD_LIMIT);
    cr_assert_not_null (client);
    bool sent = true;
    int64_t ms;
    imgp_msg_t *reply = s_client_submit (client, 4000000, &sent, &ms);
    cr_assert_null (reply);
    cr_assert_not (sent, "nothing can have left");
    cr_assert_lt (ms, FAST_503_MS, "took %lld ms", (long long) ms);
    int64_t start = zclock_mono ();
    imgp_link_request_t ping = { .type = IMGP_MSG_PING, .id = "" };
    cr_assert_null (imgp_link_call (client, &ping, NULL));
    cr_assert_lt (zclock_mono () - start, FAST_503_MS);
    imgp_link_destroy (&client);
}

Test (link, bad_arguments_make_no_client)
{
    cr_assert_null (imgp_link_new ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 0, 100));
    cr_assert_null (imgp_link_new ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 100, 0));
    cr_assert_null (imgp_link_new ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 100,
                                   IMGP_UPLOAD_LIMIT_MAX + 1));
    cr_assert_null (imgp_link_new (NULL, "tcp://127.0.0.1:2", 100, 100));
    imgp_link_t *client = imgp_link_new ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 100,
                                         IMGP_UPLOAD_LIMIT_MAX);
    cr_assert_not_null (client);
    imgp_link_destroy (&client);
    imgp_link_destroy (&client);
}

//  Many threads, one link: each call gets the reply to its own request,
//  matched by tag, never another thread's.
#define CALLERS 64
#define CALLS_EACH 20

static void *
s_caller (void *args)
{
    imgp_link_t *client = args;
    static const char *ids [] = { ID_QUEUED, ID_PROCESSING, ID_DONE, ID_FAILED, ID_UNKNOWN };
    intptr_t wrong = 0;
    for (int i = 0; i < CALLS_EACH; i++) {
        const char *id = ids [(size_t) i % 5];
        imgp_link_request_t request = { .type = i % 2 ? IMGP_MSG_FETCH : IMGP_MSG_STATUS,
                                        .id = id };
        imgp_msg_t *reply = imgp_link_call (client, &request, NULL);
        bool right = reply && (reply->type == IMGP_MSG_INFO || reply->type == IMGP_MSG_ERROR)
                  && streq (reply->id, id)
                  && (reply->type == IMGP_MSG_ERROR) == streq (id, ID_UNKNOWN);
        if (!right)
            wrong++;
        imgp_msg_destroy (&reply);
    }
    return (void *) wrong;
}

Test (link, many_threads_each_get_their_own_reply)
{
    imgp_link_t *client = imgp_link_new (s_fake.intake, s_fake.status, 5000, UPLOAD_LIMIT);
    cr_assert_not_null (client);
    pthread_t threads [CALLERS];
    for (int i = 0; i < CALLERS; i++)
        cr_assert_eq (pthread_create (&threads [i], NULL, s_caller, client), 0);
    intptr_t wrong = 0;
    for (int i = 0; i < CALLERS; i++) {
        void *result;
        pthread_join (threads [i], &result);
        wrong += (intptr_t) result;
    }
    cr_assert_eq (wrong, 0, "%ld of %d calls got no reply or another's",
                  (long) wrong, CALLERS * CALLS_EACH);
    cr_assert_eq (imgp_link_pending (client), 0);
    imgp_link_destroy (&client);
}

//  --------------------------------------------------------------------------
//  Strict framing (issue 8): smuggling, bad chunks, repeated fields, ids,
//  boundaries of every length RFC 2046 allows

//  Send `head` and `body` on one connection, read one response, and
//  assert the server closes the connection after it, so nothing after the
//  body can run as a request.
static void
s_exchange_closed (const char *head, const char *body, response_t *response)
{
    int fd = s_connect ();
    char *request = zsys_sprintf ("%s\r\n%s", head, body);
    s_send_all (fd, request, strlen (request));
    zstr_free (&request);
    s_receive (fd, response);
    s_assert_closed (fd);
    close (fd);
}

Test (http, length_with_chunked_is_400_and_the_hidden_request_never_runs)
{
    //  Framed by Content-Length (as a proxy might), the body is "0\r\n\r\n";
    //  by chunked, the body ends there and a second request follows.
    static const char smuggled [] =
        "0\r\n\r\nGET /v1/images/" ID_DONE "/thumbnail HTTP/1.1\r\nHost: x\r\n\r\n";
    char *head = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                               "Content-Type: image/png\r\nContent-Length: %zu\r\n"
                               "Transfer-Encoding: chunked\r\n", strlen (smuggled));
    response_t response;
    s_exchange_closed (head, smuggled, &response);
    s_assert_error (&response, 400, "bad_request");
    cr_assert_str_eq (s_header (&response, "Connection"), "close");
    s_response_free (&response);
    zstr_free (&head);
    //  Also on a GET, whose body nobody reads.
    s_exchange_closed ("GET /v1/images/" ID_DONE " HTTP/1.1\r\nHost: test\r\n"
                       "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", smuggled,
                       &response);
    s_assert_error (&response, 400, "bad_request");
    s_response_free (&response);
    cr_assert_eq (s_submits (), 0);
}

Test (http, bad_chunk_size_is_400_and_closes)
{
    response_t response;
    s_exchange_closed ("POST /v1/images HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                       "Transfer-Encoding: chunked\r\n",
                       "zz\r\n\x89PNG\r\n\x1A\n\r\n0\r\n\r\n", &response);
    s_assert_error (&response, 400, "bad_request");
    s_response_free (&response);
    cr_assert_eq (s_submits (), 0);
}

Test (http, ids_with_escapes_or_nul_are_400)
{
    //  An escaped 'd' is the same URL (RFC 3986 6.2.2.2): that id is valid.
    response_t response;
    s_get ("GET", "/v1/images/%64ddddddddddddddddddddddddddddddd", &response);
    cr_assert_eq (response.status, 200);
    s_response_free (&response);
    static const char *paths [] = {
        "/v1/images/ddddddddddddddddddddddddddddddd%67",   //  an escaped 'g'
        "/v1/images/ddddddddddddddddddddddddddddddd%C3%A9",
        "/v1/images/DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD",
        "/v1/images/dddddddddddddddd%2fdddddddddddddddd",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++)
        s_assert_get_error ("GET", paths [i], 400, "bad_id");
    //  An escaped NUL (which civetweb's own decoding turned into the end of
    //  the path: {id}%00/thumbnail became the status route) or a broken
    //  escape: the path itself is refused.
    static const char *broken [] = {
        "/v1/images/ddddddddddddddddddddddddddddddd%00",
        "/v1/images/dddddddddddddddddddddddddddddddd%00/thumbnail",
        "/v1/images/%00", "/v1/images/%zz", "/healthz%4",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken [0]; i++)
        s_assert_get_error ("GET", broken [i], 400, "bad_request");
    //  A raw NUL inside the request line: refused, never looked up.
    static const char raw [] = "GET /v1/images/dddddddddddddddddddddddddddddddd\0/thumbnail "
                               "HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    int fd = s_connect ();
    s_send_all (fd, raw, sizeof raw - 1);
    s_receive (fd, &response);
    close (fd);
    cr_assert_eq (response.status, 400, "raw NUL: got %d: %.200s", response.status,
                  response.body);
    s_response_free (&response);
}

//  A multipart upload with `boundary` in a Content-Type of `type_tail`
//  (the text after "multipart/form-data").
static void
s_post_form_with (const char *type_tail, const char *boundary, const char *parts,
                  response_t *response)
{
    char *body = zsys_sprintf ("%s--%s--\r\n", parts, boundary);
    char *type = zsys_sprintf ("multipart/form-data%s", type_tail);
    s_post ("/v1/images", type, body, strlen (body), response);
    zstr_free (&body);
    zstr_free (&type);
}

static char *
s_form_part (const char *boundary, const char *name, const char *content)
{
    return zsys_sprintf ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n",
                         boundary, name, content);
}

Test (http, boundaries_of_every_allowed_length_and_place)
{
    static const char png [] = "\x89PNG\r\n\x1A\n-some-bytes";
    char long_boundary [71];
    memset (long_boundary, 'b', 70);
    long_boundary [70] = '\0';
    struct {
        const char *tail;       //  Content-Type after multipart/form-data
        const char *boundary;   //  the boundary itself
    } cases [] = {
        { "; boundary=x", "x" },
        { "; boundary=abc", "abc" },
        { "; charset=utf-8; boundary=q1; x=y", "q1" },
        { ";BOUNDARY=\"with space\"", "with space" },
        { "; boundary=\"'()+_,-./:=?\"", "'()+_,-./:=?" },
    };
    response_t response;
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char *part = s_form_part (cases [i].boundary, "img", png);
        s_post_form_with (cases [i].tail, cases [i].boundary, part, &response);
        s_assert_submitted (s_assert_accepted (&response), (const uint8_t *) png,
                            sizeof png - 1);
        s_response_free (&response);
        zstr_free (&part);
    }
    char *tail = zsys_sprintf ("; boundary=%s", long_boundary);
    char *part = s_form_part (long_boundary, "img", png);
    s_post_form_with (tail, long_boundary, part, &response);
    s_assert_accepted (&response);
    s_response_free (&response);
    zstr_free (&part);
    zstr_free (&tail);
    //  71 characters, none, a bad character, a trailing space: 400.
    static const char *bad [] = {
        "; boundary=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "", "; boundary=", "; boundary=a{b", "; boundary=\"ab \"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        s_post_form_with (bad [i], "x", "", &response);
        s_assert_error (&response, 400, "bad_request");
        s_response_free (&response);
    }
}

Test (http, a_second_img_field_is_400_and_closes)
{
    static const char png [] = "\x89PNG\r\n\x1A\n-some-bytes";
    char *one = s_form_part ("B0undary", "img", png);
    char *two = zsys_sprintf ("%s%s", one, one);
    char *body = zsys_sprintf ("%s--B0undary--\r\n", two);
    char *head = zsys_sprintf ("POST /v1/images HTTP/1.1\r\nHost: test\r\n"
                               "Content-Type: multipart/form-data; boundary=B0undary\r\n"
                               "Content-Length: %zu\r\n", strlen (body));
    response_t response;
    s_exchange_closed (head, body, &response);
    s_assert_error (&response, 400, "bad_request");
    cr_assert (strstr (response.body, "more than one"), "%s", response.body);
    s_response_free (&response);
    cr_assert_eq (s_submits (), 0);
    zstr_free (&one);
    zstr_free (&two);
    zstr_free (&body);
    zstr_free (&head);
}

//  A kept-alive GET /healthz on `fd`: the response's Connection header.
static char *
s_healthz_connection (int fd)
{
    static const char head [] = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    s_send_all (fd, head, sizeof head - 1);
    response_t response;
    s_receive (fd, &response);
    cr_assert_eq (response.status, 200);
    const char *value = s_header (&response, "Connection");
    char *connection = strdup (value ? value : "");
    s_response_free (&response);
    return connection;
}

Test (http, keep_alive_ends_while_the_pool_is_crowded)
{
    //  4 workers, 2 kept spare: with a third connection open, every
    //  response closes its connection, so busy keep-alive clients give
    //  their workers back.
    int fds [3];
    const char *expected [3] = { "keep-alive", "keep-alive", "close" };
    for (int i = 0; i < 3; i++) {
        fds [i] = s_connect ();
        char *connection = s_healthz_connection (fds [i]);
        cr_assert_str_eq (connection, expected [i], "connection %d of 3", i + 1);
        free (connection);
    }
    s_assert_closed (fds [2]);
    for (int i = 0; i < 3; i++)
        close (fds [i]);
    //  ...and counted as such.
    response_t response;
    s_get ("GET", "/metrics", &response);
    cr_assert_eq (response.status, 200);
    const char *line = strstr (response.body, "imgpipe_http_refusals_total{reason=\"pool_crowded\"} ");
    cr_assert_not_null (line, "%.300s", response.body);
    cr_assert_geq (atoi (strchr (line, ' ') + 1), 1);
    s_response_free (&response);
}

//  --------------------------------------------------------------------------
//  Caching (ETag, If-None-Match, 304) and HEAD


//  RFC 9110 8.8.3.2 weak comparison, 13.1.2 If-None-Match: lists, "*",
//  W/ on either side, commas inside quotes, malformed fields.
Test (reply, if_none_match_uses_the_weak_comparison)
{
    const char *tag = "\"abc\"";
    static const struct { const char *field; bool match; } cases [] = {
        { "\"abc\"", true }, { "W/\"abc\"", true }, { "*", true },
        { "\"x\", \"abc\"", true }, { "\"x\",W/\"abc\" , \"y\"", true }, { " ,\"abc\",", true },
        { "\"a,b\", \"abc\"", true },           //  a comma inside a tag is part of it
        { "\"abcd\"", false }, { "\"ab\"", false }, { "\"ABC\"", false }, { "abc", false },
        { "", false }, { "\"a,b\"", false }, { "w/\"abc\"", false },    //  W/ is case-sensitive
        { "\"abc", false }, { "\"x\" junk, \"abc\"", false },           //  malformed: nothing
        { "\"\"", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        cr_assert_eq (imgp_reply_etag_match (cases [i].field, tag), cases [i].match,
                      "If-None-Match: %s", cases [i].field);
    //  Ours weak: compared without its W/.
    cr_assert (imgp_reply_etag_match ("\"abc\"", "W/\"abc\""));
    //  No tag of ours: only "*" matches.
    cr_assert (imgp_reply_etag_match ("*", ""));
    cr_assert_not (imgp_reply_etag_match ("\"\"", ""));
}

Test (reply, cache_headers_as_configured)
{
    imgp_reply_t reply = { .method = "GET" };
    imgp_reply_cache (&reply, "0123abcd", 600);
    cr_assert_str_eq (reply.etag, "\"0123abcd\"");
    cr_assert_str_eq (reply.cache_control, "public, max-age=600, immutable");
    imgp_reply_cache (&reply, "", -1);      //  unknown tag, a fallback
    cr_assert_str_eq (reply.etag, "");
    cr_assert_str_eq (reply.cache_control, "no-cache");
}

//  A route's documented path with {id} replaced by `id`.
static void
s_route_path (const char *pattern, const char *id, char *path, size_t size)
{
    const char *brace = strstr (pattern, "{id}");
    if (brace)
        snprintf (path, size, "%.*s%s%s", (int) (brace - pattern), pattern, id, brace + 4);
    else
        snprintf (path, size, "%s", pattern);
}

//  HEAD is taken on every GET route of the router and answers what GET
//  does, with the GET's Content-Length and no body.
Test (http, head_answers_every_get_route_like_get)
{
    const char *method;
    size_t routes = 0;
    for (size_t i = 0; imgp_http_route (i, &method, NULL); i++) {
        if (strcmp (method, "GET") != 0)
            continue;
        char path [256];
        s_route_path (imgp_http_route (i, NULL, NULL), ID_DONE, path, sizeof path);
        response_t get, head;
        s_get ("GET", path, &get);
        s_get ("HEAD", path, &head);
        cr_assert_eq (head.status, get.status, "%s: HEAD %d, GET %d", path, head.status,
                      get.status);
        cr_assert_neq (head.status, 405, "%s", path);
        cr_assert_eq (head.size, 0, "%s: HEAD carried %zu body bytes", path, head.size);
        cr_assert_not_null (s_header (&head, "Content-Length"), "%s", path);
        //  /metrics grows between the two requests: its length may differ.
        if (!strstr (path, "metrics"))
            cr_assert_eq ((size_t) atoll (s_header (&head, "Content-Length")), get.size,
                          "%s: HEAD says %s bytes, GET sent %zu", path,
                          s_header (&head, "Content-Length"), get.size);
        char type [128];
        snprintf (type, sizeof type, "%s", s_header (&get, "Content-Type"));
        cr_assert_str_eq (s_header (&head, "Content-Type"), type, "%s", path);
        s_response_free (&get);
        s_response_free (&head);
        routes++;
    }
    cr_assert_geq (routes, 7, "the router lists %zu GET routes", routes);
    //  HEAD where only POST is taken: 405, Allow says POST, no body.
    response_t response;
    s_get ("HEAD", "/v1/images", &response);
    cr_assert_eq (response.status, 405);
    cr_assert_str_eq (s_header (&response, "Allow"), "POST");
    cr_assert_eq (response.size, 0);
    s_response_free (&response);
}

//  `method` on `path` with `headers` ("Name: value\r\n" lines) added.
static void
s_get_with (const char *method, const char *path, const char *headers, response_t *response)
{
    char head [2048];
    snprintf (head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s",
              method, path, headers);
    s_exchange (head, NULL, 0, response);
}

//  A thumbnail says how long it may be cached; a conditional GET or HEAD
//  that matches gets 304 with the cache headers and no body.
Test (http, thumbnail_is_cacheable_and_conditional)
{
    response_t response;
    s_get ("GET", "/v1/images/" ID_DONE "/thumbnail", &response);
    cr_assert_eq (response.status, 200);
    cr_assert_str_eq (s_header (&response, "ETag"), "\"" THUMBNAIL_ETAG "\"");
    cr_assert_str_eq (s_header (&response, "Cache-Control"), "public, max-age=31536000, immutable");
    s_response_free (&response);
    //  The rendition's tag, its weak form, in a list (split over two
    //  lines too), or *: 304 for GET and HEAD alike.
    const char *matching [] = {
        "If-None-Match: \"" THUMBNAIL_ETAG "\"\r\n",
        "If-None-Match: W/\"" THUMBNAIL_ETAG "\"\r\n",
        "If-None-Match: \"old\", \"" THUMBNAIL_ETAG "\"\r\n",
        "If-None-Match: \"old\"\r\nIf-None-Match: \"" THUMBNAIL_ETAG "\"\r\n",
        "If-None-Match: *\r\n",
    };
    const char *methods [] = { "GET", "HEAD" };
    for (size_t i = 0; i < sizeof matching / sizeof matching [0]; i++)
        for (size_t m = 0; m < 2; m++) {
            s_get_with (methods [m], "/v1/images/" ID_DONE "/thumbnail", matching [i], &response);
            cr_assert_eq (response.status, 304, "%s %s: %d", methods [m], matching [i],
                          response.status);
            cr_assert_eq (response.size, 0);
            cr_assert_null (s_header (&response, "Content-Type"));
            cr_assert_null (s_header (&response, "Content-Length"));
            cr_assert_str_eq (s_header (&response, "ETag"), "\"" THUMBNAIL_ETAG "\"");
            cr_assert_str_eq (s_header (&response, "Cache-Control"),
                              "public, max-age=31536000, immutable");
            s_response_free (&response);
        }
    //  Another tag, or a malformed field: the whole thumbnail.
    const char *other [] = { "If-None-Match: \"0123\"\r\n", "If-None-Match: 0123\r\n" };
    for (size_t i = 0; i < 2; i++) {
        s_get_with ("GET", "/v1/images/" ID_DONE "/thumbnail", other [i], &response);
        cr_assert_eq (response.status, 200, "%s: %d", other [i], response.status);
        cr_assert_str_eq (response.body, THUMBNAIL);
        s_response_free (&response);
    }
    //  Not a 200 without conditions: never a 304, and no cache headers.
    static const struct { const char *id; int status; } others [] = {
        { ID_QUEUED, 202 }, { ID_FAILED, 422 }, { ID_UNKNOWN, 404 },
    };
    for (size_t i = 0; i < sizeof others / sizeof others [0]; i++) {
        char path [128];
        snprintf (path, sizeof path, "/v1/images/%s/thumbnail", others [i].id);
        s_get_with ("GET", path, "If-None-Match: *\r\n", &response);
        cr_assert_eq (response.status, others [i].status, "%s: %d", path, response.status);
        cr_assert_null (s_header (&response, "Cache-Control"), "%s", path);
        s_response_free (&response);
    }
    //  The status route is not conditional.
    s_get_with ("GET", "/v1/images/" ID_DONE, "If-None-Match: *\r\n", &response);
    cr_assert_eq (response.status, 200);
    s_response_free (&response);
}

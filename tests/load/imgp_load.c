/*  imgpipe-load — the frontend under hostile loads, measured from the side
    of the ordinary user.

    For each load (keep-alive pollers, slowloris, idle connections, big
    uploads, the old system's 500-curl burst) a few "normal clients" keep
    uploading a small real image and asking for its status, and we print
    their latency (p50/p99/max) and errors next to what the load clients
    themselves saw. The frontend's promise (DESIGN.md: "many idle, slow or
    busy connections, none able to shut out another") is the thing tested.

    Shape: one thread drives every HTTP client through one libcurl multi
    handle (normal clients, pollers, uploaders, the burst); a second thread,
    only for the slowloris and idle loads, drives raw sockets with epoll.
    Both stay light, so on a 2-core machine the load program does not
    become the bottleneck it measures.

    Source addresses: the frontend limits connections per client address,
    so the load clients bind to 127.0.1.1, 127.0.1.2... (--per-addr per
    address, 32 by default), the slowloris from one address (127.0.2.1),
    the normal clients from 127.0.0.1. All of 127.0.0.0/8 is loopback on
    Linux, nothing needs configuring.

    This is a tool, not a test: it never fails on numbers, it reports them.
    It must never wait without a deadline: every wait has one.
*/
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef IMGP_VERSION
#   define IMGP_VERSION "dev"
#endif
#define S_PROGRAM "imgpipe-load"
#define S_MS 1000LL                     //  microseconds in a millisecond
#define S_SEC 1000000LL                 //  microseconds in a second
#define S_BODY_MAX 4096                 //  response bytes kept (JSON we parse)
#define S_CODES 600                     //  HTTP status codes counted
#define S_TRACK_MAX 4096                //  accepted load jobs tracked at once

//  --------------------------------------------------------------------------
//  Configuration

typedef struct {
    char host [64];                     //  frontend address
    int port;                           //  frontend port
    char base_url [128];                //  http://host:port
    double duration_s;                  //  time each load runs
    char only [256];                    //  comma list of loads to run, "" = all
    const char *json_path;              //  --json FILE, or NULL
    const char *photos_dir;             //  1-6 MB photos for the upload loads
    const char *image_path;             //  normal clients' image, NULL = smallest photo
    const char *burst_photo;            //  the burst's photo, NULL = first 1-6 MB one
    int per_addr;                       //  load connections per source address, 0 = one address
    struct in_addr addr_base;           //  first load source address
    struct in_addr slow_addr;           //  the slowloris' one address
    struct in_addr normal_addr;         //  normal clients' address
    int normals;                        //  normal clients
    int normal_interval_ms;             //  one upload + status cycle per client this often
    int timeout_ms;                     //  normal and poller request timeout
    int pollers_hot;                    //  load 2: back-to-back pollers
    int pollers_slow;                   //  load 3: pollers at 1/s
    int slowloris;                      //  load 4: slow connections
    int slow_line_ms;                   //  load 4: one header line this often
    int idle;                           //  load 5: idle connections
    int uploaders;                      //  load 6: concurrent uploads
    int upload_cap;                     //  load 6: start uploads while fewer jobs wait
    int upload_timeout_ms;              //  load 6 request timeout
    int burst;                          //  load 7: parallel curl -F
    int burst_timeout_ms;               //  load 7 request timeout
    int settle_s;                       //  deadline for the queue to drain between loads
} s_config_t;

//  --------------------------------------------------------------------------
//  Latency samples and counters

typedef struct {
    int64_t *v;                         //  samples, microseconds
    size_t n;                           //  samples held
    size_t cap;                         //  room in v
} s_lat_t;

static void
s_lat_add (s_lat_t *lat, int64_t us)
{
    if (lat->n == lat->cap) {
        size_t cap = lat->cap ? lat->cap * 2 : 256;
        int64_t *v = realloc (lat->v, cap * sizeof *v);
        if (!v)
            return;                     //  a lost sample, not a crash
        lat->v = v;
        lat->cap = cap;
    }
    lat->v [lat->n++] = us;
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

//  Nearest-rank percentile q (0..1] in milliseconds; -1 without samples.
static double
s_lat_pct (s_lat_t *lat, double q)
{
    if (lat->n == 0)
        return -1;
    qsort (lat->v, lat->n, sizeof *lat->v, s_cmp_i64);
    size_t rank = (size_t) (q * (double) lat->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > lat->n)
        rank = lat->n;
    return (double) lat->v [rank - 1] / S_MS;
}

//  What one kind of request saw: answers by status, failures by kind.
typedef struct {
    s_lat_t lat;                        //  latency of the expected answers
    long requests;                      //  requests finished
    long codes [S_CODES];               //  answers by HTTP status
    long no_retry_after;                //  503 answers without Retry-After
    long timeouts;                      //  no full answer in time
    long conn_err;                      //  refused, reset, closed without an answer
    long other_err;                     //  any other libcurl failure
    long connects;                      //  new connections (keep-alive reuse is not one)
} s_count_t;

//  Count one finished request; `expect` is the good status, latency kept
//  only for it (a fast error is no success).
static void
s_count_add (s_count_t *count, CURLcode res, long code, bool retry_after, int64_t us,
             long expect)
{
    count->requests++;
    if (res == CURLE_OPERATION_TIMEDOUT) {
        count->timeouts++;
        return;
    }
    if (res == CURLE_COULDNT_CONNECT || res == CURLE_GOT_NOTHING || res == CURLE_RECV_ERROR
    ||  res == CURLE_SEND_ERROR) {
        count->conn_err++;
        return;
    }
    if (res != CURLE_OK) {
        count->other_err++;
        return;
    }
    if (code > 0 && code < S_CODES)
        count->codes [code]++;
    if (code == 503 && !retry_after)
        count->no_retry_after++;
    if (code == expect)
        s_lat_add (&count->lat, us);
}

//  Answers other than `expect`: the count of errors a user would see.
static long
s_count_errors (const s_count_t *count, long expect)
{
    long errors = count->timeouts + count->conn_err + count->other_err;
    for (int code = 0; code < S_CODES; code++)
        if (code != expect)
            errors += count->codes [code];
    return errors;
}

//  "200:12 503:4" — the answers by status, into `out`.
static void
s_codes_str (const long codes [S_CODES], char *out, size_t size)
{
    size_t used = 0;
    out [0] = 0;
    for (int code = 0; code < S_CODES && used < size; code++)
        if (codes [code])
            used += (size_t) snprintf (out + used, size - used, "%s%d:%ld", used ? " " : "",
                                       code, codes [code]);
    if (!out [0])
        snprintf (out, size, "none");
}

static json_t *
s_codes_json (const long codes [S_CODES])
{
    json_t *obj = json_object ();
    for (int code = 0; code < S_CODES; code++)
        if (codes [code]) {
            char key [8];
            snprintf (key, sizeof key, "%d", code);
            json_object_set_new (obj, key, json_integer (codes [code]));
        }
    return obj;
}

static json_t *
s_lat_json (s_lat_t *lat)
{
    return json_pack ("{s:I,s:f,s:f,s:f}", "n", (json_int_t) lat->n,
                      "p50_ms", s_lat_pct (lat, 0.50), "p99_ms", s_lat_pct (lat, 0.99),
                      "max_ms", s_lat_pct (lat, 1.0));
}

static json_t *
s_count_json (s_count_t *count)
{
    return json_pack ("{s:I,s:I,s:o,s:o,s:I,s:I,s:I,s:I}",
                      "requests", (json_int_t) count->requests,
                      "connects", (json_int_t) count->connects,
                      "latency", s_lat_json (&count->lat),
                      "codes", s_codes_json (count->codes),
                      "no_retry_after_503", (json_int_t) count->no_retry_after,
                      "timeouts", (json_int_t) count->timeouts,
                      "conn_errors", (json_int_t) count->conn_err,
                      "other_errors", (json_int_t) count->other_err);
}

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * S_SEC + ts.tv_nsec / 1000;
}

//  Source address number `index` of the load spread: one address per
//  `per_addr` connections, counting up from `base`.
static struct in_addr
s_spread_addr (const s_config_t *cfg, size_t index)
{
    uint32_t base = ntohl (cfg->addr_base.s_addr);
    uint32_t step = cfg->per_addr > 0 ? (uint32_t) (index / (size_t) cfg->per_addr) : 0;
    struct in_addr addr = { htonl (base + step) };
    return addr;
}

//  --------------------------------------------------------------------------
//  Raw-socket loads (slowloris, idle): their own thread, one epoll

typedef enum { S_RAW_IDLE, S_RAW_SLOW } s_raw_kind_t;

typedef struct {
    int fd;                             //  socket, -1 while closed
    struct in_addr src;                 //  source address it binds to
    bool connected;                     //  handshake done
    bool answered;                      //  a status line was read on it
    int64_t opened_us;                  //  connect() time
    int64_t next_us;                    //  next (re)connect or header line
    int lines;                          //  header lines sent on it
} s_rconn_t;

typedef struct {
    //  Set before the thread starts, read-only in it
    s_raw_kind_t kind;                  //  what each connection does
    size_t count;                       //  connections kept open
    struct in_addr dst;                 //  frontend address
    int port;                           //  frontend port
    int line_ms;                        //  slowloris: one header line this often
    char path [128];                    //  slowloris: the request's path
    atomic_bool stop;                   //  set by the main thread to end
    pthread_t thread;                   //  the epoll thread
    s_rconn_t *conns;                   //  the connections
    //  Written by the thread, read after join
    long connects;                      //  connect() calls
    long connect_err;                   //  refused or failed handshakes
    long connect_timeouts;              //  handshakes not done in 10 s
    long closed_by_server;              //  orderly closes from the server
    long resets;                        //  resets and send errors
    long lines_sent;                    //  slowloris header lines sent
    long codes [S_CODES];               //  status lines the server sent
    long open_now;                      //  connected right now
    long peak_open;                     //  most connected at once
    double open_sum;                    //  sum of open_now samples
    long open_samples;                  //  samples taken (every 100 ms)
} s_raw_t;

static void
s_raw_close (s_raw_t *raw, s_rconn_t *conn, int64_t now)
{
    if (conn->fd < 0)
        return;
    close (conn->fd);                   //  also leaves the epoll set
    conn->fd = -1;
    if (conn->connected)
        raw->open_now--;
    //  Reconnect at once, but not in a hot loop when the server refuses.
    conn->next_us = now + (now - conn->opened_us < S_SEC ? 250 * S_MS : 0);
}

static void
s_raw_open (s_raw_t *raw, int ep, s_rconn_t *conn, int64_t now)
{
    conn->connected = conn->answered = false;
    conn->lines = 0;
    conn->opened_us = now;
    raw->connects++;
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        raw->connect_err++;
        conn->next_us = now + 250 * S_MS;
        return;
    }
    int one = 1;
    setsockopt (fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr = conn->src };
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr = raw->dst,
                               .sin_port = htons ((uint16_t) raw->port) };
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = conn };
    conn->fd = fd;
    if (bind (fd, (struct sockaddr *) &src, sizeof src)
    ||  (connect (fd, (struct sockaddr *) &dst, sizeof dst) && errno != EINPROGRESS)
    ||  epoll_ctl (ep, EPOLL_CTL_ADD, fd, &ev)) {
        raw->connect_err++;
        s_raw_close (raw, conn, now);
    }
}

//  Send the slowloris' next line: the request line first, then one
//  header line at a time, never the blank line that ends the head.
static void
s_raw_send_line (s_raw_t *raw, s_rconn_t *conn, int64_t now)
{
    char line [256];
    if (conn->lines == 0)
        snprintf (line, sizeof line, "GET %s HTTP/1.1\r\n", raw->path);
    else if (conn->lines == 1)
        snprintf (line, sizeof line, "Host: 127.0.0.1\r\n");
    else
        snprintf (line, sizeof line, "X-Slow-%d: %d\r\n", conn->lines, conn->lines);
    ssize_t sent = send (conn->fd, line, strlen (line), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && errno != EAGAIN) {
        raw->resets++;
        s_raw_close (raw, conn, now);
        return;
    }
    conn->lines++;
    raw->lines_sent++;
    conn->next_us = now + raw->line_ms * S_MS;
}

static void
s_raw_event (s_raw_t *raw, int ep, s_rconn_t *conn, uint32_t events, int64_t now)
{
    if (conn->fd < 0)
        return;
    if (!conn->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt (conn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            raw->connect_err++;
            s_raw_close (raw, conn, now);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        conn->connected = true;
        if (++raw->open_now > raw->peak_open)
            raw->peak_open = raw->open_now;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = conn };
        epoll_ctl (ep, EPOLL_CTL_MOD, conn->fd, &ev);
        if (raw->kind == S_RAW_SLOW)
            s_raw_send_line (raw, conn, now);
        return;
    }
    char buf [4096];
    for (;;) {
        ssize_t got = recv (conn->fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (got > 0) {
            buf [got] = 0;
            int code;
            if (!conn->answered && sscanf (buf, "HTTP/1.%*d %d", &code) == 1
            &&  code > 0 && code < S_CODES) {
                raw->codes [code]++;
                conn->answered = true;
            }
            continue;
        }
        if (got == 0)
            raw->closed_by_server++;
        else if (errno == EAGAIN)
            return;
        else
            raw->resets++;
        s_raw_close (raw, conn, now);
        return;
    }
}

static void *
s_raw_thread (void *arg)
{
    s_raw_t *raw = arg;
    int ep = epoll_create1 (EPOLL_CLOEXEC);
    if (ep < 0)
        return NULL;
    int64_t start = s_now_us (), next_sample = start;
    for (size_t i = 0; i < raw->count; i++) {
        raw->conns [i].fd = -1;
        //  Spread the first connects over a few hundred ms, not one burst
        raw->conns [i].next_us = start + (int64_t) i * 200;
    }
    struct epoll_event events [256];
    while (!atomic_load (&raw->stop)) {
        int64_t now = s_now_us ();
        for (size_t i = 0; i < raw->count; i++) {
            s_rconn_t *conn = &raw->conns [i];
            if (conn->fd < 0) {
                if (now >= conn->next_us)
                    s_raw_open (raw, ep, conn, now);
            }
            else
            if (!conn->connected) {
                if (now - conn->opened_us > 10 * S_SEC) {
                    raw->connect_timeouts++;
                    s_raw_close (raw, conn, now);
                }
            }
            else
            if (raw->kind == S_RAW_SLOW && now >= conn->next_us)
                s_raw_send_line (raw, conn, now);
        }
        if (now >= next_sample) {
            raw->open_sum += (double) raw->open_now;
            raw->open_samples++;
            next_sample = now + 100 * S_MS;
        }
        int n = epoll_wait (ep, events, 256, 20);
        now = s_now_us ();
        for (int i = 0; i < n; i++)
            s_raw_event (raw, ep, events [i].data.ptr, events [i].events, now);
    }
    int64_t now = s_now_us ();
    for (size_t i = 0; i < raw->count; i++)
        s_raw_close (raw, &raw->conns [i], now);
    close (ep);
    return NULL;
}

//  Start `count` raw connections of `kind`: the slowloris from its one
//  address, the idle ones spread like every load client.
static s_raw_t *
s_raw_start (const s_config_t *cfg, s_raw_kind_t kind, size_t count, const char *path)
{
    s_raw_t *raw = calloc (1, sizeof *raw);
    if (!raw)
        return NULL;
    raw->conns = calloc (count, sizeof *raw->conns);
    if (!raw->conns) {
        free (raw);
        return NULL;
    }
    raw->kind = kind;
    raw->count = count;
    inet_pton (AF_INET, cfg->host, &raw->dst);
    raw->port = cfg->port;
    raw->line_ms = cfg->slow_line_ms;
    snprintf (raw->path, sizeof raw->path, "%s", path);
    for (size_t i = 0; i < count; i++)
        raw->conns [i].src = kind == S_RAW_SLOW ? cfg->slow_addr : s_spread_addr (cfg, i);
    atomic_init (&raw->stop, false);
    if (pthread_create (&raw->thread, NULL, s_raw_thread, raw)) {
        free (raw->conns);
        free (raw);
        return NULL;
    }
    return raw;
}

static void
s_raw_stop (s_raw_t *raw)
{
    atomic_store (&raw->stop, true);
    pthread_join (raw->thread, NULL);
}

static void
s_raw_destroy (s_raw_t **raw_p)
{
    if (!raw_p || !*raw_p)
        return;
    free ((*raw_p)->conns);
    free (*raw_p);
    *raw_p = NULL;
}

//  --------------------------------------------------------------------------
//  Photos

typedef struct {
    char *name;                         //  file name, for notes
    char *data;                         //  the bytes
    size_t size;                        //  their number
} s_photo_t;

static int
s_photo_load (s_photo_t *photo, const char *path)
{
    FILE *file = fopen (path, "rb");
    struct stat st;
    if (!file || fstat (fileno (file), &st) || st.st_size <= 0) {
        fprintf (stderr, S_PROGRAM ": cannot read %s\n", path);
        if (file)
            fclose (file);
        return -1;
    }
    photo->size = (size_t) st.st_size;
    photo->data = malloc (photo->size);
    const char *slash = strrchr (path, '/');
    photo->name = strdup (slash ? slash + 1 : path);
    bool ok = photo->data && photo->name
              && fread (photo->data, 1, photo->size, file) == photo->size;
    fclose (file);
    if (!ok)
        fprintf (stderr, S_PROGRAM ": cannot read %s\n", path);
    return ok ? 0 : -1;
}

//  Free `n` photos and the array holding them.
static void
s_photos_free (s_photo_t **photos_p, size_t n)
{
    if (!photos_p || !*photos_p)
        return;
    for (size_t i = 0; i < n; i++) {
        free ((*photos_p) [i].name);
        free ((*photos_p) [i].data);
    }
    free (*photos_p);
    *photos_p = NULL;
}

static int
s_cmp_str (const void *a, const void *b)
{
    return strcmp (*(char * const *) a, *(char * const *) b);
}

//  The photos of `dir` (sorted by name) of `min`..`max` bytes, loaded;
//  returns how many, 0 on none.
static size_t
s_photos_load (const char *dir, size_t min, size_t max, s_photo_t **photos_p)
{
    DIR *d = opendir (dir);
    if (!d)
        return 0;
    char *names [256];
    size_t n = 0;
    struct dirent *entry;
    while ((entry = readdir (d)) && n < 256) {
        char path [4096];
        struct stat st;
        snprintf (path, sizeof path, "%s/%s", dir, entry->d_name);
        if (entry->d_name [0] != '.' && stat (path, &st) == 0 && S_ISREG (st.st_mode)
        &&  (size_t) st.st_size >= min && (size_t) st.st_size <= max)
            names [n++] = strdup (path);
    }
    closedir (d);
    qsort (names, n, sizeof names [0], s_cmp_str);
    s_photo_t *photos = calloc (n ? n : 1, sizeof *photos);
    size_t loaded = 0;
    for (size_t i = 0; i < n; i++) {
        if (photos && s_photo_load (&photos [loaded], names [i]) == 0)
            loaded++;
        free (names [i]);
    }
    *photos_p = photos;
    return loaded;
}

//  --------------------------------------------------------------------------
//  HTTP clients on one curl multi

typedef enum {
    S_NORMAL,                           //  upload, then status, at a steady rate
    S_POLLER,                           //  GET status, back to back or each interval
    S_UPLOADER,                         //  raw-body upload of a 1-6 MB photo, back to back
    S_BURST,                            //  one multipart upload (curl -F), once
    S_TRACKER,                          //  follows accepted load jobs until they end
    S_HEALTH                            //  GET /healthz until it answers 200
} s_role_t;

typedef struct {
    const char *data;                   //  the bytes sent
    size_t size;                        //  their number
    size_t pos;                         //  next byte to send
} s_cursor_t;

typedef struct s_run_t s_run_t;

typedef struct {
    s_run_t *run;                       //  the run it belongs to
    s_role_t role;                      //  what it does
    CURL *easy;                         //  its handle (normal: the upload one)
    CURL *easy_status;                  //  normal clients: the status handle
    CURL *active;                       //  handle in flight, NULL when idle
    int64_t started_us;                 //  when the request in flight began
    int64_t cycle_us;                   //  normal: when this cycle began
    int64_t next_us;                    //  earliest start of the next request
    int64_t interval_us;                //  normal/poller period, 0 = back to back
    char id [64];                       //  normal: id of its last upload
    char url [256];                     //  URL of the request in flight
    char body [S_BODY_MAX];             //  start of the response body
    size_t body_len;                    //  bytes in body
    bool retry_after;                   //  the response had a Retry-After
    bool done;                          //  burst: answered, never restarted
    size_t photo;                       //  uploader: index of the next photo
    s_cursor_t cursor;                  //  burst: multipart body position
    curl_mime *mime;                    //  burst: the form
    struct curl_slist *headers;         //  extra request headers
    struct curl_slist *resolve;         //  keep-alive clients: their own host name
    char iface [48];                    //  "host!127.0.1.5"
    char base [128];                    //  http://host:port this client uses
} s_client_t;

//  One load's results.
typedef struct {
    const char *name;                   //  load name
    double took_s;                      //  wall time of the load
    s_count_t up;                       //  normal clients' uploads
    s_count_t st;                       //  normal clients' status requests
    s_count_t load;                     //  the load's own HTTP clients
    s_raw_t *raw;                       //  the load's raw sockets, or NULL
    long tracked_peak;                  //  uploads load: most jobs outstanding
    double in_flight_us;                //  uploads load: sum of in-flight x time
    double settle_s;                    //  time to drain afterwards, -1 if not drained
    char notes [1024];                  //  one line for the table
} s_result_t;

struct s_run_t {
    const s_config_t *cfg;              //  flags
    CURLM *multi;                       //  every HTTP client
    s_client_t **clients;               //  clients of the current phase
    size_t nclients;                    //  their number
    s_result_t *result;                 //  where the current load counts
    bool measuring;                     //  normal clients may start requests
    bool load_on;                       //  load clients may start requests
    bool healthy;                       //  the health client saw a 200
    long in_flight;                     //  load uploads in flight
    unsigned long hosts;                //  host names given to keep-alive clients
    char poll_id [64];                  //  the job pollers and slowloris ask for
    s_photo_t *photos;                  //  1-6 MB photos
    size_t nphotos;                     //  their number
    s_photo_t image;                    //  normal clients' image
    s_photo_t burst_photo;              //  the burst's photo
    char track [S_TRACK_MAX][64];       //  accepted load jobs not yet ended (ring)
    size_t track_head;                  //  oldest tracked id
    size_t track_n;                     //  ids tracked
};

static size_t
s_on_body (char *data, size_t size, size_t nmemb, void *arg)
{
    s_client_t *client = arg;
    size_t bytes = size * nmemb;
    size_t room = sizeof client->body - 1 - client->body_len;
    size_t take = bytes < room ? bytes : room;
    memcpy (client->body + client->body_len, data, take);
    client->body_len += take;
    client->body [client->body_len] = 0;
    return bytes;
}

static size_t
s_on_header (char *data, size_t size, size_t nmemb, void *arg)
{
    s_client_t *client = arg;
    size_t bytes = size * nmemb;
    if (bytes >= 12 && strncasecmp (data, "Retry-After:", 12) == 0)
        client->retry_after = true;
    return bytes;
}

static size_t
s_on_read (char *buffer, size_t size, size_t nitems, void *arg)
{
    s_cursor_t *cursor = arg;
    size_t room = size * nitems, left = cursor->size - cursor->pos;
    size_t take = left < room ? left : room;
    memcpy (buffer, cursor->data + cursor->pos, take);
    cursor->pos += take;
    return take;
}

static int
s_on_seek (void *arg, curl_off_t offset, int origin)
{
    s_cursor_t *cursor = arg;
    if (origin != SEEK_SET || offset < 0 || (size_t) offset > cursor->size)
        return CURL_SEEKFUNC_CANTSEEK;
    cursor->pos = (size_t) offset;
    return CURL_SEEKFUNC_OK;
}

static CURL *
s_easy_new (s_client_t *client, int timeout_ms, bool fresh)
{
    CURL *easy = curl_easy_init ();
    if (!easy)
        return NULL;
    curl_easy_setopt (easy, CURLOPT_PRIVATE, client);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, client);
    curl_easy_setopt (easy, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt (easy, CURLOPT_HEADERDATA, client);
    curl_easy_setopt (easy, CURLOPT_INTERFACE, client->iface);
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    curl_easy_setopt (easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L);
    if (fresh) {
        //  A user running curl or a script: one connection per request.
        curl_easy_setopt (easy, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt (easy, CURLOPT_FORBID_REUSE, 1L);
    }
    return easy;
}

static s_client_t *
s_client_new (s_run_t *run, s_role_t role, struct in_addr src)
{
    const s_config_t *cfg = run->cfg;
    s_client_t *client = calloc (1, sizeof *client);
    if (!client)
        return NULL;
    client->run = run;
    client->role = role;
    char addr [INET_ADDRSTRLEN];
    inet_ntop (AF_INET, &src, addr, sizeof addr);
    snprintf (client->iface, sizeof client->iface, "host!%s", addr);
    snprintf (client->base, sizeof client->base, "%s", cfg->base_url);
    if (role == S_POLLER || role == S_UPLOADER) {
        //  A keep-alive client holds its own connection, as a real one
        //  would. The multi handle shares its connections among every
        //  handle to the same host (and source address), so 300 pollers at
        //  1/s would share a few dozen: each gets a host name of its own,
        //  resolved by curl to the frontend's address.
        char entry [128];
        unsigned long host = ++run->hosts;
        snprintf (entry, sizeof entry, "c%lu.load:%d:%s", host, cfg->port, cfg->host);
        client->resolve = curl_slist_append (NULL, entry);
        snprintf (client->base, sizeof client->base, "http://c%lu.load:%d", host, cfg->port);
    }
    int timeout = role == S_UPLOADER ? cfg->upload_timeout_ms
                : role == S_BURST ? cfg->burst_timeout_ms : cfg->timeout_ms;
    client->easy = s_easy_new (client, timeout, role == S_NORMAL || role == S_BURST);
    if (!client->easy) {
        curl_slist_free_all (client->resolve);
        free (client);
        return NULL;
    }
    if (client->resolve)
        curl_easy_setopt (client->easy, CURLOPT_RESOLVE, client->resolve);
    if (role == S_NORMAL || role == S_UPLOADER) {
        client->headers = curl_slist_append (NULL, "Content-Type: image/jpeg");
        curl_easy_setopt (client->easy, CURLOPT_HTTPHEADER, client->headers);
        snprintf (client->url, sizeof client->url, "%s/v1/images", client->base);
        curl_easy_setopt (client->easy, CURLOPT_URL, client->url);
    }
    if (role == S_NORMAL) {
        client->easy_status = s_easy_new (client, cfg->timeout_ms, true);
        curl_easy_setopt (client->easy, CURLOPT_POSTFIELDS, run->image.data);
        curl_easy_setopt (client->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t) run->image.size);
    }
    if (role == S_POLLER) {
        char url [256];
        snprintf (url, sizeof url, "%s/v1/images/%s", client->base, run->poll_id);
        curl_easy_setopt (client->easy, CURLOPT_URL, url);
    }
    if (role == S_BURST) {
        //  What curl -F img=@photo.jpg sends: multipart, file name, type.
        client->cursor.data = run->burst_photo.data;
        client->cursor.size = run->burst_photo.size;
        client->mime = curl_mime_init (client->easy);
        curl_mimepart *part = curl_mime_addpart (client->mime);
        curl_mime_name (part, "img");
        curl_mime_filename (part, run->burst_photo.name);
        curl_mime_type (part, "image/jpeg");
        curl_mime_data_cb (part, (curl_off_t) run->burst_photo.size, s_on_read, s_on_seek,
                           NULL, &client->cursor);
        curl_easy_setopt (client->easy, CURLOPT_MIMEPOST, client->mime);
        char url [256];
        snprintf (url, sizeof url, "%s/v1/images", cfg->base_url);
        curl_easy_setopt (client->easy, CURLOPT_URL, url);
    }
    if (role == S_HEALTH) {
        char url [256];
        snprintf (url, sizeof url, "%s/healthz", cfg->base_url);
        curl_easy_setopt (client->easy, CURLOPT_URL, url);
    }
    return client;
}

static void
s_client_destroy (s_client_t **client_p)
{
    if (!client_p || !*client_p)
        return;
    s_client_t *client = *client_p;
    if (client->active)
        curl_multi_remove_handle (client->run->multi, client->active);
    if (client->easy)
        curl_easy_cleanup (client->easy);
    if (client->easy_status)
        curl_easy_cleanup (client->easy_status);
    curl_mime_free (client->mime);
    curl_slist_free_all (client->headers);
    curl_slist_free_all (client->resolve);
    free (client);
    *client_p = NULL;
}

//  May this idle client start a request now?
static bool
s_client_may_start (s_run_t *run, s_client_t *client)
{
    switch (client->role) {
        case S_NORMAL:
            return run->measuring;
        case S_POLLER:
            return run->load_on;
        case S_UPLOADER:
            return run->load_on
                   && (run->cfg->upload_cap == 0 || (long) run->track_n < run->cfg->upload_cap);
        case S_BURST:
            return run->load_on && !client->done;
        case S_TRACKER:
            return run->track_n > 0;
        case S_HEALTH:
            return !run->healthy;
    }
    return false;
}

static void
s_client_start (s_run_t *run, s_client_t *client, int64_t now)
{
    CURL *easy = client->easy;
    const s_config_t *cfg = run->cfg;
    if (client->role == S_NORMAL) {
        if (client->id [0]) {
            easy = client->easy_status;
            snprintf (client->url, sizeof client->url, "%s/v1/images/%s", cfg->base_url,
                      client->id);
            curl_easy_setopt (easy, CURLOPT_URL, client->url);
        }
        else
            client->cycle_us = now;
    }
    else
    if (client->role == S_UPLOADER) {
        const s_photo_t *photo = &run->photos [client->photo++ % run->nphotos];
        curl_easy_setopt (easy, CURLOPT_POSTFIELDS, photo->data);
        curl_easy_setopt (easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) photo->size);
        run->in_flight++;
    }
    else
    if (client->role == S_TRACKER) {
        snprintf (client->url, sizeof client->url, "%s/v1/images/%s", cfg->base_url,
                  run->track [run->track_head]);
        curl_easy_setopt (easy, CURLOPT_URL, client->url);
    }
    else
    if (client->role == S_BURST)
        client->cursor.pos = 0;
    client->body_len = 0;
    client->body [0] = 0;
    client->retry_after = false;
    client->started_us = now;
    client->active = easy;
    curl_multi_add_handle (run->multi, easy);
}

//  The string member `key` of the JSON body, into `out`; -1 if none.
static int
s_body_str (s_client_t *client, const char *key, char *out, size_t size)
{
    json_t *root = json_loadb (client->body, client->body_len, 0, NULL);
    const char *value = json_string_value (json_object_get (root, key));
    int rc = value && strlen (value) < size ? 0 : -1;
    if (rc == 0)
        snprintf (out, size, "%s", value);
    json_decref (root);
    return rc;
}

static void
s_track_push (s_run_t *run, const char *id)
{
    if (run->track_n == S_TRACK_MAX)
        return;                         //  the upload cap keeps us far from here
    size_t slot = (run->track_head + run->track_n) % S_TRACK_MAX;
    snprintf (run->track [slot], sizeof run->track [slot], "%s", id);
    run->track_n++;
    if (run->result && (long) run->track_n > run->result->tracked_peak)
        run->result->tracked_peak = (long) run->track_n;
}

static void
s_client_finish (s_run_t *run, s_client_t *client, CURLcode res, int64_t now)
{
    long code = 0, connects = 0;
    curl_easy_getinfo (client->active, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo (client->active, CURLINFO_NUM_CONNECTS, &connects);
    curl_multi_remove_handle (run->multi, client->active);
    bool was_status = client->active == client->easy_status;
    client->active = NULL;
    int64_t took = now - client->started_us;
    s_result_t *result = run->result;
    if (client->role == S_POLLER || client->role == S_UPLOADER || client->role == S_BURST)
        result->load.connects += connects;
    switch (client->role) {
        case S_NORMAL:
            if (was_status) {
                s_count_add (&result->st, res, code, client->retry_after, took, 200);
                client->id [0] = 0;
            }
            else {
                s_count_add (&result->up, res, code, client->retry_after, took, 202);
                if (res != CURLE_OK || code != 202
                ||  s_body_str (client, "id", client->id, sizeof client->id))
                    client->id [0] = 0;
            }
            //  The status request follows its upload at once; the next
            //  cycle starts one interval after this one did.
            client->next_us = client->id [0] ? now : client->cycle_us + client->interval_us;
            break;
        case S_POLLER:
            s_count_add (&result->load, res, code, client->retry_after, took, 200);
            client->next_us = client->started_us + client->interval_us;
            break;
        case S_UPLOADER: {
            run->in_flight--;
            s_count_add (&result->load, res, code, client->retry_after, took, 202);
            char id [64];
            if (res == CURLE_OK && code == 202 && s_body_str (client, "id", id, sizeof id) == 0)
                s_track_push (run, id);
            //  Refused: back off a little rather than spin on 503s.
            client->next_us = code == 202 ? now : now + 200 * S_MS;
            break;
        }
        case S_BURST:
            s_count_add (&result->load, res, code, client->retry_after, took, 202);
            client->done = true;
            break;
        case S_TRACKER: {
            char state [32] = "";
            bool ended = code == 404 || code == 400
                         || (code == 200 && s_body_str (client, "status", state, sizeof state) == 0
                             && (strcmp (state, "done") == 0 || strcmp (state, "failed") == 0));
            if (ended) {
                run->track_head = (run->track_head + 1) % S_TRACK_MAX;
                run->track_n--;
            }
            client->next_us = ended ? now : now + 100 * S_MS;
            break;
        }
        case S_HEALTH:
            run->healthy = res == CURLE_OK && code == 200;
            client->next_us = now + 200 * S_MS;
            break;
    }
}

//  Start every client that is due and allowed; returns microseconds until
//  the next one is due (clients held by a condition wake on completions).
static int64_t
s_start_due (s_run_t *run, int64_t now)
{
    int64_t wait = 50 * S_MS;
    for (size_t i = 0; i < run->nclients; i++) {
        s_client_t *client = run->clients [i];
        if (client->active || !s_client_may_start (run, client))
            continue;
        if (client->next_us <= now)
            s_client_start (run, client, now);
        else
        if (client->next_us - now < wait)
            wait = client->next_us - now;
    }
    return wait;
}

//  One turn of the loop: start, wait for at most `wait_us` (less if
//  curl has a timer), collect finished transfers.
static void
s_turn (s_run_t *run, int64_t wait_us)
{
    int64_t now = s_now_us ();
    int64_t due = s_start_due (run, now);
    if (wait_us > due)
        wait_us = due;
    int running;
    curl_multi_perform (run->multi, &running);
    int64_t before = now;
    curl_multi_poll (run->multi, NULL, 0, (int) (wait_us > 0 ? (wait_us + 999) / S_MS : 0),
                     NULL);
    curl_multi_perform (run->multi, &running);
    CURLMsg *msg;
    int left;
    now = s_now_us ();
    if (run->result)
        run->result->in_flight_us += (double) run->in_flight * (double) (now - before);
    while ((msg = curl_multi_info_read (run->multi, &left)))
        if (msg->msg == CURLMSG_DONE) {
            s_client_t *client;
            CURL *easy = msg->easy_handle;
            CURLcode res = msg->data.result;
            curl_easy_getinfo (easy, CURLINFO_PRIVATE, (char **) &client);
            s_client_finish (run, client, res, now);
        }
}

static bool
s_normals_busy (s_run_t *run)
{
    for (size_t i = 0; i < run->nclients; i++)
        if (run->clients [i]->role == S_NORMAL && run->clients [i]->active)
            return true;
    return false;
}

static bool
s_burst_over (s_run_t *run)
{
    for (size_t i = 0; i < run->nclients; i++)
        if (run->clients [i]->role == S_BURST && !run->clients [i]->done)
            return false;
    return true;
}

//  Run the tracker and a health client until every tracked job ended and
//  /healthz answers, or the deadline; returns seconds taken, -1 on timeout.
static double
s_settle (s_run_t *run, int deadline_s)
{
    s_client_t *tracker = s_client_new (run, S_TRACKER, run->cfg->normal_addr);
    s_client_t *health = s_client_new (run, S_HEALTH, run->cfg->normal_addr);
    s_client_t *clients [2] = { tracker, health };
    if (!tracker || !health) {
        s_client_destroy (&tracker);
        s_client_destroy (&health);
        return -1;
    }
    run->clients = clients;
    run->nclients = 2;
    run->healthy = false;
    int64_t start = s_now_us (), deadline = start + (int64_t) deadline_s * S_SEC;
    while ((run->track_n > 0 || !run->healthy) && s_now_us () < deadline)
        s_turn (run, 50 * S_MS);
    bool settled = run->track_n == 0 && run->healthy;
    s_client_destroy (&tracker);
    s_client_destroy (&health);
    run->clients = NULL;
    run->nclients = 0;
    return settled ? (double) (s_now_us () - start) / S_SEC : -1;
}

//  --------------------------------------------------------------------------
//  The loads

typedef enum {
    S_BASELINE, S_POLL_HOT, S_POLL_SLOW, S_SLOWLORIS, S_IDLE, S_UPLOADS, S_BURST_LOAD
} s_load_t;

static const struct {
    const char *name;                   //  --only name and table label
    const char *what;                   //  for --help
} s_loads [] = {
    { "baseline", "no load" },
    { "poll16", "keep-alive clients polling GET /v1/images/{id} back to back (--pollers-hot)" },
    { "poll300", "keep-alive clients polling once a second each (--pollers-slow)" },
    { "slowloris", "connections from one address sending a header line every 2 s" },
    { "idle", "idle open connections, reconnected when closed (--idle)" },
    { "uploads", "concurrent 1-6 MB photo uploads while every resizer is busy (--uploaders)" },
    { "burst", "curl -F img=@photo.jpg N times at once (--burst)" },
};
#define S_NLOADS (sizeof s_loads / sizeof s_loads [0])

static bool
s_load_wanted (const s_config_t *cfg, const char *name)
{
    if (!cfg->only [0])
        return true;
    char list [256];
    snprintf (list, sizeof list, "%s", cfg->only);
    char *save = NULL;
    for (char *item = strtok_r (list, ",", &save); item; item = strtok_r (NULL, ",", &save))
        if (strcmp (item, name) == 0)
            return true;
    return false;
}

//  The load clients of load `load`, appended to `clients`.
static size_t
s_load_clients (s_run_t *run, s_load_t load, s_client_t **clients, size_t n)
{
    const s_config_t *cfg = run->cfg;
    int64_t now = s_now_us ();
    size_t count = load == S_POLL_HOT ? (size_t) cfg->pollers_hot
                 : load == S_POLL_SLOW ? (size_t) cfg->pollers_slow
                 : load == S_UPLOADS ? (size_t) cfg->uploaders
                 : load == S_BURST_LOAD ? (size_t) cfg->burst : 0;
    s_role_t role = load == S_UPLOADS ? S_UPLOADER : load == S_BURST_LOAD ? S_BURST : S_POLLER;
    for (size_t i = 0; i < count; i++) {
        s_client_t *client = s_client_new (run, role, s_spread_addr (cfg, i));
        if (!client)
            break;
        if (load == S_POLL_SLOW) {
            client->interval_us = S_SEC;
            client->next_us = now + (int64_t) i * S_SEC / (int64_t) count;
        }
        client->photo = i;
        clients [n++] = client;
    }
    if (load == S_UPLOADS) {
        //  The tracker paces the uploaders (--upload-cap) so the queue stays
        //  full enough to keep every resizer busy, never so full that
        //  uploads get queue_full instead of being measured.
        s_client_t *tracker = s_client_new (run, S_TRACKER, cfg->normal_addr);
        if (tracker)
            clients [n++] = tracker;
    }
    return n;
}

static void
s_load_notes (s_run_t *run, s_load_t load, s_result_t *result)
{
    char codes [256];
    size_t used = 0;
    char *notes = result->notes;
    size_t size = sizeof result->notes;
    s_count_t *lc = &result->load;
    if (load == S_POLL_HOT || load == S_POLL_SLOW || load == S_UPLOADS || load == S_BURST_LOAD) {
        s_codes_str (lc->codes, codes, sizeof codes);
        if (load == S_UPLOADS)
            used += (size_t) snprintf (notes + used, size - used,
                                       "uploads 202 p50/p99/max %.0f/%.0f/%.0f ms; ",
                                       s_lat_pct (&lc->lat, 0.5), s_lat_pct (&lc->lat, 0.99),
                                       s_lat_pct (&lc->lat, 1));
        used += (size_t) snprintf (notes + used, size - used,
                                   "load: %ld requests on %ld connections, codes %s",
                                   lc->requests, lc->connects, codes);
        if (lc->timeouts || lc->conn_err || lc->other_err)
            used += (size_t) snprintf (notes + used, size - used,
                                       ", %ld timeouts, %ld conn errors, %ld other",
                                       lc->timeouts, lc->conn_err, lc->other_err);
        if (lc->no_retry_after)
            used += (size_t) snprintf (notes + used, size - used, ", %ld 503 WITHOUT Retry-After",
                                       lc->no_retry_after);
        if (load == S_UPLOADS)
            used += (size_t) snprintf (notes + used, size - used,
                                       "; uploads in flight avg %.1f, jobs waiting peak %ld",
                                       result->in_flight_us / (result->took_s * S_SEC),
                                       result->tracked_peak);
        if (load == S_BURST_LOAD) {
            long other = s_count_errors (lc, 202) - (lc->codes [503] - lc->no_retry_after);
            used += (size_t) snprintf (notes + used, size - used,
                                       other ? "; %ld answers NOT 202/503+Retry-After"
                                             : "; all 202 or 503+Retry-After", other);
        }
    }
    if (result->raw) {
        s_raw_t *raw = result->raw;
        s_codes_str (raw->codes, codes, sizeof codes);
        used += (size_t) snprintf (notes + used, size - used,
                                   "raw: open avg %.0f peak %ld; %ld connects, %ld closed by "
                                   "server, answers %s, %ld connect errors, %ld connect "
                                   "timeouts, %ld resets",
                                   raw->open_samples ? raw->open_sum / (double) raw->open_samples
                                                     : 0.0,
                                   raw->peak_open, raw->connects, raw->closed_by_server, codes,
                                   raw->connect_err, raw->connect_timeouts, raw->resets);
    }
    if (result->settle_s < 0)
        snprintf (notes + used, size - used, "%sNOT settled in %d s (queue or /healthz)",
                  used ? "; " : "", run->cfg->settle_s);
    else
    if (result->settle_s > 2)
        snprintf (notes + used, size - used, "%ssettled in %.1f s", used ? "; " : "",
                  result->settle_s);
}

static void
s_load_run (s_run_t *run, s_load_t load, s_result_t *result, bool settle_after)
{
    const s_config_t *cfg = run->cfg;
    result->name = s_loads [load].name;
    size_t cap = (size_t) cfg->normals + (size_t) cfg->pollers_hot + (size_t) cfg->pollers_slow
               + (size_t) cfg->uploaders + (size_t) cfg->burst + 2;
    s_client_t **clients = calloc (cap, sizeof *clients);
    if (!clients)
        return;
    int64_t start = s_now_us ();
    size_t n = 0;
    for (int i = 0; i < cfg->normals; i++) {
        s_client_t *client = s_client_new (run, S_NORMAL, cfg->normal_addr);
        if (!client)
            continue;
        client->interval_us = cfg->normal_interval_ms * S_MS;
        client->next_us = start + (int64_t) i * client->interval_us / cfg->normals;
        clients [n++] = client;
    }
    n = s_load_clients (run, load, clients, n);
    run->clients = clients;
    run->nclients = n;
    run->result = result;
    run->in_flight = 0;
    if (load == S_SLOWLORIS || load == S_IDLE) {
        char path [128];
        snprintf (path, sizeof path, "/v1/images/%s", run->poll_id);
        result->raw = s_raw_start (cfg, load == S_SLOWLORIS ? S_RAW_SLOW : S_RAW_IDLE,
                                   (size_t) (load == S_SLOWLORIS ? cfg->slowloris : cfg->idle),
                                   path);
    }
    //  The burst ends when every one of its requests has; the others after
    //  the duration. Normal clients then finish what they started.
    int64_t deadline = start + (int64_t) (cfg->duration_s * S_SEC);
    run->measuring = run->load_on = true;
    while (run->measuring || s_normals_busy (run)) {
        int64_t now = s_now_us ();
        if (run->measuring
        &&  (load == S_BURST_LOAD ? s_burst_over (run) : now >= deadline))
            run->measuring = false;
        s_turn (run, load == S_BURST_LOAD || now >= deadline ? 50 * S_MS : deadline - now);
    }
    run->load_on = false;
    if (result->raw)
        s_raw_stop (result->raw);
    //  Load requests still in flight are dropped, not counted.
    for (size_t i = 0; i < n; i++)
        s_client_destroy (&clients [i]);
    free (clients);
    run->clients = NULL;
    run->nclients = 0;
    run->in_flight = 0;
    result->took_s = (double) (s_now_us () - start) / S_SEC;
    result->settle_s = settle_after ? s_settle (run, cfg->settle_s) : 0;
    run->result = NULL;
    s_load_notes (run, load, result);
}

//  --------------------------------------------------------------------------
//  Output

static void
s_lat_cell (s_lat_t *lat, char *out, size_t size)
{
    if (lat->n == 0)
        snprintf (out, size, "-");
    else
        snprintf (out, size, "%.0f/%.0f/%.0f", s_lat_pct (lat, 0.5), s_lat_pct (lat, 0.99),
                  s_lat_pct (lat, 1));
}

//  "2x503 1 timeout" — what the normal clients got wrong, or "0".
static void
s_errors_cell (s_result_t *result, char *out, size_t size)
{
    long codes [S_CODES];
    for (int code = 0; code < S_CODES; code++)
        codes [code] = result->up.codes [code] + result->st.codes [code];
    codes [202] -= result->up.lat.n;
    codes [200] -= result->st.lat.n;
    size_t used = 0;
    out [0] = 0;
    for (int code = 0; code < S_CODES; code++)
        if (codes [code] > 0)
            used += (size_t) snprintf (out + used, size - used, "%s%ldx%d", used ? " " : "",
                                       codes [code], code);
    long timeouts = result->up.timeouts + result->st.timeouts;
    long conn = result->up.conn_err + result->st.conn_err;
    long other = result->up.other_err + result->st.other_err;
    if (timeouts)
        used += (size_t) snprintf (out + used, size - used, "%s%ld timeout", used ? " " : "",
                                   timeouts);
    if (conn)
        used += (size_t) snprintf (out + used, size - used, "%s%ld conn", used ? " " : "", conn);
    if (other)
        snprintf (out + used, size - used, "%s%ld other", used ? " " : "", other);
    if (!out [0])
        snprintf (out, size, "0");
}

static void
s_print_table (s_result_t *results, size_t n, FILE *out)
{
    fprintf (out, "| load | normal upload p50/p99/max ms (n) | normal status p50/p99/max ms (n) "
                  "| normal errors | notes |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        s_result_t *r = &results [i];
        char up [64], st [64], errors [256];
        s_lat_cell (&r->up.lat, up, sizeof up);
        s_lat_cell (&r->st.lat, st, sizeof st);
        s_errors_cell (r, errors, sizeof errors);
        fprintf (out, "| %s | %s (%zu) | %s (%zu) | %s | %s |\n", r->name, up, r->up.lat.n, st,
                 r->st.lat.n, errors, r->notes [0] ? r->notes : "-");
    }
    fflush (out);
}

static json_t *
s_raw_json (s_raw_t *raw)
{
    return json_pack ("{s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}",
                      "connections", (json_int_t) raw->count,
                      "open_avg", raw->open_samples ? raw->open_sum / (double) raw->open_samples
                                                    : 0.0,
                      "open_peak", (json_int_t) raw->peak_open,
                      "connects", (json_int_t) raw->connects,
                      "closed_by_server", (json_int_t) raw->closed_by_server,
                      "connect_errors", (json_int_t) raw->connect_err,
                      "connect_timeouts", (json_int_t) raw->connect_timeouts,
                      "resets", (json_int_t) raw->resets,
                      "lines_sent", (json_int_t) raw->lines_sent,
                      "codes", s_codes_json (raw->codes));
}

static int
s_write_json (const s_config_t *cfg, s_result_t *results, size_t n)
{
    json_t *loads = json_array ();
    for (size_t i = 0; i < n; i++) {
        s_result_t *r = &results [i];
        char errors [256];
        s_errors_cell (r, errors, sizeof errors);
        json_t *item = json_pack ("{s:s,s:f,s:f,s:o,s:o,s:s,s:o,s:s}",
                                  "name", r->name, "took_s", r->took_s,
                                  "settle_s", r->settle_s,
                                  "normal_upload", s_count_json (&r->up),
                                  "normal_status", s_count_json (&r->st),
                                  "normal_errors", errors,
                                  "load", s_count_json (&r->load), "notes", r->notes);
        if (r->raw)
            json_object_set_new (item, "raw", s_raw_json (r->raw));
        json_array_append_new (loads, item);
    }
    json_t *root = json_pack ("{s:s,s:f,s:i,s:i,s:o}", "url", cfg->base_url,
                              "duration_s", cfg->duration_s, "per_addr", cfg->per_addr,
                              "normal_clients", cfg->normals, "loads", loads);
    int rc = json_dump_file (root, cfg->json_path, JSON_INDENT (2));
    json_decref (root);
    if (rc)
        fprintf (stderr, S_PROGRAM ": cannot write %s\n", cfg->json_path);
    return rc;
}

//  --------------------------------------------------------------------------
//  Start-up: flags, limits, the job pollers ask for

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: " S_PROGRAM " [options]\n"
        "Loads a running imgpipe frontend and reports, for each load, the latency\n"
        "and errors of a few normal clients (upload a small image, then its status)\n"
        "and what the load clients saw. Start the stack first (deploy/run.sh), or\n"
        "use tests/load/run.sh, which does it all.\n\n"
        "  --addr HOST:PORT       frontend (127.0.0.1:8080)\n"
        "  --duration S           seconds each load runs (20)\n"
        "  --quick                a few seconds each, a smaller burst\n"
        "  --only NAME[,NAME]     run only these loads\n"
        "  --json FILE            also write the results as JSON\n"
        "  --photos DIR           1-6 MB photos for the upload loads (../shared/corpus/photos)\n"
        "  --image FILE           normal clients' image (the smallest file in --photos)\n"
        "  --burst-photo FILE     the burst's photo (the first 1-6 MB one in --photos)\n"
        "  --per-addr N           load connections per source address (32; 0 = all from\n"
        "                         --addr-base)\n"
        "  --addr-base A          first load source address (127.0.1.1)\n"
        "  --slow-addr A          the slowloris' one address (127.0.2.1)\n"
        "  --normal-addr A        the normal clients' address (127.0.0.1)\n"
        "  --normals N            normal clients (2)\n"
        "  --normal-interval-ms N one upload + status per normal client this often (250)\n"
        "  --timeout-ms N         normal and poller request timeout (10000)\n"
        "  --pollers-hot N        load poll16: back-to-back pollers (16)\n"
        "  --pollers-slow N       load poll300: pollers at 1/s (300)\n"
        "  --slowloris N          load slowloris: connections (200)\n"
        "  --slow-line-ms N       load slowloris: a header line this often (2000)\n"
        "  --idle N               load idle: connections (2000)\n"
        "  --uploaders N          load uploads: concurrent uploads (16)\n"
        "  --upload-cap N         load uploads: a new upload starts only while fewer jobs\n"
        "                         than this are accepted and not ended (64); 0: no cap,\n"
        "                         the queue fills and uploads meet queue_full\n"
        "  --burst N              load burst: parallel multipart uploads (500)\n"
        "  --burst-timeout-ms N   load burst: request timeout (60000)\n"
        "  --settle-s N           deadline for jobs to end between loads (120)\n"
        "  --help, --version\n\nloads:\n");
    for (size_t i = 0; i < S_NLOADS; i++)
        fprintf (out, "  %-10s %s\n", s_loads [i].name, s_loads [i].what);
}

static int
s_parse_int (const char *text, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || end == text || *end || value < min || value > max) {
        fprintf (stderr, S_PROGRAM ": '%s' is not a number in %d..%d\n", text, min, max);
        return -1;
    }
    *out = (int) value;
    return 0;
}

static int
s_parse_addr (const char *text, struct in_addr *out)
{
    if (inet_pton (AF_INET, text, out) == 1)
        return 0;
    fprintf (stderr, S_PROGRAM ": '%s' is not an IPv4 address\n", text);
    return -1;
}

static int
s_parse_args (int argc, char **argv, s_config_t *cfg)
{
    enum { O_ADDR = 256, O_DURATION, O_QUICK, O_ONLY, O_JSON, O_PHOTOS, O_IMAGE, O_BURST_PHOTO,
           O_PER_ADDR, O_ADDR_BASE, O_SLOW_ADDR, O_NORMAL_ADDR, O_NORMALS, O_INTERVAL,
           O_TIMEOUT, O_HOT, O_SLOW, O_SLOWLORIS, O_LINE, O_IDLE, O_UPLOADERS, O_CAP,
           O_BURST, O_BURST_TIMEOUT, O_SETTLE, O_HELP, O_VERSION };
    static const struct option options [] = {
        { "addr", required_argument, NULL, O_ADDR },
        { "duration", required_argument, NULL, O_DURATION },
        { "quick", no_argument, NULL, O_QUICK },
        { "only", required_argument, NULL, O_ONLY },
        { "json", required_argument, NULL, O_JSON },
        { "photos", required_argument, NULL, O_PHOTOS },
        { "image", required_argument, NULL, O_IMAGE },
        { "burst-photo", required_argument, NULL, O_BURST_PHOTO },
        { "per-addr", required_argument, NULL, O_PER_ADDR },
        { "addr-base", required_argument, NULL, O_ADDR_BASE },
        { "slow-addr", required_argument, NULL, O_SLOW_ADDR },
        { "normal-addr", required_argument, NULL, O_NORMAL_ADDR },
        { "normals", required_argument, NULL, O_NORMALS },
        { "normal-interval-ms", required_argument, NULL, O_INTERVAL },
        { "timeout-ms", required_argument, NULL, O_TIMEOUT },
        { "pollers-hot", required_argument, NULL, O_HOT },
        { "pollers-slow", required_argument, NULL, O_SLOW },
        { "slowloris", required_argument, NULL, O_SLOWLORIS },
        { "slow-line-ms", required_argument, NULL, O_LINE },
        { "idle", required_argument, NULL, O_IDLE },
        { "uploaders", required_argument, NULL, O_UPLOADERS },
        { "upload-cap", required_argument, NULL, O_CAP },
        { "burst", required_argument, NULL, O_BURST },
        { "burst-timeout-ms", required_argument, NULL, O_BURST_TIMEOUT },
        { "settle-s", required_argument, NULL, O_SETTLE },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 }
    };
    bool quick = false, duration_set = false, burst_set = false;
    int opt, rc = 0, seconds;
    while (rc == 0 && (opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
            case O_ADDR: {
                const char *colon = strrchr (optarg, ':');
                if (!colon || (size_t) (colon - optarg) >= sizeof cfg->host
                ||  s_parse_int (colon + 1, 1, 65535, &cfg->port)) {
                    fprintf (stderr, S_PROGRAM ": --addr wants HOST:PORT\n");
                    return -1;
                }
                snprintf (cfg->host, sizeof cfg->host, "%.*s", (int) (colon - optarg), optarg);
                break;
            }
            case O_DURATION:
                rc = s_parse_int (optarg, 1, 3600, &seconds);
                cfg->duration_s = seconds;
                duration_set = true;
                break;
            case O_QUICK: quick = true; break;
            case O_ONLY: snprintf (cfg->only, sizeof cfg->only, "%s", optarg); break;
            case O_JSON: cfg->json_path = optarg; break;
            case O_PHOTOS: cfg->photos_dir = optarg; break;
            case O_IMAGE: cfg->image_path = optarg; break;
            case O_BURST_PHOTO: cfg->burst_photo = optarg; break;
            case O_PER_ADDR: rc = s_parse_int (optarg, 0, 100000, &cfg->per_addr); break;
            case O_ADDR_BASE: rc = s_parse_addr (optarg, &cfg->addr_base); break;
            case O_SLOW_ADDR: rc = s_parse_addr (optarg, &cfg->slow_addr); break;
            case O_NORMAL_ADDR: rc = s_parse_addr (optarg, &cfg->normal_addr); break;
            case O_NORMALS: rc = s_parse_int (optarg, 1, 64, &cfg->normals); break;
            case O_INTERVAL: rc = s_parse_int (optarg, 1, 60000, &cfg->normal_interval_ms); break;
            case O_TIMEOUT: rc = s_parse_int (optarg, 100, 600000, &cfg->timeout_ms); break;
            case O_HOT: rc = s_parse_int (optarg, 0, 10000, &cfg->pollers_hot); break;
            case O_SLOW: rc = s_parse_int (optarg, 0, 10000, &cfg->pollers_slow); break;
            case O_SLOWLORIS: rc = s_parse_int (optarg, 0, 100000, &cfg->slowloris); break;
            case O_LINE: rc = s_parse_int (optarg, 1, 600000, &cfg->slow_line_ms); break;
            case O_IDLE: rc = s_parse_int (optarg, 0, 100000, &cfg->idle); break;
            case O_UPLOADERS: rc = s_parse_int (optarg, 0, 10000, &cfg->uploaders); break;
            case O_CAP: rc = s_parse_int (optarg, 0, S_TRACK_MAX / 2, &cfg->upload_cap); break;
            case O_BURST:
                rc = s_parse_int (optarg, 0, 10000, &cfg->burst);
                burst_set = true;
                break;
            case O_BURST_TIMEOUT:
                rc = s_parse_int (optarg, 100, 3600000, &cfg->burst_timeout_ms);
                break;
            case O_SETTLE: rc = s_parse_int (optarg, 1, 3600, &cfg->settle_s); break;
            case O_HELP: s_usage (stdout); exit (0);
            case O_VERSION: printf (S_PROGRAM " " IMGP_VERSION "\n"); exit (0);
            default: s_usage (stderr); return -1;
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf (stderr, S_PROGRAM ": unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    if (quick && !duration_set)
        cfg->duration_s = 4;
    if (quick && !burst_set)
        cfg->burst = 100;
    char list [256], *save = NULL;
    snprintf (list, sizeof list, "%s", cfg->only);
    for (char *item = strtok_r (list, ",", &save); rc == 0 && item;
         item = strtok_r (NULL, ",", &save)) {
        bool known = false;
        for (size_t l = 0; l < S_NLOADS; l++)
            known |= strcmp (item, s_loads [l].name) == 0;
        if (!known) {
            fprintf (stderr, S_PROGRAM ": no load named '%s' (see --help)\n", item);
            rc = -1;
        }
    }
    snprintf (cfg->base_url, sizeof cfg->base_url, "http://%s:%d", cfg->host, cfg->port);
    return rc;
}

//  Thousands of connections: take every descriptor the hard limit allows.
static void
s_raise_nofile (void)
{
    struct rlimit lim;
    if (getrlimit (RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit (RLIMIT_NOFILE, &lim);
    }
    if (getrlimit (RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 4096)
        fprintf (stderr, S_PROGRAM ": only %llu file descriptors: the idle load will be short\n",
                 (unsigned long long) lim.rlim_cur);
}

//  Upload the normal image once and wait until its job ends: proves the
//  stack works, and gives the pollers an id to ask for.
static int
s_warm_up (s_run_t *run)
{
    s_result_t scratch;
    memset (&scratch, 0, sizeof scratch);
    run->result = &scratch;
    s_client_t *client = s_client_new (run, S_NORMAL, run->cfg->normal_addr);
    if (!client)
        return -1;
    client->interval_us = 200 * S_MS;   //  retry while the broker connects
    s_client_t *clients [1] = { client };
    run->clients = clients;
    run->nclients = 1;
    run->measuring = true;
    int64_t deadline = s_now_us () + 30 * S_SEC;
    while (!client->id [0] && s_now_us () < deadline)
        s_turn (run, 50 * S_MS);
    run->measuring = false;
    if (client->active)
        curl_multi_remove_handle (run->multi, client->active);
    client->active = NULL;
    snprintf (run->poll_id, sizeof run->poll_id, "%s", client->id);
    s_client_destroy (&client);
    run->clients = NULL;
    run->nclients = 0;
    run->result = NULL;
    free (scratch.up.lat.v);
    free (scratch.st.lat.v);
    if (!run->poll_id [0]) {
        fprintf (stderr, S_PROGRAM ": %s does not accept uploads (no 202 in 30 s)\n",
                 run->cfg->base_url);
        return -1;
    }
    s_track_push (run, run->poll_id);
    if (s_settle (run, 60) < 0) {
        fprintf (stderr, S_PROGRAM ": job %s did not end within 60 s\n", run->poll_id);
        return -1;
    }
    return 0;
}

int
main (int argc, char **argv)
{
    s_config_t cfg = {
        .host = "127.0.0.1", .port = 8080, .duration_s = 20,
        .photos_dir = "../shared/corpus/photos",
        .per_addr = 32, .normals = 2, .normal_interval_ms = 250, .timeout_ms = 10000,
        .pollers_hot = 16, .pollers_slow = 300, .slowloris = 200, .slow_line_ms = 2000,
        .idle = 2000, .uploaders = 16, .upload_cap = 64, .upload_timeout_ms = 60000,
        .burst = 500, .burst_timeout_ms = 60000, .settle_s = 120,
    };
    inet_pton (AF_INET, "127.0.1.1", &cfg.addr_base);
    inet_pton (AF_INET, "127.0.2.1", &cfg.slow_addr);
    inet_pton (AF_INET, "127.0.0.1", &cfg.normal_addr);
    if (s_parse_args (argc, argv, &cfg))
        return 2;
    s_raise_nofile ();
    if (curl_global_init (CURL_GLOBAL_DEFAULT))
        return 1;

    s_run_t *run = calloc (1, sizeof *run);
    if (!run)
        return 1;
    run->cfg = &cfg;
    run->nphotos = s_photos_load (cfg.photos_dir, 1000000, 6000000, &run->photos);
    if (run->nphotos == 0) {
        fprintf (stderr, S_PROGRAM ": no 1-6 MB photos in %s (--photos DIR)\n", cfg.photos_dir);
        return 1;
    }
    s_photo_t *small = NULL;
    size_t nsmall = 0;
    if (!cfg.image_path) {
        nsmall = s_photos_load (cfg.photos_dir, 1, 1000000, &small);
        for (size_t i = 0; i < nsmall; i++)
            if (!run->image.data || small [i].size < run->image.size)
                run->image = small [i];
    }
    if ((cfg.image_path && s_photo_load (&run->image, cfg.image_path))
    ||  (cfg.burst_photo && s_photo_load (&run->burst_photo, cfg.burst_photo)))
        return 1;
    if (!run->image.data)
        run->image = run->photos [0];
    if (!cfg.burst_photo)
        run->burst_photo = run->photos [0];

    run->multi = curl_multi_init ();
    //  Keep every keep-alive connection: the default cache (4 per handle
    //  added) would close the pollers' connections between polls.
    curl_multi_setopt (run->multi, CURLMOPT_MAXCONNECTS, 100000L);
    fprintf (stderr, S_PROGRAM ": %s, %.0f s per load, normal image %s (%zu bytes), "
             "%zu upload photos, burst photo %s\n", cfg.base_url, cfg.duration_s,
             run->image.name, run->image.size, run->nphotos, run->burst_photo.name);
    if (s_warm_up (run))
        return 1;

    s_result_t results [S_NLOADS];
    memset (results, 0, sizeof results);
    size_t nresults = 0, last = 0;
    for (size_t i = 0; i < S_NLOADS; i++)
        if (s_load_wanted (&cfg, s_loads [i].name))
            last = i;
    for (size_t i = 0; i < S_NLOADS; i++) {
        if (!s_load_wanted (&cfg, s_loads [i].name))
            continue;
        fprintf (stderr, S_PROGRAM ": load %s...\n", s_loads [i].name);
        s_result_t *result = &results [nresults++];
        s_load_run (run, (s_load_t) i, result, i != last);
        s_print_table (result, 1, stderr);
    }
    printf ("\n");
    s_print_table (results, nresults, stdout);
    int rc = cfg.json_path ? s_write_json (&cfg, results, nresults) : 0;

    for (size_t i = 0; i < nresults; i++) {
        free (results [i].up.lat.v);
        free (results [i].st.lat.v);
        free (results [i].load.lat.v);
        s_raw_destroy (&results [i].raw);
    }
    curl_multi_cleanup (run->multi);
    curl_global_cleanup ();
    if (cfg.image_path) {
        free (run->image.name);
        free (run->image.data);
    }
    if (cfg.burst_photo) {
        free (run->burst_photo.name);
        free (run->burst_photo.data);
    }
    s_photos_free (&small, nsmall);
    s_photos_free (&run->photos, run->nphotos);
    free (run);
    return rc ? 1 : 0;
}

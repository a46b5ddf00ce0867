/*  harness — runs the real imgpipe programs on loopback for the end-to-end
    suite: free ports, a temporary data directory, processes with one log
    file each, plain-socket HTTP with deadlines, polling helpers, and
    libvips checks of the thumbnails that come back.

    Why: end-to-end tests are only trustworthy when they start the same
    binaries an operator runs, wait on conditions (never on bare sleeps),
    and cannot hang or leak processes when an assertion fails. Every wait
    here has a deadline; every child is killed at exit (atexit handler,
    PR_SET_PDEATHSIG for crashes).

    Never: share ports or data directories between clusters, or treat a
    timeout as success. The HTTP helper deliberately does not use the code
    under test (client/), so the client is tested against an independent
    implementation.
*/
#ifndef IMGP_HARNESS_H_INCLUDED
#define IMGP_HARNESS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define H_BROKER_BIN IMGP_BUILD_DIR "/broker/imgpipe-broker"
#define H_RESIZER_BIN IMGP_BUILD_DIR "/resizer/imgpipe-resizer"
#define H_FRONTEND_BIN IMGP_BUILD_DIR "/http-frontend/imgpipe-frontend"
#define H_CLIENT_BIN IMGP_BUILD_DIR "/client/imgpipe"

#define H_BROKER_PORTS 3            //  intake, status, jobs
#define H_MAX_RESIZERS 8
#define H_MAX_FRONTENDS 4
#define H_ID_SIZE 33                //  32 hex characters + NUL

//  -------------------------------------------------------------------------
//  Time and polling

//  Monotonic milliseconds.
long long h_now_ms (void);

//  Call cond(arg) every ~25 ms until it returns true or deadline_ms pass.
//  Returns true when the condition was met.
bool h_wait_until (bool (*cond) (void *arg), void *arg, int deadline_ms);

//  -------------------------------------------------------------------------
//  Processes

//  A spawned program.
typedef struct {
    pid_t pid;                      //  0 once reaped
    char name [32];                 //  "broker", "resizer1", "frontend0"...
    char log [512];                 //  file holding its stdout and stderr
    int exit_status;                //  wait status once reaped
} h_proc_t;

//  Start argv[0] with stdout to `out_path` (NULL: the log) and stderr to
//  `log_path`, stdin from /dev/null. The child dies with the test process.
//  Returns the pid or -1.
pid_t h_spawn (char *const argv [], const char *log_path, const char *out_path);

//  Wait up to deadline_ms for pid to exit. Returns 0 and the wait status,
//  or -1 when it is still running.
int h_wait_exit (pid_t pid, int deadline_ms, int *status);

//  SIGCONT + SIGTERM, wait up to deadline_ms, then SIGKILL. Returns the
//  wait status, or -1 when SIGKILL was needed.
int h_stop (pid_t pid, int deadline_ms);

//  SIGSTOP pid and wait until the kernel reports it stopped (the
//  condition, not a sleep). Returns 0 or -1.
int h_pause (pid_t pid);

//  SIGCONT pid. Returns 0 or -1.
int h_resume (pid_t pid);

//  -------------------------------------------------------------------------
//  A cluster: broker + resizers + frontends on free loopback ports

typedef struct {
    int resizers;                   //  resizer processes, 0..H_MAX_RESIZERS
    int frontends;                  //  frontend processes, 1..H_MAX_FRONTENDS
    const char *frontend_extra [8]; //  extra frontend flags, NULL-terminated
    const char *broker_extra [12];  //  extra broker flags, NULL-terminated
    const char *resizer_extra [8];  //  extra resizer flags, NULL-terminated
} h_cluster_opts_t;

typedef struct {
    char dir [256];                 //  temp dir: data/ and the *.log files
    char data_dir [300];            //  broker --data-dir
    int broker_ports [H_BROKER_PORTS];  //  intake, status, jobs
    int http_ports [H_MAX_FRONTENDS];   //  frontend HTTP ports
    h_proc_t broker;                //  the broker
    h_proc_t resizer [H_MAX_RESIZERS];  //  resizers
    h_proc_t frontend [H_MAX_FRONTENDS];    //  frontends
    int resizers;                   //  resizers used
    int frontends;                  //  frontends used
    bool ok;                        //  set by h_cluster_pass: test passed
    h_cluster_opts_t opts;          //  how it was started (extra flags are borrowed)
} h_cluster_t;

//  Start a cluster and wait (bounded) until every frontend's /healthz says
//  200 and every resizer has logged "event=ready". Returns NULL, with the
//  logs printed, when it does not come up.
h_cluster_t *h_cluster_new (const h_cluster_opts_t *opts);

//  Stop every process (SIGTERM, then SIGKILL) and remove the temp dir.
//  When the test did not call h_cluster_pass, print the tail of every log
//  and keep the dir (also kept when IMGP_E2E_KEEP is set).
void h_cluster_destroy (h_cluster_t **self_p);

//  Mark the test as passed (call last in each test).
void h_cluster_pass (h_cluster_t *self);

//  SIGTERM every process at once, then wait for all of them up to
//  deadline_ms. Returns the number that did not exit with status 0 within
//  the deadline; `report` describes each process.
int h_cluster_stop_all (h_cluster_t *self, int deadline_ms, char *report, size_t report_size);

//  Print the last `lines` lines of every log on stderr.
void h_cluster_dump_logs (h_cluster_t *self, int lines);

//  URL of frontend i: "http://127.0.0.1:PORT" in a static buffer per i.
const char *h_cluster_url (h_cluster_t *self, int i);

//  -------------------------------------------------------------------------
//  Faults: kill, restart and add processes of a running cluster

//  Send `sig` to a process and, unless it is SIGSTOP/SIGCONT, reap it
//  within deadline_ms (pid becomes 0, exit_status kept). Returns 0, or -1
//  when it could not be signalled or did not exit in time.
int h_proc_signal (h_proc_t *proc, int sig, int deadline_ms);

//  True while the process runs; one that exited is reaped here (pid
//  becomes 0, exit_status kept).
bool h_proc_alive (h_proc_t *proc);

//  Wait up to deadline_ms for `count` occurrences of `needle` in the log
//  of `proc`, giving up at once if the process exits meanwhile. Returns
//  the ms waited, or -1 on timeout or exit (h_proc_alive tells which).
long long h_wait_log (h_proc_t *proc, const char *needle, int count, int deadline_ms);

//  (Re)start the broker with the same flags, ports and data dir; it logs
//  to the same file (appended). Does not wait: poll /healthz. The old
//  broker must be gone (h_proc_signal). Returns 0 or -1.
int h_cluster_broker_start (h_cluster_t *self);

//  Start one more resizer (the next free slot, named "resizerN") and wait
//  up to deadline_ms for its "event=ready". Returns its index, or -1.
int h_cluster_add_resizer (h_cluster_t *self, int deadline_ms);

//  The worker name a resizer announced ("event=ready worker=NAME"), into
//  `name`. Returns 0, or -1 when it has not logged it.
int h_resizer_worker (const h_proc_t *resizer, char *name, size_t name_size);

//  GET /healthz on a frontend; the HTTP status, 0 when none came.
int h_healthz (int port, int timeout_ms);

//  What the broker's spool holds, counted from its log through a read-only
//  view (imgp_spool_new_readonly; the broker may be running), named as the
//  files of the old layout were: ".json" live job records, ".in" live
//  originals, ".out" thumbnails, "" all three; ".tmp" is always 0 (the log
//  has no temporary files). -1 when the log cannot be read.
int h_spool_count (h_cluster_t *self, const char *suffix);

//  -------------------------------------------------------------------------
//  Logs and /proc

//  Occurrences of `needle` in the file, 0 when missing.
int h_log_count (const char *path, const char *needle);

//  Resident set size of a process in kB (VmRSS), -1 when unknown.
long h_rss_kb (pid_t pid);

//  -------------------------------------------------------------------------
//  HTTP over plain sockets (HTTP/1.1, Connection: close)

typedef struct {
    int status;                     //  HTTP status, 0 when none arrived
    char *head;                     //  raw status line and headers (owned)
    char *body;                     //  body + NUL (owned), chunked decoded
    size_t body_size;               //  body bytes, NUL not counted
    char error [160];               //  transport problem, when status is 0
} h_response_t;

//  Say what went wrong in resp->error, printf-style; returns -1, so an
//  HTTP helper can `return h_response_fail (resp, ...)`.
int h_response_fail (h_response_t *resp, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

//  One request to 127.0.0.1:port, whole exchange within timeout_ms.
//  Returns 0 when a response arrived (any status), -1 otherwise.
int h_http (int port, const char *method, const char *path, const char *content_type,
            const void *body, size_t body_size, h_response_t *resp, int timeout_ms);

//  For requests no honest client sends (a Content-Length that lies, a
//  stalled body): connect, send `head` exactly as given (request line,
//  headers and the blank line), then body_size bytes of body, and return
//  the socket without reading, so the caller can stall before it reads
//  with h_raw_response. Stops sending early when the server answers.
//  Returns the socket, or -1 with the reason in resp->error.
int h_raw_send (int port, const char *head, const void *body, size_t body_size,
                h_response_t *resp, int timeout_ms);

//  Read one response from a socket of h_raw_send within timeout_ms, then
//  close the socket. Returns 0 when a response arrived, -1 otherwise
//  (resp->error says why: "closed without a response" when the server
//  just closed).
int h_raw_response (int fd, h_response_t *resp, int timeout_ms);

//  As h_http, with `headers` ("Name: value\r\n" lines, may be NULL) added
//  to the head.
int h_http_with (int port, const char *method, const char *path, const char *headers,
                 const char *content_type, const void *body, size_t body_size,
                 h_response_t *resp, int timeout_ms);

//  GET `path` every ~25 ms until it answers `want`, within deadline_ms.
//  Returns the ms waited, or -1.
long long h_wait_status (int port, const char *path, int want, int deadline_ms);

//  -------------------------------------------------------------------------
//  Connections kept open: keep-alive, several requests on one socket, and
//  watching for the server to close it.

//  A non-blocking socket connecting to 127.0.0.1:port from source address
//  `from` ("127.0.0.9"; NULL: the kernel's choice). Returns it, or -1.
int h_conn_open (int port, const char *from);

//  Send `size` bytes within timeout_ms. Returns 0, or -1 when they could
//  not all go (the server closed, or the deadline passed).
int h_conn_send (int fd, const void *data, size_t size, int timeout_ms);

//  Read one response within timeout_ms and leave the socket open. Returns
//  0 when a response arrived, -1 otherwise (resp->error says why).
int h_conn_response (int fd, h_response_t *resp, int timeout_ms);

//  True when bytes, or the server's close, can be read within ms.
bool h_conn_readable (int fd, int ms);

//  Read until the server closes the socket (EOF or reset), keeping what
//  arrives in *data (malloc'd, NUL-terminated; data may be NULL) and its
//  size. Returns 0 when it closed, -1 when it is still open at timeout_ms.
//  The socket stays the caller's to close.
int h_conn_wait_close (int fd, int timeout_ms, char **data, size_t *size);

//  Copy header `name` (case-insensitive) into value. Returns 0 or -1.
int h_header (const h_response_t *resp, const char *name, char *value, size_t value_size);

//  Parse the body as JSON (new reference or NULL).
json_t *h_json (const h_response_t *resp);

void h_response_free (h_response_t *resp);

//  Build a multipart/form-data body with one file field. Returns the body
//  (malloc'd) and sets *size and content_type (with its boundary).
char *h_multipart (const char *field, const char *filename, const char *file_type,
                   const void *data, size_t data_size, size_t *size,
                   char *content_type, size_t content_type_size);

//  -------------------------------------------------------------------------
//  Jobs

//  Upload `data` to `path` ("/v1/images?width=50"), as a raw body with
//  `content_type`, or as multipart field "img" when multipart is true.
//  Returns the HTTP status (0 on transport error); on 202 `id` holds the
//  job id (it must be a valid id). `resp` may be NULL.
int h_upload (int port, const char *path, const void *data, size_t size,
              const char *content_type, bool multipart, char id [H_ID_SIZE],
              h_response_t *resp);

//  Poll GET /v1/images/ID until its status is done or failed, within
//  deadline_ms. Returns 0 with the final status JSON in *status_json
//  (caller decrefs; may be NULL), -1 on timeout or a bad answer, with the
//  reason in `why`.
int h_job_wait (int port, const char *id, int deadline_ms, json_t **status_json,
                char *why, size_t why_size);

//  "status" string of a status JSON, or "" (borrowed).
const char *h_json_status (json_t *status_json);

//  -------------------------------------------------------------------------
//  Images (libvips)

//  Initialise libvips once (safe to call many times).
void h_vips_init (void);

//  Make a w x h test image ("jpeg", "png", "gif", "webp") with 3 bands, or
//  4 with `alpha`. Noise keeps JPEGs from being trivially small. Returns
//  malloc'd bytes (g_free-compatible not needed: free()) or NULL.
void *h_make_image (const char *format, int w, int h, bool alpha, size_t *size);

//  An animated GIF of `frames` frames of w x h, each its own colour.
//  Returns malloc'd bytes or NULL.
void *h_make_animation (int frames, int w, int h, size_t *size);

//  Frames of an image (decoded with every page): 1 for a still image,
//  -1 when libvips cannot read it.
int h_frames (const void *data, size_t size);

//  A w x h PNG of one flat colour, 16-bit RGBA, every row Paeth-filtered:
//  small on the wire (a 6000 x 6000 one is ~300 kB) but slow to decode, as
//  a resizer must unfilter every pixel (PNG has no shrink-on-load): about
//  60 ns a pixel on one core, so 6000 x 6000 keeps a resizer busy ~2 s.
//  For tests that must catch a job while it runs. Returns malloc'd bytes
//  or NULL.
void *h_make_flat_png (int w, int h, size_t *size);

//  Width, height and EXIF orientation (1 when absent) from the header.
int h_image_info (const void *data, size_t size, int *w, int *h, int *orientation);

//  Decode `data` fully and check it is a thumbnail of a src_w x src_h
//  image (dimensions as displayed, i.e. after EXIF rotation) fitted
//  inside box_w x box_h without enlarging: each side within 1 px of the
//  exact fit, never 0. Returns 0, or -1 with the reason in `why`.
//  out_w/out_h (may be NULL) receive the thumbnail's size.
int h_check_thumb (const void *data, size_t size, int src_w, int src_h, int box_w,
                   int box_h, int *out_w, int *out_h, char *why, size_t why_size);

//  Decode `data` fully. Returns 0 with its size and the libvips loader
//  name ("VipsForeignLoadPngBuffer"), or -1 with the reason.
int h_decode (const void *data, size_t size, int *w, int *h, char *loader,
              size_t loader_size, char *why, size_t why_size);

//  Read a whole file (malloc'd). Returns NULL when it cannot.
void *h_read_file (const char *path, size_t *size);

#endif

/*  imgp_curve — see imgp_curve.h.

    How refusals are seen: libzmq (4.3) reports a failed handshake on the
    socket's monitor: HANDSHAKE_FAILED_AUTH with the ZAP status (400 when
    zauth found no certificate for the client's key; a client sees the
    same event when the server's ERROR comes back), HANDSHAKE_FAILED_PROTOCOL
    for a plain peer (mechanism mismatch) or a peer that cannot decrypt.
    The event carries the socket's own endpoint, not the peer's address,
    hence the limit per socket. libzmq 4.3.4 never retries a connection
    refused at the handshake by itself (checked: one event, then silence),
    but a peer that makes its socket again (our resizer every second, the
    frontend every 5 s) or a restart loop would fill the log, so it gets one
    line per socket and reason a minute. zauth's own VERBOSE output was not
    used: it goes through zsys logging, in another format, and prints
    client keys.
*/
#include "imgp_curve.h"
#include "imgp_log.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

//  One log line per socket and reason in this many milliseconds.
#define S_LOG_EVERY_MS (60 * 1000)

//  Longest PATH keygen takes: zcert_load reads "PATH_secret" into 256 bytes.
#define S_PATH_MAX 240

//  The refusal log, shared by the watcher thread and imgp_curve_event
//  callers (any thread).
typedef struct {
    bool server;                    //  our sockets are servers (else clients)
    atomic_size_t refusals;         //  refused handshakes seen, all sockets
    pthread_mutex_t lock;           //  guards limits
    zhashx_t *limits;               //  socket name -> s_limit_t
} s_shared_t;

struct _imgp_curve_t {
    zcert_t *cert;                  //  our own certificate, with its secret key
    char *server_key;               //  client: the broker's public key (Z85)
    zactor_t *auth;                 //  server: the zauth actor, our ZAP handler
    zactor_t *watcher;              //  the thread that reads monitors, from the first watch
    size_t watches;                 //  watches made, for unique monitor endpoints
    s_shared_t shared;              //  with the watcher thread
};

//  Why a handshake failed, as logged.
typedef enum {
    S_UNKNOWN_KEY = 0,              //  ZAP said no (400): a key not in the clients dir
    S_NO_CURVE,                     //  the peer speaks no CURVE (a plain socket)
    S_BAD_HANDSHAKE,                //  other protocol failure (e.g. a wrong server key)
    S_REASONS
} s_reason_t;

static const char *s_reason_names [S_REASONS] = { "unknown_key", "no_curve", "bad_handshake" };

//  The once-a-minute limit of one socket name.
typedef struct {
    int64_t logged [S_REASONS];     //  when each reason was last logged (mono ms), 0 never
    size_t held [S_REASONS];        //  refusals not logged since then
} s_limit_t;

//  One watched socket, owned by the watcher thread.
typedef struct {
    zsock_t *monitor;               //  PAIR connected to the socket's monitor
    char *name;                     //  the socket's name in log lines
} s_watch_t;


//  --------------------------------------------------------------------------
//  Loading keys

//  Decode the Z85 key at `path` of `root` into key[32]; false when absent
//  or not a key.
static bool
s_key_get (zconfig_t *root, const char *path, byte key [32])
{
    const char *text = zconfig_get (root, path, NULL);
    return text && strlen (text) == 40 && zmq_z85_decode (key, text) != NULL;
}

//  Load the certificate in exactly `file` (zcert_load would read a
//  FILE_secret lying next to it first, so a public file given where the
//  secret one belongs would pass, and be checked for the wrong mode).
//  With `need_secret` the file must hold the secret key too. Logs why not.
static zcert_t *
s_cert_load (const char *file, bool need_secret, const char *flag)
{
    if (!file || !*file) {
        imgp_error ("event=config_error option=%s reason=\"not set\"", flag);
        return NULL;
    }
    struct stat st;
    if (stat (file, &st) != 0) {
        imgp_error ("event=config_error option=%s file=\"%s\" reason=\"%s\"", flag, file,
                    strerror (errno));
        return NULL;
    }
    if (!S_ISREG (st.st_mode)) {
        imgp_error ("event=config_error option=%s file=\"%s\" reason=\"not a file\"", flag, file);
        return NULL;
    }
    zconfig_t *root = zconfig_load (file);
    byte public_key [32], secret_key [32] = { 0 };
    zcert_t *cert = NULL;
    if (!root || !s_key_get (root, "/curve/public-key", public_key))
        imgp_error ("event=config_error option=%s file=\"%s\" reason=\"not a czmq certificate "
                    "(make one with imgpipe keygen)\"", flag, file);
    else
    if (need_secret && !s_key_get (root, "/curve/secret-key", secret_key))
        imgp_error ("event=config_error option=%s file=\"%s\" reason=\"holds no secret key "
                    "(give the _secret file)\"", flag, file);
    else {
        cert = zcert_new_from (public_key, secret_key);
        if (need_secret && (st.st_mode & (S_IRWXG | S_IRWXO)))
            imgp_warn ("event=config_warning option=%s file=\"%s\" reason=\"can be read by "
                       "others (chmod 600 it)\"", flag, file);
    }
    //  Our copy of the secret is wiped; zconfig's text of it is freed (czmq
    //  has no way to wipe it), as zcert_load would do.
    zconfig_destroy (&root);
    explicit_bzero (secret_key, sizeof secret_key);     //  not optimised away
    return cert;
}

static void
s_limit_destroy (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

static imgp_curve_t *
s_new (const char *secret_file)
{
    imgp_curve_t *self = (imgp_curve_t *) zmalloc (sizeof (imgp_curve_t));
    if (!self)
        return NULL;
    atomic_init (&self->shared.refusals, 0);
    pthread_mutex_init (&self->shared.lock, NULL);
    self->shared.limits = zhashx_new ();
    if (self->shared.limits) {
        zhashx_set_destructor (self->shared.limits, s_limit_destroy);
        self->cert = s_cert_load (secret_file, true, "--curve-secret");
    }
    if (!self->cert)
        imgp_curve_destroy (&self);
    return self;
}

//  Warn when the clients directory holds no certificate: every peer would
//  be refused, which is rarely what the operator meant at start.
static void
s_clients_check (const char *clients_dir)
{
    DIR *dir = opendir (clients_dir);
    size_t certs = 0;
    struct dirent *entry;
    while (dir && (entry = readdir (dir)) != NULL) {
        size_t len = strlen (entry->d_name);
        bool secret = len >= 7 && strcmp (entry->d_name + len - 7, "_secret") == 0;
        if (entry->d_name [0] != '.' && !secret)
            certs++;
    }
    if (dir)
        closedir (dir);
    if (certs == 0)
        imgp_warn ("event=config_warning option=--curve-clients dir=\"%s\" reason=\"holds no "
                   "certificate: every peer is refused until one is copied in\"", clients_dir);
}

imgp_curve_t *
imgp_curve_server_new (const char *secret_file, const char *clients_dir)
{
    struct stat st;
    if (!clients_dir || !*clients_dir || stat (clients_dir, &st) != 0 || !S_ISDIR (st.st_mode)) {
        imgp_error ("event=config_error option=--curve-clients dir=\"%s\" reason=\"not a "
                    "directory\"", clients_dir ? clients_dir : "");
        return NULL;
    }
    imgp_curve_t *self = s_new (secret_file);
    if (!self)
        return NULL;
    self->shared.server = true;
    //  zauth answers the ZAP requests of every socket in czmq's context;
    //  it must run before the first peer's handshake, or that peer is in.
    self->auth = zactor_new (zauth, NULL);
    if (self->auth) {
        zstr_sendx (self->auth, "CURVE", clients_dir, NULL);
        zsock_wait (self->auth);
        s_clients_check (clients_dir);
    }
    else {
        imgp_error ("event=start_failed what=zauth");
        imgp_curve_destroy (&self);
    }
    return self;
}

imgp_curve_t *
imgp_curve_client_new (const char *secret_file, const char *server_public_file)
{
    zcert_t *server = s_cert_load (server_public_file, false, "--curve-server");
    if (!server)
        return NULL;
    imgp_curve_t *self = s_new (secret_file);
    if (self) {
        self->server_key = strdup (zcert_public_txt (server));
        if (!self->server_key)
            imgp_curve_destroy (&self);
    }
    zcert_destroy (&server);
    return self;
}

void
imgp_curve_destroy (imgp_curve_t **self_p)
{
    assert (self_p);
    imgp_curve_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy (&self->watcher);
    zactor_destroy (&self->auth);
    zcert_destroy (&self->cert);
    free (self->server_key);
    zhashx_destroy (&self->shared.limits);
    pthread_mutex_destroy (&self->shared.lock);
    free (self);
    *self_p = NULL;
}

int
imgp_curve_apply (imgp_curve_t *self, zsock_t *sock)
{
    assert (sock);
    if (!self)
        return 0;
    zcert_apply (self->cert, sock);
    if (self->shared.server) {
        zsock_set_curve_server (sock, 1);
        zsock_set_zap_domain (sock, IMGP_CURVE_DOMAIN);
    }
    else
        zsock_set_curve_serverkey (sock, self->server_key);
    //  The setters assert on failure; a socket of ours always takes them.
    return 0;
}


//  --------------------------------------------------------------------------
//  The watcher thread

static void
s_watch_destroy (void **item_p)
{
    s_watch_t *watch = (s_watch_t *) *item_p;
    if (watch) {
        zsock_destroy (&watch->monitor);
        free (watch->name);
        free (watch);
        *item_p = NULL;
    }
}

static s_reason_t
s_reason_of (uint16_t event, uint32_t value)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        return value == 400 ? S_UNKNOWN_KEY : S_BAD_HANDSHAKE;
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        return S_NO_CURVE;
    return S_BAD_HANDSHAKE;
}

//  Log one refusal on socket `name`; `held` were held back before it.
static void
s_log (s_shared_t *shared, const char *name, s_reason_t reason, uint32_t value,
       size_t held)
{
    //  ZAP status codes are decimal (400); libzmq's protocol errors hex.
    char code [16];
    if (value < 1000)
        snprintf (code, sizeof code, "%u", value);
    else
        snprintf (code, sizeof code, "0x%x", value);
    //  libzmq 4.3 does not retry a connection refused at the handshake, so
    //  a client says what to fix before it is restarted.
    if (shared->server)
        imgp_warn ("event=refused reason=%s socket=%s code=%s held_back=%zu",
                   s_reason_names [reason], name, code, held);
    else
        imgp_warn ("event=refused_by_server reason=%s socket=%s code=%s held_back=%zu"
                   " note=\"not retried: %s, then restart\"", s_reason_names [reason],
                   name, code, held,
                   reason == S_UNKNOWN_KEY ? "put our public file into the broker's --curve-clients"
                                           : "check --curve-server, and that both ends use keys");
}

//  Count a refusal on socket `name`, and log it unless that socket logged
//  the same reason within the last minute.
static void
s_refused (s_shared_t *shared, const char *name, s_reason_t reason, uint32_t value)
{
    atomic_fetch_add (&shared->refusals, 1);
    int64_t now = zclock_mono ();
    pthread_mutex_lock (&shared->lock);
    s_limit_t *limit = (s_limit_t *) zhashx_lookup (shared->limits, name);
    if (!limit) {
        limit = (s_limit_t *) zmalloc (sizeof (s_limit_t));
        if (limit && zhashx_insert (shared->limits, name, limit) != 0) {
            free (limit);
            limit = NULL;
        }
    }
    bool quiet = limit && limit->logged [reason]
              && now - limit->logged [reason] < S_LOG_EVERY_MS;
    size_t held = 0;
    if (limit && quiet)
        limit->held [reason]++;
    else
    if (limit) {
        held = limit->held [reason];
        limit->logged [reason] = now;
        limit->held [reason] = 0;
    }
    pthread_mutex_unlock (&shared->lock);
    if (!quiet)                     //  logged outside the lock
        s_log (shared, name, reason, value, held);
}

static bool
s_is_refusal (int event)
{
    return event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
}

//  Read one monitor event: frame 1 is a 16-bit event and a 32-bit value,
//  frame 2 the endpoint. Returns false when the monitor has stopped.
static bool
s_watch_read (s_shared_t *shared, s_watch_t *watch)
{
    zmsg_t *msg = zmsg_recv (watch->monitor);
    if (!msg)
        return true;
    zframe_t *head = zmsg_first (msg);
    bool alive = true;
    if (head && zframe_size (head) == 6) {
        uint16_t event;
        uint32_t value;
        memcpy (&event, zframe_data (head), 2);
        memcpy (&value, zframe_data (head) + 2, 4);
        if (event == ZMQ_EVENT_MONITOR_STOPPED)
            alive = false;
        else
        if (s_is_refusal (event))
            s_refused (shared, watch->name, s_reason_of (event, value), value);
    }
    zmsg_destroy (&msg);
    return alive;
}

//  WATCH endpoint name: connect a PAIR to the monitor endpoint.
static int
s_watch_add (zlistx_t *watches, zpoller_t *poller, zmsg_t *request)
{
    char *endpoint = zmsg_popstr (request);
    char *name = zmsg_popstr (request);
    s_watch_t *watch = (s_watch_t *) zmalloc (sizeof (s_watch_t));
    int rc = -1;
    if (endpoint && name && watch) {
        watch->name = name;
        name = NULL;
        watch->monitor = zsock_new_pair (NULL);
        if (watch->monitor && zsock_connect (watch->monitor, "%s", endpoint) == 0
        &&  zpoller_add (poller, watch->monitor) == 0 && zlistx_add_end (watches, watch))
            rc = 0;
    }
    if (rc != 0 && watch) {
        void *item = watch;
        s_watch_destroy (&item);
    }
    free (endpoint);
    free (name);
    return rc;
}

static void
s_watcher (zsock_t *pipe, void *args)
{
    s_shared_t *shared = (s_shared_t *) args;
    zlistx_t *watches = zlistx_new ();
    zpoller_t *poller = zpoller_new (pipe, NULL);
    assert (watches && poller);
    zlistx_set_destructor (watches, s_watch_destroy);
    zsock_signal (pipe, 0);
    while (true) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (!which)
            break;                  //  interrupted
        if (which == pipe) {
            zmsg_t *request = zmsg_recv (pipe);
            char *command = request ? zmsg_popstr (request) : NULL;
            bool term = !command || streq (command, "$TERM");
            if (!term)
                zsock_signal (pipe, s_watch_add (watches, poller, request) == 0 ? 0 : 1);
            free (command);
            zmsg_destroy (&request);
            if (term)
                break;
            continue;
        }
        for (s_watch_t *watch = (s_watch_t *) zlistx_first (watches); watch;
             watch = (s_watch_t *) zlistx_next (watches))
            if (watch->monitor == which) {
                if (!s_watch_read (shared, watch)) {
                    zpoller_remove (poller, watch->monitor);
                    zlistx_delete (watches, zlistx_cursor (watches));
                }
                break;
            }
    }
    zpoller_destroy (&poller);
    zlistx_destroy (&watches);
}

int
imgp_curve_watch (imgp_curve_t *self, zsock_t *sock, const char *name)
{
    assert (sock);
    assert (name);
    if (!self)
        return 0;
    if (!self->watcher) {
        self->watcher = zactor_new (s_watcher, &self->shared);
        if (!self->watcher)
            return -1;
    }
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://imgp-curve-%p-%zu", (void *) self,
              self->watches++);
    int events = IMGP_CURVE_EVENTS | ZMQ_EVENT_MONITOR_STOPPED;
    if (zmq_socket_monitor (zsock_resolve (sock), endpoint, events) != 0) {
        imgp_error ("event=monitor_failed socket=%s error=\"%s\"", name,
                    zmq_strerror (zmq_errno ()));
        return -1;
    }
    //  Wait until the watcher is connected, so no early event is dropped.
    zstr_sendx (self->watcher, "WATCH", endpoint, name, NULL);
    return zsock_wait (self->watcher) == 0 ? 0 : -1;
}

bool
imgp_curve_event (imgp_curve_t *self, const char *name, int event, uint32_t value)
{
    assert (name);
    if (!self || !s_is_refusal (event))
        return false;
    s_refused (&self->shared, name, s_reason_of ((uint16_t) event, value), value);
    return true;
}

size_t
imgp_curve_refusals (imgp_curve_t *self)
{
    return self ? atomic_load (&self->shared.refusals) : 0;
}


//  --------------------------------------------------------------------------
//  Endpoints and key files

bool
imgp_curve_endpoint_local (const char *endpoint)
{
    if (!endpoint)
        return false;
    if (strncmp (endpoint, "ipc://", 6) == 0 || strncmp (endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6;
    const char *colon = strrchr (host, ':');
    if (!colon || colon == host)
        return false;
    size_t len = (size_t) (colon - host);
    char text [64];
    if (len >= sizeof text)
        return false;
    memcpy (text, host, len);
    text [len] = 0;
    if (strcmp (text, "localhost") == 0 || strcmp (text, "[::1]") == 0)
        return true;
    struct in_addr addr;
    return inet_pton (AF_INET, text, &addr) == 1
        && (ntohl (addr.s_addr) >> 24) == 127;
}

//  Create `path` empty, with `mode`, failing when it exists.
static int
s_reserve (const char *path, mode_t mode, char *error, size_t error_size)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf (error, error_size, "%s: %s%s", path, strerror (errno),
                  errno == EEXIST ? " (not overwritten)" : "");
        return -1;
    }
    //  The umask may have taken bits away; the secret file must be 0600
    //  and the public one readable, whatever the umask.
    int rc = fchmod (fd, mode);
    close (fd);
    if (rc != 0) {
        snprintf (error, error_size, "%s: %s", path, strerror (errno));
        unlink (path);
        return -1;
    }
    return 0;
}

//  A file name fit for a certificate's metadata: 1..64 printable ASCII
//  characters, no quote (zconfig writes the value quoted); else no name.
static bool
s_name_ok (const char *name)
{
    size_t len = strlen (name);
    for (size_t i = 0; i < len; i++)
        if (name [i] < 0x21 || name [i] > 0x7E || name [i] == '"')
            return false;
    return len > 0 && len <= 64;
}

int
imgp_curve_keygen (const char *path, char *error, size_t error_size)
{
    assert (path);
    assert (error);
    if (!*path || strlen (path) > S_PATH_MAX) {
        snprintf (error, error_size, "key path must be 1 to %d characters", S_PATH_MAX);
        return -1;
    }
    char secret [S_PATH_MAX + 16];
    snprintf (secret, sizeof secret, "%s_secret", path);
    //  Both files are made first, empty, with O_EXCL: nothing existing is
    //  ever overwritten, and the secret file is 0600 before a byte of the
    //  key is in it (zconfig_save then truncates and keeps the mode).
    if (s_reserve (path, 0644, error, error_size) != 0)
        return -1;
    if (s_reserve (secret, 0600, error, error_size) != 0) {
        unlink (path);
        return -1;
    }
    zcert_t *cert = zcert_new ();
    int rc = -1;
    if (cert) {
        //  zauth hands a certificate's metadata to the server with every
        //  message (libzmq message properties, as User-Id = the public key),
        //  so the broker can say which key a peer holds by name.
        const char *slash = strrchr (path, '/');
        const char *name = slash ? slash + 1 : path;
        if (s_name_ok (name))
            zcert_set_meta (cert, IMGP_CURVE_KEY_NAME, "%s", name);
        zcert_set_meta (cert, "created-by", "imgpipe keygen");
        if (zcert_save_public (cert, path) != 0)
            snprintf (error, error_size, "%s: cannot write: %s", path, strerror (errno));
        else
        if (zcert_save_secret (cert, secret) != 0)
            snprintf (error, error_size, "%s: cannot write: %s", secret, strerror (errno));
        else
            rc = 0;
        zcert_destroy (&cert);
    }
    else
        snprintf (error, error_size, "cannot make a key pair (is libzmq built with CURVE?)");
    if (rc != 0) {
        unlink (path);
        unlink (secret);
    }
    return rc;
}
